//! The membership mutex: what it guards, how it is taken, and the progress
//! callback, which lives outside it.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::MutexGuard;
use ringkv_ring::NodeId;

use crate::ClusterError;
use crate::active::Active;
use crate::cluster::Cluster;
use crate::repair::StaleRange;
use crate::report::{ChangeKind, Progress};

/// A requested membership change.
pub(crate) enum Change {
    Add { id: NodeId, weight: u32 },
    Remove { id: NodeId, force: bool },
}

impl Change {
    pub(crate) fn kind(&self) -> ChangeKind {
        match self {
            Change::Add { .. } => ChangeKind::AddNode,
            Change::Remove { .. } => ChangeKind::RemoveNode,
        }
    }

    pub(crate) fn node(&self) -> &NodeId {
        match self {
            Change::Add { id, .. } | Change::Remove { id, .. } => id,
        }
    }
}

/// State that outlives one call, guarded by the membership mutex.
#[derive(Default)]
pub(crate) struct Membership {
    /// A change past its commit point that could not finish switching.
    pub(crate) paused: Option<Active>,
    /// Ranges whose stale copy could not be deleted yet.
    pub(crate) pending_cleanups: Vec<StaleRange>,
}

/// The progress callback: kept outside the membership mutex, so setting it
/// never waits for a change, and calling it never needs the mutex.
pub(crate) type ProgressFn = dyn Fn(&Progress) + Send + Sync;

thread_local! {
    /// The clusters whose membership mutex this thread holds: a membership
    /// call from inside a change on the same thread (a progress callback,
    /// a `Store`) would otherwise wait for itself forever.
    static HELD: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The membership mutex, held; marks the thread as inside a change.
pub(crate) struct MembershipGuard<'a> {
    guard: MutexGuard<'a, Membership>,
    cluster: u64,
}

impl Deref for MembershipGuard<'_> {
    type Target = Membership;
    fn deref(&self) -> &Membership {
        &self.guard
    }
}

impl DerefMut for MembershipGuard<'_> {
    fn deref_mut(&mut self) -> &mut Membership {
        &mut self.guard
    }
}

impl Drop for MembershipGuard<'_> {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|&c| c == self.cluster) {
                held.remove(i);
            }
        });
    }
}

impl Cluster {
    /// Takes the membership mutex for `op`, or refuses with
    /// [`ClusterError::ChangeInProgress`] if this thread already holds it
    /// (a call from inside a change, e.g. from a progress callback).
    ///
    /// The mutex is a `parking_lot` one: a panic that unwinds through a
    /// change releases it without poisoning, and the change's own failure
    /// handling has by then left [`Membership`] as a failure would.
    pub(crate) fn lock_membership(
        &self,
        op: &'static str,
    ) -> Result<MembershipGuard<'_>, ClusterError> {
        let reentrant = HELD.with(|held| held.borrow().contains(&self.instance));
        if reentrant {
            return Err(ClusterError::ChangeInProgress { op });
        }
        let guard = self.membership.lock();
        HELD.with(|held| held.borrow_mut().push(self.instance));
        Ok(MembershipGuard {
            guard,
            cluster: self.instance,
        })
    }

    /// Calls `f` after each range a redistribution copies, e.g. to draw a
    /// progress bar. Replaces any earlier callback.
    ///
    /// `f` runs on the thread running the membership change, between two
    /// ranges (no lock of any node is held). It may read and write keys; a
    /// membership call from inside it (`add_node`, `remove_node`, `resume`)
    /// returns [`ClusterError::ChangeInProgress`] instead of waiting for
    /// itself. If `f` panics, the change is rolled back as if the copy had
    /// failed there, and the panic continues to the caller of the change.
    pub fn on_progress(&self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        *self.progress.lock() = Some(Arc::new(f));
    }

    /// Tells the progress callback, if any.
    pub(crate) fn report_progress(&self, progress: &Progress) {
        // Clone the callback out so that it runs without the slot's lock:
        // it may replace itself.
        let f = self.progress.lock().clone();
        if let Some(f) = f {
            f(progress);
        }
    }
}
