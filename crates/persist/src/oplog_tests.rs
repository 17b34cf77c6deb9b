//! The write log's tests.

use super::replay::decode;
use super::*;
use fjall::KeyspaceCreateOptions;

fn db(dir: &Path) -> (Database, Keyspace) {
    let db = Database::builder(dir).open().unwrap();
    let ks = db.keyspace("t.a", KeyspaceCreateOptions::default).unwrap();
    (db, ks)
}

fn put(ks: &Keyspace, k: &str, v: &str) -> Op {
    (ks.clone(), k.into(), Some(v.into()))
}

fn get(ks: &Keyspace, k: &str) -> Option<Vec<u8>> {
    ks.get(k).unwrap().map(|v| v.to_vec())
}

/// The records' checksum is CRC-32C whatever table layout computes it:
/// logs written before stay readable.
#[test]
fn the_checksum_is_crc32c() {
    assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
    let bytewise = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let data: Vec<u8> = (0..200u32).map(|i| (i * 31 + 7) as u8).collect();
    for n in 0..data.len() {
        assert_eq!(
            CRC.checksum(&data[..n]),
            bytewise.checksum(&data[..n]),
            "{n} bytes"
        );
    }
}

#[test]
fn records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, ks) = db(dir.path());
    let ops = vec![put(&ks, "k1", "v1"), (ks.clone(), b"k2".to_vec(), None)];
    let mut out = Vec::new();
    encode(&ops, &mut out);
    let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(len, out.len() - HEADER);
    let decoded = decode(&out[HEADER..]).unwrap();
    assert_eq!(decoded.len(), 2);
    assert_eq!(
        (decoded[0].tree, decoded[0].key, decoded[0].value),
        ("t.a", &b"k1"[..], Some(&b"v1"[..]))
    );
    assert_eq!((decoded[1].key, decoded[1].value), (&b"k2"[..], None));
    assert!(decode(&out[HEADER..out.len() - 1]).is_none(), "cut short");
}

#[test]
fn apply_keeps_the_last_write_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ks) = db(dir.path());
    let log = OpLog::open(dir.path(), &db, false).unwrap();
    log.append(vec![put(&ks, "a", "1"), put(&ks, "b", "1")])
        .unwrap();
    log.append(vec![put(&ks, "a", "2")]).unwrap();
    log.append(vec![(ks.clone(), b"b".to_vec(), None)]).unwrap();
    log.append(vec![put(&ks, "a", "3"), put(&ks, "c", "1")])
        .unwrap();
    assert_eq!(get(&ks, "a"), None, "queued, not yet in the engine");
    assert_eq!(log.state.lock().queue.len(), 3, "one queued write per key");
    // What INFO reports as the log's buffer: the queued writes, each key
    // once (a (key, value) of 1 and 1 bytes, a delete of 1, 32 each).
    assert_eq!(log.queued_bytes(), (2 + 1 + 2) + 3 * 32);
    log.apply(&db).unwrap();
    assert_eq!(log.queued_bytes(), 0, "nothing queued once applied");
    assert_eq!(get(&ks, "a").as_deref(), Some(&b"3"[..]));
    assert_eq!(get(&ks, "b"), None);
    assert_eq!(get(&ks, "c").as_deref(), Some(&b"1"[..]));
    assert_eq!(log.applied(), (1, 3));
}

/// A crash after the appends and before any apply: the next open finds
/// every record in the log and replays it; a torn last record is
/// dropped, and only that.
#[test]
fn open_replays_what_the_engine_missed_and_drops_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let file;
    {
        let (db, ks) = db(dir.path());
        let log = OpLog::open(dir.path(), &db, false).unwrap();
        log.append(vec![put(&ks, "a", "1"), put(&ks, "b", "1")])
            .unwrap();
        log.apply(&db).unwrap();
        // Applied but, as far as the log knows, maybe not durable in
        // the engine: replaying it again must change nothing.
        log.append(vec![(ks.clone(), b"a".to_vec(), None)]).unwrap();
        log.append(vec![put(&ks, "b", "2")]).unwrap();
        file = files(&log.dir).unwrap()[0].1.clone();
        drop(log); // a crash: the files stay, the queue is lost
    }
    // A torn last record: a header promising 20 bytes, then 1 of them.
    let mut bytes = fs::read(&file).unwrap();
    bytes.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 1]);
    fs::write(&file, &bytes).unwrap();

    let (db, ks) = db(dir.path());
    let log = OpLog::open(dir.path(), &db, false).unwrap();
    assert_eq!(get(&ks, "a"), None);
    assert_eq!(get(&ks, "b").as_deref(), Some(&b"2"[..]));
    assert_eq!(get(&ks, "c"), None);
    assert_eq!(files(&log.dir).unwrap().len(), 1, "replayed files deleted");
}

/// `a` in a closed file, `b` in the current one.
fn two_files(log: &OpLog, ks: &Keyspace) {
    log.append(vec![put(ks, "a", "1")]).unwrap();
    let mut st = log.state.lock();
    log.rotate(&mut st).unwrap();
    drop(st);
    log.append(vec![put(ks, "b", "1")]).unwrap();
}

#[test]
fn a_damaged_record_in_a_closed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, ks) = db(dir.path());
        let log = OpLog::open(dir.path(), &db, false).unwrap();
        two_files(&log, &ks);
        drop(log);
    }
    let (first, _) = {
        let found = files(&dir.path().join(DIR)).unwrap();
        (found[0].1.clone(), found.len())
    };
    let mut bytes = fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&first, &bytes).unwrap();
    let (db, _) = db(dir.path());
    let err = OpLog::open(dir.path(), &db, false).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains(&*first.to_string_lossy()), "{text}");
    assert!(text.contains("damaged record at byte 0"), "{text}");
}

#[test]
fn closed_files_go_once_the_engine_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ks) = db(dir.path());
    let log = OpLog::open(dir.path(), &db, false).unwrap();
    two_files(&log, &ks);
    assert_eq!(files(&log.dir).unwrap().len(), 2);
    log.apply(&db).unwrap();
    let left = files(&log.dir).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, 2);
}

/// Under `--fsync always` the log moves to a spare of written zeros as
/// soon as one is ready. A crash leaves the newest file ending in those
/// zeros, which replay reads as the end of its records (a torn record
/// over them is dropped); a closed file is cut to its records.
#[test]
fn a_prefilled_file_is_replayed_to_its_last_record() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, ks) = db(dir.path());
        let log = OpLog::open(dir.path(), &db, true).unwrap();
        log.append(vec![put(&ks, "a", "1")]).unwrap();
        assert!(log.make_spare().unwrap(), "a spare is made");
        assert!(!log.make_spare().unwrap(), "one spare at a time");
        assert!(log.dir.join(SPARE).exists());
        let newest = vec![
            vec![put(&ks, "b", "1")],
            vec![put(&ks, "c", "1"), (ks.clone(), b"a".to_vec(), None)],
        ];
        let mut end = 0;
        for ops in newest {
            let mut record = Vec::new();
            encode(&ops, &mut record);
            end += record.len() as u64;
            log.append(ops).unwrap();
        }
        assert!(
            !log.dir.join(SPARE).exists(),
            "the spare became the newest file"
        );
        let found = files(&log.dir).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        let mut first = Vec::new();
        encode(&[put(&ks, "a", "1")], &mut first);
        let closed = fs::metadata(&found[0].1).unwrap();
        assert_eq!(
            closed.len(),
            first.len() as u64,
            "a closed file is its records"
        );
        let newest = fs::metadata(&found[1].1).unwrap();
        assert_eq!(newest.len(), ROTATE_AT, "zeros past the records");
        assert!(
            newest.blocks() * 512 >= ROTATE_AT,
            "zeros written, not a hole"
        );
        assert_eq!(log.state.lock().len, end);
        // The zeros hold no record, not two million empty ones.
        let mut replayed = Replayed::default();
        replay(dir.path(), &found[1].1, true, &db, &mut replayed).unwrap();
        assert_eq!((replayed.records, replayed.ops), (2, 3));
        // A crash in the middle of the next record: its header and one
        // byte of 20 reached the disk.
        let file = OpenOptions::new().write(true).open(&found[1].1).unwrap();
        file.write_all_at(&[20, 0, 0, 0, 7, 7, 7, 7, 1], end)
            .unwrap();
        drop(log);
    }
    let (db, ks) = db(dir.path());
    let log = OpLog::open(dir.path(), &db, true).unwrap();
    assert_eq!(get(&ks, "a"), None, "deleted in the newest file");
    assert_eq!(get(&ks, "b").as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&ks, "c").as_deref(), Some(&b"1"[..]));
    assert_eq!(files(&log.dir).unwrap().len(), 1, "replayed files deleted");
}

/// Without `prefill` (`everysec`, `no`) no spare is made and files grow.
#[test]
fn no_spare_without_prefill() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ks) = db(dir.path());
    let log = OpLog::open(dir.path(), &db, false).unwrap();
    assert!(!log.make_spare().unwrap());
    log.append(vec![put(&ks, "a", "1")]).unwrap();
    assert!(!log.dir.join(SPARE).exists());
    let found = files(&log.dir).unwrap();
    assert_eq!(found.len(), 1);
    assert!(fs::metadata(&found[0].1).unwrap().len() < 100);
}

/// A spare half made when the process died is deleted at the next open,
/// and never replayed.
#[test]
fn a_spare_left_behind_is_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, ks) = db(dir.path());
        let log = OpLog::open(dir.path(), &db, true).unwrap();
        log.append(vec![put(&ks, "a", "1")]).unwrap();
        drop(log);
    }
    let log_dir = dir.path().join(DIR);
    // Not zeros: were it replayed, `b` would appear.
    let mut stray = Vec::new();
    let (db, ks) = db(dir.path());
    encode(&[put(&ks, "b", "1")], &mut stray);
    fs::write(log_dir.join(SPARE), &stray).unwrap();
    let _log = OpLog::open(dir.path(), &db, true).unwrap();
    assert!(!log_dir.join(SPARE).exists());
    assert_eq!(get(&ks, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&ks, "b"), None);
}
