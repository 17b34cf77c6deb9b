//! Load balance with the default configuration, and a sanity check of the
//! incremental add on a large ring (its cost is measured by the benchmark).

mod common;

use std::collections::HashMap;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_ring::{Ring, RingConfig, key_token};

/// 10 nodes x 256 vnodes, 1M random 16-byte keys: the busiest node holds at
/// most 1.25x the mean. Set `RINGKV_BALANCE_SEED` to replay another seed.
#[test]
fn busiest_of_ten_nodes_is_within_1_25x_of_the_mean() {
    let seed: u64 = std::env::var("RINGKV_BALANCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    println!("balance seed: {seed} (RINGKV_BALANCE_SEED={seed} to replay)");
    let ids: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
    let ring = ids.iter().fold(Ring::default(), |r, id| {
        r.with_node(id.as_str(), 1).unwrap()
    });
    assert_eq!(ring.vnode_count(), 10 * 256);

    const KEYS: usize = 1_000_000;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut key = [0u8; 16];
    for _ in 0..KEYS {
        rng.fill(&mut key);
        *counts
            .entry(ring.owner(&key).unwrap().as_str())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 10, "every node owns keys");
    let mean = KEYS as f64 / 10.0;
    let (busiest, max) = counts.iter().max_by_key(|(_, c)| **c).unwrap();
    let (idlest, min) = counts.iter().min_by_key(|(_, c)| **c).unwrap();
    let ratio = *max as f64 / mean;
    println!(
        "busiest {busiest} {max} ({ratio:.3}x mean), idlest {idlest} {min} ({:.3}x)",
        *min as f64 / mean
    );
    assert!(ratio <= 1.25, "busiest node holds {ratio:.3}x the mean");
}

/// Adding a node to a 1000 x 256 ring merges its tokens into the existing
/// order: the result is sorted, holds both rings' vnodes, leaves the old
/// snapshot intact, and moves about 1/1001 of the circle to the new node.
#[test]
fn adding_to_a_large_ring_is_an_exact_merge() {
    let cfg = RingConfig::default();
    let ring = (0..1000).fold(Ring::new(cfg).unwrap(), |r, i| {
        r.with_node(format!("node-{i}"), 1).unwrap()
    });
    let old_vnodes = vnode_list(&ring);
    let next = ring.with_node("newcomer", 1).unwrap();

    assert_eq!(
        (ring.len(), ring.epoch(), ring.vnode_count()),
        (1000, 1000, 256_000)
    );
    assert_eq!(vnode_list(&ring), old_vnodes, "the old snapshot changed");
    assert_eq!(
        (next.len(), next.epoch(), next.vnode_count()),
        (1001, 1001, 256_256)
    );
    let new_vnodes = vnode_list(&next);
    check_sorted(&new_vnodes);
    let kept: Vec<_> = new_vnodes
        .iter()
        .filter(|(_, id)| id != "newcomer")
        .cloned()
        .collect();
    assert_eq!(
        kept, old_vnodes,
        "old vnodes must survive the merge unchanged"
    );

    let diff = ring.diff(&next);
    assert!(diff.moves.iter().all(|m| m.to == "newcomer"));
    let moved = diff.fraction();
    assert!(
        (0.5 / 1001.0..2.0 / 1001.0).contains(&moved),
        "moved {moved} of the circle"
    );
    for i in 0..10_000u64 {
        let t = key_token(&i.to_le_bytes());
        let changed = ring.owner_of_token(t) != next.owner_of_token(t);
        assert_eq!(changed, diff.find(t).is_some());
    }
    assert!(next.without_node("newcomer").unwrap().same_placement(&ring));
}
