//! ringkv's own write-ahead log in front of the engine.
//!
//! **Why.** fjall inserts every key it commits into its memtable, a
//! skiplist searched from the top for each key, under its journal mutex: 2
//! to 3 µs a key on this machine, paid on the request path (a measured
//! 16 % of a SET-heavy server, plus the mutex's contention). Redis appends
//! a command to a buffer and is done. So a write here is appended to this
//! log, in commit order, with one positional `write(2)` per commit, and
//! queued in memory; the applier thread moves the queue into the engine in
//! large batches, off the request path: each key once per batch (the last
//! write wins) and in key order, which keeps the skiplist's search path in
//! cache (`docs/BENCHMARKS.md`, persistence section 8, has the figures).
//! No library does this for us: fjall offers no way to journal a write
//! without inserting it.
//!
//! **Files.** `oplog/<n>.log`, appended one record at a time; a file over
//! [`ROTATE_AT`] is fsynced and closed, and the next one opened. A record
//! is `len (u32 LE) | crc32c (u32 LE) | ops`, one commit's operations,
//! whole or not at all. An operation is `kind (1 put, 0 delete) | tree
//! name (u8 length, bytes) | key (u32 length, bytes) | value (u32 length,
//! bytes; puts only)`.
//!
//! Under `--fsync always` the next file is made ahead (`oplog/spare`, see
//! [`OpLog::make_spare`]): zeros written and fsynced up to [`ROTATE_AT`],
//! so that an append overwrites blocks the file has and its fdatasync
//! flushes data only. The newest file then ends in zeros after its last
//! record (replay stops at a header of zeros: no record is empty), and a
//! file is cut to its records when it is closed.
//!
//! **The rules that make it safe.**
//! 1. A record is in the file (the page cache) before its operations are
//!    queued, so before the caller changes anything in memory or answers:
//!    a process crash loses nothing acknowledged.
//! 2. The applier fsyncs the log before it hands a batch to the engine, so
//!    the engine never holds a write the log could lose to a power cut.
//! 3. A file is deleted only once the engine has fsynced everything the
//!    file holds (its own journal, `PersistMode::SyncAll`).
//! 4. Recovery opens the engine (which recovers a state at least as old as
//!    the log's durable end, by rule 2), then replays every log file left,
//!    in order. Each operation is a blind put or delete of one key, so a
//!    key's final value is its last operation in the log whatever the
//!    engine held before: the result is exactly the log's surviving
//!    prefix, the order `ringkv-cluster`'s crash consistency rests on.
//!
//! Reads of the engine (a node's load at start, the records, the Raft
//! log) first [`OpLog::apply`] the queue, so they see every write made
//! before them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fjall::{Database, Keyspace, PersistMode};
use hashbrown::HashTable;
use parking_lot::{Condvar, Mutex};
use tracing::{debug, error, info, warn};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::error::{Failure, PersistError, describe, io_of};

#[path = "oplog_replay.rs"]
mod replay;
use replay::{Replayed, replay};

/// The log's directory, inside the data directory.
pub(crate) const DIR: &str = "oplog";
/// A log file is closed and a new one begun past this size; the size of
/// a spare.
pub(crate) const ROTATE_AT: u64 = 16 * 1024 * 1024;
/// The prefilled file the log switches to next (no `.log`: never
/// replayed).
const SPARE: &str = "spare";
/// A spare is made only while the disk has this much free: its zeros
/// must never take the room of a write.
const SPARE_ROOM: u64 = 8 * ROTATE_AT;
/// After a spare could not be made, the next try waits this long.
const SPARE_RETRY: Duration = Duration::from_secs(60);
/// Bytes of queued operations at which writers wait for the applier: the
/// queue is a second copy of recent writes in memory, so it is bounded.
const QUEUE_CAP: usize = 128 * 1024 * 1024;
/// Bytes of queued operations at which the applier starts early.
const APPLY_AT: usize = 32 * 1024 * 1024;
/// How long the applier lets operations gather at most. The queue keeps
/// one operation per key (a later write replaces the queued one), so the
/// longer it gathers, the more rewrites of a hot key the engine is spared.
const APPLY_EVERY: Duration = Duration::from_secs(1);
/// At most this many bytes of operations go into one engine batch (a
/// memtable is 16 MiB).
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The record header: length and checksum.
const HEADER: usize = 8;

/// CRC-32C, sliced by 16 tables: the byte-at-a-time table was half of
/// `append`'s own time in a profile of pipelined SETs.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// One write: a tree, a key, and its new value (`None` deletes it).
pub(crate) type Op = (Keyspace, Vec<u8>, Option<Vec<u8>>);

/// The log of one data directory.
pub(crate) struct OpLog {
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled when the queue is taken (writers waiting for room).
    room: Condvar,
    /// Signalled to start the applier early, or to stop it.
    wake: Condvar,
    /// Held while a batch goes into the engine: batches go in one at a
    /// time, in the order they were taken.
    applying: Mutex<()>,
    failed: AtomicBool,
    /// Whether the log keeps a spare file (`--fsync always`).
    prefill: bool,
    /// Bytes of the batch being moved into the engine: taken from the
    /// queue, still in memory.
    applying_bytes: AtomicU64,
    /// Batches applied and operations they held, for tests and `INFO`.
    batches: AtomicU64,
    applied_ops: AtomicU64,
}

struct State {
    /// The file being appended to.
    file: Arc<File>,
    seq: u64,
    len: u64,
    /// Whether `file` was a spare: zeros up to [`ROTATE_AT`] past `len`.
    prefilled: bool,
    /// The next file, when one is ready.
    spare: Option<File>,
    /// Operations in the log and not yet taken by the applier: the last
    /// one of each key.
    queue: Vec<Op>,
    /// Where each key's operation is in `queue`, by [`op_hash`].
    index: HashTable<usize>,
    queued_bytes: usize,
    /// Closed files, to delete once what they hold is durable in the
    /// engine.
    closed: Vec<u64>,
    stop: bool,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

/// The log files in `dir`, by number.
pub(crate) fn files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The hash of an operation's tree and key, for the queue's index.
fn op_hash(op: &Op) -> u64 {
    let name: &str = op.0.name();
    xxh3_64_with_seed(&op.1, xxh3_64(name.as_bytes()))
}

fn same_key(a: &Op, b: &Op) -> bool {
    a.1 == b.1 && *a.0.name() == *b.0.name()
}

fn op_bytes(op: &Op) -> usize {
    op.1.len() + op.2.as_ref().map_or(0, Vec::len) + 32
}

/// Appends `ops` as one record to `out`.
fn encode(ops: &[Op], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    for (space, key, value) in ops {
        let name: &str = space.name();
        out.push(u8::from(value.is_some()));
        out.push(u8::try_from(name.len()).expect("tree names are at most 64 bytes"));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    let body = &out[start + HEADER..];
    let len = u32::try_from(body.len()).expect("a commit is under 4 GiB");
    let crc = CRC.checksum(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

impl OpLog {
    /// Opens the log of the data directory `path` over its opened engine:
    /// replays whatever the log holds into the engine, makes the engine
    /// durable, deletes the replayed files, and begins a new one. With
    /// `prefill` (`--fsync always`) its applier keeps a spare file ready.
    pub(crate) fn open(path: &Path, db: &Database, prefill: bool) -> Result<OpLog, PersistError> {
        let dir = path.join(DIR);
        let dir_err = |source| PersistError::Dir {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&dir).map_err(dir_err)?;
        let found = files(&dir).map_err(dir_err)?;
        let mut replayed = Replayed::default();
        let last = found.last().map(|(seq, _)| *seq);
        for (seq, file) in &found {
            replay(path, file, Some(*seq) == last, db, &mut replayed)?;
        }
        if !found.is_empty() {
            db.persist(PersistMode::SyncAll)
                .map_err(|source| PersistError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
            for (_, file) in &found {
                fs::remove_file(file).map_err(dir_err)?;
            }
            info!(
                path = %path.display(),
                files = found.len(),
                records = replayed.records,
                ops = replayed.ops,
                dropped_tree_ops = replayed.dropped,
                "write log replayed into the engine"
            );
        }
        // A spare left by the last run may be half made.
        remove_if_there(&dir.join(SPARE)).map_err(dir_err)?;
        let seq = last.map_or(1, |s| s + 1);
        let file = create(&dir, seq).map_err(dir_err)?;
        sync_dir(&dir).map_err(dir_err)?;
        Ok(OpLog {
            dir,
            state: Mutex::new(State {
                file: Arc::new(file),
                seq,
                len: 0,
                prefilled: false,
                spare: None,
                queue: Vec::new(),
                index: HashTable::new(),
                queued_bytes: 0,
                closed: Vec::new(),
                stop: false,
            }),
            room: Condvar::new(),
            wake: Condvar::new(),
            applying: Mutex::new(()),
            failed: AtomicBool::new(false),
            prefill,
            applying_bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            applied_ops: AtomicU64::new(0),
        })
    }

    /// Appends `ops` as one record and queues them for the engine. On an
    /// error nothing was appended (a partial record is cut off again) and
    /// the caller must not apply the write; if even that cut fails, the
    /// log refuses every later append.
    pub(crate) fn append(&self, ops: Vec<Op>) -> io::Result<()> {
        if ops.is_empty() {
            // Never an empty record: a header of zeros ends a file's records.
            return Ok(());
        }
        let mut record = Vec::with_capacity(ops.iter().map(op_bytes).sum::<usize>() + HEADER);
        encode(&ops, &mut record);
        let mut st = self.state.lock();
        while st.queued_bytes >= QUEUE_CAP && !st.stop && !self.failed() {
            self.wake.notify_one();
            self.room.wait(&mut st);
        }
        if self.failed() {
            return Err(io::Error::other(
                "the write log refuses writes after an earlier failure",
            ));
        }
        let full = st.len > 0 && st.len + record.len() as u64 > ROTATE_AT;
        // A file that grows (the first after an open, or one begun when no
        // spare was ready) is left as soon as a spare is.
        if full || (!st.prefilled && st.spare.is_some()) {
            self.rotate(&mut st)?;
        }
        if let Err(e) = st.file.write_all_at(&record, st.len) {
            if st.file.set_len(st.len).is_err() {
                self.failed.store(true, Ordering::Release);
            }
            return Err(e);
        }
        st.len += record.len() as u64;
        let State {
            queue,
            index,
            queued_bytes,
            ..
        } = &mut *st;
        for op in ops {
            let hash = op_hash(&op);
            *queued_bytes += op_bytes(&op);
            match index.find(hash, |&i| same_key(&queue[i], &op)) {
                Some(&i) => {
                    *queued_bytes -= op_bytes(&queue[i]);
                    queue[i] = op;
                }
                None => {
                    queue.push(op);
                    index.insert_unique(hash, queue.len() - 1, |&i| op_hash(&queue[i]));
                }
            }
        }
        if st.queued_bytes >= APPLY_AT {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Closes the current file (cut to its records and fsynced, so only
    /// the newest file can have a torn tail or zeros after its records)
    /// and begins the next: the spare if one is ready, else a new file.
    fn rotate(&self, st: &mut State) -> io::Result<()> {
        if st.prefilled {
            st.file.set_len(st.len)?;
        }
        st.file.sync_data()?;
        let seq = st.seq + 1;
        let (next, prefilled) = match st.spare.take() {
            Some(spare) => {
                fs::rename(self.dir.join(SPARE), self.dir.join(file_name(seq)))?;
                (spare, true)
            }
            None => (create(&self.dir, seq)?, false),
        };
        sync_dir(&self.dir)?;
        st.closed.push(st.seq);
        st.seq = seq;
        st.file = Arc::new(next);
        st.len = 0;
        st.prefilled = prefilled;
        if self.prefill {
            // The applier makes the next spare.
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Makes the spare file the log switches to next, under `--fsync
    /// always`: zeros written and fsynced up to [`ROTATE_AT`]. An append
    /// past a file's end changes its size, and every fdatasync then
    /// commits the filesystem's journal as well as the data: on this
    /// machine's ext4 an fdatasync took 370-700 µs and 570-690 µs of CPU
    /// (all threads) that way, 170-290 µs and 180-270 µs over written
    /// zeros (`docs/BENCHMARKS.md`, persistence section 15). Redis's AOF
    /// grows. Returns whether a spare was made (none is needed while one
    /// is ready); fails while the disk has less than [`SPARE_ROOM`] free,
    /// so that its zeros never take a write's room.
    pub(crate) fn make_spare(&self) -> io::Result<bool> {
        {
            let st = self.state.lock();
            if !self.prefill || st.spare.is_some() || st.stop || self.failed() {
                return Ok(false);
            }
        }
        let free = free_bytes(&self.dir)?;
        if free < SPARE_ROOM {
            return Err(io::Error::new(
                ErrorKind::StorageFull,
                format!("the disk has {free} bytes free, under the {SPARE_ROOM} a spare needs"),
            ));
        }
        let path = self.dir.join(SPARE);
        remove_if_there(&path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let zeros = vec![0; 1 << 20];
        let filled = (0..ROTATE_AT)
            .step_by(zeros.len())
            .try_for_each(|at| file.write_all_at(&zeros, at))
            .and_then(|()| file.sync_data());
        let mut st = self.state.lock();
        if let Err(e) = filled {
            drop(st);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        if st.stop {
            drop(st);
            let _ = fs::remove_file(&path);
            return Ok(false);
        }
        st.spare = Some(file);
        Ok(true)
    }

    /// Makes every record appended so far durable. Files closed earlier
    /// were fsynced when they were closed.
    pub(crate) fn sync(&self) -> io::Result<()> {
        if self.failed() {
            return Err(io::Error::other(
                "the write log refuses writes after an earlier failure",
            ));
        }
        let file = self.state.lock().file.clone();
        file.sync_data().inspect_err(|_| {
            self.failed.store(true, Ordering::Release);
        })
    }

    /// Whether an append, cut or sync failed: the log then takes nothing
    /// more until the directory is reopened.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Moves every queued operation into the engine (rule 2: the log is
    /// fsynced first), then deletes the closed files the engine now holds
    /// durably (rule 3). Returns once the engine holds every operation
    /// appended before the call.
    pub(crate) fn apply(&self, db: &Database) -> Result<(), fjall::Error> {
        let _one = self.applying.lock();
        let (mut ops, closed, file) = {
            let mut st = self.state.lock();
            self.applying_bytes
                .store(st.queued_bytes as u64, Ordering::Relaxed);
            st.queued_bytes = 0;
            st.index.clear();
            let taken = (
                std::mem::take(&mut st.queue),
                std::mem::take(&mut st.closed),
                st.file.clone(),
            );
            self.room.notify_all();
            taken
        };
        if ops.is_empty() && closed.is_empty() {
            return Ok(());
        }
        let result = self.apply_taken(db, &mut ops, &closed, &file);
        drop(ops);
        self.applying_bytes.store(0, Ordering::Relaxed);
        if result.is_err() {
            // What the engine may not have is still in the log files,
            // which stay: a restart replays them.
            self.failed.store(true, Ordering::Release);
            self.room.notify_all();
        }
        result
    }

    fn apply_taken(
        &self,
        db: &Database,
        ops: &mut [Op],
        closed: &[u64],
        file: &File,
    ) -> Result<(), fjall::Error> {
        if !ops.is_empty() {
            file.sync_data()?;
            let n = ops.len();
            // One operation per key (the queue keeps the last), in key
            // order for the skiplist.
            ops.sort_unstable_by(|a, b| {
                let (x, y): (&str, &str) = (a.0.name(), b.0.name());
                x.cmp(y).then_with(|| a.1.cmp(&b.1))
            });
            let mut batch = db.batch().durability(None);
            let mut bytes = 0;
            for (space, key, value) in ops.iter_mut() {
                let key = std::mem::take(key);
                bytes += key.len();
                match value.take() {
                    Some(v) => {
                        bytes += v.len();
                        batch.insert(space, key, v);
                    }
                    None => batch.remove(space, key),
                }
                if bytes >= BATCH_BYTES {
                    // Not atomic with the rest of the queue; that is fine:
                    // the files holding all of it stay until the end, and
                    // a replay over any mix of old and new values ends at
                    // the log's state (rule 4).
                    std::mem::replace(&mut batch, db.batch().durability(None)).commit()?;
                    bytes = 0;
                }
            }
            batch.commit()?;
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.applied_ops.fetch_add(n as u64, Ordering::Relaxed);
        }
        if !closed.is_empty() {
            db.persist(PersistMode::SyncAll)?;
            for seq in closed {
                fs::remove_file(self.dir.join(file_name(*seq)))?;
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Deletes every file once the engine holds all of it durably: the
    /// last step of a clean close, after [`OpLog::apply`] and the engine's
    /// own `persist`.
    pub(crate) fn retire_all(&self) -> io::Result<()> {
        for (_, file) in files(&self.dir)? {
            fs::remove_file(file)?;
        }
        self.state.lock().spare = None;
        remove_if_there(&self.dir.join(SPARE))?;
        sync_dir(&self.dir)
    }

    /// Bytes of operations the log holds in memory for the engine: those
    /// queued (one per key, at most [`QUEUE_CAP`] before writers wait) and
    /// the batch being applied, taken from the queue (at most as much
    /// again).
    pub(crate) fn queued_bytes(&self) -> u64 {
        // Under the state lock, which `apply` holds as it moves bytes from
        // the queue to the batch: none are counted twice.
        let st = self.state.lock();
        st.queued_bytes as u64 + self.applying_bytes.load(Ordering::Relaxed)
    }

    /// Batches applied so far and the operations they held.
    pub(crate) fn applied(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.applied_ops.load(Ordering::Relaxed),
        )
    }

    /// Runs the applier on a thread of its own until [`OpLog::stop`].
    pub(crate) fn start(
        self: &Arc<Self>,
        db: Database,
        failure: Arc<Mutex<Option<Failure>>>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let log = Arc::clone(self);
        std::thread::Builder::new()
            .name("ringkv-oplog".into())
            .spawn(move || log.run(&db, &failure))
    }

    fn run(&self, db: &Database, failure: &Mutex<Option<Failure>>) {
        let (mut spare_at, mut told) = (std::time::Instant::now(), false);
        loop {
            if self.prefill && std::time::Instant::now() >= spare_at {
                match self.make_spare() {
                    Ok(_) => told = false,
                    Err(e) => {
                        spare_at = std::time::Instant::now() + SPARE_RETRY;
                        let path = self.dir.join(SPARE);
                        if told {
                            debug!(path = %path.display(), error = %e, "still no spare write log file");
                        } else {
                            told = true;
                            warn!(
                                path = %path.display(),
                                error = %e,
                                "could not make the write log's next file ahead; appends grow \
                                 the current one (each fsync then costs more)"
                            );
                        }
                    }
                }
            }
            {
                let mut st = self.state.lock();
                if st.stop {
                    return;
                }
                if st.queued_bytes < APPLY_AT {
                    let _ = self.wake.wait_for(&mut st, APPLY_EVERY);
                }
                if st.stop {
                    return;
                }
            }
            if self.failed() {
                continue;
            }
            if let Err(e) = self.apply(db) {
                let message = describe(&e);
                failure.lock().get_or_insert_with(|| Failure {
                    kind: io_of(&e).map_or(ErrorKind::Other, io::Error::kind),
                    message: format!("applying the write log: {message}"),
                });
                error!(
                    path = %self.dir.display(),
                    error = %message,
                    "writing the log into the engine failed; writes are refused from now on, \
                     nothing acknowledged is lost (the log keeps it); fix the cause and restart"
                );
            }
        }
    }

    /// Stops the applier thread (it finishes the batch it is applying).
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
        self.room.notify_all();
    }
}

/// Bytes free for this process on the disk of `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    // The field types differ between platforms.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(stat.blocks_available()),
        u64::from(stat.fragment_size()),
    );
    Ok(blocks.saturating_mul(size))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn create(dir: &Path, seq: u64) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(file_name(seq)))
}

#[cfg(test)]
#[path = "oplog_tests.rs"]
mod tests;
