//! Balance, movement and size of random vnodes against balanced partitions.
//!
//! ```sh
//! cargo run --release -p ringkv-ring --example balance_report
//! ```
//!
//! For N = 3, 10, 100 and 1,000 weight-1 nodes (`node-0` .. `node-{N-1}`,
//! added in order) it builds a random-vnode ring (256 vnodes per node) and
//! a balanced ring (65,536 partitions) and prints:
//! - each node's share of the circle (exact, from the ring's arcs):
//!   busiest / mean and the relative standard deviation;
//! - the same for replica load: the measure of the circle whose preference
//!   list of 3 contains the node, against its mean;
//! - keys moved when `node-N` joins and when `node-{N/2}` leaves, over
//!   1,000,000 random keys, against the optimum (`K/(N+1)` on an add,
//!   `K/N` on a remove), checking that exactly the new node's (the
//!   removed node's) keys moved; and the same exactly, as the fraction of
//!   the circle in `Ring::diff`, times `N+1` (`N`);
//! - `Ring::memory_bytes` and the length of `Ring::to_json`.
//!
//! A second table churns weighted rings: N nodes of weights 1..=4, then
//! 100 changes alternating "remove a member" and "add a new node of weight
//! 1..=4" (pseudo-random, fixed seed), and gives the busiest weighted
//! owner share and replica load (each against `w / W` of the total).
#![allow(missing_docs)]

use std::collections::HashMap;
use std::time::Instant;

use ringkv_ring::{BalancedConfig, Ring, RingConfig, Token, key_token};

const SIZES: [usize; 4] = [3, 10, 100, 1000];
const KEYS: u64 = 1_000_000;
const REPLICAS: usize = 3;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn keys() -> Vec<Token> {
    (0..KEYS)
        .map(|i| {
            let a = splitmix(i);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&a.to_le_bytes());
            key[8..].copy_from_slice(&splitmix(a).to_le_bytes());
            key_token(&key)
        })
        .collect()
}

/// (busiest / mean, relative standard deviation) of `loads`.
fn spread(loads: &[f64]) -> (f64, f64) {
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    let var = loads.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / loads.len() as f64;
    let max = loads.iter().cloned().fold(f64::MIN, f64::max);
    (max / mean, var.sqrt() / mean)
}

/// Exact owner shares and replica loads (fractions of the circle), per node.
fn loads(ring: &Ring) -> (Vec<f64>, Vec<f64>) {
    let vnodes: Vec<(Token, String)> = ring.vnodes().map(|(t, id)| (t, id.to_string())).collect();
    let mut own: HashMap<&str, f64> = HashMap::new();
    let mut rep: HashMap<String, f64> = HashMap::new();
    for (k, (t, id)) in vnodes.iter().enumerate() {
        let prev = vnodes[(k + vnodes.len() - 1) % vnodes.len()].0;
        if k > 0 && prev == *t {
            continue; // a shared token: the first entry owns the arc
        }
        let len = match t.wrapping_sub(prev) {
            0 => 2f64.powi(64),
            l => l as f64,
        } / 2f64.powi(64);
        *own.entry(id.as_str()).or_default() += len;
        for r in ring.preference_list_of_token(*t, REPLICAS) {
            *rep.entry(r.to_string()).or_default() += len;
        }
    }
    (own.into_values().collect(), rep.into_values().collect())
}

/// Busiest owner share and replica load, each divided by the node's
/// weighted ideal (`w / W`, and `3 w / W` for replicas).
fn weighted_busiest(ring: &Ring) -> (f64, f64) {
    let vnodes: Vec<(Token, String)> = ring.vnodes().map(|(t, id)| (t, id.to_string())).collect();
    let mut own: HashMap<String, f64> = HashMap::new();
    let mut rep: HashMap<String, f64> = HashMap::new();
    for (k, (t, id)) in vnodes.iter().enumerate() {
        let prev = vnodes[(k + vnodes.len() - 1) % vnodes.len()].0;
        if k > 0 && prev == *t {
            continue;
        }
        let len = t.wrapping_sub(prev) as f64 / 2f64.powi(64);
        *own.entry(id.clone()).or_default() += len;
        for r in ring.preference_list_of_token(*t, REPLICAS) {
            *rep.entry(r.to_string()).or_default() += len;
        }
    }
    let total: f64 = ring.nodes().map(|(_, w)| f64::from(w)).sum();
    let mut busiest = (0f64, 0f64);
    for (id, w) in ring.nodes() {
        let ideal = f64::from(w) / total;
        busiest.0 = busiest.0.max(own[id.as_str()] / ideal);
        busiest.1 = busiest.1.max(rep[id.as_str()] / (REPLICAS as f64 * ideal));
    }
    busiest
}

fn churn(empty: Ring, n: usize) -> Ring {
    let weight = |i: usize| 1 + (splitmix(i as u64 ^ 0x77) % 4) as u32;
    let mut ring = (0..n).fold(empty, |r, i| {
        r.with_node(format!("node-{i}"), weight(i)).unwrap()
    });
    for step in 0..100usize {
        if step % 2 == 0 {
            let pick = (splitmix(step as u64) % ring.len() as u64) as usize;
            let id = ring.nodes().nth(pick).unwrap().0.clone();
            ring = ring.without_node(id.as_str()).unwrap();
        } else {
            let i = n + step;
            ring = ring.with_node(format!("node-{i}"), weight(i)).unwrap();
        }
    }
    ring
}

/// Keys whose owner differs between `a` and `b`.
fn moved(a: &Ring, b: &Ring, keys: &[Token]) -> u64 {
    keys.iter()
        .filter(|&&t| a.owner_of_token(t) != b.owner_of_token(t))
        .count() as u64
}

fn build(empty: Ring, n: usize) -> Ring {
    (0..n).fold(empty, |r, i| r.with_node(format!("node-{i}"), 1).unwrap())
}

fn main() {
    let keys = keys();
    println!(
        "| N | strategy | tokens per node | busiest/mean | rel. std dev | replica-3 busiest/mean | \
         replica-3 rel. std dev | keys moved on add (x optimum) | keys moved on remove (x optimum) | \
         circle moved on add / remove (x optimum, exact) | memory_bytes | JSON bytes | build N nodes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in SIZES {
        for balanced in [false, true] {
            let empty = if balanced {
                Ring::balanced(BalancedConfig::default()).unwrap()
            } else {
                Ring::new(RingConfig::default()).unwrap()
            };
            let start = Instant::now();
            let ring = build(empty, n);
            let built = start.elapsed();
            let (own, rep) = loads(&ring);
            let (own_max, own_sd) = spread(&own);
            let (rep_max, rep_sd) = spread(&rep);

            let newcomer = format!("node-{n}");
            let added = ring.with_node(newcomer.as_str(), 1).unwrap();
            let add_moved = moved(&ring, &added, &keys);
            let new_owns = keys
                .iter()
                .filter(|&&t| added.owner_of_token(t).unwrap() == newcomer.as_str())
                .count() as u64;
            assert_eq!(add_moved, new_owns, "an add moved keys to another node");
            let add_opt = KEYS as f64 / (n + 1) as f64;

            let victim = format!("node-{}", n / 2);
            let removed = ring.without_node(&victim).unwrap();
            let rm_moved = moved(&ring, &removed, &keys);
            let victim_owned = keys
                .iter()
                .filter(|&&t| ring.owner_of_token(t).unwrap() == victim.as_str())
                .count() as u64;
            assert_eq!(rm_moved, victim_owned, "a remove moved other nodes' keys");
            let rm_opt = KEYS as f64 / n as f64;

            let tokens: Vec<usize> = ring
                .nodes()
                .map(|(id, _)| ring.tokens_of(id.as_str()).unwrap().len())
                .collect();
            let (tmin, tmax) = (tokens.iter().min().unwrap(), tokens.iter().max().unwrap());
            let per_node = if tmin == tmax {
                format!("{tmin}")
            } else {
                format!("{tmin}-{tmax}")
            };
            println!(
                "| {n} | {} | {per_node} | {own_max:.3} | {:.2}% | {rep_max:.3} | {:.2}% | \
                 {add_moved} ({:.3}) | {rm_moved} ({:.3}) | {:.3} / {:.3} | {} | {} | {:.1} ms |",
                if balanced {
                    "balanced Q=65,536"
                } else {
                    "random 256"
                },
                own_sd * 100.0,
                rep_sd * 100.0,
                add_moved as f64 / add_opt,
                rm_moved as f64 / rm_opt,
                ring.diff(&added).fraction() * (n + 1) as f64,
                ring.diff(&removed).fraction() * n as f64,
                ring.memory_bytes(),
                ring.to_json().len(),
                built.as_secs_f64() * 1e3,
            );
        }
    }

    println!();
    println!(
        "| N (weights 1..=4, after 100 changes) | strategy | busiest owner share / weighted mean | \
         busiest replica-3 load / weighted mean |"
    );
    println!("|---|---|---|---|");
    for n in [10, 100, 1000] {
        for balanced in [false, true] {
            let empty = if balanced {
                Ring::balanced(BalancedConfig::default()).unwrap()
            } else {
                Ring::new(RingConfig::default()).unwrap()
            };
            let ring = churn(empty, n);
            let (own, rep) = weighted_busiest(&ring);
            println!(
                "| {n} | {} | {own:.3} | {rep:.3} |",
                if balanced {
                    "balanced Q=65,536"
                } else {
                    "random 256/weight"
                }
            );
        }
    }
}
