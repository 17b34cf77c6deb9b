//! Bytes to requests: a request is a RESP array of bulk strings (what
//! every client library sends) or an inline command (a line of words, what
//! `telnet` and `redis-cli` pipes send), as in Redis.
//!
//! [`Parser`] walks RESP arrays as Redis's `processMultibulkBuffer` does:
//! header by header, refusing what Redis refuses before the payload is
//! buffered (over-long header lines, absurd argument counts, bulk strings
//! over the limit, arguments that are not bulk strings, and, before
//! `AUTH`, more than 10 arguments or any over 16 KiB). It keeps its place
//! between reads, so a request trickled in small pieces is walked once:
//! the cost is linear in its size. The arguments are slices of one frozen
//! copy of the request's bytes.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::cmd::parse_i64;

/// Longest inline command or header line, as Redis's `PROTO_INLINE_MAX_SIZE`.
pub const MAX_LINE: usize = 64 * 1024;
/// Most arguments in one request.
pub const MAX_ARGS: usize = 1024 * 1024;
/// Most arguments in one request before `AUTH`, as Redis.
pub const UNAUTH_MAX_ARGS: usize = 10;
/// Longest argument before `AUTH`, as Redis.
pub const UNAUTH_MAX_BULK_LEN: usize = 16 * 1024;

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

/// What a request may declare: the arguments' length limit, and whether
/// the connection has authenticated (before `AUTH`, Redis's tighter
/// limits apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest argument, in bytes (`proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Whether the connection may send requests of any size up to the
    /// limits (false before `AUTH` when a password is set).
    pub authenticated: bool,
}

/// A RESP array whose headers have been walked in part.
#[derive(Debug)]
struct ArrayWalk {
    /// Arguments whose header has not been read yet.
    remaining: usize,
    /// Offset of the next header, or past the end of the last payload.
    at: usize,
    /// Where each argument read so far lies in the buffer.
    args: Vec<Range<usize>>,
}

/// Turns a connection's input buffer into requests, keeping its place in
/// a request that has not fully arrived. The buffer must only be appended
/// to between calls (or moved whole: offsets are from its start).
#[derive(Debug, Default)]
pub struct Parser {
    array: Option<ArrayWalk>,
    /// How far past the current line's start the search for its end has
    /// already looked without finding it.
    scanned: usize,
    /// Bytes looked at by line searches, plus one per header: tests check
    /// that a trickled request costs steps linear in its size.
    steps: u64,
}

impl Parser {
    /// Takes the first complete request off `buf`: its arguments (the
    /// command name first; empty for a blank line, `*0` or a negative
    /// count), or `None` if more bytes are needed.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if self.array.is_none() {
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {}
                Some(_) => return self.inline(buf),
            }
            let Some((count, next)) = self.header(buf, 0, "mbulk count")? else {
                return Ok(None);
            };
            let count = match usize::try_from(count) {
                // Redis skips a request of zero or fewer arguments.
                Err(_) | Ok(0) => {
                    buf.advance(next);
                    return Ok(Some(Vec::new()));
                }
                Ok(n) if n > MAX_ARGS => {
                    return Err(ProtocolError::new("invalid multibulk length"));
                }
                Ok(n) if !limits.authenticated && n > UNAUTH_MAX_ARGS => {
                    return Err(ProtocolError::new("unauthenticated multibulk length"));
                }
                Ok(n) => n,
            };
            self.array = Some(ArrayWalk {
                remaining: count,
                at: next,
                // Grown as arguments arrive: a declared count costs nothing.
                args: Vec::with_capacity(count.min(64)),
            });
        }
        loop {
            let walk = self
                .array
                .as_ref()
                .expect("set above or by an earlier call");
            let at = walk.at;
            if walk.remaining == 0 {
                if at > buf.len() {
                    return Ok(None);
                }
                break;
            }
            // The previous payload, or this header, has not fully arrived.
            let Some(&marker) = buf.get(at) else {
                return Ok(None);
            };
            if marker != b'$' {
                return Err(ProtocolError::new(format!(
                    "expected '$', got '{}'",
                    char::from(marker)
                )));
            }
            let Some((len, next)) = self.header(buf, at, "bulk count")? else {
                return Ok(None);
            };
            let len = match usize::try_from(len) {
                Ok(len) if len <= limits.max_bulk_len => len,
                _ => return Err(ProtocolError::new("invalid bulk length")),
            };
            if !limits.authenticated && len > UNAUTH_MAX_BULK_LEN {
                return Err(ProtocolError::new("unauthenticated bulk length"));
            }
            let walk = self.array.as_mut().expect("checked above");
            walk.args.push(next..next + len);
            walk.remaining -= 1;
            // As Redis, the two bytes after a payload are skipped, not
            // checked to be `\r\n`.
            walk.at = next + len + 2;
        }
        let walk = self.array.take().expect("checked above");
        let frame = buf.split_to(walk.at).freeze();
        Ok(Some(
            walk.args.into_iter().map(|r| frame.slice(r)).collect(),
        ))
    }

    /// Bytes looked at so far (see the field).
    #[cfg(test)]
    fn steps(&self) -> u64 {
        self.steps
    }

    /// Finds the end (`\r\n`) of the line that starts at `start`,
    /// resuming where the last search stopped. Returns the offset of its
    /// `\r`, or `None` if it has not arrived.
    fn line_end(
        &mut self,
        buf: &[u8],
        start: usize,
        what: &str,
    ) -> Result<Option<usize>, ProtocolError> {
        let window_end = buf.len().min(start + MAX_LINE);
        let from = (start + self.scanned).min(window_end);
        let found = buf[from..window_end].iter().position(|&b| b == b'\r');
        self.steps += found.map_or(window_end - from, |i| i + 1) as u64 + 1;
        match found {
            Some(i) if from + i + 1 < buf.len() => {
                self.scanned = 0;
                Ok(Some(from + i))
            }
            // The `\r` is the last byte so far: look again from it.
            Some(i) => {
                self.scanned = from + i - start;
                Ok(None)
            }
            None if buf.len() - start >= MAX_LINE => {
                Err(ProtocolError::new(format!("too big {what} string")))
            }
            None => {
                self.scanned = window_end - start;
                Ok(None)
            }
        }
    }

    /// Reads the number of the header line (`*N\r\n` or `$N\r\n`) at
    /// `at`: the number and the offset after the line, or `None` if the
    /// line is incomplete. Numbers are read as Redis's `string2ll`.
    fn header(
        &mut self,
        buf: &[u8],
        at: usize,
        what: &str,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        let Some(cr) = self.line_end(buf, at + 1, what)? else {
            return Ok(None);
        };
        let number = Some(&buf[at + 1..cr])
            .filter(|_| buf[cr + 1] == b'\n')
            .and_then(parse_i64);
        match number {
            Some(n) => Ok(Some((n, cr + 2))),
            None if what == "mbulk count" => Err(ProtocolError::new("invalid multibulk length")),
            None => Err(ProtocolError::new("invalid bulk length")),
        }
    }

    /// An inline command: one line, split into words; `"..."` and `'...'`
    /// quote words with spaces, and inside double quotes `\n`, `\r`,
    /// `\t`, `\\`, `\"` and `\xHH` escape bytes (Redis's `sdssplitargs`).
    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let window_end = buf.len().min(MAX_LINE + 2);
        let from = self.scanned.min(window_end);
        let found = buf[from..window_end].iter().position(|&b| b == b'\n');
        self.steps += found.map_or(window_end - from, |i| i + 1) as u64 + 1;
        let Some(i) = found else {
            if buf.len() > MAX_LINE {
                return Err(ProtocolError::new("too big inline request"));
            }
            self.scanned = window_end;
            return Ok(None);
        };
        self.scanned = 0;
        let line = buf.split_to(from + i + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_words(line).map(Some)
    }
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

    const AUTHED: Limits = Limits {
        max_bulk_len: 16,
        authenticated: true,
    };
    const UNAUTHED: Limits = Limits {
        max_bulk_len: 512 * 1024 * 1024,
        authenticated: false,
    };

    fn parse_with(input: &[u8], limits: Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        Parser::default().next(&mut BytesMut::from(input), limits)
    }

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse_with(input, AUTHED)
    }

    fn words(input: &[u8]) -> Vec<Bytes> {
        parse(input).unwrap().unwrap()
    }

    fn e(text: &str) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        Err(ProtocolError(text.into()))
    }

    #[test]
    fn arrays_decode_and_wait_for_missing_bytes() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        assert_eq!(words(full), vec![Bytes::from("GET"), Bytes::from("key")]);
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let mut parser = Parser::default();
        assert!(parser.next(&mut two, AUTHED).unwrap().is_some());
        assert_eq!(two.len(), 14);
        assert!(parser.next(&mut two, AUTHED).unwrap().is_some());
        assert!(two.is_empty());
    }

    #[test]
    fn a_request_fed_byte_by_byte_resumes_where_it_stopped() {
        let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\nPING\r\n";
        let mut parser = Parser::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in full {
            buf.extend_from_slice(&[byte]);
            while let Some(request) = parser.next(&mut buf, AUTHED).unwrap() {
                got.push(request);
            }
        }
        assert_eq!(
            got,
            vec![
                vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("value")],
                vec![Bytes::from("PING")],
            ]
        );
    }

    /// Feeds `request` in pieces; returns the requests parsed and the
    /// parser's steps.
    fn trickle(request: &[u8], piece: usize) -> (Vec<Vec<Bytes>>, u64) {
        let limits = Limits {
            max_bulk_len: 1024,
            authenticated: true,
        };
        let mut parser = Parser::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in request.chunks(piece) {
            buf.extend_from_slice(chunk);
            while let Some(args) = parser.next(&mut buf, limits).unwrap() {
                got.push(args);
            }
        }
        (got, parser.steps())
    }

    #[test]
    fn a_trickled_request_costs_steps_linear_in_its_size() {
        // Many small arguments (a RESP request), then one long line (an
        // inline one): walking from the start on every read would cost
        // size^2 / piece steps.
        let mut resp = format!("*{}\r\n", 20_000).into_bytes();
        for i in 0..20_000 {
            let arg = format!("arg{i}");
            resp.extend(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        let mut inline = b"ECHO ".to_vec();
        inline.extend(vec![b'x'; MAX_LINE - 100]);
        inline.extend(b"\r\n");
        for request in [&resp, &inline] {
            for piece in [1, 7, 256] {
                let (got, steps) = trickle(request, piece);
                assert_eq!(got.len(), 1);
                assert!(got[0].len() == 20_000 || got[0].len() == 2);
                let reads = request.len().div_ceil(piece) as u64;
                assert!(
                    steps <= 2 * request.len() as u64 + 2 * reads,
                    "piece {piece}: {steps} steps for {} bytes",
                    request.len()
                );
            }
        }
    }

    /// A small deterministic generator (xorshift64*), so a failing seed
    /// can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    #[test]
    fn any_split_of_a_pipeline_parses_like_the_whole() {
        for seed in 1..=30u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut pipeline = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..200 {
                let args: Vec<Bytes> = (0..1 + rng.below(5))
                    .map(|_| {
                        let len = rng.below(20);
                        let bytes: Vec<u8> =
                            (0..len).map(|_| b"ab\r\n\0 x"[rng.below(7)]).collect();
                        Bytes::from(bytes)
                    })
                    .collect();
                if rng.below(4) == 0 {
                    // Inline: plain words only.
                    let words: Vec<String> = (0..1 + rng.below(4))
                        .map(|i| format!("w{i}x{}", rng.below(1000)))
                        .collect();
                    pipeline.extend(words.join(" ").as_bytes());
                    pipeline.extend(b"\r\n");
                    expected.push(words.into_iter().map(Bytes::from).collect::<Vec<_>>());
                } else {
                    pipeline.extend(format!("*{}\r\n", args.len()).as_bytes());
                    for arg in &args {
                        pipeline.extend(format!("${}\r\n", arg.len()).as_bytes());
                        pipeline.extend(arg);
                        pipeline.extend(b"\r\n");
                    }
                    expected.push(args);
                }
            }
            let mut parser = Parser::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            while at < pipeline.len() {
                let piece = (1 + rng.below(300)).min(pipeline.len() - at);
                buf.extend_from_slice(&pipeline[at..at + piece]);
                at += piece;
                while let Some(args) = parser.next(&mut buf, AUTHED_WIDE).unwrap() {
                    got.push(args);
                }
            }
            assert!(buf.is_empty(), "seed {seed}: bytes left over");
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    const AUTHED_WIDE: Limits = Limits {
        max_bulk_len: 1024,
        authenticated: true,
    };

    #[test]
    fn limits_are_checked_before_the_payload_arrives() {
        assert_eq!(
            parse(b"*2\r\n$3\r\nGET\r\n$17\r\n"),
            e("invalid bulk length")
        );
        assert_eq!(parse(b"*1\r\n$-1\r\n"), e("invalid bulk length"));
        assert_eq!(parse(b"*1\r\n$+1\r\n"), e("invalid bulk length"));
        assert_eq!(parse(b"*x\r\n"), e("invalid multibulk length"));
        assert_eq!(parse(b"*01\r\n"), e("invalid multibulk length"));
        assert_eq!(parse(b"*9999999\r\n"), e("invalid multibulk length"));
        assert_eq!(parse(b"*1\r\n+PING\r\n"), e("expected '$', got '+'"));
        assert_eq!(parse(b"*1\r\n*1\r\n"), e("expected '$', got '*'"));
        let long = [b"*".as_slice(), &[b'1'; MAX_LINE + 1]].concat();
        assert_eq!(parse(&long), e("too big mbulk count string"));
        let long = [b"*1\r\n$".as_slice(), &[b'1'; MAX_LINE + 1]].concat();
        assert_eq!(parse(&long), e("too big bulk count string"));
        let long_inline = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parse(&long_inline), e("too big inline request"));
    }

    #[test]
    fn before_auth_requests_are_small() {
        let eleven = [b"*11\r\n".as_slice(), &b"$1\r\nx\r\n".repeat(11)].concat();
        assert_eq!(
            parse_with(&eleven, UNAUTHED),
            e("unauthenticated multibulk length")
        );
        assert_eq!(
            parse_with(b"*1000000\r\n", UNAUTHED),
            e("unauthenticated multibulk length")
        );
        // Refused on the header alone: the payload is never awaited.
        assert_eq!(
            parse_with(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n", UNAUTHED),
            e("unauthenticated bulk length")
        );
        // Over the server's own limit it is the ordinary error, as Redis.
        assert_eq!(
            parse_with(b"*1\r\n$9999999999\r\n", UNAUTHED),
            e("invalid bulk length")
        );
        let ten = [b"*10\r\n".as_slice(), &b"$1\r\nx\r\n".repeat(10)].concat();
        assert_eq!(parse_with(&ten, UNAUTHED).unwrap().unwrap().len(), 10);
        let big = vec![b'v'; UNAUTH_MAX_BULK_LEN];
        let mut auth = b"*2\r\n$4\r\nAUTH\r\n$16384\r\n".to_vec();
        auth.extend(&big);
        auth.extend(b"\r\n");
        assert_eq!(parse_with(&auth, UNAUTHED).unwrap().unwrap()[1], big);
        assert_eq!(parse_with(&eleven, AUTHED).unwrap().unwrap().len(), 11);
    }

    #[test]
    fn empty_and_negative_counts_are_skipped_like_redis() {
        assert_eq!(words(b"*0\r\n"), Vec::<Bytes>::new());
        assert_eq!(words(b"*-1\r\n"), Vec::<Bytes>::new());
        assert_eq!(words(b"*-2\r\n"), Vec::<Bytes>::new());
        assert_eq!(words(b"\r\n"), Vec::<Bytes>::new());
        let mut buf = BytesMut::from(&b"*-2\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let mut parser = Parser::default();
        assert_eq!(parser.next(&mut buf, AUTHED), Ok(Some(Vec::new())));
        assert_eq!(
            parser.next(&mut buf, AUTHED),
            Ok(Some(vec![Bytes::from("PING")]))
        );
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
        let unbalanced = e("unbalanced quotes in request");
        assert_eq!(parse(b"GET \"key\r\n"), unbalanced);
        assert_eq!(parse(b"GET \"a\"b\r\n"), unbalanced);
        assert_eq!(parse(b"GET key"), Ok(None));
    }
}
