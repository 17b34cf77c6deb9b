//! `used_memory` is counted incrementally and equals a recount of what the
//! stores hold after random operations, expiry, membership changes, faults
//! and rollbacks.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{
    Clock, Cluster, ClusterConfig, ClusterError, ENTRY_OVERHEAD, Entry, EntryUpdate, ExpireBudget,
    Fault, FaultEffect, FaultPoint, FaultRole, ManualClock, Update,
};

mod common;
use common::{config_for, for_each_seed};

fn assert_counted(c: &Cluster, ctx: &str) {
    let stats = c.stats();
    let recount = c.recount_used_memory();
    let counted: Vec<_> = stats
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.used_memory))
        .collect();
    assert_eq!(counted, recount, "{ctx}: per node");
    assert_eq!(
        stats.used_memory,
        recount.iter().map(|(_, b)| b).sum::<u64>(),
        "{ctx}"
    );
}

#[test]
fn one_entry_counts_key_value_and_overhead() {
    let c = Cluster::default();
    c.add_node("n1").unwrap();
    assert_eq!(c.stats().used_memory, 0);
    c.put("key", "value").unwrap();
    assert_eq!(c.stats().used_memory, (3 + 5 + ENTRY_OVERHEAD) as u64);
    c.put("key", "v").unwrap();
    assert_eq!(c.stats().used_memory, (3 + 1 + ENTRY_OVERHEAD) as u64);
    c.delete("key").unwrap();
    assert_eq!(c.stats().used_memory, 0);
}

fn memory_matches_a_recount(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let clock = Arc::new(ManualClock::new(0));
    let c = Cluster::new(ClusterConfig {
        clock: clock.clone().into(),
        ..config_for(seed)
    })
    .unwrap();
    for id in ["n1", "n2", "n3"] {
        c.add_node(id).unwrap();
    }
    for round in 0..8 {
        for _ in 0..400 {
            let key = format!("k{}", rng.random_range(0..300));
            let len = rng.random_range(0..40);
            let value = "x".repeat(len);
            match rng.random_range(0..6) {
                0 => c.put(key, value).unwrap(),
                1 => {
                    let at = clock.now_ms() + rng.random_range(0..50);
                    c.put_entry(key, Entry::string(value).expiring(Some(at)))
                        .unwrap();
                }
                2 => {
                    c.delete(key).unwrap();
                }
                3 => c.update(key, |_| (Update::Put(value.into()), ())).unwrap(),
                4 => c
                    .update_entry(key, |live, _| match live {
                        Some(e) => (EntryUpdate::Put(e.clone().expiring(None)), ()),
                        None => (EntryUpdate::Keep, ()),
                    })
                    .unwrap(),
                _ => {
                    c.active_expire_cycle(ExpireBudget::default());
                }
            }
            clock.advance(rng.random_range(0..2));
        }
        assert_counted(&c, &format!("seed {seed} round {round} after writes"));
        let point = FaultPoint::ALL[rng.random_range(0..4)];
        c.inject_fault(Fault {
            point,
            role: if rng.random_bool(0.5) {
                FaultRole::Source
            } else {
                FaultRole::Target
            },
            effect: FaultEffect::Crash,
            range: None,
        });
        let result = if round % 2 == 0 {
            c.add_node(&format!("x{round}"))
        } else {
            c.remove_node(&format!("x{}", round - 1))
        };
        c.clear_faults();
        for id in ["n1", "n2", "n3"]
            .map(String::from)
            .into_iter()
            .chain((0..8).map(|r| format!("x{r}")))
        {
            let _ = c.heal(&id);
        }
        if let Err(ClusterError::Paused { .. }) = &result {
            c.resume().unwrap();
        }
        assert_counted(
            &c,
            &format!("seed {seed} round {round} after {point:?}: {result:?}"),
        );
        c.repair();
        assert_counted(&c, &format!("seed {seed} round {round} after repair"));
    }
    // A forced removal of a node that is down drops what it held.
    c.crash("n3").unwrap();
    c.remove_node_forced("n3").unwrap();
    assert_counted(&c, &format!("seed {seed} after a forced removal"));
}

#[test]
fn used_memory_equals_a_recount_through_changes_and_faults() {
    for_each_seed(6, memory_matches_a_recount);
}
