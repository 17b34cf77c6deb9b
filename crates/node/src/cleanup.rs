//! Deleting local copies the node no longer serves or receives: after a
//! change ends, once after a start, and before a copy is made again.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringkv_cluster::Cluster;
use ringkv_meta::MetaState;
use ringkv_ring::{Token, TokenRange};
use tracing::{info, warn};

use crate::Inner;
use crate::view::{clears, keeps};

/// Keys a cleanup reads (and may delete) per hold of a stripe's lock.
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

/// What a cleanup needs to know while it runs, shared with pulls and the
/// node's stop.
#[derive(Debug, Default)]
pub struct Cleaning {
    /// A cleanup failed: the next one reads every key, not only the
    /// ranges of the change that ended.
    pub(crate) unswept: AtomicBool,
    /// Pulls waiting for the moves lock: a paced cleanup holding it
    /// stops resting. A pull of last changes is waited for by every write
    /// to the fenced ranges.
    pub(crate) pulls_waiting: AtomicUsize,
    /// The node is stopping: a cleanup ends at its next pause.
    pub(crate) stopping: AtomicBool,
}

/// Counts a pull as waiting for the moves lock while it lives (a pull
/// aborted while waiting is uncounted too).
pub(crate) struct Waiting<'a>(&'a Cleaning);

impl<'a> Waiting<'a> {
    pub(crate) fn new(cleaning: &'a Cleaning) -> Waiting<'a> {
        cleaning.pulls_waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(cleaning)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.pulls_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which local keys a cleanup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every key: after a start, after a cleanup that failed, or when a
    /// change went by unseen ([`scope_after`]).
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

/// How a cleanup shares the CPU: at full speed, or resting `REST` after
/// each `BURST` of work (between reads and transactions, holding no lock)
/// unless a pull waits for it; and whether to stop.
pub(crate) struct Pacer<'a> {
    cleaning: Option<&'a Cleaning>,
    busy: Instant,
    /// Rests taken.
    rests: u32,
}

impl<'a> Pacer<'a> {
    /// As fast as it can: a copy about to be made waits for it.
    pub(crate) fn full() -> Pacer<'static> {
        Pacer {
            cleaning: None,
            busy: Instant::now(),
            rests: 0,
        }
    }

    /// About a quarter of a core, while nothing waits for it.
    pub(crate) fn background(cleaning: &'a Cleaning) -> Pacer<'a> {
        Pacer {
            cleaning: Some(cleaning),
            busy: Instant::now(),
            rests: 0,
        }
    }

    fn rest(&mut self) -> Result<(), String> {
        let Some(cleaning) = self.cleaning else {
            return Ok(());
        };
        if cleaning.stopping.load(Ordering::Acquire) {
            return Err("the node is stopping".into());
        }
        if self.busy.elapsed() >= BURST && cleaning.pulls_waiting.load(Ordering::Acquire) == 0 {
            std::thread::sleep(REST);
            self.busy = Instant::now();
            self.rests += 1;
        }
        Ok(())
    }
}

/// Deletes the local keys of `scope` a chunk at a time, each by `chunk`
/// (given the tokens left of an interval; it deletes the doomed keys of
/// its first stripe run, [`DELETE_CHUNK`] keys at most, and says where to
/// go on: [`delete_chunk`]), resting as `pacer` says between chunks;
/// returns how many it deleted.
pub(crate) fn delete_where(
    scope: &Scope,
    pacer: &mut Pacer<'_>,
    chunk: impl Fn(RangeInclusive<Token>) -> Result<(usize, Option<Token>), String>,
) -> Result<u64, String> {
    let whole = [TokenRange::FULL];
    let ranges = match scope {
        Scope::All => &whole[..],
        Scope::Ranges(ranges) => &ranges[..],
    };
    let mut deleted = 0;
    for interval in ranges.iter().flat_map(TokenRange::intervals) {
        let mut from = Some(*interval.start());
        while let Some(start) = from {
            let (n, next) = chunk(start..=*interval.end())?;
            deleted += n as u64;
            pacer.rest()?;
            from = next;
        }
    }
    Ok(deleted)
}

/// Deletes the keys whose token is `doomed` among the first
/// [`DELETE_CHUNK`] keys of `tokens`' first stripe run, under its stripe's
/// write lock, which clients wait for: a thread preempted while holding it
/// (a cleanup runs on every node at once, on cores the clients need) makes
/// them wait a scheduler slice, so it holds few keys. Nothing is copied
/// out of the store: a node that gave away a quarter of its keys reads
/// only their tokens.
pub(crate) fn delete_chunk(
    cluster: &Cluster,
    tokens: RangeInclusive<Token>,
    doomed: impl Fn(Token) -> bool,
) -> Result<(usize, Option<Token>), String> {
    cluster
        .remove_tokens(tokens, DELETE_CHUNK, doomed)
        .map_err(|e| e.to_string())
}

/// Clears this node's copy of the dropped `ranges` of the change at
/// `state` (a forced removal gave their keys up; what is here is part of a
/// copy, or older copies) and syncs it, before they switch and this node
/// serves them empty: a sync, so that a power cut after the switch brings
/// none of it back. Each chunk is checked again against the view now,
/// under its read lock, as a client's request runs: a range switched
/// meanwhile (this is a late retry) keeps what clients wrote to it.
pub(crate) async fn clear_dropped(
    inner: &Arc<Inner>,
    state: &Arc<MetaState>,
    ranges: &[usize],
) -> Result<u64, String> {
    let change = state.change.as_ref().ok_or("no change in flight")?;
    let scope = Scope::Ranges(ranges.iter().map(|&i| change.ranges[i].range()).collect());
    let (worker, plan) = (Arc::clone(inner), Arc::clone(state));
    tokio::task::spawn_blocking(move || {
        let inner = &*worker;
        // Each chunk is judged by the view now too, under its read lock.
        let cleared = delete_where(&scope, &mut Pacer::full(), |tokens| {
            let view = inner.view.read();
            delete_chunk(&inner.cluster, tokens, |token| {
                clears(&plan, &inner.me, token) && clears(&view, &inner.me, token)
            })
        })?;
        inner.cluster.sync().map_err(|e| e.to_string())?;
        Ok(cleared)
    })
    .await
    .map_err(|e| e.to_string())?
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
    let scope = if inner.cleaning.unswept.load(Ordering::Acquire) {
        Scope::All
    } else {
        scope
    };
    let state = inner.view();
    let epoch = (state.change.is_none()).then_some(state.epoch);
    let all = scope == Scope::All;
    let worker = Arc::clone(&inner);
    let done = tokio::task::spawn_blocking(move || {
        let inner = &*worker;
        // A key is deleted only if this node neither serves nor receives
        // it by the view now either, judged under the view's read lock as
        // a client's request runs: a range given to this node after the
        // cleanup read its view (a forced removal's dropped range,
        // switched here once cleared, arrives without a copy) keeps what
        // clients wrote to it meanwhile.
        let mut pacer = Pacer::background(&inner.cleaning);
        delete_where(&scope, &mut pacer, |tokens| {
            let view = inner.view.read();
            delete_chunk(&inner.cluster, tokens, |token| {
                !keeps(&state, &inner.me, token) && !keeps(&view, &inner.me, token)
            })
        })
    })
    .await;
    match &done {
        Ok(Ok(_)) if all => inner.cleaning.unswept.store(false, Ordering::Release),
        Ok(Ok(_)) => {}
        _ => inner.cleaning.unswept.store(true, Ordering::Release),
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
    use ringkv_ring::key_token;

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

    /// A cluster of node 1's store holding `keys`.
    fn holding(keys: &[String]) -> Cluster {
        let cluster = Cluster::new(ClusterConfig::default()).unwrap();
        cluster.add_node("1").unwrap();
        for key in keys {
            cluster.put(key.clone(), "v").unwrap();
        }
        cluster
    }

    #[test]
    fn a_key_served_again_by_the_newest_view_outlives_a_cleanup_begun_before() {
        // The cleanup decided by the view after node 2 joined; since then
        // node 2 left again and node 1 serves everything (as after a forced
        // removal's dropped ranges): what a client wrote stays.
        let (mut then, id) = joining();
        finish(&mut then, id);
        let mut now = then.clone();
        now.apply(&Command::Leave {
            id: "2".into(),
            force: false,
        })
        .unwrap();
        now.apply(&Command::BeginChange { node: "2".into() })
            .unwrap();
        let left = now.change.as_ref().unwrap().id;
        finish(&mut now, left);
        let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        let cluster = holding(&keys);
        // A cleanup that read `then`, deleting by `at`.
        let clean = |at: &MetaState| {
            delete_where(&Scope::All, &mut Pacer::full(), |tokens| {
                delete_chunk(&cluster, tokens, |token| {
                    !crate::view::keeps(&then, "1", token) && !crate::view::keeps(at, "1", token)
                })
            })
            .unwrap()
        };
        assert_eq!(clean(&now), 0);
        assert!(
            keys.iter()
                .all(|k| cluster.get(k.as_bytes()).unwrap().is_some())
        );
        // By the view it read, the same cleanup deletes node 2's keys.
        assert!(clean(&then) > 0);
    }

    #[test]
    fn a_paced_cleanup_does_not_rest_while_a_pull_waits_and_ends_when_the_node_stops() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("key:{i}")).collect();
        let cluster = holding(&keys);
        let cleaning = Cleaning::default();
        let waiting = Waiting::new(&cleaning);
        let mut pacer = Pacer::background(&cleaning);
        let deleted = delete_where(&Scope::All, &mut pacer, |tokens| {
            delete_chunk(&cluster, tokens, |_| true)
        })
        .unwrap();
        assert_eq!((deleted, pacer.rests), (keys.len() as u64, 0));
        drop(waiting);
        assert_eq!(cleaning.pulls_waiting.load(Ordering::Acquire), 0);
        let cluster = holding(&keys);
        cleaning.stopping.store(true, Ordering::Release);
        let stopped = delete_where(&Scope::All, &mut Pacer::background(&cleaning), |tokens| {
            delete_chunk(&cluster, tokens, |_| true)
        });
        assert_eq!(stopped, Err("the node is stopping".to_string()));
        assert!(
            cluster.dbsize() > 0,
            "it stopped before deleting everything"
        );
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
            let cluster = holding(&keys);
            let cleaning = Cleaning::default();
            let deleted = delete_where(&scope, &mut Pacer::background(&cleaning), |tokens| {
                delete_chunk(&cluster, tokens, |token| {
                    !crate::view::keeps(&state, "1", token)
                })
            })
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
