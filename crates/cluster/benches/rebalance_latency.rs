//! Benchmark 3: client latency (p50/p99/p99.9/max) of `get` and `put` on a
//! 1M-key, 10-node cluster, idle versus while another thread runs
//! `add_node("node-10")` / `remove_node("node-10")` back to back.
//!
//! One client thread runs a pre-drawn 90% get / 10% put mix and times every
//! operation with `Instant` into preallocated arrays; percentiles come from
//! `hdrhistogram` (see `common::summary`). Three phases of `OPS`
//! operations each:
//!
//! - `idle`: the client alone;
//! - `spin`: a second thread burns CPU without touching the cluster, a
//!   control for plain CPU competition on a small machine;
//! - `rebalance`: the second thread rebalances continuously.
//!
//! Slow operations of the rebalance phase are attributed to what the
//! rebalancer was doing when they started (`add_node` or `remove_node`).
//!
//! Run with `cargo bench -p ringkv-cluster --bench rebalance_latency`.
//! Environment: `RINGKV_LAT_OPS` (default 2000000 per phase),
//! `RINGKV_COPY_BATCH` (default: `ClusterConfig::default().copy_batch`).
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ringkv_cluster::{ChangeKind, Cluster, ClusterConfig};

use common::{Op, histogram, summary};
use hdrhistogram::Histogram;

const KEYS: usize = 1_000_000;
const NODES: usize = 10;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// Latencies of one phase, split by operation kind, with start offsets.
struct Samples {
    get: Histogram<u64>,
    put: Histogram<u64>,
    /// (start offset from `base` in ns, latency ns, is put)
    all: Vec<(u64, u32, bool)>,
}

fn run_client(
    cluster: &Cluster,
    keys: &[Bytes],
    values: &[Bytes],
    ops: &[Op],
    base: Instant,
) -> Samples {
    let mut s = Samples {
        get: histogram(),
        put: histogram(),
        all: Vec::with_capacity(ops.len()),
    };
    let mut vi = 0;
    for op in ops {
        let key = &keys[op.key as usize];
        let t = Instant::now();
        if op.put {
            vi = (vi + 1) % values.len();
            cluster.put(key.clone(), values[vi].clone()).expect("put");
        } else {
            black_box(cluster.get(key).expect("get"));
        }
        let end = Instant::now();
        let ns = end.duration_since(t).as_nanos().min(u32::MAX as u128) as u32;
        let start = t.duration_since(base).as_nanos() as u64;
        if op.put {
            s.put.saturating_record(u64::from(ns));
        } else {
            s.get.saturating_record(u64::from(ns));
        }
        s.all.push((start, ns, op.put));
    }
    s
}

fn row(phase: &str, kind: &str, v: &Histogram<u64>) -> [u64; 4] {
    let p = summary(v);
    println!(
        "{phase:<10} {kind:<4} {:>9} {:>9} {:>9} {:>9} {:>11}",
        v.len(),
        p[0],
        p[1],
        p[2],
        p[3]
    );
    p
}

fn main() {
    let ops_n = env_usize("RINGKV_LAT_OPS").unwrap_or(2_000_000);
    let mut config = ClusterConfig::default();
    if let Some(b) = env_usize("RINGKV_COPY_BATCH") {
        config.copy_batch = b;
    }
    let keys = common::keys(KEYS, 1);
    let values = common::value_pool(4096, 2);
    let cluster = common::cluster(config.clone(), NODES, &keys, 3);
    let ops = common::ops(ops_n, KEYS, 10, 7);
    println!(
        "# {KEYS} keys, {NODES} nodes, copy_batch {}, {ops_n} ops per phase, 90% get / 10% put",
        config.copy_batch
    );
    // Warm up: touch every key once so the first phase is not penalised.
    for k in &keys {
        black_box(cluster.get(k).expect("get"));
    }

    let base = Instant::now();
    let idle = run_client(&cluster, &keys, &values, &ops, base);

    let stop = AtomicBool::new(false);
    let spin = std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        let r = run_client(&cluster, &keys, &values, &ops, base);
        stop.store(true, Ordering::Relaxed);
        r
    });

    stop.store(false, Ordering::Relaxed);
    // (start, end, kind, keys moved) of each membership change.
    let (rebal, changes) = std::thread::scope(|s| {
        let rebalancer = s.spawn(|| {
            let mut log = Vec::new();
            let mut add = true;
            while !stop.load(Ordering::Relaxed) {
                let t0 = base.elapsed().as_nanos() as u64;
                let r = if add {
                    cluster.add_node("node-10")
                } else {
                    cluster.remove_node("node-10")
                }
                .expect("rebalance");
                let t1 = base.elapsed().as_nanos() as u64;
                log.push((t0, t1, r.kind, r.keys_moved));
                add = !add;
            }
            if !add {
                cluster.remove_node("node-10").expect("rebalance");
            }
            log
        });
        let r = run_client(&cluster, &keys, &values, &ops, base);
        stop.store(true, Ordering::Relaxed);
        (r, rebalancer.join().expect("rebalancer"))
    });
    assert_eq!(cluster.stats().total_keys, KEYS, "no key lost");

    println!(
        "{:<10} {:<4} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "phase", "op", "count", "p50_ns", "p99_ns", "p99.9_ns", "max_ns"
    );
    let gi = row("idle", "get", &idle.get);
    let pi = row("idle", "put", &idle.put);
    row("spin", "get", &spin.get);
    row("spin", "put", &spin.put);
    let gr = row("rebalance", "get", &rebal.get);
    let pr = row("rebalance", "put", &rebal.put);
    println!(
        "# p99.9 rebalance/idle: get {:.2}x, put {:.2}x (goal <= 2x)",
        gr[2] as f64 / gi[2] as f64,
        pr[2] as f64 / pi[2] as f64
    );

    let adds = changes
        .iter()
        .filter(|c| c.2 == ChangeKind::AddNode)
        .count();
    let busy: u64 = changes.iter().map(|c| c.1 - c.0).sum();
    let span = rebal.all.last().map_or(1, |l| l.0) - rebal.all[0].0;
    println!(
        "# rebalancer: {} changes ({adds} add, {} remove), {:.0} ms mean per change, busy {:.0}% of the phase",
        changes.len(),
        changes.len() - adds,
        busy as f64 / changes.len().max(1) as f64 / 1e6,
        100.0 * busy as f64 / span as f64
    );
    // Attribute slow ops (above the idle p99.9 of their kind) to the change
    // running when they started.
    let mut by = [[0usize; 3]; 2]; // [get, put] x [add, remove, between]
    let mut ops_by = [[0usize; 3]; 2];
    let mut ci = 0;
    for &(start, ns, put) in &rebal.all {
        while ci < changes.len() && changes[ci].1 < start {
            ci += 1;
        }
        let during = match changes.get(ci) {
            Some(c) if c.0 <= start => match c.2 {
                ChangeKind::AddNode => 0,
                ChangeKind::RemoveNode => 1,
            },
            _ => 2,
        };
        let k = put as usize;
        ops_by[k][during] += 1;
        if u64::from(ns) > if put { pi[2] } else { gi[2] } {
            by[k][during] += 1;
        }
    }
    // How long the slow ops of the rebalance phase took.
    let edges = [5_000u32, 50_000, 500_000, 5_000_000, u32::MAX];
    let mut hist = [0usize; 5];
    for &(_, ns, _) in &rebal.all {
        if let Some(b) = edges.iter().position(|&e| ns < e) {
            hist[b] += 1;
        }
    }
    println!(
        "# rebalance-phase ops by latency: <5us {}, 5-50us {}, 50-500us {}, 0.5-5ms {}, >=5ms {}",
        hist[0], hist[1], hist[2], hist[3], hist[4]
    );
    for (k, name) in ["get", "put"].iter().enumerate() {
        println!(
            "# {name} ops above idle p99.9, by what ran: add_node {}/{} ({:.2}%), remove_node {}/{} ({:.2}%), none {}/{}",
            by[k][0],
            ops_by[k][0],
            100.0 * by[k][0] as f64 / ops_by[k][0].max(1) as f64,
            by[k][1],
            ops_by[k][1],
            100.0 * by[k][1] as f64 / ops_by[k][1].max(1) as f64,
            by[k][2],
            ops_by[k][2],
        );
    }
}
