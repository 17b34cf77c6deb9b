//! A membership change from start to commit point: check, plan, publish the
//! migration, copy every range, and roll back if that fails.
//!
//! Runs under the cluster's membership mutex, so one change at a time.
//!
//! 1. Refuse what the ring refuses, and a change that needs a node that is
//!    down (before anything is published or retried).
//! 2. Publish routing for the new ring with every moving range in phase
//!    `Copying`: sources still serve their ranges and log writes as dirty.
//! 3. Copy each range in batches ([`crate::transfer`]). A failure (or a
//!    panic) here is retried, then rolled back: the old routing is
//!    republished and nothing changed hands.
//! 4. Commit point, entered only if every node the switch needs is up.
//!    [`crate::commit`] switches, publishes the final routing and cleans up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ringkv_ring::{NodeId, Ring};
use tracing::{info, warn};

use crate::ClusterError;
use crate::active::{Active, Moved};
use crate::cluster::Cluster;
use crate::commit::log_summary;
use crate::membership::{Change, Membership};
use crate::node::{Node, StripeWrite};
use crate::plan::{RangeState, plan_transfers};
use crate::report::{ChangeKind, Progress, RebalanceReport};
use crate::routing::{Migration, Publish, Routing};
use crate::step::{Stop, catch};
use crate::transfer::drain;

impl Cluster {
    /// Runs `change` under the membership mutex (`membership`): completes
    /// a paused change first, then plans, copies and commits this one.
    pub(crate) fn change(
        &self,
        membership: &mut Membership,
        change: Change,
    ) -> Result<RebalanceReport, ClusterError> {
        let (kind, node_id) = (change.kind(), change.node().clone());
        let force = matches!(change, Change::Remove { force: true, .. });
        // Refuse what the ring refuses before resuming a paused change, so a
        // refused call changes nothing. Resuming does not change the ring,
        // so the next ring computed now is the one the change will use.
        if let Some(paused) = &membership.paused
            && paused.kind == kind
            && paused.node == node_id
        {
            return Err(ClusterError::AlreadyPaused {
                op: kind.as_str(),
                node: node_id,
            });
        }
        let current = self.routing.load_full();
        let new = Arc::new(match &change {
            Change::Add { id, weight } => current.ring.with_node(id.clone(), *weight)?,
            Change::Remove { id, .. } => current.ring.without_node(id.as_str())?,
        });
        drop(current);

        if let Err(cause) = self.resume_paused(membership) {
            return Err(ClusterError::NotStarted {
                op: kind.as_str(),
                node: node_id,
                cause: Box::new(cause),
            });
        }
        self.repair_cleanups(membership);

        let started = Instant::now();
        let routing = self.routing.load_full();
        if kind == ChangeKind::RemoveNode && new.is_empty() {
            let report = self.remove_last(&routing, &node_id, new, force, started)?;
            self.repair_cleanups(membership); // stale ranges of nodes gone
            return Ok(report);
        }

        let mut nodes = routing.nodes.clone();
        if kind == ChangeKind::AddNode {
            let stores = self
                .backend
                .open_node(&node_id, self.config.stripes, true)
                .map_err(|source| ClusterError::NotStarted {
                    op: kind.as_str(),
                    node: node_id.clone(),
                    cause: Box::new(ClusterError::Store {
                        node: node_id.clone(),
                        source,
                    }),
                })?;
            let node = Node::new(node_id.clone(), stores, self.memory.clone());
            nodes.insert(node_id.clone(), Arc::new(node));
        }
        let mut final_nodes = nodes.clone();
        if kind == ChangeKind::RemoveNode {
            final_nodes.remove(&node_id);
        }

        let diff = routing.ring.diff(&new);
        let ranges = diff.moves.len();
        let transfers = plan_transfers(&diff);
        let mut active = Active {
            kind,
            node: node_id,
            force,
            started,
            migration: Arc::new(Migration {
                ranges: diff.moves.iter().map(|_| RangeState::new()).collect(),
                diff,
            }),
            transfers,
            moved: vec![Moved::default(); ranges],
            held: vec![None; ranges],
            copied: vec![false; ranges],
            recovered: false,
            dropped: vec![false; ranges],
            keys_dropped: 0,
            new_ring: new,
            nodes,
            final_nodes,
        };
        // A node the change needs is down: say so now, before anything is
        // published or retried.
        let refuse = |cause| {
            if kind == ChangeKind::AddNode {
                self.forget_node(&active.node);
            }
            Err(ClusterError::NotStarted {
                op: kind.as_str(),
                node: active.node.clone(),
                cause: Box::new(cause),
            })
        };
        if let Some(down) = active.first_down() {
            return refuse(ClusterError::NodeDown { node: down });
        }
        // The change's record goes before its first copy: a restart that
        // finds it knows to undo or complete the change.
        if let Err(e) = self.record_start(&active, &routing.ring) {
            return refuse(e);
        }
        info!(
            op = %active.kind,
            node = %active.node,
            epoch = active.new_ring.epoch(),
            ranges,
            transfers = active.transfers.len(),
            "rebalance started"
        );
        self.routing.publish(
            Publish::Start,
            Routing {
                ring: active.new_ring.clone(),
                migration: Some(active.migration.clone()),
                nodes: active.nodes.clone(),
            },
        );

        let mut keys_copied = 0;
        for i in 0..ranges {
            let step = catch(|| {
                self.copy_or_drop(&mut active, i)?;
                keys_copied += active.moved[i].keys.max(0) as u64;
                self.report_progress(Progress {
                    kind: active.kind,
                    node: active.node.clone(),
                    ranges_done: i + 1,
                    ranges_total: ranges,
                    keys_copied,
                });
                Ok(())
            });
            if let Err(stop) = step {
                return Err(self.roll_back(membership, &active, &routing, i + 1, stop));
            }
            active.copied[i] = true;
        }
        // The commit point: switching needs every node of the plan (but the
        // down sources of a forced removal, whose ranges it drops). A node that went
        // down during the copy would pause the change right after committing
        // it; roll back instead, while that is still possible.
        if let Some(down) = active.first_down() {
            let stop = Stop::Failed(ClusterError::Unavailable { node: down });
            return Err(self.roll_back(membership, &active, &routing, ranges, stop));
        }
        self.finish(membership, active)
    }

    /// Copies range `i`, or, in a forced removal whose source is down
    /// (found before or during the copy), marks it to be dropped at the
    /// switch.
    fn copy_or_drop(&self, active: &mut Active, i: usize) -> Result<(), ClusterError> {
        if active.drops(i) {
            active.dropped[i] = true;
            return Ok(());
        }
        match self.copy_range(active, i) {
            Err(ClusterError::Unavailable { node }) if active.force && active.drops(i) => {
                warn!(node = %node, range = i, "node is down, the range will be dropped");
                active.dropped[i] = true;
                Ok(())
            }
            other => other,
        }
    }

    /// Removes the last node: nothing to move, its keys are dropped (only
    /// with `force` if it holds any).
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
        if node.is_down() && !force {
            return Err(ClusterError::NotStarted {
                op: ChangeKind::RemoveNode.as_str(),
                node: id.clone(),
                cause: Box::new(ClusterError::NodeDown { node: id.clone() }),
            });
        }
        // A forced removal drops whatever the node holds, down or not.
        let stripes: Vec<StripeWrite<'_>> = (0..node.stripe_count())
            .map(|i| node.lock_stripe_unchecked(i))
            .collect();
        let keys: usize = stripes.iter().map(|s| s.len()).sum();
        if keys > 0 && !force {
            return Err(ClusterError::LastNodeHoldsData {
                node: id.clone(),
                keys,
            });
        }
        let epoch = new.epoch();
        self.record_end(&new, 0)
            .map_err(|e| ClusterError::NotStarted {
                op: ChangeKind::RemoveNode.as_str(),
                node: id.clone(),
                cause: Box::new(e),
            })?;
        self.routing.publish(
            Publish::Empty,
            Routing {
                ring: new,
                migration: None,
                nodes: BTreeMap::new(),
            },
        );
        drop(stripes);
        self.forget_node(id);
        if keys > 0 {
            warn!(node = %id, keys, "last node removed, its keys are dropped");
        }
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

    /// Rolls back a change that stopped after starting to copy its first
    /// `touched` ranges: republishes the old membership under a new epoch
    /// and clears the targets' copies. Returns the error to give the caller;
    /// a panic continues instead, once the rollback is done.
    fn roll_back(
        &self,
        membership: &mut Membership,
        active: &Active,
        old: &Routing,
        touched: usize,
        stop: Stop,
    ) -> ClusterError {
        // The abandoned ring's epoch has been seen (routing published it at
        // the start); give the restored membership the next one, so that
        // every epoch names exactly one ring.
        let epoch = active.new_ring.epoch() + 1;
        let restored = Arc::new(old.ring.with_epoch(epoch));
        // If this record is lost, a restart rolls the change back all the
        // same, to the same ring: nothing was switched.
        if let Err(e) = self.record_end(&restored, 0) {
            warn!(error = %e, "the rollback could not be recorded; a restart will roll back again");
        }
        self.routing.publish(
            Publish::RollBack,
            Routing {
                ring: restored,
                migration: None,
                nodes: old.nodes.clone(),
            },
        );
        if active.kind == ChangeKind::AddNode {
            self.forget_node(&active.node);
        }
        // Targets may hold partial copies of ranges they do not own. Clients
        // never read them; clear them so counts and later copies stay exact.
        for i in 0..touched {
            if active.joins(i) {
                continue; // the joining node is discarded whole
            }
            let ends = active.endpoints(i);
            let cleared = if ends.target.is_down() {
                Err(Stop::Failed(ClusterError::Unavailable {
                    node: ends.target.id.clone(),
                }))
            } else {
                catch(|| drain(&ends.target, ends.range, self.config.copy_batch))
            };
            if let Err(e) = cleared {
                warn!(node = %ends.target.id, range = ?ends.range, error = %e.describe(), "partial copy kept for repair");
                self.record_stale(membership, &ends.target, ends.range);
            }
        }
        warn!(op = %active.kind, node = %active.node, error = %stop.describe(), "rebalance rolled back");
        let (op, node) = (active.kind.as_str(), active.node.clone());
        stop.into_error(|cause| ClusterError::RolledBack {
            op,
            node,
            cause: Box::new(cause),
        })
    }
}
