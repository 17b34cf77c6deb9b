//! Random vnodes: a placement strategy where tokens follow from the
//! membership.
//!
//! A node of weight `w` owns `w * vnodes_per_weight` tokens at
//! [`vnode_token`]`(id, k)`; tokens that collide are ordered by node id.
//! The ring is therefore a function of its members and config, whatever
//! the order of changes.

use crate::hash::{Token, vnode_token};
use crate::lookup::{Change, Table};
use crate::ring::{Entry, Layout, MAX_VNODES_PER_NODE, Ring, RingConfig};
use crate::{NodeId, RingError};

/// The table of `prev`, a random-vnode ring.
fn table(prev: &Ring) -> &Table {
    match &prev.layout {
        Layout::Random { table, .. } => table,
        Layout::Partitions { .. } => unreachable!("called for random-vnode rings only"),
    }
}

/// The new snapshot after `id` (validated, not a member) joins `prev`.
///
/// The new node's tokens are sorted and merged into the existing order in
/// one linear pass; nothing is re-sorted.
pub(crate) fn with_node(
    prev: &Ring,
    config: RingConfig,
    id: NodeId,
    weight: u32,
) -> Result<Ring, RingError> {
    let vnodes = u64::from(weight) * u64::from(config.vnodes_per_weight);
    if vnodes > u64::from(MAX_VNODES_PER_NODE) {
        return Err(RingError::TooManyVnodes {
            id,
            weight,
            vnodes,
            max: MAX_VNODES_PER_NODE,
        });
    }
    let vnodes = vnodes as u32;
    let (members, slot) = prev.members_with(&id, weight);

    let mut fresh: Vec<Token> = (0..vnodes).map(|i| vnode_token(id.as_str(), i)).collect();
    fresh.sort_unstable();

    // One merge pass over (token, id) order: each new token's place is
    // found by a galloping search in the rest of the old entries, and the
    // old entries before it are copied as one block.
    let mut entries = Vec::with_capacity(prev.entries.len() + fresh.len());
    let mut rest = &prev.entries[..];
    for &token in &fresh {
        let k = gallop(rest, |e| {
            e.token < token || (e.token == token && prev.member(e.slot).id < id)
        });
        entries.extend_from_slice(&rest[..k]);
        entries.push(Entry { token, slot });
        rest = &rest[k..];
    }
    entries.extend_from_slice(rest);

    let mut by_id = prev.by_id.clone();
    by_id.insert(id, slot);
    let table = table(prev).adjust(prev.entries.len(), &entries, &fresh, Change::Added);
    Ok(prev.next(Layout::Random { config, table }, members, by_id, entries))
}

/// The new snapshot after the member in `slot` leaves `prev`.
pub(crate) fn without_node(prev: &Ring, config: RingConfig, slot: u32) -> Result<Ring, RingError> {
    let gone = prev.member(slot);
    let mut members = prev.members.clone();
    members[slot as usize] = None;
    while matches!(members.last(), Some(None)) {
        members.pop();
    }
    let mut by_id = prev.by_id.clone();
    by_id.remove(&gone.id);
    let vnodes = gone.weight * config.vnodes_per_weight;
    let mut entries = Vec::with_capacity(prev.entries.len() - vnodes as usize);
    if vnodes as usize * 16 >= prev.entries.len() {
        // The node holds a large share of the ring: one filtering scan
        // is cheaper than locating its tokens.
        entries.extend(prev.entries.iter().filter(|e| e.slot != slot).copied());
        let table = Table::build(&entries);
        return Ok(prev.next(Layout::Random { config, table }, members, by_id, entries));
    }
    // The node's tokens are known without scanning: one per vnode index.
    let mut removed: Vec<Token> = (0..vnodes)
        .map(|i| vnode_token(gone.id.as_str(), i))
        .collect();
    removed.sort_unstable();
    // Copy the entries between two of its tokens as one block each.
    let mut rest = &prev.entries[..];
    for &token in &removed {
        let mut k = gallop(rest, |e| e.token < token);
        // Among entries sharing the token, skip to this node's.
        while rest[k].slot != slot {
            k += 1;
        }
        entries.extend_from_slice(&rest[..k]);
        rest = &rest[k + 1..];
    }
    entries.extend_from_slice(rest);
    let table = table(prev).adjust(prev.entries.len(), &entries, &removed, Change::Removed);
    Ok(prev.next(Layout::Random { config, table }, members, by_id, entries))
}

/// `rest.partition_point(before)`, probing from the front at 1, 2, 4, ...
/// before a binary search: `O(log k)` for an answer `k`, on memory next to
/// the last one. A node's tokens are spread evenly, so `k` is about
/// `entries / tokens`: a binary search over the whole rest instead cost
/// `log(entries)` cache misses per token (a node of weight 4,096 on a ring
/// of 40 such nodes: a million tokens, 40 million entries).
pub(crate) fn gallop<T>(rest: &[T], before: impl Fn(&T) -> bool) -> usize {
    let mut hi = 1;
    while hi <= rest.len() && before(&rest[hi - 1]) {
        hi *= 2;
    }
    // Every entry below `hi / 2` is before (monotone), and `hi - 1` is not
    // (or is past the end).
    let lo = hi / 2;
    lo + rest[lo..hi.min(rest.len())].partition_point(before)
}
