//! What a membership change did, and what the cluster holds.

use std::time::Duration;

use ringkv_ring::NodeId;

/// Which membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A node joined.
    AddNode,
    /// A node left.
    RemoveNode,
}

impl ChangeKind {
    /// `add_node` or `remove_node`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::AddNode => "add_node",
            ChangeKind::RemoveNode => "remove_node",
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The keys one source sent to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// Source node.
    pub from: NodeId,
    /// Target node.
    pub to: NodeId,
    /// Token ranges moved.
    pub ranges: usize,
    /// Keys the target holds for those ranges after the switch.
    pub keys: u64,
    /// Bytes of those keys and values.
    pub bytes: u64,
    /// Time spent copying, switching and cleaning up these ranges.
    pub duration: Duration,
}

/// The redistribution caused by one membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceReport {
    /// The change.
    pub kind: ChangeKind,
    /// The node added or removed.
    pub node: NodeId,
    /// Ring epoch after the change.
    pub epoch: u64,
    /// One entry per (source, target) pair.
    pub transfers: Vec<TransferReport>,
    /// Keys moved in all (each counted once, in its final state).
    pub keys_moved: u64,
    /// Bytes of keys and values moved.
    pub bytes_moved: u64,
    /// Keys dropped by a forced removal: all keys of the last node, or the
    /// keys of the ranges that could not be copied because their source
    /// (the leaving node) was down. With one copy per key, they are gone.
    pub keys_dropped: u64,
    /// Ranges whose stale copy could not be deleted from a failed source;
    /// [`Cluster::repair`](crate::Cluster::repair) retries them.
    pub pending_cleanups: usize,
    /// Wall time of the whole change.
    pub duration: Duration,
}

/// A snapshot of the cluster's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStats {
    /// Current ring epoch.
    pub epoch: u64,
    /// Nodes in id order with their weight and key counts: the members,
    /// plus a node whose removal is in progress or paused (weight 0), which
    /// still serves its ranges.
    pub nodes: Vec<NodeStats>,
    /// Keys stored in the cluster, each counted once, at the node that
    /// serves it: the sum of [`NodeStats::keys`]. Exact at every instant
    /// when no client write is in flight, also during a redistribution;
    /// otherwise off by at most the writes in flight.
    pub total_keys: usize,
    /// Whether a redistribution is in progress or paused.
    pub rebalancing: bool,
    /// Stale ranges awaiting [`Cluster::repair`](crate::Cluster::repair).
    pub pending_cleanups: usize,
    /// Bytes the nodes' stores hold (Redis's `used_memory`): the sum of
    /// [`NodeStats::used_memory`], counted incrementally, never by walking
    /// the data.
    pub used_memory: u64,
    /// Keys deleted because they had expired, since the cluster started:
    /// by a write that found them expired, or by
    /// [`Cluster::active_expire_cycle`](crate::Cluster::active_expire_cycle).
    pub expired_keys: u64,
    /// Keys evicted to stay under `maxmemory`, since the cluster started.
    pub evicted_keys: u64,
}

/// One member in [`ClusterStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// The node.
    pub id: NodeId,
    /// Its weight.
    pub weight: u32,
    /// Keys it serves: during a redistribution a range still copying counts
    /// at its source and a switched range at its target.
    pub keys: usize,
    /// Entries its stores hold: the keys it serves, plus copies it does not
    /// serve (a range being copied to it, stale copies awaiting cleanup).
    pub stored: usize,
    /// Whether it is down (fault injection).
    pub down: bool,
    /// Bytes its stores hold, served or not: per entry, key + value +
    /// [`ENTRY_OVERHEAD`](crate::ENTRY_OVERHEAD). A range being copied
    /// counts on both nodes until its source's copy is cleaned up, as it
    /// occupies both.
    pub used_memory: u64,
}

/// Progress of a redistribution, reported after each range is copied; the
/// copy is complete when `ranges_done == ranges_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The change.
    pub kind: ChangeKind,
    /// The node added or removed.
    pub node: NodeId,
    /// Ranges copied so far.
    pub ranges_done: usize,
    /// Ranges to copy in all.
    pub ranges_total: usize,
    /// Keys copied so far.
    pub keys_copied: u64,
}
