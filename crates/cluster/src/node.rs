//! A node: its id, its stores behind striped locks, the count of keys it
//! serves, and its health.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use ringkv_ring::{NodeId, Token};

use std::sync::Arc;

use crate::ClusterError;
use crate::shard::Shard;
use crate::store::{Store, StoreError};

/// Shared access to one stripe.
pub(crate) type StripeRead<'a> = RwLockReadGuard<'a, Shard>;
/// Exclusive access to one stripe.
pub(crate) type StripeWrite<'a> = RwLockWriteGuard<'a, Shard>;

/// One node of the in-process cluster.
///
/// The node's keys are split into stripes by the top bits of their token,
/// each a [`Store`] behind its own lock. A token range (a vnode's arc) falls
/// in one stripe or two, so redistributing a range locks a sliver of the
/// node and clients on other stripes never wait for it; two clients on one
/// node rarely touch the same lock word either.
///
/// Lock discipline (see docs/ARCHITECTURE.md):
/// - a client holds one stripe lock at a time, for one store call plus an
///   ownership check, and never while waiting for anything else;
/// - a holder of several stripe locks (the migrator's switch, a
///   transaction) takes them in one global order, ascending
///   `(node id, stripe)`, so no cycle can form;
/// - ownership of a token moves away from a node only while the write lock
///   of the token's stripe is held, so a client that checked ownership under
///   that lock keeps it until it unlocks.
///
/// Health: a down node refuses every client call and every migrator step
/// ([`ClusterError::Unavailable`]). Transient failures armed by fault
/// injection (`fail_next`) are spent by the migrator's steps only, never by
/// client calls, so a test's budget means "this many transfer steps fail".
pub(crate) struct Node {
    pub(crate) id: NodeId,
    stripes: Box<[Stripe]>,
    /// `64 - log2(stripes)`; a token's stripe is `token >> shift`.
    shift: u32,
    /// A crashed node answers nothing until healed (set only by fault
    /// injection in this in-process cluster).
    down: AtomicBool,
    /// The next this-many migrator store accesses fail (fault injection).
    fail_next: AtomicU32,
    /// The cluster's memory total, which this node's stores add to; the
    /// node takes its bytes off when it is dropped (a node that left is
    /// dropped whole, without deleting its keys one by one).
    total: Arc<AtomicI64>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.total.fetch_sub(self.memory(), Ordering::Relaxed);
    }
}

/// One lock stripe: a store (with its bookkeeping) and the number of its
/// keys the node serves.
struct Stripe {
    store: RwLock<Shard>,
    /// Bytes the stripe's store holds, served or not (see
    /// [`crate::Entry::footprint`]); written by the [`Shard`] under the
    /// write lock, read by `stats()` without it.
    memory: Arc<AtomicI64>,
    /// Keys of this stripe the node is the authority for: changed by a
    /// client write that creates or removes a key (under the stripe's write
    /// lock, on the authority) and by the switch of a range (under the
    /// write locks of the range's stripes). Partial copies on a target and
    /// stale copies awaiting cleanup are stored but not served, so they are
    /// not counted. See `crate::counts`.
    served: AtomicI64,
}

impl Node {
    /// A node over `stores`, one per stripe (a power of two of them).
    pub(crate) fn new(id: NodeId, stores: Vec<Box<dyn Store>>, total: Arc<AtomicI64>) -> Self {
        let stripes = stores.len();
        debug_assert!(stripes.is_power_of_two());
        Node {
            id,
            stripes: stores
                .into_iter()
                .map(|store| {
                    let memory = Arc::new(AtomicI64::new(0));
                    Stripe {
                        store: RwLock::new(Shard::new(store, memory.clone(), total.clone())),
                        memory,
                        served: AtomicI64::new(0),
                    }
                })
                .collect(),
            shift: 64 - stripes.trailing_zeros(),
            down: AtomicBool::new(false),
            fail_next: AtomicU32::new(0),
            total,
        }
    }

    /// A client call reaches the node unless it is down.
    fn check_client(&self) -> Result<(), ClusterError> {
        if self.down.load(Ordering::Acquire) {
            return Err(ClusterError::Unavailable {
                node: self.id.clone(),
            });
        }
        Ok(())
    }

    /// A migrator step reaches the node unless it is down, and spends one
    /// armed transient failure if there is one.
    fn check_step(&self) -> Result<(), ClusterError> {
        self.check_client()?;
        let failed = self
            .fail_next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(ClusterError::Store {
                node: self.id.clone(),
                source: StoreError::Engine("injected fault".into()),
            });
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn stripe_of(&self, token: Token) -> usize {
        token.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// A client's shared access to the stripe holding `token`, if the node
    /// is up.
    #[inline]
    pub(crate) fn read(&self, token: Token) -> Result<StripeRead<'_>, ClusterError> {
        self.check_client()?;
        Ok(self.stripes[self.stripe_of(token)].store.read())
    }

    /// A client's exclusive access to the stripe holding `token`, if the
    /// node is up.
    #[inline]
    pub(crate) fn write(&self, token: Token) -> Result<StripeWrite<'_>, ClusterError> {
        self.check_client()?;
        Ok(self.stripes[self.stripe_of(token)].store.write())
    }

    /// A client's shared access to stripe `i`, if the node is up
    /// (eviction's sampling).
    pub(crate) fn read_stripe_client(&self, i: usize) -> Result<StripeRead<'_>, ClusterError> {
        self.check_client()?;
        Ok(self.stripes[i].store.read())
    }

    /// A client's exclusive access to stripe `i`, if the node is up (active
    /// expiry, which works stripe by stripe).
    pub(crate) fn client_write_stripe(&self, i: usize) -> Result<StripeWrite<'_>, ClusterError> {
        self.check_client()?;
        Ok(self.stripes[i].store.write())
    }

    /// A migrator step's shared access to stripe `i`, if the node is up and
    /// no injected failure is due.
    pub(crate) fn read_stripe(&self, i: usize) -> Result<StripeRead<'_>, ClusterError> {
        self.check_step()?;
        Ok(self.stripes[i].store.read())
    }

    /// A migrator step's exclusive access to stripe `i`, if the node is up
    /// and no injected failure is due.
    pub(crate) fn write_stripe(&self, i: usize) -> Result<StripeWrite<'_>, ClusterError> {
        self.check_step()?;
        Ok(self.stripes[i].store.write())
    }

    /// Shared access to stripe `i` whatever the node's health, for
    /// introspection ([`Cluster::locate`](crate::Cluster::locate)): it
    /// neither fails on a down node nor spends injected failures.
    pub(crate) fn peek_stripe(&self, i: usize) -> StripeRead<'_> {
        self.stripes[i].store.read()
    }

    /// Exclusive access to stripe `i` whatever the node's health: only for
    /// dropping what a down node held (a forced removal), where the lock
    /// still keeps the count of dropped keys exact.
    pub(crate) fn lock_stripe_unchecked(&self, i: usize) -> StripeWrite<'_> {
        self.stripes[i].store.write()
    }

    /// Adds `delta` to the keys of stripe `i` this node serves. Callers hold
    /// the stripe's write lock (see [`Stripe::served`]).
    #[inline]
    pub(crate) fn add_served(&self, i: usize, delta: i64) {
        if delta != 0 {
            self.stripes[i].served.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Keys this node serves (see `crate::counts` for when the sum over
    /// nodes is exact).
    pub(crate) fn served(&self) -> i64 {
        self.stripes
            .iter()
            .map(|s| s.served.load(Ordering::Relaxed))
            .sum()
    }

    /// Bytes this node's stores hold (served keys and unserved copies).
    pub(crate) fn memory(&self) -> i64 {
        self.stripes
            .iter()
            .map(|s| s.memory.load(Ordering::Relaxed))
            .sum()
    }

    /// The parts of an inclusive token interval that fall in each stripe,
    /// in ascending order.
    pub(crate) fn split(
        &self,
        tokens: RangeInclusive<Token>,
    ) -> impl Iterator<Item = (usize, RangeInclusive<Token>)> + '_ {
        let (lo, hi) = (*tokens.start(), *tokens.end());
        let (first, last) = (self.stripe_of(lo), self.stripe_of(hi));
        (first..=last).map(move |i| {
            let start = (i as u64).checked_shl(self.shift).unwrap_or(0);
            let end = ((i as u64 + 1).checked_shl(self.shift).unwrap_or(0)).wrapping_sub(1);
            (i, lo.max(start)..=hi.min(end))
        })
    }

    /// The stripes an arc of the ring touches, ascending, without repeats.
    pub(crate) fn stripes_of(&self, range: ringkv_ring::TokenRange) -> Vec<usize> {
        let mut stripes: Vec<usize> = range
            .intervals()
            .flat_map(|iv| self.split(iv).map(|(i, _)| i).collect::<Vec<_>>())
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
    }

    /// Number of stripes.
    pub(crate) fn stripe_count(&self) -> usize {
        self.stripes.len()
    }

    /// Entry count, whatever the node's health (introspection only): served
    /// keys plus copies that are not served (partial copies of ranges still
    /// copying to it, stale copies awaiting cleanup).
    pub(crate) fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.store.read().len()).sum()
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn fail_next(&self, calls: u32) {
        self.fail_next.store(calls, Ordering::Release);
    }

    pub(crate) fn store_error(&self, source: StoreError) -> ClusterError {
        ClusterError::Store {
            node: self.id.clone(),
            source,
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("stripes", &self.stripes.len())
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use ringkv_ring::TokenRange;

    fn node(stripes: usize) -> Node {
        let stores = (0..stripes)
            .map(|_| Box::new(MemStore::new()) as Box<dyn Store>)
            .collect();
        Node::new("n".into(), stores, Default::default())
    }

    #[test]
    fn split_covers_the_interval_exactly_once() {
        for stripes in [1, 2, 64] {
            let n = node(stripes);
            let cases = [
                0..=u64::MAX,
                5..=5,
                0..=(1u64 << 58),
                (u64::MAX - 3)..=u64::MAX,
                (1u64 << 63) - 1..=(1u64 << 63),
            ];
            for iv in cases {
                let parts: Vec<_> = n.split(iv.clone()).collect();
                assert_eq!(
                    parts.first().unwrap().1.start(),
                    iv.start(),
                    "{stripes} {iv:?}"
                );
                assert_eq!(parts.last().unwrap().1.end(), iv.end(), "{stripes} {iv:?}");
                for w in parts.windows(2) {
                    assert_eq!(*w[0].1.end() + 1, *w[1].1.start(), "contiguous");
                    assert_eq!(w[0].0 + 1, w[1].0, "consecutive stripes");
                }
                for (i, part) in &parts {
                    assert_eq!(n.stripe_of(*part.start()), *i);
                    assert_eq!(n.stripe_of(*part.end()), *i);
                }
            }
        }
    }

    #[test]
    fn stripes_of_a_wrapping_range() {
        let n = node(4);
        let r = TokenRange::new(u64::MAX - 10, 10);
        assert_eq!(n.stripes_of(r), vec![0, 3]);
        assert_eq!(n.stripes_of(TokenRange::FULL), vec![0, 1, 2, 3]);
    }
}
