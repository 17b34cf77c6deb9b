//! Past the commit point: switch every range, publish the final routing,
//! clean up the sources. A change here only moves forward: a failure pauses
//! it for [`Cluster::resume`], a cleanup failure leaves a stale range for
//! [`Cluster::repair`].

use std::time::Instant;

use tracing::{info, warn};

use crate::ClusterError;
use crate::active::Active;
use crate::cluster::Cluster;
use crate::membership::Membership;
use crate::plan::Phase;
use crate::report::RebalanceReport;
use crate::routing::{Publish, Routing};
use crate::step::{Panic, Stop, catch};
use crate::transfer::drain;

impl Cluster {
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

    /// Switches every range not switched yet, publishes the final routing
    /// and cleans up. On a failure (or a panic) in a switch the change is
    /// kept in `membership.paused`; a panic then continues.
    pub(crate) fn finish(
        &self,
        membership: &mut Membership,
        mut active: Active,
    ) -> Result<RebalanceReport, ClusterError> {
        for i in 0..active.migration.ranges.len() {
            if active.migration.ranges[i].phase() >= Phase::Switched {
                continue;
            }
            let step = catch(|| {
                if active.drops(i) {
                    return self.drop_range(&mut active, i);
                }
                if !active.copied[i] {
                    // A change resumed after a restart: the source kept
                    // serving this range, so copy it (again) first.
                    self.copy_range(&mut active, i)?;
                    active.copied[i] = true;
                }
                match self.switch_range(&mut active, i) {
                    // A forced removal whose source went down just now:
                    // the range cannot be read, so it is dropped. A down
                    // target pauses the change as in any other one.
                    Err(ClusterError::Unavailable { .. }) if active.drops(i) => {
                        self.drop_range(&mut active, i)
                    }
                    other => other,
                }
            });
            if let Err(stop) = step {
                warn!(op = %active.kind, node = %active.node, error = %stop.describe(), "rebalance paused");
                let (op, node) = (active.kind.as_str(), active.node.clone());
                membership.paused = Some(active);
                return Err(stop.into_error(|cause| ClusterError::Paused {
                    op,
                    node,
                    cause: Box::new(cause),
                }));
            }
        }
        if let Some(leaving) = active.nodes.get(&active.node)
            && !active.final_nodes.contains_key(&active.node)
        {
            debug_assert_eq!(
                leaving.served(),
                0,
                "a leaving node serves nothing once switched"
            );
        }
        // Every range is switched: record the new ring and forget the
        // change in one write. If that fails the change stays paused (a
        // restart would complete it from its records all the same).
        if let Err(e) = self.record_end(&active.new_ring, active.migration.ranges.len()) {
            warn!(op = %active.kind, node = %active.node, error = %e, "rebalance paused: its end could not be recorded");
            let (op, node) = (active.kind.as_str(), active.node.clone());
            membership.paused = Some(active);
            return Err(ClusterError::Paused {
                op,
                node,
                cause: Box::new(e),
            });
        }
        self.routing.publish(
            Publish::Finish,
            Routing {
                ring: active.new_ring.clone(),
                migration: None,
                nodes: active.final_nodes.clone(),
            },
        );
        if !active.final_nodes.contains_key(&active.node) {
            // The leaving node's copies go all at once, by dropping its
            // data: that is the cleanup of every range it was the source
            // of, so the cleanup fault point of those ranges is here.
            #[cfg(feature = "fault-injection")]
            for (i, m) in active.migration.diff.moves.iter().enumerate() {
                if m.from == active.node {
                    fault_point!(self, DuringCleanup, i, &active);
                }
            }
            self.forget_node(&active.node); // the node left
        }
        let (pending, panicked) = self.clean_up(membership, &mut active);

        let report = active.report(pending);
        if report.keys_dropped > 0 {
            warn!(
                node = %report.node,
                keys_dropped = report.keys_dropped,
                "forced removal dropped keys it could not move past a down node; with one copy per key they are gone"
            );
        }
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
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
        Ok(report)
    }

    /// Deletes each moved range from its source (unless the source left).
    /// A range whose source is down is recorded as stale at once, without
    /// an attempt; one whose cleanup fails is recorded after its retries.
    /// Returns how many were recorded, and the first panic, if a `Store`
    /// panicked (its range is recorded too).
    fn clean_up(&self, membership: &mut Membership, active: &mut Active) -> (usize, Option<Panic>) {
        let mut pending = 0;
        let mut panicked = None;
        for i in 0..active.migration.ranges.len() {
            let t0 = Instant::now();
            let ends = active.endpoints(i);
            if !active.final_nodes.contains_key(&ends.source.id) {
                continue; // the leaving node is dropped whole
            }
            fault_point!(self, DuringCleanup, i, active);
            let cleaned = if ends.source.is_down() {
                Err(Stop::Failed(ClusterError::Unavailable {
                    node: ends.source.id.clone(),
                }))
            } else {
                catch(|| {
                    self.retry("cleanup", i, || {
                        drain(&ends.source, ends.range, self.config.copy_batch).map(drop)
                    })
                })
            };
            if let Err(stop) = cleaned {
                warn!(node = %ends.source.id, range = ?ends.range, error = %stop.describe(), "cleanup failed, kept for repair");
                pending += 1;
                self.record_stale(membership, &ends.source, ends.range);
                if let Stop::Panicked(p) = stop {
                    panicked.get_or_insert(p);
                }
            }
            active.moved[i].time += t0.elapsed();
        }
        (pending, panicked)
    }
}

/// Logs the summary line of a change (the `rebalance` event).
pub(crate) fn log_summary(report: &RebalanceReport) {
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

/// Milliseconds rounded to the microsecond, for readable logs.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
