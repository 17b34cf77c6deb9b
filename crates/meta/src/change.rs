//! The membership change in flight: its plan and each range's phase.

use ringkv_ring::{Ring, Token, TokenRange};
use serde::{Deserialize, Serialize};

use crate::serial::ring_json;

/// Adding or removing a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The node joins the ring.
    Add,
    /// The node leaves the ring.
    Remove,
}

/// Where one range's move stands.
///
/// ```text
///   Copying --Fence--> Fenced --Switch--> Switched
///      ^                  |                    ^
///      +-----Unfence------+                    |
///   (Copying|Fenced) --Drop--> Dropped --Switch-+
/// ```
///
/// - `Copying`: the source serves the range (reads and writes) and records
///   the keys written in it; the target pulls it in batches.
/// - `Fenced`: the source still serves reads but holds writes to the range
///   (they wait, then get `TRYAGAIN` if the fence outlasts them); its last
///   changes ship to the target. Committed in the log, so a source that
///   restarts while fenced stays fenced.
/// - `Switched`: the target serves the range; the source answers "moved"
///   and deletes its copy. The first `Switched` (or `Dropped`) range of a
///   change is the change's commit point: from then on it only moves
///   forward.
/// - `Dropped`: a forced removal of a down node gives up this range's keys.
///   Nobody serves it (its source is down): the target clears whatever
///   copy of it it holds (part of a copy, or copies older still), then the
///   range switches and the target serves it empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The source serves the range; the target is being filled.
    Copying,
    /// Writes to the range wait at the source; the last changes ship.
    Fenced,
    /// The target serves the range.
    Switched,
    /// The keys are given up; the target clears its copy, then switches.
    Dropped,
}

impl Phase {
    /// Whether the range's move is decided for good (`Switched`, or
    /// `Dropped`): it never goes back to its source.
    pub fn is_done(self) -> bool {
        matches!(self, Phase::Switched | Phase::Dropped)
    }
}

/// One range of the plan: the tokens `(start, end]` move from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeMove {
    /// Exclusive lower bound (wraps past `u64::MAX` when `start >= end`).
    pub start: Token,
    /// Inclusive upper bound.
    pub end: Token,
    /// The node serving the range before the change.
    pub from: String,
    /// The node serving it after.
    pub to: String,
    /// Where the move stands.
    pub phase: Phase,
}

impl RangeMove {
    /// The range as a [`TokenRange`].
    pub fn range(&self) -> TokenRange {
        TokenRange::new(self.start, self.end)
    }

    /// The node serving the range now: the source until the switch, the
    /// target after.
    pub fn authority(&self) -> &str {
        if self.phase == Phase::Switched {
            &self.to
        } else {
            &self.from
        }
    }
}

/// The membership change in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Its number: commands about a change name it, so that a command meant
    /// for an earlier change (retried by a coordinator that lost its
    /// leadership) cannot act on this one.
    pub id: u64,
    /// Add or remove.
    pub kind: ChangeKind,
    /// The node joining or leaving.
    pub node: String,
    /// A forced removal: ranges whose source (the leaving node) is down
    /// may be dropped.
    pub force: bool,
    /// The ring the change moves to (its epoch: the epoch of the command
    /// that began the change).
    #[serde(with = "ring_json")]
    pub to: Ring,
    /// `from.diff(to)`, in the diff's order (by range end; at most the first
    /// wraps), with each range's phase.
    pub ranges: Vec<RangeMove>,
}

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.kind == other.kind
            && self.node == other.node
            && self.force == other.force
            && self.ranges == other.ranges
            && self.to.epoch() == other.to.epoch()
            && self.to.to_json() == other.to.to_json()
    }
}

impl Eq for Change {}

impl Change {
    /// Whether the commit point is passed: some range is switched or
    /// dropped, so the change can no longer be abandoned.
    pub fn committed(&self) -> bool {
        self.ranges.iter().any(|r| r.phase.is_done())
    }

    /// Whether every range is switched (a dropped one switches once its
    /// target has cleared it): the change can finish.
    pub fn complete(&self) -> bool {
        self.ranges.iter().all(|r| r.phase == Phase::Switched)
    }

    /// The index of the range holding `token`, if it moves. `O(log ranges)`.
    pub fn find(&self, token: Token) -> Option<usize> {
        let i = self.ranges.partition_point(|m| m.end < token);
        if i < self.ranges.len() && self.ranges[i].range().contains(token) {
            return Some(i);
        }
        match self.ranges.first() {
            Some(m) if m.range().wraps() && m.range().contains(token) => Some(0),
            _ => None,
        }
    }

    /// How many ranges are in each phase.
    pub fn progress(&self) -> Progress {
        let mut p = Progress::default();
        for r in &self.ranges {
            *match r.phase {
                Phase::Copying => &mut p.copying,
                Phase::Fenced => &mut p.fenced,
                Phase::Switched => &mut p.switched,
                Phase::Dropped => &mut p.dropped,
            } += 1;
        }
        p
    }
}

/// How many ranges of a change are in each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// `Copying`.
    pub copying: usize,
    /// `Fenced`.
    pub fenced: usize,
    /// `Switched`.
    pub switched: usize,
    /// `Dropped`, not yet cleared by their targets.
    pub dropped: usize,
}

impl Progress {
    /// The ranges not yet switched.
    pub fn pending(&self) -> usize {
        self.copying + self.fenced + self.dropped
    }
}
