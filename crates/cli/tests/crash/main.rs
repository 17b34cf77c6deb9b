//! Crash tests of `ringkv serve --data-dir DIR` (`--fsync always`, and every
//! policy in the random kills), on the real binary: `kill -9` at random
//! instants under load and membership changes
//! (`random`), aborts at fixed points inside a redistribution (`abort`),
//! and the lock that keeps a second process off a data directory (`lock`).
//! Every restart is checked against a model of what clients were told.

mod abort;
mod harness;
mod lock;
mod random;
