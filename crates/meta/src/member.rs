//! Members of the cluster as the metadata records them.

use serde::{Deserialize, Serialize};

/// What a node says about itself when it joins: its id, where clients and
/// peers reach it, and its share of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's id, valid by [`ringkv_ring::NodeId::validate`].
    pub id: String,
    /// `HOST:PORT` of its Redis-protocol listener (`--listen`).
    pub client_addr: String,
    /// `HOST:PORT` of its peer listener (`--peer-listen`): Raft and range
    /// transfers.
    pub peer_addr: String,
    /// Its weight on the ring (share relative to weight-1 nodes), at least 1.
    pub weight: u32,
    /// Drawn at random by the process that joins, and the same in each of
    /// its attempts: a `Join` retried after a lost answer finds its own
    /// first attempt by it. `0`: none.
    #[serde(default)]
    pub token: u64,
    /// How the node places keys ([`ringkv_ring::KEY_FORMAT`]); a node of
    /// another layout is refused. Absent (an older ringkv): 1.
    #[serde(default = "key_format_1")]
    pub key_format: u32,
}

fn key_format_1() -> u32 {
    1
}

/// Where a member is in its life in the cluster.
///
/// ```text
///   Join --> Joining --(change finished)--> Up --Leave--> Leaving --(change finished)--> gone
///              |  (Cancel: gone)                            | (Cancel: Up)
/// ```
///
/// `Joining` and `Leaving` members are *pending*: they wait for the
/// coordinator to begin their change, or are the node of the change in
/// flight. Whether a member answers is a separate flag ([`Member::down`]),
/// because a member that stops answering keeps its place in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Lifecycle {
    /// Admitted, not in the ring yet (or being added by the change in flight).
    Joining,
    /// In the ring, serving its ranges.
    Up,
    /// In the ring, asked to leave (or being removed by the change in flight).
    Leaving {
        /// Whether the removal may drop the keys it cannot hand over
        /// (`RINGKV.REMOVENODE id FORCE`).
        force: bool,
    },
}

/// The state `RINGKV.NODES` shows for a member: its lifecycle, unless it is
/// down, which wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Admitted, waiting for or receiving its ranges.
    Joining,
    /// Serving its ranges.
    Up,
    /// Handing its ranges over.
    Leaving,
    /// Marked down through the log: its keys are unavailable until it
    /// returns.
    Down,
}

impl NodeState {
    /// The lowercase word `RINGKV.NODES` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Up => "up",
            NodeState::Leaving => "leaving",
            NodeState::Down => "down",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's id in the Raft group (openraft's `NodeId` is a `Copy`
    /// integer, ours a string): assigned by the state machine when the
    /// member is admitted, never reused.
    pub raft_id: u64,
    /// Where clients reach it.
    pub client_addr: String,
    /// Where peers reach it.
    pub peer_addr: String,
    /// Its weight on the ring.
    pub weight: u32,
    /// Joining, up or leaving.
    pub lifecycle: Lifecycle,
    /// Marked down through the log (it stopped answering the leader). A
    /// down member keeps its place and its ranges; its keys are unavailable.
    pub down: bool,
    /// The epoch of its last lifecycle change (admitted, up, asked to
    /// leave): the coordinator begins pending changes in this order.
    pub since: u64,
    /// The token of the `Join` that admitted it ([`NodeSpec::token`]).
    #[serde(default)]
    pub token: u64,
}

impl Member {
    /// The state to show: down wins over the lifecycle.
    pub fn state(&self) -> NodeState {
        if self.down {
            return NodeState::Down;
        }
        match self.lifecycle {
            Lifecycle::Joining => NodeState::Joining,
            Lifecycle::Up => NodeState::Up,
            Lifecycle::Leaving { .. } => NodeState::Leaving,
        }
    }
}
