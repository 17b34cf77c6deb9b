//! Checking side: per-key partitioning, the cheap pre-pass, and turning one
//! key's events into the operations the search works on.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use crate::history::{Event, Op};
use crate::model::{KOp, NEVER_WRITTEN};
use crate::report::{CheckError, CheckReport, Inconclusive, Malformed, Violation};
use crate::search::{SearchOutcome, search};

/// Tuning knobs for [`check_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Maximum number of distinct search configurations (set of linearized
    /// operations + register value) explored for one key before giving up
    /// with [`CheckError::Inconclusive`]. Default: 2,000,000.
    pub max_states_per_key: u64,
    /// How many operations of the longest linearizable prefix are shown in a
    /// [`Violation`]. Default: 10.
    pub context_ops: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            max_states_per_key: 2_000_000,
            context_ops: 10,
        }
    }
}

/// Checks that `events` are linearizable per key with the default
/// [`CheckConfig`]. See [`check_with`].
pub fn check<K, V, I>(events: I) -> Result<CheckReport, CheckError<K, V>>
where
    K: Clone + Eq + Hash + fmt::Debug,
    V: Clone + Eq + Hash + fmt::Debug,
    I: IntoIterator<Item = Event<K, V>>,
{
    check_with(events, &CheckConfig::default())
}

/// Checks that `events` are linearizable per key: each key is an independent
/// register holding `Option<V>`, initially `None`.
///
/// Two operations are ordered in real time iff one's `complete` is strictly
/// smaller than the other's `invoke`; intervals sharing an endpoint count as
/// concurrent. Keys are checked in order of first appearance. If any key is
/// violating, the first such violation is returned even if another key was
/// inconclusive.
pub fn check_with<K, V, I>(events: I, config: &CheckConfig) -> Result<CheckReport, CheckError<K, V>>
where
    K: Clone + Eq + Hash + fmt::Debug,
    V: Clone + Eq + Hash + fmt::Debug,
    I: IntoIterator<Item = Event<K, V>>,
{
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut per_key: Vec<Vec<Event<K, V>>> = Vec::new();
    let mut report = CheckReport::default();
    for e in events {
        if let Some(c) = e.complete
            && c < e.invoke
        {
            return Err(CheckError::Malformed(Malformed {
                key: e.key,
                client: e.client,
                invoke: e.invoke,
                complete: c,
            }));
        }
        report.operations += 1;
        let slot = *index.entry(e.key.clone()).or_insert_with(|| {
            per_key.push(Vec::new());
            per_key.len() - 1
        });
        per_key[slot].push(e);
    }
    report.keys = per_key.len();

    let mut inconclusive = None;
    for events in per_key {
        match check_key(events, config) {
            KeyOutcome::Ok { states, ignored } => {
                report.states_explored += states;
                report.max_states_per_key = report.max_states_per_key.max(states);
                report.ignored_operations += ignored;
            }
            KeyOutcome::Violation(v) => return Err(CheckError::Violation(v)),
            KeyOutcome::Inconclusive(i) => {
                inconclusive.get_or_insert(i);
            }
        }
    }
    match inconclusive {
        Some(i) => Err(CheckError::Inconclusive(i)),
        None => Ok(report),
    }
}

enum KeyOutcome<K, V> {
    Ok { states: u64, ignored: usize },
    Violation(Box<Violation<K, V>>),
    Inconclusive(Inconclusive<K>),
}

fn check_key<K, V>(events: Vec<Event<K, V>>, config: &CheckConfig) -> KeyOutcome<K, V>
where
    K: Clone + Eq + Hash + fmt::Debug,
    V: Clone + Eq + Hash + fmt::Debug,
{
    // Intern written values; id 0 is `None`.
    let mut values: Vec<Option<V>> = vec![None];
    let mut ids: HashMap<V, u32> = HashMap::new();
    // Earliest invocation of a write of each value id.
    let mut first_write: Vec<u64> = vec![0];
    for e in &events {
        if let Op::Put(v) = &e.op {
            let id = *ids.entry(v.clone()).or_insert_with(|| {
                values.push(Some(v.clone()));
                first_write.push(u64::MAX);
                (values.len() - 1) as u32
            });
            first_write[id as usize] = first_write[id as usize].min(e.invoke);
        }
    }
    let mut read_ids = vec![false; values.len()];
    let value_id = |r: &Option<V>| match r {
        None => 0,
        Some(v) => ids.get(v).copied().unwrap_or(NEVER_WRITTEN),
    };

    // Pre-pass: reads of values never written, or only written after the read.
    for (i, e) in events.iter().enumerate() {
        let (Op::Get(r), Some(complete)) = (&e.op, e.complete) else {
            continue;
        };
        let id = value_id(r);
        let reason = if id == NEVER_WRITTEN {
            "a read returned a value that was never written to this key".to_owned()
        } else if first_write[id as usize] > complete {
            format!(
                "a read returned a value whose earliest write was invoked at {}, after the read completed",
                first_write[id as usize]
            )
        } else {
            read_ids[id as usize] = true;
            continue;
        };
        return KeyOutcome::Violation(Box::new(Violation {
            key: e.key.clone(),
            reason,
            operations: events.len(),
            prefix_len: 0,
            context: Vec::new(),
            state: None,
            stuck: vec![events[i].clone()],
            states_explored: 0,
        }));
    }

    // Build the operations the search works on, dropping those that cannot
    // matter: unknown-outcome reads, and unknown-outcome writes of a value no
    // read returned (such a write can always be assumed to never have taken
    // effect: removing it from a linearization only changes the register
    // between it and the next write, and no read there could have seen it).
    let mut ops = Vec::with_capacity(events.len());
    let mut ignored = 0;
    for (src, e) in events.iter().enumerate() {
        let (write, value) = match &e.op {
            Op::Put(v) => (true, ids[v]),
            Op::Delete => (true, 0),
            Op::Get(r) => (false, value_id(r)),
        };
        let known = e.complete.is_some();
        if !known && (!write || !read_ids[value as usize]) {
            ignored += 1;
            continue;
        }
        ops.push(KOp {
            invoke: e.invoke,
            complete: e.complete.unwrap_or(u64::MAX),
            known,
            write,
            value,
            src,
        });
    }
    ops.sort_by_key(|o| (o.invoke, o.complete));

    let to_event = |i: u32| events[ops[i as usize].src].clone();
    match search(&ops, values.len(), config.max_states_per_key) {
        SearchOutcome::Linearizable { states } => KeyOutcome::Ok { states, ignored },
        SearchOutcome::Exhausted { states, max_depth } => KeyOutcome::Inconclusive(Inconclusive {
            key: events[0].key.clone(),
            operations: events.len(),
            states_explored: states,
            prefix_len: max_depth,
        }),
        SearchOutcome::Stuck { states, dead_end } => {
            let context_start = dead_end.path.len().saturating_sub(config.context_ops);
            let mut stuck = dead_end.stuck.clone();
            stuck.sort_by_key(|&i| (ops[i as usize].invoke, ops[i as usize].complete));
            KeyOutcome::Violation(Box::new(Violation {
                key: events[0].key.clone(),
                reason: format!(
                    "no linearization exists; the search got stuck after {} operations with {} \
                     concurrent candidate(s) for the next one",
                    dead_end.path.len(),
                    stuck.len()
                ),
                operations: events.len(),
                prefix_len: dead_end.path.len(),
                context: dead_end.path[context_start..]
                    .iter()
                    .map(|&i| to_event(i))
                    .collect(),
                state: values[dead_end.state as usize].clone(),
                stuck: stuck.into_iter().map(to_event).collect(),
                states_explored: states,
            }))
        }
    }
}
