//! A reply, and its encoding in each protocol.
//!
//! A command builds one [`Frame`] whatever the protocol of its connection,
//! with the shape Redis 7 uses in RESP3 (a map, a null, a double, a
//! verbatim string); [`Frame::encode`] then writes it as Redis writes that
//! shape in the connection's protocol: in RESP2 a map is a flat array of
//! keys and values, a set an array, a double a bulk string, a boolean the
//! integer 1 or 0, a verbatim string a bulk string, and a null is `$-1`
//! (or `*-1` where Redis sends a null array).

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a connection speaks, chosen by `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, every connection's protocol until `HELLO 3`.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` and `CLIENT INFO` report.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A reply in Redis 7's RESP3 shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+text`.
    Simple(Bytes),
    /// `-CODE text` (one line).
    Error(String),
    /// `$len` and the bytes.
    Bulk(Bytes),
    /// `:n`.
    Integer(i64),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// A missing array (an aborted `EXEC`): `*-1` in RESP2, `_` in RESP3.
    #[allow(dead_code, reason = "an aborted EXEC will send it")]
    NullArray,
    /// `*n` and the items.
    Array(Vec<Frame>),
    /// `%n` and the pairs; a flat array in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// `~n` and the items; an array in RESP2.
    Set(Vec<Frame>),
    /// `,x`; a bulk string in RESP2.
    #[allow(
        dead_code,
        reason = "no string command replies with a double; sorted sets will"
    )]
    Double(f64),
    /// `#t`/`#f`; `:1`/`:0` in RESP2.
    #[allow(
        dead_code,
        reason = "no string command replies with a boolean; scripting will"
    )]
    Boolean(bool),
    /// `=len` and `txt:` or `mkd:` before the text; a bulk string of the
    /// text in RESP2.
    Verbatim(&'static str, Bytes),
    /// A reply already encoded in the connection's protocol: what a peer
    /// answered for a forwarded request (`ringkv node`).
    Raw(Bytes),
}

impl Frame {
    /// Appends the frame to `out`, encoded in `protocol`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        self.chunks(protocol).fill(out, usize::MAX);
    }

    /// An encoder that writes the frame piece by piece (see [`Chunks`]).
    pub fn chunks(&self, protocol: Protocol) -> Chunks<'_> {
        Chunks {
            protocol,
            stack: vec![Items::Frames(std::slice::from_ref(self).iter())],
        }
    }

    /// Writes a frame that holds no other frames; a container writes its
    /// header here and returns its items, which the encoder writes next.
    fn encode_head(&self, protocol: Protocol, out: &mut BytesMut) -> Option<Items<'_>> {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(text) => line(out, b'+', text),
            Frame::Error(text) => line(out, b'-', text.as_bytes()),
            Frame::Bulk(bytes) => bulk(out, b'$', bytes),
            Frame::Integer(n) => header(out, b':', *n),
            Frame::Null if resp3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                header(out, b'*', items.len() as i64);
                return Some(Items::Frames(items.iter()));
            }
            Frame::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                return Some(Items::Pairs(pairs.iter(), None));
            }
            Frame::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                return Some(Items::Frames(items.iter()));
            }
            Frame::Double(x) if resp3 => line(out, b',', format_double(*x).as_bytes()),
            Frame::Double(x) => bulk(out, b'$', format_double(*x).as_bytes()),
            Frame::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Boolean(b) => header(out, b':', i64::from(*b)),
            Frame::Verbatim(format, text) if resp3 => {
                header(out, b'=', (text.len() + 4) as i64);
                out.put_slice(format.as_bytes());
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim(_, text) => bulk(out, b'$', text),
            Frame::Raw(bytes) => out.put_slice(bytes),
        }
        None
    }

    /// Bytes the frame takes once encoded in `protocol`, without encoding
    /// it (the output-buffer limit is checked before a reply is built
    /// into the buffer).
    pub fn encoded_len(&self, protocol: Protocol) -> usize {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(text) => text.len() + 3,
            Frame::Error(text) => text.len() + 3,
            Frame::Bulk(bytes) => bulk_len(bytes.len()),
            Frame::Integer(n) => digits(*n) + 3,
            Frame::Null | Frame::NullArray if resp3 => 3,
            Frame::Null | Frame::NullArray => 5,
            Frame::Array(items) | Frame::Set(items) => {
                digits(items.len() as i64)
                    + 3
                    + items.iter().map(|i| i.encoded_len(protocol)).sum::<usize>()
            }
            Frame::Map(pairs) => {
                let count = if resp3 { pairs.len() } else { 2 * pairs.len() };
                digits(count as i64)
                    + 3
                    + pairs
                        .iter()
                        .map(|(k, v)| k.encoded_len(protocol) + v.encoded_len(protocol))
                        .sum::<usize>()
            }
            Frame::Double(x) if resp3 => format_double(*x).len() + 3,
            Frame::Double(x) => bulk_len(format_double(*x).len()),
            Frame::Boolean(_) => 4,
            Frame::Verbatim(_, text) if resp3 => bulk_len(text.len() + 4),
            Frame::Verbatim(_, text) => bulk_len(text.len()),
            Frame::Raw(bytes) => bytes.len(),
        }
    }
}

/// Encodes a frame a piece at a time: [`Chunks::fill`] writes until the
/// buffer holds a given number of bytes, so a large reply goes out while it
/// is encoded, never built whole first.
pub struct Chunks<'a> {
    protocol: Protocol,
    /// The items of each open container, innermost last.
    stack: Vec<Items<'a>>,
}

/// What is left of one container.
enum Items<'a> {
    Frames(std::slice::Iter<'a, Frame>),
    /// Pairs, and the value of the pair whose key was just written.
    Pairs(std::slice::Iter<'a, (Frame, Frame)>, Option<&'a Frame>),
}

impl<'a> Chunks<'a> {
    /// Writes to `out` until it holds at least `at_least` bytes (one frame
    /// may take it past) or the frame is done; returns `false` once the
    /// whole frame is written (`true` means more may be left).
    pub fn fill(&mut self, out: &mut BytesMut, at_least: usize) -> bool {
        while out.len() < at_least {
            let Some(frame) = self.next_frame() else {
                return false;
            };
            if let Some(items) = frame.encode_head(self.protocol, out) {
                self.stack.push(items);
            }
        }
        !self.stack.is_empty()
    }

    fn next_frame(&mut self) -> Option<&'a Frame> {
        loop {
            let next = match self.stack.last_mut()? {
                Items::Frames(items) => items.next(),
                Items::Pairs(pairs, value) => value.take().or_else(|| {
                    pairs.next().map(|(k, v)| {
                        *value = Some(v);
                        k
                    })
                }),
            };
            match next {
                Some(frame) => return Some(frame),
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}

/// A double as Redis 7 writes it in replies: `inf`, `-inf`, `nan`, or the
/// shortest text that reads back as the same number.
pub fn format_double(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{x}")
    }
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, n: i64) {
    out.put_u8(kind);
    let mut digits = itoa::Buffer::new();
    out.put_slice(digits.format(n).as_bytes());
    out.put_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, kind: u8, bytes: &[u8]) {
    out.reserve(bytes.len() + 25);
    header(out, kind, bytes.len() as i64);
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

fn bulk_len(n: usize) -> usize {
    1 + digits(n as i64) + 2 + n + 2
}

/// Characters of `n` in decimal, sign included.
fn digits(n: i64) -> usize {
    itoa::Buffer::new().format(n).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_write_the_same_bytes_as_one_encode() {
        let frame = Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"value")),
            Frame::Map(vec![
                (
                    Frame::Simple(Bytes::from_static(b"k")),
                    Frame::Array(vec![Frame::Integer(7), Frame::Null]),
                ),
                (Frame::Set(vec![]), Frame::Map(vec![])),
            ]),
            Frame::Array(vec![Frame::Array(vec![Frame::Double(1.5)])]),
            Frame::Verbatim("txt", Bytes::from_static(b"info")),
        ]);
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let mut whole = BytesMut::new();
            frame.encode(protocol, &mut whole);
            for step in 1..8 {
                let (mut out, mut pieces) = (BytesMut::new(), 0);
                let mut chunks = frame.chunks(protocol);
                loop {
                    let at_least = out.len() + step;
                    if !chunks.fill(&mut out, at_least) {
                        break;
                    }
                    pieces += 1;
                }
                assert_eq!(out, whole, "{protocol:?}, step {step}");
                assert!(pieces > 1, "{protocol:?}, step {step}: written at once");
            }
        }
    }

    fn both(frame: &Frame) -> (String, String) {
        let enc = |p| {
            let mut out = BytesMut::new();
            frame.encode(p, &mut out);
            assert_eq!(out.len(), frame.encoded_len(p), "{frame:?} in {p:?}");
            String::from_utf8(out.to_vec()).expect("ascii")
        };
        (enc(Protocol::Resp2), enc(Protocol::Resp3))
    }

    #[test]
    fn each_shape_encodes_as_redis_does_in_each_protocol() {
        let cases: Vec<(Frame, &str, &str)> = vec![
            (Frame::Null, "$-1\r\n", "_\r\n"),
            (Frame::NullArray, "*-1\r\n", "_\r\n"),
            (Frame::Integer(-42), ":-42\r\n", ":-42\r\n"),
            (Frame::Simple("OK".into()), "+OK\r\n", "+OK\r\n"),
            (Frame::Error("ERR x".into()), "-ERR x\r\n", "-ERR x\r\n"),
            (
                Frame::Bulk("héllo".into()),
                "$6\r\nhéllo\r\n",
                "$6\r\nhéllo\r\n",
            ),
            (
                Frame::Map(vec![(Frame::Bulk("a".into()), Frame::Integer(1))]),
                "*2\r\n$1\r\na\r\n:1\r\n",
                "%1\r\n$1\r\na\r\n:1\r\n",
            ),
            (
                Frame::Set(vec![Frame::Simple("x".into())]),
                "*1\r\n+x\r\n",
                "~1\r\n+x\r\n",
            ),
            (Frame::Double(1.5), "$3\r\n1.5\r\n", ",1.5\r\n"),
            (Frame::Double(f64::INFINITY), "$3\r\ninf\r\n", ",inf\r\n"),
            (Frame::Boolean(true), ":1\r\n", "#t\r\n"),
            (Frame::Boolean(false), ":0\r\n", "#f\r\n"),
            (
                Frame::Verbatim("txt", "a:1\r\n".into()),
                "$5\r\na:1\r\n\r\n",
                "=9\r\ntxt:a:1\r\n\r\n",
            ),
            (
                Frame::Array(vec![Frame::Null, Frame::Array(vec![])]),
                "*2\r\n$-1\r\n*0\r\n",
                "*2\r\n_\r\n*0\r\n",
            ),
        ];
        for (frame, resp2, resp3) in cases {
            assert_eq!(both(&frame), (resp2.to_string(), resp3.to_string()));
        }
    }

    #[test]
    fn lengths_match_for_extreme_integers() {
        for n in [0, 9, 10, -1, -10, i64::MAX, i64::MIN] {
            both(&Frame::Integer(n));
        }
    }
}
