//! The cluster: client operations and the public API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_ring::{NodeId, Ring, key_token};

use crate::fault::{Fault, FaultPlan};
use crate::node::Node;
use crate::plan::Phase;
use crate::rebalance::Membership;
use crate::report::{ClusterStats, NodeStats, RebalanceReport};
use crate::routing::Routing;
use crate::store::{MemStore, Store};
use crate::{ClusterConfig, ClusterError};

/// What [`Cluster::update`] does with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Leave the key as it is.
    Keep,
    /// Store this value.
    Put(Bytes),
    /// Delete the key.
    Delete,
}

/// Builds a node's stores when the node joins: called once per lock stripe
/// ([`ClusterConfig::stripes`]), each store holding the keys of one slice
/// of the token space.
pub type StoreFactory = Arc<dyn Fn(&NodeId) -> Box<dyn Store> + Send + Sync>;

/// A thread-safe, in-process cluster of nodes on a consistent hash ring.
///
/// All methods take `&self`; share it in an `Arc`. Client operations are
/// linearizable per key, including while nodes join and leave: a get
/// returns the latest acknowledged put (or nothing after an acknowledged
/// delete), and a migration never loses or resurrects a key.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    /// The current routing. Readers load it without locking; only the
    /// migrator (holding `membership`) stores a new one.
    pub(crate) routing: ArcSwap<Routing>,
    /// Serialises membership changes into one total order of epochs and
    /// holds what outlives a change: a paused migration and stale ranges.
    pub(crate) membership: Mutex<Membership>,
    pub(crate) faults: FaultPlan,
    pub(crate) store_factory: StoreFactory,
    /// `membership.pending_cleanups.len()`, readable without waiting for a
    /// membership change to finish.
    pub(crate) stale_ranges: AtomicUsize,
}

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
        Cluster::with_store(
            config,
            Arc::new(|_: &NodeId| Box::new(MemStore::new()) as Box<dyn Store>),
        )
    }

    /// An empty cluster whose nodes get their stores from `factory`.
    pub fn with_store(
        config: ClusterConfig,
        factory: StoreFactory,
    ) -> Result<Cluster, ClusterError> {
        config.validate()?;
        let ring = config.placement.empty_ring()?;
        Ok(Cluster {
            config,
            routing: ArcSwap::from_pointee(Routing {
                ring: Arc::new(ring),
                migration: None,
                nodes: BTreeMap::new(),
            }),
            membership: Mutex::new(Membership::default()),
            faults: FaultPlan::default(),
            store_factory: factory,
            stale_ranges: AtomicUsize::new(0),
        })
    }

    /// The settings the cluster was built with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The value of `key`, or `None` if it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, ClusterError> {
        let token = key_token(key);
        loop {
            let seen = self.routing.load();
            let (node, _) = seen.authority(token)?;
            let store = node.read(token)?;
            // Ownership of the token can only move away from `node` under
            // the write lock of its stripe, which we now exclude; check it
            // has not moved already.
            let now = self.routing.load();
            let still = if Arc::ptr_eq(&now, &seen) && now.migration.is_none() {
                true
            } else {
                Arc::ptr_eq(now.authority(token)?.0, node)
            };
            if still {
                return store.get(token, key).map_err(|e| node.store_error(e));
            }
        }
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), ClusterError> {
        let key = key.into();
        let value = value.into();
        self.write(key, |store, token, key| {
            store.put(token, key.clone(), value.clone()).map(drop)
        })
    }

    /// Removes `key`. Returns whether it was present.
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<bool, ClusterError> {
        self.write(key.into(), |store, token, key| {
            store.delete(token, key).map(|v| v.is_some())
        })
    }

    /// Atomically reads and rewrites one key: `f` receives the current value
    /// and returns what to do with it ([`Update`]) together with a result
    /// for the caller. Nothing else can touch the key in between, also
    /// while its range is being moved; counters and compare-and-set are
    /// built on this.
    ///
    /// `f` runs exactly once, under the lock of the key's stripe, so it
    /// must be short and must not call back into the cluster.
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, Update};
    /// # let cluster = Cluster::default();
    /// # cluster.add_node("n1")?;
    /// let next = cluster.update("hits", |old| {
    ///     let n = old.map_or(0, |v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap()) + 1;
    ///     (Update::Put(n.to_string().into()), n)
    /// })?;
    /// assert_eq!(next, 1);
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn update<R>(
        &self,
        key: impl Into<Bytes>,
        f: impl FnOnce(Option<&Bytes>) -> (Update, R),
    ) -> Result<R, ClusterError> {
        let mut f = Some(f);
        self.write(key.into(), |store, token, key| {
            let f = f.take().expect("write applies once");
            let current = store.get(token, key)?;
            let (update, result) = f(current.as_ref());
            match update {
                Update::Keep => {}
                Update::Put(value) => store.put(token, key.clone(), value).map(drop)?,
                Update::Delete => store.delete(token, key).map(drop)?,
            }
            Ok(result)
        })
    }

    fn write<R>(
        &self,
        key: Bytes,
        mut apply: impl FnMut(&mut dyn Store, u64, &Bytes) -> Result<R, crate::store::StoreError>,
    ) -> Result<R, ClusterError> {
        let token = key_token(&key);
        loop {
            let seen = self.routing.load();
            let (node, _) = seen.authority(token)?;
            let mut store = node.write(token)?;
            let now = self.routing.load();
            let (owner, range) = if Arc::ptr_eq(&now, &seen) && now.migration.is_none() {
                (node, None)
            } else {
                now.authority(token)?
            };
            if !Arc::ptr_eq(owner, node) {
                continue;
            }
            // Under the owner's write lock the range's phase is stable:
            // a write to a range being copied is logged for the switch.
            if let Some(range) = range
                && range.phase() == Phase::Copying
            {
                range.mark_dirty(&key);
            }
            return apply(&mut **store, token, &key).map_err(|e| node.store_error(e));
        }
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
    pub fn add_node_weighted(
        &self,
        id: &str,
        weight: u32,
    ) -> Result<RebalanceReport, ClusterError> {
        let mut membership = self.membership.lock();
        self.change(
            &mut membership,
            crate::rebalance::Change::Add {
                id: id.into(),
                weight,
            },
        )
    }

    /// Removes node `id`; its keys go to their new owners.
    ///
    /// Refuses to remove the last node while it holds keys
    /// ([`ClusterError::LastNodeHoldsData`]); see [`Cluster::remove_node_forced`].
    pub fn remove_node(&self, id: &str) -> Result<RebalanceReport, ClusterError> {
        let mut membership = self.membership.lock();
        self.change(
            &mut membership,
            crate::rebalance::Change::Remove {
                id: id.into(),
                force: false,
            },
        )
    }

    /// Removes node `id` even if it is the last one, dropping its keys.
    pub fn remove_node_forced(&self, id: &str) -> Result<RebalanceReport, ClusterError> {
        let mut membership = self.membership.lock();
        self.change(
            &mut membership,
            crate::rebalance::Change::Remove {
                id: id.into(),
                force: true,
            },
        )
    }

    /// Completes a paused redistribution, if any. Returns its report, or
    /// `None` if nothing was paused.
    pub fn resume(&self) -> Result<Option<RebalanceReport>, ClusterError> {
        let mut membership = self.membership.lock();
        self.resume_paused(&mut membership)
    }

    /// Deletes stale copies left by cleanups that failed, on nodes that are
    /// back. Returns how many stale ranges remain.
    pub fn repair(&self) -> usize {
        let mut membership = self.membership.lock();
        self.repair_cleanups(&mut membership)
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

    /// Per-node key counts and the cluster's shape.
    pub fn stats(&self) -> ClusterStats {
        let routing = self.routing.load();
        // Every node holding keys, including one that is leaving while its
        // removal is in progress or paused (it still serves its ranges).
        let nodes: Vec<NodeStats> = routing
            .nodes
            .iter()
            .map(|(id, node)| NodeStats {
                id: id.clone(),
                weight: routing.ring.weight(id.as_str()).unwrap_or(0),
                keys: node.len(),
                down: node.is_down(),
            })
            .collect();
        ClusterStats {
            epoch: routing.ring.epoch(),
            total_keys: nodes.iter().map(|n| n.keys).sum(),
            nodes,
            rebalancing: routing.migration.is_some(),
            pending_cleanups: self.stale_ranges.load(Ordering::Acquire),
        }
    }

    /// Where each copy of `key` is stored, with whether that node is the
    /// key's current owner (for tests and debugging).
    pub fn locate(&self, key: &[u8]) -> Vec<(NodeId, bool)> {
        let token = key_token(key);
        let routing = self.routing.load();
        let owner = routing.authority(token).ok().map(|(n, _)| n.id.clone());
        routing
            .nodes
            .values()
            .filter(|n| {
                n.read(token)
                    .ok()
                    .and_then(|s| s.get(token, key).ok().flatten())
                    .is_some()
            })
            .map(|n| (n.id.clone(), Some(&n.id) == owner.as_ref()))
            .collect()
    }

    /// Arms a fault for the next redistributions (fires once).
    pub fn inject_fault(&self, fault: Fault) {
        self.faults.arm(fault);
    }

    /// Disarms every fault not yet fired.
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Makes node `id` crash: every call to it fails until [`Cluster::heal`].
    pub fn crash(&self, id: &str) -> Result<(), ClusterError> {
        self.node_by_id(id)?.set_down(true);
        Ok(())
    }

    /// Brings a crashed node back with its data, and clears pending
    /// transient faults on it.
    pub fn heal(&self, id: &str) -> Result<(), ClusterError> {
        let node = self.node_by_id(id)?;
        node.fail_next(0);
        node.set_down(false);
        Ok(())
    }

    pub(crate) fn node_by_id(&self, id: &str) -> Result<Arc<Node>, ClusterError> {
        let routing = self.routing.load();
        let node = routing.nodes.get(id).cloned();
        node.ok_or_else(|| ringkv_ring::RingError::UnknownNode { id: id.into() }.into())
    }
}
