//! Tests of `dir.rs`: the data directory.

use super::*;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn folders(path: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    fs::read_dir(path.join("keyspaces"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect()
}

/// The engine deletes a dropped tree's `current` first and its tables
/// after: a crash in between is a drop to finish, not a damaged tree
/// to refuse (a kill -9 during node churn met it).
#[test]
fn a_crash_in_the_middle_of_a_drop_is_finished_not_refused() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("data");
    let saved = home.path().join("saved");
    {
        let dir = DataDir::open(&path, FsyncPolicy::No).unwrap();
        let (gone, kept) = (dir.tree("gone").unwrap(), dir.tree("kept").unwrap());
        for i in 0..100u64 {
            gone.put(i, b"k", b"v", Durability::NoSync).unwrap();
            kept.put(i, b"k", b"v", Durability::NoSync).unwrap();
        }
        dir.checkpoint(true).unwrap();
        copy_tree(&path.join("keyspaces"), &saved);
        drop(gone);
        dir.drop_tree("gone").unwrap();
    }
    // What a crash mid-drop leaves: the folder back, without `current`.
    let before: Vec<_> = fs::read_dir(&saved)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    let dropped = before
        .iter()
        .find(|f| !folders(&path).contains(*f))
        .expect("the dropped tree's folder is gone")
        .clone();
    let folder = path.join("keyspaces").join(&dropped);
    copy_tree(&saved.join(&dropped), &folder);
    fs::remove_file(folder.join("current")).unwrap();
    assert!(
        fs::read_dir(folder.join("tables"))
            .unwrap()
            .next()
            .is_some()
    );

    let dir = DataDir::open(&path, FsyncPolicy::No).expect("a drop to finish is no damage");
    assert!(!dir.has_tree("gone"));
    assert!(!folder.exists(), "the engine finished the drop");
    let kept = dir.tree("kept").unwrap();
    assert_eq!(kept.get(7, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    let markers = fs::read_dir(&path)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dropping-"))
        .count();
    assert_eq!(markers, 0, "the finished drop's marker is gone");
}

#[test]
fn atomically_writes_all_staged_writes_or_none() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), FsyncPolicy::No).unwrap();
    let (a, b) = (dir.tree("a").unwrap(), dir.tree("b").unwrap());
    let failed: Result<(), &str> = dir
        .atomically(Durability::NoSync, || {
            a.put(1, b"k", b"1", Durability::NoSync).unwrap();
            b.put(2, b"k", b"2", Durability::NoSync).unwrap();
            assert_eq!(a.get(1, b"k").unwrap(), None, "staged, not written");
            Err("refused")
        })
        .unwrap();
    assert_eq!(failed, Err("refused"));
    assert_eq!(
        (a.get(1, b"k").unwrap(), b.get(2, b"k").unwrap()),
        (None, None)
    );
    dir.atomically(Durability::NoSync, || {
        a.put(1, b"k", b"1", Durability::NoSync)?;
        // A nested group joins this one.
        dir.atomically(Durability::NoSync, || b.delete(2, b"k", Durability::NoSync))??;
        b.put(3, b"k", b"3", Durability::NoSync)
    })
    .unwrap()
    .unwrap();
    assert_eq!(a.get(1, b"k").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(b.get(3, b"k").unwrap().as_deref(), Some(&b"3"[..]));
    // Outside a group, writes go straight through again.
    a.put(9, b"k", b"9", Durability::NoSync).unwrap();
    assert!(a.get(9, b"k").unwrap().is_some());
}

/// Under `always` the applier makes a spare log file as the directory
/// opens, the next write moves the log into it, and another is made;
/// under `everysec` there is none (the log files grow, as before).
#[test]
fn only_always_keeps_a_spare_log_file() {
    use crate::oplog::{DIR, ROTATE_AT};
    let spare_of = |path: &Path| path.join(DIR).join("spare");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "no {what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("always");
    let dir = DataDir::open(&path, FsyncPolicy::Always).unwrap();
    wait_for("first spare", &|| spare_of(&path).exists());
    let tree = dir.tree("t").unwrap();
    tree.put(1, b"k", b"v", Durability::Fsync).unwrap();
    let newest = crate::oplog::files(&path.join(DIR))
        .unwrap()
        .pop()
        .unwrap()
        .1;
    assert_eq!(
        fs::metadata(&newest).unwrap().len(),
        ROTATE_AT,
        "the write went into the spare"
    );
    wait_for("second spare", &|| spare_of(&path).exists());
    drop((tree, dir));
    assert!(!spare_of(&path).exists(), "a clean close deletes the spare");

    let path = tmp.path().join("everysec");
    let dir = DataDir::open(&path, FsyncPolicy::EverySec).unwrap();
    let tree = dir.tree("t").unwrap();
    tree.put(1, b"k", b"v", Durability::NoSync).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!spare_of(&path).exists());
    let newest = crate::oplog::files(&path.join(DIR))
        .unwrap()
        .pop()
        .unwrap()
        .1;
    assert!(fs::metadata(&newest).unwrap().len() < 1024);
}

/// An open that races the close of the same directory on another thread
/// waits its turn: it is refused as locked until the close has finished,
/// clean-close record included, and never opens a half-closed directory
/// (the record would then be written over a journal the new open writes,
/// and the open after it refuse the directory as damaged). A CI run met
/// the race: a restart listed the write log's files while the previous
/// close deleted them.
#[test]
fn an_open_during_a_close_waits_for_the_close_to_finish() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("data");
    for round in 0..5u64 {
        let dir = DataDir::open(&path, FsyncPolicy::No).unwrap();
        let tree = dir.tree("t").unwrap();
        for i in 0..2_000u64 {
            let value = format!("{round}-{i}");
            tree.put(i, b"k", value.as_bytes(), Durability::NoSync)
                .unwrap();
        }
        drop(tree);
        assert!(DataDir::in_use(&path));
        let closing = std::thread::spawn(move || drop(dir));
        let reopened = loop {
            match DataDir::open(&path, FsyncPolicy::No) {
                Err(PersistError::Locked { .. }) => std::thread::sleep(Duration::from_millis(1)),
                other => break other.expect("opens once the close has finished"),
            }
        };
        closing.join().unwrap();
        assert!(DataDir::in_use(&path), "the reopened directory is held");
        assert!(
            !path.join(guard::CLEAN_CLOSE).exists(),
            "round {round}: a record of a clean close while the directory is open"
        );
        let tree = reopened.tree("t").unwrap();
        let want = format!("{round}-1999");
        assert_eq!(
            tree.get(1999, b"k").unwrap().as_deref(),
            Some(want.as_bytes())
        );
        drop((tree, reopened));
        assert!(!DataDir::in_use(&path), "a finished close holds nothing");
        // The next round's open checks this close's record.
    }
    DataDir::open(&path, FsyncPolicy::No).expect("the last close left a sound directory");
}
