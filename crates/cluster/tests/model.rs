//! Model-based tests: seeded random sequences of put, get, delete, add and
//! remove, checked against a `BTreeMap`, with exact movement checked after
//! every membership change.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{ChangeKind, Cluster, ClusterError, Ring};

mod common;
use common::{assert_placement, assert_reads, config_for, for_each_seed, small_config};

/// The model's keys whose owner differs between two rings.
fn moved_keys<'a>(
    model: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    before: &Ring,
    after: &Ring,
) -> Vec<&'a Vec<u8>> {
    model
        .keys()
        .filter(|k| before.owner(k) != after.owner(k))
        .collect()
}

fn run_sequence(seed: u64, steps: usize) {
    let ctx = format!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let cluster = Cluster::new(config_for(seed)).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut members: Vec<String> = Vec::new();
    let mut next_id = 0;
    let mut changes = 0u64;

    for step in 0..steps {
        let ctx = format!("{ctx} step {step}");
        let key = format!("k{}", rng.random_range(0..40)).into_bytes();
        match rng.random_range(0..100) {
            0..=34 => {
                let value = format!("v{step}").into_bytes();
                match cluster.put(key.clone(), value.clone()) {
                    Ok(()) => {
                        model.insert(key, value);
                    }
                    Err(ClusterError::NoNodes) => assert!(members.is_empty(), "{ctx}"),
                    Err(e) => panic!("{ctx}: put failed: {e}"),
                }
            }
            35..=64 => match cluster.get(&key) {
                Ok(got) => assert_eq!(got.map(|b| b.to_vec()), model.get(&key).cloned(), "{ctx}"),
                Err(ClusterError::NoNodes) => assert!(members.is_empty(), "{ctx}"),
                Err(e) => panic!("{ctx}: get failed: {e}"),
            },
            65..=79 => match cluster.delete(key.clone()) {
                Ok(found) => assert_eq!(found, model.remove(&key).is_some(), "{ctx}"),
                Err(ClusterError::NoNodes) => assert!(members.is_empty(), "{ctx}"),
                Err(e) => panic!("{ctx}: delete failed: {e}"),
            },
            80..=91 => {
                let id = format!("n{next_id}");
                next_id += 1;
                let before = cluster.ring();
                let weight = rng.random_range(1..=3);
                let report = cluster.add_node_weighted(&id, weight).unwrap();
                changes += 1;
                let after = cluster.ring();
                let moved = moved_keys(&model, &before, &after);
                assert_eq!(report.kind, ChangeKind::AddNode);
                assert_eq!(report.keys_moved, moved.len() as u64, "{ctx}: add {id}");
                assert!(
                    moved.iter().all(|k| after.owner(k).unwrap().as_str() == id),
                    "{ctx}: keys may only move to the new node"
                );
                members.push(id);
                assert_placement(&cluster, &model, &ctx);
            }
            _ => {
                if members.is_empty() {
                    continue;
                }
                let id = members.remove(rng.random_range(0..members.len()));
                let before = cluster.ring();
                if members.is_empty() && !model.is_empty() {
                    let err = cluster.remove_node(&id).unwrap_err();
                    assert!(
                        matches!(err, ClusterError::LastNodeHoldsData { .. }),
                        "{ctx}: {err}"
                    );
                    members.push(id);
                    continue;
                }
                let report = cluster.remove_node(&id).unwrap();
                changes += 1;
                let after = cluster.ring();
                let moved = moved_keys(&model, &before, &after);
                assert_eq!(report.keys_moved, moved.len() as u64, "{ctx}: remove {id}");
                assert!(
                    moved
                        .iter()
                        .all(|k| before.owner(k).unwrap().as_str() == id),
                    "{ctx}: only the removed node's keys may move"
                );
                if !members.is_empty() {
                    assert_placement(&cluster, &model, &ctx);
                }
            }
        }
        // Each accepted change takes exactly the next epoch; refused
        // ones (and client operations) take none.
        assert_eq!(cluster.epoch(), changes, "{ctx}");
    }
    if !members.is_empty() {
        assert_reads(&cluster, &model, &ctx);
    }
}

#[test]
fn random_sequences_match_the_model() {
    for_each_seed(2000, |seed| run_sequence(seed, 120));
}

#[test]
fn seed_scenario() {
    let cluster = Cluster::default();
    for id in ["node1", "node2", "node3"] {
        cluster.add_node(id).unwrap();
    }
    for i in 1..=3 {
        cluster.put(format!("key{i}"), format!("value{i}")).unwrap();
    }
    assert_eq!(
        cluster.get(b"key1").unwrap().as_deref(),
        Some(&b"value1"[..])
    );
    cluster.add_node("node4").unwrap();
    assert_eq!(
        cluster.get(b"key1").unwrap().as_deref(),
        Some(&b"value1"[..])
    );
    cluster.remove_node("node2").unwrap();
    assert_eq!(
        cluster.get(b"key2").unwrap().as_deref(),
        Some(&b"value2"[..])
    );
    assert_eq!(cluster.get(b"nope").unwrap(), None);
    assert_eq!(cluster.epoch(), 5);
}

#[test]
fn bad_membership_changes_change_nothing() {
    let cluster = Cluster::new(small_config()).unwrap();
    assert!(matches!(cluster.put("k", "v"), Err(ClusterError::NoNodes)));
    cluster.add_node("a").unwrap();
    cluster.put("k", "v").unwrap();
    let epoch = cluster.epoch();
    let err = cluster.add_node("a").unwrap_err();
    assert!(err.to_string().contains("already in the ring"), "{err}");
    let err = cluster.remove_node("zz").unwrap_err();
    assert!(err.to_string().contains("not in the ring"), "{err}");
    let err = cluster.add_node_weighted("b", 0).unwrap_err();
    assert!(err.to_string().contains("weight 0"), "{err}");
    let err = cluster.remove_node("a").unwrap_err();
    assert_eq!(
        err,
        ClusterError::LastNodeHoldsData {
            node: "a".into(),
            keys: 1
        }
    );
    assert_eq!(cluster.epoch(), epoch);
    assert_eq!(
        cluster.members(),
        vec!["a".into()] as Vec<ringkv_cluster::NodeId>
    );
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));

    let report = cluster.remove_node_forced("a").unwrap();
    assert_eq!(report.keys_dropped, 1);
    assert!(matches!(cluster.get(b"k"), Err(ClusterError::NoNodes)));
    // An empty last node can go without force.
    cluster.add_node("b").unwrap();
    cluster.remove_node("b").unwrap();
}
