//! A consistent hash ring with weighted virtual nodes.
//!
//! - Keys and vnodes are placed over explicit bytes ([`key_token`]: the
//!   key's Redis Cluster slot, then `xxh3_64`; [`vnode_token`]: `xxh3_64`),
//!   so positions are the same on every machine and in every version, and
//!   each Redis Cluster slot is one run of tokens ([`slot_tokens`]).
//! - A key with a hash tag is placed by its tag alone ([`hash_tag`], the
//!   rule of Redis Cluster and twemproxy): `{user1}.name` and
//!   `{user1}.email` share a token, so they always live on one node and
//!   multi-key commands over them stay on one node.
//! - A [`Ring`] is an immutable, versioned snapshot: a membership change
//!   returns the next snapshot (`epoch + 1`) in one linear merge, and the
//!   old one stays valid for readers holding it.
//! - [`Ring::owner`] finds a key's node through a lookup table over the top
//!   bits of the token, then a short scan: about one cache line.
//! - [`Ring::diff`] lists exactly the token ranges whose owner changes
//!   between two snapshots: the plan a redistribution executes.
//! - Two placement strategies ([`Placement`]): random vnodes
//!   ([`Ring::new`], `Ring::default()`: placement is a function of the
//!   membership) and balanced partitions ([`Ring::balanced`]: `Q` equal
//!   partitions assigned as nodes join and leave, every node within one
//!   partition of its weighted share; the state depends on the history of
//!   changes and is saved with [`Ring::to_json`] / [`Ring::from_json`]).
//!   The cluster built on this crate uses balanced partitions by default.
//!
//! No I/O and no locks: this crate only decides.
//!
//! ```
//! use ringkv_ring::{Ring, RingConfig, key_token};
//!
//! let ring = Ring::new(RingConfig::default())?
//!     .with_node("node1", 1)?
//!     .with_node("node2", 1)?
//!     .with_node("node3", 2)?; // twice the share of the others
//! assert_eq!(ring.epoch(), 3);
//!
//! let owner = ring.owner(b"key1").expect("the ring is not empty");
//! println!("key1 lives on {owner}");
//!
//! // Adding a node moves only the ranges it takes over.
//! let next = ring.with_node("node4", 1)?;
//! let plan = ring.diff(&next);
//! assert!(plan.moves.iter().all(|m| m.to.as_str() == "node4"));
//! let moved = plan.find(key_token(b"key1")).is_some();
//! assert_eq!(moved, next.owner(b"key1").unwrap().as_str() == "node4");
//! # Ok::<(), ringkv_ring::RingError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod balanced;
mod diff;
mod error;
mod hash;
mod lookup;
mod node;
mod placement;
mod preference;
mod random;
mod range;
mod ring;
mod serial;

pub use balanced::{BalancedConfig, MAX_PARTITIONS, MIN_PARTITIONS};
pub use diff::{RangeMove, ReplicaMove, RingDiff};
pub use error::RingError;
pub use hash::{
    KEY_FORMAT, SLOTS, Token, hash_tag, key_slot, key_token, slot_tokens, token_slot, vnode_token,
};
pub use node::{MAX_NODE_ID_LEN, NODE_ID_PUNCTUATION, NodeId};
pub use placement::Placement;
pub use preference::PreferenceList;
pub use range::TokenRange;
pub use ring::{MAX_NODES, MAX_VNODES_PER_NODE, Ring, RingConfig};
pub use serial::RING_FORMAT;

#[cfg(test)]
mod tests;
