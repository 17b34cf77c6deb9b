//! Memory limits: `maxmemory`, the eviction policy, and Redis's sampled
//! eviction.
//!
//! A write that may add memory is admitted only if `used_memory` (an O(1)
//! read of the cluster's counter) plus what it adds stays within
//! `maxmemory`. If not, the policy evicts keys first, one at a time: each
//! round samples [`EVICTION_SAMPLES`] candidates (keys with an expiry for
//! the `volatile-*` policies, from the stripe's volatile index; any key for
//! the `allkeys-*` ones, read from a random token on), and deletes the best
//! one through the ordinary client delete (authority check, dirty-key log,
//! counts), never while holding another lock. With `noeviction`, or when no
//! candidate is left, the write fails with
//! [`ClusterError::OutOfMemory`] and writes nothing.
//!
//! LRU is approximated by write recency: an entry's version grows with
//! every write, and reads do not update anything (a read holds only a
//! shared lock and the entry is not rewritten), so `*-lru` evicts the
//! sampled key written longest ago.

use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use ringkv_ring::Token;

use crate::ClusterError;
use crate::cluster::Cluster;
use crate::entry::Entry;
use crate::expire::splitmix;

/// Candidates sampled per eviction, as Redis's `maxmemory-samples`
/// default.
pub const EVICTION_SAMPLES: usize = 5;

/// Rounds of sampling one write may spend evicting before it gives up.
const MAX_EVICTION_ROUNDS: usize = 64;

/// What a write over `maxmemory` does (Redis's `maxmemory-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// Refuse the write ([`ClusterError::OutOfMemory`]).
    #[default]
    NoEviction,
    /// Evict the sampled key written longest ago.
    AllKeysLru,
    /// As `AllKeysLru`, among keys with an expiry.
    VolatileLru,
    /// Evict a random key.
    AllKeysRandom,
    /// Evict the sampled key with an expiry that expires soonest.
    VolatileTtl,
}

impl EvictionPolicy {
    /// Every policy, in Redis's naming order.
    pub const ALL: [EvictionPolicy; 5] = [
        EvictionPolicy::NoEviction,
        EvictionPolicy::AllKeysLru,
        EvictionPolicy::VolatileLru,
        EvictionPolicy::AllKeysRandom,
        EvictionPolicy::VolatileTtl,
    ];

    /// Redis's name (`noeviction`, `allkeys-lru`, ...), for `CONFIG GET`.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllKeysRandom => "allkeys-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }

    fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru | EvictionPolicy::VolatileTtl
        )
    }
}

impl FromStr for EvictionPolicy {
    type Err = ClusterError;

    /// Parses Redis's name, case-insensitively (for `CONFIG SET`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EvictionPolicy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ClusterError::Config(format!(
                    "unknown maxmemory policy `{s}`; use one of noeviction, allkeys-lru, volatile-lru, allkeys-random, volatile-ttl"
                ))
            })
    }
}

/// The limit and policy, changeable at run time without a lock.
#[derive(Debug)]
pub(crate) struct Limits {
    maxmemory: AtomicU64,
    policy: AtomicU8,
}

impl Limits {
    pub(crate) fn new(maxmemory: u64, policy: EvictionPolicy) -> Limits {
        Limits {
            maxmemory: AtomicU64::new(maxmemory),
            policy: AtomicU8::new(index_of(policy)),
        }
    }
}

fn index_of(policy: EvictionPolicy) -> u8 {
    EvictionPolicy::ALL
        .iter()
        .position(|p| *p == policy)
        .expect("ALL lists every policy") as u8
}

impl Cluster {
    /// The memory limit in bytes (0: none).
    pub fn maxmemory(&self) -> u64 {
        self.limits.maxmemory.load(Ordering::Relaxed)
    }

    /// Sets the memory limit in bytes (0: none), at run time (Redis's
    /// `CONFIG SET maxmemory`). Keys over a lowered limit are evicted by
    /// the next writes, as in Redis.
    pub fn set_maxmemory(&self, bytes: u64) {
        self.limits.maxmemory.store(bytes, Ordering::Relaxed);
    }

    /// The eviction policy.
    pub fn maxmemory_policy(&self) -> EvictionPolicy {
        EvictionPolicy::ALL[usize::from(self.limits.policy.load(Ordering::Relaxed))]
    }

    /// Sets the eviction policy, at run time (Redis's
    /// `CONFIG SET maxmemory-policy`).
    ///
    /// ```
    /// use ringkv_cluster::{Cluster, ClusterError, EvictionPolicy};
    /// let cluster = Cluster::default();
    /// cluster.add_node("n1")?;
    /// cluster.set_maxmemory(300);
    /// cluster.put("a", "x")?;
    /// let refused = cluster.put("b", vec![0u8; 400]);
    /// assert!(matches!(refused, Err(ClusterError::OutOfMemory { .. })));
    /// cluster.set_maxmemory_policy("allkeys-random".parse()?);
    /// cluster.put("c", "y")?; // fits
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn set_maxmemory_policy(&self, policy: EvictionPolicy) {
        self.limits
            .policy
            .store(index_of(policy), Ordering::Relaxed);
    }

    /// `used_memory` now, from the cluster's counter (O(1)).
    pub(crate) fn used_memory_now(&self) -> u64 {
        self.memory.load(Ordering::Relaxed).max(0) as u64
    }

    /// Whether a write that adds `growth` bytes fits under the limit.
    #[inline]
    pub(crate) fn fits(&self, growth: i64) -> bool {
        let max = self.maxmemory();
        max == 0 || growth <= 0 || self.used_memory_now().saturating_add(growth as u64) <= max
    }

    /// The error for a write that does not fit.
    pub(crate) fn out_of_memory(&self) -> ClusterError {
        ClusterError::OutOfMemory {
            used: self.used_memory_now(),
            maxmemory: self.maxmemory(),
        }
    }

    /// Evicts keys by the policy until a write adding `incoming` bytes
    /// fits, before the write takes any lock. Fails if the policy is
    /// `noeviction` or nothing more can be evicted.
    pub(crate) fn make_room(&self, incoming: u64) -> Result<(), ClusterError> {
        if self.maxmemory() == 0 {
            return Ok(());
        }
        let mut rounds = 0;
        while !self.fits(incoming as i64) {
            let policy = self.maxmemory_policy();
            if policy == EvictionPolicy::NoEviction || rounds == MAX_EVICTION_ROUNDS {
                return Err(self.out_of_memory());
            }
            rounds += 1;
            if let Some(key) = self.eviction_candidate(policy)?
                && self.delete(key)?
            {
                self.evicted_keys.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The best of up to [`EVICTION_SAMPLES`] sampled keys by `policy`.
    fn eviction_candidate(&self, policy: EvictionPolicy) -> Result<Option<Bytes>, ClusterError> {
        let routing = self.routing.load_full();
        let nodes: Vec<_> = routing.nodes.values().filter(|n| !n.is_down()).collect();
        let mut rng = self
            .expire_seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut best: Option<(u64, Bytes)> = None;
        let now = self.now_ms();
        // A few stripes per round, so a sparse node still yields samples.
        for _ in 0..EVICTION_SAMPLES * 4 {
            if nodes.is_empty() {
                break;
            }
            let node = nodes[(splitmix(&mut rng) % nodes.len() as u64) as usize];
            let stripe = (splitmix(&mut rng) % node.stripe_count() as u64) as usize;
            let sampled: Vec<(Bytes, Entry)> = {
                let guard = node.read_stripe_client(stripe)?;
                if policy.volatile_only() {
                    let n = guard.volatile_len();
                    (0..EVICTION_SAMPLES.min(n))
                        .filter_map(|_| {
                            let (token, key) =
                                guard.volatile_at((splitmix(&mut rng) % n as u64) as usize);
                            guard.get(token, &key).ok().flatten().map(|e| (key, e))
                        })
                        .collect()
                } else {
                    let mut page = Vec::new();
                    let part = node.split(0..=Token::MAX).nth(stripe).map(|(_, p)| p);
                    if let Some(part) = part {
                        let from =
                            *part.start() + splitmix(&mut rng) % (part.end() - part.start()).max(1);
                        let _ = guard.scan(from..=*part.end(), None, EVICTION_SAMPLES, &mut page);
                        if page.is_empty() {
                            let _ = guard.scan(part, None, EVICTION_SAMPLES, &mut page);
                        }
                    }
                    page.into_iter().map(|e| (e.key, e.entry)).collect()
                }
            };
            for (key, entry) in sampled {
                let score = match policy {
                    // Written longest ago first.
                    EvictionPolicy::AllKeysLru | EvictionPolicy::VolatileLru => entry.version,
                    // Expires soonest first; already expired ones first of all.
                    EvictionPolicy::VolatileTtl => entry.ttl_ms(now).unwrap_or(u64::MAX),
                    _ => splitmix(&mut rng),
                };
                if best.as_ref().is_none_or(|(b, _)| score < *b) {
                    best = Some((score, key));
                }
            }
            if best.is_some() && policy == EvictionPolicy::AllKeysRandom {
                break;
            }
        }
        Ok(best.map(|(_, key)| key))
    }
}
