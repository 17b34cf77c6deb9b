//! The whole key space from any node: `SCAN`, `KEYS`, `RANDOMKEY` and
//! `DBSIZE` answer for every key of the cluster, as they do on `ringkv
//! serve`, although a node's own store holds only the keys it serves (and
//! copies in transit, which it does not serve).
//!
//! A `SCAN` cursor is a position in the ring's token order, as on `ringkv
//! serve`. A page is read by the nodes that serve the runs of tokens from
//! the cursor on ([`view::runs`]), each asked once for all of its runs, at
//! once; each reads under its view, so a run it no longer serves is not
//! read from its stale copy but answered as moved, and the page ends there.
//! So Redis's guarantee holds while nodes join and leave: a key present for
//! the whole scan is returned at least once.
//!
//! `DBSIZE` asks every node that serves keys for its count at one epoch,
//! and sums: exact at that epoch (a node holding no copy it does not serve
//! answers from its store's count, otherwise it counts what it serves).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use ringkv_cluster::Cluster;
use ringkv_meta::MetaState;
use ringkv_peer::{Service, TransportError};
use ringkv_ring::{Token, key_token};
use ringkv_server::route::ScanPage;

use crate::Inner;
use crate::service::{decode_data, encode_data};
use crate::view::{self, run_end};
use crate::wire::{Counted, KeysPage, KeysRequest};

/// Runs of [`view::run_end`] one page looks at, at most: a ring of 65,536
/// partitions has about 40,000 runs on three nodes, so a scan of an empty
/// cluster takes about ten pages.
const RUNS_PER_PAGE: usize = 4096;

/// Entries a node reads for one page at most.
const MAX_LIMIT: usize = 16 * 1024;

/// How long a peer may take to answer.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// How long a node waits to reach the epoch of a page's caller.
const EPOCH_WAIT: Duration = Duration::from_secs(5);

/// Tries of a page or a count whose nodes answered from newer views.
const TRIES: usize = 4;

/// `SCAN`'s page from `cursor` on: about `count` keys looked at on each
/// node it asks (expired keys are looked at, not returned).
pub(crate) async fn scan(inner: Arc<Inner>, cursor: u64, count: usize) -> Result<ScanPage, String> {
    ready(&inner)?;
    for _ in 0..TRIES {
        let state = inner.view();
        let span = page_span(&inner, &state, count);
        let runs = view::runs(&state, cursor, cursor.saturating_add(span), RUNS_PER_PAGE);
        if runs.is_empty() {
            return Err("CLUSTERDOWN the cluster is not initialised".into());
        }
        if let Some(run) = runs.iter().find(|r| r.down) {
            return Err(format!(
                "CLUSTERDOWN node {}, which serves keys from cursor {}, is down",
                run.node,
                run.tokens.start()
            ));
        }
        let mut intervals: BTreeMap<&str, Vec<(Token, Token)>> = BTreeMap::new();
        for run in &runs {
            intervals
                .entry(&run.node)
                .or_default()
                .push((*run.tokens.start(), *run.tokens.end()));
        }
        let asked = intervals.into_iter().map(|(node, intervals)| {
            let request = KeysRequest {
                epoch: state.epoch,
                intervals,
                limit: count.clamp(1, MAX_LIMIT),
            };
            let (inner, state) = (&inner, &state);
            async move { (node, keys_of(inner, state, node, request).await) }
        });
        let mut pages: HashMap<&str, (VecDeque<Bytes>, KeysPage)> = HashMap::new();
        for (node, page) in join_all(asked).await {
            let mut page = page?;
            let keys = std::mem::take(&mut page.keys).into();
            pages.insert(node, (keys, page));
        }
        // The runs in order, each with its node's keys in it (a node's keys
        // are those it read before it stopped, in token order), until a node
        // stopped short inside one.
        let mut out = ScanPage {
            cursor: runs
                .last()
                .and_then(|r| r.tokens.end().checked_add(1))
                .unwrap_or(0),
            keys: Vec::new(),
        };
        let mut moved = None;
        for run in &runs {
            let (keys, page) = pages
                .get_mut(run.node.as_str())
                .expect("every node was asked");
            while keys
                .front()
                .is_some_and(|k| key_token(k) <= *run.tokens.end())
            {
                out.keys.extend(keys.pop_front());
            }
            if let Some(token) = page.next.filter(|t| run.tokens.contains(t)) {
                out.cursor = token;
                moved = page.moved.map(|epoch| (run.node.clone(), epoch));
                break;
            }
        }
        // A page cut at its first token by a node that no longer serves it
        // holds nothing: catch up with that node's view and read it again.
        match moved {
            Some((node, epoch)) if out.cursor == cursor && out.keys.is_empty() => {
                crate::router::catch_up(&inner, &state, &node, epoch).await?;
            }
            _ => return Ok(out),
        }
    }
    Err("TRYAGAIN the key space kept moving during SCAN; retry from the same cursor".into())
}

/// `DBSIZE`: the keys of every node that serves some, counted at one epoch.
pub(crate) async fn dbsize(inner: Arc<Inner>) -> Result<u64, String> {
    ready(&inner)?;
    for _ in 0..TRIES {
        let state = inner.view();
        let Some(ring) = state.target_ring() else {
            return Err("CLUSTERDOWN the cluster is not initialised".into());
        };
        // Who serves keys: the ring's members, and a leaving member until
        // its last range switches.
        let mut nodes: Vec<&str> = ring.nodes().map(|(id, _)| id.as_str()).collect();
        nodes.extend(
            state
                .change
                .iter()
                .flat_map(|c| &c.ranges)
                .filter(|r| !r.phase.is_done())
                .map(|r| r.from.as_str()),
        );
        nodes.sort_unstable();
        nodes.dedup();
        if let Some(node) = nodes
            .iter()
            .find(|n| state.members.get(**n).is_none_or(|m| m.down))
        {
            return Err(format!(
                "CLUSTERDOWN node {node} is down: the keys it serves cannot be counted"
            ));
        }
        let asked = nodes.iter().map(|&node| {
            let (inner, state) = (&inner, &state);
            async move { (node, count_of(inner, state, node).await) }
        });
        let mut total = 0;
        let mut newer = None;
        for (node, counted) in join_all(asked).await {
            match counted? {
                Counted::Keys(n) => total += n,
                Counted::Moved(epoch) => newer = Some((node, epoch)),
            }
        }
        match newer {
            None => return Ok(total),
            Some((node, epoch)) => crate::router::catch_up(&inner, &state, node, epoch).await?,
        }
    }
    Err("TRYAGAIN the cluster kept changing during DBSIZE; retry".into())
}

/// The tokens a page of `count` keys covers at most: twice what holds
/// `count` keys if keys are spread evenly over the ring, judged by this
/// node's store (each member holds about as many). A page of few keys
/// then asks one or two nodes about a few runs, not thousands of them.
fn page_span(inner: &Inner, state: &MetaState, count: usize) -> u64 {
    let members = state.target_ring().map_or(1, |r| r.len().max(1));
    let keys = (inner.cluster.dbsize().max(1) * members) as f64;
    let span = 2.0 * count as f64 / keys * u64::MAX as f64;
    if span >= u64::MAX as f64 {
        u64::MAX
    } else {
        span as u64
    }
}

fn ready(inner: &Inner) -> Result<(), String> {
    match inner.ready.load(Ordering::Acquire) {
        true => Ok(()),
        false => Err(format!(
            "TRYAGAIN node {} is catching up with the cluster's log",
            inner.me
        )),
    }
}

/// Node `node`'s keys for `request`: read here, or asked for.
async fn keys_of(
    inner: &Arc<Inner>,
    state: &MetaState,
    node: &str,
    request: KeysRequest,
) -> Result<KeysPage, String> {
    if node == inner.me {
        return serve_keys(inner, request).await;
    }
    let answer = call(inner, state, node, Service::Keys, encode_data(&request)).await?;
    decode_data(&answer)
}

/// Node `node`'s count at `state`'s epoch: counted here, or asked for.
async fn count_of(inner: &Arc<Inner>, state: &MetaState, node: &str) -> Result<Counted, String> {
    if node == inner.me {
        return serve_count(inner, state.epoch).await;
    }
    let body = encode_data(&state.epoch);
    let answer = call(inner, state, node, Service::Count, body).await?;
    decode_data(&answer)
}

async fn call(
    inner: &Inner,
    state: &MetaState,
    node: &str,
    service: Service,
    body: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let addr = state
        .members
        .get(node)
        .map(|m| m.peer_addr.as_str())
        .ok_or_else(|| format!("TRYAGAIN node {node} is not a member any more"))?;
    inner
        .transport
        .call(addr, service, body, CALL_LIMIT)
        .await
        .map_err(|e| match e {
            TransportError::Unreachable { why, .. } => {
                format!("TRYAGAIN node {node} cannot be reached at {addr} ({why})")
            }
            e => format!("TRYAGAIN node {node} did not answer: {e}"),
        })
}

/// Waits until this node's view reaches `epoch`, as a peer's call needs.
async fn reach(inner: &Inner, epoch: u64) -> Result<(), String> {
    ready(inner)?;
    match inner.wait_epoch(epoch, EPOCH_WAIT).await {
        true => Ok(()),
        false => Err(format!(
            "TRYAGAIN node {} has not reached epoch {epoch}",
            inner.me
        )),
    }
}

/// The `Keys` call: this node's keys in the request's intervals.
pub(crate) async fn serve_keys(inner: &Inner, request: KeysRequest) -> Result<KeysPage, String> {
    reach(inner, request.epoch).await?;
    // The view's read lock keeps the runs served here from switching away
    // while they are read (as for a client's request).
    let state = inner.view.read();
    read_keys(
        &inner.cluster,
        &state,
        &inner.me,
        &request.intervals,
        request.limit.clamp(1, MAX_LIMIT),
    )
}

/// The live keys of `intervals` (in order, each `from..=to`) that `me`
/// serves at `state`, about `limit` of them: stops at a token it does not
/// serve (answered as moved) or when the limit is reached.
fn read_keys(
    cluster: &Cluster,
    state: &MetaState,
    me: &str,
    intervals: &[(Token, Token)],
    limit: usize,
) -> Result<KeysPage, String> {
    let mut page = KeysPage::default();
    for &(from, to) in intervals {
        let mut token = from;
        loop {
            let (Some(serving), Some(end)) = (state.serving(token), run_end(state, token)) else {
                return Err("CLUSTERDOWN the cluster is not initialised".into());
            };
            if serving.node != me {
                page.next = Some(token);
                page.moved = Some(state.epoch);
                return Ok(page);
            }
            if page.keys.len() >= limit {
                page.next = Some(token);
                return Ok(page);
            }
            let end = end.min(to);
            let (entries, next) = cluster
                .scan_tokens(token..=end, limit - page.keys.len())
                .map_err(|e| format!("ERR reading keys on node {me}: {e}"))?;
            page.keys.extend(entries.into_iter().map(|e| e.key));
            if let Some(next) = next {
                page.next = Some(next);
                return Ok(page);
            }
            match end.checked_add(1) {
                Some(next) if end < to => token = next,
                _ => break,
            }
        }
    }
    Ok(page)
}

/// The `Count` call: how many keys this node serves at `epoch`.
///
/// Two things could skew a count while the view moves on: copies a pull
/// of a later change adds to the store (only once the view has reached
/// that change), and a cleanup deleting ranges this node served at
/// `epoch`. The store's count is taken only if the view is still at
/// `epoch` after it; a count by scan only if no cleanup ran meanwhile.
/// Otherwise the caller counts again at the newer epoch.
pub(crate) async fn serve_count(inner: &Inner, epoch: u64) -> Result<Counted, String> {
    reach(inner, epoch).await?;
    let state = inner.view();
    let moved = || {
        let now = inner.view().epoch;
        (now != epoch).then_some(Counted::Moved(now))
    };
    if state.epoch != epoch {
        return Ok(Counted::Moved(state.epoch));
    }
    // With no change in flight and the copies of the last one cleaned up,
    // the store holds exactly the keys served here.
    if state.change.is_none() && inner.clean_at.load(Ordering::Acquire) == epoch {
        let keys = inner.cluster.dbsize() as u64;
        return Ok(moved().unwrap_or(Counted::Keys(keys)));
    }
    let cleanups = inner.cleanups.load(Ordering::Acquire);
    let (cluster, me) = (Arc::clone(&inner.cluster), inner.me.clone());
    let keys = tokio::task::spawn_blocking(move || count_served(&cluster, &state, &me))
        .await
        .map_err(|e| format!("ERR counting keys on node {}: {e}", inner.me))??;
    // An odd number: a cleanup was running when the count began.
    if cleanups % 2 == 1 || inner.cleanups.load(Ordering::Acquire) != cleanups {
        return Ok(moved().unwrap_or(Counted::Moved(epoch)));
    }
    Ok(Counted::Keys(keys))
}

/// Counts the live keys of the local store that `me` serves at `state`.
fn count_served(cluster: &Cluster, state: &MetaState, me: &str) -> Result<u64, String> {
    let (mut cursor, mut served) = (0, 0u64);
    loop {
        let page = cluster
            .scan(cursor, 4096, |key, _| {
                if state.serving(key_token(key)).is_some_and(|s| s.node == me) {
                    served += 1;
                }
                false
            })
            .map_err(|e| format!("ERR counting keys on node {me}: {e}"))?;
        if page.cursor == 0 {
            return Ok(served);
        }
        cursor = page.cursor;
    }
}
