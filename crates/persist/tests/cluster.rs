//! A cluster whose nodes keep their keys in persistent stores: every key
//! stays readable, with its latest value, while nodes join and leave.

use ringkv_cluster::{Cluster, ClusterConfig};
use ringkv_persist::{Durability, store_factory};

#[test]
fn every_key_survives_nodes_joining_and_leaving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ClusterConfig {
        stripes: 8,
        ..ClusterConfig::default()
    };
    let factory = store_factory(dir.path().to_path_buf(), config.stripes, Durability::NoSync);
    let cluster = Cluster::with_store(config, factory).expect("valid config");
    for id in ["node1", "node2", "node3"] {
        cluster.add_node(id).expect("add node");
    }
    let keys = 1_000u32;
    for i in 0..keys {
        cluster
            .put(format!("key{i}"), format!("v1-{i}"))
            .expect("put");
    }
    let check = |cluster: &Cluster, round: &str| {
        for i in 0..keys {
            let want = if i % 3 == 0 {
                format!("v2-{i}")
            } else {
                format!("v1-{i}")
            };
            let got = cluster.get(format!("key{i}").as_bytes()).expect("get");
            assert_eq!(
                got.as_deref(),
                Some(want.as_bytes()),
                "key{i} after {round}"
            );
        }
    };
    for i in (0..keys).step_by(3) {
        cluster
            .put(format!("key{i}"), format!("v2-{i}"))
            .expect("overwrite");
    }
    check(&cluster, "writes");

    let report = cluster.add_node("node4").expect("add node4");
    assert!(report.keys_moved > 0, "node4 took keys");
    check(&cluster, "adding node4");
    cluster.remove_node("node2").expect("remove node2");
    check(&cluster, "removing node2");
    // Re-adding an id gets a fresh database, not node2's old entries.
    cluster.add_node("node2").expect("re-add node2");
    check(&cluster, "re-adding node2");
    cluster.remove_node("node1").expect("remove node1");
    check(&cluster, "removing node1");

    let stats = cluster.stats();
    assert_eq!(stats.total_keys, keys as usize, "{stats:?}");
    // The stores' own counts: no copy left behind, none counted twice.
    let stored: usize = stats.nodes.iter().map(|n| n.stored).sum();
    assert_eq!(stored, keys as usize, "{stats:?}");
}
