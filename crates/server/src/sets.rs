//! Group commit under `--fsync always`: the plain SETs of many connections
//! written together, and every connection's fsync shared.
//!
//! With `always` a write is acknowledged only once fsynced. Connections
//! hand their SETs (one, or a pipelined run) to one writer thread and wait
//! without holding a runtime thread. The writer takes everything waiting,
//! writes it as one cluster transaction (one engine commit), fsyncs once
//! and answers every connection of the group; what arrived during that
//! fsync is the next group. That is Redis's shape (its AOF is written and
//! fsynced once per event-loop turn, for every client served in it) in a
//! multi-threaded server. A connection that made any other write itself
//! (`INCR`, `DEL`, a transaction, ...) asks the writer for an fsync only
//! ([`SetWriter::sync`]) and is answered with the next group: before, it
//! waited in a blocking thread of its own for group commit's fsync, and
//! `INCR` at `-P 1` ran half as fast (persistence section 14).
//!
//! Measured (`docs/BENCHMARKS.md`, persistence sections 7 and 13): SET at
//! `-P 1` under `always` rose 1.6x when the writer replaced an fsync per
//! connection. The writer then handed each group to a second thread that
//! fsynced it while the writer wrote the next one; at `-P 1` that made
//! groups of 5 to 10 SETs, each group costing two thread wake-ups and the
//! fsync's, so the overlap was dropped: one thread writes and fsyncs, its
//! groups hold about 18 SETs at `-P 1`, and the server spends less CPU a
//! SET. Under `everysec` and `no` there is no fsync to share, and one
//! thread inserting every key was slower than the runtime's threads doing
//! it (section 7), so the writer runs under `always` only.
//!
//! A group is written as one transaction; if it cannot be (a node of one
//! key is down, the disk refuses it), nothing of it was written, and the
//! writer writes each connection's SETs as a transaction of their own. A
//! connection whose own SETs cannot be written whole runs them one by
//! one, so each gets the reply it would have had alone. The order of SETs
//! of one connection is kept (a connection waits for its group before it
//! goes on); SETs of different connections in one group are concurrent,
//! and applied in the order they arrived.

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
    /// The SETs to write; none for a connection that asks only for an
    /// fsync of what it wrote itself.
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
        SetWriter::start_on(cluster)
    }

    fn start_on(sink: Arc<impl Sink>) -> std::io::Result<SetWriter> {
        let (jobs, queue) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread = {
            let counts = Arc::clone(&counts);
            std::thread::Builder::new()
                .name("ringkv-sets".into())
                .spawn(move || run(&*sink, &queue, &counts))?
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

    /// Returns once an fsync that started after the call has ended: the
    /// connection's earlier writes (made by itself, not through the
    /// writer) are on disk if it answers [`Written::Yes`]. It joins the
    /// next group, so it shares that group's fsync.
    pub async fn sync(&self) -> Written {
        self.write(Vec::new()).await
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

/// Waits until every write that returned before the call is on disk:
/// with the writer's next group (the caller holds no thread), or, with no
/// writer (not `--fsync always`, or it is gone), from a blocking thread
/// through the data directory's group commit.
pub async fn sync(shared: &crate::state::Shared) -> Result<(), String> {
    if let Some(writer) = shared.sets.as_ref() {
        match writer.sync().await {
            Written::Yes => return Ok(()),
            Written::Unsynced(e) => return Err(e),
            Written::No => {}
        }
    }
    let cluster = Arc::clone(&shared.cluster);
    match tokio::task::spawn_blocking(move || cluster.sync()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the fsync task failed: {e}")),
    }
}

/// Where the writer writes: the cluster (a fake that records the order of
/// writes and fsyncs in the tests).
trait Sink: Send + Sync + 'static {
    /// Writes `jobs` as one transaction; if that fails, each job as its
    /// own (so a key on a down node fails its own connection's SETs only,
    /// not the whole group's). Whether each job was written, in order, and
    /// whether they owe an fsync before they are acknowledged.
    fn write(&self, jobs: &[Job]) -> (Vec<bool>, bool);
    /// Makes every write that returned before the call durable.
    fn sync(&self) -> Result<(), String>;
}

impl Sink for Cluster {
    fn write(&self, jobs: &[Job]) -> (Vec<bool>, bool) {
        ringkv_cluster::defer_sync(|| {
            if transaction(self, jobs) {
                vec![true; jobs.len()]
            } else if jobs.len() == 1 {
                vec![false]
            } else {
                jobs.iter()
                    .map(|job| transaction(self, std::slice::from_ref(job)))
                    .collect()
            }
        })
    }

    fn sync(&self) -> Result<(), String> {
        // The writer has gathered its group: no reason to wait for more.
        Cluster::sync_now(self).map_err(|e| e.to_string())
    }
}

/// The writer's loop: a group of whatever waits, written, fsynced once
/// (if a write in it owes one), answered; then the group that arrived
/// meanwhile.
fn run(sink: &impl Sink, queue: &mpsc::Receiver<Job>, counts: &Counts) {
    while let Ok(first) = queue.recv() {
        let mut group: Vec<Job> = Vec::new();
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
        let (written, owes) = sink.write(&group);
        let sets: usize = group
            .iter()
            .zip(&written)
            .filter(|(_, w)| **w)
            .map(|(job, _)| job.pairs.len())
            .sum();
        if sets > 0 {
            counts.groups.fetch_add(1, Ordering::Relaxed);
            counts.sets.fetch_add(sets as u64, Ordering::Relaxed);
        }
        // The fsync starts after the group's writes ended, and after the
        // writes of the connections that asked for one only (no pairs)
        // returned, so it covers them all.
        let asked = group.iter().any(|job| job.pairs.is_empty());
        let unsynced = if owes || asked {
            sink.sync().err()
        } else {
            None
        };
        if let Some(e) = &unsynced {
            error!(error = %e, "fsync failed; closing the clients of the group without their replies");
        }
        for (job, ok) in group.into_iter().zip(written) {
            let written = match (ok, &unsynced) {
                (false, _) => Written::No,
                (true, None) => Written::Yes,
                (true, Some(e)) => Written::Unsynced(e.clone()),
            };
            let _ = job.done.send(written);
        }
    }
}

/// Writes the SETs of `jobs`, in order, as one transaction: all or none.
fn transaction(cluster: &Cluster, jobs: &[Job]) -> bool {
    if jobs.iter().all(|job| job.pairs.is_empty()) {
        return true; // only fsyncs asked for
    }
    let pairs = jobs
        .iter()
        .flat_map(|job| &job.pairs)
        .map(|(key, value)| (key.clone(), Entry::string(value.clone())))
        .collect();
    cluster.put_all(pairs).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What happened, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        /// These keys were written: by the writer (one group), or by a
        /// client itself (then it asks the writer for an fsync only).
        Wrote(Vec<String>),
        SyncStarts,
        SyncEnds,
        /// A client had its answer.
        Acked(String),
    }

    /// Writes nothing; records the order of writes and fsyncs, each fsync
    /// taking as long as a disk's. As the cluster, a group that writes no
    /// key owes no fsync.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl Sink for Recorder {
        fn write(&self, jobs: &[Job]) -> (Vec<bool>, bool) {
            let keys: Vec<String> = jobs
                .iter()
                .flat_map(|j| &j.pairs)
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect();
            let owes = !keys.is_empty();
            if owes {
                self.0.lock().unwrap().push(Event::Wrote(keys));
            }
            (vec![true; jobs.len()], owes)
        }

        fn sync(&self) -> Result<(), String> {
            self.0.lock().unwrap().push(Event::SyncStarts);
            std::thread::sleep(Duration::from_micros(300));
            self.0.lock().unwrap().push(Event::SyncEnds);
            Ok(())
        }
    }

    /// Runs `CLIENTS` clients of `SETS` writes each against a writer over
    /// a [`Recorder`]: a client `c` for which `own(c)` writes its keys
    /// itself and asks the writer for an fsync only (as a connection does
    /// after any other write), the others hand their SETs to the writer.
    /// Checks that every answer comes after the end of an fsync that
    /// started after the key was written; returns the writer's groups.
    async fn every_answer_follows_an_fsync_of_its_write(own: fn(usize) -> bool) -> usize {
        const CLIENTS: usize = 16;
        const SETS: usize = 40;
        let recorder = Arc::new(Recorder::default());
        let writer = Arc::new(SetWriter::start_on(Arc::clone(&recorder)).expect("threads"));
        let clients = (0..CLIENTS).map(|c| {
            let (writer, recorder) = (Arc::clone(&writer), Arc::clone(&recorder));
            tokio::spawn(async move {
                for i in 0..SETS {
                    let key = format!("{c}:{i}");
                    if own(c) {
                        recorder
                            .0
                            .lock()
                            .unwrap()
                            .push(Event::Wrote(vec![key.clone()]));
                        assert_eq!(writer.sync().await, Written::Yes);
                    } else {
                        let pair = (Bytes::from(key.clone()), Bytes::from_static(b"v"));
                        assert_eq!(writer.write(vec![pair]).await, Written::Yes);
                    }
                    recorder.0.lock().unwrap().push(Event::Acked(key));
                }
            })
        });
        for client in futures::future::join_all(clients).await {
            client.expect("client");
        }
        let events = recorder.0.lock().unwrap().clone();
        let mut wrote = std::collections::HashMap::new();
        // The latest fsync's start, and the start of the latest one that
        // ended: every write before it is durable.
        let mut sync_start = None;
        let mut covered_until = None;
        let mut acked = 0;
        for (at, event) in events.iter().enumerate() {
            match event {
                Event::Wrote(keys) => {
                    for key in keys {
                        wrote.insert(key.clone(), at);
                    }
                }
                Event::SyncStarts => sync_start = Some(at),
                Event::SyncEnds => {
                    // Every write before this fsync's start is durable now.
                    covered_until = sync_start;
                }
                Event::Acked(key) => {
                    let w = wrote[key];
                    assert!(
                        covered_until.is_some_and(|start| start > w),
                        "{key} written at event {w} was acknowledged at event {at} before an \
                         fsync that began after it ended (events: {events:?})"
                    );
                    acked += 1;
                }
            }
        }
        assert_eq!(acked, CLIENTS * SETS, "every write answered");
        let by_writer = (0..CLIENTS).filter(|c| !own(*c)).count() * SETS;
        let (groups, sets) = writer.written();
        assert_eq!(
            sets, by_writer as u64,
            "the writer counts the SETs it wrote"
        );
        groups as usize
    }

    /// Under `--fsync always` a SET is acknowledged only once fsynced, and
    /// SETs of different clients share groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_set_is_answered_after_an_fsync_that_began_after_its_write() {
        let groups = every_answer_follows_an_fsync_of_its_write(|_| false).await;
        assert!(
            groups < 16 * 40,
            "SETs of different clients share groups: {groups} groups"
        );
    }

    /// A connection that wrote on its own (any write but a plain SET) and
    /// asks the writer for an fsync is answered only after one that began
    /// after the call, also when nothing else is written meanwhile (a group
    /// of such asks alone owes no write's fsync, and still gets one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_fsync_asked_for_alone_begins_after_the_ask() {
        every_answer_follows_an_fsync_of_its_write(|_| true).await;
        every_answer_follows_an_fsync_of_its_write(|c| c % 2 == 0).await;
    }
}
