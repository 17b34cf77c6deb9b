//! [`PersistError`]: why an engine call failed, naming the file or
//! directory involved and saying what to do.

use std::path::PathBuf;

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
    #[error(
        "cannot open the database in {path}: {source}; if a file is corrupt or truncated, \
         restore the directory from a backup (nothing was re-initialised); if it is locked, stop \
         the other process using it"
    )]
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
        "read from the database in {path} failed: {source}; if this repeats, the file is \
         damaged: restore the directory from a backup"
    )]
    Read {
        /// The data directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },

    /// Writing or syncing failed (a full disk, a read-only file system, a
    /// failing device). The write was not acknowledged.
    #[error(
        "write to the database in {path} failed: {source}; free disk space or fix the \
         device, then restart"
    )]
    Write {
        /// The data directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
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

impl PersistError {
    /// The error's message, and the operating system's error when the
    /// failure was one (a full disk, a read-only directory, a failing
    /// device), so that a caller can keep it as the source of its own.
    pub fn into_parts(self) -> (String, Option<std::io::Error>) {
        let message = self.to_string();
        let io = match self {
            PersistError::Dir { source, .. } => Some(source),
            PersistError::Open { source, .. }
            | PersistError::Read { source, .. }
            | PersistError::Write { source, .. } => match source {
                fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => Some(e),
                _ => None,
            },
            _ => None,
        };
        (message, io)
    }

    /// Whether the error says stored data is damaged (rather than the disk
    /// or the directory failing).
    pub fn is_corruption(&self) -> bool {
        match self {
            PersistError::CorruptKey { .. } | PersistError::BadFormatRecord { .. } => true,
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
