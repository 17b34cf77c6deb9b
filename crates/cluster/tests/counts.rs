//! `stats()` counts each key once, at the node serving it, at every instant
//! of a membership change: copies on targets and stale copies on sources
//! are stored but not counted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ringkv_cluster::{
    Cluster, ClusterConfig, ClusterError, Fault, FaultEffect, FaultPoint, FaultRole, Placement,
};

mod common;
use common::{assert_placement, config_for, fill, for_each_seed};

/// Each node's count equals the keys the ring gives it.
fn assert_node_counts(cluster: &Cluster, model: &BTreeMap<Vec<u8>, Vec<u8>>, ctx: &str) {
    let ring = cluster.ring();
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for k in model.keys() {
        *want.entry(ring.owner(k).unwrap().to_string()).or_default() += 1;
    }
    for n in cluster.stats().nodes {
        assert_eq!(
            n.keys,
            want.get(n.id.as_str()).copied().unwrap_or(0),
            "{ctx}: node {}",
            n.id
        );
    }
}

/// A thread polls `stats()` while changes run (no client writes): every
/// poll counts exactly the keys stored, also from inside the copy.
#[test]
fn total_keys_is_exact_at_every_poll_during_changes() {
    for_each_seed(6, |seed| {
        let ctx = format!("seed {seed}");
        let cluster = Cluster::new(config_for(seed)).unwrap();
        for id in ["n1", "n2", "n3"] {
            cluster.add_node(id).unwrap();
        }
        let model = fill(&cluster, 3_000);
        let n = model.len();
        let wrong: Mutex<Vec<String>> = Mutex::default();
        let (done, polls, during) = (
            AtomicBool::new(false),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let stats = cluster.stats();
                    polls.fetch_add(1, Ordering::Relaxed);
                    if stats.rebalancing {
                        during.fetch_add(1, Ordering::Relaxed);
                    }
                    if stats.total_keys != n {
                        wrong.lock().unwrap().push(format!("{stats:?}"));
                    }
                }
            });
            cluster.add_node("n4").unwrap();
            cluster.remove_node("n2").unwrap();
            cluster.add_node_weighted("n5", 2).unwrap();
            cluster.remove_node("n1").unwrap();
            done.store(true, Ordering::Release);
        });
        let wrong = wrong.into_inner().unwrap();
        assert!(
            wrong.is_empty(),
            "{ctx}: {} of {} polls wrong, first {:?}",
            wrong.len(),
            polls.load(Ordering::Relaxed),
            wrong.first()
        );
        eprintln!(
            "{ctx}: {} polls, {} during a change",
            polls.into_inner(),
            during.into_inner()
        );
        assert_node_counts(&cluster, &model, &ctx);
        assert_placement(&cluster, &model, &ctx);
    });
}

/// While ranges are copied (targets hold copies they do not serve yet),
/// the count is exact: checked from the progress callback.
#[test]
fn total_keys_is_exact_while_ranges_are_copied() {
    let cluster = std::sync::Arc::new(
        Cluster::new(ClusterConfig {
            placement: Placement::BalancedPartitions { partitions: 256 },
            copy_batch: 4,
            ..ClusterConfig::default()
        })
        .unwrap(),
    );
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 2_000);
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let (inner, log) = (cluster.clone(), seen.clone());
    cluster.on_progress(move |p| {
        let total = inner.stats().total_keys;
        log.lock()
            .unwrap()
            .push((p.ranges_done, p.ranges_total, total));
    });
    cluster.add_node("n4").unwrap();
    cluster.remove_node("n1").unwrap();
    // The callback runs on the progress thread, possibly after the change
    // returned, and sees coalesced events: wait for each change's last one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let finished = |seen: &[(usize, usize, usize)]| seen.iter().filter(|e| e.0 == e.1).count();
    while finished(&seen.lock().unwrap()) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(finished(&seen), 2, "{seen:?}");
    for &(range, _, total) in seen.iter() {
        assert_eq!(total, model.len(), "after range {range} was copied");
    }
}

/// Paused after switching some ranges: switched ranges count at their
/// target, the rest at their source, and the sources' copies of switched
/// ranges (not cleaned up yet) are not counted.
#[test]
fn total_keys_is_exact_while_a_change_is_paused() {
    let cluster = Cluster::new(ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 256 },
        ..ClusterConfig::default()
    })
    .unwrap();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, 2_000);
    let ring = cluster.ring();
    let diff = ring.diff(&ring.with_node("n4", 1).unwrap());
    cluster.inject_fault(Fault {
        point: FaultPoint::AfterCopy,
        role: FaultRole::Target,
        effect: FaultEffect::Crash,
        range: Some(diff.moves.len() / 2),
    });
    let err = cluster.add_node("n4").unwrap_err();
    assert!(matches!(err, ClusterError::Paused { .. }), "{err}");
    let stats = cluster.stats();
    assert!(stats.rebalancing);
    let stored: usize = stats.nodes.iter().map(|n| n.stored).sum();
    assert!(stored > model.len(), "switched ranges are on both sides");
    assert_eq!(stats.total_keys, model.len(), "{stats:?}");
    cluster.heal("n4").unwrap();
    cluster.resume().unwrap();
    assert_node_counts(&cluster, &model, "after resume");
    assert_placement(&cluster, &model, "after resume");
}
