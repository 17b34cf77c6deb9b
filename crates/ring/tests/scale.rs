//! Timings of many joins, printed: the cost of growing a ring node by node.
//! Run in release mode, one at a time:
//! `cargo test --release -p ringkv-ring --test scale -- --ignored --nocapture`.
//!
//! A balanced join costs `O(Q + members)`; a random-vnode join copies the
//! ring once (`O(vnodes)`), as every immutable snapshot does.

use std::time::Instant;

use ringkv_ring::{BalancedConfig, Ring};

/// Adds `n` nodes of `weight` to `ring`, printing the time of every eighth.
fn grow(name: &str, mut ring: Ring, n: usize, weight: u32) -> Ring {
    let started = Instant::now();
    let mut last = started;
    for i in 0..n {
        ring = ring
            .with_node(format!("node-{i}"), weight)
            .expect("fresh node");
        if (i + 1) % (n / 8).max(1) == 0 {
            let now = Instant::now();
            println!(
                "{name}: {} nodes, {} vnodes, {:.2?} so far, {:.2?} for the last {}",
                i + 1,
                ring.vnode_count(),
                now - started,
                now - last,
                (n / 8).max(1)
            );
            last = now;
        }
    }
    println!("{name}: {n} joins in {:.2?}", started.elapsed());
    ring
}

#[test]
#[ignore = "timings: run in release mode"]
fn many_joins() {
    let ring = grow(
        "balanced, 65,536 partitions",
        Ring::balanced(BalancedConfig::default()).expect("valid config"),
        8000,
        1,
    );
    assert_eq!(ring.len(), 8000);
    let ring = grow("random vnodes, weight 1", Ring::default(), 2000, 1);
    assert_eq!(ring.vnode_count(), 2000 * 256);
    let ring = grow("random vnodes, weight 4096", Ring::default(), 10, 4096);
    assert_eq!(ring.vnode_count(), 10 * 4096 * 256);
}
