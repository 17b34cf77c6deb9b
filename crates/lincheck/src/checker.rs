//! Checking side: per-key partitioning, the cheap pre-pass, and turning one
//! key's events into the operations the search works on.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use crate::history::{Event, Op};
use crate::model::{ANY, KOp, NEVER_WRITTEN, PRESENT, Values};
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
    let values = Values::new(events.iter().map(|e| (&e.op, e.invoke)));

    // Pre-pass: operations that observed a value never written, or only
    // written after they completed.
    for e in &events {
        let Some(complete) = e.complete else {
            continue;
        };
        let Some(reason) = impossible_observation(&values, &e.op, complete) else {
            continue;
        };
        return KeyOutcome::Violation(Box::new(Violation {
            key: e.key.clone(),
            reason,
            operations: events.len(),
            prefix_len: 0,
            context: Vec::new(),
            state: None,
            stuck: vec![e.clone()],
            states_explored: 0,
        }));
    }

    // Build the operations the search works on, dropping those that cannot
    // matter: unknown-outcome reads, unknown-outcome updates of a value never
    // written, and unknown-outcome writes of a value no operation requires.
    // Such a write can always be assumed to never have taken effect:
    // removing it from a linearization only changes the register between it
    // and the next write, and no operation there could have depended on it.
    let mut ops = Vec::with_capacity(events.len());
    for (src, e) in events.iter().enumerate() {
        let known = e.complete.is_some();
        let (pre, post) = values.semantics(&e.op, known);
        ops.push(KOp {
            invoke: e.invoke,
            complete: e.complete.unwrap_or(u64::MAX),
            known,
            pre,
            post,
            src,
        });
    }
    ops.retain(|op| op.known || (!op.is_read() && op.pre != NEVER_WRITTEN));
    let mut required = vec![false; values.len()];
    let mut present_required = false;
    for op in &ops {
        match op.pre {
            ANY => {}
            PRESENT => present_required = true,
            v => required[v as usize] = true,
        }
    }
    ops.retain(|op| op.known || required[op.post as usize] || (op.post != 0 && present_required));
    let ignored = events.len() - ops.len();
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
                state: values.get(dead_end.state).clone(),
                stuck: stuck.into_iter().map(to_event).collect(),
                states_explored: states,
            }))
        }
    }
}

/// Why an operation that completed at `complete` cannot have observed what
/// it reports, whatever the order of the other operations: it observed a
/// value that was never written, or whose every write was invoked after it
/// completed. `None` if nothing is wrong with it on its own.
fn impossible_observation<V>(values: &Values<V>, op: &Op<V>, complete: u64) -> Option<String>
where
    V: Clone + Eq + Hash,
{
    let (pre, _) = values.semantics(op, true);
    let (what, noun) = match op {
        Op::Get(_) => ("a read returned", "read"),
        Op::Update { .. } => ("an update found", "update"),
        Op::Delete(Some(true)) => {
            let first = values.first_write_of_some();
            return (first > complete).then(|| {
                "a delete reported removing a value, but no value was written to this key \
                 before it completed"
                    .to_owned()
            });
        }
        Op::Put(_) | Op::Delete(_) => return None,
    };
    if pre == NEVER_WRITTEN {
        return Some(format!("{what} a value that was never written to this key"));
    }
    let first = values.first_write(pre);
    (first > complete).then(|| {
        format!(
            "{what} a value whose earliest write was invoked at {first}, after the {noun} completed"
        )
    })
}
