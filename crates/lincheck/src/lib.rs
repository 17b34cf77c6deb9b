//! A linearizability checker for per-key register histories.
//!
//! ringkv promises *per-key linearizability*: every key behaves like an
//! independent register holding `Option<V>` (initially `None`) with `put`,
//! `get`, `delete` (which may report whether it removed a value) and
//! `update` (an atomic read-modify-write, recorded as the value it found and
//! the value it left) operations; see [`Op`]. Linearizability is local
//! (compositional), so a history is linearizable iff the sub-history of
//! every key is; this crate checks each key separately.
//!
//! # Recording
//!
//! Concurrency tests record every operation as an [`Event`]: the key, the
//! [`Op`] (with its result: a read's value, a delete's report, what an
//! update found and left), the [`Clock`] ticks taken just before
//! the call and just after it returned, and the client id. An operation that
//! failed or timed out has an *unknown outcome* (`complete: None`): it may
//! have taken effect at any point after its invocation, or never.
//!
//! Each thread records into its own [`Recorder`] (a plain `Vec`, no locks on
//! the hot path); recorders created by [`History::recorder`] merge into the
//! shared [`History`] when dropped.
//!
//! # Checking
//!
//! [`check`] / [`check_with`] partition the events by key, run a cheap
//! pre-pass (reads of values that were never written, or only written after
//! the read completed), then the Wing & Gong / Lowe search: a depth-first
//! search that repeatedly linearizes a *minimal* pending operation (one that
//! no other pending operation must precede in real time), backtracking on
//! dead ends, with a memo table of failed (linearized set, register value)
//! configurations. Every operation is reduced to a requirement on the
//! register and an effect (a delete that removed a value requires one, an
//! update requires the value it found). Sound partial-order reductions keep
//! it fast: reads that match the register are placed greedily, an
//! unknown-outcome write is only placed right before an operation that
//! needs its value, register values no pending operation requires are
//! treated as equal, and spare unknown-outcome writes are compared by
//! dominance. Typical histories of thousands of operations per key check in
//! milliseconds. Proving a *violation* can take far longer when deletes
//! report removals and many writes have unknown outcomes (each such delete
//! can be explained by any spare write). A search budget
//! ([`CheckConfig::max_states_per_key`]) turns pathological cases into
//! [`CheckError::Inconclusive`] instead of hanging.
//!
//! A [`Violation`] names the key and shows where the search got stuck: the
//! tail of the longest linearizable prefix found, the register value after
//! it, and the concurrent operations none of which could be placed next.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//! use ringkv_lincheck::{check, CheckError, Event, History};
//!
//! // A trivially linearizable "store": a map behind a mutex.
//! let store: Mutex<HashMap<&str, u64>> = Mutex::new(HashMap::new());
//! let history: History<&str, u64> = History::new();
//! std::thread::scope(|s| {
//!     for client in 0..4u64 {
//!         let (store, history) = (&store, &history);
//!         s.spawn(move || {
//!             let mut rec = history.recorder(client);
//!             for i in 0..50 {
//!                 let key = if i % 2 == 0 { "a" } else { "b" };
//!                 let value = client * 1000 + i;
//!                 rec.put(key, value, || {
//!                     store.lock().unwrap().insert(key, value);
//!                     Ok::<_, ()>(())
//!                 })
//!                 .unwrap();
//!                 rec.get(key, || Ok::<_, ()>(store.lock().unwrap().get(key).copied()))
//!                     .unwrap();
//!             }
//!             // `rec` is dropped here and flushes its events into `history`.
//!         });
//!     }
//! });
//! let report = history.check().expect("a mutex-protected map is linearizable");
//! assert_eq!((report.keys, report.operations), (2, 400));
//!
//! // Hand-written histories: a stale read after a completed overwrite.
//! let events = vec![
//!     Event::put("k", 1, 0, 1).with_client(1),
//!     Event::put("k", 2, 2, 3).with_client(1),
//!     Event::get("k", 4, 5, Some(1)).with_client(2),
//! ];
//! let err = check(events).unwrap_err();
//! assert!(err.is_violation());
//! println!("{err}"); // key, prefix tail, register value, stuck operations
//! # let CheckError::Violation(v) = err else { unreachable!() };
//! # assert_eq!(v.state, Some(2));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod checker;
mod config;
mod history;
mod memo;
mod model;
mod recorder;
mod report;
mod search;

pub use checker::{CheckConfig, check, check_with};
pub use history::{Clock, Event, History, Op};
pub use recorder::{Recorder, UpdateTrace};
pub use report::{CheckError, CheckReport, Inconclusive, Malformed, Violation};
