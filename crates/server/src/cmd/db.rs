//! What key commands read and write through: the cluster, one operation
//! at a time. Handlers go through [`Db`] rather than the cluster itself so
//! that a queued transaction (`MULTI`/`EXEC`) can run the same handlers
//! against the keys it holds locked.

use bytes::Bytes;
use ringkv_cluster::{Cluster, ClusterError, Entry, EntryUpdate, Update};

/// Where a key command's reads and writes go.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// Straight to the cluster: each call is atomic on its own.
    Cluster(&'a Cluster),
}

impl Db<'_> {
    /// The clock's time, unix ms (what expiry is measured against).
    pub fn now_ms(self) -> u64 {
        match self {
            Db::Cluster(c) => c.now_ms(),
        }
    }

    /// The value of a live key.
    pub fn get(self, key: &[u8]) -> Result<Option<Bytes>, ClusterError> {
        match self {
            Db::Cluster(c) => c.get(key),
        }
    }

    /// The entry of a live key.
    pub fn get_entry(self, key: &[u8]) -> Result<Option<Entry>, ClusterError> {
        match self {
            Db::Cluster(c) => c.get_entry(key),
        }
    }

    /// Whether a key is live.
    pub fn exists(self, key: &[u8]) -> Result<bool, ClusterError> {
        match self {
            Db::Cluster(c) => c.exists(key),
        }
    }

    /// Stores a value without an expiry.
    pub fn put(self, key: Bytes, value: Bytes) -> Result<(), ClusterError> {
        match self {
            Db::Cluster(c) => c.put(key, value),
        }
    }

    /// Stores an entry as given.
    pub fn put_entry(self, key: Bytes, entry: Entry) -> Result<(), ClusterError> {
        match self {
            Db::Cluster(c) => c.put_entry(key, entry).map(drop),
        }
    }

    /// Deletes a key; whether it was live.
    pub fn delete(self, key: Bytes) -> Result<bool, ClusterError> {
        match self {
            Db::Cluster(c) => c.delete(key),
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
        }
    }
}
