//! Property tests of the ring against naive reference implementations.
//!
//! Rings here use few vnodes per weight (1 to 16) so that arcs are large,
//! wraps and shared tokens are frequent, and the naive references stay cheap.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use ringkv_ring::{NodeId, Ring, RingConfig, Token, key_token};

/// Ids include prefixes of one another and every punctuation a node id may
/// hold (ids with control characters, spaces or non-ASCII text are refused
/// by the ring; `tests.rs` checks that).
const POOL: [&str; 12] = [
    "a", "b", "node1", "node10", "node100", "node2", "n-3", "u@h", "x.y:7", "z", "node1_", "c",
];

fn config() -> impl Strategy<Value = RingConfig> {
    prop_oneof![Just(1u32), Just(2), Just(4), Just(16)]
        .prop_map(|vnodes_per_weight| RingConfig { vnodes_per_weight })
}

/// Node ids with their weights.
type Members = Vec<(String, u32)>;

/// A membership: distinct ids from [`POOL`] with weights 1..=3.
fn membership(max: usize) -> impl Strategy<Value = Members> {
    prop::collection::btree_map(0..POOL.len(), 1u32..=3, 0..=max).prop_map(|m| {
        m.into_iter()
            .map(|(i, w)| (POOL[i].to_string(), w))
            .collect()
    })
}

/// Two memberships to diff: either independent draws from [`POOL`], or the
/// second derived from the first (some weights changed, one node perhaps
/// dropped and one perhaps added), where most nodes are shared and replica
/// lists often differ only in order.
fn membership_pair(max: usize) -> impl Strategy<Value = (Members, Members)> {
    let independent = (membership(max), membership(max));
    let derived = (
        prop::collection::btree_map(0..POOL.len(), 1u32..=3, 1..=max),
        prop::collection::vec(prop::option::weighted(0.4, 1u32..=3), POOL.len()),
        prop::option::of(0..POOL.len()),
        prop::option::of((0..POOL.len(), 1u32..=3)),
    )
        .prop_map(|(a, reweight, drop, add)| {
            let mut b = a.clone();
            for (i, w) in b.iter_mut() {
                if let Some(new) = reweight[*i] {
                    *w = new;
                }
            }
            if let Some(i) = drop {
                b.remove(&i);
            }
            if let Some((i, w)) = add {
                b.insert(i, w);
            }
            let named = |m: BTreeMap<usize, u32>| -> Members {
                m.into_iter()
                    .map(|(i, w)| (POOL[i].to_string(), w))
                    .collect()
            };
            (named(a), named(b))
        });
    prop_oneof![1 => independent, 2 => derived]
}

/// Tokens of `count` pseudo-random 16-byte keys derived from `seed`.
fn key_tokens(seed: u64, count: u64) -> Vec<Token> {
    (0..count)
        .map(|i| {
            let a = splitmix(seed ^ i);
            let b = splitmix(a);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&a.to_le_bytes());
            key[8..].copy_from_slice(&b.to_le_bytes());
            key_token(&key)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Add(String, u32),
    Remove(String),
}

/// A final membership plus a shuffled schedule of operations reaching it:
/// every final node is added (and possibly removed and re-added with other
/// weights before its final add), and ghost nodes are added and removed.
fn schedule() -> impl Strategy<Value = (RingConfig, Vec<(String, u32)>, Vec<Op>)> {
    (
        config(),
        prop::collection::btree_map(0..POOL.len(), (1u32..=3, 0usize..=2, 1u32..=3), 1..=6),
        prop::collection::btree_set(0..POOL.len(), 0..=3),
    )
        .prop_flat_map(|(cfg, members, ghosts)| {
            let ghosts: BTreeSet<usize> = ghosts
                .into_iter()
                .filter(|g| !members.contains_key(g))
                .collect();
            let mut slots = Vec::new();
            for (&i, &(_, bounces, _)) in &members {
                slots.extend(std::iter::repeat_n(i, 1 + 2 * bounces));
            }
            for &g in &ghosts {
                slots.extend([g, g]);
            }
            (Just(cfg), Just(members), Just(slots).prop_shuffle())
        })
        .prop_map(|(cfg, members, order)| {
            let total: BTreeMap<usize, usize> = order.iter().fold(BTreeMap::new(), |mut m, &i| {
                *m.entry(i).or_default() += 1;
                m
            });
            let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
            let ops = order
                .iter()
                .map(|&i| {
                    let k = seen.entry(i).or_default();
                    let op = if *k % 2 == 1 {
                        Op::Remove(POOL[i].to_string())
                    } else if *k + 1 == total[&i] {
                        // The final add of a final member.
                        Op::Add(POOL[i].to_string(), members[&i].0)
                    } else {
                        // An intermediate add, possibly with another weight.
                        let w = members.get(&i).map_or(1 + i as u32 % 3, |m| m.2);
                        Op::Add(POOL[i].to_string(), w)
                    };
                    *k += 1;
                    op
                })
                .collect();
            let finals = members
                .iter()
                .map(|(&i, &(w, _, _))| (POOL[i].to_string(), w))
                .collect();
            (cfg, finals, ops)
        })
}

fn apply(cfg: RingConfig, ops: &[Op]) -> Ring {
    ops.iter()
        .fold(Ring::new(cfg).unwrap(), |ring, op| match op {
            Op::Add(id, w) => ring.with_node(id.as_str(), *w).unwrap(),
            Op::Remove(id) => ring.without_node(id).unwrap(),
        })
}

fn owner(ring: &Ring, t: Token) -> Option<NodeId> {
    ring.owner_of_token(t).cloned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any schedule reaching the same membership places every token the same.
    #[test]
    fn order_independence((cfg, finals, ops) in schedule(), seed in any::<u64>()) {
        let ring = apply(cfg, &ops);
        let mut sorted = finals.clone();
        sorted.sort();
        let reference = ring_of(cfg, &sorted);
        sorted.reverse();
        let reversed = ring_of(cfg, &sorted);

        prop_assert_eq!(ring.epoch(), ops.len() as u64);
        prop_assert!(ring.same_placement(&reference), "schedule {:?}", ops);
        prop_assert!(reversed.same_placement(&reference));
        prop_assert_eq!(vnode_list(&ring), vnode_list(&reference));
        check_sorted(&vnode_list(&ring));
        prop_assert!(ring.diff(&reference).moves.is_empty());
        let probes = key_tokens(seed, 200)
            .into_iter()
            .chain(boundary_probes(ring.vnodes().map(|(t, _)| t)));
        for t in probes {
            prop_assert_eq!(owner(&ring, t), owner(&reference, t), "token {}", t);
        }
    }

    /// Adding a node moves exactly the tokens the new node now owns; removing
    /// a node moves exactly the tokens it owned. Undoing either restores the
    /// placement.
    #[test]
    fn add_and_remove_move_only_the_changed_node(
        cfg in config(),
        nodes in membership(6),
        new in 0..POOL.len(),
        weight in 1u32..=3,
        seed in any::<u64>(),
    ) {
        let old = ring_of(cfg, &nodes);
        let id = POOL[new];
        prop_assume!(!old.contains(id));
        let added = old.with_node(id, weight).unwrap();
        prop_assert!(added.without_node(id).unwrap().same_placement(&old));

        let probes: Vec<Token> = key_tokens(seed, 200)
            .into_iter()
            .chain(boundary_probes(added.vnodes().map(|(t, _)| t)))
            .collect();
        for &t in &probes {
            let (before, after) = (owner(&old, t), owner(&added, t));
            let now_new = after.as_ref().is_some_and(|o| o == id);
            if old.is_empty() {
                prop_assert!(now_new);
            } else {
                prop_assert_eq!(before != after, now_new, "token {}", t);
            }
        }

        // Removal of an existing member (the new one is a member of `added`).
        for (victim, w) in added.nodes() {
            let removed = added.without_node(victim.as_str()).unwrap();
            prop_assert!(removed.with_node(victim.clone(), w)
                .unwrap()
                .same_placement(&added));
            for &t in &probes {
                let (before, after) = (owner(&added, t), owner(&removed, t));
                let was_victim = before.as_ref() == Some(victim);
                if removed.is_empty() {
                    prop_assert!(after.is_none());
                } else {
                    prop_assert_eq!(before != after, was_victim, "token {}", t);
                }
            }
        }
    }

    /// Preference lists match a naive clockwise walk over `vnodes()`.
    #[test]
    fn preference_lists_match_naive(
        cfg in config(),
        nodes in membership(7),
        seed in any::<u64>(),
    ) {
        let ring = ring_of(cfg, &nodes);
        let vnodes = vnode_list(&ring);
        check_sorted(&vnodes);
        let probes = key_tokens(seed, 100)
            .into_iter()
            .chain(boundary_probes(vnodes.iter().map(|(t, _)| *t)));
        for t in probes {
            for n in 0..=ring.len() + 2 {
                let got: Vec<NodeId> = ring.preference_list_of_token(t, n).cloned().collect();
                prop_assert_eq!(got.len(), n.min(ring.len()));
                let distinct: BTreeSet<&NodeId> = got.iter().collect();
                prop_assert_eq!(distinct.len(), got.len(), "duplicates in {:?}", got);
                if n > 0 {
                    prop_assert_eq!(got.first().cloned(), owner(&ring, t));
                }
                prop_assert_eq!(&got, &naive_preference(&vnodes, t, n), "token {} n {}", t, n);
            }
        }
        // The key-based entry point agrees with the token-based one.
        for i in 0..20u64 {
            let key = i.to_be_bytes();
            let a: Vec<_> = ring.preference_list(&key, 3).collect();
            let b: Vec<_> = ring.preference_list_of_token(key_token(&key), 3).collect();
            prop_assert_eq!(a, b);
        }
    }

    /// `diff` is exact for arbitrary pairs of rings, and well formed.
    #[test]
    fn diff_is_exact(
        cfg_a in config(),
        cfg_b in config(),
        same_cfg in prop::bool::weighted(0.75),
        (a, b) in membership_pair(6),
        seed in any::<u64>(),
    ) {
        let ring_a = ring_of(cfg_a, &a);
        let ring_b = ring_of(if same_cfg { cfg_a } else { cfg_b }, &b);
        let diff = ring_a.diff(&ring_b);
        prop_assert_eq!(diff.from_epoch, ring_a.epoch());
        prop_assert_eq!(diff.to_epoch, ring_b.epoch());
        if ring_a.is_empty() || ring_b.is_empty() {
            prop_assert!(diff.moves.is_empty());
            return Ok(());
        }
        let (va, vb) = (vnode_list(&ring_a), vnode_list(&ring_b));
        let union: BTreeSet<Token> = va.iter().chain(&vb).map(|(t, _)| *t).collect();
        let shaped: Vec<_> = diff
            .moves
            .iter()
            .map(|m| (m.range, (m.from.clone(), m.to.clone())))
            .collect();
        check_move_structure(&shaped);
        for m in &diff.moves {
            prop_assert!(union.contains(&m.range.start) && union.contains(&m.range.end),
                "move {:?} has a bound that is no vnode token", m.range);
            prop_assert_ne!(&m.from, &m.to);
        }

        let probes = key_tokens(seed, 200).into_iter().chain(boundary_probes(union.iter().copied()));
        for t in probes {
            let (oa, ob) = (naive_owner(&va, t).unwrap(), naive_owner(&vb, t).unwrap());
            let containing = diff.moves.iter().filter(|m| m.range.contains(t)).count();
            let found = diff.find(t);
            prop_assert_eq!(found.is_some(), oa != ob, "token {} owners {} -> {}", t, oa, ob);
            prop_assert_eq!(containing, usize::from(oa != ob), "token {}", t);
            if let Some(i) = found {
                let m = &diff.moves[i];
                prop_assert!(m.range.contains(t));
                prop_assert_eq!((&m.from, &m.to), (&oa, &ob), "token {}", t);
            }
        }

        // Exact measure: the moves cover exactly the elementary arcs whose
        // owner changes.
        let u: Vec<Token> = union.into_iter().collect();
        let mut changed: u128 = 0;
        for k in 0..u.len() {
            let arc = ringkv_ring::TokenRange::new(u[(k + u.len() - 1) % u.len()], u[k]);
            if naive_owner(&va, u[k]) != naive_owner(&vb, u[k]) {
                changed += range_len(&arc);
            }
        }
        let covered: u128 = diff.moves.iter().map(|m| range_len(&m.range)).sum();
        prop_assert_eq!(covered, changed);
    }

    /// `diff_replicas(n)` is exact against naive preference lists.
    #[test]
    fn diff_replicas_is_exact(
        cfg in config(),
        (a, b) in membership_pair(5),
        n in 0usize..=4,
        seed in any::<u64>(),
    ) {
        let ring_a = ring_of(cfg, &a);
        let ring_b = ring_of(cfg, &b);
        let moves = ring_a.diff_replicas(&ring_b, n);
        if ring_a.is_empty() || ring_b.is_empty() {
            prop_assert!(moves.is_empty());
            return Ok(());
        }
        let (va, vb) = (vnode_list(&ring_a), vnode_list(&ring_b));
        let union: BTreeSet<Token> = va.iter().chain(&vb).map(|(t, _)| *t).collect();
        let shaped: Vec<_> = moves
            .iter()
            .map(|m| (m.range, (m.from.clone(), m.to.clone())))
            .collect();
        check_move_structure(&shaped);
        for m in &moves {
            prop_assert!(union.contains(&m.range.start) && union.contains(&m.range.end));
            prop_assert_ne!(&m.from, &m.to);
        }
        let probes = key_tokens(seed, 100).into_iter().chain(boundary_probes(union.iter().copied()));
        for t in probes {
            let (pa, pb) = (naive_preference(&va, t, n), naive_preference(&vb, t, n));
            let containing: Vec<_> = moves.iter().filter(|m| m.range.contains(t)).collect();
            prop_assert_eq!(containing.len(), usize::from(pa != pb), "token {}", t);
            if let Some(m) = containing.first() {
                prop_assert_eq!((&m.from, &m.to), (&pa, &pb), "token {}", t);
            }
        }
        let u: Vec<Token> = union.into_iter().collect();
        let mut changed: u128 = 0;
        for k in 0..u.len() {
            let arc = ringkv_ring::TokenRange::new(u[(k + u.len() - 1) % u.len()], u[k]);
            if naive_preference(&va, u[k], n) != naive_preference(&vb, u[k], n) {
                changed += range_len(&arc);
            }
        }
        let covered: u128 = moves.iter().map(|m| range_len(&m.range)).sum();
        prop_assert_eq!(covered, changed);
    }

    /// With 256 vnodes per weight, each node's share of the circle is within
    /// 30% of `weight / total weight` (a weight-1 node's share has a relative
    /// standard deviation of about 1/sqrt(256) = 6%, so 30% is ~5 sigma,
    /// while ignoring weights would be off by 50% or more).
    #[test]
    fn weights_are_honoured(nodes in membership(6)) {
        prop_assume!(nodes.len() >= 2 && nodes.iter().any(|(_, w)| *w != nodes[0].1));
        let ring = ring_of(RingConfig::default(), &nodes);
        let shares = shares(&ring);
        let total: u32 = nodes.iter().map(|(_, w)| w).sum();
        let exact: u128 = shares.values().sum();
        prop_assert_eq!(exact, 1u128 << 64, "arcs do not tile the circle");
        for (id, w) in &nodes {
            let share = shares[id.as_str()] as f64 / 2f64.powi(64);
            let expected = f64::from(*w) / f64::from(total);
            prop_assert!((share / expected - 1.0).abs() < 0.3,
                "{} (weight {}) owns {:.4}, expected {:.4}", id, w, share, expected);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Larger rings (17 to 40 nodes), where a removed node holds a small
    /// share: every snapshot along a random sequence of removals and
    /// re-additions matches the ring built directly from its membership,
    /// and its lookups match a naive successor search at every boundary.
    #[test]
    fn changes_on_larger_rings_match_a_rebuild(
        vnodes_per_weight in prop_oneof![Just(1u32), Just(4), Just(16)],
        weights in prop::collection::vec(1u32..=3, 17..=40),
        steps in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 1..=6),
    ) {
        let cfg = RingConfig { vnodes_per_weight };
        let nodes: Vec<(String, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (format!("m{i}"), w))
            .collect();
        let mut members: BTreeMap<String, u32> = nodes.iter().cloned().collect();
        let mut ring = ring_of(cfg, &nodes);
        let mut away: Vec<(String, u32)> = Vec::new();
        for (pick, readd) in steps {
            if readd && !away.is_empty() {
                let (id, w) = away.remove(pick.index(away.len()));
                ring = ring.with_node(id.as_str(), w).unwrap();
                members.insert(id, w);
            } else {
                let id = members.keys().nth(pick.index(members.len())).unwrap().clone();
                let w = members.remove(&id).unwrap();
                ring = ring.without_node(&id).unwrap();
                away.push((id, w));
            }
            let rebuilt = ring_of(cfg, &members.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>());
            prop_assert!(ring.same_placement(&rebuilt));
            let v = vnode_list(&ring);
            for t in boundary_probes(v.iter().map(|(t, _)| *t)) {
                prop_assert_eq!(owner(&ring, t), naive_owner(&v, t), "token {}", t);
            }
        }
    }
}

/// Each node's owned measure of the circle, from the arcs of `vnodes()`.
fn shares(ring: &Ring) -> BTreeMap<String, u128> {
    let v = vnode_list(ring);
    let mut out: BTreeMap<String, u128> = BTreeMap::new();
    for (k, (t, id)) in v.iter().enumerate() {
        let prev = v[(k + v.len() - 1) % v.len()].0;
        let arc = ringkv_ring::TokenRange::new(prev, *t);
        // Equal tokens: only the first of a run owns the arc.
        if k > 0 && v[k - 1].0 == *t {
            continue;
        }
        *out.entry(id.to_string()).or_default() += if v.len() == 1 {
            1 << 64
        } else {
            range_len(&arc)
        };
    }
    out
}

#[test]
fn weight_two_owns_about_twice_weight_one() {
    let ring = Ring::default()
        .with_node("light", 1)
        .unwrap()
        .with_node("heavy", 2)
        .unwrap();
    let s = shares(&ring);
    let ratio = s["heavy"] as f64 / s["light"] as f64;
    assert!(
        (1.6..=2.5).contains(&ratio),
        "heavy/light share ratio {ratio}"
    );
    // Fraction sums agree with the exact measure.
    let f: f64 = ring
        .vnodes()
        .filter(|(_, id)| id.as_str() == "heavy")
        .map(|(t, _)| ring.range_of_token(t).unwrap().fraction())
        .sum();
    assert!((f - s["heavy"] as f64 / 2f64.powi(64)).abs() < 1e-9);
}
