//! What the connections share (the cluster, settings, counters, the last
//! rebalance) and what each connection keeps for itself (its session).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringkv_cluster::{Cluster, RebalanceReport};

use bytes::Bytes;

use crate::ServerConfig;
use crate::clients::{ClientHandle, Clients};
use crate::reply::Protocol;

/// State shared by every connection, in an `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// The cluster. Its methods take `&self` and are thread-safe.
    pub cluster: Arc<Cluster>,
    /// The settings the server runs with.
    pub config: ServerConfig,
    /// The address the server listens on.
    pub local_addr: SocketAddr,
    /// When the server started.
    pub started: Instant,
    /// Counters for `INFO` and the shutdown summary.
    pub stats: Stats,
    /// The settings `CONFIG SET` can change while the server runs.
    pub live: Live,
    /// The open connections.
    pub clients: Clients,
    /// Per command of the table (same index): calls, for `INFO
    /// commandstats`.
    pub command_stats: Box<[CommandStats]>,
    /// The last membership change made through this server, for `INFO`.
    /// A std mutex, not a tokio one: it is held only to copy or replace a
    /// small struct, never across an `.await`.
    last_rebalance: Mutex<Option<LastRebalance>>,
    next_client_id: AtomicU64,
    /// A node of a multi-process cluster routes keyed requests through
    /// this (`None` for `ringkv serve`).
    pub router: Option<Arc<dyn crate::route::Router>>,
    /// Under `--fsync always`: the writer that commits plain SETs of many
    /// connections together and fsyncs for every connection (`crate::sets`;
    /// on a node it writes no SETs, only fsyncs).
    pub sets: Option<crate::sets::SetWriter>,
    /// Notified by `SHUTDOWN`: the accept loop stops as when the server's
    /// shutdown future resolves (a permit is kept if it is not waiting).
    pub shutdown: tokio::sync::Notify,
}

/// Settings that `CONFIG SET` changes at run time. Each is read where it
/// applies (`maxclients` at accept, `timeout` at each wait for a request,
/// `requirepass` when a connection opens or authenticates).
#[derive(Debug)]
pub struct Live {
    /// `maxclients`.
    pub max_clients: AtomicUsize,
    /// `timeout`, in milliseconds (0: never; `CONFIG` shows seconds).
    pub idle_timeout_ms: AtomicU64,
    /// `requirepass`. A std lock: held to copy or replace a string.
    requirepass: RwLock<Option<String>>,
}

impl Live {
    fn new(config: &ServerConfig) -> Live {
        Live {
            max_clients: AtomicUsize::new(config.max_clients),
            idle_timeout_ms: AtomicU64::new(config.idle_timeout.as_millis() as u64),
            requirepass: RwLock::new(config.requirepass.clone()),
        }
    }

    /// The password, if one is required.
    pub fn requirepass(&self) -> Option<String> {
        self.requirepass
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets or clears (`None`) the password. Connections already
    /// authenticated stay so, as in Redis.
    pub fn set_requirepass(&self, password: Option<String>) {
        *self.requirepass.write().unwrap_or_else(|e| e.into_inner()) = password;
    }

    /// The idle timeout, if there is one.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.idle_timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Server-wide counters (relaxed atomics: each is read on its own).
/// `CONFIG RESETSTAT` zeroes those Redis zeroes.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connected: AtomicU64,
    /// Reads of a key that found it (`keyspace_hits`).
    pub keyspace_hits: AtomicU64,
    /// Reads of a key that did not (`keyspace_misses`).
    pub keyspace_misses: AtomicU64,
    /// Replies that were errors (`total_error_replies`).
    pub error_replies: AtomicU64,
    /// Bytes of requests read (`total_net_input_bytes`).
    pub net_input_bytes: AtomicU64,
    /// Connections accepted and served since the start.
    pub connections: AtomicU64,
    /// Connections refused because `max_clients` were open.
    pub rejected: AtomicU64,
    /// Commands executed (including those answered with an error).
    pub commands: AtomicU64,
    /// Requests that broke the protocol (their connection was closed).
    pub protocol_errors: AtomicU64,
    /// Connections closed because a reply would have taken them past the
    /// output-buffer limit.
    pub output_limit_disconnections: AtomicU64,
    /// Runs of pipelined SETs written as one transaction (a ringkv
    /// addition to INFO stats: `ringkv_set_runs`).
    pub set_runs: AtomicU64,
    /// Runs of other pipelined writes made as one transaction
    /// (`cmd::write_run`; INFO stats: `ringkv_write_runs`).
    pub write_runs: AtomicU64,
}

/// One command's counters, as `INFO commandstats` shows them.
#[derive(Debug, Default)]
pub struct CommandStats {
    /// Runs (including those that replied with an error).
    pub calls: AtomicU64,
    /// Requests refused before running (arity, authentication).
    pub rejected: AtomicU64,
    /// Runs that replied with an error.
    pub failed: AtomicU64,
}

/// A summary of the last membership change, for `INFO`.
#[derive(Debug, Clone)]
pub struct LastRebalance {
    /// `add_node` or `remove_node`.
    pub op: &'static str,
    /// The node added or removed.
    pub node: String,
    /// Ring epoch after the change.
    pub epoch: u64,
    /// Keys moved.
    pub keys_moved: u64,
    /// Bytes of keys and values moved.
    pub bytes_moved: u64,
    /// Wall time of the change.
    pub duration: Duration,
    /// When it finished, in seconds since the Unix epoch.
    pub finished_unix: u64,
}

impl Shared {
    /// State for a server on `local_addr`.
    pub fn new(cluster: Arc<Cluster>, config: ServerConfig, local_addr: SocketAddr) -> Shared {
        Shared {
            cluster,
            local_addr,
            started: Instant::now(),
            stats: Stats::default(),
            live: Live::new(&config),
            clients: Clients::default(),
            command_stats: crate::cmd::COMMANDS
                .iter()
                .map(|_| CommandStats::default())
                .collect(),
            config,
            last_rebalance: Mutex::new(None),
            next_client_id: AtomicU64::new(1),
            router: None,
            sets: None,
            shutdown: tokio::sync::Notify::new(),
        }
    }

    /// A fresh client id, as Redis's `CLIENT ID`.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Zeroes the counters `CONFIG RESETSTAT` resets (not the gauges).
    pub fn reset_stats(&self) {
        let stats = &self.stats;
        for counter in [
            &stats.connections,
            &stats.rejected,
            &stats.commands,
            &stats.protocol_errors,
            &stats.output_limit_disconnections,
            &stats.keyspace_hits,
            &stats.keyspace_misses,
            &stats.error_replies,
            &stats.net_input_bytes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        for command in &self.command_stats {
            for counter in [&command.calls, &command.rejected, &command.failed] {
                counter.store(0, Ordering::Relaxed);
            }
        }
    }

    /// `(calls, rejected, failed)` of each command, in table order.
    pub fn command_calls(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.command_stats.iter().map(|c| {
            (
                c.calls.load(Ordering::Relaxed),
                c.rejected.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
            )
        })
    }

    /// Remembers a finished membership change.
    pub fn record_rebalance(&self, report: &RebalanceReport) {
        let finished_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LastRebalance {
            op: report.kind.as_str(),
            node: report.node.to_string(),
            epoch: report.epoch,
            keys_moved: report.keys_moved,
            bytes_moved: report.bytes_moved,
            duration: report.duration,
            finished_unix,
        };
        *self
            .last_rebalance
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(last);
    }

    /// The last membership change made through this server, if any.
    pub fn last_rebalance(&self) -> Option<LastRebalance> {
        self.last_rebalance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What one connection knows about itself. Owned by its task: no lock.
#[derive(Debug)]
pub struct Session {
    /// `CLIENT ID`.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// What other connections see of this one.
    pub handle: Arc<ClientHandle>,
    /// Bytes of the request being served, as `CLIENT INFO`'s `qbuf`.
    pub request_bytes: usize,
    /// Whether `AUTH` succeeded (always true without a password).
    pub authenticated: bool,
    /// The last command's name, for `CLIENT INFO`.
    pub last_command: &'static str,
    /// The protocol `HELLO` chose.
    pub protocol: Protocol,
    /// The transaction `MULTI` opened, until `EXEC` or `DISCARD`.
    pub multi: Option<crate::cmd::Multi>,
    /// `WATCH`ed keys and the version each had (`None`: absent).
    pub watched: Vec<(Bytes, Option<u64>)>,
    /// `CLIENT REPLY OFF`: no replies until `CLIENT REPLY ON`.
    pub replies_off: bool,
    /// Replies still to skip, counting the current command's (`CLIENT
    /// REPLY SKIP` sets 2: its own and the next command's).
    pub replies_skipped: u8,
    /// A peer's forwarded request (`ringkv node`), with the epoch of the
    /// peer's view.
    pub forwarded: Option<u64>,
}

impl Session {
    /// A new session; authenticated unless a password is set.
    pub fn new(shared: &Shared, peer: SocketAddr, fd: i64) -> Session {
        let id = shared.next_client_id();
        Session {
            id,
            peer,
            handle: Arc::new(ClientHandle::new(id, peer, fd)),
            request_bytes: 0,
            authenticated: shared.live.requirepass().is_none(),
            last_command: "NULL",
            protocol: Protocol::Resp2,
            multi: None,
            watched: Vec::new(),
            replies_off: false,
            replies_skipped: 0,
            forwarded: None,
        }
    }
}
