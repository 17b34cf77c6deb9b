//! The client side of a node: which requests run here, which are
//! forwarded and where, and the node's own `RINGKV.*` commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use parking_lot::lock_api::ArcRwLockReadGuard;
use ringkv_meta::{Command, MetaState, Rejected};
use ringkv_peer::TransportError;
use ringkv_ring::{key_slot, key_token};
use ringkv_server::route::{
    AdminReply, Elsewhere, Executor, Forwarded, Many, Request, Route, Router, ScanPage,
};

use crate::Inner;
use crate::view::{Decision, copying_from, decide};
use crate::wire::{ForwardGroup, GroupAnswer, Stop};

/// How long a request waits for a fence to lift, or for this node to
/// catch up with a peer's epoch, before `-TRYAGAIN`.
const FENCE_WAIT: Duration = Duration::from_secs(2);

/// Hops a forwarded request may take (each after a `Moved`).
const MAX_HOPS: usize = 3;

/// The limit of one forwarded call: longer than the owner's own waits
/// (its rounds of fence and catch-up waits), so those end in `-TRYAGAIN`.
pub(crate) const FORWARD_LIMIT: Duration = Duration::from_secs(15);

/// The [`Router`] of a node.
pub struct NodeRouter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRouter")
            .field("node", &self.inner.me)
            .finish()
    }
}

impl NodeRouter {
    pub(crate) fn new(inner: Arc<Inner>) -> NodeRouter {
        NodeRouter { inner }
    }
}

/// Held while a request runs here: the view's read lock (no new view is
/// published meanwhile), and on drop the record of the keys it wrote in
/// ranges being copied away.
struct LocalGuard {
    view: ArcRwLockReadGuard<parking_lot::RawRwLock, Arc<MetaState>>,
    track: Option<(Arc<Inner>, Vec<Bytes>)>,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let Some((inner, keys)) = self.track.take() else {
            return;
        };
        let Some(change) = &self.view.change else {
            return;
        };
        let mut tracker = inner.tracker.lock();
        let Some(tracker) = tracker.as_mut().filter(|t| t.change == change.id) else {
            // Published with the view, under its write lock: cannot be
            // missing while the view's read lock is held.
            debug_assert!(false, "a change copying from this node has a tracker");
            return;
        };
        for key in keys {
            if let Some(i) = change.find(key_token(&key))
                && copying_from(change, i, &inner.me)
            {
                tracker.keys.entry(i).or_default().insert(key);
            }
        }
    }
}

impl Router for NodeRouter {
    fn attach(&self, executor: Executor) {
        let _ = self.inner.executor.set(executor);
    }

    fn route(&self, request: &Request<'_>) -> Route {
        let inner = &self.inner;
        if let Err(e) = serving(inner) {
            return Route::Error(e);
        }
        let guard = RwLock::read_arc(&inner.view);
        let epoch = guard.epoch;
        if let Some(sender) = request.forwarded
            && sender > epoch
        {
            drop(guard);
            let inner = Arc::clone(inner);
            return Route::Elsewhere(Box::pin(async move {
                match inner.wait_epoch(sender, FENCE_WAIT).await {
                    true => Elsewhere::Retry,
                    false => Elsewhere::Error(format!(
                        "TRYAGAIN node {} has not caught up with epoch {sender}",
                        inner.me
                    )),
                }
            }));
        }
        match decide_keys(&guard, &inner.me, &request.keys, request.write) {
            // Served here only under the lease (`crate::lease`): a node
            // cut off from the leader, or counted down by it, stops.
            Decision::Local { .. } if !inner.holds_lease() => {
                drop(guard);
                let inner = Arc::clone(inner);
                Route::Elsewhere(Box::pin(async move {
                    match inner.wait_lease(FENCE_WAIT).await {
                        true => Elsewhere::Retry,
                        false => Elsewhere::Error(no_lease(&inner.me)),
                    }
                }))
            }
            Decision::Local { tracked } => Route::Local(Some(Box::new(LocalGuard {
                view: guard,
                track: tracked.then(|| (Arc::clone(inner), request.keys.clone())),
            }))),
            Decision::Forward(node) => {
                if request.forwarded.is_some() {
                    return Route::Moved { epoch, node };
                }
                if request.pinned {
                    let addr = client_addr(&guard, &node);
                    return Route::Error(format!(
                        "ERR the keys of WATCH and MULTI/EXEC are served by node {node} ({addr}); run the transaction there"
                    ));
                }
                if inner.redirects && crate::slots::exact(&guard) {
                    // Nothing ran: the client retries at the node named,
                    // after reading the map again. (With a map that is
                    // only a hint, a slot split between two nodes would
                    // send the client back and forth: forwarded instead.)
                    let (slot, addr) = (key_slot(&request.keys[0]), client_addr(&guard, &node));
                    return Route::Error(format!("MOVED {slot} {addr}"));
                }
                drop(guard);
                let inner = Arc::clone(inner);
                let words = request.words.to_vec();
                let keys = request.keys.clone();
                let protocol = request.protocol;
                Route::Elsewhere(Box::pin(forward(inner, words, keys, protocol)))
            }
            Decision::Fenced => {
                drop(guard);
                let inner = Arc::clone(inner);
                Route::Elsewhere(Box::pin(async move {
                    match inner.wait_past(epoch, FENCE_WAIT).await {
                        true => Elsewhere::Retry,
                        false => Elsewhere::Error(
                            "TRYAGAIN the key's range is moving between nodes; retry".into(),
                        ),
                    }
                }))
            }
            // A removed node's view may be old: it looks again first.
            Decision::Down(node) if crate::follow::may_be_removed(&guard, &inner.me) => {
                drop(guard);
                let inner = Arc::clone(inner);
                Route::Elsewhere(Box::pin(async move {
                    match inner.wait_past(epoch, FENCE_WAIT).await {
                        true => Elsewhere::Retry,
                        false => Elsewhere::Error(format!(
                            "CLUSTERDOWN node {node}, which serves this key, is down"
                        )),
                    }
                }))
            }
            Decision::Down(node) => Route::Error(format!(
                "CLUSTERDOWN node {node}, which serves this key, is down"
            )),
            Decision::CrossNode => {
                if request.forwarded.is_some() {
                    // The sender split by an older view: it splits again.
                    return Route::Moved {
                        epoch,
                        node: String::new(),
                    };
                }
                match crate::split::shape(&request.words[0]) {
                    Some(shape) if !request.pinned => {
                        drop(guard);
                        let inner = Arc::clone(inner);
                        let words = request.words.to_vec();
                        Route::Elsewhere(Box::pin(crate::split::run(
                            inner,
                            words,
                            shape,
                            request.protocol,
                        )))
                    }
                    _ => Route::Error(
                        "CROSSSLOT Keys in request don't hash to the same node (use a {hash tag})"
                            .into(),
                    ),
                }
            }
            Decision::NoCluster => {
                Route::Error("CLUSTERDOWN the cluster is not initialised".into())
            }
        }
    }

    fn forwards(&self, key: &[u8]) -> bool {
        !self.inner.hint.here(key_slot(key))
    }

    fn route_many(&self, requests: &[Request<'_>]) -> Option<Many> {
        let inner = &self.inner;
        if !inner.ready.load(Ordering::Acquire) {
            return None;
        }
        // Decided by one view; the owners check it against theirs (the
        // epoch travels with each group), as for one request.
        let state = inner.view();
        // Redirecting, nothing is forwarded: each request runs here or
        // gets its `-MOVED` on its own.
        if inner.redirects && crate::slots::exact(&state) {
            return None;
        }
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut here = Vec::new();
        let mut taken = 0;
        for request in requests {
            if request.pinned || request.forwarded.is_some() {
                break;
            }
            match decide_keys(&state, &inner.me, &request.keys, request.write) {
                Decision::Forward(node) => {
                    groups.entry(node).or_default().push(taken);
                    here.push(false);
                }
                Decision::Local { .. } => {
                    groups.entry(inner.me.clone()).or_default().push(taken);
                    here.push(true);
                }
                _ => break,
            }
            taken += 1;
        }
        // A pipeline served here alone runs as it would without a router
        // (its writes share one fsync under `--fsync always`).
        if taken < 2 || here.iter().all(|&h| h) {
            return None;
        }
        let words: Vec<Vec<Bytes>> = requests[..taken].iter().map(|r| r.words.to_vec()).collect();
        let protocol = requests[0].protocol;
        let inner = Arc::clone(inner);
        Some(Many {
            here,
            replies: Box::pin(forward_groups(inner, state, groups, words, protocol)),
        })
    }

    fn scan(
        &self,
        cursor: u64,
        count: usize,
    ) -> Option<BoxFuture<'static, Result<ScanPage, String>>> {
        let inner = Arc::clone(&self.inner);
        Some(Box::pin(crate::keyspace::scan(inner, cursor, count)))
    }

    fn dbsize(&self) -> Option<BoxFuture<'static, Result<u64, String>>> {
        Some(Box::pin(crate::keyspace::dbsize(Arc::clone(&self.inner))))
    }

    fn command(&self, name: &str, args: &[Bytes]) -> Option<AdminReply> {
        let inner = Arc::clone(&self.inner);
        match name {
            "cluster" => Some(crate::slots::command(&inner.view(), &inner.me, args)),
            "ringkv.nodes" => Some(AdminReply::Later(Box::pin(crate::report::nodes(inner)))),
            "ringkv.removenode" => {
                let id = String::from_utf8_lossy(&args[0]).into_owned();
                let force = match &args[1..] {
                    [] => false,
                    [word] if word.eq_ignore_ascii_case(b"FORCE") => true,
                    _ => return Some(AdminReply::Error("ERR syntax error".into())),
                };
                Some(AdminReply::Later(Box::pin(async move {
                    let joining = inner
                        .view()
                        .members
                        .get(&id)
                        .is_some_and(|m| m.lifecycle == ringkv_meta::Lifecycle::Joining);
                    if joining {
                        // A join not begun (or rolled back): withdrawn.
                        return match crate::service::propose(&inner, Command::Cancel { id }).await {
                            Ok(Ok(_)) | Ok(Err(Rejected::UnknownMember { .. })) => AdminReply::Ok,
                            Ok(Err(rejected)) => AdminReply::Error(format!("ERR {rejected}")),
                            Err(e) => AdminReply::Error(format!("TRYAGAIN {e}")),
                        };
                    }
                    let was_up = inner
                        .view()
                        .members
                        .get(&id)
                        .is_some_and(|m| m.lifecycle == ringkv_meta::Lifecycle::Up);
                    let leave = Command::Leave {
                        id: id.clone(),
                        force,
                    };
                    match crate::service::propose(&inner, leave).await {
                        Ok(Ok(_)) => AdminReply::Ok,
                        // A proposal retried after a lost answer meets its
                        // own first attempt: the member is leaving, or gone.
                        Ok(Err(Rejected::WrongState { state, .. }))
                            if state == "leaving" && !force =>
                        {
                            AdminReply::Ok
                        }
                        Ok(Err(Rejected::UnknownMember { .. })) if was_up => AdminReply::Ok,
                        Ok(Err(rejected)) => AdminReply::Error(format!("ERR {rejected}")),
                        Err(e) => AdminReply::Error(format!("TRYAGAIN {e}")),
                    }
                })))
            }
            "ringkv.addnode" => Some(AdminReply::Error(
                "ERR on a multi-process cluster a node joins by starting: ringkv node --join PEER"
                    .into(),
            )),
            "ringkv.resume" | "ringkv.repair" => Some(AdminReply::Error(
                "ERR a multi-process cluster resumes and cleans up on its own".into(),
            )),
            "ringkv.locate" => {
                let state = inner.view();
                let token = key_token(&args[0]);
                Some(match state.serving(token) {
                    Some(s) => AdminReply::Lines(vec![token.to_string(), s.node.to_string()]),
                    None => AdminReply::Error("CLUSTERDOWN the cluster is not initialised".into()),
                })
            }
            _ => None,
        }
    }

    fn ring_info(&self) -> Vec<(String, String)> {
        crate::report::ring_info(&self.inner)
    }
}

/// Where clients reach member `node` (`?` if it is not a member).
fn client_addr<'a>(state: &'a MetaState, node: &str) -> &'a str {
    state
        .members
        .get(node)
        .map_or("?", |m| m.client_addr.as_str())
}

/// Sends a request to the node that serves its keys, following `Moved`
/// answers at most [`MAX_HOPS`] times. A request is sent again only when
/// the answer proves it did not run (`Moved`, or no connection was made);
/// a lost answer is reported as an unknown outcome, as a Redis client sees
/// a server that dies mid-request.
async fn forward(
    inner: Arc<Inner>,
    words: Vec<Bytes>,
    keys: Vec<Bytes>,
    protocol: u8,
) -> Elsewhere {
    let tokens: Vec<u64> = keys.iter().map(|k| key_token(k)).collect();
    for _ in 0..MAX_HOPS {
        let state = inner.view();
        let node = match decide(&state, &inner.me, &tokens, false) {
            Decision::Forward(node) => node,
            // Served here now, fenced, down or split: routed afresh.
            _ => return Elsewhere::Retry,
        };
        match forward_once(&inner, &state, &node, &words, protocol).await {
            Ok(Forwarded::Reply(bytes)) => return Elsewhere::Reply(bytes),
            // The owner knows a later state: catch up, then retry.
            Ok(Forwarded::Moved { epoch, .. }) => {
                if let Err(e) = catch_up(&inner, &state, &node, epoch).await {
                    return Elsewhere::Error(e);
                }
            }
            Err(e) => return Elsewhere::Error(e),
        }
    }
    Elsewhere::Error(format!(
        "TRYAGAIN the key's node changed {MAX_HOPS} times while the request travelled; retry"
    ))
}

/// Runs a pipeline's requests (`words`) where `state` has them served,
/// one group per node (`groups`: the indices of each node's requests, in
/// order; this node's run through its executor, as if forwarded), the
/// groups at once. The replies, in order;
/// `Elsewhere::Retry` for a request that did not run because its node
/// answered `Moved` (after this node caught up with that node's epoch):
/// it is routed again.
async fn forward_groups(
    inner: Arc<Inner>,
    state: Arc<MetaState>,
    groups: BTreeMap<String, Vec<usize>>,
    mut words: Vec<Vec<Bytes>>,
    protocol: u8,
) -> Vec<Elsewhere> {
    let count = words.len();
    let calls = groups.into_iter().map(|(node, indices)| {
        let requests = indices
            .iter()
            .map(|&i| std::mem::take(&mut words[i]))
            .collect();
        let inner = Arc::clone(&inner);
        let state = Arc::clone(&state);
        async move {
            let answer = if node == inner.me {
                match inner.executor.get() {
                    Some(executor) => {
                        let group = ForwardGroup {
                            epoch: state.epoch,
                            protocol,
                            wait: false,
                            requests,
                        };
                        Ok(crate::batch::run_group(executor, group, None).await)
                    }
                    None => Err("TRYAGAIN this node is not serving yet".to_string()),
                }
            } else {
                forward_group(&inner, &state, &node, requests, protocol, false).await
            };
            let mut out = Vec::with_capacity(indices.len());
            match answer {
                Err(e) => out.extend(indices.iter().map(|&i| (i, Elsewhere::Error(e.clone())))),
                Ok(answer) => {
                    let ran = answer.replies.len().min(indices.len());
                    for (&i, reply) in indices.iter().zip(answer.replies) {
                        out.push((i, Elsewhere::Reply(reply)));
                    }
                    let rest = &indices[ran..];
                    if !rest.is_empty() {
                        let again = match answer.stop {
                            Some(Stop::Moved { epoch, .. }) => {
                                catch_up(&inner, &state, &node, epoch).await.err()
                            }
                            // Routed again on its own, it may wait there.
                            Some(Stop::Later) => None,
                            None => Some(format!(
                                "ERR node {node} answered badly; a write may or may not have been applied"
                            )),
                        };
                        out.extend(rest.iter().map(|&i| {
                            (
                                i,
                                match &again {
                                    None => Elsewhere::Retry,
                                    Some(e) => Elsewhere::Error(e.clone()),
                                },
                            )
                        }));
                    }
                }
            }
            out
        }
    });
    let mut replies: Vec<Option<Elsewhere>> = Vec::new();
    replies.resize_with(count, || None);
    for (i, reply) in futures::future::join_all(calls).await.into_iter().flatten() {
        replies[i] = Some(reply);
    }
    replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Elsewhere::Error("ERR a request was lost on its way".into())))
        .collect()
}

/// Sends `words` once to member `node` of `state`, with `state`'s epoch.
/// An error is the client's error reply: `TRYAGAIN` when the request
/// surely did not run, otherwise what is known of its outcome.
pub(crate) async fn forward_once(
    inner: &Inner,
    state: &MetaState,
    node: &str,
    words: &[Bytes],
    protocol: u8,
) -> Result<Forwarded, String> {
    let mut requests = vec![words.to_vec()];
    for wait in [false, true] {
        // Queued with other requests first, in a call none of them waits
        // in; then, if it would have waited, alone.
        let mut answer = forward_group(inner, state, node, requests, protocol, wait).await?;
        match (answer.replies.pop(), answer.stop) {
            (Some(reply), None) => return Ok(Forwarded::Reply(reply)),
            (None, Some(Stop::Moved { epoch, node })) => {
                return Ok(Forwarded::Moved { epoch, node });
            }
            (None, Some(Stop::Later)) if !wait => requests = vec![words.to_vec()],
            _ => break,
        }
    }
    Err(format!(
        "ERR node {node} answered badly; a write may or may not have been applied"
    ))
}

/// Sends `requests` (one connection's, in order) to member `node` of
/// `state`, with `state`'s epoch, in one group: queued with other groups
/// for that node (`crate::batch`), or, if they may `wait` there, in a call
/// of their own. An error is every request's error reply: `TRYAGAIN` when
/// surely none ran, otherwise what is known of their outcome.
pub(crate) async fn forward_group(
    inner: &Inner,
    state: &MetaState,
    node: &str,
    requests: Vec<Vec<Bytes>>,
    protocol: u8,
    wait: bool,
) -> Result<GroupAnswer, String> {
    inner
        .forwarded
        .fetch_add(requests.len() as u64, Ordering::Relaxed);
    let addr = state
        .members
        .get(node)
        .map(|m| m.peer_addr.clone())
        .ok_or_else(|| format!("TRYAGAIN node {node} is not a member any more"))?;
    let group = ForwardGroup {
        epoch: state.epoch,
        protocol,
        wait,
        requests,
    };
    let answer = match wait {
        true => crate::batch::send_alone(&*inner.transport, &addr, group).await,
        false => inner.batches.send(&addr, group).await,
    };
    match answer {
        Ok(answer) => Ok(answer),
        Err(TransportError::Unreachable { why, .. }) => Err(format!(
            "TRYAGAIN node {node}, which serves the key, cannot be reached at {addr} ({why})"
        )),
        Err(TransportError::TooLarge { len, limit, .. }) => Err(format!(
            "ERR the request ({len} bytes) is over the {limit}-byte limit of calls between nodes; nothing was applied"
        )),
        Err(TransportError::Refused { why, .. }) => {
            Err(format!("ERR node {node} refused the request: {why}"))
        }
        Err(e) => Err(format!(
            "ERR forwarding to node {node} failed ({e}); a write may or may not have been applied"
        )),
    }
}

/// [`decide`] for `keys`, their tokens on the stack for one key (most
/// requests: no allocation).
fn decide_keys(state: &MetaState, me: &str, keys: &[Bytes], write: bool) -> Decision {
    match keys {
        [key] => decide(state, me, &[key_token(key)], write),
        keys => {
            let tokens: Vec<u64> = keys.iter().map(|k| key_token(k)).collect();
            decide(state, me, &tokens, write)
        }
    }
}

/// Whether this node serves clients yet: it has caught up with the log
/// since it started.
pub(crate) fn serving(inner: &Inner) -> Result<(), String> {
    match inner.ready.load(Ordering::Acquire) {
        true => Ok(()),
        false => Err(format!(
            "TRYAGAIN node {} is catching up with the cluster's log",
            inner.me
        )),
    }
}

/// The error of a request for a key this node serves but may not now.
pub(crate) fn no_lease(me: &str) -> String {
    format!(
        "CLUSTERDOWN node {me}, which serves this key, has not been confirmed by the cluster's leader lately (cut off, or marked down)"
    )
}

/// After member `node` of `state` answered `Moved` at `epoch`: waits
/// until this node's view reaches it ([`Inner::reach`]).
pub(crate) async fn catch_up(
    inner: &Inner,
    state: &MetaState,
    node: &str,
    epoch: u64,
) -> Result<(), String> {
    let addr = state.members.get(node).map_or("", |m| m.peer_addr.as_str());
    match inner.reach(epoch, addr, FENCE_WAIT).await {
        true => Ok(()),
        false => Err(format!(
            "TRYAGAIN node {} has not caught up with epoch {epoch}",
            inner.me
        )),
    }
}
