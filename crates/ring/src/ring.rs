//! The ring snapshot: membership, sorted vnode tokens and the lookup table.

use std::collections::BTreeMap;

use crate::balanced::{self, Placement};
use crate::hash::{Token, key_token, vnode_token};
use crate::{NodeId, RingError};

/// Largest node id accepted, in bytes.
pub const MAX_NODE_ID_LEN: usize = 1024;
/// Largest number of virtual nodes one node may have (`weight * vnodes_per_weight`).
pub const MAX_VNODES_PER_NODE: u32 = 1 << 20;
/// Largest number of nodes in one ring.
pub const MAX_NODES: usize = 1 << 20;

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
            vnodes_per_weight: 256,
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
///   [`vnode_token`], and colliding tokens are ordered by node id, so the
///   order of additions and removals does not matter.
/// - **Balanced partitions** ([`Ring::balanced`]): the circle is cut into
///   `Q` equal partitions whose owners are *assigned* as nodes join and
///   leave (see [`BalancedConfig`](crate::BalancedConfig)). Every node
///   holds its weighted share to within one partition, but the assignment
///   depends on the history of changes, not on the membership alone:
///   persist it with [`Ring::to_json`].
#[derive(Debug, Clone)]
pub struct Ring {
    /// The vnode settings; for a balanced ring, the unused default.
    pub(crate) config: RingConfig,
    pub(crate) placement: Placement,
    pub(crate) epoch: u64,
    /// Node table indexed by slot; a removed node leaves a hole that the
    /// next added node reuses. Slots are internal: they never leak out.
    pub(crate) members: Vec<Option<Member>>,
    pub(crate) by_id: BTreeMap<NodeId, u32>,
    /// All vnodes, sorted by `(token, node id)`.
    pub(crate) entries: Vec<Entry>,
    /// `table[b]` is the index of the first entry whose token is at least
    /// `b << shift`; `table[len - 1] == entries.len()`. A lookup scans only
    /// the entries of one bucket: about one on average.
    ///
    /// Empty for a balanced ring: its partitions are equal, so entry
    /// `token >> shift` is the successor of `token` (no table needed).
    pub(crate) table: Vec<u32>,
    pub(crate) shift: u32,
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
        Ok(Ring {
            config,
            placement: Placement::RandomVnodes {
                vnodes_per_weight: config.vnodes_per_weight,
            },
            epoch: 0,
            members: Vec::new(),
            by_id: BTreeMap::new(),
            entries: Vec::new(),
            table: Vec::new(),
            shift: 64,
        })
    }

    /// The ring's vnode settings. A balanced ring has none and returns
    /// [`RingConfig::default`]; [`Ring::placement`] tells the strategy.
    pub fn config(&self) -> &RingConfig {
        &self.config
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
        self.placement
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
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.table.capacity() * 4
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
    /// the key's replicas, owner first. Fewer if the ring has fewer nodes.
    /// The iterator does not allocate for `n <= 8`.
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
        if self.table.is_empty() {
            // Empty ring, or balanced partitions: partition `i` ends at
            // `((i + 1) << shift) - 1`, so `token >> shift` is its index.
            if self.entries.is_empty() {
                return None;
            }
            return Some((token >> self.shift) as usize);
        }
        let bucket = (token >> self.shift) as usize;
        let mut i = self.table[bucket] as usize;
        let end = self.table[bucket + 1] as usize;
        while i < end && self.entries[i].token < token {
            i += 1;
        }
        Some(if i == self.entries.len() { 0 } else { i })
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
        if let Placement::BalancedPartitions { partitions } = self.placement {
            return balanced::with_node(self, id, weight, partitions);
        }
        let vnodes = u64::from(weight) * u64::from(self.config.vnodes_per_weight);
        if vnodes > u64::from(MAX_VNODES_PER_NODE) {
            return Err(RingError::TooManyVnodes {
                id,
                weight,
                vnodes,
                max: MAX_VNODES_PER_NODE,
            });
        }
        let vnodes = vnodes as u32;

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
        let slot = slot as u32;

        let mut fresh: Vec<Token> = (0..vnodes).map(|i| vnode_token(id.as_str(), i)).collect();
        fresh.sort_unstable();

        // One merge pass over (token, id) order: each new token's place is
        // found by binary search in the rest of the old entries, and the
        // old entries before it are copied as one block.
        let mut entries = Vec::with_capacity(self.entries.len() + fresh.len());
        let mut rest = &self.entries[..];
        for &token in &fresh {
            let k = rest.partition_point(|e| {
                e.token < token || (e.token == token && self.member(e.slot).id < id)
            });
            entries.extend_from_slice(&rest[..k]);
            entries.push(Entry { token, slot });
            rest = &rest[k..];
        }
        entries.extend_from_slice(rest);

        let mut by_id = self.by_id.clone();
        by_id.insert(id, slot);
        let table = adjust_table(self, entries.len(), &fresh, Change::Added);
        Ok(Ring::assemble(self, members, by_id, entries, table))
    }

    /// The next snapshot, with node `id` removed.
    pub fn without_node(&self, id: &str) -> Result<Ring, RingError> {
        let Some(&slot) = self.by_id.get(id) else {
            return Err(RingError::UnknownNode { id: id.into() });
        };
        if let Placement::BalancedPartitions { .. } = self.placement {
            return balanced::without_node(self, slot);
        }
        let mut members = self.members.clone();
        members[slot as usize] = None;
        while matches!(members.last(), Some(None)) {
            members.pop();
        }
        let mut by_id = self.by_id.clone();
        by_id.remove(id);
        let vnodes = self.member(slot).weight * self.config.vnodes_per_weight;
        let mut entries = Vec::with_capacity(self.entries.len() - vnodes as usize);
        if vnodes as usize * 16 >= self.entries.len() {
            // The node holds a large share of the ring: one filtering scan
            // is cheaper than locating its tokens.
            entries.extend(self.entries.iter().filter(|e| e.slot != slot).copied());
            return Ok(Ring::assemble(self, members, by_id, entries, None));
        }
        // The node's tokens are known without scanning: one per vnode index.
        let mut gone: Vec<Token> = (0..vnodes).map(|i| vnode_token(id, i)).collect();
        gone.sort_unstable();
        // Copy the entries between two of its tokens as one block each.
        let mut rest = &self.entries[..];
        for &token in &gone {
            let mut k = rest.partition_point(|e| e.token < token);
            // Among entries sharing the token, skip to this node's.
            while rest[k].slot != slot {
                k += 1;
            }
            entries.extend_from_slice(&rest[..k]);
            rest = &rest[k + 1..];
        }
        entries.extend_from_slice(rest);
        let table = adjust_table(self, entries.len(), &gone, Change::Removed);
        Ok(Ring::assemble(self, members, by_id, entries, table))
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
        self.placement == other.placement
            && self.config == other.config
            && self.nodes().eq(other.nodes())
            && self.vnodes().eq(other.vnodes())
    }

    fn assemble(
        prev: &Ring,
        members: Vec<Option<Member>>,
        by_id: BTreeMap<NodeId, u32>,
        entries: Vec<Entry>,
        table: Option<(Vec<u32>, u32)>,
    ) -> Ring {
        let (table, shift) = table.unwrap_or_else(|| build_table(&entries));
        Ring {
            config: prev.config,
            placement: prev.placement,
            epoch: prev.epoch + 1,
            members,
            by_id,
            entries,
            table,
            shift,
        }
    }
}

pub(crate) fn validate_id(id: &NodeId) -> Result<(), RingError> {
    let len = id.as_str().len();
    if len == 0 {
        return Err(RingError::EmptyNodeId);
    }
    if len > MAX_NODE_ID_LEN {
        return Err(RingError::NodeIdTooLong {
            len,
            max: MAX_NODE_ID_LEN,
        });
    }
    Ok(())
}

/// The lookup table's shift for `len` entries: the table covers the top
/// `bits` bits of a token, with about one entry per bucket
/// (`bits = ceil(log2(len))`, at least 1).
fn table_shift(len: usize) -> u32 {
    if len == 0 {
        return 64;
    }
    let bits = (usize::BITS - (len - 1).leading_zeros()).clamp(1, 24);
    64 - bits
}

/// Builds the lookup table of `entries` (see [`table_shift`]).
fn build_table(entries: &[Entry]) -> (Vec<u32>, u32) {
    if entries.is_empty() {
        return (Vec::new(), 64);
    }
    let shift = table_shift(entries.len());
    let buckets = 1usize << (64 - shift);
    // Count the entries of each bucket into the slot after it, then a
    // prefix sum turns `table[b]` into the number of entries below bucket
    // `b`: the index of its first entry. Both passes are free of
    // data-dependent branches, which a scan per bucket is not (one
    // mispredicted exit per bucket dominated the cost of a change).
    let mut table = vec![0u32; buckets + 1];
    for e in entries {
        table[(e.token >> shift) as usize + 1] += 1;
    }
    let mut sum = 0u32;
    for slot in &mut table {
        sum += *slot;
        *slot = sum;
    }
    (table, shift)
}

#[derive(Clone, Copy)]
enum Change {
    Added,
    Removed,
}

/// The next snapshot's lookup table derived from `prev`'s, when the change
/// keeps the bucket count (`None` otherwise: build it from the entries).
///
/// `table[b]` counts the entries below bucket `b`, so adding or removing
/// the sorted tokens `changed` shifts it by the number of them below `b`:
/// one pass over the table instead of one over all entries.
fn adjust_table(
    prev: &Ring,
    len: usize,
    changed: &[Token],
    change: Change,
) -> Option<(Vec<u32>, u32)> {
    let shift = table_shift(len);
    if prev.entries.is_empty() || len == 0 || shift != prev.shift {
        return None;
    }
    let old = &prev.table;
    let mut table = Vec::with_capacity(old.len());
    let mut from = 0usize;
    let mut below = 0u32;
    let copy = |table: &mut Vec<u32>, part: &[u32], below: u32| match change {
        Change::Added => table.extend(part.iter().map(|&x| x + below)),
        Change::Removed => table.extend(part.iter().map(|&x| x - below)),
    };
    for &token in changed {
        // Buckets after this token's bucket count it.
        let to = (token >> shift) as usize + 1;
        copy(&mut table, &old[from..to], below);
        from = to;
        below += 1;
    }
    copy(&mut table, &old[from..], below);
    Some((table, shift))
}

/// Iterator over a key's preference list: distinct physical nodes clockwise.
#[derive(Debug, Clone)]
pub struct PreferenceList<'a> {
    ring: &'a Ring,
    next: usize,
    visited: usize,
    wanted: usize,
    seen: Seen,
}

#[derive(Debug, Clone)]
enum Seen {
    Inline { slots: [u32; 8], len: usize },
    Heap(Vec<u32>),
}

impl Seen {
    fn contains(&self, slot: u32) -> bool {
        match self {
            Seen::Inline { slots, len } => slots[..*len].contains(&slot),
            Seen::Heap(v) => v.contains(&slot),
        }
    }

    fn push(&mut self, slot: u32) {
        match self {
            Seen::Inline { slots, len } if *len < slots.len() => {
                slots[*len] = slot;
                *len += 1;
            }
            Seen::Inline { slots, len } => {
                let mut v = slots[..*len].to_vec();
                v.push(slot);
                *self = Seen::Heap(v);
            }
            Seen::Heap(v) => v.push(slot),
        }
    }
}

impl<'a> PreferenceList<'a> {
    /// Distinct nodes clockwise from entry `start`; `wanted <= ring.len()`.
    pub(crate) fn new(ring: &'a Ring, start: usize, wanted: usize) -> Self {
        PreferenceList {
            ring,
            next: start,
            visited: 0,
            wanted,
            seen: Seen::Inline {
                slots: [0; 8],
                len: 0,
            },
        }
    }
}

impl<'a> Iterator for PreferenceList<'a> {
    type Item = &'a NodeId;

    fn next(&mut self) -> Option<&'a NodeId> {
        let ring = self.ring;
        let found = match &self.seen {
            Seen::Inline { len, .. } => *len,
            Seen::Heap(v) => v.len(),
        };
        if found >= self.wanted {
            return None;
        }
        while self.visited < ring.entries.len() {
            let slot = ring.entries[self.next].slot;
            self.visited += 1;
            self.next += 1;
            if self.next == ring.entries.len() {
                self.next = 0;
            }
            if !self.seen.contains(slot) {
                self.seen.push(slot);
                return Some(&ring.member(slot).id);
            }
        }
        None
    }
}
