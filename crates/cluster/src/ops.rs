//! Client operations on single keys: the lock-and-check protocol that
//! makes them linearizable per key, also while ranges move.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ringkv_ring::key_token;

use crate::cluster::Cluster;
use crate::plan::Phase;
use crate::shard::Shard;
use crate::store::StoreError;
use crate::{ClusterError, Entry};

/// What [`Cluster::update`] does with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Leave the key as it is.
    Keep,
    /// Store this value, keeping the key's expiry (as Redis's `INCR` and
    /// `APPEND` do).
    Put(Bytes),
    /// Delete the key.
    Delete,
}

/// What [`Cluster::update_entry`] does with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryUpdate {
    /// Leave the key as it is (an expired key is still reclaimed).
    Keep,
    /// Store this entry (its version is replaced by a fresh one).
    Put(Entry),
    /// Delete the key.
    Delete,
}

/// Why an `apply` of [`Cluster::write`] stopped: its store failed, or the
/// write was refused (nothing written but the reclaiming of an expired
/// entry, whose served-key delta it carries).
pub(crate) enum WriteError {
    Store(StoreError),
    Refused(ClusterError, i64),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl Cluster {
    /// Whether `key` is present (and not expired).
    pub fn exists(&self, key: &[u8]) -> Result<bool, ClusterError> {
        Ok(self.get_entry(key)?.is_some())
    }

    /// The value of `key`, or `None` if it is absent or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, ClusterError> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// The entry of `key` (value, expiry, type, version), or `None` if it
    /// is absent or expired.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>, ClusterError> {
        let token = key_token(key);
        loop {
            let seen = self.routing.load();
            let (node, _) = seen.authority(token)?;
            let store = node.read(token)?;
            // Ownership of the token can only move away from `node` under
            // the write lock of its stripe, which we now exclude; check it
            // has not moved already.
            let now = self.routing.load();
            let still = if Arc::ptr_eq(&now, &seen) && now.migration.is_none() {
                true
            } else {
                Arc::ptr_eq(now.authority(token)?.0, node)
            };
            if still {
                let entry = store.get(token, key).map_err(|e| node.store_error(e))?;
                // The clock is read only for keys that can expire. An
                // expired key is left for a writer or active expiry to
                // reclaim: a read holds only the shared lock.
                return Ok(entry.filter(|e| e.expires_at.is_none() || !e.is_expired(self.now_ms())));
            }
        }
    }

    /// Stores `value` under `key`, replacing any previous value and
    /// clearing its expiry (as Redis's `SET` does).
    ///
    /// With `maxmemory` set, fails with [`ClusterError::OutOfMemory`]
    /// (nothing written) if `used_memory` plus the new entry's footprint
    /// would exceed it once the eviction policy had its turn; the entry it
    /// replaces is not subtracted, as the check runs before the key is
    /// locked.
    pub fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), ClusterError> {
        let key = key.into();
        let entry = Entry::string(value);
        self.make_room(entry.footprint(key.len()) as u64)?;
        let mut entry = Some(entry);
        self.write(key, |store, token, key, version| {
            let mut entry = entry.take().expect("write applies once");
            entry.version = version;
            let old = store.put(token, key.clone(), entry)?;
            self.count_if_expired(old.as_ref());
            Ok(((), if old.is_none() { 1 } else { 0 }))
        })
    }

    /// Stores `entry` under `key` as given (value, expiry, type), replacing
    /// any previous entry; its `version` is replaced by a fresh one, which
    /// is returned. Memory limits as for [`Cluster::put`].
    /// `SET key value PX 100` is
    /// `put_entry(key, Entry::string(value).expiring(Some(now + 100)))`.
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, Entry};
    /// # let cluster = Cluster::default();
    /// # cluster.add_node("n1")?;
    /// let v = cluster.put_entry("k", Entry::string("v").expiring(Some(u64::MAX)))?;
    /// let e = cluster.get_entry(b"k")?.unwrap();
    /// assert_eq!((e.version, e.expires_at), (v, Some(u64::MAX)));
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn put_entry(&self, key: impl Into<Bytes>, entry: Entry) -> Result<u64, ClusterError> {
        let key = key.into();
        self.make_room(entry.footprint(key.len()) as u64)?;
        let mut entry = Some(entry);
        self.write(key, |store, token, key, version| {
            let mut entry = entry.take().expect("write applies once");
            entry.version = version;
            let old = store.put(token, key.clone(), entry)?;
            self.count_if_expired(old.as_ref());
            Ok((version, if old.is_none() { 1 } else { 0 }))
        })
    }

    /// Removes `key`. Returns whether it was present.
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<bool, ClusterError> {
        self.write(key.into(), |store, token, key, _| {
            let old = store.delete(token, key)?;
            let expired = self.count_if_expired(old.as_ref());
            Ok((
                old.is_some() && !expired,
                if old.is_some() { -1 } else { 0 },
            ))
        })
    }

    /// Atomically reads and rewrites one key: `f` receives the current value
    /// and returns what to do with it ([`Update`]) together with a result
    /// for the caller. Nothing else can touch the key in between, also
    /// while its range is being moved; counters and compare-and-set are
    /// built on this. A value put keeps the key's expiry.
    ///
    /// `f` runs exactly once, under the lock of the key's stripe, so it
    /// must be short and must not call back into the cluster.
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, Update};
    /// # let cluster = Cluster::default();
    /// # cluster.add_node("n1")?;
    /// let next = cluster.update("hits", |old| {
    ///     let n = old.map_or(0, |v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap()) + 1;
    ///     (Update::Put(n.to_string().into()), n)
    /// })?;
    /// assert_eq!(next, 1);
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn update<R>(
        &self,
        key: impl Into<Bytes>,
        f: impl FnOnce(Option<&Bytes>) -> (Update, R),
    ) -> Result<R, ClusterError> {
        let mut f = Some(f);
        // Over the limit already: evict first, without holding a lock
        // (the write itself is checked once its size is known).
        let _ = self.make_room(0);
        self.write(key.into(), |store, token, key, version| {
            let f = f.take().expect("write applies once");
            let (current, reclaimed) = self.live(store, token, key, None)?;
            let (update, result) = f(current.as_ref().map(|e| &e.value));
            let delta = reclaimed
                + match (update, current) {
                    (Update::Keep, _) => 0,
                    (Update::Put(value), current) => {
                        let entry = Entry {
                            value,
                            expires_at: current.as_ref().and_then(|e| e.expires_at),
                            version,
                            ..Entry::default()
                        };
                        self.admit(key, &entry, current.as_ref())
                            .map_err(|e| WriteError::Refused(e, reclaimed))?;
                        store.put(token, key.clone(), entry)?;
                        if current.is_some() { 0 } else { 1 }
                    }
                    (Update::Delete, current) => {
                        store.delete(token, key)?;
                        if current.is_some() { -1 } else { 0 }
                    }
                };
            Ok((result, delta))
        })
    }

    /// Atomically reads and rewrites one key's whole entry: `f` receives
    /// the live entry (`None` if the key is absent or expired) and the
    /// clock's time (unix ms) the check was made at, and returns what to
    /// do ([`EntryUpdate`]) and a result for the caller. As
    /// [`Cluster::update`] (atomic per key, also while its range moves;
    /// `f` runs once, under the stripe's write lock, and must not call
    /// back into the cluster), but `f` decides the expiry and type too.
    ///
    /// With `maxmemory` set, a [`EntryUpdate::Put`] that would take
    /// `used_memory` over it (by the new footprint minus the stored one)
    /// fails with [`ClusterError::OutOfMemory`] and writes nothing; `f`'s
    /// result is dropped then. [`Cluster::update`] checks the same way.
    ///
    /// An expired key found here is deleted first (counted in
    /// [`ClusterStats::expired_keys`](crate::ClusterStats::expired_keys)),
    /// whatever `f` returns. [`EntryUpdate::Put`] stores the entry as given
    /// but for its version, which is replaced by a fresh one.
    ///
    /// Redis's expiry commands map onto it; `EXPIRE key 10 GT`:
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, Entry, EntryUpdate};
    /// # let cluster = Cluster::default();
    /// # cluster.add_node("n1")?;
    /// cluster.put("key", "v")?;
    /// let set = cluster.update_entry("key", |live, now| match live {
    ///     None => (EntryUpdate::Keep, false),
    ///     Some(e) => {
    ///         let at = now + 10_000;
    ///         // GT: a key without expiry counts as an infinite TTL.
    ///         if e.expires_at.is_none_or(|old| at <= old) {
    ///             return (EntryUpdate::Keep, false);
    ///         }
    ///         (EntryUpdate::Put(e.clone().expiring(Some(at))), true)
    ///     }
    /// })?;
    /// assert!(!set);
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn update_entry<R>(
        &self,
        key: impl Into<Bytes>,
        f: impl FnOnce(Option<&Entry>, u64) -> (EntryUpdate, R),
    ) -> Result<R, ClusterError> {
        let mut f = Some(f);
        let _ = self.make_room(0);
        self.write(key.into(), |store, token, key, version| {
            let f = f.take().expect("write applies once");
            let now = self.now_ms();
            let (current, reclaimed) = self.live(store, token, key, Some(now))?;
            let (update, result) = f(current.as_ref(), now);
            let delta = reclaimed
                + match update {
                    EntryUpdate::Keep => 0,
                    EntryUpdate::Put(mut entry) => {
                        entry.version = version;
                        self.admit(key, &entry, current.as_ref())
                            .map_err(|e| WriteError::Refused(e, reclaimed))?;
                        store.put(token, key.clone(), entry)?;
                        if current.is_some() { 0 } else { 1 }
                    }
                    EntryUpdate::Delete => {
                        store.delete(token, key)?;
                        if current.is_some() { -1 } else { 0 }
                    }
                };
            Ok((result, delta))
        })
    }

    /// The live entry of `key` under its stripe's write lock (on the
    /// authority): an expired entry is deleted and counted as expired.
    /// Returns it and the served-key delta of that deletion. `now` is read
    /// from the clock only if the entry can expire and none is given.
    fn live(
        &self,
        store: &mut Shard,
        token: u64,
        key: &Bytes,
        now: Option<u64>,
    ) -> Result<(Option<Entry>, i64), StoreError> {
        let current = store.get(token, key)?;
        match current {
            Some(e)
                if e.expires_at.is_some() && e.is_expired(now.unwrap_or_else(|| self.now_ms())) =>
            {
                store.delete(token, key)?;
                self.expired_keys.fetch_add(1, Ordering::Relaxed);
                Ok((None, -1))
            }
            other => Ok((other, 0)),
        }
    }

    /// Refuses (nothing written) a put of `entry` over `old` that would
    /// take `used_memory` over `maxmemory`.
    #[inline]
    fn admit(&self, key: &Bytes, entry: &Entry, old: Option<&Entry>) -> Result<(), ClusterError> {
        let growth =
            entry.footprint(key.len()) as i64 - old.map_or(0, |o| o.footprint(key.len()) as i64);
        if self.fits(growth) {
            Ok(())
        } else {
            Err(self.out_of_memory())
        }
    }

    /// Counts `old` (an entry a write replaced or deleted) in
    /// `expired_keys` if it had expired; returns whether it had.
    #[inline]
    fn count_if_expired(&self, old: Option<&Entry>) -> bool {
        let expired = old.is_some_and(|o| o.expires_at.is_some() && o.is_expired(self.now_ms()));
        if expired {
            self.expired_keys.fetch_add(1, Ordering::Relaxed);
        }
        expired
    }

    /// A fresh modification version (see [`Entry::version`]).
    #[inline]
    pub(crate) fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Applies `apply` to `key` on the node serving it, under its stripe's
    /// write lock; `apply` gets the version to stamp on what it writes and
    /// returns its result and how many keys it created (1) or removed
    /// (-1), for the node's served-key count. Under `--fsync always` it
    /// returns once the write is on disk, waiting with no lock held.
    #[inline]
    fn write<R>(
        &self,
        key: Bytes,
        apply: impl FnMut(&mut Shard, u64, &Bytes, u64) -> Result<(R, i64), WriteError>,
    ) -> Result<R, ClusterError> {
        let result = self.write_locked(key, apply)?;
        self.sync_ack()?;
        Ok(result)
    }

    /// [`Cluster::write`] up to the release of the stripe's lock.
    fn write_locked<R>(
        &self,
        key: Bytes,
        mut apply: impl FnMut(&mut Shard, u64, &Bytes, u64) -> Result<(R, i64), WriteError>,
    ) -> Result<R, ClusterError> {
        let token = key_token(&key);
        loop {
            let seen = self.routing.load();
            let (node, _) = seen.authority(token)?;
            let mut store = node.write(token)?;
            let now = self.routing.load();
            let (owner, range) = if Arc::ptr_eq(&now, &seen) && now.migration.is_none() {
                (node, None)
            } else {
                now.authority(token)?
            };
            if !Arc::ptr_eq(owner, node) {
                continue;
            }
            // Under the owner's write lock the range's phase is stable:
            // a write to a range being copied is logged for the switch.
            if let Some(range) = range
                && range.phase() == Phase::Copying
            {
                range.mark_dirty(&key);
            }
            let version = self.next_version();
            let (result, delta) = match apply(&mut store, token, &key, version) {
                Ok(done) => done,
                Err(WriteError::Store(e)) => return Err(node.store_error(e)),
                Err(WriteError::Refused(e, delta)) => {
                    node.add_served(node.stripe_of(token), delta);
                    return Err(e);
                }
            };
            // Still under the stripe's write lock, so a switch of this range
            // moves the count with this write included.
            node.add_served(node.stripe_of(token), delta);
            return Ok(result);
        }
    }
}
