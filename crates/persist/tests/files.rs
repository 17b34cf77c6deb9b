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

#[test]
fn a_newer_format_is_refused_and_its_data_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    filled(dir.path(), 10);
    {
        // Stamp the directory as a future version, with the engine itself.
        let db = fjall::Database::builder(dir.path()).open().expect("fjall");
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .expect("meta");
        meta.insert(b"\0format_version", (FORMAT_VERSION + 1).to_be_bytes())
            .expect("stamp");
        db.persist(fjall::PersistMode::SyncAll).expect("sync");
    }
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
    let db = fjall::Database::builder(dir.path()).open().expect("fjall");
    let entries = db
        .keyspace("t.entries", fjall::KeyspaceCreateOptions::default)
        .expect("entries");
    assert_eq!(entries.len().expect("count"), 10);
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
