//! Fault injection: make a node fail at a chosen point of a transfer.
//!
//! Faults are plain data armed on a cluster with
//! [`Cluster::inject_fault`](crate::Cluster::inject_fault). The migrator
//! fires the first armed fault that matches each point it reaches; a fault
//! fires once.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use ringkv_ring::NodeId;

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
    /// The node's next `n` store accesses fail, then it works again: a
    /// transient fault that retries ride out when `n` is below the retry
    /// budget.
    FailCalls(u32),
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
