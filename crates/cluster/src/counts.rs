//! Exact key counts: how many keys each node serves.
//!
//! A key is counted once, at the node that is its authority now (see
//! `Routing::authority`): during a migration a `Copying` range counts at its
//! source and a `Switched` range at its target; partial copies on a target
//! and stale copies awaiting cleanup are stored but not counted.
//!
//! Each node keeps a counter per lock stripe ([`Node::add_served`]), changed
//! in two places only, both under stripe write locks:
//! - a client write on the authority that creates a key (+1) or removes one
//!   (-1);
//! - the switch of a range, which moves the range's count from the source's
//!   stripes to the target's (the migrator tracks exactly how many keys of
//!   the range it put on the target), or drops it when a forced removal
//!   gives up a range whose source or target is down.
//!
//! A switch changes two nodes' counters; a reader summing them in between
//! would count the range twice or not at all. The migrator therefore wraps
//! every such transfer in a sequence lock ([`CountSeq`]), and
//! [`Cluster::stats`](crate::Cluster::stats) retries its sum until no
//! transfer overlapped it. With no client write in flight the total is
//! exact at every instant; with writes in flight it is off by at most the
//! writes in flight. Counting per range at query time instead would cost a
//! scan of every moving range per call, and could not be exact either
//! without taking their locks.
//!
//! [`Node::add_served`]: crate::node::Node::add_served

use std::sync::atomic::{AtomicU64, Ordering, fence};

/// A sequence lock over the nodes' served-key counters, written by the
/// single migrator (under the membership mutex), read by `stats()`.
#[derive(Debug, Default)]
pub(crate) struct CountSeq {
    /// Odd while a transfer of counts is in progress.
    seq: AtomicU64,
}

impl CountSeq {
    /// Runs `f`, which moves counts between nodes, so that readers never
    /// see half of it. Only the migrator calls this, one transfer at a time.
    pub(crate) fn transfer<R>(&self, f: impl FnOnce() -> R) -> R {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        // A panic inside `f` is not possible (it only adds to atomics), but
        // the guard keeps readers from spinning forever if it were.
        struct Close<'a>(&'a AtomicU64, u64);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.store(self.1, Ordering::Release);
            }
        }
        let _close = Close(&self.seq, s.wrapping_add(2));
        f()
    }

    /// Reads a consistent sum with `read`, retrying while a transfer ran.
    pub(crate) fn read<R>(&self, mut read: impl FnMut() -> R) -> R {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                std::thread::yield_now();
                continue;
            }
            let value = read();
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    #[test]
    fn readers_never_see_half_a_transfer() {
        let seq = CountSeq::default();
        let (a, b) = (AtomicI64::new(1_000), AtomicI64::new(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..20_000 {
                    seq.transfer(|| {
                        a.fetch_sub(1, Ordering::Relaxed);
                        b.fetch_add(1, Ordering::Relaxed);
                    });
                    seq.transfer(|| {
                        b.fetch_sub(1, Ordering::Relaxed);
                        a.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
            for _ in 0..20_000 {
                let sum = seq.read(|| a.load(Ordering::Relaxed) + b.load(Ordering::Relaxed));
                assert_eq!(sum, 1_000);
            }
        });
    }
}
