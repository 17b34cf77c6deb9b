//! `ringkv`: play operation scripts against an in-process ringkv cluster,
//! and benchmark it.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringkv_cli::bench::BenchOptions;
use ringkv_cli::logging::{self, LogFormat};
use ringkv_cli::run::{RunOptions, Runner};
use ringkv_cluster::{Cluster, ClusterConfig, FsyncPolicy, Placement, RingConfig};
use ringkv_ring::BalancedConfig;

/// A distributed key-value store on a consistent hash ring, in one process.
#[derive(Parser)]
#[command(name = "ringkv", version, about, long_about = None)]
struct Cli {
    /// Format of the redistribution log on stderr (RUST_LOG sets verbosity).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play a script of operations (one per line) and print what gets return.
    Run(RunArgs),
    /// Measure lookup, balance, movement, throughput and latency, against
    /// baselines run in the same process.
    Bench(BenchArgs),
    /// Serve the cluster over the Redis protocol (RESP): redis-cli,
    /// redis-benchmark and Redis client libraries work against it.
    Serve(ServeArgs),
    /// Run one node of a multi-process cluster: it serves the Redis
    /// protocol for every key (forwarding to the key's node), agrees on
    /// the membership with its peers through Raft, and streams ranges when
    /// nodes join and leave.
    Node(ringkv_cli::node::NodeArgs),
    /// A local cluster of node processes: `up` starts them on loopback,
    /// `status` prints the membership table.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start N node processes on loopback, wait until they agree, print
    /// their addresses; Ctrl-C stops them all.
    Up(ringkv_cli::node::UpArgs),
    /// Print the membership table a node sees.
    Status(ringkv_cli::node::StatusArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on. A non-loopback address without
    /// --requirepass prints a warning.
    #[arg(long, default_value = "127.0.0.1:6380")]
    listen: std::net::SocketAddr,
    /// Require `AUTH <password>` before any other command.
    #[arg(long)]
    requirepass: Option<String>,
    /// Connections served at once; more are refused with an error.
    #[arg(long, default_value_t = ringkv_server::ServerConfig::default().max_clients)]
    max_clients: usize,
    /// Longest key, value or argument accepted, in bytes.
    #[arg(long, default_value_t = ringkv_server::ServerConfig::default().max_bulk_len)]
    max_bulk_len: usize,
    /// Most bytes of replies one client may have pending; a reply past it
    /// closes the client. 0 = no limit. Must exceed --max-bulk-len.
    #[arg(long, default_value_t = ringkv_server::ServerConfig::default().client_output_buffer_limit)]
    client_output_buffer_limit: usize,
    /// Close a client idle for this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// On SIGINT/SIGTERM, wait at most this many seconds for clients to
    /// take their replies, then drop them; a second signal drops them at once.
    #[arg(long, default_value_t = ringkv_server::ServerConfig::default().shutdown_timeout.as_secs())]
    shutdown_timeout: u64,
    /// Most bytes the stores may hold (Redis's maxmemory; 0 = no limit).
    /// A write past it evicts keys or is refused, per --maxmemory-policy.
    #[arg(long, default_value_t = 0)]
    maxmemory: u64,
    /// noeviction (refuse writes with -OOM), allkeys-lru, volatile-lru,
    /// allkeys-random or volatile-ttl.
    #[arg(long, default_value = "noeviction", value_parser = eviction_policy)]
    maxmemory_policy: ringkv_cluster::EvictionPolicy,
    /// Ring and redistribution settings; --nodes defaults to
    /// node1,node2,node3 here.
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// Keys loaded into the measured cluster (use e.g. 100000 for a run of
    /// a few seconds).
    #[arg(long, default_value_t = BenchOptions::default().keys)]
    keys: usize,
    /// Nodes in the measured cluster.
    #[arg(long, default_value_t = BenchOptions::default().nodes)]
    nodes: usize,
    #[command(flatten)]
    placement: PlacementArgs,
    /// Keys copied per batch while redistributing.
    #[arg(long, default_value_t = ClusterConfig::default().copy_batch)]
    copy_batch: usize,
    /// Lock stripes per node (a power of two).
    #[arg(long, default_value_t = ClusterConfig::default().stripes)]
    stripes: usize,
    /// Client operations per thread for throughput and latency.
    #[arg(long, default_value_t = BenchOptions::default().ops)]
    ops: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = BenchOptions::default().seed)]
    seed: u64,
    /// Ring sizes (nodes) for the lookup and balance figures.
    #[arg(long, value_delimiter = ',', default_values_t = BenchOptions::default().ring_sizes)]
    ring_sizes: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Which placement strategy the ring uses.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlacementKind {
    /// Equal partitions assigned to nodes: every node within one partition
    /// of its weighted share; placement depends on the order of changes.
    Balanced,
    /// Hashed virtual nodes: placement depends on the membership only.
    Random,
}

/// How the ring places keys.
#[derive(Args)]
struct PlacementArgs {
    /// Placement strategy.
    #[arg(long, value_enum, default_value_t = PlacementKind::Balanced)]
    placement: PlacementKind,
    /// Partitions of the ring, a power of two (with --placement balanced).
    #[arg(long, default_value_t = BalancedConfig::default().partitions)]
    partitions: u32,
    /// Virtual nodes per unit of node weight (with --placement random).
    #[arg(long, default_value_t = RingConfig::default().vnodes_per_weight)]
    vnodes: u32,
}

impl PlacementArgs {
    fn placement(&self) -> Placement {
        match self.placement {
            PlacementKind::Balanced => Placement::BalancedPartitions {
                partitions: self.partitions,
            },
            PlacementKind::Random => Placement::RandomVnodes {
                vnodes_per_weight: self.vnodes,
            },
        }
    }
}

/// Ring and redistribution settings.
#[derive(Args)]
struct ClusterArgs {
    #[command(flatten)]
    placement: PlacementArgs,
    /// Keys copied per batch while redistributing (bounds how long a copy
    /// holds a node's lock).
    #[arg(long, default_value_t = ClusterConfig::default().copy_batch)]
    copy_batch: usize,
    /// Attempts per redistribution step before rolling back or pausing.
    #[arg(long, default_value_t = ClusterConfig::default().max_attempts)]
    max_attempts: u32,
    /// Pause before the first retry, in milliseconds (doubled per retry).
    #[arg(long, default_value_t = ClusterConfig::default().retry_backoff.as_millis() as u64)]
    retry_backoff_ms: u64,
    /// Lock stripes per node (a power of two): more stripes, less waiting
    /// between clients and a running redistribution. Default 1024 with
    /// --data-dir (a write holds its stripes across the append to the
    /// write log), 64 without.
    #[arg(long)]
    stripes: Option<usize>,
    /// Nodes to start with, comma-separated (e.g. node1,node2,node3). With
    /// --data-dir, only when the directory is new: a restart keeps the
    /// saved membership.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Keep every node's data, the membership and the ring in this
    /// directory (created on first use) and reopen them on restart. Without
    /// it everything lives in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With --data-dir: `always` (a write is acknowledged once fsynced;
    /// concurrent writes share fsyncs), `everysec` (a power cut loses at
    /// most about the last second; a crash of the process loses nothing) or
    /// `no` (the OS writes back when it likes).
    #[arg(long, default_value = "everysec", value_parser = fsync_policy)]
    fsync: FsyncPolicy,
}

impl ClusterArgs {
    /// The cluster: opened from --data-dir, or new in memory; then the
    /// nodes of --nodes (or `default_nodes`) if it has none yet.
    fn build(&self, default_nodes: &[&str]) -> anyhow::Result<Cluster> {
        let config = ClusterConfig {
            placement: self.placement.placement(),
            copy_batch: self.copy_batch,
            max_attempts: self.max_attempts,
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
            stripes: self
                .stripes
                .unwrap_or(ClusterConfig::default_stripes(self.data_dir.is_some())),
            fsync: self.fsync,
            ..ClusterConfig::default()
        };
        let cluster = match &self.data_dir {
            Some(dir) => Cluster::open(dir, config)?,
            None => Cluster::new(config)?,
        };
        let nodes: Vec<String> = if self.nodes.is_empty() {
            default_nodes.iter().map(|s| s.to_string()).collect()
        } else {
            self.nodes.clone()
        };
        let members = cluster.members();
        if members.is_empty() {
            for id in &nodes {
                cluster
                    .add_node(id)
                    .with_context(|| format!("--nodes: cannot add `{id}`"))?;
            }
        } else if !self.nodes.is_empty()
            && members
                .iter()
                .map(|m| m.as_str())
                .ne(nodes.iter().map(String::as_str))
        {
            tracing::warn!(
                saved = ?members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "--nodes ignored: the data directory keeps its membership (change it with add/remove)"
            );
        }
        arm_abort_from_env(&cluster)?;
        Ok(cluster)
    }
}

/// `RINGKV_ABORT_AT=<point>[:<range>]`: the process aborts (as kill -9
/// would kill it) when a redistribution reaches that point, for crash
/// tests of --data-dir. Points: before-copy, mid-copy, after-copy,
/// during-cleanup.
fn arm_abort_from_env(cluster: &Cluster) -> anyhow::Result<()> {
    use ringkv_cluster::{Fault, FaultEffect, FaultPoint, FaultRole};
    let Ok(spec) = std::env::var("RINGKV_ABORT_AT") else {
        return Ok(());
    };
    let (point, range) =
        match spec.split_once(':') {
            Some((p, r)) => (
                p,
                Some(r.parse::<usize>().with_context(|| {
                    format!("RINGKV_ABORT_AT={spec}: `{r}` is not a range index")
                })?),
            ),
            None => (spec.as_str(), None),
        };
    let point = match point {
        "before-copy" => FaultPoint::BeforeCopy,
        "mid-copy" => FaultPoint::MidCopy,
        "after-copy" => FaultPoint::AfterCopy,
        "during-cleanup" => FaultPoint::DuringCleanup,
        other => anyhow::bail!(
            "RINGKV_ABORT_AT={spec}: unknown point `{other}` (before-copy, mid-copy, after-copy, during-cleanup)"
        ),
    };
    tracing::warn!(
        ?point,
        ?range,
        "RINGKV_ABORT_AT: the process will abort there"
    );
    cluster.inject_fault(Fault {
        point,
        role: FaultRole::Source,
        effect: FaultEffect::AbortProcess,
        range,
    });
    Ok(())
}

/// An fsync policy by name.
fn fsync_policy(name: &str) -> Result<FsyncPolicy, String> {
    FsyncPolicy::from_name(name)
        .ok_or_else(|| format!("unknown fsync policy `{name}`: one of always, everysec, no"))
}

#[derive(Args)]
struct RunArgs {
    /// The script to play; `-` or nothing reads standard input.
    #[arg(default_value = "-")]
    script: PathBuf,
    /// Report bad lines and failed operations, and go on (the exit code
    /// still says something failed).
    #[arg(long)]
    keep_going: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => match run(args, cli.log_format == LogFormat::Json) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", report(&e));
                ExitCode::from(1)
            }
        },
        Command::Bench(args) => bench(args),
        Command::Serve(args) => exit(serve(args)),
        Command::Node(args) => exit(ringkv_cli::node::node(args)),
        Command::Cluster(ClusterCommand::Up(args)) => exit(ringkv_cli::node::up(args)),
        Command::Cluster(ClusterCommand::Status(args)) => exit(ringkv_cli::node::status(args)),
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(1)
        }
    }
}

/// An error with its causes, as `{:#}` prints it but without repeating a
/// cause whose text the message already holds: the storage errors include
/// their source's message in their own (the server's replies show only
/// that) and keep the source for callers, so the plain chain said each
/// thing two or three times.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// An eviction policy by its Redis name.
fn eviction_policy(name: &str) -> Result<ringkv_cluster::EvictionPolicy, String> {
    ringkv_cluster::EvictionPolicy::ALL
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<_> = ringkv_cluster::EvictionPolicy::ALL
                .iter()
                .map(|p| p.name())
                .collect();
            format!("unknown policy `{name}`: one of {}", names.join(", "))
        })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ringkv_server::ServerConfig {
        requirepass: args.requirepass,
        max_clients: args.max_clients,
        max_bulk_len: args.max_bulk_len,
        client_output_buffer_limit: args.client_output_buffer_limit,
        idle_timeout: Duration::from_secs(args.timeout),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
    };
    config.validate()?;
    let cluster = std::sync::Arc::new(args.cluster.build(&["node1", "node2", "node3"])?);
    cluster.set_maxmemory(args.maxmemory);
    cluster.set_maxmemory_policy(args.maxmemory_policy);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // Both listened for from now: a second signal right after the
        // first cuts the grace period short.
        let (first, second) = ringkv_server::shutdown::signals();
        ringkv_server::run_until(listener, cluster.clone(), config, first, second).await?;
        Ok(())
    });
    // Whatever the fsync policy, a clean stop leaves everything on disk,
    // in table files: the next start replays no journal.
    if let Err(e) = cluster.checkpoint() {
        tracing::error!(error = %e, "final checkpoint failed");
    }
    // The server has stopped: it waited for connections within the grace
    // period (or a second signal cut that short). A membership change may
    // still run on a blocking thread; dropping the runtime would wait for
    // it, unbounded, so leave it behind and exit.
    runtime.shutdown_background();
    served
}

fn bench(args: BenchArgs) -> ExitCode {
    if args.keys == 0 || args.nodes == 0 || args.ops == 0 || args.ring_sizes.contains(&0) {
        eprintln!("error: --keys, --nodes, --ops and --ring-sizes must be at least 1");
        return ExitCode::from(2);
    }
    let config = ClusterConfig {
        placement: args.placement.placement(),
        copy_batch: args.copy_batch,
        stripes: args.stripes,
        ..ClusterConfig::default()
    };
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let options = BenchOptions {
        keys: args.keys,
        nodes: args.nodes,
        vnodes: args.placement.vnodes,
        partitions: args.placement.partitions,
        config,
        ops: args.ops,
        seed: args.seed,
        ring_sizes: args.ring_sizes,
    };
    let report = ringkv_cli::bench::run(&options, |stage| tracing::debug!(stage, "measuring"));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain data serialises")
        );
    } else {
        print!("{}", ringkv_cli::bench::render(&report));
    }
    ExitCode::SUCCESS
}

fn run(args: RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    let input: Box<dyn Read> = if args.script.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = File::open(&args.script)
            .with_context(|| format!("cannot open script {}", args.script.display()))?;
        Box::new(file)
    };
    let cluster = args.cluster.build(&[])?;
    let interactive = args.script.as_os_str() == "-" && std::io::stdin().is_terminal();
    let options = RunOptions {
        keep_going: args.keep_going,
        progress: true,
        flush_each: interactive,
        json_errors: json,
    };
    let mut runner = Runner::new(cluster, options);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match runner.run(BufReader::new(input), &mut out) {
        Ok(summary) => {
            if summary.exit_code() != 0 && !json {
                eprintln!(
                    "errors: {} line(s) did not parse, {} operation(s) failed",
                    summary.syntax_errors, summary.op_errors
                );
            }
            Ok(ExitCode::from(summary.exit_code() as u8))
        }
        Err(e) => {
            options.report(&e, e.line());
            Ok(ExitCode::from(e.exit_code() as u8))
        }
    }
}
