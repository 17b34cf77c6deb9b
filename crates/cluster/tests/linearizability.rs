//! Multi-threaded stress: client threads put, get and delete a few hot keys
//! while other threads add and remove nodes. Every operation is recorded
//! (invocation, response) and the history is checked for per-key
//! linearizability with a Wing-Gong-Lowe checker; afterwards every key must
//! sit on its owner only.
//!
//! Seeds drive each thread's choices and its random yields; the OS decides
//! the interleaving. A failure prints the seed and the offending operations.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{Cluster, ClusterConfig, Placement};
use ringkv_lincheck::History;

mod common;
use common::for_each_seed;

struct Shape {
    clients: u64,
    ops_per_client: u64,
    keys: u32,
    changers: u64,
}

fn value_bytes(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

fn decode(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("values are 8 bytes"))
}

fn stress(seed: u64, shape: &Shape) {
    let config = ClusterConfig {
        placement: if seed.is_multiple_of(2) {
            Placement::RandomVnodes {
                vnodes_per_weight: 4 + (seed % 8) as u32,
            }
        } else {
            Placement::BalancedPartitions {
                partitions: 16 << (seed % 4),
            }
        },
        copy_batch: 1 + (seed % 4) as usize,
        stripes: 1 << (seed % 7),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::new(config).unwrap();
    for id in ["base1", "base2"] {
        cluster.add_node(id).unwrap();
    }
    let history: History<u32, u64> = History::new();
    let clients_done = AtomicBool::new(false);
    let first_change = AtomicBool::new(false);
    let start = Barrier::new((shape.clients + shape.changers) as usize);
    let mut changes = 0;

    std::thread::scope(|s| {
        let mut changers = Vec::new();
        for c in 0..shape.changers {
            let (cluster, start, done) = (&cluster, &start, &clients_done);
            let first_change = &first_change;
            changers.push(s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ (0xc4a9 + c));
                let mut mine: Vec<String> = Vec::new();
                let mut next = 0;
                let mut changes = 0;
                start.wait();
                // At least one change before and one after the clients'
                // start, whatever the scheduler does.
                while !done.load(Ordering::Acquire) || changes < 2 {
                    if mine.is_empty() || (mine.len() < 3 && rng.random_bool(0.5)) {
                        let id = format!("c{c}-{next}");
                        next += 1;
                        cluster
                            .add_node_weighted(&id, rng.random_range(1..=2))
                            .unwrap();
                        mine.push(id);
                    } else {
                        let id = mine.remove(rng.random_range(0..mine.len()));
                        cluster.remove_node(&id).unwrap();
                    }
                    changes += 1;
                    first_change.store(true, Ordering::Release);
                }
                changes
            }));
        }
        let mut clients = Vec::new();
        for client in 0..shape.clients {
            let (cluster, history, start) = (&cluster, &history, &start);
            let first_change = &first_change;
            clients.push(s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ (client << 20));
                let mut rec = history.recorder(client);
                start.wait();
                while !first_change.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                for i in 0..shape.ops_per_client {
                    let key = rng.random_range(0..shape.keys);
                    let key_bytes = Bytes::from(format!("key{key}"));
                    match rng.random_range(0..10) {
                        0..=3 => {
                            let v = (client << 32) | i;
                            rec.put(key, v, || cluster.put(key_bytes, value_bytes(v)))
                                .unwrap();
                        }
                        4..=8 => {
                            rec.get(key, || {
                                cluster.get(&key_bytes).map(|o| o.map(|b| decode(&b)))
                            })
                            .unwrap();
                        }
                        _ => {
                            rec.delete(key, || cluster.delete(key_bytes)).unwrap();
                        }
                    }
                    if rng.random_range(0..16) == 0 {
                        std::thread::yield_now();
                    }
                }
            }));
        }
        for c in clients {
            c.join().unwrap();
        }
        clients_done.store(true, Ordering::Release);
        for c in changers {
            changes += c.join().unwrap();
        }
    });

    let report = history.check().unwrap_or_else(|e| {
        panic!("seed {seed}: history is not linearizable ({changes} membership changes):\n{e}")
    });
    assert_eq!(
        report.operations as u64,
        shape.clients * shape.ops_per_client,
        "seed {seed}: every operation was recorded"
    );
    assert!(
        changes > 0,
        "seed {seed}: membership changed during the run"
    );

    // Converged: each key is on its owner and nowhere else.
    let ring = cluster.ring();
    for key in 0..shape.keys {
        let k = format!("key{key}");
        let copies = cluster.locate(k.as_bytes());
        assert!(copies.len() <= 1, "seed {seed}: {k} has copies {copies:?}");
        if let Some((node, is_owner)) = copies.first() {
            assert!(is_owner, "seed {seed}: {k} is on {node}, not its owner");
            assert_eq!(Some(node), ring.owner(k.as_bytes()), "seed {seed}");
        }
    }
}

#[test]
fn clients_and_membership_changes_are_linearizable() {
    let shape = Shape {
        clients: 4,
        ops_per_client: 3_000,
        keys: 12,
        changers: 2,
    };
    for_each_seed(6, |seed| stress(seed, &shape));
}

/// The heavier run: `cargo nextest run -p ringkv-cluster --run-ignored only --release`.
#[test]
#[ignore = "heavy stress run; see README"]
fn clients_and_membership_changes_are_linearizable_heavy() {
    let shape = Shape {
        clients: 6,
        ops_per_client: 30_000,
        keys: 32,
        changers: 2,
    };
    for_each_seed(40, |seed| stress(seed, &shape));
}
