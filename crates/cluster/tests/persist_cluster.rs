//! A cluster kept in a data directory: every key stays readable, with its
//! latest value, while nodes join and leave, and a reopened directory
//! brings back the data, the membership, the ring and the epoch.

use ringkv_cluster::{Cluster, ClusterConfig, ClusterError, Entry, FsyncPolicy, Placement};

fn config() -> ClusterConfig {
    ClusterConfig {
        stripes: 8,
        placement: Placement::BalancedPartitions { partitions: 1024 },
        fsync: FsyncPolicy::No,
        ..ClusterConfig::default()
    }
}

fn check(cluster: &Cluster, keys: u32, round: &str) {
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
    let stats = cluster.stats();
    assert_eq!(stats.total_keys, keys as usize, "{round}: {stats:?}");
    // The stores' own counts: no copy left behind, none counted twice.
    let stored: usize = stats.nodes.iter().map(|n| n.stored).sum();
    assert_eq!(stored, keys as usize, "{round}: {stats:?}");
}

#[test]
fn every_key_survives_nodes_joining_and_leaving_and_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = 1_000u32;
    let (ring, epoch) = {
        let cluster = Cluster::open(dir.path(), config()).expect("open");
        for id in ["node1", "node2", "node3"] {
            cluster.add_node(id).expect("add node");
        }
        for i in 0..keys {
            cluster
                .put(format!("key{i}"), format!("v1-{i}"))
                .expect("put");
        }
        for i in (0..keys).step_by(3) {
            cluster
                .put(format!("key{i}"), format!("v2-{i}"))
                .expect("overwrite");
        }
        cluster.put("gone", "x").expect("put");
        assert!(cluster.delete("gone").expect("delete"));
        check(&cluster, keys, "writes");

        let report = cluster.add_node("node4").expect("add node4");
        assert!(report.keys_moved > 0, "node4 took keys");
        check(&cluster, keys, "adding node4");
        cluster.remove_node("node2").expect("remove node2");
        check(&cluster, keys, "removing node2");
        // Re-adding an id gets a fresh tree, not node2's old entries.
        cluster.add_node("node2").expect("re-add node2");
        check(&cluster, keys, "re-adding node2");
        cluster.remove_node("node1").expect("remove node1");
        check(&cluster, keys, "removing node1");
        (cluster.ring().to_json(), cluster.epoch())
    };

    let cluster = Cluster::open(dir.path(), config()).expect("reopen");
    assert_eq!(cluster.members(), ["node2", "node3", "node4"]);
    assert_eq!(cluster.epoch(), epoch);
    // The balanced assignment is the saved one, partition by partition.
    assert_eq!(cluster.ring().to_json(), ring);
    check(&cluster, keys, "reopening");
    assert_eq!(cluster.get(b"gone").expect("get"), None, "no resurrection");
    // Versions keep growing across a restart.
    let before = cluster.get_entry(b"key1").unwrap().unwrap().version;
    let after = cluster.put_entry("key1", Entry::string("v1-1")).unwrap();
    assert!(after > before, "version {after} after restart <= {before}");
    cluster.add_node("node5").expect("a change after reopening");
    check(&cluster, keys, "adding node5 after reopening");
}

#[test]
fn expiry_times_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let far = u64::MAX / 2;
    {
        let cluster = Cluster::open(dir.path(), config()).unwrap();
        cluster.add_node("n1").unwrap();
        cluster
            .put_entry("k", Entry::string("v").expiring(Some(far)))
            .unwrap();
    }
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    assert_eq!(
        cluster.get_entry(b"k").unwrap().unwrap().expires_at,
        Some(far)
    );
    // The expiry index is rebuilt: active expiry can find the key.
    let stats = cluster.stats();
    assert_eq!(stats.total_keys, 1);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Cluster::open(dir.path(), config()).unwrap();
    let err = Cluster::open(dir.path(), config()).unwrap_err();
    assert!(matches!(err, ClusterError::Storage { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another ringkv process"),
        "{err}"
    );
    drop(first);
    Cluster::open(dir.path(), config()).expect("open once the first is closed");
}

#[test]
fn the_last_node_leaving_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let cluster = Cluster::open(dir.path(), config()).unwrap();
        cluster.add_node("n1").unwrap();
        cluster.put("k", "v").unwrap();
        cluster.remove_node_forced("n1").unwrap();
        cluster.add_node("n2").unwrap();
    }
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    assert_eq!(cluster.members(), ["n2"]);
    assert_eq!(cluster.get(b"k").unwrap(), None, "dropped with n1");
}

#[test]
fn a_transaction_across_nodes_is_kept_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    {
        let cluster = Cluster::open(dir.path(), config()).unwrap();
        for id in ["n1", "n2", "n3"] {
            cluster.add_node(id).unwrap();
        }
        // The keys span every node: one engine batch still holds them all.
        let owners: std::collections::BTreeSet<_> = keys
            .iter()
            .map(|k| {
                let token = ringkv_ring::key_token(k.as_bytes());
                cluster.ring().owner_of_token(token).unwrap().clone()
            })
            .collect();
        assert!(owners.len() > 1, "{owners:?}");
        cluster
            .transaction(keys.clone(), |txn| {
                for k in &keys {
                    txn.put(k.as_bytes(), Entry::string("x"));
                }
            })
            .unwrap();
    }
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    for k in &keys {
        assert_eq!(
            cluster.get(k.as_bytes()).unwrap().as_deref(),
            Some(&b"x"[..]),
            "{k}"
        );
    }
}
