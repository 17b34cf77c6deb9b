//! The transfer of one range: copy it to the target, switch its authority
//! to the target (or drop it, in a forced removal one of whose nodes is
//! down), and delete it from the source.
//!
//! Each function here is one step of [`crate::change`] and
//! [`crate::commit`], run with retries; none publishes routing.

use std::time::Instant;

use ringkv_ring::{TokenRange, key_token};
use tracing::debug;

use crate::ClusterError;
use crate::active::{Active, Held, Moved, add_held, held_total};
use crate::cluster::Cluster;
use crate::node::{Node, StripeWrite};
use crate::plan::Phase;
use crate::store::StoredEntry;

impl Cluster {
    /// Copies range `i` from its source to its target in batches (source
    /// stripe read lock, then target stripe write lock, never both).
    pub(crate) fn copy_range(&self, active: &mut Active, i: usize) -> Result<(), ClusterError> {
        let t0 = Instant::now();
        fault_point!(self, BeforeCopy, i, active);
        let ends = active.endpoints(i);
        let (source, target, range) = (&ends.source, &ends.target, ends.range);
        let batch_size = self.config.copy_batch;
        // A node that joins in this change holds nothing yet; any other
        // target may hold a stale copy of the range from an earlier failed
        // change, and every retry may find this change's partial copy.
        let joining = active.joins(i);
        let mut attempt = 0;
        let (moved, held) = self.retry("copy", i, || {
            attempt += 1;
            if attempt > 1 || !joining {
                drain(target, range, batch_size)?;
            }
            // The target's range is empty now: count what it gets.
            let mut moved = Moved::default();
            let mut held = Held::new();
            let mut batch: Vec<StoredEntry> = Vec::with_capacity(batch_size);
            let mut replaced = Vec::with_capacity(batch_size);
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
                            fault_point!(self, MidCopy, i, active);
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
                        for e in &batch {
                            moved.keys += 1;
                            moved.bytes += (e.key.len() + e.entry.value.len()) as i64;
                        }
                        // One store write per batch (one engine commit for
                        // a persistent store).
                        replaced.clear();
                        t.put_many(std::mem::take(&mut batch), &mut replaced)
                            .map_err(|e| target.store_error(e))?;
                        let new = replaced.iter().filter(|o| o.is_none()).count();
                        add_held(&mut held, stripe, new as i64);
                        if done {
                            break;
                        }
                    }
                }
            }
            Ok((moved, held))
        })?;
        debug!(from = %source.id, to = %target.id, ?range, keys = moved.keys, "range copied");
        active.moved[i] = Moved {
            time: t0.elapsed(),
            ..moved
        };
        active.held[i] = Some(held);
        Ok(())
    }

    /// Switches range `i` to its target: under the write locks of the
    /// range's stripes on both nodes, applies the dirty keys' current values
    /// to the target, moves the range's served-key count, and marks the
    /// range `Switched`.
    pub(crate) fn switch_range(&self, active: &mut Active, i: usize) -> Result<(), ClusterError> {
        let t0 = Instant::now();
        fault_point!(self, AfterCopy, i, active);
        let ends = active.endpoints(i);
        let (source, target, range, state) =
            (&ends.source, &ends.target, ends.range, ends.state(i));
        // Taken out while the switch runs: if a store call panics mid-way,
        // the count stays unknown (`None`) and the next attempt recounts.
        let mut held = active.held[i].take();
        let mut bytes = 0i64;
        let result = self.retry("switch", i, || {
            // Every stripe of the range on both sides, in the global lock
            // order (see `lock_both`): no client can touch the range now.
            let stripes = source.stripes_of(range);
            let (src, mut dst) = lock_both(source, target, |node| {
                stripes
                    .iter()
                    .map(|&k| node.write_stripe(k))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            let counted = match held.take() {
                Some(h) => h,
                None => count_range(target, &dst, &stripes, range, self.config.copy_batch)?,
            };
            let held = held.insert(counted);
            for key in state.dirty_keys() {
                let token = key_token(&key);
                let j = stripes
                    .binary_search(&source.stripe_of(token))
                    .expect("dirty keys lie in the range");
                let stripe = stripes[j];
                let t = &mut dst[j];
                // Each call's effect is counted as soon as it returns, so a
                // retry after a failed call starts from the true count.
                match src[j].get(token, &key).map_err(|e| source.store_error(e))? {
                    Some(v) => {
                        let (klen, vlen) = (key.len() as i64, v.value.len() as i64);
                        match t.put(token, key, v).map_err(|e| target.store_error(e))? {
                            None => {
                                add_held(held, stripe, 1);
                                bytes += klen + vlen;
                            }
                            Some(old) => bytes += vlen - old.value.len() as i64,
                        }
                    }
                    None => {
                        let removed = t.delete(token, &key).map_err(|e| target.store_error(e))?;
                        if let Some(old) = removed {
                            add_held(held, stripe, -1);
                            bytes -= (key.len() + old.value.len()) as i64;
                        }
                    }
                }
            }
            // The target's copy is complete: record the switch, after the
            // writes above and before any client can write to the target
            // (its locks are held), so a restart that sees the record sees
            // the complete copy, and one that does not has every write on
            // the source.
            self.record_switched(i)?;
            // The source's keys of the range and the target's are the same
            // set now: move their count with the authority.
            self.counts.transfer(|| {
                for &(stripe, n) in held.iter() {
                    source.add_served(stripe, -n);
                    target.add_served(stripe, n);
                }
            });
            state.set_phase(Phase::Switched);
            state.clear_dirty();
            Ok(())
        });
        let keys = held.as_ref().map(held_total);
        active.held[i] = held;
        result?;
        let m = &mut active.moved[i];
        m.keys = keys.expect("a switch that succeeded counted the range");
        m.bytes += bytes;
        m.time += t0.elapsed();
        Ok(())
    }

    /// Gives up range `i` of a forced removal whose source or target is
    /// down: the target serves the range empty from now on, and the keys
    /// the source served in it are dropped (with one copy per key, they are
    /// gone).
    pub(crate) fn drop_range(&self, active: &mut Active, i: usize) -> Result<(), ClusterError> {
        let ends = active.endpoints(i);
        let (source, target, range, state) =
            (&ends.source, &ends.target, ends.range, ends.state(i));
        let stripes = source.stripes_of(range);
        // Both sides' locks are taken whatever their health: the source's so
        // that no write lands between counting its keys and dropping them,
        // the target's to clear a copy it must not serve once back up.
        let (src, mut dst) = lock_both(source, target, |node| {
            Ok::<_, ClusterError>(
                stripes
                    .iter()
                    .map(|&k| node.lock_stripe_unchecked(k))
                    .collect::<Vec<StripeWrite<'_>>>(),
            )
        })?;
        let lost = count_range(source, &src, &stripes, range, self.config.copy_batch)?;
        clear_range(target, &mut dst, &stripes, range)?;
        // Switched to an empty target, as far as a restart is concerned.
        self.record_switched(i)?;
        self.counts.transfer(|| {
            for &(stripe, n) in &lost {
                source.add_served(stripe, -n);
            }
        });
        state.set_phase(Phase::Switched);
        state.clear_dirty();
        active.dropped[i] = true;
        active.held[i] = Some(Held::new());
        active.moved[i].keys = 0;
        active.moved[i].bytes = 0;
        let lost = held_total(&lost).max(0) as u64;
        active.keys_dropped += lost;
        debug!(from = %source.id, to = %target.id, ?range, keys = lost, "range dropped");
        Ok(())
    }
}

/// Locks the same stripes on two nodes with `lock` (which takes one
/// node's stripes in ascending order) in the global lock order: the node
/// whose id is lower first. Every holder of more than one stripe lock (a
/// switch, a dropped range, a multi-key transaction) takes its locks in
/// ascending `(node id, stripe)` order, so no cycle of waiters can form.
/// Returns the source's guards and the target's.
fn lock_both<'a, G, E>(
    source: &'a Node,
    target: &'a Node,
    mut lock: impl FnMut(&'a Node) -> Result<G, E>,
) -> Result<(G, G), E> {
    if source.id < target.id {
        let src = lock(source)?;
        Ok((src, lock(target)?))
    } else {
        let dst = lock(target)?;
        Ok((lock(source)?, dst))
    }
}

/// Deletes every key of `range` on `node` through `guards` (the node's
/// locked stripes `stripes`, ascending).
fn clear_range(
    node: &Node,
    guards: &mut [StripeWrite<'_>],
    stripes: &[usize],
    range: TokenRange,
) -> Result<(), ClusterError> {
    for iv in range.intervals() {
        for (stripe, part) in node.split(iv) {
            let j = stripes
                .binary_search(&stripe)
                .expect("the range's stripes are locked");
            guards[j]
                .delete_range(part)
                .map_err(|e| node.store_error(e))?;
        }
    }
    Ok(())
}

/// Counts the keys of `range` on `node`, per stripe, through `guards` (the
/// node's locked stripes `stripes`, ascending).
fn count_range(
    node: &Node,
    guards: &[StripeWrite<'_>],
    stripes: &[usize],
    range: TokenRange,
    page: usize,
) -> Result<Held, ClusterError> {
    let mut held = Held::new();
    let mut entries = Vec::with_capacity(page);
    for iv in range.intervals() {
        for (stripe, part) in node.split(iv) {
            let j = stripes
                .binary_search(&stripe)
                .expect("the range's stripes are locked");
            let mut after = None;
            loop {
                entries.clear();
                guards[j]
                    .scan(part.clone(), after, page, &mut entries)
                    .map_err(|e| node.store_error(e))?;
                add_held(&mut held, stripe, entries.len() as i64);
                match entries.last() {
                    Some(last) if entries.len() >= page => after = Some(last.token),
                    _ => break,
                }
            }
        }
    }
    Ok(held)
}

/// Deletes every key of `range` from `node`, at most `chunk` keys per lock
/// hold; the removed entries are freed after the lock is released.
/// Returns how many were deleted. Used on copies that are not served (a
/// target's partial copy, a source's copy after the switch), so the
/// served-key counts do not change.
pub(crate) fn drain(node: &Node, range: TokenRange, chunk: usize) -> Result<usize, ClusterError> {
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
