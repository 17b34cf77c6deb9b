//! Bytes to requests: a request is a RESP array of bulk strings (what
//! every client library sends) or an inline command (a line of words, what
//! `telnet` and `redis-cli` pipes send), as in Redis.
//!
//! RESP arrays are decoded by the `redis-protocol` crate. Its streaming
//! decoder waits for whatever length a client declares and accepts any
//! frame type, so [`next_request`] first walks the headers already
//! buffered (a few comparisons per argument) to refuse what Redis refuses
//! before buffering it: over-long header lines, absurd argument counts,
//! bulk strings over the limit, and arguments that are not bulk strings.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;

use crate::reply::Frame;

/// Longest inline command or header line, as Redis's `PROTO_INLINE_MAX_SIZE`.
pub const MAX_LINE: usize = 64 * 1024;
/// Most arguments in one request.
pub const MAX_ARGS: i64 = 1024 * 1024;

/// A request that breaks the protocol. The reply is
/// `-ERR Protocol error: <text>` and the connection is closed, as Redis
/// does: after a malformed frame the rest of the stream cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(text: impl Into<String>) -> Self {
        ProtocolError(text.into())
    }
}

/// Takes the first complete request off `buf`: its arguments (the command
/// name first; empty for a blank line or `*0`), or `None` if more bytes are
/// needed.
pub fn next_request(
    buf: &mut BytesMut,
    max_bulk_len: usize,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => {
            if !array_complete(buf, max_bulk_len)? {
                return Ok(None);
            }
            match decode_bytes_mut(buf) {
                Ok(Some((Frame::Array(items), _, _))) => items
                    .into_iter()
                    .map(|item| match item {
                        Frame::BulkString(b) => Ok(b),
                        _ => Err(ProtocolError::new("expected bulk strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                // `*-1`: a null array, ignored like `*0`.
                Ok(Some((Frame::Null, _, _))) => Ok(Some(Vec::new())),
                Ok(Some(_)) | Ok(None) => Err(ProtocolError::new("unexpected frame")),
                Err(e) => Err(ProtocolError::new(format!("{e}"))),
            }
        }
        Some(_) => inline(buf),
    }
}

/// Whether `buf` starts with a whole RESP array of bulk strings within the
/// limits. Only reads headers; the payload is skipped by its length.
fn array_complete(buf: &[u8], max_bulk_len: usize) -> Result<bool, ProtocolError> {
    let Some((count, mut at)) = header(buf, 0, "mbulk count")? else {
        return Ok(false);
    };
    if count > MAX_ARGS {
        return Err(ProtocolError::new("invalid multibulk length"));
    }
    for _ in 0..count.max(0) {
        match buf.get(at) {
            None => return Ok(false),
            Some(b'$') => {}
            Some(&other) => {
                return Err(ProtocolError::new(format!(
                    "expected '$', got '{}'",
                    other as char
                )));
            }
        }
        let Some((len, next)) = header(buf, at, "bulk count")? else {
            return Ok(false);
        };
        if len < 0 || len as u64 > max_bulk_len as u64 {
            return Err(ProtocolError::new("invalid bulk length"));
        }
        at = next + len as usize + 2;
        if at > buf.len() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads the number of the header line (`*N\r\n` or `$N\r\n`) at `at`:
/// the number and the offset after the line, or `None` if incomplete.
fn header(buf: &[u8], at: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[at + 1..];
    let Some(end) = rest.iter().take(MAX_LINE).position(|&b| b == b'\r') else {
        if rest.len() >= MAX_LINE {
            return Err(ProtocolError::new(format!("too big {what} string")));
        }
        return Ok(None);
    };
    let Some(&lf) = rest.get(end + 1) else {
        return Ok(None);
    };
    let number = std::str::from_utf8(&rest[..end])
        .ok()
        .filter(|_| lf == b'\n')
        .and_then(|s| s.parse::<i64>().ok());
    match number {
        Some(n) => Ok(Some((n, at + 1 + end + 2))),
        None if what == "mbulk count" => Err(ProtocolError::new("invalid multibulk length")),
        None => Err(ProtocolError::new("invalid bulk length")),
    }
}

/// An inline command: one line, split into words; `"..."` and `'...'`
/// quote words with spaces, and inside double quotes `\n`, `\r`, `\t`,
/// `\\`, `\"` and `\xHH` escape bytes (Redis's `sdssplitargs`).
fn inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(end) = buf.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf.split_to(end + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_words(line).map(Some)
}

fn split_words(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let unbalanced = || ProtocolError::new("unbalanced quotes in request");
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match *line.get(i).ok_or_else(unbalanced)? {
                        b'"' => break,
                        b'\\' => {
                            let escaped = *line.get(i + 1).ok_or_else(unbalanced)?;
                            let hex = line.get(i + 2..i + 4).and_then(|h| {
                                u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
                            });
                            match (escaped, hex) {
                                (b'x', Some(byte)) => {
                                    word.push(byte);
                                    i += 2;
                                }
                                (b'n', _) => word.push(b'\n'),
                                (b'r', _) => word.push(b'\r'),
                                (b't', _) => word.push(b'\t'),
                                (b'b', _) => word.push(8),
                                (b'a', _) => word.push(7),
                                (other, _) => word.push(other),
                            }
                            i += 2;
                        }
                        byte => {
                            word.push(byte);
                            i += 1;
                        }
                    }
                }
                i += 1;
                // A closing quote must be followed by a space or the end.
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(unbalanced());
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match *line.get(i).ok_or_else(unbalanced)? {
                        b'\'' => break,
                        b'\\' if line.get(i + 1) == Some(&b'\'') => {
                            word.push(b'\'');
                            i += 2;
                        }
                        byte => {
                            word.push(byte);
                            i += 1;
                        }
                    }
                }
                i += 1;
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(unbalanced());
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(Bytes::from(word));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        next_request(&mut BytesMut::from(input), 16)
    }

    fn words(input: &[u8]) -> Vec<Bytes> {
        parse(input).unwrap().unwrap()
    }

    #[test]
    fn arrays_decode_and_wait_for_missing_bytes() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        assert_eq!(words(full), vec![Bytes::from("GET"), Bytes::from("key")]);
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert!(next_request(&mut two, 16).unwrap().is_some());
        assert_eq!(two.len(), 14);
    }

    #[test]
    fn limits_are_checked_before_the_payload_arrives() {
        let e = |s: &str| Err(ProtocolError(s.into()));
        assert_eq!(
            parse(b"*2\r\n$3\r\nGET\r\n$17\r\n"),
            e("invalid bulk length")
        );
        assert_eq!(parse(b"*1\r\n$-1\r\n"), e("invalid bulk length"));
        assert_eq!(parse(b"*x\r\n"), e("invalid multibulk length"));
        assert_eq!(parse(b"*9999999\r\n"), e("invalid multibulk length"));
        assert_eq!(parse(b"*1\r\n+PING\r\n"), e("expected '$', got '+'"));
        assert_eq!(parse(b"*1\r\n*1\r\n"), e("expected '$', got '*'"));
        let long = [b"*".as_slice(), &[b'1'; MAX_LINE + 1]].concat();
        assert_eq!(parse(&long), e("too big mbulk count string"));
        let long_inline = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parse(&long_inline), e("too big inline request"));
    }

    #[test]
    fn empty_requests_are_empty() {
        assert_eq!(words(b"*0\r\n"), Vec::<Bytes>::new());
        assert_eq!(words(b"*-1\r\n"), Vec::<Bytes>::new());
        assert_eq!(words(b"\r\n"), Vec::<Bytes>::new());
    }

    #[test]
    fn inline_commands_split_like_redis() {
        assert_eq!(words(b"PING\r\n"), vec![Bytes::from("PING")]);
        assert_eq!(
            words(b"  set  \"a key\" 'it\\'s'  \"\\x00\\n\"\n"),
            vec![
                Bytes::from("set"),
                Bytes::from("a key"),
                Bytes::from("it's"),
                Bytes::from(&b"\x00\n"[..]),
            ]
        );
        let unbalanced = Err(ProtocolError("unbalanced quotes in request".into()));
        assert_eq!(parse(b"GET \"key\r\n"), unbalanced);
        assert_eq!(parse(b"GET \"a\"b\r\n"), unbalanced);
        assert_eq!(parse(b"GET key"), Ok(None));
    }
}
