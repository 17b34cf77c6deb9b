//! Typed errors of ring construction. Every error leaves the ring it was
//! called on unchanged: rings are immutable snapshots.

use crate::NodeId;

/// Why a ring could not be built or changed.
///
/// A failed call never changes the ring it was called on (rings are
/// immutable); the caller still holds the previous snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The node id is already a member.
    #[error("node `{id}` is already in the ring; remove it first or choose another id")]
    DuplicateNode {
        /// The id that was added twice.
        id: NodeId,
    },
    /// The node id is not a member.
    #[error("node `{id}` is not in the ring; list the members to check the id")]
    UnknownNode {
        /// The id that was not found.
        id: NodeId,
    },
    /// A node was given weight 0.
    #[error("node `{id}` has weight 0; a weight must be a positive integer")]
    ZeroWeight {
        /// The node that was given weight 0.
        id: NodeId,
    },
    /// A node id was empty.
    #[error("a node id must not be empty")]
    EmptyNodeId,
    /// A node id was longer than [`MAX_NODE_ID_LEN`](crate::MAX_NODE_ID_LEN).
    #[error("node id of {len} bytes is too long; use at most {max} bytes")]
    NodeIdTooLong {
        /// Length of the rejected id in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `weight * vnodes_per_weight` exceeds [`MAX_VNODES_PER_NODE`](crate::MAX_VNODES_PER_NODE).
    #[error(
        "node `{id}` would get {vnodes} virtual nodes (weight {weight}); \
         use at most {max}: lower the weight or vnodes per weight"
    )]
    TooManyVnodes {
        /// The node being added.
        id: NodeId,
        /// Its weight.
        weight: u32,
        /// The virtual nodes it would get.
        vnodes: u64,
        /// The limit.
        max: u32,
    },
    /// The configuration asked for zero virtual nodes per unit of weight.
    #[error("vnodes per weight must be at least 1")]
    ZeroVnodes,
    /// The ring holds [`MAX_NODES`](crate::MAX_NODES) nodes already.
    #[error("the ring already holds {max} nodes; remove one before adding another")]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
}
