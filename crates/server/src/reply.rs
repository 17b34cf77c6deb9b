//! Constructors for the reply shapes and the exact error texts Redis uses.

use bytes::Bytes;

pub use crate::frame::{Frame, Protocol};

/// `+OK`.
pub fn ok() -> Frame {
    Frame::Simple(Bytes::from_static(b"OK"))
}

/// A simple string (`+text`).
pub fn simple(text: &'static str) -> Frame {
    Frame::Simple(Bytes::from_static(text.as_bytes()))
}

/// A bulk string.
pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
    Frame::Bulk(bytes.into())
}

/// A bulk string, or the null bulk string (`$-1`, RESP3 `_`) for `None`.
pub fn bulk_or_null(bytes: Option<Bytes>) -> Frame {
    bytes.map_or(Frame::Null, Frame::Bulk)
}

/// An integer (`:n`).
pub fn int(n: impl TryInto<i64>) -> Frame {
    Frame::Integer(n.try_into().unwrap_or(i64::MAX))
}

/// An array.
pub fn array(items: Vec<Frame>) -> Frame {
    Frame::Array(items)
}

/// A map with bulk-string keys (a flat array in RESP2).
pub fn map(pairs: Vec<(&'static str, Frame)>) -> Frame {
    Frame::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Frame::Bulk(Bytes::from_static(k.as_bytes())), v))
            .collect(),
    )
}

/// Text Redis sends as a verbatim string in RESP3 (`INFO`, `CLIENT INFO`,
/// `CLIENT LIST`) and as a bulk string in RESP2.
pub fn verbatim(text: impl Into<Bytes>) -> Frame {
    Frame::Verbatim("txt", text.into())
}

/// An error whose text starts with its code (`ERR`, `NOAUTH`, ...). Line
/// breaks would end the frame early, so they become spaces.
pub fn error(text: impl Into<String>) -> Frame {
    let mut text: String = text.into();
    if text.contains(['\r', '\n']) {
        text = text.replace(['\r', '\n'], " ");
    }
    Frame::Error(text)
}

/// `-ERR text`.
pub fn err(text: impl std::fmt::Display) -> Frame {
    error(format!("ERR {text}"))
}

/// Redis's reply to a wrong number of arguments.
pub fn wrong_arity(command: &str) -> Frame {
    err(format!("wrong number of arguments for '{command}' command"))
}

/// Redis's reply to a malformed option list.
pub fn syntax_error() -> Frame {
    err("syntax error")
}

/// Redis's reply to a value or argument that is not a 64-bit integer.
pub fn not_integer() -> Frame {
    err("value is not an integer or out of range")
}

/// Shows a client-supplied argument inside an error text: at most 128
/// bytes, control characters escaped (as Redis does).
pub fn quote(arg: &[u8]) -> String {
    let shown = &arg[..arg.len().min(128)];
    let mut out = String::with_capacity(shown.len());
    for chunk in shown.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
