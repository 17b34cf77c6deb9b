//! The Raft log in a node's data directory: entries in the tree
//! `raft-log` (token = log index, so the log is in index order and a
//! truncation or a purge is one range removal), the vote, the committed
//! log id and the last purged log id in records under `raft/`.
//!
//! Raft's safety needs a vote and an appended entry to survive a crash
//! before anyone is told of them, whatever `--fsync` says for client data:
//! every write here is followed by [`DataDir::sync`] (an `fdatasync`
//! shared with concurrent callers) before the call returns or calls back.
//! The sync blocks the calling task; at the rate of metadata changes (a
//! few entries per membership change) that is a millisecond now and then.

// The error type is openraft's `StorageError`, which its storage traits
// return; the helpers here build it where it arises rather than box it
// only to unbox it at the trait boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use ringkv_persist::{DataDir, Durability, PersistError, PersistentEngine, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TypeConfig;

type NodeId = u64;

/// The tree holding the entries.
pub const LOG_TREE: &str = "raft-log";
const VOTE: &[u8] = b"raft/vote";
const COMMITTED: &[u8] = b"raft/committed";
const PURGED: &[u8] = b"raft/purged";

/// A Raft log kept in a [`DataDir`]. Clones share it (openraft takes one
/// handle for writing and one for reading).
#[derive(Clone)]
pub struct DiskLogStore {
    dir: DataDir,
    entries: PersistentEngine,
    /// The id of the last entry (or the last purged one), read once at open
    /// and kept up to date by every append, truncation and purge.
    last: Arc<Mutex<Option<LogId<NodeId>>>>,
}

impl Debug for DiskLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLogStore")
            .field("path", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl DiskLogStore {
    /// Opens the log of `dir` (empty on first use). Reads the whole log
    /// once, to find its last entry and to check that every entry decodes:
    /// a damaged log is refused here, naming the directory, rather than
    /// when Raft first needs the entry.
    pub fn open(dir: &DataDir) -> Result<DiskLogStore, StorageError<NodeId>> {
        let entries = dir.tree(LOG_TREE).map_err(|e| read_err(&e))?;
        let store = DiskLogStore {
            dir: dir.clone(),
            entries,
            last: Arc::default(),
        };
        let purged = store.record::<LogId<NodeId>>(PURGED)?;
        if let Some(p) = purged {
            // Finish a purge a crash interrupted (its record is written
            // before its removal).
            store
                .remove(0..=p.index)
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        let mut last = purged;
        let mut after = None;
        loop {
            let page = store.read(after, 1024)?;
            let Some(entry) = page.last() else { break };
            after = Some(entry.log_id.index);
            last = Some(entry.log_id);
            if page.len() < 1024 {
                break;
            }
        }
        *store.last_lock() = last;
        Ok(store)
    }

    fn last_lock(&self) -> std::sync::MutexGuard<'_, Option<LogId<NodeId>>> {
        // Assignments only: a poisoned lock still holds a whole value.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `limit` entries with an index above `after`, in order.
    fn read(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.range(after.map_or(0, |a| a.saturating_add(1)), u64::MAX, limit)
    }

    /// The entries with an index in `lo..=hi`, at most `limit`, in order.
    fn range(
        &self,
        lo: u64,
        hi: u64,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        if lo > hi {
            return Ok(Vec::new());
        }
        let mut raw = Vec::new();
        self.entries
            .scan(lo..=hi, None, limit, &mut raw)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter()
            .map(|r| {
                serde_json::from_slice(&r.value).map_err(|e| {
                    StorageIOError::read_log_at_index(
                        r.token,
                        &Damaged(format!(
                            "the Raft log entry {} in {} does not decode ({e}); restore the \
                             directory from a backup, or remove the node and join it afresh",
                            r.token,
                            self.dir.path().display()
                        )),
                    )
                    .into()
                })
            })
            .collect()
    }

    fn record<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        let Some(raw) = self.dir.record(key).map_err(|e| read_err(&e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw).map(Some).map_err(|e| {
            StorageIOError::read(&Damaged(format!(
                "the record {} in {} does not decode ({e}); restore the directory from a backup",
                String::from_utf8_lossy(key),
                self.dir.path().display()
            )))
            .into()
        })
    }

    /// Writes record `key` and syncs.
    fn save<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        err: fn(&PersistError) -> StorageIOError<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let raw = serde_json::to_vec(value).expect("Raft's types serialise");
        self.dir
            .write_records(&[(key, Some(&raw))], Durability::NoSync)
            .and_then(|()| self.dir.sync())
            .map_err(|e| err(&e).into())
    }

    /// Removes the entries with an index in `indexes`, then syncs.
    fn remove(&self, indexes: std::ops::RangeInclusive<u64>) -> Result<(), PersistError> {
        let mut gone = Vec::new();
        self.entries
            .take_range(indexes, usize::MAX, &mut gone, Durability::NoSync)?;
        self.dir.sync()
    }
}

/// Stored data that does not decode.
#[derive(Debug)]
struct Damaged(String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

fn read_err(e: &PersistError) -> StorageError<NodeId> {
    StorageIOError::read(e).into()
}

impl RaftLogReader<TypeConfig> for DiskLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let lo = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let hi = match range.end_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&i) => i - 1,
            Bound::Unbounded => u64::MAX,
        };
        self.range(lo, hi, usize::MAX)
    }
}

impl RaftLogStorage<TypeConfig> for DiskLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        Ok(LogState {
            last_purged_log_id: self.record(PURGED)?,
            last_log_id: *self.last_lock(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.save(VOTE, vote, |e| StorageIOError::write_vote(e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.record(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.save(COMMITTED, &committed, |e| StorageIOError::write(e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.record::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut last = None;
        for entry in entries {
            let raw = serde_json::to_vec(&entry).expect("Raft entries serialise");
            batch.put(entry.log_id.index, bytes::Bytes::new(), raw);
            last = Some(entry.log_id);
        }
        let Some(last) = last else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let written = self
            .entries
            .write(batch, Durability::NoSync)
            .and_then(|()| self.dir.sync());
        match written {
            Ok(()) => {
                *self.last_lock() = Some(last);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove(log_id.index..=u64::MAX)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // The entry before the cut is the last, or the last purged one.
        let before = match log_id.index.checked_sub(1) {
            Some(prev) => self.range(prev, prev, 1)?.pop().map(|e| e.log_id),
            None => None,
        };
        let last = match before {
            Some(id) => Some(id),
            None => self.record(PURGED)?,
        };
        *self.last_lock() = last;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The record first: a crash before the removal leaves entries at or
        // below it, which the next open removes.
        self.save(PURGED, &log_id, |e| StorageIOError::write_logs(e))?;
        self.remove(0..=log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut last = self.last_lock();
        if last.is_none_or(|l| l.index < log_id.index) {
            *last = Some(log_id);
        }
        Ok(())
    }
}
