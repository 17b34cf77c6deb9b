//! Membership changes through RINGKV.ADDNODE / RINGKV.REMOVENODE while
//! client tasks write, read and count: no acknowledged write is lost,
//! every acknowledged INCR counts, and clients are served while a change
//! is in flight (operations are timed against each change's start and
//! end, so an operation held up until a change finished does not count).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{AsyncCommands, Value};
use ringkv_server::ServerConfig;

use crate::common::{cluster, start_with};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 100;
const PRELOAD: usize = 100_000;
/// Bounds of each writer's loop.
const MIN_OPS: u64 = 200;
const MAX_OPS: u64 = 50_000;
/// Operations (SET, GET, INCR) that must complete while changes are in
/// flight, over all writers and changes.
const MIN_DURING: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_while_nodes_join_and_leave() {
    let cluster = cluster();
    for i in 0..PRELOAD {
        cluster.put(format!("pre{i}"), format!("{i}")).unwrap();
    }
    let server = start_with(cluster, ServerConfig::default()).await;
    let changing = Arc::new(AtomicBool::new(true));
    // Every writer has completed an operation before the first change.
    let ready = Arc::new(tokio::sync::Barrier::new(WRITERS + 1));
    let epoch = Instant::now();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut con = server.client().await;
        let (changing, ready) = (changing.clone(), ready.clone());
        writers.push(tokio::spawn(async move {
            // The last acknowledged value of each key this writer owns.
            let mut acked: HashMap<String, String> = HashMap::new();
            let mut incrs = 0u64;
            // When each operation completed, since `epoch`.
            let mut done_at = Vec::new();
            let mut op = 0u64;
            while op < MAX_OPS && (op < MIN_OPS || changing.load(Ordering::Relaxed)) {
                let key = format!("w{w}:k{}", op as usize % KEYS_PER_WRITER);
                let value = format!("{w}-{op}");
                let () = con.set(&key, &value).await.expect("SET acknowledged");
                done_at.push(epoch.elapsed());
                acked.insert(key, value);
                // Read back an earlier key: its last acknowledged value.
                let back = format!("w{w}:k{}", (op as usize * 7) % KEYS_PER_WRITER);
                let got: Option<String> = con.get(&back).await.expect("GET answered");
                done_at.push(epoch.elapsed());
                assert_eq!(
                    got.as_ref(),
                    acked.get(&back),
                    "writer {w} op {op} key {back}"
                );
                let _: i64 = con.incr("counter", 1).await.expect("INCR acknowledged");
                done_at.push(epoch.elapsed());
                incrs += 1;
                if op == 0 {
                    ready.wait().await;
                }
                op += 1;
            }
            (acked, incrs, done_at)
        }));
    }

    // A membership change under client load can outlast the usual
    // patience on a loaded machine; its client waits as long as it takes
    // (nextest ends a hung test after five minutes: .config/nextest.toml).
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut admin = redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    ready.wait().await;
    // Each change's start and end, since `epoch`.
    let mut in_flight: Vec<(Duration, Duration)> = Vec::new();
    for change in [
        ["RINGKV.ADDNODE", "node4"],
        ["RINGKV.ADDNODE", "node5"],
        ["RINGKV.REMOVENODE", "node2"],
        ["RINGKV.REMOVENODE", "node4"],
    ] {
        let start = epoch.elapsed();
        let report: HashMap<String, Value> = redis::cmd(change[0])
            .arg(change[1])
            .query_async(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{change:?}: {e}"));
        in_flight.push((start, epoch.elapsed()));
        assert!(
            matches!(report["keys_moved"], Value::Int(n) if n > 0),
            "{report:?}"
        );
    }
    changing.store(false, Ordering::Relaxed);

    let mut total_incrs = 0;
    let mut during = 0;
    let mut expected: HashMap<String, String> = HashMap::new();
    for writer in writers {
        let (acked, incrs, done_at) = writer.await.expect("writer succeeded");
        total_incrs += incrs;
        expected.extend(acked);
        // Strictly inside a change: sent and answered while it ran.
        during += done_at
            .iter()
            .filter(|&&t| in_flight.iter().any(|&(start, end)| start < t && t < end))
            .count();
    }
    assert!(
        during >= MIN_DURING,
        "only {during} operations completed while a change was in flight {in_flight:?}"
    );

    let mut con = server.client().await;
    let members: Vec<Value> = redis::cmd("RINGKV.NODES")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(members.len(), 3);
    for (key, value) in &expected {
        let got: Option<String> = con.get(key).await.unwrap();
        assert_eq!(got.as_ref(), Some(value), "{key}");
    }
    let counter: u64 = con.get("counter").await.unwrap();
    assert_eq!(counter, total_incrs, "every acknowledged INCR counted once");
    for i in (0..PRELOAD).step_by(97) {
        let got: Option<String> = con.get(format!("pre{i}")).await.unwrap();
        assert_eq!(got, Some(i.to_string()));
    }
    for i in 0..PRELOAD {
        assert!(
            server
                .cluster
                .get(format!("pre{i}").as_bytes())
                .unwrap()
                .is_some()
        );
    }
    let keys: usize = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(keys, PRELOAD + expected.len() + 1);
    server.stop().await;
}
