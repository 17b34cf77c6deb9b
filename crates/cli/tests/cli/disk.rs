//! `--data-dir` on bad disks and bad files, through the binary: a damaged
//! directory stops `ringkv serve` (and `ringkv run`) at start with exit
//! code 1 and one `error:` line naming the file or directory and saying
//! what to do, and leaves the directory as it was; a full disk refuses
//! writes with `-ERR` naming the directory and saying the disk is full,
//! keeps serving reads, and loses no acknowledged write, in the running
//! server and after a restart with space freed.
//!
//! The read-only and full-disk cases need a mount: each runs in a user and
//! mount namespace (`unshare -rm`, no root needed where user namespaces
//! are enabled; `chmod` would not stop root, whom these tests may run
//! as), and is skipped with the reason printed where that is unavailable.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Outcome, outcome, ringkv};

/// Creates a data directory with `ringkv run`: nodes n1 and n2, `keys`
/// keys `key<i>` = `value<i>`.
fn filled(dir: &Path, keys: u32) {
    let mut script = String::from("add_node(n1)\nadd_node(n2)\n");
    for i in 0..keys {
        script.push_str(&format!("put(key{i}, value{i})\n"));
    }
    outcome(
        ringkv()
            .args(["run", "-", "--partitions", "1024", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .write_stdin(script),
    )
    .expect_code(0);
}

/// The number of keys `ringkv run` finds in `dir`.
fn keys_in(dir: &Path) -> u64 {
    let out = outcome(
        ringkv()
            .args(["run", "-", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .write_stdin("stats()\n"),
    );
    out.expect_code(0);
    crate::parse_stats(out.out_lines()[0]).keys
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The directory's data files (journals without their zero padding, and
/// tables), to check that a refused start changed none.
fn data_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jnl")
                || path.parent().is_some_and(|p| p.ends_with("tables"))
            {
                let mut bytes = fs::read(&path).expect("read");
                if path.extension().is_some_and(|e| e == "jnl") {
                    // Whole zero pages first (a memcmp: the padding is 64 MiB).
                    let zero = [0u8; 4096];
                    while bytes.len() >= 4096 && bytes[bytes.len() - 4096..] == zero {
                        bytes.truncate(bytes.len() - 4096);
                    }
                    while bytes.last() == Some(&0) {
                        bytes.pop();
                    }
                }
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// `ringkv serve` on `dir`, which must refuse to start: exit code 1 and a
/// last stderr line `error: ...` with every one of `words` and the
/// directory, each advice said once.
#[track_caller]
fn serve_refuses(dir: &Path, words: &[&str]) -> Outcome {
    let out = outcome(
        ringkv()
            .args(["serve", "--listen", "127.0.0.1:0", "--nodes", "n1,n2"])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .timeout(Duration::from_secs(30)),
    );
    out.expect_code(1);
    check_error(&out, dir, words);
    out
}

#[track_caller]
fn check_error(out: &Outcome, dir: &Path, words: &[&str]) {
    let last = out.err_lines().last().copied().unwrap_or_default();
    assert!(last.starts_with("error: "), "stderr:\n{}", out.stderr);
    for word in words.iter().chain(&[dir.to_str().expect("UTF-8")]) {
        assert!(last.contains(word), "{word:?} not in: {last}");
    }
    // The error chain used to print each message two or three times.
    let parts: Vec<&str> = last.split(": ").filter(|p| p.len() > 20).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "repeated {part:?} in: {last}"
        );
    }
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
}

/// A filled directory and a backup of it; `damage` is applied, then
/// `ringkv serve` must refuse it with `words`, leave its data files as
/// they were, and the backup must still hold every key.
#[track_caller]
fn refused(damage: impl FnOnce(&Path), words: &[&str]) {
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, backup) = (root.path().join("data"), root.path().join("backup"));
    filled(&dir, 200);
    copy_dir(&dir, &backup);
    damage(&dir);
    let before = data_files(&dir);
    serve_refuses(&dir, words);
    assert!(before == data_files(&dir), "the data files changed");
    assert_eq!(keys_in(&backup), 200);
}

fn journal(dir: &Path) -> PathBuf {
    dir.join("0.jnl")
}

/// Opens the directory with the engine itself, as another program would
/// (the record of the clean close no longer holds after that).
fn with_engine(dir: &Path, f: impl FnOnce(&fjall::Database)) {
    fs::remove_file(dir.join("clean-close")).expect("closed cleanly");
    let db = fjall::Database::builder(dir).open().expect("fjall opens");
    f(&db);
    db.persist(fjall::PersistMode::SyncAll).expect("sync");
}

#[test]
fn serve_refuses_a_deleted_journal() {
    refused(
        |dir| fs::remove_file(journal(dir)).expect("rm"),
        &["0.jnl", "is missing", "restore the directory from a backup"],
    );
}

#[test]
fn serve_refuses_a_truncated_journal_instead_of_starting_empty() {
    // Before: the journal cut to 100 bytes opened as a cluster without
    // nodes, and `--nodes` filled it with new, empty ones.
    refused(
        |dir| {
            fs::OpenOptions::new()
                .write(true)
                .open(journal(dir))
                .expect("open")
                .set_len(100)
                .expect("truncate")
        },
        &["0.jnl", "truncated", "restore the directory from a backup"],
    );
}

#[test]
fn serve_refuses_a_corrupt_journal() {
    refused(
        |dir| {
            let mut bytes = fs::read(journal(dir)).expect("read");
            bytes[1000] ^= 0x5a;
            fs::write(journal(dir), bytes).expect("write");
        },
        &["0.jnl", "corrupt", "restore the directory from a backup"],
    );
}

#[test]
fn serve_refuses_a_corrupt_table() {
    refused(
        |dir| {
            with_engine(dir, |db| {
                for name in db.list_keyspace_names() {
                    db.keyspace(&name, fjall::KeyspaceCreateOptions::default)
                        .expect("keyspace")
                        .rotate_memtable_and_wait()
                        .expect("flush");
                }
            });
            let mut tables: Vec<PathBuf> = Vec::new();
            for tree in fs::read_dir(dir.join("keyspaces")).expect("keyspaces") {
                if let Ok(files) = fs::read_dir(tree.expect("tree").path().join("tables")) {
                    tables.extend(files.map(|f| f.expect("table").path()));
                }
            }
            let table = tables
                .into_iter()
                .max_by_key(|t| fs::metadata(t).expect("len").len())
                .expect("a table");
            let mut bytes = fs::read(&table).expect("read");
            for b in &mut bytes[64..96] {
                *b ^= 0x5a;
            }
            fs::write(&table, bytes).expect("write");
        },
        &["corrupt", "restore the directory from a backup"],
    );
}

#[test]
fn serve_refuses_a_garbage_ring_record() {
    refused(
        |dir| {
            with_engine(dir, |db| {
                db.keyspace("meta", fjall::KeyspaceCreateOptions::default)
                    .expect("meta")
                    .insert(b"c/ring", b"garbage")
                    .expect("insert");
            })
        },
        &[
            "cluster record `ring`",
            "restore the directory from a backup",
        ],
    );
}

#[test]
fn serve_refuses_a_newer_format() {
    refused(
        |dir| {
            with_engine(dir, |db| {
                db.keyspace("meta", fjall::KeyspaceCreateOptions::default)
                    .expect("meta")
                    .insert(b"\0format_version", 999u32.to_be_bytes())
                    .expect("stamp");
            })
        },
        &["format version 999", "newer", "run the ringkv version"],
    );
}

#[test]
fn serve_and_run_refuse_a_file_as_data_dir() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = root.path().join("data");
    fs::write(&file, "a file").expect("write");
    serve_refuses(&file, &["is a file, not a directory"]);
    let out = outcome(
        ringkv()
            .args(["run", "-", "--data-dir"])
            .arg(&file)
            .write_stdin("stats()\n"),
    );
    out.expect_code(1);
    check_error(&out, &file, &["is a file, not a directory"]);
    assert_eq!(fs::read(&file).expect("read"), b"a file");
}

/// Whether `unshare -rm` works here; prints why not.
fn namespaces() -> bool {
    match Process::new("unshare").args(["-rm", "true"]).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            println!(
                "skipped: no user and mount namespace (unshare -rm): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            println!("skipped: cannot run unshare: {e}");
            false
        }
    }
}

#[test]
fn serve_refuses_a_read_only_data_dir() {
    if !namespaces() {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("data");
    filled(&dir, 200);
    let before = data_files(&dir);
    // A read-only bind mount over the directory, in a namespace of its own.
    let mut cmd = assert_cmd::Command::new("unshare");
    cmd.args([
        "-rm",
        "sh",
        "-c",
        r#"mount --bind "$DIR" "$DIR" && mount -o remount,bind,ro "$DIR" &&
           exec "$BIN" serve --listen 127.0.0.1:0 --nodes n1 --data-dir "$DIR""#,
    ])
    .env("RUST_LOG", "warn")
    .env("NO_COLOR", "1")
    .env("DIR", &dir)
    .env("BIN", env!("CARGO_BIN_EXE_ringkv"))
    .timeout(Duration::from_secs(30));
    let out = outcome(&mut cmd);
    out.expect_code(1);
    check_error(&out, &dir, &["Read-only file system", "writable"]);
    assert!(before == data_files(&dir), "the data files changed");
    assert_eq!(keys_in(&dir), 200, "writable again outside the namespace");
}

/// A `ringkv serve` process, its address read from its log.
struct Server {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    /// Starts `cmd` (which runs `ringkv serve --listen 127.0.0.1:0`) and
    /// waits for its `listening` line; `None` if it exited first.
    fn start(mut cmd: Process) -> Result<Server, String> {
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let stderr = child.stderr.take().expect("piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            log,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match server
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    server.seen.push(line.clone());
                    if line.contains("listening") {
                        server.addr = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("addr="))
                            .expect("the listening line names its address")
                            .to_owned();
                        return Ok(server);
                    }
                }
                Err(_) => return Err(server.seen.join("\n")),
            }
        }
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(&self.addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            stream,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP client: one command, one reply.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// A reply: a status or error line (`+OK`, `-ERR ...`, `:3`), a bulk
/// string, nil, or an array.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Line(String),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Client {
    fn call(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).expect("send");
        self.reply()
    }

    fn reply(&mut self) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reply");
        let line = line.trim_end().to_owned();
        if let Some(n) = line.strip_prefix('*') {
            let n: usize = n.parse().expect("array length");
            return Reply::Array((0..n).map(|_| self.reply()).collect());
        }
        match line.strip_prefix('$') {
            Some("-1") => Reply::Nil,
            Some(n) => {
                let mut bulk = vec![0; n.parse::<usize>().expect("length") + 2];
                self.reader.read_exact(&mut bulk).expect("bulk");
                bulk.truncate(bulk.len() - 2);
                Reply::Bulk(bulk)
            }
            None => Reply::Line(line),
        }
    }

    /// The ids of `RINGKV.NODES`.
    fn members(&mut self) -> Vec<String> {
        let Reply::Array(nodes) = self.call(&[b"RINGKV.NODES"]) else {
            panic!("RINGKV.NODES is an array");
        };
        nodes
            .into_iter()
            .map(|node| match node {
                Reply::Array(fields) => match &fields[..2] {
                    [Reply::Bulk(k), Reply::Bulk(id)] if k == b"id" => {
                        String::from_utf8(id.clone()).expect("UTF-8")
                    }
                    other => panic!("a node: {other:?}"),
                },
                other => panic!("a node: {other:?}"),
            })
            .collect()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i}").into_bytes()
}

/// 4,000 bytes, different for every key.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value{i}:").into_bytes();
    v.resize(4000, b'a' + (i % 26) as u8);
    v
}

/// Fills a 4 MiB tmpfs under `ringkv serve --fsync <fsync>` until writes
/// fail, checks the replies and that reads go on, stops the server with
/// `signal`, and restarts it on a copy of the directory (space freed):
/// every acknowledged write is there, no refused one.
fn full_disk(fsync: &str, signal: &str) {
    if !namespaces() {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let (mnt, copy, pidfile) = (
        root.path().join("mnt"),
        root.path().join("copy"),
        root.path().join("pid"),
    );
    fs::create_dir(&mnt).expect("mkdir");
    let data = mnt.join("data");
    // The server runs in the background of a shell in the namespace, which
    // copies the directory out once it exits (the tmpfs goes with the
    // namespace).
    let mut cmd = Process::new("unshare");
    cmd.args([
        "-rm",
        "sh",
        "-c",
        r#"mount -t tmpfs -o size=4m tmpfs "$MNT" || exit 97
           "$BIN" serve --listen 127.0.0.1:0 --partitions 1024 --nodes n1,n2 \
               --data-dir "$MNT/data" --fsync "$FSYNC" &
           echo $! > "$PIDFILE"
           wait $!
           status=$?
           cp -a "$MNT/data" "$COPY" || exit 98
           exit $status"#,
    ])
    .env("MNT", &mnt)
    .env("COPY", &copy)
    .env("PIDFILE", &pidfile)
    .env("FSYNC", fsync)
    .env("BIN", env!("CARGO_BIN_EXE_ringkv"))
    .env("RUST_LOG", "info");
    let mut server = match Server::start(cmd) {
        Ok(server) => server,
        Err(log) => {
            println!("skipped: cannot serve from a tmpfs in a namespace:\n{log}");
            return;
        }
    };
    let dir = data.to_str().expect("UTF-8").to_owned();

    let mut c = server.connect();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..5_000 {
        match c.call(&[b"SET", &key(i), &value(i)]) {
            Reply::Line(ok) if ok == "+OK" => acked.push(i),
            Reply::Line(err) => {
                refused = Some((i, err));
                break;
            }
            other => panic!("SET: {other:?}"),
        }
    }
    let (first_refused, err) = refused.expect("a 4 MiB disk fills up with 20 MB of writes");
    assert!(acked.len() > 100, "only {} writes fit", acked.len());
    println!(
        "--fsync {fsync}: {} writes acknowledged, then: {err}",
        acked.len()
    );
    for word in ["-ERR", &dir, "is full", "free disk space", "restart"] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    // Every later write is refused too, saying why, on any connection;
    // a delete as well (the key stays).
    let mut other = server.connect();
    let later: Vec<Vec<u8>> = (0..3).map(|j| format!("later{j}").into_bytes()).collect();
    for k in &later {
        match other.call(&[b"SET", k, b"v"]) {
            Reply::Line(err) => {
                for word in ["-ERR", &dir, "is full", "free disk space", "restart"] {
                    assert!(err.contains(word), "{word:?} not in {err}");
                }
            }
            reply => panic!("a write on a full disk: {reply:?}"),
        }
    }
    assert!(
        matches!(other.call(&[b"DEL", &key(0)]), Reply::Line(e) if e.starts_with("-ERR")),
        "DEL refused"
    );
    // A membership change is refused before it starts: nothing changes.
    for change in [
        &[&b"RINGKV.ADDNODE"[..], b"n3"][..],
        &[b"RINGKV.REMOVENODE", b"n1"],
    ] {
        match other.call(change) {
            Reply::Line(err) => {
                for word in ["nothing changed", &dir, "is full"] {
                    assert!(err.contains(word), "{word:?} not in {err}");
                }
            }
            reply => panic!("a membership change on a full disk: {reply:?}"),
        }
    }
    assert_eq!(other.members(), ["n1", "n2"]);
    // A transaction is refused whole, and none of its writes is served:
    // they were applied in memory, then undone when the batch was refused.
    match other.call(&[b"MSET", b"txn-a", b"1", &key(0), b"changed"]) {
        Reply::Line(err) => assert!(err.contains("-ERR") && err.contains("is full"), "{err}"),
        reply => panic!("MSET on a full disk: {reply:?}"),
    }
    assert_eq!(other.call(&[b"GET", b"txn-a"]), Reply::Nil);
    assert_eq!(other.call(&[b"GET", &key(0)]), Reply::Bulk(value(0)));
    // Reads keep working: every acknowledged write reads back.
    for &i in &acked {
        assert_eq!(c.call(&[b"GET", &key(i)]), Reply::Bulk(value(i)), "key{i}");
    }
    assert_eq!(c.call(&[b"GET", &key(first_refused)]), Reply::Nil);
    assert_eq!(
        c.call(&[b"DBSIZE"]),
        Reply::Line(format!(":{}", acked.len()))
    );
    drop((c, other));

    // Stop it, then start again on a copy: the space freed.
    let pid = fs::read_to_string(&pidfile).expect("pid file");
    let status = Process::new("kill")
        .args([format!("-{signal}"), pid.trim().to_owned()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = server.child.wait().expect("the namespace's shell exits");
    assert!(copy.exists(), "the directory was copied out: {status}");
    while let Ok(line) = server.log.try_recv() {
        server.seen.push(line);
    }
    let log = server.seen.join("\n");
    assert!(
        !log.contains("panicked"),
        "the server panicked on a full disk:\n{log}"
    );

    let mut cmd = Process::new(env!("CARGO_BIN_EXE_ringkv"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&copy)
        .env("RUST_LOG", "info");
    let restarted = Server::start(cmd).unwrap_or_else(|log| panic!("restart failed:\n{log}"));
    let mut c = restarted.connect();
    for &i in &acked {
        assert_eq!(
            c.call(&[b"GET", &key(i)]),
            Reply::Bulk(value(i)),
            "key{i} after the restart"
        );
    }
    // A refused write was not applied, before or after the restart.
    assert_eq!(c.call(&[b"GET", &key(first_refused)]), Reply::Nil);
    for k in &later {
        assert_eq!(c.call(&[b"GET", k]), Reply::Nil);
    }
    assert_eq!(
        c.call(&[b"DBSIZE"]),
        Reply::Line(format!(":{}", acked.len()))
    );
    assert_eq!(c.members(), ["n1", "n2"]);
    assert_eq!(
        c.call(&[b"SET", b"after", b"restart"]),
        Reply::Line("+OK".into()),
        "writes work again"
    );
    // The refused change left nothing half done: it works now.
    assert!(matches!(
        c.call(&[b"RINGKV.ADDNODE", b"n3"]),
        Reply::Array(_)
    ));
    assert_eq!(c.members(), ["n1", "n2", "n3"]);
    for &i in acked.iter().step_by(7) {
        assert_eq!(c.call(&[b"GET", &key(i)]), Reply::Bulk(value(i)), "key{i}");
    }
}

#[test]
fn a_full_disk_refuses_writes_and_keeps_every_acknowledged_one() {
    full_disk("everysec", "TERM");
}

#[test]
fn a_full_disk_under_fsync_always_loses_nothing_through_kill_9() {
    full_disk("always", "KILL");
}
