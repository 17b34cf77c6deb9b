//! The key space as a whole: SCAN, KEYS, RANDOMKEY, DBSIZE, FLUSHALL and
//! FLUSHDB; and the commands over several keys that must be atomic:
//! MSET, MSETNX, RENAME, RENAMENX, COPY (each one cluster transaction, so
//! all of it or none is seen, also while the keys' ranges move).

use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use ringkv_cluster::Entry;

use super::{Ctx, Outcome, cluster_error, owned, parse_i64};
use crate::glob::Pattern;
use crate::reply::{self, Frame};
use crate::route::{Router, ScanPage, Waited};

/// Keys `KEYS` reads per scan call.
const KEYS_BATCH: usize = 1024;

/// Keys `RANDOMKEY` reads per scan call on a node.
const RANDOM_BATCH: usize = 16;

/// On a node of a multi-process cluster its router reads the whole key
/// space (the node's own store holds only the keys it serves): `SCAN`,
/// `KEYS`, `RANDOMKEY` and `DBSIZE` answer for every key there, as here.
fn router(ctx: &Ctx<'_>) -> Option<Arc<dyn Router>> {
    ctx.shared.router.clone()
}

/// The next page through a router that reads the whole key space (it
/// did for the first page, so it does for every one).
async fn next_page(router: &dyn Router, cursor: u64, count: usize) -> Result<ScanPage, String> {
    match router.scan(cursor, count) {
        Some(page) => page.await,
        None => Err("ERR the router no longer reads the key space".into()),
    }
}

/// Waits for `reply` off the event loop, then sends it.
fn later(reply: impl Future<Output = Frame> + Send + 'static) -> Outcome {
    Outcome::Wait(Box::pin(async move { Waited::Frame(reply.await) }))
}

pub fn dbsize(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let router = router(ctx);
    if let Some(count) = router.and_then(|r| r.dbsize()) {
        return later(async move {
            match count.await {
                Ok(n) => reply::int(n),
                Err(e) => reply::error(e),
            }
        });
    }
    reply::int(ctx.shared.cluster.dbsize()).into()
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`. The cursor is a
/// position in the ring's token order, so a key present for the whole
/// scan is returned at least once, also while nodes join and leave.
pub fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let cursor = match std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(cursor) => cursor,
        None => return reply::err("invalid cursor").into(),
    };
    let mut pattern = None;
    let mut count = 10usize;
    let mut only_strings = true;
    let mut rest = &args[1..];
    while let [option, value, tail @ ..] = rest {
        match &option.to_ascii_uppercase()[..] {
            b"MATCH" => match Pattern::new(value, false) {
                Ok(p) => pattern = Some(p),
                Err(e) => return reply::err(e).into(),
            },
            b"COUNT" => match parse_i64(value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return reply::syntax_error().into(),
                None => return reply::not_integer().into(),
            },
            // Every key is a string today; another type matches nothing.
            b"TYPE" => only_strings = value.eq_ignore_ascii_case(b"string"),
            _ => return reply::syntax_error().into(),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return reply::syntax_error().into();
    }
    let keep = move |key: &[u8]| only_strings && pattern.as_ref().is_none_or(|p| p.matches(key));
    let frame = |cursor: u64, keys: Vec<Bytes>| {
        reply::array(vec![
            reply::bulk(cursor.to_string()),
            reply::array(keys.into_iter().map(reply::bulk).collect()),
        ])
    };
    let router = router(ctx);
    if let Some(page) = router.and_then(|r| r.scan(cursor, count)) {
        return later(async move {
            match page.await {
                Ok(mut page) => {
                    page.keys.retain(|k| keep(k));
                    frame(page.cursor, page.keys)
                }
                Err(e) => reply::error(e),
            }
        });
    }
    match ctx.shared.cluster.scan(cursor, count, |key, _| keep(key)) {
        Ok(page) => frame(page.cursor, page.keys),
        Err(e) => cluster_error(e),
    }
    .into()
}

/// `KEYS pattern`: a whole scan, the reply checked against the
/// output-buffer limit as it grows.
pub fn keys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let pattern = match Pattern::new(&args[0], false) {
        Ok(p) => p,
        Err(e) => return reply::err(e).into(),
    };
    let limit = ctx.shared.config.client_output_buffer_limit;
    let protocol = ctx.session.protocol;
    let (mut cursor, mut size, mut keys) = (0, 0usize, Vec::new());
    let router = router(ctx);
    if let Some(router) = router
        && let Some(page) = router.scan(0, KEYS_BATCH)
    {
        return Outcome::Wait(Box::pin(async move {
            let mut next = page.await;
            loop {
                let page = match next {
                    Ok(page) => page,
                    Err(e) => return Waited::Frame(reply::error(e)),
                };
                for key in page.keys.into_iter().filter(|k| pattern.matches(k)) {
                    let frame = reply::bulk(key);
                    size = size.saturating_add(frame.encoded_len(protocol));
                    if limit != 0 && size > limit {
                        return Waited::OverLimit;
                    }
                    keys.push(frame);
                }
                if page.cursor == 0 {
                    return Waited::Frame(reply::array(keys));
                }
                next = next_page(&*router, page.cursor, KEYS_BATCH).await;
            }
        }));
    }
    loop {
        let page = match ctx
            .shared
            .cluster
            .scan(cursor, KEYS_BATCH, |key, _| pattern.matches(key))
        {
            Ok(page) => page,
            Err(e) => return cluster_error(e).into(),
        };
        for key in page.keys {
            let frame = reply::bulk(key);
            size = size.saturating_add(frame.encoded_len(protocol));
            if limit != 0 && size > limit {
                return Outcome::OverLimit;
            }
            keys.push(frame);
        }
        cursor = page.cursor;
        if cursor == 0 {
            return reply::array(keys).into();
        }
    }
}

pub fn randomkey(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let router = router(ctx);
    if let Some(router) = router {
        // As `Cluster::random_key`: the first key from a random token on,
        // going round the ring once.
        let start = std::hash::RandomState::new().hash_one(std::time::Instant::now());
        if let Some(first) = router.scan(start, RANDOM_BATCH) {
            return later(async move {
                let (mut next, mut wrapped) = (first.await, false);
                loop {
                    let page = match next {
                        Ok(page) => page,
                        Err(e) => return reply::error(e),
                    };
                    if let Some(key) = page.keys.into_iter().next() {
                        return reply::bulk(key);
                    }
                    // Round once: past the end back to 0, then up to `start`.
                    if page.cursor == 0 {
                        if wrapped || start == 0 {
                            return reply::bulk_or_null(None);
                        }
                        wrapped = true;
                    } else if wrapped && page.cursor >= start {
                        return reply::bulk_or_null(None);
                    }
                    next = next_page(&*router, page.cursor, RANDOM_BATCH).await;
                }
            });
        }
    }
    match ctx.shared.cluster.random_key() {
        Ok(key) => reply::bulk_or_null(key),
        Err(e) => cluster_error(e),
    }
    .into()
}

/// `FLUSHALL`/`FLUSHDB [SYNC|ASYNC]`: deletes every key. Both modes wait
/// for the flush (memory is freed as it goes); it walks the whole ring, so
/// it runs on a blocking thread.
pub fn flushall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match args {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"SYNC") || mode.eq_ignore_ascii_case(b"ASYNC") => {}
        _ => return reply::syntax_error().into(),
    }
    let shared = std::sync::Arc::clone(ctx.shared);
    Outcome::Blocking(Box::new(move || match shared.cluster.flush() {
        Ok(_) => reply::ok(),
        Err(e) => cluster_error(e),
    }))
}

/// `MSET k v [k v ...]`: every pair written at once, or none.
pub fn mset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    set_many(ctx, args, false, "mset")
}

/// `MSETNX`: 1 and every pair written if no key exists, else 0 and none.
pub fn msetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    set_many(ctx, args, true, "msetnx")
}

fn set_many(ctx: &mut Ctx<'_>, args: &[Bytes], nx: bool, name: &str) -> Outcome {
    if !args.len().is_multiple_of(2) {
        return reply::wrong_arity(name).into();
    }
    let pairs: Vec<(Bytes, Bytes)> = args
        .chunks_exact(2)
        .map(|p| (owned(&p[0]), owned(&p[1])))
        .collect();
    let result = ctx
        .db()
        .transaction(pairs.iter().map(|(k, _)| k.clone()), |txn| {
            if nx && pairs.iter().any(|(k, _)| txn.get(k).is_some()) {
                return false;
            }
            for (key, value) in &pairs {
                txn.put(key, Entry::string(value.clone()));
            }
            true
        });
    match result {
        Ok(written) if nx => reply::int(i64::from(written)),
        Ok(_) => reply::ok(),
        Err(e) => cluster_error(e),
    }
    .into()
}

/// Why a RENAME or COPY did nothing.
enum Refused {
    NoSuchKey,
    Exists,
}

/// RENAME and RENAMENX: the entry (with its expiry) moves to the new name
/// in one step.
fn rename_generic(ctx: &mut Ctx<'_>, args: &[Bytes], nx: bool) -> Outcome {
    let (from, to) = (owned(&args[0]), owned(&args[1]));
    let result = ctx.db().transaction([from.clone(), to.clone()], |txn| {
        let Some(entry) = txn.get(&from).cloned() else {
            return Err(Refused::NoSuchKey);
        };
        if from == to {
            return if nx { Err(Refused::Exists) } else { Ok(()) };
        }
        if nx && txn.get(&to).is_some() {
            return Err(Refused::Exists);
        }
        txn.delete(&from);
        txn.put(&to, entry);
        Ok(())
    });
    match result {
        Ok(Ok(())) if nx => reply::int(1),
        Ok(Ok(())) => reply::ok(),
        Ok(Err(Refused::Exists)) => reply::int(0),
        Ok(Err(Refused::NoSuchKey)) => reply::err("no such key"),
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn rename(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    rename_generic(ctx, args, false)
}

pub fn renamenx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    rename_generic(ctx, args, true)
}

/// `COPY source destination [DB 0] [REPLACE]`: 1 if copied (with the
/// expiry), 0 if the source is missing or the destination exists.
pub fn copy(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let (from, to) = (owned(&args[0]), owned(&args[1]));
    let mut replace = false;
    let mut rest = &args[2..];
    while let [option, tail @ ..] = rest {
        match (&option.to_ascii_uppercase()[..], tail) {
            (b"REPLACE", _) => {
                replace = true;
                rest = tail;
            }
            (b"DB", [db, tail @ ..]) => {
                match parse_i64(db) {
                    Some(0) => {}
                    Some(_) => return reply::err("DB index is out of range").into(),
                    None => return reply::not_integer().into(),
                }
                rest = tail;
            }
            _ => return reply::syntax_error().into(),
        }
    }
    if from == to {
        return reply::err("source and destination objects are the same").into();
    }
    let result = ctx.db().transaction([from.clone(), to.clone()], |txn| {
        let Some(entry) = txn.get(&from).cloned() else {
            return 0;
        };
        if !replace && txn.get(&to).is_some() {
            return 0;
        }
        txn.put(&to, entry);
        1
    });
    match result {
        Ok(n) => reply::int(n),
        Err(e) => cluster_error(e),
    }
    .into()
}
