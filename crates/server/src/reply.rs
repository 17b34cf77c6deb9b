//! Replies: RESP2 frames of the `redis-protocol` crate, and constructors
//! for the shapes and the exact error texts Redis uses.

use bytes::Bytes;
use redis_protocol::bytes_utils::Str;
pub use redis_protocol::resp2::types::BytesFrame as Frame;

/// Bytes `frame` takes once encoded.
pub fn encoded_len(frame: &Frame) -> usize {
    redis_protocol::resp2::types::Resp2Frame::encode_len(frame, false)
}

/// `+OK`.
pub fn ok() -> Frame {
    Frame::SimpleString(Bytes::from_static(b"OK"))
}

/// A simple string (`+text`).
pub fn simple(text: &'static str) -> Frame {
    Frame::SimpleString(Bytes::from_static(text.as_bytes()))
}

/// A bulk string.
pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
    Frame::BulkString(bytes.into())
}

/// A bulk string, or the null bulk string (`$-1`) for `None`.
pub fn bulk_or_null(bytes: Option<Bytes>) -> Frame {
    bytes.map_or(Frame::Null, Frame::BulkString)
}

/// An integer (`:n`).
pub fn int(n: impl TryInto<i64>) -> Frame {
    Frame::Integer(n.try_into().unwrap_or(i64::MAX))
}

/// An array.
pub fn array(items: Vec<Frame>) -> Frame {
    Frame::Array(items)
}

/// An error whose text starts with its code (`ERR`, `NOAUTH`, ...). Line
/// breaks would end the frame early, so they become spaces.
pub fn error(text: impl Into<String>) -> Frame {
    let mut text: String = text.into();
    if text.contains(['\r', '\n']) {
        text = text.replace(['\r', '\n'], " ");
    }
    Frame::Error(Str::from(text))
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
