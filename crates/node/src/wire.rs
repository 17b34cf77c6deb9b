//! The messages node processes exchange over the peer transport (JSON
//! bodies; the Raft RPCs are `ringkv_meta::raft`'s).

use bytes::Bytes;
use ringkv_meta::{Command, Response};
use serde::{Deserialize, Serialize};

/// `Propose`: a metadata command for the leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct Propose {
    /// The command.
    pub command: Command,
}

/// What a `Propose` came to.
#[derive(Debug, Serialize, Deserialize)]
pub enum Proposed {
    /// Committed and applied, with the state machine's answer.
    Applied(Response),
    /// This node is not the leader; the leader's peer address if known.
    NotLeader(Option<String>),
}

/// `Forward`: client requests for the node that serves their keys, in
/// groups, one call for them all (see `crate::batch`). Each group is one
/// connection's requests, which the receiver runs in order; groups run
/// concurrently.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forward {
    /// The groups.
    pub groups: Vec<ForwardGroup>,
}

/// One connection's requests in a [`Forward`] call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardGroup {
    /// The sender's epoch when it routed them: the receiver catches up to
    /// it before deciding.
    pub epoch: u64,
    /// The client's protocol (2 or 3), in which the replies are encoded.
    pub protocol: u8,
    /// Whether a request may wait on the receiver (for a fence to lift, or
    /// the receiver's view to catch up). A group that may not stops at such
    /// a request instead ([`Stop::Later`]): the groups of a call share its
    /// answer, so one waiting would hold them all.
    pub wait: bool,
    /// The requests, each command name first.
    pub requests: Vec<Vec<Bytes>>,
}

impl ForwardGroup {
    /// About the bytes it takes in a call.
    pub fn size(&self) -> usize {
        self.requests
            .iter()
            .flatten()
            .map(|w| w.len() + 8)
            .sum::<usize>()
            + 16
    }
}

/// What a [`ForwardGroup`] came to: the replies of its first requests, in
/// order; then, if `stop` is set, why the next one did not run. No later
/// request of the group ran either.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupAnswer {
    /// The encoded replies of the requests that ran.
    pub replies: Vec<Bytes>,
    /// Why the group stopped short.
    pub stop: Option<Stop>,
}

/// Why a [`ForwardGroup`] stopped short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// The receiver does not serve the request's keys at `epoch`; `node`
    /// does, as far as it knows.
    Moved {
        /// The receiver's epoch.
        epoch: u64,
        /// Who serves the keys, as the receiver sees it.
        node: String,
    },
    /// The request would have waited, and the group may not
    /// ([`ForwardGroup::wait`]).
    Later,
}

/// Where a copy stands: the range (its index in the plan) and the token
/// to read next in it (`None`: from its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The range's index in the change's plan.
    pub range: usize,
    /// The next token to read in it.
    pub token: Option<u64>,
}

/// `RangeScan`: the next page of every range of change `change` that moves
/// from the called node to `target`, in plan order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Scan {
    /// The change.
    pub change: u64,
    /// The node the ranges move to.
    pub target: String,
    /// The epoch of the target's view when it began the pull (the source
    /// waits for it: its recording of writes has started, and it sees the
    /// ranges copying as the target does).
    pub epoch: u64,
    /// Where to go on (`None`: from the first range).
    pub cursor: Option<Cursor>,
    /// Entries per page, about.
    pub count: usize,
}

/// One page of a copy.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanPage {
    /// Identifies the source's recording of writes for the change: the
    /// last shipment must come from the same recording, or writes may have
    /// been missed (the source restarted).
    pub tracker: u64,
    /// Keys and encoded entries (`ringkv_cluster::Entry::encode`).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where to go on, `None` when every range is done.
    pub next: Option<Cursor>,
}

/// `RangeShip`: the last changes of fenced ranges, from their source.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ship {
    /// The change.
    pub change: u64,
    /// The ranges.
    pub ranges: Vec<usize>,
    /// The epoch of the fence (the source waits to have applied it).
    pub epoch: u64,
    /// The recording the target's copy came from.
    pub tracker: u64,
    /// Go on after this key (keys ship in byte order, a bounded part at a
    /// time; `None`: from the first).
    pub after: Option<Vec<u8>>,
}

/// The last changes: each written key's entry now, or `None` if it is
/// absent (deleted) now.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shipment {
    /// Keys and their encoded entries, or `None`.
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// More keys follow: ask again after the last one.
    pub more: bool,
}

/// `RangePull`: the coordinator tells a target to pull ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pull {
    /// The change.
    pub change: u64,
    /// The ranges (each has this node as its target).
    pub ranges: Vec<usize>,
    /// The epoch the coordinator saw (the target waits for it).
    pub epoch: u64,
    /// What the target does with them.
    pub kind: PullKind,
}

/// What a target does with the ranges of a [`Pull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PullKind {
    /// A full copy of copying ranges (its old copy of them cleared first).
    Copy,
    /// The last changes of fenced ranges, onto the copy.
    LastChanges,
    /// Clears its copy of dropped ranges (their source is down), before
    /// they switch and it serves them empty.
    Clear,
}

/// The target's answer to `RangePull`: the pull runs on the target, and
/// the coordinator asks again, with the same request, until it is done.
#[derive(Debug, Serialize, Deserialize)]
pub enum PullAnswer {
    /// The pull ended, with what it moved.
    Done(Pulled),
    /// The pull is still running.
    Running,
}

/// What a pull moved.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Pulled {
    /// Entries written.
    pub keys: u64,
    /// Keys deleted (last changes only).
    pub deleted: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// `Status`: what a node says about itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Its id.
    pub id: String,
    /// The epoch of its view.
    pub epoch: u64,
    /// Keys in its local store (served or not).
    pub keys: u64,
    /// Its Raft log's last applied index.
    pub applied: u64,
    /// Its Raft log's last index.
    pub last_log: u64,
    /// Whether it is the Raft leader.
    pub leader: bool,
    /// Whether it serves clients (caught up with the log after a start).
    pub ready: bool,
}

/// `Keys`: the keys the receiver serves in token intervals, for a page of
/// `SCAN` or `KEYS` on another node (`crate::keyspace`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysRequest {
    /// The sender's epoch: the receiver reaches it before reading.
    pub epoch: u64,
    /// Runs of tokens, each `(first, last)`, in token order.
    pub intervals: Vec<(u64, u64)>,
    /// About how many keys to read (whole tokens are read).
    pub limit: usize,
}

/// What a [`KeysRequest`] read: its keys, in token order, up to `next`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysPage {
    /// The live keys read.
    pub keys: Vec<Bytes>,
    /// Where reading stopped, if it stopped short of the last interval's
    /// end: the limit was reached, or (`moved`) the receiver does not serve
    /// this token.
    pub next: Option<u64>,
    /// The receiver's epoch, when it stopped at a token it does not serve.
    pub moved: Option<u64>,
}

/// What a `Count` (sent with the sender's epoch) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counted {
    /// The keys the receiver serves at that epoch.
    Keys(u64),
    /// The receiver is at this newer epoch: count again from there.
    Moved(u64),
}
