//! String commands: GET, DEL, EXISTS, MGET, MSET, STRLEN (SET is in `set`).
//!
//! Every key is read and written through the cluster, which is
//! linearizable per key. Commands over several keys (DEL, EXISTS, MGET,
//! MSET) apply key by key: each key atomically, the whole not (another
//! client may see part of an MSET); a cluster error stops at that key.

use bytes::Bytes;

use super::{Ctx, Outcome, cluster_error};
use crate::reply;

/// Reads a key, counting a keyspace hit or miss for `INFO stats`.
pub fn read(ctx: &Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, ringkv_cluster::ClusterError> {
    let value = ctx.db().get(key)?;
    count_read(ctx, value.is_some());
    Ok(value)
}

/// Counts a keyspace hit (the key was found) or miss.
pub fn count_read(ctx: &Ctx<'_>, found: bool) {
    let counter = if found {
        &ctx.shared.stats.keyspace_hits
    } else {
        &ctx.shared.stats.keyspace_misses
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match read(ctx, &args[0]) {
        Ok(value) => reply::bulk_or_null(value),
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let mut deleted = 0;
    for key in args {
        match ctx.db().delete(key.clone()) {
            Ok(existed) => deleted += i64::from(existed),
            Err(e) => return cluster_error(e).into(),
        }
    }
    reply::int(deleted).into()
}

pub fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let mut count = 0;
    for key in args {
        match read(ctx, key) {
            Ok(value) => count += i64::from(value.is_some()),
            Err(e) => return cluster_error(e).into(),
        }
    }
    reply::int(count).into()
}

/// MGET checks the reply's size against the output-buffer limit as it
/// builds it and stops as soon as it would not fit: naming a large value
/// many times must not build a reply of gigabytes first.
pub fn mget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let limit = ctx.shared.config.client_output_buffer_limit;
    let mut size = 0usize;
    let mut values = Vec::with_capacity(args.len().min(1024));
    for key in args {
        let frame = match read(ctx, key) {
            Ok(value) => reply::bulk_or_null(value),
            Err(e) => return cluster_error(e).into(),
        };
        size = size.saturating_add(frame.encoded_len(ctx.session.protocol));
        if limit != 0 && size > limit {
            return Outcome::OverLimit;
        }
        values.push(frame);
    }
    reply::array(values).into()
}

pub fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match read(ctx, &args[0]) {
        Ok(value) => reply::int(value.map_or(0, |v| v.len())),
        Err(e) => cluster_error(e),
    }
    .into()
}
