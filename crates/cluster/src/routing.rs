//! Routing: which node is authoritative for a token right now, and the one
//! place where a new routing snapshot is published.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use ringkv_ring::{NodeId, Ring, RingDiff, Token};
use tracing::debug;

use crate::ClusterError;
use crate::node::Node;
use crate::plan::{Phase, RangeState};

/// An in-flight redistribution: the plan and the live state of each range.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) diff: RingDiff,
    /// Parallel to `diff.moves`.
    pub(crate) ranges: Vec<RangeState>,
}

/// An immutable routing snapshot, swapped atomically as a whole.
///
/// Invariant: publishing a new snapshot never moves a token's authority by
/// itself. Authority moves only when a range's phase becomes `Switched`,
/// which the migrator does under the source's write lock.
#[derive(Debug)]
pub(crate) struct Routing {
    /// The newest ring (the target of a migration in progress).
    pub(crate) ring: Arc<Ring>,
    pub(crate) migration: Option<Arc<Migration>>,
    /// Every node that may hold authoritative keys: the ring's members plus
    /// a leaving node until its migration has switched everything.
    pub(crate) nodes: BTreeMap<NodeId, Arc<Node>>,
}

impl Routing {
    /// The node authoritative for `token`, and the state of the range move
    /// covering it, if one is in flight.
    #[inline]
    pub(crate) fn authority(
        &self,
        token: Token,
    ) -> Result<(&Arc<Node>, Option<&RangeState>), ClusterError> {
        // One member and nothing moving (a `ringkv node`'s own store, which
        // its process routes before it): that member serves every token,
        // without a ring lookup (4 % of a node's CPU under pipelined SETs).
        if self.migration.is_none()
            && self.nodes.len() == 1
            && let Some(node) = self.nodes.values().next()
        {
            debug_assert_eq!(self.ring.owner_of_token(token), Some(&node.id));
            return Ok((node, None));
        }
        let owner = self
            .ring
            .owner_of_token(token)
            .ok_or(ClusterError::NoNodes)?;
        if let Some(m) = &self.migration
            && let Some(i) = m.diff.find(token)
        {
            let state = &m.ranges[i];
            let id = if state.phase() < Phase::Switched {
                &m.diff.moves[i].from
            } else {
                owner
            };
            return Ok((self.node(id), Some(state)));
        }
        Ok((self.node(owner), None))
    }

    /// The node authoritative for `token` and the last token of the run
    /// from `token` on (not wrapping) over which that stays true in this
    /// snapshot: the run ends at the end of the token's ring range (with
    /// one member and nothing moving, at the end of the line), and inside
    /// or before a moving range at that range's bounds, so that one range
    /// phase decides the whole run.
    pub(crate) fn segment(&self, token: Token) -> Result<(&Arc<Node>, Token), ClusterError> {
        let (node, _) = self.authority(token)?;
        let ring_range = self
            .ring
            .range_of_token(token)
            .ok_or(ClusterError::NoNodes)?;
        // One member and nothing moving (a `ringkv node`'s own store): it
        // serves the whole ring, so a run ends only at its stripe's end,
        // not at each of the ring's partitions (a whole scan took a lock
        // per partition: 65,536 by default).
        let mut end = match self.migration.is_none() && self.ring.len() == 1 {
            true => Token::MAX,
            false => run_end(ring_range, token),
        };
        if let Some(m) = &self.migration {
            match m.diff.find(token) {
                Some(i) => end = end.min(run_end(m.diff.moves[i].range, token)),
                None => {
                    // The next moving range starts after its (exclusive)
                    // start: the run stops there. Moves are ordered, and
                    // only the first may wrap (its start is the largest).
                    let moves = &m.diff.moves;
                    let skip = usize::from(moves.first().is_some_and(|f| f.range.wraps()));
                    let rest = &moves[skip..];
                    let j = rest.partition_point(|mv| mv.range.start < token);
                    if let Some(next) = rest.get(j) {
                        end = end.min(next.range.start);
                    }
                    if skip == 1 && moves[0].range.start >= token {
                        end = end.min(moves[0].range.start);
                    }
                }
            }
        }
        Ok((node, end))
    }

    pub(crate) fn node(&self, id: &NodeId) -> &Arc<Node> {
        self.nodes
            .get(id)
            .expect("every ring member and migration source has a node")
    }
}

/// The last token of `range` reached from `token` (in it) without
/// wrapping past `u64::MAX`.
fn run_end(range: ringkv_ring::TokenRange, token: Token) -> Token {
    if range.wraps() && token > range.end {
        Token::MAX
    } else {
        range.end
    }
}

/// Why a routing snapshot is published; each is one step of a membership
/// change, and each keeps the invariant of [`Routing`] for its own reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// A change starts: the new ring with every moving range `Copying`, so
    /// every range is still served by its source.
    Start,
    /// A change rolls back before its commit point: the old membership
    /// under a new epoch. Nothing was switched, so authority is unchanged.
    RollBack,
    /// Every range is `Switched`: the final routing, without the migration
    /// (and without a leaving node, which no longer serves anything).
    Finish,
    /// The last node leaves: published under every stripe's write lock of
    /// that node, so no write lands between counting and dropping its keys.
    Empty,
    /// A restart publishes what its records say (see `crate::durable`),
    /// before any client call: there is no earlier authority to keep.
    Recover,
}

/// The current routing: loaded lock-free by every client call, published
/// only through [`RoutingCell::publish`], by the migrator holding the
/// membership mutex. One owner of publication keeps the invariant in one
/// place: publishing never moves a token's authority by itself (see
/// [`Publish`] for why each kind of publication keeps it).
pub(crate) struct RoutingCell {
    current: ArcSwap<Routing>,
}

impl RoutingCell {
    pub(crate) fn new(routing: Routing) -> Self {
        RoutingCell {
            current: ArcSwap::from_pointee(routing),
        }
    }

    /// The current snapshot, for a short read.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Routing>> {
        self.current.load()
    }

    /// The current snapshot, to keep.
    pub(crate) fn load_full(&self) -> Arc<Routing> {
        self.current.load_full()
    }

    /// Publishes `next`; callers hold the membership mutex.
    pub(crate) fn publish(&self, why: Publish, next: Routing) {
        debug_assert!(
            why != Publish::Start
                || next
                    .migration
                    .as_ref()
                    .is_some_and(|m| m.ranges.iter().all(|r| r.phase() == Phase::Copying)),
            "a migration starts with every range served by its source"
        );
        debug_assert!(
            why == Publish::Recover || matches!(why, Publish::Start) == next.migration.is_some(),
            "only the start of a change (or a restart) publishes a migration"
        );
        debug!(
            ?why,
            epoch = next.ring.epoch(),
            nodes = next.nodes.len(),
            "routing published"
        );
        self.current.store(Arc::new(next));
    }
}
