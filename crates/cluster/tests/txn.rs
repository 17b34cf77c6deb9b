//! Multi-key transactions: atomic and isolated across nodes, also while
//! ranges move; WATCH through versions, including expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{Cluster, ClusterConfig, Entry, ManualClock};

mod common;
use common::{SetOnDrop, churn_until, config_for, for_each_seed};

fn num(e: Option<&Entry>) -> i64 {
    e.map_or(0, |e| {
        std::str::from_utf8(&e.value).unwrap().parse().unwrap()
    })
}

const ACCOUNTS: usize = 16;
const TOTAL: i64 = 1_000 * ACCOUNTS as i64;

fn account(i: usize) -> Bytes {
    Bytes::from(format!("acct{i}"))
}

/// Transfers between random accounts from several threads, while nodes
/// join and leave; concurrent audits read every account in one
/// transaction and always see the same total.
fn transfers_keep_the_sum(seed: u64) {
    let c = Cluster::new(config_for(seed)).unwrap();
    for id in ["n1", "n2", "n3"] {
        c.add_node(id).unwrap();
    }
    for i in 0..ACCOUNTS {
        c.put(account(i), "1000").unwrap();
    }
    let done = AtomicBool::new(false);
    let audits = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| churn_until(&c, 3, &done));
        s.spawn(|| {
            let all: Vec<Bytes> = (0..ACCOUNTS).map(account).collect();
            while !done.load(Ordering::Acquire) {
                let sum = c
                    .transaction(all.clone(), |txn| {
                        all.iter().map(|k| num(txn.get(k))).sum::<i64>()
                    })
                    .unwrap();
                assert_eq!(sum, TOTAL, "seed {seed}: an audit saw half a transfer");
                audits.fetch_add(1, Ordering::Relaxed);
            }
        });
        let _stop = SetOnDrop(&done);
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let c = &c;
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed ^ (t << 8));
                    for _ in 0..600 {
                        let (a, b) = (rng.random_range(0..ACCOUNTS), rng.random_range(0..ACCOUNTS));
                        let amount = rng.random_range(1..50);
                        c.transaction([account(a), account(b)], |txn| {
                            let from = num(txn.get(&account(a)));
                            txn.put(&account(a), Entry::string((from - amount).to_string()));
                            let to = num(txn.get(&account(b)));
                            txn.put(&account(b), Entry::string((to + amount).to_string()));
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    let sum: i64 = (0..ACCOUNTS)
        .map(|i| num(c.get_entry(&account(i)).unwrap().as_ref()))
        .sum();
    assert_eq!(sum, TOTAL, "seed {seed}");
    assert_eq!(c.dbsize(), ACCOUNTS, "seed {seed}: counts exact");
    assert!(audits.load(Ordering::Relaxed) > 0);
}

#[test]
fn concurrent_transfers_keep_the_sum_under_churn() {
    for_each_seed(3, transfers_keep_the_sum);
}

/// WATCH-style optimistic increments: read the version, then commit only
/// if it did not change. Every committed increment counts once.
#[test]
fn watch_races_lose_no_increment() {
    for_each_seed(2, |seed| {
        let c = Cluster::new(config_for(seed)).unwrap();
        for id in ["n1", "n2"] {
            c.add_node(id).unwrap();
        }
        let committed = AtomicU64::new(0);
        let aborted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..300 {
                        loop {
                            let watched = c.version(b"counter").unwrap();
                            let seen = c.get_entry(b"counter").unwrap();
                            // Between the read and EXEC another thread may
                            // commit: then the versions differ.
                            std::thread::yield_now();
                            let ok = c
                                .transaction(["counter"], |txn| {
                                    if txn.version(b"counter") != watched {
                                        return false;
                                    }
                                    let n = num(seen.as_ref()) + 1;
                                    txn.put(b"counter", Entry::string(n.to_string()));
                                    true
                                })
                                .unwrap();
                            if ok {
                                committed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            aborted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(
            num(c.get_entry(b"counter").unwrap().as_ref()),
            1_200,
            "seed {seed}"
        );
        assert_eq!(committed.load(Ordering::Relaxed), 1_200);
    });
}

#[test]
fn a_watched_key_that_expires_counts_as_changed() {
    let clock = Arc::new(ManualClock::new(0));
    let c = Cluster::new(ClusterConfig {
        clock: clock.clone().into(),
        ..config_for(0)
    })
    .unwrap();
    c.add_node("n1").unwrap();
    c.put_entry("k", Entry::string("v").expiring(Some(10)))
        .unwrap();
    let watched = c.version(b"k").unwrap();
    assert!(watched.is_some());
    let unchanged = c
        .transaction(["k"], |txn| txn.version(b"k") == watched)
        .unwrap();
    assert!(unchanged, "nothing happened yet");
    clock.set(11);
    let unchanged = c
        .transaction(["k"], |txn| txn.version(b"k") == watched)
        .unwrap();
    assert!(!unchanged, "expiry is a change");
    // A write of the same value is a change too.
    c.put("j", "v").unwrap();
    let watched = c.version(b"j").unwrap();
    c.put("j", "v").unwrap();
    assert!(
        !c.transaction(["j"], |txn| txn.version(b"j") == watched)
            .unwrap()
    );
}

#[test]
fn a_transaction_without_writes_changes_nothing_and_deletes_count() {
    let c = Cluster::default();
    c.add_node("n1").unwrap();
    c.add_node("n2").unwrap();
    c.put("a", "1").unwrap();
    let v = c.version(b"a").unwrap();
    c.transaction(["a", "b", "a"], |txn| {
        assert!(txn.get(b"b").is_none());
    })
    .unwrap();
    assert_eq!(c.version(b"a").unwrap(), v);
    // RENAME a -> b.
    c.transaction(["a", "b"], |txn| {
        let e = txn.get(b"a").cloned().unwrap();
        assert!(txn.delete(b"a"));
        txn.put(b"b", e);
        assert!(txn.get(b"a").is_none(), "reads see own writes");
    })
    .unwrap();
    assert_eq!(c.get(b"a").unwrap(), None);
    assert_eq!(c.get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(c.dbsize(), 1);
}

/// Writers put every account at once with `put_all` (each batch one
/// generation, its keys in a shuffled order, one key twice), while nodes
/// join and leave; audits read every account in one transaction and must
/// see one generation, never a batch half applied.
fn put_all_is_all_or_nothing(seed: u64) {
    let c = Cluster::new(config_for(seed)).unwrap();
    for id in ["n1", "n2", "n3"] {
        c.add_node(id).unwrap();
    }
    let generation = |g: u64| Entry::string(g.to_string());
    c.put_all((0..ACCOUNTS).map(|i| (account(i), generation(0))).collect())
        .unwrap();
    let done = AtomicBool::new(false);
    let (audits, batches) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| churn_until(&c, 3, &done));
        s.spawn(|| {
            let all: Vec<Bytes> = (0..ACCOUNTS).map(account).collect();
            while !done.load(Ordering::Acquire) {
                let seen: Vec<i64> = c
                    .transaction(all.clone(), |txn| {
                        all.iter().map(|k| num(txn.get(k))).collect()
                    })
                    .unwrap();
                assert!(
                    seen.iter().all(|&v| v == seen[0]),
                    "seed {seed}: an audit saw a batch half applied: {seen:?}"
                );
                audits.fetch_add(1, Ordering::Relaxed);
            }
        });
        let _stop = SetOnDrop(&done);
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let (c, batches) = (&c, &batches);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed ^ (t << 8));
                    for round in 1..=150u64 {
                        let g = round * 2 + t;
                        let mut pairs: Vec<(Bytes, Entry)> =
                            (0..ACCOUNTS).map(|i| (account(i), generation(g))).collect();
                        // A key written twice: the later pair wins.
                        let twice = rng.random_range(0..ACCOUNTS);
                        pairs.insert(0, (account(twice), generation(g + 1_000_000)));
                        for i in (2..pairs.len()).rev() {
                            pairs.swap(i, rng.random_range(1..=i));
                        }
                        c.put_all(pairs).unwrap();
                        batches.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
    });
    let last: Vec<i64> = (0..ACCOUNTS)
        .map(|i| num(c.get_entry(&account(i)).unwrap().as_ref()))
        .collect();
    assert!(
        last.iter().all(|&v| v == last[0] && v < 1_000_000),
        "seed {seed}: {last:?}"
    );
    assert_eq!(c.dbsize(), ACCOUNTS, "seed {seed}: counts exact");
    assert_eq!(batches.load(Ordering::Relaxed), 300);
    assert!(audits.load(Ordering::Relaxed) > 0);
}

#[test]
fn put_all_is_all_or_nothing_under_churn() {
    for_each_seed(3, put_all_is_all_or_nothing);
}
