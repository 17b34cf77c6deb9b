//! Group commit of plain SETs across connections, under `--fsync always`.
//!
//! With `always` a write is acknowledged only once fsynced. Connections
//! hand their SETs (one, or a pipelined run) to one writer thread and wait
//! without holding a runtime thread; the writer takes everything waiting,
//! writes it as one cluster transaction (one engine commit) and fsyncs it
//! once, then answers each connection; while it does, the next group
//! gathers. That is Redis's shape (its AOF is written and fsynced once per
//! event-loop turn, for every client served in it) in a multi-threaded
//! server: before, each connection's SETs were their own commit and each
//! connection waited for an fsync from a blocking thread of its own.
//!
//! Measured (`docs/BENCHMARKS.md`, persistence section 7): SET at `-P 1`
//! under `always` rose 1.6x. Under `everysec` and `no` the same writer was
//! slower at `-P 1` (0.84x): with no fsync to share, one thread inserting
//! every key into the engine's memtable is the bound, where the runtime's
//! threads share that work. So it runs under `always` only.
//!
//! A group is written as one transaction; if it cannot be (a node of one
//! key is down, the disk refuses it), nothing of it was written, and the
//! writer writes each connection's SETs as a transaction of their own. A
//! connection whose own SETs cannot be written whole runs them one by
//! one, so each gets the reply it would have had alone. The order of SETs of one connection is
//! kept (a connection waits for its group before it goes on); SETs of
//! different connections in one group are concurrent, and applied in the
//! order they arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use ringkv_cluster::{Cluster, Entry};
use tokio::sync::oneshot;
use tracing::error;

/// The most keys, and about the most bytes of keys and values, one group
/// writes: a group holds the lock stripes of its keys while it commits.
const GROUP_KEYS: usize = 256;
const GROUP_BYTES: usize = 2 << 20;

/// What became of a connection's SETs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written (and on disk, under `--fsync always`).
    Yes,
    /// Not written: run them one by one.
    No,
    /// Written but the fsync `--fsync always` needs failed: the outcome is
    /// unknown, and the connection closes without replies (as for any
    /// write whose fsync failed).
    Unsynced(String),
}

#[derive(Debug)]
struct Job {
    pairs: Vec<(Bytes, Bytes)>,
    done: oneshot::Sender<Written>,
}

/// The writer thread and the way to it. Dropping it stops the thread and
/// waits for it, so the cluster it holds is released by then.
#[derive(Debug)]
pub struct SetWriter {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

/// What the writer wrote (`INFO stats`: `ringkv_set_groups`,
/// `ringkv_set_grouped`).
#[derive(Debug, Default)]
struct Counts {
    /// Groups written.
    groups: AtomicU64,
    /// SETs in them.
    sets: AtomicU64,
}

impl SetWriter {
    /// Starts the writer of `cluster`.
    pub fn start(cluster: Arc<Cluster>) -> std::io::Result<SetWriter> {
        let (jobs, queue) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread = {
            let counts = Arc::clone(&counts);
            std::thread::Builder::new()
                .name("ringkv-sets".into())
                .spawn(move || run(&cluster, &queue, &counts))?
        };
        Ok(SetWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            counts,
        })
    }

    /// Groups written so far, and the SETs in them.
    pub fn written(&self) -> (u64, u64) {
        (
            self.counts.groups.load(Ordering::Relaxed),
            self.counts.sets.load(Ordering::Relaxed),
        )
    }

    /// Writes `SET key value` for each pair, in order, in some group.
    pub async fn write(&self, pairs: Vec<(Bytes, Bytes)>) -> Written {
        let (done, answer) = oneshot::channel();
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job { pairs, done }).is_ok());
        if !sent {
            return Written::No;
        }
        // A writer that panicked dropped the job unanswered: nothing is
        // known to be written, and running them alone says what happens.
        answer.await.unwrap_or(Written::No)
    }
}

impl Drop for SetWriter {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer's loop: a group of whatever waits, written, answered.
fn run(cluster: &Cluster, queue: &mpsc::Receiver<Job>, counts: &Counts) {
    let mut group: Vec<Job> = Vec::new();
    while let Ok(first) = queue.recv() {
        let (mut keys, mut bytes) = (0, 0);
        let mut next = Some(first);
        while let Some(job) = next.take() {
            keys += job.pairs.len();
            bytes += job
                .pairs
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
            group.push(job);
            if keys < GROUP_KEYS && bytes < GROUP_BYTES {
                next = queue.try_recv().ok();
            }
        }
        let written = write(cluster, &group);
        let sets: usize = group
            .iter()
            .zip(&written)
            .filter(|(_, w)| **w != Written::No)
            .map(|(job, _)| job.pairs.len())
            .sum();
        if sets > 0 {
            counts.groups.fetch_add(1, Ordering::Relaxed);
            counts.sets.fetch_add(sets as u64, Ordering::Relaxed);
        }
        for (job, written) in group.drain(..).zip(written) {
            let _ = job.done.send(written);
        }
    }
}

/// Writes `jobs` as one transaction; if that fails, each job as its own
/// (so a key on a down node fails its own connection's SETs only, not the
/// whole group's); then one fsync for all that were written, if the
/// policy wants one. What became of each job, in order.
fn write(cluster: &Cluster, jobs: &[Job]) -> Vec<Written> {
    let (written, owes) = ringkv_cluster::defer_sync(|| {
        if transaction(cluster, jobs) {
            vec![true; jobs.len()]
        } else if jobs.len() == 1 {
            vec![false]
        } else {
            jobs.iter()
                .map(|job| transaction(cluster, std::slice::from_ref(job)))
                .collect()
        }
    });
    let unsynced = match owes {
        true => cluster.sync().err(),
        false => None,
    };
    if let Some(e) = &unsynced {
        error!(error = %e, "fsync failed; closing the clients of the SETs without their replies");
    }
    written
        .into_iter()
        .map(|ok| match (ok, &unsynced) {
            (false, _) => Written::No,
            (true, None) => Written::Yes,
            (true, Some(e)) => Written::Unsynced(e.to_string()),
        })
        .collect()
}

/// Writes the SETs of `jobs`, in order, as one transaction: all or none.
fn transaction(cluster: &Cluster, jobs: &[Job]) -> bool {
    let keys: Vec<Bytes> = jobs
        .iter()
        .flat_map(|job| job.pairs.iter().map(|(k, _)| k.clone()))
        .collect();
    cluster
        .transaction(keys, |txn| {
            for (key, value) in jobs.iter().flat_map(|job| &job.pairs) {
                txn.put(key, Entry::string(value.clone()));
            }
        })
        .is_ok()
}
