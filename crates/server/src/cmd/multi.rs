//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH, with Redis's
//! semantics.
//!
//! After `MULTI` each command is checked (known, right arity, allowed in a
//! transaction) and queued (`+QUEUED`); one that fails the check is
//! answered with its error and makes `EXEC` answer `EXECABORT`, running
//! nothing. `EXEC` runs the queue as one cluster transaction over every
//! key the queued commands name (from the command table's key positions)
//! and every watched key: no other client sees or touches those keys
//! between the first command and the last, also while their ranges move.
//! `WATCH` records each key's modification version; if one changed
//! (written, deleted or expired) by `EXEC`, the reply is a null array and
//! nothing runs. Errors while running (a wrong type, a bad value) are
//! replies in `EXEC`'s array and do not stop the others, as in Redis.

use std::cell::RefCell;

use bytes::Bytes;

use super::{COMMANDS, Ctx, Outcome, Spec, cluster_error, lookup_index, owned};
use crate::reply::{self, Frame};

/// A connection's open transaction.
#[derive(Debug, Default)]
pub struct Multi {
    /// Queued requests (owned copies: the read buffer is reused).
    pub queued: Vec<Vec<Bytes>>,
    /// A queued command was refused: `EXEC` aborts.
    pub dirty: bool,
}

/// Commands that act on the transaction itself: run at once inside MULTI.
const CONTROL: &[&str] = &["exec", "discard", "multi", "watch", "quit", "unwatch"];

/// Whether a command may be queued: key commands (their keys are locked
/// for EXEC) and the connection commands that touch no data. Commands over
/// the whole key space, and administration, cannot run inside a cluster
/// transaction.
fn queueable(spec: &Spec) -> bool {
    spec.keys.0 > 0 || matches!(spec.name, "ping" | "echo" | "time" | "select")
}

/// Called by dispatch for every command while MULTI is open. `None`: run
/// the command now (a control command).
pub fn queue(ctx: &mut Ctx<'_>, request: &[Bytes]) -> Option<Outcome> {
    let multi = ctx.session.multi.as_mut().expect("called inside MULTI");
    let name = &request[0];
    let Some(index) = lookup_index(name) else {
        multi.dirty = true;
        return None;
    };
    let spec = &COMMANDS[index];
    if CONTROL.contains(&spec.name) {
        return None;
    }
    let words = request.len() as i64;
    if (spec.arity >= 0 && words != spec.arity) || (spec.arity < 0 && words < -spec.arity) {
        multi.dirty = true;
        return None;
    }
    if spec.flags.contains(&"no_multi") {
        // Redis's reply for its `no-multi` commands (`SHUTDOWN` here).
        multi.dirty = true;
        return Some(reply::err("Command not allowed inside a transaction").into());
    }
    if !queueable(spec) {
        multi.dirty = true;
        return Some(
            reply::err(format!(
                "{} inside MULTI is not supported: it reads or changes the whole key space",
                spec.name.to_uppercase()
            ))
            .into(),
        );
    }
    // As Redis: over maxmemory with no eviction, a command that may add
    // memory is refused when queued (and the transaction aborts).
    if spec.flags.contains(&"denyoom") && out_of_memory(ctx) {
        if let Some(multi) = ctx.session.multi.as_mut() {
            multi.dirty = true;
        }
        return Some(
            reply::error("OOM command not allowed when used memory > 'maxmemory'.").into(),
        );
    }
    let multi = ctx.session.multi.as_mut().expect("called inside MULTI");
    multi.queued.push(request.iter().map(owned).collect());
    Some(reply::simple("QUEUED").into())
}

/// Whether `used_memory` is over a `maxmemory` that nothing may be evicted
/// to meet (`noeviction`).
fn out_of_memory(ctx: &Ctx<'_>) -> bool {
    let cluster = &ctx.shared.cluster;
    let max = cluster.maxmemory();
    max > 0
        && cluster.maxmemory_policy() == ringkv_cluster::EvictionPolicy::NoEviction
        && cluster.stats().used_memory > max
}

pub fn multi(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    if ctx.session.multi.is_some() {
        return reply::err("MULTI calls can not be nested").into();
    }
    ctx.session.multi = Some(Multi::default());
    reply::ok().into()
}

pub fn discard(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    if ctx.session.multi.take().is_none() {
        return reply::err("DISCARD without MULTI").into();
    }
    ctx.session.watched.clear();
    reply::ok().into()
}

pub fn watch(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    if ctx.session.multi.is_some() {
        return reply::err("WATCH inside MULTI is not allowed").into();
    }
    for key in args {
        match ctx.shared.cluster.version(key) {
            Ok(version) => ctx.session.watched.push((owned(key), version)),
            Err(e) => return cluster_error(e).into(),
        }
    }
    reply::ok().into()
}

pub fn unwatch(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    ctx.session.watched.clear();
    reply::ok().into()
}

/// The first key a request names, from its command's key positions.
pub fn first_key(request: &[Bytes]) -> Option<&Bytes> {
    let spec = &COMMANDS[lookup_index(request.first()?)?];
    let (first, _, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return None;
    }
    request.get(first as usize)
}

/// The keys a request names, from its command's key positions.
pub fn request_keys(request: &[Bytes]) -> Vec<Bytes> {
    let Some(spec) = lookup_index(&request[0]).map(|i| &COMMANDS[i]) else {
        return Vec::new();
    };
    let (first, last, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return Vec::new();
    }
    let len = request.len() as i64;
    let last = if last < 0 {
        len + last
    } else {
        last.min(len - 1)
    };
    (first..=last)
        .step_by(step as usize)
        .map(|i| request[i as usize].clone())
        .collect()
}

pub fn exec(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let Some(multi) = ctx.session.multi.take() else {
        return reply::err("EXEC without MULTI").into();
    };
    let watched = std::mem::take(&mut ctx.session.watched);
    if multi.dirty {
        return reply::error("EXECABORT Transaction discarded because of previous errors.").into();
    }
    let keys: Vec<Bytes> = multi
        .queued
        .iter()
        .flat_map(|r| request_keys(r))
        .chain(watched.iter().map(|(k, _)| k.clone()))
        .collect();
    let shared = ctx.shared;
    let session = &mut *ctx.session;
    let result = shared.cluster.transaction(keys, |txn| {
        if watched
            .iter()
            .any(|(key, version)| txn.version(key) != *version)
        {
            return None;
        }
        let cell = RefCell::new(txn);
        let mut inner = Ctx {
            shared,
            session,
            txn: Some(&cell),
        };
        let replies = multi
            .queued
            .iter()
            .map(|request| match super::run(&mut inner, request) {
                Outcome::Reply(frame) | Outcome::Close(frame) => frame,
                Outcome::OverLimit => reply::err("reply too large for the output buffer"),
                Outcome::Blocking(_) | Outcome::Wait(_) => {
                    reply::err("cannot block inside a transaction")
                }
                Outcome::Moved { .. } => reply::err("a key moved inside a transaction"),
                // Refused when queued (`no_multi`); never reached.
                Outcome::Shutdown => reply::err("Command not allowed inside a transaction"),
            })
            .collect::<Vec<Frame>>();
        Some(replies)
    });
    match result {
        Ok(Some(replies)) => reply::array(replies),
        Ok(None) => Frame::NullArray,
        Err(e) => cluster_error(e),
    }
    .into()
}
