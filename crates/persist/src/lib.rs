//! Persistent, token-ordered storage of one ringkv node's entries on an
//! embedded engine. This version holds the engine comparison only
//! (`benches/engines.rs`, results in `docs/BENCHMARKS.md`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
