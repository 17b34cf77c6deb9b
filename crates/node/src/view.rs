//! Pure decisions over a node's view of the metadata: where a request
//! runs, which local copies a node keeps, what the coordinator does next.
//! No locks and no I/O here (those are in `router`, `moves` and `coord`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use ringkv_meta::{Change, Command, MetaState, Phase};
use ringkv_ring::{Token, TokenRange};

use crate::wire::PullKind;

/// Where a request whose keys have these tokens runs, as node `me` sees
/// it at `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Here. `tracked`: a write to a key whose range is being copied away
    /// from this node, to be recorded for the range's last shipment.
    Local {
        /// Some key is in a range this node is copying away.
        tracked: bool,
    },
    /// At `node`.
    Forward(String),
    /// The keys' range is fenced at its source (this node or another):
    /// wait for the fence to lift or for the switch.
    Fenced,
    /// The node that serves the keys is marked down.
    Down(String),
    /// The keys are served by different nodes.
    CrossNode,
    /// The cluster has no ring yet.
    NoCluster,
}

/// Decides where a request over `tokens` runs. `write`: the request may
/// write (only writes are tracked for a range's last shipment).
pub fn decide(state: &MetaState, me: &str, tokens: &[Token], write: bool) -> Decision {
    let mut owner: Option<&str> = None;
    let mut fenced = false;
    let mut down = false;
    let mut dropped = false;
    for &token in tokens {
        let Some(serving) = state.serving(token) else {
            return Decision::NoCluster;
        };
        match owner {
            None => owner = Some(serving.node),
            Some(o) if o != serving.node => return Decision::CrossNode,
            Some(_) => {}
        }
        fenced |= serving.fenced;
        down |= serving.down;
        dropped |= serving.dropped;
    }
    let Some(owner) = owner else {
        return Decision::Local { tracked: false };
    };
    if fenced {
        return Decision::Fenced;
    }
    // Given up by its source (this node, perhaps, marked up again since)
    // and not yet cleared by its target: served by nobody.
    if dropped {
        return Decision::Down(owner.to_string());
    }
    if owner != me {
        if down {
            return Decision::Down(owner.to_string());
        }
        return Decision::Forward(owner.to_string());
    }
    let tracked = write
        && state.change.as_ref().is_some_and(|change| {
            tokens
                .iter()
                .any(|&t| change.find(t).is_some_and(|i| copying_from(change, i, me)))
        });
    Decision::Local { tracked }
}

/// Whether range `i` of `change` is being copied away from `me` (writes to
/// it are recorded for its last shipment).
pub fn copying_from(change: &Change, i: usize, me: &str) -> bool {
    let r = &change.ranges[i];
    r.from == me && r.phase == Phase::Copying
}

/// Whether node `me` keeps its local copy of `token`: it serves it, or it
/// is the target of a move of it that has not switched yet (a copy being
/// filled). Everything else is a stale copy, deleted by cleanup.
pub fn keeps(state: &MetaState, me: &str, token: Token) -> bool {
    if state.serving(token).is_some_and(|s| s.node == me) {
        return true;
    }
    state.change.as_ref().is_some_and(|change| {
        change.find(token).is_some_and(|i| {
            let r = &change.ranges[i];
            r.to == me && !r.phase.is_done()
        })
    })
}

/// Whether node `me` is to clear its copy of `token` before it serves it:
/// the token is in a range dropped towards `me` (a forced removal gave up
/// its keys; a copy of it here is partial or older, and would bring back
/// keys deleted or rewritten at the source).
pub fn clears(state: &MetaState, me: &str, token: Token) -> bool {
    state.change.as_ref().is_some_and(|change| {
        change.find(token).is_some_and(|i| {
            let r = &change.ranges[i];
            r.to == me && r.phase == Phase::Dropped
        })
    })
}

/// The token ranges where node `me` may hold copies it no longer keeps
/// once the change `seen` (a view of it, in any phase) is over: those
/// moving from `me` (gone after their switch) and those moving to `me` not
/// switched in `seen` (a copy that an abort leaves behind). A range
/// switched to `me` stays served by it (a switch is never undone), and a
/// node copies only the ranges moving to it: nothing else can hold a stale
/// copy because of this change.
pub fn cleanup_ranges(seen: &Change, me: &str) -> Vec<TokenRange> {
    seen.ranges
        .iter()
        .filter(|r| r.from == me || (r.to == me && !r.phase.is_done()))
        .map(|r| r.range())
        .collect()
}

/// The last token of the run that starts at `token` and that one node
/// serves throughout, in the same way (fenced or not), at `state`:
/// [`MetaState::serving`] is the same for every token of `token..=end`.
/// Runs end at the vnode boundaries of the ring (the change's target ring
/// during a change) and at the ends of the change's moving ranges, the
/// only places where serving can change. `None` while the ring is empty.
pub fn run_end(state: &MetaState, token: Token) -> Option<Token> {
    // The last token of a range `(start, end]` holding `token`, on the
    // line `0..=u64::MAX` (a range that wraps ends at `u64::MAX` there).
    let linear_end = |range: TokenRange| {
        if range.wraps() && token > range.end {
            Token::MAX
        } else {
            range.end
        }
    };
    let ring = state.target_ring()?;
    let mut end = linear_end(ring.range_of_token(token)?);
    // A moving range begins at a vnode token of the target ring (the one
    // before a joining node's tokens, or before a leaving node's), so only
    // its end can cut a vnode's range (`runs_follow_the_ring_...` checks
    // this at every bound).
    if let Some(change) = &state.change
        && let Some(i) = change.find(token)
    {
        end = end.min(linear_end(change.ranges[i].range()));
    }
    Some(end)
}

/// A run of tokens one node serves, for reading the whole key space
/// (`SCAN`, `KEYS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The node that serves it.
    pub node: String,
    /// Its tokens.
    pub tokens: RangeInclusive<Token>,
    /// That node is marked down.
    pub down: bool,
}

/// The runs from `from` on, in token order, neighbours served by the same
/// node merged, until the run that holds `upto`, looking at no more than
/// `max` runs of [`run_end`] (the last run ends where it stopped looking).
/// Empty while the ring is empty.
pub fn runs(state: &MetaState, from: Token, upto: Token, max: usize) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut token = from;
    for _ in 0..max.max(1) {
        let (Some(serving), Some(end)) = (state.serving(token), run_end(state, token)) else {
            return Vec::new();
        };
        match out.last_mut() {
            Some(last) if last.node == serving.node => last.tokens = *last.tokens.start()..=end,
            _ => out.push(Run {
                node: serving.node.to_string(),
                tokens: token..=end,
                down: serving.down,
            }),
        }
        match end.checked_add(1) {
            Some(next) if end < upto => token = next,
            _ => break,
        }
    }
    out
}

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

/// States for the unit tests of this crate's pure decisions.
#[cfg(test)]
pub(crate) mod fixtures {
    use ringkv_meta::{Command, MetaState, NodeSpec, PlacementSpec};

    /// Node `id`, on made-up addresses.
    pub(crate) fn spec(id: &str) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            client_addr: format!("127.0.0.1:1{id}"),
            peer_addr: format!("127.0.0.1:2{id}"),
            weight: 1,
            token: 0,
            key_format: ringkv_ring::KEY_FORMAT,
        }
    }

    /// Node 1 on 64 partitions, and node 2 pending its join.
    pub(crate) fn two_nodes() -> MetaState {
        let mut state = MetaState::new();
        let placement = PlacementSpec::BalancedPartitions { partitions: 64 };
        state
            .apply(&Command::Bootstrap {
                placement,
                node: spec("1"),
            })
            .unwrap();
        state.apply(&Command::Join { node: spec("2") }).unwrap();
        state
    }

    /// Begins the change of pending member `node` and takes every range
    /// through fence and switch to the end.
    pub(crate) fn complete(state: &mut MetaState, node: &str) {
        state
            .apply(&Command::BeginChange { node: node.into() })
            .unwrap();
        let change = state.change.as_ref().unwrap().id;
        let all: Vec<usize> = (0..state.change.as_ref().unwrap().ranges.len()).collect();
        let ranges = all.clone();
        state
            .apply(&Command::FenceRanges { change, ranges })
            .unwrap();
        state
            .apply(&Command::SwitchRanges {
                change,
                ranges: all,
            })
            .unwrap();
        state.apply(&Command::FinishChange { change }).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{complete, spec, two_nodes};
    use super::*;
    use ringkv_meta::PlacementSpec;
    use ringkv_ring::key_token;

    /// A key whose token moves in the change in flight, and its range.
    fn moving_key(state: &MetaState) -> (Vec<u8>, usize) {
        let change = state.change.as_ref().unwrap();
        (0..)
            .map(|i| format!("key{i}").into_bytes())
            .find_map(|k| change.find(key_token(&k)).map(|i| (k, i)))
            .unwrap()
    }

    /// The next step is to begin `node`'s change; takes it.
    fn begin(state: &mut MetaState, node: &str) {
        let command = Command::BeginChange { node: node.into() };
        assert_eq!(
            change_step(state),
            Some(ChangeStep::Propose(command.clone()))
        );
        state.apply(&command).unwrap();
    }

    #[test]
    fn a_move_goes_copy_fence_ship_switch_finish_and_tracks_writes_while_copying() {
        let mut state = two_nodes();
        begin(&mut state, "2");
        let (key, range) = moving_key(&state);
        let t = [key_token(&key)];
        assert_eq!(
            decide(&state, "1", &t, true),
            Decision::Local { tracked: true }
        );
        assert_eq!(
            decide(&state, "1", &t, false),
            Decision::Local { tracked: false }
        );
        assert_eq!(decide(&state, "2", &t, true), Decision::Forward("1".into()));
        assert!(keeps(&state, "1", t[0]) && keeps(&state, "2", t[0]));
        let Some(ChangeStep::Pull {
            change,
            targets,
            kind: PullKind::Copy,
        }) = change_step(&state)
        else {
            panic!("the copy comes first");
        };
        let all = targets["2"].clone();
        assert!(all.contains(&range));
        state
            .apply(&Command::FenceRanges {
                change,
                ranges: all.clone(),
            })
            .unwrap();
        assert_eq!(decide(&state, "1", &t, false), Decision::Fenced);
        assert_eq!(decide(&state, "2", &t, true), Decision::Fenced);
        assert!(matches!(
            change_step(&state),
            Some(ChangeStep::Pull {
                kind: PullKind::LastChanges,
                ..
            })
        ));
        state
            .apply(&Command::SwitchRanges {
                change,
                ranges: all,
            })
            .unwrap();
        assert_eq!(
            decide(&state, "2", &t, true),
            Decision::Local { tracked: false }
        );
        assert_eq!(decide(&state, "1", &t, true), Decision::Forward("2".into()));
        assert!(!keeps(&state, "1", t[0]));
        assert_eq!(
            change_step(&state),
            Some(ChangeStep::Propose(Command::FinishChange { change }))
        );
        state.apply(&Command::FinishChange { change }).unwrap();
        assert_eq!(change_step(&state), None);
    }

    #[test]
    fn keys_on_two_nodes_are_refused_and_a_down_owner_is_reported() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        let on = |node: &str| {
            (0..)
                .map(|i| key_token(format!("k{i}").as_bytes()))
                .find(|&t| state.serving(t).unwrap().node == node)
                .unwrap()
        };
        let (a, b) = (on("1"), on("2"));
        assert_eq!(decide(&state, "1", &[a, b], false), Decision::CrossNode);
        state.apply(&Command::MarkDown { id: "2".into() }).unwrap();
        assert_eq!(decide(&state, "1", &[b], false), Decision::Down("2".into()));
        assert_eq!(
            decide(&state, "1", &[a], true),
            Decision::Local { tracked: false }
        );
    }

    /// Every token where [`MetaState::serving`] may change: the vnode
    /// tokens of both rings and the bounds of the moving ranges (a range
    /// `(start, end]` changes after `start` and after `end`), with the
    /// line's ends.
    fn boundaries(state: &MetaState) -> Vec<Token> {
        let mut points = vec![0, Token::MAX];
        let rings = [state.ring.as_ref(), state.change.as_ref().map(|c| &c.to)];
        for ring in rings.into_iter().flatten() {
            points.extend(ring.vnodes().map(|(t, _)| t));
        }
        for r in state.change.iter().flat_map(|c| &c.ranges) {
            points.extend([r.start, r.end]);
        }
        points.sort_unstable();
        points.dedup();
        points
    }

    /// `run_end` holds one node's service from a token to the run's end,
    /// checked at every place it could change inside; `runs` cover the
    /// whole line without gaps, each served by its node.
    fn check_runs(state: &MetaState) {
        let points = boundaries(state);
        for &b in &points {
            for t in [b.saturating_sub(1), b, b.saturating_add(1)] {
                let end = run_end(state, t).unwrap();
                assert!(end >= t, "run from {t} ends before it at {end}");
                let serving = state.serving(t).unwrap();
                let inside = points.iter().filter(|&&p| p >= t && p <= end);
                for &p in inside {
                    assert_eq!(
                        state.serving(p).unwrap(),
                        serving,
                        "at {p}, run {t}..={end}"
                    );
                    if p < end {
                        assert_eq!(state.serving(p + 1).unwrap(), serving, "after {p}");
                    }
                }
                assert_eq!(
                    state.serving(end).unwrap(),
                    serving,
                    "at the run's end {end}"
                );
            }
        }
        let all = runs(state, 0, Token::MAX, 2 * points.len() + 4);
        assert_eq!(*all[0].tokens.start(), 0);
        assert_eq!(*all.last().unwrap().tokens.end(), Token::MAX);
        for pair in all.windows(2) {
            assert_eq!(*pair[0].tokens.end() + 1, *pair[1].tokens.start());
            assert_ne!(
                pair[0].node, pair[1].node,
                "neighbours of one node are merged"
            );
        }
        for run in &all {
            for t in [*run.tokens.start(), *run.tokens.end()] {
                assert_eq!(state.serving(t).unwrap().node, run.node);
            }
        }
        // Up to a token: the runs end with the one that holds it.
        for &b in &points {
            let upto = runs(state, 0, b, usize::MAX);
            let n = upto.len();
            assert!(upto[n - 1].tokens.contains(&b), "runs up to {b}");
            assert_eq!(upto[..n - 1], all[..n - 1]);
            assert_eq!(upto[n - 1].tokens.start(), all[n - 1].tokens.start());
        }
    }

    proptest::proptest! {
        #[test]
        fn runs_follow_the_ring_and_every_phase_of_a_change(
            vnodes in proptest::option::of(1u32..6),
            partitions in 2u32..7,
            members in 1usize..4,
            leave in proptest::option::of(1usize..4),
            fenced in proptest::collection::vec(proptest::bool::ANY, 64),
            switched in proptest::collection::vec(proptest::bool::ANY, 64),
        ) {
            let placement = match vnodes {
                Some(v) => PlacementSpec::RandomVnodes { vnodes_per_weight: v },
                None => PlacementSpec::BalancedPartitions { partitions: 1 << partitions },
            };
            let mut state = MetaState::new();
            state.apply(&Command::Bootstrap { placement, node: spec("1") }).unwrap();
            check_runs(&state);
            for n in 2..=members {
                let id = n.to_string();
                state.apply(&Command::Join { node: spec(&id) }).unwrap();
                complete(&mut state, &id);
            }
            check_runs(&state);
            // The change in flight: a member leaves, or a node joins.
            let id = match leave {
                Some(n) if members > 1 => {
                    let id = (1 + n % members).to_string();
                    state.apply(&Command::Leave { id: id.clone(), force: false }).unwrap();
                    id
                }
                _ => {
                    let id = (members + 1).to_string();
                    state.apply(&Command::Join { node: spec(&id) }).unwrap();
                    id
                }
            };
            state.apply(&Command::BeginChange { node: id }).unwrap();
            let change = state.change.as_ref().unwrap();
            let (change, n) = (change.id, change.ranges.len());
            let fence: Vec<usize> = (0..n).filter(|&i| fenced[i % 64]).collect();
            let switch: Vec<usize> = fence.iter().copied().filter(|&i| switched[i % 64]).collect();
            if !fence.is_empty() {
                state.apply(&Command::FenceRanges { change, ranges: fence }).unwrap();
            }
            if !switch.is_empty() {
                state.apply(&Command::SwitchRanges { change, ranges: switch }).unwrap();
            }
            check_runs(&state);
        }
    }

    #[test]
    fn a_forced_removal_of_a_down_node_drops_its_ranges_and_a_plain_one_moves_them() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        state.apply(&Command::MarkDown { id: "2".into() }).unwrap();
        state
            .apply(&Command::Leave {
                id: "2".into(),
                force: true,
            })
            .unwrap();
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
