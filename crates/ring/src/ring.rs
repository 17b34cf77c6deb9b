//! The ring snapshot: storage (members, sorted entries) and lookup.
//!
//! Placement, which tokens a node owns, is decided by one strategy module
//! per [`Placement`]: `random.rs` (hashed vnode tokens) and
//! `balanced.rs` (equal partitions with assigned owners). A ring
//! holds the state of its one strategy in [`Layout`], and this module
//! dispatches membership changes to it after the checks every strategy
//! shares.

use std::collections::BTreeMap;

use crate::hash::{Token, key_token};
use crate::lookup::Table;
use crate::placement::Placement;
use crate::preference::PreferenceList;
use crate::{NodeId, RingError, balanced, random};

/// Largest number of virtual nodes one node may have (`weight * vnodes_per_weight`).
pub const MAX_VNODES_PER_NODE: u32 = 1 << 20;
/// Largest number of nodes in one ring.
pub const MAX_NODES: usize = 1 << 20;

const DEFAULT_VNODES_PER_WEIGHT: u32 = 256;

/// Ring settings. Plain data with [`Default`] and [`RingConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Virtual nodes per unit of weight: a node of weight `w` owns
    /// `w * vnodes_per_weight` tokens.
    ///
    /// Default 256. With random positions the load's relative standard
    /// deviation is about `1/sqrt(V)`: 256 puts the busiest of 10 nodes at
    /// about 1.10x the mean (1.15x at 100 nodes), while a 1,000-node ring
    /// stays at 256k tokens (4 MiB) and adding a node stays under a
    /// millisecond. More vnodes buy balance with memory and smaller ranges.
    pub vnodes_per_weight: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            vnodes_per_weight: DEFAULT_VNODES_PER_WEIGHT,
        }
    }
}

impl RingConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), RingError> {
        if self.vnodes_per_weight == 0 {
            return Err(RingError::ZeroVnodes);
        }
        Ok(())
    }
}

/// One vnode: its token and the slot of the node that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) token: Token,
    pub(crate) slot: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) id: NodeId,
    pub(crate) weight: u32,
}

/// The placement strategy of a ring with the state only it needs.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// Random vnodes: entries at hashed tokens, found through a bucket
    /// table.
    Random {
        /// The vnode settings.
        config: RingConfig,
        /// The lookup table over the entries' tokens.
        table: Table,
    },
    /// Balanced partitions: `partitions` equal partitions, so entry
    /// `token >> shift` is the successor of `token` (no table needed).
    Partitions {
        /// The partition count `Q`, a power of two.
        partitions: u32,
        /// `64 - log2(Q)`.
        shift: u32,
    },
}

/// An immutable, versioned snapshot of the ring.
///
/// A membership change ([`Ring::with_node`], [`Ring::without_node`]) returns
/// the next snapshot with `epoch + 1` and leaves this one untouched, so a
/// snapshot can be shared between threads in an `Arc` and read without locks.
///
/// Two placement strategies ([`Ring::placement`]):
///
/// - **Random vnodes** ([`Ring::new`], the default): placement depends only
///   on the membership (ids, weights) and the config: vnode tokens come from
///   [`vnode_token`](crate::vnode_token), and colliding tokens are ordered
///   by node id, so the order of additions and removals does not matter.
/// - **Balanced partitions** ([`Ring::balanced`]): the circle is cut into
///   `Q` equal partitions whose owners are *assigned* as nodes join and
///   leave (see [`BalancedConfig`](crate::BalancedConfig)). Every node
///   holds its weighted share to within one partition, but the assignment
///   depends on the history of changes, not on the membership alone:
///   persist it with [`Ring::to_json`].
#[derive(Debug, Clone)]
pub struct Ring {
    pub(crate) layout: Layout,
    pub(crate) epoch: u64,
    /// Node table indexed by slot; a removed node leaves a hole that the
    /// next added node reuses. Slots are internal: they never leak out.
    pub(crate) members: Vec<Option<Member>>,
    pub(crate) by_id: BTreeMap<NodeId, u32>,
    /// All entries (vnodes or partitions), sorted by `(token, node id)`.
    pub(crate) entries: Vec<Entry>,
    /// How many members own at least one entry: every member with random
    /// vnodes; with balanced partitions a member whose share is below one
    /// partition may own none. Preference lists stop walking the entries
    /// once they have met this many members.
    pub(crate) holders: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::new(RingConfig::default()).expect("the default config is valid")
    }
}

impl Ring {
    /// An empty ring at epoch 0.
    pub fn new(config: RingConfig) -> Result<Ring, RingError> {
        config.validate()?;
        Ok(Ring::empty(Layout::Random {
            config,
            table: Table::default(),
        }))
    }

    /// An empty ring with `layout`, at epoch 0.
    pub(crate) fn empty(layout: Layout) -> Ring {
        Ring {
            layout,
            epoch: 0,
            members: Vec::new(),
            by_id: BTreeMap::new(),
            entries: Vec::new(),
            holders: 0,
        }
    }

    /// The ring's vnode settings. A balanced ring has none and returns
    /// [`RingConfig::default`]; [`Ring::placement`] tells the strategy.
    pub fn config(&self) -> &RingConfig {
        /// What a balanced ring reports: it has no vnode settings.
        static NONE: RingConfig = RingConfig {
            vnodes_per_weight: DEFAULT_VNODES_PER_WEIGHT,
        };
        match &self.layout {
            Layout::Random { config, .. } => config,
            Layout::Partitions { .. } => &NONE,
        }
    }

    /// The placement strategy and its parameter.
    ///
    /// ```
    /// use ringkv_ring::{BalancedConfig, Placement, Ring};
    /// assert_eq!(
    ///     Ring::default().placement(),
    ///     Placement::RandomVnodes { vnodes_per_weight: 256 }
    /// );
    /// let ring = Ring::balanced(BalancedConfig { partitions: 1024 }).unwrap();
    /// assert_eq!(ring.placement(), Placement::BalancedPartitions { partitions: 1024 });
    /// ```
    pub fn placement(&self) -> Placement {
        match self.layout {
            Layout::Random { config, .. } => Placement::RandomVnodes {
                vnodes_per_weight: config.vnodes_per_weight,
            },
            Layout::Partitions { partitions, .. } => Placement::BalancedPartitions { partitions },
        }
    }

    /// The snapshot's version: 0 for a new ring, +1 per membership change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of physical nodes.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the ring has no node.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Number of virtual nodes (tokens) on the ring: for a balanced ring,
    /// the number of partitions (0 while the ring is empty).
    pub fn vnode_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The weight of member `id`.
    pub fn weight(&self, id: &str) -> Option<u32> {
        let slot = *self.by_id.get(id)?;
        Some(self.member(slot).weight)
    }

    /// The members and their weights, ordered by id.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = (&NodeId, u32)> + '_ {
        self.by_id
            .iter()
            .map(|(id, &slot)| (id, self.member(slot).weight))
    }

    /// The tokens of member `id`, ascending.
    pub fn tokens_of(&self, id: &str) -> Option<Vec<Token>> {
        let slot = *self.by_id.get(id)?;
        Some(
            self.entries
                .iter()
                .filter(|e| e.slot == slot)
                .map(|e| e.token)
                .collect(),
        )
    }

    /// All vnodes in ring order as `(token, owner)`.
    pub fn vnodes(&self) -> impl ExactSizeIterator<Item = (Token, &NodeId)> + '_ {
        self.entries
            .iter()
            .map(|e| (e.token, &self.member(e.slot).id))
    }

    /// Approximate heap size of the snapshot in bytes (entries, lookup table
    /// and node table).
    pub fn memory_bytes(&self) -> usize {
        let table = match &self.layout {
            Layout::Random { table, .. } => table.memory_bytes(),
            Layout::Partitions { .. } => 0,
        };
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + table
            + self.members.capacity() * std::mem::size_of::<Option<Member>>()
            + self
                .by_id
                .keys()
                .map(|id| id.as_str().len() * 2 + 48)
                .sum::<usize>()
    }

    /// The node that owns `key`, or `None` on an empty ring.
    ///
    /// ```
    /// use ringkv_ring::Ring;
    /// let ring = Ring::default().with_node("node1", 1).unwrap();
    /// assert_eq!(ring.owner(b"key1").unwrap().as_str(), "node1");
    /// assert!(Ring::default().owner(b"key1").is_none());
    /// ```
    #[inline]
    pub fn owner(&self, key: &[u8]) -> Option<&NodeId> {
        self.owner_of_token(key_token(key))
    }

    /// The node that owns `token`, or `None` on an empty ring.
    #[inline]
    pub fn owner_of_token(&self, token: Token) -> Option<&NodeId> {
        let i = self.successor(token)?;
        Some(&self.member(self.entries[i].slot).id)
    }

    /// The range of tokens owned by the vnode that owns `token`:
    /// `(previous vnode token, vnode token]`.
    pub fn range_of_token(&self, token: Token) -> Option<crate::TokenRange> {
        let i = self.successor(token)?;
        let end = self.entries[i].token;
        let prev = if i == 0 {
            self.entries.len() - 1
        } else {
            i - 1
        };
        Some(crate::TokenRange::new(self.entries[prev].token, end))
    }

    /// The first `n` distinct physical nodes clockwise from `key`'s token:
    /// the key's replicas, owner first. Always `min(n, self.len())` nodes,
    /// so `n` replicas land on `n` distinct members whenever the ring has
    /// that many. The iterator does not allocate for `n <= 8`.
    ///
    /// On a balanced ring a member whose weighted share is below one
    /// partition may own none (a tiny weight, or fewer partitions than
    /// members can share evenly); walking the circle never meets it. Such
    /// members follow every member the walk meets, in id order: the list
    /// is the same on every machine, and a replica set is never short of a
    /// member that exists.
    ///
    /// ```
    /// use ringkv_ring::Ring;
    /// let ring = Ring::default()
    ///     .with_node("a", 1).unwrap()
    ///     .with_node("b", 1).unwrap()
    ///     .with_node("c", 1).unwrap();
    /// let replicas: Vec<_> = ring.preference_list(b"key", 2).collect();
    /// assert_eq!(replicas.len(), 2);
    /// assert_ne!(replicas[0], replicas[1]);
    /// assert_eq!(replicas[0], ring.owner(b"key").unwrap());
    /// ```
    pub fn preference_list(&self, key: &[u8], n: usize) -> PreferenceList<'_> {
        self.preference_list_of_token(key_token(key), n)
    }

    /// [`Ring::preference_list`] for a token.
    pub fn preference_list_of_token(&self, token: Token, n: usize) -> PreferenceList<'_> {
        let start = self.successor(token).unwrap_or(0);
        PreferenceList::new(self, start, n.min(self.len()))
    }

    /// Index of the first entry with `entry.token >= token`, wrapping to 0.
    #[inline]
    pub(crate) fn successor(&self, token: Token) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        Some(match &self.layout {
            Layout::Random { table, .. } => table.successor(&self.entries, token),
            // Partition `i` ends at `((i + 1) << shift) - 1`, so
            // `token >> shift` is its index.
            Layout::Partitions { shift, .. } => (token >> shift) as usize,
        })
    }

    #[inline]
    pub(crate) fn member(&self, slot: u32) -> &Member {
        self.members[slot as usize]
            .as_ref()
            .expect("entries only name occupied slots")
    }

    /// The next snapshot, with node `id` of `weight` added.
    ///
    /// Random vnodes: the new node's tokens are sorted and merged into the
    /// existing order in one linear pass; nothing is re-sorted. Balanced
    /// partitions: the new node takes its share of partitions from the
    /// nodes most over their own share (see
    /// [`BalancedConfig`](crate::BalancedConfig)).
    pub fn with_node(&self, id: impl Into<NodeId>, weight: u32) -> Result<Ring, RingError> {
        let id = id.into();
        validate_id(&id)?;
        if weight == 0 {
            return Err(RingError::ZeroWeight { id });
        }
        if self.by_id.contains_key(&id) {
            return Err(RingError::DuplicateNode { id });
        }
        if self.by_id.len() >= MAX_NODES {
            return Err(RingError::TooManyNodes { max: MAX_NODES });
        }
        match &self.layout {
            Layout::Random { config, .. } => random::with_node(self, *config, id, weight),
            Layout::Partitions { partitions, .. } => {
                balanced::with_node(self, *partitions, id, weight)
            }
        }
    }

    /// The next snapshot, with node `id` removed.
    pub fn without_node(&self, id: &str) -> Result<Ring, RingError> {
        let Some(&slot) = self.by_id.get(id) else {
            return Err(RingError::UnknownNode { id: id.into() });
        };
        match &self.layout {
            Layout::Random { config, .. } => random::without_node(self, *config, slot),
            Layout::Partitions { partitions, .. } => {
                balanced::without_node(self, *partitions, slot)
            }
        }
    }

    /// The same placement under another epoch: for a membership change
    /// that was abandoned after its ring had been published, so that the
    /// restored ring gets an epoch of its own and every epoch names exactly
    /// one ring.
    pub fn with_epoch(&self, epoch: u64) -> Ring {
        Ring {
            epoch,
            ..self.clone()
        }
    }

    /// Whether two snapshots place every token identically: same placement
    /// strategy and config, members, weights and vnodes, whatever their
    /// epochs (and, for random vnodes, the order in which their nodes were
    /// added).
    pub fn same_placement(&self, other: &Ring) -> bool {
        self.placement() == other.placement()
            && self.nodes().eq(other.nodes())
            && self.vnodes().eq(other.vnodes())
    }

    /// The node table with `id` of `weight` added in the first free slot,
    /// and that slot: the start of every join.
    pub(crate) fn members_with(&self, id: &NodeId, weight: u32) -> (Vec<Option<Member>>, u32) {
        let mut members = self.members.clone();
        let slot = match members.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                members.push(None);
                members.len() - 1
            }
        };
        members[slot] = Some(Member {
            id: id.clone(),
            weight,
        });
        (members, slot as u32)
    }

    /// The snapshot after this one, with `epoch + 1`.
    pub(crate) fn next(
        &self,
        layout: Layout,
        members: Vec<Option<Member>>,
        by_id: BTreeMap<NodeId, u32>,
        entries: Vec<Entry>,
    ) -> Ring {
        let holders = holders(&layout, &members, &by_id, &entries);
        Ring {
            layout,
            epoch: self.epoch + 1,
            members,
            by_id,
            entries,
            holders,
        }
    }
}

/// The number of members owning at least one of `entries` (see
/// the `holders` field of [`Ring`]).
pub(crate) fn holders(
    layout: &Layout,
    members: &[Option<Member>],
    by_id: &BTreeMap<NodeId, u32>,
    entries: &[Entry],
) -> usize {
    match layout {
        // Every member has `weight * vnodes_per_weight >= 1` tokens.
        Layout::Random { .. } => by_id.len(),
        Layout::Partitions { .. } => {
            let mut holds = vec![false; members.len()];
            for e in entries {
                holds[e.slot as usize] = true;
            }
            holds.iter().filter(|&&h| h).count()
        }
    }
}

/// The one check of a member's id, shared by every way into a ring
/// ([`Ring::with_node`] and the saved-ring reader): see [`NodeId::validate`].
pub(crate) fn validate_id(id: &NodeId) -> Result<(), RingError> {
    NodeId::validate(id.as_str())
}
