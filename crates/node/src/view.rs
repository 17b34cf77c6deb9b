//! Pure decisions over a node's view of the metadata: where a request
//! runs, which local copies a node keeps, what the coordinator does next.
//! No locks and no I/O here (those are in `router`, `moves` and `coord`).

use std::ops::RangeInclusive;

use ringkv_meta::{Change, MetaState, Phase};
use ringkv_ring::{Token, TokenRange};

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

    /// Marks member `node` down and removes it with `FORCE`: its ranges
    /// will be dropped, not moved.
    pub(crate) fn force_out(state: &mut MetaState, node: &str) {
        state.apply(&Command::MarkDown { id: node.into() }).unwrap();
        state
            .apply(&Command::Leave {
                id: node.into(),
                force: true,
            })
            .unwrap();
    }

    /// The next step is to begin `node`'s change; takes it.
    pub(crate) fn begin(state: &mut MetaState, node: &str) {
        let command = Command::BeginChange { node: node.into() };
        assert_eq!(
            crate::steps::change_step(state),
            Some(crate::steps::ChangeStep::Propose(command.clone()))
        );
        state.apply(&command).unwrap();
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
    use super::fixtures::{begin, complete, spec, two_nodes};
    use super::*;
    use crate::steps::{ChangeStep, change_step};
    use crate::wire::PullKind;
    use ringkv_meta::Command;
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
}
