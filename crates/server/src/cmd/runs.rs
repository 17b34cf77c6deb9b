//! Pipelined runs of single-key writes made as one transaction: one
//! journal append and one engine commit for the run, where each write on
//! its own is one of each.
//!
//! With a data directory each write appends its record to the write log
//! while it holds its key's lock stripe (so nothing reads a value a crash
//! of the process could lose): one `pwrite` a write. For `INCR` at `-P 16`
//! under `--fsync always` that append was a third of the server's CPU
//! (`docs/BENCHMARKS.md`, persistence section 16). A run of the writes
//! below, pipelined by one connection, runs instead as `EXEC` runs its
//! queue: one cluster transaction over every key the run names, each
//! request through the same handler against the transaction, its writes
//! applied together at the end under the locks.
//!
//! What a client sees is what it would see of the requests one by one:
//! each gets its own reply, errors included (a wrong type, a bad number
//! fail that request only, as in `EXEC`), in order, and later requests
//! read what earlier ones wrote. Other clients see none of the run before
//! all of it, which a pipeline run one by one on a single-threaded server
//! such as Redis also gives. If the transaction cannot be made (a node of
//! one key is unavailable, the disk refuses the commit), nothing of it was
//! applied and the caller runs each request on its own, so each gets the
//! reply it would have had alone.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Ctx, Outcome, lookup_index, owned, request_keys};
use crate::reply::{self, Frame};

/// Whether `request` may be part of a run ([`write_run`]): a write of its
/// named keys alone whose reply is small (a status, an integer, a
/// number), never a value read back (`SET ... GET`, `GETDEL`, `GETSET`
/// may answer with a large value, checked against the output buffer
/// before anything is written, as they are alone).
pub fn joins_write_run(request: &[Bytes]) -> bool {
    let Some(index) = request.first().and_then(|name| lookup_index(name)) else {
        return false;
    };
    match super::COMMANDS[index].name {
        "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" | "append" | "setrange" | "setnx"
        | "setex" | "psetex" | "del" | "unlink" | "expire" | "pexpire" | "expireat"
        | "pexpireat" | "persist" | "mset" | "msetnx" => true,
        "set" => !request
            .iter()
            .skip(3)
            .any(|a| a.eq_ignore_ascii_case(b"get")),
        _ => false,
    }
}

/// Runs `requests` (each [`joins_write_run`]) as one transaction; their
/// replies in order, or `None` if the transaction could not be made
/// (nothing was applied: run each alone).
pub fn write_run(ctx: &mut Ctx<'_>, requests: &[&[Bytes]]) -> Option<Vec<Frame>> {
    debug_assert!(requests.iter().all(|r| joins_write_run(r)));
    // Keys in their own allocations, as every write stores them: a slice
    // would keep the connection's whole read buffer alive.
    let keys: Vec<Bytes> = requests
        .iter()
        .flat_map(|r| request_keys(r))
        .map(|k| owned(&k))
        .collect();
    let shared = ctx.shared;
    let session = &mut *ctx.session;
    let result = shared.cluster.transaction(keys, |txn| {
        let cell = RefCell::new(txn);
        let mut inner = Ctx {
            shared,
            session,
            txn: Some(&cell),
        };
        requests
            .iter()
            .map(|request| match super::run(&mut inner, request) {
                Outcome::Reply(frame) => frame,
                // None of the commands above answers otherwise; a reply
                // for each request all the same, since the writes staged
                // so far are applied.
                _ => reply::err("this request cannot run in a pipelined run of writes"),
            })
            .collect::<Vec<Frame>>()
    });
    let frames = result.ok()?;
    shared.stats.write_runs.fetch_add(1, Ordering::Relaxed);
    Some(frames)
}
