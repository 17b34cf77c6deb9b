//! [`WriteBatch`] and [`Durability`]: several writes applied as one engine
//! transaction, and whether a write waits for the disk.

use bytes::Bytes;

/// Whether a write returns before or after its data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The write is in the engine's journal in the OS page cache when the
    /// call returns: it survives a crash of the process (kill -9), not a
    /// power cut or an OS crash until the next [`Durability::Fsync`] write
    /// or [`PersistentEngine::sync`](crate::PersistentEngine::sync).
    #[default]
    NoSync,
    /// The journal is fsynced (`fdatasync`) before the call returns: the
    /// write and every earlier one survive a power cut.
    Fsync,
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put {
        token: u64,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        token: u64,
        key: Bytes,
    },
}

/// Writes applied together by
/// [`PersistentEngine::write`](crate::PersistentEngine::write): all of them
/// or none, in one engine transaction (one journal record), so that a copy
/// batch of a redistribution costs one commit, not one per key.
///
/// Later writes to the same key win over earlier ones in the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// An empty batch with room for `n` writes.
    pub fn with_capacity(n: usize) -> WriteBatch {
        WriteBatch {
            ops: Vec::with_capacity(n),
        }
    }

    /// Stores `value` (the entry's bytes) under `(token, key)`.
    pub fn put(&mut self, token: u64, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.push(Op::Put {
            token,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Removes `(token, key)` if present.
    pub fn delete(&mut self, token: u64, key: impl Into<Bytes>) {
        self.ops.push(Op::Delete {
            token,
            key: key.into(),
        });
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
