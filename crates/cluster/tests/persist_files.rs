//! Bad disks and bad files under `Cluster::open`: a missing, truncated or
//! corrupt file, a damaged cluster record, a newer format, a read-only
//! directory, a path that is a file. Each is refused with a
//! `ClusterError::Storage` naming the file or directory and saying what to
//! do, and the directory is left as it was: nothing re-initialised, and
//! its backup (taken before the damage) still opens whole.

use std::fs;
use std::path::{Path, PathBuf};

use ringkv_cluster::{Cluster, ClusterConfig, ClusterError, FsyncPolicy, Placement};

const KEYS: u32 = 300;

fn config() -> ClusterConfig {
    ClusterConfig {
        stripes: 4,
        placement: Placement::BalancedPartitions { partitions: 256 },
        fsync: FsyncPolicy::No,
        ..ClusterConfig::default()
    }
}

/// A data directory holding a cluster of two nodes and [`KEYS`] keys,
/// closed cleanly.
fn filled(dir: &Path) {
    let cluster = Cluster::open(dir, config()).expect("create");
    cluster.add_node("n1").expect("add n1");
    cluster.add_node("n2").expect("add n2");
    for i in 0..KEYS {
        cluster
            .put(format!("key{i}"), format!("value{i}"))
            .expect("put");
    }
}

/// Opens `dir` and checks every key of [`filled`].
fn check_whole(dir: &Path) {
    let cluster = Cluster::open(dir, config()).expect("the backup opens");
    assert_eq!(cluster.members(), ["n1", "n2"]);
    for i in 0..KEYS {
        assert_eq!(
            cluster.get(format!("key{i}").as_bytes()).expect("get"),
            Some(format!("value{i}").into_bytes().into()),
            "key{i}"
        );
    }
}

/// Every file under `dir`, recursively, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The directory's data: its journals (without their zero padding, which
/// the engine trims at open) and table files. (The engine rewrites its
/// small version files at every open, damaged directory or not.)
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files(dir)
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jnl")
                || p.parent().is_some_and(|d| d.ends_with("tables"))
        })
        .map(|p| {
            let mut bytes = fs::read(&p).expect("readable");
            if p.extension().is_some_and(|e| e == "jnl") {
                let zero = [0u8; 4096];
                while bytes.len() >= 4096 && bytes[bytes.len() - 4096..] == zero {
                    bytes.truncate(bytes.len() - 4096);
                }
                while bytes.last() == Some(&0) {
                    bytes.pop();
                }
            }
            (p, bytes)
        })
        .collect()
}

/// Panics, naming the files, unless the two snapshots are equal.
#[track_caller]
fn assert_unchanged(before: &[(PathBuf, Vec<u8>)], after: &[(PathBuf, Vec<u8>)]) {
    let changed: Vec<String> = before
        .iter()
        .filter(|b| !after.contains(b))
        .map(|(p, bytes)| format!("{} ({} bytes before)", p.display(), bytes.len()))
        .chain(
            after
                .iter()
                .filter(|a| !before.iter().any(|b| b.0 == a.0))
                .map(|(p, _)| format!("{} (new)", p.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "the directory was changed: {changed:#?}"
    );
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

/// A filled directory and its backup; `damage` is applied to the
/// directory; then opening it must fail with a `Storage` error whose
/// message contains every one of `words`, leave it as it was after the
/// damage, and the backup must still open whole. Returns the message.
#[track_caller]
fn refused(damage: impl FnOnce(&Path), words: &[&str]) -> String {
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, backup) = (root.path().join("data"), root.path().join("backup"));
    filled(&dir);
    copy_dir(&dir, &backup);
    damage(&dir);
    let before = snapshot(&dir);
    let err = Cluster::open(&dir, config()).expect_err("a damaged directory is refused");
    assert!(matches!(err, ClusterError::Storage { .. }), "{err:?}");
    let message = err.to_string();
    for word in words.iter().chain(&[dir.to_str().expect("UTF-8")]) {
        assert!(message.contains(word), "{word:?} not in: {message}");
    }
    assert_unchanged(&before, &snapshot(&dir));
    // Refused again, the same way: the failed open changed nothing.
    let again = Cluster::open(&dir, config()).expect_err("still refused");
    assert_eq!(again.to_string(), message);
    check_whole(&backup);
    println!("refused: {message}");
    message
}

/// The journal of `dir` (one while the data is small).
fn journal(dir: &Path) -> PathBuf {
    let journals: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    journals[0].clone()
}

/// The length of a journal without its zero padding.
fn content_len(file: &Path) -> u64 {
    snapshot(file.parent().expect("dir"))
        .into_iter()
        .find(|(p, _)| p == file)
        .map(|(_, bytes)| bytes.len() as u64)
        .expect("listed")
}

/// Opens the directory with the engine itself, as another program (or a
/// newer ringkv) would; the record of the clean close no longer holds
/// after that, so it goes first.
fn with_engine(dir: &Path, f: impl FnOnce(&fjall::Database)) {
    fs::remove_file(dir.join("clean-close")).expect("closed cleanly");
    let db = fjall::Database::builder(dir).open().expect("fjall opens");
    f(&db);
    db.persist(fjall::PersistMode::SyncAll).expect("sync");
}

/// Edits the directory's records keyspace (`meta`) directly.
fn with_records(dir: &Path, f: impl FnOnce(&fjall::Keyspace)) {
    with_engine(dir, |db| {
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .expect("meta");
        f(&meta);
    })
}

/// Writes every tree's entries to table files (they live in the journal
/// until then).
fn flush_to_tables(dir: &Path) {
    with_engine(dir, |db| {
        for name in db.list_keyspace_names() {
            let ks = db
                .keyspace(&name, fjall::KeyspaceCreateOptions::default)
                .expect("keyspace");
            ks.rotate_memtable_and_wait().expect("flush");
        }
    });
}

/// The largest table file of the node trees.
fn largest_table(dir: &Path) -> PathBuf {
    files(dir)
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("tables")))
        .max_by_key(|p| fs::metadata(p).expect("metadata").len())
        .expect("a table exists")
}

fn truncate(file: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open")
        .set_len(len)
        .expect("truncate");
}

fn flip(file: &Path, at: &[usize]) {
    let mut bytes = fs::read(file).expect("read");
    for &i in at {
        bytes[i] ^= 0x5a;
    }
    fs::write(file, bytes).expect("write");
}

#[test]
fn a_deleted_journal_is_refused() {
    refused(
        |dir| fs::remove_file(journal(dir)).expect("rm"),
        &["0.jnl", "is missing", "restore the directory from a backup"],
    );
}

#[test]
fn a_truncated_journal_is_refused_not_opened_as_an_empty_cluster() {
    // Before the check, a journal cut to 100 bytes opened as a cluster
    // with no nodes and no keys, which `ringkv serve --nodes` then filled
    // with new empty nodes.
    refused(
        |dir| truncate(&journal(dir), 100),
        &["0.jnl", "truncated", "restore the directory from a backup"],
    );
    refused(
        |dir| {
            let jnl = journal(dir);
            truncate(&jnl, content_len(&jnl) - 10);
        },
        &["0.jnl", "truncated"],
    );
}

#[test]
fn a_corrupt_journal_is_refused() {
    refused(
        |dir| {
            let jnl = journal(dir);
            let len = content_len(&jnl) as usize;
            flip(&jnl, &[len / 2, len / 2 + 1]);
        },
        &["0.jnl", "corrupt", "restore the directory from a backup"],
    );
}

#[test]
fn a_corrupt_table_is_refused() {
    refused(
        |dir| {
            flush_to_tables(dir);
            let table = largest_table(dir);
            flip(&table, &(64..96).collect::<Vec<_>>());
        },
        &["corrupt", "restore the directory from a backup"],
    );
}

#[test]
fn a_truncated_table_is_refused() {
    refused(
        |dir| {
            flush_to_tables(dir);
            let table = largest_table(dir);
            truncate(&table, fs::metadata(&table).expect("len").len() / 2);
        },
        &["restore the directory from a backup"],
    );
}

#[test]
fn a_deleted_table_is_refused() {
    refused(
        |dir| {
            flush_to_tables(dir);
            fs::remove_file(largest_table(dir)).expect("rm");
        },
        &["missing", "restore the directory from a backup"],
    );
}

#[test]
fn a_deleted_tree_is_refused_not_recreated_empty() {
    // Before the check, deleting a node's tree (its keys still in the
    // journal) opened with that node empty: its keys silently gone.
    let message = refused(
        |dir| {
            // The trees are keyspaces 2 and 3 (0 and 1 are the engine's and
            // ringkv's records); n1's keys are in the journal.
            let trees: Vec<PathBuf> = fs::read_dir(dir.join("keyspaces"))
                .expect("keyspaces")
                .map(|e| e.expect("entry").path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n >= 2)
                })
                .collect();
            assert_eq!(trees.len(), 2, "{trees:?}");
            fs::remove_dir_all(trees.iter().min().expect("a tree")).expect("rm");
        },
        &[
            "node `n1`",
            "is missing",
            "restore the directory from a backup",
        ],
    );
    assert!(message.contains("node-0"), "{message}");
}

#[test]
fn a_tree_without_its_version_pointer_is_refused_not_deleted() {
    refused(
        |dir| {
            flush_to_tables(dir);
            let table = largest_table(dir);
            let tree = table.parent().and_then(Path::parent).expect("tree");
            fs::remove_file(tree.join("current")).expect("rm");
        },
        &[
            "current",
            "is missing",
            "restore the directory from a backup",
        ],
    );
}

#[test]
fn a_garbage_ring_record_is_refused_by_name() {
    refused(
        |dir| {
            with_records(dir, |meta| {
                meta.insert(b"c/ring", b"\x00garbage{").expect("insert");
            })
        },
        &[
            "cluster record `ring`",
            "unreadable",
            "restore the directory from a backup",
        ],
    );
}

#[test]
fn a_deleted_node_record_is_refused_not_recreated_empty() {
    refused(
        |dir| {
            with_records(dir, |meta| {
                meta.remove(b"n/n2").expect("remove");
            })
        },
        &["node `n2`", "restore the directory from a backup"],
    );
}

#[test]
fn a_damaged_node_record_is_refused_without_a_panic() {
    refused(
        |dir| {
            with_records(dir, |meta| {
                meta.insert(b"n/n2", b"../../etc").expect("insert");
            })
        },
        &[
            "node `n2`",
            "damaged",
            "restore the directory from a backup",
        ],
    );
}

#[test]
fn an_entry_that_does_not_decode_is_refused_by_key() {
    refused(
        |dir| {
            with_engine(dir, |db| {
                let tree = db
                    .keyspace("t.node-0", fjall::KeyspaceCreateOptions::default)
                    .expect("tree");
                let key = tree
                    .first_key_value()
                    .expect("n1 holds keys")
                    .key()
                    .expect("read");
                tree.insert(key, b"\xffnot an entry").expect("insert");
            })
        },
        &["does not decode", "restore the directory from a backup"],
    );
}

#[test]
fn a_newer_format_is_refused() {
    refused(
        |dir| {
            with_records(dir, |meta| {
                meta.insert(
                    b"\0format_version",
                    (ringkv_persist_format() + 1).to_be_bytes(),
                )
                .expect("stamp");
            })
        },
        &["newer", "run the ringkv version that wrote it"],
    );
}

/// The format this build writes (read from a fresh directory's record, so
/// that the test does not depend on the persist crate directly).
fn ringkv_persist_format() -> u32 {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(Cluster::open(dir.path(), config()).expect("create"));
    fs::remove_file(dir.path().join("clean-close")).expect("closed cleanly");
    let db = fjall::Database::builder(dir.path()).open().expect("fjall");
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .expect("meta");
    let raw = meta
        .get(b"\0format_version")
        .expect("read")
        .expect("stamped");
    u32::from_be_bytes(<[u8; 4]>::try_from(&*raw).expect("4 bytes"))
}

#[test]
fn a_file_given_as_the_directory_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = root.path().join("data");
    fs::write(&file, "not a directory").expect("write");
    let err = Cluster::open(&file, config()).expect_err("a file is refused");
    assert!(matches!(err, ClusterError::Storage { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(file.to_str().expect("UTF-8")), "{message}");
    assert!(message.contains("is a file, not a directory"), "{message}");
    assert_eq!(fs::read(&file).expect("read"), b"not a directory");
}

/// Runs the test `name` of this binary again inside a new user and mount
/// namespace (`unshare -rm`), with `RINGKV_TEST_DIR` naming `dir`, where it
/// may mount; `None` (the reason printed) where that is not available.
fn in_namespace(name: &str, dir: &Path) -> Option<std::process::Output> {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("unshare")
        .args(["-rm", "--"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("RINGKV_TEST_NS", "1")
        .env("RINGKV_TEST_DIR", dir)
        .output();
    match out {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("NAMESPACE-READY") => Some(out),
        Ok(out) => {
            println!(
                "skipped: no user and mount namespace (unshare -rm): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("skipped: cannot run unshare: {e}");
            None
        }
    }
}

#[test]
fn a_read_only_directory_is_refused_as_read_only() {
    if std::env::var_os("RINGKV_TEST_NS").is_some() {
        // In the namespace: a read-only bind mount over the directory
        // (tests run as root here, which chmod does not stop).
        println!("NAMESPACE-READY");
        let dir = PathBuf::from(std::env::var("RINGKV_TEST_DIR").expect("dir"));
        let d = dir.to_str().expect("UTF-8");
        for args in [&["--bind", d, d][..], &["-o", "remount,bind,ro", d]] {
            let status = std::process::Command::new("mount")
                .args(args)
                .status()
                .expect("mount");
            assert!(status.success(), "mount {args:?}");
        }
        let err = Cluster::open(&dir, config()).expect_err("read-only is refused");
        let message = err.to_string();
        assert!(message.contains(d), "{message}");
        assert!(message.contains("Read-only file system"), "{message}");
        assert!(message.contains("writable"), "{message}");
        println!("CHECKED");
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("data");
    filled(&dir);
    let before = snapshot(&dir);
    let Some(out) = in_namespace("a_read_only_directory_is_refused_as_read_only", &dir) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHECKED"),
        "in the namespace:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_unchanged(&before, &snapshot(&dir));
    check_whole(&dir);
}
