//! Preference lists: the first distinct physical nodes clockwise from a
//! token, then any member that owns no entry (see [`Ring::preference_list`]).

use crate::NodeId;
use crate::ring::Ring;

/// Iterator over a key's preference list: distinct physical nodes clockwise.
#[derive(Debug, Clone)]
pub struct PreferenceList<'a> {
    ring: &'a Ring,
    next: usize,
    visited: usize,
    wanted: usize,
    seen: Seen,
}

#[derive(Debug, Clone)]
enum Seen {
    Inline { slots: [u32; 8], len: usize },
    Heap(Vec<u32>),
}

impl Seen {
    fn contains(&self, slot: u32) -> bool {
        match self {
            Seen::Inline { slots, len } => slots[..*len].contains(&slot),
            Seen::Heap(v) => v.contains(&slot),
        }
    }

    fn push(&mut self, slot: u32) {
        match self {
            Seen::Inline { slots, len } if *len < slots.len() => {
                slots[*len] = slot;
                *len += 1;
            }
            Seen::Inline { slots, len } => {
                let mut v = slots[..*len].to_vec();
                v.push(slot);
                *self = Seen::Heap(v);
            }
            Seen::Heap(v) => v.push(slot),
        }
    }
}

impl<'a> PreferenceList<'a> {
    /// Distinct nodes clockwise from entry `start`; `wanted <= ring.len()`.
    pub(crate) fn new(ring: &'a Ring, start: usize, wanted: usize) -> Self {
        PreferenceList {
            ring,
            next: start,
            visited: 0,
            wanted,
            seen: Seen::Inline {
                slots: [0; 8],
                len: 0,
            },
        }
    }
}

impl<'a> Iterator for PreferenceList<'a> {
    type Item = &'a NodeId;

    fn next(&mut self) -> Option<&'a NodeId> {
        let ring = self.ring;
        let found = match &self.seen {
            Seen::Inline { len, .. } => *len,
            Seen::Heap(v) => v.len(),
        };
        if found >= self.wanted {
            return None;
        }
        // While a member that owns entries is unmet, walking meets it.
        while found < ring.holders && self.visited < ring.entries.len() {
            let slot = ring.entries[self.next].slot;
            self.visited += 1;
            self.next += 1;
            if self.next == ring.entries.len() {
                self.next = 0;
            }
            if !self.seen.contains(slot) {
                self.seen.push(slot);
                return Some(&ring.member(slot).id);
            }
        }
        // Every owner is listed; the members owning no entry follow in id
        // order (balanced rings only).
        let slot = ring
            .by_id
            .values()
            .copied()
            .find(|&slot| !self.seen.contains(slot))?;
        self.seen.push(slot);
        Some(&ring.member(slot).id)
    }
}
