//! Which members vote in the Raft group: a pure function of the state.
//!
//! Consensus stays small (3 or 5 voters, as Cassandra's metadata service
//! and TiKV's PD keep it); every other member is a learner that receives
//! the log but does not vote. The leader compares [`choose_voters`] with
//! the group's voters after every applied command and, when they differ,
//! asks openraft for the new voter set (`Raft::change_membership`, a joint
//! consensus: the old voters' quorum and the new one's both agree).

use std::collections::BTreeSet;

use crate::member::Lifecycle;
use crate::state::MetaState;

/// The voter set to aim for, given the state and the current voters (Raft
/// ids).
///
/// - Eligible: members that are up (not joining, not leaving) and not
///   marked down.
/// - Size: from the eligible members plus the current voters that are
///   marked down but still members: 5 with at least 5, 3 with 3 or 4, else
///   1 (with two nodes, two voters would stop the log when either fails,
///   one voter only when that one does).
/// - Stability: current voters that are still eligible stay (the lowest
///   Raft ids, if there are more than the size); free seats go to eligible
///   members by ascending Raft id. A voter marked down keeps its seat only
///   while no eligible member can take it: three members with one down keep
///   three voters (a quorum of two, as before the failure) rather than
///   shrinking to one, which would leave every committed entry on a single
///   node. So a voter is replaced when it leaves, or is down and a
///   replacement exists, and otherwise never.
/// - With no eligible member the current voters stay: the group must keep
///   a quorum to record anything at all.
pub fn choose_voters(state: &MetaState, current: &BTreeSet<u64>) -> BTreeSet<u64> {
    let eligible: BTreeSet<u64> = state
        .members
        .values()
        .filter(|m| m.lifecycle == Lifecycle::Up && !m.down)
        .map(|m| m.raft_id)
        .collect();
    if eligible.is_empty() {
        return current.clone();
    }
    let seated_down = seated_down(state, current);
    let size = voter_count(eligible.len() + seated_down.len());
    let mut voters: BTreeSet<u64> = current
        .intersection(&eligible)
        .copied()
        .take(size)
        .collect();
    for &id in eligible.iter().chain(&seated_down) {
        if voters.len() == size {
            break;
        }
        voters.insert(id);
    }
    voters
}

/// The current voters that are marked down but still up members: they
/// keep their seats while nobody can replace them.
pub fn seated_down(state: &MetaState, current: &BTreeSet<u64>) -> BTreeSet<u64> {
    state
        .members
        .values()
        .filter(|m| m.lifecycle == Lifecycle::Up && m.down && current.contains(&m.raft_id))
        .map(|m| m.raft_id)
        .collect()
}

/// How many voters `eligible` members give: 5, 3 or 1.
pub fn voter_count(eligible: usize) -> usize {
    match eligible {
        5.. => 5,
        3 | 4 => 3,
        _ => 1,
    }
}
