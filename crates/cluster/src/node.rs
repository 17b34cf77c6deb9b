//! A node: its id, its store behind a lock, and its health.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use ringkv_ring::NodeId;

use crate::ClusterError;
use crate::store::{Store, StoreError};

/// One node of the in-process cluster.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    /// The node's keys. Lock discipline (see docs/ARCHITECTURE.md):
    /// - a client holds one node's lock at a time, for one store call plus
    ///   an ownership check, and never while waiting for anything else;
    /// - the (single) migrator may hold a source's lock and then a target's,
    ///   always in that order, so no cycle can form;
    /// - ownership of a range moves away from a node only while its write
    ///   lock is held, so a client that checked ownership under the lock
    ///   keeps it until it unlocks.
    store: RwLock<Box<dyn Store>>,
    /// Fault injection: a crashed node answers nothing until healed.
    down: AtomicBool,
    /// Fault injection: the next this-many store accesses fail.
    fail_next: AtomicU32,
}

impl Node {
    pub(crate) fn new(id: NodeId, store: Box<dyn Store>) -> Self {
        Node {
            id,
            store: RwLock::new(store),
            down: AtomicBool::new(false),
            fail_next: AtomicU32::new(0),
        }
    }

    fn check(&self) -> Result<(), ClusterError> {
        if self.down.load(Ordering::Acquire) {
            return Err(ClusterError::Unavailable {
                node: self.id.clone(),
            });
        }
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

    /// Shared access for reads, if the node is reachable.
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, Box<dyn Store>>, ClusterError> {
        self.check()?;
        Ok(self.store.read())
    }

    /// Exclusive access for writes, if the node is reachable.
    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, Box<dyn Store>>, ClusterError> {
        self.check()?;
        Ok(self.store.write())
    }

    /// Entry count, whatever the node's health (introspection only).
    pub(crate) fn len(&self) -> usize {
        self.store.read().len()
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Release);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

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
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}
