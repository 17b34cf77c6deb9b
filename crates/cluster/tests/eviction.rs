//! maxmemory and eviction: noeviction refuses writes that would go over
//! the limit and writes nothing; the other policies evict (sampled) to
//! stay under it; the limit and policy change at run time.

use std::sync::Arc;

use bytes::Bytes;

use ringkv_cluster::{
    Cluster, ClusterConfig, ClusterError, ENTRY_OVERHEAD, Entry, EntryUpdate, EvictionPolicy,
    ManualClock, Update,
};

mod common;
use common::config_for;

fn cluster(maxmemory: u64, policy: EvictionPolicy) -> Cluster {
    let c = Cluster::new(ClusterConfig {
        maxmemory,
        maxmemory_policy: policy,
        ..config_for(1)
    })
    .unwrap();
    for id in ["n1", "n2", "n3"] {
        c.add_node(id).unwrap();
    }
    c
}

/// Footprint of `k{i}` -> 10-byte value, for i < 1000.
const FOOT: u64 = (4 + 10 + ENTRY_OVERHEAD) as u64;

#[test]
fn noeviction_refuses_and_writes_nothing() {
    let c = cluster(FOOT * 100, EvictionPolicy::NoEviction);
    let mut stored = 0;
    for i in 100..1000 {
        match c.put(format!("k{i}"), "0123456789") {
            Ok(()) => stored += 1,
            Err(ClusterError::OutOfMemory { used, maxmemory }) => {
                assert_eq!(maxmemory, FOOT * 100);
                assert!(used + FOOT > maxmemory);
                assert_eq!(
                    c.get(format!("k{i}").as_bytes()).unwrap(),
                    None,
                    "nothing written"
                );
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 100);
    let before = c.stats();
    assert!(before.used_memory <= FOOT * 100);
    // Growing an existing key is refused too; shrinking it is not.
    let grown = c.update("k100", |_| (Update::Put(vec![b'x'; 50].into()), ()));
    assert!(matches!(grown, Err(ClusterError::OutOfMemory { .. })));
    assert_eq!(c.get(b"k100").unwrap().as_deref(), Some(&b"0123456789"[..]));
    let grown = c.update_entry("k100", |_, _| {
        (EntryUpdate::Put(Entry::string(vec![b'x'; 50])), ())
    });
    assert!(matches!(grown, Err(ClusterError::OutOfMemory { .. })));
    c.update("k100", |_| (Update::Put("short".into()), ()))
        .unwrap();
    // A transaction that would go over is refused whole.
    let t = c.transaction(["k101", "new1"], |txn| {
        txn.delete(b"k101");
        txn.put(b"new1", Entry::string(vec![b'y'; 200]));
    });
    assert!(matches!(t, Err(ClusterError::OutOfMemory { .. })), "{t:?}");
    assert!(c.exists(b"k101").unwrap(), "nothing of it was applied");
    // So are pipelined SETs written together, which read nothing first.
    let t = c.put_all(vec![
        (Bytes::from_static(b"k101"), Entry::string("short")),
        (Bytes::from_static(b"new2"), Entry::string(vec![b'y'; 200])),
    ]);
    assert!(matches!(t, Err(ClusterError::OutOfMemory { .. })), "{t:?}");
    assert_eq!(c.get(b"k101").unwrap().as_deref(), Some(&b"0123456789"[..]));
    assert!(!c.exists(b"new2").unwrap(), "nothing of it was applied");
    // Deletes always work, and make room.
    assert!(c.delete("k102").unwrap());
    c.put("k1000", "0123456789").unwrap();
    assert_eq!(c.stats().evicted_keys, 0);
    // Raising the limit at run time admits more.
    c.set_maxmemory(FOOT * 200);
    c.put("k2000", "0123456789").unwrap();
    c.set_maxmemory(0);
    for i in 0..300 {
        c.put(format!("free{i}"), "v").unwrap();
    }
}

#[test]
fn eviction_policies_stay_under_the_limit() {
    for policy in [EvictionPolicy::AllKeysLru, EvictionPolicy::AllKeysRandom] {
        let c = cluster(FOOT * 100, policy);
        for i in 100..1000 {
            c.put(format!("k{i}"), "0123456789").unwrap();
            assert!(c.stats().used_memory <= FOOT * 100, "{policy:?}");
        }
        let stats = c.stats();
        assert!(stats.evicted_keys >= 800, "{policy:?}: {stats:?}");
        assert_eq!(
            stats.total_keys as u64 + stats.evicted_keys,
            900,
            "{policy:?}"
        );
        assert!(
            c.exists(b"k999").unwrap(),
            "{policy:?}: the key just written stays"
        );
    }
}

#[test]
fn volatile_policies_evict_only_keys_with_an_expiry() {
    for policy in [EvictionPolicy::VolatileTtl, EvictionPolicy::VolatileLru] {
        let clock = Arc::new(ManualClock::new(0));
        let c = Cluster::new(ClusterConfig {
            maxmemory: FOOT * 100,
            maxmemory_policy: policy,
            clock: clock.clone().into(),
            ..config_for(0)
        })
        .unwrap();
        c.add_node("n1").unwrap();
        c.add_node("n2").unwrap();
        for i in 100..150 {
            c.put(format!("k{i}"), "0123456789").unwrap();
        }
        let mut refused = false;
        for i in 150..400 {
            let e = Entry::string("0123456789").expiring(Some(1_000_000 + i));
            match c.put_entry(format!("k{i}"), e) {
                Ok(_) => {}
                Err(ClusterError::OutOfMemory { .. }) => refused = true,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            !refused,
            "{policy:?}: volatile keys make room for volatile keys"
        );
        for i in 100..150 {
            assert!(
                c.exists(format!("k{i}").as_bytes()).unwrap(),
                "{policy:?}: k{i} has no expiry"
            );
        }
        if policy == EvictionPolicy::VolatileTtl {
            // The soonest to expire went first: the last written survive.
            assert!(c.exists(b"k399").unwrap());
        }
        // Once only keys without expiry could go, writes are refused.
        c.set_maxmemory(FOOT * 50);
        let r = c.put("more", "0123456789");
        assert!(
            matches!(r, Err(ClusterError::OutOfMemory { .. })),
            "{policy:?}: {r:?}"
        );
    }
}

#[test]
fn a_removed_node_leaves_no_phantom_memory() {
    let c = cluster(0, EvictionPolicy::NoEviction);
    for i in 100..400 {
        c.put(format!("k{i}"), "0123456789").unwrap();
    }
    let used = c.stats().used_memory;
    c.remove_node("n2").unwrap();
    assert_eq!(c.stats().used_memory, used, "moved keys counted once");
    // A limit just above what is held: a write fits only if the removed
    // node's bytes were taken off the total the limit is checked against.
    c.set_maxmemory(used + FOOT);
    c.put("k999", "0123456789").unwrap();
}

#[test]
fn policy_names_round_trip() {
    for p in EvictionPolicy::ALL {
        assert_eq!(p.name().parse::<EvictionPolicy>().unwrap(), p);
    }
    assert_eq!(
        "ALLKEYS-LRU".parse::<EvictionPolicy>().unwrap(),
        EvictionPolicy::AllKeysLru
    );
    assert!(matches!(
        "lfu".parse::<EvictionPolicy>(),
        Err(ClusterError::Config(_))
    ));
}
