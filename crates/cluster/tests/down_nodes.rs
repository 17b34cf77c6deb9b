//! A node that is down: a change that needs it fails at once, a forced
//! removal removes it anyway (reporting the keys it drops), cleanups against
//! it are recorded without retries, and introspection still sees its data.

use std::collections::BTreeMap;

use ringkv_cluster::{
    Cluster, ClusterConfig, ClusterError, Fault, FaultEffect, FaultPoint, FaultRole, Placement,
};

mod common;
use common::{assert_placement, assert_reads, fill, with_log};

fn config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 1024 },
        copy_batch: 8,
        ..ClusterConfig::default()
    }
}

fn three_nodes(keys: usize) -> (Cluster, BTreeMap<Vec<u8>, Vec<u8>>) {
    let cluster = Cluster::new(config()).unwrap();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    let model = fill(&cluster, keys);
    (cluster, model)
}

/// Whether `cause` says that node `id` is down.
fn is_down(cause: &ClusterError, id: &str) -> bool {
    matches!(cause, ClusterError::NodeDown { node } if node.as_str() == id)
}

/// Lines of a captured log that report a retry.
fn retries(log: &[String]) -> Vec<&String> {
    log.iter().filter(|l| l.contains("retrying")).collect()
}

#[test]
fn a_change_that_needs_a_down_node_fails_at_once_and_names_it() {
    let (cluster, model) = three_nodes(3_000);
    let epoch = cluster.epoch();
    cluster.crash("n2").unwrap();

    // A joining node takes partitions from every node, n2 included.
    let (result, log) = with_log(|| cluster.add_node("n4"));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ClusterError::NotStarted { op: "add_node", node, cause }
            if node.as_str() == "n4" && is_down(cause, "n2")),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("`n2` is down"), "{msg}");
    assert!(msg.contains("remove_node_forced"), "says what to do: {msg}");
    assert!(retries(&log).is_empty(), "no retries: {log:#?}");
    assert_eq!(cluster.epoch(), epoch, "nothing was published");

    let (result, log) = with_log(|| cluster.remove_node("n2"));
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ClusterError::NotStarted { op: "remove_node", cause, .. } if is_down(cause, "n2")),
        "{err}"
    );
    assert!(retries(&log).is_empty(), "no retries: {log:#?}");
    assert_eq!(cluster.epoch(), epoch);

    // The other nodes keep working.
    let ring = cluster.ring();
    for (k, v) in &model {
        let on_n2 = ring.owner(k).unwrap().as_str() == "n2";
        match cluster.get(k) {
            Ok(got) => assert_eq!(got.as_deref(), Some(&v[..])),
            Err(ClusterError::Unavailable { node }) => {
                assert!(on_n2 && node.as_str() == "n2")
            }
            Err(e) => panic!("{e}"),
        }
        if !on_n2 {
            cluster.put(k.clone(), v.clone()).unwrap();
        }
    }

    // Healed, the same change goes through.
    cluster.heal("n2").unwrap();
    cluster.add_node("n4").unwrap();
    assert_reads(&cluster, &model, "after heal");
    assert_placement(&cluster, &model, "after heal");
}

#[test]
fn a_forced_removal_removes_a_down_node_and_reports_what_it_dropped() {
    let (cluster, mut model) = three_nodes(3_000);
    let ring = cluster.ring();
    let lost: Vec<Vec<u8>> = model
        .keys()
        .filter(|k| ring.owner(k).unwrap().as_str() == "n2")
        .cloned()
        .collect();
    assert!(!lost.is_empty());
    cluster.crash("n2").unwrap();

    let (report, log) = with_log(|| cluster.remove_node_forced("n2"));
    let report = report.unwrap();
    assert_eq!(report.keys_dropped, lost.len() as u64);
    assert_eq!(report.keys_moved, 0, "nothing could be copied");
    assert!(retries(&log).is_empty(), "no retries: {log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains("they are gone")),
        "the loss is logged: {log:#?}"
    );
    assert_eq!(
        cluster
            .members()
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>(),
        ["n1", "n3"]
    );
    assert!(!cluster.stats().rebalancing);

    // The dropped keys are gone for good; every other key is intact, and
    // the ranges n2 served are writable on their new owners.
    for k in &lost {
        assert_eq!(cluster.get(k).unwrap(), None);
        model.remove(k);
    }
    assert_reads(&cluster, &model, "after the forced removal");
    assert_placement(&cluster, &model, "after the forced removal");
    for k in &lost {
        cluster.put(k.clone(), "again").unwrap();
        model.insert(k.clone(), b"again".to_vec());
    }
    assert_reads(&cluster, &model, "after rewriting");
    cluster.add_node("n4").unwrap();
    assert_placement(&cluster, &model, "after another change");
}

#[test]
fn a_forced_removal_of_an_up_node_drops_nothing() {
    let (cluster, model) = three_nodes(1_000);
    let report = cluster.remove_node_forced("n2").unwrap();
    assert_eq!(report.keys_dropped, 0);
    assert!(report.keys_moved > 0);
    assert_reads(&cluster, &model, "after");
    assert_placement(&cluster, &model, "after");
}

/// The leaving node of a forced removal crashes half way through the copy:
/// the removal still completes, and every key the node still served when it
/// went down (all of its ranges: none was switched yet) is reported dropped.
#[test]
fn the_leaving_node_crashing_during_a_forced_removal_drops_what_it_served() {
    let (cluster, mut model) = three_nodes(3_000);
    let ring = cluster.ring();
    let diff = ring.diff(&ring.without_node("n2").unwrap());
    cluster.inject_fault(Fault {
        point: FaultPoint::BeforeCopy,
        role: FaultRole::Source,
        effect: FaultEffect::Crash,
        range: Some(diff.moves.len() / 2),
    });
    let lost: Vec<Vec<u8>> = model
        .keys()
        .filter(|k| ring.owner(k).unwrap().as_str() == "n2")
        .cloned()
        .collect();
    let report = cluster.remove_node_forced("n2").unwrap();
    assert_eq!(report.keys_dropped, lost.len() as u64);
    assert_eq!(report.keys_moved, 0, "copied but never switched");
    for k in &lost {
        model.remove(k);
    }
    assert_reads(&cluster, &model, "after");
    assert_placement(&cluster, &model, "after");
}

/// The leaving node of a forced removal crashes after the commit point: the
/// ranges switched before the crash moved, the rest are dropped, and the
/// removal completes instead of pausing.
#[test]
fn the_leaving_node_crashing_while_switching_a_forced_removal_drops_the_rest() {
    let (cluster, mut model) = three_nodes(3_000);
    let ring = cluster.ring();
    let diff = ring.diff(&ring.without_node("n2").unwrap());
    let crash_at = diff.moves.len() / 2;
    cluster.inject_fault(Fault {
        point: FaultPoint::AfterCopy,
        role: FaultRole::Source,
        effect: FaultEffect::Crash,
        range: Some(crash_at),
    });
    let report = cluster.remove_node_forced("n2").unwrap();
    let lost: Vec<Vec<u8>> = model
        .keys()
        .filter(|k| {
            let t = ringkv_ring::key_token(k);
            diff.moves[crash_at..].iter().any(|m| m.range.contains(t))
        })
        .cloned()
        .collect();
    let on_n2 = model
        .keys()
        .filter(|k| ring.owner(k).unwrap().as_str() == "n2")
        .count();
    assert!(!lost.is_empty() && lost.len() < on_n2);
    assert_eq!(report.keys_dropped, lost.len() as u64);
    assert_eq!(report.keys_moved as usize, on_n2 - lost.len());
    for k in &lost {
        model.remove(k);
    }
    assert!(!cluster.stats().rebalancing);
    assert_reads(&cluster, &model, "after");
    assert_placement(&cluster, &model, "after");
}

/// A crash of a cleanup's source is recorded for every range of that node
/// at once: no attempt is retried, however many ranges it has.
#[test]
fn a_down_cleanup_source_is_recorded_without_retries() {
    let (cluster, model) = three_nodes(5_000);
    let before = cluster.ring();
    let diff = before.diff(&before.with_node("n4", 1).unwrap());
    let victim = diff.moves[0].from.clone();
    let victim_ranges = diff.moves.iter().filter(|m| m.from == victim).count();
    assert!(victim_ranges > 50, "many ranges: {victim_ranges}");
    cluster.inject_fault(Fault {
        point: FaultPoint::DuringCleanup,
        role: FaultRole::Source,
        effect: FaultEffect::Crash,
        range: Some(0),
    });
    let (report, log) = with_log(|| cluster.add_node("n4"));
    let report = report.unwrap();
    assert!(retries(&log).is_empty(), "{} retries", retries(&log).len());
    assert_eq!(report.pending_cleanups, victim_ranges);
    assert_eq!(cluster.stats().pending_cleanups, victim_ranges);
    // The next change does not try them either while the node is down.
    let (_, log) = with_log(|| cluster.repair());
    assert!(retries(&log).is_empty());
    assert_eq!(
        cluster.stats().total_keys,
        model.len(),
        "stale copies are not counted"
    );

    cluster.heal(victim.as_str()).unwrap();
    assert_eq!(cluster.repair(), 0);
    assert_reads(&cluster, &model, "after repair");
    assert_placement(&cluster, &model, "after repair");
}

#[test]
fn locate_sees_copies_on_a_down_node_and_spends_no_injected_failure() {
    let (cluster, model) = three_nodes(300);
    let ring = cluster.ring();
    let key = model
        .keys()
        .find(|k| ring.owner(k).unwrap().as_str() == "n2")
        .unwrap()
        .clone();
    cluster.crash("n2").unwrap();
    assert_eq!(
        cluster.locate(&key),
        vec![(ring.owner(&key).unwrap().clone(), true)]
    );
    cluster.heal("n2").unwrap();

    // Leave n4 with 5 armed transient failures: a fault on the target at
    // cleanup fires but is never spent by the change (cleanup touches
    // sources only).
    cluster.inject_fault(Fault {
        point: FaultPoint::DuringCleanup,
        role: FaultRole::Target,
        effect: FaultEffect::FailCalls(5),
        range: Some(0),
    });
    cluster.add_node("n4").unwrap();
    let ring = cluster.ring();
    let on_n4: Vec<&Vec<u8>> = model
        .keys()
        .filter(|k| ring.owner(k).unwrap().as_str() == "n4")
        .collect();
    assert!(on_n4.len() > 5);
    // Client calls and locate neither fail because of the budget nor
    // spend it.
    for k in &on_n4 {
        assert_eq!(cluster.locate(k).len(), 1);
        assert_eq!(cluster.get(k).unwrap().as_deref(), Some(&model[*k][..]));
        cluster.put((*k).clone(), model[*k].clone()).unwrap();
    }
    // The budget is still there for the next change's steps, which ride
    // it out with retries (5 > 3 attempts of one step: rolled back).
    let err = cluster.remove_node("n4").unwrap_err();
    assert!(
        matches!(&err, ClusterError::RolledBack { cause, .. }
            if matches!(**cause, ClusterError::Store { .. })),
        "{err}"
    );
    cluster.heal("n4").unwrap();
    cluster.remove_node("n4").unwrap();
    assert_placement(&cluster, &model, "after");
}

#[test]
fn repeating_a_paused_change_is_refused_without_resuming_it() {
    let (cluster, model) = three_nodes(1_000);
    let epoch = cluster.epoch();
    cluster.inject_fault(Fault {
        point: FaultPoint::AfterCopy,
        role: FaultRole::Target,
        effect: FaultEffect::Crash,
        range: Some(1),
    });
    let err = cluster.add_node("n4").unwrap_err();
    assert!(matches!(err, ClusterError::Paused { .. }), "{err}");
    cluster.heal("n4").unwrap();

    // The same change again: refused, still paused.
    let err = cluster.add_node("n4").unwrap_err();
    assert!(
        matches!(&err, ClusterError::AlreadyPaused { op: "add_node", node } if node.as_str() == "n4"),
        "{err}"
    );
    assert!(err.to_string().contains("call resume"), "{err}");
    assert!(cluster.stats().rebalancing, "still paused");
    // A request the ring refuses: refused before resuming too.
    let err = cluster.add_node("n1").unwrap_err();
    assert!(matches!(err, ClusterError::Ring(_)), "{err}");
    assert!(cluster.stats().rebalancing, "still paused");
    assert_eq!(cluster.epoch(), epoch + 1);

    let report = cluster.resume().unwrap().expect("paused");
    assert_eq!(report.node.as_str(), "n4");
    assert!(!cluster.stats().rebalancing);
    assert_reads(&cluster, &model, "after resume");
    assert_placement(&cluster, &model, "after resume");
}
