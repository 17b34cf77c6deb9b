//! The `ringkv serve` process under test, its clients, and the checks run
//! after every restart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

/// The signal `Child::kill` sends on Unix.
pub const SIGKILL: i32 = 9;
/// The signal `std::process::abort` raises (6 on Linux and macOS).
pub const SIGABRT: i32 = 6;

/// How long a start, a reply or an exit may take before the test fails
/// (generous: the machine may be loaded).
const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh scratch directory under the target's temporary directory,
/// removed when dropped. The data directory is `data` inside it (so the
/// first start is the one that creates it) and the process runs in it (so
/// a core dump, if the machine makes one, goes away with it).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ringkv-crash-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a scratch directory")
}

/// The command line of every start of one server: the same flags each
/// time, `--nodes` included (it applies only to a new data directory).
#[derive(Debug, Clone)]
pub struct Launch {
    /// The scratch directory (the process's working directory).
    pub home: PathBuf,
    /// The `--data-dir`.
    pub data: PathBuf,
    /// Flags after the common ones.
    pub extra: Vec<String>,
    /// The `--fsync` policy: a kill -9 loses no acknowledged write under
    /// any of them.
    pub fsync: &'static str,
}

impl Launch {
    /// `serve --data-dir HOME/data --fsync always --nodes n1,n2,n3
    /// --stripes 8` plus `extra` (set `fsync` for another policy).
    pub fn new(home: &Path, extra: &[&str]) -> Launch {
        Launch {
            home: home.to_owned(),
            data: home.join("data"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            fsync: "always",
        }
    }

    /// The process, not started, listening on `listen`.
    pub fn command(&self, listen: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--fsync", self.fsync, "--listen", listen])
            .args(["--nodes", "n1,n2,n3", "--stripes", "8"])
            .args(&self.extra)
            .current_dir(&self.home)
            .env_remove("RINGKV_ABORT_AT")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    }
}

/// Log lines of a process with the instant each was read.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running `ringkv serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    log: Log,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Starts `launch` with the extra environment `env` on a free loopback
    /// port, and waits until it answers `PING`.
    pub fn start(launch: &Launch, env: &[(&str, &str)]) -> Server {
        let mut cmd = launch.command("127.0.0.1:0");
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("ringkv serve starts");
        let stderr = child.stderr.take().expect("piped");
        let log: Log = Arc::default();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            log,
            exited: None,
        };
        let line = server.wait_for("listening");
        server.addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"))
            .to_owned();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let pong = server
                .try_connect()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match pong {
                Ok(p) if p == "PONG" => break,
                other => assert!(
                    Instant::now() < deadline,
                    "no PONG from {} ({other:?}); log:\n{}",
                    server.addr,
                    server.log_text()
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Waits for a log line containing `needle`; fails if the process
    /// exits first or after [`PATIENCE`].
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((_, line)) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.contains(needle))
            {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.exited = Some(status);
                // The last lines may still be in the pipe.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "ringkv serve exited ({status}) before logging {needle:?}; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// When the first log line containing every one of `needles` was
    /// read, if one was.
    pub fn seen(&self, needles: &[&str]) -> Option<(Instant, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| needles.iter().all(|n| l.contains(n)))
            .cloned()
    }

    /// The last 60 log lines.
    pub fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(60);
        log.iter()
            .skip(skip)
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn try_connect(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://{}/", self.addr))?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(PATIENCE))?;
        con.set_write_timeout(Some(PATIENCE))?;
        Ok(con)
    }

    /// A new client connection (RESP2, one command at a time).
    pub fn connect(&self) -> Connection {
        self.try_connect()
            .unwrap_or_else(|e| panic!("connect to {}: {e}; log:\n{}", self.addr, self.log_text()))
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("wait");
        }
        self.exited.is_none()
    }

    /// `kill -9`, checking the process was still running until then.
    pub fn kill(&mut self) {
        assert!(
            self.running(),
            "ringkv serve exited on its own ({:?}) before the kill; log:\n{}",
            self.exited,
            self.log_text()
        );
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("wait");
        self.exited = Some(status);
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "ringkv serve was not ended by the kill ({status}); log:\n{}",
            self.log_text()
        );
    }

    /// Waits (at most [`PATIENCE`]) for the process to end on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        while self.running() {
            assert!(
                Instant::now() < deadline,
                "ringkv serve still runs; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        self.exited.expect("exited")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `e` is a reply from the server (`-ERR ...`), not a lost
/// connection.
pub fn is_server_error(e: &redis::RedisError) -> bool {
    e.code().is_some()
}

/// The values a key may have after a restart: `None` is "absent".
pub type Allowed = BTreeMap<String, Vec<Option<String>>>;

/// Reads every key of `allowed` (MGET in chunks) and fails, listing the
/// offenders, if any has a value it may not have; then checks that
/// `DBSIZE` is exactly the number of keys present (`allowed` must name
/// every key the server may hold). Returns what was read.
#[track_caller]
pub fn check_keys(
    con: &mut Connection,
    allowed: &Allowed,
    context: &str,
) -> BTreeMap<String, Option<String>> {
    let keys: Vec<&String> = allowed.keys().collect();
    let mut got = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(con)
            .unwrap_or_else(|e| panic!("{context}: MGET: {e}"));
        assert_eq!(values.len(), chunk.len(), "{context}: MGET reply length");
        for (k, v) in chunk.iter().zip(values) {
            got.insert((*k).clone(), v);
        }
    }
    let bad: Vec<String> = allowed
        .iter()
        .filter(|(k, ok)| !ok.contains(&got[*k]))
        .map(|(k, ok)| format!("  {k}: got {:?}, allowed {ok:?}", got[k]))
        .collect();
    assert!(
        bad.is_empty(),
        "{context}: {} of {} keys have a value they may not have:\n{}",
        bad.len(),
        allowed.len(),
        bad.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
    let present = got.values().filter(|v| v.is_some()).count() as u64;
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query(con)
        .unwrap_or_else(|e| panic!("{context}: DBSIZE: {e}"));
    assert_eq!(
        dbsize, present,
        "{context}: DBSIZE against the keys present"
    );
    got
}

/// The model after a check: every key may have exactly what was read.
pub fn exactly(read: &BTreeMap<String, Option<String>>) -> Allowed {
    read.iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect()
}

/// A reply's `field value` pairs (a map in RESP3, a flat array in RESP2).
pub fn fields(v: &Value) -> BTreeMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(flat) if flat.len() % 2 == 0 => flat
            .chunks(2)
            .map(|kv| (text(&kv[0]), kv[1].clone()))
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

/// A string reply as text.
pub fn text(v: &Value) -> String {
    redis::from_redis_value_ref(v).unwrap_or_else(|e| panic!("not text: {v:?} ({e})"))
}

/// The member ids from `RINGKV.NODES`, checking no member is down and
/// their key counts add up to `DBSIZE`.
#[track_caller]
pub fn members(con: &mut Connection, context: &str) -> BTreeSet<String> {
    let reply: Vec<Value> = redis::cmd("RINGKV.NODES")
        .query(con)
        .unwrap_or_else(|e| panic!("{context}: RINGKV.NODES: {e}"));
    let mut ids = BTreeSet::new();
    let mut keys = 0;
    for node in &reply {
        let f = fields(node);
        let id = text(&f["id"]);
        let node_keys: i64 = redis::from_redis_value_ref(&f["keys"]).expect("keys is an integer");
        let down: i64 = redis::from_redis_value_ref(&f["down"]).expect("down is an integer");
        assert_eq!(down, 0, "{context}: node {id} is down after a restart");
        keys += node_keys;
        ids.insert(id);
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query(con).expect("DBSIZE");
    assert_eq!(
        keys, dbsize,
        "{context}: the nodes' key counts add up to DBSIZE"
    );
    ids
}

/// `INFO ring` as `field -> value`.
pub fn info_ring(con: &mut Connection) -> BTreeMap<String, String> {
    let info: String = redis::cmd("INFO")
        .arg("ring")
        .query(con)
        .expect("INFO ring");
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Checks the cluster is at rest with exactly the members `expected`:
/// `RINGKV.NODES` and `INFO ring` agree, no change is running or paused,
/// no cleanup is pending, and every key in `read` is stored on its owner
/// and nowhere else (no stale copy left behind).
#[track_caller]
pub fn check_membership(
    con: &mut Connection,
    expected: &BTreeSet<String>,
    read: &BTreeMap<String, Option<String>>,
    context: &str,
) {
    let ids = members(con, context);
    assert_eq!(&ids, expected, "{context}: the members after the restart");
    let info = info_ring(con);
    let info_ids: BTreeSet<String> = info
        .iter()
        .filter(|(k, _)| k.starts_with("node") && k[4..].parse::<usize>().is_ok())
        .filter_map(|(_, v)| v.split(',').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect();
    assert_eq!(&info_ids, expected, "{context}: INFO ring's members");
    assert_eq!(
        info.get("ring_nodes").map(String::as_str),
        Some(expected.len().to_string().as_str()),
        "{context}: INFO ring_nodes"
    );
    assert_eq!(
        info.get("ring_rebalancing").map(String::as_str),
        Some("0"),
        "{context}: a change still runs after the restart: {info:?}"
    );
    assert_eq!(
        info.get("ring_pending_cleanups").map(String::as_str),
        Some("0"),
        "{context}: cleanups pending after the restart: {info:?}"
    );
    let mut stale = Vec::new();
    for (key, value) in read {
        let f = fields(
            &redis::cmd("RINGKV.LOCATE")
                .arg(key)
                .query::<Value>(con)
                .expect("RINGKV.LOCATE"),
        );
        let owner = text(&f["owner"]);
        let stored: Vec<String> = redis::from_redis_value_ref(&f["stored_on"]).expect("stored_on");
        let want: Vec<String> = if value.is_some() { vec![owner] } else { vec![] };
        if stored != want {
            stale.push(format!("  {key}: stored on {stored:?}, want {want:?}"));
        }
    }
    assert!(
        stale.is_empty(),
        "{context}: {} keys not stored exactly on their owner:\n{}",
        stale.len(),
        stale
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Sets `key` and reads it back: a write after a restart works.
#[track_caller]
pub fn write_works(con: &mut Connection, key: &str, value: &str, context: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(con)
        .unwrap_or_else(|e| panic!("{context}: SET after the restart: {e}"));
    let got: Option<String> = redis::cmd("GET").arg(key).query(con).expect("GET");
    assert_eq!(got.as_deref(), Some(value), "{context}: GET after SET");
}

/// One membership change through the admin command; the reply's fields.
pub fn change(
    con: &mut Connection,
    add: bool,
    node: &str,
) -> redis::RedisResult<BTreeMap<String, Value>> {
    let cmd = if add {
        "RINGKV.ADDNODE"
    } else {
        "RINGKV.REMOVENODE"
    };
    redis::cmd(cmd)
        .arg(node)
        .query::<Value>(con)
        .map(|v| fields(&v))
}
