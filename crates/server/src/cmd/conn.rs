//! Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO —
//! what `redis-cli` and client libraries send when they connect.

use bytes::Bytes;

use super::{Ctx, Outcome, parse_i64};
use crate::reply::{self, Frame, Protocol};

/// The Redis version whose protocol and replies the server follows
/// (`HELLO` and `INFO` report it; clients check it for features).
pub const REDIS_VERSION: &str = "7.2.0";

pub fn ping(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match args {
        [] => reply::simple("PONG"),
        [message] => reply::bulk(message.clone()),
        _ => reply::wrong_arity("ping"),
    }
    .into()
}

pub fn echo(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    reply::bulk(args[0].clone()).into()
}

pub fn quit(_: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    Outcome::Close(reply::ok())
}

pub fn select(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    match parse_i64(&args[0]) {
        Some(0) => reply::ok(),
        Some(_) => reply::err("DB index is out of range"),
        None => reply::not_integer(),
    }
    .into()
}

pub fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let (user, password) = match args {
        [password] => (&b"default"[..], password),
        [user, password] => (&user[..], password),
        _ => return reply::syntax_error().into(),
    };
    authenticate(ctx, user, password).into()
}

/// Checks a user and password; `+OK` or the error to send.
fn authenticate(ctx: &mut Ctx<'_>, user: &[u8], password: &[u8]) -> Frame {
    let Some(expected) = ctx.shared.live.requirepass() else {
        return reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    };
    if user == b"default" && constant_time_eq(password, expected.as_bytes()) {
        ctx.session.authenticated = true;
        reply::ok()
    } else {
        reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn hello(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let mut rest = args;
    let mut protocol = None;
    if let Some((version, tail)) = rest.split_first() {
        match parse_i64(version) {
            Some(2) => protocol = Some(Protocol::Resp2),
            Some(3) => protocol = Some(Protocol::Resp3),
            Some(_) => return reply::error("NOPROTO unsupported protocol version").into(),
            None => {
                return reply::err("Protocol version is not an integer or out of range").into();
            }
        }
        rest = tail;
    }
    let mut name = None;
    while let Some((option, tail)) = rest.split_first() {
        match (&option.to_ascii_uppercase()[..], tail) {
            (b"AUTH", [user, password, tail @ ..]) => {
                let result = authenticate(ctx, user, password);
                if matches!(result, Frame::Error(_)) {
                    return result.into();
                }
                rest = tail;
            }
            (b"SETNAME", [client_name, tail @ ..]) => {
                name = Some(client_name.clone());
                rest = tail;
            }
            _ => {
                return reply::err(format!(
                    "Syntax error in HELLO option '{}'",
                    reply::quote(option)
                ))
                .into();
            }
        }
    }
    if !ctx.session.authenticated {
        return reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        )
        .into();
    }
    if let Some(name) = name
        && let Err(e) = set_name(ctx, name)
    {
        return e.into();
    }
    if let Some(protocol) = protocol {
        ctx.session.protocol = protocol;
        ctx.session.handle.set_protocol(protocol);
    }
    // Sent in the protocol just chosen: a map in RESP3, a flat array in RESP2.
    reply::map(vec![
        ("server", reply::bulk("ringkv")),
        ("version", reply::bulk(REDIS_VERSION)),
        ("proto", reply::int(ctx.session.protocol.version())),
        ("id", reply::int(ctx.session.id)),
        ("mode", reply::bulk("standalone")),
        ("role", reply::bulk("master")),
        ("modules", reply::array(Vec::new())),
    ])
    .into()
}

/// Sets the connection's name (`CLIENT SETNAME`, `HELLO ... SETNAME`);
/// an empty name clears it.
pub fn set_name(ctx: &mut Ctx<'_>, name: Bytes) -> Result<(), Frame> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(reply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    ctx.session
        .handle
        .set_name((!name.is_empty()).then_some(name));
    Ok(())
}
