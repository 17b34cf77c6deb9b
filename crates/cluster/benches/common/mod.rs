//! Shared workload helpers for the `ringkv-cluster` benchmarks.
#![allow(dead_code)] // each bench uses a subset

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{Cluster, ClusterConfig};

/// Key length in bytes.
pub const KEY_LEN: usize = 16;
/// Value lengths are drawn uniformly from this range.
pub const VALUE_LEN: std::ops::RangeInclusive<usize> = 16..=100;

/// `n` distinct random 16-byte keys from a seeded rng.
pub fn keys(n: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut k = [0u8; KEY_LEN];
            rng.fill(&mut k[..]);
            Bytes::copy_from_slice(&k)
        })
        .collect()
}

/// A random value of 16..=100 bytes.
pub fn value(rng: &mut impl Rng) -> Bytes {
    let len = rng.random_range(VALUE_LEN);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

/// A pool of values that put operations cycle through, so the timed loop
/// clones a `Bytes` (a reference-count increment) instead of allocating.
pub fn value_pool(n: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|_| value(&mut rng)).collect()
}

/// One pre-drawn operation: a key index and whether it is a put.
#[derive(Clone, Copy)]
pub struct Op {
    pub key: u32,
    pub put: bool,
}

/// `n` operations over `keys` keys, `put_pct` percent puts, seeded.
pub fn ops(n: usize, keys: usize, put_pct: u32, seed: u64) -> Vec<Op> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|_| Op {
            key: rng.random_range(0..keys as u32),
            put: rng.random_range(0..100) < put_pct,
        })
        .collect()
}

/// Node ids used by every bench: `node-0`, `node-1`, ...
pub fn node_id(i: usize) -> String {
    format!("node-{i}")
}

/// A cluster of `nodes` nodes holding every key of `keys`, each with a
/// random value.
pub fn cluster(config: ClusterConfig, nodes: usize, keys: &[Bytes], seed: u64) -> Cluster {
    let cluster = Cluster::new(config).expect("valid config");
    for i in 0..nodes {
        cluster.add_node(&node_id(i)).expect("add node");
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    for k in keys {
        cluster.put(k.clone(), value(&mut rng)).expect("put");
    }
    cluster
}

/// An empty histogram of nanoseconds at 3 significant digits. Every
/// latency percentile of the project comes from `hdrhistogram` this way
/// (`ringkv bench` too), so that figures compare.
pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are supported")
}

/// p50, p99, p99.9 and max of `h`, as `hdrhistogram` defines them: for
/// quantile q, the smallest recorded value (at the histogram's precision)
/// that at least a fraction q of the samples do not exceed.
pub fn summary(h: &Histogram<u64>) -> [u64; 4] {
    [
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    ]
}

/// Nanoseconds the calling thread has spent on a CPU so far, from
/// `/proc/thread-self/schedstat` (Linux); `None` elsewhere. Unlike wall
/// time it excludes time the thread waited for a core, which matters on a
/// 2-core machine shared with other builds.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}
