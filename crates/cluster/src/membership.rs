//! The membership mutex: what it guards, how it is taken, and the progress
//! notifier, which calls the progress callback outside it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, MutexGuard};
use ringkv_ring::NodeId;
use tracing::error;

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

/// What the cluster keeps for progress: the notifier, outside the
/// membership mutex, so that setting the callback never waits for a change.
pub(crate) type ProgressFn = Notifier;

/// A progress callback.
type Callback = dyn Fn(&Progress) + Send + Sync;

/// Calls the progress callback on a thread of its own, so that it runs
/// outside every lock of the cluster: a change only posts its events.
///
/// Events are delivered in order. An event still waiting when the next one
/// of the same change arrives is replaced by it (a progress bar needs only
/// the latest), except the last event of a change (`ranges_done ==
/// ranges_total`), which is always delivered.
pub(crate) struct Notifier {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The part of the notifier its thread shares.
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    callback: Mutex<Arc<Callback>>,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Progress>,
    /// Set when the cluster is dropped: deliver what is queued, then stop.
    stop: bool,
}

/// Whether `a` and `b` report on the same change.
fn same_change(a: &Progress, b: &Progress) -> bool {
    a.kind == b.kind && a.node == b.node && a.ranges_total == b.ranges_total
}

impl Notifier {
    /// Starts the notifier thread, calling `callback`.
    fn start(callback: Arc<Callback>) -> std::io::Result<Notifier> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            callback: Mutex::new(callback),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ringkv-progress".into())
            .spawn(move || theirs.run())?;
        Ok(Notifier {
            shared,
            thread: Some(thread),
        })
    }

    /// Replaces the callback (from the next event on).
    fn set(&self, callback: Arc<Callback>) {
        *self.shared.callback.lock() = callback;
    }

    /// Queues `event` for the callback, coalescing it with a waiting event
    /// of the same change. Never waits for the callback.
    fn post(&self, event: Progress) {
        let mut queue = self.shared.queue.lock();
        match queue.events.back_mut() {
            Some(last) if same_change(last, &event) && last.ranges_done < last.ranges_total => {
                *last = event;
            }
            _ => queue.events.push_back(event),
        }
        drop(queue);
        self.shared.wake.notify_one();
    }
}

impl Shared {
    /// The notifier thread: delivers events until stopped and drained.
    fn run(&self) {
        loop {
            let event = {
                let mut queue = self.queue.lock();
                loop {
                    if let Some(event) = queue.events.pop_front() {
                        break event;
                    }
                    if queue.stop {
                        return;
                    }
                    self.wake.wait(&mut queue);
                }
            };
            // Clone the callback out: it runs with no lock held, and may
            // replace itself.
            let callback = self.callback.lock().clone();
            if catch_unwind(AssertUnwindSafe(|| callback(&event))).is_err() {
                error!(
                    op = %event.kind,
                    node = %event.node,
                    ranges_done = event.ranges_done,
                    "the progress callback panicked; the change is not affected"
                );
            }
        }
    }
}

impl Drop for Notifier {
    /// Stops the thread once it has delivered what is queued, and waits for
    /// it, unless this runs on that thread (a callback dropped the last
    /// handle to the cluster): it then stops by itself.
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
            && thread.join().is_err()
        {
            error!("the progress notifier thread panicked");
        }
    }
}

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
    /// (a call from inside a change, e.g. from a `Store` it calls).
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
    /// `f` runs on a thread of its own (started by the first call, stopped
    /// when the cluster is dropped), outside every lock of the cluster, so
    /// it never holds up a change and a change never waits for it. It may
    /// call any method of the cluster, also from threads it waits for: a
    /// membership call (`add_node`, `resume`, `repair`, ...) waits for the
    /// running change to finish, as from any other thread.
    ///
    /// Events arrive in order, possibly after the change returned. One that
    /// is still waiting when the next one of the same change is posted is
    /// replaced by it (the latest wins); the last one of each change
    /// (`ranges_done == ranges_total`) is always delivered. If `f` panics,
    /// the panic is logged and the next event is delivered as usual: no
    /// change is affected. Dropping the cluster waits for the events
    /// queued so far to be delivered.
    pub fn on_progress(&self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        let f: Arc<Callback> = Arc::new(f);
        let mut slot = self.progress.lock();
        match slot.as_ref() {
            Some(notifier) => notifier.set(f),
            None => match Notifier::start(f) {
                Ok(notifier) => *slot = Some(Arc::new(notifier)),
                Err(e) => error!(
                    error = %e,
                    "cannot start the progress thread; progress will not be reported"
                ),
            },
        }
    }

    /// Posts `progress` to the callback, if any; never waits for it.
    pub(crate) fn report_progress(&self, progress: Progress) {
        let notifier = self.progress.lock().clone();
        if let Some(notifier) = notifier {
            notifier.post(progress);
        }
    }
}
