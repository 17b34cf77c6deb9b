//! Three nodes whose peers talk over the in-memory transport, so the test
//! can partition them: the Raft leader is cut off from the other two.
//! The majority elects a leader and commits (it marks the isolated node
//! down: its keys answer `-CLUSTERDOWN` there, the others are served); the
//! isolated node commits nothing (its epoch does not move) and, its lease
//! run out, stops serving its own keys too. After the heal every node
//! agrees again and every key reads its value everywhere.

mod common;

use std::time::Duration;

use common::{client, set_each};
use ringkv_meta::{NodeState, PlacementSpec};
use ringkv_node::{Node, NodeConfig, Start};
use ringkv_peer::{DEFAULT_FRAME_LIMIT, MemTransport, Secret};
use tokio::net::TcpListener;

/// A node whose copies go at most `rate` keys a second, if given.
async fn start(net: &MemTransport, id: &str, start: Start, rate: Option<u64>) -> Node {
    let mut config = NodeConfig::new(id, start, Secret::none());
    config.rebalance_rate = rate;
    config.placement = PlacementSpec::BalancedPartitions { partitions: 64 };
    config.down_after = Duration::from_millis(1500);
    let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Node::start_in_memory(config, client, net, &format!("mem-{id}"))
        .await
        .unwrap()
}

/// Nodes a (which starts the cluster), b and c (which join through a),
/// on `net`.
async fn three(net: &MemTransport) -> [Node; 3] {
    three_paced(net, None).await
}

/// [`three`], copying at most `rate` keys a second.
async fn three_paced(net: &MemTransport, rate: Option<u64>) -> [Node; 3] {
    let a = start(net, "a", Start::Init, rate).await;
    let b = start(net, "b", Start::Join("mem-a".into()), rate).await;
    let c = start(net, "c", Start::Join("mem-a".into()), rate).await;
    [a, b, c]
}

/// Waits for `ok` (checked every 100 ms), at most 30 s.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..300 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

fn all_up(nodes: &[&Node]) -> bool {
    let epochs: Vec<u64> = nodes.iter().map(|n| n.state().epoch).collect();
    nodes.iter().all(|n| {
        let s = n.state();
        n.is_ready()
            && s.change.is_none()
            && s.members.len() == 3
            && s.members.values().all(|m| m.state() == NodeState::Up)
    }) && epochs.windows(2).all(|w| w[0] == w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_commits_nothing_while_the_majority_goes_on() {
    let net = MemTransport::new(DEFAULT_FRAME_LIMIT);
    let [a, b, c] = three(&net).await;
    let nodes = [&a, &b, &c];
    until("the three agree", || {
        all_up(&nodes) && nodes.iter().filter(|n| n.is_leader()).count() == 1
    })
    .await;
    // Three voters: a majority of two can commit without the third.
    until("three voters", || {
        let lines = futures_lines(&a);
        lines
            .iter()
            .filter(|l| l.contains("raft=voter") || l.contains("raft=leader"))
            .count()
            == 3
    })
    .await;

    let mut con = client(&a).await;
    let keys: Vec<String> = (0..60).map(|i| format!("p{i}")).collect();
    set_each(&mut con, &keys).await;

    let leader = *nodes.iter().find(|n| n.is_leader()).unwrap();
    let others: Vec<&Node> = nodes.iter().copied().filter(|n| !n.is_leader()).collect();
    let id = |n: &Node| n.peer_addr().trim_start_matches("mem-").to_string();
    let isolated = id(leader);
    for other in &others {
        net.cut(leader.peer_addr(), other.peer_addr());
    }
    let before = leader.state().epoch;

    // The majority elects a leader and marks the isolated node down.
    until("the majority marks the isolated node down", || {
        others.iter().any(|n| n.is_leader())
            && others
                .iter()
                .all(|n| n.state().members[&isolated].state() == NodeState::Down)
    })
    .await;
    let mut majority = client(others[0]).await;
    for k in &keys {
        let got: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg(k).query_async(&mut majority).await;
        let owner = others[0]
            .state()
            .serving_key(k.as_bytes())
            .unwrap()
            .node
            .to_string();
        if owner == isolated {
            assert_eq!(got.unwrap_err().code(), Some("CLUSTERDOWN"), "{k}");
        } else {
            assert_eq!(got.unwrap().as_deref(), Some(k.as_str()), "{k}");
        }
    }
    // The isolated node committed nothing, and no longer serves its own
    // keys either: no quorum confirms its leadership, so its lease ran out
    // (a forced removal could give its ranges away). Each refusal first
    // waits for a renewal that cannot come: two keys are enough.
    assert_eq!(
        leader.state().epoch,
        before,
        "the minority changed its state"
    );
    let mut minority = client(leader).await;
    let own = keys
        .iter()
        .filter(|k| leader.state().serving_key(k.as_bytes()).unwrap().node == isolated);
    for k in own.take(2) {
        let got: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg(k).query_async(&mut minority).await;
        assert_eq!(
            got.unwrap_err().code(),
            Some("CLUSTERDOWN"),
            "{k} through the isolated node"
        );
    }

    net.heal();
    until("all agree again after the heal", || all_up(&nodes)).await;
    for node in nodes {
        let mut con = client(node).await;
        for k in &keys {
            let got = get(&mut con, k).await;
            assert_eq!(got.as_deref(), Some(k.as_str()), "{k} after the heal");
        }
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// A member removed with `FORCE` that is cut off in the middle of its
/// ranges' copy: its targets hold copies of its keys, made before it
/// rewrote one and deleted another, when its ranges are dropped. They
/// clear those copies before they serve the ranges: every dropped key
/// reads empty (R = 1: `FORCE` gives them up), none with a value the
/// member had overwritten, none brought back after its delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_mid_copy_in_a_forced_removal_leaves_no_copy_served() {
    // About 50 keys go to each target: one page, then a 10 s wait.
    cut_off_mid_copy_in_a_forced_removal(5, true).await;
}

/// A member removed with `FORCE` and cut off while its targets' copies
/// wait on their pace (one key a second: a page, then about a minute):
/// its ranges are dropped, and each target stops its copy to clear them
/// rather than waiting for the copy's next call to the member (which, on
/// a network that drops packets rather than refusing them, waits out the
/// call's 30 s limit). The removal ends well within 30 s, and the
/// dropped keys read empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cut_off_members_ranges_stops_the_copies_waiting_on_it() {
    cut_off_mid_copy_in_a_forced_removal(1, false).await;
}

/// Three nodes copying at most `rate` keys a second; a follower removed
/// with `FORCE`; once its targets hold copies of its keys (and, with
/// `rewrite`, after it rewrote one and deleted another), it is cut off.
/// The removal ends within 30 s and every key it held reads empty.
async fn cut_off_mid_copy_in_a_forced_removal(rate: u64, rewrite: bool) {
    let net = MemTransport::new(DEFAULT_FRAME_LIMIT);
    let [a, b, c] = three_paced(&net, Some(rate)).await;
    let nodes = [&a, &b, &c];
    until("the three agree", || all_up(&nodes)).await;
    let mut con = client(&a).await;
    let keys: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    set_each(&mut con, &keys).await;
    let (victim, id, others) = a_follower(&nodes);
    let state = others[0].state();
    let lost: Vec<&String> = keys
        .iter()
        .filter(|k| state.serving_key(k.as_bytes()).unwrap().node == id)
        .collect();
    assert!(lost.len() >= 2);
    let mut con = client(others[0]).await;
    remove_forced(&mut con, &id).await;
    until("the targets hold copies of the member's keys", || {
        let held: std::collections::HashSet<bytes::Bytes> = others
            .iter()
            .flat_map(|n| n.local_key_names().unwrap())
            .collect();
        lost.iter().all(|k| held.contains(k.as_bytes()))
    })
    .await;
    if rewrite {
        // The member still serves its keys: one is rewritten, one deleted.
        let mut direct = client(victim).await;
        let () = redis::cmd("SET")
            .arg(lost[0])
            .arg("rewritten")
            .query_async(&mut direct)
            .await
            .unwrap();
        let deleted: u64 = redis::cmd("DEL")
            .arg(lost[1])
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
    }
    for other in &others {
        net.cut(victim.peer_addr(), other.peer_addr());
    }
    until("the removal is done", || removed(&others, &id)).await;
    for k in &lost {
        let got = get(&mut con, k).await;
        assert_eq!(got, None, "{k}: dropped with its range, yet served");
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// A member of `nodes` that does not lead, its id, and the others.
fn a_follower<'a>(nodes: &[&'a Node]) -> (&'a Node, String, Vec<&'a Node>) {
    let victim = *nodes.iter().find(|n| !n.is_leader()).unwrap();
    let id = victim.peer_addr().trim_start_matches("mem-").to_string();
    let others = nodes
        .iter()
        .copied()
        .filter(|n| n.peer_addr() != victim.peer_addr())
        .collect();
    (victim, id, others)
}

/// Whether each of `others` sees member `id` gone and no change in flight.
fn removed(others: &[&Node], id: &str) -> bool {
    others.iter().all(|n| {
        let s = n.state();
        s.change.is_none() && s.members.len() == 2 && !s.members.contains_key(id)
    })
}

/// `RINGKV.REMOVENODE id FORCE` through `con`.
async fn remove_forced(con: &mut redis::aio::MultiplexedConnection, id: &str) {
    let () = redis::cmd("RINGKV.REMOVENODE")
        .arg(id)
        .arg("FORCE")
        .query_async(con)
        .await
        .unwrap();
}

/// `GET key` through `con`.
async fn get(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(con).await.unwrap()
}

/// `RINGKV.NODES` through a blocking helper (the check runs in `until`).
fn futures_lines(node: &Node) -> Vec<String> {
    let addr = node.client_addr();
    std::thread::spawn(move || {
        let mut con = redis::Client::open(format!("redis://{addr}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("RINGKV.NODES")
            .query::<Vec<String>>(&mut con)
            .unwrap_or_default()
    })
    .join()
    .unwrap()
}

/// A member cut off from the others is marked down, then removed with
/// `FORCE`: its ranges are dropped and their new owners serve them empty
/// (R = 1: those keys are lost, as `FORCE` says), every other key keeps its
/// value, and the cut-off node, its lease run out, serves none of its old
/// keys meanwhile. After the heal it is no member, and through it every
/// key reads what the members serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_member_removed_with_force_loses_its_ranges_and_serves_nothing() {
    let net = MemTransport::new(DEFAULT_FRAME_LIMIT);
    let [a, b, c] = three(&net).await;
    let nodes = [&a, &b, &c];
    until("the three agree", || all_up(&nodes)).await;
    let mut con = client(&a).await;
    let keys: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
    set_each(&mut con, &keys).await;
    // Cut off a member that is not the leader.
    let (victim, id, others) = a_follower(&nodes);
    for other in &others {
        net.cut(victim.peer_addr(), other.peer_addr());
    }
    let state = others[0].state();
    let (lost, kept): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| state.serving_key(k.as_bytes()).unwrap().node == id);
    assert!(!lost.is_empty() && !kept.is_empty());
    until("the others mark it down", || {
        others
            .iter()
            .all(|n| n.state().members[&id].state() == NodeState::Down)
    })
    .await;
    let mut con = client(others[0]).await;
    remove_forced(&mut con, &id).await;
    until("the removal is done", || removed(&others, &id)).await;
    for k in &kept {
        let got = get(&mut con, k).await;
        assert_eq!(got.as_deref(), Some(k.as_str()), "{k}, kept");
    }
    for k in &lost {
        let got = get(&mut con, k).await;
        assert_eq!(got, None, "{k}, dropped with its range");
    }
    let () = redis::cmd("SET")
        .arg(lost[0])
        .arg("new")
        .query_async(&mut con)
        .await
        .unwrap();
    // The cut-off node serves none of its old keys (its lease ran out).
    let mut cut = client(victim).await;
    let got: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg(lost[0]).query_async(&mut cut).await;
    assert!(got.is_err(), "the cut-off node served {:?}", got);

    net.heal();
    for k in lost.iter().take(3) {
        let want = (*k == lost[0]).then_some("new");
        let mut got = None;
        for _ in 0..100 {
            got = redis::cmd("GET")
                .arg(*k)
                .query_async::<Option<String>>(&mut cut)
                .await
                .ok();
            if got.as_ref().is_some_and(|g| g.as_deref() == want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            got.flatten().as_deref(),
            want,
            "{k} through the removed node"
        );
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}
