//! `Cluster::update` is atomic per key, also while the key's range moves:
//! concurrent increments under membership churn lose no count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ringkv_cluster::{Cluster, ClusterConfig, Placement, Update};

mod common;
use common::for_each_seed;

fn parse(v: Option<&bytes::Bytes>) -> u64 {
    v.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap())
}

fn increments_survive_churn(seed: u64) {
    let cluster = Cluster::new(ClusterConfig {
        placement: if seed.is_multiple_of(2) {
            Placement::RandomVnodes {
                vnodes_per_weight: 4,
            }
        } else {
            Placement::BalancedPartitions { partitions: 32 }
        },
        copy_batch: 2,
        stripes: 1 << (seed % 4),
        ..ClusterConfig::default()
    })
    .unwrap();
    cluster.add_node("base").unwrap();
    let (threads, per_thread, counters) = (4u64, 1_500u64, 8u64);
    let done = AtomicBool::new(false);
    // Workers start once churn has begun, and churn goes on until they are
    // done, so increments always overlap membership changes.
    let changes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut i = 0;
            while !done.load(Ordering::Acquire) || i < 4 {
                let id = format!("churn{}", i % 3);
                if cluster.members().iter().any(|m| m.as_str() == id) {
                    cluster.remove_node(&id).unwrap();
                } else {
                    cluster.add_node(&id).unwrap();
                }
                i += 1;
                changes.store(i, Ordering::Release);
            }
            i
        });
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (cluster, changes) = (&cluster, &changes);
                s.spawn(move || {
                    while changes.load(Ordering::Acquire) == 0 {
                        std::thread::yield_now();
                    }
                    for i in 0..per_thread {
                        let key = format!("counter{}", (i + t + seed) % counters);
                        cluster
                            .update(key, |old| {
                                let n = parse(old) + 1;
                                (Update::Put(n.to_string().into()), ())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        assert!(
            churn.join().unwrap() >= 4,
            "seed {seed}: membership changed"
        );
    });
    let total: u64 = (0..counters)
        .map(|c| {
            parse(
                cluster
                    .get(format!("counter{c}").as_bytes())
                    .unwrap()
                    .as_ref(),
            )
        })
        .sum();
    assert_eq!(total, threads * per_thread, "seed {seed}: increments lost");
}

#[test]
fn concurrent_increments_are_exact_under_churn() {
    for_each_seed(4, increments_survive_churn);
}

#[test]
fn update_can_delete_and_reports_its_result() {
    let cluster = Cluster::default();
    cluster.add_node("n").unwrap();
    cluster.put("k", "v").unwrap();
    let old = cluster
        .update("k", |old| (Update::Delete, old.cloned()))
        .unwrap();
    assert_eq!(old.as_deref(), Some(&b"v"[..]));
    assert_eq!(cluster.get(b"k").unwrap(), None);
    // Set-if-absent.
    let set = cluster
        .update("k", |old| match old {
            Some(_) => (Update::Keep, false),
            None => (Update::Put("first".into()), true),
        })
        .unwrap();
    assert!(set);
    assert_eq!(cluster.get(b"k").unwrap().as_deref(), Some(&b"first"[..]));
}
