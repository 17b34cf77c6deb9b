//! `ringkv bench`: the numbers users ask about, measured in one run against
//! in-process baselines.
//!
//! Every figure is measured here and now, so ratios against the baseline
//! (measured in the same run) are meaningful on a shared machine where
//! absolute times drift.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{Cluster, ClusterConfig};
use ringkv_ring::{BalancedConfig, Placement, Ring, RingConfig, TokenRange, key_token};
use serde::Serialize;

/// What to measure and how big.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Keys loaded into the cluster for movement, rebalance, throughput
    /// and latency figures.
    pub keys: usize,
    /// Nodes in the cluster for those figures.
    pub nodes: usize,
    /// Ring and redistribution settings of the measured cluster.
    pub config: ClusterConfig,
    /// Vnodes per weight of the random-vnode rings in the lookup and
    /// balance figures.
    pub vnodes: u32,
    /// Partitions of the balanced rings in the lookup and balance figures.
    pub partitions: u32,
    /// Client operations per throughput measurement and thread.
    pub ops: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Ring sizes (physical nodes) for the lookup and balance figures.
    pub ring_sizes: Vec<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            keys: 1_000_000,
            nodes: 10,
            config: ClusterConfig::default(),
            vnodes: RingConfig::default().vnodes_per_weight,
            partitions: BalancedConfig::default().partitions,
            ops: 2_000_000,
            seed: 42,
            ring_sizes: vec![3, 10, 100, 1000],
        }
    }
}

/// All results of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The settings used.
    pub keys: usize,
    /// Nodes in the measured cluster.
    pub nodes: usize,
    /// Placement of the measured cluster.
    pub placement: String,
    /// Keys per copy batch.
    pub copy_batch: usize,
    /// Lock stripes per node.
    pub stripes: usize,
    /// Lookup time per ring size.
    pub lookup: Vec<LookupResult>,
    /// Balance per ring size.
    pub balance: Vec<BalanceResult>,
    /// Keys moved by one add and one remove, against the optimum.
    pub movement: MovementResult,
    /// Throughput against the baseline.
    pub throughput: ThroughputResult,
    /// Latency while a rebalance runs, against idle.
    pub latency: LatencyResult,
}

/// Median time of one `Ring::owner` (hash included).
#[derive(Debug, Clone, Serialize)]
pub struct LookupResult {
    /// The ring's placement.
    pub placement: String,
    /// Physical nodes.
    pub nodes: usize,
    /// Nanoseconds per lookup of a 16-byte key.
    pub ns: f64,
    /// A sorted `Vec<u64>` with binary search, same tokens, same run.
    pub binary_search_ns: f64,
}

/// Share of the ring per node (exact, from the token arcs).
#[derive(Debug, Clone, Serialize)]
pub struct BalanceResult {
    /// The ring's placement.
    pub placement: String,
    /// Physical nodes, all of weight 1.
    pub nodes: usize,
    /// Busiest node's share over the mean share.
    pub busiest_over_mean: f64,
    /// Standard deviation of the shares over the mean share.
    pub relative_stddev: f64,
}

/// Data movement of membership changes on the loaded cluster.
#[derive(Debug, Clone, Serialize)]
pub struct MovementResult {
    /// Keys moved by adding one node.
    pub add_keys_moved: u64,
    /// The optimum for an add: keys the new node owns afterwards.
    pub add_optimum: u64,
    /// An even share, `keys / (nodes + 1)`, for reference.
    pub add_even_share: u64,
    /// Wall time of the add.
    pub add_seconds: f64,
    /// Keys moved per second by the add.
    pub add_keys_per_second: f64,
    /// Keys moved by removing that node again.
    pub remove_keys_moved: u64,
    /// The optimum for a remove: the keys the node held.
    pub remove_optimum: u64,
    /// Wall time of the remove.
    pub remove_seconds: f64,
}

/// Get/put throughput with 2 threads, 90% gets.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    /// Client threads.
    pub threads: usize,
    /// ringkv operations per second.
    pub ringkv_ops_per_second: f64,
    /// `DashMap<Bytes, Bytes>` operations per second, same workload.
    pub baseline_ops_per_second: f64,
    /// ringkv over baseline.
    pub ratio: f64,
}

/// Client latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Operations measured.
    pub ops: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

/// Latency of one client while idle and while nodes join and leave.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Without membership changes.
    pub idle: Percentiles,
    /// While another thread adds and removes a node in a loop.
    pub rebalancing: Percentiles,
    /// Membership changes completed during the measurement.
    pub changes: usize,
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:012}"))
}

fn value(rng: &mut SmallRng) -> Bytes {
    let len = rng.random_range(16..100);
    Bytes::from(vec![b'v'; len])
}

fn ring_of(nodes: usize, placement: Placement) -> Ring {
    let mut ring = placement.empty_ring().expect("validated placement");
    for n in 0..nodes {
        ring = ring.with_node(format!("node{n}"), 1).expect("distinct ids");
    }
    ring
}

/// Runs every measurement.
pub fn run(options: &BenchOptions, mut progress: impl FnMut(&str)) -> BenchReport {
    progress("lookup");
    let placements = [
        Placement::RandomVnodes {
            vnodes_per_weight: options.vnodes,
        },
        Placement::BalancedPartitions {
            partitions: options.partitions,
        },
    ];
    let lookup = placements
        .iter()
        .flat_map(|&p| options.ring_sizes.iter().map(move |&n| (p, n)))
        .map(|(p, n)| lookup(n, p, options.seed))
        .collect();
    progress("balance");
    let balance = placements
        .iter()
        .flat_map(|&p| options.ring_sizes.iter().map(move |&n| (p, n)))
        .map(|(p, n)| balance(n, p))
        .collect();
    progress("load");
    let cluster = load(options);
    progress("movement");
    let movement = movement(&cluster, options);
    progress("throughput");
    let throughput = throughput(&cluster, options);
    progress("latency");
    let latency = latency(&cluster, options);
    BenchReport {
        keys: options.keys,
        nodes: options.nodes,
        placement: options.config.placement.to_string(),
        copy_batch: options.config.copy_batch,
        stripes: options.config.stripes,
        lookup,
        balance,
        movement,
        throughput,
        latency,
    }
}

fn median_ns(mut f: impl FnMut() -> Duration, per: usize) -> f64 {
    let mut samples: Vec<f64> = (0..11)
        .map(|_| f().as_nanos() as f64 / per as f64)
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn lookup(nodes: usize, placement: Placement, seed: u64) -> LookupResult {
    let ring = ring_of(nodes, placement);
    let mut rng = SmallRng::seed_from_u64(seed);
    let keys: Vec<[u8; 16]> = (0..4096).map(|_| rng.random()).collect();
    let tokens: Vec<u64> = ring.vnodes().map(|(t, _)| t).collect();
    const PER: usize = 200_000;
    let ns = median_ns(
        || {
            let t = Instant::now();
            for i in 0..PER {
                black_box(ring.owner(black_box(&keys[i & 4095])));
            }
            t.elapsed()
        },
        PER,
    );
    let binary_search_ns = median_ns(
        || {
            let t = Instant::now();
            for i in 0..PER {
                let h = key_token(black_box(&keys[i & 4095]));
                let j = tokens.partition_point(|&x| x < h);
                black_box(if j == tokens.len() { 0 } else { j });
            }
            t.elapsed()
        },
        PER,
    );
    LookupResult {
        placement: placement.to_string(),
        nodes,
        ns,
        binary_search_ns,
    }
}

fn balance(nodes: usize, placement: Placement) -> BalanceResult {
    let ring = ring_of(nodes, placement);
    let entries: Vec<_> = ring.vnodes().map(|(t, id)| (t, id.clone())).collect();
    let mut share: HashMap<_, f64> = HashMap::new();
    for (i, (token, id)) in entries.iter().enumerate() {
        let prev = entries[(i + entries.len() - 1) % entries.len()].0;
        *share.entry(id.clone()).or_default() += TokenRange::new(prev, *token).fraction();
    }
    let mean = 1.0 / nodes as f64;
    let busiest = share.values().copied().fold(0.0, f64::max);
    let var = share.values().map(|s| (s - mean).powi(2)).sum::<f64>() / nodes as f64;
    BalanceResult {
        placement: placement.to_string(),
        nodes,
        busiest_over_mean: busiest / mean,
        relative_stddev: var.sqrt() / mean,
    }
}

fn load(options: &BenchOptions) -> Cluster {
    let cluster = Cluster::new(options.config.clone()).expect("validated config");
    for n in 0..options.nodes {
        cluster.add_node(&format!("node{n}")).expect("distinct ids");
    }
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for i in 0..options.keys as u64 {
        cluster.put(key(i), value(&mut rng)).expect("nodes are up");
    }
    cluster
}

fn movement(cluster: &Cluster, options: &BenchOptions) -> MovementResult {
    let t = Instant::now();
    let added = cluster.add_node("bench-extra").expect("new id");
    let add_seconds = t.elapsed().as_secs_f64();
    // The optimum, computed from the ring alone: the keys whose owner is
    // now the new node (the minimum any placement-preserving scheme moves).
    let ring = cluster.ring();
    let held = (0..options.keys as u64)
        .filter(|&i| {
            ring.owner(&key(i))
                .is_some_and(|o| o.as_str() == "bench-extra")
        })
        .count() as u64;
    let t = Instant::now();
    let removed = cluster.remove_node("bench-extra").expect("member");
    let remove_seconds = t.elapsed().as_secs_f64();
    MovementResult {
        add_keys_moved: added.keys_moved,
        add_optimum: held,
        add_even_share: (options.keys / (options.nodes + 1)) as u64,
        add_seconds,
        add_keys_per_second: added.keys_moved as f64 / add_seconds,
        remove_keys_moved: removed.keys_moved,
        remove_optimum: held,
        remove_seconds,
    }
}

const THREADS: usize = 2;

/// Runs `THREADS` threads of 90% get / 10% put and returns ops/s.
fn drive(options: &BenchOptions, op: impl Fn(bool, Bytes, &mut SmallRng) + Sync) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let op = &op;
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(options.seed + t as u64);
                for _ in 0..options.ops {
                    let k = key(rng.random_range(0..options.keys as u64));
                    op(rng.random_range(0..10) == 0, k, &mut rng);
                }
            });
        }
    });
    (THREADS * options.ops) as f64 / start.elapsed().as_secs_f64()
}

fn throughput(cluster: &Cluster, options: &BenchOptions) -> ThroughputResult {
    let baseline: DashMap<Bytes, Bytes> = DashMap::new();
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for i in 0..options.keys as u64 {
        baseline.insert(key(i), value(&mut rng));
    }
    // Alternate the two, three rounds each, and keep each one's best.
    let (mut ours, mut base) = (0f64, 0f64);
    for _ in 0..3 {
        base = base.max(drive(options, |put, k, rng| {
            if put {
                baseline.insert(k, value(rng));
            } else {
                black_box(baseline.get(&k).map(|v| v.len()));
            }
        }));
        ours = ours.max(drive(options, |put, k, rng| {
            if put {
                cluster.put(k, value(rng)).expect("nodes are up");
            } else {
                black_box(cluster.get(&k).expect("nodes are up"));
            }
        }));
    }
    ThroughputResult {
        threads: THREADS,
        ringkv_ops_per_second: ours,
        baseline_ops_per_second: base,
        ratio: ours / base,
    }
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e6
    };
    Percentiles {
        ops: samples.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: at(1.0),
    }
}

/// Times one client's random ops (10% puts) until `stop` says so and at
/// least `min_ops` were measured.
fn client_latencies(
    cluster: &Cluster,
    options: &BenchOptions,
    min_ops: usize,
    stop: impl Fn() -> bool,
    count: &AtomicUsize,
) -> Vec<Duration> {
    let mut rng = SmallRng::seed_from_u64(options.seed ^ 0x1a7);
    let mut samples = Vec::with_capacity(min_ops);
    while samples.len() < min_ops || !stop() {
        let k = key(rng.random_range(0..options.keys as u64));
        let put = rng.random_range(0..10) == 0;
        let v = value(&mut rng);
        let t = Instant::now();
        if put {
            cluster.put(k, v).expect("nodes are up");
        } else {
            black_box(cluster.get(&k).expect("nodes are up"));
        }
        samples.push(t.elapsed());
        count.store(samples.len(), Ordering::Relaxed);
    }
    samples
}

/// Membership changes made while the client is measured: at least this many.
const MIN_CHANGES: usize = 6;

fn latency(cluster: &Cluster, options: &BenchOptions) -> LatencyResult {
    let ops = options.ops.min(500_000);
    let count = AtomicUsize::new(0);
    let idle = percentiles(client_latencies(cluster, options, ops, || true, &count));

    // A second thread adds and removes a node until the client has measured
    // `ops` operations and at least `MIN_CHANGES` changes were made; the
    // client measures exactly while the changes run.
    let count = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let (samples, changes) = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut changes = 0;
            while changes < MIN_CHANGES || count.load(Ordering::Relaxed) < ops {
                cluster.add_node("bench-churn").expect("new id");
                cluster.remove_node("bench-churn").expect("member");
                changes += 2;
            }
            done.store(true, Ordering::Release);
            changes
        });
        let samples =
            client_latencies(cluster, options, 0, || done.load(Ordering::Acquire), &count);
        (samples, churn.join().expect("churn thread"))
    });
    LatencyResult {
        idle,
        rebalancing: percentiles(samples),
        changes,
    }
}

/// Renders the report as a plain-text table.
pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ringkv bench: {} keys on {} nodes, {}, copy batch {}, {} stripes",
        r.keys, r.nodes, r.placement, r.copy_batch, r.stripes
    );
    let _ = writeln!(s, "\nlookup (16-byte keys, hash included)");
    let _ = writeln!(
        s,
        "  {:<36}  {:>6}  {:>10}  {:>14}",
        "placement", "nodes", "ringkv ns", "binsearch ns"
    );
    for l in &r.lookup {
        let _ = writeln!(
            s,
            "  {:<36}  {:>6}  {:>10.1}  {:>14.1}",
            l.placement, l.nodes, l.ns, l.binary_search_ns
        );
    }
    let _ = writeln!(s, "\nbalance (share of the ring, weight 1 each)");
    let _ = writeln!(
        s,
        "  {:<36}  {:>6}  {:>14}  {:>12}",
        "placement", "nodes", "busiest/mean", "stddev/mean"
    );
    for b in &r.balance {
        let _ = writeln!(
            s,
            "  {:<36}  {:>6}  {:>14.3}  {:>12.3}",
            b.placement, b.nodes, b.busiest_over_mean, b.relative_stddev
        );
    }
    let m = &r.movement;
    let _ = writeln!(s, "\nmovement");
    let _ = writeln!(
        s,
        "  add node:    {} keys moved, optimum {} (even share {}), {:.3} s, {:.2} M keys/s",
        m.add_keys_moved,
        m.add_optimum,
        m.add_even_share,
        m.add_seconds,
        m.add_keys_per_second / 1e6
    );
    let _ = writeln!(
        s,
        "  remove node: {} keys moved, optimum {}, {:.3} s",
        m.remove_keys_moved, m.remove_optimum, m.remove_seconds
    );
    let t = &r.throughput;
    let _ = writeln!(s, "\nthroughput ({} threads, 90% get / 10% put)", t.threads);
    let _ = writeln!(
        s,
        "  ringkv {:.2} M ops/s, DashMap baseline {:.2} M ops/s, ratio {:.2}",
        t.ringkv_ops_per_second / 1e6,
        t.baseline_ops_per_second / 1e6,
        t.ratio
    );
    let _ = writeln!(
        s,
        "\nlatency of one client, microseconds ({} membership changes during)",
        r.latency.changes
    );
    let _ = writeln!(
        s,
        "  {:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}",
        "", "ops", "p50", "p99", "p99.9", "max"
    );
    for (name, p) in [
        ("idle", &r.latency.idle),
        ("rebalancing", &r.latency.rebalancing),
    ] {
        let _ = writeln!(
            s,
            "  {:>12}  {:>8}  {:>8.2}  {:>8.2}  {:>8.2}  {:>9.1}",
            name, p.ops, p.p50_us, p.p99_us, p.p999_us, p.max_us
        );
    }
    s
}
