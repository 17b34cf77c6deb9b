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
    /// Probability of a read-modify-write (the rest are puts).
    pub update: f64,
    /// Probability that a delete's returned bool is recorded.
    pub report: f64,
}

/// What an operation will do, decided at its invocation.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Get,
    Put(u64),
    /// A delete; `report` says whether its returned bool is recorded.
    Delete {
        report: bool,
    },
    /// A read-modify-write leaving this (`Keep`: the value it finds).
    Update(Effect),
}

#[derive(Clone, Copy, Debug)]
enum Effect {
    Put(u64),
    Delete,
    Keep,
}

impl Plan {
    /// Applies the plan to `reg` and returns the operation as recorded.
    fn apply(self, reg: &mut Option<u64>) -> Op<u64> {
        match self {
            Plan::Get => Op::Get(*reg),
            Plan::Put(v) => {
                *reg = Some(v);
                Op::Put(v)
            }
            Plan::Delete { report } => Op::Delete(report.then_some(reg.take().is_some())),
            Plan::Update(effect) => {
                let observed = *reg;
                *reg = match effect {
                    Effect::Put(v) => Some(v),
                    Effect::Delete => None,
                    Effect::Keep => observed,
                };
                Op::Update {
                    observed,
                    written: *reg,
                }
            }
        }
    }
}

enum Phase {
    Idle,
    Invoked {
        key: u32,
        plan: Plan,
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
/// interval, so the history is linearizable by construction. Written values
/// are unique (1, 2, 3, ...), by puts and updates alike. Unknown-outcome
/// operations either never take effect or take effect and then lose their
/// response; an update that never took effect is either not recorded (its
/// function never ran) or recorded with what its function saw when the
/// write failed.
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
                let mut fresh = || {
                    next_value += 1;
                    next_value - 1
                };
                let plan = if x < p.get {
                    Plan::Get
                } else if x < p.get + p.delete {
                    Plan::Delete {
                        report: rng.random_bool(p.report),
                    }
                } else if x < p.get + p.delete + p.update {
                    Plan::Update(match rng.random_range(0..6) {
                        0 => Effect::Delete,
                        1 => Effect::Keep,
                        _ => Effect::Put(fresh()),
                    })
                } else {
                    Plan::Put(fresh())
                };
                let unknown = rng.random_bool(p.unknown);
                Phase::Invoked {
                    key,
                    plan,
                    invoke: t,
                    unknown,
                }
            }
            Phase::Idle => Phase::Idle,
            Phase::Invoked {
                key,
                plan,
                invoke,
                unknown,
            } => {
                let reg = registers.entry(key).or_insert(None);
                if unknown && rng.random_bool(0.5) {
                    // Failed before taking effect.
                    let op = match plan {
                        Plan::Get => None,
                        Plan::Put(v) => Some(Op::Put(v)),
                        Plan::Delete { .. } => Some(Op::Delete(None)),
                        // The function saw the register, then the write failed.
                        Plan::Update(_) if rng.random_bool(0.5) => {
                            Some(plan.apply(&mut reg.clone()))
                        }
                        Plan::Update(_) => None,
                    };
                    if let Some(op) = op {
                        events.push(Event::new(key, op, invoke, None).with_client(c as u64));
                    }
                    Phase::Idle
                } else {
                    let mut op = plan.apply(reg);
                    if unknown && matches!(op, Op::Delete(_)) {
                        // The caller never saw the report.
                        op = Op::Delete(None);
                    }
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

/// The value an operation leaves in the register, for the operations that
/// determine it (all but gets).
fn value_after(op: &Op<u64>) -> Option<Option<u64>> {
    match op {
        Op::Put(v) => Some(Some(*v)),
        Op::Delete(_) => Some(None),
        Op::Update { written, .. } => Some(*written),
        Op::Get(_) => None,
    }
}

/// The value an operation really wrote (not an update that left the key
/// alone), if any.
fn value_written(op: &Op<u64>) -> Option<u64> {
    match op {
        Op::Put(v) => Some(*v),
        Op::Update {
            observed,
            written: Some(w),
        } if *observed != Some(*w) => Some(*w),
        _ => None,
    }
}

/// The value an operation observed: what a get returned or what an update
/// found.
fn observed_mut(op: &mut Op<u64>) -> Option<&mut Option<u64>> {
    match op {
        Op::Get(r) | Op::Update { observed: r, .. } => Some(r),
        Op::Put(_) | Op::Delete(_) => None,
    }
}

/// Changes what one acknowledged get returned, or one acknowledged update
/// found, to a value that was never written. Returns `None` if there is no
/// acknowledged get or update.
pub fn mutate_never_written(
    rng: &mut SmallRng,
    events: &[Event<u32, u64>],
) -> Option<Vec<Event<u32, u64>>> {
    let mut out = events.to_vec();
    let observers: Vec<usize> = (0..out.len())
        .filter(|&i| observed_mut(&mut out[i].op).is_some() && out[i].complete.is_some())
        .collect();
    if observers.is_empty() {
        return None;
    }
    let g = observers[rng.random_range(0..observers.len())];
    *observed_mut(&mut out[g].op).expect("an observer") = Some(u64::MAX);
    Some(out)
}

/// Changes what one acknowledged get `g` returned (or one acknowledged update
/// `g` found) to the value `w` written by an acknowledged operation `p` such
/// that an acknowledged operation `q` on the same key, leaving the register
/// without `w`, was invoked after `p` completed and completed before `g` was
/// invoked. Written values are unique, so `g` would have to see `w` after
/// `q` removed it with no other write of `w` possible: the result is
/// non-linearizable, and it passes the pre-pass (w was written before g).
pub fn mutate_stale_read(
    rng: &mut SmallRng,
    events: &[Event<u32, u64>],
) -> Option<Vec<Event<u32, u64>>> {
    let mut candidates = Vec::new();
    for (gi, g) in events.iter().enumerate() {
        if !matches!(g.op, Op::Get(_) | Op::Update { .. }) || g.complete.is_none() {
            continue;
        }
        // The acknowledged operation q on g's key that determines the
        // register, completed before g started, and was invoked last.
        let q = events
            .iter()
            .filter(|q| q.key == g.key && value_after(&q.op).is_some())
            .filter(|q| q.complete.is_some_and(|c| c < g.invoke))
            .max_by_key(|q| q.invoke);
        let Some(q) = q else { continue };
        for p in events.iter() {
            if let (Some(w), Some(pc)) = (value_written(&p.op), p.complete)
                && p.key == g.key
                && pc < q.invoke
                && value_after(&q.op) != Some(Some(w))
            {
                candidates.push((gi, w));
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (gi, w) = candidates[rng.random_range(0..candidates.len())];
    let mut out = events.to_vec();
    *observed_mut(&mut out[gi].op).expect("an observer") = Some(w);
    Some(out)
}

/// The register after `op` if it may take effect on `state` (`known`: its
/// outcome is known), or `None` if it may not: the sequential specification
/// the checker is compared against, written out plainly.
pub fn step(op: &Op<u64>, known: bool, state: Option<u64>) -> Option<Option<u64>> {
    match op {
        Op::Put(v) => Some(Some(*v)),
        Op::Delete(Some(removed)) if known => (*removed == state.is_some()).then_some(None),
        Op::Delete(_) => Some(None),
        Op::Get(r) => (*r == state).then_some(state),
        Op::Update { observed, written } => (*observed == state).then_some(*written),
    }
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
        let Some(next) = step(&ops[i].op, ops[i].complete.is_some(), state) else {
            continue;
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
            let op = match rng.random_range(0..8u8) {
                0 | 1 => Op::Put(rng.random_range(1..3u64)),
                2 => Op::Delete(None),
                3 => Op::Delete(Some(rng.random_bool(0.5))),
                4 => Op::Update {
                    observed: small(rng),
                    written: small(rng),
                },
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
        let Some(next) = step(&ops[i].op, ops[i].complete.is_some(), state) else {
            continue;
        };
        if reference(ops, done | (1 << i), next, failed) {
            return true;
        }
    }
    failed.insert((done, state));
    false
}

/// A history from [`linearizable_history`], with each acknowledged get's
/// result and update's found value replaced, with probability `noise`, by a
/// random value that was written to that key (or `None`), and each
/// acknowledged delete's report flipped with that probability: a mix of
/// linearizable and not.
pub fn noisy_history(rng: &mut SmallRng, p: &GenParams, noise: f64) -> Vec<Event<u32, u64>> {
    let mut h = linearizable_history(rng, p);
    let written: Vec<(u32, u64)> = h
        .iter()
        .filter_map(|e| value_written(&e.op).map(|v| (e.key, v)))
        .collect();
    for e in &mut h {
        if e.complete.is_none() || !rng.random_bool(noise) {
            continue;
        }
        let key = e.key;
        if let Op::Delete(Some(removed)) = &mut e.op {
            *removed = !*removed;
        } else if let Some(seen) = observed_mut(&mut e.op) {
            let same_key: Vec<u64> = written
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|&(_, v)| v)
                .collect();
            let pick = rng.random_range(0..=same_key.len());
            *seen = same_key.get(pick).copied();
        }
    }
    h
}
