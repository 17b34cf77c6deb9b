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
//! and sums: each node counts the keys it serves by that epoch's view, so
//! no key is counted on two nodes or missed between them; keys written
//! while it counts may or may not be in it. A node holding no copy it does
//! not serve answers from its store's count, otherwise it counts what it
//! serves.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use ringkv_cluster::Cluster;
use ringkv_meta::{MetaState, Phase};
use ringkv_peer::{Service, TransportError};
use ringkv_ring::{Token, key_token};
use ringkv_server::route::ScanPage;

use crate::Inner;
use crate::service::{decode_data, encode_data};
use crate::view::{self, run_end};
use crate::wire::{Counted, KeysPage, KeysRequest};

/// Runs of [`view::run_end`] one page looks at, at most: a ring of 65,536
/// partitions (16,384, a node's default, has about a quarter as many) has
/// about 40,000 runs on three nodes, so a scan of an empty cluster takes
/// about ten pages.
const RUNS_PER_PAGE: usize = 4096;

/// Keys a node reads for one page at most.
const MAX_LIMIT: usize = 16 * 1024;

/// Bytes of keys a node reads for one page, about (a call's frame holds
/// 16 MiB).
const PAGE_BYTES: usize = 4 << 20;

/// Keys read at a time, between checks of the bounds.
const CHUNK: usize = 256;

/// How long a peer may take to answer.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// How long a node waits to reach the epoch of a page's caller.
const EPOCH_WAIT: Duration = Duration::from_secs(5);

/// How long a node waits for its lease to be renewed before it refuses.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// Tries of a page or a count whose nodes answered from newer views.
const TRIES: usize = 4;

/// `SCAN`'s page from `cursor` on: about `count` live keys from each node
/// it asks.
pub(crate) async fn scan(inner: Arc<Inner>, cursor: u64, count: usize) -> Result<ScanPage, String> {
    crate::router::serving(&inner)?;
    for _ in 0..TRIES {
        let state = inner.view();
        let span = page_span(&inner, &state, count);
        // Also a few runs per key asked for: a node whose own store is
        // empty (removed, or just joined) estimates the whole ring.
        let most = count.saturating_mul(4).clamp(16, RUNS_PER_PAGE);
        let mut runs = view::runs(&state, cursor, cursor.saturating_add(span), most);
        if runs.is_empty() {
            return Err("CLUSTERDOWN the cluster is not initialised".into());
        }
        // The page ends before the first run of a down node; a page that
        // begins with one cannot be read.
        match runs.iter().position(|r| r.down) {
            Some(0) => {
                return Err(format!(
                    "CLUSTERDOWN node {}, which serves the keys at cursor {cursor}, is down",
                    runs[0].node
                ));
            }
            Some(i) => runs.truncate(i),
            None => {}
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
    crate::router::serving(&inner)?;
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
                .filter(|r| r.phase != Phase::Switched)
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
    decode_data(&answer).map_err(|e| format!("ERR node {node}'s page of keys: {e}"))
}

/// Node `node`'s count at `state`'s epoch: counted here, or asked for.
async fn count_of(inner: &Arc<Inner>, state: &MetaState, node: &str) -> Result<Counted, String> {
    if node == inner.me {
        return serve_count(inner, state.epoch).await;
    }
    let body = encode_data(&state.epoch);
    let answer = call(inner, state, node, Service::Count, body).await?;
    decode_data(&answer).map_err(|e| format!("ERR node {node}'s count of keys: {e}"))
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
            // The node's own error reply (`CLUSTERDOWN ...`, `TRYAGAIN ...`).
            TransportError::Refused { why, .. } if why.starts_with(char::is_uppercase) => why,
            e => format!("TRYAGAIN node {node} did not answer: {e}"),
        })
}

/// This node serves its keys only under its lease (`crate::lease`),
/// which a node that has just started or lost touch may renew shortly.
async fn leased(inner: &Inner) -> Result<(), String> {
    match inner.wait_lease(LEASE_WAIT).await {
        true => Ok(()),
        false => Err(crate::router::no_lease(&inner.me)),
    }
}

/// Waits until this node's view reaches `epoch`, as a peer's call needs.
async fn reach_epoch(inner: &Inner, epoch: u64) -> Result<(), String> {
    inner
        .ready_at(epoch, EPOCH_WAIT)
        .await
        .map_err(|e| format!("TRYAGAIN {e}"))
}

/// The `Keys` call: this node's keys in the request's intervals, read by
/// the view at the request's epoch off the event loop, and kept only if
/// the view is still there after it (as [`serve_count`] argues, nothing
/// could then have deleted what was read); otherwise nothing is returned
/// and the caller catches up with the newer view.
pub(crate) async fn serve_keys(inner: &Inner, request: KeysRequest) -> Result<KeysPage, String> {
    reach_epoch(inner, request.epoch).await?;
    leased(inner).await?;
    let state = inner.view();
    let epoch = state.epoch;
    let first = request.intervals.first().map(|&(from, _)| from);
    let (cluster, me) = (Arc::clone(&inner.cluster), inner.me.clone());
    let limit = request.limit.clamp(1, MAX_LIMIT);
    let page = tokio::task::spawn_blocking(move || {
        read_keys(&cluster, &state, &me, &request.intervals, limit)
    })
    .await
    .map_err(|e| format!("ERR reading keys on node {}: {e}", inner.me))??;
    match inner.view().epoch {
        now if now != epoch => Ok(KeysPage {
            keys: Vec::new(),
            next: first,
            moved: Some(now),
        }),
        _ => Ok(page),
    }
}

/// The live keys of `intervals` (in order, each `from..=to`) that `me`
/// serves at `state`, about `limit` of them and at most about
/// [`PAGE_BYTES`]: stops at a token it does not serve (answered as moved)
/// or at either bound.
fn read_keys(
    cluster: &Cluster,
    state: &MetaState,
    me: &str,
    intervals: &[(Token, Token)],
    limit: usize,
) -> Result<KeysPage, String> {
    let mut page = KeysPage::default();
    let mut bytes = 0;
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
            if page.keys.len() >= limit || bytes >= PAGE_BYTES {
                page.next = Some(token);
                return Ok(page);
            }
            let end = end.min(to);
            let want = (limit - page.keys.len()).min(CHUNK);
            let (entries, next) = cluster
                .scan_tokens(token..=end, want)
                .map_err(|e| format!("ERR reading keys on node {me}: {e}"))?;
            bytes += entries.iter().map(|e| e.key.len()).sum::<usize>();
            page.keys.extend(entries.into_iter().map(|e| e.key));
            match next {
                Some(next) => token = next,
                None => match end.checked_add(1) {
                    Some(next) if end < to => token = next,
                    _ => break,
                },
            }
        }
    }
    Ok(page)
}

/// The `Count` call: how many keys this node serves at `epoch`.
///
/// The count is taken by `epoch`'s view and kept only if the view is still
/// there after it; otherwise the caller counts again at the newer epoch.
/// While the view stays, nothing can skew it: a pull adds copies only of
/// a change in the view (and of ranges this node does not serve in it),
/// and a cleanup deletes only what a view no newer than it does not keep
/// (a cleanup by an older view ran before any copy this node now serves
/// arrived: pulls and cleanups take turns).
pub(crate) async fn serve_count(inner: &Inner, epoch: u64) -> Result<Counted, String> {
    reach_epoch(inner, epoch).await?;
    leased(inner).await?;
    let state = inner.view();
    let moved = || {
        let now = inner.view().epoch;
        (now != epoch).then_some(Counted::Moved(now))
    };
    if state.epoch != epoch {
        return Ok(Counted::Moved(state.epoch));
    }
    // With no change in flight and the copies of the last one cleaned up,
    // the store holds exactly the keys served here (and, as Redis counts
    // them, keys expired but not yet reclaimed).
    let keys = if state.change.is_none() && inner.clean_at.load(Ordering::Acquire) == epoch {
        inner.cluster.dbsize() as u64
    } else {
        let (cluster, me) = (Arc::clone(&inner.cluster), inner.me.clone());
        tokio::task::spawn_blocking(move || count_served(&cluster, &state, &me))
            .await
            .map_err(|e| format!("ERR counting keys on node {}: {e}", inner.me))??
    };
    Ok(moved().unwrap_or(Counted::Keys(keys)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::{complete, two_nodes};

    /// A node's store holds keys of runs it does not serve (copies in
    /// transit, stale copies): a read of the key space stops at the first
    /// such token, answered as moved, and returns only keys it serves
    /// before it.
    #[test]
    fn a_read_stops_where_the_node_no_longer_serves_and_never_returns_its_copies() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        let cluster = Cluster::default();
        cluster.add_node("local").unwrap();
        let keys: Vec<String> = (0..400).map(|i| format!("key{i}")).collect();
        for key in &keys {
            cluster.put(key.clone(), "v").unwrap();
        }
        let served = |me: &str| -> Vec<&String> {
            let mut mine: Vec<&String> = keys
                .iter()
                .filter(|k| state.serving(key_token(k.as_bytes())).unwrap().node == me)
                .collect();
            mine.sort_by_key(|k| (key_token(k.as_bytes()), k.as_bytes()));
            mine
        };
        let runs = view::runs(&state, 0, Token::MAX, usize::MAX);
        let first = &runs[0];
        let me = first.node.clone();
        // The whole line in one interval: node `me` reads its first run,
        // then stops where the other node's run begins.
        let page = read_keys(&cluster, &state, &me, &[(0, Token::MAX)], 10_000).unwrap();
        let stop = *runs[1].tokens.start();
        assert_eq!(page.next, Some(stop));
        assert_eq!(page.moved, Some(state.epoch));
        let want: Vec<&String> = served(&me)
            .into_iter()
            .filter(|k| key_token(k.as_bytes()) < stop)
            .collect();
        let got: Vec<String> = page
            .keys
            .iter()
            .map(|k| String::from_utf8(k.to_vec()).unwrap())
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want);
        // Its own runs only: every key it serves, in token order, none of
        // the other node's, though its store holds them all.
        let mine: Vec<(Token, Token)> = runs
            .iter()
            .filter(|r| r.node == me)
            .map(|r| (*r.tokens.start(), *r.tokens.end()))
            .collect();
        let page = read_keys(&cluster, &state, &me, &mine, 10_000).unwrap();
        assert_eq!((page.next, page.moved), (None, None));
        let got: Vec<String> = page
            .keys
            .iter()
            .map(|k| String::from_utf8(k.to_vec()).unwrap())
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), served(&me));
        // A limit cuts the read between tokens, not answered as moved.
        let page = read_keys(&cluster, &state, &me, &mine, 5).unwrap();
        assert!(page.keys.len() >= 5 && page.next.is_some() && page.moved.is_none());
    }
}
