//! `CLIENT`: ID, GETNAME, SETNAME, INFO, LIST, KILL, NO-EVICT, REPLY, SETINFO,
//! with Redis 7's replies and error texts.

use bytes::Bytes;

use super::conn::set_name;
use super::{COMMANDS, Ctx, Outcome, parse_i64};
use crate::clients::ClientHandle;
use crate::reply::{self, Frame};

pub fn client(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let sub = args[0].to_ascii_uppercase();
    let rest = &args[1..];
    let frame = match (&sub[..], rest) {
        (b"ID", []) => reply::int(ctx.session.id),
        (b"GETNAME", []) => reply::bulk_or_null(ctx.session.handle.name()),
        (b"SETNAME", [name]) => match set_name(ctx, name.clone()) {
            Ok(()) => reply::ok(),
            Err(e) => e,
        },
        (b"INFO", []) => reply::verbatim(info_line(ctx, &ctx.session.handle, "client|info")),
        (b"LIST", _) => list(ctx, rest),
        (b"KILL", [_, ..]) => kill(ctx, rest),
        (b"NO-EVICT", [on]) => match &on.to_ascii_uppercase()[..] {
            b"ON" => {
                ctx.session.handle.set_no_evict(true);
                reply::ok()
            }
            b"OFF" => {
                ctx.session.handle.set_no_evict(false);
                reply::ok()
            }
            _ => reply::syntax_error(),
        },
        (b"REPLY", [mode]) => match &mode.to_ascii_uppercase()[..] {
            b"ON" => {
                ctx.session.replies_off = false;
                ctx.session.replies_skipped = 0;
                reply::ok()
            }
            b"OFF" => {
                ctx.session.replies_off = true;
                reply::ok()
            }
            b"SKIP" => {
                ctx.session.replies_skipped = 2;
                reply::ok()
            }
            _ => reply::syntax_error(),
        },
        // Library name and version: accepted and not kept.
        (b"SETINFO", [_, _]) => reply::ok(),
        (
            b"ID" | b"GETNAME" | b"SETNAME" | b"INFO" | b"SETINFO" | b"KILL" | b"NO-EVICT"
            | b"REPLY",
            _,
        ) => reply::wrong_arity(&format!(
            "client|{}",
            String::from_utf8_lossy(&sub).to_lowercase()
        )),
        _ => reply::err(format!(
            "unknown subcommand '{}'. Try CLIENT HELP.",
            reply::quote(&args[0])
        )),
    };
    frame.into()
}

/// One client's line of `CLIENT LIST` / `CLIENT INFO`, with Redis 7's
/// fields in its order. Buffers that ringkv does not keep per client
/// (`qbuf-free`, `rbs`, `omem`, ...) show 0; `qbuf` is the request being
/// served for the client asking, as in Redis, and 0 for the others.
fn info_line(ctx: &Ctx<'_>, client: &ClientHandle, own_command: &str) -> String {
    let me = client.id == ctx.session.id;
    let name = client
        .name()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default();
    let command = if me {
        own_command
    } else {
        client.last_command().map_or("NULL", |i| COMMANDS[i].name)
    };
    let flags = if client.no_evict() { "e" } else { "N" };
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub=0 psub=0 \
         ssub=0 multi=-1 qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
         omem=0 tot-mem=0 events=r cmd={command} user=default redir=-1 resp={}\n",
        client.id,
        client.peer,
        ctx.shared.local_addr,
        client.fd,
        name,
        client.since.elapsed().as_secs(),
        if me { 0 } else { client.idle_secs() },
        if me { ctx.session.request_bytes } else { 0 },
        client.protocol(),
    )
}

/// Redis's client types; every ringkv client is `normal`.
fn client_type_matches(word: &[u8]) -> Result<bool, Frame> {
    match &word.to_ascii_lowercase()[..] {
        b"normal" => Ok(true),
        b"master" | b"replica" | b"slave" | b"pubsub" => Ok(false),
        _ => Err(reply::err(format!(
            "Unknown client type '{}'",
            reply::quote(word)
        ))),
    }
}

/// `CLIENT LIST [TYPE type | ID id...]`.
fn list(ctx: &Ctx<'_>, args: &[Bytes]) -> Frame {
    let clients = ctx.shared.clients.list();
    let chosen: Vec<_> = match args {
        [] => clients,
        [word, kind] if word.eq_ignore_ascii_case(b"TYPE") => match client_type_matches(kind) {
            Ok(true) => clients,
            Ok(false) => Vec::new(),
            Err(e) => return e,
        },
        [word, ids @ ..] if word.eq_ignore_ascii_case(b"ID") && !ids.is_empty() => {
            let mut wanted = Vec::with_capacity(ids.len());
            for id in ids {
                match parse_i64(id) {
                    Some(id) => wanted.push(id),
                    None => return reply::err("Invalid client ID"),
                }
            }
            clients
                .into_iter()
                .filter(|c| wanted.contains(&(c.id as i64)))
                .collect()
        }
        _ => return reply::syntax_error(),
    };
    let text: String = chosen
        .iter()
        .map(|c| info_line(ctx, c, "client|list"))
        .collect();
    reply::verbatim(text)
}

/// What `CLIENT KILL` matches: all the filters given must hold.
#[derive(Default)]
struct KillFilter {
    id: Option<u64>,
    addr: Option<Bytes>,
    laddr: Option<Bytes>,
    /// `TYPE` named a type no ringkv client has.
    no_type: bool,
    skip_me: bool,
}

/// `CLIENT KILL addr` (old form: `+OK` or `No such client`) or
/// `CLIENT KILL <filter value>...` (new form: how many were killed;
/// `SKIPME yes` by default).
fn kill(ctx: &Ctx<'_>, args: &[Bytes]) -> Frame {
    let old_form = args.len() == 1;
    let mut filter = KillFilter {
        skip_me: !old_form,
        ..KillFilter::default()
    };
    if old_form {
        filter.addr = Some(args[0].clone());
    } else {
        if !args.len().is_multiple_of(2) {
            return reply::syntax_error();
        }
        for pair in args.chunks_exact(2) {
            let value = &pair[1];
            match &pair[0].to_ascii_uppercase()[..] {
                b"ID" => match parse_i64(value) {
                    Some(id) if id > 0 => filter.id = Some(id as u64),
                    _ => return reply::err("client-id should be greater than 0"),
                },
                b"TYPE" => match client_type_matches(value) {
                    Ok(matches) => filter.no_type |= !matches,
                    Err(e) => return e,
                },
                b"ADDR" => filter.addr = Some(value.clone()),
                b"LADDR" => filter.laddr = Some(value.clone()),
                b"USER" if &value[..] == b"default" => {}
                b"USER" => {
                    return reply::err(format!("No such user '{}'", reply::quote(value)));
                }
                b"SKIPME" => match &value.to_ascii_lowercase()[..] {
                    b"yes" => filter.skip_me = true,
                    b"no" => filter.skip_me = false,
                    _ => return reply::syntax_error(),
                },
                _ => return reply::syntax_error(),
            }
        }
    }
    let local = ctx.shared.local_addr.to_string();
    let mut killed = 0;
    for client in ctx.shared.clients.list() {
        let matches = !filter.no_type
            && filter.id.is_none_or(|id| id == client.id)
            && filter
                .addr
                .as_ref()
                .is_none_or(|a| a[..] == *client.peer.to_string().as_bytes())
            && filter
                .laddr
                .as_ref()
                .is_none_or(|a| a[..] == *local.as_bytes())
            && !(filter.skip_me && client.id == ctx.session.id);
        if matches {
            client.kill();
            killed += 1;
        }
    }
    match (old_form, killed) {
        (true, 0) => reply::err("No such client"),
        (true, _) => reply::ok(),
        (false, n) => reply::int(n),
    }
}
