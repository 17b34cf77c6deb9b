//! String commands that read and rewrite a value in one step: APPEND,
//! GETDEL, GETSET, SETNX, SETRANGE, GETRANGE/SUBSTR, INCRBYFLOAT.
//!
//! Each write is one [`Cluster::update`](ringkv_cluster::Cluster::update)
//! (or `update_entry` where Redis clears the expiry), so it is atomic per
//! key, also while the key's range moves, and keeps the key's expiry where
//! Redis does (APPEND, SETRANGE, INCRBYFLOAT). A refused request changes
//! nothing: the closure returns `Keep` with the error.

use bytes::{Bytes, BytesMut};
use ringkv_cluster::{Entry, EntryUpdate, Update};

use super::strings::read;
use super::{Ctx, Outcome, cluster_error, owned, parse_i64};
use crate::frame::format_double;
use crate::reply::{self, Frame};

/// Redis's error for a string that would outgrow `proto-max-bulk-len`.
fn too_long() -> Frame {
    reply::err("string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// Runs `f` on the key's value under its lock; a cluster error becomes
/// its reply.
fn update(
    ctx: &Ctx<'_>,
    key: &Bytes,
    f: impl FnOnce(Option<&Bytes>) -> (Update, Frame),
) -> Outcome {
    match ctx.db().update(owned(key), f) {
        Ok(frame) => frame,
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn append(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let limit = ctx.shared.config.max_bulk_len;
    let suffix = &args[1];
    update(ctx, &args[0], |old| {
        let old = old.map_or(&b""[..], |v| &v[..]);
        let len = old.len().saturating_add(suffix.len());
        if len > limit {
            return (Update::Keep, too_long());
        }
        let mut value = BytesMut::with_capacity(len);
        value.extend_from_slice(old);
        value.extend_from_slice(suffix);
        (Update::Put(value.freeze()), reply::int(len))
    })
}

pub fn getdel(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    update(ctx, &args[0], |old| match old {
        Some(value) => (Update::Delete, reply::bulk(value.clone())),
        None => (Update::Keep, Frame::Null),
    })
}

/// GETSET: the old value, and the new one stored without an expiry (as
/// `SET` would).
pub fn getset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let value = owned(&args[1]);
    let result = ctx.db().update_entry(owned(&args[0]), |live, _| {
        let old = live.map(|e| e.value.clone());
        (EntryUpdate::Put(Entry::string(value)), old)
    });
    match result {
        Ok(old) => reply::bulk_or_null(old),
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn setnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let value = owned(&args[1]);
    update(ctx, &args[0], |old| match old {
        Some(_) => (Update::Keep, reply::int(0)),
        None => (Update::Put(value), reply::int(1)),
    })
}

pub fn setrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let Some(offset) = parse_i64(&args[1]) else {
        return reply::not_integer().into();
    };
    let Ok(offset) = usize::try_from(offset) else {
        return reply::err("offset is out of range").into();
    };
    let limit = ctx.shared.config.max_bulk_len;
    let patch = &args[2];
    update(ctx, &args[0], |old| {
        let old_len = old.map_or(0, |v| v.len());
        // As Redis: an empty patch changes nothing (and creates nothing).
        if patch.is_empty() {
            return (Update::Keep, reply::int(old_len));
        }
        let end = match offset.checked_add(patch.len()) {
            Some(end) if end <= limit => end,
            _ => return (Update::Keep, too_long()),
        };
        let mut value = BytesMut::zeroed(old_len.max(end));
        if let Some(old) = old {
            value[..old_len].copy_from_slice(old);
        }
        value[offset..end].copy_from_slice(patch);
        let len = value.len();
        (Update::Put(value.freeze()), reply::int(len))
    })
}

/// GETRANGE and SUBSTR: the bytes from `start` to `end` inclusive,
/// negative positions counting from the end, clamped as Redis does.
pub fn getrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let (Some(start), Some(end)) = (parse_i64(&args[1]), parse_i64(&args[2])) else {
        return reply::not_integer().into();
    };
    let value = match read(ctx, &args[0]) {
        Ok(value) => value.unwrap_or_default(),
        Err(e) => return cluster_error(e).into(),
    };
    reply::bulk(substring(&value, start, end)).into()
}

/// Redis's `getrangeCommand` arithmetic.
fn substring(value: &Bytes, mut start: i64, mut end: i64) -> Bytes {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Bytes::new();
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0).min(len - 1);
    if start > end || len == 0 {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

/// Parses a float as Redis's `string2ld`: the whole argument, no spaces,
/// not NaN (infinities parse, and are refused once added).
fn parse_float(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty()
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|x| !x.is_nan())
}

pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let Some(delta) = parse_float(&args[1]) else {
        return reply::err("value is not a valid float").into();
    };
    update(ctx, &args[0], |old| {
        let current = match old {
            None => 0.0,
            Some(value) => match parse_float(value) {
                Some(x) => x,
                None => return (Update::Keep, reply::err("value is not a valid float")),
            },
        };
        let sum = current + delta;
        if !sum.is_finite() {
            return (
                Update::Keep,
                reply::err("increment would produce NaN or Infinity"),
            );
        }
        let text = Bytes::from(format_double(sum));
        (Update::Put(text.clone()), reply::bulk(text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clamp_like_redis() {
        let v = Bytes::from_static(b"Hello World");
        let s = |a, b| String::from_utf8(substring(&v, a, b).to_vec()).expect("utf8");
        assert_eq!(s(0, 3), "Hell");
        assert_eq!(s(0, -1), "Hello World");
        assert_eq!(s(-3, -1), "rld");
        assert_eq!(s(5, 3), "");
        assert_eq!(s(5, 5000), " World");
        assert_eq!(s(-5000, 10000), "Hello World");
        assert_eq!(s(-1, -5), "");
        assert_eq!(substring(&Bytes::new(), 0, -1), Bytes::new());
    }

    #[test]
    fn floats_parse_like_redis() {
        assert_eq!(parse_float(b"1.5"), Some(1.5));
        assert_eq!(parse_float(b"-1e3"), Some(-1000.0));
        assert_eq!(parse_float(b"+inf"), Some(f64::INFINITY));
        for bad in [&b""[..], b" 1", b"1 ", b"nan", b"1.5x", b"\xff"] {
            assert_eq!(parse_float(bad), None, "{bad:?}");
        }
        assert_eq!(format_double(10.5 + 0.1), "10.6");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(5.0e3), "5000");
    }
}
