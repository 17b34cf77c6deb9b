//! SET with its options (`NX`, `XX`, `GET`, `EX`, `PX`, `EXAT`, `PXAT`,
//! `KEEPTTL`), SETEX, PSETEX and GETEX, parsed as Redis's
//! `parseExtendedStringArgumentsOrReply` does.
//!
//! Expiry is an absolute time in the cluster's clock (unix ms) stored with
//! the entry, so it moves with the key. Options that read the old entry
//! (`NX`, `XX`, `GET`, `KEEPTTL`) make the write one atomic
//! `update_entry`; a plain SET, with or without an expiry, is one put.

use bytes::Bytes;
use ringkv_cluster::{Entry, EntryUpdate};

use super::{Ctx, Outcome, cluster_error, owned, parse_i64};
use crate::reply::{self, Frame};

/// How an expiry argument is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `EX`: seconds from now.
    Seconds,
    /// `PX`: milliseconds from now.
    Millis,
    /// `EXAT`: a unix time in seconds.
    UnixSeconds,
    /// `PXAT`: a unix time in milliseconds.
    UnixMillis,
}

/// Options of SET (and GETEX, which takes `PERSIST` and no `NX/XX/GET`).
#[derive(Debug, Default)]
struct Options {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    expire: Option<(Unit, Bytes)>,
}

/// Which command's options are parsed.
#[derive(PartialEq, Eq)]
enum Command {
    Set,
    GetEx,
}

fn parse_options(args: &[Bytes], command: Command) -> Result<Options, Frame> {
    let mut o = Options::default();
    let set = command == Command::Set;
    let mut i = 0;
    while i < args.len() {
        let word = args[i].to_ascii_uppercase();
        let next = args.get(i + 1);
        let timed = o.expire.is_some();
        match (&word[..], next) {
            (b"NX", _) if set && !o.xx => o.nx = true,
            (b"XX", _) if set && !o.nx => o.xx = true,
            (b"GET", _) if set => o.get = true,
            (b"KEEPTTL", _) if set && !timed => o.keep_ttl = true,
            (b"PERSIST", _) if !set && !timed => o.persist = true,
            (b"EX" | b"PX" | b"EXAT" | b"PXAT", Some(value))
                if !timed && !o.keep_ttl && !o.persist =>
            {
                let unit = match &word[..] {
                    b"EX" => Unit::Seconds,
                    b"PX" => Unit::Millis,
                    b"EXAT" => Unit::UnixSeconds,
                    _ => Unit::UnixMillis,
                };
                o.expire = Some((unit, value.clone()));
                i += 1;
            }
            _ => return Err(reply::syntax_error()),
        }
        i += 1;
    }
    Ok(o)
}

/// The absolute expiry (unix ms) an argument asks for, checked as Redis's
/// `getExpireMillisecondsOrReply`: a positive integer whose time does not
/// overflow. `name` is the command's, for the error text.
pub fn expire_at(now: u64, unit: Unit, arg: &[u8], name: &str) -> Result<u64, Frame> {
    let invalid = || reply::err(format!("invalid expire time in '{name}' command"));
    let n = parse_i64(arg).ok_or_else(reply::not_integer)?;
    if n <= 0 {
        return Err(invalid());
    }
    let ms = match unit {
        Unit::Seconds | Unit::UnixSeconds => n.checked_mul(1000).ok_or_else(invalid)?,
        Unit::Millis | Unit::UnixMillis => n,
    };
    let at = match unit {
        Unit::Seconds | Unit::Millis => ms.checked_add(now as i64).ok_or_else(invalid)?,
        Unit::UnixSeconds | Unit::UnixMillis => ms,
    };
    Ok(at as u64)
}

pub fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let options = match parse_options(&args[2..], Command::Set) {
        Ok(options) => options,
        Err(e) => return e.into(),
    };
    let cluster = ctx.db();
    let expires_at = match &options.expire {
        None => None,
        Some((unit, arg)) => match expire_at(cluster.now_ms(), *unit, arg, "set") {
            Ok(at) => Some(at),
            Err(e) => return e.into(),
        },
    };
    let (key, value) = (owned(&args[0]), owned(&args[1]));
    if !(options.nx || options.xx || options.get || options.keep_ttl) {
        let written = match expires_at {
            None => cluster.put(key, value),
            Some(_) => cluster.put_entry(key, Entry::string(value).expiring(expires_at)),
        };
        return match written {
            Ok(()) => reply::ok(),
            Err(e) => cluster_error(e),
        }
        .into();
    }
    // NX/XX/GET/KEEPTTL read the old entry and write in one atomic step.
    let result = cluster.update_entry(key, |live, _| {
        let exists = live.is_some();
        let old = live.map(|e| e.value.clone());
        if options.nx && exists || options.xx && !exists {
            return (EntryUpdate::Keep, (false, old));
        }
        let expiry = if options.keep_ttl {
            live.and_then(|e| e.expires_at)
        } else {
            expires_at
        };
        (
            EntryUpdate::Put(Entry::string(value).expiring(expiry)),
            (true, old),
        )
    });
    match result {
        Ok((_, old)) if options.get => reply::bulk_or_null(old),
        Ok((true, _)) => reply::ok(),
        Ok((false, _)) => Frame::Null,
        Err(e) => cluster_error(e),
    }
    .into()
}

fn set_expiring(ctx: &mut Ctx<'_>, args: &[Bytes], unit: Unit, name: &str) -> Outcome {
    let cluster = ctx.db();
    let at = match expire_at(cluster.now_ms(), unit, &args[1], name) {
        Ok(at) => at,
        Err(e) => return e.into(),
    };
    let entry = Entry::string(owned(&args[2])).expiring(Some(at));
    match cluster.put_entry(owned(&args[0]), entry) {
        Ok(()) => reply::ok(),
        Err(e) => cluster_error(e),
    }
    .into()
}

pub fn setex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    set_expiring(ctx, args, Unit::Seconds, "setex")
}

pub fn psetex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    set_expiring(ctx, args, Unit::Millis, "psetex")
}

/// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]: the value, and
/// the expiry changed in the same atomic step.
pub fn getex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let options = match parse_options(&args[1..], Command::GetEx) {
        Ok(options) => options,
        Err(e) => return e.into(),
    };
    let cluster = ctx.db();
    let expires_at = match &options.expire {
        None => None,
        Some((unit, arg)) => match expire_at(cluster.now_ms(), *unit, arg, "getex") {
            Ok(at) => Some(at),
            Err(e) => return e.into(),
        },
    };
    let result = cluster.update_entry(owned(&args[0]), |live, _| {
        let Some(live) = live else {
            return (EntryUpdate::Keep, None);
        };
        let value = live.value.clone();
        let next = if options.persist && live.expires_at.is_some() {
            EntryUpdate::Put(live.clone().expiring(None))
        } else if expires_at.is_some() {
            EntryUpdate::Put(live.clone().expiring(expires_at))
        } else {
            EntryUpdate::Keep
        };
        (next, Some(value))
    });
    let frame = match result {
        Ok(value) => reply::bulk_or_null(value),
        Err(e) => cluster_error(e),
    };
    super::strings::count_read(ctx, !matches!(frame, Frame::Null));
    frame.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str], command: Command) -> Result<Options, Frame> {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::from(w.to_string())).collect();
        parse_options(&args, command)
    }

    #[test]
    fn options_conflict_as_in_redis() {
        let syntax = Err::<(), _>(reply::syntax_error());
        for bad in [
            &["NX", "XX"][..],
            &["EX", "1", "PX", "1"],
            &["EX", "1", "KEEPTTL"],
            &["KEEPTTL", "EXAT", "1"],
            &["EX"],
            &["PERSIST"],
            &["bogus"],
        ] {
            assert_eq!(opts(bad, Command::Set).map(drop), syntax, "{bad:?}");
        }
        for bad in [&["NX"][..], &["GET"], &["KEEPTTL"], &["PERSIST", "EX", "1"]] {
            assert_eq!(opts(bad, Command::GetEx).map(drop), syntax, "{bad:?}");
        }
        let o = opts(&["nx", "get", "px", "100"], Command::Set).expect("valid");
        assert!(o.nx && o.get && o.expire.is_some());
    }

    #[test]
    fn expiry_arguments_are_checked_like_redis() {
        let invalid = Err(reply::err("invalid expire time in 'set' command"));
        assert_eq!(expire_at(1000, Unit::Seconds, b"10", "set"), Ok(11_000));
        assert_eq!(expire_at(1000, Unit::Millis, b"10", "set"), Ok(1010));
        assert_eq!(expire_at(1000, Unit::UnixSeconds, b"5", "set"), Ok(5000));
        assert_eq!(expire_at(1000, Unit::UnixMillis, b"5", "set"), Ok(5));
        assert_eq!(expire_at(1000, Unit::Seconds, b"0", "set"), invalid);
        assert_eq!(expire_at(1000, Unit::Seconds, b"-1", "set"), invalid);
        assert_eq!(
            expire_at(1000, Unit::Seconds, b"9223372036854775", "set"),
            invalid
        );
        assert_eq!(
            expire_at(1000, Unit::Millis, b"9223372036854775807", "set"),
            invalid
        );
        assert_eq!(
            expire_at(1000, Unit::Seconds, b"x", "set"),
            Err(reply::not_integer())
        );
    }
}
