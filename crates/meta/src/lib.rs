//! ringkv's cluster metadata: membership, the ring and the membership change
//! in flight, as a deterministic state machine replicated through Raft.
//!
//! Every node process applies the same committed commands in the same order
//! and so derives the same [`MetaState`]: the members (with addresses,
//! weights and states joining / up / leaving / down), the ring in force at
//! each epoch, and the change in flight with each range's [`Phase`]. Data
//! never goes through the log: ranges move between processes outside it,
//! and only their phase changes are committed.
//!
//! - [`apply`]: `(state, command) -> (state, response)`, pure and
//!   deterministic; a rejected command changes nothing.
//! - [`MetaState::serving`]: who serves a token now, as routing asks.
//! - [`choose_voters`]: the 3 or 5 members that vote in the Raft group.
//! - [`raft`]: the state machine under openraft 0.9, with an in-memory log
//!   store and an in-memory network for tests.
//!
//! The design, the message flows and why each step is safe under crashes:
//! `docs/DISTRIBUTED.md`.
//!
//! ```
//! use ringkv_meta::{Command, MetaState, NodeSpec, Phase, PlacementSpec};
//!
//! let node = |id: &str| NodeSpec {
//!     id: id.into(),
//!     client_addr: format!("127.0.0.1:{}", 6379),
//!     peer_addr: format!("127.0.0.1:{}", 7379),
//!     weight: 1,
//!     token: 0,
//!     key_format: ringkv_ring::KEY_FORMAT,
//! };
//! let mut state = MetaState::new();
//! let placement = PlacementSpec::BalancedPartitions { partitions: 256 };
//! state.apply(&Command::Bootstrap { placement, node: node("a") })?;
//! state.apply(&Command::Join { node: node("b") })?;
//! let change = state.apply(&Command::BeginChange { node: "b".into() })?.change.unwrap();
//! let all: Vec<usize> = (0..state.change.as_ref().unwrap().ranges.len()).collect();
//! state.apply(&Command::FenceRanges { change, ranges: all.clone() })?;
//! state.apply(&Command::SwitchRanges { change, ranges: all })?;
//! state.apply(&Command::FinishChange { change })?;
//! assert_eq!(state.ring.as_ref().unwrap().len(), 2);
//! assert_eq!(state.epoch, 6);
//! # Ok::<(), ringkv_meta::Rejected>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod change;
mod command;
mod member;
pub mod raft;
mod serial;
mod state;
mod voters;

pub use apply::apply;
pub use change::{Change, ChangeKind, Phase, Progress, RangeMove};
pub use command::{Applied, Command, Rejected, Response};
pub use member::{Lifecycle, Member, NodeSpec, NodeState};
pub use serial::PlacementSpec;
pub use state::{DecodeError, FIRST_RAFT_ID, META_FORMAT, MetaState, Serving};
pub use voters::{choose_voters, seated_down, voter_count};
