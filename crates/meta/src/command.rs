//! What can be proposed to the metadata log, and what applying it answers.
//!
//! Every command names what it acts on (a node id, a change number, a
//! range index) and states a precondition; one whose precondition does not
//! hold is rejected and changes nothing. So a command that is applied twice
//! (a retry after a lost answer, a coordinator that lost its leadership)
//! acts at most once.

use serde::{Deserialize, Serialize};

use crate::member::NodeSpec;
use crate::serial::PlacementSpec;

/// A command of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Starts a new cluster whose only member is `node` (`ringkv node
    /// --init`). Only on an empty state.
    Bootstrap {
        /// How the ring places keys, for the cluster's whole life.
        placement: PlacementSpec,
        /// The first member.
        node: NodeSpec,
    },
    /// Admits `node` as a joining member (`ringkv node --join`). Its change
    /// is begun later, by [`Command::BeginChange`].
    Join {
        /// The node asking to join.
        node: NodeSpec,
    },
    /// Asks member `id` to leave (`RINGKV.REMOVENODE id [FORCE]`).
    Leave {
        /// The member.
        id: String,
        /// Whether keys it cannot hand over (it is down) may be dropped.
        force: bool,
    },
    /// Withdraws a pending join (the member is forgotten) or leave (the
    /// member is up again), unless its change is in flight.
    Cancel {
        /// The member.
        id: String,
    },
    /// Begins the change of pending member `node`: fixes the target ring
    /// and the plan, every range `Copying`. A change with nothing to move
    /// completes at once.
    BeginChange {
        /// The joining or leaving member.
        node: String,
    },
    /// Fences ranges of change `change` at their sources: writes to them
    /// wait there while their last changes ship.
    FenceRanges {
        /// The change's number.
        change: u64,
        /// Indices in the plan, each at most once.
        ranges: Vec<usize>,
    },
    /// Lifts the fence of ranges that have not switched: their sources
    /// serve writes again.
    UnfenceRanges {
        /// The change's number.
        change: u64,
        /// Indices in the plan, each at most once.
        ranges: Vec<usize>,
    },
    /// Hands fenced ranges to their targets, in one entry: a batch of
    /// ranges switches at one epoch. A dropped range switches too, once
    /// its target has cleared its copy of it.
    SwitchRanges {
        /// The change's number.
        change: u64,
        /// Indices in the plan, each at most once.
        ranges: Vec<usize>,
    },
    /// Gives up ranges of a forced removal whose source is down: nobody
    /// serves them until their targets have cleared them and they switch.
    DropRanges {
        /// The change's number.
        change: u64,
        /// Indices in the plan, each at most once.
        ranges: Vec<usize>,
    },
    /// Ends a change whose ranges are all switched: the target
    /// ring is in force, the node is up or gone.
    FinishChange {
        /// The change's number.
        change: u64,
    },
    /// Abandons a change before its commit point (no range switched or
    /// dropped). The member stays pending.
    AbortChange {
        /// The change's number.
        change: u64,
    },
    /// Marks member `id` down: it stopped answering.
    MarkDown {
        /// The member.
        id: String,
    },
    /// Marks member `id` up (it answers again, or restarted), with the
    /// addresses it now listens on.
    MarkUp {
        /// The member.
        id: String,
        /// Its client address now.
        client_addr: String,
        /// Its peer address now.
        peer_addr: String,
    },
}

/// A command that was applied: the state changed and its epoch grew by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// The state's epoch after the command.
    pub epoch: u64,
    /// The member's Raft id, for `Bootstrap` and `Join`.
    pub raft_id: Option<u64>,
    /// The change's number, for `BeginChange` (also when it completed at
    /// once).
    pub change: Option<u64>,
}

/// Why a command was rejected. A rejected command changes nothing: the
/// state, its epoch included, is exactly as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "rejected", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejected {
    /// `Bootstrap` on a cluster that exists.
    #[error("the cluster is already initialised; join it instead")]
    AlreadyInitialised,
    /// Any other command before `Bootstrap`.
    #[error("the cluster is not initialised; start one node with --init")]
    NotInitialised,
    /// The placement of a `Bootstrap` is invalid.
    #[error("invalid placement: {reason}")]
    BadPlacement {
        /// What the ring crate said.
        reason: String,
    },
    /// The node's id or weight is invalid, or the ring refuses the change.
    #[error("invalid node `{id}`: {reason}")]
    BadNode {
        /// The node.
        id: String,
        /// Why.
        reason: String,
    },
    /// `Join` of an id that is already a member. A joiner that retries
    /// after a lost answer gets this with its own Raft id: the first
    /// attempt was applied.
    #[error("node `{id}` is already a member (raft id {raft_id})")]
    AlreadyMember {
        /// The member.
        id: String,
        /// Its Raft id.
        raft_id: u64,
        /// The token of the `Join` that admitted it: the joiner's own
        /// when its first attempt was applied and the answer lost.
        #[serde(default)]
        token: u64,
    },
    /// The id names no member.
    #[error("node `{id}` is not a member; list the members to check the id")]
    UnknownMember {
        /// The id.
        id: String,
    },
    /// The member is not in the lifecycle state the command needs.
    #[error("node `{id}` is {state}; {needs}")]
    WrongState {
        /// The member.
        id: String,
        /// Its state now.
        state: String,
        /// What the command needs.
        needs: String,
    },
    /// A change is in flight; one change at a time.
    #[error("change {change} (node `{node}`) is in flight; wait for it to finish")]
    ChangeInProgress {
        /// The change's number.
        change: u64,
        /// Its node.
        node: String,
    },
    /// The command names a change that is not the one in flight.
    #[error("change {change} is not in flight")]
    NoSuchChange {
        /// The number given.
        change: u64,
    },
    /// A range index is outside the change's plan, given twice, or the
    /// list is empty.
    #[error(
        "change {change} has {ranges} ranges; index {range} is out of range or repeated (or none was given)"
    )]
    NoSuchRange {
        /// The change.
        change: u64,
        /// The index given.
        range: usize,
        /// How many ranges the plan has.
        ranges: usize,
    },
    /// The range is not in the phase the command needs.
    #[error("range {range} of change {change} is {phase:?}; {needs}")]
    WrongPhase {
        /// The change.
        change: u64,
        /// The range.
        range: usize,
        /// Its phase now.
        phase: crate::Phase,
        /// What the command needs.
        needs: String,
    },
    /// `AbortChange` after the commit point.
    #[error("change {change} passed its commit point; it can only finish")]
    Committed {
        /// The change.
        change: u64,
    },
    /// `FinishChange` with ranges not switched yet.
    #[error("change {change} has {pending} ranges not switched yet")]
    Incomplete {
        /// The change.
        change: u64,
        /// Ranges not switched yet.
        pending: usize,
    },
    /// A node the step needs is down.
    #[error("node `{id}` is down; wait for it to return or force-remove it")]
    NodeDown {
        /// The node.
        id: String,
    },
    /// Removing the last member without `force` (its keys would be lost).
    #[error("node `{id}` is the last member; its keys would be lost (use FORCE)")]
    LastMember {
        /// The member.
        id: String,
    },
    /// `DropRanges` where dropping is not allowed: not a forced removal, or
    /// the range's source is not the leaving node, or that node is up.
    #[error("range {range} of change {change} cannot be dropped: {why}")]
    CannotDrop {
        /// The change.
        change: u64,
        /// The range.
        range: usize,
        /// Why.
        why: String,
    },
    /// The command would change nothing (`MarkUp` of an up member at the
    /// same addresses, `MarkDown` of a down one).
    #[error("nothing to change")]
    NoChange,
}

/// What applying a command answers.
pub type Response = Result<Applied, Rejected>;
