//! The process aborted at a fixed point of a redistribution
//! (`RINGKV_ABORT_AT`), then restarted: a change stopped before its commit
//! point is rolled back, one stopped after it is completed, and in both
//! cases every acknowledged write (those made while the change was copying
//! included) is there, no deleted key is back and no stale copy is left.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringkv_cluster::Placement;

use crate::harness::{self, Allowed, Launch, SIGABRT, Server, is_server_error};

/// Keys written and acknowledged before the change.
const PRELOAD: usize = 2_000;
/// Ring partitions: a change moves tens of ranges, so "the middle range"
/// is well inside the copy.
const PARTITIONS: u32 = 256;

/// Which change is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `RINGKV.ADDNODE n4` to n1, n2, n3.
    Add,
    /// `RINGKV.REMOVENODE n2` from n1, n2, n3.
    Remove,
}

/// Which range of the change's plan the abort fires on.
#[derive(Debug, Clone, Copy)]
enum At {
    /// The first range that reaches the point.
    First,
    /// The middle range of the plan: half the ranges went through first.
    Middle,
}

/// The members before the change and after it.
fn memberships(kind: Kind) -> (BTreeSet<String>, BTreeSet<String>) {
    let before: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
    let mut after = before.clone();
    match kind {
        Kind::Add => after.insert("n4".to_owned()),
        Kind::Remove => after.remove("n2"),
    };
    (before, after)
}

/// How many ranges the change moves: the server's ring is the same
/// balanced ring built by the same history.
fn plan_ranges(kind: Kind) -> usize {
    let ring = Placement::BalancedPartitions {
        partitions: PARTITIONS,
    }
    .empty_ring()
    .expect("valid placement");
    let ring = ["n1", "n2", "n3"]
        .iter()
        .fold(ring, |r, id| r.with_node(*id, 1).expect("add"));
    let next = match kind {
        Kind::Add => ring.with_node("n4", 1),
        Kind::Remove => ring.without_node("n2"),
    }
    .expect("change");
    ring.diff(&next).moves.len()
}

/// What the writer thread did before the abort dropped its connection.
struct Writes {
    /// Acknowledged commands in order: key, value (`None`: DEL), when the
    /// reply was read.
    acked: Vec<(String, Option<String>, Instant)>,
    /// The command without a reply.
    in_flight: Option<(String, Option<String>)>,
    errors: Vec<String>,
}

/// SETs new keys, overwrites and deletes preloaded ones, one command at a
/// time, until the connection drops.
fn writer(mut con: redis::Connection, count: Arc<AtomicU64>) -> Writes {
    let mut w = Writes {
        acked: Vec::new(),
        in_flight: None,
        errors: Vec::new(),
    };
    for i in 0.. {
        let (key, value) = match i % 3 {
            0 => (format!("w{i}"), Some(format!("x{i}"))),
            1 => (format!("k{:05}", (i * 37) % PRELOAD), Some(format!("u{i}"))),
            _ => (format!("k{:05}", (i * 53 + 11) % PRELOAD), None),
        };
        w.in_flight = Some((key.clone(), value.clone()));
        let result = match &value {
            Some(v) => redis::cmd("SET").arg(&key).arg(v).query::<()>(&mut con),
            None => redis::cmd("DEL").arg(&key).query::<()>(&mut con),
        };
        match result {
            Ok(()) => {
                w.acked.push((key, value, Instant::now()));
                w.in_flight = None;
                count.fetch_add(1, Ordering::Release);
            }
            Err(e) if is_server_error(&e) => {
                w.in_flight = None;
                w.errors.push(format!("{key} {value:?}: {e}"));
            }
            Err(_) => break,
        }
    }
    w
}

/// Runs the case until a write was acknowledged while the change ran (the
/// abort may come before the writer gets a reply), at most three times.
fn abort_case(kind: Kind, point: &str, at: At, committed: bool) {
    let started = Instant::now();
    for attempt in 1..=3 {
        let during = attempt_case(kind, point, at, committed);
        eprintln!(
            "{kind:?} aborted at {point} ({at:?}): {during} writes acknowledged during the \
             change, attempt {attempt}, {:.1} s in all",
            started.elapsed().as_secs_f64()
        );
        if during > 0 {
            return;
        }
    }
    panic!("{kind:?} at {point}: no write was acknowledged while the change ran, in 3 attempts");
}

/// One run of the case; returns how many writes were acknowledged while
/// the change was running.
fn attempt_case(kind: Kind, point: &str, at: At, committed: bool) -> usize {
    let home = harness::scratch();
    let launch = Launch::new(
        home.path(),
        &["--partitions", &PARTITIONS.to_string(), "--copy-batch", "1"],
    );
    let (before, after) = memberships(kind);
    let ranges = plan_ranges(kind);
    let spec = match at {
        At::First => point.to_owned(),
        At::Middle => format!("{point}:{}", ranges / 2),
    };
    let context = format!("{kind:?} with RINGKV_ABORT_AT={spec}");

    // Data, acknowledged, then a kill: it is on disk.
    let mut server = Server::start(&launch, &[]);
    let mut con = server.connect();
    let mut model: BTreeMap<String, Option<String>> = BTreeMap::new();
    let keys: Vec<usize> = (0..PRELOAD).collect();
    for chunk in keys.chunks(500) {
        let mut mset = redis::cmd("MSET");
        for i in chunk {
            let (k, v) = (format!("k{i:05}"), format!("v{i}"));
            mset.arg(&k).arg(&v);
            model.insert(k, Some(v));
        }
        let () = mset.query(&mut con).expect("MSET");
    }
    drop(con);
    server.kill();

    // The change, aborted, with a client writing all along.
    let mut server = Server::start(&launch, &[("RINGKV_ABORT_AT", &spec)]);
    let count = Arc::new(AtomicU64::new(0));
    let writes = {
        let con = server.connect();
        let count = Arc::clone(&count);
        thread::spawn(move || writer(con, count))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::Acquire) < 10 {
        assert!(Instant::now() < deadline, "{context}: the writer is stuck");
        thread::sleep(Duration::from_millis(1));
    }
    let mut admin = server.connect();
    let node = if kind == Kind::Add { "n4" } else { "n2" };
    match harness::change(&mut admin, kind == Kind::Add, node) {
        Ok(report) => panic!(
            "{context}: the change completed ({report:?}) instead of aborting; log:\n{}",
            server.log_text()
        ),
        Err(e) if is_server_error(&e) => panic!(
            "{context}: the change failed ({e}) instead of aborting; log:\n{}",
            server.log_text()
        ),
        Err(_) => {}
    }
    let status = server.wait_exit();
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "{context}: the process did not die by SIGABRT ({status}); log:\n{}",
        server.log_text()
    );
    let op = if kind == Kind::Add {
        "op=add_node"
    } else {
        "op=remove_node"
    };
    let needles = ["rebalance started", op, &format!("node={node} ")];
    let (change_started, line) = server.seen(&needles).unwrap_or_else(|| {
        panic!(
            "{context}: the process died before the change started; log:\n{}",
            server.log_text()
        )
    });
    let logged = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ranges="))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(
        logged,
        Some(ranges),
        "{context}: the plan's ranges (the test expects the ring the server has): {line}"
    );
    let w = writes.join().expect("writer thread");
    assert!(
        w.errors.is_empty(),
        "{context}: writes failed:\n{}",
        w.errors.join("\n")
    );
    // Acknowledged after the log line was read: written while the change ran.
    let during = w
        .acked
        .iter()
        .filter(|(_, _, at)| *at > change_started)
        .count();
    for (k, v, _) in &w.acked {
        model.insert(k.clone(), v.clone());
    }
    let mut allowed: Allowed = model
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect();
    if let Some((k, v)) = &w.in_flight {
        allowed
            .entry(k.clone())
            .or_insert_with(|| vec![None])
            .push(v.clone());
    }

    // The restart: rolled back or completed, nothing lost.
    let mut server = Server::start(&launch, &[]);
    let mut con = server.connect();
    let context = format!("{context}, after the restart");
    let read = harness::check_keys(&mut con, &allowed, &context);
    let members = if committed { &after } else { &before };
    harness::check_membership(&mut con, members, &read, &context);
    harness::write_works(&mut con, "probe", "after-abort", &context);
    let mut read = read;
    read.insert("probe".to_owned(), Some("after-abort".to_owned()));

    // A further change works and keeps every key.
    let (add, node) = match (kind, committed) {
        (Kind::Add, false) => (true, "n4"),
        (Kind::Add, true) => (true, "n5"),
        (Kind::Remove, false) => (false, "n2"),
        (Kind::Remove, true) => (false, "n3"),
    };
    let mut members = members.clone();
    if add {
        members.insert(node.to_owned());
    } else {
        members.remove(node);
    }
    let context = format!(
        "{context}, then {} {node}",
        if add { "add" } else { "remove" }
    );
    if let Err(e) = harness::change(&mut con, add, node) {
        panic!("{context}: {e}; log:\n{}", server.log_text());
    }
    let read = harness::check_keys(&mut con, &harness::exactly(&read), &context);
    harness::check_membership(&mut con, &members, &read, &context);
    drop(con);
    server.kill();

    // And that change is durable too.
    let server = Server::start(&launch, &[]);
    let mut con = server.connect();
    let context = format!("{context}, after a kill");
    let read = harness::check_keys(&mut con, &harness::exactly(&read), &context);
    harness::check_membership(&mut con, &members, &read, &context);
    during
}

#[test]
fn add_aborted_before_copy_is_rolled_back() {
    abort_case(Kind::Add, "before-copy", At::Middle, false);
}

#[test]
fn add_aborted_mid_copy_is_rolled_back() {
    abort_case(Kind::Add, "mid-copy", At::Middle, false);
}

#[test]
fn add_aborted_after_copy_is_rolled_back() {
    abort_case(Kind::Add, "after-copy", At::First, false);
}

/// After-copy of a later range: the ranges before it are switched, so
/// the change is past its commit point and a restart completes it.
#[test]
fn add_aborted_between_switches_is_completed() {
    abort_case(Kind::Add, "after-copy", At::Middle, true);
}

#[test]
fn add_aborted_during_cleanup_is_completed() {
    abort_case(Kind::Add, "during-cleanup", At::Middle, true);
}

#[test]
fn remove_aborted_before_copy_is_rolled_back() {
    abort_case(Kind::Remove, "before-copy", At::Middle, false);
}

#[test]
fn remove_aborted_mid_copy_is_rolled_back() {
    abort_case(Kind::Remove, "mid-copy", At::Middle, false);
}

#[test]
fn remove_aborted_after_copy_is_rolled_back() {
    abort_case(Kind::Remove, "after-copy", At::First, false);
}

#[test]
fn remove_aborted_between_switches_is_completed() {
    abort_case(Kind::Remove, "after-copy", At::Middle, true);
}

#[test]
fn remove_aborted_during_cleanup_is_completed() {
    abort_case(Kind::Remove, "during-cleanup", At::Middle, true);
}
