//! Bad directories and bad files: each is refused with an error naming the
//! directory (or the missing file), and nothing is re-initialised.

use std::fs;
use std::path::{Path, PathBuf};

use ringkv_persist::{Durability, FORMAT_VERSION, PersistError, PersistentEngine, WriteBatch};

/// A database in `dir` holding `n` entries, flushed to a table file.
fn filled(dir: &Path, n: u64) {
    let engine = PersistentEngine::open(dir).expect("fresh open");
    let mut batch = WriteBatch::new();
    for i in 0..n {
        batch.put(i * 1000, format!("key{i}"), vec![i as u8; 100]);
    }
    engine.write(batch, Durability::Fsync).expect("write");
    engine.flush_tables().expect("flush");
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The largest table file under `dir`: the entries' table after `filled`.
/// (The journal is preallocated, and a truncated journal tail is a torn
/// write the engine recovers from by design, not corruption.)
fn largest_table(dir: &Path) -> PathBuf {
    files(dir)
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("tables")))
        .max_by_key(|p| fs::metadata(p).expect("metadata").len())
        .expect("a file exists")
}

/// Opens `dir` and reads every entry; the first error, if any.
fn open_and_read_all(dir: &Path) -> Result<usize, PersistError> {
    let engine = PersistentEngine::open(dir)?;
    let mut out = vec![];
    engine.scan(0..=u64::MAX, None, usize::MAX, &mut out)?;
    Ok(out.len())
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "lock"))
        .map(|p| {
            let bytes = fs::read(&p).expect("readable file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_filled_database_reopens_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 500);
    assert_eq!(open_and_read_all(dir.path()).expect("reopen"), 500);
}

#[test]
fn a_truncated_table_file_is_an_error_naming_the_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 2000);
    let table = largest_table(dir.path());
    let len = fs::metadata(&table).expect("metadata").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .expect("open table")
        .set_len(len / 2)
        .expect("truncate");
    let err = open_and_read_all(dir.path()).expect_err("a truncated table is refused");
    assert!(
        matches!(err, PersistError::Open { .. } | PersistError::Read { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    // Not re-initialised: the truncated file is still there, as it was.
    assert_eq!(fs::metadata(&table).expect("metadata").len(), len / 2);
}

#[test]
fn a_corrupt_table_file_is_an_error_not_wrong_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 2000);
    let table = largest_table(dir.path());
    let mut bytes = fs::read(&table).expect("read table");
    // Flip bytes in the first data block (after a small header), where
    // entries live: the block checksum must catch it.
    for b in &mut bytes[64..96] {
        *b ^= 0x5a;
    }
    fs::write(&table, &bytes).expect("write table");
    let err = open_and_read_all(dir.path()).expect_err("a corrupt table is refused");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

/// Stamps a closed directory as format `version`, with the engine itself
/// (as another ringkv would: without ringkv's record of a clean close,
/// which the journal no longer matches after this).
fn stamp_format(dir: &Path, version: u32) {
    fs::remove_file(dir.join("clean-close")).expect("a clean close was recorded");
    let db = fjall::Database::builder(dir).open().expect("fjall");
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .expect("meta");
    meta.insert(b"\0format_version", version.to_be_bytes())
        .expect("stamp");
    db.persist(fjall::PersistMode::SyncAll).expect("sync");
}

/// The entries of the directory's one tree, read with the engine itself.
fn stored_entries(dir: &Path) -> usize {
    let db = fjall::Database::builder(dir).open().expect("fjall");
    let entries = db
        .keyspace("t.entries", fjall::KeyspaceCreateOptions::default)
        .expect("entries");
    entries.len().expect("count")
}

#[test]
fn a_newer_format_is_refused_and_its_data_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 10);
    stamp_format(dir.path(), FORMAT_VERSION + 1);
    let err = PersistentEngine::open(dir.path()).expect_err("a newer format is refused");
    match &err {
        PersistError::NewerFormat {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("newer"), "{message}");
    // Refusing again proves the record was not overwritten; the entries
    // are all there. (fjall's recovery may rewrite its own journal and
    // version files, so the file list is not compared.)
    assert!(matches!(
        PersistentEngine::open(dir.path()),
        Err(PersistError::NewerFormat { .. })
    ));
    assert_eq!(stored_entries(dir.path()), 10);
}

/// Format 1 placed keys by `xxh3` alone: its entries sit at positions this
/// build never looks at, so it is refused, not read as empty.
#[test]
fn an_older_format_is_refused_and_its_data_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 10);
    stamp_format(dir.path(), 1);
    let err = PersistentEngine::open(dir.path()).expect_err("format 1 is refused");
    match &err {
        PersistError::OlderFormat {
            found, supported, ..
        } => assert_eq!((*found, *supported), (1, FORMAT_VERSION)),
        other => panic!("expected OlderFormat, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("older") && message.contains("slot"),
        "{message}"
    );
    assert!(matches!(
        PersistentEngine::open(dir.path()),
        Err(PersistError::OlderFormat { .. })
    ));
    assert_eq!(stored_entries(dir.path()), 10);
}

/// Format 2 is format 3 without the write log: it opens, keeps its
/// entries, and is stamped 3, so that a build that knows only 2 refuses it
/// from then on instead of ignoring what the log holds.
#[test]
fn a_format_2_directory_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 10);
    stamp_format(dir.path(), 2);
    assert_eq!(open_and_read_all(dir.path()).expect("format 2 opens"), 10);
    fs::remove_file(dir.path().join("clean-close")).expect("a clean close was recorded");
    let db = fjall::Database::builder(dir.path()).open().expect("fjall");
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .expect("meta");
    let stamped = meta
        .get(b"\0format_version")
        .expect("read")
        .expect("record");
    assert_eq!(&*stamped, &FORMAT_VERSION.to_be_bytes()[..]);
    assert_eq!(FORMAT_VERSION, 3);
}

#[test]
fn a_foreign_directory_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("notes.txt"), "not a database").expect("write");
    let err = PersistentEngine::open(dir.path()).expect_err("a foreign dir is refused");
    assert!(matches!(err, PersistError::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("version"), "{err}");
    assert_eq!(files(dir.path()), vec![dir.path().join("notes.txt")]);
}

#[test]
fn a_deleted_engine_marker_is_refused_not_recreated() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 10);
    fs::remove_file(dir.path().join("version")).expect("remove marker");
    let before = snapshot(dir.path());
    let err = PersistentEngine::open(dir.path()).expect_err("a damaged dir is refused");
    assert!(matches!(err, PersistError::NotADatabase { .. }), "{err:?}");
    assert_eq!(before, snapshot(dir.path()));
}

#[test]
fn a_second_open_of_an_open_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = PersistentEngine::open(dir.path()).expect("first open");
    let err = PersistentEngine::open(dir.path()).expect_err("the directory is locked");
    assert!(matches!(err, PersistError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another ringkv process"),
        "{err}"
    );
}

#[test]
fn a_missing_directory_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a").join("b");
    let engine = PersistentEngine::open(&path).expect("created");
    engine.put(1, b"k", b"v", Durability::Fsync).expect("put");
    drop(engine);
    let engine = PersistentEngine::open(&path).expect("reopened");
    assert_eq!(
        engine.get(1, b"k").expect("get").as_deref(),
        Some(&b"v"[..])
    );
}

/// The journal of `dir` (the engine keeps one while its size is small).
fn journal(dir: &Path) -> PathBuf {
    let journals: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    assert_eq!(journals.len(), 1, "one journal: {journals:?}");
    journals[0].clone()
}

/// The bytes of `file` up to its last non-zero one (journals are padded).
fn content_len(file: &Path) -> usize {
    let bytes = fs::read(file).expect("read");
    // Whole zero pages first (a memcmp: the padding is 64 MiB).
    let zero = [0u8; 4096];
    let mut end = bytes.len();
    while end >= 4096 && bytes[end - 4096..end] == zero {
        end -= 4096;
    }
    bytes[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
}

/// A database of `n` entries that stay in the journal (no table file).
fn journaled(dir: &Path, n: u64) {
    let engine = PersistentEngine::open(dir).expect("fresh open");
    for i in 0..n {
        engine
            .put(
                i * 1000,
                format!("key{i}").as_bytes(),
                [i as u8; 100],
                Durability::NoSync,
            )
            .expect("put");
        // A read moves the write from ringkv's write log into the engine:
        // one engine batch, so one journal record, per write.
        engine.get(i * 1000, b"-").expect("get");
    }
}

/// Asserts that `err` is a [`PersistError::Damaged`] naming `file`, with
/// `words` in its message, and that the directory was left as `before`.
#[track_caller]
fn assert_damaged(
    err: PersistError,
    file: &Path,
    words: &str,
    dir: &Path,
    before: &[(PathBuf, Vec<u8>)],
) {
    assert!(matches!(err, PersistError::Damaged { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains(words), "{message}");
    assert!(
        message.contains("restore the directory from a backup"),
        "{message}"
    );
    assert_eq!(before, snapshot(dir), "the directory was changed");
}

#[test]
fn a_truncated_journal_after_a_clean_close_is_refused_not_replayed_short() {
    let dir = tempfile::tempdir().expect("temp dir");
    journaled(dir.path(), 200);
    let jnl = journal(dir.path());
    let len = content_len(&jnl);
    // Cut in the middle: without the check the engine takes the rest for a
    // torn last write and drops it (and the entries after the cut).
    fs::OpenOptions::new()
        .write(true)
        .open(&jnl)
        .expect("open")
        .set_len(len as u64 / 2)
        .expect("truncate");
    let before = snapshot(dir.path());
    let err = PersistentEngine::open(dir.path()).expect_err("a truncated journal is refused");
    assert_damaged(err, &jnl, "truncated", dir.path(), &before);
}

#[test]
fn a_corrupt_journal_after_a_clean_close_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    journaled(dir.path(), 200);
    let jnl = journal(dir.path());
    let mut bytes = fs::read(&jnl).expect("read");
    let len = content_len(&jnl);
    // Every byte of the content counts: a flipped marker byte makes the
    // engine stop reading there and drop the rest as a torn tail.
    for at in [len / 3, len / 2] {
        bytes[at] ^= 0x5a;
    }
    fs::write(&jnl, &bytes).expect("write");
    let before = snapshot(dir.path());
    let err = PersistentEngine::open(dir.path()).expect_err("a corrupt journal is refused");
    assert_damaged(err, &jnl, "corrupt", dir.path(), &before);
}

#[test]
fn a_deleted_journal_after_a_clean_close_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    journaled(dir.path(), 20);
    let jnl = journal(dir.path());
    fs::remove_file(&jnl).expect("remove the journal");
    let before = snapshot(dir.path());
    let err = PersistentEngine::open(dir.path()).expect_err("a missing journal is refused");
    assert_damaged(err, &jnl, "is missing", dir.path(), &before);
}

#[test]
fn a_torn_journal_tail_after_a_crash_is_dropped_as_the_engine_does() {
    // The record of a clean close is what tells damage from a crash: with
    // none (a crash), a journal cut inside its last write opens, without
    // that write, as the engine's recovery intends.
    let dir = tempfile::tempdir().expect("temp dir");
    journaled(dir.path(), 10);
    fs::remove_file(dir.path().join("clean-close")).expect("a clean close was recorded");
    let jnl = journal(dir.path());
    let len = content_len(&jnl);
    fs::OpenOptions::new()
        .write(true)
        .open(&jnl)
        .expect("open")
        .set_len(len as u64 - 5)
        .expect("truncate");
    assert_eq!(open_and_read_all(dir.path()).expect("opens"), 9);
}

#[test]
fn a_clean_close_is_checked_once_and_every_reopen_is_clean_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    journaled(dir.path(), 10);
    for round in 0..3 {
        assert!(dir.path().join("clean-close").exists(), "round {round}");
        let engine = PersistentEngine::open(dir.path()).expect("reopen");
        assert!(
            !dir.path().join("clean-close").exists(),
            "an open directory has no record of a clean close (a crash now is one)"
        );
        engine
            .put(1_000_000 + round, b"more", b"v", Durability::NoSync)
            .expect("put");
    }
    assert_eq!(open_and_read_all(dir.path()).expect("reopen"), 13);
}

#[test]
fn a_tree_without_its_version_pointer_is_refused_not_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 500);
    let table = largest_table(dir.path());
    let tree = table.parent().and_then(Path::parent).expect("tree dir");
    let current = tree.join("current");
    fs::remove_file(&current).expect("remove current");
    let before = snapshot(dir.path());
    let err = PersistentEngine::open(dir.path()).expect_err("refused");
    assert_damaged(err, &current, "is missing", dir.path(), &before);
    assert!(table.exists(), "the engine did not delete the tree");
}

#[test]
fn a_file_given_as_the_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("data");
    fs::write(&file, "a file").expect("write");
    let err = PersistentEngine::open(&file).expect_err("a file is not a directory");
    assert!(matches!(err, PersistError::NotADirectory { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("not a directory"), "{message}");
    assert_eq!(fs::read(&file).expect("read"), b"a file");
    // A path under a file cannot be created.
    let err = PersistentEngine::open(file.join("sub")).expect_err("under a file");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

/// Runs the test `name` of this binary again inside a new user and mount
/// namespace (`unshare -rm`), where it may mount file systems, with
/// `RINGKV_TEST_NS` set and `RINGKV_TEST_DIR` naming `dir`; the
/// namespace's mounts vanish with it. `None`
/// (with the reason printed) where namespaces are not available.
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

fn run(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

/// Makes `dir` read-only: a read-only bind mount over it (permissions do
/// not bind root, so `chmod` alone proves nothing when tests run as root).
fn mount_read_only(dir: &Path) {
    let d = dir.to_str().expect("UTF-8 path");
    run("mount", &["--bind", d, d]);
    run("mount", &["-o", "remount,bind,ro", d]);
}

#[test]
fn a_read_only_directory_is_refused_as_read_only() {
    if std::env::var_os("RINGKV_TEST_NS").is_some() {
        println!("NAMESPACE-READY");
        let dir = PathBuf::from(std::env::var("RINGKV_TEST_DIR").expect("dir"));
        mount_read_only(&dir);
        let err = PersistentEngine::open(&dir).expect_err("a read-only directory is refused");
        assert!(matches!(err, PersistError::NotWritable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(message.contains("Read-only file system"), "{message}");
        assert!(message.contains("writable"), "{message}");
        // A new directory under it cannot be created either.
        let err = PersistentEngine::open(dir.join("new")).expect_err("read-only");
        assert!(err.to_string().contains("Read-only file system"), "{err}");
        println!("CHECKED");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 100);
    let before = snapshot(dir.path());
    let Some(out) = in_namespace("a_read_only_directory_is_refused_as_read_only", dir.path())
    else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHECKED"),
        "in the namespace:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(before, snapshot(dir.path()), "nothing changed");
    assert_eq!(open_and_read_all(dir.path()).expect("writable again"), 100);
}
