//! `ringkv node` processes under test, their clients, and the checks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Connection;

/// How long a start, a settle or a reply may take (the machine may be
/// loaded: several tests start clusters at once).
pub const PATIENCE: Duration = Duration::from_secs(120);

const SECRET: &str = "the node process tests' secret";

/// A free loopback address (bound, then released for the node to take).
///
/// Drawn at random below Linux's ephemeral range (32768-60999): a port
/// from `bind(0)` is an ephemeral one, which any outgoing connection of the
/// tests running alongside (clients, peers, redis-py) may take before the
/// node binds it, and the node then fails with "Address already in use".
/// A port is handed out once per test process; another test process may
/// still draw it before the node binds it, which [`NodeProc::start`]
/// answers by drawing again.
pub fn free_addr() -> SocketAddr {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        // A fresh `RandomState` is randomly keyed: a random draw from std.
        let mut draw = std::collections::hash_map::RandomState::new().build_hasher();
        draw.write_u32(std::process::id());
        let port = 20_000 + (draw.finish() % 12_000) as u16;
        if !HANDED_OUT.lock().unwrap().insert(port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("addr");
        }
    }
}

/// How a node process starts.
#[derive(Debug, Clone)]
pub enum Mode {
    Init,
    Join(SocketAddr),
    Restart,
}

/// One node: its id, addresses and data directory, and its process when
/// it runs.
pub struct NodeProc {
    pub id: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl NodeProc {
    /// A node that has not started yet, with its data under `home`.
    pub fn new(home: &Path, id: &str) -> NodeProc {
        NodeProc {
            id: id.into(),
            client: free_addr(),
            peer: free_addr(),
            dir: home.join(id),
            child: None,
            log: Arc::default(),
        }
    }

    /// Starts the process (with extra environment `env`) and waits until
    /// it has started its servers.
    pub fn start(&mut self, mode: Mode, env: &[(&str, &str)]) {
        self.launch(mode, env, &[]);
    }

    /// Starts the process with extra arguments `args`, as [`NodeProc::start`].
    pub fn start_with(&mut self, mode: Mode, args: &[&str]) {
        self.launch(mode, &[], args);
    }

    fn launch(&mut self, mode: Mode, env: &[(&str, &str)], args: &[&str]) {
        // A node's first start draws new addresses if another test took
        // one of its own between the draw and the bind (see `free_addr`).
        let mut draws = 0;
        while let Err(log) = self.spawn(&mode, env, args) {
            let taken = log.contains("Address already in use");
            if !taken || matches!(mode, Mode::Restart) || draws == 3 {
                panic!("{} exited before it started:\n{log}", self.id);
            }
            draws += 1;
            (self.client, self.peer) = (free_addr(), free_addr());
            self.log.lock().unwrap().clear();
        }
    }

    /// Starts the process and waits for it to start its servers; the end
    /// of its log if it exits first.
    fn spawn(&mut self, mode: &Mode, env: &[(&str, &str)], args: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "{} runs already", self.id);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
        cmd.arg("node")
            .args(["--id", &self.id])
            .args(["--listen", &self.client.to_string()])
            .args(["--peer-listen", &self.peer.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .env("RINGKV_CLUSTER_SECRET", SECRET)
            .env_remove("RINGKV_NODE_ABORT_AT")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match mode {
            // 256 partitions: a join moves about 200 ranges, not 20,000,
            // which keeps the debug build's moves short.
            Mode::Init => {
                cmd.args(["--init", "--partitions", "256"]);
            }
            Mode::Join(seed) => {
                cmd.args(["--join", &seed.to_string()]);
            }
            Mode::Restart => {}
        }
        cmd.args(args);
        let mut child = cmd.spawn().expect("ringkv node starts");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::clone(&self.log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("node started"))
            {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                reader.join().expect("the log reader");
                return Err(format!("{status}\n{}", self.log_tail()));
            }
            assert!(
                Instant::now() < deadline,
                "{}: not started:\n{}",
                self.id,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last 40 log lines.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(40);
        log[skip..].join("\n")
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(9),
            "{} was not killed: {status}",
            self.id
        );
    }

    /// Waits for the process to abort at its armed crash point.
    pub fn wait_abort(&mut self) {
        let status = self.wait_end("never reached its crash point");
        assert_eq!(
            status.signal(),
            Some(6),
            "{} ended ({status}) but did not abort:\n{}",
            self.id,
            self.log_tail()
        );
    }

    /// Waits for the process to stop on its own, cleanly (exit status 0).
    pub fn wait_exit(&mut self) {
        let status = self.wait_end("did not stop");
        assert!(
            status.success(),
            "{} ended with {status}:\n{}",
            self.id,
            self.log_tail()
        );
    }

    /// Waits for the process to end by itself; `late` says what failed if
    /// it does not within [`PATIENCE`].
    fn wait_end(&mut self, late: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} {late}:\n{}",
                self.id,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process has ended on its own (it stays reaped-able:
    /// [`NodeProc::wait_abort`] checks how).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => false,
        }
    }

    /// A client connection.
    pub fn connect(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://{}/", self.client))?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(con)
    }

    /// `RINGKV.NODES` as this node answers it.
    pub fn nodes(&self) -> redis::RedisResult<Vec<String>> {
        let mut con = self.connect()?;
        redis::cmd("RINGKV.NODES").query(&mut con)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Nodes `ids` under `home`, the first `up` of them started with extra
/// arguments `args` (the first with `--init`, the others joining it) and
/// settled; the rest not started.
pub fn started(home: &Path, ids: &[&str], up: usize, args: &[&str]) -> Vec<NodeProc> {
    let mut n: Vec<NodeProc> = ids.iter().map(|id| NodeProc::new(home, id)).collect();
    let seed = n[0].peer;
    for (i, node) in n.iter_mut().take(up).enumerate() {
        let mode = if i == 0 { Mode::Init } else { Mode::Join(seed) };
        node.start_with(mode, args);
    }
    settle(&n[..up].iter().collect::<Vec<_>>(), &ids[..up]);
    n
}

/// Waits until every running node in `nodes` lists exactly `ids`, all
/// up, no change in flight, at one epoch.
pub fn settle(nodes: &[&NodeProc], ids: &[&str]) {
    let want: BTreeSet<&str> = ids.iter().copied().collect();
    let deadline = Instant::now() + PATIENCE;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let tables: Vec<_> = nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.nodes())
            .collect();
        let good = tables.iter().all(|t| match t {
            Ok(lines) => {
                let listed: BTreeSet<&str> =
                    lines.iter().filter_map(|l| l.split(' ').next()).collect();
                listed == want && lines.iter().all(|l| l.contains("state=up"))
            }
            Err(_) => false,
        });
        let epochs: BTreeSet<String> = tables
            .iter()
            .flatten()
            .flatten()
            .filter_map(|l| {
                l.split(' ')
                    .find(|w| w.starts_with("epoch="))
                    .map(String::from)
            })
            .collect();
        if good && epochs.len() == 1 {
            return;
        }
        last = tables;
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| format!("--- {}:\n{}", n.id, n.log_tail()))
        .collect();
    panic!(
        "the cluster did not settle on {ids:?}: {last:#?}\n{}",
        logs.join("\n")
    );
}

/// What clients were told: acknowledged values, and keys whose write
/// failed (it may or may not have been applied).
#[derive(Default)]
pub struct Model {
    pub acked: BTreeMap<String, String>,
    pub unknown: BTreeMap<String, String>,
}

/// Writes unique keys through the node at `addr` until `stop`, each key
/// once, reconnecting after errors.
pub fn writer(
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Model> {
    std::thread::spawn(move || {
        let mut model = Model::default();
        let mut con: Option<Connection> = None;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let c = match &mut con {
                Some(c) => c,
                None => match redis::Client::open(format!("redis://{addr}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                {
                    Ok(c) => {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                        con.insert(c)
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
            };
            let key = format!("{name}:{i}");
            let value = format!("v{i}");
            i += 1;
            // A steady trickle (a few hundred writes a second), so that
            // writes land in every phase of a move without burying the
            // checks under keys.
            std::thread::sleep(Duration::from_millis(3));
            match redis::cmd("SET").arg(&key).arg(&value).query::<()>(c) {
                Ok(()) => {
                    model.acked.insert(key, value);
                }
                Err(e) => {
                    if e.code() == Some("TRYAGAIN") && !e.detail().unwrap_or("").contains("may") {
                        // Refused before it ran (a fence, a down node).
                        continue;
                    }
                    model.unknown.insert(key, value);
                    if e.is_io_error() || e.is_connection_dropped() {
                        con = None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        model
    })
}

/// Writes `count` keys `load:i` through `node`, all acknowledged.
pub fn load(node: &NodeProc, count: usize, model: &mut Model) {
    let mut con = node.connect().expect("connect");
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("SET")
            .arg(format!("load:{i}"))
            .arg(format!("l{i}"))
            .ignore();
    }
    let () = pipe.query(&mut con).expect("load");
    for i in 0..count {
        model.acked.insert(format!("load:{i}"), format!("l{i}"));
    }
}

/// Every acknowledged key reads its value through the first node (all of
/// them) and a sample through every other node; an unknown write reads its
/// value or nothing. Reads are pipelined, 500 at a time. Through every
/// node, `DBSIZE` and `KEYS *` answer for the whole cluster: every
/// acknowledged key, and no key but those and the unknown writes.
pub fn check(nodes: &[&NodeProc], model: &Model) {
    for (n, node) in nodes.iter().enumerate() {
        let mut con = node.connect().expect("connect");
        let size: usize = redis::cmd("DBSIZE")
            .query(&mut con)
            .unwrap_or_else(|e| panic!("DBSIZE through {}: {e}", node.id));
        let (least, most) = (model.acked.len(), model.acked.len() + model.unknown.len());
        assert!(
            (least..=most).contains(&size),
            "DBSIZE {size} through {}, {least} acknowledged, {most} sent",
            node.id
        );
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut con)
            .unwrap_or_else(|e| panic!("KEYS through {}: {e}", node.id));
        assert_eq!(keys.len(), size, "KEYS * and DBSIZE through {}", node.id);
        let keys: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert!(
            model.acked.keys().all(|k| keys.contains(k)),
            "KEYS * through {} misses acknowledged keys",
            node.id
        );
        assert!(
            keys.iter()
                .all(|k| model.acked.contains_key(*k) || model.unknown.contains_key(*k)),
            "KEYS * through {} names a key never written",
            node.id
        );
        let every = if n == 0 { 1 } else { 13 };
        let keys: Vec<(&String, &String, bool)> = model
            .acked
            .iter()
            .map(|(k, v)| (k, v, true))
            .chain(model.unknown.iter().map(|(k, v)| (k, v, false)))
            .step_by(every)
            .collect();
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for (key, _, _) in chunk {
                pipe.cmd("GET").arg(*key);
            }
            let got: Vec<Option<String>> = pipe
                .query(&mut con)
                .unwrap_or_else(|e| panic!("GETs through {}: {e}", node.id));
            for ((key, value, acked), got) in chunk.iter().zip(got) {
                if *acked {
                    assert_eq!(
                        got.as_deref(),
                        Some(value.as_str()),
                        "acknowledged key {key} through {}",
                        node.id
                    );
                } else {
                    assert!(
                        got.is_none() || got.as_deref() == Some(value.as_str()),
                        "key {key} of a failed write reads {got:?} through {}",
                        node.id
                    );
                }
            }
        }
    }
}
