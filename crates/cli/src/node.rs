//! `ringkv node` (one process, one node of a multi-process cluster) and
//! `ringkv cluster up|status` (a local cluster of node processes on
//! loopback, and its membership table).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ringkv_cluster::FsyncPolicy;
use ringkv_node::{Node, NodeConfig, Start};
use ringkv_peer::Secret;

/// The environment variable that carries the cluster secret (so it is not
/// seen in `ps`).
pub const SECRET_ENV: &str = "RINGKV_CLUSTER_SECRET";

/// `ringkv node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's id, its name on the ring.
    #[arg(long)]
    pub id: String,
    /// Address clients reach this node at (the Redis protocol).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address peers reach this node at (Raft, forwarding, range moves).
    #[arg(long)]
    pub peer_listen: SocketAddr,
    /// Keep the node's keys, its Raft log and snapshots here; a restart
    /// on the same directory rejoins as the same node with its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Start a new cluster with this node as its only member.
    #[arg(long, conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster of the node whose peer address this is.
    #[arg(long)]
    pub join: Option<String>,
    /// The node's weight on the ring.
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// The shared secret peers authenticate with (or the
    /// RINGKV_CLUSTER_SECRET environment variable). Required when
    /// --peer-listen is not a loopback address.
    #[arg(long)]
    pub cluster_secret: Option<String>,
    /// With --data-dir: always, everysec or no (as `ringkv serve`).
    #[arg(long, default_value = "everysec", value_parser = fsync_policy)]
    pub fsync: FsyncPolicy,
    /// Require `AUTH <password>` from clients.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// With --init: partitions of the ring, a power of two (fixed for the
    /// cluster's life). Fewer partitions, fewer and larger ranges per move.
    /// At most 16384 (the default, one per Redis Cluster hash slot), every
    /// slot has one owner and `CLUSTER SLOTS` is exact; above, a slot may
    /// be split between nodes and the map is a hint (any node forwards).
    #[arg(long, default_value_t = u32::from(ringkv_ring::SLOTS))]
    pub partitions: u32,
    /// Copy at most this many keys a second when this node receives
    /// ranges (0: as fast as it can).
    #[arg(long, default_value_t = 0)]
    pub rebalance_rate: u64,
    /// Answer a request for a key another node serves with Redis Cluster's
    /// `-MOVED slot host:port` instead of forwarding it: for deployments
    /// whose clients all route by the slot map (`CLUSTER SLOTS`), which
    /// then follow a membership change at once. Plain clients need the
    /// default (forwarding).
    #[arg(long)]
    pub cluster_redirects: bool,
}

fn fsync_policy(name: &str) -> Result<FsyncPolicy, String> {
    FsyncPolicy::from_name(name)
        .ok_or_else(|| format!("unknown fsync policy `{name}`: one of always, everysec, no"))
}

/// Runs one node until SIGINT or SIGTERM.
pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let secret = match args
        .cluster_secret
        .clone()
        .or_else(|| std::env::var(SECRET_ENV).ok())
    {
        Some(s) if !s.is_empty() => Secret::new(s),
        _ => Secret::none(),
    };
    let start = match (&args.join, args.init) {
        (Some(peer), _) => Start::Join(peer.clone()),
        (None, true) => Start::Init,
        (None, false) => Start::Restart,
    };
    if args.listen.ip().is_unspecified() {
        // The address is published as it is (RINGKV.NODES, CLUSTER SLOTS).
        tracing::warn!(
            listen = %args.listen,
            "--listen is a wildcard address: clients that route by CLUSTER SLOTS or NODES cannot reach it; listen on an address clients can reach"
        );
    }
    let mut config = NodeConfig::new(args.id.clone(), start, secret);
    config.weight = args.weight;
    config.data_dir = args.data_dir.clone();
    config.fsync = args.fsync;
    config.server.requirepass = args.requirepass.clone();
    config.rebalance_rate = Some(args.rebalance_rate).filter(|&r| r > 0);
    config.redirects = args.cluster_redirects;
    config.placement = ringkv_meta::PlacementSpec::BalancedPartitions {
        partitions: args.partitions,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen for clients on {}", args.listen))?;
        let peer = tokio::net::TcpListener::bind(args.peer_listen)
            .await
            .with_context(|| format!("cannot listen for peers on {}", args.peer_listen))?;
        let node = Node::start(config, client, peer).await?;
        // A signal, or a client's SHUTDOWN (which stops the client server).
        tokio::select! {
            () = ringkv_server::shutdown::signal() => {}
            () = node.client_server_stopped() => {}
        }
        tracing::info!(node = %args.id, "stopping");
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    Ok(())
}

/// `ringkv cluster up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many node processes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Give each node a data directory under this one (DIR/node1, ...);
    /// running `cluster up` again on it restarts the same cluster.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Client ports are BASE+1..; peer ports BASE+101...
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
}

/// Starts `--nodes` node processes on loopback, waits until they agree,
/// prints their addresses, and stops them all on Ctrl-C or SIGTERM.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 99 {
        bail!("--nodes must be from 1 to 99");
    }
    let exe = std::env::current_exe().context("cannot find the ringkv executable")?;
    let secret = format!("{:032x}", rand::random::<u128>());
    let addr = |offset: u16| -> anyhow::Result<SocketAddr> {
        let port = args
            .base_port
            .checked_add(offset)
            .context("--base-port is too high")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let mut children = Children(Vec::new());
    let first_peer = addr(101)?;
    for i in 1..=args.nodes {
        let (client, peer) = (addr(i as u16)?, addr(100 + i as u16)?);
        let id = format!("node{i}");
        let mut command = Command::new(&exe);
        command
            .arg("node")
            .args(["--id", &id])
            .args(["--listen", &client.to_string()])
            .args(["--peer-listen", &peer.to_string()])
            .env(SECRET_ENV, &secret)
            .stdin(Stdio::null());
        if let Some(dir) = &args.data_dir {
            command.arg("--data-dir").arg(dir.join(&id));
        }
        if i == 1 {
            command.arg("--init");
        } else {
            command.args(["--join", &first_peer.to_string()]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {id}"))?;
        children.0.push((id.clone(), child));
        // One at a time: each joins a cluster that answers.
        wait_for(client, Duration::from_secs(30), |lines| !lines.is_empty())
            .with_context(|| format!("{id} did not start"))?;
    }
    let first = addr(1)?;
    // Every node's own view: all up, no change in flight.
    let agreed = |lines: &[String]| {
        lines.len() == args.nodes && lines.iter().all(|l| l.contains("state=up"))
    };
    let mut lines = Vec::new();
    for i in 1..=args.nodes {
        lines = wait_for(addr(i as u16)?, Duration::from_secs(120), agreed)
            .with_context(|| format!("node{i} did not see the membership agreed"))?;
    }
    println!("ringkv cluster of {} nodes is up:", args.nodes);
    for line in &lines {
        println!("  {line}");
    }
    println!("clients: redis-cli -p {} (any node)", first.port());
    println!("status:  ringkv cluster status --node {first}");
    println!("Ctrl-C stops them all.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ringkv_server::shutdown::signal());
    drop(children);
    Ok(())
}

/// Child processes, stopped with SIGTERM (then killed) when dropped.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (id, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        eprintln!("{id} did not stop; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// Polls `RINGKV.NODES` at `addr` until `done` holds, at most `limit`.
fn wait_for(
    addr: SocketAddr,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match nodes(addr) {
            Ok(lines) if done(&lines) => return Ok(lines),
            Ok(lines) => last = lines.join("; "),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("after {limit:?}: {last}")
}

/// `RINGKV.NODES` at `addr`, a line per member.
pub fn nodes(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"*1\r\n$12\r\nRINGKV.NODES\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end();
    if let Some(error) = line.strip_prefix('-') {
        bail!("{addr} answered: {error}");
    }
    let count: usize = line
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("{addr} answered `{line}`, not a list"))?;
    let mut lines = Vec::with_capacity(count);
    for _ in 0..count {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let len: usize = header
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{addr} answered a bad item `{}`", header.trim_end()))?;
        let mut item = vec![0; len + 2];
        reader.read_exact(&mut item)?;
        item.truncate(len);
        lines.push(String::from_utf8_lossy(&item).into_owned());
    }
    Ok(lines)
}

/// `ringkv cluster status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The client address of any node.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub node: SocketAddr,
}

/// Prints the membership table as the node at `--node` sees it.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    for line in nodes(args.node)? {
        println!("{line}");
    }
    Ok(())
}
