//! Time for expiry: the [`Clock`] trait, the system clock, and a manual
//! clock for tests, injected through
//! [`ClusterConfig::clock`](crate::ClusterConfig::clock).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in unix milliseconds. Expiry times are
/// absolute, so every node of a cluster reads one clock.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to: tests make keys expire without
/// sleeping. Share it in an `Arc` between the test and the config.
///
/// ```
/// use std::sync::Arc;
/// use ringkv_cluster::{Cluster, ClusterConfig, Entry, ManualClock};
///
/// let clock = Arc::new(ManualClock::new(1_000));
/// let cluster = Cluster::new(ClusterConfig {
///     clock: clock.clone().into(),
///     ..ClusterConfig::default()
/// })?;
/// cluster.add_node("n1")?;
/// cluster.put_entry("k", Entry::string("v").expiring(Some(1_100)))?;
/// clock.advance(101);
/// assert_eq!(cluster.get(b"k")?, None);
/// # Ok::<(), ringkv_cluster::ClusterError>(())
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(now_ms),
        }
    }

    /// Sets the time.
    pub fn set(&self, now_ms: u64) {
        self.now.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// The clock a cluster reads, shared: [`SystemClock`] by default. Two
/// handles are equal when they share one clock.
#[derive(Clone)]
pub struct SharedClock(Arc<dyn Clock>);

impl SharedClock {
    /// Wraps `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> SharedClock {
        SharedClock(clock)
    }

    /// The current time in unix milliseconds.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        SharedClock(Arc::new(SystemClock))
    }
}

impl<C: Clock> From<Arc<C>> for SharedClock {
    fn from(clock: Arc<C>) -> Self {
        SharedClock(clock)
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for SharedClock {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedClock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ms(), 5);
        c.advance(10);
        assert_eq!(c.now_ms(), 15);
        c.set(3);
        assert_eq!(c.now_ms(), 3);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
