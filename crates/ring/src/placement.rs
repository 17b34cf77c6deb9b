//! The placement strategies a ring can use, as plain data.

use crate::{BalancedConfig, Ring, RingConfig, RingError};

/// How a ring places its tokens ([`Ring::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Placement {
    /// Each node owns `weight * vnodes_per_weight` tokens at hashed
    /// positions ([`Ring::new`]); placement is a function of the membership.
    RandomVnodes {
        /// Virtual nodes per unit of weight.
        vnodes_per_weight: u32,
    },
    /// `partitions` equal partitions with assigned owners
    /// ([`Ring::balanced`]); placement depends on the history of changes.
    BalancedPartitions {
        /// Number of partitions `Q`.
        partitions: u32,
    },
}

impl Placement {
    /// Balanced partitions with the default count (65,536).
    pub const BALANCED: Placement = Placement::BalancedPartitions {
        partitions: 1 << 16,
    };

    /// Random vnodes with the default count per weight (256).
    pub const RANDOM: Placement = Placement::RandomVnodes {
        vnodes_per_weight: 256,
    };

    /// An empty ring placing tokens this way, at epoch 0. Fails on invalid
    /// settings (zero vnodes, a partition count that is not a power of two
    /// in range).
    ///
    /// ```
    /// use ringkv_ring::Placement;
    /// let ring = Placement::BALANCED.empty_ring()?.with_node("a", 1)?;
    /// assert_eq!(ring.placement(), Placement::BALANCED);
    /// # Ok::<(), ringkv_ring::RingError>(())
    /// ```
    pub fn empty_ring(&self) -> Result<Ring, RingError> {
        match *self {
            Placement::RandomVnodes { vnodes_per_weight } => {
                Ring::new(RingConfig { vnodes_per_weight })
            }
            Placement::BalancedPartitions { partitions } => {
                Ring::balanced(BalancedConfig { partitions })
            }
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::RandomVnodes { vnodes_per_weight } => {
                write!(f, "random vnodes ({vnodes_per_weight} per weight)")
            }
            Placement::BalancedPartitions { partitions } => {
                write!(f, "balanced partitions ({partitions})")
            }
        }
    }
}
