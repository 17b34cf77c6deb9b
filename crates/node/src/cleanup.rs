//! Deleting local copies the node no longer serves or receives: after a
//! change ends, once after a start, and before a copy is made again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringkv_cluster::Cluster;
use ringkv_ring::{Token, key_token};
use tracing::{info, warn};

use crate::Inner;
use crate::moves::PAGE;
use crate::view::keeps;

/// Keys deleted per transaction by a cleanup.
const DELETE_CHUNK: usize = 64;

/// How a paced cleanup shares the CPU: after about `BURST` of work, it
/// sleeps `REST` (a quarter of one core at most). Copies no longer
/// served only cost memory until they go, while a cleanup at full speed
/// runs on every source at once, on the cores that serve the clients:
/// in a join on two cores it held every client request 5-11 ms for the
/// cleanup's 0.3-0.4 s (`docs/BENCHMARKS.md`, node section 12). It
/// sleeps between transactions, holding no lock: a lower thread
/// priority instead let a preempted cleanup hold clients' stripes
/// (section 10).
const BURST: Duration = Duration::from_millis(1);
const REST: Duration = Duration::from_millis(3);

/// Whether [`delete_where`] runs at full speed or paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// As fast as it can: a copy about to be made waits for it.
    Full,
    /// About a quarter of a core (`BURST`, `REST`): nothing waits for it.
    Background,
}

/// Deletes every local key for which `doomed(token)` holds, a page at a
/// time.
pub(crate) fn delete_where(
    cluster: &Cluster,
    doomed: impl Fn(Token) -> bool,
    pace: Pace,
) -> Result<u64, String> {
    let mut cursor = 0;
    let mut deleted = 0;
    let mut busy = Instant::now();
    // Between reads and transactions, holding no lock.
    let mut rest = || {
        if pace == Pace::Background && busy.elapsed() >= BURST {
            std::thread::sleep(REST);
            busy = Instant::now();
        }
    };
    loop {
        let page = cluster
            .scan(cursor, PAGE, |key, _| doomed(key_token(key)))
            .map_err(|e| e.to_string())?;
        deleted += page.keys.len() as u64;
        // A page read is work too: a node that gave away a quarter of
        // its keys reads four for each it deletes.
        rest();
        // Small transactions: each holds its keys' stripes, which clients
        // wait for, and a thread preempted while holding them (the cleanup
        // runs on every node at once, on cores the clients need) makes
        // them wait a scheduler slice.
        for chunk in page.keys.chunks(DELETE_CHUNK) {
            cluster
                .transaction(chunk.to_vec(), |txn| {
                    for key in chunk {
                        txn.delete(key);
                    }
                })
                .map_err(|e| e.to_string())?;
            rest();
        }
        if page.cursor == 0 {
            return Ok(deleted);
        }
        cursor = page.cursor;
    }
}

/// Whether the local store holds any key, expired ones included (its
/// count, without walking data).
pub(crate) fn holds_keys(cluster: &Cluster) -> bool {
    cluster.dbsize() > 0
}

/// Records that the store holds exactly the keys served at the current
/// view, as a cleanup that found nothing to delete does; for a store
/// known to be empty. A view with a change in flight records nothing.
pub(crate) fn mark_clean(inner: &Inner) {
    let state = inner.view();
    if state.change.is_none() {
        inner.clean_at.store(state.epoch, Ordering::Release);
    }
}

/// Deletes the local copies this node neither serves nor receives, by the
/// latest view (under the moves lock, so no pull runs meanwhile).
pub(crate) async fn cleanup(inner: Arc<Inner>) {
    let _moves = inner.moves.lock().await;
    let state = inner.view();
    let me = inner.me.clone();
    let cluster = Arc::clone(&inner.cluster);
    let epoch = (state.change.is_none()).then_some(state.epoch);
    let done = tokio::task::spawn_blocking(move || {
        delete_where(
            &cluster,
            |token| !keeps(&state, &me, token),
            Pace::Background,
        )
    })
    .await;
    if let (Some(epoch), Ok(Ok(_))) = (epoch, &done) {
        inner.clean_at.store(epoch, Ordering::Release);
    }
    match done {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            info!(node = %inner.me, keys = n, "rebalance: deleted copies no longer served")
        }
        Ok(Err(e)) => {
            warn!(node = %inner.me, error = %e, "cleanup failed; retried at the next change")
        }
        Err(e) => warn!(node = %inner.me, error = %e, "cleanup panicked"),
    }
}
