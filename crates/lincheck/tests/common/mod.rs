//! Shared helpers for the integration tests: a generator of histories that
//! are linearizable by construction, mutations that make them provably
//! non-linearizable, and a brute-force reference checker.
#![allow(dead_code)]

use std::collections::HashMap;

use rand::Rng;
use rand::rngs::SmallRng;
use ringkv_lincheck::{Event, Op};

/// Parameters of [`linearizable_history`].
#[derive(Clone, Debug)]
pub struct GenParams {
    pub clients: usize,
    pub ops: usize,
    pub keys: u32,
    /// Probability that an operation ends with an unknown outcome.
    pub unknown: f64,
    pub get: f64,
    pub delete: f64,
}

enum Phase {
    Idle,
    Invoked {
        key: u32,
        op: Op<u64>,
        invoke: u64,
        unknown: bool,
    },
    Linearized {
        key: u32,
        op: Op<u64>,
        invoke: u64,
        unknown: bool,
    },
}

/// Simulates `clients` clients against a set of atomic registers. Every
/// operation takes effect at a single tick strictly inside its recorded
/// interval, so the history is linearizable by construction. Put values are
/// unique (1, 2, 3, ...). Unknown-outcome operations either never take
/// effect or take effect and then lose their response.
pub fn linearizable_history(rng: &mut SmallRng, p: &GenParams) -> Vec<Event<u32, u64>> {
    let mut registers: HashMap<u32, Option<u64>> = HashMap::new();
    let mut phases: Vec<Phase> = (0..p.clients).map(|_| Phase::Idle).collect();
    let mut issued = 0;
    let mut next_value = 1u64;
    let mut t = 0u64;
    let mut events = Vec::new();
    loop {
        if issued == p.ops && phases.iter().all(|ph| matches!(ph, Phase::Idle)) {
            return events;
        }
        t += 1;
        let c = rng.random_range(0..p.clients);
        let phase = std::mem::replace(&mut phases[c], Phase::Idle);
        phases[c] = match phase {
            Phase::Idle if issued < p.ops => {
                issued += 1;
                let key = rng.random_range(0..p.keys);
                let x: f64 = rng.random();
                let op = if x < p.get {
                    Op::Get(None)
                } else if x < p.get + p.delete {
                    Op::Delete
                } else {
                    next_value += 1;
                    Op::Put(next_value - 1)
                };
                let unknown = rng.random_bool(p.unknown);
                Phase::Invoked {
                    key,
                    op,
                    invoke: t,
                    unknown,
                }
            }
            Phase::Idle => Phase::Idle,
            Phase::Invoked {
                key,
                op,
                invoke,
                unknown,
            } => {
                if unknown && rng.random_bool(0.5) {
                    // Failed before taking effect.
                    if !matches!(op, Op::Get(_)) {
                        events.push(Event::new(key, op, invoke, None).with_client(c as u64));
                    }
                    Phase::Idle
                } else {
                    let reg = registers.entry(key).or_insert(None);
                    let op = match op {
                        Op::Put(v) => {
                            *reg = Some(v);
                            Op::Put(v)
                        }
                        Op::Delete => {
                            *reg = None;
                            Op::Delete
                        }
                        Op::Get(_) => Op::Get(*reg),
                    };
                    Phase::Linearized {
                        key,
                        op,
                        invoke,
                        unknown,
                    }
                }
            }
            Phase::Linearized {
                key,
                op,
                invoke,
                unknown,
            } => {
                let complete = (!unknown).then_some(t);
                if !(unknown && matches!(op, Op::Get(_))) {
                    events.push(Event::new(key, op, invoke, complete).with_client(c as u64));
                }
                Phase::Idle
            }
        };
    }
}

/// Changes one acknowledged get to return a value that was never written.
/// Returns `None` if there is no acknowledged get.
pub fn mutate_never_written(
    rng: &mut SmallRng,
    events: &[Event<u32, u64>],
) -> Option<Vec<Event<u32, u64>>> {
    let gets: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i].op, Op::Get(_)) && events[i].complete.is_some())
        .collect();
    if gets.is_empty() {
        return None;
    }
    let g = gets[rng.random_range(0..gets.len())];
    let mut out = events.to_vec();
    out[g].op = Op::Get(Some(u64::MAX));
    Some(out)
}

/// Changes one acknowledged get `g` to return the value `w` of an
/// acknowledged put `p` such that an acknowledged write `q` (of another
/// value, or a delete) on the same key completed after `p` completed and
/// before `g` was invoked. Put values are unique, so `g` would have to read
/// `w` after `q` overwrote it with no other write of `w` possible: the result
/// is non-linearizable, and it passes the pre-pass (w was written before g).
pub fn mutate_stale_read(
    rng: &mut SmallRng,
    events: &[Event<u32, u64>],
) -> Option<Vec<Event<u32, u64>>> {
    let mut candidates = Vec::new();
    for (gi, g) in events.iter().enumerate() {
        let (Op::Get(_), Some(_)) = (&g.op, g.complete) else {
            continue;
        };
        // The acknowledged write q on g's key that completed before g started
        // and was invoked last.
        let q = events
            .iter()
            .filter(|q| q.key == g.key && !matches!(q.op, Op::Get(_)))
            .filter(|q| q.complete.is_some_and(|c| c < g.invoke))
            .max_by_key(|q| q.invoke);
        let Some(q) = q else { continue };
        for p in events.iter() {
            if let (Op::Put(w), Some(pc)) = (&p.op, p.complete)
                && p.key == g.key
                && pc < q.invoke
                && q.op != Op::Put(*w)
            {
                candidates.push((gi, *w));
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (gi, w) = candidates[rng.random_range(0..candidates.len())];
    let mut out = events.to_vec();
    out[gi].op = Op::Get(Some(w));
    Some(out)
}

/// Reference checker: tries every order consistent with real time (no
/// memoization, no reductions). Exponential; only for tiny histories.
pub fn brute_force_linearizable(events: &[Event<u32, u64>]) -> bool {
    let mut keys: Vec<u32> = events.iter().map(|e| e.key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().all(|k| {
        let ops: Vec<&Event<u32, u64>> = events
            .iter()
            .filter(|e| e.key == k)
            .filter(|e| !(matches!(e.op, Op::Get(_)) && e.complete.is_none()))
            .collect();
        let mut done = vec![false; ops.len()];
        brute(&ops, &mut done, None)
    })
}

fn brute(ops: &[&Event<u32, u64>], done: &mut [bool], state: Option<u64>) -> bool {
    if (0..ops.len()).all(|i| done[i] || ops[i].complete.is_none()) {
        return true;
    }
    for i in 0..ops.len() {
        if done[i] {
            continue;
        }
        // Minimal: no pending op completed strictly before i was invoked.
        let minimal = (0..ops.len())
            .all(|j| done[j] || j == i || ops[j].complete.is_none_or(|c| c >= ops[i].invoke));
        if !minimal {
            continue;
        }
        let next = match &ops[i].op {
            Op::Put(v) => Some(*v),
            Op::Delete => None,
            Op::Get(r) => {
                if *r != state {
                    continue;
                }
                state
            }
        };
        done[i] = true;
        let ok = brute(ops, done, next);
        done[i] = false;
        if ok {
            return true;
        }
    }
    false
}

/// Arbitrary (usually non-linearizable) tiny history over small domains.
pub fn random_small_history(
    rng: &mut SmallRng,
    n: usize,
    keys: u32,
    unknown: f64,
) -> Vec<Event<u32, u64>> {
    (0..n)
        .map(|i| {
            let key = rng.random_range(0..keys);
            let invoke = rng.random_range(0..12u64);
            let complete = if rng.random_bool(unknown) {
                None
            } else {
                Some(invoke + rng.random_range(0..6u64))
            };
            let small = |rng: &mut SmallRng| match rng.random_range(0..3u8) {
                0 => None,
                x => Some(u64::from(x)),
            };
            let op = match rng.random_range(0..5u8) {
                0 | 1 => Op::Put(rng.random_range(1..3u64)),
                2 => Op::Delete,
                _ => Op::Get(small(rng)),
            };
            Event::new(key, op, invoke, complete).with_client(i as u64)
        })
        .collect()
}

/// Second reference checker for medium histories (at most 64 operations per
/// key): plain exhaustive search over (set of linearized ops, value) with a
/// memo of failed configurations, no reductions.
pub fn reference_linearizable(events: &[Event<u32, u64>]) -> bool {
    let mut keys: Vec<u32> = events.iter().map(|e| e.key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().all(|k| {
        let ops: Vec<&Event<u32, u64>> = events
            .iter()
            .filter(|e| e.key == k)
            .filter(|e| !(matches!(e.op, Op::Get(_)) && e.complete.is_none()))
            .collect();
        assert!(
            ops.len() <= 64,
            "reference checker handles at most 64 ops per key"
        );
        let mut failed = std::collections::HashSet::new();
        reference(&ops, 0, None, &mut failed)
    })
}

fn reference(
    ops: &[&Event<u32, u64>],
    done: u64,
    state: Option<u64>,
    failed: &mut std::collections::HashSet<(u64, Option<u64>)>,
) -> bool {
    let is_done = |i: usize| done & (1 << i) != 0;
    if (0..ops.len()).all(|i| is_done(i) || ops[i].complete.is_none()) {
        return true;
    }
    if failed.contains(&(done, state)) {
        return false;
    }
    for i in 0..ops.len() {
        if is_done(i) {
            continue;
        }
        let minimal = (0..ops.len())
            .all(|j| is_done(j) || j == i || ops[j].complete.is_none_or(|c| c >= ops[i].invoke));
        if !minimal {
            continue;
        }
        let next = match &ops[i].op {
            Op::Put(v) => Some(*v),
            Op::Delete => None,
            Op::Get(r) if *r == state => state,
            Op::Get(_) => continue,
        };
        if reference(ops, done | (1 << i), next, failed) {
            return true;
        }
    }
    failed.insert((done, state));
    false
}

/// A history from [`linearizable_history`], with each acknowledged get's
/// result replaced, with probability `noise`, by a random value that was
/// written to that key (or `None`): a mix of linearizable and not.
pub fn noisy_history(rng: &mut SmallRng, p: &GenParams, noise: f64) -> Vec<Event<u32, u64>> {
    let mut h = linearizable_history(rng, p);
    let written: Vec<(u32, u64)> = h
        .iter()
        .filter_map(|e| match e.op {
            Op::Put(v) => Some((e.key, v)),
            _ => None,
        })
        .collect();
    for e in &mut h {
        if matches!(e.op, Op::Get(_)) && e.complete.is_some() && rng.random_bool(noise) {
            let same_key: Vec<u64> = written
                .iter()
                .filter(|(k, _)| *k == e.key)
                .map(|&(_, v)| v)
                .collect();
            let pick = rng.random_range(0..=same_key.len());
            e.op = Op::Get(same_key.get(pick).copied());
        }
    }
    h
}
