//! Balanced partitions: balance, movement, replica balance, determinism,
//! serialisation and diffs over random sequences of weighted joins and
//! leaves, plus one deterministic 1,000-node ring with the default 65,536
//! partitions.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use ringkv_ring::{BalancedConfig, NodeId, Placement, Ring, RingError, Token};

/// One membership change. Ids are never reused within a sequence, except
/// that a removed id may come back (`Rejoin`).
#[derive(Debug, Clone)]
enum Op {
    /// A fresh node with this weight.
    Add(u32),
    /// Remove the member at this index (in id order), if the ring keeps at
    /// least one node.
    Remove(prop::sample::Index),
    /// Re-add the most recently removed node, with a new weight.
    Rejoin(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..=4).prop_map(Op::Add),
        3 => any::<prop::sample::Index>().prop_map(Op::Remove),
        1 => (1u32..=4).prop_map(Op::Rejoin),
    ]
}

/// The initial weights, then the changes.
fn sequence(
    initial: std::ops::RangeInclusive<usize>,
    ops: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = (Vec<u32>, Vec<Op>)> {
    (
        prop::collection::vec(1u32..=4, initial),
        prop::collection::vec(op(), ops),
    )
}

/// Plays the sequence on an empty balanced ring of `partitions`, calling
/// `check(before, after, change)` after every step (the initial joins too).
fn play(
    partitions: u32,
    weights: &[u32],
    ops: &[Op],
    max_nodes: usize,
    mut check: impl FnMut(&Ring, &Ring, &Change),
) -> Ring {
    let mut ring = Ring::balanced(BalancedConfig { partitions }).unwrap();
    let mut next_id = 0usize;
    let mut removed: Vec<NodeId> = Vec::new();
    let mut step = |ring: &Ring, change: Change| -> Ring {
        let next = match &change {
            Change::Added(id, w) => ring.with_node(id.clone(), *w).unwrap(),
            Change::Removed(id) => ring.without_node(id.as_str()).unwrap(),
        };
        check(ring, &next, &change);
        next
    };
    for &w in weights {
        let id = NodeId::from(format!("n{next_id:03}"));
        next_id += 1;
        ring = step(&ring, Change::Added(id, w));
    }
    for op in ops {
        let change = match op {
            Op::Add(w) if ring.len() < max_nodes => {
                next_id += 1;
                Change::Added(format!("n{:03}", next_id - 1).into(), *w)
            }
            Op::Rejoin(w) if ring.len() < max_nodes && !removed.is_empty() => {
                Change::Added(removed.pop().unwrap(), *w)
            }
            Op::Remove(i) if ring.len() > 1 => {
                let id = ring.nodes().nth(i.index(ring.len())).unwrap().0.clone();
                removed.push(id.clone());
                Change::Removed(id)
            }
            _ => continue,
        };
        ring = step(&ring, change);
    }
    ring
}

#[derive(Debug, Clone)]
enum Change {
    Added(NodeId, u32),
    Removed(NodeId),
}

fn partitions(ring: &Ring) -> u32 {
    match ring.placement() {
        Placement::BalancedPartitions { partitions } => partitions,
        other => panic!("not a balanced ring: {other:?}"),
    }
}

/// Partitions held by each node, in one pass.
fn held(ring: &Ring) -> BTreeMap<&NodeId, usize> {
    let mut out: BTreeMap<&NodeId, usize> = ring.nodes().map(|(id, _)| (id, 0)).collect();
    for (_, id) in ring.vnodes() {
        *out.get_mut(id).unwrap() += 1;
    }
    out
}

/// Owner of every partition, in ring order.
fn owners(ring: &Ring) -> Vec<NodeId> {
    ring.vnodes().map(|(_, id)| id.clone()).collect()
}

/// Every node holds within one partition of `Q * w / W` (floor or ceil
/// when that is not an integer), and the busiest weighted share is within
/// `1 + 1/x_min` of the mean, which callers bound by 1.05.
fn check_balance(ring: &Ring) -> f64 {
    let q = u128::from(partitions(ring));
    let total: u128 = ring.nodes().map(|(_, w)| u128::from(w)).sum();
    let mut busiest: f64 = 0.0;
    let held = held(ring);
    for (id, w) in ring.nodes() {
        let c = held[id] as u128;
        let ideal = q * u128::from(w); // x * W
        let (lo, hi) = (ideal.div_ceil(total) - 1, ideal / total + 1);
        assert!(
            (lo..=hi).contains(&c),
            "{id} (weight {w} of {total}) holds {c} of {q} partitions, ideal {:.3}",
            ideal as f64 / total as f64
        );
        busiest = busiest.max(c as f64 * total as f64 / ideal as f64);
    }
    let sum: usize = held.values().sum();
    assert_eq!(sum as u128, if ring.is_empty() { 0 } else { q });
    busiest
}

/// Replica load: for each node, the partitions whose preference list of 3
/// contains it, against `3 * Q * w / W`. Returns the largest ratio.
fn replica_busiest(ring: &Ring) -> f64 {
    let q = f64::from(partitions(ring));
    let total: f64 = ring.nodes().map(|(_, w)| f64::from(w)).sum();
    let mut load: BTreeMap<&NodeId, u32> = BTreeMap::new();
    for (t, _) in ring.vnodes() {
        for id in ring.preference_list_of_token(t, 3) {
            *load.entry(id).or_default() += 1;
        }
    }
    ring.nodes()
        .map(|(id, w)| f64::from(load[id]) / (3.0 * q * f64::from(w) / total))
        .fold(0.0, f64::max)
}

/// Movement, diff exactness and the exact share after one change.
fn check_change(before: &Ring, after: &Ring, change: &Change) {
    let q = partitions(after);
    assert_eq!(after.epoch(), before.epoch() + 1);
    check_balance(after);
    let (a, b) = (owners(before), owners(after));
    let diff = before.diff(after);
    match change {
        Change::Added(id, w) => {
            let held = held(after)[id];
            if before.is_empty() {
                assert_eq!(held, q as usize);
                return;
            }
            let total: u128 = after.nodes().map(|(_, w)| u128::from(w)).sum();
            let target = (u128::from(q) * u128::from(*w)).div_ceil(total) as usize;
            assert_eq!(held, target, "the new node takes ceil(Q w / W)");
            for p in 0..q as usize {
                assert_eq!(a[p] != b[p], &b[p] == id, "partition {p}");
            }
            assert!(diff.moves.iter().all(|m| &m.to == id));
        }
        Change::Removed(id) => {
            if after.is_empty() {
                assert!(diff.moves.is_empty());
                return;
            }
            for p in 0..q as usize {
                assert_eq!(a[p] != b[p], &a[p] == id, "partition {p}");
            }
            assert!(diff.moves.iter().all(|m| &m.from == id));
        }
    }
    // The diff covers exactly the partitions that changed owner.
    let changed = (0..q as usize).filter(|&p| a[p] != b[p]).count() as u128;
    let covered: u128 = diff.moves.iter().map(|m| range_len(&m.range)).sum();
    assert_eq!(covered, changed * ((1u128 << 64) / u128::from(q)));
    // Spot checks of `find` at partition boundaries (every partition of a
    // small ring, a sample of a large one).
    for (p, (t, _)) in after.vnodes().enumerate().step_by(q as usize / 512 + 1) {
        for probe in [t, t.wrapping_sub(1), t.wrapping_add(1)] {
            let moved = before.owner_of_token(probe) != after.owner_of_token(probe);
            assert_eq!(
                diff.find(probe).is_some(),
                moved,
                "partition {p} probe {probe}"
            );
        }
    }
}

/// Lookups agree with a naive successor search over the partition tokens.
fn check_lookup(ring: &Ring, seed: u64) {
    let v = vnode_list(ring);
    check_sorted(&v);
    let probes = boundary_probes(v.iter().step_by(97).map(|(t, _)| *t))
        .into_iter()
        .chain((0..200).map(|i| splitmix(seed ^ i)));
    for t in probes {
        assert_eq!(
            ring.owner_of_token(t).cloned(),
            naive_owner(&v, t),
            "token {t}"
        );
        let got: Vec<NodeId> = ring.preference_list_of_token(t, 3).cloned().collect();
        assert_eq!(got, naive_preference(&v, t, 3), "token {t}");
    }
}

/// Preference lists of every length at every partition boundary: always
/// `min(n, members)` distinct members, owner first, equal to the naive walk
/// followed by the members owning no partition in id order.
fn check_preference_lists(ring: &Ring) {
    let v = vnode_list(ring);
    let members: Vec<NodeId> = ring.nodes().map(|(id, _)| id.clone()).collect();
    for t in boundary_probes(v.iter().map(|(t, _)| *t)) {
        for n in 0..=ring.len() + 1 {
            let got: Vec<NodeId> = ring.preference_list_of_token(t, n).cloned().collect();
            assert_eq!(got.len(), n.min(ring.len()), "token {t} n {n}: {got:?}");
            let distinct: BTreeSet<&NodeId> = got.iter().collect();
            assert_eq!(distinct.len(), got.len(), "duplicates in {got:?}");
            if n > 0 {
                assert_eq!(got.first(), ring.owner_of_token(t), "token {t}");
            }
            let want = naive_preference_of_members(&v, &members, t, n);
            assert_eq!(got, want, "token {t} n {n}");
        }
    }
}

/// A member can own no partition when its share is below one partition (weight
/// 1 next to 1,000, or 1, 1 and 6 on four partitions: the heavy joiner
/// takes three, the last from `a`). Its keys' replica sets still name `n`
/// distinct members.
#[test]
fn members_owning_no_partition_still_count_as_replicas() {
    let tiny = Ring::balanced(BalancedConfig { partitions: 64 })
        .unwrap()
        .with_node("a", 1)
        .unwrap()
        .with_node("b", 1000)
        .unwrap();
    assert!(tiny.tokens_of("a").unwrap().is_empty(), "a owns nothing");
    let small = Ring::balanced(BalancedConfig { partitions: 4 })
        .unwrap()
        .with_node("a", 1)
        .unwrap()
        .with_node("b", 1)
        .unwrap()
        .with_node("c", 6)
        .unwrap();
    assert!(small.tokens_of("a").unwrap().is_empty(), "a owns nothing");
    for t in [0, 1 << 63, u64::MAX] {
        let got: Vec<&str> = tiny
            .preference_list_of_token(t, 3)
            .map(NodeId::as_str)
            .collect();
        assert_eq!(got, ["b", "a"]);
        let got: Vec<&str> = small
            .preference_list_of_token(t, 3)
            .map(NodeId::as_str)
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2], "a", "{got:?}");
    }
    check_preference_lists(&tiny);
    check_preference_lists(&small);
    // A saved ring lists the same replicas.
    check_preference_lists(&round_trip(&small));
    // A replica diff sees the member that owns nothing join the sets.
    let before = small.without_node("a").unwrap();
    let moves = before.diff_replicas(&small, 3);
    assert!(!moves.is_empty());
    assert!(moves.iter().all(|m| m.to.last().unwrap().as_str() == "a"));
}

fn round_trip(ring: &Ring) -> Ring {
    let back = Ring::from_json(&ring.to_json()).unwrap();
    assert!(back.same_placement(ring));
    assert_eq!(back.epoch(), ring.epoch());
    assert_eq!(back.to_json(), ring.to_json());
    back
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// 3 to 48 nodes of weights 1..=4 on 4,096 partitions (every node's
    /// ideal is at least 4096 / 192 = 21.3 partitions, so within one
    /// partition means within 1.047x): after every join and leave the
    /// balance, movement and diff checks hold, the same sequence gives the
    /// same ring, and a saved ring continues exactly like the original.
    #[test]
    fn sequences_stay_balanced_and_move_only_what_changes(
        (weights, ops) in sequence(3..=40, 0..=20),
        seed in any::<u64>(),
    ) {
        let mut busiest: f64 = 0.0;
        let ring = play(4096, &weights, &ops, 48, |before, after, change| {
            check_change(before, after, change);
            if after.len() >= 3 {
                busiest = busiest.max(check_balance(after));
            }
        });
        prop_assert!(busiest <= 1.05, "busiest weighted share {busiest:.4}x the mean");
        check_lookup(&ring, seed);

        let again = play(4096, &weights, &ops, 48, |_, _, _| {});
        prop_assert!(again.same_placement(&ring));
        prop_assert_eq!(again.to_json(), ring.to_json());

        // A loaded ring (slots renumbered by id) takes the next changes
        // exactly as the original does.
        let back = round_trip(&ring);
        let id = ring.nodes().next().unwrap().0.clone();
        let continued = [
            (ring.with_node("late", 3).unwrap(), back.with_node("late", 3).unwrap()),
            (ring.without_node(id.as_str()).unwrap(), back.without_node(id.as_str()).unwrap()),
        ];
        for (a, b) in continued {
            prop_assert!(a.same_placement(&b));
            prop_assert_eq!(a.epoch(), b.epoch());
        }
    }

    /// Equal weights, 10 to 48 nodes: the 2nd and 3rd replicas are balanced
    /// too (a preference list of 3 reads three consecutive partitions when
    /// their owners differ, which the allocation keeps).
    #[test]
    fn replicas_stay_balanced_with_equal_weights(
        n in 10usize..=48,
        ops in prop::collection::vec(op(), 0..=24),
    ) {
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Add(_) => Op::Add(1),
                Op::Rejoin(_) => Op::Rejoin(1),
                other => other,
            })
            .collect();
        let ring = play(4096, &vec![1; n], &ops, 48, |_, _, _| {});
        prop_assume!(ring.len() >= 10);
        let replica = replica_busiest(&ring);
        prop_assert!(replica <= 1.05, "busiest replica load {replica:.4}x the mean");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Few partitions and skewed weights, so that members owning no
    /// partition are common: after every change, every preference list
    /// holds `min(n, members)` distinct members.
    #[test]
    fn preference_lists_name_every_member_when_few_partitions(
        log2q in 1u32..=4,
        changes in prop::collection::vec((1u32..=200, any::<prop::sample::Index>(), any::<bool>()), 1..=12),
    ) {
        let partitions = 1u32 << log2q;
        let mut ring = Ring::balanced(BalancedConfig { partitions }).unwrap();
        for (k, (weight, pick, remove)) in changes.into_iter().enumerate() {
            ring = if remove && ring.len() > 1 {
                let id = pick.get(&ring.nodes().map(|(id, _)| id.clone()).collect::<Vec<_>>()).clone();
                ring.without_node(id.as_str()).unwrap()
            } else if ring.len() < partitions as usize {
                ring.with_node(format!("n{k}"), weight).unwrap()
            } else {
                continue;
            };
            check_preference_lists(&ring);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2, ..ProptestConfig::default() })]

    /// 65 to 240 nodes of weights 1..=4 on 32,768 partitions (ideal at
    /// least 32768 / 960 = 34 partitions, so within 1.03x).
    #[test]
    fn larger_sequences_stay_balanced(
        (weights, ops) in sequence(65..=200, 0..=12),
    ) {
        let mut busiest: f64 = 0.0;
        let mut steps_ok = true;
        let ring = play(32768, &weights, &ops, 240, |before, after, change| {
            if after.len() > 64 {
                check_change(before, after, change);
                busiest = busiest.max(check_balance(after));
            }
            // Every change takes exactly the next epoch.
            steps_ok &= after.epoch() == before.epoch() + 1;
        });
        prop_assert!(busiest <= 1.05, "busiest weighted share {busiest:.4}x the mean");
        prop_assert!(steps_ok, "an epoch was skipped or repeated");
        prop_assert!(ring.epoch() > 0);
        round_trip(&ring);
    }
}

/// The default 65,536 partitions at 1,000 nodes of weight 1 (each holds 65
/// or 66), then churn with weights: owner and replica balance stay within
/// 1.05x, and each change moves only the partitions that change hands.
#[test]
fn a_thousand_nodes_on_the_default_partitions() {
    let cfg = BalancedConfig::default();
    assert_eq!(cfg.partitions, 65_536);
    let ring = (0..1000).fold(Ring::balanced(cfg).unwrap(), |r, i| {
        r.with_node(format!("node-{i:04}"), 1).unwrap()
    });
    let counts: Vec<usize> = held(&ring).into_values().collect();
    assert_eq!(
        (counts.iter().min(), counts.iter().max()),
        (Some(&65), Some(&66))
    );
    let busiest = check_balance(&ring);
    assert!(busiest <= 1.01, "busiest {busiest}");
    let replica = replica_busiest(&ring);
    assert!(replica <= 1.05, "busiest replica load {replica}");

    let mut r = ring.clone();
    let changes = [
        Change::Removed("node-0500".into()),
        Change::Added("heavy".into(), 4),
        Change::Removed("node-0000".into()),
        Change::Added("node-0500".into(), 2),
    ];
    for change in &changes {
        let next = match change {
            Change::Added(id, w) => r.with_node(id.clone(), *w).unwrap(),
            Change::Removed(id) => r.without_node(id.as_str()).unwrap(),
        };
        check_change(&r, &next, change);
        r = next;
    }
    assert!(check_balance(&r) <= 1.05);
    assert!(replica_busiest(&r) <= 1.05);
    round_trip(&r);
}

/// Lookup takes the O(1) path: `token >> shift` is the partition.
#[test]
fn partitions_are_equal_and_end_at_their_tokens() {
    let ring = Ring::balanced(BalancedConfig { partitions: 8 })
        .unwrap()
        .with_node("a", 1)
        .unwrap()
        .with_node("b", 1)
        .unwrap();
    let tokens: Vec<Token> = ring.vnodes().map(|(t, _)| t).collect();
    let step = 1u64 << 61;
    let want: Vec<Token> = (1..=8u64)
        .map(|i| i.wrapping_mul(step).wrapping_sub(1))
        .collect();
    assert_eq!(tokens, want);
    assert_eq!(ring.vnode_count(), 8);
    for (i, &t) in tokens.iter().enumerate() {
        let start = if i == 0 { 0 } else { tokens[i - 1] + 1 };
        for probe in [start, start + 1, t - 1, t] {
            assert_eq!(ring.range_of_token(probe).unwrap().end, t);
        }
    }
    assert_eq!(ring.tokens_of("a").unwrap().len(), 4);
    assert_eq!(ring.tokens_of("b").unwrap().len(), 4);
    // Everything leaves: the ring is empty again and answers nothing.
    let empty = ring.without_node("a").unwrap().without_node("b").unwrap();
    assert!(empty.is_empty() && empty.owner(b"k").is_none());
    assert_eq!(empty.vnode_count(), 0);
    assert_eq!(empty.epoch(), 4);
}

#[test]
fn invalid_configs_and_full_rings_are_typed_errors() {
    for partitions in [0, 1, 3, 1000, 1 << 25] {
        assert!(matches!(
            Ring::balanced(BalancedConfig { partitions }).unwrap_err(),
            RingError::InvalidPartitions { partitions: p, .. } if p == partitions
        ));
    }
    let ring = Ring::balanced(BalancedConfig { partitions: 2 })
        .unwrap()
        .with_node("a", 1)
        .unwrap()
        .with_node("b", 1)
        .unwrap();
    assert_eq!(
        ring.with_node("c", 1).unwrap_err(),
        RingError::TooManyNodesForPartitions { partitions: 2 }
    );
    assert_eq!(
        ring.with_node("a", 1).unwrap_err(),
        RingError::DuplicateNode { id: "a".into() }
    );
    assert_eq!(
        ring.with_node("c", 0).unwrap_err(),
        RingError::ZeroWeight { id: "c".into() }
    );
    assert_eq!(
        ring.without_node("zz").unwrap_err(),
        RingError::UnknownNode { id: "zz".into() }
    );
    assert_eq!(ring.epoch(), 2);
}
