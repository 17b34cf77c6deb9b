//! Deleting local copies the node no longer serves or receives: after a
//! change ends, once after a start, and before a copy is made again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_cluster::Cluster;
use ringkv_meta::MetaState;
use ringkv_ring::{Token, TokenRange, key_token};
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

/// Which local keys a cleanup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every key: after a start, or after a cleanup that failed.
    All,
    /// The keys of these token ranges ([`crate::view::cleanup_ranges`] of
    /// the change that ended): the store is ordered by token, so a join
    /// that moved a quarter of a source's keys reads that quarter, and the
    /// new member reads nothing.
    Ranges(Vec<TokenRange>),
}

/// What the cleanup after the end of change `ended` reads, where `seen` is
/// the view published before (holding `ended`, unless another publish
/// came between), and `now` and `next_change` are the change in flight and
/// the next change's number in the view published at its end. A change
/// begun and ended between the two views (its number skipped) is not in
/// `seen`: then every key.
pub(crate) fn scope_after(
    seen: &MetaState,
    ended: u64,
    now: Option<u64>,
    next_change: u64,
    me: &str,
) -> Scope {
    let next = now.unwrap_or(next_change);
    match seen.change.as_ref() {
        Some(change) if change.id == ended && next == ended + 1 => {
            Scope::Ranges(crate::view::cleanup_ranges(change, me))
        }
        _ => Scope::All,
    }
}

/// Sleeps `REST` after each `BURST` of work when paced: called between
/// reads and transactions, holding no lock.
struct Pacer {
    pace: Pace,
    busy: Instant,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            busy: Instant::now(),
        }
    }

    fn rest(&mut self) {
        if self.pace == Pace::Background && self.busy.elapsed() >= BURST {
            std::thread::sleep(REST);
            self.busy = Instant::now();
        }
    }
}

/// Deletes `keys` in small transactions: each holds its keys' stripes,
/// which clients wait for, and a thread preempted while holding them (the
/// cleanup runs on every node at once, on cores the clients need) makes
/// them wait a scheduler slice.
fn delete_keys(cluster: &Cluster, keys: &[Bytes], pacer: &mut Pacer) -> Result<(), String> {
    for chunk in keys.chunks(DELETE_CHUNK) {
        cluster
            .transaction(chunk.to_vec(), |txn| {
                for key in chunk {
                    txn.delete(key);
                }
            })
            .map_err(|e| e.to_string())?;
        pacer.rest();
    }
    Ok(())
}

/// Deletes every local key of `scope` for which `doomed(token)` holds, a
/// page at a time.
pub(crate) fn delete_where(
    cluster: &Cluster,
    scope: &Scope,
    doomed: impl Fn(Token) -> bool,
    pace: Pace,
) -> Result<u64, String> {
    let mut deleted = 0;
    let mut pacer = Pacer::new(pace);
    let ranges = match scope {
        Scope::All => {
            let mut cursor = 0;
            loop {
                let page = cluster
                    .scan(cursor, PAGE, |key, _| doomed(key_token(key)))
                    .map_err(|e| e.to_string())?;
                deleted += page.keys.len() as u64;
                // A page read is work too: a node that gave away a quarter
                // of its keys reads four for each it deletes.
                pacer.rest();
                delete_keys(cluster, &page.keys, &mut pacer)?;
                if page.cursor == 0 {
                    return Ok(deleted);
                }
                cursor = page.cursor;
            }
        }
        Scope::Ranges(ranges) => ranges,
    };
    for interval in ranges.iter().flat_map(TokenRange::intervals) {
        let mut from = Some(*interval.start());
        while let Some(start) = from {
            let (entries, next) = cluster
                .scan_tokens(start..=*interval.end(), PAGE)
                .map_err(|e| e.to_string())?;
            let keys: Vec<Bytes> = entries
                .into_iter()
                .filter(|e| doomed(e.token))
                .map(|e| e.key)
                .collect();
            deleted += keys.len() as u64;
            pacer.rest();
            delete_keys(cluster, &keys, &mut pacer)?;
            from = next;
        }
    }
    Ok(deleted)
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

/// Deletes the local copies of `scope` this node neither serves nor
/// receives, by the latest view (under the moves lock, so no pull runs
/// meanwhile). After a failed cleanup, the next reads every key.
pub(crate) async fn cleanup(inner: Arc<Inner>, scope: Scope) {
    let _moves = inner.moves.lock().await;
    let scope = if inner.unswept.load(Ordering::Acquire) {
        Scope::All
    } else {
        scope
    };
    let state = inner.view();
    let me = inner.me.clone();
    let cluster = Arc::clone(&inner.cluster);
    let epoch = (state.change.is_none()).then_some(state.epoch);
    let all = scope == Scope::All;
    let done = tokio::task::spawn_blocking(move || {
        delete_where(
            &cluster,
            &scope,
            |token| !keeps(&state, &me, token),
            Pace::Background,
        )
    })
    .await;
    match &done {
        Ok(Ok(_)) if all => inner.unswept.store(false, Ordering::Release),
        Ok(Ok(_)) => {}
        _ => inner.unswept.store(true, Ordering::Release),
    }
    if let (Some(epoch), Ok(Ok(_))) = (epoch, &done) {
        inner.clean_at.store(epoch, Ordering::Release);
    }
    match done {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            info!(node = %inner.me, keys = n, all, "rebalance: deleted copies no longer served")
        }
        Ok(Err(e)) => {
            warn!(node = %inner.me, error = %e, "cleanup failed; every key is read at the next change")
        }
        Err(e) => warn!(node = %inner.me, error = %e, "cleanup panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::cleanup_ranges;
    use crate::view::fixtures::two_nodes;
    use ringkv_cluster::ClusterConfig;
    use ringkv_meta::Command;

    /// Node 2's join to node 1, begun: the state and the change's number.
    fn joining() -> (MetaState, u64) {
        let mut state = two_nodes();
        state
            .apply(&Command::BeginChange { node: "2".into() })
            .unwrap();
        let id = state.change.as_ref().unwrap().id;
        (state, id)
    }

    /// Fences and switches every range of change `id`, then finishes it.
    fn finish(state: &mut MetaState, id: u64) {
        let all: Vec<usize> = (0..state.change.as_ref().unwrap().ranges.len()).collect();
        for command in [
            Command::FenceRanges {
                change: id,
                ranges: all.clone(),
            },
            Command::SwitchRanges {
                change: id,
                ranges: all,
            },
            Command::FinishChange { change: id },
        ] {
            state.apply(&command).unwrap();
        }
    }

    fn ranges_of(state: &MetaState) -> Vec<TokenRange> {
        let change = state.change.as_ref().unwrap();
        change.ranges.iter().map(|r| r.range()).collect()
    }

    #[test]
    fn a_cleanup_reads_the_ranges_moved_from_the_node_or_not_yet_switched_to_it() {
        let (mut state, id) = joining();
        let all = ranges_of(&state);
        assert!(!all.is_empty());
        let change = state.change.clone().unwrap();
        // Before the switch an abort can end the change: the source keeps
        // its ranges, the target's copies go.
        assert_eq!(cleanup_ranges(&change, "1"), all);
        assert_eq!(cleanup_ranges(&change, "2"), all);
        assert!(cleanup_ranges(&change, "3").is_empty());
        // Once switched, the target serves them for good.
        let ranges: Vec<usize> = (0..all.len()).collect();
        state
            .apply(&Command::FenceRanges {
                change: id,
                ranges: ranges.clone(),
            })
            .unwrap();
        state
            .apply(&Command::SwitchRanges { change: id, ranges })
            .unwrap();
        let switched = state.change.clone().unwrap();
        assert_eq!(cleanup_ranges(&switched, "1"), all);
        assert!(cleanup_ranges(&switched, "2").is_empty());
    }

    #[test]
    fn a_change_not_seen_between_two_views_makes_the_cleanup_read_every_key() {
        let (mut state, id) = joining();
        let seen = state.clone();
        finish(&mut state, id);
        let ranges = Scope::Ranges(ranges_of(&seen));
        assert_eq!(scope_after(&seen, id, None, state.next_change, "1"), ranges);
        // The next change already in flight in the new view.
        assert_eq!(scope_after(&seen, id, Some(id + 1), id + 2, "1"), ranges);
        // A change begun and ended in between: its copies are not in
        // `seen`'s ranges.
        assert_eq!(scope_after(&seen, id, None, id + 2, "1"), Scope::All);
        assert_eq!(
            scope_after(&seen, id, Some(id + 2), id + 3, "1"),
            Scope::All
        );
        // A view without the change (another publish came between).
        assert_eq!(scope_after(&two_nodes(), id, None, id + 1, "1"), Scope::All);
    }

    #[test]
    fn a_cleanup_of_the_moved_ranges_deletes_what_a_cleanup_of_every_key_does() {
        let (mut state, id) = joining();
        let seen = state.clone();
        finish(&mut state, id);
        let moved = cleanup_ranges(seen.change.as_ref().unwrap(), "1");
        let keys: Vec<String> = (0..3000).map(|i| format!("key:{i}")).collect();
        let stale = keys
            .iter()
            .filter(|k| !crate::view::keeps(&state, "1", key_token(k.as_bytes())))
            .count();
        assert!(stale > 0 && stale < keys.len(), "{stale} of the keys moved");
        for scope in [Scope::All, Scope::Ranges(moved)] {
            let cluster = Cluster::new(ClusterConfig::default()).unwrap();
            cluster.add_node("1").unwrap();
            for key in &keys {
                cluster.put(key.clone(), "v").unwrap();
            }
            let deleted = delete_where(
                &cluster,
                &scope,
                |token| !crate::view::keeps(&state, "1", token),
                Pace::Background,
            )
            .unwrap();
            assert_eq!(deleted as usize, stale, "{scope:?}");
            for key in &keys {
                let kept = crate::view::keeps(&state, "1", key_token(key.as_bytes()));
                assert_eq!(
                    cluster.get(key.as_bytes()).unwrap().is_some(),
                    kept,
                    "{key} with {scope:?}"
                );
            }
        }
    }
}
