//! The saved form of a ring: a versioned JSON document.
//!
//! ```text
//! {
//!   "format": "ringkv-ring/1",
//!   "placement": {"strategy": "balanced_partitions", "partitions": 65536},
//!             or {"strategy": "random_vnodes", "vnodes_per_weight": 256},
//!   "epoch": 12,
//!   "nodes": [{"id": "a", "weight": 1}, {"id": "b", "weight": 2}],
//!   "assignment": [1, 0, 1, ...]
//! }
//! ```
//!
//! - `nodes` are written in id order; a reader accepts any order.
//! - `assignment` (balanced rings only, required there) gives, for each
//!   partition in ring order, the index of its owner in `nodes`. It is
//!   empty for an empty ring and absent for random vnodes, whose tokens
//!   follow from the members and the config.
//! - Fields are exactly these: an unknown field is an error. A change of
//!   meaning or shape gets a new `format` (`ringkv-ring/2`), and readers
//!   reject formats they do not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::balanced::{BalancedConfig, partition_end};
use crate::placement::Placement;
use crate::ring::{Entry, MAX_NODES, Member, Ring, RingConfig, holders, validate_id};
use crate::{NodeId, RingError};

/// The `format` tag of the saved rings this version writes and reads.
pub const RING_FORMAT: &str = "ringkv-ring/1";

#[derive(Deserialize)]
struct Envelope {
    format: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    format: String,
    placement: PlacementFile,
    epoch: u64,
    nodes: Vec<NodeFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assignment: Option<Vec<u32>>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
enum PlacementFile {
    RandomVnodes { vnodes_per_weight: u32 },
    BalancedPartitions { partitions: u32 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: String,
    weight: u32,
}

impl Ring {
    /// The ring's state as a versioned JSON document (format
    /// [`RING_FORMAT`]): placement, epoch, members with weights in id order
    /// and, for balanced partitions, each partition's owner.
    ///
    /// ```
    /// use ringkv_ring::{BalancedConfig, Ring};
    /// let ring = Ring::balanced(BalancedConfig { partitions: 64 })?
    ///     .with_node("a", 1)?
    ///     .with_node("b", 1)?;
    /// let saved = ring.to_json();
    /// let back = Ring::from_json(&saved)?;
    /// assert!(back.same_placement(&ring));
    /// assert_eq!(back.epoch(), ring.epoch());
    /// # Ok::<(), ringkv_ring::RingError>(())
    /// ```
    pub fn to_json(&self) -> String {
        let index: BTreeMap<u32, u32> = self
            .by_id
            .values()
            .enumerate()
            .map(|(i, &slot)| (slot, i as u32))
            .collect();
        let (placement, assignment) = match self.placement() {
            Placement::RandomVnodes { vnodes_per_weight } => {
                (PlacementFile::RandomVnodes { vnodes_per_weight }, None)
            }
            Placement::BalancedPartitions { partitions } => (
                PlacementFile::BalancedPartitions { partitions },
                Some(self.entries.iter().map(|e| index[&e.slot]).collect()),
            ),
        };
        let file = RingFile {
            format: RING_FORMAT.to_string(),
            placement,
            epoch: self.epoch,
            nodes: self
                .nodes()
                .map(|(id, weight)| NodeFile {
                    id: id.as_str().to_string(),
                    weight,
                })
                .collect(),
            assignment,
        };
        serde_json::to_string(&file).expect("a ring always serialises")
    }

    /// Reads a ring written by [`Ring::to_json`], checking it: the format
    /// tag, the placement parameters, node ids (distinct, and each valid by
    /// [`NodeId::validate`]),
    /// weights (positive), the epoch (below `u64::MAX`) and, for balanced
    /// partitions, one valid node index per partition. The ring keeps the
    /// saved epoch. The balance of a saved assignment is not checked: a
    /// ring loaded from a hand-edited file keeps whatever imbalance it has,
    /// and later changes start from it.
    pub fn from_json(json: &str) -> Result<Ring, RingError> {
        let malformed = |e: serde_json::Error| RingError::MalformedRing {
            reason: e.to_string(),
        };
        let envelope: Envelope = serde_json::from_str(json).map_err(malformed)?;
        if envelope.format != RING_FORMAT {
            return Err(RingError::UnsupportedFormat {
                found: envelope.format,
            });
        }
        let file: RingFile = serde_json::from_str(json).map_err(malformed)?;
        let mut ring = match file.placement {
            PlacementFile::RandomVnodes { vnodes_per_weight } => {
                if file.assignment.is_some() {
                    return Err(RingError::UnexpectedAssignment);
                }
                // Random tokens follow from the members: rebuild them (the
                // order of addition does not matter).
                let mut ring = Ring::new(RingConfig { vnodes_per_weight })?;
                for node in file.nodes {
                    ring = ring.with_node(node.id, node.weight)?;
                }
                ring
            }
            PlacementFile::BalancedPartitions { partitions } => {
                load_balanced(partitions, file.nodes, file.assignment.unwrap_or_default())?
            }
        };
        if file.epoch == u64::MAX {
            // The next change would have no epoch left to take.
            return Err(RingError::MalformedRing {
                reason: "epoch is u64::MAX, leaving no epoch for the next change".into(),
            });
        }
        ring.epoch = file.epoch;
        Ok(ring)
    }
}

fn load_balanced(
    partitions: u32,
    nodes: Vec<NodeFile>,
    assignment: Vec<u32>,
) -> Result<Ring, RingError> {
    let mut ring = Ring::balanced(BalancedConfig { partitions })?;
    if nodes.len() > (partitions as usize).min(MAX_NODES) {
        return Err(RingError::TooManyNodesForPartitions { partitions });
    }
    for (slot, node) in nodes.into_iter().enumerate() {
        let id = NodeId::from(node.id);
        validate_id(&id)?;
        if node.weight == 0 {
            return Err(RingError::ZeroWeight { id });
        }
        if ring.by_id.insert(id.clone(), slot as u32).is_some() {
            return Err(RingError::DuplicateNode { id });
        }
        ring.members.push(Some(Member {
            id,
            weight: node.weight,
        }));
    }
    let expected = if ring.members.is_empty() {
        0
    } else {
        partitions as usize
    };
    if assignment.len() != expected {
        return Err(RingError::PartitionCount {
            expected,
            found: assignment.len(),
        });
    }
    let nodes = ring.members.len();
    ring.entries = assignment
        .into_iter()
        .enumerate()
        .map(|(partition, index)| {
            if index as usize >= nodes {
                return Err(RingError::UnknownNodeIndex {
                    partition,
                    index,
                    nodes,
                });
            }
            Ok(Entry {
                token: partition_end(partitions, partition as u32),
                slot: index,
            })
        })
        .collect::<Result<_, _>>()?;
    ring.holders = holders(&ring.layout, &ring.members, &ring.by_id, &ring.entries);
    Ok(ring)
}
