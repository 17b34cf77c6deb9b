//! Executes the operations of a script against a cluster, including the
//! failure operations (`crash`, `heal`, `fail`, `resume`).
//!
//! `fail(id, point)` names a node, while the cluster arms a fault for a
//! role (source or target) at a range of a change's plan
//! ([`ringkv_cluster::Fault`]). The executor bridges the two: a `fail` is
//! kept pending until a membership change whose transfers involve its node
//! is requested; that change's plan is predicted from the ring (the same
//! [`Ring::diff`](ringkv_cluster::Ring::diff) the cluster computes), and the
//! fault is armed for the first range the node sends or receives, in the
//! role it plays there. Faults left unfired when the change ends (it rolled
//! back before reaching them) are disarmed: a `fail` affects one change.

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_cluster::{
    Cluster, ClusterError, Fault, FaultEffect, FaultPoint, FaultRole, RebalanceReport, Ring,
};

use crate::script::{FailPoint, Op, escape};

/// A `fail(id, point, times=N)` waiting for a change that involves `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingFail {
    id: String,
    point: FailPoint,
    times: Option<u32>,
}

/// Runs operations against one cluster, from one thread or many.
pub struct Executor {
    cluster: Cluster,
    /// Failures not yet armed. Held for the whole of a membership change,
    /// so that predicting its plan, arming and disarming see no other
    /// change in between (the cluster runs one change at a time anyway).
    pending: Mutex<Vec<PendingFail>>,
}

/// A membership change, for predicting its plan.
enum Change<'a> {
    Add(&'a str, u32),
    Remove(&'a str),
}

impl Executor {
    /// An executor over `cluster`, with no failure pending.
    pub fn new(cluster: Cluster) -> Self {
        Executor {
            cluster,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The cluster the operations run against.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Executes one operation; returns the line it prints, if any.
    pub fn execute(&self, op: &Op) -> Result<Option<String>, ClusterError> {
        let cluster = &self.cluster;
        Ok(match op {
            Op::AddNode { id, weight } => {
                let weight = weight.unwrap_or(1);
                self.change(Change::Add(id, weight), || {
                    cluster.add_node_weighted(id, weight)
                })?;
                None
            }
            Op::RemoveNode { id, force: false } => {
                self.change(Change::Remove(id), || cluster.remove_node(id))?;
                None
            }
            Op::RemoveNode { id, force: true } => {
                let report = self.change(Change::Remove(id), || cluster.remove_node_forced(id))?;
                Some(format!(
                    "{{\"removed\":{},\"keys_dropped\":{}}}",
                    serde_json::Value::from(id.as_str()),
                    report.keys_dropped
                ))
            }
            Op::Put { key, value } => {
                cluster.put(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value))?;
                None
            }
            Op::Get { key } => Some(match cluster.get(key)? {
                Some(value) => escape(&value),
                None => "None".to_string(),
            }),
            Op::Delete { key } => {
                cluster.delete(Bytes::copy_from_slice(key))?;
                None
            }
            Op::Stats => Some(stats_json(cluster)),
            Op::Crash { id } => {
                cluster.crash(id)?;
                tracing::warn!(node = %id, "node crashed");
                None
            }
            Op::Heal { id } => {
                cluster.heal(id)?;
                tracing::info!(node = %id, "node healed");
                None
            }
            Op::Fail { id, point, times } => {
                // Not checked against the members: the node may be the one
                // the next `add_node` adds.
                self.pending.lock().push(PendingFail {
                    id: id.clone(),
                    point: *point,
                    times: *times,
                });
                None
            }
            Op::Resume => {
                let _pending = self.pending.lock();
                cluster.resume()?;
                None
            }
        })
    }

    /// Runs a membership change with the pending failures that concern it
    /// armed, and disarms what did not fire.
    fn change(
        &self,
        change: Change<'_>,
        run: impl FnOnce() -> Result<RebalanceReport, ClusterError>,
    ) -> Result<RebalanceReport, ClusterError> {
        let mut pending = self.pending.lock();
        // A paused change is completed first by the next change, with its
        // own plan: arm nothing until it is done.
        let armed = !pending.is_empty()
            && !self.cluster.stats().rebalancing
            && arm(&self.cluster, &mut pending, &change) > 0;
        let result = run();
        if armed {
            self.cluster.clear_faults();
        }
        result
    }
}

/// Arms the pending failures whose node takes part in `change`'s
/// transfers; returns how many were armed. The others stay pending.
fn arm(cluster: &Cluster, pending: &mut Vec<PendingFail>, change: &Change<'_>) -> usize {
    let ring: std::sync::Arc<Ring> = cluster.ring();
    let next = match *change {
        Change::Add(id, weight) => ring.with_node(id, weight),
        Change::Remove(id) => ring.without_node(id),
    };
    // If the ring refuses the change, so will the cluster: nothing to arm.
    let Ok(next) = next else { return 0 };
    let diff = ring.diff(&next);
    let leaving = match *change {
        Change::Remove(id) => Some(id),
        Change::Add(..) => None,
    };
    let mut armed = 0;
    pending.retain(|fail| {
        let found = diff.moves.iter().enumerate().find_map(|(i, m)| {
            // A leaving node is dropped whole, never cleaned up range by range.
            let cleaned = !(fail.point == FailPoint::Cleanup && leaving == Some(m.from.as_str()));
            if m.from == fail.id.as_str() && cleaned {
                Some((i, FaultRole::Source))
            } else if m.to == fail.id.as_str() {
                Some((i, FaultRole::Target))
            } else {
                None
            }
        });
        let Some((range, role)) = found else {
            return true;
        };
        let fault = Fault {
            point: fault_point(fail.point),
            role,
            effect: match fail.times {
                None => FaultEffect::Crash,
                Some(n) => FaultEffect::FailCalls(n),
            },
            range: Some(range),
        };
        tracing::debug!(node = %fail.id, ?fault, "failure armed");
        cluster.inject_fault(fault);
        armed += 1;
        false
    });
    armed
}

/// The cluster's name for a script's failure point.
fn fault_point(point: FailPoint) -> FaultPoint {
    match point {
        FailPoint::BeforeCopy => FaultPoint::BeforeCopy,
        FailPoint::MidCopy => FaultPoint::MidCopy,
        FailPoint::BeforeSwitch => FaultPoint::AfterCopy,
        FailPoint::Cleanup => FaultPoint::DuringCleanup,
    }
}

/// `{"epoch": E, "keys": TOTAL, "nodes": {"node1": COUNT, ...}}` on one line.
pub fn stats_json(cluster: &Cluster) -> String {
    let stats = cluster.stats();
    let nodes: serde_json::Map<String, serde_json::Value> = stats
        .nodes
        .iter()
        .map(|n| (n.id.to_string(), n.keys.into()))
        .collect();
    serde_json::json!({
        "epoch": stats.epoch,
        "keys": stats.total_keys,
        "nodes": nodes,
    })
    .to_string()
}
