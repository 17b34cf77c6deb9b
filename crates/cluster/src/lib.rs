//! A thread-safe, in-process cluster of key-value nodes placed on a
//! consistent hash ring ([`ringkv_ring`]).
//!
//! - [`Cluster::put`], [`Cluster::get`] and [`Cluster::delete`] are
//!   linearizable per key from any number of threads, also while nodes
//!   join and leave.
//! - [`Cluster::add_node`] and [`Cluster::remove_node`] execute the ring
//!   diff: exactly the keys whose owner changes move, by range scans over
//!   token-ordered [`Store`]s, copied, then switched, then cleaned up.
//! - Keys hold [`Entry`]s (value, type, absolute expiry, version):
//!   [`Cluster::update_entry`] is the read-modify-write for expiry
//!   commands, [`Cluster::active_expire_cycle`] reclaims expired keys,
//!   [`Cluster::scan`] walks the key space in token order,
//!   [`Cluster::transaction`] makes several keys atomic across nodes, and
//!   `maxmemory` ([`Cluster::set_maxmemory`]) bounds
//!   [`ClusterStats::used_memory`] by an [`EvictionPolicy`].
//! - Failures during a redistribution are retried, then rolled back
//!   (before the switch) or paused for [`Cluster::resume`] (after it); no
//!   acknowledged write is lost. With the `fault-injection` feature,
//!   `Cluster::crash`, `Cluster::heal` and `Cluster::inject_fault` make
//!   nodes fail on purpose, for tests and demonstrations.
//!
//! ```
//! use ringkv_cluster::Cluster;
//!
//! let cluster = Cluster::default();
//! for id in ["node1", "node2", "node3"] {
//!     cluster.add_node(id)?;
//! }
//! cluster.put("key1", "value1")?;
//! assert_eq!(cluster.get(b"key1")?.as_deref(), Some(&b"value1"[..]));
//!
//! let report = cluster.add_node("node4")?;
//! println!("moved {} keys to node4", report.keys_moved);
//! assert_eq!(cluster.get(b"key1")?.as_deref(), Some(&b"value1"[..]));
//!
//! cluster.remove_node("node2")?;
//! assert!(cluster.delete("key1")?);
//! assert_eq!(cluster.get(b"key1")?, None);
//! # Ok::<(), ringkv_cluster::ClusterError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// A fault-injection point of the migrator: fires an armed fault with the
/// `fault-injection` feature, compiles to nothing without it.
macro_rules! fault_point {
    ($cluster:expr, $point:ident, $range:expr, $active:expr) => {
        #[cfg(feature = "fault-injection")]
        $cluster.inject($crate::fault::FaultPoint::$point, $range, $active);
    };
}

mod active;
mod backend;
mod change;
mod clock;
mod cluster;
mod commit;
mod config;
mod counts;
mod disk;
mod durable;
mod entry;
mod error;
mod evict;
mod expire;
#[cfg(feature = "fault-injection")]
mod fault;
mod keyspace;
mod membership;
mod node;
mod ops;
mod plan;
mod recover;
mod repair;
mod report;
mod routing;
mod shard;
mod step;
mod store;
mod transfer;
mod txn;

pub use backend::{StoreFactory, stripe_tokens};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use cluster::Cluster;
pub use config::ClusterConfig;
pub use entry::{ENTRY_FORMAT, ENTRY_OVERHEAD, Entry, EntryFormatError, EntryKind};
pub use error::ClusterError;
pub use evict::{EVICTION_SAMPLES, EvictionPolicy};
pub use expire::{ExpireBudget, ExpireCycle, SAMPLES_PER_STEP};
#[cfg(feature = "fault-injection")]
pub use fault::{Fault, FaultEffect, FaultPoint, FaultRole};
pub use keyspace::ScanPage;
pub use ops::{EntryUpdate, Update};
pub use recover::defer_sync;
pub use report::{ChangeKind, ClusterStats, NodeStats, Progress, RebalanceReport, TransferReport};
pub use ringkv_persist::FsyncPolicy;
pub use ringkv_ring::{NodeId, Placement, Ring, RingConfig, Token};
pub use store::{MemStore, Store, StoreError, StoredEntry};
pub use txn::Txn;
