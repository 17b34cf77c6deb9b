//! How a node's view follows the cluster's committed state: each applied
//! state is published to the router under the view's write lock; a started
//! node serves only once it has caught up with the leader; requests wait
//! for an epoch; and a node the Raft group dropped (removed, or a join
//! withdrawn) routes by the members' views, since it receives no more of
//! the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringkv_meta::MetaState;
use tracing::info;

use crate::{Inner, Tracker, cleanup, service};

/// [`Inner::may_be_removed`] by `state`, for a caller that holds the
/// view's lock (taking it again could deadlock behind a waiting writer).
pub(crate) fn may_be_removed(state: &MetaState, me: &str) -> bool {
    state
        .members
        .get(me)
        .is_none_or(|m| m.lifecycle != ringkv_meta::Lifecycle::Up)
}

impl Inner {
    /// Waits until this node has caught up with the log since its start
    /// (see [`catch_up`]), at most `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let readied = self.readied.notified();
        tokio::pin!(readied);
        // Registered before the check, so a notification in between is
        // not missed.
        readied.as_mut().enable();
        self.ready.load(Ordering::Acquire) || tokio::time::timeout(limit, readied).await.is_ok()
    }

    /// Waits until this node has caught up since its start and its view
    /// has reached `epoch`, at most `limit` in all, as a peer's call at
    /// `epoch` needs; otherwise says which it still lacks. A node that
    /// joins is asked (to pull, to count its keys) as soon as its join
    /// commits, usually before it has caught up.
    pub async fn ready_at(&self, epoch: u64, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        if !self.wait_ready(limit).await {
            return Err(format!(
                "node {} is catching up with the cluster's log",
                self.me
            ));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.wait_epoch(epoch, left).await {
            true => Ok(()),
            false => Err(format!("node {} has not reached epoch {epoch}", self.me)),
        }
    }

    /// Waits until the published view reaches `epoch`, at most `limit`.
    pub async fn wait_epoch(&self, epoch: u64, limit: Duration) -> bool {
        let mut epochs = self.epochs.subscribe();
        tokio::time::timeout(limit, epochs.wait_for(|e| *e >= epoch))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the view reaches `epoch`, which the node at peer address
    /// `addr` answered `Moved` at, for at most about `limit`: see
    /// [`Inner::refresh`] for a node removed from the cluster.
    pub async fn reach(&self, epoch: u64, addr: &str, limit: Duration) -> bool {
        if self.is_member() && self.wait_epoch(epoch, limit).await {
            return true;
        }
        self.may_be_removed() && self.refresh(Some(addr), epoch, limit).await
    }

    /// Whether this node is a member by its view (not removed).
    pub fn is_member(&self) -> bool {
        self.view().members.contains_key(&self.me)
    }

    /// Whether this node may be out of the Raft group without its view
    /// knowing yet: removed by its view, or joining or leaving (the group
    /// can drop a node before it applies its own removal or the withdrawal
    /// of its join). An up member only waits for its log.
    pub fn may_be_removed(&self) -> bool {
        may_be_removed(&self.view(), &self.me)
    }

    /// Waits until the published view moves past `epoch`, at most about
    /// `limit`: see [`Inner::refresh`] for a node removed from the cluster.
    pub async fn wait_past(&self, epoch: u64, limit: Duration) -> bool {
        if self.is_member() && self.wait_epoch(epoch + 1, limit).await {
            return true;
        }
        self.may_be_removed() && self.refresh(None, epoch + 1, limit).await
    }

    /// A node removed from the cluster receives no more of the log, but
    /// keeps serving clients, forwarding every request: it routes by the
    /// view of a member of its last view (`first` asked first), the first
    /// one at `epoch` or later that confirms the removal. A member's view
    /// that still lists this node is not taken: a member waits for its log.
    pub(crate) async fn refresh(&self, first: Option<&str>, epoch: u64, limit: Duration) -> bool {
        let known = self.view();
        let others = known
            .members
            .iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(_, m)| m.peer_addr.as_str());
        let deadline = tokio::time::Instant::now() + limit;
        for addr in first.into_iter().chain(others) {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let asked = tokio::time::timeout_at(deadline, service::view(&*self.transport, addr));
            if let Ok(Ok(state)) = asked.await
                && state.epoch >= epoch
                && !state.members.contains_key(&self.me)
            {
                if self.view().epoch < state.epoch {
                    info!(node = %self.me, epoch = state.epoch, from = addr, "removed from the cluster: routing by a member's view");
                    self.publish(state);
                }
                return true;
            }
        }
        self.view().epoch >= epoch
    }

    /// Publishes `state`: under the write lock, so requests decided by
    /// the old view have finished; starts or ends the recording of writes
    /// to ranges copied away from this node.
    pub(crate) fn publish(&self, state: MetaState) -> (Option<u64>, Option<u64>) {
        let asked = std::time::Instant::now();
        let mut view = self.view.write();
        let waited = asked.elapsed();
        let before = view.change.as_ref().map(|c| c.id);
        let now = state.change.as_ref().map(|c| c.id);
        // A tracker that ends, and the old view, are freed after the lock
        // is released: both can be large (the dirty keys of a copy, a
        // change's ranges and two rings), and every request waits for the
        // view's lock.
        let mut ended = None;
        {
            let mut tracker = self.tracker.lock();
            let source = state.change.as_ref().filter(|c| {
                c.ranges
                    .iter()
                    .any(|r| r.from == self.me && !r.phase.is_done())
            });
            match source {
                Some(change) => {
                    if tracker.as_ref().is_none_or(|t| t.change != change.id) {
                        ended = tracker.replace(Tracker {
                            change: change.id,
                            id: rand::random(),
                            keys: HashMap::new(),
                        });
                    }
                }
                None => ended = tracker.take(),
            }
        }
        let epoch = state.epoch;
        // From one state without a change to the next (a member marked up
        // or down, a join asked for), no copy arrives: a store that held
        // exactly the keys served still does (`DBSIZE`'s fast count).
        if before.is_none() && now.is_none() {
            let _ = self.clean_at.compare_exchange(
                view.epoch,
                epoch,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            );
        }
        let old = std::mem::replace(&mut *view, Arc::new(state));
        drop(view);
        drop((old, ended));
        tracing::debug!(node = %self.me, epoch, waited_us = waited.as_micros() as u64, change = ?now, "view published");
        self.epochs.send_replace(epoch);
        (before, now)
    }
}

/// Publishes each applied state to the router, and cleans up local copies
/// no longer served when a change ends.
pub(crate) async fn publisher(inner: Arc<Inner>) {
    let mut applied = inner.store.subscribe();
    loop {
        let state = inner.store.state();
        let next_change = state.next_change;
        let seen = inner.view();
        let (before, now) = inner.publish(state);
        if let Some(ended) = before
            && before != now
            && inner.ready.load(Ordering::Acquire)
        {
            let scope = cleanup::scope_after(&seen, ended, now, next_change, &inner.me);
            tokio::spawn(cleanup::cleanup(Arc::clone(&inner), scope));
        }
        drop(seen);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// Once this node is removed from the cluster (it serves no keys, and
/// receives no more of the log), keeps its view about a second behind the
/// members' by asking them: it forwards every request by it. Checked while
/// the node is joining or leaving too: the group can drop it before it
/// applies its own removal.
pub(crate) async fn follow_when_removed(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if inner.ready.load(Ordering::Acquire) && inner.may_be_removed() {
            let epoch = inner.view().epoch;
            inner.refresh(None, epoch + 1, Duration::from_secs(1)).await;
        }
    }
}

/// Waits until this node has applied the log as far as the leader had
/// when asked (its view is then no older than what its data reflects),
/// then serves and cleans up copies it no longer serves.
pub(crate) async fn catch_up(inner: Arc<Inner>) {
    let raft = inner.raft.get().expect("raft starts first").clone();
    // Short: a joining node's copy waits for this, and the copy of a join
    // takes well under a second. Longer while the leader does not answer
    // (each try is a call to it); looking for a leader is local.
    const POLL: Duration = Duration::from_millis(10);
    let mut pause = POLL;
    loop {
        tokio::time::sleep(std::mem::replace(&mut pause, POLL)).await;
        let metrics = raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            continue;
        };
        let target = if Some(leader) == inner.my_raft_id() {
            if metrics.state != openraft::ServerState::Leader {
                continue;
            }
            metrics.last_log_index.unwrap_or(0)
        } else {
            let Some(node) = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .cloned()
            else {
                continue;
            };
            match service::status(&*inner.transport, &node.addr).await {
                Ok(status) => status.applied,
                Err(_) => {
                    pause = Duration::from_millis(100);
                    continue;
                }
            }
        };
        if raft
            .wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(target), "catch up")
            .await
            .is_err()
        {
            continue;
        }
        if inner.view().epoch < inner.store.state().epoch {
            continue;
        }
        // Nothing is written here before this node is ready (pulls and
        // clients wait for it): a store empty now, a new member's, holds
        // no copy to clean up. Its cleanup would queue behind its first
        // pull, then scan every key pulled while the pull of the last
        // shipment, which holds the writes of every moving range, waited
        // for it (45 ms of a join's 54 ms fence, docs/BENCHMARKS.md, node
        // section 12).
        let stale = cleanup::holds_keys(&inner.cluster);
        if !stale {
            cleanup::mark_clean(&inner);
        }
        inner.ready.store(true, Ordering::Release);
        inner.readied.notify_waiters();
        info!(node = %inner.me, applied = target, "caught up with the cluster's log; serving");
        if stale {
            cleanup::cleanup(Arc::clone(&inner), cleanup::Scope::All).await;
        }
        return;
    }
}
