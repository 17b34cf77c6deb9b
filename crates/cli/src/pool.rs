//! A bounded pool of threads for the lanes of a `concurrently` block.
//!
//! One thread per lane does not scale: a block of 20,000 lanes would need
//! 20,000 threads (the kernel runs out of memory mappings long before). The
//! pool runs every lane on at most [`MAX_LANE_THREADS`] threads: the threads
//! are released together, and each takes the next lane in script order as
//! soon as it has finished its previous one.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most threads that run the lanes of one block.
pub const MAX_LANE_THREADS: usize = 64;

/// Runs `run(i)` for every `i` in `0..count` on at most `threads` threads
/// (at least one), started together; returns the results in index order.
///
/// Lanes never wait for one another (the script language has no way to), so
/// running more lanes than threads cannot deadlock.
pub(crate) fn run_all<T: Send>(
    count: usize,
    threads: usize,
    run: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let threads = threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let barrier = Barrier::new(threads);
    let mut indexed: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let mut done = Vec::new();
                    loop {
                        // Relaxed: the counter only hands out distinct
                        // indexes; the results travel back through `join`.
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return done;
                        }
                        done.push((i, run(i)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a lane thread panicked"))
            .collect()
    });
    indexed.sort_unstable_by_key(|&(i, _)| i);
    indexed.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn runs_every_item_once_in_order_on_bounded_threads() {
        let threads_seen = Mutex::new(HashSet::new());
        let results = run_all(20_000, 8, |i| {
            threads_seen
                .lock()
                .expect("no panic while held")
                .insert(std::thread::current().id());
            i * 2
        });
        assert_eq!(results, (0..20_000).map(|i| i * 2).collect::<Vec<_>>());
        let seen = threads_seen.lock().expect("no panic while held").len();
        assert!((1..=8).contains(&seen), "{seen} threads");
    }

    #[test]
    fn the_first_items_start_together() {
        // With as many threads as items, every item runs at the same time:
        // each waits until all have started.
        let started = AtomicUsize::new(0);
        let results = run_all(4, 4, |i| {
            started.fetch_add(1, Ordering::SeqCst);
            while started.load(Ordering::SeqCst) < 4 {
                std::thread::yield_now();
            }
            i
        });
        assert_eq!(results, vec![0, 1, 2, 3]);
    }

    #[test]
    fn no_items_and_zero_threads() {
        assert!(run_all(0, 4, |i| i).is_empty());
        assert_eq!(run_all(3, 0, |i| i), vec![0, 1, 2]);
    }
}
