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
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{Cluster, ClusterConfig};
use ringkv_ring::{BalancedConfig, Placement, Ring, RingConfig, TokenRange, key_token};

mod report;
#[cfg(test)]
mod tests;
mod workload;

pub use report::{
    BalanceResult, BenchReport, LatencyResult, LookupResult, MovementResult, Percentiles,
    ThroughputResult, render,
};
use workload::{WorkOp, Workload};

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
    let work = Workload::new(options);
    let cluster = load(options, &work);
    progress("movement");
    let movement = movement(&cluster, options, &work);
    progress("throughput");
    let throughput = throughput(&cluster, options, &work);
    progress("latency");
    let latency = latency(&cluster, options, &work);
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

fn load(options: &BenchOptions, work: &Workload) -> Cluster {
    let cluster = Cluster::new(options.config.clone()).expect("validated config");
    for n in 0..options.nodes {
        cluster.add_node(&format!("node{n}")).expect("distinct ids");
    }
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for k in &work.keys {
        cluster
            .put(k.clone(), work.value(&mut rng))
            .expect("nodes are up");
    }
    cluster
}

fn movement(cluster: &Cluster, options: &BenchOptions, work: &Workload) -> MovementResult {
    let t = Instant::now();
    let added = cluster.add_node("bench-extra").expect("new id");
    let add_seconds = t.elapsed().as_secs_f64();
    // The optimum, computed from the ring alone: the keys whose owner is
    // now the new node (the minimum any placement-preserving scheme moves).
    let ring = cluster.ring();
    let held = work
        .keys
        .iter()
        .filter(|k| ring.owner(k).is_some_and(|o| o.as_str() == "bench-extra"))
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
/// Runs `THREADS` threads of the 90% get / 10% put workload and returns
/// ops/s. Both contenders get the same operations in the same order.
fn drive(options: &BenchOptions, work: &Workload, apply: impl Fn(WorkOp) + Sync) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let apply = &apply;
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(options.seed + t as u64);
                for _ in 0..options.ops {
                    apply(WorkOp::draw(work, &mut rng));
                }
            });
        }
    });
    (THREADS * options.ops) as f64 / start.elapsed().as_secs_f64()
}

fn throughput(cluster: &Cluster, options: &BenchOptions, work: &Workload) -> ThroughputResult {
    let baseline: DashMap<Bytes, Bytes> = DashMap::new();
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for k in &work.keys {
        baseline.insert(k.clone(), work.value(&mut rng));
    }
    // Alternate the two, three rounds each, and keep each one's best. A get
    // returns the stored `Bytes` on both sides (ringkv's get clones it out
    // of its store, so the baseline clones it out of the map).
    let (mut ours, mut base) = (0f64, 0f64);
    for _ in 0..3 {
        base = base.max(drive(options, work, |op| match op {
            WorkOp::Put(k, v) => {
                baseline.insert(k, v);
            }
            WorkOp::Get(k) => {
                black_box(baseline.get(&k).map(|v| v.value().clone()));
            }
        }));
        ours = ours.max(drive(options, work, |op| match op {
            WorkOp::Put(k, v) => cluster.put(k, v).expect("nodes are up"),
            WorkOp::Get(k) => {
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

/// Percentiles as `hdrhistogram` computes them (the definition used for
/// every latency figure of the project): nanoseconds recorded at 3
/// significant digits, and for quantile q the smallest recorded value that
/// at least a fraction q of the samples do not exceed.
fn percentiles(samples: &Histogram<u64>) -> Percentiles {
    let us = |ns: u64| ns as f64 / 1e3;
    Percentiles {
        ops: samples.len() as usize,
        p50_us: us(samples.value_at_quantile(0.50)),
        p99_us: us(samples.value_at_quantile(0.99)),
        p999_us: us(samples.value_at_quantile(0.999)),
        max_us: us(samples.max()),
    }
}

/// An empty histogram of nanoseconds, at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are supported")
}

/// Times one client's random ops (10% puts) until `stop` says so and at
/// least `min_ops` were measured.
fn client_latencies(
    cluster: &Cluster,
    options: &BenchOptions,
    work: &Workload,
    min_ops: usize,
    stop: impl Fn() -> bool,
    count: &AtomicUsize,
) -> Histogram<u64> {
    let mut rng = SmallRng::seed_from_u64(options.seed ^ 0x1a7);
    let mut samples = histogram();
    let mut n = 0;
    while n < min_ops || !stop() {
        let op = WorkOp::draw(work, &mut rng);
        let t = Instant::now();
        match op {
            WorkOp::Put(k, v) => cluster.put(k, v).expect("nodes are up"),
            WorkOp::Get(k) => {
                black_box(cluster.get(&k).expect("nodes are up"));
            }
        }
        let ns = t.elapsed().as_nanos();
        samples.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
        n += 1;
        count.store(n, Ordering::Relaxed);
    }
    samples
}

/// Membership changes made while the client is measured: at least this many.
const MIN_CHANGES: usize = 6;

fn latency(cluster: &Cluster, options: &BenchOptions, work: &Workload) -> LatencyResult {
    let ops = options.ops.min(500_000);
    let count = AtomicUsize::new(0);
    let idle = percentiles(&client_latencies(
        cluster,
        options,
        work,
        ops,
        || true,
        &count,
    ));

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
        let samples = client_latencies(
            cluster,
            options,
            work,
            0,
            || done.load(Ordering::Acquire),
            &count,
        );
        (samples, churn.join().expect("churn thread"))
    });
    LatencyResult {
        idle,
        rebalancing: percentiles(&samples),
        changes,
    }
}
