//! Active expiry: reclaims expired keys that nobody reads, by Redis's
//! sampled algorithm, a bounded amount of work per call.
//!
//! Reads never return an expired key (the lazy check in `ops.rs`); this
//! cycle frees the memory of those nobody touches. Each stripe keeps an
//! index of its keys with an expiry that samples uniformly in O(1) (see
//! `shard.rs`). A step locks one stripe (write), samples up to
//! [`SAMPLES_PER_STEP`] of its volatile keys, deletes the expired ones the
//! node serves, unlocks, and repeats on the same stripe while more than a
//! quarter of the sample had expired (then the stripe likely holds many
//! more); otherwise it moves to the next stripe. A cursor carries the
//! position over to the next call, so successive calls cover every stripe
//! of every node in turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::entry::Entry;
use crate::plan::Phase;

/// Volatile keys sampled per step, as Redis's
/// `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`.
pub const SAMPLES_PER_STEP: usize = 20;

/// How much work one [`Cluster::active_expire_cycle`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireBudget {
    /// Stop after sampling this many keys.
    pub max_samples: usize,
    /// Stop once this much time has passed (checked between steps, so one
    /// step of at most [`SAMPLES_PER_STEP`] keys may overrun it).
    pub max_time: Duration,
}

impl Default for ExpireBudget {
    /// Redis's fast cycle: 1 ms, and a sample cap that keeps a call short
    /// even on a fast machine.
    fn default() -> Self {
        ExpireBudget {
            max_samples: 20_000,
            max_time: Duration::from_millis(1),
        }
    }
}

/// What one [`Cluster::active_expire_cycle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireCycle {
    /// Volatile keys looked at.
    pub sampled: u64,
    /// Expired keys deleted (also added to
    /// [`ClusterStats::expired_keys`](crate::ClusterStats::expired_keys)).
    pub expired: u64,
    /// Bytes those keys held (also taken off `used_memory`).
    pub reclaimed_bytes: u64,
    /// Stripe steps taken.
    pub steps: u64,
    /// Whether the budget ended the call before every stripe was visited
    /// once: the server may call again sooner.
    pub budget_exhausted: bool,
}

impl Cluster {
    /// Deletes expired keys nobody has read, by sampling (see the module
    /// docs), within `budget`; returns what it did. The server calls it
    /// periodically (Redis runs its cycle 10 times a second); it is safe to
    /// call from any thread, concurrently with clients and membership
    /// changes. It visits every stripe of every node that is up at most
    /// once per call, starting where the last call stopped.
    ///
    /// Only keys a node serves are deleted here (under the stripe's write
    /// lock, after the same authority check as a client write, and logged
    /// as dirty if their range is being copied), so counts and moves stay
    /// exact; copies a node does not serve are cleared by redistribution.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ringkv_cluster::{Cluster, ClusterConfig, Entry, ExpireBudget, ManualClock};
    ///
    /// let clock = Arc::new(ManualClock::new(0));
    /// let cluster = Cluster::new(ClusterConfig { clock: clock.clone().into(), ..Default::default() })?;
    /// cluster.add_node("n1")?;
    /// for i in 0..100 {
    ///     cluster.put_entry(format!("k{i}"), Entry::string("v").expiring(Some(10)))?;
    /// }
    /// clock.set(11);
    /// let mut expired = 0;
    /// while expired < 100 {
    ///     expired += cluster.active_expire_cycle(ExpireBudget::default()).expired;
    /// }
    /// assert_eq!(cluster.stats().total_keys, 0);
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn active_expire_cycle(&self, budget: ExpireBudget) -> ExpireCycle {
        let t0 = Instant::now();
        let mut report = ExpireCycle::default();
        let routing = self.routing.load_full();
        let nodes: Vec<_> = routing.nodes.values().cloned().collect();
        let stripes = self.config.stripes;
        let total = nodes.len() * stripes;
        if total == 0 {
            return report;
        }
        let mut rng = self
            .expire_seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let start = self.expire_cursor.load(Ordering::Relaxed) % total;
        let mut visited = 0;
        while visited < total {
            let position = (start + visited) % total;
            let (node, stripe) = (&nodes[position / stripes], position % stripes);
            loop {
                if report.sampled as usize >= budget.max_samples || t0.elapsed() >= budget.max_time
                {
                    report.budget_exhausted = true;
                    self.expire_cursor.store(position, Ordering::Relaxed);
                    return report;
                }
                let Some((sampled, expired)) =
                    self.expire_step(node, stripe, &mut rng, &mut report)
                else {
                    break; // down, or nothing volatile here
                };
                report.steps += 1;
                // Redis's rule: go on with this stripe while more than a
                // quarter of the sample had expired.
                if expired * 4 <= sampled {
                    break;
                }
            }
            visited += 1;
        }
        self.expire_cursor.store(start, Ordering::Relaxed);
        report
    }

    /// One step on `stripe` of `node`: samples, deletes what expired.
    /// Returns (sampled, expired), or `None` if the node is down or the
    /// stripe holds no volatile key.
    fn expire_step(
        &self,
        node: &Arc<crate::node::Node>,
        stripe: usize,
        rng: &mut u64,
        report: &mut ExpireCycle,
    ) -> Option<(u64, u64)> {
        let mut freed: Vec<Entry> = Vec::new();
        // Most stripes of a cache without TTLs hold no volatile key: look
        // under the shared lock first, so clients' reads are not stopped.
        if node.read_stripe_client(stripe).ok()?.volatile_len() == 0 {
            return None;
        }
        let mut guard = node.client_write_stripe(stripe).ok()?;
        let n = guard.volatile_len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms();
        // The current routing, read under the lock: authority over this
        // stripe's tokens cannot move away from `node` while we hold it.
        let routing = self.routing.load();
        let (mut sampled, mut expired) = (0u64, 0u64);
        for _ in 0..SAMPLES_PER_STEP.min(n) {
            let len = guard.volatile_len();
            if len == 0 {
                break;
            }
            let (token, key) = guard.volatile_at((splitmix(rng) % len as u64) as usize);
            sampled += 1;
            let Ok(Some(entry)) = guard.get(token, &key) else {
                continue;
            };
            if !entry.is_expired(now) {
                continue;
            }
            let Ok((owner, range)) = routing.authority(token) else {
                continue;
            };
            if !Arc::ptr_eq(owner, node) {
                continue; // a copy this node does not serve
            }
            if let Some(range) = range
                && range.phase() == Phase::Copying
            {
                range.mark_dirty(&key);
            }
            if let Ok(Some(old)) = guard.delete(token, &key) {
                node.add_served(stripe, -1);
                expired += 1;
                report.reclaimed_bytes += old.footprint(key.len()) as u64;
                freed.push(old);
            }
        }
        drop(guard);
        drop(freed); // values are freed outside the lock
        report.sampled += sampled;
        report.expired += expired;
        self.expired_keys.fetch_add(expired, Ordering::Relaxed);
        Some((sampled, expired))
    }
}

/// SplitMix64: a small, fast generator for picking samples.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
