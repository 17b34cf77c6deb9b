//! The accept loop, the per-connection loop, and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringkv_cluster::{Cluster, ExpireBudget};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::connection::close_gracefully;
use crate::handler::{Connected, handle};
use crate::listener::{ClientStream, Listener};
use crate::state::Shared;
use crate::{ServerConfig, ServerError};

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
    /// Connections dropped at shutdown because they had not drained within
    /// the grace period (or a second signal came).
    pub dropped: u64,
    /// How long the server ran.
    pub uptime: Duration,
}

/// Serves `cluster` over RESP on `listener` until `shutdown` resolves; see
/// [`run_until`]. Shutdown waits at most `config.shutdown_timeout` for
/// connections to drain.
pub async fn run(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    config: ServerConfig,
    shutdown: impl Future,
) -> Result<Summary, ServerError> {
    run_until(
        listener,
        cluster,
        config,
        shutdown,
        std::future::pending::<()>(),
    )
    .await
}

/// Serves `cluster` over RESP on `listener` until `shutdown` resolves.
///
/// Then it stops accepting and lets every connection finish the requests
/// it has received and take their replies, for at most
/// `config.shutdown_timeout`, or until `force` resolves (a second signal):
/// connections still open then are dropped. A membership change in flight
/// runs to its end on its own thread either way. Then it logs a summary
/// and returns it. `force` is first polled once shutdown has started.
/// Taking a bound listener lets tests bind port 0.
pub async fn run_until(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    config: ServerConfig,
    shutdown: impl Future,
    force: impl Future,
) -> Result<Summary, ServerError> {
    serve(listener.into(), cluster, config, None, shutdown, force).await
}

/// [`run_until`] for one node of a multi-process cluster (`ringkv node`):
/// `cluster` holds this node's keys, and `router` decides which requests
/// run here and where the others go ([`crate::route`]). It is handed the
/// server's [`Executor`](crate::route::Executor) before the first accept.
pub async fn run_routed(
    listener: impl Into<Listener>,
    cluster: Arc<Cluster>,
    config: ServerConfig,
    router: Arc<dyn crate::route::Router>,
    shutdown: impl Future,
    force: impl Future,
) -> Result<Summary, ServerError> {
    serve(
        listener.into(),
        cluster,
        config,
        Some(router),
        shutdown,
        force,
    )
    .await
}

async fn serve(
    mut listener: Listener,
    cluster: Arc<Cluster>,
    mut config: ServerConfig,
    router: Option<Arc<dyn crate::route::Router>>,
    shutdown: impl Future,
    force: impl Future,
) -> Result<Summary, ServerError> {
    config.validate()?;
    config.max_clients = crate::fdlimit::cap_max_clients(config.max_clients)?;
    let local_addr = listener.local_addr()?;
    if !local_addr.ip().is_loopback() && config.requirepass.is_none() {
        warn!(
            addr = %local_addr,
            "listening on a non-loopback address without a password: anyone who can reach it \
             can read, write and change the cluster; set --requirepass"
        );
    }
    let mut shared = Shared::new(cluster, config, local_addr);
    shared.router = router.clone();
    // Only under `--fsync always` (see `crate::sets` for why). On a node
    // (with a router) it groups no SETs (a node routes each key itself),
    // but every connection's fsync still joins its groups (`settle`).
    if shared.cluster.is_persistent()
        && shared.cluster.config().fsync == ringkv_cluster::FsyncPolicy::Always
    {
        let writer =
            crate::sets::SetWriter::start(Arc::clone(&shared.cluster)).map_err(|source| {
                ServerError::Thread {
                    what: "SET writer",
                    source,
                }
            })?;
        shared.sets = Some(writer);
    }
    let shared = Arc::new(shared);
    if let Some(router) = router {
        router.attach(crate::route::Executor::new(&shared));
    }
    // `true` once shutdown starts; each connection watches it while idle.
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Stopped with the connections, and waited for, so that the cluster
    // (and its data directory) is released when the server returns;
    // aborted when this future is dropped instead (a node that crashes
    // drops its server without a shutdown).
    let mut expiry = AbortOnDrop(tokio::spawn(active_expiry(
        Arc::clone(&shared.cluster),
        stopping.clone(),
    )));
    info!(addr = %local_addr, nodes = shared.cluster.members().len(), "listening");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = shared.shutdown.notified() => {
                info!("shutdown requested by SHUTDOWN");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Counted here, before the task starts, so that the
                    // next accept sees it; a connection over the limit
                    // (which `CONFIG SET maxclients` may change) is told
                    // so and closed, as Redis does, not queued.
                    let connected = shared.stats.connected.load(Ordering::Relaxed);
                    match connected < shared.live.max_clients.load(Ordering::Relaxed) as u64 {
                        true => {
                            let open = Connected::count(&shared);
                            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                            let shared = Arc::clone(&shared);
                            let stopping = stopping.clone();
                            tasks.spawn(handle(stream, peer, shared, stopping, open));
                        }
                        false => {
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
        grace_ms = shared.config.shutdown_timeout.as_millis(),
        "shutting down: not accepting, finishing requests in flight"
    );
    let _ = stop.send(true);
    let dropped = drain(&mut tasks, shared.config.shutdown_timeout, force).await;
    // Its cycle in progress (at most `EXPIRE_BUDGET`) ends first.
    let _ = (&mut expiry.0).await;
    let stats = &shared.stats;
    let summary = Summary {
        connections: stats.connections.load(Ordering::Relaxed),
        rejected: stats.rejected.load(Ordering::Relaxed),
        commands: stats.commands.load(Ordering::Relaxed),
        protocol_errors: stats.protocol_errors.load(Ordering::Relaxed),
        dropped,
        uptime: shared.started.elapsed(),
    };
    let cluster = shared.cluster.stats();
    info!(
        connections = summary.connections,
        rejected = summary.rejected,
        commands = summary.commands,
        protocol_errors = summary.protocol_errors,
        dropped = summary.dropped,
        uptime_s = summary.uptime.as_secs(),
        keys = cluster.total_keys,
        nodes = cluster.nodes.len(),
        epoch = cluster.epoch,
        "server stopped"
    );
    Ok(summary)
}

/// Waits for the connection tasks to end, for at most `grace` or until
/// `force` resolves; then drops those left. Returns how many were dropped.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration, force: impl Future) -> u64 {
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline, force);
    loop {
        let why = tokio::select! {
            done = tasks.join_next() => match done {
                Some(done) => {
                    log_panic(done);
                    continue;
                }
                None => return 0,
            },
            _ = &mut deadline => "the shutdown grace period is over",
            _ = &mut force => "a second signal forces the shutdown",
        };
        let left = tasks.len() as u64;
        warn!(
            connections = left,
            "{why}: dropping connections that did not drain"
        );
        // Aborted tasks end at their next await; a membership change they
        // waited for goes on on its own thread.
        tasks.abort_all();
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                error!(error = %e, "a connection task panicked");
            }
        }
        return left;
    }
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "a connection task panicked");
    }
}

/// Tells a client over `max_clients` so and closes. One non-blocking write
/// (a fresh socket's send buffer always takes 38 bytes), then a short
/// drain so the error is not lost to a reset: a refused connection holds
/// its file descriptor for a bounded, short time even when refusals come
/// in bursts at the descriptor limit.
async fn reject(mut stream: Box<dyn ClientStream>) {
    const ERROR: &[u8] = b"-ERR max number of clients reached\r\n";
    if stream.write_now(ERROR).is_ok_and(|n| n == ERROR.len()) {
        close_gracefully(&mut *stream, Duration::from_millis(50)).await;
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often expired keys are reclaimed in the background: Redis's
/// default `hz` (10 times a second).
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

/// Time one background expiry cycle may take: 10% of a core at Redis's
/// default `hz` of 10 (Redis's slow cycle allows 25%, but on two cores
/// shared with the clients 25 ms pushed GET p99 to 2.8x idle; 10 ms still
/// clears 1M keys as they fall due, `docs/BENCHMARKS.md`). A 1 ms budget,
/// Redis's fast cycle, reclaimed about 3,000 keys a second while 16,000 a
/// second fell due.
const EXPIRE_BUDGET: ExpireBudget = ExpireBudget {
    max_samples: usize::MAX,
    max_time: Duration::from_millis(10),
};

/// Redis's active expiry: every [`EXPIRE_PERIOD`], one cycle that samples
/// volatile keys and deletes the expired ones, for at most
/// [`EXPIRE_BUDGET`]. It runs on a blocking thread, not a runtime worker,
/// so clients are never queued behind it; it takes stripe locks one sample
/// step at a time, as short as a client's command.
/// Ends when `stopping` turns `true`, after the cycle in progress.
async fn active_expiry(cluster: Arc<Cluster>, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|&stop| stop) => return,
        }
        let cluster = Arc::clone(&cluster);
        let Ok(cycle) =
            tokio::task::spawn_blocking(move || cluster.active_expire_cycle(EXPIRE_BUDGET)).await
        else {
            error!("an active expiry cycle panicked");
            continue;
        };
        if cycle.expired > 0 {
            debug!(
                expired = cycle.expired,
                sampled = cycle.sampled,
                bytes = cycle.reclaimed_bytes,
                "active expiry"
            );
        }
    }
}
