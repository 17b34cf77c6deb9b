//! Concurrent membership changes from several threads are applied in one
//! total order of epochs, each completing its redistribution, and the end
//! state is the one a sequential application gives.

use std::collections::BTreeMap;
use std::sync::Barrier;

use ringkv_cluster::{ChangeKind, Cluster};

mod common;
use common::{assert_placement, assert_reads, config_for, for_each_seed};

fn concurrent_changes(seed: u64) {
    let ctx = format!("seed {seed}");
    let config = config_for(seed);
    let cluster = Cluster::new(config.clone()).unwrap();
    let mut model = BTreeMap::new();
    for id in ["a", "b", "c"] {
        cluster.add_node(id).unwrap();
    }
    for i in 0..(200 + seed % 300) {
        let (k, v) = (format!("k{i}").into_bytes(), format!("v{i}").into_bytes());
        cluster.put(k.clone(), v.clone()).unwrap();
        model.insert(k, v);
    }
    let start_epoch = cluster.epoch();

    // Six threads: four add a node each, two remove one of the initial nodes.
    let changes: Vec<(ChangeKind, String)> = vec![
        (ChangeKind::AddNode, format!("x{seed}")),
        (ChangeKind::AddNode, "y".into()),
        (ChangeKind::AddNode, "z".into()),
        (ChangeKind::AddNode, "w".into()),
        (ChangeKind::RemoveNode, "a".into()),
        (ChangeKind::RemoveNode, "b".into()),
    ];
    let barrier = Barrier::new(changes.len());
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = changes
            .iter()
            .map(|(kind, id)| {
                let (cluster, barrier) = (&cluster, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    match kind {
                        ChangeKind::AddNode => cluster.add_node(id),
                        ChangeKind::RemoveNode => cluster.remove_node(id),
                    }
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // One total order: the epochs are exactly start+1 ..= start+6.
    let mut epochs: Vec<u64> = reports.iter().map(|r| r.epoch).collect();
    epochs.sort_unstable();
    let want: Vec<u64> = (start_epoch + 1..=start_epoch + changes.len() as u64).collect();
    assert_eq!(epochs, want, "{ctx}");
    assert_eq!(cluster.epoch(), start_epoch + changes.len() as u64, "{ctx}");

    // The same state as applying them one by one, in epoch order, and
    // each change moved exactly the keys whose owner changed at its epoch.
    let mut reports = reports;
    reports.sort_by_key(|r| r.epoch);
    let mut ring = ["a", "b", "c"]
        .iter()
        .fold(config.placement.empty_ring().unwrap(), |r, id| {
            r.with_node(*id, 1).unwrap()
        });
    for report in &reports {
        let next = match report.kind {
            ChangeKind::AddNode => ring.with_node(report.node.clone(), 1).unwrap(),
            ChangeKind::RemoveNode => ring.without_node(report.node.as_str()).unwrap(),
        };
        let changed = model
            .keys()
            .filter(|k| ring.owner(k) != next.owner(k))
            .count() as u64;
        assert_eq!(
            report.keys_moved, changed,
            "{ctx}: {:?} {}",
            report.kind, report.node
        );
        ring = next;
    }
    assert!(cluster.ring().same_placement(&ring), "{ctx}");
    assert!(!cluster.stats().rebalancing, "{ctx}");
    assert_reads(&cluster, &model, &ctx);
    assert_placement(&cluster, &model, &ctx);
}

#[test]
fn concurrent_changes_apply_in_one_total_order() {
    for_each_seed(25, concurrent_changes);
}

/// Removing the last node refuses while it holds keys, and never drops a
/// write it acknowledged: a put racing the removal either lands before the
/// count (and the removal is refused) or fails with `NoNodes`.
#[test]
fn removing_the_last_node_never_drops_an_acknowledged_write() {
    use ringkv_cluster::ClusterError;
    for round in 0..10_000 {
        let cluster = Cluster::new(config_for(round)).unwrap();
        cluster.add_node("only").unwrap();
        let (report, last_ack_was_put) = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut last_ack_was_put = false;
                loop {
                    match cluster.put("k", "v") {
                        Ok(()) => last_ack_was_put = true,
                        Err(ClusterError::NoNodes) => return last_ack_was_put,
                        Err(e) => panic!("round {round}: put: {e}"),
                    }
                    match cluster.delete("k") {
                        Ok(_) => last_ack_was_put = false,
                        Err(ClusterError::NoNodes) => return last_ack_was_put,
                        Err(e) => panic!("round {round}: delete: {e}"),
                    }
                }
            });
            let report = loop {
                match cluster.remove_node("only") {
                    Ok(report) => break report,
                    Err(ClusterError::LastNodeHoldsData { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("round {round}: remove: {e}"),
                }
            };
            (report, writer.join().unwrap())
        });
        assert_eq!(report.node.as_str(), "only", "round {round}");
        assert!(cluster.members().is_empty(), "round {round}");
        assert_eq!(cluster.stats().total_keys, 0, "round {round}");
        assert!(
            !last_ack_was_put,
            "round {round}: an acknowledged put was dropped with the last node"
        );
    }
}
