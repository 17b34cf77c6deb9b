//! Expiry commands: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (with `NX`, `XX`,
//! `GT`, `LT`), TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST; and the key
//! commands that only look at an entry: TYPE, TOUCH.
//!
//! Each change is one `update_entry` on the key: the check of the current
//! expiry and the new one are atomic, also while the key's range moves.
//! Times are the cluster's clock (unix ms), which `update_entry` hands to
//! the closure, so "now" is the instant of the check.

use bytes::Bytes;
use ringkv_cluster::{Entry, EntryUpdate};

use super::strings::count_read;
use super::{Ctx, Outcome, cluster_error, owned, parse_i64};
use crate::reply::{self, Frame};

/// `NX`, `XX`, `GT`, `LT`.
#[derive(Debug, Default, Clone, Copy)]
struct Condition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_condition(args: &[Bytes]) -> Result<Condition, Frame> {
    let mut c = Condition::default();
    for arg in args {
        match &arg.to_ascii_uppercase()[..] {
            b"NX" => c.nx = true,
            b"XX" => c.xx = true,
            b"GT" => c.gt = true,
            b"LT" => c.lt = true,
            _ => {
                return Err(reply::err(format!(
                    "Unsupported option {}",
                    reply::quote(arg)
                )));
            }
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err(reply::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if c.gt && c.lt {
        return Err(reply::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    Ok(c)
}

impl Condition {
    /// Whether the new expiry `when` may replace `current` (`None`: the
    /// key never expires, an infinite TTL for `GT` and `LT`).
    fn allows(self, current: Option<u64>, when: i64) -> bool {
        let current = current.map(|c| c as i64);
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.is_none_or(|c| when <= c)
            || self.lt && current.is_some_and(|c| when >= c))
    }
}

/// The expiry commands' common part, as Redis's `expireGenericCommand`:
/// `relative` adds the clock's time, `seconds` multiplies by 1000; a time
/// already past deletes the key. Replies 1 if the expiry was set (or the
/// key deleted), 0 if the key is absent or a condition refused.
fn expire_generic(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    relative: bool,
    seconds: bool,
    name: &str,
) -> Outcome {
    let condition = match parse_condition(&args[2..]) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let Some(n) = parse_i64(&args[1]) else {
        return reply::not_integer().into();
    };
    let invalid = || reply::err(format!("invalid expire time in '{name}' command"));
    let Some(ms) = (if seconds {
        n.checked_mul(1000)
    } else {
        Some(n)
    }) else {
        return invalid().into();
    };
    let cluster = ctx.db();
    // Checked against the clock now: Redis's overflow check.
    if relative && ms.checked_add(cluster.now_ms() as i64).is_none() {
        return invalid().into();
    }
    let result = cluster.update_entry(owned(&args[0]), |live, now| {
        let Some(live) = live else {
            return (EntryUpdate::Keep, 0);
        };
        let when = if relative {
            ms.saturating_add(now as i64)
        } else {
            ms
        };
        if !condition.allows(live.expires_at, when) {
            return (EntryUpdate::Keep, 0);
        }
        if when <= now as i64 {
            return (EntryUpdate::Delete, 1);
        }
        (
            EntryUpdate::Put(live.clone().expiring(Some(when as u64))),
            1,
        )
    });
    match result {
        Ok(n) => reply::int(n),
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn expire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, true, true, "expire")
}

pub fn pexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, true, false, "pexpire")
}

pub fn expireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, false, true, "expireat")
}

pub fn pexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, false, false, "pexpireat")
}

/// The live entry of a key (`None`: absent or expired) and the clock's
/// time of the read.
fn entry(ctx: &Ctx<'_>, key: &[u8]) -> Result<(Option<Entry>, u64), Frame> {
    let cluster = ctx.db();
    let now = cluster.now_ms();
    cluster
        .get_entry(key)
        .map(|e| (e, now))
        .map_err(cluster_error)
}

/// What TTL-like commands report: -2 absent, -1 no expiry, or `f` of the
/// expiry and the clock's time.
fn ttl_like(ctx: &Ctx<'_>, key: &[u8], f: impl FnOnce(u64, u64) -> i64) -> Outcome {
    match entry(ctx, key) {
        Ok((None, _)) => reply::int(-2),
        Ok((Some(e), now)) => match e.expires_at {
            None => reply::int(-1),
            Some(at) => reply::int(f(at, now)),
        },
        Err(e) => e,
    }
    .into()
}

/// `TTL`: seconds left, rounded to the nearest (Redis: `(ttl+500)/1000`).
pub fn ttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    ttl_like(ctx, &args[0], |at, now| {
        (at.saturating_sub(now).saturating_add(500) / 1000) as i64
    })
}

pub fn pttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    ttl_like(ctx, &args[0], |at, now| at.saturating_sub(now) as i64)
}

pub fn expiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    ttl_like(ctx, &args[0], |at, _| (at / 1000) as i64)
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    ttl_like(ctx, &args[0], |at, _| at as i64)
}

/// `PERSIST`: 1 if an expiry was removed.
pub fn persist(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let result = ctx
        .db()
        .update_entry(owned(&args[0]), |live, _| match live {
            Some(e) if e.expires_at.is_some() => (EntryUpdate::Put(e.clone().expiring(None)), 1),
            _ => (EntryUpdate::Keep, 0),
        });
    match result {
        Ok(n) => reply::int(n),
        Err(e) => cluster_error(e),
    }
    .into()
}

/// `TYPE`: `string`, or `none` for a missing key.
pub fn key_type(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match entry(ctx, &args[0]) {
        Ok((None, _)) => Frame::Simple(Bytes::from_static(b"none")),
        Ok((Some(e), _)) => Frame::Simple(Bytes::from_static(e.kind.name().as_bytes())),
        Err(e) => e,
    }
    .into()
}

/// `TOUCH`: how many of the keys exist (ringkv keeps no access times).
pub fn touch(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let mut count = 0;
    for key in args {
        match ctx.db().exists(key) {
            Ok(found) => {
                count_read(ctx, found);
                count += i64::from(found);
            }
            Err(e) => return cluster_error(e).into(),
        }
    }
    reply::int(count).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_redis() {
        let c = |words: &[&str]| {
            parse_condition(
                &words
                    .iter()
                    .map(|w| Bytes::from(w.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert!(c(&["NX", "XX"]).is_err());
        assert!(c(&["GT", "LT"]).is_err());
        assert!(
            matches!(c(&["bogus"]), Err(Frame::Error(e)) if e == "ERR Unsupported option bogus")
        );
        let gt = c(&["gt"]).expect("valid");
        assert!(!gt.allows(None, 10), "a persistent key is an infinite TTL");
        assert!(gt.allows(Some(5), 10) && !gt.allows(Some(10), 10));
        let lt = c(&["LT"]).expect("valid");
        assert!(lt.allows(None, 10) && lt.allows(Some(11), 10) && !lt.allows(Some(10), 10));
        let nx = c(&["NX"]).expect("valid");
        assert!(nx.allows(None, 1) && !nx.allows(Some(1), 1));
        let xx = c(&["XX"]).expect("valid");
        assert!(!xx.allows(None, 1) && xx.allows(Some(1), 1));
    }
}
