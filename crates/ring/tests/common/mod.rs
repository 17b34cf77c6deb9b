//! Shared helpers for the ring's integration tests: naive reference
//! implementations and ring builders. Each test binary uses a subset.
#![allow(dead_code)]

use ringkv_ring::{NodeId, Ring, RingConfig, Token, TokenRange};

/// A ring holding `nodes` (id, weight), added in the given order.
pub fn ring_of(config: RingConfig, nodes: &[(String, u32)]) -> Ring {
    nodes
        .iter()
        .fold(Ring::new(config).expect("valid config"), |ring, (id, w)| {
            ring.with_node(id.as_str(), *w).expect("valid node")
        })
}

/// A ring of weight-1 nodes with the given ids.
pub fn ring_ids(config: RingConfig, ids: &[&str]) -> Ring {
    let nodes: Vec<(String, u32)> = ids.iter().map(|id| (id.to_string(), 1)).collect();
    ring_of(config, &nodes)
}

/// The vnodes of `ring` as owned `(token, id)` pairs, in ring order.
pub fn vnode_list(ring: &Ring) -> Vec<(Token, NodeId)> {
    ring.vnodes().map(|(t, id)| (t, id.clone())).collect()
}

/// Naive owner: the first vnode at or after `token`, wrapping to the first.
pub fn naive_owner(vnodes: &[(Token, NodeId)], token: Token) -> Option<NodeId> {
    let first = vnodes.first()?;
    // Vnodes are sorted by token, so "first at or after" is a partition point.
    let i = vnodes.partition_point(|(t, _)| *t < token);
    Some(vnodes.get(i).unwrap_or(first).1.clone())
}

/// Naive preference list: walk every vnode clockwise from `token` and keep
/// the first `n` distinct ids.
pub fn naive_preference(vnodes: &[(Token, NodeId)], token: Token, n: usize) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = Vec::new();
    if vnodes.is_empty() {
        return out;
    }
    let start = vnodes.partition_point(|(t, _)| *t < token) % vnodes.len();
    for k in 0..vnodes.len() {
        if out.len() == n {
            break;
        }
        let id = &vnodes[(start + k) % vnodes.len()].1;
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// Naive preference list of a ring whose members may own no vnode (a
/// balanced ring): the clockwise walk of [`naive_preference`], then the
/// members it never meets, in id order, until there are `n`.
pub fn naive_preference_of_members(
    vnodes: &[(Token, NodeId)],
    members: &[NodeId],
    token: Token,
    n: usize,
) -> Vec<NodeId> {
    let mut out = naive_preference(vnodes, token, n);
    let mut sorted = members.to_vec();
    sorted.sort();
    for id in sorted {
        if out.len() >= n {
            break;
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Probe tokens around every given boundary: `t - 1`, `t`, `t + 1`
/// (wrapping), plus both ends of the circle.
pub fn boundary_probes(boundaries: impl IntoIterator<Item = Token>) -> Vec<Token> {
    let mut out = vec![0, 1, u64::MAX - 1, u64::MAX];
    for t in boundaries {
        out.extend([t.wrapping_sub(1), t, t.wrapping_add(1)]);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Number of tokens in a range, as an exact integer (the full circle is
/// `2^64`).
pub fn range_len(r: &TokenRange) -> u128 {
    match r.end.wrapping_sub(r.start) {
        0 => 1u128 << 64,
        len => u128::from(len),
    }
}

/// Structural checks shared by `diff` and `diff_replicas`: ranges sorted by
/// `end`, only the first may wrap, no two overlap, and neighbours that touch
/// carry different changes (otherwise they should have been merged).
pub fn check_move_structure<T: PartialEq + std::fmt::Debug>(moves: &[(TokenRange, T)]) {
    for (i, w) in moves.windows(2).enumerate() {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            a.0.end < b.0.end,
            "moves {i} and {} not sorted by end: {:?} {:?}",
            i + 1,
            a.0,
            b.0
        );
        assert!(
            !b.0.wraps(),
            "move {} wraps but is not the first: {:?}",
            i + 1,
            b.0
        );
        // Holds for the wrapping first move too: it ends before b starts.
        assert!(a.0.end <= b.0.start, "overlap {:?} {:?}", a.0, b.0);
        if a.0.end == b.0.start {
            assert_ne!(a.1, b.1, "adjacent moves with the same change not merged");
        }
    }
    if moves.len() >= 2 {
        let (first, last) = (&moves[0], &moves[moves.len() - 1]);
        if first.0.wraps() {
            assert!(
                last.0.end <= first.0.start,
                "last move {:?} overlaps the wrapping first {:?}",
                last.0,
                first.0
            );
        }
        if last.0.end == first.0.start {
            assert_ne!(first.1, last.1, "moves meeting across the wrap not merged");
        }
    }
}

/// A deterministic 64-bit mixer (splitmix64) for spreading probe tokens.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Asserts that `vnodes()` is sorted by `(token, id)` with no duplicate
/// pair: the naive references above rely on it.
pub fn check_sorted(vnodes: &[(Token, NodeId)]) {
    for w in vnodes.windows(2) {
        assert!(
            (w[0].0, &w[0].1) < (w[1].0, &w[1].1),
            "vnodes out of order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}
