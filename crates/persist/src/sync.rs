//! When writes reach the disk: the [`FsyncPolicy`], the `everysec` thread
//! ([`Ticker`], which fsyncs the write log) and group commit
//! ([`GroupCommit`]).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::error;

use crate::error::Failure;
use crate::oplog::OpLog;

/// When writes reach the disk, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every write that is acknowledged has been fsynced: the owner calls
    /// [`DataDir::sync`] before acknowledging, and concurrent callers share
    /// one fsync (group commit). Survives a power cut.
    Always,
    /// Writes reach the OS page cache when they return (a process crash
    /// loses none) and a background thread fsyncs once a second (a power
    /// cut loses about the last second).
    #[default]
    EverySec,
    /// Writes reach the OS page cache when they return; the OS writes them
    /// back when it likes (a power cut may lose up to its write-back delay,
    /// typically 30 s on Linux).
    No,
}

impl FsyncPolicy {
    /// The policy's name, as `--fsync` takes it.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }

    /// The policy named `name` (`always`, `everysec`, `no`).
    pub fn from_name(name: &str) -> Option<FsyncPolicy> {
        [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

/// The `everysec` thread's state: its handle on the write log, taken away
/// (under the mutex, so never in the middle of an fsync) to stop it.
pub(crate) struct Ticker {
    pub(crate) log: Mutex<Option<Arc<OpLog>>>,
    pub(crate) wake: Condvar,
    /// The directory's first failure, if this thread's fsync is it.
    pub(crate) failure: Arc<Mutex<Option<Failure>>>,
}

impl Ticker {
    /// An fsync a second until stopped.
    pub(crate) fn run(&self) {
        let mut log = self.log.lock();
        let mut failed = false;
        loop {
            if log.is_none() {
                return;
            }
            let _ = self.wake.wait_for(&mut log, Duration::from_secs(1));
            let Some(handle) = log.as_ref() else {
                return;
            };
            match handle.sync() {
                Ok(()) => failed = false,
                // Once: every later sync fails the same way, each second.
                Err(e) if !failed => {
                    failed = true;
                    self.failure.lock().get_or_insert_with(|| Failure {
                        kind: e.kind(),
                        message: format!("background fsync: {e}"),
                    });
                    error!(error = %e, "background fsync failed; writes are refused until a restart");
                }
                Err(_) => {}
            }
        }
    }
}

/// Group commit: callers that need their writes on disk share fsyncs.
///
/// A leader does not fsync the moment it is elected: while other writes
/// keep arriving (the other clients of a server answering a burst) it
/// waits for them, a few tens of microseconds at a time, for at most a
/// quarter of the last fsync's duration, so that one fsync covers the
/// burst instead of its first write. (The same idea as PostgreSQL's
/// `commit_delay`, sized by the disk's own latency; on a disk whose fsync
/// takes 5 ms that is at most 1.25 ms of waiting to save whole fsyncs.)
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<GroupState>,
    done: Condvar,
    /// Writes committed so far (any durability): what the leader watches.
    writes: std::sync::atomic::AtomicU64,
    /// How long the last fsync took, in microseconds.
    last_fsync_us: std::sync::atomic::AtomicU64,
}

/// The step of a leader's wait for more writes.
const GATHER_STEP: Duration = Duration::from_micros(40);
/// The longest a leader waits for more writes.
const GATHER_MAX: Duration = Duration::from_millis(2);

#[derive(Default)]
struct GroupState {
    /// Tickets handed out: one per `sync` call.
    requested: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// An fsync is running (its leader released the mutex).
    running: bool,
    /// Fsyncs done.
    syncs: u64,
}

impl GroupCommit {
    /// Fsyncs done so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Counts a committed write.
    pub(crate) fn wrote(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The leader's wait while writes keep arriving (see [`GroupCommit`]).
    fn gather(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let budget = Duration::from_micros(self.last_fsync_us.load(Relaxed) / 4).min(GATHER_MAX);
        let started = std::time::Instant::now();
        let mut seen = self.writes.load(Relaxed);
        while started.elapsed() + GATHER_STEP <= budget {
            std::thread::sleep(GATHER_STEP);
            let now = self.writes.load(Relaxed);
            if now == seen {
                break; // quiet: nobody else is about to need this fsync
            }
            seen = now;
        }
    }

    /// Returns once an fsync that started after this call has succeeded
    /// (or with the error of the one that failed). `fsync` is called by one
    /// caller at a time, without the mutex held. With `gather`, a caller
    /// that leads first lets a burst of other writers' writes arrive (see
    /// [`GroupCommit`]); without, it fsyncs at once: for a caller that has
    /// gathered its group itself.
    pub(crate) fn sync<E>(
        &self,
        gather: bool,
        fsync: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.state.lock();
        state.requested += 1;
        let ticket = state.requested;
        let mut fsync = Some(fsync);
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.running {
                self.done.wait(&mut state);
                continue;
            }
            // Lead: first let a burst of writes arrive, then fsync; this
            // covers every ticket handed out before the fsync starts, whose
            // writes all returned before their callers took them.
            state.running = true;
            drop(state);
            if gather {
                self.gather();
            }
            let covers = self.state.lock().requested;
            let t0 = std::time::Instant::now();
            let result = fsync.take().expect("a caller leads at most once")();
            self.last_fsync_us.store(
                t0.elapsed().as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            state = self.state.lock();
            state.running = false;
            if result.is_ok() {
                state.synced = state.synced.max(covers);
                state.syncs += 1;
            }
            drop(state);
            self.done.notify_all();
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Every caller returns only after an fsync that started after it
    /// called, and concurrent callers share fsyncs, whether a leader
    /// gathers first or not.
    #[test]
    fn group_commit_covers_each_caller_and_shares_fsyncs() {
        covers_each_caller_and_shares_fsyncs(true);
        covers_each_caller_and_shares_fsyncs(false);
    }

    fn covers_each_caller_and_shares_fsyncs(gather: bool) {
        let group = Arc::new(GroupCommit::default());
        // A write's sequence number, and the highest one an fsync covered
        // when it started.
        let written = Arc::new(AtomicU64::new(0));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, written, fsyncs, durable) = (
                    group.clone(),
                    written.clone(),
                    fsyncs.clone(),
                    durable.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .sync(gather, || {
                                let covers = written.load(Ordering::SeqCst);
                                std::thread::sleep(Duration::from_micros(200));
                                fsyncs.fetch_add(1, Ordering::SeqCst);
                                durable.fetch_max(covers, Ordering::SeqCst);
                                Ok::<(), ()>(())
                            })
                            .unwrap();
                        assert!(
                            durable.load(Ordering::SeqCst) >= mine,
                            "write {mine} acknowledged before an fsync covered it (gather: {gather})"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = fsyncs.load(Ordering::SeqCst);
        assert!(n < 1600, "no sharing: {n} fsyncs for 1600 calls");
        assert_eq!(group.state.lock().syncs, n);
    }

    #[test]
    fn a_failed_fsync_fails_its_caller_and_the_next_one_retries() {
        let group = GroupCommit::default();
        assert_eq!(
            group.sync(true, || Err::<(), _>("disk gone")),
            Err("disk gone")
        );
        let mut called = false;
        group
            .sync(false, || {
                called = true;
                Ok::<(), &str>(())
            })
            .unwrap();
        assert!(called, "a failure covers nobody: the next caller fsyncs");
    }
}
