//! String commands: GET, SET, DEL, EXISTS, MGET, MSET, STRLEN.
//!
//! Every key is read and written through the cluster, which is
//! linearizable per key. Commands over several keys (DEL, EXISTS, MGET,
//! MSET) apply key by key: each key atomically, the whole not (another
//! client may see part of an MSET); a cluster error stops at that key.

use bytes::Bytes;
use ringkv_cluster::Update;

use super::{Ctx, Outcome, cluster_error, owned};
use crate::reply::{self, Frame};

/// Reads a key, counting a keyspace hit or miss for `INFO stats`.
pub fn read(ctx: &Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, ringkv_cluster::ClusterError> {
    let value = ctx.shared.cluster.get(key)?;
    let counter = if value.is_some() {
        &ctx.shared.stats.keyspace_hits
    } else {
        &ctx.shared.stats.keyspace_misses
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(value)
}

pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match read(ctx, &args[0]) {
        Ok(value) => reply::bulk_or_null(value),
        Err(e) => cluster_error(e),
    }
    .into()
}

/// SET's options (no expiry: ringkv keeps no TTLs).
#[derive(Debug, Default, PartialEq, Eq)]
struct SetOptions {
    /// Only if absent.
    nx: bool,
    /// Only if present.
    xx: bool,
    /// Reply with the old value.
    get: bool,
}

fn set_options(args: &[Bytes]) -> Result<SetOptions, Frame> {
    let mut options = SetOptions::default();
    let mut i = 0;
    while i < args.len() {
        let word = args[i].to_ascii_uppercase();
        match &word[..] {
            b"NX" if !options.xx => options.nx = true,
            b"XX" if !options.nx => options.xx = true,
            b"GET" => options.get = true,
            // No key has a TTL, so keeping it is what always happens.
            b"KEEPTTL" => {}
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                if i + 1 >= args.len() {
                    return Err(reply::syntax_error());
                }
                return Err(reply::err(
                    "ringkv keeps no expiry: SET EX/PX/EXAT/PXAT are not supported",
                ));
            }
            _ => return Err(reply::syntax_error()),
        }
        i += 1;
    }
    Ok(options)
}

pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let options = match set_options(&args[2..]) {
        Ok(options) => options,
        Err(e) => return e.into(),
    };
    let (key, value) = (owned(&args[0]), owned(&args[1]));
    let cluster = &ctx.shared.cluster;
    if options == SetOptions::default() {
        return match cluster.put(key, value) {
            Ok(()) => reply::ok(),
            Err(e) => cluster_error(e),
        }
        .into();
    }
    // NX/XX/GET read the old value and write in one atomic step.
    let result = cluster.update(key, |old| {
        let exists = old.is_some();
        let write = !(options.nx && exists || options.xx && !exists);
        let next = if write {
            Update::Put(value)
        } else {
            Update::Keep
        };
        (next, (write, old.cloned()))
    });
    match result {
        Ok((_, old)) if options.get => reply::bulk_or_null(old),
        Ok((true, _)) => reply::ok(),
        Ok((false, _)) => Frame::Null,
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let mut deleted = 0;
    for key in args {
        match ctx.shared.cluster.delete(key.clone()) {
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

pub fn mset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    if !args.len().is_multiple_of(2) {
        return reply::wrong_arity("mset").into();
    }
    for pair in args.chunks_exact(2) {
        if let Err(e) = ctx.shared.cluster.put(owned(&pair[0]), owned(&pair[1])) {
            return cluster_error(e).into();
        }
    }
    reply::ok().into()
}

pub fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match read(ctx, &args[0]) {
        Ok(value) => reply::int(value.map_or(0, |v| v.len())),
        Err(e) => cluster_error(e),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str]) -> Result<SetOptions, Frame> {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::from(w.to_string())).collect();
        set_options(&args)
    }

    #[test]
    fn set_options_parse_like_redis() {
        assert_eq!(opts(&[]), Ok(SetOptions::default()));
        assert_eq!(
            opts(&["nx", "GET"]),
            Ok(SetOptions {
                nx: true,
                xx: false,
                get: true
            })
        );
        assert_eq!(opts(&["NX", "XX"]), Err(reply::syntax_error()));
        assert_eq!(opts(&["XX", "NX"]), Err(reply::syntax_error()));
        assert_eq!(opts(&["EX"]), Err(reply::syntax_error()));
        assert_eq!(opts(&["bogus"]), Err(reply::syntax_error()));
        assert!(matches!(opts(&["EX", "10"]), Err(Frame::Error(e)) if e.contains("expiry")));
        assert_eq!(opts(&["KEEPTTL"]), Ok(SetOptions::default()));
    }
}
