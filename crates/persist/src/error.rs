//! [`PersistError`]: why an engine call failed, naming the file or
//! directory involved and saying what to do.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Why a [`PersistentEngine`](crate::PersistentEngine) call failed.
///
/// A failed write changed nothing the engine will report later: a write
/// batch is applied whole or not at all. After an I/O error on the journal
/// the engine refuses further writes (fjall "poisons" itself) until the
/// directory is reopened, so that nothing half-written is acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The data directory could not be created or listed.
    #[error(
        "cannot use data directory {path}: {source}; check that it exists, is a directory \
         and is writable"
    )]
    Dir {
        /// The data directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The path exists but is not a directory.
    #[error(
        "data directory {path} is a file, not a directory; point --data-dir to a directory (a new one is created)"
    )]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// A file or the directory itself cannot be written: a read-only file
    /// system, or missing permissions. ringkv writes to its directory even
    /// to open it (its lock, the journal's recovery). Nothing was changed.
    #[error(
        "cannot write to {file}: {source}; ringkv writes to its data directory {path} even to \
         open it: make the directory and its files writable (or remount the file system \
         read-write), or copy the directory somewhere writable"
    )]
    NotWritable {
        /// The data directory.
        path: PathBuf,
        /// The file (or directory) that could not be written.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A file of the directory is missing, truncated or corrupt, found by
    /// ringkv's own checks before the engine opened it (the engine would
    /// have dropped or deleted what it could not read). Nothing was
    /// changed.
    #[error(
        "{file} {problem}; opening would lose the data it holds, so {path} was left as it \
         was: restore the directory from a backup"
    )]
    Damaged {
        /// The data directory.
        path: PathBuf,
        /// The damaged or missing file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// Another process (or another open in this one) has the directory
    /// open: two writers would corrupt it.
    #[error(
        "data directory {path} is in use by another ringkv process (its lock file is held); \
         stop that process, or point --data-dir elsewhere"
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// The directory holds files but not the engine's version marker: it is
    /// not a ringkv data directory, or the marker was deleted. Nothing is
    /// created in it.
    #[error(
        "{path} is not empty but has no database version marker {marker}; point to an \
         empty or new directory, or restore the missing file from a backup"
    )]
    NotADatabase {
        /// The data directory.
        path: PathBuf,
        /// The marker file that is missing.
        marker: PathBuf,
    },

    /// The engine could not open the directory: a corrupt or truncated
    /// file, a format the engine does not read, another process holding
    /// the lock, or an I/O error. The directory is left as it was.
    #[error("{}", open_message(path, source))]
    Open {
        /// The data directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },

    /// The directory was written by a newer ringkv whose format this build
    /// does not read. No entry and not the format record was changed.
    #[error(
        "{path} holds data in format version {found}, newer than version {supported} that \
         this build reads; run the ringkv version that wrote it, or a newer one"
    )]
    NewerFormat {
        /// The data directory.
        path: PathBuf,
        /// The version recorded in the directory.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// The directory was written by an older ringkv that placed keys
    /// differently (format 1: by `xxh3` alone, before tokens began with the
    /// Redis Cluster slot). Nothing was changed; no entry is dropped.
    #[error(
        "{path} holds data in format version {found}, older than version {supported} that \
         this build reads (keys are now placed by Redis Cluster hash slot, so every stored \
         position changed); start this build on an empty data directory and copy the keys \
         over with a client from a server of the ringkv version that wrote it"
    )]
    OlderFormat {
        /// The data directory.
        path: PathBuf,
        /// The version recorded in the directory.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },

    /// The format version record is missing or unreadable although the
    /// database exists: the directory was not written by ringkv, or its
    /// metadata is damaged. Nothing was changed.
    #[error(
        "{path} has a database without a valid ringkv format version record ({detail}); \
         restore the directory from a backup or point to an empty one"
    )]
    BadFormatRecord {
        /// The data directory.
        path: PathBuf,
        /// What is wrong with the record.
        detail: String,
    },

    /// Reading failed: an I/O error or a corrupt block.
    #[error(
        "read from the database in {path} failed: {}; if this repeats, a file is \
         damaged: restore the directory from a backup",
        describe(source)
    )]
    Read {
        /// The data directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },

    /// Writing or syncing failed (a full disk, a read-only file system, a
    /// failing device). The write was not acknowledged; the engine refuses
    /// every later write ([`PersistError::WritesRefused`]) until the
    /// directory is reopened.
    #[error("{}", write_message(path, source))]
    Write {
        /// The data directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },

    /// A write refused because an earlier write or sync failed: the engine
    /// stopped accepting writes then, so that nothing after a hole in its
    /// journal is acknowledged. Reads still work. Every write acknowledged
    /// before the failure is kept; reopening the directory (restarting)
    /// accepts writes again once the cause is fixed.
    #[error("{}", refused_message(path, cause.as_ref()))]
    WritesRefused {
        /// The data directory.
        path: PathBuf,
        /// The first failure, if this directory saw it (a failure in the
        /// engine's background work is only logged).
        cause: Option<Failure>,
    },

    /// A stored key is shorter than its 8-byte token prefix: the file is
    /// damaged (the engine only stores keys this crate encoded).
    #[error(
        "corrupt entry in {path}: a stored key of {len} bytes has no 8-byte token prefix; \
         restore the directory from a backup"
    )]
    CorruptKey {
        /// The data directory.
        path: PathBuf,
        /// The length of the damaged key.
        len: usize,
    },
}

/// The first write failure of a directory, kept to explain the writes
/// refused after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The operating system's error kind.
    pub kind: ErrorKind,
    /// The operating system's error, as text.
    pub message: String,
}

impl Failure {
    /// Whether the failure was the disk (or a quota) being full.
    pub fn is_disk_full(&self) -> bool {
        is_full(self.kind)
    }
}

fn is_full(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// The operating system's error inside an engine error, if it is one.
pub(crate) fn io_of(e: &fjall::Error) -> Option<&std::io::Error> {
    match e {
        fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => Some(e),
        _ => None,
    }
}

/// An engine error in words (the engine's own `Display` is its `Debug`).
pub(crate) fn describe(e: &fjall::Error) -> String {
    use fjall::Error as F;
    use fjall::LsmError as L;
    if let Some(io) = io_of(e) {
        return io.to_string();
    }
    match e {
        F::Storage(L::ChecksumMismatch { .. }) => {
            "a block's checksum does not match (corrupt data)".into()
        }
        F::Storage(L::Unrecoverable) | F::Unrecoverable => {
            "a table file the engine's manifest lists is missing or unreadable (the engine's log \
             says which)"
                .into()
        }
        F::Storage(L::InvalidTrailer | L::InvalidHeader(_) | L::InvalidTag(_))
        | F::InvalidTrailer
        | F::InvalidTag(_) => {
            format!("a file does not decode ({e:?}; corrupt or truncated data)")
        }
        F::Storage(L::Decompress(_)) | F::Decompress(_) => {
            "a block does not decompress (corrupt data)".into()
        }
        F::JournalRecovery(r) => format!("the journal is corrupt ({r:?})"),
        F::InvalidVersion(v) => format!("the engine's format version marker is invalid ({v:?})"),
        F::Poisoned => "the engine refuses writes after an earlier failure".into(),
        F::Locked => "the directory is locked by another process".into(),
        other => format!("{other:?}"),
    }
}

fn open_message(path: &Path, source: &fjall::Error) -> String {
    let what = describe(source);
    let advice = match io_of(source).map(std::io::Error::kind) {
        Some(ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem) => {
            "make the directory and its files writable (or remount the file system read-write)"
        }
        Some(kind) if is_full(kind) => "free disk space, then start again",
        Some(ErrorKind::NotFound | ErrorKind::UnexpectedEof | ErrorKind::InvalidData) | None => {
            "a file is missing, truncated or corrupt: restore the directory from a backup \
             (nothing was re-initialised)"
        }
        Some(_) => {
            "check the device; if a file is damaged, restore the directory from a backup \
             (nothing was re-initialised)"
        }
    };
    format!(
        "cannot open the database in {}: {what}; {advice}",
        path.display()
    )
}

fn write_message(path: &Path, source: &fjall::Error) -> String {
    let path = path.display();
    match io_of(source) {
        Some(io) if is_full(io.kind()) => format!(
            "the disk holding the data directory {path} is full ({io}): this write was refused \
             and writes stay refused; free disk space, then restart ringkv (every acknowledged \
             write is kept, reads still work)"
        ),
        _ => format!(
            "write to the database in {path} failed: {}; writes stay refused: fix the cause \
             (disk space, permissions, the device), then restart ringkv (every acknowledged \
             write is kept, reads still work)",
            describe(source)
        ),
    }
}

fn refused_message(path: &Path, cause: Option<&Failure>) -> String {
    let path = path.display();
    match cause {
        Some(f) if f.is_disk_full() => format!(
            "the disk holding the data directory {path} is full ({}): writes are refused since \
             the first write that did not fit; free disk space, then restart ringkv (every \
             acknowledged write is kept, reads still work)",
            f.message
        ),
        Some(f) => format!(
            "writes to the data directory {path} are refused since a write failed ({}); fix \
             the cause (disk space, permissions, the device), then restart ringkv (every \
             acknowledged write is kept, reads still work)",
            f.message
        ),
        None => format!(
            "writes to the data directory {path} are refused since the storage engine's \
             background work failed (its error is in the log: a full disk or a failing \
             device?); fix the cause, then restart ringkv (every acknowledged write is kept, \
             reads still work)"
        ),
    }
}

impl PersistError {
    /// The error's message, and the operating system's error when the
    /// failure was one (a full disk, a read-only directory, a failing
    /// device), so that a caller can keep it as the source of its own.
    pub fn into_parts(self) -> (String, Option<std::io::Error>) {
        let message = self.to_string();
        let io = match self {
            PersistError::Dir { source, .. } | PersistError::NotWritable { source, .. } => {
                Some(source)
            }
            PersistError::Open { source, .. }
            | PersistError::Read { source, .. }
            | PersistError::Write { source, .. } => match source {
                fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => Some(e),
                _ => None,
            },
            // The first failure's kind, so that a caller can still tell a
            // full disk from the writes refused after it.
            PersistError::WritesRefused {
                cause: Some(cause), ..
            } => Some(std::io::Error::new(cause.kind, cause.message)),
            _ => None,
        };
        (message, io)
    }

    /// Whether the error says stored data is damaged (rather than the disk
    /// or the directory failing).
    pub fn is_corruption(&self) -> bool {
        match self {
            PersistError::CorruptKey { .. }
            | PersistError::BadFormatRecord { .. }
            | PersistError::Damaged { .. } => true,
            PersistError::Read { source, .. } | PersistError::Open { source, .. } => !matches!(
                source,
                fjall::Error::Io(_)
                    | fjall::Error::Storage(fjall::LsmError::Io(_))
                    | fjall::Error::Locked
            ),
            _ => false,
        }
    }
}
