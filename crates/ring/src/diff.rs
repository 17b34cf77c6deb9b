//! Exact differences between two ring snapshots: the transfer plan.
//!
//! Both rings' tokens cut the circle into elementary arcs `(u[i-1], u[i]]`
//! (`u` = the union of both token sets). Inside one arc no token of either
//! ring lies, so each ring has one owner for the whole arc: the owner of its
//! first token at or after `u[i]`. One sweep with a cursor per ring finds
//! the arcs whose owner changes; adjacent arcs with the same change are
//! merged. The cost is linear in the two rings' sizes.

use crate::preference::PreferenceList;
use crate::ring::Ring;
use crate::{NodeId, Token, TokenRange};

/// One arc whose owner changes between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMove {
    /// The tokens that change owner.
    pub range: TokenRange,
    /// Owner in the earlier snapshot.
    pub from: NodeId,
    /// Owner in the later snapshot.
    pub to: NodeId,
}

/// The exact list of arcs whose owner changes from one snapshot to another.
///
/// Moves are ordered by `range.end`; at most the first one wraps past
/// `u64::MAX`. A token changes owner exactly when a move contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingDiff {
    /// Epoch of the earlier snapshot.
    pub from_epoch: u64,
    /// Epoch of the later snapshot.
    pub to_epoch: u64,
    /// The arcs that change owner.
    pub moves: Vec<RangeMove>,
}

impl RingDiff {
    /// Index of the move that contains `token`, if any. `O(log moves)`.
    pub fn find(&self, token: Token) -> Option<usize> {
        let i = self.moves.partition_point(|m| m.range.end < token);
        if i < self.moves.len() && self.moves[i].range.contains(token) {
            return Some(i);
        }
        match self.moves.first() {
            Some(m) if m.range.wraps() && m.range.contains(token) => Some(0),
            _ => None,
        }
    }

    /// The fraction of the circle that changes owner.
    pub fn fraction(&self) -> f64 {
        self.moves.iter().map(|m| m.range.fraction()).sum()
    }
}

/// One arc whose preference list (replica set) changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The tokens whose replica set changes.
    pub range: TokenRange,
    /// Preference list in the earlier snapshot, owner first.
    pub from: Vec<NodeId>,
    /// Preference list in the later snapshot, owner first.
    pub to: Vec<NodeId>,
}

impl Ring {
    /// The arcs whose owner differs between `self` and `next`.
    ///
    /// If either ring is empty there is nothing to move from or to, and the
    /// diff is empty.
    ///
    /// ```
    /// use ringkv_ring::Ring;
    /// let old = Ring::default().with_node("a", 1).unwrap().with_node("b", 1).unwrap();
    /// let new = old.with_node("c", 1).unwrap();
    /// let diff = old.diff(&new);
    /// assert!(diff.moves.iter().all(|m| m.to.as_str() == "c"));
    /// for key in [&b"x"[..], b"y", b"z"] {
    ///     let token = ringkv_ring::key_token(key);
    ///     assert_eq!(diff.find(token).is_some(), old.owner(key) != new.owner(key));
    /// }
    /// ```
    pub fn diff(&self, next: &Ring) -> RingDiff {
        let mut moves: Vec<RangeMove> = Vec::new();
        let same = same_slots(self, next);
        sweep(self, next, |range, a, b| {
            let (sa, sb) = (self.entries[a].slot, next.entries[b].slot);
            // Most arcs keep their owner: decide that on slot numbers alone.
            if same[sa as usize] == sb {
                return;
            }
            let (from, to) = (&self.member(sa).id, &next.member(sb).id);
            if let Some(last) = moves.last_mut()
                && last.range.end == range.start
                && &last.from == from
                && &last.to == to
            {
                last.range.end = range.end;
                return;
            }
            moves.push(RangeMove {
                range,
                from: from.clone(),
                to: to.clone(),
            });
        });
        merge_wrap(
            &mut moves,
            |a, b| a.from == b.from && a.to == b.to,
            |m| &mut m.range,
        );
        RingDiff {
            from_epoch: self.epoch,
            to_epoch: next.epoch,
            moves,
        }
    }

    /// The arcs whose preference list of length `n` differs between `self`
    /// and `next` (as sets in order: a reordering counts as a change).
    /// Ordered by `range.end`; at most the first wraps.
    pub fn diff_replicas(&self, next: &Ring, n: usize) -> Vec<ReplicaMove> {
        let mut moves: Vec<ReplicaMove> = Vec::new();
        let (mut a_list, mut b_list) = (Vec::new(), Vec::new());
        sweep(self, next, |range, a, b| {
            a_list.clear();
            a_list.extend(PreferenceList::new(self, a, n.min(self.len())).cloned());
            b_list.clear();
            b_list.extend(PreferenceList::new(next, b, n.min(next.len())).cloned());
            if a_list == b_list {
                return;
            }
            if let Some(last) = moves.last_mut()
                && last.range.end == range.start
                && last.from == a_list
                && last.to == b_list
            {
                last.range.end = range.end;
                return;
            }
            moves.push(ReplicaMove {
                range,
                from: a_list.clone(),
                to: b_list.clone(),
            });
        });
        merge_wrap(
            &mut moves,
            |a, b| a.from == b.from && a.to == b.to,
            |m| &mut m.range,
        );
        moves
    }
}

/// For each slot of `x`, the slot of the same member in `y`, or `u32::MAX`
/// (a removed member, or a free slot): one merge of the two id-ordered
/// member lists.
fn same_slots(x: &Ring, y: &Ring) -> Vec<u32> {
    let mut same = vec![u32::MAX; x.members.len()];
    let mut ys = y.by_id.iter().peekable();
    for (id, &slot) in &x.by_id {
        while ys.next_if(|(other, _)| *other < id).is_some() {}
        if let Some((_, &to)) = ys.next_if(|(other, _)| *other == id) {
            same[slot as usize] = to;
        }
    }
    same
}

/// Calls `emit(arc, a, b)` for every elementary arc, in ascending order of
/// `arc.end`, starting with the arc that wraps; `a` and `b` are the indices
/// of the entries owning the arc in `x` and `y`.
fn sweep(x: &Ring, y: &Ring, mut emit: impl FnMut(TokenRange, usize, usize)) {
    if x.entries.is_empty() || y.entries.is_empty() {
        return;
    }
    let (xe, ye) = (&x.entries, &y.entries);
    let last = xe[xe.len() - 1].token.max(ye[ye.len() - 1].token);
    let (mut i, mut j) = (0usize, 0usize);
    let mut prev = last;
    loop {
        // Next distinct token of the union.
        let u = match (xe.get(i), ye.get(j)) {
            (Some(a), Some(b)) => a.token.min(b.token),
            (Some(a), None) => a.token,
            (None, Some(b)) => b.token,
            (None, None) => break,
        };
        // The first entries at or after u (every entry before i or j is
        // below u); past the last entry the arc wraps to entry 0.
        let a = if i < xe.len() { i } else { 0 };
        let b = if j < ye.len() { j } else { 0 };
        emit(TokenRange::new(prev, u), a, b);
        prev = u;
        while i < xe.len() && xe[i].token == u {
            i += 1;
        }
        while j < ye.len() && ye[j].token == u {
            j += 1;
        }
    }
}

/// Joins the last move onto the first when they meet across `u64::MAX`.
fn merge_wrap<T>(
    moves: &mut Vec<T>,
    same: impl Fn(&T, &T) -> bool,
    range: impl Fn(&mut T) -> &mut TokenRange,
) {
    if moves.len() < 2 {
        return;
    }
    let n = moves.len();
    let (head, tail) = moves.split_at_mut(n - 1);
    let (first, last) = (&mut head[0], &mut tail[0]);
    if range(last).end == range(first).start && same(first, last) {
        let start = range(last).start;
        range(first).start = start;
        moves.pop();
    }
}
