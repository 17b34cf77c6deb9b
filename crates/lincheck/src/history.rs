//! Recording side: the global [`Clock`], the [`Op`] and [`Event`] records,
//! and the shared [`History`] that per-thread [`Recorder`]s flush into.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::recorder::Recorder;
use crate::{CheckConfig, CheckError, CheckReport};

/// A global logical clock shared by all recording threads.
///
/// Every call to [`Clock::now`] returns a distinct, strictly increasing tick
/// (a `SeqCst` `fetch_add` on one shared counter). Because every tick is a
/// read-modify-write of the same atomic, if operation A's completion tick is
/// smaller than operation B's invocation tick then A's call really did return
/// before B's call started (A's tick synchronizes-with B's), which is exactly
/// the real-time order linearizability is defined against.
///
/// Cloning is cheap and clones share the same counter.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    ticks: Arc<AtomicU64>,
}

impl Clock {
    /// Creates a clock starting at tick 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the next tick. Take one immediately before invoking an
    /// operation and one immediately after it returns.
    pub fn now(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::SeqCst)
    }
}

/// One operation on a key's register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op<V> {
    /// Write `Some(v)`; returns nothing.
    Put(V),
    /// Write `None`. Carries what the store reported, if it was recorded:
    /// `Some(true)` if it removed a value (the register held one),
    /// `Some(false)` if there was nothing to remove (it held `None`), and
    /// `None` for a delete whose report was not recorded. A report is
    /// ignored when the outcome is unknown (the caller never received it).
    Delete(Option<bool>),
    /// Read; carries the value the store returned.
    Get(Option<V>),
    /// A read-modify-write that took effect in one atomic step: the register
    /// held `observed` and was left holding `written` (equal to `observed`
    /// when the update left the key alone, `None` when it deleted the key).
    ///
    /// With an unknown outcome it is all or nothing: either it took effect
    /// exactly so, at one point after its invocation, or not at all. (A
    /// function that ran and saw `observed` before the write failed is
    /// therefore not evidence that the register held `observed`.)
    Update {
        /// The value the modifying function was given.
        observed: Option<V>,
        /// The value it left in the register.
        written: Option<V>,
    },
}

/// A recorded operation: what was done to which key, by whom, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<K, V> {
    /// The key the operation addressed.
    pub key: K,
    /// The operation (and its result, for reads, reporting deletes and
    /// updates).
    pub op: Op<V>,
    /// Clock tick taken just before the call.
    pub invoke: u64,
    /// Clock tick taken just after the call returned successfully, or `None`
    /// if the outcome is unknown (error, timeout, crash): the operation may
    /// have taken effect at any point after `invoke`, or never. Reads with an
    /// unknown outcome carry no information and are ignored by the checker.
    pub complete: Option<u64>,
    /// Client / thread id, only used in diagnostics.
    pub client: u64,
}

impl<K, V> Event<K, V> {
    /// A general event with client id 0 (see [`Event::with_client`]).
    pub fn new(key: K, op: Op<V>, invoke: u64, complete: Option<u64>) -> Self {
        Self {
            key,
            op,
            invoke,
            complete,
            client: 0,
        }
    }

    /// An acknowledged `put(key, value)` that ran during `[invoke, complete]`.
    pub fn put(key: K, value: V, invoke: u64, complete: u64) -> Self {
        Self::new(key, Op::Put(value), invoke, Some(complete))
    }

    /// A `put(key, value)` invoked at `invoke` whose outcome is unknown.
    pub fn put_unknown(key: K, value: V, invoke: u64) -> Self {
        Self::new(key, Op::Put(value), invoke, None)
    }

    /// An acknowledged `delete(key)` that ran during `[invoke, complete]`,
    /// whose report of what it removed was not recorded.
    pub fn delete(key: K, invoke: u64, complete: u64) -> Self {
        Self::new(key, Op::Delete(None), invoke, Some(complete))
    }

    /// An acknowledged `delete(key)` that ran during `[invoke, complete]` and
    /// reported whether it `removed` a value.
    pub fn delete_returning(key: K, invoke: u64, complete: u64, removed: bool) -> Self {
        Self::new(key, Op::Delete(Some(removed)), invoke, Some(complete))
    }

    /// A `delete(key)` invoked at `invoke` whose outcome is unknown.
    pub fn delete_unknown(key: K, invoke: u64) -> Self {
        Self::new(key, Op::Delete(None), invoke, None)
    }

    /// An acknowledged read-modify-write that ran during `[invoke, complete]`,
    /// found `observed` and left `written` (see [`Op::Update`]).
    pub fn update(
        key: K,
        invoke: u64,
        complete: u64,
        observed: Option<V>,
        written: Option<V>,
    ) -> Self {
        Self::new(
            key,
            Op::Update { observed, written },
            invoke,
            Some(complete),
        )
    }

    /// A read-modify-write invoked at `invoke` whose outcome is unknown: if it
    /// took effect, it found `observed` and left `written`.
    pub fn update_unknown(key: K, invoke: u64, observed: Option<V>, written: Option<V>) -> Self {
        Self::new(key, Op::Update { observed, written }, invoke, None)
    }

    /// A successful `get(key)` that ran during `[invoke, complete]` and
    /// returned `result`.
    pub fn get(key: K, invoke: u64, complete: u64, result: Option<V>) -> Self {
        Self::new(key, Op::Get(result), invoke, Some(complete))
    }

    /// Sets the client id used in diagnostics.
    #[must_use]
    pub fn with_client(mut self, client: u64) -> Self {
        self.client = client;
        self
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Event<K, V> {
    /// e.g. `client 3: get("a") -> Some(7) @ [12, 15]`,
    /// `client 1: update("a"): Some(7) -> None @ [16, ?] (outcome unknown)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: ", self.client)?;
        match &self.op {
            Op::Put(v) => write!(f, "put({:?}, {:?})", self.key, v)?,
            Op::Delete(None) => write!(f, "delete({:?})", self.key)?,
            Op::Delete(Some(removed)) => write!(f, "delete({:?}) -> {removed}", self.key)?,
            Op::Get(r) => write!(f, "get({:?}) -> {:?}", self.key, r)?,
            Op::Update { observed, written } => {
                write!(f, "update({:?}): {observed:?} -> {written:?}", self.key)?
            }
        }
        match self.complete {
            Some(c) => write!(f, " @ [{}, {}]", self.invoke, c),
            None => write!(f, " @ [{}, ?] (outcome unknown)", self.invoke),
        }
    }
}
/// The event buffer shared by a [`History`] and its recorders.
pub(crate) type Shared<K, V> = Arc<Mutex<Vec<Event<K, V>>>>;

/// A shared history: one [`Clock`] plus the merged events of all
/// [`Recorder`]s created from it. Cloning is cheap (shared handle).
pub struct History<K, V> {
    clock: Clock,
    events: Shared<K, V>,
}

impl<K, V> Clone for History<K, V> {
    fn clone(&self) -> Self {
        Self {
            clock: self.clock.clone(),
            events: Arc::clone(&self.events),
        }
    }
}

impl<K, V> Default for History<K, V> {
    fn default() -> Self {
        Self {
            clock: Clock::new(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<K, V> fmt::Debug for History<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("clock", &self.clock)
            .field("events", &self.len())
            .finish()
    }
}

impl<K, V> History<K, V> {
    /// An empty history with a fresh clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A recorder for one client thread; its events are appended to this
    /// history when it is dropped (or [`Recorder::flush`]ed).
    pub fn recorder(&self, client: u64) -> Recorder<K, V> {
        Recorder::attached(self.clock.clone(), client, Arc::clone(&self.events))
    }

    /// Appends events directly (e.g. from [`Recorder::into_events`]).
    pub fn extend(&self, events: impl IntoIterator<Item = Event<K, V>>) {
        self.lock().extend(events);
    }

    /// Number of events flushed into the history so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no events have been flushed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns all flushed events.
    pub fn take(&self) -> Vec<Event<K, V>> {
        std::mem::take(&mut *self.lock())
    }

    /// A copy of all flushed events.
    pub fn snapshot(&self) -> Vec<Event<K, V>>
    where
        K: Clone,
        V: Clone,
    {
        self.lock().clone()
    }

    /// Checks the flushed events with [`check`](crate::check).
    pub fn check(&self) -> Result<CheckReport, CheckError<K, V>>
    where
        K: Clone + Eq + Hash + fmt::Debug,
        V: Clone + Eq + Hash + fmt::Debug,
    {
        crate::check(self.snapshot())
    }

    /// Checks the flushed events with [`check_with`](crate::check_with).
    pub fn check_with(&self, config: &CheckConfig) -> Result<CheckReport, CheckError<K, V>>
    where
        K: Clone + Eq + Hash + fmt::Debug,
        V: Clone + Eq + Hash + fmt::Debug,
    {
        crate::check_with(self.snapshot(), config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event<K, V>>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
