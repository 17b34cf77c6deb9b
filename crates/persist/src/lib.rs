//! Persistent, token-ordered storage of one ringkv node's entries on an
//! embedded engine ([fjall], an LSM tree with a write-ahead journal).
//!
//! A [`PersistentEngine`] maps `(token, key)` to entry bytes. Keys are
//! stored as `token (u64 big-endian) || key`, so the engine's order is the
//! ring's: a token interval is one contiguous range, which
//! [`scan`](PersistentEngine::scan) pages through and
//! [`take_range`](PersistentEngine::take_range) removes, the two moves of a
//! redistribution. A [`WriteBatch`] is one engine transaction, so a copy
//! batch costs one commit. Each write says its [`Durability`]:
//! [`NoSync`](Durability::NoSync) survives kill -9,
//! [`Fsync`](Durability::Fsync) survives a power cut.
//!
//! A [`DataDir`] is one directory and one database: records (the owner's
//! metadata), any number of trees, one journal, and the [`FsyncPolicy`]
//! with its group commit. The directory records its format version; a
//! newer version, a corrupt or truncated file, a foreign directory or one
//! another process has open is refused with a [`PersistError`] naming it,
//! never re-initialised. The cluster puts its `Store` trait over the trees
//! (`ringkv_cluster::Cluster::open`). Why fjall rather than redb is
//! measured and argued in `docs/BENCHMARKS.md`.
//!
//! ```
//! use ringkv_persist::{Durability, PersistentEngine, WriteBatch};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = PersistentEngine::open(dir.path())?;
//! engine.put(7, b"key1", b"value1", Durability::Fsync)?;
//!
//! let mut batch = WriteBatch::new();
//! batch.put(9, "key2", "value2");
//! batch.put(12, "key3", "value3");
//! engine.write(batch, Durability::NoSync)?;
//!
//! let mut out = Vec::new();
//! engine.scan(0..=10, None, 100, &mut out)?;
//! assert_eq!(out.len(), 2); // tokens 7 and 9
//! drop(engine);
//!
//! let engine = PersistentEngine::open(dir.path())?; // everything is still there
//! assert_eq!(engine.get(12, b"key3")?.as_deref(), Some(&b"value3"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [fjall]: https://docs.rs/fjall
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod batch;
mod dir;
mod engine;
mod error;
mod guard;
mod key;
mod oplog;
mod sync;

pub use batch::{Durability, WriteBatch};
pub use dir::{DataDir, FORMAT_VERSION};
pub use engine::{Entry, PersistentEngine};
pub use error::{Failure, PersistError};
pub use sync::FsyncPolicy;
