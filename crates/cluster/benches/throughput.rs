//! Benchmark 1: throughput of a 90% get / 10% put mix on 1M keys from two
//! threads, ringkv's `Cluster` (3 and 10 nodes, 256 vnodes per node)
//! against a plain `DashMap<Bytes, Bytes>` with the same workload.
//!
//! Each sample runs `iters` rounds; a round is two threads (scoped) each
//! executing `OPS_PER_THREAD` pre-drawn operations. Throughput is reported
//! as elements (= operations) per second.
//!
//! Run with `cargo bench -p ringkv-cluster --bench throughput`.
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use ringkv_cluster::{Cluster, ClusterConfig};

use common::{Op, keys, ops, value, value_pool};

const KEYS: usize = 1_000_000;
const THREADS: usize = 2;
const OPS_PER_THREAD: usize = 200_000;
const PUT_PCT: u32 = 10;

/// The operations both contenders must serve.
trait Kv: Sync {
    fn get(&self, key: &Bytes) -> Option<Bytes>;
    fn put(&self, key: Bytes, value: Bytes);
}

impl Kv for Cluster {
    #[inline]
    fn get(&self, key: &Bytes) -> Option<Bytes> {
        Cluster::get(self, key).expect("get")
    }
    #[inline]
    fn put(&self, key: Bytes, value: Bytes) {
        Cluster::put(self, key, value).expect("put")
    }
}

impl Kv for DashMap<Bytes, Bytes> {
    #[inline]
    fn get(&self, key: &Bytes) -> Option<Bytes> {
        DashMap::get(self, key).map(|v| v.value().clone())
    }
    #[inline]
    fn put(&self, key: Bytes, value: Bytes) {
        self.insert(key, value);
    }
}

struct Workload {
    keys: Vec<Bytes>,
    values: Vec<Bytes>,
    /// One op list per thread.
    ops: Vec<Vec<Op>>,
}

fn run_round(kv: &dyn Kv, w: &Workload) -> Duration {
    let barrier = Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let ops = &w.ops[t];
                    let mut vi = t * 7919;
                    barrier.wait();
                    let start = Instant::now();
                    for op in ops {
                        let key = &w.keys[op.key as usize];
                        if op.put {
                            vi = (vi + 1) % w.values.len();
                            kv.put(key.clone(), w.values[vi].clone());
                        } else {
                            black_box(kv.get(key));
                        }
                    }
                    start.elapsed()
                })
            })
            .collect();
        barrier.wait();
        // The round lasts as long as its slowest thread.
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .max()
            .unwrap_or_default()
    })
}

fn bench(c: &mut Criterion) {
    let keys = keys(KEYS, 1);
    let w = Workload {
        values: value_pool(4096, 2),
        ops: (0..THREADS)
            .map(|t| ops(OPS_PER_THREAD, KEYS, PUT_PCT, 100 + t as u64))
            .collect(),
        keys,
    };

    let mut g = c.benchmark_group("mix_90get_10put_1M_keys_2_threads");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements((THREADS * OPS_PER_THREAD) as u64));

    let map: DashMap<Bytes, Bytes> = DashMap::new();
    let mut rng = SmallRng::seed_from_u64(3);
    for k in &w.keys {
        map.insert(k.clone(), value(&mut rng));
    }
    g.bench_function("dashmap", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_round(&map, &w)).sum())
    });
    let clusters: Vec<(usize, Cluster)> = [3, 10]
        .into_iter()
        .map(|n| (n, common::cluster(ClusterConfig::default(), n, &w.keys, 3)))
        .collect();
    for (nodes, cluster) in &clusters {
        g.bench_with_input(BenchmarkId::new("ringkv", nodes), nodes, |b, _| {
            b.iter_custom(|iters| (0..iters).map(|_| run_round(cluster, &w)).sum())
        });
    }
    g.finish();
    paired(&map, &clusters, &w);
}

/// Machine load drifts between criterion's benchmarks on a shared box, so
/// the ratio is also measured in interleaved rounds: dashmap, ringkv/3,
/// ringkv/10, repeated; each round's ratio uses its neighbours in time.
fn paired(map: &DashMap<Bytes, Bytes>, clusters: &[(usize, Cluster)], w: &Workload) {
    if std::env::args().any(|a| a == "--profile-time" || a == "--list") {
        return;
    }
    const ROUNDS: usize = 7;
    let ops = (THREADS * OPS_PER_THREAD) as f64;
    let mut base = Vec::new();
    let mut ratios = vec![Vec::new(); clusters.len()];
    let mut rates = vec![Vec::new(); clusters.len()];
    for _ in 0..ROUNDS {
        let d = ops / run_round(map, w).as_secs_f64();
        base.push(d);
        for (i, (_, c)) in clusters.iter().enumerate() {
            let r = ops / run_round(c, w).as_secs_f64();
            rates[i].push(r);
            ratios[i].push(r / d);
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("paired rounds ({ROUNDS}, interleaved), median ops/s:");
    println!("  dashmap   {:>12.0}", med(base));
    for (i, (n, _)) in clusters.iter().enumerate() {
        println!(
            "  ringkv/{n:<2} {:>12.0}  ratio to dashmap: median {:.2}x (min {:.2}x, max {:.2}x)",
            med(rates[i].clone()),
            med(ratios[i].clone()),
            ratios[i].iter().copied().fold(f64::INFINITY, f64::min),
            ratios[i].iter().copied().fold(0.0, f64::max),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
