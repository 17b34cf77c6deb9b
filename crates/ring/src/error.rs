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
    #[error(
        "node `{}` is already in the ring; remove it first or choose another id",
        .id.as_str().escape_debug()
    )]
    DuplicateNode {
        /// The id that was added twice.
        id: NodeId,
    },
    /// The node id is not a member.
    #[error(
        "node `{}` is not in the ring; list the members to check the id",
        .id.as_str().escape_debug()
    )]
    UnknownNode {
        /// The id that was not found.
        id: NodeId,
    },
    /// A node was given weight 0.
    #[error(
        "node `{}` has weight 0; a weight must be a positive integer",
        .id.as_str().escape_debug()
    )]
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
    /// A node id holds a character outside ASCII letters, digits and
    /// [`NODE_ID_PUNCTUATION`](crate::NODE_ID_PUNCTUATION) (see
    /// [`NodeId::validate`]).
    #[error(
        "node id {id:?} contains {found:?} at byte {index}; \
         use 1 to {max} ASCII letters, digits and `{punct}`",
        max = crate::MAX_NODE_ID_LEN,
        punct = crate::NODE_ID_PUNCTUATION
    )]
    InvalidNodeId {
        /// The rejected id.
        id: NodeId,
        /// Byte offset of the first character not allowed.
        index: usize,
        /// That character.
        found: char,
    },
    /// `weight * vnodes_per_weight` exceeds [`MAX_VNODES_PER_NODE`](crate::MAX_VNODES_PER_NODE).
    #[error(
        "node `{}` would get {vnodes} virtual nodes (weight {weight}); \
         use at most {max}: lower the weight or vnodes per weight",
        .id.as_str().escape_debug()
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
    /// A balanced ring's partition count is not a power of two in range.
    #[error("{partitions} partitions: the count must be a power of two from {min} to {max}")]
    InvalidPartitions {
        /// The rejected count.
        partitions: u32,
        /// Smallest accepted count.
        min: u32,
        /// Largest accepted count.
        max: u32,
    },
    /// A balanced ring already has as many nodes as partitions.
    #[error(
        "the ring has {partitions} partitions and as many nodes; \
         use more partitions to add another node"
    )]
    TooManyNodesForPartitions {
        /// The ring's partition count.
        partitions: u32,
    },
    /// A saved ring names a format this version does not read.
    #[error("unsupported ring format `{found}`; this version reads `ringkv-ring/1`")]
    UnsupportedFormat {
        /// The format named by the document.
        found: String,
    },
    /// A saved ring is not valid JSON of the expected shape.
    #[error("malformed saved ring: {reason}")]
    MalformedRing {
        /// What the parser rejected (with line and column).
        reason: String,
    },
    /// A saved balanced ring's assignment does not list one owner per
    /// partition.
    #[error("the saved assignment lists {found} partitions; the ring has {expected}")]
    PartitionCount {
        /// The ring's partition count (0 for an empty ring).
        expected: usize,
        /// The length of the saved assignment.
        found: usize,
    },
    /// A saved assignment names a node index outside the node list.
    #[error("partition {partition} is assigned to node index {index}, but there are {nodes} nodes")]
    UnknownNodeIndex {
        /// The partition.
        partition: usize,
        /// The index it names.
        index: u32,
        /// The number of nodes saved.
        nodes: usize,
    },
    /// A saved random-vnode ring carries a partition assignment.
    #[error("a random-vnode ring has no partition assignment; remove `assignment`")]
    UnexpectedAssignment,
}
