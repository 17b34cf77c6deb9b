//! Checking side: per-key partitioning, cheap pre-pass, and the WGL search.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::history::{Event, Op};

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

/// Statistics of a successful check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Number of distinct keys.
    pub keys: usize,
    /// Number of events given to the checker.
    pub operations: usize,
    /// Events that were ignored because they cannot affect the verdict:
    /// reads with unknown outcome, and unknown-outcome writes whose value no
    /// read ever observed.
    pub ignored_operations: usize,
    /// Total search configurations explored, over all keys.
    pub states_explored: u64,
    /// The most configurations explored for a single key.
    pub max_states_per_key: u64,
}

/// Why a history was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError<K, V> {
    /// The history of some key is not linearizable.
    Violation(Box<Violation<K, V>>),
    /// The search budget ([`CheckConfig::max_states_per_key`]) ran out before
    /// a verdict was reached for some key (and no other key was found to be
    /// violating).
    Inconclusive(Inconclusive<K>),
    /// An event completed before it was invoked.
    Malformed(Malformed<K>),
}

impl<K, V> CheckError<K, V> {
    /// The violation, if this is one.
    pub fn violation(&self) -> Option<&Violation<K, V>> {
        match self {
            CheckError::Violation(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is a [`CheckError::Violation`].
    pub fn is_violation(&self) -> bool {
        matches!(self, CheckError::Violation(_))
    }

    /// Whether this is a [`CheckError::Inconclusive`].
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, CheckError::Inconclusive(_))
    }
}

impl<K: fmt::Debug, V: fmt::Debug + PartialEq> fmt::Display for CheckError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(v) => v.fmt(f),
            CheckError::Inconclusive(i) => i.fmt(f),
            CheckError::Malformed(m) => m.fmt(f),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug + PartialEq> std::error::Error for CheckError<K, V> {}

/// Evidence that one key's history is not linearizable.
///
/// It describes the point where the search got stuck: the tail of the
/// longest linearizable prefix that was found (in linearization order), the
/// register value after that prefix, and the operations that were candidates
/// to go next (all concurrent with each other) but none of which leads to a
/// complete linearization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<K, V> {
    /// The offending key.
    pub key: K,
    /// One-line explanation.
    pub reason: String,
    /// Number of operations on this key that were checked.
    pub operations: usize,
    /// Length of the longest linearizable prefix found.
    pub prefix_len: usize,
    /// The last operations of that prefix, in linearization order.
    pub context: Vec<Event<K, V>>,
    /// Register value after the prefix.
    pub state: Option<V>,
    /// The operations that could not be placed next, sorted by invocation.
    pub stuck: Vec<Event<K, V>>,
    /// Search configurations explored for this key.
    pub states_explored: u64,
}

impl<K: fmt::Debug, V: fmt::Debug + PartialEq> fmt::Display for Violation<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linearizability violation on key {:?}: {}",
            self.key, self.reason
        )?;
        writeln!(
            f,
            "  longest linearizable prefix: {} of {} operations ({} states explored)",
            self.prefix_len, self.operations, self.states_explored
        )?;
        if !self.context.is_empty() {
            let skipped = self.prefix_len.saturating_sub(self.context.len());
            writeln!(
                f,
                "  end of that prefix, in linearization order{}:",
                if skipped > 0 {
                    format!(" ({skipped} earlier operations omitted)")
                } else {
                    String::new()
                }
            )?;
            for e in &self.context {
                writeln!(f, "    {e}")?;
            }
        }
        writeln!(f, "  register value after the prefix: {:?}", self.state)?;
        write!(f, "  operations that could not be placed next:")?;
        for e in &self.stuck {
            write!(f, "\n    {e}")?;
            match &e.op {
                Op::Get(r) if *r != self.state => {
                    write!(f, "   <- register holds {:?}", self.state)?
                }
                Op::Get(_) => write!(f, "   <- matches, but no continuation exists")?,
                _ if e.complete.is_some() => write!(f, "   <- no continuation exists after it")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The search for one key exceeded its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconclusive<K> {
    /// The key whose search was abandoned.
    pub key: K,
    /// Number of operations on this key.
    pub operations: usize,
    /// Configurations explored before giving up.
    pub states_explored: u64,
    /// Longest linearizable prefix seen before giving up.
    pub prefix_len: usize,
}

impl<K: fmt::Debug> fmt::Display for Inconclusive<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizability check inconclusive for key {:?}: search budget of {} states exhausted \
             (longest linearizable prefix so far: {} of {} operations)",
            self.key, self.states_explored, self.prefix_len, self.operations
        )
    }
}

/// An event whose completion tick precedes its invocation tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed<K> {
    /// The event's key.
    pub key: K,
    /// The event's client.
    pub client: u64,
    /// Invocation tick.
    pub invoke: u64,
    /// Completion tick (< `invoke`).
    pub complete: u64,
}

impl<K: fmt::Debug> fmt::Display for Malformed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed history: event of client {} on key {:?} completes at {} before it is invoked at {}",
            self.client, self.key, self.complete, self.invoke
        )
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

/// A compact, sorted operation of one key.
#[derive(Clone, Copy, Debug)]
struct KOp {
    invoke: u64,
    /// `u64::MAX` when the outcome is unknown.
    complete: u64,
    known: bool,
    write: bool,
    /// Interned register value written (writes) or returned (reads); 0 = `None`.
    value: u32,
    /// Index into the key's event vector.
    src: usize,
}

/// Sentinel value id for a read result no write ever produced.
const NEVER_WRITTEN: u32 = u32::MAX;
/// Memo-key stand-in for any register value no pending read returns.
const UNOBSERVABLE: u32 = u32::MAX;

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

enum SearchOutcome {
    Linearizable { states: u64 },
    Exhausted { states: u64, max_depth: usize },
    Stuck { states: u64, dead_end: DeadEnd },
}

/// Snapshot of the deepest configuration from which no candidate succeeded.
struct DeadEnd {
    /// Linearized operations, in order.
    path: Vec<u32>,
    state: u32,
    /// All minimal operations at that point.
    stuck: Vec<u32>,
}

/// The mutable search configuration: which operations are linearized, the
/// register value, and the lowest-indexed known operation not yet linearized.
struct Config<'a> {
    ops: &'a [KOp],
    linearized: Vec<u64>,
    /// Index of the first known, not yet linearized operation (`ops.len()`
    /// when every known operation is linearized, i.e. success).
    low: usize,
    state: u32,
    /// Indices of unknown-outcome operations, ascending.
    unknown: Vec<usize>,
    /// Per value id: number of reads returning it not yet linearized.
    pending_reads: Vec<u32>,
}

impl<'a> Config<'a> {
    fn new(ops: &'a [KOp], value_count: usize) -> Self {
        let mut pending_reads = vec![0; value_count];
        for op in ops.iter().filter(|op| !op.write) {
            pending_reads[op.value as usize] += 1;
        }
        let mut c = Config {
            ops,
            linearized: vec![0; ops.len().div_ceil(64)],
            low: 0,
            state: 0,
            unknown: (0..ops.len()).filter(|&i| !ops[i].known).collect(),
            pending_reads,
        };
        c.advance_low();
        c
    }

    fn is_linearized(&self, i: usize) -> bool {
        self.linearized[i / 64] & (1 << (i % 64)) != 0
    }

    fn advance_low(&mut self) {
        while self.low < self.ops.len()
            && (!self.ops[self.low].known || self.is_linearized(self.low))
        {
            self.low += 1;
        }
    }

    /// An unknown-outcome write is *dead* once every read of its value is
    /// linearized: it can then never be a candidate again (see
    /// [`Config::push_candidates`]), so whether it took effect is irrelevant.
    fn is_dead(&self, i: usize) -> bool {
        let op = &self.ops[i];
        !op.known && self.pending_reads[op.value as usize] == 0
    }

    fn done(&self) -> bool {
        self.low == self.ops.len()
    }

    /// Linearizes op `i` (which must be minimal and applicable); returns the
    /// previous register value for [`Config::undo`].
    fn apply(&mut self, i: usize) -> u32 {
        self.linearized[i / 64] |= 1 << (i % 64);
        let prev = self.state;
        if self.ops[i].write {
            self.state = self.ops[i].value;
        } else {
            self.pending_reads[self.ops[i].value as usize] -= 1;
        }
        if i == self.low {
            self.advance_low();
        }
        prev
    }

    fn undo(&mut self, i: usize, prev: u32) {
        self.linearized[i / 64] &= !(1 << (i % 64));
        self.state = prev;
        if !self.ops[i].write {
            self.pending_reads[self.ops[i].value as usize] += 1;
        }
        if self.ops[i].known && i < self.low {
            self.low = i;
        }
    }

    /// Calls `f` for every minimal operation: not linearized, and invoked no
    /// later than the earliest completion of any known, not linearized
    /// operation. Requires `!self.done()`.
    fn for_each_minimal(&self, mut f: impl FnMut(usize)) {
        let ops = self.ops;
        let mut horizon = ops[self.low].complete;
        let mut end = self.low + 1;
        while end < ops.len() && ops[end].invoke <= horizon {
            if ops[end].known && !self.is_linearized(end) {
                horizon = horizon.min(ops[end].complete);
            }
            end += 1;
        }
        for (j, op) in ops.iter().enumerate().take(end).skip(self.low) {
            if !self.is_linearized(j) && op.invoke <= horizon {
                f(j);
            }
        }
        // Unknown-outcome operations before `low` stay minimal forever.
        for &u in self.unknown.iter().take_while(|&&u| u < self.low) {
            if !self.is_linearized(u) {
                f(u);
            }
        }
    }

    /// Pushes the operations worth trying next onto `out` and returns the
    /// frame describing them.
    ///
    /// Partial-order reductions (each preserves the existence of a
    /// linearization, so the search stays complete):
    /// * if a minimal read returns the current value, it alone is tried: any
    ///   linearization from here can be rearranged to place it first (it is
    ///   minimal, so nothing must precede it, and it changes nothing);
    /// * reads returning another value are never applicable now;
    /// * an unknown-outcome write `u` of value `w` is only tried when a
    ///   minimal read returns `w`. In any linearization, the operation right
    ///   after `u` is either a read of `w` (which is then minimal already
    ///   now, as `u` never affects minimality), or a write or nothing, in
    ///   which case `u` can be dropped (it may never have taken effect).
    /// * of several minimal unknown-outcome writes of the same value only the
    ///   lowest-indexed one is tried: minimal unknown-outcome operations stay
    ///   minimal forever (the horizon only grows), so they are
    ///   interchangeable from here on.
    fn push_candidates(&self, out: &mut Vec<u32>) -> Frame {
        let start = out.len();
        let mut forced = None;
        let mut read_values: Vec<u32> = Vec::new();
        let mut unknown_writes: Vec<u32> = Vec::new();
        self.for_each_minimal(|j| {
            let op = &self.ops[j];
            if forced.is_some() {
            } else if !op.write {
                if op.value == self.state {
                    forced = Some(j);
                } else {
                    read_values.push(op.value);
                }
            } else if op.known {
                out.push(j as u32);
            } else {
                unknown_writes.push(j as u32);
            }
        });
        if let Some(j) = forced {
            out.truncate(start);
            out.push(j as u32);
        } else {
            unknown_writes.retain(|&u| read_values.contains(&self.ops[u as usize].value));
            unknown_writes.sort_unstable();
            for (i, &u) in unknown_writes.iter().enumerate() {
                let value = self.ops[u as usize].value;
                if unknown_writes[..i]
                    .iter()
                    .all(|&earlier| self.ops[earlier as usize].value != value)
                {
                    out.push(u);
                }
            }
        }
        Frame {
            start,
            next: start,
            end: out.len(),
        }
    }

    /// Compact description of the configuration for the memo table, split
    /// into a `base` that must match exactly and a `pool` of spare
    /// unknown-outcome writes that is compared by dominance (see [`Memo`]).
    ///
    /// Every known operation below `low` is linearized, so the set of
    /// linearized operations is determined by `low`, the unknown-outcome
    /// operations below `low` that are *not* linearized, and the linearized
    /// operations above `low`. The latter all have
    /// `invoke <= ops[low].complete`: each was minimal when linearized, while
    /// `low` was pending, so its invocation did not come after `low`'s
    /// completion.
    ///
    /// Differences that cannot influence the rest of the search are erased:
    /// * register values that no pending read returns are all equivalent
    ///   (every future read must follow a later write);
    /// * dead unknown-outcome writes (see [`Config::is_dead`]) are omitted;
    /// * unknown-outcome writes below `low` are minimal for good and
    ///   interchangeable with others of the same value, so the pool only
    ///   counts the spare ones per value.
    ///
    /// `base` = `[state, low, linearized ops above low...]`,
    /// `pool` = `[value, count, value, count, ...]` sorted by value.
    fn memo_entry(&self) -> (Box<[u32]>, Box<[u32]>) {
        let mut base = Vec::with_capacity(8);
        base.push(if self.pending_reads[self.state as usize] == 0 {
            UNOBSERVABLE
        } else {
            self.state
        });
        base.push(self.low as u32);
        let bound = self.ops[self.low].complete;
        let mut j = self.low + 1;
        while j < self.ops.len() && self.ops[j].invoke <= bound {
            if self.is_linearized(j) && !self.is_dead(j) {
                base.push(j as u32);
            }
            j += 1;
        }
        debug_assert!(
            j.is_multiple_of(64) || self.linearized[j / 64] >> (j % 64) == 0,
            "linearized operation beyond the memo bound"
        );
        debug_assert!(
            self.linearized[j.div_ceil(64)..].iter().all(|&w| w == 0),
            "linearized operation beyond the memo bound"
        );

        let mut spare: Vec<u32> = self
            .unknown
            .iter()
            .take_while(|&&u| u < self.low)
            .filter(|&&u| !self.is_linearized(u) && !self.is_dead(u))
            .map(|&u| self.ops[u].value)
            .collect();
        spare.sort_unstable();
        let mut pool = Vec::new();
        for chunk in spare.chunk_by(|a, b| a == b) {
            pool.push(chunk[0]);
            pool.push(chunk.len() as u32);
        }
        (base.into_boxed_slice(), pool.into_boxed_slice())
    }
}

/// Configurations that were fully explored without finding a
/// linearization.
///
/// Entries with the same `base` (see [`Config::memo_entry`]) are compared by
/// their pools of spare unknown-outcome writes: a configuration with at
/// least as many spare writes of every value can do everything one with
/// fewer can, so if the richer one failed, the poorer one fails too. Only
/// finished configurations are stored (a configuration cannot recur below
/// itself, since the linearized set only grows along a path), so every
/// entry is a proof of failure.
#[derive(Default)]
struct Memo {
    /// Failed pools (an antichain under dominance), by base.
    failed: HashMap<Key, Vec<Key>, FxBuildHasher>,
}

impl Memo {
    /// Whether `rich` has at least as many spare writes of every value as
    /// `poor`. Both are `[value, count, ...]` sorted by value.
    fn dominates(rich: &[u32], poor: &[u32]) -> bool {
        let mut rich = rich.chunks_exact(2).peekable();
        poor.chunks_exact(2).all(|p| {
            while rich.next_if(|r| r[0] < p[0]).is_some() {}
            rich.next_if(|r| r[0] == p[0]).is_some_and(|r| r[1] >= p[1])
        })
    }

    fn known_to_fail(&self, base: &[u32], pool: &[u32]) -> bool {
        self.failed
            .get(base)
            .is_some_and(|pools| pools.iter().any(|rich| Self::dominates(rich, pool)))
    }

    fn record_failure(&mut self, base: Box<[u32]>, pool: Box<[u32]>) {
        let pools = self.failed.entry(base).or_default();
        pools.retain(|poor| !Self::dominates(&pool, poor));
        pools.push(pool);
    }
}

struct Frame {
    start: usize,
    next: usize,
    end: usize,
}

/// Wing & Gong / Lowe depth-first search with memoization of failed
/// configurations (as in knossos / porcupine).
fn search(ops: &[KOp], value_count: usize, budget: u64) -> SearchOutcome {
    let mut cfg = Config::new(ops, value_count);
    if cfg.done() {
        return SearchOutcome::Linearizable { states: 1 };
    }
    let mut memo = Memo::default();
    let mut states: u64 = 1;
    let mut candidates: Vec<u32> = Vec::new();
    let mut frames = vec![cfg.push_candidates(&mut candidates)];
    // (operation, register value before it)
    let mut path: Vec<(u32, u32)> = Vec::new();
    let mut max_depth = 0;
    // Every configuration pushed on the path gets a node (operation, parent
    // node) in this arena, so a dead end can be remembered in O(1) and its
    // path reconstructed only if the search fails.
    const ROOT: u32 = u32::MAX;
    let mut nodes: Vec<(u32, u32)> = Vec::new();
    let mut node_path: Vec<u32> = Vec::new();
    // (depth, node, register value, minimal operations) of the deepest dead end.
    let mut dead_end: Option<(usize, u32, u32, Vec<u32>)> = None;

    loop {
        let frame = frames
            .last_mut()
            .expect("the root frame is never popped early");
        if frame.next == frame.end {
            // Every candidate failed: dead end. Remember the deepest one.
            if dead_end.as_ref().is_none_or(|d| path.len() > d.0) {
                let mut stuck = Vec::new();
                cfg.for_each_minimal(|j| {
                    if !cfg.is_dead(j) {
                        stuck.push(j as u32);
                    }
                });
                let node = node_path.last().copied().unwrap_or(ROOT);
                dead_end = Some((path.len(), node, cfg.state, stuck));
            }
            candidates.truncate(frame.start);
            frames.pop();
            node_path.pop();
            if !path.is_empty() {
                let (base, pool) = cfg.memo_entry();
                memo.record_failure(base, pool);
            }
            match path.pop() {
                Some((op, prev)) => cfg.undo(op as usize, prev),
                None => {
                    let (_, mut node, state, stuck) = dead_end.expect("recorded above");
                    let mut path = Vec::new();
                    while node != ROOT {
                        let (op, parent) = nodes[node as usize];
                        path.push(op);
                        node = parent;
                    }
                    path.reverse();
                    return SearchOutcome::Stuck {
                        states,
                        dead_end: DeadEnd { path, state, stuck },
                    };
                }
            }
            continue;
        }
        let op = candidates[frame.next];
        frame.next += 1;
        let prev = cfg.apply(op as usize);
        if cfg.done() {
            return SearchOutcome::Linearizable { states };
        }
        let (base, pool) = cfg.memo_entry();
        if memo.known_to_fail(&base, &pool) {
            cfg.undo(op as usize, prev);
            continue;
        }
        states += 1;
        path.push((op, prev));
        nodes.push((op, node_path.last().copied().unwrap_or(ROOT)));
        node_path.push((nodes.len() - 1) as u32);
        max_depth = max_depth.max(path.len());
        if states > budget {
            return SearchOutcome::Exhausted { states, max_depth };
        }
        frames.push(cfg.push_candidates(&mut candidates));
    }
}

type FxBuildHasher = BuildHasherDefault<FxHasher>;
/// A memo-table key part (see [`Config::memo_entry`]).
type Key = Box<[u32]>;

/// Small, fast non-cryptographic hasher (FxHash-style mixing with a
/// murmur3 finalizer) for the memo table.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_dominance() {
        assert!(Memo::dominates(&[], &[]));
        assert!(Memo::dominates(&[0, 2], &[]));
        assert!(Memo::dominates(&[0, 2, 5, 1], &[0, 2]));
        assert!(Memo::dominates(&[0, 2, 5, 1], &[0, 1, 5, 1]));
        assert!(Memo::dominates(&[0, 2, 5, 1], &[5, 1]));
        assert!(!Memo::dominates(&[], &[0, 1]));
        assert!(!Memo::dominates(&[0, 1], &[0, 2]));
        assert!(!Memo::dominates(&[0, 2], &[0, 2, 5, 1]));
        assert!(!Memo::dominates(&[5, 3], &[3, 1]));

        let mut memo = Memo::default();
        let base: Box<[u32]> = Box::new([1, 2, 3]);
        memo.record_failure(base.clone(), Box::new([0, 1]));
        assert!(memo.known_to_fail(&base, &[0, 1]));
        assert!(memo.known_to_fail(&base, &[]));
        assert!(!memo.known_to_fail(&base, &[0, 2]));
        assert!(!memo.known_to_fail(&[1, 2], &[]));
        // A richer failure subsumes the poorer one.
        memo.record_failure(base.clone(), Box::new([0, 2]));
        assert_eq!(memo.failed[&base].len(), 1);
        assert!(memo.known_to_fail(&base, &[0, 2]));
    }

    #[test]
    fn memo_entry_counts_spare_unknown_writes() {
        let op = |invoke, complete: Option<u64>, write, value| KOp {
            invoke,
            complete: complete.unwrap_or(u64::MAX),
            known: complete.is_some(),
            write,
            value,
            src: 0,
        };
        let ops = [
            op(0, None, true, 0),     // unknown delete
            op(0, None, true, 0),     // unknown delete
            op(1, Some(2), true, 1),  // put(1)
            op(1, Some(5), false, 0), // get -> None
            op(3, Some(4), false, 1), // get -> Some(1)
        ];
        let mut cfg = Config::new(&ops, 2);
        assert_eq!(cfg.low, 2);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 2][..], &[0, 2][..]));
        let p = cfg.apply(2);
        assert_eq!(cfg.low, 3);
        let (base, pool) = cfg.memo_entry();
        // Value 1 is still awaited by a read.
        assert_eq!((&*base, &*pool), (&[1, 3][..], &[0, 2][..]));
        let q = cfg.apply(1);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 3][..], &[0, 1][..]));
        cfg.undo(1, q);
        cfg.undo(2, p);
        assert_eq!(cfg.low, 2);
        let (base, pool) = cfg.memo_entry();
        assert_eq!((&*base, &*pool), (&[0, 2][..], &[0, 2][..]));
    }
}
