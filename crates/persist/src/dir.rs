//! [`DataDir`]: one data directory, one fjall database: a keyspace of
//! records (the owner's metadata), any number of token-ordered trees
//! ([`PersistentEngine`]s), one journal shared by all of them, and the
//! fsync policy with its group commit.
//!
//! One journal means one order: every write to any tree or to the records
//! is journaled in the order its call returned, and a crash (kill -9 or a
//! power cut) recovers a prefix of that order. A caller that writes A and
//! then B knows that a restart sees B only together with A. The cluster
//! builds its crash consistency on that alone.
//!
//! That journal is ringkv's own write log ([`crate::oplog`]): a write is
//! appended there and reaches fjall later, in batches, from the log's
//! applier thread; fjall's journal then only guards fjall's share.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex};
use tracing::{error, info};

use crate::error::{Failure, PersistError, describe, io_of};
use crate::guard;
use crate::oplog::{Op, OpLog};
use crate::sync::{FsyncPolicy, GroupCommit, Ticker};
use crate::{Durability, PersistentEngine};

/// The on-disk format this build reads and writes. Raise it when the layout
/// of keys or values changes.
///
/// - 1: keys placed at `xxh3_64` of their hash tag.
/// - 2: keys placed at their Redis Cluster slot, then `xxh3_64`
///   (`ringkv_ring::key_token`). Every stored token changed, so a version 1
///   directory is refused with [`PersistError::OlderFormat`] rather than
///   read with its entries at positions no lookup finds.
/// - 3: writes go through ringkv's write log (`oplog/`) before the engine.
///   A version 2 directory has no log and is upgraded in place when
///   opened; a build that knows only version 2 refuses a version 3
///   directory instead of ignoring the writes its log holds.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build upgrades in place.
const UPGRADES_FROM: u32 = 2;

/// The file fjall writes first in a database directory; a non-empty
/// directory without it is not opened.
const ENGINE_MARKER: &str = "version";
/// The most journal bytes kept before memtables are flushed to tables.
const JOURNAL_CAP: u64 = 64 * 1024 * 1024;
/// The most bytes a tree keeps in memory before writing them to a table
/// file. Everything in memory is also in the journal, and a restart after
/// a crash replays the journal into memory (fjall: ~10 us per write on
/// this machine), so this bounds the replay; fjall's default, 64 MiB per
/// tree, made a restart with three nodes replay ~180 MB.
const MEMTABLE_CAP: u64 = 16 * 1024 * 1024;
/// How long [`DataDir::checkpoint`] waits for the table files.
pub const CHECKPOINT_PATIENCE: Duration = Duration::from_secs(30);
/// The keyspace of the format record and the owner's records.
const META: &str = "meta";
/// Prefix of every tree's keyspace name (so that no tree is `meta`).
const TREE_PREFIX: &str = "t.";
/// The key of the format record in [`META`]: a `u32` big-endian. Owner
/// records live under other keys (see [`DataDir::write_records`]).
const FORMAT_KEY: &[u8] = b"\0format_version";

/// One data directory: records, trees and their shared journal.
///
/// Cloning is cheap and shares the database. The directory is locked for
/// as long as a clone (or a tree opened from it) lives: a second open, in
/// this process or another, fails with [`PersistError::Locked`].
#[derive(Clone)]
pub struct DataDir {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    meta: Keyspace,
    path: PathBuf,
    policy: FsyncPolicy,
    group: GroupCommit,
    /// The write log, in front of the engine.
    log: Arc<OpLog>,
    /// The log's applier thread.
    applier: Option<std::thread::JoinHandle<()>>,
    /// The `everysec` thread, with its handle on the log.
    ticker: Option<(Arc<Ticker>, std::thread::JoinHandle<()>)>,
    /// The first write or sync failure, which explains every write the
    /// engine refuses after it.
    /// Shared with the `everysec` thread, whose fsync may fail first.
    failure: Arc<Mutex<Option<Failure>>>,
    /// Dropped once the database is closed: records the clean close.
    closer: Closer,
    /// ringkv's lock on the directory ([`guard::lock`]), released last,
    /// after the clean-close record: a reopen never sees a half-closed
    /// directory.
    lock: File,
}

/// Writes the record of a clean close (see `crate::guard`) when dropped,
/// if the final sync succeeded. It is the last field of [`Inner`], so it
/// runs once the engine has closed the directory.
struct Closer {
    path: PathBuf,
    clean: AtomicBool,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if !self.clean.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = guard::record_clean_close(&self.path) {
            error!(path = %self.path.display(), error = %e, "cannot record the clean close; the next open cannot check the journal against it");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the `everysec` thread and take back its handle on the
        // database, so that the directory is unlocked when this returns.
        if let Some((ticker, thread)) = self.ticker.take() {
            *ticker.log.lock() = None;
            ticker.wake.notify_all();
            let _ = thread.join();
        }
        self.log.stop();
        if let Some(applier) = self.applier.take() {
            let _ = applier.join();
        }
        // A clean close loses nothing, whatever the policy: the log's
        // queue goes into the engine, the engine is made durable, and only
        // then are the log's files deleted. After a failed write or fsync
        // the close is not clean: the log's files stay for the next open
        // to replay, and the kernel may have dropped what it could not
        // write.
        let closed = if self.log.failed() {
            Err(fjall::Error::Poisoned)
        } else {
            self.log
                .apply(&self.db)
                .and_then(|()| self.db.persist(PersistMode::SyncAll))
                .and_then(|()| self.log.retire_all().map_err(fjall::Error::Io))
        };
        match closed {
            Ok(()) => self.closer.clean.store(true, Ordering::Release),
            Err(e) => {
                error!(
                    path = %self.path.display(),
                    error = %describe(&e),
                    "the data directory is not closed cleanly (a write or an fsync failed); the next open recovers as after a crash"
                );
                // The engine's own close would write out what its journal
                // buffer still holds: the write that failed, which was
                // never acknowledged. Keep the engine open instead (its
                // lock is released when the process exits), and ringkv's
                // lock with it (a duplicate of the descriptor holds it).
                std::mem::forget(self.db.clone());
                if let Ok(held) = self.lock.try_clone() {
                    std::mem::forget(held);
                }
            }
        }
    }
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("path", &self.inner.path)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl DataDir {
    /// Whether an open of `dir`, in this process or another, still holds
    /// it: a clone lives, or the last one's close has not finished (it
    /// releases the directory once the clean-close record is written). A
    /// process that drops a directory and opens it again can wait on this;
    /// the check takes the lock for an instant, so an open racing it may
    /// be refused as locked.
    pub fn in_use(dir: impl AsRef<Path>) -> bool {
        guard::in_use(dir.as_ref())
    }

    /// Opens the data directory `dir`, creating it (and its parents) on
    /// first use.
    ///
    /// A non-empty directory that is not a ringkv database, one written in
    /// a newer format, one with a corrupt or truncated file, and one that
    /// another process has open are refused with an error naming it; its
    /// contents are left as they were, never re-initialised. (Opening may
    /// let the engine recover its own journal first: a torn last write is
    /// dropped, as a crash in the middle of it would.)
    pub fn open(dir: impl AsRef<Path>, policy: FsyncPolicy) -> Result<DataDir, PersistError> {
        let path = dir.as_ref().to_path_buf();
        let dir_err = |source| PersistError::Dir {
            path: path.clone(),
            source,
        };
        if path.exists() && !path.is_dir() {
            return Err(PersistError::NotADirectory { path });
        }
        let fresh = match fs::read_dir(&path) {
            Ok(files) => files.flatten().all(|f| guard::is_scratch(&f.file_name())),
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
        // Held from here until the close is complete; the checks above
        // only read.
        let lock = guard::lock(&path)?;
        guard::check_writable(&path)?;
        if !fresh {
            guard::check_trees(&path)?;
            guard::check_clean_close(&path)?;
        }
        let open_err = |source| match source {
            fjall::Error::Locked => PersistError::Locked { path: path.clone() },
            source => PersistError::Open {
                path: path.clone(),
                source,
            },
        };
        // The journal's cap bounds both the replay on restart and the space
        // overwritten versions hold before a flush; 64 MiB is fjall's least.
        let db = Database::builder(&path)
            .max_journaling_size(JOURNAL_CAP)
            .open()
            .map_err(open_err)?;
        if !fresh && !db.keyspace_exists(META) && db.keyspace_count() > 0 {
            return Err(PersistError::BadFormatRecord {
                path,
                detail: "no format record".into(),
            });
        }
        let meta = db
            .keyspace(META, KeyspaceCreateOptions::default)
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
                if found < UPGRADES_FROM {
                    return Err(PersistError::OlderFormat {
                        path,
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found < FORMAT_VERSION {
                    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                    batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
                    batch.commit().map_err(open_err)?;
                    info!(path = %path.display(), from = found, to = FORMAT_VERSION, "data directory format upgraded");
                }
                info!(path = %path.display(), format = found, fsync = policy.name(), "data directory opened");
            }
            // A first start, or one killed before the record was synced:
            // nothing else can have been written yet, since the record is
            // written before `open` returns.
            None if fresh || db.keyspace_count() == 1 && meta.is_empty().map_err(open_err)? => {
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
                batch.commit().map_err(open_err)?;
                info!(path = %path.display(), format = FORMAT_VERSION, fsync = policy.name(), "data directory created");
            }
            None => {
                return Err(PersistError::BadFormatRecord {
                    path,
                    detail: "data but no format record".into(),
                });
            }
        }
        // Drops the engine has finished (its recovery deletes a dropped
        // tree's folder) need their markers no more.
        guard::forget_finished_drops(&path);
        let failure = Arc::new(Mutex::new(None));
        let log = Arc::new(OpLog::open(&path, &db, policy == FsyncPolicy::Always)?);
        let applier =
            log.start(db.clone(), failure.clone())
                .map_err(|source| PersistError::Dir {
                    path: path.clone(),
                    source,
                })?;
        let ticker = match policy {
            FsyncPolicy::EverySec => {
                let ticker = Arc::new(Ticker {
                    log: Mutex::new(Some(log.clone())),
                    wake: Condvar::new(),
                    failure: failure.clone(),
                });
                let theirs = ticker.clone();
                let thread = std::thread::Builder::new()
                    .name("ringkv-fsync".into())
                    .spawn(move || theirs.run())
                    .map_err(|source| PersistError::Dir {
                        path: path.clone(),
                        source,
                    })?;
                Some((ticker, thread))
            }
            _ => None,
        };
        Ok(DataDir {
            inner: Arc::new(Inner {
                db,
                meta,
                path: path.clone(),
                policy,
                group: GroupCommit::default(),
                log,
                applier: Some(applier),
                ticker,
                failure,
                closer: Closer {
                    path: path.clone(),
                    clean: AtomicBool::new(false),
                },
                lock,
            }),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The fsync policy it was opened with.
    pub fn policy(&self) -> FsyncPolicy {
        self.inner.policy
    }

    /// The tree `name` (created empty on first use): 1 to 64 ASCII
    /// letters, digits, `-` or `_`.
    pub fn tree(&self, name: &str) -> Result<PersistentEngine, PersistError> {
        check_tree_name(name);
        let full = format!("{TREE_PREFIX}{name}");
        let new = !self.inner.db.keyspace_exists(&full);
        let keyspace = self
            .inner
            .db
            .keyspace(&full, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_CAP)
            })
            .map_err(|e| self.write_err(e))?;
        if new {
            // The write log names trees; a replay skips the writes of a
            // tree the engine does not know (dropped since). So a tree
            // exists durably before anything is written to it.
            self.inner
                .db
                .persist(PersistMode::SyncAll)
                .map_err(|e| self.write_err(e))?;
        }
        Ok(PersistentEngine::new(self.clone(), keyspace))
    }

    /// Whether tree `name` exists.
    pub fn has_tree(&self, name: &str) -> bool {
        check_tree_name(name);
        self.inner
            .db
            .keyspace_exists(&format!("{TREE_PREFIX}{name}"))
    }

    /// The names of every tree, sorted.
    pub fn trees(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .db
            .list_keyspace_names()
            .iter()
            .filter_map(|n| n.strip_prefix(TREE_PREFIX).map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Deletes tree `name` and everything in it, if it exists. Handles
    /// still open on it keep working until dropped; its files go then.
    pub fn drop_tree(&self, name: &str) -> Result<(), PersistError> {
        check_tree_name(name);
        let full = format!("{TREE_PREFIX}{name}");
        if !self.inner.db.keyspace_exists(&full) {
            return Ok(());
        }
        // The tree's queued writes go in first, so that none is applied
        // to a dropped tree.
        self.settle()?;
        let keyspace = self
            .inner
            .db
            .keyspace(&full, KeyspaceCreateOptions::default)
            .map_err(|e| self.write_err(e))?;
        // The engine deletes a dropped tree's `current` file first, then
        // the rest, once its last handle goes: a crash in between leaves
        // table files without `current`, which `guard::check_trees` would
        // take for a damaged live tree. A durable marker naming the folder
        // tells it the tree was being dropped; the next open removes the
        // marker once the engine has removed the folder.
        if let Some(folder) = keyspace.path().file_name().and_then(|f| f.to_str()) {
            guard::mark_dropping(&self.inner.path, folder).map_err(|source| PersistError::Dir {
                path: self.inner.path.clone(),
                source,
            })?;
        }
        self.inner
            .db
            .delete_keyspace(keyspace)
            .map_err(|e| self.write_err(e))?;
        info!(path = %self.inner.path.display(), tree = name, "tree dropped");
        Ok(())
    }

    /// Writes every tree's and the records' in-memory part to table files;
    /// with `wait`, returns once written (then the journal holds nothing a
    /// restart must replay), otherwise starts it in the background. For a
    /// planned stop, and after a restart that replayed the journal.
    ///
    /// Nothing is attempted after a write failure (a full disk: the table
    /// files could not be written either, and fjall would wait for them
    /// forever), and a wait gives up after [`CHECKPOINT_PATIENCE`]: the
    /// journal still holds everything, a restart replays it.
    pub fn checkpoint(&self, wait: bool) -> Result<(), PersistError> {
        if let Some(failure) = self.failure() {
            return Err(PersistError::WritesRefused {
                path: self.inner.path.clone(),
                cause: Some(failure),
            });
        }
        if !wait {
            return self.rotate_all(false);
        }
        let (done, finished) = std::sync::mpsc::channel();
        let dir = self.clone();
        std::thread::Builder::new()
            .name("ringkv-checkpoint".into())
            .spawn(move || {
                let _ = done.send(dir.rotate_all(true));
            })
            .map_err(|source| PersistError::Dir {
                path: self.inner.path.clone(),
                source,
            })?;
        match finished.recv_timeout(CHECKPOINT_PATIENCE) {
            Ok(result) => result,
            Err(_) => {
                error!(path = %self.inner.path.display(), "checkpoint still running after {CHECKPOINT_PATIENCE:?}; left to the journal");
                Ok(())
            }
        }
    }

    /// Rotates every keyspace's memtable (and with `wait`, waits for it to
    /// be written).
    fn rotate_all(&self, wait: bool) -> Result<(), PersistError> {
        self.settle()?;
        for name in self.inner.db.list_keyspace_names() {
            let keyspace = self
                .inner
                .db
                .keyspace(&name, KeyspaceCreateOptions::default)
                .map_err(|e| self.write_err(e))?;
            if wait {
                keyspace.rotate_memtable_and_wait()
            } else {
                keyspace.rotate_memtable().map(drop)
            }
            .map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub fn records(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, PersistError> {
        self.settle()?;
        let mut out = Vec::new();
        for guard in self.inner.meta.prefix(prefix) {
            let (k, v) = guard.into_inner().map_err(|e| self.read_err(e))?;
            if *k == *FORMAT_KEY {
                continue;
            }
            out.push((Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)));
        }
        Ok(out)
    }

    /// The record under `key`.
    pub fn record(&self, key: &[u8]) -> Result<Option<Bytes>, PersistError> {
        self.settle()?;
        let value = self.inner.meta.get(key).map_err(|e| self.read_err(e))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Writes records (`None` deletes) in one engine transaction: all or
    /// none, journaled after every write that returned before this call.
    /// Keys must not start with a NUL byte (reserved for the format record).
    pub fn write_records(
        &self,
        writes: &[(&[u8], Option<&[u8]>)],
        durability: Durability,
    ) -> Result<(), PersistError> {
        let mut ops = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            assert!(
                key.first() != Some(&0),
                "record keys starting with NUL are reserved"
            );
            ops.push((
                self.inner.meta.clone(),
                key.to_vec(),
                value.map(<[u8]>::to_vec),
            ));
        }
        self.commit(ops, durability)
    }

    /// Makes every write that returned before this call durable (one
    /// `fdatasync` of the journal). Concurrent callers share fsyncs: a
    /// caller waits for the first fsync that starts after it called, and
    /// one fsync serves every caller waiting for it (group commit). No lock
    /// of the caller's is needed or should be held.
    pub fn sync(&self) -> Result<(), PersistError> {
        self.sync_group(true)
    }

    /// As [`DataDir::sync`], but the fsync starts at once, without first
    /// letting a burst of other writers' writes arrive: for a caller that
    /// has gathered a group of writes itself and only adds latency by
    /// waiting (the server's SET writer under `--fsync always`).
    pub fn sync_now(&self) -> Result<(), PersistError> {
        self.sync_group(false)
    }

    fn sync_group(&self, gather: bool) -> Result<(), PersistError> {
        self.inner
            .group
            .sync(gather, || self.inner.log.sync())
            .map_err(|e| self.write_err(fjall::Error::Io(e)))
    }

    /// Fsyncs done so far by [`DataDir::sync`] (each may have served many
    /// callers).
    pub fn syncs(&self) -> u64 {
        self.inner.group.syncs()
    }

    /// Bytes the directory's database occupies on disk (journal and
    /// tables).
    pub fn disk_space(&self) -> Result<u64, PersistError> {
        self.inner.db.disk_space().map_err(|e| self.read_err(e))
    }

    /// Writes `ops` as one commit: appended to the write log (into the OS
    /// page cache, so it survives kill -9; fsynced too with
    /// [`Durability::Fsync`]) and queued for the engine. After any failed
    /// write every later one is refused, so nothing after a hole in the
    /// log is acknowledged.
    pub(crate) fn commit(&self, ops: Vec<Op>, durability: Durability) -> Result<(), PersistError> {
        if self.inner.log.failed() || self.inner.failure.lock().is_some() {
            return Err(self.write_err(fjall::Error::Poisoned));
        }
        let appended = self
            .inner
            .log
            .append(ops)
            .map_err(|e| self.write_err(fjall::Error::Io(e)));
        self.inner.group.wrote();
        appended?;
        if durability == Durability::Fsync {
            self.sync()?;
        }
        Ok(())
    }

    /// Moves every write queued in the log into the engine, so that a read
    /// of the engine sees every write that returned before it.
    pub(crate) fn settle(&self) -> Result<(), PersistError> {
        self.inner
            .log
            .apply(&self.inner.db)
            .map_err(|e| self.write_err(e))
    }

    /// Bytes of writes the write log holds in memory until its applier
    /// has moved them into the engine (about a second's worth: 128 MiB
    /// queued at most, plus the batch being applied): Redis's AOF buffer,
    /// in `INFO memory`.
    pub fn log_queued_bytes(&self) -> u64 {
        self.inner.log.queued_bytes()
    }

    /// Batches the write log has applied to the engine, and the writes
    /// they held (each key once per batch).
    pub fn log_applied(&self) -> (u64, u64) {
        self.inner.log.applied()
    }

    pub(crate) fn read_err(&self, source: fjall::Error) -> PersistError {
        PersistError::Read {
            path: self.inner.path.clone(),
            source,
        }
    }

    /// A failed write or sync as an error. The engine refuses every write
    /// after its first failure ("poisoned"): those say what the first
    /// failure was.
    pub(crate) fn write_err(&self, source: fjall::Error) -> PersistError {
        let path = self.inner.path.clone();
        let mut failure = self.inner.failure.lock();
        if let fjall::Error::Poisoned = source {
            return PersistError::WritesRefused {
                path,
                cause: failure.clone(),
            };
        }
        if failure.is_none() {
            *failure = Some(Failure {
                kind: io_of(&source).map_or(ErrorKind::Other, std::io::Error::kind),
                message: describe(&source),
            });
            error!(path = %path.display(), error = %describe(&source), "a write failed: writes are refused from now on, reads still work; fix the cause and restart");
        }
        PersistError::Write { path, source }
    }

    /// The first write or sync failure, if one happened: from then on
    /// every write is refused until the directory is reopened.
    pub fn failure(&self) -> Option<Failure> {
        self.inner.failure.lock().clone()
    }
}

fn check_tree_name(name: &str) {
    assert!(
        (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "tree names are 1-64 ASCII letters, digits, - or _: {name:?}"
    );
}

#[path = "dir_staged.rs"]
mod staged;

#[cfg(test)]
#[path = "dir_tests.rs"]
mod tests;
