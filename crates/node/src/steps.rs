//! The coordinator's next step, a pure function of the committed state:
//! the next change to the Raft group ([`group_step`]) and the next step of
//! the membership change in flight ([`change_step`]). A new leader resumes
//! where the last one stood. The loop that takes the steps is `coord.rs`.

use std::collections::{BTreeMap, BTreeSet};

use ringkv_meta::{Command, MetaState, Phase};

use crate::wire::PullKind;

/// The Raft group as the coordinator wants it, next to what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupStep {
    /// Add member `raft_id` (peer address `addr`) as a learner.
    AddLearner {
        /// Its Raft id.
        raft_id: u64,
        /// Its peer address.
        addr: String,
    },
    /// Make exactly these the voters.
    SetVoters(BTreeSet<u64>),
    /// Remove these non-voters that are no longer members.
    RemoveNodes(BTreeSet<u64>),
}

/// The next change to the Raft group: learners for new members first, then
/// the voters `ringkv_meta::choose_voters` picks, then the removal of nodes
/// that left. `None` when the group matches the metadata.
pub fn group_step(
    state: &MetaState,
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
) -> Option<GroupStep> {
    for member in state.members.values() {
        if !voters.contains(&member.raft_id) && !learners.contains(&member.raft_id) {
            return Some(GroupStep::AddLearner {
                raft_id: member.raft_id,
                addr: member.peer_addr.clone(),
            });
        }
    }
    let chosen = ringkv_meta::choose_voters(state, voters);
    if !chosen.is_empty() && &chosen != voters {
        return Some(GroupStep::SetVoters(chosen));
    }
    let members: BTreeSet<u64> = state.members.values().map(|m| m.raft_id).collect();
    let gone: BTreeSet<u64> = learners.difference(&members).copied().collect();
    if !gone.is_empty() {
        return Some(GroupStep::RemoveNodes(gone));
    }
    None
}

/// What the coordinator does next about membership changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeStep {
    /// Propose this command.
    Propose(Command),
    /// Have each target (by node id) pull these ranges of the change: a
    /// full copy, the last changes of fenced ranges, or the clearing of
    /// dropped ones.
    Pull {
        /// The change.
        change: u64,
        /// Ranges by target node.
        targets: BTreeMap<String, Vec<usize>>,
        /// What the targets do.
        kind: PullKind,
    },
}

/// The coordinator's next step for the membership change in flight (or
/// the pending member to begin), from the committed state alone: a new
/// leader resumes where the last one stood.
pub fn change_step(state: &MetaState) -> Option<ChangeStep> {
    let Some(change) = &state.change else {
        return state.next_pending().map(|id| {
            ChangeStep::Propose(Command::BeginChange {
                node: id.to_string(),
            })
        });
    };
    if change.complete() {
        return Some(ChangeStep::Propose(Command::FinishChange {
            change: change.id,
        }));
    }
    // A forced removal of a down node: its ranges are dropped (their new
    // owners serve them empty), once their targets are up. The coordinator
    // waits until the node's lease has run out first (`crate::lease`).
    let up = |id: &str| state.members.get(id).is_some_and(|m| !m.down);
    if change.force && state.members.get(&change.node).is_none_or(|m| m.down) {
        let ranges: Vec<usize> = change
            .ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| r.from == change.node && !r.phase.is_done() && up(&r.to))
            .map(|(i, _)| i)
            .collect();
        if !ranges.is_empty() {
            return Some(ChangeStep::Propose(Command::DropRanges {
                change: change.id,
                ranges,
            }));
        }
    }
    let by_target = |phase: Phase| {
        let mut targets: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in change.ranges.iter().enumerate() {
            // A target that is down clears its dropped ranges once it is
            // back; the others go on meanwhile.
            if r.phase == phase && (phase != Phase::Dropped || up(&r.to)) {
                targets.entry(r.to.clone()).or_default().push(i);
            }
        }
        targets
    };
    // Fenced ranges first: they hold writes up. Dropped ones next: nobody
    // serves them until they are cleared and switched.
    for (phase, kind) in [
        (Phase::Fenced, PullKind::LastChanges),
        (Phase::Dropped, PullKind::Clear),
        (Phase::Copying, PullKind::Copy),
    ] {
        let targets = by_target(phase);
        if !targets.is_empty() {
            return Some(ChangeStep::Pull {
                change: change.id,
                targets,
                kind,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::{begin, complete, force_out, spec, two_nodes};
    use crate::view::{Decision, clears, decide};

    #[test]
    fn a_forced_removal_of_a_down_node_drops_its_ranges_and_a_plain_one_moves_them() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        force_out(&mut state, "2");
        begin(&mut state, "2");
        let change = state.change.as_ref().unwrap();
        let all: Vec<usize> = (0..change.ranges.len()).collect();
        let id = change.id;
        assert_eq!(
            change_step(&state),
            Some(ChangeStep::Propose(Command::DropRanges {
                change: id,
                ranges: all.clone(),
            }))
        );
        let step = change_step(&state);
        let Some(ChangeStep::Propose(drop)) = step else {
            panic!("{step:?}");
        };
        state.apply(&drop).unwrap();
        // Node 1 clears its copies of the dropped ranges before it serves
        // them: until they switch, they answer that node 2 is down, even
        // once node 2 is marked up again (it healed): it gave them up.
        let token = state.change.as_ref().unwrap().ranges[0].end;
        assert!(clears(&state, "1", token) && !clears(&state, "2", token));
        let mut healed = state.clone();
        let two = spec("2");
        healed
            .apply(&Command::MarkUp {
                id: "2".into(),
                client_addr: two.client_addr,
                peer_addr: two.peer_addr,
            })
            .unwrap();
        for (at, me, write) in [
            (&state, "1", false),
            (&healed, "1", true),
            (&healed, "2", false),
            (&healed, "2", true),
        ] {
            assert_eq!(
                decide(at, me, &[token], write),
                Decision::Down("2".into()),
                "at node {me}"
            );
        }
        // With its target down, a dropped range waits for it to return.
        let mut target_down = state.clone();
        target_down
            .apply(&Command::MarkDown { id: "1".into() })
            .unwrap();
        assert_eq!(change_step(&target_down), None);
        assert_eq!(
            change_step(&state),
            Some(ChangeStep::Pull {
                change: id,
                targets: BTreeMap::from([("1".to_string(), all.clone())]),
                kind: PullKind::Clear,
            })
        );
        state
            .apply(&Command::SwitchRanges {
                change: id,
                ranges: all.clone(),
            })
            .unwrap();
        assert!(!clears(&state, "1", token));
        assert_eq!(
            decide(&state, "1", &[token], true),
            Decision::Local { tracked: false }
        );
        assert_eq!(
            change_step(&state),
            Some(ChangeStep::Propose(Command::FinishChange { change: id }))
        );

        // The same removal of a node that is up moves its ranges.
        let mut state = two_nodes();
        complete(&mut state, "2");
        state
            .apply(&Command::Leave {
                id: "2".into(),
                force: true,
            })
            .unwrap();
        state
            .apply(&Command::BeginChange { node: "2".into() })
            .unwrap();
        assert!(matches!(
            change_step(&state),
            Some(ChangeStep::Pull {
                kind: PullKind::Copy,
                ..
            })
        ));
    }

    #[test]
    fn the_group_gets_learners_then_voters_then_loses_departed_nodes() {
        let mut state = two_nodes();
        let one = BTreeSet::from([1]);
        assert_eq!(
            group_step(&state, &one, &BTreeSet::new()),
            Some(GroupStep::AddLearner {
                raft_id: 2,
                addr: "127.0.0.1:22".into()
            })
        );
        // Node 2 is joining: not eligible to vote yet.
        assert_eq!(group_step(&state, &one, &BTreeSet::from([2])), None);
        complete(&mut state, "2");
        // Two members: one voter still (two would stop on either failing).
        assert_eq!(group_step(&state, &one, &BTreeSet::from([2])), None);
        assert_eq!(
            group_step(&state, &one, &BTreeSet::from([2, 7])),
            Some(GroupStep::RemoveNodes(BTreeSet::from([7])))
        );
    }
}
