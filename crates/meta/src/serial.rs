//! How the metadata's rings and placement are serialised: a ring as the
//! ring crate's own versioned document (`ringkv-ring/1`, [`Ring::to_json`]),
//! embedded as a string so that any serde format carries it unchanged.

use ringkv_ring::{Placement, Ring};
use serde::{Deserialize, Serialize};

/// The placement a new cluster uses, as plain serialisable data (the ring
/// crate's [`Placement`] is `#[non_exhaustive]` and not serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlacementSpec {
    /// [`Placement::RandomVnodes`].
    RandomVnodes {
        /// Virtual nodes per unit of weight.
        vnodes_per_weight: u32,
    },
    /// [`Placement::BalancedPartitions`].
    BalancedPartitions {
        /// Number of partitions (a power of two).
        partitions: u32,
    },
}

impl PlacementSpec {
    /// The cluster's default: balanced partitions, one per Redis Cluster
    /// hash slot (16,384), so every slot has one owner.
    pub const BALANCED: PlacementSpec = PlacementSpec::BalancedPartitions {
        partitions: ringkv_ring::SLOTS as u32,
    };

    /// The ring crate's placement.
    pub fn placement(self) -> Placement {
        match self {
            PlacementSpec::RandomVnodes { vnodes_per_weight } => {
                Placement::RandomVnodes { vnodes_per_weight }
            }
            PlacementSpec::BalancedPartitions { partitions } => {
                Placement::BalancedPartitions { partitions }
            }
        }
    }
}

/// `#[serde(with = "ring_json")]` for a [`Ring`].
pub(crate) mod ring_json {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(ring: &Ring, s: S) -> Result<S::Ok, S::Error> {
        ring.to_json().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ring, D::Error> {
        let json = String::deserialize(d)?;
        Ring::from_json(&json).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "ring_json_opt")]` for an `Option<Ring>`.
pub(crate) mod ring_json_opt {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(
        ring: &Option<Ring>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        ring.as_ref().map(Ring::to_json).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ring>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|json| Ring::from_json(&json).map_err(serde::de::Error::custom))
            .transpose()
    }
}
