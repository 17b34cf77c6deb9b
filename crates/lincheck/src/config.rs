//! The mutable state of the per-key search: which operations are
//! linearized, the register value, which operations may go next, and the
//! compact description of a configuration stored in the memo table.

use crate::model::{ANY, KOp, PRESENT, UNOBSERVABLE, UNOBSERVABLE_NONE};
use crate::search::Frame;

/// The mutable search configuration: which operations are linearized, the
/// register value, and the lowest-indexed known operation not yet linearized.
pub(crate) struct Config<'a> {
    pub(crate) ops: &'a [KOp],
    pub(crate) linearized: Vec<u64>,
    /// Index of the first known, not yet linearized operation (`ops.len()`
    /// when every known operation is linearized, i.e. success).
    pub(crate) low: usize,
    pub(crate) state: u32,
    /// Indices of unknown-outcome operations, ascending.
    pub(crate) unknown: Vec<usize>,
    /// Per value id: number of operations not yet linearized that require
    /// the register to hold exactly it (reads, and updates that found it).
    pub(crate) pending_reads: Vec<u32>,
    /// Number of operations not yet linearized that require the register to
    /// hold some value (deletes that reported removing one).
    pub(crate) pending_present: u32,
    /// Per value id: whether any operation requires exactly it.
    ever_required: Vec<bool>,
}

impl<'a> Config<'a> {
    pub(crate) fn new(ops: &'a [KOp], value_count: usize) -> Self {
        let mut pending_reads = vec![0; value_count];
        let mut pending_present = 0;
        for op in ops {
            match op.pre {
                ANY => {}
                PRESENT => pending_present += 1,
                v => pending_reads[v as usize] += 1,
            }
        }
        let mut c = Config {
            ops,
            linearized: vec![0; ops.len().div_ceil(64)],
            low: 0,
            state: 0,
            unknown: (0..ops.len()).filter(|&i| !ops[i].known).collect(),
            ever_required: pending_reads.iter().map(|&n| n > 0).collect(),
            pending_reads,
            pending_present,
        };
        c.advance_low();
        c
    }

    pub(crate) fn is_linearized(&self, i: usize) -> bool {
        self.linearized[i / 64] & (1 << (i % 64)) != 0
    }

    fn advance_low(&mut self) {
        while self.low < self.ops.len()
            && (!self.ops[self.low].known || self.is_linearized(self.low))
        {
            self.low += 1;
        }
    }

    /// Whether some operation not yet linearized requires the register to
    /// hold `value` (exactly, or as "some value").
    fn is_required(&self, value: u32) -> bool {
        self.pending_reads[value as usize] > 0 || (value != 0 && self.pending_present > 0)
    }

    /// An unknown-outcome write is *dead* once no operation left requires
    /// the value it writes: it can then never be a candidate again (see
    /// [`Config::push_candidates`]; the pending counts only fall as the
    /// search goes deeper), so whether it took effect is irrelevant.
    /// (Unknown-outcome operations are all writes: the others are dropped
    /// before the search.)
    pub(crate) fn is_dead(&self, i: usize) -> bool {
        let op = &self.ops[i];
        !op.known && !self.is_required(op.post)
    }

    /// The class of interchangeable unknown-outcome writes that op `i`
    /// belongs to: its requirement and the value it writes, where all values
    /// that no operation of the history requires exactly count as one (such
    /// a value can only serve to meet a "some value" requirement, and any
    /// one does that as well as any other, in every configuration).
    fn kind(&self, i: usize) -> (u32, u32) {
        let op = &self.ops[i];
        let post = if self.ever_required[op.post as usize] {
            op.post
        } else {
            UNOBSERVABLE
        };
        (op.pre, post)
    }

    /// The pending count that an operation with requirement `pre` is
    /// counted in, if any.
    fn pending_count(&mut self, pre: u32) -> Option<&mut u32> {
        match pre {
            ANY => None,
            PRESENT => Some(&mut self.pending_present),
            v => Some(&mut self.pending_reads[v as usize]),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.low == self.ops.len()
    }

    /// Linearizes op `i` (which must be minimal and applicable); returns the
    /// previous register value for [`Config::undo`].
    pub(crate) fn apply(&mut self, i: usize) -> u32 {
        self.linearized[i / 64] |= 1 << (i % 64);
        let prev = self.state;
        let op = self.ops[i];
        debug_assert!(
            op.applies_to(prev),
            "applied an operation whose requirement fails"
        );
        if let Some(n) = self.pending_count(op.pre) {
            *n -= 1;
        }
        if !op.is_read() {
            self.state = op.post;
        }
        if i == self.low {
            self.advance_low();
        }
        prev
    }

    pub(crate) fn undo(&mut self, i: usize, prev: u32) {
        self.linearized[i / 64] &= !(1 << (i % 64));
        self.state = prev;
        if let Some(n) = self.pending_count(self.ops[i].pre) {
            *n += 1;
        }
        if self.ops[i].known && i < self.low {
            self.low = i;
        }
    }

    /// Calls `f` for every minimal operation: not linearized, and invoked no
    /// later than the earliest completion of any known, not linearized
    /// operation. Requires `!self.done()`.
    pub(crate) fn for_each_minimal(&self, mut f: impl FnMut(usize)) {
        let ops = self.ops;
        let mut horizon = ops[self.low].complete;
        let mut end = self.low + 1;
        while end < ops.len() && ops[end].invoke <= horizon {
            if ops[end].known && !self.is_linearized(end) {
                horizon = horizon.min(ops[end].complete);
            }
            end += 1;
        }
        for (j, op) in ops.iter().enumerate().take(end).skip(self.low) {
            if !self.is_linearized(j) && op.invoke <= horizon {
                f(j);
            }
        }
        // Unknown-outcome operations before `low` stay minimal forever.
        for &u in self.unknown.iter().take_while(|&&u| u < self.low) {
            if !self.is_linearized(u) {
                f(u);
            }
        }
    }

    /// Pushes the operations worth trying next onto `out` and returns the
    /// frame describing them.
    ///
    /// An operation is applicable when the register satisfies its
    /// requirement (see [`crate::model`]). Partial-order reductions (each
    /// preserves the existence of a linearization, so the search stays
    /// complete):
    /// * if a minimal read requires the current value, it alone is tried:
    ///   any linearization from here can be rearranged to place it first (it
    ///   is minimal, so nothing must precede it, and it changes nothing);
    /// * an unknown-outcome write `u` of value `w` is only tried when some
    ///   minimal operation requires `w` (exactly, or as "some value") and the
    ///   register does not satisfy that requirement now. In any
    ///   linearization, the operation right after `u` is either such an
    ///   operation (minimal already now, as `u` never affects minimality),
    ///   or one whose requirement `u` did not help meet, or nothing; then
    ///   `u` can be dropped (it may never have taken effect).
    /// * of several minimal unknown-outcome writes of the same kind (see
    ///   [`Config::kind`]) only the lowest-indexed one is tried: minimal
    ///   unknown-outcome operations stay minimal forever (the horizon only
    ///   grows), so they are interchangeable from here on.
    pub(crate) fn push_candidates(&self, out: &mut Vec<u32>) -> Frame {
        let start = out.len();
        let mut forced = None;
        // Values some minimal operation requires but the register lacks.
        let mut wanted: Vec<u32> = Vec::new();
        let mut wants_present = false;
        let mut unknown_writes: Vec<u32> = Vec::new();
        self.for_each_minimal(|j| {
            let op = &self.ops[j];
            if forced.is_some() {
            } else if !op.applies_to(self.state) {
                match op.pre {
                    PRESENT => wants_present = true,
                    v => wanted.push(v),
                }
            } else if op.is_read() {
                forced = Some(j);
            } else if op.known {
                out.push(j as u32);
            } else {
                unknown_writes.push(j as u32);
            }
        });
        if let Some(j) = forced {
            out.truncate(start);
            out.push(j as u32);
        } else {
            unknown_writes.retain(|&u| {
                let post = self.ops[u as usize].post;
                wanted.contains(&post) || (wants_present && post != 0)
            });
            unknown_writes.sort_unstable();
            let kind = |u: u32| self.kind(u as usize);
            for (i, &u) in unknown_writes.iter().enumerate() {
                if unknown_writes[..i]
                    .iter()
                    .all(|&earlier| kind(earlier) != kind(u))
                {
                    out.push(u);
                }
            }
        }
        Frame {
            start,
            next: start,
            end: out.len(),
        }
    }

    /// Compact description of the configuration for the memo table, split
    /// into a `base` that must match exactly and a `pool` of spare
    /// unknown-outcome writes that is compared by dominance (see [`Memo`]).
    ///
    /// Every known operation below `low` is linearized, so the set of
    /// linearized known operations is determined by `low` and the linearized
    /// known operations above `low`. The latter all have
    /// `invoke <= ops[low].complete`: each was minimal when linearized, while
    /// `low` was pending, so its invocation did not come after `low`'s
    /// completion. These also fix the horizon (the earliest completion of a
    /// known operation not linearized), and with it which unknown-outcome
    /// operations are minimal: an unknown-outcome operation is linearized
    /// only once minimal, and then stays minimal for good. So the minimal
    /// unknown-outcome operations that are *not* linearized (the spares)
    /// complete the description.
    ///
    /// Differences that cannot influence the rest of the search are erased:
    /// * register values that no pending operation requires exactly are all
    ///   equivalent (every future read must follow a later write), except
    ///   that `None` stays apart from the others while some pending
    ///   operation requires "some value";
    /// * dead unknown-outcome writes (see [`Config::is_dead`]) are omitted;
    /// * spare unknown-outcome writes are interchangeable with others of the
    ///   same kind (see [`Config::kind`]), so the pool only counts them per
    ///   kind.
    ///
    /// `base` = `[state, low, linearized known ops above low...]`,
    /// `pool` = `[requirement, value, count, ...]` sorted by kind.
    pub(crate) fn memo_entry(&self) -> (Box<[u32]>, Box<[u32]>) {
        let mut base = Vec::with_capacity(8);
        base.push(if self.pending_reads[self.state as usize] > 0 {
            self.state
        } else if self.state == 0 && self.pending_present > 0 {
            UNOBSERVABLE_NONE
        } else {
            UNOBSERVABLE
        });
        base.push(self.low as u32);
        let bound = self.ops[self.low].complete;
        // The earliest completion of a known operation not linearized: the
        // unknown-outcome operations invoked by then are the minimal ones.
        let mut horizon = bound;
        let mut j = self.low + 1;
        while j < self.ops.len() && self.ops[j].invoke <= bound {
            let op = &self.ops[j];
            if !op.known {
            } else if self.is_linearized(j) {
                base.push(j as u32);
            } else {
                horizon = horizon.min(op.complete);
            }
            j += 1;
        }
        debug_assert!(
            j.is_multiple_of(64) || self.linearized[j / 64] >> (j % 64) == 0,
            "linearized operation beyond the memo bound"
        );
        debug_assert!(
            self.linearized[j.div_ceil(64)..].iter().all(|&w| w == 0),
            "linearized operation beyond the memo bound"
        );

        let mut spare: Vec<(u32, u32)> = self
            .unknown
            .iter()
            .take_while(|&&u| self.ops[u].invoke <= horizon)
            .filter(|&&u| !self.is_linearized(u) && !self.is_dead(u))
            .map(|&u| self.kind(u))
            .collect();
        spare.sort_unstable();
        let mut pool = Vec::new();
        for chunk in spare.chunk_by(|a, b| a == b) {
            pool.extend([chunk[0].0, chunk[0].1, chunk.len() as u32]);
        }
        (base.into_boxed_slice(), pool.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KEEP;

    fn op(invoke: u64, complete: Option<u64>, pre: u32, post: u32) -> KOp {
        KOp {
            invoke,
            complete: complete.unwrap_or(u64::MAX),
            known: complete.is_some(),
            pre,
            post,
            src: 0,
        }
    }

    #[test]
    fn memo_entry_counts_spare_unknown_writes() {
        let ops = [
            op(0, None, ANY, 0),     // unknown delete
            op(0, None, ANY, 0),     // unknown delete
            op(1, Some(2), ANY, 1),  // put(1)
            op(1, Some(5), 0, KEEP), // get -> None
            op(3, Some(4), 1, KEEP), // get -> Some(1)
        ];
        let mut cfg = Config::new(&ops, 2);
        assert_eq!(cfg.low, 2);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 2][..], &[ANY, 0, 2][..]));
        let p = cfg.apply(2);
        assert_eq!(cfg.low, 3);
        let (base, pool) = cfg.memo_entry();
        // Value 1 is still awaited by a read.
        assert_eq!((&*base, &*pool), (&[1, 3][..], &[ANY, 0, 2][..]));
        let q = cfg.apply(1);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 3][..], &[ANY, 0, 1][..]));
        cfg.undo(1, q);
        cfg.undo(2, p);
        assert_eq!(cfg.low, 2);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 2][..], &[ANY, 0, 2][..]));
    }

    #[test]
    fn a_pending_removal_keeps_none_apart_from_values() {
        let ops = [
            op(0, Some(1), ANY, 1),     // put(1)
            op(0, Some(1), ANY, 2),     // put(2)
            op(2, Some(3), PRESENT, 0), // delete -> true
        ];
        let mut cfg = Config::new(&ops, 3);
        // Nothing requires exactly None, 1 or 2; the delete tells None apart.
        assert_eq!(cfg.memo_entry().0[0], UNOBSERVABLE_NONE);
        let p = cfg.apply(0);
        assert_eq!(cfg.memo_entry().0[0], UNOBSERVABLE);
        let q = cfg.apply(1);
        assert_eq!(cfg.memo_entry().0[0], UNOBSERVABLE);
        assert!(cfg.ops[2].applies_to(cfg.state));
        cfg.undo(1, q);
        cfg.undo(0, p);
        assert!(!cfg.ops[2].applies_to(cfg.state));
        assert_eq!((cfg.pending_present, cfg.low), (1, 0));
    }
}
