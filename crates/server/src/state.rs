//! What the connections share (the cluster, settings, counters, the last
//! rebalance) and what each connection keeps for itself (its session).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringkv_cluster::{Cluster, RebalanceReport};

use crate::ServerConfig;
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
    /// The last membership change made through this server, for `INFO`.
    /// A std mutex, not a tokio one: it is held only to copy or replace a
    /// small struct, never across an `.await`.
    last_rebalance: Mutex<Option<LastRebalance>>,
    next_client_id: AtomicU64,
}

/// Server-wide counters (relaxed atomics: each is read on its own).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connected: AtomicU64,
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
            config,
            local_addr,
            started: Instant::now(),
            stats: Stats::default(),
            last_rebalance: Mutex::new(None),
            next_client_id: AtomicU64::new(1),
        }
    }

    /// A fresh client id, as Redis's `CLIENT ID`.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
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
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// Whether `AUTH` succeeded (always true without a password).
    pub authenticated: bool,
    /// When the connection was accepted.
    pub since: Instant,
    /// The last command's name, for `CLIENT INFO`.
    pub last_command: &'static str,
    /// The protocol `HELLO` chose.
    pub protocol: Protocol,
}

impl Session {
    /// A new session; authenticated unless a password is set.
    pub fn new(shared: &Shared, peer: SocketAddr) -> Session {
        Session {
            id: shared.next_client_id(),
            peer,
            name: None,
            authenticated: shared.config.requirepass.is_none(),
            since: Instant::now(),
            last_command: "NULL",
            protocol: Protocol::Resp2,
        }
    }
}
