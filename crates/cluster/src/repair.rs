//! Stale copies: ranges a node no longer serves whose keys could not be
//! deleted yet, and the repair that deletes them once the node is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringkv_ring::TokenRange;
use tracing::warn;

use crate::ClusterError;
use crate::cluster::Cluster;
use crate::membership::Membership;
use crate::node::Node;
use crate::step::{Panic, catch, panic_message};

/// A range whose stale copy on `node` could not be deleted.
pub(crate) struct StaleRange {
    pub(crate) node: Arc<Node>,
    pub(crate) range: TokenRange,
}

impl Cluster {
    /// Remembers a stale copy for [`Cluster::repair`].
    pub(crate) fn record_stale(
        &self,
        membership: &mut Membership,
        node: &Arc<Node>,
        range: TokenRange,
    ) {
        membership.pending_cleanups.push(StaleRange {
            node: node.clone(),
            range,
        });
        self.stale_ranges
            .store(membership.pending_cleanups.len(), Ordering::Release);
    }

    /// Deletes the stale copies on nodes that are up; returns how many stale
    /// ranges remain. A node that is down is skipped without an attempt. If
    /// a `Store` panics, its range stays pending, the others are still
    /// tried, and the panic then continues.
    pub(crate) fn repair_cleanups(&self, membership: &mut Membership) -> usize {
        let routing = self.routing.load();
        if routing.migration.is_some() {
            return membership.pending_cleanups.len();
        }
        let mut panicked: Option<Panic> = None;
        membership.pending_cleanups.retain(|stale| {
            let member = routing
                .nodes
                .get(&stale.node.id)
                .is_some_and(|n| Arc::ptr_eq(n, &stale.node));
            if !member {
                return false; // the node left; its data went with it
            }
            if stale.node.is_down() {
                return true;
            }
            match catch(|| self.delete_unowned(&stale.node, stale.range, &routing.ring)) {
                Ok(()) => false,
                Err(stop) => {
                    warn!(node = %stale.node.id, range = ?stale.range, error = %stop.describe(), "repair failed, kept");
                    if let crate::step::Stop::Panicked(p) = stop {
                        panicked.get_or_insert(p);
                    }
                    true
                }
            }
        });
        let left = membership.pending_cleanups.len();
        self.stale_ranges.store(left, Ordering::Release);
        if let Some(p) = panicked {
            warn!(panic = panic_message(&p), "a store panicked during repair");
            std::panic::resume_unwind(p);
        }
        left
    }

    /// Deletes from `range` on `node` the keys it does not own in `ring`
    /// (the range may have come back to it since it went stale).
    fn delete_unowned(
        &self,
        node: &Node,
        range: TokenRange,
        ring: &ringkv_ring::Ring,
    ) -> Result<(), ClusterError> {
        let chunk = self.config.copy_batch;
        range.intervals().try_for_each(|iv| {
            node.split(iv).try_for_each(|(stripe, part)| {
                // Page through the part, one stripe lock hold per batch,
                // like every other migrator step.
                let mut after = None;
                let mut entries = Vec::with_capacity(chunk);
                loop {
                    entries.clear();
                    let mut s = node.write_stripe(stripe)?;
                    s.scan(part.clone(), after, chunk, &mut entries)
                        .map_err(|e| node.store_error(e))?;
                    for e in &entries {
                        if ring.owner_of_token(e.token) != Some(&node.id) {
                            s.delete(e.token, &e.key)
                                .map_err(|err| node.store_error(err))?;
                        }
                    }
                    drop(s);
                    match entries.last() {
                        Some(last) if entries.len() >= chunk => after = Some(last.token),
                        _ => return Ok(()),
                    }
                }
            })
        })
    }
}
