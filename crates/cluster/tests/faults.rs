//! Fault injection at every point of a transfer, for both sides, crashing
//! or failing transiently, under seeded schedules: no key is lost, reads
//! never return a wrong value, and the cluster converges once the node is
//! back.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{
    Cluster, ClusterError, Fault, FaultEffect, FaultPoint, FaultRole, NodeId, RebalanceReport,
};

mod common;
use common::{assert_placement, assert_reads, config_for, for_each_seed};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Add,
    Remove,
}

struct Setup {
    cluster: Cluster,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn setup(seed: u64, rng: &mut SmallRng) -> Setup {
    let cluster = Cluster::new(config_for(seed)).unwrap();
    for id in ["n1", "n2", "n3", "n4"] {
        cluster.add_node(id).unwrap();
    }
    let mut model = BTreeMap::new();
    for i in 0..rng.random_range(50..400) {
        let (k, v) = (format!("key{i}").into_bytes(), format!("v{i}").into_bytes());
        cluster.put(k.clone(), v.clone()).unwrap();
        model.insert(k, v);
    }
    Setup { cluster, model }
}

fn apply(cluster: &Cluster, op: Op) -> Result<RebalanceReport, ClusterError> {
    match op {
        Op::Add => cluster.add_node("n5"),
        Op::Remove => cluster.remove_node("n2"),
    }
}

/// While a node is down, every read returns the right value or says that
/// the crashed node is unavailable, never a wrong value.
fn assert_reads_while_down(s: &Setup, down: &NodeId, ctx: &str) {
    for (k, v) in &s.model {
        match s.cluster.get(k) {
            Ok(got) => assert_eq!(got.as_deref(), Some(&v[..]), "{ctx}: key {k:?}"),
            Err(ClusterError::Unavailable { node }) => assert_eq!(&node, down, "{ctx}"),
            Err(e) => panic!("{ctx}: unexpected error {e}"),
        }
    }
}

fn run(seed: u64, op: Op, point: FaultPoint, role: FaultRole, effect: FaultEffect) {
    let ctx = format!("seed {seed} {op:?} {point:?} {role:?} {effect:?}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut s = setup(seed, &mut rng);
    let epoch = s.cluster.epoch();
    let members = s.cluster.members();

    // Which range of the plan the fault hits, and who that is.
    let before = s.cluster.ring();
    let after = match op {
        Op::Add => before.with_node("n5", 1).unwrap(),
        Op::Remove => before.without_node("n2").unwrap(),
    };
    let diff = before.diff(&after);
    let range = rng.random_range(0..diff.moves.len());
    let victim = match role {
        FaultRole::Source => diff.moves[range].from.clone(),
        FaultRole::Target => diff.moves[range].to.clone(),
    };
    s.cluster.inject_fault(Fault {
        point,
        role,
        effect,
        range: Some(range),
    });

    let result = apply(&s.cluster, op);
    let mut final_epoch = epoch + 1;
    match (effect, point) {
        (FaultEffect::FailCalls(_), _) => {
            let report =
                result.unwrap_or_else(|e| panic!("{ctx}: a transient fault is retried: {e}"));
            assert_eq!(report.pending_cleanups, 0, "{ctx}");
            // A fault on a node the step does not touch (the target during
            // cleanup, the leaving node) is still armed: disarm it.
            s.cluster.clear_faults();
            if s.cluster.members().contains(&victim) {
                s.cluster.heal(victim.as_str()).unwrap();
            }
        }
        (FaultEffect::Crash, FaultPoint::BeforeCopy | FaultPoint::MidCopy) => {
            // The victim is a source or target of the plan, and the commit
            // point is entered only with every node of the plan up: a crash
            // anywhere in the copy rolls back, whether or not the copy of
            // this range still needed the node after the crash.
            assert!(
                diff.moves
                    .iter()
                    .any(|m| m.from == victim || m.to == victim),
                "{ctx}"
            );
            let err = result.expect_err(&ctx);
            assert!(
                matches!(&err, ClusterError::RolledBack { cause, .. }
                    if **cause == ClusterError::Unavailable { node: victim.clone() }),
                "{ctx}: {err}"
            );
            // The abandoned ring had epoch + 1; the restored one gets + 2.
            assert_eq!(s.cluster.epoch(), epoch + 2, "{ctx}: rolled back");
            assert!(
                s.cluster.ring().same_placement(&before),
                "{ctx}: rolled back"
            );
            assert_eq!(s.cluster.members(), members, "{ctx}: rolled back");
            assert_reads_while_down(&s, &victim, &ctx);
            // Writes to healthy nodes keep working.
            write_some(&mut s, &victim, &ctx);
            let joined = op == Op::Add && victim.as_str() == "n5";
            if !joined {
                s.cluster.heal(victim.as_str()).unwrap();
            }
            s.cluster.repair();
            assert_reads(&s.cluster, &s.model, &ctx);
            assert_placement(&s.cluster, &s.model, &format!("{ctx} after rollback"));
            apply(&s.cluster, op).unwrap_or_else(|e| panic!("{ctx}: retry after heal: {e}"));
            final_epoch = epoch + 3; // abandoned, restored, retried
            assert!(
                s.cluster.ring().same_placement(&after),
                "{ctx}: the retry lands"
            );
        }
        (FaultEffect::Crash, FaultPoint::AfterCopy) => {
            check_paused(&mut s, result.expect_err(&ctx), op, &victim, epoch, &ctx);
        }
        (FaultEffect::Crash, FaultPoint::DuringCleanup) => {
            let report = result
                .unwrap_or_else(|e| panic!("{ctx}: cleanup faults do not fail the change: {e}"));
            let source_stays = op == Op::Add || victim.as_str() != "n2";
            if role == FaultRole::Source && source_stays {
                assert!(report.pending_cleanups > 0, "{ctx}");
                assert_eq!(
                    s.cluster.stats().pending_cleanups,
                    report.pending_cleanups,
                    "{ctx}"
                );
            }
            assert_reads_while_down(&s, &victim, &ctx);
            write_some(&mut s, &victim, &ctx);
            if source_stays {
                s.cluster.heal(victim.as_str()).unwrap();
            } else {
                // The leaving node is dropped whole, so it has no cleanup
                // for the fault to fire in.
                s.cluster.clear_faults();
            }
            assert_eq!(s.cluster.repair(), 0, "{ctx}: repair after heal");
            assert_eq!(s.cluster.stats().pending_cleanups, 0, "{ctx}");
        }
        (FaultEffect::AbortProcess, _) => {
            unreachable!("kills the test process: tested by restarts")
        }
    }
    assert_eq!(s.cluster.epoch(), final_epoch, "{ctx}");
    assert_reads(&s.cluster, &s.model, &ctx);
    assert_placement(&s.cluster, &s.model, &ctx);
}

/// A change paused past its commit point: the new ring is in force, reads
/// are right or report the crashed node, writes to other nodes work, no
/// other change can overtake it, and healing and resuming completes it.
fn check_paused(s: &mut Setup, err: ClusterError, op: Op, victim: &NodeId, epoch: u64, ctx: &str) {
    let victim = victim.clone();
    assert!(matches!(err, ClusterError::Paused { .. }), "{ctx}: {err}");
    assert_eq!(
        s.cluster.epoch(),
        epoch + 1,
        "{ctx}: the new ring is in force"
    );
    let stats = s.cluster.stats();
    assert!(stats.rebalancing, "{ctx}");
    if op == Op::Remove {
        // The leaving node still serves its unswitched ranges.
        let leaving = stats.nodes.iter().find(|n| n.id.as_str() == "n2");
        assert_eq!(leaving.map(|n| n.weight), Some(0), "{ctx}: {stats:?}");
    }
    assert_reads_while_down(s, &victim, ctx);
    write_some(s, &victim, ctx);
    // Another change cannot overtake the paused one.
    let err = s.cluster.add_node("n9").unwrap_err();
    assert!(
        matches!(&err, ClusterError::NotStarted { op: "add_node", node, cause }
            if node.as_str() == "n9" && matches!(**cause, ClusterError::Paused { .. })),
        "{ctx}: {err}"
    );
    assert!(
        !s.cluster.members().iter().any(|m| m.as_str() == "n9"),
        "{ctx}"
    );
    s.cluster.heal(victim.as_str()).unwrap();
    let report = s
        .cluster
        .resume()
        .unwrap_or_else(|e| panic!("{ctx}: resume: {e}"));
    assert!(report.is_some(), "{ctx}: something was paused");
    assert!(!s.cluster.stats().rebalancing, "{ctx}");
}

/// Puts and deletes keys while a node is down; operations on the down node
/// fail without effect, the rest are applied and recorded in the model.
fn write_some(s: &mut Setup, down: &NodeId, ctx: &str) {
    for i in 0..60 {
        let key = format!("key{}", i * 7).into_bytes();
        let result = if i % 3 == 0 {
            s.cluster.delete(key.clone()).map(|_| None)
        } else {
            let v = format!("w{i}").into_bytes();
            s.cluster.put(key.clone(), v.clone()).map(|()| Some(v))
        };
        match result {
            Ok(Some(v)) => {
                s.model.insert(key, v);
            }
            Ok(None) => {
                s.model.remove(&key);
            }
            Err(ClusterError::Unavailable { node }) => assert_eq!(&node, down, "{ctx}"),
            Err(e) => panic!("{ctx}: write failed: {e}"),
        }
    }
}

fn every_point(op: Op) {
    for_each_seed(12, |seed| {
        for point in FaultPoint::ALL {
            for role in [FaultRole::Source, FaultRole::Target] {
                for effect in [
                    FaultEffect::Crash,
                    FaultEffect::FailCalls(1),
                    FaultEffect::FailCalls(2),
                ] {
                    run(seed, op, point, role, effect);
                }
            }
        }
    });
}

#[test]
fn faults_during_add_node() {
    every_point(Op::Add);
}

#[test]
fn faults_during_remove_node() {
    every_point(Op::Remove);
}

/// A forced removal of `n2` with a fault armed: it never rolls back or
/// pauses. A crash drops exactly the ranges that still needed the crashed
/// node when it went down (every range with it as source or target, but
/// those already switched by a crash at `AfterCopy`); transient faults and
/// cleanup faults drop nothing.
fn run_forced(seed: u64, point: FaultPoint, role: FaultRole, effect: FaultEffect) {
    let ctx = format!("seed {seed} forced {point:?} {role:?} {effect:?}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut s = setup(seed, &mut rng);
    let epoch = s.cluster.epoch();
    let before = s.cluster.ring();
    let after = before.without_node("n2").unwrap();
    let diff = before.diff(&after);
    let range = rng.random_range(0..diff.moves.len());
    let victim = match role {
        FaultRole::Source => diff.moves[range].from.clone(),
        FaultRole::Target => diff.moves[range].to.clone(),
    };
    s.cluster.inject_fault(Fault {
        point,
        role,
        effect,
        range: Some(range),
    });
    let result = s.cluster.remove_node_forced("n2");
    // A target that crashes before its range is switched is never dropped
    // into (its outage must not lose keys the source can serve): the
    // removal rolls back or pauses, and completes once the target is back.
    let target_crash = effect == FaultEffect::Crash
        && role == FaultRole::Target
        && point != FaultPoint::DuringCleanup;
    let (report, epochs) = if target_crash {
        s.cluster.clear_faults();
        s.cluster.heal(victim.as_str()).unwrap();
        match result {
            Err(ClusterError::RolledBack { .. }) => (
                s.cluster
                    .remove_node_forced("n2")
                    .unwrap_or_else(|e| panic!("{ctx}: the retry completes: {e}")),
                3, // the abandoned ring, the restored one, the retry's
            ),
            Err(ClusterError::Paused { .. }) => (
                s.cluster
                    .resume()
                    .unwrap_or_else(|e| panic!("{ctx}: resume completes: {e}"))
                    .expect("a change was paused"),
                1,
            ),
            other => panic!("{ctx}: a down target stops the removal: {other:?}"),
        }
    } else {
        let report = result.unwrap_or_else(|e| panic!("{ctx}: a forced removal completes: {e}"));
        (report, 1)
    };
    let first_dropped = match (effect, point, role) {
        (FaultEffect::Crash, FaultPoint::BeforeCopy | FaultPoint::MidCopy, FaultRole::Source) => {
            Some(0)
        }
        (FaultEffect::Crash, FaultPoint::AfterCopy, FaultRole::Source) => Some(range),
        _ => None,
    };
    let dropped: Vec<Vec<u8>> = match first_dropped {
        None => Vec::new(),
        Some(first) => s
            .model
            .keys()
            .filter(|k| {
                let t = ringkv_ring::key_token(k);
                diff.moves[first..]
                    .iter()
                    .any(|m| m.from == victim && m.range.contains(t))
            })
            .cloned()
            .collect(),
    };
    assert_eq!(report.keys_dropped, dropped.len() as u64, "{ctx}");
    assert_eq!(s.cluster.epoch(), epoch + epochs, "{ctx}");
    assert!(s.cluster.ring().same_placement(&after), "{ctx}");
    assert!(!s.cluster.stats().rebalancing, "{ctx}");
    for k in &dropped {
        s.model.remove(k);
    }
    assert_eq!(s.cluster.stats().total_keys, s.model.len(), "{ctx}");
    s.cluster.clear_faults();
    if victim.as_str() != "n2" {
        s.cluster.heal(victim.as_str()).unwrap();
    }
    assert_reads(&s.cluster, &s.model, &ctx);
    assert_placement(&s.cluster, &s.model, &ctx);
}

#[test]
fn faults_during_forced_removal() {
    for_each_seed(12, |seed| {
        for point in FaultPoint::ALL {
            for role in [FaultRole::Source, FaultRole::Target] {
                for effect in [FaultEffect::Crash, FaultEffect::FailCalls(2)] {
                    run_forced(seed, point, role, effect);
                }
            }
        }
    });
}

#[test]
fn a_fault_that_outlasts_the_retries_rolls_back_and_reports_why() {
    let mut rng = SmallRng::seed_from_u64(7);
    let s = setup(7, &mut rng);
    s.cluster.inject_fault(Fault {
        point: FaultPoint::MidCopy,
        role: FaultRole::Source,
        effect: FaultEffect::FailCalls(100),
        range: None,
    });
    let err = s.cluster.add_node("n5").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("add_node(n5) was rolled back"), "{msg}");
    assert!(msg.contains("injected fault"), "{msg}");
    assert!(!s.cluster.members().iter().any(|m| m.as_str() == "n5"));
    for id in ["n1", "n2", "n3", "n4"] {
        s.cluster.heal(id).unwrap();
    }
    assert_reads(&s.cluster, &s.model, "after heal");
    assert_placement(&s.cluster, &s.model, "after heal");
}
