//! [`PersistentEngine`]: one node's entries in one fjall database,
//! ordered by `(token, key)`.

use std::ops::RangeInclusive;
use std::path::Path;

use bytes::Bytes;
use fjall::Keyspace;
use tracing::debug;

use crate::batch::{Durability, Op, WriteBatch};
use crate::dir::DataDir;
use crate::error::PersistError;
use crate::key::{decode, encode, token_bounds};
use crate::sync::FsyncPolicy;

/// One stored entry: its token, key and the entry bytes (opaque here: the
/// caller encodes value, expiry and type as it likes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's ring token.
    pub token: u64,
    /// The key.
    pub key: Bytes,
    /// The entry bytes.
    pub value: Bytes,
}

/// A token-ordered tree of one [`DataDir`]: `(token, key) -> entry
/// bytes`, one fjall keyspace. The cluster keeps one per node; the node's
/// lock stripes are disjoint token ranges of it, so they need no separate
/// trees, and every tree of a directory shares its journal: one fsync makes
/// every earlier write of every tree durable (group commit across nodes).
/// Cloning is cheap and shares the tree; a clone keeps the directory open.
///
/// Writes are atomic per call. Reads see every write that returned.
/// Callers serialise writes to one token range (the cluster's stripe
/// locks do): [`take_range`](Self::take_range) reads then deletes.
#[derive(Clone)]
pub struct PersistentEngine {
    dir: DataDir,
    entries: Keyspace,
}

impl std::fmt::Debug for PersistentEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentEngine")
            .field("path", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl PersistentEngine {
    pub(crate) fn new(dir: DataDir, entries: Keyspace) -> PersistentEngine {
        PersistentEngine { dir, entries }
    }

    /// Opens the tree `entries` of the data directory `dir` (see
    /// [`DataDir::open`], here with [`FsyncPolicy::No`]: each write says
    /// its own [`Durability`]). For a directory with one tree.
    pub fn open(dir: impl AsRef<Path>) -> Result<PersistentEngine, PersistError> {
        DataDir::open(dir, FsyncPolicy::No)?.tree("entries")
    }

    /// The directory this tree belongs to.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The entry bytes of `(token, key)`.
    pub fn get(&self, token: u64, key: &[u8]) -> Result<Option<Bytes>, PersistError> {
        self.dir.settle()?;
        let value = self
            .entries
            .get(encode(token, key))
            .map_err(|e| self.read_err(e))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Stores `value` under `(token, key)`, replacing any previous entry.
    /// An owned `Vec` is staged as it is, not copied first.
    pub fn put(
        &self,
        token: u64,
        key: &[u8],
        value: impl Into<Vec<u8>>,
        durability: Durability,
    ) -> Result<(), PersistError> {
        self.apply([(encode(token, key), Some(value.into()))], durability)
    }

    /// Removes `(token, key)` if present.
    pub fn delete(
        &self,
        token: u64,
        key: &[u8],
        durability: Durability,
    ) -> Result<(), PersistError> {
        self.apply([(encode(token, key), None)], durability)
    }

    /// Applies every write of `batch` in one engine transaction: all or
    /// none, one journal record, one fsync with [`Durability::Fsync`].
    pub fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), PersistError> {
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = batch
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { token, key, value } => (encode(token, &key), Some(Vec::from(value))),
                Op::Delete { token, key } => (encode(token, &key), None),
            })
            .collect();
        self.apply(ops, durability)
    }

    /// Writes `(encoded key, value or None to delete)` in one engine batch,
    /// or stages them in the thread's [`DataDir::atomically`] group.
    fn apply(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        durability: Durability,
    ) -> Result<(), PersistError> {
        let mut ops = ops.into_iter();
        if self.dir.stage(&self.entries, &mut ops) {
            return Ok(());
        }
        let ops = ops
            .map(|(key, value)| (self.entries.clone(), key, value))
            .collect();
        self.dir.commit(ops, durability)
    }

    /// Makes every write that returned so far durable (one `fdatasync` of
    /// the journal). Concurrent writers can share one call: that is group
    /// commit.
    pub fn sync(&self) -> Result<(), PersistError> {
        self.dir.sync()
    }

    /// Appends to `out` up to `limit` entries whose token lies in `tokens`
    /// and is greater than `after` (when given), in ascending `(token,
    /// key)` order. All entries of one token are returned together, so
    /// `limit` may be exceeded by the keys sharing the last token; fewer
    /// than `limit` means the interval holds no more. On error `out` is as
    /// it was.
    pub fn scan(
        &self,
        tokens: RangeInclusive<u64>,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), PersistError> {
        let start = match after {
            Some(after) => match after.checked_add(1) {
                Some(next) => next.max(*tokens.start()),
                None => return Ok(()),
            },
            None => *tokens.start(),
        };
        let end = *tokens.end();
        if start > end || limit == 0 {
            return Ok(());
        }
        let first = out.len();
        let result = self.scan_into(start..=end, limit, out);
        if result.is_err() {
            out.truncate(first);
        }
        result
    }

    /// [`scan`](Self::scan) of `start..=end` without `after`, appending
    /// as it reads.
    fn scan_into(
        &self,
        tokens: RangeInclusive<u64>,
        limit: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), PersistError> {
        self.dir.settle()?;
        let mut last = None;
        let range = token_bounds(*tokens.start(), *tokens.end());
        for (taken, guard) in self.entries.range(range).enumerate() {
            let (raw, value) = guard.into_inner().map_err(|e| self.read_err(e))?;
            let (token, key) = decode(&raw).ok_or_else(|| PersistError::CorruptKey {
                path: self.dir.path().to_path_buf(),
                len: raw.len(),
            })?;
            if taken >= limit && last != Some(token) {
                break;
            }
            out.push(Entry {
                token,
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(&value),
            });
            last = Some(token);
        }
        Ok(())
    }

    /// Removes up to `limit` entries whose token lies in `tokens`, lowest
    /// first and all keys of a token together, in one engine transaction,
    /// and appends them to `out`. Returns how many; fewer than `limit`
    /// means the interval is now empty. On error nothing is removed and
    /// `out` is as it was.
    pub fn take_range(
        &self,
        tokens: RangeInclusive<u64>,
        limit: usize,
        out: &mut Vec<Entry>,
        durability: Durability,
    ) -> Result<usize, PersistError> {
        let first = out.len();
        self.scan(tokens, None, limit, out)?;
        let taken = &out[first..];
        if taken.is_empty() {
            return Ok(0);
        }
        let n = taken.len();
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = taken
            .iter()
            .map(|e| (encode(e.token, &e.key), None))
            .collect();
        if let Err(e) = self.apply(ops, durability) {
            out.truncate(first);
            return Err(e);
        }
        debug!(path = %self.dir.path().display(), entries = n, "range taken");
        Ok(n)
    }

    /// Writes the in-memory part of the entries to a table file and waits
    /// for it, so the journal holding them can be dropped: a checkpoint
    /// (reopening then replays less), also handy before a backup.
    pub fn flush_tables(&self) -> Result<(), PersistError> {
        self.dir.settle()?;
        self.entries
            .rotate_memtable_and_wait()
            .map_err(|e| self.write_err(e))
    }

    /// Bytes the database occupies on disk (journal and tables).
    pub fn disk_space(&self) -> Result<u64, PersistError> {
        self.dir.disk_space()
    }

    fn read_err(&self, source: fjall::Error) -> PersistError {
        self.dir.read_err(source)
    }

    fn write_err(&self, source: fjall::Error) -> PersistError {
        self.dir.write_err(source)
    }
}
