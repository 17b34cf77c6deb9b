//! redb against fjall on ringkv's storage workload, each against the other
//! in one run.
//!
//! Keys are `token (u64 big-endian) || key bytes`, so entries are ordered by
//! `(token, key)`; values are 100 bytes. Each criterion group measures both
//! engines back to back (interleaved pairs), so ratios come from the same
//! minute of the same machine even when absolute numbers drift with load.
//! Workloads criterion does not fit (delete a token range, space after
//! overwrites, reopen time, bytes per key) are plain timed loops printed as
//! a table at the end.
//!
//! ```sh
//! cargo bench -p ringkv-persist --bench engines
//! ```
//!
//! Data lives in temporary directories under `$TMPDIR`, removed afterwards.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group};
use fjall::{KeyspaceCreateOptions, PersistMode};
use redb::{Durability, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Bytes of a value.
const VALUE_LEN: usize = 100;
/// Keys preloaded for reads, scans and range deletes.
const PRELOAD: u64 = 100_000;
/// Keys for the reopen and bytes-per-key measurement.
const BIG: u64 = 1_000_000;
/// One copy batch of a redistribution.
const BATCH: u64 = 64;

/// A well-spread token for key number `i` (splitmix64), standing in for
/// `key_token`, which hashes the key.
fn token(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `token(i) || "key:" || i`.
fn key(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&token(i).to_be_bytes());
    k.extend_from_slice(format!("key:{i}").as_bytes());
    k
}

/// The 100-byte value of key number `i`: pseudo-random, so that fjall's
/// block compression (lz4) gains no more than it would on real data.
fn value(i: u64) -> Vec<u8> {
    (0..VALUE_LEN as u64 / 8)
        .flat_map(|j| token(i.wrapping_mul(31).wrapping_add(j)).to_le_bytes())
        .chain([0; VALUE_LEN % 8])
        .collect()
}

/// The smallest and one past the largest encoded key of tokens
/// `[lo, lo + 2^64/16)`: 1/16 of the token space.
fn sixteenth(part: u64) -> (Vec<u8>, Vec<u8>) {
    let lo = part << 60;
    let start = lo.to_be_bytes().to_vec();
    let end = if part == 15 {
        vec![0xff; 9]
    } else {
        ((part + 1) << 60).to_be_bytes().to_vec()
    };
    (start, end)
}

/// Bytes allocated on disk under `dir` (st_blocks, so preallocated but
/// unwritten space does not count).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("bench dir is readable") {
        let entry = entry.expect("bench dir entry is readable");
        let meta = entry.metadata().expect("bench file metadata is readable");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// The operations measured, implemented by both engines.
trait Engine {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// One write transaction holding `entries`, fsynced when `sync`.
    fn put_batch(&self, entries: &[(Vec<u8>, Vec<u8>)], sync: bool);
    fn get(&self, key: &[u8]) -> Option<usize>;
    /// Entries with keys in `[start, end)`, counted.
    fn scan(&self, start: &[u8], end: &[u8]) -> usize;
    /// Removes the entries with keys in `[start, end)`; returns how many.
    fn delete_range(&self, start: &[u8], end: &[u8]) -> usize;
    /// Whatever the engine offers to give space back.
    fn compact(&mut self);
    /// Makes the data durable in its final structure, so that a reopen
    /// replays nothing.
    fn checkpoint(&self);
}

struct Redb(redb::Database);

impl Engine for Redb {
    const NAME: &'static str = "redb";
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("data.redb")).expect("redb opens");
        let tx = db.begin_write().expect("redb write tx");
        tx.open_table(TABLE).expect("redb table");
        tx.commit().expect("redb commit");
        Redb(db)
    }
    fn put_batch(&self, entries: &[(Vec<u8>, Vec<u8>)], sync: bool) {
        let mut tx = self.0.begin_write().expect("redb write tx");
        let durability = if sync {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).expect("redb durability");
        {
            let mut table = tx.open_table(TABLE).expect("redb table");
            for (k, v) in entries {
                table
                    .insert(k.as_slice(), v.as_slice())
                    .expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    }
    fn get(&self, key: &[u8]) -> Option<usize> {
        let tx = self.0.begin_read().expect("redb read tx");
        let table = tx.open_table(TABLE).expect("redb table");
        table.get(key).expect("redb get").map(|v| v.value().len())
    }
    fn scan(&self, start: &[u8], end: &[u8]) -> usize {
        let tx = self.0.begin_read().expect("redb read tx");
        let table = tx.open_table(TABLE).expect("redb table");
        let mut n = 0;
        for item in table.range(start..end).expect("redb range") {
            let (k, v) = item.expect("redb entry");
            black_box((k.value(), v.value()));
            n += 1;
        }
        n
    }
    fn delete_range(&self, start: &[u8], end: &[u8]) -> usize {
        let mut tx = self.0.begin_write().expect("redb write tx");
        tx.set_durability(Durability::None)
            .expect("redb durability");
        let mut n = 0;
        {
            let mut table = tx.open_table(TABLE).expect("redb table");
            table
                .retain_in(start..end, |_, _| {
                    n += 1;
                    false
                })
                .expect("redb retain_in");
        }
        tx.commit().expect("redb commit");
        n
    }
    fn compact(&mut self) {
        // A durable commit first: compaction only frees pages of durable
        // transactions.
        self.checkpoint();
        while self.0.compact().expect("redb compact") {}
    }
    fn checkpoint(&self) {
        self.put_batch(&[], true);
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    const NAME: &'static str = "fjall";
    fn open(dir: &Path) -> Self {
        // The journal cap `PersistentEngine` sets (fjall's least): it bounds
        // replay on reopen and the space of not yet flushed versions.
        let db = fjall::Database::builder(dir.join("fjall"))
            .max_journaling_size(64 * 1024 * 1024)
            .open()
            .expect("fjall opens");
        let ks = db
            .keyspace("kv", KeyspaceCreateOptions::default)
            .expect("fjall keyspace");
        Fjall { db, ks }
    }
    fn put_batch(&self, entries: &[(Vec<u8>, Vec<u8>)], sync: bool) {
        // The default batch durability writes the journal to OS buffers:
        // it survives a process crash, not a power cut.
        let mut batch = self.db.batch();
        for (k, v) in entries {
            batch.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        batch.commit().expect("fjall commit");
        if sync {
            self.db
                .persist(PersistMode::SyncData)
                .expect("fjall persist");
        }
    }
    fn get(&self, key: &[u8]) -> Option<usize> {
        self.ks.get(key).expect("fjall get").map(|v| v.len())
    }
    fn scan(&self, start: &[u8], end: &[u8]) -> usize {
        let mut n = 0;
        for guard in self.ks.range(start..end) {
            let (k, v) = guard.into_inner().expect("fjall entry");
            black_box((k, v));
            n += 1;
        }
        n
    }
    fn delete_range(&self, start: &[u8], end: &[u8]) -> usize {
        // No range tombstone in the public API: read the keys, then one
        // batch of point tombstones.
        let mut batch = self.db.batch();
        let mut n = 0;
        for guard in self.ks.range(start..end) {
            let k = guard.key().expect("fjall key");
            batch.remove(&self.ks, k);
            n += 1;
        }
        batch.commit().expect("fjall commit");
        n
    }
    fn compact(&mut self) {
        // Overwritten versions live in the journal and memtable until a
        // flush; then a major compaction merges the tables.
        self.checkpoint();
        self.ks.major_compact().expect("fjall compact");
    }
    fn checkpoint(&self) {
        self.db
            .persist(PersistMode::SyncAll)
            .expect("fjall persist");
        self.ks.rotate_memtable_and_wait().expect("fjall flush");
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<(Vec<u8>, Vec<u8>)> {
    range.map(|i| (key(i), value(i))).collect()
}

/// `n` keys in batches of 1000, then an fsync.
fn preload<E: Engine>(e: &E, n: u64) {
    for start in (0..n).step_by(1000) {
        e.put_batch(&entries(start..(start + 1000).min(n)), false);
    }
    e.put_batch(&[], true);
}

fn single_puts<E: Engine>(c: &mut Criterion, group: &str, sync: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = E::open(dir.path());
    let mut i = 0u64;
    c.benchmark_group(group).bench_function(E::NAME, |b| {
        b.iter(|| {
            i += 1;
            e.put_batch(&entries(i..i + 1), sync);
        })
    });
}

fn batched_puts<E: Engine>(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = E::open(dir.path());
    let mut i = 0u64;
    c.benchmark_group("put_batch_64_nosync")
        .throughput(criterion::Throughput::Elements(BATCH))
        .bench_function(E::NAME, |b| {
            b.iter_batched(
                || {
                    i += BATCH;
                    entries(i..i + BATCH)
                },
                |batch| e.put_batch(&batch, false),
                BatchSize::SmallInput,
            )
        });
}

fn reads<E: Engine>(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = E::open(dir.path());
    preload(&e, PRELOAD);
    let mut i = 0u64;
    c.benchmark_group("get").bench_function(E::NAME, |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOAD;
            assert!(e.get(&key(i)).is_some(), "preloaded key {i} is present");
        })
    });
    let mut part = 0u64;
    c.benchmark_group("scan_1_16_of_100k")
        .throughput(criterion::Throughput::Elements(PRELOAD / 16))
        .bench_function(E::NAME, |b| {
            b.iter(|| {
                part = (part + 1) % 16;
                let (s, t) = sixteenth(part);
                black_box(e.scan(&s, &t))
            })
        });
}

/// A criterion group for each workload, both engines in it back to back.
fn engines(c: &mut Criterion) {
    single_puts::<Redb>(c, "put_single_nosync", false);
    single_puts::<Fjall>(c, "put_single_nosync", false);
    single_puts::<Redb>(c, "put_single_fsync", true);
    single_puts::<Fjall>(c, "put_single_fsync", true);
    batched_puts::<Redb>(c);
    batched_puts::<Fjall>(c);
    reads::<Redb>(c);
    reads::<Fjall>(c);
}

/// One column of the printed table.
#[derive(Default)]
struct Row {
    delete_range_keys_per_s: f64,
    overwrite_secs: f64,
    after_overwrite: u64,
    after_compact: u64,
    load_1m_secs: f64,
    loaded_bytes_per_key: f64,
    reopen_after_load: Duration,
    checkpointed_bytes_per_key: f64,
    reopen_after_checkpoint: Duration,
}

/// Opens `dir` and reads one key, timed.
fn reopen<E: Engine>(dir: &Path) -> (E, Duration) {
    let start = Instant::now();
    let e = E::open(dir);
    assert!(e.get(&key(BIG / 2)).is_some(), "key survives reopen");
    (e, start.elapsed())
}

/// Bytes per key of `BIG` keys in `dir`, once background work (journal
/// deletion) has had a moment.
fn per_key(dir: &Path) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    disk_bytes(dir) as f64 / BIG as f64
}

/// One measure of [`Row`] for `E`: 0 deletes token ranges, 1 overwrites,
/// 2 loads and reopens 1M keys; the others are left zero.
fn timed<E: Engine>(stage: u8, row: &mut Row) {
    match stage {
        0 => row.delete_range_keys_per_s = delete_ranges::<E>(),
        1 => (row.overwrite_secs, row.after_overwrite, row.after_compact) = overwrites::<E>(),
        _ => big::<E>(row),
    }
}

fn delete_ranges<E: Engine>() -> f64 {
    // Delete a token range: 16 ranges, each 1/16 of 100k keys, timed
    // together.
    let dir = tempfile::tempdir().expect("temp dir");
    let e = E::open(dir.path());
    preload(&e, PRELOAD);
    let start = Instant::now();
    let mut deleted = 0;
    for part in 0..16 {
        let (s, t) = sixteenth(part);
        deleted += e.delete_range(&s, &t);
    }
    let delete_range_keys_per_s = deleted as f64 / start.elapsed().as_secs_f64();
    assert_eq!(deleted as u64, PRELOAD, "every preloaded key deleted");
    delete_range_keys_per_s
}

/// The same 100k keys written ten times, in copy batches: seconds, bytes
/// on disk after, bytes on disk after compaction.
fn overwrites<E: Engine>() -> (f64, u64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut e = E::open(dir.path());
    let all = entries(0..PRELOAD);
    let start = Instant::now();
    for _ in 0..10 {
        for chunk in all.chunks(BATCH as usize) {
            e.put_batch(chunk, false);
        }
    }
    e.put_batch(&[], true);
    let overwrite_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let after_overwrite = disk_bytes(dir.path());
    e.compact();
    std::thread::sleep(Duration::from_millis(500));
    let after_compact = disk_bytes(dir.path());
    (overwrite_secs, after_overwrite, after_compact)
}

fn big<E: Engine>(row: &mut Row) {
    // 1M keys: load, close, reopen and read one key; then again after a
    // checkpoint (fjall: memtable flushed, journal dropped).
    let dir = tempfile::tempdir().expect("temp dir");
    let e = E::open(dir.path());
    let start = Instant::now();
    preload(&e, BIG);
    let load_1m_secs = start.elapsed().as_secs_f64();
    drop(e);
    let loaded_bytes_per_key = per_key(dir.path());
    let (e, reopen_after_load) = reopen::<E>(dir.path());
    e.checkpoint();
    drop(e);
    let checkpointed_bytes_per_key = per_key(dir.path());
    let (e, reopen_after_checkpoint) = reopen::<E>(dir.path());
    drop(e);
    row.load_1m_secs = load_1m_secs;
    row.loaded_bytes_per_key = loaded_bytes_per_key;
    row.reopen_after_load = reopen_after_load;
    row.checkpointed_bytes_per_key = checkpointed_bytes_per_key;
    row.reopen_after_checkpoint = reopen_after_checkpoint;
}

fn table() {
    // Each measure for both engines back to back.
    let (mut redb, mut fjall) = (Row::default(), Row::default());
    for stage in 0..3 {
        timed::<Redb>(stage, &mut redb);
        timed::<Fjall>(stage, &mut fjall);
    }
    let mb = |b: u64| b as f64 / 1e6;
    println!("\n| measure | redb | fjall |");
    println!("|---|---|---|");
    println!(
        "| delete 1/16 token ranges of 100k keys (keys/s) | {:.0} | {:.0} |",
        redb.delete_range_keys_per_s, fjall.delete_range_keys_per_s
    );
    println!(
        "| overwrite 100k keys x10 in batches of 64 (s) | {:.2} | {:.2} |",
        redb.overwrite_secs, fjall.overwrite_secs
    );
    println!(
        "| on disk after the overwrites (MB) | {:.1} | {:.1} |",
        mb(redb.after_overwrite),
        mb(fjall.after_overwrite)
    );
    println!(
        "| on disk after compaction (MB) | {:.1} | {:.1} |",
        mb(redb.after_compact),
        mb(fjall.after_compact)
    );
    println!(
        "| load 1M keys, batches of 1000 (s) | {:.2} | {:.2} |",
        redb.load_1m_secs, fjall.load_1m_secs
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| bytes on disk per key, 1M keys just loaded | {:.0} | {:.0} |",
        redb.loaded_bytes_per_key, fjall.loaded_bytes_per_key
    );
    println!(
        "| reopen 1M keys just loaded + one get (ms) | {:.1} | {:.1} |",
        ms(redb.reopen_after_load),
        ms(fjall.reopen_after_load)
    );
    println!(
        "| bytes on disk per key, 1M keys after a checkpoint | {:.0} | {:.0} |",
        redb.checkpointed_bytes_per_key, fjall.checkpointed_bytes_per_key
    );
    println!(
        "| reopen 1M keys after a checkpoint + one get (ms) | {:.1} | {:.1} |",
        ms(redb.reopen_after_checkpoint),
        ms(fjall.reopen_after_checkpoint)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = engines
}

fn main() {
    benches();
    table();
    Criterion::default().configure_from_args().final_summary();
}
