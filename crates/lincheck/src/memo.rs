//! The memo table of failed search configurations and its hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Configurations that were fully explored without finding a
/// linearization.
///
/// Entries with the same `base` (see [`Config::memo_entry`]) are compared by
/// their pools of spare unknown-outcome writes: a configuration with at
/// least as many spare writes of every kind can do everything one with
/// fewer can, so if the richer one failed, the poorer one fails too. Only
/// finished configurations are stored (a configuration cannot recur below
/// itself, since the linearized set only grows along a path), so every
/// entry is a proof of failure.
#[derive(Default)]
pub(crate) struct Memo {
    /// Failed pools (an antichain under dominance), by base.
    failed: HashMap<Key, Vec<Key>, FxBuildHasher>,
}

impl Memo {
    /// Whether `rich` has at least as many spare writes of every kind as
    /// `poor`. Both are `[requirement, value, count, ...]` sorted by
    /// (requirement, value).
    pub(crate) fn dominates(rich: &[u32], poor: &[u32]) -> bool {
        let mut rich = rich.chunks_exact(3).peekable();
        poor.chunks_exact(3).all(|p| {
            while rich.next_if(|r| r[..2] < p[..2]).is_some() {}
            rich.next_if(|r| r[..2] == p[..2])
                .is_some_and(|r| r[2] >= p[2])
        })
    }

    pub(crate) fn known_to_fail(&self, base: &[u32], pool: &[u32]) -> bool {
        self.failed
            .get(base)
            .is_some_and(|pools| pools.iter().any(|rich| Self::dominates(rich, pool)))
    }

    pub(crate) fn record_failure(&mut self, base: Box<[u32]>, pool: Box<[u32]>) {
        let pools = self.failed.entry(base).or_default();
        pools.retain(|poor| !Self::dominates(&pool, poor));
        pools.push(pool);
    }
}

type FxBuildHasher = BuildHasherDefault<FxHasher>;
/// A memo-table key part (see [`Config::memo_entry`]).
type Key = Box<[u32]>;

/// Small, fast non-cryptographic hasher (FxHash-style mixing with a
/// murmur3 finalizer) for the memo table.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_dominance() {
        assert!(Memo::dominates(&[], &[]));
        assert!(Memo::dominates(&[9, 0, 2], &[]));
        assert!(Memo::dominates(&[9, 0, 2, 9, 5, 1], &[9, 0, 2]));
        assert!(Memo::dominates(&[9, 0, 2, 9, 5, 1], &[9, 0, 1, 9, 5, 1]));
        assert!(Memo::dominates(&[9, 0, 2, 9, 5, 1], &[9, 5, 1]));
        assert!(!Memo::dominates(&[], &[9, 0, 1]));
        assert!(!Memo::dominates(&[9, 0, 1], &[9, 0, 2]));
        assert!(!Memo::dominates(&[9, 0, 2], &[9, 0, 2, 9, 5, 1]));
        assert!(!Memo::dominates(&[9, 5, 3], &[9, 3, 1]));
        // Writes with another requirement are another kind.
        assert!(!Memo::dominates(&[8, 0, 2], &[9, 0, 1]));
        assert!(Memo::dominates(&[8, 0, 2, 9, 0, 1], &[9, 0, 1]));

        let mut memo = Memo::default();
        let base: Box<[u32]> = Box::new([1, 2, 3]);
        memo.record_failure(base.clone(), Box::new([9, 0, 1]));
        assert!(memo.known_to_fail(&base, &[9, 0, 1]));
        assert!(memo.known_to_fail(&base, &[]));
        assert!(!memo.known_to_fail(&base, &[9, 0, 2]));
        assert!(!memo.known_to_fail(&[1, 2], &[]));
        // A richer failure subsumes the poorer one.
        memo.record_failure(base.clone(), Box::new([9, 0, 2]));
        assert_eq!(memo.failed[&base].len(), 1);
        assert!(memo.known_to_fail(&base, &[9, 0, 2]));
    }
}
