//! The accept loop, the per-connection loop, and shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringkv_cluster::Cluster;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::cmd::{self, Ctx, Outcome};
use crate::connection::{Connection, close_gracefully};
use crate::reply;
use crate::state::{Session, Shared};
use crate::{ServerConfig, ServerError};

/// Replies queued past this many bytes are sent before the next request
/// is served, so a long pipeline does not grow the buffer without bound.
const FLUSH_AT: usize = 64 * 1024;

/// What a server did, logged and returned when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Connections served.
    pub connections: u64,
    /// Connections refused because `max_clients` were open.
    pub rejected: u64,
    /// Commands executed.
    pub commands: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// How long the server ran.
    pub uptime: Duration,
}

/// Serves `cluster` over RESP on `listener` until `shutdown` resolves.
///
/// Then it stops accepting, lets every connection finish the requests it
/// has received (a membership change in flight runs to its end), closes
/// the connections, logs a summary and returns it. Taking a bound listener
/// lets tests bind port 0.
pub async fn run(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    config: ServerConfig,
    shutdown: impl Future,
) -> Result<Summary, ServerError> {
    config.validate()?;
    let local_addr = listener.local_addr()?;
    if !local_addr.ip().is_loopback() && config.requirepass.is_none() {
        warn!(
            addr = %local_addr,
            "listening on a non-loopback address without a password: anyone who can reach it \
             can read, write and change the cluster; set --requirepass"
        );
    }
    let shared = Arc::new(Shared::new(cluster, config, local_addr));
    // One permit per connection served: a connection over the limit is
    // told so and closed, as Redis does, instead of waiting in a queue.
    let permits = Arc::new(Semaphore::new(shared.config.max_clients));
    // `true` once shutdown starts; each connection watches it while idle.
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    info!(addr = %local_addr, nodes = shared.cluster.members().len(), "listening");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                            let shared = Arc::clone(&shared);
                            let stopping = stopping.clone();
                            tasks.spawn(async move {
                                handle(stream, peer, shared, stopping).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            debug!(%peer, "max number of clients reached");
                            tasks.spawn(reject(stream));
                        }
                    }
                }
                // Out of file descriptors and the like: the listener is
                // still good, so wait a little rather than spin.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => log_panic(done),
        }
    }

    drop(listener);
    let open = shared.stats.connected.load(Ordering::Relaxed);
    info!(
        connections = open,
        "shutting down: not accepting, finishing requests in flight"
    );
    let _ = stop.send(true);
    while let Some(done) = tasks.join_next().await {
        log_panic(done);
    }
    let stats = &shared.stats;
    let summary = Summary {
        connections: stats.connections.load(Ordering::Relaxed),
        rejected: stats.rejected.load(Ordering::Relaxed),
        commands: stats.commands.load(Ordering::Relaxed),
        protocol_errors: stats.protocol_errors.load(Ordering::Relaxed),
        uptime: shared.started.elapsed(),
    };
    let cluster = shared.cluster.stats();
    info!(
        connections = summary.connections,
        rejected = summary.rejected,
        commands = summary.commands,
        protocol_errors = summary.protocol_errors,
        uptime_s = summary.uptime.as_secs(),
        keys = cluster.total_keys,
        nodes = cluster.nodes.len(),
        epoch = cluster.epoch,
        "server stopped"
    );
    Ok(summary)
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "a connection task panicked");
    }
}

async fn reject(mut stream: TcpStream) {
    let write = stream.write_all(b"-ERR max number of clients reached\r\n");
    if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), write).await {
        close_gracefully(&mut stream).await;
    }
}

/// Serves one connection until the client leaves, breaks the protocol,
/// quits, or the server stops.
async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
) {
    shared.stats.connected.fetch_add(1, Ordering::Relaxed);
    let session = Session::new(&shared, peer);
    let id = session.id;
    debug!(client = id, %peer, "connected");
    let conn = Connection::new(stream, shared.config.max_bulk_len);
    if let Err(e) = serve(conn, session, &shared, stopping).await {
        debug!(client = id, error = %e, "connection error");
    }
    debug!(client = id, "disconnected");
    shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
}

async fn serve(
    mut conn: Connection,
    mut session: Session,
    shared: &Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut drains_left = 16;
    loop {
        // Serve every request already buffered (a pipeline) before
        // sending the replies and reading again.
        let request = match conn.next_buffered() {
            Ok(Some(request)) => request,
            Ok(None) => {
                conn.flush().await?;
                // Shutdown interrupts only the wait for a new request:
                // what the client sent before it is served (a bounded
                // number of reads, so a client streaming requests cannot
                // hold the shutdown up), then the connection closes.
                if *stopping.borrow() {
                    if drains_left > 0 && conn.try_fill()? {
                        drains_left -= 1;
                        continue;
                    }
                    return conn.close().await;
                }
                tokio::select! {
                    more = conn.fill() => if !more? { return Ok(()) },
                    _ = stopping.changed() => {}
                }
                continue;
            }
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                debug!(client = session.id, error = %e, "protocol error; closing");
                conn.queue(&reply::err(&e));
                return conn.close().await;
            }
        };
        if request.is_empty() {
            continue;
        }
        let mut ctx = Ctx {
            shared,
            session: &mut session,
        };
        match cmd::dispatch(&mut ctx, &request) {
            Outcome::Reply(frame) => conn.queue(&frame),
            Outcome::Close(frame) => {
                conn.queue(&frame);
                return conn.close().await;
            }
            Outcome::Blocking(job) => {
                // Earlier replies go out before a possibly long wait.
                conn.flush().await?;
                let frame = tokio::task::spawn_blocking(job)
                    .await
                    .unwrap_or_else(|e| reply::err(format!("internal error: {e}")));
                conn.queue(&frame);
            }
        }
        if conn.queued() >= FLUSH_AT {
            conn.flush().await?;
        }
    }
}
