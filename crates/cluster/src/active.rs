//! A membership change in flight: its plan, the live state of each range,
//! and what each range has moved so far.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_ring::{NodeId, Ring, TokenRange};

use crate::node::Node;
use crate::plan::{RangeState, TransferPlan};
use crate::report::{ChangeKind, RebalanceReport, TransferReport};
use crate::routing::Migration;

/// Per-range accounting for the report.
#[derive(Default, Clone, Copy)]
pub(crate) struct Moved {
    pub(crate) keys: i64,
    pub(crate) bytes: i64,
    pub(crate) time: Duration,
}

/// How many keys of one range a target holds, per stripe, ascending.
pub(crate) type Held = Vec<(usize, i64)>;

/// Adds `delta` to the count of `stripe` in `held`.
pub(crate) fn add_held(held: &mut Held, stripe: usize, delta: i64) {
    match held.binary_search_by_key(&stripe, |&(s, _)| s) {
        Ok(j) => held[j].1 += delta,
        Err(j) => held.insert(j, (stripe, delta)),
    }
}

/// Total of a [`Held`].
pub(crate) fn held_total(held: &Held) -> i64 {
    held.iter().map(|&(_, n)| n).sum()
}

/// A change in flight.
pub(crate) struct Active {
    pub(crate) kind: ChangeKind,
    /// The node added or removed.
    pub(crate) node: NodeId,
    /// A forced removal: ranges whose source (the leaving node) is down are
    /// dropped instead of failing the change. A down target still fails it:
    /// the source could serve those keys, so dropping them would turn that
    /// target's outage into a permanent loss.
    pub(crate) force: bool,
    pub(crate) started: Instant,
    pub(crate) migration: Arc<Migration>,
    pub(crate) transfers: Vec<TransferPlan>,
    pub(crate) moved: Vec<Moved>,
    /// Per range: the keys of the range the target holds, exactly (kept up
    /// to date with every store call that adds or removes one), or `None`
    /// when a step panicked mid-call and the switch must recount them.
    pub(crate) held: Vec<Option<Held>>,
    /// Per range: the target holds a complete copy (dirty keys aside).
    /// Every range is copied before the commit point, except in a change
    /// resumed after a restart, whose ranges not switched are copied again
    /// by `finish` (their source kept serving them).
    pub(crate) copied: Vec<bool>,
    /// Resumed after a restart: a joining node may hold partial copies.
    pub(crate) recovered: bool,
    /// Per range: given up by a forced removal because its source is down;
    /// its keys are dropped at the switch.
    pub(crate) dropped: Vec<bool>,
    /// Keys dropped with ranges given up.
    pub(crate) keys_dropped: u64,
    pub(crate) new_ring: Arc<Ring>,
    /// Routing nodes during the migration (old members plus a joining node).
    pub(crate) nodes: BTreeMap<NodeId, Arc<Node>>,
    /// Routing nodes once done (without a leaving node).
    pub(crate) final_nodes: BTreeMap<NodeId, Arc<Node>>,
}

/// One range of the plan, with its two nodes.
pub(crate) struct Endpoints {
    pub(crate) source: Arc<Node>,
    pub(crate) target: Arc<Node>,
    pub(crate) range: TokenRange,
    pub(crate) migration: Arc<Migration>,
}

impl Endpoints {
    pub(crate) fn state(&self, i: usize) -> &RangeState {
        &self.migration.ranges[i]
    }
}

impl Active {
    /// Range `i`'s nodes and tokens, owned, so that a step can update the
    /// change while it works on them.
    pub(crate) fn endpoints(&self, i: usize) -> Endpoints {
        let m = &self.migration.diff.moves[i];
        Endpoints {
            source: self.nodes[&m.from].clone(),
            target: self.nodes[&m.to].clone(),
            range: m.range,
            migration: self.migration.clone(),
        }
    }

    /// Whether range `i` has this change's joining node as target (which
    /// holds nothing of it before its first copy).
    pub(crate) fn joins(&self, i: usize) -> bool {
        !self.recovered
            && self.kind == ChangeKind::AddNode
            && self.migration.diff.moves[i].to == self.node
    }

    /// Whether range `i` is to be dropped rather than moved: given up
    /// earlier, or in a forced removal whose source is now down (its keys
    /// cannot be read). A down source wins over a down target: with both
    /// down there is nothing to copy either way.
    pub(crate) fn drops(&self, i: usize) -> bool {
        let m = &self.migration.diff.moves[i];
        self.dropped[i] || (self.force && self.nodes[&m.from].is_down())
    }

    /// The first node the rest of the change needs that is down. A forced
    /// removal needs only the targets of ranges whose source is up: it
    /// drops the ranges whose source is down, and refuses to drop keys a
    /// live source could still hand over.
    pub(crate) fn first_down(&self) -> Option<NodeId> {
        self.migration
            .diff
            .moves
            .iter()
            .enumerate()
            .filter(|&(i, _)| !self.drops(i))
            .find_map(|(_, m)| {
                [&m.from, &m.to]
                    .into_iter()
                    .find(|id| self.nodes[*id].is_down())
                    .cloned()
            })
    }

    /// The report of a completed change.
    pub(crate) fn report(&self, pending_cleanups: usize) -> RebalanceReport {
        let transfers: Vec<TransferReport> = self
            .transfers
            .iter()
            .map(|t| {
                let (mut keys, mut bytes, mut time) = (0i64, 0i64, Duration::ZERO);
                for &i in &t.ranges {
                    keys += self.moved[i].keys;
                    bytes += self.moved[i].bytes;
                    time += self.moved[i].time;
                }
                TransferReport {
                    from: t.from.clone(),
                    to: t.to.clone(),
                    ranges: t.ranges.len(),
                    keys: keys.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                    duration: time,
                }
            })
            .collect();
        RebalanceReport {
            kind: self.kind,
            node: self.node.clone(),
            epoch: self.new_ring.epoch(),
            keys_moved: transfers.iter().map(|t| t.keys).sum(),
            bytes_moved: transfers.iter().map(|t| t.bytes).sum(),
            keys_dropped: self.keys_dropped,
            pending_cleanups,
            transfers,
            duration: self.started.elapsed(),
        }
    }
}
