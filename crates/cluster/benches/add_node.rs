//! Benchmark 2: `add_node` (10 nodes -> 11) on clusters of 1M and 10M keys.
//!
//! A custom harness (no criterion): building a 10M-key cluster takes longer
//! than criterion's sampling model tolerates. For each size it builds one
//! cluster of 10 nodes (256 vnodes each), then alternates
//! `add_node("node-10")` / `remove_node("node-10")` `RUNS` times, timing
//! each call and printing keys moved, keys moved per second and ns per
//! moved key. `remove_node` moves the same keys back, so it is reported too.
//!
//! Run with `cargo bench -p ringkv-cluster --bench add_node`.
//! Environment: `RINGKV_BENCH_SIZES=1000000,10000000` (default),
//! `RINGKV_BENCH_RUNS=3` (runs per size; 10M uses at most 3).
#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use ringkv_cluster::{ClusterConfig, RebalanceReport};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Runs one membership change; prints and returns (wall ns, cpu ns) per
/// moved key.
fn timed(size: usize, run: usize, change: impl FnOnce() -> RebalanceReport) -> (f64, f64) {
    let cpu0 = common::thread_cpu_ns();
    let t = Instant::now();
    let r = change();
    let wall = t.elapsed();
    let cpu = common::thread_cpu_ns()
        .zip(cpu0)
        .map_or(Duration::ZERO, |(b, a)| Duration::from_nanos(b - a));
    let moved = r.keys_moved as f64;
    let transfer: Duration = r.transfers.iter().map(|t| t.duration).sum();
    let (wall_ns, cpu_ns) = (
        wall.as_nanos() as f64 / moved,
        cpu.as_nanos() as f64 / moved,
    );
    println!(
        "{size:>10} {run:>3} {:<11} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>9.2}",
        r.kind.as_str(),
        r.keys_moved,
        transfer.as_secs_f64() * 1e3,
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3,
        wall_ns,
        cpu_ns,
        1e3 / wall_ns,
    );
    (wall_ns, cpu_ns)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let sizes = env_list("RINGKV_BENCH_SIZES", &[1_000_000, 10_000_000]);
    let runs = env_list("RINGKV_BENCH_RUNS", &[3])[0];
    println!(
        "{:>10} {:>3} {:<11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}",
        "keys",
        "run",
        "op",
        "moved",
        "xfer_ms",
        "wall_ms",
        "cpu_ms",
        "wall_ns/k",
        "cpu_ns/k",
        "Mkeys/s"
    );
    for size in sizes {
        let t0 = Instant::now();
        let keys = common::keys(size, 1);
        let cluster = common::cluster(ClusterConfig::default(), 10, &keys, 3);
        eprintln!(
            "# built {size} keys on 10 nodes in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let (mut add_wall, mut add_cpu) = (Vec::new(), Vec::new());
        let runs = if size >= 10_000_000 {
            runs.min(3)
        } else {
            runs
        };
        for run in 1..=runs {
            let (w, c) = timed(size, run, || cluster.add_node("node-10").expect("add_node"));
            add_wall.push(w);
            add_cpu.push(c);
            timed(size, run, || {
                cluster.remove_node("node-10").expect("remove_node")
            });
        }
        let (w, c) = (median(add_wall), median(add_cpu));
        println!(
            "# {size} keys: add_node median {w:.1} ns/moved key wall = {:.2} M keys/s; \
             {c:.1} ns/moved key on-CPU = {:.2} M keys/s",
            1e3 / w,
            1e3 / c
        );
        assert_eq!(cluster.stats().total_keys, size, "no key lost");
        drop(cluster);
    }
}
