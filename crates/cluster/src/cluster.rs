//! The cluster: client operations and the public API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use ringkv_ring::{NodeId, Ring, key_token};

use crate::backend::{Backend, FactoryBackend, StoreFactory};
use crate::counts::CountSeq;
#[cfg(feature = "fault-injection")]
use crate::fault::FaultPlan;
use crate::membership::{Change, Membership, ProgressFn};
use crate::report::{ClusterStats, NodeStats, RebalanceReport};
use crate::routing::{Routing, RoutingCell};
use crate::{ClusterConfig, ClusterError};

/// A thread-safe, in-process cluster of nodes on a consistent hash ring.
///
/// All methods take `&self`; share it in an `Arc`. Client operations are
/// linearizable per key, including while nodes join and leave: a get
/// returns the latest acknowledged put (or nothing after an acknowledged
/// delete), and a migration never loses or resurrects a key.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    /// The current routing. Readers load it without locking; only the
    /// migrator (holding `membership`) publishes a new one.
    pub(crate) routing: RoutingCell,
    /// Serialises membership changes into one total order of epochs and
    /// holds what outlives a change: a paused migration and stale ranges.
    /// Taken only through `lock_membership`, which refuses a reentrant call.
    pub(crate) membership: Mutex<Membership>,
    /// The progress callback, outside `membership` so that setting it never
    /// waits for a change (a short lock: cloned out, then called unlocked).
    pub(crate) progress: Mutex<Option<Arc<ProgressFn>>>,
    /// Keeps `stats()` from seeing half of a switch's count transfer.
    pub(crate) counts: CountSeq,
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: FaultPlan,
    /// Where the nodes' stores and the cluster's records live.
    pub(crate) backend: Arc<dyn Backend>,
    /// `backend.sync_acks()`: client writes wait for the disk.
    pub(crate) sync_acks: bool,
    /// `membership.pending_cleanups.len()`, readable without waiting for a
    /// membership change to finish.
    pub(crate) stale_ranges: AtomicUsize,
    /// Tells this cluster from others for the reentrancy check.
    pub(crate) instance: u64,
    /// The last modification version handed out (see [`crate::Entry::version`]):
    /// one counter for the whole cluster, so versions never repeat, also
    /// when a key moves between nodes.
    pub(crate) versions: AtomicU64,
    /// Keys deleted because they had expired (lazily by a write that found
    /// them, or by active expiry).
    pub(crate) expired_keys: AtomicU64,
    /// Where the next active expiry cycle starts (a stripe position over
    /// every node), so successive cycles cover every stripe in turn.
    pub(crate) expire_cursor: AtomicUsize,
    /// Seeds each active expiry cycle's and eviction's sampling.
    pub(crate) expire_seed: AtomicU64,
    /// Bytes all nodes' stores hold (see `shard.rs`): what `maxmemory` is
    /// checked against, in O(1).
    pub(crate) memory: Arc<AtomicI64>,
    /// The memory limit and policy, settable at run time.
    pub(crate) limits: crate::evict::Limits,
    /// Keys evicted to stay under `maxmemory`.
    pub(crate) evicted_keys: AtomicU64,
}

/// Source of [`Cluster::instance`].
static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new(ClusterConfig::default()).expect("the default config is valid")
    }
}

impl Cluster {
    /// An empty cluster with in-memory stores.
    pub fn new(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Cluster::with_backend(config, Arc::new(FactoryBackend::memory()))
    }

    /// An empty cluster whose nodes get their stores from `factory`, one
    /// per lock stripe. Nothing outlives the cluster (see [`Cluster::open`]
    /// for that).
    pub fn with_store(
        config: ClusterConfig,
        factory: StoreFactory,
    ) -> Result<Cluster, ClusterError> {
        Cluster::with_backend(config, Arc::new(FactoryBackend { factory }))
    }

    pub(crate) fn with_backend(
        config: ClusterConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Cluster, ClusterError> {
        config.validate()?;
        let ring = config.placement.empty_ring()?;
        Ok(Cluster {
            routing: RoutingCell::new(Routing {
                ring: Arc::new(ring),
                migration: None,
                nodes: BTreeMap::new(),
            }),
            membership: Mutex::new(Membership::default()),
            progress: Mutex::new(None),
            counts: CountSeq::default(),
            #[cfg(feature = "fault-injection")]
            faults: FaultPlan::default(),
            sync_acks: backend.sync_acks(),
            backend,
            stale_ranges: AtomicUsize::new(0),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            versions: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            expire_cursor: AtomicUsize::new(0),
            expire_seed: AtomicU64::new(0x5EED),
            memory: Arc::new(AtomicI64::new(0)),
            limits: crate::evict::Limits::new(config.maxmemory, config.maxmemory_policy),
            evicted_keys: AtomicU64::new(0),
            config,
        })
    }

    /// The cluster's clock now, in unix milliseconds (the time expiry is
    /// measured against; see [`ClusterConfig::clock`]).
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// The settings the cluster was built with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Adds node `id` with weight 1 and moves to it exactly the keys it now
    /// owns. See [`Cluster::add_node_weighted`].
    pub fn add_node(&self, id: &str) -> Result<RebalanceReport, ClusterError> {
        self.add_node_weighted(id, 1)
    }

    /// Adds node `id` with `weight` (its share of the ring relative to
    /// weight-1 nodes) and moves to it exactly the keys it now owns.
    ///
    /// Clients keep reading and writing throughout. On an error nothing
    /// changed, except [`ClusterError::Paused`] (see there).
    ///
    /// If a change is paused, it is completed first
    /// ([`ClusterError::NotStarted`] if it cannot be). A request the ring
    /// refuses (a duplicate id, a zero weight) is refused before that, and
    /// so is a repeat of the paused change itself
    /// ([`ClusterError::AlreadyPaused`]): a refused call changes nothing.
    /// A change that needs a node that is down fails at once with
    /// [`ClusterError::NotStarted`] whose cause is [`ClusterError::NodeDown`].
    ///
    /// A panic inside the change (from a [`Store`]) leaves the cluster as a
    /// failure at that point would: rolled back before the commit point,
    /// paused after it. The panic then continues to the caller. The
    /// progress callback runs on a thread of its own and cannot affect a
    /// change (see [`Cluster::on_progress`]).
    pub fn add_node_weighted(
        &self,
        id: &str,
        weight: u32,
    ) -> Result<RebalanceReport, ClusterError> {
        let mut membership = self.lock_membership("add_node")?;
        let report = self.change(
            &mut membership,
            Change::Add {
                id: id.into(),
                weight,
            },
        );
        self.synced(report)
    }

    /// Removes node `id`; its keys go to their new owners. Errors and
    /// panics as for [`Cluster::add_node_weighted`].
    ///
    /// Refuses to remove the last node while it holds keys
    /// ([`ClusterError::LastNodeHoldsData`]), and to remove a node that is
    /// down ([`ClusterError::NodeDown`], as the cause of
    /// [`ClusterError::NotStarted`]): its keys could not be copied.
    /// See [`Cluster::remove_node_forced`] for both.
    pub fn remove_node(&self, id: &str) -> Result<RebalanceReport, ClusterError> {
        let mut membership = self.lock_membership("remove_node")?;
        let report = self.change(
            &mut membership,
            Change::Remove {
                id: id.into(),
                force: false,
            },
        );
        self.synced(report)
    }

    /// Removes node `id` whatever state it is in: even if it is the last
    /// one, and even if it is down.
    ///
    /// The keys it serves are copied to their new owners where that is
    /// possible; the keys it cannot give away are dropped and counted in
    /// [`RebalanceReport::keys_dropped`]: all of them for the last node,
    /// and, if this node is down (or goes down during the change), the
    /// keys of every range it had not switched yet. With one copy per key,
    /// dropped keys are gone.
    ///
    /// Another node's outage never drops keys: if a range this node could
    /// still hand over goes to a node that is down, the removal fails at
    /// once, before anything is published, with [`ClusterError::NotStarted`]
    /// whose cause is [`ClusterError::NodeDown`] naming that target (heal it,
    /// or force-remove it first). A target that goes down during the copy
    /// rolls the removal back; during the switch, pauses it.
    pub fn remove_node_forced(&self, id: &str) -> Result<RebalanceReport, ClusterError> {
        let mut membership = self.lock_membership("remove_node")?;
        let report = self.change(
            &mut membership,
            Change::Remove {
                id: id.into(),
                force: true,
            },
        );
        self.synced(report)
    }

    /// The result of a membership call, once what it wrote is on disk
    /// under `--fsync always`. The call's own error comes first: a change
    /// refused or rolled back was not applied, whatever the sync says.
    fn synced<T>(&self, result: Result<T, ClusterError>) -> Result<T, ClusterError> {
        let synced = self.sync_ack();
        let value = result?;
        synced?;
        Ok(value)
    }

    /// Completes a paused redistribution, if any. Returns its report, or
    /// `None` if nothing was paused.
    pub fn resume(&self) -> Result<Option<RebalanceReport>, ClusterError> {
        let mut membership = self.lock_membership("resume")?;
        let report = self.resume_paused(&mut membership);
        self.synced(report)
    }

    /// Deletes stale copies left by cleanups that failed, on nodes that are
    /// up (a node that is down is skipped without an attempt). Returns how
    /// many stale ranges remain. Called from inside a membership change on
    /// the same thread (by a `Store` it calls), it repairs nothing and
    /// returns the current count.
    pub fn repair(&self) -> usize {
        match self.lock_membership("repair") {
            Ok(mut membership) => self.repair_cleanups(&mut membership),
            Err(_) => self.stale_ranges.load(Ordering::Acquire),
        }
    }

    /// The current ring snapshot.
    pub fn ring(&self) -> Arc<Ring> {
        self.routing.load().ring.clone()
    }

    /// The current ring epoch.
    pub fn epoch(&self) -> u64 {
        self.routing.load().ring.epoch()
    }

    /// Member ids in id order.
    pub fn members(&self) -> Vec<NodeId> {
        self.routing
            .load()
            .ring
            .nodes()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Per-node key counts and the cluster's shape. Each key is counted
    /// once, at the node serving it (see [`ClusterStats::total_keys`]).
    pub fn stats(&self) -> ClusterStats {
        let (routing, served) = self.counts.read(|| {
            let routing = self.routing.load_full();
            let served: Vec<i64> = routing.nodes.values().map(|n| n.served()).collect();
            (routing, served)
        });
        // Every node holding keys, including one that is leaving while its
        // removal is in progress or paused (it still serves its ranges).
        let nodes: Vec<NodeStats> = routing
            .nodes
            .iter()
            .zip(served)
            .map(|((id, node), served)| NodeStats {
                id: id.clone(),
                weight: routing.ring.weight(id.as_str()).unwrap_or(0),
                keys: served.max(0) as usize,
                stored: node.len(),
                down: node.is_down(),
                used_memory: node.memory().max(0) as u64,
            })
            .collect();
        ClusterStats {
            epoch: routing.ring.epoch(),
            total_keys: nodes.iter().map(|n| n.keys).sum(),
            used_memory: nodes.iter().map(|n| n.used_memory).sum(),
            expired_keys: self.expired_keys.load(Ordering::Relaxed),
            evicted_keys: self.evicted_keys.load(Ordering::Relaxed),
            nodes,
            rebalancing: routing.migration.is_some(),
            pending_cleanups: self.stale_ranges.load(Ordering::Acquire),
        }
    }

    /// Where each copy of `key` is stored, with whether that node is the
    /// key's current owner (for tests and debugging). Nodes that are down
    /// are looked at too: a copy on a crashed node is still there.
    pub fn locate(&self, key: &[u8]) -> Vec<(NodeId, bool)> {
        let token = key_token(key);
        let routing = self.routing.load();
        let owner = routing.authority(token).ok().map(|(n, _)| n.id.clone());
        routing
            .nodes
            .values()
            .filter(|n| {
                let stripe = n.peek_stripe(n.stripe_of(token));
                stripe.get(token, key).ok().flatten().is_some()
            })
            .map(|n| (n.id.clone(), Some(&n.id) == owner.as_ref()))
            .collect()
    }
}
