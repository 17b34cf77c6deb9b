//! What key commands read and write through: the cluster, one operation
//! at a time. Handlers go through [`Db`] rather than the cluster itself so
//! that a queued transaction (`MULTI`/`EXEC`) can run the same handlers
//! against the keys it holds locked.

use std::cell::RefCell;

use bytes::Bytes;
use ringkv_cluster::{Cluster, ClusterError, Entry, EntryUpdate, Txn, Update};

/// Where a key command's reads and writes go.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// Straight to the cluster: each call is atomic on its own.
    Cluster(&'a Cluster),
    /// Into the transaction `EXEC` runs: its keys are locked, reads see
    /// the writes staged before, and everything is applied together.
    Txn(&'a RefCell<&'a mut Txn>),
}

impl Db<'_> {
    /// The clock's time, unix ms (what expiry is measured against).
    pub fn now_ms(self) -> u64 {
        match self {
            Db::Cluster(c) => c.now_ms(),
            Db::Txn(t) => t.borrow().now_ms(),
        }
    }

    /// The value of a live key.
    pub fn get(self, key: &[u8]) -> Result<Option<Bytes>, ClusterError> {
        match self {
            Db::Cluster(c) => c.get(key),
            Db::Txn(t) => Ok(t.borrow().get(key).map(|e| e.value.clone())),
        }
    }

    /// The entry of a live key.
    pub fn get_entry(self, key: &[u8]) -> Result<Option<Entry>, ClusterError> {
        match self {
            Db::Cluster(c) => c.get_entry(key),
            Db::Txn(t) => Ok(t.borrow().get(key).cloned()),
        }
    }

    /// Whether a key is live.
    pub fn exists(self, key: &[u8]) -> Result<bool, ClusterError> {
        match self {
            Db::Cluster(c) => c.exists(key),
            Db::Txn(t) => Ok(t.borrow().get(key).is_some()),
        }
    }

    /// Stores a value without an expiry.
    pub fn put(self, key: Bytes, value: Bytes) -> Result<(), ClusterError> {
        match self {
            Db::Cluster(c) => c.put(key, value),
            Db::Txn(t) => {
                t.borrow_mut().put(&key, Entry::string(value));
                Ok(())
            }
        }
    }

    /// Stores an entry as given.
    pub fn put_entry(self, key: Bytes, entry: Entry) -> Result<(), ClusterError> {
        match self {
            Db::Cluster(c) => c.put_entry(key, entry).map(drop),
            Db::Txn(t) => {
                t.borrow_mut().put(&key, entry);
                Ok(())
            }
        }
    }

    /// Deletes a key; whether it was live.
    pub fn delete(self, key: Bytes) -> Result<bool, ClusterError> {
        match self {
            Db::Cluster(c) => c.delete(key),
            Db::Txn(t) => Ok(t.borrow_mut().delete(&key)),
        }
    }

    /// Reads and rewrites a value in one atomic step, keeping its expiry.
    pub fn update<R>(
        self,
        key: Bytes,
        f: impl FnOnce(Option<&Bytes>) -> (Update, R),
    ) -> Result<R, ClusterError> {
        match self {
            Db::Cluster(c) => c.update(key, f),
            Db::Txn(t) => {
                let live = t.borrow().get(&key).cloned();
                let (next, result) = f(live.as_ref().map(|e| &e.value));
                match next {
                    Update::Keep => {}
                    // A value put keeps the key's expiry and type.
                    Update::Put(value) => {
                        let entry = Entry {
                            value,
                            ..live.unwrap_or_default()
                        };
                        t.borrow_mut().put(&key, entry);
                    }
                    Update::Delete => {
                        t.borrow_mut().delete(&key);
                    }
                }
                Ok(result)
            }
        }
    }

    /// Reads and rewrites an entry in one atomic step; `f` gets the live
    /// entry and the clock's time.
    pub fn update_entry<R>(
        self,
        key: Bytes,
        f: impl FnOnce(Option<&Entry>, u64) -> (EntryUpdate, R),
    ) -> Result<R, ClusterError> {
        match self {
            Db::Cluster(c) => c.update_entry(key, f),
            Db::Txn(t) => {
                let (live, now) = {
                    let txn = t.borrow();
                    (txn.get(&key).cloned(), txn.now_ms())
                };
                let (next, result) = f(live.as_ref(), now);
                match next {
                    EntryUpdate::Keep => {}
                    EntryUpdate::Put(entry) => t.borrow_mut().put(&key, entry),
                    EntryUpdate::Delete => {
                        t.borrow_mut().delete(&key);
                    }
                }
                Ok(result)
            }
        }
    }

    /// Runs `f` on `keys` atomically: a cluster transaction, or, inside
    /// `EXEC`, the transaction already holding them.
    pub fn transaction<R>(
        self,
        keys: impl IntoIterator<Item = Bytes>,
        f: impl FnOnce(&mut Txn) -> R,
    ) -> Result<R, ClusterError> {
        match self {
            Db::Cluster(c) => c.transaction(keys, f),
            Db::Txn(t) => Ok(f(&mut t.borrow_mut())),
        }
    }
}
