//! The mutable state of the per-key search: which operations are
//! linearized, the register value, which operations may go next, and the
//! compact description of a configuration stored in the memo table.

use crate::model::{KOp, UNOBSERVABLE};
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
    /// Per value id: number of reads returning it not yet linearized.
    pub(crate) pending_reads: Vec<u32>,
}

impl<'a> Config<'a> {
    pub(crate) fn new(ops: &'a [KOp], value_count: usize) -> Self {
        let mut pending_reads = vec![0; value_count];
        for op in ops.iter().filter(|op| !op.write) {
            pending_reads[op.value as usize] += 1;
        }
        let mut c = Config {
            ops,
            linearized: vec![0; ops.len().div_ceil(64)],
            low: 0,
            state: 0,
            unknown: (0..ops.len()).filter(|&i| !ops[i].known).collect(),
            pending_reads,
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

    /// An unknown-outcome write is *dead* once every read of its value is
    /// linearized: it can then never be a candidate again (see
    /// [`Config::push_candidates`]), so whether it took effect is irrelevant.
    pub(crate) fn is_dead(&self, i: usize) -> bool {
        let op = &self.ops[i];
        !op.known && self.pending_reads[op.value as usize] == 0
    }

    pub(crate) fn done(&self) -> bool {
        self.low == self.ops.len()
    }

    /// Linearizes op `i` (which must be minimal and applicable); returns the
    /// previous register value for [`Config::undo`].
    pub(crate) fn apply(&mut self, i: usize) -> u32 {
        self.linearized[i / 64] |= 1 << (i % 64);
        let prev = self.state;
        if self.ops[i].write {
            self.state = self.ops[i].value;
        } else {
            self.pending_reads[self.ops[i].value as usize] -= 1;
        }
        if i == self.low {
            self.advance_low();
        }
        prev
    }

    pub(crate) fn undo(&mut self, i: usize, prev: u32) {
        self.linearized[i / 64] &= !(1 << (i % 64));
        self.state = prev;
        if !self.ops[i].write {
            self.pending_reads[self.ops[i].value as usize] += 1;
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
    /// Partial-order reductions (each preserves the existence of a
    /// linearization, so the search stays complete):
    /// * if a minimal read returns the current value, it alone is tried: any
    ///   linearization from here can be rearranged to place it first (it is
    ///   minimal, so nothing must precede it, and it changes nothing);
    /// * reads returning another value are never applicable now;
    /// * an unknown-outcome write `u` of value `w` is only tried when a
    ///   minimal read returns `w`. In any linearization, the operation right
    ///   after `u` is either a read of `w` (which is then minimal already
    ///   now, as `u` never affects minimality), or a write or nothing, in
    ///   which case `u` can be dropped (it may never have taken effect).
    /// * of several minimal unknown-outcome writes of the same value only the
    ///   lowest-indexed one is tried: minimal unknown-outcome operations stay
    ///   minimal forever (the horizon only grows), so they are
    ///   interchangeable from here on.
    pub(crate) fn push_candidates(&self, out: &mut Vec<u32>) -> Frame {
        let start = out.len();
        let mut forced = None;
        let mut read_values: Vec<u32> = Vec::new();
        let mut unknown_writes: Vec<u32> = Vec::new();
        self.for_each_minimal(|j| {
            let op = &self.ops[j];
            if forced.is_some() {
            } else if !op.write {
                if op.value == self.state {
                    forced = Some(j);
                } else {
                    read_values.push(op.value);
                }
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
            unknown_writes.retain(|&u| read_values.contains(&self.ops[u as usize].value));
            unknown_writes.sort_unstable();
            for (i, &u) in unknown_writes.iter().enumerate() {
                let value = self.ops[u as usize].value;
                if unknown_writes[..i]
                    .iter()
                    .all(|&earlier| self.ops[earlier as usize].value != value)
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
    /// linearized operations is determined by `low`, the unknown-outcome
    /// operations below `low` that are *not* linearized, and the linearized
    /// operations above `low`. The latter all have
    /// `invoke <= ops[low].complete`: each was minimal when linearized, while
    /// `low` was pending, so its invocation did not come after `low`'s
    /// completion.
    ///
    /// Differences that cannot influence the rest of the search are erased:
    /// * register values that no pending read returns are all equivalent
    ///   (every future read must follow a later write);
    /// * dead unknown-outcome writes (see [`Config::is_dead`]) are omitted;
    /// * unknown-outcome writes below `low` are minimal for good and
    ///   interchangeable with others of the same value, so the pool only
    ///   counts the spare ones per value.
    ///
    /// `base` = `[state, low, linearized ops above low...]`,
    /// `pool` = `[value, count, value, count, ...]` sorted by value.
    pub(crate) fn memo_entry(&self) -> (Box<[u32]>, Box<[u32]>) {
        let mut base = Vec::with_capacity(8);
        base.push(if self.pending_reads[self.state as usize] == 0 {
            UNOBSERVABLE
        } else {
            self.state
        });
        base.push(self.low as u32);
        let bound = self.ops[self.low].complete;
        let mut j = self.low + 1;
        while j < self.ops.len() && self.ops[j].invoke <= bound {
            if self.is_linearized(j) && !self.is_dead(j) {
                base.push(j as u32);
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

        let mut spare: Vec<u32> = self
            .unknown
            .iter()
            .take_while(|&&u| u < self.low)
            .filter(|&&u| !self.is_linearized(u) && !self.is_dead(u))
            .map(|&u| self.ops[u].value)
            .collect();
        spare.sort_unstable();
        let mut pool = Vec::new();
        for chunk in spare.chunk_by(|a, b| a == b) {
            pool.push(chunk[0]);
            pool.push(chunk.len() as u32);
        }
        (base.into_boxed_slice(), pool.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_entry_counts_spare_unknown_writes() {
        let op = |invoke, complete: Option<u64>, write, value| KOp {
            invoke,
            complete: complete.unwrap_or(u64::MAX),
            known: complete.is_some(),
            write,
            value,
            src: 0,
        };
        let ops = [
            op(0, None, true, 0),     // unknown delete
            op(0, None, true, 0),     // unknown delete
            op(1, Some(2), true, 1),  // put(1)
            op(1, Some(5), false, 0), // get -> None
            op(3, Some(4), false, 1), // get -> Some(1)
        ];
        let mut cfg = Config::new(&ops, 2);
        assert_eq!(cfg.low, 2);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 2][..], &[0, 2][..]));
        let p = cfg.apply(2);
        assert_eq!(cfg.low, 3);
        let (base, pool) = cfg.memo_entry();
        // Value 1 is still awaited by a read.
        assert_eq!((&*base, &*pool), (&[1, 3][..], &[0, 2][..]));
        let q = cfg.apply(1);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 3][..], &[0, 1][..]));
        cfg.undo(1, q);
        cfg.undo(2, p);
        assert_eq!(cfg.low, 2);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 2][..], &[0, 2][..]));
    }
}
