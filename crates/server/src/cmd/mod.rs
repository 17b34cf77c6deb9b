//! Commands: one table says what the server understands (name, arity,
//! flags, documentation, handler); [`dispatch`] checks a request against
//! it and runs the handler. `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`
//! and the arity errors all come from the same table.
//!
//! Handlers call the cluster directly from the connection's async task.
//! That is deliberate: `get`, `put`, `delete` and `update` hold one stripe
//! lock of one node for one in-memory map operation (a redistribution holds
//! such a lock for at most one copy batch), so they are as short as a
//! `std::sync::Mutex` section, which tokio allows in async code. Moving
//! them to `spawn_blocking` would cost a thread hand-off per command.
//! Membership changes are different: they hold the cluster's membership
//! lock for the whole redistribution, so they return
//! [`Outcome::Blocking`] and run on tokio's blocking pool while the
//! connection's other clients keep being served.

mod admin;
mod client;
mod config;
mod conn;
mod counter;
mod db;
mod expire;
mod info;
mod introspect;
mod keyspace;
mod multi;
mod runs;
mod set;
mod string_edit;
mod strings;
mod table;

pub use multi::{Multi, first_key, request_keys};
pub use runs::{joins_write_run, write_run};
pub use table::{COMMANDS, Spec};

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use ringkv_cluster::ClusterError;

use crate::reply::{self, Frame};
use crate::state::{Session, Shared};

/// What a handler sees: the shared state and its connection's session.
pub struct Ctx<'a> {
    /// Shared by every connection.
    pub shared: &'a Arc<Shared>,
    /// This connection's session.
    pub session: &'a mut Session,
    /// The transaction `EXEC` is running, if any.
    pub txn: Option<&'a std::cell::RefCell<&'a mut ringkv_cluster::Txn>>,
}

impl<'a> Ctx<'a> {
    /// Where key commands read and write: the cluster, or the transaction
    /// `EXEC` is running.
    pub fn db(&self) -> db::Db<'a> {
        let shared: &'a Arc<Shared> = self.shared;
        match self.txn {
            Some(txn) => db::Db::Txn(txn),
            None => db::Db::Cluster(&shared.cluster),
        }
    }
}

/// What to do after a command.
pub enum Outcome {
    /// Send this reply.
    Reply(Frame),
    /// Send this reply, then close the connection (`QUIT`).
    Close(Frame),
    /// Run this on a blocking thread, then send what it returns.
    Blocking(Box<dyn FnOnce() -> Frame + Send + 'static>),
    /// The reply would exceed the client's output-buffer limit: close the
    /// connection without it (as Redis does).
    OverLimit,
    /// Wait for this (a request forwarded to the key's node, a fence to
    /// lift), then send its reply or run the request again.
    Wait(futures::future::BoxFuture<'static, crate::route::Waited>),
    /// `SHUTDOWN`: stop the server as a first SIGTERM does, and close this
    /// connection without a reply (as Redis: a client sees the connection
    /// end, which is how it knows the shutdown began).
    Shutdown,
    /// A forwarded request whose keys this node does not serve at `epoch`
    /// (see [`crate::route::Route::Moved`]).
    Moved {
        /// This node's epoch.
        epoch: u64,
        /// The node that serves the keys, as far as this one knows.
        node: String,
    },
}

impl From<Frame> for Outcome {
    fn from(frame: Frame) -> Outcome {
        Outcome::Reply(frame)
    }
}

/// A command handler: gets the arguments after the command name, already
/// checked against the command's arity.
pub type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> Outcome;

/// The table entry of a command name (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).map(|i| &COMMANDS[i])
}

/// Longest command name in the table, in bytes.
const LONGEST_NAME: usize = 32;

/// The table's index of a command name (any case): one hash lookup of the
/// name lowercased on the stack.
pub fn lookup_index(name: &[u8]) -> Option<usize> {
    static INDEX: LazyLock<rustc_hash::FxHashMap<&'static [u8], usize>> = LazyLock::new(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, spec)| (spec.name.as_bytes(), i))
            .collect()
    });
    let mut lower = [0u8; LONGEST_NAME];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    INDEX.get(&lower[..]).copied()
}

/// Runs one request (`request[0]` is the command name; not empty), or
/// queues it inside `MULTI`.
pub fn dispatch(ctx: &mut Ctx<'_>, request: &[Bytes]) -> Outcome {
    if ctx.session.multi.is_some()
        && let Some(outcome) = multi::queue(ctx, request)
    {
        ctx.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
        return outcome;
    }
    run(ctx, request)
}

/// Runs one request now.
pub fn run(ctx: &mut Ctx<'_>, request: &[Bytes]) -> Outcome {
    ctx.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
    let Some((name, args)) = request.split_first() else {
        return reply::err("empty command").into();
    };
    let Some(index) = lookup_index(name) else {
        ctx.shared
            .stats
            .error_replies
            .fetch_add(1, Ordering::Relaxed);
        return unknown_command(name, args).into();
    };
    let spec = &COMMANDS[index];
    ctx.session.handle.touch(index);
    let words = request.len() as i64;
    let counters = &ctx.shared.command_stats[index];
    if (spec.arity >= 0 && words != spec.arity) || (spec.arity < 0 && words < -spec.arity) {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        ctx.shared
            .stats
            .error_replies
            .fetch_add(1, Ordering::Relaxed);
        return reply::wrong_arity(spec.name).into();
    }
    if !ctx.session.authenticated && !spec.flags.contains(&"no-auth") {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        ctx.shared
            .stats
            .error_replies
            .fetch_add(1, Ordering::Relaxed);
        return reply::error("NOAUTH Authentication required.").into();
    }
    // A node of a multi-process cluster: the router says whether the keys
    // are served here (and keeps them here while the command runs), or
    // where the request goes. Inside EXEC, EXEC itself was routed.
    let mut _guard = None;
    if let Some(router) = ctx.shared.router.as_deref()
        && ctx.txn.is_none()
    {
        if (spec.name.starts_with("ringkv.") || spec.name == "cluster")
            && let Some(answer) = router.command(spec.name, args)
        {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            return crate::route::admin_outcome(answer);
        }
        if matches!(spec.name, "flushall" | "flushdb") {
            // The local store holds copies being received and ranges being
            // copied away; wiping it would lose keys other nodes serve.
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            return reply::err(
                "FLUSHALL and FLUSHDB are not supported on a node of a multi-process cluster",
            )
            .into();
        }
        match crate::route::route(ctx, router, spec, request) {
            Ok(guard) => _guard = guard,
            Err(outcome) => {
                counters.calls.fetch_add(1, Ordering::Relaxed);
                if spec.name == "exec" {
                    // As Redis's EXECABORT: the transaction is over.
                    ctx.session.multi = None;
                    ctx.session.watched.clear();
                }
                return outcome;
            }
        }
    }
    counters.calls.fetch_add(1, Ordering::Relaxed);
    ctx.session.last_command = spec.name;
    let outcome = (spec.handler)(ctx, args);
    if let Outcome::Reply(Frame::Error(_)) | Outcome::Close(Frame::Error(_)) = &outcome {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        ctx.shared
            .stats
            .error_replies
            .fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

/// Whether `request` is exactly `SET key value` (no options): what
/// [`set_run`] groups.
pub fn is_plain_set(request: &[Bytes]) -> bool {
    request.len() == 3 && request[0].eq_ignore_ascii_case(b"set")
}

/// Writes pipelined `SET key value` requests (each [`is_plain_set`]) as
/// one: one transaction, so one engine commit with a data directory
/// instead of one per SET, which is what bounds SET throughput on disk
/// (`docs/BENCHMARKS.md`, persistence section 6).
///
/// The run is applied whole or not at all. If it cannot be (a node of one
/// key is down, memory is full, the disk refuses it), returns
/// [`Written::No`](crate::sets::Written::No) with nothing applied: the
/// caller then runs each request on its own, so each SET gets exactly the
/// reply it would have had alone (an eviction, a `-TRYAGAIN` for its key
/// only). Its bookkeeping is [`sets_written`]'s.
pub fn set_run(shared: &Shared, requests: &[&[Bytes]]) -> crate::sets::Written {
    debug_assert!(requests.iter().all(|r| is_plain_set(r)));
    // Keys in their own allocations, as every write stores them: a slice
    // would keep the connection's whole read buffer alive.
    let pairs = requests
        .iter()
        .map(|r| (owned(&r[1]), ringkv_cluster::Entry::string(owned(&r[2]))))
        .collect();
    let written = shared.cluster.put_all(pairs);
    match written {
        Ok(()) => crate::sets::Written::Yes,
        Err(_) => crate::sets::Written::No,
    }
}

/// The bookkeeping and replies of `n` plain `SET key value` requests
/// (each [`is_plain_set`]) written together ([`set_run`], or the SET
/// writer, `crate::sets`), as [`run`] does them per command.
pub fn sets_written(ctx: &mut Ctx<'_>, n: usize) -> Vec<Frame> {
    if n > 1 {
        ctx.shared.stats.set_runs.fetch_add(1, Ordering::Relaxed);
    }
    let index = lookup_index(b"set").expect("SET is a command");
    ctx.shared
        .stats
        .commands
        .fetch_add(n as u64, Ordering::Relaxed);
    ctx.session.handle.touch(index);
    ctx.shared.command_stats[index]
        .calls
        .fetch_add(n as u64, Ordering::Relaxed);
    ctx.session.last_command = COMMANDS[index].name;
    (0..n).map(|_| reply::ok()).collect()
}

/// Most bytes of the arguments an unknown-command error quotes, as Redis.
const QUOTED_ARGS: usize = 128;

/// Redis's reply to an unknown command: the name (at most 128 bytes) and
/// the first arguments, each cut so that at most 128 bytes of them are
/// quoted in all (`networking.c`'s `processCommand`).
fn unknown_command(name: &[u8], args: &[Bytes]) -> Frame {
    let mut shown = String::new();
    let mut quoted = 0;
    for arg in args {
        if quoted >= QUOTED_ARGS {
            break;
        }
        let part = &arg[..arg.len().min(QUOTED_ARGS - quoted)];
        quoted += part.len() + 3;
        shown.push_str(&format!("'{}' ", reply::quote(part)));
    }
    reply::err(format!(
        "unknown command '{}', with args beginning with: {shown}",
        reply::quote(name)
    ))
}

/// A cluster failure as a reply, with the error code Redis clients know:
/// `TRYAGAIN` when a node is unavailable (retry later), `CLUSTERDOWN` when
/// the cluster cannot serve (no nodes, or a membership change is paused or
/// blocked behind a paused one), `ERR` otherwise. Nothing was applied (see
/// each [`ClusterError`] variant).
pub fn cluster_error(e: ClusterError) -> Frame {
    if let ClusterError::OutOfMemory { .. } = e {
        return reply::error("OOM command not allowed when used memory > 'maxmemory'.");
    }
    let code = match &e {
        ClusterError::Unavailable { .. } => "TRYAGAIN",
        ClusterError::NoNodes | ClusterError::Paused { .. } | ClusterError::NotStarted { .. } => {
            "CLUSTERDOWN"
        }
        // The cluster crate may add variants: they are plain errors.
        _ => "ERR",
    };
    reply::error(format!("{code} {e}"))
}

/// The reply when a blocking command (a membership change) did not return:
/// its thread panicked (the panic is logged at error level and its message
/// sent to the client), or it was cancelled.
pub fn join_failure(client: u64, command: &[u8], e: tokio::task::JoinError) -> Frame {
    let command = String::from_utf8_lossy(command).to_lowercase();
    if e.is_panic() {
        let panic = e.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        tracing::error!(client, command, panic = %message, "membership change panicked");
        reply::err(format!(
            "internal error: membership change panicked: {message}"
        ))
    } else {
        tracing::error!(client, command, error = %e, "membership change did not finish");
        reply::err(format!("internal error: {e}"))
    }
}

/// Parses a 64-bit integer as Redis's `string2ll`: optional `-`, digits,
/// no leading zeros, no `+`, no spaces.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A key or value in its own allocation. Arguments are slices of the
/// connection's read buffer; storing them as they are would keep a whole
/// buffer alive for as long as any value read into it is stored.
pub fn owned(bytes: &Bytes) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unknown_command_errors_quote_at_most_128_bytes_of_arguments() {
        let many: Vec<Bytes> = (0..1000).map(|i| Bytes::from(format!("arg{i}"))).collect();
        let Frame::Error(text) = unknown_command(b"FOO", &many) else {
            panic!("an error");
        };
        assert!(
            text.starts_with("ERR unknown command 'FOO', with args beginning with: 'arg0' 'arg1' ")
        );
        assert!(text.len() < 128 + 128 + 64, "{} bytes: {text}", text.len());
        let huge = vec![Bytes::from(vec![b'x'; 1 << 20])];
        let Frame::Error(text) = unknown_command(&[b'y'; 1000], &huge) else {
            panic!("an error");
        };
        assert_eq!(
            &*text,
            format!(
                "ERR unknown command '{}', with args beginning with: '{}' ",
                "y".repeat(128),
                "x".repeat(128)
            )
        );
    }

    #[test]
    fn cluster_errors_get_redis_codes() {
        let code = |e: ClusterError| match cluster_error(e) {
            Frame::Error(text) => text.split(' ').next().unwrap_or_default().to_string(),
            other => panic!("{other:?}"),
        };
        let node = ringkv_ring::NodeId::from("n2");
        let unavailable = ClusterError::Unavailable { node: node.clone() };
        assert_eq!(code(unavailable.clone()), "TRYAGAIN");
        assert_eq!(code(ClusterError::NoNodes), "CLUSTERDOWN");
        let paused = ClusterError::Paused {
            op: "add_node",
            node: node.clone(),
            cause: Box::new(unavailable.clone()),
        };
        assert_eq!(code(paused.clone()), "CLUSTERDOWN");
        let not_started = ClusterError::NotStarted {
            op: "add_node",
            node: node.clone(),
            cause: Box::new(paused),
        };
        assert_eq!(code(not_started), "CLUSTERDOWN");
        let rolled_back = ClusterError::RolledBack {
            op: "remove_node",
            node,
            cause: Box::new(unavailable),
        };
        assert_eq!(code(rolled_back), "ERR");
    }

    #[tokio::test]
    async fn a_panicking_blocking_job_is_reported_with_its_message() {
        let e = tokio::task::spawn_blocking(|| -> Frame { panic!("store exploded at key 42") })
            .await
            .expect_err("the job panicked");
        assert_eq!(
            join_failure(7, b"RINGKV.ADDNODE", e),
            reply::err("internal error: membership change panicked: store exploded at key 42")
        );
    }

    #[test]
    fn the_table_has_unique_lowercase_names() {
        let mut names: Vec<_> = COMMANDS.iter().map(|s| s.name).collect();
        assert!(names.iter().all(|n| *n == n.to_lowercase()));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
        assert!(lookup(b"GeT").is_some_and(|s| s.name == "get"));
        assert!(lookup(b"RINGKV.ADDNODE").is_some());
    }

    /// The command names the crate's README documents, in upper case.
    fn documented_commands() -> std::collections::BTreeSet<String> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with("Commands"))
            .expect("README.md has a Commands section");
        let mut names = std::collections::BTreeSet::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cell = line.split(" | ").next().unwrap_or_default();
            for span in cell.split('`').skip(1).step_by(2) {
                let name = span.split([' ', '\\']).next().unwrap_or_default();
                names.insert(name.to_uppercase());
            }
        }
        names
    }

    #[test]
    fn the_readme_documents_exactly_the_commands_of_the_table() {
        let table: std::collections::BTreeSet<String> =
            COMMANDS.iter().map(|s| s.name.to_uppercase()).collect();
        let documented = documented_commands();
        let undocumented: Vec<_> = table.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&table).collect();
        assert!(
            undocumented.is_empty(),
            "in the table, not in README.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "in README.md, not in the table: {unknown:?}"
        );
    }

    #[test]
    fn every_command_of_the_table_dispatches_to_its_handler() {
        let cluster = Arc::new(ringkv_cluster::Cluster::default());
        cluster.add_node("node1").expect("a fresh node");
        let addr: std::net::SocketAddr = "127.0.0.1:6380".parse().expect("an address");
        let shared = Arc::new(Shared::new(cluster, crate::ServerConfig::default(), addr));
        for spec in COMMANDS {
            let mut session = Session::new(&shared, addr, -1);
            let mut ctx = Ctx {
                shared: &shared,
                session: &mut session,
                txn: None,
            };
            // Enough words for any arity, so the arity check passes.
            let mut request = vec![Bytes::from(spec.name.to_uppercase())];
            request.extend((1..spec.arity.unsigned_abs()).map(|_| Bytes::from_static(b"x")));
            if let Outcome::Reply(Frame::Error(text)) = dispatch(&mut ctx, &request) {
                assert!(
                    !text.contains("unknown command") && !text.contains("wrong number"),
                    "{}: {text}",
                    spec.name
                );
            }
            assert_eq!(session.last_command, spec.name);
        }
        let mut session = Session::new(&shared, addr, -1);
        let mut ctx = Ctx {
            shared: &shared,
            session: &mut session,
            txn: None,
        };
        assert!(
            matches!(dispatch(&mut ctx, &[Bytes::from_static(b"NOSUCH")]),
            Outcome::Reply(Frame::Error(text)) if text.starts_with("ERR unknown command 'NOSUCH'"))
        );
    }
}
