//! Fault injection: make a node fail at a chosen point of a transfer, or
//! crash and heal it. Compiled only with the `fault-injection` feature.
//!
//! Faults are plain data armed on a cluster with
//! [`Cluster::inject_fault`](crate::Cluster::inject_fault). The migrator
//! fires the first armed fault that matches each point it reaches
//! (`fault_point!` in the migrator's code); a fault fires once.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use ringkv_ring::NodeId;
use tracing::warn;

use crate::ClusterError;
use crate::active::Active;
use crate::cluster::Cluster;

/// A point in the transfer of one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Before the first key of the range is read.
    BeforeCopy,
    /// After the first batch was read from the source, before it is
    /// written to the target.
    MidCopy,
    /// After the range is copied, before ownership switches (the commit
    /// point of the whole change lies between the last copy and the first
    /// switch).
    AfterCopy,
    /// After ownership switched, before the source deletes its copy.
    DuringCleanup,
}

impl FaultPoint {
    /// Every point, in transfer order.
    pub const ALL: [FaultPoint; 4] = [
        FaultPoint::BeforeCopy,
        FaultPoint::MidCopy,
        FaultPoint::AfterCopy,
        FaultPoint::DuringCleanup,
    ];
}

/// Which node of the transfer fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultRole {
    /// The node the range moves from.
    Source,
    /// The node the range moves to.
    Target,
}

/// What happens to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultEffect {
    /// The node crashes: every call to it fails (clients get
    /// [`ClusterError::Unavailable`](crate::ClusterError::Unavailable))
    /// until [`Cluster::heal`](crate::Cluster::heal).
    Crash,
    /// The node's next `n` store accesses by redistribution steps fail,
    /// then it works again: a transient fault that retries ride out when
    /// `n` is below the retry budget. Client calls do not spend the budget
    /// (nor fail because of it).
    FailCalls(u32),
    /// The whole process dies on the spot (`std::process::abort`), as a
    /// `kill -9` would: no rollback, no cleanup, no destructor. What was
    /// written stays in the OS page cache, so a restart of a cluster with
    /// a data directory sees every write that returned. For crash tests of
    /// [`Cluster::open`](crate::Cluster::open)'s recovery.
    AbortProcess,
}

/// One fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Where in the transfer it fires.
    pub point: FaultPoint,
    /// Which side of the transfer fails.
    pub role: FaultRole,
    /// What happens to that node.
    pub effect: FaultEffect,
    /// Fire on the range with this index in the change's plan; `None`
    /// fires on the first range that reaches `point`.
    pub range: Option<usize>,
}

/// Armed faults, consumed as they fire.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    armed: Mutex<Vec<Fault>>,
    /// Whether `armed` may be non-empty: the migrator asks at every step of
    /// every range, and almost always nothing is armed.
    any: AtomicBool,
}

impl FaultPlan {
    pub(crate) fn arm(&self, fault: Fault) {
        self.armed.lock().push(fault);
        self.any.store(true, Ordering::Release);
    }

    pub(crate) fn clear(&self) {
        self.armed.lock().clear();
        self.any.store(false, Ordering::Release);
    }

    /// Removes and returns the first armed fault for `point` on `range`,
    /// with the node it hits.
    pub(crate) fn fire(
        &self,
        point: FaultPoint,
        range: usize,
        from: &NodeId,
        to: &NodeId,
    ) -> Option<(NodeId, FaultEffect)> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = self.armed.lock();
        let i = armed
            .iter()
            .position(|f| f.point == point && f.range.is_none_or(|r| r == range))?;
        let fault = armed.remove(i);
        let node = match fault.role {
            FaultRole::Source => from.clone(),
            FaultRole::Target => to.clone(),
        };
        Some((node, fault.effect))
    }
}

impl Cluster {
    /// Arms a fault for the next redistributions (fires once).
    pub fn inject_fault(&self, fault: Fault) {
        self.faults.arm(fault);
    }

    /// Disarms every fault not yet fired.
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Makes node `id` crash: every call to it fails with
    /// [`ClusterError::Unavailable`] until [`Cluster::heal`].
    pub fn crash(&self, id: &str) -> Result<(), ClusterError> {
        self.node_by_id(id)?.set_down(true);
        Ok(())
    }

    /// Brings a crashed node back with its data, and clears pending
    /// transient faults on it.
    pub fn heal(&self, id: &str) -> Result<(), ClusterError> {
        let node = self.node_by_id(id)?;
        node.fail_next(0);
        node.set_down(false);
        Ok(())
    }

    /// Bytes every node's stores hold, recounted by walking every entry
    /// (per node, in id order): what [`ClusterStats::used_memory`] and
    /// [`NodeStats::used_memory`] must equal when no write is in flight.
    /// For tests; it takes each stripe's read lock in turn.
    ///
    /// [`ClusterStats::used_memory`]: crate::ClusterStats::used_memory
    /// [`NodeStats::used_memory`]: crate::NodeStats::used_memory
    pub fn recount_used_memory(&self) -> Vec<(ringkv_ring::NodeId, u64)> {
        let routing = self.routing.load_full();
        routing
            .nodes
            .values()
            .map(|node| {
                let mut bytes = 0u64;
                let mut page = Vec::new();
                for i in 0..node.stripe_count() {
                    let stripe = node.peek_stripe(i);
                    let mut after = None;
                    loop {
                        page.clear();
                        stripe
                            .scan(0..=u64::MAX, after, 256, &mut page)
                            .expect("in-memory stores do not fail");
                        bytes += page
                            .iter()
                            .map(|e| e.entry.footprint(e.key.len()) as u64)
                            .sum::<u64>();
                        match page.last() {
                            Some(last) if page.len() >= 256 => after = Some(last.token),
                            _ => break,
                        }
                    }
                }
                (node.id.clone(), bytes)
            })
            .collect()
    }

    fn node_by_id(&self, id: &str) -> Result<std::sync::Arc<crate::node::Node>, ClusterError> {
        let routing = self.routing.load();
        let node = routing.nodes.get(id).cloned();
        node.ok_or_else(|| ringkv_ring::RingError::UnknownNode { id: id.into() }.into())
    }

    /// Fires the armed fault for `point` on range `i`, if any.
    pub(crate) fn inject(&self, point: FaultPoint, i: usize, active: &Active) {
        let m = &active.migration.diff.moves[i];
        if let Some((node, effect)) = self.faults.fire(point, i, &m.from, &m.to) {
            warn!(node = %node, ?point, ?effect, range = i, "injecting fault");
            if let Some(node) = active.nodes.get(&node) {
                match effect {
                    FaultEffect::Crash => node.set_down(true),
                    FaultEffect::FailCalls(n) => node.fail_next(n),
                    FaultEffect::AbortProcess => {
                        eprintln!("ringkv: aborting at {point:?} of range {i} (fault injection)");
                        std::process::abort();
                    }
                }
            }
        }
    }
}
