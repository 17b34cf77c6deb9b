//! Where a cluster keeps its state: the [`Backend`] seam, with the
//! in-memory backend (the default) and the factory backend of
//! [`Cluster::with_store`](crate::Cluster::with_store).
//!
//! A backend opens each node's stores (one per lock stripe), deletes a
//! node's data when it leaves, and keeps the cluster's records (the ring,
//! the membership change in flight) in the same order as the stores'
//! writes: see [`Backend::write_records`]. The persistent backend is
//! [`crate::disk::DiskBackend`].

use std::ops::RangeInclusive;
use std::sync::Arc;

use ringkv_ring::{NodeId, Token};

use crate::store::{MemStore, Store, StoreError};

/// Builds the store of one lock stripe of a node when the node joins:
/// called with the node's id and the stripe's number, once per stripe
/// ([`ClusterConfig::stripes`](crate::ClusterConfig::stripes)); stripe `i`
/// holds the tokens of [`stripe_tokens`]`(i, stripes)`. An error refuses
/// the join, which then changes nothing.
pub type StoreFactory =
    Arc<dyn Fn(&NodeId, usize) -> Result<Box<dyn Store>, StoreError> + Send + Sync>;

/// The tokens stripe `i` of `stripes` (a power of two) holds: the ones
/// whose top `log2(stripes)` bits are `i`.
pub fn stripe_tokens(i: usize, stripes: usize) -> RangeInclusive<Token> {
    debug_assert!(stripes.is_power_of_two() && i < stripes);
    let shift = 64 - stripes.trailing_zeros();
    let start = (i as u64).checked_shl(shift).unwrap_or(0);
    let end = ((i as u64 + 1).checked_shl(shift).unwrap_or(0)).wrapping_sub(1);
    start..=end
}

/// Where a cluster keeps its nodes' stores and its own records.
///
/// Contract: a crash (of the process, or of the machine where the backend
/// syncs) keeps a prefix of the writes in the order their calls returned,
/// stores' and records' alike. The cluster relies on this alone for crash
/// consistency: it writes a record after the store writes it describes
/// (a range is recorded as switched after the writes that completed its
/// copy), so a restart never sees the record without them.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Opens node `id`'s stores, one per stripe (stripe `i` of
    /// [`stripe_tokens`]). With `fresh` (a node joining) anything stored
    /// for `id` before is deleted first.
    fn open_node(
        &self,
        id: &NodeId,
        stripes: usize,
        fresh: bool,
    ) -> Result<Vec<Box<dyn Store>>, StoreError>;

    /// Deletes whatever is stored for node `id` (it left the cluster).
    fn drop_node(&self, id: &NodeId) -> Result<(), StoreError>;

    /// Ids of the nodes with stored data.
    fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError>;

    /// Whether records outlive the process (if not, the cluster does not
    /// build them).
    fn persistent(&self) -> bool;

    /// Every record, in key order.
    fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Writes records (`None` deletes) all or none, ordered after every
    /// store write that returned before the call.
    fn write_records(&self, writes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError>;

    /// Whether a client write must wait for [`Backend::sync`] before it is
    /// acknowledged (`--fsync always`).
    fn sync_acks(&self) -> bool;

    /// Makes every write that returned before the call durable. Called
    /// with no lock held; concurrent calls share the work.
    fn sync(&self) -> Result<(), StoreError>;

    /// As [`Backend::sync`], for a caller that has gathered its group of
    /// writes itself: the fsync starts at once instead of first waiting
    /// for other writers.
    fn sync_now(&self) -> Result<(), StoreError> {
        self.sync()
    }

    /// Where the data lives, for logs and errors (`None`: in memory).
    fn location(&self) -> Option<String>;

    /// Bytes of writes held in memory on their way to the files (the
    /// write log's queue), not counted in the stores' `used_memory`.
    fn buffered_bytes(&self) -> u64 {
        0
    }

    /// Writes what the backend holds in memory to its files (with `wait`,
    /// before returning), so that a restart has less to replay.
    fn checkpoint(&self, wait: bool) -> Result<(), StoreError> {
        let _ = wait;
        Ok(())
    }

    /// Runs `f`, whose store writes (on this thread) must survive a crash
    /// together or not at all: a transaction's. By default they are
    /// simply made one by one (nothing outlives the process anyway).
    fn atomically(
        &self,
        f: &mut dyn FnMut() -> Result<(), crate::ClusterError>,
    ) -> Result<(), crate::ClusterError> {
        f()
    }
}

/// Stores made by a [`StoreFactory`]; no records (nothing outlives the
/// process).
pub(crate) struct FactoryBackend {
    pub(crate) factory: StoreFactory,
}

impl FactoryBackend {
    /// The default: a [`MemStore`] per stripe.
    pub(crate) fn memory() -> FactoryBackend {
        FactoryBackend {
            factory: Arc::new(|_: &NodeId, _| Ok(Box::new(MemStore::new()) as Box<dyn Store>)),
        }
    }
}

impl Backend for FactoryBackend {
    fn open_node(
        &self,
        id: &NodeId,
        stripes: usize,
        _fresh: bool,
    ) -> Result<Vec<Box<dyn Store>>, StoreError> {
        (0..stripes).map(|i| (self.factory)(id, i)).collect()
    }

    fn drop_node(&self, _: &NodeId) -> Result<(), StoreError> {
        Ok(())
    }

    fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        Ok(Vec::new())
    }

    fn persistent(&self) -> bool {
        false
    }

    fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(Vec::new())
    }

    fn write_records(&self, _: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        Ok(())
    }

    fn sync_acks(&self) -> bool {
        false
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn location(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_tokens_tile_the_token_space() {
        for stripes in [1, 2, 8, 64, 4096] {
            let mut next = 0u64;
            for i in 0..stripes {
                let r = stripe_tokens(i, stripes);
                assert_eq!(*r.start(), next, "{stripes} stripes, stripe {i}");
                next = r.end().wrapping_add(1);
            }
            assert_eq!(next, 0, "{stripes} stripes end at u64::MAX");
        }
    }
}
