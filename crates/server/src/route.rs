//! The seam between the server and a node of a multi-process cluster
//! (`ringkv node`, crate `ringkv-node`): a [`Router`] decides, before a
//! keyed command runs, whether this process serves its keys, and if not,
//! where the request goes instead; an [`Executor`] runs the requests that
//! peers forward here.
//!
//! Without a router (`ringkv serve`) nothing here runs: every key is the
//! in-process cluster's.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;

use crate::cmd::{self, Ctx, Outcome};
use crate::reply::{Frame, Protocol};
use crate::state::{Session, Shared};

/// A keyed request, as the router sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The whole request, command name first.
    pub words: &'a [Bytes],
    /// Its keys (from the command table's key positions; for `EXEC`, the
    /// keys of every queued command and every watched key).
    pub keys: Vec<Bytes>,
    /// Whether the command may write.
    pub write: bool,
    /// The request must run on this connection's node: it is `WATCH` or
    /// `EXEC`, whose state lives in this connection's session.
    pub pinned: bool,
    /// A peer forwarded the request, with the epoch of its view: answer
    /// [`Route::Moved`] rather than forward it again.
    pub forwarded: Option<u64>,
    /// The client's protocol (2 or 3): a forwarded reply is encoded in it.
    pub protocol: u8,
}

/// Where a request runs.
pub enum Route {
    /// Here. The guard is held while the command runs (the router keeps
    /// the key's authority from moving meanwhile) and dropped after it.
    Local(Option<Box<dyn std::any::Any>>),
    /// Nowhere: reply with this error (`-CLUSTERDOWN`, `-CROSSSLOT`, ...).
    Error(String),
    /// Only for a forwarded request: this node does not serve the keys at
    /// its epoch `epoch`; `node` does, as far as it knows.
    Moved {
        /// This node's epoch.
        epoch: u64,
        /// The node that serves the keys.
        node: String,
    },
    /// Elsewhere, or later: the reply once the future resolves.
    Elsewhere(BoxFuture<'static, Elsewhere>),
}

/// What a request routed elsewhere came to.
pub enum Elsewhere {
    /// The owner's reply, encoded in the client's protocol.
    Reply(Bytes),
    /// An error to reply with.
    Error(String),
    /// Route it again (a fence lifted; this node may serve it now).
    Retry,
}

/// The first requests of a pipeline, routed together
/// ([`Router::route_many`]).
pub struct Many {
    /// Which of the first requests are taken, and whether each runs on
    /// this node (through the [`Executor`], which counts it then) or on
    /// another (counted by the caller, as a forwarded request is).
    pub here: Vec<bool>,
    /// Their replies, in order. `Elsewhere::Retry` for a request that did
    /// not run: it is routed again on its own, before the replies after it
    /// are sent.
    pub replies: BoxFuture<'static, Vec<Elsewhere>>,
}

/// A page of the whole cluster's keys ([`Router::scan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Where to go on: a position in the ring's token order, as `SCAN`'s
    /// cursor on `ringkv serve`; `0` once the whole ring was read.
    pub cursor: u64,
    /// The live keys read, in token order.
    pub keys: Vec<Bytes>,
}

/// What a router's own command (`RINGKV.*` on a node) answers.
pub enum AdminReply {
    /// `+OK`.
    Ok,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Text(String),
    /// An array of bulk strings.
    Lines(Vec<String>),
    /// An array of replies (nested arrays, as `CLUSTER SLOTS` answers;
    /// not [`AdminReply::Later`]).
    Array(Vec<AdminReply>),
    /// An error.
    Error(String),
    /// Later.
    Later(BoxFuture<'static, AdminReply>),
}

/// How a server that is one node of a multi-process cluster routes.
pub trait Router: Send + Sync + std::fmt::Debug + 'static {
    /// Called once, when the server's state exists: forwarded requests run
    /// through `executor`.
    fn attach(&self, executor: Executor);

    /// Decides where a keyed request runs.
    fn route(&self, request: &Request<'_>) -> Route;

    /// Whether a request on `key` (its first) probably runs on another
    /// node: a hint, read without a lock, that a pipeline beginning with it
    /// is worth routing together ([`Router::route_many`]). Runs of requests
    /// served here are not gathered: each runs as a request alone does,
    /// and gathering them cost a node a fifth of its pipelined throughput
    /// (`docs/BENCHMARKS.md`, node section 14). A wrong hint costs speed
    /// only: [`Router::route`] decides.
    fn forwards(&self, key: &[u8]) -> bool {
        let _ = key;
        false
    }

    /// Routes the first requests of a pipeline together: when the first
    /// `n >= 2` of them can be (each served by one node, this one or
    /// another), runs them as [`Many`] says. `None`: each request is routed
    /// on its own.
    fn route_many(&self, requests: &[Request<'_>]) -> Option<Many> {
        let _ = requests;
        None
    }

    /// Reads a page of the whole cluster's keys from `cursor` on, about
    /// `count` live keys from each node that serves some (`SCAN`, `KEYS`,
    /// `RANDOMKEY`), when this server's store holds only a part of them.
    /// The error is a whole error reply (`TRYAGAIN ...`). `None`: the
    /// store is the whole key space.
    fn scan(
        &self,
        cursor: u64,
        count: usize,
    ) -> Option<BoxFuture<'static, Result<ScanPage, String>>> {
        let _ = (cursor, count);
        None
    }

    /// The number of keys in the whole cluster (`DBSIZE`), as
    /// [`Router::scan`] reads them.
    fn dbsize(&self) -> Option<BoxFuture<'static, Result<u64, String>>> {
        None
    }

    /// Answers a `RINGKV.*` command the node handles itself (`NODES`,
    /// `REMOVENODE`) or a `CLUSTER` command (`args` start with its
    /// subcommand), or `None` to let the server's own handler run.
    fn command(&self, name: &str, args: &[Bytes]) -> Option<AdminReply>;

    /// The fields of `INFO`'s `# Ring` section, as the node sees the
    /// cluster (instead of its one-node local cluster's).
    fn ring_info(&self) -> Vec<(String, String)>;
}

/// What a forwarded request came to on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// The reply, encoded in the protocol the request named.
    Reply(Bytes),
    /// This node does not serve the request's keys at `epoch`.
    Moved {
        /// This node's epoch.
        epoch: u64,
        /// The node that serves them, as far as this one knows.
        node: String,
    },
}

/// Runs requests that peers forward to this node, as if a local client had
/// sent them on a fresh authenticated connection (the peer proved the
/// cluster secret).
///
/// It holds the server's state weakly (the router that keeps it is part of
/// that state): once the server stopped, forwarded requests are refused.
#[derive(Clone)]
pub struct Executor {
    shared: std::sync::Weak<Shared>,
}

/// Routing rounds a forwarded request may take on the owner (fences that
/// lift and close again) before it gives up with `-TRYAGAIN`; with the
/// router's waits (2 s each) well within the sender's call limit, so a
/// request held by a fence gets `-TRYAGAIN`, not an unknown outcome.
const MAX_ROUNDS: usize = 4;

impl Executor {
    pub(crate) fn new(shared: &Arc<Shared>) -> Executor {
        Executor {
            shared: Arc::downgrade(shared),
        }
    }

    /// Runs `request`, forwarded by a peer whose view is at `epoch`, and
    /// encodes the reply in protocol `protocol` (2 or 3).
    pub async fn run(&self, request: Vec<Bytes>, protocol: u8, epoch: u64) -> Forwarded {
        self.run_with(request, protocol, epoch, true)
            .await
            .expect("a run that may wait comes to an answer")
    }

    /// As [`run`](Self::run), but without waiting for the router (a fence
    /// to lift, this node to catch up with `epoch`): `None` if it would
    /// have, and then the request did not run.
    pub async fn run_now(
        &self,
        request: Vec<Bytes>,
        protocol: u8,
        epoch: u64,
    ) -> Option<Forwarded> {
        self.run_with(request, protocol, epoch, false).await
    }

    async fn run_with(
        &self,
        request: Vec<Bytes>,
        protocol: u8,
        epoch: u64,
        wait: bool,
    ) -> Option<Forwarded> {
        let protocol = if protocol == 3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        };
        let Some(shared) = self.shared.upgrade() else {
            return Some(encode(&crate::reply::err("the node is stopping"), protocol));
        };
        let shared = &shared;
        for _ in 0..MAX_ROUNDS {
            let mut session =
                Session::new(shared, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), -1);
            session.authenticated = true;
            session.protocol = protocol;
            session.forwarded = Some(epoch);
            let (outcome, owes) = ringkv_cluster::defer_sync(|| {
                cmd::dispatch(
                    &mut Ctx {
                        shared,
                        session: &mut session,
                        txn: None,
                    },
                    &request,
                )
            });
            if owes && crate::sets::sync(shared).await.is_err() {
                return Some(encode(
                    &crate::reply::err("fsync failed on the key's node"),
                    protocol,
                ));
            }
            let frame = match outcome {
                Outcome::Reply(frame) | Outcome::Close(frame) => frame,
                Outcome::OverLimit => crate::reply::err("reply too large"),
                Outcome::Shutdown => crate::reply::err("SHUTDOWN is not a keyed command"),
                Outcome::Moved { epoch, node } => return Some(Forwarded::Moved { epoch, node }),
                Outcome::Blocking(job) => match tokio::task::spawn_blocking(job).await {
                    Ok(frame) => frame,
                    Err(_) => crate::reply::err("the command failed on the key's node"),
                },
                // A keyed request waits only on the router, before it runs.
                Outcome::Wait(_) if !wait => return None,
                Outcome::Wait(wait) => match wait.await {
                    Waited::Frame(frame) => frame,
                    Waited::OverLimit => crate::reply::err("reply too large"),
                    Waited::Retry => continue,
                },
            };
            return Some(encode(&frame, protocol));
        }
        Some(encode(
            &crate::reply::error("TRYAGAIN the key's range is moving; retry"),
            protocol,
        ))
    }
}

fn encode(frame: &Frame, protocol: Protocol) -> Forwarded {
    let mut out = BytesMut::with_capacity(frame.encoded_len(protocol));
    frame.encode(protocol, &mut out);
    Forwarded::Reply(out.freeze())
}

/// What an [`Outcome::Wait`] resolves to.
pub enum Waited {
    /// The reply.
    Frame(Frame),
    /// The reply would exceed the client's output-buffer limit (`KEYS`):
    /// close the connection without it.
    OverLimit,
    /// Run the request again.
    Retry,
}

/// Routes a request about to run in `ctx` (called by `cmd::run` when the
/// server has a router). `None`: run it here, holding the returned guard.
pub(crate) fn route(
    ctx: &Ctx<'_>,
    router: &dyn Router,
    spec: &cmd::Spec,
    words: &[Bytes],
) -> Result<Option<Box<dyn std::any::Any>>, Outcome> {
    let (keys, pinned) = match spec.name {
        "exec" => match &ctx.session.multi {
            Some(multi) => (
                multi
                    .queued
                    .iter()
                    .flat_map(|r| cmd::request_keys(r))
                    .chain(ctx.session.watched.iter().map(|(k, _)| k.clone()))
                    .collect(),
                true,
            ),
            None => return Ok(None),
        },
        "watch" => (cmd::request_keys(words), true),
        _ => (cmd::request_keys(words), false),
    };
    if keys.is_empty() {
        return Ok(None);
    }
    let request = Request {
        words,
        keys,
        write: spec.flags.contains(&"write") || spec.name == "exec",
        pinned,
        forwarded: ctx.session.forwarded,
        protocol: ctx.session.protocol.version() as u8,
    };
    match router.route(&request) {
        Route::Local(guard) => Ok(guard),
        Route::Error(text) => Err(crate::reply::error(text).into()),
        Route::Moved { epoch, node } => Err(Outcome::Moved { epoch, node }),
        Route::Elsewhere(future) => Err(Outcome::Wait(Box::pin(async move {
            match elsewhere_frame(future.await) {
                Some(frame) => Waited::Frame(frame),
                None => Waited::Retry,
            }
        }))),
    }
}

/// A request of a pipeline that [`Router::route_many`] may take: a known
/// command with a valid arity and keys, neither pinned to this connection
/// (`WATCH`, `EXEC`) nor the router's own (`RINGKV.*`). Its table index,
/// keys and whether it may write.
pub(crate) fn batchable(words: &[Bytes]) -> Option<(usize, Vec<Bytes>, bool)> {
    let index = cmd::lookup_index(words.first()?)?;
    let spec = &cmd::COMMANDS[index];
    let len = words.len() as i64;
    if (spec.arity >= 0 && len != spec.arity) || (spec.arity < 0 && len < -spec.arity) {
        return None;
    }
    if matches!(spec.name, "exec" | "watch") || spec.name.starts_with("ringkv.") {
        return None;
    }
    let keys = cmd::request_keys(words);
    if keys.is_empty() {
        return None;
    }
    Some((index, keys, spec.flags.contains(&"write")))
}

/// The reply frame of a request routed elsewhere, or `None` to route it
/// again.
pub(crate) fn elsewhere_frame(answer: Elsewhere) -> Option<Frame> {
    match answer {
        Elsewhere::Reply(bytes) => Some(Frame::Raw(bytes)),
        Elsewhere::Error(text) => Some(crate::reply::error(text)),
        Elsewhere::Retry => None,
    }
}

/// Turns a router's answer to a `RINGKV.*` command into an outcome.
pub(crate) fn admin_outcome(reply: AdminReply) -> Outcome {
    match reply {
        AdminReply::Later(future) => Outcome::Wait(Box::pin(async move {
            let mut reply = future.await;
            // A later reply that is itself later: wait for it too.
            loop {
                match reply {
                    AdminReply::Later(next) => reply = next.await,
                    other => return Waited::Frame(admin_frame(other)),
                }
            }
        })),
        other => admin_frame(other).into(),
    }
}

fn admin_frame(reply: AdminReply) -> Frame {
    match reply {
        AdminReply::Ok => crate::reply::ok(),
        AdminReply::Int(n) => crate::reply::int(n),
        AdminReply::Text(text) => crate::reply::bulk(text),
        AdminReply::Lines(lines) => {
            crate::reply::array(lines.into_iter().map(crate::reply::bulk).collect())
        }
        AdminReply::Array(items) => {
            crate::reply::array(items.into_iter().map(admin_frame).collect())
        }
        AdminReply::Error(text) => crate::reply::error(text),
        AdminReply::Later(_) => crate::reply::err("a nested reply"),
    }
}
