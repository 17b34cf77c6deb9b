//! Routing: which node is authoritative for a token right now.

use std::collections::BTreeMap;
use std::sync::Arc;

use ringkv_ring::{NodeId, Ring, RingDiff, Token};

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

    pub(crate) fn node(&self, id: &NodeId) -> &Arc<Node> {
        self.nodes
            .get(id)
            .expect("every ring member and migration source has a node")
    }
}
