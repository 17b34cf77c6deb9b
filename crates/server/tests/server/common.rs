//! A server on a free loopback port, and helpers to talk to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringkv_cluster::{Cluster, ClusterConfig, Placement};
use ringkv_server::{ServerConfig, ServerError, Summary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait in a test may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub cluster: Arc<Cluster>,
    stop: Option<oneshot::Sender<()>>,
    force: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Summary, ServerError>>,
}

/// A cluster of node1..node3 (few partitions, so rebalances are quick).
pub fn cluster() -> Arc<Cluster> {
    let config = ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 256 },
        ..ClusterConfig::default()
    };
    let cluster = Cluster::new(config).expect("valid config");
    for id in ["node1", "node2", "node3"] {
        cluster.add_node(id).expect("fresh node");
    }
    Arc::new(cluster)
}

pub async fn start(config: ServerConfig) -> TestServer {
    start_with(cluster(), config).await
}

pub async fn start_with(cluster: Arc<Cluster>, config: ServerConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let (force, forced) = oneshot::channel::<()>();
    let task = tokio::spawn(ringkv_server::run_until(
        listener,
        Arc::clone(&cluster),
        config,
        async move {
            let _ = stopped.await;
        },
        async move {
            // A dropped sender is no signal.
            if forced.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
    ));
    TestServer {
        addr,
        cluster,
        stop: Some(stop),
        force: Some(force),
        task,
    }
}

impl TestServer {
    /// Stops the server and returns its summary.
    pub async fn stop(mut self) -> Summary {
        let _ = self.stop.take().expect("stopped once").send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task does not panic")
            .expect("the server runs")
    }

    /// Waits for the server to stop on its own (`SHUTDOWN`) and returns
    /// its summary.
    pub async fn stopped(mut self) -> Summary {
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task does not panic")
            .expect("the server runs")
    }

    /// Starts the shutdown and returns the server's result, without a
    /// time limit of its own.
    pub async fn shut_down(mut self) -> Result<Summary, ServerError> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task.await.expect("the server task does not panic")
    }

    /// Starts the shutdown, then sends the second signal that forces it.
    pub async fn shut_down_forced(mut self) -> Result<Summary, ServerError> {
        let _ = self.stop.take().expect("stopped once").send(());
        let _ = self.force.take().expect("forced once").send(());
        self.task.await.expect("the server task does not panic")
    }

    pub async fn raw(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        // The crate's default response timeout (500 ms) is shorter than a
        // membership change can take on a loaded test machine.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(PATIENCE));
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect")
    }
}

/// Shows bytes with escapes, for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Writes `send`, then reads exactly as many bytes as `expect` has and
/// compares them.
pub async fn exchange(stream: &mut TcpStream, send: &[u8], expect: &[u8]) {
    stream.write_all(send).await.expect("write");
    expect_reply(stream, expect).await;
}

pub async fn expect_reply(stream: &mut TcpStream, expect: &[u8]) {
    let mut got = vec![0u8; expect.len()];
    let mut read = 0;
    while read < got.len() {
        match tokio::time::timeout(PATIENCE, stream.read(&mut got[read..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n,
            Err(_) => panic!(
                "timed out; got {:?}, expected {:?}",
                show(&got[..read]),
                show(expect)
            ),
        }
    }
    assert_eq!(show(&got[..read]), show(expect));
}

/// Asserts the server closes the connection (after nothing more).
pub async fn expect_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection in time");
    if let Ok(n) = read {
        assert_eq!(n, 0, "unexpected bytes before close: {:?}", show(&rest));
    }
}

/// A RESP array of bulk strings.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The process's soft open-file limit, if `/proc` tells it.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The `maxclients` a server started now reports for `requested`: the
/// server raises the soft open-file limit as far as it needs and may, then
/// keeps 32 descriptors.
pub fn expected_max_clients(requested: u64) -> u64 {
    open_file_limit().map_or(requested, |soft| requested.min(soft.saturating_sub(32)))
}
