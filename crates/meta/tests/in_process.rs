//! The metadata derives the same rings as the in-process cluster
//! (`ringkv-cluster`) for the same sequence of joins, removals and rolled
//! back changes.

mod common;

use proptest::prelude::*;
use ringkv_cluster::{
    Cluster, ClusterConfig, ClusterError, Fault, FaultEffect, FaultPoint, FaultRole, Placement,
};
use ringkv_meta::{Command, MetaState, Phase};

#[derive(Debug, Clone)]
enum Op {
    Add(usize, u32),
    Remove(usize),
    /// An add whose copy fails on its target: the cluster rolls it back.
    AddFailing(usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..common::IDS.len();
    prop_oneof![
        4 => (id.clone(), 0..4u32).prop_map(|(i, w)| Op::Add(i, w)),
        3 => id.clone().prop_map(Op::Remove),
        1 => (id, 1..3u32).prop_map(|(i, w)| Op::AddFailing(i, w)),
    ]
}

fn ok(state: &mut MetaState, command: Command) -> ringkv_meta::Applied {
    let applied = state.apply(&command);
    applied.unwrap_or_else(|e| panic!("{command:?} rejected: {e}"))
}

/// Drives the change in flight to its end, in batches of up to 7 ranges.
fn complete(state: &mut MetaState) {
    while let Some(c) = &state.change {
        let id = c.id;
        let copying: Vec<usize> = (0..c.ranges.len())
            .filter(|&i| c.ranges[i].phase == Phase::Copying)
            .take(7)
            .collect();
        if copying.is_empty() {
            ok(state, Command::FinishChange { change: id });
            break;
        }
        ok(
            state,
            Command::FenceRanges {
                change: id,
                ranges: copying.clone(),
            },
        );
        ok(
            state,
            Command::SwitchRanges {
                change: id,
                ranges: copying,
            },
        );
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let cluster = Cluster::new(ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 256 },
        stripes: 4,
        max_attempts: 1,
        ..ClusterConfig::default()
    })
    .unwrap();
    let mut state = MetaState::new();
    for (step, op) in ops.iter().enumerate() {
        let (result, id, weight) = match *op {
            Op::Add(i, w) => (cluster.add_node_weighted(common::IDS[i], w), i, w),
            Op::AddFailing(i, w) => {
                cluster.inject_fault(Fault {
                    point: FaultPoint::BeforeCopy,
                    role: FaultRole::Target,
                    effect: FaultEffect::Crash,
                    range: None,
                });
                let r = cluster.add_node_weighted(common::IDS[i], w);
                cluster.clear_faults();
                (r, i, w)
            }
            Op::Remove(i) => (cluster.remove_node(common::IDS[i]), i, 0),
        };
        let id = common::IDS[id];
        let adding = !matches!(op, Op::Remove(_));
        // The same request through the metadata.
        let accepted = if !state.is_initialised() && adding {
            let r = state.apply(&Command::Bootstrap {
                placement: common::PLACEMENT,
                node: common::node(id, weight),
            });
            r.is_ok()
        } else if adding {
            let admitted = state.apply(&Command::Join {
                node: common::node(id, weight),
            });
            match admitted {
                Err(_) => false,
                Ok(_) => match state.apply(&Command::BeginChange { node: id.into() }) {
                    Ok(_) => true,
                    Err(_) => {
                        ok(&mut state, Command::Cancel { id: id.into() });
                        false
                    }
                },
            }
        } else {
            // The in-process cluster removes an empty last node without
            // force; the metadata cannot see key counts, so the node process
            // checks that and sends FORCE (see docs/DISTRIBUTED.md).
            let last = state.ring.as_ref().is_some_and(|r| r.len() == 1);
            match state.apply(&Command::Leave {
                id: id.into(),
                force: last,
            }) {
                Err(_) => false,
                Ok(_) => {
                    ok(&mut state, Command::BeginChange { node: id.into() });
                    true
                }
            }
        };
        match &result {
            Ok(_) => {
                prop_assert!(
                    accepted,
                    "step {}: the cluster did {:?}, the metadata refused",
                    step,
                    op
                );
                complete(&mut state);
            }
            Err(ClusterError::RolledBack { .. }) => {
                prop_assert!(accepted, "step {}: {:?}", step, op);
                let change = state
                    .change
                    .as_ref()
                    .expect("a rolled-back change had ranges")
                    .id;
                ok(&mut state, Command::AbortChange { change });
                ok(&mut state, Command::Cancel { id: id.into() });
            }
            Err(e) => {
                prop_assert!(
                    !accepted,
                    "step {}: the cluster refused {:?} ({}), the metadata did not",
                    step,
                    op,
                    e
                );
            }
        }
        let ring = state.ring.as_ref();
        let theirs = cluster.ring();
        match ring {
            None => prop_assert!(theirs.is_empty(), "step {}", step),
            Some(ours) => {
                prop_assert!(
                    ours.same_placement(&theirs),
                    "step {} ({:?}): the rings differ: {} vs {}",
                    step,
                    op,
                    ours.to_json(),
                    theirs.to_json()
                );
            }
        }
        let members: Vec<String> = cluster.members().iter().map(|m| m.to_string()).collect();
        let ours: Vec<String> = state.members.keys().cloned().collect();
        prop_assert_eq!(members, ours, "step {}", step);
        prop_assert!(
            state.epoch >= cluster.epoch(),
            "step {}: epochs only grow faster here",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rings_match_the_in_process_cluster(ops in proptest::collection::vec(op(), 1..30)) {
        run(&ops)?;
    }
}
