//! [`PersistentEngine`]: one node's entries in one fjall database,
//! ordered by `(token, key)`.

use std::fs;
use std::io::ErrorKind;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tracing::{debug, info};

use crate::batch::{Durability, Op, WriteBatch};
use crate::error::PersistError;
use crate::key::{decode, encode, token_bounds};

/// The newest on-disk format this build reads and the one it writes.
/// Raise it when the layout of keys or values changes, with a migration
/// from the previous version.
pub const FORMAT_VERSION: u32 = 1;

/// The file fjall writes first in a database directory; a non-empty
/// directory without it is not opened.
const ENGINE_MARKER: &str = "version";
/// The most journal bytes kept before memtables are flushed to tables.
const JOURNAL_CAP: u64 = 64 * 1024 * 1024;
/// The keyspace of the format record.
const META: &str = "meta";
/// The keyspace of the entries.
const ENTRIES: &str = "entries";
/// The key of the format record in [`META`]: a `u32` big-endian.
const FORMAT_KEY: &[u8] = b"format_version";

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

/// A node's persistent store: `(token, key) -> entry bytes` in one fjall
/// database directory, with one journal shared by all its writes.
///
/// One database per node, not one per lock stripe: the stripes of a node
/// are disjoint token ranges of the same ordered keyspace, so they need no
/// separate trees; one journal means one fsync makes every stripe's earlier
/// writes durable (group commit across stripes), and one set of files and
/// background threads per node instead of 64. Cloning is cheap and shares
/// the database, so each stripe holds a clone.
///
/// Writes are atomic per call. Reads see every write that returned.
/// Callers serialise writes to one token range (the cluster's stripe
/// locks do): [`take_range`](Self::take_range) reads then deletes.
#[derive(Clone)]
pub struct PersistentEngine {
    db: Database,
    entries: Keyspace,
    path: Arc<Path>,
}

impl std::fmt::Debug for PersistentEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PersistentEngine {
    /// Opens the database in `dir`, creating it (and `dir`) on first use.
    ///
    /// A non-empty directory that is not a ringkv database, one written in
    /// a newer format, or one with a corrupt or truncated file is refused
    /// with an error naming it, and its entries and format record are left
    /// as they were: never re-initialised. (Opening may let the engine
    /// recover its own journal first.)
    /// A second open of the same directory, in this process or another,
    /// fails while the first is open (the engine holds a lock file).
    pub fn open(dir: impl AsRef<Path>) -> Result<PersistentEngine, PersistError> {
        let path = dir.as_ref().to_path_buf();
        let dir_err = |source| PersistError::Dir {
            path: path.clone(),
            source,
        };
        let fresh = match fs::read_dir(&path) {
            Ok(mut files) => files.next().is_none(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(&path).map_err(dir_err)?;
                true
            }
            Err(e) => return Err(dir_err(e)),
        };
        if !fresh {
            // fjall creates a new database wherever its marker is missing:
            // refuse instead, so a damaged directory is never overwritten.
            let marker = path.join(ENGINE_MARKER);
            if !marker.try_exists().map_err(dir_err)? {
                return Err(PersistError::NotADatabase { path, marker });
            }
        }
        let open_err = |source| PersistError::Open {
            path: path.clone(),
            source,
        };
        // The journal's cap bounds both the replay on restart and the space
        // overwritten versions hold before a flush; 64 MiB is fjall's least.
        let db = Database::builder(&path)
            .max_journaling_size(JOURNAL_CAP)
            .open()
            .map_err(open_err)?;
        if !fresh && !db.keyspace_exists(META) && db.keyspace_exists(ENTRIES) {
            return Err(PersistError::BadFormatRecord {
                path,
                detail: "no format record".into(),
            });
        }
        let meta = db
            .keyspace(META, KeyspaceCreateOptions::default)
            .map_err(open_err)?;
        let entries = db
            .keyspace(ENTRIES, KeyspaceCreateOptions::default)
            .map_err(open_err)?;
        match meta.get(FORMAT_KEY).map_err(open_err)? {
            Some(raw) => {
                let found = <[u8; 4]>::try_from(&*raw)
                    .map(u32::from_be_bytes)
                    .map_err(|_| PersistError::BadFormatRecord {
                        path: path.clone(),
                        detail: format!("the record is {} bytes, not 4", raw.len()),
                    })?;
                if found > FORMAT_VERSION {
                    return Err(PersistError::NewerFormat {
                        path,
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                info!(path = %path.display(), format = found, "database opened");
            }
            // A first start, or one killed before the record was synced:
            // no entry can have been written yet, since the record is
            // written before `open` returns.
            None if fresh || entries.is_empty().map_err(open_err)? => {
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
                batch.commit().map_err(open_err)?;
                info!(path = %path.display(), format = FORMAT_VERSION, "database created");
            }
            None => {
                return Err(PersistError::BadFormatRecord {
                    path,
                    detail: "entries but no format record".into(),
                });
            }
        }
        Ok(PersistentEngine {
            db,
            entries,
            path: path.into(),
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry bytes of `(token, key)`.
    pub fn get(&self, token: u64, key: &[u8]) -> Result<Option<Bytes>, PersistError> {
        let value = self
            .entries
            .get(encode(token, key))
            .map_err(|e| self.read_err(e))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Stores `value` under `(token, key)`, replacing any previous entry.
    pub fn put(
        &self,
        token: u64,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<(), PersistError> {
        let mut batch = self.db.batch();
        batch.insert(&self.entries, encode(token, key), value);
        self.commit(batch, durability)
    }

    /// Removes `(token, key)` if present.
    pub fn delete(
        &self,
        token: u64,
        key: &[u8],
        durability: Durability,
    ) -> Result<(), PersistError> {
        let mut batch = self.db.batch();
        batch.remove(&self.entries, encode(token, key));
        self.commit(batch, durability)
    }

    /// Applies every write of `batch` in one engine transaction: all or
    /// none, one journal record, one fsync with [`Durability::Fsync`].
    pub fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), PersistError> {
        let mut out = self.db.batch();
        for op in batch.ops {
            match op {
                Op::Put { token, key, value } => {
                    out.insert(&self.entries, encode(token, &key), &*value)
                }
                Op::Delete { token, key } => out.remove(&self.entries, encode(token, &key)),
            }
        }
        self.commit(out, durability)
    }

    /// Makes every write that returned so far durable (one `fdatasync` of
    /// the journal). Concurrent writers can share one call: that is group
    /// commit.
    pub fn sync(&self) -> Result<(), PersistError> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|e| self.write_err(e))
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
        let mut last = None;
        let range = token_bounds(*tokens.start(), *tokens.end());
        for (taken, guard) in self.entries.range(range).enumerate() {
            let (raw, value) = guard.into_inner().map_err(|e| self.read_err(e))?;
            let (token, key) = decode(&raw).ok_or_else(|| PersistError::CorruptKey {
                path: self.path_buf(),
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
        let mut batch = self.db.batch();
        for entry in taken {
            batch.remove(&self.entries, encode(entry.token, &entry.key));
        }
        let n = taken.len();
        if let Err(e) = self.commit(batch, durability) {
            out.truncate(first);
            return Err(e);
        }
        debug!(path = %self.path.display(), entries = n, "range taken");
        Ok(n)
    }

    /// Writes the in-memory part of the entries to a table file and waits
    /// for it, so the journal holding them can be dropped: a checkpoint
    /// (reopening then replays less), also handy before a backup.
    pub fn flush_tables(&self) -> Result<(), PersistError> {
        self.entries
            .rotate_memtable_and_wait()
            .map_err(|e| self.write_err(e))
    }

    /// Bytes the database occupies on disk (journal and tables).
    pub fn disk_space(&self) -> Result<u64, PersistError> {
        self.db.disk_space().map_err(|e| self.read_err(e))
    }

    fn commit(
        &self,
        batch: fjall::OwnedWriteBatch,
        durability: Durability,
    ) -> Result<(), PersistError> {
        let mode = match durability {
            // Into the OS page cache: survives kill -9.
            Durability::NoSync => PersistMode::Buffer,
            Durability::Fsync => PersistMode::SyncData,
        };
        batch
            .durability(Some(mode))
            .commit()
            .map_err(|e| self.write_err(e))
    }

    fn read_err(&self, source: fjall::Error) -> PersistError {
        PersistError::Read {
            path: self.path_buf(),
            source,
        }
    }

    fn write_err(&self, source: fjall::Error) -> PersistError {
        PersistError::Write {
            path: self.path_buf(),
            source,
        }
    }

    fn path_buf(&self) -> PathBuf {
        self.path.to_path_buf()
    }
}
