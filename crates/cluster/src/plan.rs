//! Redistribution as plain data: which ranges move where, and what state
//! each range's move is in. No locks or I/O decide anything here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_ring::{NodeId, RingDiff};

/// The ranges of a diff grouped by (source, target), in plan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransferPlan {
    /// Node the ranges move from.
    pub(crate) from: NodeId,
    /// Node the ranges move to.
    pub(crate) to: NodeId,
    /// Indices into the diff's moves.
    pub(crate) ranges: Vec<usize>,
}

/// Groups a diff's moves into one transfer per (source, target) pair,
/// ordered by each pair's first move.
pub(crate) fn plan_transfers(diff: &RingDiff) -> Vec<TransferPlan> {
    let mut plans: Vec<TransferPlan> = Vec::new();
    for (i, m) in diff.moves.iter().enumerate() {
        match plans.iter_mut().find(|p| p.from == m.from && p.to == m.to) {
            Some(p) => p.ranges.push(i),
            None => plans.push(TransferPlan {
                from: m.from.clone(),
                to: m.to.clone(),
                ranges: vec![i],
            }),
        }
    }
    plans
}

/// The state of one range's move.
///
/// `Copying -> Switched`. While `Copying`, the source owns the
/// range and serves it; writes to it are logged as dirty so the switch can
/// carry them over. `Switched` is set under the source's write lock, after
/// the target holds every key and every dirty write: from then on the
/// target owns the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Phase {
    /// The source owns the range; the target is being filled.
    Copying = 0,
    /// The target owns the range; the source's copy is deleted by cleanup.
    Switched = 1,
}

/// Live state of one range move, shared by clients and the migrator.
#[derive(Debug)]
pub(crate) struct RangeState {
    phase: AtomicU8,
    /// Keys written at the source while the range was copying. Touched by
    /// clients only under the source's write lock, so the set is complete
    /// for the migrator once it holds that lock.
    dirty: Mutex<HashSet<Bytes>>,
}

impl RangeState {
    pub(crate) fn new() -> Self {
        RangeState {
            phase: AtomicU8::new(Phase::Copying as u8),
            dirty: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Copying,
            _ => Phase::Switched,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub(crate) fn mark_dirty(&self, key: &Bytes) {
        self.dirty.lock().insert(key.clone());
    }

    pub(crate) fn dirty_keys(&self) -> Vec<Bytes> {
        self.dirty.lock().iter().cloned().collect()
    }

    pub(crate) fn clear_dirty(&self) {
        self.dirty.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_ring::Ring;

    #[test]
    fn transfers_group_moves_by_pair() {
        let ring = ["a", "b", "c"]
            .iter()
            .fold(Ring::default(), |r, id| r.with_node(*id, 1).unwrap());
        let next = ring.without_node("b").unwrap();
        let diff = ring.diff(&next);
        let plans = plan_transfers(&diff);
        assert!(plans.iter().all(|p| p.from.as_str() == "b"));
        assert_eq!(plans.len(), 2, "b's ranges go to a and to c");
        let mut all: Vec<usize> = plans.iter().flat_map(|p| p.ranges.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..diff.moves.len()).collect::<Vec<_>>());
        for p in &plans {
            for &i in &p.ranges {
                assert_eq!((&diff.moves[i].from, &diff.moves[i].to), (&p.from, &p.to));
            }
        }
    }
}
