//! A panic inside a membership change (a `Store`) leaves the cluster as a
//! failure at that point would: rolled back before the commit point, paused
//! after it. A panicking progress callback affects no change at all.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_cluster::{
    Cluster, ClusterConfig, Entry, MemStore, NodeId, Placement, Store, StoreError, StoredEntry,
    Token,
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

/// A progress callback that panics during `add_node("n4")` (which once
/// orphaned the migration): the callback runs on a thread of its own, so
/// the change completes, every key stays readable, and the callback keeps
/// receiving events.
#[test]
fn a_panicking_progress_callback_affects_no_change() {
    let cluster = Cluster::new(config()).unwrap();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 20_000);
    let (panicked, later) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (p2, l2) = (panicked.clone(), later.clone());
    cluster.on_progress(move |p| {
        if !p2.swap(true, Ordering::SeqCst) {
            panic!("progress bar broke");
        }
        if p.ranges_done == p.ranges_total {
            l2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let report = cluster.add_node("n4").unwrap();
    assert_eq!(report.node.as_str(), "n4");
    assert!(!cluster.stats().rebalancing);
    assert_reads(&cluster, &model, "after the panic");
    assert_placement(&cluster, &model, "after the panic");

    cluster.add_node("n5").unwrap();
    assert_reads(&cluster, &model, "after add_node(n5)");
    assert_placement(&cluster, &model, "after add_node(n5)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while later.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(panicked.load(Ordering::SeqCst), "the callback panicked");
    assert!(
        later.load(Ordering::SeqCst) >= 1,
        "events after the panic are delivered"
    );
}

thread_local! {
    /// Which store call panics on this thread (the test's thread runs the
    /// change; client calls from other threads never panic).
    static PANIC_ON: Cell<Option<&'static str>> = const { Cell::new(None) };
    /// Set on the change's thread: its next `put` (a copy batch, once the
    /// migration is published) waits, up to 10 s, for this flag, so that
    /// another thread can write during the copy.
    static WAIT_IN_PUT: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Waits in the first `put` after `WAIT_IN_PUT` was armed on this thread.
fn maybe_wait() {
    if let Some(flag) = WAIT_IN_PUT.with(|w| w.borrow_mut().take()) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(flag.load(Ordering::SeqCst), "nobody wrote during the copy");
    }
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
        maybe_wait();
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
        Arc::new(|_: &NodeId, _| Ok(Box::new(PanickyStore::default()) as Box<dyn Store>)),
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
    // A writer rewrites them once the migration is published, while the
    // change waits in its first copy batch: they are dirty at the switch.
    let written = Arc::new(AtomicBool::new(false));
    WAIT_IN_PUT.with(|w| *w.borrow_mut() = Some(written.clone()));
    PANIC_ON.with(|p| p.set(Some("get"))); // the copy reads with `scan`
    let (writer, flag) = (cluster.clone(), written.clone());
    let (tx, rx) = mpsc::channel();
    let epoch = cluster.epoch();
    std::thread::spawn(move || {
        // (`epoch` reads the routing alone; `stats` would wait for the
        // stripe the change holds.)
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.epoch() == epoch && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for k in &moving {
            writer.put(k.clone(), "rewritten").unwrap();
        }
        flag.store(true, Ordering::SeqCst);
        tx.send(()).unwrap();
    });
    let unwound = catch_unwind(AssertUnwindSafe(|| cluster.add_node("n4")));
    assert!(unwound.is_err());
    PANIC_ON.with(|p| p.set(None));
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the writer wrote during the copy");

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
    // The joining node's copy deletes nothing, nor does the switch: the
    // first `take_range` on this thread is the first cleanup's.
    PANIC_ON.with(|p| p.set(Some("take_range")));
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
