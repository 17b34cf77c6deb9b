//! The migrator: executes a ring diff as copy, switch, clean up.
//!
//! Runs under the cluster's membership mutex, so one change at a time.
//!
//! 1. Publish routing for the new ring with every moving range in phase
//!    `Copying`: sources still own their ranges and log writes as dirty.
//! 2. Copy each range in batches (source read lock, then target write
//!    lock, never both). The target's range is cleared first, so a stale
//!    copy from an earlier failed attempt can never mix in. A failure here
//!    is retried, then rolled back: the old routing is republished and
//!    nothing changed hands.
//! 3. Commit point. Switch each range under the source's and the target's
//!    write locks: apply the dirty keys' current values, mark `Switched`.
//!    A failure here is retried, then the change is paused; it only moves
//!    forward from now on ([`Cluster::resume`]).
//! 4. Publish routing without the migration (and without a removed node).
//! 5. Delete each range from its source; failures are remembered and
//!    retried by [`Cluster::repair`] and the next change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringkv_ring::{NodeId, Ring, TokenRange, key_token};
use tracing::{debug, info, warn};

use crate::ClusterError;
use crate::cluster::Cluster;
use crate::fault::{FaultEffect, FaultPoint};
use crate::node::Node;
use crate::plan::{Phase, RangeState, TransferPlan, plan_transfers};
use crate::report::{ChangeKind, Progress, RebalanceReport, TransferReport};
use crate::routing::{Migration, Routing};
use crate::store::StoredEntry;

/// A requested membership change.
pub(crate) enum Change {
    Add { id: NodeId, weight: u32 },
    Remove { id: NodeId, force: bool },
}

/// State that outlives one call, guarded by the membership mutex.
#[derive(Default)]
pub(crate) struct Membership {
    paused: Option<Active>,
    pub(crate) pending_cleanups: Vec<StaleRange>,
    progress: Option<ProgressFn>,
}

/// A callback told of each range copied.
pub(crate) type ProgressFn = Box<dyn Fn(&Progress) + Send + Sync>;

/// A range whose stale copy could not be deleted.
pub(crate) struct StaleRange {
    node: Arc<Node>,
    range: TokenRange,
}

/// Per-range accounting: keys and bytes the target holds for the range.
#[derive(Default, Clone, Copy)]
struct Moved {
    keys: i64,
    bytes: i64,
    time: Duration,
}

/// A change in flight.
struct Active {
    kind: ChangeKind,
    node: NodeId,
    started: Instant,
    migration: Arc<Migration>,
    transfers: Vec<TransferPlan>,
    moved: Vec<Moved>,
    new_ring: Arc<Ring>,
    /// Routing nodes during the migration (old members plus a joining node).
    nodes: BTreeMap<NodeId, Arc<Node>>,
    /// Routing nodes once done (without a leaving node).
    final_nodes: BTreeMap<NodeId, Arc<Node>>,
}

impl Active {
    fn endpoints(&self, i: usize) -> (&Arc<Node>, &Arc<Node>, &RangeState, TokenRange) {
        let m = &self.migration.diff.moves[i];
        (
            &self.nodes[&m.from],
            &self.nodes[&m.to],
            &self.migration.ranges[i],
            m.range,
        )
    }
}

impl Cluster {
    /// Calls `f` after each range a redistribution copies (from the thread
    /// running the membership change), e.g. to draw a progress bar.
    /// Replaces any earlier callback.
    pub fn on_progress(&self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        self.membership.lock().progress = Some(Box::new(f));
    }

    pub(crate) fn change(
        &self,
        membership: &mut Membership,
        change: Change,
    ) -> Result<RebalanceReport, ClusterError> {
        if let Err(cause) = self.resume_paused(membership) {
            let (op, node) = match &change {
                Change::Add { id, .. } => (ChangeKind::AddNode, id),
                Change::Remove { id, .. } => (ChangeKind::RemoveNode, id),
            };
            return Err(ClusterError::NotStarted {
                op: op.as_str(),
                node: node.clone(),
                cause: Box::new(cause),
            });
        }
        self.repair_cleanups(membership);

        let started = Instant::now();
        let routing = self.routing.load_full();
        let old = &routing.ring;
        let (kind, node_id, new) = match &change {
            Change::Add { id, weight } => (
                ChangeKind::AddNode,
                id.clone(),
                old.with_node(id.clone(), *weight)?,
            ),
            Change::Remove { id, .. } => (
                ChangeKind::RemoveNode,
                id.clone(),
                old.without_node(id.as_str())?,
            ),
        };
        let new = Arc::new(new);

        if let Change::Remove { force, .. } = change
            && new.is_empty()
        {
            let report = self.remove_last(&routing, &node_id, new, force, started)?;
            self.repair_cleanups(membership); // stale ranges of nodes gone
            return Ok(report);
        }

        let mut nodes = routing.nodes.clone();
        if kind == ChangeKind::AddNode {
            let node = Node::new(node_id.clone(), self.config.stripes, || {
                (self.store_factory)(&node_id)
            });
            nodes.insert(node_id.clone(), Arc::new(node));
        }
        let mut final_nodes = nodes.clone();
        if kind == ChangeKind::RemoveNode {
            final_nodes.remove(&node_id);
        }

        let diff = old.diff(&new);
        let transfers = plan_transfers(&diff);
        let migration = Arc::new(Migration {
            ranges: diff.moves.iter().map(|_| RangeState::new()).collect(),
            diff,
        });
        let mut active = Active {
            kind,
            node: node_id,
            started,
            moved: vec![Moved::default(); migration.ranges.len()],
            migration,
            transfers,
            new_ring: new,
            nodes,
            final_nodes,
        };
        info!(
            op = %active.kind,
            node = %active.node,
            epoch = active.new_ring.epoch(),
            ranges = active.migration.ranges.len(),
            transfers = active.transfers.len(),
            "rebalance started"
        );
        self.routing.store(Arc::new(Routing {
            ring: active.new_ring.clone(),
            migration: Some(active.migration.clone()),
            nodes: active.nodes.clone(),
        }));

        let total = active.migration.ranges.len();
        let mut keys_copied = 0;
        for i in 0..total {
            let copied = self.copy_range(&mut active, i);
            keys_copied += active.moved[i].keys.max(0) as u64;
            if let (Ok(()), Some(progress)) = (&copied, &membership.progress) {
                progress(&Progress {
                    kind: active.kind,
                    node: active.node.clone(),
                    ranges_done: i + 1,
                    ranges_total: total,
                    keys_copied,
                });
            }
            if let Err(cause) = copied {
                self.roll_back(membership, &active, routing, i, &cause);
                return Err(ClusterError::RolledBack {
                    op: active.kind.as_str(),
                    node: active.node.clone(),
                    cause: Box::new(cause),
                });
            }
        }
        self.finish(membership, active)
    }

    fn remove_last(
        &self,
        routing: &Routing,
        id: &NodeId,
        new: Arc<Ring>,
        force: bool,
        started: Instant,
    ) -> Result<RebalanceReport, ClusterError> {
        // Count and publish under every stripe's write lock: a put that
        // slipped in between the count and the publish would be
        // acknowledged and then dropped with the node. Clients waiting on
        // these locks re-check ownership afterwards and get `NoNodes`.
        let node = routing.node(id);
        let stripes = (0..node.stripe_count())
            .map(|i| node.write_stripe(i))
            .collect::<Result<Vec<_>, _>>()?;
        let keys: usize = stripes.iter().map(|s| s.len()).sum();
        if keys > 0 && !force {
            return Err(ClusterError::LastNodeHoldsData {
                node: id.clone(),
                keys,
            });
        }
        let epoch = new.epoch();
        self.routing.store(Arc::new(Routing {
            ring: new,
            migration: None,
            nodes: BTreeMap::new(),
        }));
        drop(stripes);
        warn!(node = %id, keys, "last node removed, its keys are dropped");
        let report = RebalanceReport {
            kind: ChangeKind::RemoveNode,
            node: id.clone(),
            epoch,
            transfers: Vec::new(),
            keys_moved: 0,
            bytes_moved: 0,
            keys_dropped: keys as u64,
            pending_cleanups: 0,
            duration: started.elapsed(),
        };
        log_summary(&report);
        Ok(report)
    }

    /// Completes the paused change, if any.
    pub(crate) fn resume_paused(
        &self,
        membership: &mut Membership,
    ) -> Result<Option<RebalanceReport>, ClusterError> {
        match membership.paused.take() {
            Some(active) => {
                info!(op = %active.kind, node = %active.node, "resuming paused rebalance");
                self.finish(membership, active).map(Some)
            }
            None => Ok(None),
        }
    }

    fn inject(&self, point: FaultPoint, i: usize, active: &Active) {
        let m = &active.migration.diff.moves[i];
        if let Some((node, effect)) = self.faults.fire(point, i, &m.from, &m.to) {
            warn!(node = %node, ?point, ?effect, range = i, "injecting fault");
            if let Some(node) = active.nodes.get(&node) {
                match effect {
                    FaultEffect::Crash => node.set_down(true),
                    FaultEffect::FailCalls(n) => node.fail_next(n),
                }
            }
        }
    }

    fn retry<T>(
        &self,
        what: &str,
        i: usize,
        mut step: impl FnMut() -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut backoff = self.config.retry_backoff;
        let mut attempt = 1;
        loop {
            match step() {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.config.max_attempts => {
                    warn!(range = i, attempt, error = %e, "{what} failed, retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn copy_range(&self, active: &mut Active, i: usize) -> Result<(), ClusterError> {
        let t0 = Instant::now();
        self.inject(FaultPoint::BeforeCopy, i, active);
        let batch_size = self.config.copy_batch;
        // A node that joins in this change holds nothing yet; any other
        // target may hold a stale copy of the range from an earlier failed
        // change, and every retry may find this change's partial copy.
        let joining =
            active.kind == ChangeKind::AddNode && active.migration.diff.moves[i].to == active.node;
        let mut attempt = 0;
        let moved = self.retry("copy", i, || {
            let (source, target, _, range) = active.endpoints(i);
            attempt += 1;
            if attempt > 1 || !joining {
                drain(target, range, batch_size)?;
            }
            let mut moved = Moved::default();
            let mut batch: Vec<StoredEntry> = Vec::with_capacity(batch_size);
            let mut first = true;
            for iv in range.intervals() {
                for (stripe, part) in source.split(iv) {
                    let mut after = None;
                    loop {
                        batch.clear();
                        {
                            let s = source.read_stripe(stripe)?;
                            s.scan(part.clone(), after, batch_size, &mut batch)
                                .map_err(|e| source.store_error(e))?;
                        }
                        if first {
                            first = false;
                            self.inject(FaultPoint::MidCopy, i, active);
                        }
                        let Some(last) = batch.last() else { break };
                        after = Some(last.token);
                        // A short batch is the end of the part: skip the
                        // empty scan that would confirm it.
                        let done = batch.len() < batch_size;
                        // Clients never touch the target's copy of a range
                        // that is still copying, but they do use the
                        // target's other keys in this stripe.
                        let mut t = target.write_stripe(stripe)?;
                        for e in batch.drain(..) {
                            moved.keys += 1;
                            moved.bytes += (e.key.len() + e.value.len()) as i64;
                            t.put(e.token, e.key, e.value)
                                .map_err(|e| target.store_error(e))?;
                        }
                        if done {
                            break;
                        }
                    }
                }
            }
            Ok(moved)
        })?;
        let (source, target, _, range) = active.endpoints(i);
        debug!(from = %source.id, to = %target.id, ?range, keys = moved.keys, "range copied");
        active.moved[i] = Moved {
            time: t0.elapsed(),
            ..moved
        };
        Ok(())
    }

    fn roll_back(
        &self,
        membership: &mut Membership,
        active: &Active,
        old: Arc<Routing>,
        failed: usize,
        cause: &ClusterError,
    ) {
        // The abandoned ring's epoch has been seen (routing published it at
        // the start); give the restored membership the next one, so that
        // every epoch names exactly one ring.
        let epoch = active.new_ring.epoch() + 1;
        self.routing.store(Arc::new(Routing {
            ring: Arc::new(old.ring.with_epoch(epoch)),
            migration: None,
            nodes: old.nodes.clone(),
        }));
        // Targets may hold partial copies of ranges they do not own. Clients
        // never read them; clear them so counts and later copies stay exact.
        for i in 0..=failed {
            let (_, target, _, range) = active.endpoints(i);
            if active.kind == ChangeKind::AddNode && target.id == active.node {
                continue; // the joining node is discarded whole
            }
            if drain(target, range, self.config.copy_batch).is_err() {
                membership.pending_cleanups.push(StaleRange {
                    node: target.clone(),
                    range,
                });
                self.stale_ranges
                    .store(membership.pending_cleanups.len(), Ordering::Release);
            }
        }
        warn!(op = %active.kind, node = %active.node, error = %cause, "rebalance rolled back");
    }

    fn switch_range(&self, active: &mut Active, i: usize) -> Result<(), ClusterError> {
        let t0 = Instant::now();
        self.inject(FaultPoint::AfterCopy, i, active);
        // The delta counts what `put` and `delete` report. If a store call
        // fails part way and the switch is retried, the keys applied by the
        // failed attempt count as already there, so `keys_moved` can come
        // out low; the data is right either way (applying a dirty key is
        // idempotent). `MemStore` calls never fail.
        let delta = self.retry("switch", i, || {
            let (source, target, state, range) = active.endpoints(i);
            // Every stripe of the range on both sides, source first, each
            // side in ascending order: no client can touch the range now.
            let stripes = source.stripes_of(range);
            let src = stripes
                .iter()
                .map(|&k| source.write_stripe(k))
                .collect::<Result<Vec<_>, _>>()?;
            let mut dst = stripes
                .iter()
                .map(|&k| target.write_stripe(k))
                .collect::<Result<Vec<_>, _>>()?;
            let mut delta = Moved::default();
            for key in state.dirty_keys() {
                let token = key_token(&key);
                let j = stripes
                    .binary_search(&source.stripe_of(token))
                    .expect("dirty keys lie in the range");
                let t = &mut dst[j];
                match src[j].get(token, &key).map_err(|e| source.store_error(e))? {
                    Some(v) => {
                        let (klen, vlen) = (key.len() as i64, v.len() as i64);
                        match t.put(token, key, v).map_err(|e| target.store_error(e))? {
                            None => {
                                delta.keys += 1;
                                delta.bytes += klen + vlen;
                            }
                            Some(old) => delta.bytes += vlen - old.len() as i64,
                        }
                    }
                    None => {
                        let removed = t.delete(token, &key).map_err(|e| target.store_error(e))?;
                        if let Some(old) = removed {
                            delta.keys -= 1;
                            delta.bytes -= (key.len() + old.len()) as i64;
                        }
                    }
                }
            }
            state.set_phase(Phase::Switched);
            state.clear_dirty();
            Ok(delta)
        })?;
        let m = &mut active.moved[i];
        m.keys += delta.keys;
        m.bytes += delta.bytes;
        m.time += t0.elapsed();
        Ok(())
    }

    fn finish(
        &self,
        membership: &mut Membership,
        mut active: Active,
    ) -> Result<RebalanceReport, ClusterError> {
        for i in 0..active.migration.ranges.len() {
            if active.migration.ranges[i].phase() >= Phase::Switched {
                continue;
            }
            if let Err(cause) = self.switch_range(&mut active, i) {
                warn!(op = %active.kind, node = %active.node, error = %cause, "rebalance paused");
                let err = ClusterError::Paused {
                    op: active.kind.as_str(),
                    node: active.node.clone(),
                    cause: Box::new(cause),
                };
                membership.paused = Some(active);
                return Err(err);
            }
        }
        self.routing.store(Arc::new(Routing {
            ring: active.new_ring.clone(),
            migration: None,
            nodes: active.final_nodes.clone(),
        }));

        let mut pending = 0;
        for i in 0..active.migration.ranges.len() {
            let t0 = Instant::now();
            let (source, _, _, range) = active.endpoints(i);
            if !active.final_nodes.contains_key(&source.id) {
                continue; // the leaving node is dropped whole
            }
            self.inject(FaultPoint::DuringCleanup, i, &active);
            let cleaned = self.retry("cleanup", i, || {
                drain(source, range, self.config.copy_batch).map(drop)
            });
            match cleaned {
                Ok(()) => {}
                Err(e) => {
                    warn!(node = %source.id, ?range, error = %e, "cleanup failed, kept for repair");
                    pending += 1;
                    membership.pending_cleanups.push(StaleRange {
                        node: source.clone(),
                        range,
                    });
                    self.stale_ranges
                        .store(membership.pending_cleanups.len(), Ordering::Release);
                }
            }
            active.moved[i].time += t0.elapsed();
        }

        let report = build_report(&active, pending);
        for t in &report.transfers {
            info!(
                from = %t.from,
                to = %t.to,
                ranges = t.ranges,
                keys = t.keys,
                bytes = t.bytes,
                ms = millis(t.duration),
                "transfer done"
            );
        }
        log_summary(&report);
        Ok(report)
    }

    /// Retries stale-range cleanups; returns how many remain.
    pub(crate) fn repair_cleanups(&self, membership: &mut Membership) -> usize {
        let routing = self.routing.load();
        if routing.migration.is_some() {
            return membership.pending_cleanups.len();
        }
        membership.pending_cleanups.retain(|stale| {
            let member = routing
                .nodes
                .get(&stale.node.id)
                .is_some_and(|n| Arc::ptr_eq(n, &stale.node));
            if !member {
                return false; // the node left; its data went with it
            }
            // Delete only what the node does not own now: the range may have
            // come back to it since.
            let node = &stale.node;
            let chunk = self.config.copy_batch;
            let result = stale.range.intervals().try_for_each(|iv| {
                node.split(iv).try_for_each(|(stripe, part)| {
                    // Page through the part, one stripe lock hold per
                    // batch, like every other migrator step.
                    let mut after = None;
                    let mut entries = Vec::with_capacity(chunk);
                    loop {
                        entries.clear();
                        let mut s = node.write_stripe(stripe)?;
                        s.scan(part.clone(), after, chunk, &mut entries)
                            .map_err(|e| node.store_error(e))?;
                        for e in &entries {
                            if routing.ring.owner_of_token(e.token) != Some(&node.id) {
                                s.delete(e.token, &e.key)
                                    .map_err(|err| node.store_error(err))?;
                            }
                        }
                        drop(s);
                        match entries.last() {
                            Some(last) if entries.len() >= chunk => after = Some(last.token),
                            _ => return Ok::<(), ClusterError>(()),
                        }
                    }
                })
            });
            result.is_err()
        });
        let left = membership.pending_cleanups.len();
        self.stale_ranges.store(left, Ordering::Release);
        left
    }
}

fn build_report(active: &Active, pending: usize) -> RebalanceReport {
    let transfers: Vec<TransferReport> = active
        .transfers
        .iter()
        .map(|t| {
            let (mut keys, mut bytes, mut time) = (0i64, 0i64, Duration::ZERO);
            for &i in &t.ranges {
                keys += active.moved[i].keys;
                bytes += active.moved[i].bytes;
                time += active.moved[i].time;
            }
            TransferReport {
                from: t.from.clone(),
                to: t.to.clone(),
                ranges: t.ranges.len(),
                keys: keys.max(0) as u64,
                bytes: bytes.max(0) as u64,
                duration: time,
            }
        })
        .collect();
    RebalanceReport {
        kind: active.kind,
        node: active.node.clone(),
        epoch: active.new_ring.epoch(),
        keys_moved: transfers.iter().map(|t| t.keys).sum(),
        bytes_moved: transfers.iter().map(|t| t.bytes).sum(),
        keys_dropped: 0,
        pending_cleanups: pending,
        transfers,
        duration: active.started.elapsed(),
    }
}

fn log_summary(report: &RebalanceReport) {
    info!(
        event = "rebalance",
        op = %report.kind,
        node = %report.node,
        epoch = report.epoch,
        keys_moved = report.keys_moved,
        bytes_moved = report.bytes_moved,
        transfers = report.transfers.len(),
        duration_ms = millis(report.duration),
        "rebalance done"
    );
}

/// Deletes every key of `range` from `node`, at most `chunk` keys per lock
/// hold; the removed entries are freed after the lock is released.
/// Returns how many were deleted.
fn drain(node: &Node, range: TokenRange, chunk: usize) -> Result<usize, ClusterError> {
    let mut removed = 0;
    let mut freed = Vec::with_capacity(chunk);
    for iv in range.intervals() {
        for (stripe, part) in node.split(iv) {
            loop {
                let n = node
                    .write_stripe(stripe)?
                    .take_range(part.clone(), chunk, &mut freed)
                    .map_err(|e| node.store_error(e))?;
                freed.clear();
                removed += n;
                if n < chunk {
                    break; // a short chunk emptied the part
                }
            }
        }
    }
    Ok(removed)
}

/// Milliseconds rounded to the microsecond, for readable logs.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
