//! One connection's loop: read requests, run them, send the replies, under
//! the per-client limits (idle timeout, output-buffer limit, the tighter
//! request limits before `AUTH`), until the client leaves, breaks the
//! protocol, quits, or the server stops.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::cmd::{self, Ctx, Outcome};
use crate::connection::Connection;
use crate::listener::ClientStream;
use crate::reply::{self, Frame, Protocol};
use crate::request::{Limits, ProtocolError};
use crate::state::{Session, Shared};

/// Replies queued past this many bytes are sent before the next request
/// is served, so a long pipeline does not grow the buffer without bound.
const FLUSH_AT: usize = 64 * 1024;

/// The most pipelined `SET key value` requests written as one
/// (`cmd::set_run`, or the SET writer under `--fsync always`,
/// `crate::sets`), and the most bytes of requests a run collects.
const SET_RUN_MAX: usize = 64;
const SET_RUN_BYTES: usize = 1 << 20;

/// On a node of a multi-process cluster, the most pipelined requests a
/// connection routes together (`Router::route_many`), and the most
/// bytes of requests they take.
const FORWARD_RUN_MAX: usize = 64;
const FORWARD_RUN_BYTES: usize = 1 << 20;

/// Work taken off the read buffer but not done yet: done, in order, before
/// anything else is read.
enum Pending {
    /// A request to run, with its size in bytes (0: counted already).
    Request(Vec<Bytes>, usize),
    /// A request to run on its own, never grouped with others (a SET of
    /// a group that could not be written whole).
    Alone(Vec<Bytes>, usize),
    /// The reply of a request that already ran (forwarded with others),
    /// to send in its turn.
    Reply(Frame),
}

/// Reads a shutdown has this connection serve before it closes: what the
/// client sent before the shutdown is served, but a client streaming
/// requests cannot hold the shutdown up.
const DRAIN_READS: usize = 16;

/// Serves one connection, counted from its accept by `open`.
pub async fn handle(
    stream: Box<dyn ClientStream>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
    mut open: Connected,
) {
    let conn = Connection::new(stream, shared.live.idle_timeout());
    let session = Session::new(&shared, peer, conn.fd());
    let id = session.id;
    shared.clients.add(Arc::clone(&session.handle));
    open.client = Some(id);
    debug!(client = id, %peer, "connected");
    if let Err(e) = serve(conn, session, &shared, stopping).await {
        debug!(client = id, error = %e, "connection error");
    }
    debug!(client = id, "disconnected");
}

/// Counts a connection in `connected` from its accept (so the next accept
/// checks `maxclients` against it) until its task ends, and takes it off
/// the client list then: dropped also when the task panics or is aborted
/// at shutdown, so neither drifts.
pub struct Connected {
    shared: Arc<Shared>,
    client: Option<u64>,
}

impl Connected {
    /// Counts one more connection.
    pub fn count(shared: &Arc<Shared>) -> Self {
        shared.stats.connected.fetch_add(1, Ordering::Relaxed);
        Connected {
            shared: Arc::clone(shared),
            client: None,
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(id) = self.client {
            self.shared.clients.remove(id);
        }
        self.shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `f`, or `None` if it does not finish within `limit` (when there is one).
async fn within<F: Future>(limit: Option<Duration>, f: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f).await.ok(),
        None => Some(f.await),
    }
}

async fn serve(
    mut conn: Connection,
    mut session: Session,
    shared: &Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut drains_left = DRAIN_READS;
    let handle = Arc::clone(&session.handle);
    // Under `--fsync always`: replies queued for writes that are not on
    // disk yet. No reply leaves before they are (see `settle`).
    let mut owed = false;
    // Requests taken off the buffer but not run yet (a run of SETs that
    // could not be written as one, and the request that ended the run; a
    // run of forwarded requests' replies, and those to route again).
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // A protocol error met while collecting a run: reported after the
    // pending requests are served.
    let mut broken: Option<ProtocolError> = None;
    loop {
        if handle.is_killed() {
            // As Redis: freed at once. Replies already queued (the
            // killer's own count) are sent, but the client's side is not
            // waited for, so `connected_clients` drops now.
            debug!(client = session.id, "killed by CLIENT KILL");
            settle(shared, &mut owed).await?;
            return conn.flush().await;
        }
        let limits = Limits {
            max_bulk_len: shared.config.max_bulk_len,
            authenticated: session.authenticated,
        };
        // Serve every request already buffered (a pipeline) before
        // sending the replies and reading again.
        let mut alone = false;
        let next = match pending.pop_front() {
            Some(Pending::Request(request, bytes)) => Ok(Some((request, bytes))),
            Some(Pending::Alone(request, bytes)) => {
                alone = true;
                Ok(Some((request, bytes)))
            }
            Some(Pending::Reply(frame)) => {
                // A request routed again may have written here: its reply,
                // queued before, waits for the disk as every reply does.
                if !send_reply(shared, &mut conn, &session, &mut owed, &frame).await? {
                    return Ok(());
                }
                continue;
            }
            None => match broken.take() {
                Some(e) => Err(e),
                None => conn.next_buffered(limits),
            },
        };
        let request = match next {
            Ok(Some((request, bytes))) => {
                session.request_bytes = bytes;
                shared
                    .stats
                    .net_input_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                request
            }
            Ok(None) => {
                settle(shared, &mut owed).await?;
                conn.flush().await?;
                // Shutdown interrupts only the wait for a new request.
                if *stopping.borrow() {
                    if drains_left > 0 && conn.try_fill()? {
                        drains_left -= 1;
                        continue;
                    }
                    return conn.close().await;
                }
                tokio::select! {
                    more = within(shared.live.idle_timeout(), conn.fill()) => match more {
                        Some(more) => if !more? { return Ok(()) },
                        // As Redis: closed without a reply.
                        None => {
                            debug!(client = session.id, "closing idle client");
                            return Ok(());
                        }
                    },
                    _ = stopping.changed() => {}
                    _ = handle.killed() => {}
                }
                continue;
            }
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                debug!(client = session.id, error = %e, "protocol error; closing");
                conn.queue(&reply::err(&e), session.protocol);
                settle(shared, &mut owed).await?;
                return conn.close().await;
            }
        };
        // One turn of work per request against tokio's cooperative budget:
        // a client with a long pipeline yields to the others now and then.
        tokio::task::coop::consume_budget().await;
        if request.is_empty() {
            continue;
        }
        let mut request = request;
        // Not after a protocol error: nothing after it may run, and the
        // parser may already have dropped the broken bytes.
        if !alone
            && pending.is_empty()
            && broken.is_none()
            && cmd::is_plain_set(&request)
            && batches_sets(shared, &session)
        {
            // A pipelined run of plain SETs: one write for all of them
            // (under `--fsync always`, the SET writer's, `crate::sets`,
            // which writes them with other connections' in one commit and
            // one fsync, a lone SET too). A run is bounded in count, in
            // bytes, and by the replies (`+OK`, 5 bytes each) the output
            // buffer can still take, so that no write runs whose reply the
            // single path would have refused.
            let room = match shared.config.client_output_buffer_limit {
                0 => SET_RUN_MAX,
                limit => (limit.saturating_sub(conn.queued()) / 5).min(SET_RUN_MAX),
            };
            let mut run = vec![(request, 0)];
            let mut run_bytes = session.request_bytes;
            while run.len() < room && run_bytes < SET_RUN_BYTES {
                match conn.next_buffered(limits) {
                    Ok(Some((r, bytes))) if cmd::is_plain_set(&r) => {
                        run_bytes += bytes;
                        run.push((r, bytes));
                        tokio::task::coop::consume_budget().await;
                    }
                    Ok(Some((other, bytes))) => {
                        pending.push_back(Pending::Request(other, bytes));
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if shared.sets.is_none() && run.len() == 1 {
                // Alone, as any request.
                request = run.pop().expect("one request").0;
            } else {
                let written = match shared.sets.as_ref() {
                    Some(writer) => {
                        let pairs = run
                            .iter()
                            .map(|(r, _)| (cmd::owned(&r[1]), cmd::owned(&r[2])))
                            .collect();
                        writer.write(pairs).await
                    }
                    None => {
                        let requests: Vec<&[Bytes]> = run.iter().map(|(r, _)| &r[..]).collect();
                        let (written, owes) =
                            ringkv_cluster::defer_sync(|| cmd::set_run(shared, &requests));
                        owed |= owes;
                        written
                    }
                };
                let frames = match written {
                    crate::sets::Written::Yes => {
                        if shared.sets.is_some() {
                            // The writer's fsync started after this
                            // connection's earlier writes returned: it
                            // covers them too.
                            owed = false;
                        }
                        cmd::sets_written(
                            &mut Ctx {
                                shared,
                                session: &mut session,
                                txn: None,
                            },
                            run.len(),
                        )
                    }
                    crate::sets::Written::No => {
                        // Not written as one (nothing was): each runs on
                        // its own, as if never grouped, and gets its own
                        // reply. The first one's bytes are counted already.
                        for (r, bytes) in run.into_iter().rev() {
                            pending.push_front(Pending::Alone(r, bytes));
                        }
                        continue;
                    }
                    crate::sets::Written::Unsynced(e) => {
                        // As `settle` does for any write: the client is
                        // told nothing false.
                        return Err(io::Error::other(e));
                    }
                };
                let more: u64 = run.iter().map(|(_, b)| *b as u64).sum();
                shared
                    .stats
                    .net_input_bytes
                    .fetch_add(more, Ordering::Relaxed);
                for frame in frames {
                    if !send_reply(shared, &mut conn, &session, &mut owed, &frame).await? {
                        return Ok(());
                    }
                }
                continue;
            }
        }
        if !alone
            && pending.is_empty()
            && broken.is_none()
            && conn.has_buffered()
            && cmd::joins_write_run(&request)
            && batches_sets(shared, &session)
        {
            // A pipelined run of other writes: one transaction, so one
            // journal append and one commit (`cmd::runs`). Bounded as a
            // run of SETs is, counting a reply as at most 64 bytes.
            let room = match shared.config.client_output_buffer_limit {
                0 => SET_RUN_MAX,
                limit => (limit.saturating_sub(conn.queued()) / 64).min(SET_RUN_MAX),
            };
            let mut run = vec![(request, session.request_bytes)];
            let mut run_bytes = session.request_bytes;
            while run.len() < room && run_bytes < SET_RUN_BYTES {
                match conn.next_buffered(limits) {
                    Ok(Some((r, bytes))) if cmd::joins_write_run(&r) => {
                        run_bytes += bytes;
                        run.push((r, bytes));
                        tokio::task::coop::consume_budget().await;
                    }
                    Ok(Some((other, bytes))) => {
                        pending.push_back(Pending::Request(other, bytes));
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if run.len() == 1 {
                request = run.pop().expect("one request").0;
            } else {
                let requests: Vec<&[Bytes]> = run.iter().map(|(r, _)| &r[..]).collect();
                let (frames, owes) = ringkv_cluster::defer_sync(|| {
                    let mut ctx = Ctx {
                        shared,
                        session: &mut session,
                        txn: None,
                    };
                    cmd::write_run(&mut ctx, &requests)
                });
                owed |= owes;
                let Some(frames) = frames else {
                    // Nothing was applied: each runs on its own. The first
                    // one's bytes are counted already.
                    run[0].1 = 0;
                    for (r, bytes) in run.into_iter().rev() {
                        pending.push_front(Pending::Alone(r, bytes));
                    }
                    continue;
                };
                let more: u64 = run.iter().skip(1).map(|(_, b)| *b as u64).sum();
                shared
                    .stats
                    .net_input_bytes
                    .fetch_add(more, Ordering::Relaxed);
                for frame in frames {
                    if !send_reply(shared, &mut conn, &session, &mut owed, &frame).await? {
                        return Ok(());
                    }
                }
                continue;
            }
        }
        if let Some(router) = shared.router.as_deref()
            && pending.is_empty()
            && broken.is_none()
            && routes_runs(&session)
            // A request alone (no pipeline behind it) is routed as usual,
            // without looking up its keys twice.
            && conn.has_buffered()
            // A run begins at a request the router forwards.
            && cmd::first_key(&request).is_some_and(|key| router.forwards(key))
            && let Some(first) = crate::route::batchable(&request)
        {
            // A pipeline on a node of a multi-process cluster: its requests
            // go together, one group per node that serves them (a call per
            // other node), the groups at once.
            let mut run = vec![(request, session.request_bytes, first)];
            let mut run_bytes = session.request_bytes;
            while run.len() < FORWARD_RUN_MAX && run_bytes < FORWARD_RUN_BYTES {
                match conn.next_buffered(limits) {
                    Ok(Some((r, bytes))) => match crate::route::batchable(&r) {
                        Some(b) => {
                            run_bytes += bytes;
                            run.push((r, bytes, b));
                            tokio::task::coop::consume_budget().await;
                        }
                        None => {
                            pending.push_back(Pending::Request(r, bytes));
                            break;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            let taken = if run.len() > 1 {
                let protocol = session.protocol.version() as u8;
                let requests: Vec<crate::route::Request<'_>> = run
                    .iter()
                    .map(|(words, _, (_, keys, write))| crate::route::Request {
                        words,
                        keys: keys.clone(),
                        write: *write,
                        pinned: false,
                        forwarded: None,
                        protocol,
                    })
                    .collect();
                router.route_many(&requests)
            } else {
                None
            };
            let n = taken.as_ref().map_or(1, |many| many.here.len());
            // What is not taken is served after, each on its own (the
            // first one's bytes are counted already).
            for (r, bytes, _) in run.drain(n..).rev() {
                pending.push_front(Pending::Request(r, bytes));
            }
            match taken {
                None => request = run.pop().expect("one request").0,
                Some(crate::route::Many { here, replies }) => {
                    for (i, (_, bytes, (index, _, _))) in run.iter().enumerate() {
                        if i > 0 {
                            shared
                                .stats
                                .net_input_bytes
                                .fetch_add(*bytes as u64, Ordering::Relaxed);
                        }
                        session.handle.touch(*index);
                        if here[i] {
                            continue; // counted by the executor
                        }
                        shared.stats.commands.fetch_add(1, Ordering::Relaxed);
                        shared.command_stats[*index]
                            .calls
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    // Earlier replies go out before the wait.
                    settle(shared, &mut owed).await?;
                    conn.flush().await?;
                    let mut replies = replies.await;
                    // One reply per request, whatever the router does.
                    replies.resize_with(run.len(), || {
                        crate::route::Elsewhere::Error(
                            "ERR the node lost this request's reply; it may or may not have run"
                                .into(),
                        )
                    });
                    for ((r, _, _), reply) in run.into_iter().zip(replies).rev() {
                        pending.push_front(match crate::route::elsewhere_frame(reply) {
                            Some(frame) => Pending::Reply(frame),
                            // It did not run: routed again, in its turn.
                            None => Pending::Request(r, 0),
                        });
                    }
                    continue;
                }
            }
        }
        // The context lives for the call only: it is not `Send`, and the
        // task awaits below.
        // Writes under `--fsync always` do not wait for the disk here: the
        // batch's replies wait for one shared fsync before they go out.
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
        owed |= owes;
        let frame = match outcome {
            Outcome::Reply(frame) => frame,
            Outcome::Close(frame) => {
                conn.queue(&frame, session.protocol);
                settle(shared, &mut owed).await?;
                return conn.close().await;
            }
            Outcome::OverLimit => {
                over_limit(shared, &session, None);
                return Ok(());
            }
            Outcome::Shutdown => {
                // Earlier replies go out (after their fsync); this one has
                // none. The accept loop stops and every connection drains,
                // as on SIGTERM.
                settle(shared, &mut owed).await?;
                shared.shutdown.notify_one();
                return conn.close().await;
            }
            Outcome::Blocking(job) => {
                // Earlier replies go out before a possibly long wait.
                settle(shared, &mut owed).await?;
                conn.flush().await?;
                match tokio::task::spawn_blocking(job).await {
                    Ok(frame) => frame,
                    Err(e) => cmd::join_failure(session.id, &request[0], e),
                }
            }
            Outcome::Wait(wait) => {
                settle(shared, &mut owed).await?;
                conn.flush().await?;
                match wait.await {
                    crate::route::Waited::Frame(frame) => frame,
                    crate::route::Waited::OverLimit => {
                        over_limit(shared, &session, None);
                        return Ok(());
                    }
                    crate::route::Waited::Retry => {
                        pending.push_front(Pending::Request(request, 0));
                        continue;
                    }
                }
            }
            // Only a forwarded request is answered MOVED, and those do not
            // come through a connection.
            Outcome::Moved { node, .. } => {
                reply::error(format!("TRYAGAIN the key is served by node {node}; retry"))
            }
        };
        if !fits(shared, &conn, &frame, session.protocol) {
            over_limit(shared, &session, Some(frame.encoded_len(session.protocol)));
            return Ok(());
        }
        drop(request);
        // `CLIENT REPLY OFF` or `SKIP` silence replies (the command's own too).
        let silent = session.replies_off || session.replies_skipped > 0;
        session.replies_skipped = session.replies_skipped.saturating_sub(1);
        if silent {
            continue;
        }
        send(shared, &mut conn, session.protocol, &mut owed, &frame).await?;
    }
}

/// Sends `frame` as the connection's next reply, after the output-buffer
/// check: `false` if it failed (the client is to be closed; counted and
/// logged).
async fn send_reply(
    shared: &Arc<Shared>,
    conn: &mut Connection,
    session: &Session,
    owed: &mut bool,
    frame: &Frame,
) -> io::Result<bool> {
    if !fits(shared, conn, frame, session.protocol) {
        over_limit(shared, session, Some(frame.encoded_len(session.protocol)));
        return Ok(false);
    }
    send(shared, conn, session.protocol, owed, frame).await?;
    Ok(true)
}

/// Queues `frame`, sending what is queued once it passes [`FLUSH_AT`];
/// under `--fsync always`, replies of writes not on disk yet are held
/// until they are ([`settle`]) before that flush.
async fn send(
    shared: &Arc<Shared>,
    conn: &mut Connection,
    protocol: Protocol,
    owed: &mut bool,
    frame: &Frame,
) -> io::Result<()> {
    if *owed && conn.queued() + frame.encoded_len(protocol) >= FLUSH_AT {
        settle(shared, owed).await?;
    }
    conn.send(frame, protocol, FLUSH_AT).await
}

/// Waits, off the event loop, until every write whose reply is queued is on
/// disk (`--fsync always`; see `ringkv_cluster::defer_sync`). Connections
/// waiting at once share one fsync: the SET writer's next one
/// (`crate::sets`: the connection holds no thread while it waits). If the
/// sync fails, the connection is closed without those replies: the
/// writes' outcome is unknown to their client, as after a crash, and it is
/// told nothing false.
async fn settle(shared: &Arc<Shared>, owed: &mut bool) -> io::Result<()> {
    if !std::mem::take(owed) {
        return Ok(());
    }
    crate::sets::sync(shared).await.map_err(|e| {
        error!(error = %e, "fsync failed; closing the client without its replies");
        io::Error::other(e)
    })
}

/// Whether pipelined plain SETs of this connection may run as one write:
/// with a data directory (where each write is an engine commit; in memory
/// one SET at a time is as fast), without a memory limit, outside MULTI,
/// authenticated, and with replies on (a reply per request, as each would
/// have had).
fn batches_sets(shared: &Shared, session: &Session) -> bool {
    shared.cluster.is_persistent()
        // A node of a multi-process cluster routes every key on its own
        // (`route`): a group would write keys other nodes serve here.
        && shared.router.is_none()
        // Under a memory limit each SET checks (and evicts for) its own
        // footprint, which a group would check differently.
        && shared.cluster.maxmemory() == 0
        && session.multi.is_none()
        && session.authenticated
        && !session.replies_off
        && session.replies_skipped == 0
}

/// Whether pipelined requests of this connection may be routed together
/// (`Router::route_many`): outside MULTI, authenticated, with replies on
/// (each gets its reply, as it would alone).
fn routes_runs(session: &Session) -> bool {
    session.multi.is_none()
        && session.authenticated
        && !session.replies_off
        && session.replies_skipped == 0
}

/// Whether queueing `frame` keeps the connection within its output-buffer
/// limit.
fn fits(shared: &Shared, conn: &Connection, frame: &Frame, protocol: Protocol) -> bool {
    let limit = shared.config.client_output_buffer_limit;
    limit == 0 || conn.queued().saturating_add(frame.encoded_len(protocol)) <= limit
}

/// Logs and counts a client closed for its output-buffer limit. Like
/// Redis, the client gets no reply: the connection just closes.
fn over_limit(shared: &Shared, session: &Session, reply_bytes: Option<usize>) {
    shared
        .stats
        .output_limit_disconnections
        .fetch_add(1, Ordering::Relaxed);
    warn!(
        client = session.id,
        peer = %session.peer,
        command = session.last_command,
        reply_bytes,
        limit = shared.config.client_output_buffer_limit,
        "client closed for overcoming the output buffer limit"
    );
}
