//! Expiry with a manual clock: lazy (no read path returns an expired key),
//! active (sampled cycles reclaim them), and across redistribution with
//! faults and rollbacks (no expired key comes back, no live key is lost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{
    Clock, Cluster, ClusterConfig, ClusterError, Entry, EntryUpdate, ExpireBudget, Fault,
    FaultEffect, FaultPoint, FaultRole, ManualClock, Update,
};

mod common;
use common::{SetOnDrop, config_for, for_each_seed};

fn cluster_at(now: u64, config: ClusterConfig) -> (Cluster, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now));
    let cluster = Cluster::new(ClusterConfig {
        clock: clock.clone().into(),
        ..config
    })
    .unwrap();
    for id in ["n1", "n2", "n3"] {
        cluster.add_node(id).unwrap();
    }
    (cluster, clock)
}

/// Runs active expiry until 50 calls in a row find nothing more to
/// reclaim (sampling may miss a key in one call; with a few volatile keys
/// per stripe, not in fifty).
fn expire_all(cluster: &Cluster) -> u64 {
    let (mut total, mut idle) = (0, 0);
    loop {
        let cycle = cluster.active_expire_cycle(ExpireBudget {
            max_samples: usize::MAX,
            max_time: std::time::Duration::from_secs(10),
        });
        total += cycle.expired;
        idle = if cycle.expired == 0 { idle + 1 } else { 0 };
        if idle == 50 {
            return total;
        }
    }
}

#[test]
fn no_read_path_returns_an_expired_key() {
    let (c, clock) = cluster_at(1_000, config_for(0));
    c.put_entry("k", Entry::string("v").expiring(Some(1_100)))
        .unwrap();
    clock.set(1_100);
    assert_eq!(
        c.get(b"k").unwrap().as_deref(),
        Some(&b"v"[..]),
        "live at its expiry"
    );
    assert!(c.exists(b"k").unwrap());
    clock.set(1_101);
    assert_eq!(c.get(b"k").unwrap(), None);
    assert_eq!(c.get_entry(b"k").unwrap(), None);
    assert!(!c.exists(b"k").unwrap());
    assert_eq!(c.stats().expired_keys, 0, "a read does not reclaim");
    let seen = c.update("k", |old| (Update::Keep, old.cloned())).unwrap();
    assert_eq!(seen, None, "update sees no expired value");
    assert_eq!(c.stats().expired_keys, 1, "the write reclaimed it");
    assert_eq!(c.stats().total_keys, 0);

    c.put_entry("k", Entry::string("v").expiring(Some(1_200)))
        .unwrap();
    clock.set(1_300);
    let seen = c
        .update_entry("k", |live, now| (EntryUpdate::Keep, (live.cloned(), now)))
        .unwrap();
    assert_eq!(seen, (None, 1_300));
    c.put_entry("k", Entry::string("v").expiring(Some(1_350)))
        .unwrap();
    clock.set(1_400);
    assert!(
        !c.delete("k").unwrap(),
        "deleting an expired key finds nothing"
    );
    c.put_entry("k", Entry::string("v").expiring(Some(1_450)))
        .unwrap();
    clock.set(1_500);
    // INCR on an expired key starts from nothing and has no expiry.
    c.update("k", |old| {
        assert_eq!(old, None);
        (Update::Put("1".into()), ())
    })
    .unwrap();
    assert_eq!(c.get_entry(b"k").unwrap().unwrap().expires_at, None);
    assert_eq!(c.stats().expired_keys, 4);
    assert_eq!(c.stats().total_keys, 1);
}

#[test]
fn update_entry_sets_and_clears_expiry() {
    let (c, clock) = cluster_at(0, config_for(1));
    c.put("k", "v").unwrap();
    // EXPIRE k 1 (seconds).
    let set = c
        .update_entry("k", |live, now| match live {
            Some(e) => (
                EntryUpdate::Put(e.clone().expiring(Some(now + 1_000))),
                true,
            ),
            None => (EntryUpdate::Keep, false),
        })
        .unwrap();
    assert!(set);
    assert_eq!(
        c.get_entry(b"k").unwrap().unwrap().ttl_ms(clock_now(&c)),
        Some(1_000)
    );
    // PERSIST.
    c.update_entry("k", |live, _| {
        (EntryUpdate::Put(live.unwrap().clone().expiring(None)), ())
    })
    .unwrap();
    clock.set(5_000);
    assert!(c.exists(b"k").unwrap());
    // GETDEL.
    let got = c
        .update_entry("k", |live, _| {
            (EntryUpdate::Delete, live.map(|e| e.value.clone()))
        })
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    assert_eq!(c.stats().total_keys, 0);
}

fn clock_now(c: &Cluster) -> u64 {
    c.now_ms()
}

#[test]
fn active_expiry_reclaims_keys_nobody_reads() {
    let (c, clock) = cluster_at(0, config_for(0));
    for i in 0..2_000u64 {
        let at = (i % 2 == 0).then_some(100 + i % 7);
        c.put_entry(format!("k{i}"), Entry::string("value").expiring(at))
            .unwrap();
    }
    let before = c.stats();
    assert_eq!(before.total_keys, 2_000);
    assert_eq!(expire_all(&c), 0, "nothing has expired yet");
    clock.set(1_000);
    // One bounded call does a bounded amount of work.
    let first = c.active_expire_cycle(ExpireBudget {
        max_samples: 40,
        max_time: std::time::Duration::from_secs(10),
    });
    assert!(
        first.sampled <= 40 + 20 && first.budget_exhausted,
        "{first:?}"
    );
    let reclaimed = first.expired + expire_all(&c);
    assert_eq!(reclaimed, 1_000);
    let after = c.stats();
    assert_eq!(after.total_keys, 1_000);
    assert_eq!(after.expired_keys, 1_000);
    assert!(after.used_memory < before.used_memory);
    for i in (1..2_000u64).step_by(2) {
        assert!(
            c.exists(format!("k{i}").as_bytes()).unwrap(),
            "live key k{i} kept"
        );
    }
}

/// Keys with expiries spread over time, membership changes with faults
/// (some rolled back, some paused and resumed), the clock moving during
/// the copies and active expiry running between them: afterwards every
/// key reads as the model says at the current time.
fn ttls_survive_changes_with_faults(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (c, clock) = cluster_at(0, config_for(seed));
    let c = Arc::new(c);
    let clock_in_callback = clock.clone();
    // The clock moves while ranges are being copied, so keys expire
    // between the copy of their range and its switch.
    c.on_progress(move |_| clock_in_callback.advance(3));
    let mut model: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for i in 0..600u64 {
        let at = match rng.random_range(0..3) {
            0 => None,
            _ => Some(rng.random_range(0..400)),
        };
        c.put_entry(format!("k{i}"), Entry::string(format!("v{i}")).expiring(at))
            .unwrap();
        model.insert(format!("k{i}"), at);
    }
    let points = FaultPoint::ALL;
    for round in 0..6 {
        // The first round always rolls back.
        let point = if round == 0 {
            FaultPoint::MidCopy
        } else {
            points[rng.random_range(0..points.len())]
        };
        let role = if rng.random_bool(0.5) {
            FaultRole::Source
        } else {
            FaultRole::Target
        };
        c.inject_fault(Fault {
            point,
            role,
            effect: FaultEffect::Crash,
            range: Some(0),
        });
        let result = if round % 2 == 0 {
            c.add_node(&format!("x{round}"))
        } else {
            c.remove_node("n2")
                .or_else(|_| c.remove_node(&format!("x{}", round - 1)))
        };
        if round == 0 {
            assert!(
                matches!(result, Err(ClusterError::RolledBack { .. })),
                "seed {seed}: {result:?}"
            );
        }
        c.clear_faults();
        for id in c.members() {
            c.heal(id.as_str()).unwrap();
        }
        for id in ["n1", "n2", "n3"]
            .iter()
            .map(|s| s.to_string())
            .chain((0..6).map(|r| format!("x{r}")))
        {
            let _ = c.heal(&id);
        }
        if let Err(ClusterError::Paused { .. }) = &result {
            c.resume().unwrap();
        }
        c.repair();
        if rng.random_bool(0.5) {
            expire_all(&c);
        }
        clock.advance(rng.random_range(0..60));
        let now = c.now_ms();
        for (key, at) in &model {
            let live = at.is_none_or(|at| now <= at);
            let got = c.get_entry(key.as_bytes()).unwrap();
            match got {
                Some(e) => {
                    assert!(live, "seed {seed} round {round}: expired {key} came back");
                    assert_eq!(e.expires_at, *at, "seed {seed}: {key} kept its expiry");
                    assert_eq!(e.value, format!("v{}", &key[1..]));
                }
                None => assert!(
                    !live,
                    "seed {seed} round {round} ({point:?} {role:?}, {result:?}): live {key} lost"
                ),
            }
        }
    }
    expire_all(&c);
    let now = c.now_ms();
    let live = model
        .values()
        .filter(|at| at.is_none_or(|at| now <= at))
        .count();
    assert_eq!(
        c.stats().total_keys,
        live,
        "seed {seed}: counts after reclaiming"
    );
}

#[test]
fn ttls_survive_changes_faults_and_rollbacks() {
    for_each_seed(6, ttls_survive_changes_with_faults);
}

/// Threads write keys with TTLs, read them and check each read against
/// the expiry they wrote, while the clock advances, active expiry runs and
/// nodes join and leave.
#[test]
fn concurrent_ttls_match_the_model_under_churn() {
    for_each_seed(2, |seed| {
        let (c, clock) = cluster_at(0, config_for(seed));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0;
                while !done.load(Ordering::Acquire) {
                    let id = format!("churn{}", i % 2);
                    if c.members().iter().any(|m| m.as_str() == id) {
                        c.remove_node(&id).unwrap();
                    } else {
                        c.add_node(&id).unwrap();
                    }
                    i += 1;
                }
            });
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    clock.advance(1);
                    c.active_expire_cycle(ExpireBudget::default());
                    std::thread::yield_now();
                }
            });
            let _stop = SetOnDrop(&done);
            let workers: Vec<_> = (0..3u64)
                .map(|t| {
                    let (c, clock) = (&c, &clock);
                    s.spawn(move || {
                        let mut rng = StdRng::seed_from_u64(seed ^ t);
                        // This thread's keys: key -> (value, expiry).
                        let mut model: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
                        for op in 0..3_000u64 {
                            let k = rng.random_range(0..50u64);
                            let key = format!("t{t}k{k}");
                            if rng.random_bool(0.5) {
                                let at = rng.random_bool(0.7).then(|| clock.now_ms() + rng.random_range(0..20));
                                c.put_entry(key, Entry::string(op.to_string()).expiring(at)).unwrap();
                                model.insert(k, (op, at));
                            } else {
                                let before = clock.now_ms();
                                let got = c.get_entry(key.as_bytes()).unwrap();
                                let after = clock.now_ms();
                                match (model.get(&k), got) {
                                    (None, None) => {}
                                    (None, Some(e)) => panic!("seed {seed}: {key} never written, read {e:?}"),
                                    (Some(&(v, at)), None) => assert!(
                                        at.is_some_and(|at| after > at),
                                        "seed {seed}: {key}={v} expiring {at:?} lost at {before}..{after}"
                                    ),
                                    (Some(&(v, at)), Some(e)) => {
                                        assert_eq!(e.value, v.to_string(), "seed {seed}: {key}");
                                        assert_eq!(e.expires_at, at);
                                        assert!(at.is_none_or(|at| before <= at), "seed {seed}: {key} expired at {at:?} read at {before}..{after}");
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
        });
    });
}
