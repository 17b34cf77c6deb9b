//! Counters: INCR, DECR, INCRBY, DECRBY. Each is one
//! [`Cluster::update`](ringkv_cluster::Cluster::update): the read, the
//! addition and the write happen under the key's lock, so concurrent
//! increments are never lost, also while the key's range is being moved.

use bytes::Bytes;
use ringkv_cluster::Update;

use super::{Ctx, Outcome, cluster_error, owned, parse_i64};
use crate::reply::{self, Frame};

pub fn incr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    add(ctx, &args[0], 1)
}

pub fn decr(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    add(ctx, &args[0], -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match parse_i64(&args[1]) {
        Some(delta) => add(ctx, &args[0], delta),
        None => reply::not_integer().into(),
    }
}

pub fn decrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match parse_i64(&args[1]) {
        Some(i64::MIN) => reply::err("decrement would overflow").into(),
        Some(delta) => add(ctx, &args[0], -delta),
        None => reply::not_integer().into(),
    }
}

/// Why an addition was refused; the key keeps its value.
enum Refused {
    NotInteger,
    Overflow,
}

fn add(ctx: &mut Ctx<'_>, key: &Bytes, delta: i64) -> Outcome {
    let result = ctx.db().update(owned(key), |old| {
        let current = match old {
            None => 0,
            Some(value) => match parse_i64(value) {
                Some(n) => n,
                None => return (Update::Keep, Err(Refused::NotInteger)),
            },
        };
        match current.checked_add(delta) {
            Some(n) => (Update::Put(Bytes::from(n.to_string())), Ok(n)),
            None => (Update::Keep, Err(Refused::Overflow)),
        }
    });
    let frame: Frame = match result {
        Ok(Ok(n)) => reply::int(n),
        Ok(Err(Refused::NotInteger)) => reply::not_integer(),
        Ok(Err(Refused::Overflow)) => reply::err("increment or decrement would overflow"),
        Err(e) => cluster_error(e),
    };
    frame.into()
}
