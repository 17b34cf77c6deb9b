//! Typed errors of cluster operations. Each variant says what state the
//! cluster is left in.

use ringkv_ring::{NodeId, RingError};

use crate::store::StoreError;

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A write would take `used_memory` over `maxmemory` and the policy
    /// could not make room (`noeviction`, or nothing left to evict).
    /// Nothing was written. Redis answers `-OOM command not allowed when
    /// used memory > 'maxmemory'`.
    #[error(
        "out of memory: used memory {used} plus this write would exceed maxmemory {maxmemory}; delete keys, raise maxmemory or choose an eviction policy"
    )]
    OutOfMemory {
        /// `used_memory` when the write was refused.
        used: u64,
        /// The limit.
        maxmemory: u64,
    },

    /// A membership change was refused by the ring (duplicate or unknown
    /// node, zero weight, bad id). Nothing changed.
    #[error(transparent)]
    Ring(#[from] RingError),

    /// The cluster has no node to hold keys. Nothing changed; add a node.
    #[error("the cluster has no nodes; add a node first")]
    NoNodes,

    /// The node that owns the key is down (crashed or unreachable). The
    /// operation was not applied; retry once the node is back.
    #[error("node `{node}` is unavailable; the operation was not applied, retry when it is back")]
    Unavailable {
        /// The node that could not be reached.
        node: NodeId,
    },

    /// The node's storage engine failed. The operation was not applied.
    #[error("node `{node}` failed to access its store: {source}")]
    Store {
        /// The node whose store failed.
        node: NodeId,
        /// The engine's error.
        source: StoreError,
    },

    /// The cluster's data directory failed: opening it, reading or writing
    /// its records, or syncing it (a client write under `--fsync always`
    /// whose fsync failed may or may not have been applied: the outcome is
    /// unknown, and the directory refuses writes until reopened).
    #[error("{what}: {source}")]
    Storage {
        /// What the cluster was doing.
        what: String,
        /// The backend's error.
        source: StoreError,
    },

    /// Removing the last node would drop the keys it holds. Nothing changed;
    /// remove it with `force` to drop them.
    #[error(
        "node `{node}` is the last node and still holds {keys} key(s); \
         add another node first, or force the removal to drop them"
    )]
    LastNodeHoldsData {
        /// The last node.
        node: NodeId,
        /// How many keys it holds.
        keys: usize,
    },

    /// The redistribution failed before its commit point (the switch of
    /// ownership) and was rolled back: the membership and every key's
    /// owner are as before the call, under a new epoch (the abandoned
    /// ring's epoch is never reused). Retry the change when the node in
    /// `cause` is back. A panic during the copy (a `Store`) leaves the
    /// same state before it continues to the caller.
    #[error("{op}({node}) was rolled back, membership unchanged: {cause}")]
    RolledBack {
        /// `add_node` or `remove_node`.
        op: &'static str,
        /// The node being added or removed.
        node: NodeId,
        /// The failure that stopped the copy.
        cause: Box<ClusterError>,
    },

    /// The redistribution passed its commit point and then could not finish
    /// switching ownership: it is paused. The new membership is in force,
    /// every key is served by the node that holds its latest value (keys of
    /// an unavailable node are unavailable), and no key is lost.
    /// [`Cluster::resume`](crate::Cluster::resume) (or the next membership
    /// change) completes it once the node in `cause` is back.
    #[error(
        "{op}({node}) is paused mid-redistribution; call resume once the failed node is back: {cause}"
    )]
    Paused {
        /// `add_node` or `remove_node`.
        op: &'static str,
        /// The node being added or removed.
        node: NodeId,
        /// The failure that stopped the switch.
        cause: Box<ClusterError>,
    },

    /// A membership change was not started; nothing changed for this call.
    /// `cause` says why: an earlier change is paused and could not be
    /// completed first ([`ClusterError::Paused`]: resume it once its node
    /// is back, then retry), or a node the change needs is down
    /// ([`ClusterError::NodeDown`]).
    #[error("{op}({node}) was not started, nothing changed: {cause}")]
    NotStarted {
        /// `add_node` or `remove_node`: the call that was refused.
        op: &'static str,
        /// The node that call named.
        node: NodeId,
        /// Why the earlier change could not finish.
        cause: Box<ClusterError>,
    },

    /// A membership change needs a node that is down: to copy keys from
    /// it, or to copy keys to it. Returned as the `cause` of
    /// [`ClusterError::NotStarted`]: nothing changed (no epoch was used,
    /// nothing was retried). Heal the node and retry, or remove it with
    /// [`Cluster::remove_node_forced`](crate::Cluster::remove_node_forced),
    /// which drops the keys only it holds.
    #[error(
        "node `{node}` is down and the change needs it; \
         heal it and retry, or remove it with remove_node_forced (its keys are dropped)"
    )]
    NodeDown {
        /// The node that is down.
        node: NodeId,
    },

    /// A membership call was made on a thread that is running a membership
    /// change of the same cluster (from a `Store` called by the change),
    /// which would wait for itself. Nothing changed;
    /// make the call after the change returns.
    #[error(
        "{op} was refused: a membership change of this cluster is in progress on this thread \
         (a call from a `Store`?); call it after the change returns"
    )]
    ChangeInProgress {
        /// The membership call that was refused.
        op: &'static str,
    },

    /// The same change is already under way and paused past its commit
    /// point (its node is already in, or already out of, the ring). Nothing
    /// changed; call [`Cluster::resume`](crate::Cluster::resume) once the
    /// failed node is back to complete it.
    #[error("{op}({node}) is already under way and paused; call resume to complete it")]
    AlreadyPaused {
        /// `add_node` or `remove_node`.
        op: &'static str,
        /// The node being added or removed.
        node: NodeId,
    },

    /// An invalid configuration value. Nothing was built.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
}
