//! The progress callback runs outside every lock of the cluster: it may hand
//! membership calls to other threads and wait for them, events arrive in
//! order (coalesced to the latest, each change's last one always
//! delivered), and dropping the cluster stops its thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use ringkv_cluster::{ChangeKind, Cluster, ClusterConfig, Placement, Progress};

mod common;
use common::{assert_placement, assert_reads, fill};

const BOUND: Duration = Duration::from_secs(10);

fn config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 1024 },
        copy_batch: 8,
        ..ClusterConfig::default()
    }
}

fn cluster_of(ids: &[&str]) -> Arc<Cluster> {
    let cluster = Arc::new(Cluster::new(config()).unwrap());
    for id in ids {
        cluster.add_node(id).unwrap();
    }
    cluster
}

/// The reproduction: a callback hands `resume()` to another thread and
/// waits for its answer. With the callback under the membership mutex the
/// other thread could never take it.
#[test]
fn a_callback_that_waits_for_another_threads_resume_completes() {
    let cluster = cluster_of(&["n1", "n2", "n3"]);
    let model = fill(&cluster, 2_000);
    let (done_tx, done_rx) = mpsc::channel::<String>();
    let done_tx = Mutex::new(Some(done_tx));
    let inner = cluster.clone();
    cluster.on_progress(move |_| {
        let Some(done) = done_tx.lock().unwrap().take() else {
            return; // only the first event asks
        };
        let (tx, rx) = mpsc::channel();
        let other = inner.clone();
        std::thread::spawn(move || {
            let _ = tx.send(other.resume().map(|r| r.is_some()));
        });
        let outcome = match rx.recv_timeout(BOUND) {
            Ok(answer) => format!("{answer:?}"),
            Err(e) => format!("no answer: {e}"),
        };
        done.send(outcome).unwrap();
    });
    cluster.add_node("n4").unwrap();
    let outcome = done_rx.recv_timeout(BOUND).expect("the callback ran");
    assert_eq!(outcome, "Ok(false)", "resume answered: nothing paused");
    assert_reads(&cluster, &model, "after the change");
    assert_placement(&cluster, &model, "after the change");
}

/// A membership call made by the callback itself waits for the change and
/// then runs; clients and `on_progress` work from the callback too.
#[test]
fn a_membership_call_from_a_callback_waits_for_the_change() {
    let cluster = cluster_of(&["n1", "n2"]);
    let model = fill(&cluster, 500);
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(Some(tx));
    let inner = cluster.clone();
    cluster.on_progress(move |p| {
        if p.node.as_str() != "n3" {
            return;
        }
        let Some(tx) = tx.lock().unwrap().take() else {
            return;
        };
        let added = inner.add_node("n9").map(|r| r.node.to_string());
        inner.put("from-callback", "yes").unwrap();
        inner.on_progress(|_| {});
        tx.send(format!("{added:?}")).unwrap();
    });
    let report = cluster.add_node("n3").unwrap();
    assert_eq!(report.node.as_str(), "n3");
    let added = rx.recv_timeout(BOUND).expect("the callback ran");
    assert_eq!(added, "Ok(\"n9\")");
    assert!(cluster.members().iter().any(|m| m.as_str() == "n9"));
    assert_eq!(
        cluster.get(b"from-callback").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    assert_reads(&cluster, &model, "after both changes");
}

/// A slow callback sees the events of several changes in order: per
/// change, `ranges_done` rises strictly (waiting events are coalesced to
/// the latest), and its last event (`ranges_done == ranges_total`) is
/// always delivered, before any event of the next change.
#[test]
fn events_arrive_in_order_and_each_change_ends_with_its_last_event() {
    let cluster = cluster_of(&["n1", "n2"]);
    fill(&cluster, 2_000);
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let log = seen.clone();
    cluster.on_progress(move |p| {
        std::thread::sleep(Duration::from_millis(2)); // slower than a change
        log.lock().unwrap().push(p.clone());
    });
    let changes = [
        (ChangeKind::AddNode, "n3"),
        (ChangeKind::AddNode, "n4"),
        (ChangeKind::RemoveNode, "n2"),
    ];
    for (kind, id) in changes {
        match kind {
            ChangeKind::AddNode => cluster.add_node(id).unwrap(),
            ChangeKind::RemoveNode => cluster.remove_node(id).unwrap(),
        };
    }
    let deadline = Instant::now() + BOUND;
    let events = loop {
        let events = seen.lock().unwrap().clone();
        let finished = events
            .iter()
            .filter(|p| p.ranges_done == p.ranges_total)
            .count();
        if finished == changes.len() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut rest = events.as_slice();
    let mut ranges = 0;
    for (kind, id) in changes {
        let n = rest
            .iter()
            .take_while(|p| p.kind == kind && p.node.as_str() == id)
            .count();
        let (mine, tail) = rest.split_at(n);
        assert!(!mine.is_empty(), "{kind}({id}) reported: {events:#?}");
        assert!(
            mine.windows(2).all(
                |w| w[0].ranges_done < w[1].ranges_done && w[0].keys_copied <= w[1].keys_copied
            ),
            "in order: {mine:#?}"
        );
        let last = mine.last().expect("not empty");
        assert_eq!(last.ranges_done, last.ranges_total, "{mine:#?}");
        ranges += last.ranges_total;
        rest = tail;
    }
    assert!(rest.is_empty(), "nothing else: {rest:#?}");
    assert!(
        events.len() < ranges,
        "a slow callback got coalesced events ({} for {ranges} ranges)",
        events.len()
    );
}

/// Dropping the cluster stops the notifier thread: it has let go of the
/// callback once the drop returns.
#[test]
fn dropping_the_cluster_stops_the_progress_thread() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let cluster = cluster_of(&["n1"]);
    fill(&cluster, 200);
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Flag(dropped.clone());
    cluster.on_progress(move |_| {
        let _ = &flag;
    });
    cluster.add_node("n2").unwrap();
    drop(Arc::into_inner(cluster).expect("the only handle"));
    assert!(dropped.load(Ordering::SeqCst), "the thread ended");
}
