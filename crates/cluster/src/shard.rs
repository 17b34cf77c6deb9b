//! One lock stripe's data: a [`Store`] plus the bookkeeping that must
//! change with every store call — the bytes the stripe holds and the index
//! of its keys that have an expiry — kept in one place so that no caller
//! (client, migrator, cleanup, active expiry) can change the store without
//! it.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use ringkv_ring::Token;

use crate::entry::Entry;
use crate::store::{Store, StoreError, StoredEntry};

/// A store with its bookkeeping; lives behind its stripe's `RwLock`, so
/// every method that changes the store runs under the write lock.
///
/// A store call that fails changes nothing (the [`Store`] contract), so the
/// bookkeeping is updated only after a call succeeds. A store that panics
/// mid-call breaks that contract; the memory count may then be off until
/// the entries it concerns are rewritten.
pub(crate) struct Shard {
    store: Box<dyn Store>,
    /// Bytes held (see [`Entry::footprint`]), shared with the node so that
    /// `stats()` reads it without the lock. Changed only by the calls
    /// below, under the write lock.
    memory: Arc<AtomicI64>,
    /// The cluster's total of the same (what `maxmemory` is checked
    /// against in O(1)), changed by the same deltas.
    total: Arc<AtomicI64>,
    volatile: Volatile,
}

impl Shard {
    pub(crate) fn new(
        store: Box<dyn Store>,
        memory: Arc<AtomicI64>,
        total: Arc<AtomicI64>,
    ) -> Shard {
        Shard {
            store,
            memory,
            total,
            volatile: Volatile::default(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.store.get(token, key)
    }

    /// [`Store::put`], keeping memory and the volatile index right.
    #[inline]
    pub(crate) fn put(
        &mut self,
        token: Token,
        key: Bytes,
        entry: Entry,
    ) -> Result<Option<Entry>, StoreError> {
        let mut delta = entry.footprint(key.len()) as i64;
        let klen = key.len();
        let volatile = entry.expires_at.is_some();
        // The key is needed after the store took it only if the index may
        // change: a reference count, paid only where keys expire.
        let kept = (volatile || !self.volatile.keys.is_empty()).then(|| key.clone());
        let old = self.store.put(token, key, entry)?;
        if let Some(o) = &old {
            delta -= o.footprint(klen) as i64;
        }
        self.add_memory(delta);
        if let Some(key) = kept {
            if volatile {
                self.volatile.insert(token, key);
            } else if old.as_ref().is_some_and(|o| o.expires_at.is_some()) {
                self.volatile.remove(&key);
            }
        }
        Ok(old)
    }

    /// [`Store::put_many`], keeping memory and the volatile index right.
    pub(crate) fn put_many(
        &mut self,
        entries: Vec<StoredEntry>,
        replaced: &mut Vec<Option<Entry>>,
    ) -> Result<(), StoreError> {
        let start = replaced.len();
        // What the bookkeeping needs of each entry once the store took it.
        let kept: Vec<(Token, Bytes, usize, bool)> = entries
            .iter()
            .map(|e| {
                let footprint = e.entry.footprint(e.key.len());
                (
                    e.token,
                    e.key.clone(),
                    footprint,
                    e.entry.expires_at.is_some(),
                )
            })
            .collect();
        self.store.put_many(entries, replaced)?;
        let mut delta = 0i64;
        for ((token, key, footprint, volatile), old) in kept.into_iter().zip(&replaced[start..]) {
            delta += footprint as i64;
            if let Some(o) = old {
                delta -= o.footprint(key.len()) as i64;
            }
            if volatile {
                self.volatile.insert(token, key);
            } else if old.as_ref().is_some_and(|o| o.expires_at.is_some()) {
                self.volatile.remove(&key);
            }
        }
        self.add_memory(delta);
        Ok(())
    }

    /// Rebuilds the bookkeeping of a store opened with entries in it (a
    /// restart): deletes the entries `keep` refuses (copies this node does
    /// not serve: a stale source copy, a partial target copy), counts the
    /// rest in memory and the volatile index. Returns how many entries are
    /// kept and how many deleted, and raises `max_version` to the highest
    /// version kept.
    pub(crate) fn load(
        &mut self,
        tokens: RangeInclusive<Token>,
        keep: impl Fn(Token) -> bool,
        page: usize,
        max_version: &mut u64,
    ) -> Result<(usize, usize), StoreError> {
        self.store.load(tokens.clone())?;
        let (mut kept, mut dropped) = (0, 0);
        let mut batch = Vec::with_capacity(page);
        // Runs of consecutive entries to delete, as token intervals: one
        // range removal each instead of a write per key.
        let mut doomed: Vec<RangeInclusive<Token>> = Vec::new();
        let mut run: Option<RangeInclusive<Token>> = None;
        let mut after = None;
        loop {
            batch.clear();
            self.store.scan(tokens.clone(), after, page, &mut batch)?;
            let Some(last) = batch.last() else { break };
            after = Some(last.token);
            let done = batch.len() < page;
            for e in batch.drain(..) {
                if !keep(e.token) {
                    run = Some(run.map_or(e.token..=e.token, |r| *r.start()..=e.token));
                    continue;
                }
                doomed.extend(run.take());
                kept += 1;
                *max_version = (*max_version).max(e.entry.version);
                self.add_memory(e.entry.footprint(e.key.len()) as i64);
                if e.entry.expires_at.is_some() {
                    self.volatile.insert(e.token, e.key);
                }
            }
            if done {
                break;
            }
        }
        doomed.extend(run);
        let mut freed = Vec::new();
        for tokens in doomed {
            dropped += self.store.take_range(tokens, usize::MAX, &mut freed)?;
            freed.clear();
        }
        Ok((kept, dropped))
    }

    /// [`Store::delete`], keeping memory and the volatile index right.
    #[inline]
    pub(crate) fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let old = self.store.delete(token, key)?;
        if let Some(o) = &old {
            self.add_memory(-(o.footprint(key.len()) as i64));
            if o.expires_at.is_some() {
                self.volatile.remove(key);
            }
        }
        Ok(old)
    }

    /// [`Store::revert`]: puts `old` back under `key` after a transaction
    /// whose writes were not kept, keeping memory and the volatile index
    /// right. Returns the entry it replaced (the undone write).
    pub(crate) fn revert(
        &mut self,
        token: Token,
        key: Bytes,
        old: Option<Entry>,
    ) -> Result<Option<Entry>, StoreError> {
        let klen = key.len();
        let restored = old
            .as_ref()
            .map(|o| (o.footprint(klen) as i64, o.expires_at.is_some()));
        let undone = self.store.revert(token, key.clone(), old)?;
        let mut delta = restored.map_or(0, |(f, _)| f);
        if let Some(u) = &undone {
            delta -= u.footprint(klen) as i64;
        }
        self.add_memory(delta);
        match restored {
            Some((_, true)) => self.volatile.insert(token, key),
            _ if undone.as_ref().is_some_and(|u| u.expires_at.is_some()) => {
                self.volatile.remove(&key)
            }
            _ => {}
        }
        Ok(undone)
    }

    /// [`Store::scan`].
    pub(crate) fn scan(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        self.store.scan(tokens, after, limit, out)
    }

    /// [`Store::visit`].
    pub(crate) fn visit(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        visit: &mut dyn FnMut(Token, &Bytes, &Entry) -> bool,
    ) -> Result<(usize, Option<Token>), StoreError> {
        self.store.visit(tokens, after, limit, visit)
    }

    /// [`Store::take_range`], keeping memory and the volatile index right.
    pub(crate) fn take_range(
        &mut self,
        tokens: RangeInclusive<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        let start = out.len();
        let n = self.store.take_range(tokens, limit, out)?;
        let mut freed = 0i64;
        for e in &out[start..] {
            freed += e.entry.footprint(e.key.len()) as i64;
            if e.entry.expires_at.is_some() {
                self.volatile.remove(&e.key);
            }
        }
        self.add_memory(-freed);
        Ok(n)
    }

    /// Removes every entry of `tokens`; returns how many.
    pub(crate) fn delete_range(
        &mut self,
        tokens: RangeInclusive<Token>,
    ) -> Result<usize, StoreError> {
        let mut out = Vec::new();
        self.take_range(tokens, usize::MAX, &mut out)
    }

    #[inline]
    fn add_memory(&self, delta: i64) {
        if delta != 0 {
            self.memory.fetch_add(delta, Ordering::Relaxed);
            self.total.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Entries stored.
    pub(crate) fn len(&self) -> usize {
        self.store.len()
    }

    /// Keys with an expiry stored here.
    pub(crate) fn volatile_len(&self) -> usize {
        self.volatile.keys.len()
    }

    /// The volatile key at `i` (`i < volatile_len()`), for uniform sampling.
    pub(crate) fn volatile_at(&self, i: usize) -> (Token, Bytes) {
        self.volatile.keys[i].clone()
    }
}

/// The keys of a stripe that have an expiry, in a vector (uniform random
/// sampling in O(1)) with a map from key to position (O(1) removal by
/// swapping the last key into the hole), as Redis's `expires` dictionary
/// serves its sampling.
#[derive(Default)]
struct Volatile {
    keys: Vec<(Token, Bytes)>,
    position: HashMap<Bytes, usize>,
}

impl Volatile {
    fn insert(&mut self, token: Token, key: Bytes) {
        if self.position.contains_key(&key) {
            return;
        }
        self.position.insert(key.clone(), self.keys.len());
        self.keys.push((token, key));
    }

    fn remove(&mut self, key: &[u8]) {
        let Some(i) = self.position.remove(key) else {
            return;
        };
        self.keys.swap_remove(i);
        if let Some((_, moved)) = self.keys.get(i) {
            *self
                .position
                .get_mut(moved)
                .expect("every indexed key has a position") = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The volatile index holds exactly the stored keys with an expiry,
        /// and the byte count equals a recount, after any sequence of puts,
        /// deletes and range removals.
        #[test]
        fn bookkeeping_matches_the_store(ops in prop::collection::vec((0..4u8, 0..12u64, 0..8u8, 0..20usize), 1..200)) {
            let (memory, total) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
            let mut shard = Shard::new(Box::new(MemStore::new()), memory.clone(), total.clone());
            let mut model: BTreeMap<(u64, Vec<u8>), Entry> = BTreeMap::new();
            for (op, t, k, len) in ops {
                // The store's contract: a key always has the same token;
                // two keys share one (a hash collision) here and there.
                let key = Bytes::from(vec![k; 1 + usize::from(k)]);
                let (t, range_start) = (u64::from(k / 2) * 3, t);
                match op {
                    0 | 1 => {
                        let e = Entry::string(vec![7u8; len]).expiring((op == 1).then_some(5));
                        shard.put(t, key.clone(), e.clone()).unwrap();
                        model.insert((t, key.to_vec()), e);
                    }
                    2 => {
                        shard.delete(t, &key).unwrap();
                        model.remove(&(t, key.to_vec()));
                    }
                    _ => {
                        let hi = range_start + len as u64;
                        shard.delete_range(range_start..=hi).unwrap();
                        model.retain(|(tok, _), _| !(range_start..=hi).contains(tok));
                    }
                }
                let want: i64 = model.iter().map(|((_, k), e)| e.footprint(k.len()) as i64).sum();
                prop_assert_eq!(memory.load(Ordering::Relaxed), want);
                prop_assert_eq!(total.load(Ordering::Relaxed), want);
                let mut volatile: Vec<(u64, Vec<u8>)> = (0..shard.volatile_len())
                    .map(|i| { let (t, k) = shard.volatile_at(i); (t, k.to_vec()) })
                    .collect();
                volatile.sort();
                let want: Vec<(u64, Vec<u8>)> = model.iter().filter(|(_, e)| e.expires_at.is_some()).map(|(k, _)| k.clone()).collect();
                prop_assert_eq!(volatile, want);
            }
        }
    }
}
