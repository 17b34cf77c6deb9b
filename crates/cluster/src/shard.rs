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
    volatile: Volatile,
}

impl Shard {
    pub(crate) fn new(store: Box<dyn Store>, memory: Arc<AtomicI64>) -> Shard {
        Shard {
            store,
            memory,
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
        self.memory.fetch_add(delta, Ordering::Relaxed);
        if let Some(key) = kept {
            if volatile {
                self.volatile.insert(token, key);
            } else if old.as_ref().is_some_and(|o| o.expires_at.is_some()) {
                self.volatile.remove(&key);
            }
        }
        Ok(old)
    }

    /// [`Store::delete`], keeping memory and the volatile index right.
    #[inline]
    pub(crate) fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let old = self.store.delete(token, key)?;
        if let Some(o) = &old {
            self.memory
                .fetch_sub(o.footprint(key.len()) as i64, Ordering::Relaxed);
            if o.expires_at.is_some() {
                self.volatile.remove(key);
            }
        }
        Ok(old)
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
        self.memory.fetch_sub(freed, Ordering::Relaxed);
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
