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

    /// Bytes of writes the data directory holds in memory until they
    /// reach its engine (its write log's queue; 0 in memory). Not part of
    /// [`ClusterStats::used_memory`] nor of the `maxmemory` check, as
    /// Redis leaves its AOF buffer out of eviction.
    ///
    /// [`ClusterStats::used_memory`]: crate::ClusterStats::used_memory
    pub fn write_buffer_bytes(&self) -> u64 {
        self.backend.buffered_bytes()
    }

    /// Makes every write that returned so far durable (one fsync of the
    /// data directory's journal), whatever the fsync policy: call it
    /// before a planned shutdown or a backup. A no-op in memory.
    pub fn sync(&self) -> Result<(), ClusterError> {
        self.backend.sync().map_err(sync_failed)
    }

    /// As [`Cluster::sync`], but the fsync starts at once: concurrent
    /// callers still share it, but it does not first wait for other
    /// writers' writes to arrive. For a caller that has gathered a group
    /// of writes itself (the server's SET writer under `--fsync always`).
    pub fn sync_now(&self) -> Result<(), ClusterError> {
        self.backend.sync_now().map_err(sync_failed)
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

fn sync_failed(source: StoreError) -> ClusterError {
    ClusterError::Storage {
        what: "cannot sync the data directory".into(),
        source,
    }
}

#[cfg(test)]
#[path = "recover_tests.rs"]
mod tests;
