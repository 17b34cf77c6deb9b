//! What a check returns: the statistics of a success, and the errors that
//! explain a failure ([`Violation`], [`Inconclusive`], [`Malformed`]).

use std::fmt;

use crate::history::{Event, Op};

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
    /// The search budget ([`CheckConfig::max_states_per_key`](crate::CheckConfig::max_states_per_key)) ran out before
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
            let known = e.complete.is_some();
            // What the operation required of the register, if anything.
            let mismatch = match &e.op {
                Op::Get(r) | Op::Update { observed: r, .. } => *r != self.state,
                Op::Delete(Some(removed)) if known => *removed != self.state.is_some(),
                Op::Put(_) | Op::Delete(_) => false,
            };
            let read = match &e.op {
                Op::Get(_) => true,
                Op::Update { observed, written } => observed == written,
                Op::Delete(Some(false)) => known,
                Op::Put(_) | Op::Delete(_) => false,
            };
            if mismatch {
                write!(f, "   <- register holds {:?}", self.state)?
            } else if read {
                write!(f, "   <- matches, but no continuation exists")?
            } else if known {
                write!(f, "   <- no continuation exists after it")?
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
