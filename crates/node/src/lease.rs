//! The lease on serving: a node serves its keys only while a Raft leader
//! that a quorum confirmed recently also counts it as a member that is up.
//!
//! Why: a forced removal (`RINGKV.REMOVENODE id FORCE`) of a node marked
//! down drops its ranges, and their new owners serve them empty (once
//! they have cleared any copy of them they held). If the
//! old owner were only cut off from the others, it could go on serving
//! its clients what the cluster has given away. So a node that cannot
//! reach a confirmed leader, or that the leader counts as down, stops
//! serving within [`LEASE`], and the coordinator drops a down node's
//! ranges only after it has seen it down for longer ([`DROP_AFTER`]).
//!
//! How, with monotonic clocks only (no synchronised time): the leader
//! confirms its leadership with a quorum every [`RENEW_EVERY`]
//! (`Raft::get_read_log_id`, one heartbeat round) and keeps the time the last
//! confirmation began. Every other node asks the leader (`Lease` call) how
//! long ago that was, and holds its lease until its own ask began plus
//! [`LEASE`] minus that age: never past the leader's confirmation plus
//! [`LEASE`]. The leader answers nothing to a node it counts as down or
//! not a member.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use ringkv_peer::Service;
use serde::{Deserialize, Serialize};

use crate::Inner;
use crate::service::{decode_data, encode_data};

/// How long a confirmation keeps a node serving.
pub(crate) const LEASE: Duration = Duration::from_secs(2);

/// How long the coordinator sees a member down before it drops the
/// member's ranges in a forced removal: by then the member's lease has run
/// out (the leader stopped renewing it when the member was marked down).
pub(crate) const DROP_AFTER: Duration = Duration::from_secs(3);

/// How often a lease is renewed.
const RENEW_EVERY: Duration = Duration::from_millis(250);

/// What the leader answers a `Lease` call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct LeaseAnswer {
    /// How long ago (ms) the leader's last confirmation by a quorum began;
    /// `None`: no lease (not the leader, not confirmed, or the asker is
    /// down or no member).
    pub age_ms: Option<u64>,
}

impl Inner {
    /// Milliseconds since this node started (tokio's clock, so that the
    /// simulation's paused time runs it).
    pub(crate) fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Whether this node may serve its keys now.
    pub(crate) fn holds_lease(&self) -> bool {
        self.now_ms() < self.lease_until.load(Ordering::Acquire)
    }

    /// Waits up to `limit` for the lease to be renewed.
    pub(crate) async fn wait_lease(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.holds_lease() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn extend_lease(&self, until: u64) {
        self.lease_until.fetch_max(until, Ordering::AcqRel);
    }
}

/// Renews this node's lease, forever.
pub(crate) async fn keep(inner: Arc<Inner>) {
    let mut asked_view = 0;
    loop {
        renew(&inner).await;
        // Long without a lease, a member may have been removed while it
        // was cut off (a forced removal): it would never hear of it from
        // the log. It asks the others' views, at most once a second, and
        // routes by one that no longer lists it (`Inner::refresh`).
        let now = inner.now_ms();
        let lease = LEASE.as_millis() as u64;
        if inner.is_member()
            && now > inner.lease_until.load(Ordering::Acquire) + lease
            && now >= asked_view + 1000
        {
            asked_view = now;
            let epoch = inner.view().epoch;
            inner.refresh(None, epoch + 1, Duration::from_secs(1)).await;
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

async fn renew(inner: &Inner) {
    let Some(raft) = inner.raft.get() else {
        return;
    };
    let metrics = raft.metrics().borrow().clone();
    let Some(leader) = metrics.current_leader else {
        return;
    };
    let asked = inner.now_ms();
    let lease = LEASE.as_millis() as u64;
    if Some(leader) == inner.my_raft_id() {
        if metrics.state != ServerState::Leader {
            return;
        }
        // A read index: one heartbeat round that a quorum must answer.
        if let Ok(Ok(_)) = tokio::time::timeout(LEASE, raft.get_read_log_id()).await {
            // Stored plus one: 0 is never.
            inner.confirmed_at.fetch_max(asked + 1, Ordering::AcqRel);
            if answer(inner, &inner.me).age_ms.is_some() {
                inner.extend_lease(asked + lease);
            }
        }
        return;
    }
    let Some(addr) = metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())
    else {
        return;
    };
    let body = encode_data(&inner.me);
    let Ok(reply) = inner
        .transport
        .call(&addr, Service::Lease, body, LEASE)
        .await
    else {
        return;
    };
    if let Ok(LeaseAnswer { age_ms: Some(age) }) = decode_data::<LeaseAnswer>(&reply) {
        inner.extend_lease((asked + lease).saturating_sub(age));
    }
}

/// The leader's answer to member `id`'s `Lease` call.
pub(crate) fn answer(inner: &Inner, id: &str) -> LeaseAnswer {
    let leading = inner
        .raft
        .get()
        .is_some_and(|raft| raft.metrics().borrow().state == ServerState::Leader);
    let confirmed = inner.confirmed_at.load(Ordering::Acquire);
    // The published view (an `Arc`; the store's state would be a copy of
    // the change's whole plan per call).
    let up = inner.view().members.get(id).is_some_and(|m| !m.down);
    LeaseAnswer {
        age_ms: (leading && confirmed > 0 && up)
            .then(|| inner.now_ms().saturating_sub(confirmed - 1)),
    }
}
