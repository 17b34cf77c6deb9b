//! A panic inside a membership change (a progress callback, a `Store`)
//! leaves the cluster as a failure at that point would: rolled back before
//! the commit point, paused after it; and a membership call from inside a
//! change is refused instead of deadlocking.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ringkv_cluster::{
    Cluster, ClusterConfig, ClusterError, Entry, MemStore, NodeId, Placement, Store, StoreError,
    StoredEntry, Token,
};

mod common;
use common::{assert_placement, assert_reads, fill};

/// Balanced placement over fewer partitions than the default, for speed.
fn config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 4096 },
        copy_batch: 8,
        ..ClusterConfig::default()
    }
}

/// The reproduction: a progress callback that panics during `add_node("n4")`
/// must not orphan the migration; a later `add_node("n5")` keeps every key.
#[test]
fn a_panicking_progress_callback_rolls_the_change_back() {
    let cluster = Cluster::new(config()).unwrap();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 20_000);
    let before = cluster.ring();
    cluster.on_progress(|p| {
        if p.ranges_done == 3 {
            panic!("progress bar broke");
        }
    });
    let unwound = catch_unwind(AssertUnwindSafe(|| cluster.add_node("n4")));
    assert!(unwound.is_err(), "the callback's panic reaches the caller");

    // Rolled back: the old membership under a new epoch, nothing moving.
    assert!(cluster.ring().same_placement(&before));
    assert_eq!(cluster.epoch(), before.epoch() + 2);
    assert!(!cluster.stats().rebalancing);
    assert_reads(&cluster, &model, "after the panic");
    assert_placement(&cluster, &model, "after the panic");

    cluster.on_progress(|_| {});
    cluster.add_node("n5").unwrap();
    assert_reads(&cluster, &model, "after add_node(n5)");
    assert_placement(&cluster, &model, "after add_node(n5)");
}

thread_local! {
    /// Which store call panics on this thread (the test's thread runs the
    /// change; client calls from other threads never panic).
    static PANIC_ON: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// A `MemStore` that panics in the call named by `PANIC_ON`.
#[derive(Default)]
struct PanickyStore(MemStore);

fn maybe_panic(call: &str) {
    if PANIC_ON.with(Cell::get) == Some(call) {
        PANIC_ON.with(|p| p.set(None)); // once
        panic!("store failed in {call}");
    }
}

impl Store for PanickyStore {
    fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        maybe_panic("get");
        self.0.get(token, key)
    }
    fn put(&mut self, token: Token, key: Bytes, value: Entry) -> Result<Option<Entry>, StoreError> {
        maybe_panic("put");
        self.0.put(token, key, value)
    }
    fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        maybe_panic("delete");
        self.0.delete(token, key)
    }
    fn scan(
        &self,
        tokens: std::ops::RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        maybe_panic("scan");
        self.0.scan(tokens, after, limit, out)
    }
    fn take_range(
        &mut self,
        tokens: std::ops::RangeInclusive<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        maybe_panic("take_range");
        self.0.take_range(tokens, limit, out)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

fn panicky_cluster() -> Cluster {
    Cluster::with_store(
        config(),
        Arc::new(|_: &NodeId| Box::new(PanickyStore::default()) as Box<dyn Store>),
    )
    .unwrap()
}

#[test]
fn a_store_that_panics_while_copying_rolls_the_change_back() {
    let cluster = panicky_cluster();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 2_000);
    let before = cluster.ring();
    PANIC_ON.with(|p| p.set(Some("scan")));
    let unwound = catch_unwind(AssertUnwindSafe(|| cluster.remove_node("n2")));
    assert!(unwound.is_err());
    assert!(cluster.ring().same_placement(&before), "rolled back");
    assert!(!cluster.stats().rebalancing);
    assert_reads(&cluster, &model, "after the panic");
    assert_placement(&cluster, &model, "after the panic");
    cluster.remove_node("n2").unwrap();
    assert_reads(&cluster, &model, "after the retry");
    assert_placement(&cluster, &model, "after the retry");
}

#[test]
fn a_store_that_panics_while_switching_pauses_the_change() {
    let cluster = Arc::new(panicky_cluster());
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let mut model = fill(&cluster, 2_000);
    // Keys that move to n4: rewritten during the copy, so the switch must
    // read them from their source (a store `get` on the change's thread).
    let next = cluster.ring().with_node("n4", 1).unwrap();
    let moving: Vec<Vec<u8>> = model
        .keys()
        .filter(|k| next.owner(k).unwrap().as_str() == "n4")
        .take(20)
        .cloned()
        .collect();
    assert!(!moving.is_empty());
    for k in &moving {
        model.insert(k.clone(), b"rewritten".to_vec());
    }
    let writer = cluster.clone();
    cluster.on_progress(move |p| {
        if p.ranges_done == 1 {
            for k in &moving {
                writer.put(k.clone(), "rewritten").unwrap();
            }
        }
        if p.ranges_done == p.ranges_total {
            PANIC_ON.with(|p| p.set(Some("get"))); // the first dirty key
        }
    });
    let unwound = catch_unwind(AssertUnwindSafe(|| cluster.add_node("n4")));
    assert!(unwound.is_err());
    PANIC_ON.with(|p| p.set(None));

    // Paused past the commit point: the new ring is in force, every key
    // reads right, and resume completes the change.
    assert!(cluster.ring().same_placement(&next));
    assert!(cluster.stats().rebalancing, "paused, not orphaned");
    assert_eq!(cluster.stats().total_keys, model.len());
    assert_reads(&cluster, &model, "while paused");
    let report = cluster.resume().unwrap().expect("a change was paused");
    assert_eq!(report.node.as_str(), "n4");
    assert!(!cluster.stats().rebalancing);
    assert_reads(&cluster, &model, "after resume");
    assert_placement(&cluster, &model, "after resume");
}

/// A progress callback that calls back into membership gets an error,
/// not a deadlock; the change it runs in completes.
#[test]
fn a_membership_call_from_a_progress_callback_is_refused() {
    let cluster = Arc::new(Cluster::new(config()).unwrap());
    for id in ["n1", "n2"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 500);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (inner, log) = (cluster.clone(), seen.clone());
    cluster.on_progress(move |p| {
        if p.ranges_done == 1 {
            let mut log = log.lock().unwrap();
            match inner.add_node("n9") {
                Err(e @ ClusterError::ChangeInProgress { op: "add_node" }) => {
                    log.push(e.to_string())
                }
                other => log.push(format!("unexpected: {other:?}")),
            }
            match inner.resume() {
                Err(ClusterError::ChangeInProgress { op: "resume" }) => log.push("resume".into()),
                other => log.push(format!("unexpected: {other:?}")),
            }
            log.push(format!("repair left {}", inner.repair()));
            // Replacing the callback does not need the membership mutex.
            inner.on_progress(|_| {});
            // Clients keep working from inside the change.
            inner.put("from-callback", "yes").unwrap();
        }
    });
    let report = cluster.add_node("n3").unwrap();
    assert_eq!(report.node.as_str(), "n3");
    let log = seen.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].contains("in progress on this thread"), "{log:?}");
    assert_eq!(log[1..], ["resume", "repair left 0"], "{log:?}");
    assert!(!cluster.members().iter().any(|m| m.as_str() == "n9"));
    assert_eq!(
        cluster.get(b"from-callback").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    assert_reads(&cluster, &model, "after the change");
    // Outside a change, membership calls work again.
    cluster.add_node("n9").unwrap();
}

/// A store that panics while the source's copy is deleted: the change is
/// complete (a cleanup failure never fails a change), the range is kept for
/// repair, and the panic still reaches the caller.
#[test]
fn a_store_that_panics_during_cleanup_leaves_a_stale_range_for_repair() {
    let cluster = panicky_cluster();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 2_000);
    let next = cluster.ring().with_node("n4", 1).unwrap();
    cluster.on_progress(|p| {
        if p.ranges_done == p.ranges_total {
            // The joining node's first copy deletes nothing, nor does the
            // switch: the first `take_range` is the first cleanup's.
            PANIC_ON.with(|p| p.set(Some("take_range")));
        }
    });
    let unwound = catch_unwind(AssertUnwindSafe(|| cluster.add_node("n4")));
    assert!(unwound.is_err());
    assert!(cluster.ring().same_placement(&next), "the change is done");
    let stats = cluster.stats();
    assert!(!stats.rebalancing);
    assert_eq!(stats.pending_cleanups, 1, "{stats:?}");
    assert_eq!(stats.total_keys, model.len());
    assert_reads(&cluster, &model, "with a stale range");
    assert_eq!(cluster.repair(), 0);
    assert_placement(&cluster, &model, "after repair");
}
