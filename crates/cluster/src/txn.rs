//! Multi-key transactions: [`Cluster::transaction`] runs a closure with
//! read and write access to a set of keys, atomically and in isolation,
//! across nodes and while their ranges move.
//!
//! The transaction write-locks the stripe of every key on the node serving
//! it, in the global lock order (ascending `(node id, stripe)`, the order a
//! range switch uses too, see `transfer::lock_both`), so no cycle of
//! waiters can form. Under the locks it re-checks that each node still
//! serves its keys (authority moves only under those locks) and retries
//! from the start if one moved. The closure works on a snapshot of the
//! keys' live entries; its writes are staged and applied when it returns,
//! still under the locks, each as a client write would be (fresh version,
//! served-key count, dirty-key log of a range being copied).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ringkv_ring::{Token, key_token};

use crate::ClusterError;
use crate::cluster::Cluster;
use crate::entry::Entry;
use crate::node::{Node, StripeWrite};
use crate::plan::Phase;

/// The keys of a [`Cluster::transaction`]: their live entries when it
/// started, and the writes staged so far. Reads see the transaction's own
/// writes.
#[derive(Debug)]
pub struct Txn {
    now: u64,
    keys: HashMap<Bytes, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// The live entry now (after staged writes).
    current: Option<Entry>,
    /// Whether a write was staged.
    written: bool,
    /// The footprint of what is stored now (expired or not), for the
    /// memory check.
    stored: i64,
}

impl Txn {
    /// The clock's time (unix ms) the transaction's expiry checks use.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The live entry of `key` (after this transaction's own writes).
    ///
    /// # Panics
    /// If `key` was not among the transaction's keys: only those are
    /// locked.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.slot(key).current.as_ref()
    }

    /// The modification version of `key`, `None` if it is absent or
    /// expired: equal to the version read before (with
    /// [`Cluster::version`]) exactly when nothing wrote the key since and
    /// it did not expire. WATCH compares these.
    ///
    /// # Panics
    /// If `key` was not among the transaction's keys.
    pub fn version(&self, key: &[u8]) -> Option<u64> {
        self.get(key).map(|e| e.version)
    }

    /// Stages `entry` under `key` (applied when the closure returns; its
    /// version is replaced by a fresh one then).
    ///
    /// # Panics
    /// If `key` was not among the transaction's keys.
    pub fn put(&mut self, key: &[u8], entry: Entry) {
        let slot = self.slot_mut(key);
        slot.current = Some(entry);
        slot.written = true;
    }

    /// Stages the deletion of `key`; returns whether it was present.
    ///
    /// # Panics
    /// If `key` was not among the transaction's keys.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let slot = self.slot_mut(key);
        slot.written = true;
        slot.current.take().is_some()
    }

    fn slot(&self, key: &[u8]) -> &Slot {
        self.keys.get(key).unwrap_or_else(|| {
            panic!("key {key:?} is not locked by this transaction; list it in its keys")
        })
    }

    fn slot_mut(&mut self, key: &[u8]) -> &mut Slot {
        self.keys.get_mut(key).unwrap_or_else(|| {
            panic!("key {key:?} is not locked by this transaction; list it in its keys")
        })
    }
}

/// One key's place: its token, its node and the index of its stripe guard.
struct Place {
    key: Bytes,
    token: u64,
    guard: usize,
}

impl Cluster {
    /// Runs `f` with read and write access to `keys`, atomically and in
    /// isolation: no other client operation, transaction, expiry or range
    /// switch touches these keys between the first read and the last write,
    /// across nodes, also while their ranges move. `f`'s writes are staged
    /// in the [`Txn`] and applied when it returns; if it returns without
    /// writing, nothing changes. Repeated keys are fine.
    ///
    /// `f` runs exactly once, holding the write locks of the keys'
    /// stripes: it must be short and must not call back into the cluster.
    /// MSET, MSETNX, RENAME, COPY and MULTI/EXEC (with WATCH, through
    /// [`Txn::version`]) build on it.
    ///
    /// Errors: [`ClusterError::Unavailable`] if a node serving one of the
    /// keys is down (nothing ran); [`ClusterError::OutOfMemory`] if the
    /// staged writes together would take `used_memory` over `maxmemory`
    /// (`f` ran, nothing was written, its result is dropped);
    /// [`ClusterError::Store`] or [`ClusterError::Storage`] if a store or
    /// the data directory fails while the staged writes are applied (the
    /// writes already applied are undone: nothing was written).
    ///
    /// A transfer that keeps a sum:
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, Entry};
    /// # let cluster = Cluster::default();
    /// # cluster.add_node("n1")?;
    /// # cluster.add_node("n2")?;
    /// cluster.put("a", "10")?;
    /// cluster.put("b", "0")?;
    /// let watched = cluster.version(b"a")?;
    /// let done = cluster.transaction(["a", "b"], |txn| {
    ///     if txn.version(b"a") != watched {
    ///         return false; // WATCH: somebody wrote `a` meanwhile
    ///     }
    ///     let n = |k: &[u8]| -> i64 { std::str::from_utf8(&txn.get(k).unwrap().value).unwrap().parse().unwrap() };
    ///     let (a, b) = (n(b"a"), n(b"b"));
    ///     txn.put(b"a", Entry::string((a - 3).to_string()));
    ///     txn.put(b"b", Entry::string((b + 3).to_string()));
    ///     true
    /// })?;
    /// assert!(done);
    /// assert_eq!(cluster.get(b"b")?.as_deref(), Some(&b"3"[..]));
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn transaction<K, R>(
        &self,
        keys: impl IntoIterator<Item = K>,
        f: impl FnOnce(&mut Txn) -> R,
    ) -> Result<R, ClusterError>
    where
        K: Into<Bytes>,
    {
        let mut keys: Vec<Bytes> = keys.into_iter().map(Into::into).collect();
        keys.sort_unstable();
        keys.dedup();
        // Over the limit already: evict first, before taking any lock (the
        // writes are checked once `f` has staged them).
        let _ = self.make_room(0);
        self.locked(&keys, |routing, locks, guards, places| {
            let mut txn = self.read_locked(locks, guards, places)?;
            let result = f(&mut txn);
            self.apply_locked(routing, locks, guards, places, txn)?;
            Ok(result)
        })
    }

    /// Writes every `(key, entry)` as one transaction that reads nothing:
    /// what [`Cluster::transaction`] does with a closure that only puts
    /// (a later pair of the same key wins), without first reading each key
    /// under its lock, which only the memory check needs. So with a
    /// `maxmemory` set it is that transaction. Pipelined SETs and the
    /// pages of a range copy are written this way.
    ///
    /// Errors: as [`Cluster::transaction`]'s.
    pub fn put_all(&self, pairs: Vec<(Bytes, Entry)>) -> Result<(), ClusterError> {
        if self.maxmemory() != 0 {
            let keys: Vec<Bytes> = pairs.iter().map(|(k, _)| k.clone()).collect();
            return self.transaction(keys, |t| {
                for (key, entry) in pairs {
                    t.put(&key, entry);
                }
            });
        }
        // No staging map and no sort: the pairs are written in order under
        // the locks, so a later pair of a key replaces an earlier one.
        let (keys, entries): (Vec<Bytes>, Vec<Entry>) = pairs.into_iter().unzip();
        self.locked(&keys, |routing, locks, guards, places| {
            // The clock under the locks, as a transaction reads it.
            let now = self.now_ms();
            let writes = places.iter().zip(entries).map(|(p, e)| (p, Some(e)));
            self.apply_writes(routing, locks, guards, writes, now)
        })
    }

    /// Write-locks the stripes of `keys` (without repeats, or for writes
    /// only, where a repeat is written twice) in the
    /// global lock order, checks that each key's node still serves it
    /// (retrying from the start if one moved), runs `run` under the locks,
    /// then acknowledges as the fsync policy says.
    fn locked<R>(
        &self,
        keys: &[Bytes],
        run: impl FnOnce(
            &crate::routing::Routing,
            &[(Arc<Node>, usize)],
            &mut [StripeWrite<'_>],
            &[Place],
        ) -> Result<R, ClusterError>,
    ) -> Result<R, ClusterError> {
        loop {
            let seen = self.routing.load_full();
            // Each key's node and stripe, and the locks in global order.
            let mut locks: Vec<(Arc<Node>, usize)> = Vec::with_capacity(keys.len());
            let mut places = Vec::with_capacity(keys.len());
            for key in keys {
                let token = key_token(key);
                let (node, _) = seen.authority(token)?;
                let stripe = node.stripe_of(token);
                locks.push((node.clone(), stripe));
                places.push((key.clone(), token, node.clone(), stripe));
            }
            locks.sort_by(|a, b| (&a.0.id, a.1).cmp(&(&b.0.id, b.1)));
            locks.dedup_by(|a, b| Arc::ptr_eq(&a.0, &b.0) && a.1 == b.1);
            let mut guards: Vec<StripeWrite<'_>> = Vec::with_capacity(locks.len());
            for (node, stripe) in &locks {
                guards.push(node.client_write_stripe(*stripe)?);
            }
            // Authority over each key can move away only under the lock we
            // now hold; check none moved before we got it.
            let now_routing = self.routing.load();
            let mut moved = false;
            let places: Vec<Place> = places
                .into_iter()
                .map(|(key, token, node, stripe)| {
                    if !now_routing
                        .authority(token)
                        .is_ok_and(|(o, _)| Arc::ptr_eq(o, &node))
                    {
                        moved = true;
                    }
                    let guard = locks
                        .binary_search_by(|(n, s)| (&n.id, *s).cmp(&(&node.id, stripe)))
                        .expect("every key's stripe is locked");
                    Place { key, token, guard }
                })
                .collect();
            if moved {
                continue;
            }
            let result = run(&now_routing, &locks, &mut guards, &places)?;
            drop(guards);
            self.sync_ack()?;
            return Ok(result);
        }
    }

    /// The modification version of `key` ([`Entry::version`]), `None` if
    /// it is absent or expired: what WATCH records, to compare with
    /// [`Txn::version`] in the transaction that EXEC runs.
    pub fn version(&self, key: &[u8]) -> Result<Option<u64>, ClusterError> {
        Ok(self.get_entry(key)?.map(|e| e.version))
    }

    /// The keys' entries, read under their locks: the transaction's
    /// snapshot.
    fn read_locked(
        &self,
        locks: &[(Arc<Node>, usize)],
        guards: &mut [StripeWrite<'_>],
        places: &[Place],
    ) -> Result<Txn, ClusterError> {
        let now = self.now_ms();
        let mut txn = Txn {
            now,
            keys: HashMap::with_capacity(places.len()),
        };
        for p in places {
            let node = &locks[p.guard].0;
            let entry = guards[p.guard]
                .get(p.token, &p.key)
                .map_err(|e| node.store_error(e))?;
            let stored = entry
                .as_ref()
                .map_or(0, |e| e.footprint(p.key.len()) as i64);
            let current = entry.filter(|e| !e.is_expired(now));
            txn.keys.insert(
                p.key.clone(),
                Slot {
                    current,
                    written: false,
                    stored,
                },
            );
        }
        Ok(txn)
    }

    /// Applies the writes staged in `txn`, all or none; the locks are
    /// held. Refuses them if together they would take `used_memory` over
    /// `maxmemory` (the slots' `stored` footprints were read).
    fn apply_locked(
        &self,
        routing: &crate::routing::Routing,
        locks: &[(Arc<Node>, usize)],
        guards: &mut [StripeWrite<'_>],
        places: &[Place],
        mut txn: Txn,
    ) -> Result<(), ClusterError> {
        let now = txn.now;
        // All or nothing: the staged writes must fit under maxmemory
        // together, or none is applied.
        let growth: i64 = txn
            .keys
            .iter()
            .filter(|(_, slot)| slot.written)
            .map(|(key, slot)| {
                slot.current
                    .as_ref()
                    .map_or(0, |e| e.footprint(key.len()) as i64)
                    - slot.stored
            })
            .sum();
        if !self.fits(growth) {
            return Err(self.out_of_memory());
        }
        let writes = places.iter().filter_map(|p| {
            let slot = txn.keys.remove(&p.key).expect("every key has a slot");
            slot.written.then_some((p, slot.current))
        });
        self.apply_writes(routing, locks, guards, writes, now)
    }

    /// Applies `writes` (a put, or a delete for `None`), all or none; the
    /// locks are held.
    fn apply_writes<'p>(
        &self,
        routing: &crate::routing::Routing,
        locks: &[(Arc<Node>, usize)],
        guards: &mut [StripeWrite<'_>],
        mut writes: impl Iterator<Item = (&'p Place, Option<Entry>)>,
        now: u64,
    ) -> Result<(), ClusterError> {
        // One engine batch for all the writes with a data directory: a
        // crash keeps the whole transaction or none of it. The stores serve
        // each write as it is applied, so if the batch is not kept (or a
        // write fails midway), `undo` puts back what each write replaced.
        let mut undo: Vec<(usize, Token, Bytes, Option<Entry>, bool)> = Vec::new();
        let mut apply = || -> Result<(), ClusterError> {
            for (p, write) in writes.by_ref() {
                let (node, stripe) = (&locks[p.guard].0, locks[p.guard].1);
                if let (_, Some(range)) = routing.authority(p.token)?
                    && range.phase() == Phase::Copying
                {
                    range.mark_dirty(&p.key);
                }
                let guard = &mut guards[p.guard];
                let present = write.is_some();
                let old = match write {
                    Some(mut entry) => {
                        entry.version = self.next_version();
                        guard.put(p.token, p.key.clone(), entry)
                    }
                    None => guard.delete(p.token, &p.key),
                }
                .map_err(|e| node.store_error(e))?;
                if old.as_ref().is_some_and(|o| o.is_expired(now)) {
                    self.expired_keys.fetch_add(1, Ordering::Relaxed);
                }
                // Served keys count what is stored, expired or not.
                node.add_served(stripe, i64::from(present) - i64::from(old.is_some()));
                undo.push((p.guard, p.token, p.key.clone(), old, present));
            }
            Ok(())
        };
        let applied = self.backend.atomically(&mut apply);
        if let Err(e) = applied {
            for (g, token, key, old, present) in undo.into_iter().rev() {
                let (node, stripe) = (&locks[g].0, locks[g].1);
                let had = old.is_some();
                if old.as_ref().is_some_and(|o| o.is_expired(now)) {
                    // Counted as reclaimed above; it is back.
                    self.expired_keys.fetch_sub(1, Ordering::Relaxed);
                }
                // A revert restores the serving copy only; it cannot fail
                // for want of disk.
                if let Err(err) = guards[g].revert(token, key, old) {
                    tracing::error!(node = %node.id, error = %err, "a failed transaction's write could not be undone");
                    continue;
                }
                node.add_served(stripe, i64::from(had) - i64::from(present));
            }
            return Err(e);
        }
        Ok(())
    }
}
