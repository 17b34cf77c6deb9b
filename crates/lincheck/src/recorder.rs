//! Per-thread [`Recorder`]s: they time each call with the shared
//! [`Clock`] and record it as an [`Event`], without locks on the hot path.

use std::fmt;
use std::sync::PoisonError;

use crate::history::{Clock, Event, Op, Shared};

/// What the modifying function of a read-modify-write found and left, as
/// recorded by that function (see [`Recorder::update`]).
#[derive(Debug)]
pub struct UpdateTrace<V> {
    seen: Option<(Option<V>, Option<V>)>,
}

impl<V> UpdateTrace<V> {
    /// Records that the function was given `observed` and left `written` in
    /// the register (`observed` again if it left the key alone, `None` if it
    /// deleted it). Call it from inside the function, where the store runs
    /// it atomically. If the function runs more than once, the last call
    /// wins.
    pub fn record(&mut self, observed: Option<V>, written: Option<V>) {
        self.seen = Some((observed, written));
    }
}

/// Per-thread, lock-free event log.
///
/// Create one per client thread (via [`History::recorder`](crate::History::recorder) or
/// [`Recorder::new`]); pushing is a plain `Vec::push`. A recorder obtained
/// from a [`History`](crate::History) appends its events to that history when dropped (one
/// lock acquisition per recorder, none on the hot path).
pub struct Recorder<K, V> {
    clock: Clock,
    client: u64,
    events: Vec<Event<K, V>>,
    sink: Option<Shared<K, V>>,
}

impl<K, V> Recorder<K, V> {
    /// A recorder that appends its events to `sink` when dropped.
    pub(crate) fn attached(clock: Clock, client: u64, sink: Shared<K, V>) -> Self {
        Self {
            clock,
            client,
            events: Vec::new(),
            sink: Some(sink),
        }
    }

    /// A standalone recorder (not attached to a [`History`](crate::History)); collect its
    /// events with [`Recorder::into_events`].
    pub fn new(clock: Clock, client: u64) -> Self {
        Self {
            clock,
            client,
            events: Vec::new(),
            sink: None,
        }
    }

    /// This recorder's client id.
    pub fn client(&self) -> u64 {
        self.client
    }

    /// The shared clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Shorthand for `self.clock().now()`.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Records a manually timed event, stamping it with this recorder's
    /// client id.
    pub fn push(&mut self, event: Event<K, V>) {
        self.events.push(event.with_client(self.client));
    }

    /// Times and records a read. `Ok(r)` is recorded as a get returning `r`;
    /// an `Err` is not recorded (a failed read constrains nothing).
    pub fn get<E>(
        &mut self,
        key: K,
        call: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E>
    where
        V: Clone,
    {
        let invoke = self.now();
        let result = call();
        let complete = self.now();
        if let Ok(r) = &result {
            self.push(Event::get(key, invoke, complete, r.clone()));
        }
        result
    }

    /// Times and records a write of `value`. `Ok` is recorded as an
    /// acknowledged put, `Err` as a put with unknown outcome.
    pub fn put<T, E>(
        &mut self,
        key: K,
        value: V,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let invoke = self.now();
        let result = call();
        let complete = self.now();
        self.push(Event::new(
            key,
            Op::Put(value),
            invoke,
            result.is_ok().then_some(complete),
        ));
        result
    }

    /// Times and records a delete that reports whether it removed a value.
    /// `Ok(removed)` is recorded as an acknowledged delete returning
    /// `removed`, `Err` as a delete with unknown outcome. (A delete that
    /// reports nothing can be recorded with [`Recorder::push`] and
    /// [`Event::delete`].)
    pub fn delete<E>(&mut self, key: K, call: impl FnOnce() -> Result<bool, E>) -> Result<bool, E> {
        let invoke = self.now();
        let result = call();
        let complete = self.now();
        let event = match &result {
            Ok(removed) => Event::delete_returning(key, invoke, complete, *removed),
            Err(_) => Event::delete_unknown(key, invoke),
        };
        self.push(event);
        result
    }

    /// Times and records a read-modify-write. `call` performs it and passes
    /// its modifying function the [`UpdateTrace`], in which that function
    /// records what it found and what it left (see [`UpdateTrace::record`]).
    ///
    /// `Ok` is recorded as an acknowledged [`Op::Update`], `Err` as one with
    /// unknown outcome if the function ran, and not at all if it never ran
    /// (then nothing was written). A call that returns `Ok` without the
    /// function having recorded anything is not recorded either: the history
    /// would not know what it did.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use ringkv_lincheck::{Clock, Op, Recorder};
    ///
    /// let counter = Mutex::new(None::<u64>);
    /// let mut rec: Recorder<&str, u64> = Recorder::new(Clock::new(), 1);
    /// rec.update("hits", |trace| {
    ///     let mut held = counter.lock().unwrap();
    ///     let next = held.map_or(1, |n| n + 1);
    ///     trace.record(*held, Some(next));
    ///     *held = Some(next);
    ///     Ok::<_, ()>(next)
    /// })
    /// .unwrap();
    /// let events = rec.into_events();
    /// assert_eq!(events[0].op, Op::Update { observed: None, written: Some(1) });
    /// ```
    pub fn update<T, E>(
        &mut self,
        key: K,
        call: impl FnOnce(&mut UpdateTrace<V>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut trace = UpdateTrace { seen: None };
        let invoke = self.now();
        let result = call(&mut trace);
        let complete = self.now();
        if let Some((observed, written)) = trace.seen {
            let complete = result.is_ok().then_some(complete);
            self.push(Event::new(
                key,
                Op::Update { observed, written },
                invoke,
                complete,
            ));
        }
        result
    }

    /// The events recorded so far (not yet flushed).
    pub fn events(&self) -> &[Event<K, V>] {
        &self.events
    }

    /// Takes the recorded events. For a recorder attached to a [`History`](crate::History),
    /// the taken events are *not* delivered to the history.
    pub fn into_events(mut self) -> Vec<Event<K, V>> {
        std::mem::take(&mut self.events)
    }

    /// Appends the events recorded so far to the attached [`History`](crate::History) now
    /// (a no-op for standalone recorders).
    pub fn flush(&mut self) {
        if let Some(sink) = &self.sink
            && !self.events.is_empty()
        {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut self.events);
        }
    }
}

impl<K, V> Drop for Recorder<K, V> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<K, V> fmt::Debug for Recorder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("client", &self.client)
            .field("events", &self.events.len())
            .field("attached", &self.sink.is_some())
            .finish()
    }
}
