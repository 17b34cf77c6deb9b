//! Node processes' code, several nodes in one test process on loopback,
//! over TCP with the cluster secret: a cluster starts, nodes join and
//! leave while clients write through any node, and afterwards every key
//! is served with its last value by every node, and held by exactly the
//! node that serves it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{client, set_each};
use ringkv_meta::{NodeState, PlacementSpec};
use ringkv_node::{Node, NodeConfig, Start};
use ringkv_peer::Secret;
use tokio::net::TcpListener;

const SECRET: &str = "the nodes test's secret";

thread_local! {
    /// `--rebalance-rate` of the nodes the current test thread starts.
    static RATE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

async fn start(id: &str, start: Start, dir: Option<&std::path::Path>) -> Node {
    let any = "127.0.0.1:0".parse().unwrap();
    start_at(id, start, dir, any, any).await
}

/// [`start`] on given addresses (a restart keeps its addresses).
async fn start_at(
    id: &str,
    start: Start,
    dir: Option<&std::path::Path>,
    client: std::net::SocketAddr,
    peer: std::net::SocketAddr,
) -> Node {
    let mut config = NodeConfig::new(id, start, Secret::new(SECRET));
    config.placement = PlacementSpec::BalancedPartitions { partitions: 64 };
    config.data_dir = dir.map(|d| d.join(id));
    config.down_after = Duration::from_millis(1500);
    config.rebalance_rate = RATE.with(|r| r.get());
    let client = TcpListener::bind(client).await.unwrap();
    let peer = TcpListener::bind(peer).await.unwrap();
    Node::start(config, client, peer).await.unwrap()
}

/// Waits until every node serves, sees `members` members all up, and no
/// change is in flight, at one epoch.
async fn settled(nodes: &[&Node], members: usize) {
    for _ in 0..600 {
        let states: Vec<_> = nodes.iter().map(|n| n.state()).collect();
        let epochs: Vec<u64> = states.iter().map(|s| s.epoch).collect();
        if nodes.iter().all(|n| n.is_ready())
            && states.iter().all(|s| {
                s.change.is_none()
                    && s.members.len() == members
                    && s.members.values().all(|m| m.state() == NodeState::Up)
            })
            && epochs.windows(2).all(|w| w[0] == w[1])
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let views: Vec<String> = nodes
        .iter()
        .map(|n| {
            let s = n.state();
            format!(
                "epoch {} members {:?} change {:?} ready {}",
                s.epoch,
                s.members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.state()))
                    .collect::<Vec<_>>(),
                s.change.as_ref().map(|c| c.progress()),
                n.is_ready()
            )
        })
        .collect();
    panic!("the cluster did not settle: {views:#?}");
}

/// Every key reads its model value through every node, and the local key
/// counts add up to the model's (no copy left behind, none missing).
async fn check(nodes: &[&Node], model: &BTreeMap<String, Option<String>>) {
    for node in nodes {
        let mut con = client(node).await;
        for (key, value) in model {
            let got: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(&got, value, "key {key} through node {}", node.client_addr());
        }
    }
    // Cleanup runs after a change ends; give it a moment.
    let live = model.values().filter(|v| v.is_some()).count();
    for _ in 0..100 {
        let held: usize = nodes.iter().map(|n| n.local_keys()).sum();
        if held == live {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held: Vec<usize> = nodes.iter().map(|n| n.local_keys()).collect();
    panic!("nodes hold {held:?} keys, the model {live}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_under_writes_and_every_key_stays_served() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let a = start("a", Start::Init, Some(dir.path())).await;
    let seed = a.peer_addr().to_string();
    let b = start("b", Start::Join(seed.clone()), Some(dir.path())).await;
    settled(&[&a, &b], 2).await;

    // Writes through both nodes: each key goes to its owner.
    let mut model = BTreeMap::new();
    let mut cons = [client(&a).await, client(&b).await];
    for i in 0..400 {
        let key = format!("key:{i}");
        let value = format!("v{i}");
        let con = &mut cons[i % 2];
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query_async(con)
            .await
            .unwrap();
        model.insert(key, Some(value));
    }
    for i in (0..400).step_by(7) {
        let key = format!("key:{i}");
        let n: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut cons[i % 2])
            .await
            .unwrap();
        assert_eq!(n, 1);
        model.insert(key, None);
    }
    check(&[&a, &b], &model).await;

    // A third node joins while a writer keeps writing through `a`, until
    // the cluster has settled: some writes land in ranges being copied,
    // and must reach the new node in the last shipment.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut con = client(&a).await;
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut written = BTreeMap::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each key once: a write lost in the move stays lost.
                let key = format!("live:{i}");
                let value = format!("w{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .query_async(&mut con)
                    .await
                    .unwrap_or_else(|e| panic!("SET {key} failed during the join: {e}"));
                written.insert(key, Some(value));
                i += 1;
            }
            written
        })
    };
    let c = start("c", Start::Join(seed.clone()), Some(dir.path())).await;
    settled(&[&a, &b, &c], 3).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    model.extend(writer.await.unwrap());
    check(&[&a, &b, &c], &model).await;
    assert!(c.local_keys() > 0, "the new node received keys");

    // `b` leaves; its keys go to `a` and `c`.
    let mut con = client(&c).await;
    let _: () = redis::cmd("RINGKV.REMOVENODE")
        .arg("b")
        .query_async(&mut con)
        .await
        .unwrap();
    for _ in 0..300 {
        if !c.state().members.contains_key("b") && c.state().change.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settled(&[&a, &c], 2).await;
    check(&[&a, &c], &model).await;
    // `b` still answers, by forwarding.
    check_through(&b, &model).await;

    let lines: Vec<String> = redis::cmd("RINGKV.NODES")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let info: String = redis::cmd("INFO")
        .arg("ring")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        info.contains("ring_nodes:2\r\n") && info.contains("ring_rebalancing:0\r\n"),
        "{info}"
    );
    assert!(lines.iter().all(|l| l.contains("state=up")), "{lines:?}");
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

async fn check_through(node: &Node, model: &BTreeMap<String, Option<String>>) {
    let mut con = client(node).await;
    for (key, value) in model.iter().take(50) {
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(&got, value, "key {key} through the departed node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_split_by_owner_and_reassemble_in_request_order() {
    let a = start("a", Start::Init, None).await;
    let b = start("b", Start::Join(a.peer_addr().to_string()), None).await;
    settled(&[&a, &b], 2).await;
    let mut con = client(&b).await;
    let keys: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg(format!("value of {k}"));
    }
    let () = mset.query_async(&mut con).await.unwrap();
    // Both nodes hold some: the command really was split.
    assert!(
        a.local_keys() > 0 && b.local_keys() > 0,
        "{} {}",
        a.local_keys(),
        b.local_keys()
    );
    assert_eq!(a.local_keys() + b.local_keys(), keys.len());

    let mut asked: Vec<String> = keys.iter().rev().cloned().collect();
    asked.insert(7, "absent".into());
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&asked)
        .query_async(&mut con)
        .await
        .unwrap();
    let want: Vec<Option<String>> = asked
        .iter()
        .map(|k| (k != "absent").then(|| format!("value of {k}")))
        .collect();
    assert_eq!(got, want);

    let n: i64 = redis::cmd("EXISTS")
        .arg(&asked)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 40);
    let n: i64 = redis::cmd("DEL")
        .arg(&keys[..10])
        .arg("absent")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 10);
    let n: i64 = redis::cmd("EXISTS")
        .arg(&keys)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 30);
    // Commands that cannot be split say so.
    let owner = |key: String| {
        let mut con = con.clone();
        async move {
            let located: Vec<String> = redis::cmd("RINGKV.LOCATE")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            located[1].clone()
        }
    };
    let from = keys[10].clone();
    let mut to = String::new();
    for i in 0.. {
        to = format!("dest{i}");
        if owner(to.clone()).await != owner(from.clone()).await {
            break;
        }
    }
    let e = redis::cmd("RENAME")
        .arg(&from)
        .arg(&to)
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");

    // A transaction refused for its keys' node is over (no MULTI left
    // queueing the next commands), and FLUSHALL is refused on a node.
    let there = (0..)
        .map(|i| format!("t{i}"))
        .find(|k| b.state().serving_key(k.as_bytes()).unwrap().node == "a")
        .unwrap();
    let () = redis::cmd("MULTI").query_async(&mut con).await.unwrap();
    let queued: redis::Value = redis::cmd("SET")
        .arg(&there)
        .arg("1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(queued, redis::Value::SimpleString("QUEUED".into()));
    let e = redis::cmd("EXEC")
        .query_async::<redis::Value>(&mut con)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("run the transaction there"), "{e}");
    let after: redis::Value = redis::cmd("SET")
        .arg(&there)
        .arg("2")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        after,
        redis::Value::Okay,
        "the refused EXEC left MULTI open"
    );
    let e = redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not supported on a node"), "{e}");
    for node in [a, b] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_marked_down_its_keys_answer_clusterdown_and_it_comes_back_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = start("a", Start::Init, Some(dir.path())).await;
    let seed = a.peer_addr().to_string();
    let b = start("b", Start::Join(seed.clone()), Some(dir.path())).await;
    let c = start("c", Start::Join(seed), Some(dir.path())).await;
    settled(&[&a, &b, &c], 3).await;
    let mut con = client(&a).await;
    let keys: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    set_each(&mut con, &keys).await;
    let on_c: Vec<&String> = keys
        .iter()
        .filter(|k| a.state().serving_key(k.as_bytes()).unwrap().node == "c")
        .collect();
    assert!(!on_c.is_empty() && on_c.len() < keys.len());
    let (c_client, c_peer) = (c.client_addr(), c.peer_addr().parse().unwrap());
    c.shutdown().await;

    let mut down = false;
    for _ in 0..100 {
        if a.state().members["c"].state() == NodeState::Down {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(down, "c was not marked down: {:?}", a.state().members["c"]);
    for k in &keys {
        let got: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg(k).query_async(&mut con).await;
        if on_c.contains(&k) {
            let e = got.unwrap_err();
            assert_eq!(e.code(), Some("CLUSTERDOWN"), "{k}: {e}");
        } else {
            assert_eq!(got.unwrap().as_deref(), Some(k.as_str()));
        }
    }
    let lines: Vec<String> = redis::cmd("RINGKV.NODES")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("c ") && l.contains("state=down")),
        "{lines:?}"
    );

    let c = start_at("c", Start::Restart, Some(dir.path()), c_client, c_peer).await;
    settled(&[&a, &b, &c], 3).await;
    for k in &keys {
        let got: Option<String> = redis::cmd("GET")
            .arg(k)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(k.as_str()));
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_joining_node_copies_no_faster_than_its_rebalance_rate() {
    let a = start("a", Start::Init, None).await;
    settled(&[&a], 1).await;
    let mut con = client(&a).await;
    for i in 0..600 {
        let () = redis::cmd("SET")
            .arg(format!("r{i}"))
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    RATE.with(|r| r.set(Some(200)));
    let began = std::time::Instant::now();
    let b = start("b", Start::Join(a.peer_addr().to_string()), None).await;
    settled(&[&a, &b], 2).await;
    let took = began.elapsed();
    let moved = b.local_keys() as f64;
    assert!(moved > 100.0, "b received {moved} keys");
    // A lower bound only: the copy cannot have gone faster than the rate.
    assert!(
        took.as_secs_f64() >= moved / 200.0,
        "{moved} keys in {took:?} at 200 keys/s"
    );
    for node in [a, b] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_moves_many_keys_and_large_values_in_bounded_pages() {
    let a = start("a", Start::Init, None).await;
    settled(&[&a], 1).await;
    let mut con = client(&a).await;
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("many{i}")).arg(i).ignore();
    }
    let () = pipe.query_async(&mut con).await.unwrap();
    // Values of 2 MiB: a few fill a page's byte bound.
    let big = |i: usize| vec![b'a' + i as u8; 2 << 20];
    for i in 0..6 {
        let () = redis::cmd("SET")
            .arg(format!("big{i}"))
            .arg(big(i))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let b = start("b", Start::Join(a.peer_addr().to_string()), None).await;
    settled(&[&a, &b], 2).await;
    // The source deletes its copies once the change has ended.
    for _ in 0..100 {
        if a.local_keys() + b.local_keys() == 5006 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        a.local_keys() + b.local_keys(),
        5006,
        "{} + {}",
        a.local_keys(),
        b.local_keys()
    );
    assert!(b.local_keys() > 1000, "b received {}", b.local_keys());
    // Through b: every key, forwarded or not; and a 5 MiB value forwarded.
    let mut con = client(&b).await;
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("GET").arg(format!("many{i}"));
    }
    let got: Vec<Option<u64>> = pipe.query_async(&mut con).await.unwrap();
    assert!(got.iter().enumerate().all(|(i, v)| *v == Some(i as u64)));
    for i in 0..6 {
        let got: Vec<u8> = redis::cmd("GET")
            .arg(format!("big{i}"))
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(got == big(i), "big{i}");
    }
    let huge = vec![b'z'; 5 << 20];
    for i in 0..4 {
        let key = format!("huge{i}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(&huge)
            .query_async(&mut con)
            .await
            .unwrap();
        let got: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(got == huge, "{key}");
    }
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// Pipelines of `INCR` on keys served by every node, through every node,
/// while a node joins and another leaves: each connection's pipelines are
/// routed together (one group per serving node, the groups at once), and
/// each reply must still be the key's previous value plus one. A request
/// run out of order within its key, run twice, or lost shows as a wrong
/// count, whichever node it ran on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_keep_each_keys_order_while_nodes_join_and_leave() {
    let a = start("a", Start::Init, None).await;
    let seed = a.peer_addr().to_string();
    let b = start("b", Start::Join(seed.clone()), None).await;
    let c = start("c", Start::Join(seed.clone()), None).await;
    settled(&[&a, &b, &c], 3).await;
    // Slow copies of many keys, so that pipelines meet ranges being
    // copied and fenced.
    let mut con = client(&a).await;
    let mut load = redis::pipe();
    for i in 0..1200 {
        load.cmd("SET").arg(format!("bulk:{i}")).arg(i).ignore();
    }
    let () = load.query_async(&mut con).await.unwrap();
    RATE.with(|r| r.set(Some(300)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for (n, node) in [&a, &b, &c].into_iter().enumerate() {
        let mut con = client(node).await;
        let stop = std::sync::Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            // Each client its own keys, so it knows every count.
            let keys: Vec<String> = (0..12).map(|i| format!("p{n}:{i}")).collect();
            let mut counts = vec![0i64; keys.len()];
            let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(n as u64);
            let mut pipelines = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || pipelines < 20 {
                let mut pipe = redis::pipe();
                let mut want = Vec::new();
                for _ in 0..24 {
                    // Keys repeat within a pipeline, in an order that varies.
                    let step = rand::Rng::random_range(&mut rng, 0..keys.len());
                    counts[step] += 1;
                    pipe.cmd("INCR").arg(&keys[step]);
                    want.push(counts[step]);
                }
                let got: Vec<i64> = pipe
                    .query_async(&mut con)
                    .await
                    .unwrap_or_else(|e| panic!("pipeline {pipelines} of client {n}: {e}"));
                assert_eq!(got, want, "pipeline {pipelines} of client {n}");
                pipelines += 1;
            }
            (keys, counts, pipelines)
        }));
    }
    let d = start("d", Start::Join(seed.clone()), None).await;
    settled(&[&a, &b, &c, &d], 4).await;
    let mut con = client(&d).await;
    let _: () = redis::cmd("RINGKV.REMOVENODE")
        .arg("b")
        .query_async(&mut con)
        .await
        .unwrap();
    settled(&[&a, &c, &d], 3).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let (keys, counts, pipelines) = client.await.unwrap();
        assert!(pipelines >= 20);
        for (key, count) in keys.iter().zip(counts) {
            let got: Option<i64> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(got.unwrap_or(0), count, "{key}");
        }
    }
    for node in [a, b, c, d] {
        node.shutdown().await;
    }
}

/// A pipeline whose replies outgrow what one call between nodes carries:
/// the owner stops a group before the next request once the answer is
/// full, and the rest are sent again; no reply of a request that ran is
/// dropped (a `GETDEL` whose value went missing would lose it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_large_replies_gets_every_reply() {
    let a = start("a", Start::Init, None).await;
    let b = start("b", Start::Join(a.peer_addr().to_string()), None).await;
    settled(&[&a, &b], 2).await;
    let mut con = client(&b).await;
    // Keys `a` serves, so `b` forwards them.
    let mut keys = Vec::new();
    for i in 0.. {
        let key = format!("big{i}");
        let located: Vec<String> = redis::cmd("RINGKV.LOCATE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        if located[1] == "a" {
            keys.push(key);
        }
        if keys.len() == 10 {
            break;
        }
    }
    let value = |n: usize| format!("{n}:{}", "v".repeat(700 * 1024));
    for (n, key) in keys.iter().enumerate() {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value(n))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    // 10 x 700 KiB: several calls' worth.
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("GETDEL").arg(key);
    }
    let got: Vec<Option<String>> = pipe.query_async(&mut con).await.unwrap();
    let want: Vec<Option<String>> = (0..keys.len()).map(|n| Some(value(n))).collect();
    assert!(got == want, "some GETDEL lost its value");
    assert_eq!(a.local_keys(), 0);
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// Through `node`, with nothing moving: `DBSIZE`, `KEYS`, `SCAN` (with and
/// without `MATCH`) and `RANDOMKEY` answer for exactly the keys of
/// `expected`, which the cluster's nodes hold between them.
async fn check_keyspace(node: &Node, expected: &BTreeSet<String>) {
    let at = node.client_addr();
    let mut con = client(node).await;
    let size: usize = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, expected.len(), "DBSIZE through {at}");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    assert!(keys.iter().eq(expected.iter()), "KEYS * through {at}");
    let scanned = scan_all(&mut con, None, 7).await;
    assert_eq!(
        scanned.len(),
        expected.len(),
        "SCAN returned a key twice through {at}"
    );
    assert_eq!(
        &scanned.into_iter().collect::<BTreeSet<_>>(),
        expected,
        "SCAN through {at}"
    );
    let matched: BTreeSet<String> = scan_all(&mut con, Some("k:1*"), 100)
        .await
        .into_iter()
        .collect();
    let want: BTreeSet<String> = expected
        .iter()
        .filter(|k| k.starts_with("k:1"))
        .cloned()
        .collect();
    assert_eq!(matched, want, "SCAN MATCH through {at}");
    let random: Option<String> = redis::cmd("RANDOMKEY").query_async(&mut con).await.unwrap();
    match random {
        Some(key) => assert!(expected.contains(&key), "RANDOMKEY {key} through {at}"),
        None => assert!(expected.is_empty(), "RANDOMKEY found nothing through {at}"),
    }
}

/// A whole `SCAN`, from cursor 0 back to 0: every key returned, in order,
/// repeats included.
async fn scan_all(
    con: &mut redis::aio::MultiplexedConnection,
    pattern: Option<&str>,
    count: usize,
) -> Vec<String> {
    let (mut cursor, mut out) = (0u64, Vec::new());
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("COUNT").arg(count);
        if let Some(pattern) = pattern {
            cmd.arg("MATCH").arg(pattern);
        }
        let (next, keys): (u64, Vec<String>) = cmd.query_async(con).await.unwrap();
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// `SCAN`, `KEYS`, `DBSIZE` and `RANDOMKEY` answer for the whole cluster
/// through any node, as on `ringkv serve`, though each node's store holds
/// only the keys it serves (and copies in transit). While a node joins
/// and another leaves (slow copies), under writes of new keys and deletes
/// of loaded ones: every `SCAN` pass returns every key present throughout,
/// no key deleted before it began, and no key twice; every `DBSIZE` lies
/// between what the writes and deletes acknowledged before it and those
/// sent by its end allow (a copy in transit counted as well would exceed
/// it). Some passes and counts must overlap a step of a change. Afterwards
/// all of them are exact again through every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_key_space_is_read_through_any_node_while_nodes_join_and_leave() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let a = start("a", Start::Init, None).await;
    let seed = a.peer_addr().to_string();
    let b = start("b", Start::Join(seed.clone()), None).await;
    let c = start("c", Start::Join(seed.clone()), None).await;
    settled(&[&a, &b, &c], 3).await;
    check_keyspace(&b, &BTreeSet::new()).await;
    let mut expected: BTreeSet<String> = (0..1500).map(|i| format!("k:{i}")).collect();
    let mut con = client(&a).await;
    let mut load = redis::pipe();
    for key in &expected {
        load.cmd("SET").arg(key).arg(1).ignore();
    }
    let () = load.query_async(&mut con).await.unwrap();
    for node in [&a, &b, &c] {
        check_keyspace(node, &expected).await;
    }

    RATE.with(|r| r.set(Some(300)));
    let stop = Arc::new(AtomicBool::new(false));
    // New keys written, and loaded keys deleted, while nodes move: counts
    // of those sent (before each request) and acknowledged (after).
    let (sent, acked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (doomed, deleted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gone = |i: usize| format!("k:{}", 1499 - i);
    let writer = {
        let (stop, sent, acked) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&acked));
        let (doomed, deleted) = (Arc::clone(&doomed), Arc::clone(&deleted));
        let mut con = client(&c).await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = sent.fetch_add(1, Ordering::SeqCst);
                let () = redis::cmd("SET")
                    .arg(format!("w:{i}"))
                    .arg(i)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                acked.fetch_add(1, Ordering::SeqCst);
                if i % 2 == 0 && doomed.load(Ordering::SeqCst) < 500 {
                    let d = doomed.fetch_add(1, Ordering::SeqCst);
                    let n: usize = redis::cmd("DEL")
                        .arg(gone(d))
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    assert_eq!(n, 1, "DEL {}", gone(d));
                    deleted.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // The ring's epoch through `con`: a pass or a count that sees it move
    // overlapped a step of a membership change.
    async fn epoch(con: &mut redis::aio::MultiplexedConnection) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("ring")
            .query_async(con)
            .await
            .unwrap();
        let line = info.lines().find(|l| l.starts_with("ring_epoch:")).unwrap();
        line["ring_epoch:".len()..].trim().parse().unwrap()
    }
    let reader = {
        let (stop, doomed, deleted) =
            (Arc::clone(&stop), Arc::clone(&doomed), Arc::clone(&deleted));
        let mut cons = [client(&a).await, client(&c).await];
        tokio::spawn(async move {
            let (mut passes, mut moving) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) || passes < 2 {
                let con = &mut cons[passes % 2];
                let (before, gone_before) = (epoch(con).await, deleted.load(Ordering::SeqCst));
                let scanned = scan_all(con, None, 1 + passes % 40).await;
                let (after, gone_after) = (epoch(con).await, doomed.load(Ordering::SeqCst));
                moving += usize::from(after > before);
                let unique: BTreeSet<&String> = scanned.iter().collect();
                assert_eq!(unique.len(), scanned.len(), "pass {passes} repeated a key");
                // Present throughout: loaded and not deleted by its end.
                let missing: Vec<String> = (0..1500 - gone_after)
                    .map(|i| format!("k:{i}"))
                    .filter(|k| !unique.contains(k))
                    .collect();
                assert!(missing.is_empty(), "pass {passes} missed {missing:?}");
                // Deleted before it began: never returned.
                let stale: Vec<String> = (0..gone_before)
                    .map(gone)
                    .filter(|k| unique.contains(k))
                    .collect();
                assert!(stale.is_empty(), "pass {passes} returned deleted {stale:?}");
                passes += 1;
            }
            (passes, moving)
        })
    };
    let counter = {
        let (stop, sent, acked) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&acked));
        let (doomed, deleted) = (Arc::clone(&doomed), Arc::clone(&deleted));
        let mut cons = [client(&a).await, client(&c).await];
        tokio::spawn(async move {
            let (mut counts, mut moving) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let con = &mut cons[counts % 2];
                let before = epoch(con).await;
                let (low, deletes) = (acked.load(Ordering::SeqCst), deleted.load(Ordering::SeqCst));
                let size: usize = redis::cmd("DBSIZE").query_async(con).await.unwrap();
                let (high, doomed) = (sent.load(Ordering::SeqCst), doomed.load(Ordering::SeqCst));
                moving += usize::from(epoch(con).await > before);
                assert!(
                    (1500 + low - doomed..=1500 + high - deletes).contains(&size),
                    "DBSIZE {counts}: {size}; 1500 loaded, {low} to {high} written, {deletes} to {doomed} deleted"
                );
                counts += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (counts, moving)
        })
    };
    let d = start("d", Start::Join(seed.clone()), None).await;
    settled(&[&a, &b, &c, &d], 4).await;
    let mut con = client(&d).await;
    let () = redis::cmd("RINGKV.REMOVENODE")
        .arg("b")
        .query_async(&mut con)
        .await
        .unwrap();
    settled(&[&a, &c, &d], 3).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let (passes, moving) = reader.await.unwrap();
    assert!(
        moving >= 1,
        "none of {passes} passes overlapped a step of a change"
    );
    let (counts, moving) = counter.await.unwrap();
    assert!(
        moving >= 1,
        "none of {counts} counts overlapped a step of a change"
    );
    let deletes = deleted.load(Ordering::SeqCst);
    assert!(deletes > 0, "no key was deleted during the changes");
    for i in 0..deletes {
        expected.remove(&gone(i));
    }
    expected.extend((0..sent.load(Ordering::SeqCst)).map(|i| format!("w:{i}")));
    for node in [&a, &c, &d] {
        check_keyspace(node, &expected).await;
    }
    // A transaction runs on one node: these are refused inside it (when
    // queued, as on `ringkv serve`), not answered for that node alone.
    let mut con = client(&a).await;
    let refused: redis::RedisResult<(usize,)> = redis::pipe()
        .atomic()
        .cmd("DBSIZE")
        .query_async(&mut con)
        .await;
    let refused = refused.unwrap_err().to_string();
    assert!(
        refused.contains("DBSIZE inside MULTI is not supported"),
        "{refused}"
    );
    for node in [a, b, c, d] {
        node.shutdown().await;
    }
}
