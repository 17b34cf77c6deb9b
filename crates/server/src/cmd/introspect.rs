//! What the server tells about itself: DBSIZE, TIME, COMMAND; and FUNCTION,
//! which has nothing to tell (ringkv runs no scripts).

use bytes::Bytes;

use super::{COMMANDS, Ctx, Outcome, Spec, lookup};
use crate::reply::{self, Frame};

/// `TIME`: seconds and microseconds since the Unix epoch.
pub fn time(_: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    reply::array(vec![
        reply::bulk(now.as_secs().to_string()),
        reply::bulk(now.subsec_micros().to_string()),
    ])
    .into()
}

pub fn command(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let Some((sub, names)) = args.split_first() else {
        return reply::array(COMMANDS.iter().map(command_info).collect()).into();
    };
    let frame = match &sub.to_ascii_uppercase()[..] {
        b"COUNT" if names.is_empty() => reply::int(COMMANDS.len()),
        b"LIST" if names.is_empty() => {
            reply::array(COMMANDS.iter().map(|s| reply::bulk(s.name)).collect())
        }
        b"INFO" => reply::array(
            names
                .iter()
                .map(|n| lookup(n).map_or(Frame::Null, command_info))
                .collect(),
        ),
        b"DOCS" => {
            let specs: Vec<&Spec> = if names.is_empty() {
                COMMANDS.iter().collect()
            } else {
                names.iter().filter_map(|n| lookup(n)).collect()
            };
            Frame::Map(
                specs
                    .into_iter()
                    .map(|s| (reply::bulk(s.name), command_docs(s)))
                    .collect(),
            )
        }
        b"COUNT" | b"LIST" => reply::wrong_arity(&format!(
            "command|{}",
            String::from_utf8_lossy(sub).to_lowercase()
        )),
        _ => reply::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            reply::quote(sub)
        )),
    };
    frame.into()
}

/// An entry of `COMMAND` / `COMMAND INFO`, in Redis 7's ten-field shape.
fn command_info(spec: &Spec) -> Frame {
    let flags = spec
        .flags
        .iter()
        .map(|f| Frame::Simple(Bytes::from_static(f.as_bytes())))
        .collect();
    reply::array(vec![
        reply::bulk(spec.name),
        reply::int(spec.arity),
        Frame::Set(flags),
        reply::int(spec.keys.0),
        reply::int(spec.keys.1),
        reply::int(spec.keys.2),
        reply::array(Vec::new()),
        reply::array(Vec::new()),
        reply::array(Vec::new()),
        reply::array(Vec::new()),
    ])
}

/// An entry of `COMMAND DOCS`: a map (flat array, RESP2) of its summary,
/// since and group.
fn command_docs(spec: &Spec) -> Frame {
    reply::map(vec![
        ("summary", reply::bulk(spec.summary)),
        ("since", reply::bulk("1.0.0")),
        ("group", reply::bulk(spec.group)),
    ])
}

/// `FUNCTION FLUSH` and `FUNCTION LIST`: ringkv runs no scripts, so there
/// are no functions to flush or list (Redis's test suite flushes them
/// before each group of tests). Loading one is refused.
pub fn function(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let sub = args[0].to_ascii_uppercase();
    match (&sub[..], &args[1..]) {
        (b"FLUSH", []) => reply::ok(),
        (b"FLUSH", [mode])
            if mode.eq_ignore_ascii_case(b"SYNC") || mode.eq_ignore_ascii_case(b"ASYNC") =>
        {
            reply::ok()
        }
        (b"FLUSH", [_]) => reply::err("FUNCTION FLUSH only supports SYNC|ASYNC option"),
        (b"LIST", _) => reply::array(Vec::new()),
        _ => reply::err(format!(
            "ringkv runs no scripts: FUNCTION {} is not supported",
            reply::quote(&args[0]).to_uppercase()
        )),
    }
    .into()
}
