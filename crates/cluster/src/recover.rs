//! A cluster with a data directory: [`Cluster::open`], the records a
//! membership change writes as it goes, and the recovery of a restart.
//!
//! The records and what a restart makes of them are plain data in
//! [`crate::durable`]; this module does the I/O at the change's steps and
//! rebuilds the in-memory state (routing, counts, the expiry index) from
//! the stores at open.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ringkv_ring::{NodeId, Ring};
use tracing::{info, warn};

use crate::active::{Active, Moved};
use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::disk::DiskBackend;
use crate::durable::{self, CHANGE, ChangeRecord, RING, Recovery, switched_key};
use crate::node::Node;
use crate::plan::{Phase, RangeState, plan_transfers};
use crate::report::ChangeKind;
use crate::routing::{Migration, Publish, Routing};
use crate::store::StoreError;
use crate::{ClusterConfig, ClusterError};

/// Whether this thread defers the sync of acknowledged writes (see
/// [`defer_sync`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deferred {
    Off,
    /// Deferring; no write needed a sync yet.
    Clean,
    /// Deferring; a write returned without its sync.
    Owed,
}

thread_local! {
    static DEFERRED: std::cell::Cell<Deferred> = const { std::cell::Cell::new(Deferred::Off) };
}

/// Runs `f` with the wait for the disk that `--fsync always` adds to each
/// client write deferred to the caller, and returns whether a write inside
/// `f` now owes one: the caller must then call [`Cluster::sync`] before it
/// tells anyone the write happened.
///
/// For a server that answers many requests at once: it runs each batch of
/// requests (a pipeline, or whatever arrived) under `defer_sync`, then
/// syncs once, off its event loop, before it sends the replies. Concurrent
/// callers of `sync` share fsyncs, so a hundred clients cost one fsync,
/// not a hundred in a row. Only calls on this thread are deferred, and a
/// nested call joins the outer one.
pub fn defer_sync<R>(f: impl FnOnce() -> R) -> (R, bool) {
    let outer = DEFERRED.with(|d| d.get());
    if outer != Deferred::Off {
        return (f(), false);
    }
    /// Turns deferring off however `f` ends.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRED.with(|d| d.set(Deferred::Off));
        }
    }
    DEFERRED.with(|d| d.set(Deferred::Clean));
    let reset = Reset;
    let result = f();
    let owed = DEFERRED.with(|d| d.get()) == Deferred::Owed;
    drop(reset);
    (result, owed)
}

/// Entries read per scan while loading a store at open.
const LOAD_PAGE: usize = 4096;

impl Cluster {
    /// Opens the cluster kept in the data directory `dir`, creating it on
    /// first use: every node's data, the membership, the ring (its
    /// partition assignment as saved, not recomputed) and the epoch.
    ///
    /// Writes reach the disk as [`ClusterConfig::fsync`] says. A second
    /// open of the same directory, from this process or another, fails
    /// while the first is open. A directory that is damaged, not a ringkv
    /// directory, or written by a newer version is refused with an error
    /// naming it; nothing in it is re-initialised.
    ///
    /// A membership change that a crash interrupted is settled before this
    /// returns: rolled back if no range had switched yet (the commit point),
    /// completed otherwise. Then every key is served by the node that holds
    /// its latest acknowledged value, and copies no node serves (a target's
    /// partial copy, a source's copy awaiting cleanup) are deleted.
    ///
    /// The ring's placement comes from the directory: `config.placement`
    /// is used only to create it.
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, ClusterConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// cluster.add_node("node1")?;
    /// cluster.put("key1", "value1")?;
    /// drop(cluster);
    ///
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    /// assert_eq!(cluster.members(), ["node1"]);
    /// assert_eq!(cluster.get(b"key1")?.as_deref(), Some(&b"value1"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let dir = dir.as_ref();
        config.validate()?;
        let backend = DiskBackend::open(dir, config.fsync).map_err(|e| ClusterError::Storage {
            what: format!("cannot open the data directory {}", dir.display()),
            source: crate::disk::store_err(e),
        })?;
        let storage = |source: StoreError| ClusterError::Storage {
            what: format!("cannot read the cluster state in {}", dir.display()),
            source,
        };
        let records = backend.records().map_err(storage)?;
        let records = durable::parse(&records).map_err(|e| {
            storage(StoreError::Corrupt(format!(
                "{e}; restore the directory from a backup"
            )))
        })?;
        let mut config = config;
        if let Some(ring) = &records.ring {
            if ring.placement() != config.placement {
                info!(saved = ?ring.placement(), "placement taken from the data directory");
            }
            config.placement = ring.placement();
        }
        let cluster = Cluster::with_backend(config, Arc::new(backend))?;
        cluster.recover(records).map_err(|e| match e {
            ClusterError::Store { node, source } => ClusterError::Storage {
                what: format!("cannot recover node `{node}` from {}", dir.display()),
                source,
            },
            other => other,
        })?;
        Ok(cluster)
    }

    /// Rebuilds the cluster from its records and stores (see
    /// [`Cluster::open`]).
    fn recover(&self, records: durable::Records) -> Result<(), ClusterError> {
        let started = Instant::now();
        let mut membership = self.lock_membership("open")?;
        let decision = durable::recovery(&records);
        let ring = records
            .ring
            .clone()
            .map_or_else(|| self.config.placement.empty_ring(), Ok)?;
        // Which nodes hold data the cluster needs, and the routing to serve.
        let open = |id: &NodeId| -> Result<Arc<Node>, ClusterError> {
            let stores = self
                .backend
                .open_node(id, self.config.stripes, false)
                .map_err(|source| ClusterError::Store {
                    node: id.clone(),
                    source,
                })?;
            Ok(Arc::new(Node::new(id.clone(), stores, self.memory.clone())))
        };
        let mut resume = None;
        let routing = match (decision, records.change) {
            (Recovery::Steady, _) | (_, None) => {
                let nodes = ring
                    .nodes()
                    .map(|(id, _)| Ok((id.clone(), open(id)?)))
                    .collect::<Result<_, ClusterError>>()?;
                Routing {
                    ring: Arc::new(ring),
                    migration: None,
                    nodes,
                }
            }
            (Recovery::RollBack, Some(change)) => {
                let restored = Arc::new(change.from.with_epoch(change.to.epoch() + 1));
                warn!(op = %change.kind, node = %change.node, epoch = restored.epoch(), "a change interrupted before its commit point is rolled back");
                self.record_end(&restored, 0)?;
                let nodes = restored
                    .nodes()
                    .map(|(id, _)| Ok((id.clone(), open(id)?)))
                    .collect::<Result<_, ClusterError>>()?;
                Routing {
                    ring: restored,
                    migration: None,
                    nodes,
                }
            }
            (Recovery::Resume, Some(change)) => {
                warn!(op = %change.kind, node = %change.node, epoch = change.to.epoch(), switched = change.switched.len(), "a change interrupted after its commit point is completed");
                let diff = change.from.diff(&change.to);
                let ranges = diff.moves.len();
                let migration = Arc::new(Migration {
                    ranges: (0..ranges)
                        .map(|i| {
                            let state = RangeState::new();
                            if change.switched.contains(&i) {
                                state.set_phase(Phase::Switched);
                            }
                            state
                        })
                        .collect(),
                    diff,
                });
                let mut nodes = std::collections::BTreeMap::new();
                for (id, _) in change.from.nodes().chain(change.to.nodes()) {
                    if !nodes.contains_key(id) {
                        nodes.insert(id.clone(), open(id)?);
                    }
                }
                let mut final_nodes = nodes.clone();
                if change.kind == ChangeKind::RemoveNode {
                    final_nodes.remove(&change.node);
                }
                let new_ring = Arc::new(change.to);
                let routing = Routing {
                    ring: new_ring.clone(),
                    migration: Some(migration.clone()),
                    nodes: nodes.clone(),
                };
                resume = Some(Active {
                    kind: change.kind,
                    node: change.node,
                    force: change.force,
                    started,
                    transfers: plan_transfers(&migration.diff),
                    migration,
                    moved: vec![Moved::default(); ranges],
                    held: vec![None; ranges],
                    copied: (0..ranges).map(|i| change.switched.contains(&i)).collect(),
                    recovered: true,
                    dropped: vec![false; ranges],
                    keys_dropped: 0,
                    new_ring,
                    nodes,
                    final_nodes,
                });
                routing
            }
        };
        // Data of nodes no longer in the cluster (one removed, or one whose
        // join rolled back, by a crash before its data was deleted).
        let stored = self
            .backend
            .stored_nodes()
            .map_err(|source| ClusterError::Storage {
                what: "cannot list the stored nodes".into(),
                source,
            })?;
        for id in stored.iter().filter(|id| !routing.nodes.contains_key(*id)) {
            info!(node = %id, "deleting the data of a node that left");
            self.forget_node(id);
        }
        // Each node keeps what it serves; the rest is a stale or partial
        // copy. Counts, memory and the expiry index are rebuilt on the way.
        // One thread per node (they share nothing but the routing), at
        // most as many at once as there are cores.
        let load_node = |node: &Arc<Node>| -> Result<(usize, usize, u64), ClusterError> {
            let (mut kept, mut dropped, mut max_version) = (0, 0, 0);
            for i in 0..node.stripe_count() {
                let tokens = crate::backend::stripe_tokens(i, node.stripe_count());
                let mut stripe = node.lock_stripe_unchecked(i);
                let keep = |token| {
                    routing
                        .authority(token)
                        .is_ok_and(|(owner, _)| Arc::ptr_eq(owner, node))
                };
                let (k, d) = stripe
                    .load(tokens, keep, LOAD_PAGE, &mut max_version)
                    .map_err(|e| node.store_error(e))?;
                node.add_served(i, k as i64);
                kept += k;
                dropped += d;
            }
            Ok((kept, dropped, max_version))
        };
        let nodes: Vec<&Arc<Node>> = routing.nodes.values().collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut loaded = Vec::with_capacity(nodes.len());
        for group in nodes.chunks(threads.max(1)) {
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = group
                    .iter()
                    .map(|node| scope.spawn(|| load_node(node)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            loaded.extend(results);
        }
        let (mut kept, mut dropped, mut max_version) = (0usize, 0usize, 0u64);
        for result in loaded {
            let (k, d, v) = result?;
            kept += k;
            dropped += d;
            max_version = max_version.max(v);
        }
        self.versions.fetch_max(max_version, Ordering::Relaxed);
        let epoch = routing.ring.epoch();
        self.routing.publish(Publish::Recover, routing);
        info!(
            keys = kept,
            stale_deleted = dropped,
            epoch,
            ms = started.elapsed().as_millis() as u64,
            "cluster state recovered"
        );
        if let Some(active) = resume {
            self.finish(&mut membership, active)?;
        }
        // What the journal replay put in memory goes to table files in the
        // background, so the next crash does not replay it again.
        if let Err(e) = self.backend.checkpoint(false) {
            warn!(error = %e, "could not start writing the replayed journal to table files");
        }
        Ok(())
    }

    /// Whether the cluster keeps a data directory.
    pub fn is_persistent(&self) -> bool {
        self.backend.persistent()
    }

    /// The data directory, for a cluster made by [`Cluster::open`].
    pub fn data_dir(&self) -> Option<String> {
        self.backend.location()
    }

    /// Makes every write that returned so far durable (one fsync of the
    /// data directory's journal), whatever the fsync policy: call it
    /// before a planned shutdown or a backup. A no-op in memory.
    pub fn sync(&self) -> Result<(), ClusterError> {
        self.backend.sync().map_err(|source| ClusterError::Storage {
            what: "cannot sync the data directory".into(),
            source,
        })
    }

    /// Writes everything the data directory holds in memory to table files
    /// and waits for it, so that the next start replays no journal: for a
    /// planned stop (`ringkv serve` does it on SIGTERM). Also syncs. A
    /// no-op in memory.
    pub fn checkpoint(&self) -> Result<(), ClusterError> {
        self.backend
            .checkpoint(true)
            .map_err(|source| ClusterError::Storage {
                what: "cannot write the data directory's memory to its files".into(),
                source,
            })?;
        self.sync()
    }

    /// Writes records, if the backend keeps any.
    fn record(
        &self,
        what: &str,
        writes: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(), ClusterError> {
        if !self.backend.persistent() {
            return Ok(());
        }
        self.backend
            .write_records(&writes)
            .map_err(|source| ClusterError::Storage {
                what: format!("cannot record {what}"),
                source,
            })
    }

    /// Records a change before its first copy.
    pub(crate) fn record_start(&self, active: &Active, from: &Ring) -> Result<(), ClusterError> {
        if !self.backend.persistent() {
            return Ok(());
        }
        let record = ChangeRecord::new(
            active.kind,
            &active.node,
            active.force,
            from,
            &active.new_ring,
        );
        self.record(
            "the start of a membership change",
            vec![(CHANGE.into(), Some(record.encode()))],
        )
    }

    /// Records range `i` of the change in flight as switched. Called under
    /// the range's stripe locks, after the writes that completed its copy.
    pub(crate) fn record_switched(&self, i: usize) -> Result<(), ClusterError> {
        self.record("a range switch", vec![(switched_key(i), Some(Vec::new()))])
    }

    /// Records the end of a change (finished, or rolled back): `ring` is
    /// the committed ring; the change and its `ranges` switched records go.
    pub(crate) fn record_end(&self, ring: &Ring, ranges: usize) -> Result<(), ClusterError> {
        if !self.backend.persistent() {
            return Ok(());
        }
        let mut writes = Vec::with_capacity(ranges + 2);
        writes.push((RING.to_string(), Some(ring.to_json().into_bytes())));
        writes.push((CHANGE.to_string(), None));
        writes.extend((0..ranges).map(|i| (switched_key(i), None)));
        self.record("the end of a membership change", writes)
    }

    /// Deletes what is stored for node `id`, which left (or never joined).
    /// A failure only costs disk space until the next open retries it.
    pub(crate) fn forget_node(&self, id: &NodeId) {
        if let Err(e) = self.backend.drop_node(id) {
            warn!(node = %id, error = %e, "could not delete the data of a node that left; the next open retries");
        }
    }

    /// Waits until every write that returned is durable, if the backend's
    /// policy says acknowledgements wait for the disk (`--fsync always`).
    /// Called after a client write, with no lock held.
    #[inline]
    pub(crate) fn sync_ack(&self) -> Result<(), ClusterError> {
        if !self.sync_acks {
            return Ok(());
        }
        if DEFERRED.with(|d| {
            let deferring = d.get() != Deferred::Off;
            if deferring {
                d.set(Deferred::Owed);
            }
            deferring
        }) {
            return Ok(());
        }
        self.backend
            .sync()
            .map_err(|source| ClusterError::Storage {
                what: "the operation was applied but is not known to be on disk, so it is not acknowledged (after a crash it may or may not be there)".into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::ops::RangeInclusive;
    use std::sync::Arc;

    use bytes::Bytes;
    use parking_lot::Mutex;
    use ringkv_ring::{NodeId, Token};

    use crate::backend::Backend;
    use crate::store::{MemStore, Store, StoreError, StoredEntry};
    use crate::{Cluster, ClusterConfig, Entry};

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Write(Bytes),
        Sync,
        Ack(Bytes),
    }

    type Log = Arc<Mutex<Vec<Event>>>;

    /// A store that logs its writes.
    struct Logged(MemStore, Log);

    impl Store for Logged {
        fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
            self.0.get(token, key)
        }
        fn put(
            &mut self,
            token: Token,
            key: Bytes,
            entry: Entry,
        ) -> Result<Option<Entry>, StoreError> {
            let old = self.0.put(token, key.clone(), entry);
            self.1.lock().push(Event::Write(key));
            old
        }
        fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
            let old = self.0.delete(token, key);
            self.1
                .lock()
                .push(Event::Write(Bytes::copy_from_slice(key)));
            old
        }
        fn scan(
            &self,
            t: RangeInclusive<Token>,
            a: Option<Token>,
            l: usize,
            o: &mut Vec<StoredEntry>,
        ) -> Result<(), StoreError> {
            self.0.scan(t, a, l, o)
        }
        fn take_range(
            &mut self,
            t: RangeInclusive<Token>,
            l: usize,
            o: &mut Vec<StoredEntry>,
        ) -> Result<usize, StoreError> {
            self.0.take_range(t, l, o)
        }
        fn len(&self) -> usize {
            self.0.len()
        }
    }

    /// `--fsync always` as the cluster sees it: acknowledgements wait for
    /// `sync`, which logs when it starts.
    struct Recording(Log);

    impl Backend for Recording {
        fn open_node(
            &self,
            _: &NodeId,
            stripes: usize,
            _: bool,
        ) -> Result<Vec<Box<dyn Store>>, StoreError> {
            Ok((0..stripes)
                .map(|_| Box::new(Logged(MemStore::new(), self.0.clone())) as Box<dyn Store>)
                .collect())
        }
        fn drop_node(&self, _: &NodeId) -> Result<(), StoreError> {
            Ok(())
        }
        fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
            Ok(Vec::new())
        }
        fn persistent(&self) -> bool {
            false
        }
        fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn write_records(&self, _: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
            Ok(())
        }
        fn sync_acks(&self) -> bool {
            true
        }
        fn sync(&self) -> Result<(), StoreError> {
            self.0.lock().push(Event::Sync);
            std::thread::sleep(std::time::Duration::from_micros(50));
            Ok(())
        }
        fn location(&self) -> Option<String> {
            None
        }
    }

    /// In memory, except that a transaction's batch is not kept while
    /// `fail` is set: its writes are applied, then the batch fails, as a
    /// full disk fails a data directory's.
    struct LosesTransactions {
        inner: crate::backend::FactoryBackend,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Backend for LosesTransactions {
        fn open_node(
            &self,
            id: &NodeId,
            stripes: usize,
            fresh: bool,
        ) -> Result<Vec<Box<dyn Store>>, StoreError> {
            self.inner.open_node(id, stripes, fresh)
        }
        fn drop_node(&self, id: &NodeId) -> Result<(), StoreError> {
            self.inner.drop_node(id)
        }
        fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
            self.inner.stored_nodes()
        }
        fn persistent(&self) -> bool {
            false
        }
        fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.records()
        }
        fn write_records(&self, w: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
            self.inner.write_records(w)
        }
        fn sync_acks(&self) -> bool {
            false
        }
        fn sync(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn location(&self) -> Option<String> {
            None
        }
        fn atomically(
            &self,
            f: &mut dyn FnMut() -> Result<(), crate::ClusterError>,
        ) -> Result<(), crate::ClusterError> {
            f()?;
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::ClusterError::Storage {
                    what: "the transaction's writes could not be written".into(),
                    source: StoreError::Engine("disk full (test)".into()),
                });
            }
            Ok(())
        }
    }

    /// Keys in the expiry indexes of every stripe.
    fn volatile_keys(c: &Cluster) -> usize {
        let routing = c.routing.load();
        routing
            .nodes
            .values()
            .map(|n| {
                (0..n.stripe_count())
                    .map(|i| n.read_stripe(i).unwrap().volatile_len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// A transaction whose batch is not kept leaves every key, the key
    /// counts, the memory count and the expiry index as they were.
    #[test]
    fn a_transaction_that_is_not_kept_is_undone() {
        use std::sync::atomic::Ordering::SeqCst;
        let backend = Arc::new(LosesTransactions {
            inner: crate::backend::FactoryBackend::memory(),
            fail: true.into(),
        });
        let cluster = Cluster::with_backend(ClusterConfig::default(), backend.clone()).unwrap();
        for n in ["n1", "n2", "n3"] {
            cluster.add_node(n).unwrap();
        }
        let keys: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("k{i}"))).collect();
        for (i, key) in keys.iter().enumerate() {
            let entry = Entry::string(format!("v{i}"));
            match i % 3 {
                0 => drop(cluster.put_entry(key.clone(), entry).unwrap()),
                1 => drop(
                    cluster
                        .put_entry(key.clone(), entry.expiring(Some(u64::MAX)))
                        .unwrap(),
                ),
                _ => {} // absent
            }
        }
        let view = |c: &Cluster| {
            let values: Vec<_> = keys.iter().map(|k| c.get_entry(k).unwrap()).collect();
            let s = c.stats();
            let per_node: Vec<_> = s
                .nodes
                .iter()
                .map(|n| (n.keys, n.stored, n.used_memory))
                .collect();
            (
                values,
                s.total_keys,
                s.used_memory,
                per_node,
                volatile_keys(c),
            )
        };
        let before = view(&cluster);
        // Overwrite some (dropping or adding an expiry), delete some,
        // create the absent ones.
        let err = cluster
            .transaction(keys.clone(), |txn| {
                for (i, key) in keys.iter().enumerate() {
                    match i % 4 {
                        0 => txn.put(key, Entry::string("new")),
                        1 => txn.put(key, Entry::string("new").expiring(Some(u64::MAX - 1))),
                        2 => drop(txn.delete(key)),
                        _ => {}
                    }
                }
            })
            .unwrap_err();
        assert!(err.to_string().contains("could not be written"), "{err}");
        assert_eq!(
            view(&cluster),
            before,
            "the failed transaction left a trace"
        );
        // The same transaction, kept, is applied; the bookkeeping matches
        // what a cluster that never failed holds.
        backend.fail.store(false, SeqCst);
        cluster
            .transaction(keys.clone(), |txn| {
                for key in &keys {
                    txn.put(key, Entry::string("kept"));
                }
            })
            .unwrap();
        let fresh = Cluster::new(ClusterConfig::default()).unwrap();
        for n in ["n1", "n2", "n3"] {
            fresh.add_node(n).unwrap();
        }
        for key in &keys {
            fresh.put(key.clone(), "kept").unwrap();
            assert_eq!(cluster.get(key).unwrap().as_deref(), Some(&b"kept"[..]));
        }
        let (s, f) = (cluster.stats(), fresh.stats());
        assert_eq!((s.total_keys, s.used_memory), (f.total_keys, f.used_memory));
        assert_eq!(volatile_keys(&cluster), 0, "no key kept an expiry");
    }

    /// Under `always`, every client write (put, delete, update,
    /// transaction) is acknowledged only after a sync that started after
    /// the write.
    #[test]
    fn acknowledged_means_synced_after_the_write() {
        let log: Log = Arc::default();
        let cluster = Arc::new(
            Cluster::with_backend(ClusterConfig::default(), Arc::new(Recording(log.clone())))
                .unwrap(),
        );
        cluster.add_node("n1").unwrap();
        cluster.add_node("n2").unwrap();
        log.lock().clear();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (cluster, log) = (cluster.clone(), log.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let key = Bytes::from(format!("t{t}-{i}"));
                        match i % 4 {
                            0 => cluster.put(key.clone(), "v").unwrap(),
                            1 => drop(cluster.delete(key.clone()).unwrap()),
                            2 => cluster
                                .update(key.clone(), |_| (crate::Update::Put("u".into()), ()))
                                .unwrap(),
                            _ => cluster
                                .transaction([key.clone()], |txn| txn.put(&key, Entry::string("x")))
                                .unwrap(),
                        }
                        log.lock().push(Event::Ack(key));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let log = log.lock();
        let mut acks = 0;
        for (a, event) in log.iter().enumerate() {
            let Event::Ack(key) = event else { continue };
            acks += 1;
            let w = log[..a]
                .iter()
                .rposition(|e| *e == Event::Write(key.clone()))
                .unwrap_or_else(|| panic!("{key:?} acknowledged without a write"));
            assert!(
                log[w..a].contains(&Event::Sync),
                "{key:?} acknowledged with no sync between its write and the ack"
            );
        }
        assert_eq!(acks, 400);
    }

    /// Deferred, a write does not sync but says it owes one; reads and
    /// writes that need none owe none; outside, writes sync again.
    #[test]
    fn defer_sync_hands_the_sync_to_the_caller() {
        let log: Log = Arc::default();
        let cluster =
            Cluster::with_backend(ClusterConfig::default(), Arc::new(Recording(log.clone())))
                .unwrap();
        cluster.add_node("n1").unwrap();
        log.lock().clear();
        let ((), owed) = super::defer_sync(|| cluster.put("k", "v").unwrap());
        assert!(owed);
        assert!(
            !log.lock().contains(&Event::Sync),
            "deferred: {:?}",
            log.lock()
        );
        let (_, owed) = super::defer_sync(|| cluster.get(b"k").unwrap());
        assert!(!owed, "a read owes no sync");
        let ((_, inner), outer) =
            super::defer_sync(|| super::defer_sync(|| cluster.delete("k").unwrap()));
        assert!(!inner && outer, "a nested write is owed by the outer call");
        cluster.sync().unwrap();
        assert_eq!(log.lock().last(), Some(&Event::Sync));
        log.lock().clear();
        cluster.put("k", "v").unwrap();
        assert_eq!(
            log.lock().last(),
            Some(&Event::Sync),
            "not deferred any more"
        );
    }
}
