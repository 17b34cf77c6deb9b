//! Shared helpers: nodes, random command intents resolved against a state,
//! and the invariants every reachable state keeps.

#![allow(dead_code)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use ringkv_meta::{Command, Lifecycle, MetaState, NodeSpec, Phase, PlacementSpec, choose_voters};

pub const IDS: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

/// Small rings keep the cases fast; the logic does not depend on `Q`.
pub const PLACEMENT: PlacementSpec = PlacementSpec::BalancedPartitions { partitions: 256 };

pub fn node(id: &str, weight: u32) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        client_addr: format!("127.0.0.1:6{}", id.len()),
        peer_addr: format!("127.0.0.1:7{}", id.len()),
        weight,
        token: 0,
        key_format: ringkv_ring::KEY_FORMAT,
    }
}

/// A command in the making: ids and ranges are chosen against the state at
/// the time it is applied, so that sequences go deep into changes instead
/// of being rejected at the first step. Some intents aim at wrong targets
/// on purpose (stale change numbers, ranges in the wrong phase).
#[derive(Debug, Clone)]
pub enum Intent {
    Bootstrap(usize, u32),
    Join(usize, u32),
    Leave(usize, bool),
    Cancel(usize),
    Begin(usize),
    BeginNext,
    Fence(u64),
    Unfence(u64),
    Switch(u64),
    Drop(u64),
    Finish(bool),
    Abort(bool),
    MarkDown(usize),
    MarkUp(usize, bool),
    /// One change step done right: fence what is copying, or switch what is
    /// fenced, or finish.
    Advance,
}

pub fn intent() -> impl Strategy<Value = Intent> {
    let id = 0..IDS.len();
    prop_oneof![
        1 => (id.clone(), 0..3u32).prop_map(|(i, w)| Intent::Bootstrap(i, w)),
        4 => (id.clone(), 0..4u32).prop_map(|(i, w)| Intent::Join(i, w)),
        3 => (id.clone(), any::<bool>()).prop_map(|(i, f)| Intent::Leave(i, f)),
        1 => id.clone().prop_map(Intent::Cancel),
        1 => id.clone().prop_map(Intent::Begin),
        3 => Just(Intent::BeginNext),
        2 => any::<u64>().prop_map(Intent::Fence),
        1 => any::<u64>().prop_map(Intent::Unfence),
        2 => any::<u64>().prop_map(Intent::Switch),
        1 => any::<u64>().prop_map(Intent::Drop),
        1 => any::<bool>().prop_map(Intent::Finish),
        1 => any::<bool>().prop_map(Intent::Abort),
        1 => id.clone().prop_map(Intent::MarkDown),
        1 => (id, any::<bool>()).prop_map(|(i, moved)| Intent::MarkUp(i, moved)),
        6 => Just(Intent::Advance),
    ]
}

/// The change number to use: the one in flight, or a stale one.
fn number(state: &MetaState, right: bool) -> u64 {
    match (&state.change, right) {
        (Some(c), true) => c.id,
        (Some(c), false) => c.id.wrapping_sub(1),
        (None, _) => state.next_change,
    }
}

/// Up to 4 range indices picked by `seed`: mostly among the ranges in
/// `phase`, sometimes any index (possibly out of range or repeated).
fn pick(state: &MetaState, seed: u64, phase: Phase) -> Vec<usize> {
    let Some(c) = &state.change else {
        return vec![(seed % 4) as usize];
    };
    let n = c.ranges.len().max(1);
    if seed.is_multiple_of(7) {
        return vec![
            (seed as usize >> 3) % (n + 2),
            (seed as usize >> 9) % (n + 2),
        ];
    }
    let candidates: Vec<usize> = (0..c.ranges.len())
        .filter(|&i| c.ranges[i].phase == phase)
        .collect();
    if candidates.is_empty() {
        return vec![(seed as usize >> 3) % n];
    }
    let k = 1 + (seed as usize >> 5) % 4;
    let mut out = BTreeSet::new();
    for j in 0..k {
        out.insert(candidates[(seed as usize >> (8 + j * 6)) % candidates.len()]);
    }
    out.into_iter().collect()
}

pub fn resolve(state: &MetaState, intent: &Intent) -> Command {
    match *intent {
        Intent::Bootstrap(i, w) => Command::Bootstrap {
            placement: PLACEMENT,
            node: node(IDS[i], w),
        },
        Intent::Join(i, w) => Command::Join {
            node: node(IDS[i], w),
        },
        Intent::Leave(i, force) => Command::Leave {
            id: IDS[i].into(),
            force,
        },
        Intent::Cancel(i) => Command::Cancel { id: IDS[i].into() },
        Intent::Begin(i) => Command::BeginChange {
            node: IDS[i].into(),
        },
        Intent::BeginNext => Command::BeginChange {
            node: state.next_pending().unwrap_or("a").into(),
        },
        Intent::Fence(seed) => Command::FenceRanges {
            change: number(state, !seed.is_multiple_of(11)),
            ranges: pick(state, seed, Phase::Copying),
        },
        Intent::Unfence(seed) => Command::UnfenceRanges {
            change: number(state, !seed.is_multiple_of(11)),
            ranges: pick(state, seed, Phase::Fenced),
        },
        Intent::Switch(seed) => Command::SwitchRanges {
            change: number(state, !seed.is_multiple_of(11)),
            // A dropped range switches once its target has cleared it.
            ranges: pick(
                state,
                seed,
                if seed.is_multiple_of(3) {
                    Phase::Dropped
                } else {
                    Phase::Fenced
                },
            ),
        },
        Intent::Drop(seed) => Command::DropRanges {
            change: number(state, !seed.is_multiple_of(11)),
            ranges: pick(state, seed, Phase::Copying),
        },
        Intent::Finish(right) => Command::FinishChange {
            change: number(state, right),
        },
        Intent::Abort(right) => Command::AbortChange {
            change: number(state, right),
        },
        Intent::MarkDown(i) => Command::MarkDown { id: IDS[i].into() },
        Intent::MarkUp(i, moved) => {
            let n = node(IDS[i], 1);
            Command::MarkUp {
                id: IDS[i].into(),
                client_addr: if moved {
                    format!("{}0", n.client_addr)
                } else {
                    n.client_addr
                },
                peer_addr: n.peer_addr,
            }
        }
        Intent::Advance => match &state.change {
            None => Command::BeginChange {
                node: state.next_pending().unwrap_or("a").into(),
            },
            Some(c) => {
                let copying: Vec<usize> = (0..c.ranges.len())
                    .filter(|&i| c.ranges[i].phase == Phase::Copying)
                    .collect();
                let fenced: Vec<usize> = (0..c.ranges.len())
                    .filter(|&i| matches!(c.ranges[i].phase, Phase::Fenced | Phase::Dropped))
                    .collect();
                if !fenced.is_empty() {
                    Command::SwitchRanges {
                        change: c.id,
                        ranges: fenced,
                    }
                } else if !copying.is_empty() {
                    Command::FenceRanges {
                        change: c.id,
                        ranges: copying.into_iter().take(64).collect(),
                    }
                } else {
                    Command::FinishChange { change: c.id }
                }
            }
        },
    }
}

/// Everything a reachable state must satisfy.
pub fn check_invariants(state: &MetaState) -> Result<(), String> {
    let Some(ring) = &state.ring else {
        if state.epoch != 0 || !state.members.is_empty() || state.change.is_some() {
            return Err("an uninitialised state holds data".into());
        }
        return Ok(());
    };
    if ring.epoch() > state.epoch {
        return Err(format!(
            "ring epoch {} above state epoch {}",
            ring.epoch(),
            state.epoch
        ));
    }
    for (id, m) in &state.members {
        let in_ring = ring.contains(id);
        let adding = state.change.as_ref().is_some_and(|c| &c.node == id);
        match m.lifecycle {
            Lifecycle::Joining if in_ring => return Err(format!("joining {id} is in the ring")),
            Lifecycle::Up | Lifecycle::Leaving { .. } if !in_ring => {
                return Err(format!("{id} ({:?}) is not in the ring", m.lifecycle));
            }
            _ => {}
        }
        if m.raft_id == 0 || m.raft_id >= state.next_raft_id {
            return Err(format!(
                "{id} has raft id {} (next {})",
                m.raft_id, state.next_raft_id
            ));
        }
        let _ = adding;
    }
    let ids: BTreeSet<u64> = state.members.values().map(|m| m.raft_id).collect();
    if ids.len() != state.members.len() {
        return Err("two members share a raft id".into());
    }
    for (id, _) in ring.nodes() {
        if !state.members.contains_key(id.as_str()) {
            return Err(format!("ring member {id} is not a member"));
        }
    }
    if let Some(c) = &state.change {
        let m = state
            .members
            .get(&c.node)
            .ok_or_else(|| format!("the change's node {} is not a member", c.node))?;
        let expected = match m.lifecycle {
            Lifecycle::Joining => ringkv_meta::ChangeKind::Add,
            Lifecycle::Leaving { .. } => ringkv_meta::ChangeKind::Remove,
            Lifecycle::Up => return Err(format!("the change's node {} is up", c.node)),
        };
        if c.kind != expected {
            return Err("the change's kind does not match its node".into());
        }
        if c.ranges.is_empty() {
            return Err("a change with no range stayed in flight".into());
        }
        let plan = ring.diff(&c.to);
        if plan.moves.len() != c.ranges.len() {
            return Err("the plan is not the diff of the rings".into());
        }
        for (m, r) in plan.moves.iter().zip(&c.ranges) {
            if (m.range.start, m.range.end, m.from.as_str(), m.to.as_str())
                != (r.start, r.end, r.from.as_str(), r.to.as_str())
            {
                return Err(format!("range {r:?} differs from the diff's {m:?}"));
            }
        }
        // Every token is served by exactly the node the phases say.
        for r in &c.ranges {
            let s = state.serving(r.end).ok_or("a moving range has no server")?;
            if s.node != r.authority() || s.fenced != (r.phase == Phase::Fenced) {
                return Err(format!(
                    "token {} served by {} in phase {:?}",
                    r.end, s.node, r.phase
                ));
            }
        }
    }
    // Serving names a ring member for any token.
    for t in [0u64, 1, u64::MAX / 3, u64::MAX / 2, u64::MAX] {
        if let Some(s) = state.serving(t)
            && !state.members.contains_key(s.node)
        {
            return Err(format!("token {t} served by non-member {}", s.node));
        }
    }
    let voters = choose_voters(state, &BTreeSet::new());
    if ![1, 3, 5].contains(&voters.len()) && !voters.is_empty() {
        return Err(format!("{} voters", voters.len()));
    }
    Ok(())
}

/// Begins the change of pending member `node` and takes every range
/// through fence and switch to the end.
pub fn complete_change(state: &mut MetaState, node: &str) {
    let change = state
        .apply(&Command::BeginChange { node: node.into() })
        .unwrap()
        .change
        .unwrap();
    let all: Vec<usize> = (0..state.change.as_ref().map_or(0, |c| c.ranges.len())).collect();
    if all.is_empty() {
        return;
    }
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
