//! Cluster settings.

use std::time::Duration;

use ringkv_persist::FsyncPolicy;
use ringkv_ring::Placement;

use crate::ClusterError;
use crate::clock::SharedClock;
use crate::evict::EvictionPolicy;

/// Cluster settings: plain data with [`Default`] and [`ClusterConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// How the ring places keys. Default: balanced partitions (65,536),
    /// which keep every node within one partition of its weighted share
    /// (the busiest of 1,000 nodes at 1.007x the mean) and move only the
    /// joining or leaving node's keys. `Placement::RandomVnodes` places 256
    /// hashed tokens per unit of weight instead (busiest of 100 nodes about
    /// 1.15x the mean), which depends on the membership only.
    pub placement: Placement,
    /// Keys copied per batch during redistribution. A source's read lock is
    /// held for one batch at a time, so this bounds how long a migration
    /// can delay a writer on the source. Default 64: a blocked client then
    /// waits a few microseconds, short enough to win its lock while still
    /// spinning instead of sleeping, and the per-batch overhead (a lock and
    /// one tree descent) stays small next to 64 keys' copying (with 512,
    /// puts hitting a batch's stripe pushed the put p99.9 to ~13x idle).
    pub copy_batch: usize,
    /// Attempts per redistribution step (copy a range, switch it, clean it
    /// up) before the change is rolled back or paused. Default 3.
    pub max_attempts: u32,
    /// Pause before the first retry; doubled for each further one.
    /// Default 1 ms.
    pub retry_backoff: Duration,
    /// Lock stripes per node, a power of two from 1 to 4096: a node's keys
    /// are split by the top bits of their token into this many stores, each
    /// behind its own lock, so a redistribution step locks a sliver of the
    /// node and concurrent clients rarely share a lock. Default 64; with a
    /// data directory [`ClusterConfig::DISK_STRIPES`] serves better.
    pub stripes: usize,
    /// The clock expiry is measured against (unix ms). Default: the system
    /// clock; tests pass a [`ManualClock`](crate::ManualClock) so that keys
    /// expire without sleeping.
    pub clock: SharedClock,
    /// The memory limit in bytes of `used_memory` (Redis's `maxmemory`);
    /// 0, the default, means none. Changeable at run time with
    /// [`Cluster::set_maxmemory`](crate::Cluster::set_maxmemory).
    pub maxmemory: u64,
    /// What a write over `maxmemory` does (Redis's `maxmemory-policy`).
    /// Default: [`EvictionPolicy::NoEviction`].
    pub maxmemory_policy: EvictionPolicy,
    /// When writes reach the disk, for a cluster with a data directory
    /// ([`Cluster::open`](crate::Cluster::open)); ignored in memory.
    /// Default: [`FsyncPolicy::EverySec`].
    pub fsync: FsyncPolicy,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            placement: Placement::BALANCED,
            copy_batch: 64,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(1),
            stripes: 64,
            clock: SharedClock::default(),
            maxmemory: 0,
            maxmemory_policy: EvictionPolicy::NoEviction,
            fsync: FsyncPolicy::EverySec,
        }
    }
}

impl ClusterConfig {
    /// The stripes to use with a data directory. A write holds its stripes
    /// across the append to the write log, a system call, so a lock is held
    /// many times longer than in memory and 50 clients pipelining 16 keys
    /// each collide on 64 stripes almost every time (the workers park on
    /// each other); on 1,024 two such writes share a stripe about one time
    /// in five. Measured in `docs/BENCHMARKS.md` ("Persistence against
    /// Redis's AOF", section 8): SET -P 16
    /// with `everysec` +50%, no change in memory, so memory keeps 64.
    pub const DISK_STRIPES: usize = 1024;

    /// The default stripes of a cluster with a data directory or without.
    pub fn default_stripes(persistent: bool) -> usize {
        if persistent {
            ClusterConfig::DISK_STRIPES
        } else {
            ClusterConfig::default().stripes
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ClusterError> {
        self.placement.empty_ring()?;
        if self.copy_batch == 0 {
            return Err(ClusterError::Config("copy_batch must be at least 1".into()));
        }
        if !self.stripes.is_power_of_two() || self.stripes > 4096 {
            return Err(ClusterError::Config(format!(
                "stripes must be a power of two from 1 to 4096, got {}",
                self.stripes
            )));
        }
        if self.max_attempts == 0 {
            return Err(ClusterError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
