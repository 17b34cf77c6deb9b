//! `CONFIG GET`, `CONFIG SET`, `CONFIG RESETSTAT`, `CONFIG REWRITE`.
//!
//! The parameters are those that mean something here. `maxclients`,
//! `timeout` and `requirepass` can be changed while the server runs; the
//! `maxmemory` and `maxmemory-policy` (the cluster's limit and eviction
//! policy) can be changed while the server runs; the others are shown as
//! they are, and setting one to anything but what it is gets Redis's error
//! for an immutable parameter (`save ""`, and `appendonly` set to what it
//! is, are accepted: they say what ringkv does anyway). As in Redis, `CONFIG SET`
//! of several parameters applies all or none.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Ctx, Outcome};
use crate::glob::Pattern;
use crate::reply::{self, Frame};
use crate::state::Shared;

/// Every parameter `CONFIG GET` knows, in the order it lists them.
const PARAMETERS: &[&str] = &[
    "maxclients",
    "timeout",
    "requirepass",
    "proto-max-bulk-len",
    "client-output-buffer-limit",
    "databases",
    "save",
    "appendonly",
    "appendfsync",
    "dir",
    "maxmemory",
    "maxmemory-policy",
    "hz",
    "port",
    "bind",
    "daemonize",
];

/// A parameter's value now.
fn get(shared: &Shared, name: &str) -> String {
    let config = &shared.config;
    match name {
        "maxclients" => shared.live.max_clients.load(Ordering::Relaxed).to_string(),
        "timeout" => (shared.live.idle_timeout_ms.load(Ordering::Relaxed) / 1000).to_string(),
        "requirepass" => shared.live.requirepass().unwrap_or_default(),
        "proto-max-bulk-len" => config.max_bulk_len.to_string(),
        "client-output-buffer-limit" => {
            format!("normal {} 0 0", config.client_output_buffer_limit)
        }
        "databases" => "1".into(),
        "save" => String::new(),
        // The data directory plays the append-only file's part: every
        // write is journaled there (see `ringkv serve --data-dir`).
        "appendonly" => if shared.cluster.data_dir().is_some() {
            "yes"
        } else {
            "no"
        }
        .into(),
        "appendfsync" => shared.cluster.config().fsync.name().into(),
        "dir" => shared.cluster.data_dir().unwrap_or_default(),
        "maxmemory" => shared.cluster.maxmemory().to_string(),
        "maxmemory-policy" => shared.cluster.maxmemory_policy().name().into(),
        "hz" => "10".into(),
        "port" => shared.local_addr.port().to_string(),
        "bind" => shared.local_addr.ip().to_string(),
        "daemonize" => "no".into(),
        _ => String::new(),
    }
}

pub fn config(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let sub = args[0].to_ascii_uppercase();
    let rest = &args[1..];
    let frame = match (&sub[..], rest) {
        (b"GET", [_, ..]) => config_get(ctx.shared, rest),
        (b"SET", [_, _, ..]) => config_set(ctx.shared, rest),
        (b"RESETSTAT", []) => {
            ctx.shared.reset_stats();
            reply::ok()
        }
        (b"REWRITE", []) => reply::err("The server is running without a config file"),
        (b"GET" | b"SET" | b"RESETSTAT" | b"REWRITE", _) => reply::wrong_arity(&format!(
            "config|{}",
            String::from_utf8_lossy(&sub).to_lowercase()
        )),
        _ => reply::err(format!(
            "unknown subcommand '{}'. Try CONFIG HELP.",
            reply::quote(&args[0])
        )),
    };
    frame.into()
}

fn config_get(shared: &Shared, patterns: &[Bytes]) -> Frame {
    let patterns = match patterns
        .iter()
        .map(|p| Pattern::new(p, true))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(patterns) => patterns,
        Err(e) => return reply::err(e),
    };
    let pairs = PARAMETERS
        .iter()
        .filter(|name| patterns.iter().any(|p| p.matches(name.as_bytes())))
        .map(|name| (reply::bulk(*name), reply::bulk(get(shared, name))))
        .collect();
    Frame::Map(pairs)
}

/// One parameter's new value, checked and not yet applied.
enum Change {
    MaxClients(usize),
    Timeout(u64),
    Requirepass(Option<String>),
    Maxmemory(u64),
    Policy(ringkv_cluster::EvictionPolicy),
    /// Equal to what it is: nothing to do.
    Same,
}

fn config_set(shared: &Shared, args: &[Bytes]) -> Frame {
    if !args.len().is_multiple_of(2) {
        return reply::syntax_error();
    }
    // First every name, as Redis: an unknown one is reported before any
    // value is looked at.
    let mut names = Vec::with_capacity(args.len() / 2);
    for pair in args.chunks_exact(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_lowercase();
        if !PARAMETERS.contains(&name.as_str()) {
            return reply::err(format!(
                "Unknown option or number of arguments for CONFIG SET - '{}'",
                reply::quote(&pair[0])
            ));
        }
        if names.contains(&name) {
            return set_failed(&name, "duplicate parameter");
        }
        names.push(name);
    }
    let mut changes = Vec::with_capacity(names.len());
    for (name, pair) in names.iter().zip(args.chunks_exact(2)) {
        match check(shared, name, &pair[1]) {
            Ok(change) => changes.push(change),
            Err(e) => return e,
        }
    }
    for change in changes {
        match change {
            Change::MaxClients(n) => shared.live.max_clients.store(n, Ordering::Relaxed),
            Change::Timeout(secs) => shared
                .live
                .idle_timeout_ms
                .store(secs * 1000, Ordering::Relaxed),
            Change::Requirepass(password) => shared.live.set_requirepass(password),
            Change::Maxmemory(bytes) => shared.cluster.set_maxmemory(bytes),
            Change::Policy(policy) => shared.cluster.set_maxmemory_policy(policy),
            Change::Same => {}
        }
    }
    reply::ok()
}

fn set_failed(name: &str, why: &str) -> Frame {
    reply::err(format!(
        "CONFIG SET failed (possibly related to argument '{name}') - {why}"
    ))
}

/// Parses an integer parameter within Redis's bounds, with its errors.
fn bounded(name: &str, value: &[u8], min: i64, max: i64) -> Result<i64, Frame> {
    let n = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| set_failed(name, "argument couldn't be parsed into an integer"))?;
    if n < min || n > max {
        return Err(set_failed(
            name,
            &format!("argument must be between {min} and {max} inclusive"),
        ));
    }
    Ok(n)
}

fn check(shared: &Shared, name: &str, value: &[u8]) -> Result<Change, Frame> {
    match name {
        "maxclients" => {
            let max = crate::MAX_CLIENTS_LIMIT as i64;
            let wanted = bounded(name, value, 1, max)? as usize;
            let possible = crate::fdlimit::cap_max_clients(wanted)
                .map_err(|e| set_failed(name, &e.to_string()))?;
            if possible < wanted {
                return Err(set_failed(
                    name,
                    &format!(
                        "The operating system is not able to handle the specified number of \
                         clients, try with {possible}"
                    ),
                ));
            }
            Ok(Change::MaxClients(wanted))
        }
        "timeout" => Ok(Change::Timeout(
            bounded(name, value, 0, i64::from(i32::MAX))? as u64,
        )),
        "requirepass" => match String::from_utf8(value.to_vec()) {
            Ok(p) if p.is_empty() => Ok(Change::Requirepass(None)),
            Ok(p) => Ok(Change::Requirepass(Some(p))),
            Err(_) => Err(set_failed(name, "the password must be UTF-8")),
        },
        "maxmemory" => memory(value)
            .map(Change::Maxmemory)
            .ok_or_else(|| set_failed(name, "argument must be a memory value")),
        "maxmemory-policy" => ringkv_cluster::EvictionPolicy::ALL
            .into_iter()
            .find(|p| p.name().as_bytes().eq_ignore_ascii_case(value))
            .map(Change::Policy)
            .ok_or_else(|| set_failed(name, "argument(s) must be one of the following: volatile-lru, allkeys-lru, volatile-ttl, allkeys-random, noeviction")),
        // Setting what it is already changes nothing, so it is allowed.
        _ if get(shared, name).as_bytes().eq_ignore_ascii_case(value) => Ok(Change::Same),
        _ => Err(set_failed(name, "can't set immutable config")),
    }
}

/// A memory size as Redis's `memtoull`: bytes, or with a unit `k`, `kb`,
/// `m`, `mb`, `g`, `gb` (any case; `k` is 1000 and `kb` 1024).
fn memory(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.to_ascii_lowercase();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}
