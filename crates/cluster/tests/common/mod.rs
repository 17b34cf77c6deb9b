//! Helpers shared by the cluster's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ringkv_cluster::{Cluster, ClusterConfig, Placement};

/// A small ring (8 vnodes per weight) and tiny copy batches, so that ranges
/// span several batches even with few keys.
pub fn small_config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::RandomVnodes {
            vnodes_per_weight: 8,
        },
        copy_batch: 3,
        ..ClusterConfig::default()
    }
}

/// `small_config` for even seeds; for odd seeds, balanced placement over 64
/// partitions, so every test runs under both placements.
pub fn config_for(seed: u64) -> ClusterConfig {
    let mut config = small_config();
    if seed % 2 == 1 {
        config.placement = Placement::BalancedPartitions { partitions: 64 };
    }
    config
}

/// The base seed and number of runs, from `RINGKV_SEED` and `RINGKV_RUNS`.
pub fn seeds(default_runs: u64) -> std::ops::Range<u64> {
    let base: u64 = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let runs: u64 = std::env::var("RINGKV_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_runs);
    base..base + runs
}

/// Runs `f(seed)` for every seed, printing the failing seed and how to
/// replay it.
pub fn for_each_seed(default_runs: u64, f: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(default_runs) {
        if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
            eprintln!("failing seed: {seed} (replay with RINGKV_SEED={seed} RINGKV_RUNS=1)");
            std::panic::resume_unwind(e);
        }
    }
}

/// Every key of `model` is stored on its owner and nowhere else, the cluster
/// stores nothing else, and counts each key once.
pub fn assert_placement(cluster: &Cluster, model: &BTreeMap<Vec<u8>, Vec<u8>>, ctx: &str) {
    let ring = cluster.ring();
    for key in model.keys() {
        let owner = ring.owner(key).expect("non-empty ring").clone();
        assert_eq!(
            cluster.locate(key),
            vec![(owner, true)],
            "{ctx}: key {key:?} must be on its owner only"
        );
    }
    let stats = cluster.stats();
    assert_eq!(
        stats.nodes.iter().map(|n| n.stored).sum::<usize>(),
        model.len(),
        "{ctx}: stray copies"
    );
    assert_eq!(stats.total_keys, model.len(), "{ctx}: keys served");
}

/// Every key of `model` reads back with its value.
pub fn assert_reads(cluster: &Cluster, model: &BTreeMap<Vec<u8>, Vec<u8>>, ctx: &str) {
    for (k, v) in model {
        assert_eq!(
            cluster
                .get(k)
                .unwrap_or_else(|e| panic!("{ctx}: get {k:?}: {e}"))
                .as_deref(),
            Some(&v[..]),
            "{ctx}: key {k:?}"
        );
    }
}

/// Runs `f` with the log of this thread captured; returns its result and
/// the log's lines (the migrator logs on the thread running the change).
pub fn with_log<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, text.lines().map(str::to_owned).collect())
}

/// `n` keys `key{i}` with values `value{i}`, stored and returned as a model.
pub fn fill(cluster: &Cluster, n: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 0..n {
        let (k, v) = (
            format!("key{i}").into_bytes(),
            format!("value{i}").into_bytes(),
        );
        cluster.put(k.clone(), v.clone()).unwrap();
        model.insert(k, v);
    }
    model
}

/// Sets its flag when dropped, also while a panic unwinds, so that
/// background threads of a scoped test stop and the failure is reported
/// instead of hanging the scope.
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}
