//! A forced removal drops only what its down source cannot hand over:
//! another node's outage fails the removal at once instead of turning into
//! a permanent loss, and two down nodes can still be removed in turn.

use std::collections::BTreeMap;

use ringkv_cluster::{Cluster, ClusterConfig, ClusterError, Placement};

mod common;
use common::{assert_placement, assert_reads, fill, with_log};

fn config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 1024 },
        copy_batch: 8,
        ..ClusterConfig::default()
    }
}

fn cluster_of(ids: &[&str], keys: usize) -> (Cluster, BTreeMap<Vec<u8>, Vec<u8>>) {
    let cluster = Cluster::new(config()).unwrap();
    for id in ids {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, keys);
    (cluster, model)
}

/// The reproduction: n3 is down and n1 is healthy. Some of n1's ranges go
/// to n3; dropping them would lose keys n1 can serve. The removal fails at
/// once, naming n3, and changes nothing; once n3 is back it drops nothing.
#[test]
fn a_down_target_fails_a_forced_removal_at_once_and_drops_nothing() {
    let (cluster, model) = cluster_of(&["n1", "n2", "n3"], 3_000);
    let ring = cluster.ring();
    let next = ring.without_node("n1").unwrap();
    assert!(
        model
            .keys()
            .any(|k| ring.owner(k).unwrap().as_str() == "n1"
                && next.owner(k).unwrap().as_str() == "n3"),
        "some of n1's keys go to n3"
    );
    let epoch = cluster.epoch();
    cluster.crash("n3").unwrap();

    let (result, log) = with_log(|| cluster.remove_node_forced("n1"));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ClusterError::NotStarted { op: "remove_node", node, cause }
            if node.as_str() == "n1"
                && matches!(&**cause, ClusterError::NodeDown { node } if node.as_str() == "n3")),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("`n3` is down"), "{msg}");
    assert!(msg.contains("heal it"), "says what to do: {msg}");
    assert!(
        !log.iter().any(|l| l.contains("retrying")),
        "no retries: {log:#?}"
    );
    assert_eq!(cluster.epoch(), epoch, "nothing was published");
    assert_eq!(cluster.members().len(), 3, "n1 is still a member");

    cluster.heal("n3").unwrap();
    assert_reads(&cluster, &model, "after the refused removal");
    let report = cluster.remove_node_forced("n1").unwrap();
    assert_eq!(report.keys_dropped, 0);
    assert_reads(&cluster, &model, "after the forced removal");
    assert_placement(&cluster, &model, "after the forced removal");
}

/// Two members down at once: force-remove one, then the other. The first
/// one's ranges may go to the second (a down source wins: dropped), the
/// second's ranges have a down source (dropped). Exactly the keys the two
/// served are gone; every other key is intact.
#[test]
fn two_down_nodes_can_be_force_removed_one_after_the_other() {
    let (cluster, mut model) = cluster_of(&["n1", "n2", "n3", "n4"], 4_000);
    let ring = cluster.ring();
    let next = ring.without_node("n1").unwrap();
    assert!(
        model
            .keys()
            .any(|k| ring.owner(k).unwrap().as_str() == "n1"
                && next.owner(k).unwrap().as_str() == "n3"),
        "some of n1's keys go to n3, the other down node"
    );
    let lost: Vec<Vec<u8>> = model
        .keys()
        .filter(|k| matches!(ring.owner(k).unwrap().as_str(), "n1" | "n3"))
        .cloned()
        .collect();
    let lost_n1 = lost
        .iter()
        .filter(|k| ring.owner(k).unwrap().as_str() == "n1")
        .count();
    cluster.crash("n1").unwrap();
    cluster.crash("n3").unwrap();

    let first = cluster.remove_node_forced("n1").unwrap();
    assert_eq!(first.keys_dropped, lost_n1 as u64);
    let second = cluster.remove_node_forced("n3").unwrap();
    assert_eq!(second.keys_dropped, (lost.len() - lost_n1) as u64);
    assert_eq!(
        cluster
            .members()
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>(),
        ["n2", "n4"]
    );
    for k in &lost {
        assert_eq!(cluster.get(k).unwrap(), None, "{k:?} was dropped");
        model.remove(k);
    }
    assert_reads(&cluster, &model, "after both removals");
    assert_placement(&cluster, &model, "after both removals");
    assert_eq!(cluster.stats().total_keys, model.len());
}
