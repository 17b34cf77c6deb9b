//! The metadata state machine under openraft 0.9.
//!
//! - [`TypeConfig`]: entries carry a [`Command`], answers a
//!   [`Response`]; Raft ids are `u64` (openraft needs a
//!   `Copy` id, so the state machine gives each member a `raft_id`), nodes
//!   are [`openraft::BasicNode`] whose `addr` is the member's peer address.
//! - [`MemLogStore`]: an in-memory [`openraft::storage::RaftLogStorage`],
//!   for tests and nodes without a data directory; [`DiskLogStore`]: the
//!   log in a data directory, synced before openraft is told of a write.
//! - [`MetaStore`]: the [`openraft::storage::RaftStateMachine`] that applies
//!   committed commands to a [`MetaState`](crate::MetaState) and snapshots it
//!   with [`MetaState::encode`](crate::MetaState::encode), in the data
//!   directory too when it has one ([`MetaStore::open`]).
//! - [`MemRouter`]: an in-memory network ([`openraft::RaftNetworkFactory`])
//!   that delivers every RPC through serde, as a wire would, and can cut
//!   links to partition the group in tests.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use ringkv_meta::raft::{MemLogStore, MemRouter, MetaStore, test_config};
//! use ringkv_meta::{Command, NodeSpec, PlacementSpec, FIRST_RAFT_ID};
//!
//! let router = MemRouter::default();
//! let store = MetaStore::default();
//! let raft = openraft::Raft::new(
//!     FIRST_RAFT_ID,
//!     test_config(),
//!     router.network(FIRST_RAFT_ID),
//!     MemLogStore::default(),
//!     store.clone(),
//! )
//! .await?;
//! router.add(FIRST_RAFT_ID, raft.clone());
//! let me = openraft::BasicNode::new("127.0.0.1:7001");
//! raft.initialize(BTreeMap::from([(FIRST_RAFT_ID, me)])).await?;
//! let node = NodeSpec {
//!     id: "a".into(),
//!     client_addr: "127.0.0.1:6001".into(),
//!     peer_addr: "127.0.0.1:7001".into(),
//!     weight: 1,
//!     token: 0,
//!     key_format: ringkv_ring::KEY_FORMAT,
//! };
//! let placement = PlacementSpec::BalancedPartitions { partitions: 64 };
//! let answer = raft.client_write(Command::Bootstrap { placement, node }).await?;
//! assert_eq!(answer.data?.raft_id, Some(FIRST_RAFT_ID));
//! assert_eq!(store.state().members.len(), 1);
//! raft.shutdown().await?;
//! # Ok(())
//! # }
//! ```

// `declare_raft_types!` names `Cursor` unqualified (the snapshot data type).
use std::io::Cursor;
use std::sync::Arc;

use crate::command::{Command, Response};

mod disk_log;
mod log_store;
mod network;
mod peer;
mod state_machine;

pub use disk_log::{DiskLogStore, LOG_TREE};
pub use log_store::MemLogStore;
pub use network::{MemNetwork, MemRouter};
pub use peer::{PeerConnection, PeerNetwork, RaftService};
pub use state_machine::MetaStore;

openraft::declare_raft_types!(
    /// openraft's types for the metadata group.
    pub TypeConfig:
        D = Command,
        R = Response,
);

/// A Raft instance of the metadata group.
pub type MetaRaft = openraft::Raft<TypeConfig>;

/// What a [`MetaRaft`] reports of itself (`MetaRaft::metrics`).
pub type MetaMetrics = openraft::RaftMetrics<u64, openraft::BasicNode>;

/// Timings for tests on one machine: heartbeats every 50 ms, elections
/// after 150 to 300 ms of silence, a snapshot every 64 entries.
pub fn test_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ringkv-meta".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(64),
        max_in_snapshot_log_to_keep: 16,
        ..openraft::Config::default()
    };
    Arc::new(config.validate().expect("these timings are valid"))
}
