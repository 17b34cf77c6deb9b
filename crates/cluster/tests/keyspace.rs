//! The key space: scan in token order (no key present for the whole scan
//! is missed while nodes join and leave), random_key, exists, flush,
//! dbsize.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{Cluster, ClusterConfig, Entry, ManualClock};

mod common;
use common::{SetOnDrop, churn_until, config_for, for_each_seed};

fn full_scan(c: &Cluster, count: usize) -> Vec<Bytes> {
    let (mut cursor, mut keys) = (0, Vec::new());
    loop {
        let page = c.scan(cursor, count, |_, _| true).unwrap();
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor == 0 {
            return keys;
        }
    }
}

#[test]
fn a_quiet_scan_returns_every_live_key_once_in_token_order() {
    let clock = Arc::new(ManualClock::new(0));
    let c = Cluster::new(ClusterConfig {
        clock: clock.clone().into(),
        ..config_for(1)
    })
    .unwrap();
    assert!(matches!(
        c.scan(0, 10, |_, _| true),
        Err(ringkv_cluster::ClusterError::NoNodes)
    ));
    for id in ["n1", "n2", "n3"] {
        c.add_node(id).unwrap();
    }
    assert!(full_scan(&c, 10).is_empty());
    assert_eq!(c.random_key().unwrap(), None);
    let mut want = BTreeSet::new();
    for i in 0..1_000u64 {
        let key = format!("k{i}");
        let expiry = (i % 10 == 0).then_some(5);
        c.put_entry(key.clone(), Entry::string("v").expiring(expiry))
            .unwrap();
        if expiry.is_none() {
            want.insert(Bytes::from(key));
        }
    }
    clock.set(6);
    for count in [1, 7, 100, 10_000] {
        let keys = full_scan(&c, count);
        let tokens: Vec<u64> = keys.iter().map(|k| ringkv_ring::key_token(k)).collect();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "count {count}: token order, no repeats"
        );
        assert_eq!(
            keys.into_iter().collect::<BTreeSet<_>>(),
            want,
            "count {count}"
        );
    }
    let matching = {
        let (mut cursor, mut n) = (0, 0);
        loop {
            let page = c.scan(cursor, 50, |k, _| k.starts_with(b"k1")).unwrap();
            n += page.keys.len();
            cursor = page.cursor;
            if cursor == 0 {
                break n;
            }
        }
    };
    assert_eq!(
        matching,
        want.iter().filter(|k| k.starts_with(b"k1")).count()
    );
    let random = c.random_key().unwrap().unwrap();
    assert!(want.contains(&random), "random_key returns a live key");
    assert!(c.exists(&random).unwrap());
    assert!(!c.exists(b"k0").unwrap(), "expired");
    assert_eq!(c.dbsize(), 1_000, "expired keys count until reclaimed");
}

/// Scans run while nodes join and leave and other keys come and go: each
/// scan returns every key that was present throughout.
fn scan_misses_nothing_under_churn(seed: u64) {
    let c = Cluster::new(config_for(seed)).unwrap();
    for id in ["n1", "n2"] {
        c.add_node(id).unwrap();
    }
    let stable: BTreeSet<Bytes> = (0..400)
        .map(|i| Bytes::from(format!("stable{i}")))
        .collect();
    for k in &stable {
        c.put(k.clone(), "v").unwrap();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| churn_until(&c, 3, &done));
        s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            while !done.load(Ordering::Acquire) {
                let key = format!("transient{}", rng.random_range(0..200));
                if rng.random_bool(0.5) {
                    c.put(key, "t").unwrap();
                } else {
                    c.delete(key).unwrap();
                }
            }
        });
        let _stop = SetOnDrop(&done);
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        for round in 0..15 {
            let count = rng.random_range(1..60);
            let got: BTreeSet<Bytes> = full_scan(&c, count).into_iter().collect();
            let missed: Vec<_> = stable.difference(&got).collect();
            assert!(
                missed.is_empty(),
                "seed {seed} round {round} count {count}: missed {missed:?}"
            );
        }
        done.store(true, Ordering::Release);
    });
}

#[test]
fn scan_returns_every_stable_key_while_nodes_join_and_leave() {
    for_each_seed(4, scan_misses_nothing_under_churn);
}

#[test]
fn flush_deletes_everything_and_nothing_comes_back() {
    for_each_seed(3, |seed| {
        let c = Cluster::new(config_for(seed)).unwrap();
        for id in ["n1", "n2"] {
            c.add_node(id).unwrap();
        }
        let mut model = BTreeMap::new();
        for i in 0..1_500u64 {
            c.put(format!("k{i}"), "v").unwrap();
            model.insert(format!("k{i}"), ());
        }
        // Flush while a node joins: keys in ranges being copied must not
        // be brought back by the copy.
        std::thread::scope(|s| {
            let join = s.spawn(|| c.add_node("n3").unwrap());
            let deleted = c.flush().unwrap();
            assert!(deleted <= 1_500);
            join.join().unwrap();
        });
        // A second flush catches what the first could not see yet, if any
        // key had been written since (none was): it finds nothing.
        assert_eq!(c.flush().unwrap(), 0, "seed {seed}");
        for k in model.keys() {
            assert_eq!(
                c.get(k.as_bytes()).unwrap(),
                None,
                "seed {seed}: {k} came back"
            );
        }
        c.remove_node("n1").unwrap();
        assert_eq!(c.dbsize(), 0, "seed {seed}");
        assert_eq!(c.stats().used_memory, 0, "seed {seed}");
        assert!(full_scan(&c, 100).is_empty());
    });
}

/// `scan_tokens` pages through a token interval: every live key in it once,
/// in token order, each page at most about the limit, the last page saying
/// it is done. (Each run reads into its own buffer: measuring a run's limit
/// against the whole page once looped forever on the second run.)
#[test]
fn scan_tokens_pages_through_an_interval_once_and_ends() {
    // On its own thread: the bug this guards against never returned.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pages_through_an_interval();
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("scan_tokens returned");
}

fn pages_through_an_interval() {
    let cluster = ringkv_cluster::Cluster::default();
    cluster.add_node("n1").unwrap();
    for i in 0..2000 {
        cluster.put(format!("k{i}"), "v").unwrap();
    }
    let (lo, hi) = (u64::MAX / 4, u64::MAX / 4 * 3);
    let want: Vec<Vec<u8>> = {
        let mut keys: Vec<(u64, Vec<u8>)> = (0..2000)
            .map(|i| format!("k{i}").into_bytes())
            .map(|k| (ringkv_ring::key_token(&k), k))
            .filter(|(t, _)| (lo..=hi).contains(t))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    };
    let mut got = Vec::new();
    let mut from = lo;
    let mut pages = 0;
    loop {
        let (entries, next) = cluster.scan_tokens(from..=hi, 100).unwrap();
        pages += 1;
        assert!(entries.len() <= 101, "a page of {}", entries.len());
        got.extend(entries.into_iter().map(|e| e.key.to_vec()));
        match next {
            Some(t) => from = t,
            None => break,
        }
        assert!(pages < 100, "scan_tokens does not advance");
    }
    assert_eq!(got, want);
}

/// A cluster of three nodes holding plain keys, keys sharing a hash tag
/// (many keys under one token) and keys expired by the clock.
fn mixed_keys() -> (Cluster, Vec<Bytes>) {
    let clock = Arc::new(ManualClock::new(0));
    let c = Cluster::new(ClusterConfig {
        clock: clock.clone().into(),
        ..config_for(1)
    })
    .unwrap();
    for id in ["n1", "n2", "n3"] {
        c.add_node(id).unwrap();
    }
    let mut live = Vec::new();
    for i in 0..1_500u64 {
        let key = match i % 5 {
            0 => format!("{{tag{}}}:{i}", i % 3),
            _ => format!("k{i}"),
        };
        let expiry = (i % 11 == 0).then_some(5);
        c.put_entry(key.clone(), Entry::string(format!("v{i}")).expiring(expiry))
            .unwrap();
        if expiry.is_none() {
            live.push(Bytes::from(key));
        }
    }
    clock.set(6);
    (c, live)
}

/// `visit_tokens` sees what `scan_tokens` returns, in the same order and
/// without copying, across nodes and stripes; a visitor that says stop
/// ends the call at the end of that token (all keys of a hash tag), and
/// the next call goes on right after it.
#[test]
fn visit_tokens_sees_what_scan_tokens_returns_and_stops_at_a_token_end() {
    let (c, _) = mixed_keys();
    let (lo, hi) = (u64::MAX / 8, u64::MAX / 8 * 7);
    let scanned: Vec<(u64, Bytes, Bytes)> = {
        let (mut out, mut from) = (Vec::new(), Some(lo));
        while let Some(t) = from {
            let (entries, next) = c.scan_tokens(t..=hi, 64).unwrap();
            out.extend(entries.into_iter().map(|e| (e.token, e.key, e.entry.value)));
            from = next;
        }
        out
    };
    assert!(
        scanned.len() > 500,
        "{} keys in the interval",
        scanned.len()
    );
    for stop_every in [None, Some(1), Some(7)] {
        let (mut got, mut from, mut calls) = (Vec::new(), Some(lo), 0);
        while let Some(t) = from {
            let mut seen = 0;
            from = c
                .visit_tokens(t..=hi, 64, &mut |token, key, entry| {
                    got.push((token, key.clone(), entry.value.clone()));
                    seen += 1;
                    stop_every.is_none_or(|n| seen % n != 0)
                })
                .unwrap();
            calls += 1;
            assert!(calls < 10_000, "visit_tokens does not advance");
        }
        assert_eq!(got, scanned, "stopping every {stop_every:?}");
    }
    // A stop on a tag's first key still visits the tag's other keys.
    let tag = scanned
        .iter()
        .find(|(_, k, _)| k.starts_with(b"{tag1}"))
        .unwrap()
        .0;
    let mut keys = Vec::new();
    c.visit_tokens(tag..=hi, 64, &mut |token, key, _| {
        keys.push((token, key.clone()));
        false
    })
    .unwrap();
    let tagged = scanned.iter().filter(|(t, _, _)| *t == tag).count();
    assert!(tagged > 50, "{tagged} keys under the tag");
    assert_eq!(keys.len(), tagged);
    assert!(keys.iter().all(|(t, _)| *t == tag));
}

/// `remove_tokens` deletes exactly the keys of doomed tokens, a chunk per
/// call, and leaves counts and memory as if those keys had been deleted
/// one by one.
#[test]
fn remove_tokens_deletes_exactly_the_doomed_keys_and_keeps_the_counts() {
    let (c, live) = mixed_keys();
    let doomed = |t: u64| (t >> 40).is_multiple_of(3);
    let (mut from, mut deleted, mut calls) = (Some(0), 0, 0);
    while let Some(t) = from {
        let (n, next) = c.remove_tokens(t..=u64::MAX, 16, doomed).unwrap();
        assert!(n <= 16 + 500, "a chunk of {n}");
        deleted += n;
        from = next;
        calls += 1;
        assert!(calls < 10_000, "remove_tokens does not advance");
    }
    let kept: BTreeSet<Bytes> = live
        .iter()
        .filter(|k| !doomed(ringkv_ring::key_token(k)))
        .cloned()
        .collect();
    assert!(!kept.is_empty() && kept.len() < live.len());
    assert_eq!(
        full_scan(&c, 100).into_iter().collect::<BTreeSet<_>>(),
        kept
    );
    // Counts and memory as if each doomed key, expired or not, had been
    // deleted one by one.
    let (reference, _) = mixed_keys();
    let mut gone = 0;
    for i in 0..1_500u64 {
        let key = match i % 5 {
            0 => format!("{{tag{}}}:{i}", i % 3),
            _ => format!("k{i}"),
        };
        if doomed(ringkv_ring::key_token(key.as_bytes())) {
            reference.delete(key).unwrap();
            gone += 1;
        }
    }
    assert_eq!(deleted, gone);
    assert_eq!(c.dbsize(), reference.dbsize());
    assert_eq!(c.dbsize() + deleted, 1_500);
    let stored: usize = c.stats().nodes.iter().map(|n| n.stored).sum();
    assert_eq!(stored, c.dbsize());
    assert_eq!(c.stats().used_memory, reference.stats().used_memory);
}

/// A store whose `take_range` fails once `armed` and `left` more calls
/// have succeeded.
struct FailingTake {
    mem: ringkv_cluster::MemStore,
    armed: Arc<AtomicBool>,
    left: Arc<std::sync::atomic::AtomicUsize>,
}

impl ringkv_cluster::Store for FailingTake {
    fn get(&self, t: u64, k: &[u8]) -> Result<Option<Entry>, ringkv_cluster::StoreError> {
        self.mem.get(t, k)
    }
    fn put(
        &mut self,
        t: u64,
        k: Bytes,
        e: Entry,
    ) -> Result<Option<Entry>, ringkv_cluster::StoreError> {
        self.mem.put(t, k, e)
    }
    fn delete(&mut self, t: u64, k: &[u8]) -> Result<Option<Entry>, ringkv_cluster::StoreError> {
        self.mem.delete(t, k)
    }
    fn scan(
        &self,
        r: std::ops::RangeInclusive<u64>,
        a: Option<u64>,
        l: usize,
        o: &mut Vec<ringkv_cluster::StoredEntry>,
    ) -> Result<(), ringkv_cluster::StoreError> {
        self.mem.scan(r, a, l, o)
    }
    fn take_range(
        &mut self,
        r: std::ops::RangeInclusive<u64>,
        l: usize,
        o: &mut Vec<ringkv_cluster::StoredEntry>,
    ) -> Result<usize, ringkv_cluster::StoreError> {
        if self.armed.load(Ordering::SeqCst)
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Err(ringkv_cluster::StoreError::Engine("injected".into()));
        }
        self.mem.take_range(r, l, o)
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
}

/// A chunk of `remove_tokens` whose second run fails to delete: the
/// call fails, and the first run, deleted, is counted as deleted
/// (`DBSIZE` agrees with what the store holds).
#[test]
fn a_chunk_that_fails_midway_counts_what_it_deleted() {
    let armed = Arc::new(AtomicBool::new(false));
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let (a, l) = (armed.clone(), left.clone());
    let factory: ringkv_cluster::StoreFactory = Arc::new(move |_, _| {
        Ok(Box::new(FailingTake {
            mem: ringkv_cluster::MemStore::new(),
            armed: a.clone(),
            left: l.clone(),
        }) as Box<dyn ringkv_cluster::Store>)
    });
    let config = ClusterConfig {
        stripes: 1,
        ..ClusterConfig::default()
    };
    let c = Cluster::with_store(config, factory).unwrap();
    c.add_node("n1").unwrap();
    for i in 0..200 {
        c.put(format!("k{i}"), "v").unwrap();
    }
    // Every other token doomed: many runs in one chunk.
    let (entries, _) = c.scan_tokens(0..=u64::MAX, 1_000).unwrap();
    let doomed: BTreeSet<u64> = entries.iter().skip(1).step_by(2).map(|e| e.token).collect();
    armed.store(true, Ordering::SeqCst);
    assert!(
        c.remove_tokens(0..=u64::MAX, 64, |t| doomed.contains(&t))
            .is_err()
    );
    armed.store(false, Ordering::SeqCst);
    let (left_now, _) = c.scan_tokens(0..=u64::MAX, 1_000).unwrap();
    assert_eq!(left_now.len(), 199, "one run deleted before the failure");
    assert_eq!(c.dbsize(), left_now.len());
}
