//! `ringkv node` processes on loopback, each with its own data directory:
//! a fourth node joins three under client load, one is decommissioned,
//! and processes are killed (`kill -9`, or an abort at a chosen point of a
//! range move: the source mid-copy and at its last shipment, the target
//! mid-copy, the Raft leader before and after a switch) and restarted on
//! their directories. Afterwards every acknowledged write reads back
//! through every node, and all nodes report the same membership and epoch.
//! And a node killed for good is removed with `FORCE`, losing exactly its
//! keys. And redis-py's Redis Cluster client routes by the nodes' slot map.
//! And `SHUTDOWN` stops a node's process, which restarts with its keys.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use harness::{Mode, Model, NodeProc, check, load, settle, started, writer};

/// Keys loaded before the join: enough that every source serves pages.
const KEYS: usize = 3000;

/// Nodes n1..n4: the first three started and loaded, n4 not started.
struct Nodes {
    n: Vec<NodeProc>,
    model: Model,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Model>>,
}

impl Nodes {
    /// n1 (`--init`), n2 and n3 (`--join n1`), each with `env[i]`, `KEYS`
    /// keys loaded, and writers through n1 and n3.
    fn three(home: &std::path::Path, env: [&[(&str, &str)]; 3]) -> Nodes {
        let mut n: Vec<NodeProc> = ["n1", "n2", "n3", "n4"]
            .iter()
            .map(|id| NodeProc::new(home, id))
            .collect();
        let seed = n[0].peer;
        n[0].start(Mode::Init, env[0]);
        n[1].start(Mode::Join(seed), env[1]);
        n[2].start(Mode::Join(seed), env[2]);
        settle(&[&n[0], &n[1], &n[2]], &["n1", "n2", "n3"]);
        let mut model = Model::default();
        load(&n[0], KEYS, &mut model);
        let stop = Arc::new(AtomicBool::new(false));
        let writers = vec![
            writer("a".into(), n[0].client, Arc::clone(&stop)),
            writer("b".into(), n[2].client, Arc::clone(&stop)),
        ];
        Nodes {
            n,
            model,
            stop,
            writers,
        }
    }

    fn all(&self) -> Vec<&NodeProc> {
        self.n.iter().collect()
    }

    /// Stops the writers, then checks every write through every node.
    fn finish(mut self, ids: &[&str]) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.writers.drain(..) {
            let more = h.join().expect("writer");
            self.model.acked.extend(more.acked);
            self.model.unknown.extend(more.unknown);
        }
        let live: Vec<&NodeProc> = self
            .n
            .iter()
            .filter(|n| n.running() && ids.contains(&n.id.as_str()))
            .collect();
        settle(&live, ids);
        assert!(
            self.model.acked.len() > KEYS,
            "the writers had writes acknowledged during the test"
        );
        check(&live, &self.model);
    }
}

#[test]
fn a_node_joins_under_load_one_restarts_after_kill_9_and_one_leaves() {
    let home = tempfile::tempdir().unwrap();
    let mut c = Nodes::three(home.path(), [&[], &[], &[]]);
    let seed = c.n[0].peer;
    c.n[3].start(Mode::Join(seed), &[]);
    settle(&c.all(), &["n1", "n2", "n3", "n4"]);
    assert!(
        c.n[3].nodes().unwrap()[3].contains("keys=")
            && !c.n[3].nodes().unwrap()[3].contains("keys=0 "),
        "n4 received keys: {:?}",
        c.n[3].nodes()
    );

    c.n[1].kill();
    c.n[1].start(Mode::Restart, &[]);
    settle(&c.all(), &["n1", "n2", "n3", "n4"]);

    let mut con = c.n[0].connect().unwrap();
    let () = redis::cmd("RINGKV.REMOVENODE")
        .arg("n3")
        .query(&mut con)
        .unwrap();
    // n3 keeps running (it answers by forwarding) but is no member.
    let members: Vec<&NodeProc> = vec![&c.n[0], &c.n[1], &c.n[3]];
    settle(&members, &["n1", "n2", "n4"]);
    c.finish(&["n1", "n2", "n4"]);
}

/// n3 is killed with -9 and never comes back: the leader marks it down,
/// and `RINGKV.REMOVENODE n3 FORCE` removes it for good. Exactly its keys
/// are lost (one copy of each), their ranges served empty by n1 and n2,
/// which keep every other key and agree on the membership.
#[test]
fn a_dead_member_is_removed_with_force_and_only_its_keys_are_lost() {
    let home = tempfile::tempdir().unwrap();
    let mut n = started(home.path(), &["n1", "n2", "n3"], 3, &[]);
    let mut model = Model::default();
    load(&n[0], KEYS, &mut model);
    let mut con = n[0].connect().unwrap();
    let mut locate = redis::pipe();
    for key in model.acked.keys() {
        locate.cmd("RINGKV.LOCATE").arg(key);
    }
    let owners: Vec<(String, String)> = locate.query(&mut con).unwrap();
    let on_n3: std::collections::BTreeSet<&String> = model
        .acked
        .keys()
        .zip(&owners)
        .filter(|(_, (_, owner))| owner == "n3")
        .map(|(key, _)| key)
        .collect();
    assert!(!on_n3.is_empty() && on_n3.len() < KEYS);

    n[2].kill();
    let deadline = std::time::Instant::now() + harness::PATIENCE;
    while !n[0].nodes().is_ok_and(|lines| {
        lines
            .iter()
            .any(|l| l.starts_with("n3 ") && l.contains("state=down"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "n3 was not marked down"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let () = redis::cmd("RINGKV.REMOVENODE")
        .arg("n3")
        .arg("FORCE")
        .query(&mut con)
        .unwrap();
    settle(&[&n[0], &n[1]], &["n1", "n2"]);
    for node in [&n[0], &n[1]] {
        let mut con = node.connect().unwrap();
        let mut get = redis::pipe();
        for key in model.acked.keys() {
            get.cmd("GET").arg(key);
        }
        let got: Vec<Option<String>> = get.query(&mut con).unwrap();
        for ((key, value), got) in model.acked.iter().zip(got) {
            let want = (!on_n3.contains(key)).then_some(value.as_str());
            assert_eq!(got.as_deref(), want, "{key} through {}", node.id);
        }
        let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(size, KEYS - on_n3.len(), "DBSIZE through {}", node.id);
    }
}

/// Node `victim` (0-based) of n1..n3 aborts at `point` while n4 joins;
/// it restarts on its directory and the join completes.
fn abort_during_join(point: &str, victims: &[usize]) {
    let home = tempfile::tempdir().unwrap();
    // Armed for n4's change only: the joins that form the cluster pass.
    let point = format!("{point}:n4");
    let armed = [("RINGKV_NODE_ABORT_AT", point.as_str())];
    let env = |i: usize| -> &[(&str, &str)] { if victims.contains(&i) { &armed } else { &[] } };
    let mut c = Nodes::three(home.path(), [env(0), env(1), env(2)]);
    let seed = c.n[0].peer;
    c.n[3].start(Mode::Join(seed), env(3));
    // Whichever armed node reaches the point first aborts there.
    let deadline = std::time::Instant::now() + harness::PATIENCE;
    let victim = loop {
        if let Some(&v) = victims.iter().find(|&&v| c.n[v].exited()) {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no node reached {point}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    c.n[victim].wait_abort();
    c.n[victim].start(Mode::Restart, &[]);
    settle(&c.all(), &["n1", "n2", "n3", "n4"]);
    c.finish(&["n1", "n2", "n3", "n4"]);
}

#[test]
fn the_source_aborting_mid_copy_restarts_and_the_join_completes() {
    abort_during_join("scan-page", &[1]);
}

#[test]
fn the_target_aborting_mid_copy_restarts_and_the_join_completes() {
    abort_during_join("copy-page", &[3]);
}

#[test]
fn the_source_aborting_at_its_last_shipment_restarts_and_the_join_completes() {
    abort_during_join("ship", &[1]);
}

#[test]
fn the_leader_aborting_before_a_switch_restarts_and_the_join_completes() {
    abort_during_join("before-switch", &[0, 1, 2]);
}

#[test]
fn the_leader_aborting_after_a_switch_restarts_and_the_join_completes() {
    abort_during_join("after-switch", &[0, 1, 2]);
}

/// `tests/python/test_redis_py_cluster.py`.
fn python_cluster_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python/test_redis_py_cluster.py")
}

/// redis-py's `RedisCluster`, a Redis Cluster client, against three nodes:
/// it reads the slot map from `CLUSTER SLOTS` and sends each key to the
/// node serving it, with no forwarding hop
/// (`tests/python/test_redis_py_cluster.py`; fails if redis-py is missing:
/// `.ci/run` installs it from `tests/python/requirements.txt`).
#[test]
fn redis_py_cluster_routes_each_key_to_the_node_serving_its_slot() {
    let home = tempfile::tempdir().unwrap();
    let n = started(home.path(), &["n1", "n2", "n3"], 3, &[]);
    let ports: Vec<String> = n.iter().map(|p| p.client.port().to_string()).collect();
    let script = python_cluster_script();
    let output = std::process::Command::new("python3")
        .arg(&script)
        .env("RINGKV_PORTS", ports.join(","))
        .output()
        .expect("python3 runs (install Python 3 and tests/python/requirements.txt)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "redis-py cluster checks failed:\n{stdout}\n{stderr}\nn1: {}",
        n[0].log_tail()
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        5,
        "{stdout}"
    );
}

/// With `--cluster-redirects`, a node answers `-MOVED` for a key another
/// node serves, and redis-py's `RedisCluster` follows a join by the
/// redirections: every key reads back through the client's old map, with
/// no hop (`tests/python/test_redis_py_cluster.py redirect`).
#[test]
fn with_redirects_redis_py_cluster_follows_a_join_by_moved_replies() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let home = tempfile::tempdir().unwrap();
    let redirects = ["--cluster-redirects"];
    let mut n = started(home.path(), &["n1", "n2", "n3", "n4"], 3, &redirects);
    let seed = n[0].peer;
    let ports: Vec<String> = n[..3].iter().map(|p| p.client.port().to_string()).collect();
    let script = python_cluster_script();
    let mut python = Command::new("python3")
        .arg(&script)
        .arg("redirect")
        .env("RINGKV_PORTS", ports.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (install Python 3 and tests/python/requirements.txt)");
    let mut out = BufReader::new(python.stdout.take().unwrap()).lines();
    let first = out.next().map(|l| l.unwrap());
    if first.as_deref() != Some("ready") {
        let output = python.wait_with_output().unwrap();
        panic!(
            "redis-py did not get ready ({first:?}):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    n[3].start_with(Mode::Join(seed), &redirects);
    settle(&[&n[0], &n[1], &n[2], &n[3]], &["n1", "n2", "n3", "n4"]);
    let mut stdin = python.stdin.take().unwrap();
    writeln!(stdin, "go {}", n[3].client.port()).unwrap();
    drop(stdin);
    let rest: Vec<String> = out.map(|l| l.unwrap()).collect();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success() && rest == ["ok redirect"],
        "redis-py redirect checks failed: {rest:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn cluster_up_starts_agreeing_nodes_status_prints_them_and_a_signal_stops_them_all() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let home = tempfile::tempdir().unwrap();
    // Client ports BASE+1, BASE+2; peer ports BASE+101, BASE+102.
    let base = harness::free_addr().port().saturating_sub(1).min(60000);
    let mut up = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "cluster",
            "up",
            "--nodes",
            "2",
            "--base-port",
            &base.to_string(),
        ])
        .arg("--data-dir")
        .arg(home.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // If the test fails, `cluster up` is stopped (and stops its nodes).
    struct Term(u32);
    impl Drop for Term {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.to_string()])
                .status();
        }
    }
    let _term = Term(up.id());
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "ringkv cluster of 2 nodes is up:");
    let table: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(table.iter().all(|l| l.contains("state=up")), "{table:?}");

    let client = format!("127.0.0.1:{}", base + 2);
    let status = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["cluster", "status", "--node", &client])
        .output()
        .unwrap();
    assert!(status.status.success());
    let printed = String::from_utf8(status.stdout).unwrap();
    assert!(
        printed.lines().filter(|l| l.contains("state=up")).count() == 2,
        "{printed}"
    );

    let mut con = redis::Client::open(format!("redis://{client}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    drop(con);

    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(up.wait().unwrap().success());
    // Both node processes stopped with it.
    let after = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["cluster", "status", "--node", &client])
        .output()
        .unwrap();
    assert!(
        !after.status.success(),
        "a node still answers after the stop"
    );
}

/// `SHUTDOWN` through a node's client port stops the process as SIGTERM
/// does: the connection closes without a reply, the process exits cleanly,
/// and it restarts on its directory with its keys. Under `--fsync always`,
/// where each write's fsync goes through the server's SET writer, also for
/// the writes another node forwards.
#[test]
fn shutdown_stops_a_node_process_which_restarts_with_its_keys() {
    let home = tempfile::tempdir().unwrap();
    let ids = ["n1", "n2"];
    let mut n = started(home.path(), &ids, 2, &["--fsync", "always"]);
    // Through n1: about half of the keys are n2's, forwarded.
    let mut con = n[0].connect().unwrap();
    for i in 0..20 {
        let () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
        let c: i64 = redis::cmd("INCR")
            .arg(format!("c{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(c, 1);
        let d: i64 = redis::cmd("DEL")
            .arg(format!("k{}", i / 2))
            .query(&mut con)
            .unwrap();
        assert_eq!(d, i64::from(i % 2 == 0));
    }
    let mut direct = n[1].connect().unwrap();
    let e = redis::cmd("SHUTDOWN").query::<()>(&mut direct).unwrap_err();
    assert!(
        e.is_connection_dropped() || e.is_io_error(),
        "SHUTDOWN answered instead of closing: {e}"
    );
    n[1].wait_exit();
    n[1].start(Mode::Restart, &[]);
    settle(&[&n[0], &n[1]], &ids);
    for node in &n {
        let mut con = node.connect().unwrap();
        // A restarted node answers -TRYAGAIN for its keys until it has
        // caught up with the cluster's log.
        let mut get = |key: String| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match redis::cmd("GET").arg(&key).query::<Option<i64>>(&mut con) {
                    Ok(v) => return v,
                    Err(e) => assert!(
                        std::time::Instant::now() < deadline,
                        "{key} through {}: {e}",
                        node.id
                    ),
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        for i in 0..20 {
            assert_eq!(
                get(format!("k{i}")),
                (i >= 10).then_some(i),
                "k{i} through {}",
                node.id
            );
            assert_eq!(get(format!("c{i}")), Some(1), "c{i} through {}", node.id);
        }
    }
}
