//! ringkv's own checks of a data directory before the engine opens it,
//! and the record of a clean close they compare against.
//!
//! Before any of them, [`lock`] takes ringkv's own lock on the directory,
//! held until the last step of the close (the clean-close record written
//! after the engine closed): an open in this process or another never
//! inspects, or races, a directory that is still open or still closing.
//!
//! The engine recovers from a crash by design: it drops a journal's tail
//! that does not decode (a torn last write) and deletes a tree whose
//! creation did not finish. Applied to a damaged directory, the same
//! recovery drops acknowledged writes without a word: a journal truncated
//! or corrupted after a clean close, a tree whose `current` file was
//! deleted. These checks run first and refuse such a directory, naming the
//! file, with nothing changed:
//!
//! - every file the engine will write is writable (a read-only mount or
//!   missing permissions are reported as such, not as a damaged database);
//! - no tree directory holding table files lacks its version pointer;
//! - when the directory was closed cleanly, every journal file holds what
//!   it held then: its length and an xxh3 digest of its bytes (up to the
//!   engine's zero padding) are in
//!   [`CLEAN_CLOSE`], written after the engine closed and removed by the
//!   next open once checked. After a crash there is no record, and a torn
//!   tail is the engine's to drop.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::PersistError;

/// The record of a clean close, in the data directory.
pub(crate) const CLEAN_CLOSE: &str = "clean-close";
/// Its first line.
const HEADER: &str = "ringkv clean close 1";
/// A file created and removed to check that the directory is writable.
const PROBE: &str = ".ringkv-write-check";
/// ringkv's lock file. The engine has its own (`lock`), but takes it only
/// when it opens, after the checks here, and releases it before the
/// clean-close record is written.
pub(crate) const LOCK: &str = "ringkv.lock";

/// Takes the exclusive lock on the data directory `dir` (an advisory
/// `flock` on [`LOCK`], created if missing), held for as long as the
/// returned file is open. Refused with [`PersistError::Locked`] while
/// another open, in this process or another, holds it.
pub(crate) fn lock(dir: &Path) -> Result<File, PersistError> {
    let file = dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file)
        .map_err(|source| PersistError::NotWritable {
            path: dir.to_path_buf(),
            file: file.clone(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(PersistError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(PersistError::Dir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The engine's journal files in `dir` (`<number>.jnl`), sorted by name.
fn journals(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let is_journal = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()));
        if is_journal && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an open of `dir`, in this process or another, holds its lock
/// (see [`lock`]): it is open, or has not finished closing. Takes the lock
/// for an instant to find out, so an open racing this call may be refused.
pub(crate) fn in_use(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK)) else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// Checks that the directory and the files the engine opens for writing
/// (its lock, its journals) can be written. Changes nothing.
pub(crate) fn check_writable(dir: &Path) -> Result<(), PersistError> {
    let not_writable = |file: PathBuf, source| PersistError::NotWritable {
        path: dir.to_path_buf(),
        file,
        source,
    };
    let probe = dir.join(PROBE);
    File::create(&probe).map_err(|e| not_writable(dir.to_path_buf(), e))?;
    fs::remove_file(&probe).map_err(|e| not_writable(dir.to_path_buf(), e))?;
    let lock = dir.join("lock");
    let mut files = journals(dir).map_err(|source| PersistError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    if lock.exists() {
        files.push(lock);
    }
    let log = dir.join(crate::oplog::DIR);
    if log.exists() {
        let probe = log.join(PROBE);
        File::create(&probe).map_err(|e| not_writable(log.clone(), e))?;
        fs::remove_file(&probe).map_err(|e| not_writable(log.clone(), e))?;
        let logs = crate::oplog::files(&log).map_err(|source| PersistError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        files.extend(logs.into_iter().map(|(_, path)| path));
    }
    for file in files {
        if let Err(e) = OpenOptions::new().append(true).open(&file) {
            return Err(not_writable(file, e));
        }
    }
    Ok(())
}

/// The prefix of a marker file `dropping-<folder>` in the data directory:
/// the tree in `keyspaces/<folder>` is being dropped.
const DROPPING: &str = "dropping-";

/// Records, durably, that the tree in `keyspaces/<folder>` is being
/// dropped (see `DataDir::drop_tree`).
pub(crate) fn mark_dropping(dir: &Path, folder: &str) -> Result<(), std::io::Error> {
    let marker = dir.join(format!("{DROPPING}{folder}"));
    File::create(&marker)?.sync_all()?;
    File::open(dir)?.sync_all()
}

/// Removes the markers of drops whose folder is gone.
pub(crate) fn forget_finished_drops(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(folder) = name.to_str().and_then(|n| n.strip_prefix(DROPPING)) else {
            continue;
        };
        if !dir.join("keyspaces").join(folder).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Refuses a tree directory that holds table files but no `current`
/// version pointer: the engine takes such a tree for one whose creation a
/// crash interrupted and deletes it, tables and all. A tree being dropped
/// (its marker exists) is the exception: the engine deletes `current`
/// first, so a crash during the drop leaves exactly that.
pub(crate) fn check_trees(dir: &Path) -> Result<(), PersistError> {
    let trees = dir.join("keyspaces");
    let Ok(entries) = fs::read_dir(&trees) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let tree = entry.path();
        if !tree.is_dir() || entry.file_name() == "0" {
            continue;
        }
        let current = tree.join("current");
        if current.exists() {
            continue;
        }
        let dropping = entry
            .file_name()
            .to_str()
            .is_some_and(|folder| dir.join(format!("{DROPPING}{folder}")).exists());
        if dropping {
            continue;
        }
        let tables = fs::read_dir(tree.join("tables"))
            .map(|mut t| t.next().is_some())
            .unwrap_or(false);
        if tables {
            return Err(PersistError::Damaged {
                path: dir.to_path_buf(),
                file: current,
                problem: "is missing, but its tree holds table files (the engine would delete \
                          the tree as never created)"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The length and xxh3 digest of a journal's content: its bytes up to the
/// last non-zero one. The engine preallocates journals with zeros and
/// trims them at open; neither changes the content.
fn digest(file: &Path) -> Result<(u64, u64), std::io::Error> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(file)?;
    let mut buf = vec![0u8; 1 << 20];
    // The end of the content, found from the file's end backwards.
    let mut end = f.metadata()?.len();
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let block = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(block)?;
        match last_non_zero(block) {
            Some(i) => {
                end = start + i as u64 + 1;
                break;
            }
            None => end = start,
        }
    }
    f.seek(SeekFrom::Start(0))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut left = end;
    while left > 0 {
        let block = &mut buf[..left.min(1 << 20) as usize];
        f.read_exact(block)?;
        hasher.update(block);
        left -= block.len() as u64;
    }
    Ok((end, hasher.digest()))
}

/// The index of the last non-zero byte of `block`. Compares 4 KiB pieces
/// with zeros first (a `memcmp`, fast in every build): a journal is
/// mostly its zero padding.
fn last_non_zero(block: &[u8]) -> Option<usize> {
    const PIECE: usize = 4096;
    static ZEROS: [u8; PIECE] = [0; PIECE];
    let mut end = block.len();
    while end > 0 {
        let start = end.saturating_sub(PIECE);
        let piece = &block[start..end];
        if piece != &ZEROS[..piece.len()] {
            return piece.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

/// If `dir` was closed cleanly, checks every journal file against the
/// record of that close, then removes the record (and syncs the
/// directory), so that a crash from now on is recovered as one.
pub(crate) fn check_clean_close(dir: &Path) -> Result<(), PersistError> {
    let record = dir.join(CLEAN_CLOSE);
    let text = match fs::read_to_string(&record) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PersistError::Dir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let damaged = |file: PathBuf, problem: String| PersistError::Damaged {
        path: dir.to_path_buf(),
        file,
        problem,
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(damaged(
            record,
            format!("does not start with `{HEADER}` (ringkv's record of its last clean close)"),
        ));
    }
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let parsed = match fields[..] {
            [name, len, hash] => len
                .parse::<u64>()
                .ok()
                .zip(u64::from_str_radix(hash, 16).ok())
                .map(|(len, hash)| (name, len, hash)),
            _ => None,
        };
        let Some((name, len, hash)) = parsed else {
            return Err(damaged(record, format!("has an unreadable line {line:?}")));
        };
        let journal = dir.join(name);
        match digest(&journal) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(damaged(
                    journal,
                    format!(
                        "is missing (the engine's journal: it held {len} bytes when ringkv \
                         closed the directory cleanly)"
                    ),
                ));
            }
            Err(source) => {
                return Err(PersistError::Dir {
                    path: dir.to_path_buf(),
                    source,
                });
            }
            Ok((found, _)) if found != len => {
                return Err(damaged(
                    journal,
                    format!(
                        "holds {found} bytes, not the {len} it held when ringkv closed the \
                         directory cleanly: the journal is {}",
                        if found < len { "truncated" } else { "damaged" }
                    ),
                ));
            }
            Ok((_, found)) if found != hash => {
                return Err(damaged(
                    journal,
                    "changed since ringkv closed the directory cleanly: the journal is corrupt"
                        .into(),
                ));
            }
            Ok(_) => {}
        }
    }
    let not_writable = |source| PersistError::NotWritable {
        path: dir.to_path_buf(),
        file: record.clone(),
        source,
    };
    fs::remove_file(&record).map_err(not_writable)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PersistError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(())
}

/// Records that `dir` was closed cleanly: every journal's length and
/// digest, written to a temporary file, synced and renamed into place.
/// Called once the engine has closed the directory.
pub(crate) fn record_clean_close(dir: &Path) -> Result<(), std::io::Error> {
    let mut text = format!("{HEADER}\n");
    for journal in journals(dir)? {
        let (len, hash) = digest(&journal)?;
        let name = journal
            .file_name()
            .and_then(|n| n.to_str())
            .expect("journal names are ASCII");
        text.push_str(&format!("{name} {len} {hash:016x}\n"));
    }
    let tmp = dir.join(format!("{CLEAN_CLOSE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CLEAN_CLOSE))?;
    File::open(dir)?.sync_all()
}

/// Whether `name` is a file ringkv leaves behind only by crashing at the
/// wrong instant (not data: a directory holding only these is new).
pub(crate) fn is_scratch(name: &std::ffi::OsStr) -> bool {
    name == PROBE || name == LOCK || name == format!("{CLEAN_CLOSE}.tmp").as_str()
}
