//! Pipelined SETs with a data directory run as one write (one engine
//! commit); these tests check that a client cannot tell: the same
//! pipeline gets byte-for-byte the same replies, leaves the same data and
//! the same command counts as on a server without a data directory, where
//! each SET runs alone; also when the group cannot be written whole and
//! falls back to one SET at a time (a key on a crashed node), when a
//! protocol error follows a run, and under a memory limit (where SETs are
//! not grouped).

use std::sync::Arc;

use ringkv_cluster::{Cluster, ClusterConfig, FsyncPolicy, Placement};
use ringkv_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestServer, resp, show, start_with};

fn config() -> ClusterConfig {
    ClusterConfig {
        placement: Placement::BalancedPartitions { partitions: 256 },
        ..ClusterConfig::default()
    }
}

/// The fsync policies whose SETs take different paths: `everysec` writes
/// a connection's run itself, `always` hands SETs to the SET writer.
const POLICIES: [FsyncPolicy; 2] = [FsyncPolicy::EverySec, FsyncPolicy::Always];

/// A server over node1..node3, in memory or in `dir` (with `fsync`), with
/// `crashed` down.
async fn server(
    dir: Option<&std::path::Path>,
    fsync: FsyncPolicy,
    maxmemory: u64,
    crashed: Option<&str>,
) -> TestServer {
    let cluster = match dir {
        Some(dir) => Cluster::open(dir, ClusterConfig { fsync, ..config() }).expect("open"),
        None => Cluster::new(config()).expect("config"),
    };
    for id in ["node1", "node2", "node3"] {
        cluster.add_node(id).expect("add node");
    }
    cluster.set_maxmemory(maxmemory);
    if let Some(id) = crashed {
        cluster.crash(id).expect("crash");
    }
    start_with(Arc::new(cluster), ServerConfig::default()).await
}

/// `INFO stats`' count of SET runs written as one.
async fn set_runs(server: &TestServer) -> u64 {
    let info = replies(server, &[resp(&[b"INFO", b"stats"])]).await;
    let info = String::from_utf8(info).expect("UTF-8");
    info.lines()
        .find_map(|l| l.strip_prefix("ringkv_set_runs:"))
        .expect("ringkv_set_runs in INFO stats")
        .trim()
        .parse()
        .expect("a count")
}

/// Sends `pipeline` in one write, then PING, and returns every byte
/// before the PONG.
async fn replies(server: &TestServer, pipeline: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = server.raw().await;
    let mut bytes: Vec<u8> = pipeline.concat();
    bytes.extend(resp(&[b"PING"]));
    stream.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"+PONG\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("replies in time")
            .expect("read");
        assert!(n > 0, "closed after {:?}", show(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got.truncate(got.len() - b"+PONG\r\n".len());
    got
}

/// Runs `pipeline` on servers with a data directory (one per policy of
/// [`POLICIES`]) and on one without, all fresh with `maxmemory` and
/// `crashed` down, and checks they answer, store and count alike. Returns
/// the replies, how many runs of SETs each disk server wrote as one, and
/// how many runs of other writes it made as one transaction.
async fn alike(
    pipeline: &[Vec<u8>],
    keys: &[Vec<u8>],
    maxmemory: u64,
    crashed: Option<&str>,
) -> (String, Vec<u64>, Vec<u64>) {
    let mut answered = String::new();
    let mut runs = Vec::new();
    let mut write_runs = Vec::new();
    for fsync in POLICIES {
        let (a, n, w) = alike_with(fsync, pipeline, keys, maxmemory, crashed).await;
        answered = a;
        runs.push(n);
        write_runs.push(w);
    }
    (answered, runs, write_runs)
}

/// [`alike`] for one policy.
async fn alike_with(
    fsync: FsyncPolicy,
    pipeline: &[Vec<u8>],
    keys: &[Vec<u8>],
    maxmemory: u64,
    crashed: Option<&str>,
) -> (String, u64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = server(Some(dir.path()), fsync, maxmemory, crashed).await;
    let memory = server(None, fsync, maxmemory, crashed).await;
    let (a, b) = (
        replies(&disk, pipeline).await,
        replies(&memory, pipeline).await,
    );
    assert_eq!(
        show(&a),
        show(&b),
        "replies with and without a data directory"
    );
    for key in keys {
        let get = resp(&[b"GET", key]);
        assert_eq!(
            show(&replies(&disk, std::slice::from_ref(&get)).await),
            show(&replies(&memory, &[get]).await),
            "GET {}",
            show(key)
        );
    }
    let stats = resp(&[b"INFO", b"commandstats"]);
    let calls = |info: Vec<u8>| -> Vec<String> {
        String::from_utf8(info)
            .expect("UTF-8")
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .map(|l| l.split(",usec").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(
        calls(replies(&disk, std::slice::from_ref(&stats)).await),
        calls(replies(&memory, &[stats]).await),
        "command counts"
    );
    let runs = set_runs(&disk).await;
    assert_eq!(set_runs(&memory).await, 0, "no grouping in memory");
    let write_runs = stat(&disk, "ringkv_write_runs").await;
    assert_eq!(stat(&memory, "ringkv_write_runs").await, 0);
    memory.stop().await;
    disk.stop().await;
    (show(&a), runs, write_runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_sets_answers_as_one_set_at_a_time() {
    let mut pipeline = Vec::new();
    let mut keys = Vec::new();
    for i in 0..150 {
        // Keys repeat within runs too: the last write of a run wins.
        let key = format!("k{}", (i * 7) % 40 % 13).into_bytes();
        let value = format!("v{i}").into_bytes();
        // Runs of plain SETs broken by reads, options, other commands,
        // errors, lowercase names and repeated keys.
        match i % 23 {
            5 => pipeline.push(resp(&[b"GET", &key])),
            9 => pipeline.push(resp(&[b"SET", &key, &value, b"EX", b"100"])),
            12 => pipeline.push(resp(&[b"SET", &key])),
            15 => pipeline.push(resp(&[b"set", &key, &value])),
            17 => pipeline.push(resp(&[b"DEL", &key])),
            19 => pipeline.push(resp(&[b"SET", &key, &value, b"NX"])),
            _ => pipeline.push(resp(&[b"SET", &key, &value])),
        }
        keys.push(key);
    }
    let (answered, runs, _) = alike(&pipeline, &keys, 0, None).await;
    assert!(answered.contains("wrong number of arguments"), "{answered}");
    assert!(
        runs.iter().all(|&n| n > 0),
        "runs of SETs were written as one: {runs:?}"
    );
}

/// A run with a key on a crashed node cannot be written whole: each SET
/// runs alone, the crashed node's keys answered `-TRYAGAIN` and the others
/// stored, exactly as without grouping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_be_written_whole_falls_back_to_one_set_at_a_time() {
    let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("f{i}").into_bytes()).collect();
    let pipeline: Vec<Vec<u8>> = keys.iter().map(|k| resp(&[b"SET", k, b"v"])).collect();
    let (answered, runs, _) = alike(&pipeline, &keys, 0, Some("node2")).await;
    assert!(answered.contains("+OK"), "{answered}");
    assert!(answered.contains("-TRYAGAIN"), "{answered}");
    assert_eq!(runs, [0, 0], "no run was written as one");
}

/// After a run that falls back, a protocol error later in the buffer
/// still ends the connection with nothing after it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_after_a_protocol_error_runs_when_a_run_falls_back() {
    for fsync in POLICIES {
        nothing_after_a_protocol_error_runs_when_a_run_falls_back_with(fsync).await;
    }
}

async fn nothing_after_a_protocol_error_runs_when_a_run_falls_back_with(fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = server(Some(dir.path()), fsync, 0, Some("node2")).await;
    let mut bytes: Vec<u8> = (0..10)
        .flat_map(|i| resp(&[b"SET", format!("p{i}").as_bytes(), b"v"]))
        .collect();
    bytes.extend_from_slice(b"SET \"unbalanced\r\n");
    bytes.extend(resp(&[b"SET", b"after", b"v"]));
    bytes.extend(resp(&[b"INCR", b"counter"]));
    let mut stream = disk.raw().await;
    stream.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut got),
    )
    .await
    .expect("closed in time");
    drop(read);
    let got = show(&got);
    assert!(
        got.ends_with("Protocol error: unbalanced quotes in request\\r\\n"),
        "{got}"
    );
    assert_eq!(
        got.matches("\\r\\n").count(),
        11,
        "10 SET replies and the error: {got}"
    );
    for key in [&b"after"[..], b"counter"] {
        assert_eq!(
            show(&replies(&disk, &[resp(&[b"EXISTS", key])]).await),
            ":0\\r\\n",
            "{} ran after the protocol error",
            show(key)
        );
    }
    disk.stop().await;
}

/// Under a memory limit each SET checks its own footprint (the entry it
/// replaces not subtracted), so SETs are not grouped: new keys until the
/// limit, then overwrites at the limit, answer as one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_limit_sets_answer_as_one_at_a_time() {
    let value = vec![b'x'; 1000];
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("big{i}").into_bytes()).collect();
    let mut pipeline: Vec<Vec<u8>> = keys.iter().map(|k| resp(&[b"SET", k, &value])).collect();
    // Overwrites of stored keys with values of the same size.
    pipeline.extend(keys[..8].iter().map(|k| resp(&[b"SET", k, &value])));
    // Room for about ten of them.
    let (answered, runs, _) = alike(&pipeline, &keys, 11_000, None).await;
    assert!(answered.starts_with("+OK"), "{answered}");
    assert!(answered.contains("-OOM"), "{answered}");
    assert_eq!(runs, [0, 0]);
}

/// Runs `client(c, connection)` for `n` clients of `server` at once, each
/// on a connection of its own, and returns what each gave, in order.
async fn clients_at_once<T, F>(
    server: &TestServer,
    n: usize,
    client: impl Fn(usize, redis::aio::MultiplexedConnection) -> F,
) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut cons = Vec::new();
    for _ in 0..n {
        cons.push(server.client().await);
    }
    let tasks: Vec<_> = cons
        .into_iter()
        .enumerate()
        .map(|(c, con)| tokio::spawn(client(c, con)))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("client"));
    }
    out
}

/// The value of field `name` of `INFO stats`.
async fn stat(server: &TestServer, name: &str) -> u64 {
    let info = replies(server, &[resp(&[b"INFO", b"stats"])]).await;
    let info = String::from_utf8(info).expect("UTF-8");
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{name} in INFO stats: {info}"))
        .trim()
        .parse()
        .expect("a count")
}

/// Under `--fsync always`, the SETs of many clients go through the SET
/// writer, which writes whatever waits as one group: every SET is counted
/// there, each client reads back its own last value at once, and the data
/// reopens intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_of_many_clients_are_written_in_groups() {
    const CLIENTS: usize = 16;
    const SETS: usize = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = server(Some(dir.path()), FsyncPolicy::Always, 0, None).await;
    clients_at_once(&disk, CLIENTS, |c, mut con| async move {
        for i in 0..SETS {
            // Keys shared by pairs of clients: the last SET of
            // each one's own key is read back at once.
            let key = format!("k{}:{}", c / 2, i % 10);
            let value = format!("{c}:{i}");
            let () = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .query_async(&mut con)
                .await
                .expect("SET");
            if c % 2 == 0 {
                continue;
            }
            let read: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut con)
                .await
                .expect("GET");
            let read = read.expect("a value just written");
            // Its own value, or a later one of the client sharing
            // the key (its writes are concurrent with these).
            let (who, _) = read.split_once(':').expect("c:i");
            assert!(
                read == value || who == (c - 1).to_string(),
                "client {c} wrote {value} to {key}, read {read}"
            );
        }
    })
    .await;
    let (groups, grouped) = (
        stat(&disk, "ringkv_set_groups").await,
        stat(&disk, "ringkv_set_grouped").await,
    );
    assert_eq!(
        grouped,
        (CLIENTS * SETS) as u64,
        "every SET is written by the writer"
    );
    // Sixteen clients, two runtime threads and an fsync per group: SETs
    // of different clients share groups.
    assert!(groups < grouped, "{grouped} SETs in {groups} groups");
    eprintln!("{grouped} SETs of {CLIENTS} clients in {groups} groups");
    disk.stop().await;
    let cluster = Cluster::open(dir.path(), config()).expect("reopen");
    for c in (0..CLIENTS).step_by(2) {
        for i in 0..10 {
            let key = format!("k{}:{i}", c / 2);
            let value = cluster.get(key.as_bytes()).expect("get");
            let value = String::from_utf8(value.expect("kept").to_vec()).expect("UTF-8");
            // The last round of one of the two clients writing it.
            let (who, n) = value.split_once(':').expect("c:i");
            assert!(
                [c.to_string(), (c + 1).to_string()].contains(&who.to_string()),
                "{key} = {value}"
            );
            assert_eq!(
                n.parse::<usize>().expect("i"),
                SETS - 10 + i,
                "{key} = {value}"
            );
        }
    }
}

/// Under `--fsync always`, with a node down, the clients whose SETs name
/// one of its keys get `-TRYAGAIN` for that key only, and the others are
/// not held back by them: every reply is what the same SET gets on a
/// server without a data directory, where each SET runs alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_fails_only_the_sets_of_its_keys_in_a_group() {
    const CLIENTS: usize = 8;
    const SETS: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = server(Some(dir.path()), FsyncPolicy::Always, 0, Some("node2")).await;
    let memory = server(None, FsyncPolicy::Always, 0, Some("node2")).await;
    let mut answers = Vec::new();
    for target in [&disk, &memory] {
        let all = clients_at_once(target, CLIENTS, |c, mut con| async move {
            let mut got = Vec::new();
            for i in 0..SETS {
                let key = format!("d{c}:{i}");
                let set: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg("v")
                    .query_async(&mut con)
                    .await;
                got.push(match set {
                    Ok(()) => "OK".to_string(),
                    Err(e) => e.code().unwrap_or("?").to_string(),
                });
            }
            got
        })
        .await;
        answers.push(all);
    }
    assert_eq!(
        answers[0], answers[1],
        "replies with and without a data directory"
    );
    let flat: Vec<&String> = answers[0].iter().flatten().collect();
    assert!(flat.iter().any(|a| *a == "OK"), "{flat:?}");
    assert!(flat.iter().any(|a| *a == "TRYAGAIN"), "{flat:?}");
    let written = stat(&disk, "ringkv_set_grouped").await;
    let ok = flat.iter().filter(|a| **a == "OK").count() as u64;
    assert_eq!(written, ok, "every SET answered OK went through the writer");
    disk.stop().await;
    memory.stop().await;
}

/// A pipeline of other writes (`INCR`, `APPEND`, `DEL`, `EXPIRE`, `MSET`,
/// `SET` with options, ...) with a data directory runs in runs of one
/// transaction each (`cmd::write_run`); a client cannot tell: the same
/// replies byte for byte, errors included, the same values and the same
/// command counts as one request at a time without a data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_other_writes_answers_as_one_write_at_a_time() {
    let mut pipeline = Vec::new();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..240usize {
        // Few keys, so that runs repeat them and later writes read earlier
        // ones; `s` keys hold text, on which INCR fails.
        let key = format!("c{}", i * 7 % 5).into_bytes();
        let text = format!("s{}", i * 3 % 4).into_bytes();
        let n = i.to_string().into_bytes();
        let r: Vec<&[u8]> = match i % 31 {
            0 => vec![b"INCR", &key],
            1 => vec![b"INCRBY", &key, &n],
            2 => vec![b"DECR", &key],
            3 => vec![b"DECRBY", &key, b"2"],
            4 => vec![b"APPEND", &text, &n],
            5 => vec![b"INCR", &text],
            6 => vec![b"SETRANGE", &text, b"2", b"zz"],
            7 => vec![b"EXPIRE", &key, b"1000"],
            8 => vec![b"PERSIST", &key],
            9 => vec![b"PEXPIRE", &text, b"900000"],
            10 => vec![b"DEL", &key, &text],
            11 => vec![b"SETNX", &key, b"5"],
            12 => vec![b"MSET", &key, b"40", &text, b"t"],
            13 => vec![b"MSETNX", b"fresh", b"1", &key, b"2"],
            14 => vec![b"SET", &key, b"7", b"EX", b"1000"],
            15 => vec![b"SET", &key, &n],
            16 => vec![b"GET", &key],
            17 => vec![b"INCRBY", &key, b"x"],
            18 => vec![b"INCR"],
            19 => vec![b"SETEX", &text, b"1000", b"abc"],
            20 => vec![b"SET", &key, b"1", b"GET"],
            21 => vec![b"UNLINK", &text],
            22 => vec![b"SET", &text, b"q", b"XX"],
            23 => vec![b"SETRANGE", &key, b"-1", b"x"],
            24 => vec![b"EXPIRE", &key, b"abc"],
            25 => vec![b"incr", &key],
            26 => vec![b"DECRBY", &key, b"-9223372036854775808"],
            _ => vec![b"INCRBY", &key, b"3"],
        };
        pipeline.push(resp(&r));
        keys.extend([key, text]);
    }
    keys.push(b"fresh".to_vec());
    keys.sort();
    keys.dedup();
    let (answered, _, write_runs) = alike(&pipeline, &keys, 0, None).await;
    for expected in [
        "not an integer",
        "wrong number of arguments",
        "offset is out of range",
    ] {
        assert!(answered.contains(expected), "{expected}: {answered}");
    }
    assert!(
        write_runs.iter().all(|&n| n > 10),
        "runs of writes were made as one: {write_runs:?}"
    );
}

/// A run with a key on a crashed node cannot be made: each write runs
/// alone, the crashed node's keys answered `-TRYAGAIN` and the others
/// made, exactly as without runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_writes_that_cannot_be_made_falls_back_to_one_at_a_time() {
    let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("w{i}").into_bytes()).collect();
    let pipeline: Vec<Vec<u8>> = keys
        .iter()
        .flat_map(|k| [resp(&[b"INCR", k]), resp(&[b"APPEND", k, b"0"])])
        .collect();
    let (answered, _, write_runs) = alike(&pipeline, &keys, 0, Some("node2")).await;
    assert!(answered.contains(":1"), "{answered}");
    assert!(answered.contains("-TRYAGAIN"), "{answered}");
    assert_eq!(write_runs, [0, 0], "no run was made as one");
}

/// Many clients pipelining increments of shared counters: runs of
/// different clients interleave, so each client's `INCR` replies of a key
/// only grow, the counters end at the number of increments, and they
/// reopen so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_increments_of_many_clients_are_all_counted() {
    const CLIENTS: usize = 6;
    const PIPELINES: usize = 15;
    const DEPTH: usize = 24;
    for fsync in POLICIES {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = server(Some(dir.path()), fsync, 0, None).await;
        clients_at_once(&disk, CLIENTS, |c, mut con| async move {
            let mut last = [0i64; 4];
            for p in 0..PIPELINES {
                let mut pipe = redis::pipe();
                for i in 0..DEPTH {
                    pipe.cmd("INCR").arg(format!("shared{}", (c + p + i) % 4));
                }
                let got: Vec<i64> = pipe.query_async(&mut con).await.expect("pipeline");
                for (i, n) in got.into_iter().enumerate() {
                    let k = (c + p + i) % 4;
                    assert!(
                        n > last[k],
                        "client {c}: shared{k} went from {} to {n}",
                        last[k]
                    );
                    last[k] = n;
                }
            }
        })
        .await;
        assert!(stat(&disk, "ringkv_write_runs").await > 0, "{fsync:?}");
        disk.stop().await;
        let cluster =
            Cluster::open(dir.path(), ClusterConfig { fsync, ..config() }).expect("reopen");
        let total: i64 = (0..4)
            .map(|k| {
                let v = cluster.get(format!("shared{k}").as_bytes()).expect("get");
                std::str::from_utf8(&v.expect("kept"))
                    .expect("UTF-8")
                    .parse::<i64>()
                    .expect("n")
            })
            .sum();
        assert_eq!(total, (CLIENTS * PIPELINES * DEPTH) as i64, "{fsync:?}");
    }
}
