//! The data side of a range move between processes.
//!
//! - The source answers `RangeScan` and `RangeShip`: [`crate::source`].
//! - The target answers `RangePull` from the coordinator: a full copy (its
//!   old copy of the range cleared first), the last changes of fenced
//!   ranges, synced to disk before it is done, or the clearing of dropped
//!   ranges (a forced removal's), synced too. The pull runs as a job of
//!   the target's and each call waits a few seconds for it: a copy can take
//!   minutes, and a coordinator that waited for it in one call could not
//!   tell a slow copy from a lost request or a partitioned target.
//! - [`crate::cleanup`] deletes local copies the node no longer serves or
//!   receives, when a change ends and once after a start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ringkv_cluster::{Cluster, Entry};
use ringkv_meta::{Change, MetaState, Phase};
use ringkv_peer::Service;
use tracing::{debug, info};

use crate::Inner;
use crate::cleanup::{Pacer, Scope, Waiting, clear_dropped, delete_chunk, delete_where};
use crate::service::{decode_data as decode, encode_data as encode};
use crate::wire::{
    Cursor, Pull, PullAnswer, PullKind, Pulled, Scan, ScanPage, Ship, Shipment, unpack,
};

/// Entries per page of a copy (and of a cleanup's scan).
pub(crate) const PAGE: usize = 1024;

/// Bytes of keys and values per page or part of a shipment, about: well
/// under the peer frame limit whatever the values' sizes (one entry larger
/// than this still goes, alone).
pub(crate) const PAGE_BYTES: usize = 4 << 20;

/// How long a peer's range call waits for this node to reach its epoch.
const EPOCH_WAIT: Duration = Duration::from_secs(10);

/// The limit of one page or shipment call.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// This node's view once it has caught up with the log and reached
/// `epoch` ([`Inner::ready_at`]).
pub(crate) async fn ready_at(inner: &Inner, epoch: u64) -> Result<Arc<MetaState>, String> {
    inner.ready_at(epoch, EPOCH_WAIT).await?;
    Ok(inner.view())
}

pub(crate) fn the_change(state: &MetaState, change: u64) -> Result<&Change, String> {
    state
        .change
        .as_ref()
        .filter(|c| c.id == change)
        .ok_or_else(|| format!("change {change} is not in flight"))
}

/// How long one `RangePull` call waits for its pull before it answers
/// [`PullAnswer::Running`].
pub(crate) const PULL_POLL: Duration = Duration::from_secs(5);

/// A pull running, or ended, on this node.
pub(crate) struct PullJob {
    done: tokio::sync::watch::Receiver<Option<Result<Pulled, String>>>,
    task: tokio::task::AbortHandle,
    /// Set to stop a copy at its next wait for its source (a page call,
    /// the pace): the coordinator dropped ranges it copies.
    cancel: tokio::sync::watch::Sender<bool>,
}

impl PullJob {
    pub(crate) fn stop(self) {
        self.task.abort();
    }
}

/// `RangePull`: starts the pull `request` asks for, or finds it running
/// or ended (a coordinator asks again after `Running`, a lost answer, or a
/// change of leader), and waits at most [`PULL_POLL`] for its end. An
/// ended pull is kept until another starts, so an answer lost on its way
/// back is given again rather than redone.
pub(crate) async fn pull_call(inner: &Arc<Inner>, request: Pull) -> Result<PullAnswer, String> {
    let mut done = {
        let mut jobs = inner.pulls.lock();
        match jobs.get(&request) {
            Some(job) => job.done.clone(),
            None => {
                if request.kind == PullKind::Clear {
                    // Ranges this node was copying were dropped (their
                    // source is down): a copy still waiting for that source
                    // holds the moves lock until its call's limit (30 s),
                    // and the clear waits for that lock. Stop it at its
                    // wait; the page being written is finished first.
                    for (running, job) in jobs.iter() {
                        if running.change == request.change && running.kind == PullKind::Copy {
                            job.cancel.send_replace(true);
                        }
                    }
                }
                jobs.retain(|_, job| {
                    let running = job.done.borrow().is_none();
                    if !running {
                        job.task.abort();
                    }
                    running
                });
                let (tx, rx) = tokio::sync::watch::channel(None);
                let (cancel, cancelled) = tokio::sync::watch::channel(false);
                let job = {
                    let inner = Arc::clone(inner);
                    let request = request.clone();
                    tokio::spawn(async move {
                        let result = pull(&inner, request, cancelled).await;
                        let _ = tx.send(Some(result));
                    })
                };
                jobs.insert(
                    request.clone(),
                    PullJob {
                        done: rx.clone(),
                        task: job.abort_handle(),
                        cancel,
                    },
                );
                rx
            }
        }
    };
    let ended = match tokio::time::timeout(PULL_POLL, done.wait_for(Option::is_some)).await {
        Ok(Ok(result)) => result.clone().expect("waited for it"),
        Ok(Err(_)) => return Err("the pull was stopped (the node is stopping)".into()),
        Err(_) => return Ok(PullAnswer::Running),
    };
    match ended {
        Ok(pulled) => Ok(PullAnswer::Done(pulled)),
        // A failed pull is reported once: the next call starts afresh.
        Err(e) => {
            let mut jobs = inner.pulls.lock();
            if jobs
                .get(&request)
                .is_some_and(|j| j.done.same_channel(&done))
            {
                jobs.remove(&request);
            }
            Err(e)
        }
    }
}

/// The target's pull, as the coordinator asks.
async fn pull(
    inner: &Arc<Inner>,
    request: Pull,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<Pulled, String> {
    let asked = std::time::Instant::now();
    let _moves = {
        // A paced cleanup holding the lock stops resting meanwhile.
        let _waiting = Waiting::new(&inner.cleaning);
        inner.moves.lock().await
    };
    let locked = asked.elapsed();
    // The last changes go onto a copy this process made: without one (it
    // restarted), say so now rather than after catching up, as fenced
    // ranges hold their writes meanwhile.
    if request.kind == PullKind::LastChanges
        && !inner
            .copied
            .lock()
            .keys()
            .any(|(change, _)| *change == request.change)
    {
        return Err("recopy: this node holds no copy for the change (it restarted)".into());
    }
    let state = ready_at(inner, request.epoch).await?;
    let change = the_change(&state, request.change)?;
    debug!(node = %inner.me, change = change.id, epoch = request.epoch, kind = ?request.kind, lock_us = locked.as_micros() as u64, waited_us = asked.elapsed().as_micros() as u64, "rebalance: pulling");
    let want = match request.kind {
        PullKind::Copy => Phase::Copying,
        PullKind::LastChanges => Phase::Fenced,
        PullKind::Clear => Phase::Dropped,
    };
    for &i in &request.ranges {
        let r = change.ranges.get(i).ok_or("no such range in the change")?;
        if r.to != inner.me || r.phase != want {
            return Err(format!(
                "range {i} is not {want:?} towards node {}",
                inner.me
            ));
        }
    }
    let mut pulled = Pulled::default();
    let mut by_source: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in &request.ranges {
        by_source
            .entry(change.ranges[i].from.clone())
            .or_default()
            .push(i);
    }
    if request.kind == PullKind::Clear {
        pulled.deleted = clear_dropped(inner, &state, &request.ranges).await?;
    } else if request.kind == PullKind::LastChanges {
        // The sources ship at once: writes to every fenced range wait
        // until the last of them has answered and the switch applied.
        let ships = by_source
            .iter()
            .map(|(source, ranges)| ship_from(inner, &state, change, source, ranges));
        for result in futures::future::join_all(ships).await {
            let done = result?;
            pulled.keys += done.keys;
            pulled.deleted += done.deleted;
            pulled.bytes += done.bytes;
        }
    } else {
        // An earlier attempt may have left part of a copy: clear the
        // ranges first, in one pass over the local keys.
        let cluster = Arc::clone(&inner.cluster);
        let pulling: std::collections::HashSet<usize> = request.ranges.iter().copied().collect();
        // Only the ranges pulled can hold a copy to clear: read in the
        // change's (token) order.
        let ranges = request
            .ranges
            .iter()
            .map(|&i| change.ranges[i].range())
            .collect();
        let plan = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            let change = plan.change.as_ref().expect("checked above");
            delete_where(&Scope::Ranges(ranges), &mut Pacer::full(), |tokens| {
                delete_chunk(&cluster, tokens, |token| {
                    change.find(token).is_some_and(|i| pulling.contains(&i))
                })
            })
        })
        .await
        .map_err(|e| e.to_string())??;
        // Every source at once, each with its next page in flight while
        // the current one is written: a copy is a chain of round trips,
        // and one source at a time left both cores idle a third of the
        // time. All of them end before this returns (no write of a
        // failed pull goes on behind the next attempt's clearing).
        let rate = inner.rebalance_rate.map(|rate| Rate {
            began: tokio::time::Instant::now(),
            rate,
            copied: std::sync::atomic::AtomicU64::new(0),
        });
        // Once one fails the pull fails: the others stop at their next
        // page (the page being written is finished).
        let failed = std::sync::atomic::AtomicBool::new(false);
        let copies = by_source.keys().map(|source| async {
            let copied = copy_from(
                inner,
                &state,
                change,
                source,
                rate.as_ref(),
                &failed,
                &cancel,
            )
            .await;
            if copied.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            copied
        });
        let mut errors = Vec::new();
        for result in futures::future::join_all(copies).await {
            match result {
                Ok(done) => {
                    pulled.keys += done.keys;
                    pulled.bytes += done.bytes;
                }
                Err(e) => errors.push(e),
            }
        }
        // The failure itself, not the others' "stopped".
        if let Some(e) = errors
            .iter()
            .find(|e| *e != STOPPED && *e != CANCELLED)
            .or(errors.first())
        {
            return Err(e.clone());
        }
    }
    info!(
        node = %inner.me,
        change = change.id,
        ranges = request.ranges.len(),
        kind = ?request.kind,
        keys = pulled.keys,
        deleted = pulled.deleted,
        bytes = pulled.bytes,
        "rebalance: pulled"
    );
    Ok(pulled)
}

fn peer_addr(state: &MetaState, node: &str) -> Result<String, String> {
    state
        .members
        .get(node)
        .map(|m| m.peer_addr.clone())
        .ok_or_else(|| format!("node {node} is not a member"))
}

/// A copy stopped because another copy of the same pull failed.
const STOPPED: &str = "stopped: another source's copy failed";

/// A copy stopped because the coordinator dropped ranges it copies.
const CANCELLED: &str = "stopped: the change dropped ranges of this copy (their source is down)";

/// Resolves once `cancel` is set (never if its job is gone).
async fn cancelled(cancel: &tokio::sync::watch::Receiver<bool>) {
    let mut cancel = cancel.clone();
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `--rebalance-rate` over the concurrent copies of one pull.
struct Rate {
    began: tokio::time::Instant,
    /// Keys a second.
    rate: u64,
    /// Keys copied so far, by every source's copy.
    copied: std::sync::atomic::AtomicU64,
}

impl Rate {
    /// Waits until `keys` more copied keys keep the pull within its rate.
    async fn pace(&self, keys: u64) {
        let copied = self.copied.fetch_add(keys, Ordering::Relaxed) + keys;
        let due = Duration::from_secs_f64(copied as f64 / self.rate as f64);
        tokio::time::sleep_until(self.began + due).await;
    }
}

/// The last changes of `ranges` (fenced) from `source`, onto this node's
/// copy: shipments of the writes the source recorded since its copy, each
/// applied before the next is asked for.
async fn ship_from(
    inner: &Arc<Inner>,
    state: &MetaState,
    change: &Change,
    source: &str,
    ranges: &[usize],
) -> Result<Pulled, String> {
    let tracker = inner
        .copied
        .lock()
        .get(&(change.id, source.to_string()))
        .copied()
        .ok_or("recopy: this node holds no copy from the source (it restarted)")?;
    let addr = peer_addr(state, source)?;
    let mut pulled = Pulled::default();
    let mut after = None;
    loop {
        let body = encode(&Ship {
            change: change.id,
            ranges: ranges.to_vec(),
            epoch: state.epoch,
            tracker,
            after: after.take(),
        });
        let answer = inner
            .transport
            .call(&addr, Service::RangeShip, body, CALL_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        let shipment: Shipment = decode(&answer)?;
        let more = shipment.more;
        after = shipment.entries.last().map(|(k, _)| k.clone());
        let cluster = Arc::clone(&inner.cluster);
        let done = tokio::task::spawn_blocking(move || apply_shipment(&cluster, shipment))
            .await
            .map_err(|e| e.to_string())??;
        pulled.keys += done.keys;
        pulled.deleted += done.deleted;
        pulled.bytes += done.bytes;
        if !more {
            return Ok(pulled);
        }
    }
}

/// Copies the ranges of `change` moving from `source` to this node, a page
/// at a time, the next page's call in flight while a page is written; then
/// records which recording of the source's writes the copy came from.
async fn copy_from(
    inner: &Arc<Inner>,
    state: &MetaState,
    change: &Change,
    source: &str,
    rate: Option<&Rate>,
    failed: &std::sync::atomic::AtomicBool,
    cancel: &tokio::sync::watch::Receiver<bool>,
) -> Result<Pulled, String> {
    let (node, change) = (&change.node, change.id);
    inner.copied.lock().remove(&(change, source.to_string()));
    let addr = peer_addr(state, source)?;
    let read = |cursor: Option<Cursor>| {
        let body = encode(&Scan {
            change,
            target: inner.me.clone(),
            epoch: state.epoch,
            cursor,
            count: PAGE,
        });
        let addr = addr.clone();
        async move {
            let call = inner
                .transport
                .call(&addr, Service::RangeScan, body, CALL_LIMIT);
            let answer = tokio::select! {
                answer = call => answer.map_err(|e| e.to_string())?,
                () = cancelled(cancel) => return Err(CANCELLED.to_string()),
            };
            decode::<ScanPage>(&answer)
        }
    };
    let mut pulled = Pulled::default();
    let mut tracker = None;
    let mut page = read(None).await?;
    loop {
        if failed.load(Ordering::Relaxed) {
            return Err(STOPPED.into());
        }
        if *tracker.get_or_insert(page.tracker) != page.tracker {
            return Err("the source restarted during the copy; copy again".into());
        }
        let cluster = Arc::clone(&inner.cluster);
        let entries = std::mem::take(&mut page.entries);
        let write = async move {
            tokio::task::spawn_blocking(move || write_page(&cluster, entries))
                .await
                .map_err(|e| e.to_string())?
        };
        let next = page.next.map(|cursor| read(Some(cursor)));
        // Both are awaited whatever either gives: the write has ended when
        // this returns.
        let (done, next) = match next {
            Some(next) => {
                let (done, next) = tokio::join!(write, next);
                (done?, Some(next?))
            }
            None => (write.await?, None),
        };
        if done.keys > 0 {
            crate::fault::reached("copy-page", node);
        }
        pulled.keys += done.keys;
        pulled.bytes += done.bytes;
        if let Some(rate) = rate {
            tokio::select! {
                () = rate.pace(done.keys) => {}
                () = cancelled(cancel) => return Err(CANCELLED.into()),
            }
        }
        match next {
            Some(next) => page = next,
            None => break,
        }
    }
    let tracker = tracker.expect("at least one page was read");
    inner
        .copied
        .lock()
        .insert((change, source.to_string()), tracker);
    Ok(pulled)
}

fn decode_entry(bytes: Vec<u8>) -> Result<Entry, String> {
    Entry::decode(&Bytes::from(bytes)).map_err(|e| e.to_string())
}

/// Writes a page of a copy in one transaction (one engine commit). Each
/// key and value is copied out of the page into a buffer of its own: an
/// entry kept in the page's buffer would keep the whole page alive.
fn write_page(cluster: &Cluster, page: Bytes) -> Result<Pulled, String> {
    let mut decoded = Vec::new();
    let mut bytes = 0;
    for pair in unpack(&page) {
        let (key, entry) = pair?;
        bytes += (key.len() + entry.len()) as u64;
        let entry = Entry::decode_copied(entry).map_err(|e| e.to_string())?;
        decoded.push((Bytes::copy_from_slice(key), entry));
    }
    let keys = decoded.len() as u64;
    cluster.put_all(decoded).map_err(|e| e.to_string())?;
    Ok(Pulled {
        keys,
        deleted: 0,
        bytes,
    })
}

/// Applies a last shipment and syncs it: the coordinator switches the
/// ranges only after this answers, and the source deletes its copy only
/// after the switch.
fn apply_shipment(cluster: &Cluster, shipment: Shipment) -> Result<Pulled, String> {
    let mut pulled = Pulled::default();
    let mut writes = Vec::with_capacity(shipment.entries.len());
    for (key, entry) in shipment.entries {
        pulled.bytes += (key.len() + entry.as_ref().map_or(0, Vec::len)) as u64;
        let entry = entry.map(decode_entry).transpose()?;
        writes.push((Bytes::from(key), entry));
    }
    let names: Vec<Bytes> = writes.iter().map(|(k, _)| k.clone()).collect();
    let (keys, deleted) = cluster
        .transaction(names, |txn| {
            let (mut keys, mut deleted) = (0, 0);
            for (key, entry) in writes {
                match entry {
                    Some(entry) => {
                        txn.put(&key, entry);
                        keys += 1;
                    }
                    None => {
                        txn.delete(&key);
                        deleted += 1;
                    }
                }
            }
            (keys, deleted)
        })
        .map_err(|e| e.to_string())?;
    cluster.sync().map_err(|e| e.to_string())?;
    pulled.keys = keys;
    pulled.deleted = deleted;
    Ok(pulled)
}
