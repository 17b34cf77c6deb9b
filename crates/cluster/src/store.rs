//! Node-local storage: the [`Store`] trait and the in-memory [`MemStore`].
//!
//! A store keeps its entries ordered by ring token so that one token range
//! can be read, copied and deleted at a cost proportional to that range.
//! A persistent engine (an LSM tree or a B-tree file keyed by
//! `token || key`) implements the same trait.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use bytes::Bytes;
use ringkv_ring::Token;

use crate::entry::Entry;

/// One stored key with its ring token and entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// `key_token(&key)`.
    pub token: Token,
    /// The key.
    pub key: Bytes,
    /// The entry stored under it.
    pub entry: Entry,
}

/// Why a store call failed. The call changed nothing.
///
/// Errors compare by their message (`PartialEq`), so that
/// [`ClusterError`](crate::ClusterError) stays comparable in tests.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine failed: an injected fault, or an engine without a more
    /// precise variant.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// An I/O error (the engine's `io::Error` is the source): a full disk,
    /// a read-only directory, a failing device.
    #[error("{context}")]
    Io {
        /// What failed, naming the file or directory and what to do.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// Stored data that does not decode: a damaged file.
    #[error("{0}")]
    Corrupt(String),
    /// The engine refused the call for a reason its message gives, with
    /// what to do: a directory in use by another process or written by a
    /// newer version, writes refused after an earlier failure.
    #[error("{0}")]
    Refused(String),
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

impl StoreError {
    /// Whether the error is the disk being full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
    }
}

/// A node's local key-value store, ordered by `(token, key)`.
///
/// Contract, relied on by redistribution:
/// - every method is atomic: it fails without changing anything, or does
///   all of its work;
/// - `token` is always `ringkv_ring::key_token(key)`; the store may trust it;
/// - `scan` returns entries in ascending `(token, key)` order, so a caller
///   can page through a range with the last token it saw;
/// - entries are stored and returned as given, expired or not: expiry is
///   the cluster's business (it reads [`Entry::expires_at`]), so a store
///   never needs a clock. An engine that keeps bytes uses
///   [`Entry::encode`] / [`Entry::decode`].
///
/// Callers serialise access (the cluster holds each node's store behind a
/// read-write lock), so methods take `&self` for reads and `&mut self` for
/// writes.
pub trait Store: Send + Sync + 'static {
    /// The entry of `key`.
    fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Stores `entry` under `key`; returns the previous entry.
    fn put(&mut self, token: Token, key: Bytes, entry: Entry) -> Result<Option<Entry>, StoreError>;

    /// Removes `key`; returns the removed entry.
    fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Stores every entry of `entries` (distinct keys), as one write where
    /// the engine has transactions (a redistribution's copy batch costs one
    /// commit, not one per key), and appends to `replaced` the entry each
    /// replaced, in order. All or nothing, like every method: the default
    /// calls [`Store::put`] per entry, which is atomic only for a store
    /// whose `put` cannot fail (as [`MemStore`]'s); any other store
    /// overrides it.
    fn put_many(
        &mut self,
        entries: Vec<StoredEntry>,
        replaced: &mut Vec<Option<Entry>>,
    ) -> Result<(), StoreError> {
        for e in entries {
            replaced.push(self.put(e.token, e.key, e.entry)?);
        }
        Ok(())
    }

    /// Appends to `out` up to `limit` entries whose token lies in `tokens`
    /// and is greater than `after` (when given), in ascending order. All
    /// entries of one token are returned together, so `limit` may be
    /// exceeded by the keys sharing the last token. Fewer than `limit`
    /// entries means the range holds no more: callers stop there.
    fn scan(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError>;

    /// Calls `visit` with each entry [`Store::scan`] would return, in the
    /// same order, without copying any: a range copy encodes them under
    /// the stripe's read lock instead of cloning each key and value out
    /// first. It stops after `limit` entries, or at the end of a token
    /// for which `visit` returned `false` (keys sharing a token go
    /// together either way). Returns how many entries it visited and the
    /// last token, `None` if none.
    fn visit(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        visit: &mut dyn FnMut(Token, &Bytes, &Entry) -> bool,
    ) -> Result<(usize, Option<Token>), StoreError> {
        let mut out = Vec::new();
        self.scan(tokens, after, limit, &mut out)?;
        let (mut n, mut last, mut go_on) = (0, None, true);
        for e in &out {
            if !go_on && last != Some(e.token) {
                break;
            }
            go_on &= visit(e.token, &e.key, &e.entry);
            (n, last) = (n + 1, Some(e.token));
        }
        Ok((n, last))
    }

    /// Removes up to `limit` entries whose token lies in `tokens`, lowest
    /// tokens first, and appends them to `out`, so that the caller can free
    /// them after releasing its lock. All keys of one token go together, so
    /// `limit` may be exceeded by keys sharing the last token. Returns how
    /// many were removed; fewer than `limit` means the range is now empty.
    fn take_range(
        &mut self,
        tokens: RangeInclusive<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError>;

    /// Removes every entry whose token lies in `tokens`; returns how many.
    fn delete_range(&mut self, tokens: RangeInclusive<Token>) -> Result<usize, StoreError> {
        let mut out = Vec::new();
        self.take_range(tokens, usize::MAX, &mut out)
    }

    /// Number of entries.
    fn len(&self) -> usize;

    /// Told once, when the cluster opens a store that already held data (a
    /// restart), before it scans it: the store's stripe is `tokens`. A
    /// store that serves from memory what it keeps on disk reads that range
    /// into memory here.
    fn load(&mut self, tokens: RangeInclusive<Token>) -> Result<(), StoreError> {
        let _ = tokens;
        Ok(())
    }

    /// Puts `old` back under `key` (`None`: no entry) after a transaction
    /// whose writes the backend failed to keep (all of a transaction's
    /// writes are kept together or not at all): the write being undone never reached a durable copy, so a store with
    /// one restores only what it serves. Returns the entry it replaced.
    fn revert(
        &mut self,
        token: Token,
        key: Bytes,
        old: Option<Entry>,
    ) -> Result<Option<Entry>, StoreError> {
        match old {
            Some(entry) => self.put(token, key, entry),
            None => self.delete(token, &key),
        }
    }

    /// Whether the store holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The default store: entries in a hash table by token, and the tokens in
/// a B-tree for order.
///
/// A point operation (`get`, an overwriting `put`) is one probe of the
/// hash table; only a key created or deleted touches the ordered set too.
/// The set holds tokens alone (8 bytes each), so its nodes stay in cache
/// where a B-tree holding the entries themselves (88 bytes each) missed at
/// every level: that descent was a fifth of a SET's CPU
/// (`docs/BENCHMARKS.md`, node section 16). Range operations (a move's
/// copy, its cleanup, `SCAN`) walk the set in order.
///
/// Distinct keys share a token when they share a hash tag (`{user1}.a`,
/// `{user1}.b`), or on a 64-bit hash collision. So each token holds one
/// entry inline, the common case, and spills to a hash table by key
/// otherwise: a tag with m keys costs O(1) per point call, not O(m), and a
/// scan, which returns a token's keys together, sorts them, so that they
/// come in `(token, key)` order as the trait promises.
#[derive(Debug, Default)]
pub struct MemStore {
    /// Seeded per table: a token is an unseeded hash of the key, so
    /// without a seed keys could be chosen offline whose tokens share a
    /// bucket chain.
    slots: HashMap<Token, Slot, foldhash::fast::RandomState>,
    order: BTreeSet<Token>,
    len: usize,
}

#[derive(Debug)]
enum Slot {
    One(Bytes, Entry),
    /// The keys of one hash tag (or of a 64-bit collision), by key: a
    /// hash table, as a tag may hold most of a node's keys
    /// (`redis-benchmark --cluster` gives every key it sends one node the
    /// same tag), where a B-tree cost a comparison of keys per level.
    /// Seeded per table, so keys chosen to collide cannot slow it down.
    Many(HashMap<Bytes, Entry>),
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore::default()
    }

    /// Whether `key` is stored.
    pub(crate) fn contains(&self, token: Token, key: &[u8]) -> bool {
        match self.slots.get(&token) {
            Some(Slot::One(k, _)) => k.as_ref() == key,
            Some(Slot::Many(pairs)) => pairs.contains_key(key),
            None => false,
        }
    }
}

impl Store for MemStore {
    fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(match self.slots.get(&token) {
            Some(Slot::One(k, v)) if k.as_ref() == key => Some(v.clone()),
            Some(Slot::Many(pairs)) => pairs.get(key).cloned(),
            _ => None,
        })
    }

    fn put(&mut self, token: Token, key: Bytes, value: Entry) -> Result<Option<Entry>, StoreError> {
        use std::collections::hash_map::Entry;
        match self.slots.entry(token) {
            Entry::Vacant(e) => {
                e.insert(Slot::One(key, value));
                self.order.insert(token);
                self.len += 1;
                Ok(None)
            }
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                match slot {
                    Slot::One(k, v) if *k == key => Ok(Some(std::mem::replace(v, value))),
                    Slot::One(k, v) => {
                        let first = (k.clone(), v.clone());
                        *slot = Slot::Many(HashMap::from([first, (key, value)]));
                        self.len += 1;
                        Ok(None)
                    }
                    Slot::Many(pairs) => {
                        let previous = pairs.insert(key, value);
                        if previous.is_none() {
                            self.len += 1;
                        }
                        Ok(previous)
                    }
                }
            }
        }
    }

    fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        use std::collections::hash_map::Entry;
        let Entry::Occupied(mut e) = self.slots.entry(token) else {
            return Ok(None);
        };
        let removed = match e.get_mut() {
            Slot::One(k, _) if k.as_ref() == key => match e.remove() {
                Slot::One(_, v) => {
                    self.order.remove(&token);
                    Some(v)
                }
                Slot::Many(_) => unreachable!("matched One above"),
            },
            Slot::One(..) => None,
            Slot::Many(pairs) => {
                let v = pairs.remove(key);
                if pairs.is_empty() {
                    e.remove();
                    self.order.remove(&token);
                } else {
                    give_back_room(pairs);
                }
                v
            }
        };
        give_back_room(&mut self.slots);
        if removed.is_some() {
            self.len -= 1;
        }
        Ok(removed)
    }

    fn scan(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        let (lo, hi) = (*tokens.start(), *tokens.end());
        let lo = match after {
            Some(a) if a >= hi => return Ok(()),
            Some(a) if a >= lo => a + 1,
            _ => lo,
        };
        if lo > hi {
            return Ok(());
        }
        let mut taken = 0;
        for &token in self.order.range(lo..=hi) {
            if taken >= limit {
                break;
            }
            match &self.slots[&token] {
                Slot::One(k, v) => {
                    out.push(StoredEntry {
                        token,
                        key: k.clone(),
                        entry: v.clone(),
                    });
                    taken += 1;
                }
                Slot::Many(pairs) => {
                    let first = out.len();
                    out.extend(pairs.iter().map(|(k, v)| StoredEntry {
                        token,
                        key: k.clone(),
                        entry: v.clone(),
                    }));
                    by_key(&mut out[first..]);
                    taken += pairs.len();
                }
            }
        }
        Ok(())
    }

    fn visit(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        visit: &mut dyn FnMut(Token, &Bytes, &Entry) -> bool,
    ) -> Result<(usize, Option<Token>), StoreError> {
        let (lo, hi) = (*tokens.start(), *tokens.end());
        let lo = match after {
            Some(a) if a >= hi => return Ok((0, None)),
            Some(a) if a >= lo => a + 1,
            _ => lo,
        };
        let (mut n, mut last) = (0, None);
        if lo > hi {
            return Ok((n, last));
        }
        let mut sorted: Vec<(&Bytes, &Entry)> = Vec::new();
        for &token in self.order.range(lo..=hi) {
            if n >= limit {
                break;
            }
            last = Some(token);
            let go_on = match &self.slots[&token] {
                Slot::One(k, v) => {
                    n += 1;
                    visit(token, k, v)
                }
                Slot::Many(pairs) => {
                    sorted.clear();
                    sorted.extend(pairs.iter());
                    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    n += sorted.len();
                    let mut go_on = true;
                    for (k, v) in &sorted {
                        go_on &= visit(token, k, v);
                    }
                    go_on
                }
            };
            if !go_on {
                break;
            }
        }
        Ok((n, last))
    }

    fn take_range(
        &mut self,
        tokens: RangeInclusive<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        // Collect then remove: O(k log n) for k entries. (`split_off` plus
        // `append` would rebuild the whole set.)
        let doomed: Vec<Token> = self.order.range(tokens).copied().take(limit).collect();
        let mut removed = 0;
        for token in doomed {
            self.order.remove(&token);
            match self.slots.remove(&token) {
                Some(Slot::One(key, entry)) => {
                    out.push(StoredEntry { token, key, entry });
                    removed += 1;
                }
                Some(Slot::Many(pairs)) => {
                    removed += pairs.len();
                    let first = out.len();
                    out.extend(pairs.into_iter().map(|(key, entry)| StoredEntry {
                        token,
                        key,
                        entry,
                    }));
                    by_key(&mut out[first..]);
                }
                None => {}
            }
        }
        self.len -= removed;
        give_back_room(&mut self.slots);
        Ok(removed)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Gives a table's room back once it is mostly empty (a range moved
/// away, keys deleted): a hash table keeps its room where a B-tree freed
/// its nodes. One rehash of what is left, which the removals since the
/// table was last this full paid for.
fn give_back_room<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    table: &mut HashMap<K, V, S>,
) {
    if table.capacity() > 4 * table.len().max(16) {
        table.shrink_to(2 * table.len());
    }
}

/// Sorts the entries of one token by key: the order a scan promises.
fn by_key(entries: &mut [StoredEntry]) {
    entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn e(s: &[u8]) -> Entry {
        Entry::string(b(s))
    }

    #[test]
    fn colliding_tokens_keep_both_keys() {
        let mut s = MemStore::new();
        assert_eq!(s.put(7, b(b"a"), e(b"1")).unwrap(), None);
        assert_eq!(s.put(7, b(b"b"), e(b"2")).unwrap(), None);
        assert_eq!(s.put(7, b(b"a"), e(b"3")).unwrap(), Some(e(b"1")));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(7, b"a").unwrap(), Some(e(b"3")));
        assert_eq!(s.get(7, b"b").unwrap(), Some(e(b"2")));
        assert_eq!(s.get(7, b"c").unwrap(), None);
        let mut out = Vec::new();
        s.scan(0..=10, None, 1, &mut out).unwrap();
        assert_eq!(out.len(), 2, "both keys of one token come together");
        assert_eq!(s.delete(7, b"a").unwrap(), Some(e(b"3")));
        assert_eq!(s.delete(7, b"a").unwrap(), None);
        assert_eq!(s.delete(7, b"b").unwrap(), Some(e(b"2")));
        assert!(s.is_empty());
    }

    #[test]
    fn keys_sharing_a_token_scan_in_key_order() {
        // Keys of one hash tag share a token; the trait promises
        // `(token, key)` order, also after deletes.
        let mut s = MemStore::new();
        for k in [&b"{t}d"[..], b"{t}a", b"{t}c", b"{t}b"] {
            s.put(7, b(k), e(b"v")).unwrap();
        }
        s.delete(7, b"{t}a").unwrap();
        let mut out = Vec::new();
        s.scan(0..=10, None, 10, &mut out).unwrap();
        let keys: Vec<&[u8]> = out.iter().map(|e| e.key.as_ref()).collect();
        assert_eq!(keys, [&b"{t}b"[..], b"{t}c", b"{t}d"]);

        // Enough keys that a table's own order is not sorted by chance,
        // taken as scanned.
        let mut s = MemStore::new();
        let keys: Vec<Bytes> = (0..64u8).rev().map(|i| b(&[b'k', i])).collect();
        for k in &keys {
            s.put(7, k.clone(), e(b"v")).unwrap();
        }
        let mut sorted = keys;
        sorted.sort();
        let mut out = Vec::new();
        s.scan(0..=10, None, 1, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            sorted
        );
        let mut out = Vec::new();
        s.take_range(0..=10, 1, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            sorted
        );
    }

    #[test]
    fn tables_give_their_room_back_when_mostly_empty() {
        let mut s = MemStore::new();
        for t in 0..10_000u64 {
            s.put(t, b(&t.to_be_bytes()), e(b"v")).unwrap();
        }
        for k in 0..1_000u16 {
            s.put(20_000, b(&k.to_be_bytes()), e(b"v")).unwrap();
        }
        let full = s.slots.capacity();
        // A range taken away, then keys deleted one by one.
        s.take_range(0..=8_999, usize::MAX, &mut Vec::new())
            .unwrap();
        for t in 9_000..9_990u64 {
            s.delete(t, &t.to_be_bytes()).unwrap();
        }
        assert!(
            s.slots.capacity() < full / 16,
            "{} of {full}",
            s.slots.capacity()
        );
        let Some(Slot::Many(pairs)) = s.slots.get(&20_000) else {
            panic!("the tag's keys share a slot");
        };
        let tag_full = pairs.capacity();
        for k in 0..990u16 {
            s.delete(20_000, &k.to_be_bytes()).unwrap();
        }
        let Some(Slot::Many(pairs)) = s.slots.get(&20_000) else {
            panic!("ten keys are left");
        };
        assert!(
            pairs.capacity() < tag_full / 16,
            "{} of {tag_full}",
            pairs.capacity()
        );
        assert_eq!(s.len(), 10 + 10);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8, u8),
        Delete(u8, u8),
        DeleteRange(u8, u8),
        TakeRange(u8, u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..32u8, 0..4u8, any::<u8>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
            (0..32u8, 0..4u8).prop_map(|(t, k)| Op::Delete(t, k)),
            (0..32u8, 0..32u8).prop_map(|(a, b)| Op::DeleteRange(a.min(b), a.max(b))),
            (0..32u8, 0..32u8, 1..4u8).prop_map(|(a, b, n)| Op::TakeRange(a.min(b), a.max(b), n)),
        ]
    }

    proptest! {
        /// The store agrees with a `BTreeMap<(token, key), value>` model,
        /// including paged scans of arbitrary ranges and their order.
        #[test]
        fn matches_model(ops in prop::collection::vec(op(), 1..200), lo in 0..32u64, hi in 0..32u64, page in 1..5usize) {
            let mut s = MemStore::new();
            let mut m: Model<(u64, Vec<u8>), Vec<u8>> = Model::new();
            for op in ops {
                match op {
                    Op::Put(t, k, v) => {
                        let prev = s.put(t as u64, b(&[k]), e(&[v])).unwrap();
                        prop_assert_eq!(prev.map(|p| p.value.to_vec()), m.insert((t as u64, vec![k]), vec![v]));
                    }
                    Op::Delete(t, k) => {
                        let prev = s.delete(t as u64, &[k]).unwrap();
                        prop_assert_eq!(prev.map(|p| p.value.to_vec()), m.remove(&(t as u64, vec![k])));
                    }
                    Op::DeleteRange(a, z) => {
                        let n = s.delete_range(a as u64..=z as u64).unwrap();
                        let before = m.len();
                        m.retain(|(t, _), _| !(a as u64..=z as u64).contains(t));
                        prop_assert_eq!(n, before - m.len());
                    }
                    Op::TakeRange(a, z, limit) => {
                        let mut out = Vec::new();
                        let n = s.take_range(a as u64..=z as u64, limit as usize, &mut out).unwrap();
                        prop_assert_eq!(n, out.len());
                        // The lowest tokens of the range, whole tokens at a time.
                        let in_range: Vec<_> = m.keys().filter(|(t, _)| (a as u64..=z as u64).contains(t)).cloned().collect();
                        let all: std::collections::BTreeSet<u64> = in_range.iter().map(|(t, _)| *t).collect();
                        let tokens: std::collections::BTreeSet<u64> = all.into_iter().take(limit as usize).collect();
                        let want: Vec<_> = in_range.into_iter().filter(|(t, _)| tokens.contains(t)).collect();
                        // In `(token, key)` order, as taken.
                        let got: Vec<_> = out.iter().map(|e| (e.token, e.key.to_vec())).collect();
                        prop_assert_eq!(&got, &want);
                        for e in &out {
                            prop_assert_eq!(m.remove(&(e.token, e.key.to_vec())), Some(e.entry.value.to_vec()));
                        }
                    }
                }
                prop_assert_eq!(s.len(), m.len());
            }
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let start = got.len();
                s.scan(lo..=hi, after, page, &mut got).unwrap();
                if got.len() == start { break; }
                after = Some(got.last().unwrap().token);
            }
            // In `(token, key)` order, as the trait promises.
            let got: Vec<_> = got.into_iter().map(|e| ((e.token, e.key.to_vec()), e.entry.value.to_vec())).collect();
            let want: Vec<_> = m.range((lo, vec![])..).filter(|((t, _), _)| *t <= hi).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
