//! The lookup table of a random-vnode ring: from a token to the first
//! entry at or after it in about one cache line.

use crate::hash::Token;
use crate::ring::Entry;

/// `first[b]` is the index of the first entry whose token is at least
/// `b << shift`; `first[len - 1] == entries.len()`. A lookup scans only the
/// entries of one bucket: about one on average.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    first: Vec<u32>,
    shift: u32,
}

impl Default for Table {
    /// The table of no entries.
    fn default() -> Self {
        Table {
            first: Vec::new(),
            shift: 64,
        }
    }
}

/// Whether the sorted tokens passed to [`Table::adjust`] were added or
/// removed.
#[derive(Clone, Copy)]
pub(crate) enum Change {
    Added,
    Removed,
}

impl Table {
    /// Builds the table of `entries` (see [`table_shift`]).
    pub(crate) fn build(entries: &[Entry]) -> Table {
        if entries.is_empty() {
            return Table::default();
        }
        let shift = table_shift(entries.len());
        let buckets = 1usize << (64 - shift);
        // Count the entries of each bucket into the slot after it, then a
        // prefix sum turns `first[b]` into the number of entries below
        // bucket `b`: the index of its first entry. Both passes are free of
        // data-dependent branches, which a scan per bucket is not (one
        // mispredicted exit per bucket dominated the cost of a change).
        let mut first = vec![0u32; buckets + 1];
        for e in entries {
            first[(e.token >> shift) as usize + 1] += 1;
        }
        let mut sum = 0u32;
        for slot in &mut first {
            sum += *slot;
            *slot = sum;
        }
        Table { first, shift }
    }

    /// The table of `entries`, which differ from the entries of `self`
    /// (`prev_len` of them) by the sorted tokens `changed`.
    ///
    /// `first[b]` counts the entries below bucket `b`, so adding or removing
    /// `changed` shifts it by the number of them below `b`: one pass over
    /// the table instead of one over all entries, when the bucket count
    /// stays (otherwise the table is built from the entries).
    pub(crate) fn adjust(
        &self,
        prev_len: usize,
        entries: &[Entry],
        changed: &[Token],
        change: Change,
    ) -> Table {
        let shift = table_shift(entries.len());
        if prev_len == 0 || entries.is_empty() || shift != self.shift {
            return Table::build(entries);
        }
        let old = &self.first;
        let mut first = Vec::with_capacity(old.len());
        let mut from = 0usize;
        let mut below = 0u32;
        let copy = |first: &mut Vec<u32>, part: &[u32], below: u32| match change {
            Change::Added => first.extend(part.iter().map(|&x| x + below)),
            Change::Removed => first.extend(part.iter().map(|&x| x - below)),
        };
        for &token in changed {
            // Buckets after this token's bucket count it.
            let to = (token >> shift) as usize + 1;
            copy(&mut first, &old[from..to], below);
            from = to;
            below += 1;
        }
        copy(&mut first, &old[from..], below);
        Table { first, shift }
    }

    /// Index of the first of `entries` (non-empty, the entries this table
    /// was built for) with `entry.token >= token`, wrapping to 0.
    #[inline]
    pub(crate) fn successor(&self, entries: &[Entry], token: Token) -> usize {
        let bucket = (token >> self.shift) as usize;
        let mut i = self.first[bucket] as usize;
        let end = self.first[bucket + 1] as usize;
        while i < end && entries[i].token < token {
            i += 1;
        }
        if i == entries.len() { 0 } else { i }
    }

    /// Heap size in bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.first.capacity() * std::mem::size_of::<u32>()
    }
}

/// The lookup table's shift for `len` entries: the table covers the top
/// `bits` bits of a token, with about one entry per bucket
/// (`bits = ceil(log2(len))`, at least 1).
fn table_shift(len: usize) -> u32 {
    if len == 0 {
        return 64;
    }
    let bits = (usize::BITS - (len - 1).leading_zeros()).clamp(1, 24);
    64 - bits
}
