//! The metadata group as it runs between processes: three Raft nodes,
//! each with its own data directory and its own peer server on loopback,
//! calling each other over TCP with the cluster secret. They agree; when
//! the leader stops, the other two elect another and go on; the old leader
//! restarts from its directory on the same address and catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use ringkv_meta::raft::{DiskLogStore, MetaRaft, MetaStore, PeerNetwork, RaftService, test_config};
use ringkv_meta::{Command, FIRST_RAFT_ID, NodeSpec, PlacementSpec};
use ringkv_peer::{Limits, PeerServer, Secret, TcpTransport, serve};
use ringkv_persist::{DataDir, FsyncPolicy};
use tokio::net::TcpListener;
use tokio::time::sleep;

const SECRET: &str = "the test cluster's secret";

struct Node {
    raft: MetaRaft,
    store: MetaStore,
    _server: PeerServer,
}

/// Starts Raft node `id` on `dir`, serving its peers at `listener`.
async fn start(id: u64, dir: &DataDir, listener: TcpListener) -> Node {
    let transport = Arc::new(TcpTransport::new(Secret::new(SECRET), Limits::default()));
    let store = MetaStore::open(dir).unwrap();
    let raft = openraft::Raft::new(
        id,
        test_config(),
        PeerNetwork::new(transport, id),
        DiskLogStore::open(dir).unwrap(),
        store.clone(),
    )
    .await
    .unwrap();
    let server = serve(
        listener,
        Secret::new(SECRET),
        RaftService::new(raft.clone()),
        Limits::default(),
    )
    .unwrap();
    Node {
        raft,
        store,
        _server: server,
    }
}

fn spec(id: &str, peer: &str) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        client_addr: "127.0.0.1:1".into(),
        peer_addr: peer.into(),
        weight: 1,
        token: 0,
        key_format: ringkv_ring::KEY_FORMAT,
    }
}

/// The leader that every node in `nodes` sees, waiting up to 10 s.
async fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    for _ in 0..1000 {
        let seen: BTreeSet<Option<u64>> = nodes
            .values()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        if let [Some(l)] = seen.into_iter().collect::<Vec<_>>()[..]
            && nodes.contains_key(&l)
        {
            return l;
        }
        sleep(Duration::from_millis(10)).await;
    }
    panic!("no common leader");
}

/// Waits until every node in `nodes` has `members` members.
async fn converged(nodes: &BTreeMap<u64, Node>, members: usize) {
    for _ in 0..1000 {
        if nodes
            .values()
            .all(|n| n.store.state().members.len() == members)
        {
            let states: BTreeSet<String> = nodes
                .values()
                .map(|n| format!("{:?}", n.store.state()))
                .collect();
            assert_eq!(states.len(), 1, "the nodes agree on the whole state");
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
    panic!("the nodes did not converge on {members} members");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp_agree_survive_their_leader_and_take_it_back() {
    let home = tempfile::tempdir().unwrap();
    let mut dirs = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for id in FIRST_RAFT_ID..FIRST_RAFT_ID + 3 {
        let dir = DataDir::open(home.path().join(format!("n{id}")), FsyncPolicy::No).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, listener.local_addr().unwrap().to_string());
        nodes.insert(id, start(id, &dir, listener).await);
        dirs.insert(id, dir);
    }
    let voters: BTreeMap<u64, BasicNode> = addrs
        .iter()
        .map(|(&id, addr)| (id, BasicNode::new(addr)))
        .collect();
    nodes[&FIRST_RAFT_ID].raft.initialize(voters).await.unwrap();
    let l = leader(&nodes).await;
    nodes[&l]
        .raft
        .client_write(Command::Bootstrap {
            placement: PlacementSpec::BalancedPartitions { partitions: 64 },
            node: spec("a", &addrs[&FIRST_RAFT_ID]),
        })
        .await
        .unwrap();
    for (name, id) in [("b", FIRST_RAFT_ID + 1), ("c", FIRST_RAFT_ID + 2)] {
        nodes[&l]
            .raft
            .client_write(Command::Join {
                node: spec(name, &addrs[&id]),
            })
            .await
            .unwrap();
    }
    converged(&nodes, 3).await;

    // The leader stops (its process would die): the other two elect one
    // of themselves and commit.
    let old = nodes.remove(&l).unwrap();
    old.raft.shutdown().await.unwrap();
    drop(old);
    let l2 = leader(&nodes).await;
    assert_ne!(l2, l);
    nodes[&l2]
        .raft
        .client_write(Command::Join {
            node: spec("d", "127.0.0.1:2"),
        })
        .await
        .unwrap();
    converged(&nodes, 4).await;

    // It restarts on its directory and address, and catches up.
    let listener = TcpListener::bind(&addrs[&l]).await.unwrap();
    nodes.insert(l, start(l, &dirs[&l], listener).await);
    converged(&nodes, 4).await;
    leader(&nodes).await;
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}
