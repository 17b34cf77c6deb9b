//! Multi-threaded stress: client threads put, get, delete and update
//! (read-modify-write) a few hot keys while other threads add and remove
//! nodes. Every operation is recorded (invocation, response; what a delete
//! reported removing, what an update found and left) and the history is
//! checked for per-key linearizability with a Wing-Gong-Lowe checker;
//! afterwards every key must sit on its owner only. The last test corrupts
//! recorded histories in ways that are provably not linearizable and checks
//! that the checker rejects them.
//!
//! Seeds drive each thread's choices and its random yields; the OS decides
//! the interleaving. A failure prints the seed and the offending operations.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::{
    Cluster, ClusterConfig, ClusterError, Fault, FaultEffect, FaultPoint, FaultRole, Placement,
    Update,
};
use ringkv_lincheck::{Event, History, Op, check};

mod common;
use common::for_each_seed;

#[derive(Clone, Copy)]
struct Shape {
    clients: u64,
    ops_per_client: u64,
    keys: u32,
    changers: u64,
    /// Arm random faults before membership changes: rollbacks, pauses and
    /// failed client calls then interleave with the clients.
    faults: bool,
}

/// Membership changes that were rolled back, paused or not started, over
/// the whole test binary: the fault test checks that faults did bite.
static FAILED_CHANGES: AtomicUsize = AtomicUsize::new(0);

/// Heals every node ever created, completes a paused change, and deletes
/// stale copies, so that the cluster converges whatever faults fired.
fn recover(cluster: &Cluster, ids: &Mutex<Vec<String>>) {
    cluster.clear_faults();
    loop {
        for id in ids.lock().unwrap().iter() {
            let _ = cluster.heal(id); // nodes that left are unknown: fine
        }
        if cluster.resume().is_ok() {
            break;
        }
    }
    cluster.repair();
}

fn random_fault(rng: &mut SmallRng) -> Fault {
    Fault {
        point: FaultPoint::ALL[rng.random_range(0..4)],
        role: if rng.random_bool(0.5) {
            FaultRole::Source
        } else {
            FaultRole::Target
        },
        effect: if rng.random_bool(0.5) {
            FaultEffect::Crash
        } else {
            FaultEffect::FailCalls(rng.random_range(1..=4))
        },
        range: None,
    }
}

fn value_bytes(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

fn decode(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("values are 8 bytes"))
}

/// What the update of the stress test does with the value `observed` it
/// finds, and the value it leaves: any of the three outcomes, chosen by the
/// value, and otherwise the fresh value `v`.
fn rewrite(observed: Option<u64>, v: u64) -> (Update, Option<u64>) {
    match observed {
        Some(x) if x % 3 == 0 => (Update::Delete, None),
        Some(x) if x % 3 == 1 => (Update::Keep, observed),
        _ => (Update::Put(value_bytes(v)), Some(v)),
    }
}

/// Runs the clients and membership changes of `shape`, checks the history
/// and the final placement, and returns the history.
fn stress(seed: u64, shape: &Shape) -> Vec<Event<u32, u64>> {
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
    let ids = Mutex::new(vec!["base1".to_string(), "base2".to_string()]);
    let history: History<u32, u64> = History::new();
    let clients_done = AtomicBool::new(false);
    let first_change = AtomicBool::new(false);
    let start = Barrier::new((shape.clients + shape.changers) as usize);
    let mut changes = 0;

    std::thread::scope(|s| {
        let mut changers = Vec::new();
        for c in 0..shape.changers {
            let (cluster, start, done) = (&cluster, &start, &clients_done);
            let (first_change, ids) = (&first_change, &ids);
            changers.push(s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ (0xc4a9 + c));
                let mut mine: Vec<String> = Vec::new();
                let mut next = 0;
                let mut changes = 0;
                start.wait();
                // At least one change before and one after the clients'
                // start, whatever the scheduler does.
                while !done.load(Ordering::Acquire) || changes < 2 {
                    if shape.faults && rng.random_bool(0.4) {
                        cluster.inject_fault(random_fault(&mut rng));
                    }
                    let adding = mine.is_empty() || (mine.len() < 3 && rng.random_bool(0.5));
                    let (id, result) = if adding {
                        let id = format!("c{c}-{next}");
                        next += 1;
                        ids.lock().unwrap().push(id.clone());
                        let result = cluster.add_node_weighted(&id, rng.random_range(1..=2));
                        (id, result)
                    } else {
                        let id = mine.remove(rng.random_range(0..mine.len()));
                        let result = cluster.remove_node(&id);
                        (id, result)
                    };
                    // Did the membership change? Rolled back or not started:
                    // no; completed or paused past its commit point: yes.
                    let applied = match &result {
                        Ok(_) | Err(ClusterError::Paused { .. }) => true,
                        Err(ClusterError::RolledBack { .. } | ClusterError::NotStarted { .. }) => {
                            false
                        }
                        Err(e) => panic!("seed {seed}: change of {id}: {e}"),
                    };
                    assert!(
                        shape.faults || result.is_ok(),
                        "seed {seed}: no faults armed"
                    );
                    if result.is_err() {
                        FAILED_CHANGES.fetch_add(1, Ordering::Relaxed);
                    }
                    if adding == applied {
                        mine.push(id);
                    }
                    if shape.faults {
                        recover(cluster, ids);
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
                    // Unique across the run: puts and updates write it.
                    let v = (client << 32) | i;
                    match rng.random_range(0..20) {
                        // A failed call (a node crashed or failing under an
                        // injected fault) is recorded as an unknown outcome
                        // (put, delete, an update whose function ran) or not
                        // at all (get, an update whose function never ran).
                        0..=6 => {
                            let r = rec.put(key, v, || cluster.put(key_bytes, value_bytes(v)));
                            check_error(r.err(), shape.faults, seed);
                        }
                        7..=14 => {
                            let r = rec.get(key, || {
                                cluster.get(&key_bytes).map(|o| o.map(|b| decode(&b)))
                            });
                            check_error(r.err(), shape.faults, seed);
                        }
                        15..=16 => {
                            let r = rec.delete(key, || cluster.delete(key_bytes));
                            check_error(r.err(), shape.faults, seed);
                        }
                        _ => {
                            let r = rec.update(key, |trace| {
                                cluster.update(key_bytes, |old| {
                                    let observed = old.map(|b| decode(b));
                                    let (update, written) = rewrite(observed, v);
                                    trace.record(observed, written);
                                    (update, ())
                                })
                            });
                            check_error(r.err(), shape.faults, seed);
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

    recover(&cluster, &ids);
    let report = history.check().unwrap_or_else(|e| {
        panic!("seed {seed}: history is not linearizable ({changes} membership changes):\n{e}")
    });
    // Every operation was recorded, except gets that failed under faults
    // and updates that failed before their function ran.
    let total = shape.clients * shape.ops_per_client;
    if shape.faults {
        assert!(report.operations as u64 <= total, "seed {seed}");
    } else {
        assert_eq!(report.operations as u64, total, "seed {seed}: all recorded");
    }
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
    history.take()
}

/// Client calls fail only under injected faults, and only as a node being
/// unavailable or its store failing.
fn check_error(err: Option<ClusterError>, faults: bool, seed: u64) {
    match err {
        None => {}
        Some(ClusterError::Unavailable { .. } | ClusterError::Store { .. }) if faults => {}
        Some(e) => panic!("seed {seed}: client call failed: {e}"),
    }
}

#[test]
fn clients_and_membership_changes_are_linearizable() {
    let shape = Shape {
        clients: 4,
        ops_per_client: 3_000,
        keys: 12,
        changers: 2,
        faults: false,
    };
    for_each_seed(6, |seed| {
        stress(seed, &shape);
    });
}

/// The same with faults armed before 40% of the membership changes:
/// rollbacks re-publishing the old membership, pauses with clients writing
/// to ranges still copying, and client calls failing on crashed nodes.
#[test]
fn faulty_membership_changes_stay_linearizable() {
    let shape = Shape {
        clients: 4,
        ops_per_client: 3_000,
        keys: 12,
        changers: 2,
        faults: true,
    };
    for_each_seed(6, |seed| {
        stress(seed, &shape);
    });
    assert!(
        FAILED_CHANGES.load(Ordering::Relaxed) > 0,
        "no injected fault made a membership change fail"
    );
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
        faults: false,
    };
    for_each_seed(40, |seed| {
        stress(seed, &shape);
    });
    for_each_seed(40, |seed| {
        stress(
            seed,
            &Shape {
                faults: true,
                ..shape
            },
        );
    });
}

/// The value `op` leaves in the register, for the operations that set it
/// whatever it held (all but gets and updates that left the key alone).
fn value_after(op: &Op<u64>) -> Option<Option<u64>> {
    match op {
        Op::Put(v) => Some(Some(*v)),
        Op::Delete(_) => Some(None),
        Op::Update { observed, written } if observed != written => Some(*written),
        Op::Update { .. } | Op::Get(_) => None,
    }
}

/// Whether `op` may write a value (not `None`) to the register.
fn may_write_a_value(op: &Op<u64>) -> bool {
    matches!(value_after(op), Some(Some(_)))
}

/// Flips the report of an acknowledged delete `d2` that removed nothing to
/// "removed", choosing one that provably found the key absent: an
/// acknowledged delete `d1` of the same key completed before `d2` was
/// invoked, and no operation that may write a value overlaps the span from
/// `d1`'s invocation to `d2`'s completion, so none can take effect between
/// the two. Returns the index of the flipped event.
fn flip_a_provably_false_delete(events: &mut [Event<u32, u64>]) -> Option<usize> {
    let d2 = (0..events.len()).find(|&i| {
        let d2 = &events[i];
        let (Op::Delete(Some(false)), Some(d2_complete)) = (&d2.op, d2.complete) else {
            return false;
        };
        events.iter().any(|d1| {
            let Some(d1_complete) = d1.complete else {
                return false;
            };
            d1.key == d2.key
                && matches!(d1.op, Op::Delete(_))
                && d1_complete < d2.invoke
                && !events.iter().any(|w| {
                    w.key == d2.key
                        && may_write_a_value(&w.op)
                        && w.invoke <= d2_complete
                        && w.complete.is_none_or(|c| c >= d1.invoke)
                })
        })
    })?;
    events[d2].op = Op::Delete(Some(true));
    Some(d2)
}

/// Makes an acknowledged update `g` report that it found a value `w` that
/// an acknowledged operation `q` of the same key had already replaced:
/// `w`'s only write (values are unique) completed before `q` was invoked,
/// and `q` completed before `g` was invoked. Returns the index of `g`.
fn make_an_update_see_a_replaced_value(events: &mut [Event<u32, u64>]) -> Option<usize> {
    for g in 0..events.len() {
        let (Op::Update { observed, .. }, Some(_)) = (&events[g].op, events[g].complete) else {
            continue;
        };
        let (key, invoke, observed) = (events[g].key, events[g].invoke, *observed);
        // The acknowledged operation that set the register last before g.
        let Some(q) = events
            .iter()
            .filter(|q| q.key == key && value_after(&q.op).is_some())
            .filter(|q| q.complete.is_some_and(|c| c < invoke))
            .max_by_key(|q| q.invoke)
        else {
            continue;
        };
        let replaced = events
            .iter()
            .find_map(|p| match (value_after(&p.op), p.complete) {
                (Some(Some(w)), Some(c))
                    if p.key == key
                        && c < q.invoke
                        && value_after(&q.op) != Some(Some(w))
                        && observed != Some(w) =>
                {
                    Some(w)
                }
                _ => None,
            });
        if let Some(w) = replaced {
            if let Op::Update { observed, .. } = &mut events[g].op {
                *observed = Some(w);
            }
            return Some(g);
        }
    }
    None
}

/// The checker catches wrong results of deletes and updates in real
/// histories: each corruption below is provably not linearizable, and
/// the checker must say so for the key it was made on.
#[test]
fn checker_rejects_corrupted_histories() {
    let shape = Shape {
        clients: 4,
        ops_per_client: 1_500,
        keys: 12,
        changers: 1,
        faults: false,
    };
    for_each_seed(2, |seed| {
        let history = stress(seed, &shape);
        check(history.clone()).expect("the uncorrupted history passed in stress");

        let mut deletes = history.clone();
        let d = flip_a_provably_false_delete(&mut deletes)
            .unwrap_or_else(|| panic!("seed {seed}: no delete to corrupt"));
        let err = check(deletes).expect_err("a delete reported removing an absent key");
        let v = err
            .violation()
            .unwrap_or_else(|| panic!("seed {seed}: {err}"));
        assert_eq!(v.key, history[d].key, "seed {seed}: {v}");

        let mut updates = history.clone();
        let u = make_an_update_see_a_replaced_value(&mut updates)
            .unwrap_or_else(|| panic!("seed {seed}: no update to corrupt"));
        let err = check(updates).expect_err("an update found a replaced value");
        let v = err
            .violation()
            .unwrap_or_else(|| panic!("seed {seed}: {err}"));
        assert_eq!(v.key, history[u].key, "seed {seed}: {v}");
    });
}
