//! `ringkv node`: one process is one node of a ringkv cluster.
//!
//! A node holds the keys it serves in a local [`Cluster`] of one node (in
//! memory, or in `--data-dir`), agrees on the cluster's metadata with its
//! peers through Raft (`ringkv-meta`), serves clients over the Redis
//! protocol (`ringkv-server`, with this crate's router), and talks to its
//! peers over `ringkv-peer`. The parts:
//!
//! - [`view`]: pure decisions over the metadata: where a request runs,
//!   which local copies are kept, the coordinator's next step.
//! - `router`: the client side: a request for a key another node serves is
//!   forwarded there with this node's epoch; a write to a range being
//!   copied away is recorded for its last shipment.
//! - `moves`: the data side of a range move: the source's pages and last
//!   shipment, the target's pull, the cleanup of copies no longer served.
//! - `coord`: the coordinator, run by the Raft leader: admits members to
//!   the Raft group, picks voters, and drives each membership change
//!   through copy, fence, last shipment and switch as log commands.
//! - `follow`: how a node's view follows the committed state: publishing
//!   each applied state, catching up after a start, waiting for an epoch,
//!   and a removed node's routing by the members' views.
//! - `service`: the peer calls a node answers.
//!
//! The design and why each step is safe under crashes:
//! `docs/DISTRIBUTED.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use parking_lot::{Mutex, RwLock};
use ringkv_cluster::{Cluster, ClusterConfig, FsyncPolicy};
use ringkv_meta::raft::{DiskLogStore, MemLogStore, MetaRaft, MetaStore, PeerNetwork};
use ringkv_meta::{Command, FIRST_RAFT_ID, MetaState, NodeSpec, PlacementSpec, Rejected};
use ringkv_peer::{Limits, MemTransport, PeerServer, PeerTransport, Secret, TcpTransport};
use ringkv_persist::{DataDir, Durability};
use ringkv_server::route::Executor;
use ringkv_server::{Listener, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

mod batch;
mod cleanup;
mod coord;
pub mod fault;
mod follow;
mod keyspace;
mod lease;
mod moves;
mod report;
mod router;
mod service;
mod slots;
mod source;
mod split;
pub mod steps;
mod stop;
pub mod view;
pub mod wire;

pub use router::NodeRouter;

/// How a node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new cluster with this node as its only member (`--init`).
    Init,
    /// Join the cluster of the node whose peer address this is (`--join`).
    Join(String),
    /// Neither: a restart on a data directory that knows its cluster.
    Restart,
}

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's id (the ring's name for it).
    pub id: String,
    /// Its weight on the ring.
    pub weight: u32,
    /// Keep the keys, the Raft log and snapshots here (`None`: memory).
    pub data_dir: Option<PathBuf>,
    /// The keys' fsync policy with a data directory (the Raft log is always
    /// synced before it is acknowledged).
    pub fsync: FsyncPolicy,
    /// How to start.
    pub start: Start,
    /// The shared cluster secret peers authenticate with.
    pub secret: Secret,
    /// How the ring places keys (used by `--init` only).
    pub placement: PlacementSpec,
    /// The client server's settings.
    pub server: ServerConfig,
    /// Raft's timings.
    pub raft: Arc<openraft::Config>,
    /// A member silent this long (to the leader's probes) is marked down.
    pub down_after: Duration,
    /// Keys per second this node copies when it receives ranges (`None`:
    /// as fast as it can).
    pub rebalance_rate: Option<u64>,
    /// Answer a client's request for a key another node serves with Redis
    /// Cluster's `-MOVED slot host:port` instead of forwarding it
    /// (`--cluster-redirects`): for clients that all route by the slot
    /// map, which then learn a changed map at once.
    pub redirects: bool,
}

impl NodeConfig {
    /// Settings for node `id` with the defaults: in memory, weight 1, the
    /// balanced placement, Raft timings for a LAN.
    pub fn new(id: impl Into<String>, start: Start, secret: Secret) -> NodeConfig {
        NodeConfig {
            id: id.into(),
            weight: 1,
            data_dir: None,
            fsync: FsyncPolicy::EverySec,
            start,
            secret,
            placement: PlacementSpec::BALANCED,
            server: ServerConfig::default(),
            raft: raft_config(),
            down_after: Duration::from_secs(5),
            rebalance_rate: None,
            redirects: false,
        }
    }
}

/// Raft timings between processes on a LAN: heartbeats every 100 ms,
/// elections after 500 to 1,000 ms of silence (generous for a loaded
/// two-core machine), a snapshot every 1,024 entries.
pub fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ringkv".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1024),
        max_in_snapshot_log_to_keep: 1024,
        ..openraft::Config::default()
    };
    Arc::new(config.validate().expect("these timings are valid"))
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The local store could not be opened.
    #[error(transparent)]
    Cluster(#[from] ringkv_cluster::ClusterError),
    /// The Raft directory could not be opened.
    #[error(transparent)]
    Persist(#[from] ringkv_persist::PersistError),
    /// Raft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The secret is missing for a non-loopback address.
    #[error(transparent)]
    Secret(#[from] ringkv_peer::SecretError),
    /// A listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The cluster refused this node, or could not be reached.
    #[error("{0}")]
    Refused(String),
}

/// The recording, on a range move's source, of the keys written in ranges
/// being copied away: shipped once the ranges are fenced.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub change: u64,
    /// Tells recordings apart: a restarted source starts a new one, and a
    /// target's copy from the old one must start over.
    pub id: u64,
    pub keys: HashMap<usize, HashSet<Bytes>>,
}

/// What the parts of a node share.
pub(crate) struct Inner {
    pub me: String,
    pub cluster: Arc<Cluster>,
    pub transport: Arc<dyn PeerTransport>,
    pub raft: OnceLock<MetaRaft>,
    pub raft_id: OnceLock<u64>,
    pub store: MetaStore,
    /// The metadata as this node serves by it. Requests served here hold a
    /// read lock while they run; publishing a new state takes the write
    /// lock, so once a state is published no request decided by an older
    /// one is still running (what the fence relies on).
    pub view: Arc<RwLock<Arc<MetaState>>>,
    /// The published view's epoch.
    pub epochs: watch::Sender<u64>,
    pub tracker: Mutex<Option<Tracker>>,
    /// The recording each copy came from, by (change, source node).
    pub copied: Mutex<HashMap<(u64, String), u64>>,
    /// Pulls and cleanups, one at a time.
    pub moves: tokio::sync::Mutex<()>,
    /// Pulls asked for by the coordinator, running or ended, by request.
    pub pulls: Mutex<HashMap<wire::Pull, moves::PullJob>>,
    /// Caught up with the log since the start: serves clients and peers'
    /// range calls.
    pub ready: AtomicBool,
    /// Woken when `ready` is set.
    pub readied: tokio::sync::Notify,
    pub executor: OnceLock<Executor>,
    /// `--rebalance-rate`: keys per second of this node's copies.
    pub rebalance_rate: Option<u64>,
    /// `--cluster-redirects`: `-MOVED` instead of forwarding.
    pub redirects: bool,
    pub raft_service: OnceLock<Arc<ringkv_meta::raft::RaftService>>,
    /// The queues of requests forwarded to peers.
    pub batches: batch::Batches,
    /// The epoch of the last view a cleanup finished by with no change in
    /// flight (`u64::MAX`: none yet): while the view stays there, the
    /// store holds exactly the keys this node serves (`DBSIZE`).
    pub clean_at: AtomicU64,
    /// What a cleanup in progress must know (`cleanup::Cleaning`).
    pub cleaning: cleanup::Cleaning,
    /// When this node started: the origin of its lease times.
    pub born: tokio::time::Instant,
    /// Until when (ms after `born`) this node may serve its keys
    /// (`lease`).
    pub lease_until: AtomicU64,
    /// As the leader: when (ms after `born`, plus one; 0: never) the last
    /// confirmation of its leadership by a quorum began.
    pub confirmed_at: AtomicU64,
    /// Requests sent on to another node, each call counted (`INFO`'s
    /// `ring_forwarded`; a retry counts again): what a client that routes
    /// by the slot map saves.
    pub forwarded: AtomicU64,
    /// The slots served here, a hint for gathering pipelines (`slots::Hint`).
    pub hint: slots::Hint,
}

impl Inner {
    /// The published view.
    pub fn view(&self) -> Arc<MetaState> {
        Arc::clone(&self.view.read())
    }

    /// Stops the pulls running here, and a cleanup at its next pause (the
    /// node stops).
    fn stop_pulls(&self) {
        self.cleaning.stopping.store(true, Ordering::Release);
        for (_, job) in self.pulls.lock().drain() {
            job.stop();
        }
    }

    fn my_raft_id(&self) -> Option<u64> {
        self.raft_id.get().copied()
    }
}

/// A running node.
pub struct Node {
    inner: Arc<Inner>,
    client_addr: SocketAddr,
    peer_addr: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _peer_server: Option<PeerServer>,
    mem: Option<(MemTransport, String)>,
    /// `--data-dir`, whose two directories [`Node::crash`] waits to be
    /// closed.
    data_dir: Option<PathBuf>,
}

const RAFT_ID_RECORD: &[u8] = b"node/raft-id";
const NODE_ID_RECORD: &[u8] = b"node/id";

/// A node's place on the in-memory network, left when dropped unless
/// taken.
struct Registered(Option<(MemTransport, String)>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some((net, addr)) = self.0.take() {
            net.unregister(&addr);
        }
    }
}

/// Where a node's peers reach it.
enum PeerSide {
    /// TCP, with the cluster secret.
    Tcp(TcpListener),
    /// The in-memory network, at this address.
    Mem(MemTransport, String),
}

impl Node {
    /// Starts node `config.id`, serving clients on `client` and peers on
    /// `peer` (their bound addresses are what the cluster records).
    pub async fn start(
        config: NodeConfig,
        client: TcpListener,
        peer: TcpListener,
    ) -> Result<Node, NodeError> {
        Node::start_on(config, client.into(), PeerSide::Tcp(peer)).await
    }

    /// Starts node `config.id` with its peers on the in-memory network
    /// `net` at address `addr` (tests cut and heal its links); clients
    /// connect to `client`, a TCP listener or an in-memory one
    /// ([`Listener::memory`]) for a simulation on a paused clock.
    pub async fn start_in_memory(
        config: NodeConfig,
        client: impl Into<Listener>,
        net: &MemTransport,
        addr: &str,
    ) -> Result<Node, NodeError> {
        Node::start_on(
            config,
            client.into(),
            PeerSide::Mem(net.node(addr), addr.into()),
        )
        .await
    }

    async fn start_on(
        config: NodeConfig,
        client: Listener,
        peer: PeerSide,
    ) -> Result<Node, NodeError> {
        let client_addr = client.local_addr()?;
        if config.server.requirepass.is_some() && config.secret.is_none() {
            // Peers' forwarded requests run as authenticated: without a
            // secret, anyone who reaches the peer port would skip AUTH.
            return Err(NodeError::Refused(
                "--requirepass needs --cluster-secret: forwarded requests skip AUTH, so the \
                 peer port must be authenticated too"
                    .into(),
            ));
        }
        let peer_addr = match &peer {
            PeerSide::Tcp(listener) => {
                let addr = listener.local_addr()?;
                ringkv_peer::check_secret(addr, &config.secret)?;
                addr.to_string()
            }
            PeerSide::Mem(_, addr) => addr.clone(),
        };
        let spec = NodeSpec {
            id: config.id.clone(),
            client_addr: client_addr.to_string(),
            peer_addr: peer_addr.clone(),
            weight: config.weight,
            // Nonzero: 0 is a member admitted without one.
            token: rand::random::<u64>().max(1),
            key_format: ringkv_ring::KEY_FORMAT,
        };
        let cluster_config = ClusterConfig {
            fsync: config.fsync,
            stripes: ClusterConfig::default_stripes(config.data_dir.is_some()),
            ..ClusterConfig::default()
        };
        // The keys in `DIR/data`, the Raft log and snapshots in `DIR/raft`.
        let (cluster, raft_dir) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let cluster = Cluster::open(dir.join("data"), cluster_config)?;
                let raft_dir = DataDir::open(dir.join("raft"), FsyncPolicy::Always)?;
                (cluster, Some(raft_dir))
            }
            None => (Cluster::new(cluster_config)?, None),
        };
        if cluster.members().is_empty() {
            cluster.add_node(&config.id)?;
        }
        let stored_id = match &raft_dir {
            Some(dir) => {
                if let Some(id) = dir.record(NODE_ID_RECORD)?
                    && id[..] != *config.id.as_bytes()
                {
                    return Err(NodeError::Refused(format!(
                        "the data directory belongs to node `{}`, not `{}`",
                        String::from_utf8_lossy(&id),
                        config.id
                    )));
                }
                dir.record(RAFT_ID_RECORD)?
                    .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
            }
            None => None,
        };
        let store = match &raft_dir {
            Some(dir) => MetaStore::open(dir).map_err(|e| NodeError::Raft(e.to_string()))?,
            None => MetaStore::default(),
        };
        let transport: Arc<dyn PeerTransport> = match &peer {
            PeerSide::Tcp(_) => {
                Arc::new(TcpTransport::new(config.secret.clone(), Limits::default()))
            }
            PeerSide::Mem(net, _) => Arc::new(net.clone()),
        };
        let inner = Arc::new(Inner {
            me: config.id.clone(),
            cluster: Arc::new(cluster),
            transport: Arc::clone(&transport),
            raft: OnceLock::new(),
            raft_id: OnceLock::new(),
            store: store.clone(),
            view: Arc::new(RwLock::new(Arc::new(MetaState::new()))),
            epochs: watch::channel(0).0,
            tracker: Mutex::new(None),
            copied: Mutex::new(HashMap::new()),
            moves: tokio::sync::Mutex::new(()),
            pulls: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            readied: tokio::sync::Notify::new(),
            executor: OnceLock::new(),
            rebalance_rate: config.rebalance_rate.filter(|&r| r > 0),
            redirects: config.redirects,
            raft_service: OnceLock::new(),
            batches: batch::Batches::new(Arc::clone(&transport)),
            clean_at: AtomicU64::new(u64::MAX),
            cleaning: cleanup::Cleaning::default(),
            born: tokio::time::Instant::now(),
            lease_until: AtomicU64::new(0),
            confirmed_at: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            hint: slots::Hint::default(),
        });
        let handler = service::NodeService::new(Arc::clone(&inner));
        let (peer_server, mem) = match peer {
            PeerSide::Tcp(listener) => (
                Some(ringkv_peer::serve(
                    listener,
                    config.secret.clone(),
                    handler,
                    Limits::default(),
                )?),
                None,
            ),
            PeerSide::Mem(net, addr) => {
                net.register(&addr, handler);
                (None, Some((net, addr)))
            }
        };
        // A start that fails from here leaves the in-memory network, as a
        // process that exits does (a TCP peer server stops when dropped).
        let mut registered = Registered(mem);

        // Which Raft member this is: remembered, the first, or admitted now.
        let (raft_id, fresh) = match (stored_id, &config.start) {
            (Some(id), _) => (id, false),
            (None, Start::Init) => (FIRST_RAFT_ID, true),
            (None, Start::Join(seed)) => {
                let answer =
                    service::propose_via(&*transport, seed, Command::Join { node: spec.clone() })
                        .await
                        .map_err(NodeError::Refused)?;
                match answer {
                    Ok(applied) => (applied.raft_id.expect("a join names the raft id"), false),
                    // This start's own first attempt, applied, its answer
                    // lost: the Raft id is new and has never voted.
                    Err(Rejected::AlreadyMember { raft_id, token, .. }) if token == spec.token => {
                        (raft_id, false)
                    }
                    // Its Raft log and vote are gone with its directory: as
                    // the same Raft member it could vote twice in a term.
                    Err(Rejected::AlreadyMember { id, .. }) => {
                        return Err(NodeError::Refused(format!(
                            "node `{id}` is already a member, and this start has no record of it \
                             (no --data-dir, or a new one): restart it with its data directory, \
                             or remove it (RINGKV.REMOVENODE {id}) and join again"
                        )));
                    }
                    Err(e) => return Err(NodeError::Refused(e.to_string())),
                }
            }
            (None, Start::Restart) => {
                return Err(NodeError::Refused(
                    "this node has no cluster yet: start it with --init (a new cluster) or \
                     --join PEER (an existing one)"
                        .into(),
                ));
            }
        };
        let network = PeerNetwork::new(Arc::clone(&transport), raft_id);
        let raft = match &raft_dir {
            Some(dir) => {
                let log = DiskLogStore::open(dir).map_err(|e| NodeError::Raft(e.to_string()))?;
                MetaRaft::new(
                    raft_id,
                    Arc::clone(&config.raft),
                    network,
                    log,
                    store.clone(),
                )
                .await
            }
            None => {
                MetaRaft::new(
                    raft_id,
                    Arc::clone(&config.raft),
                    network,
                    MemLogStore::default(),
                    store.clone(),
                )
                .await
            }
        }
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let _ = inner
            .raft_service
            .set(ringkv_meta::raft::RaftService::new(raft.clone()));
        let _ = inner.raft.set(raft.clone());
        let _ = inner.raft_id.set(raft_id);
        if let Some(dir) = &raft_dir {
            dir.write_records(
                &[
                    (NODE_ID_RECORD, Some(config.id.as_bytes())),
                    (RAFT_ID_RECORD, Some(raft_id.to_string().as_bytes())),
                ],
                Durability::Fsync,
            )?;
        }
        if fresh {
            let me = BTreeMap::from([(FIRST_RAFT_ID, BasicNode::new(spec.peer_addr.clone()))]);
            raft.initialize(me)
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            let answer = service::propose(
                &inner,
                Command::Bootstrap {
                    placement: config.placement,
                    node: spec.clone(),
                },
            )
            .await
            .map_err(NodeError::Refused)?;
            if let Err(e) = answer {
                return Err(NodeError::Refused(e.to_string()));
            }
        }
        info!(node = %config.id, raft_id, client = %client_addr, peer = %peer_addr, "node started");

        let mut tasks = vec![
            tokio::spawn(follow::publisher(Arc::clone(&inner))),
            tokio::spawn(coord::run(Arc::clone(&inner))),
            tokio::spawn(coord::detect(Arc::clone(&inner), config.down_after)),
            tokio::spawn(follow::catch_up(Arc::clone(&inner))),
            tokio::spawn(lease::keep(Arc::clone(&inner))),
            tokio::spawn(slots::keep_hint(Arc::clone(&inner))),
            tokio::spawn(follow::follow_when_removed(Arc::clone(&inner))),
        ];
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Arc::new(NodeRouter::new(Arc::clone(&inner)));
        let server_cluster = Arc::clone(&inner.cluster);
        let server_config = config.server.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = ringkv_server::run_routed(
                client,
                server_cluster,
                server_config,
                router,
                stopped,
                std::future::pending::<()>(),
            )
            .await
            {
                warn!(error = %e, "the client server stopped");
            }
        });
        tasks.shrink_to_fit();
        Ok(Node {
            inner,
            client_addr,
            peer_addr,
            stop: Some(stop),
            server,
            tasks,
            _peer_server: peer_server,
            mem: registered.0.take(),
            data_dir: config.data_dir.clone(),
        })
    }

    /// Where clients reach this node.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where peers reach this node.
    pub fn peer_addr(&self) -> &str {
        &self.peer_addr
    }

    /// The metadata this node serves by.
    pub fn state(&self) -> Arc<MetaState> {
        self.inner.view()
    }

    /// Whether the node serves clients (caught up with the log).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Whether this node is the Raft leader (the coordinator) now.
    pub fn is_leader(&self) -> bool {
        self.inner
            .raft
            .get()
            .is_some_and(|r| r.metrics().borrow().state == openraft::ServerState::Leader)
    }

    /// Keys in the node's local store.
    pub fn local_keys(&self) -> usize {
        self.inner.cluster.dbsize()
    }

    /// The names of the keys in the node's local store (served here or
    /// not), for diagnostics: the simulation names a key missing from
    /// every member with it.
    pub fn local_key_names(&self) -> Result<Vec<bytes::Bytes>, ringkv_cluster::ClusterError> {
        let (mut names, mut cursor) = (Vec::new(), 0);
        loop {
            let page = self.inner.cluster.scan(cursor, 1024, |_, _| true)?;
            names.extend(page.keys);
            if page.cursor == 0 {
                return Ok(names);
            }
            cursor = page.cursor;
        }
    }

    /// Stops serving: clients, Raft, peers.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some((net, addr)) = self.mem.take() {
            net.unregister(&addr);
        }
        let _ = (&mut self.server).await;
        for task in &self.tasks {
            task.abort();
        }
        self.inner.stop_pulls();
        if let Some(raft) = self.inner.raft.get() {
            let _ = raft.shutdown().await;
        }
        // A clean stop leaves the keys in table files: the next start
        // replays no journal.
        if let Err(e) = self.inner.cluster.checkpoint() {
            warn!(error = %e, "final checkpoint failed");
        }
    }
}

impl Node {
    /// Stops the node at once, as a crash would, for simulations: it
    /// leaves the network, its client connections drop with their requests
    /// unanswered, its tasks stop at their next wait, and no final
    /// checkpoint is taken. Returns once nothing holds its store any more
    /// (a peer call it was serving can hold it until that call's time
    /// limit) and its data directories have finished closing (openraft's
    /// state-machine task outlives `Raft::shutdown` for a moment), so that
    /// a restart on the same directory finds it unlocked; the store is
    /// closed as the kernel keeps a killed process's writes.
    /// `false` if something still held it after `patience`.
    pub async fn crash(mut self, patience: Duration) -> bool {
        if let Some((net, addr)) = self.mem.take() {
            net.unregister(&addr);
        }
        drop(self._peer_server.take());
        self.inner.stop_pulls();
        self.server.abort();
        for task in &self.tasks {
            task.abort();
        }
        let _ = (&mut self.server).await;
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(raft) = self.inner.raft.get() {
            let _ = raft.shutdown().await;
        }
        let store = Arc::downgrade(&self.inner.cluster);
        let dirs: Vec<PathBuf> = match &self.data_dir {
            Some(dir) => vec![dir.join("data"), dir.join("raft")],
            None => vec![],
        };
        drop(self);
        let deadline = tokio::time::Instant::now() + patience;
        while store.strong_count() > 0 || dirs.iter().any(DataDir::in_use) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}
