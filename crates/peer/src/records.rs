//! After the handshake, every byte between two peers travels in records
//! that carry a MAC, so that someone who can rewrite the traffic between
//! two nodes can neither change, drop, replay, reorder nor inject anything
//! without the connection failing.
//!
//! A record is `len (u32, big-endian) || payload || tag`, where `tag` is
//! the first 16 bytes of `HMAC-SHA256(key, seq || len || payload)`. `seq`
//! counts the records sent in that direction from 0, so a record replayed,
//! reordered or left out fails the next check (records cut off at the end
//! look like a connection closed, which the calls in flight see as one); `key` is one of two keys the
//! handshake derives from the secret and both nonces, one per direction,
//! so a record cannot be sent back to its sender either
//! ([`crate::auth`]). A payload holds at most [`MAX_RECORD`] bytes: a forged
//! length makes a node buffer no more than that before the check fails.
//! The bytes are not encrypted: keeping them secret needs a private network
//! or a tunnel (`docs/DISTRIBUTED.md`, section 7).
//!
//! Written here because tarpc's transport frames with a codec of its own
//! (this layer sits under it, on the byte stream), and the standard form
//! of this, TLS with a pre-shared key, is not offered by rustls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type HmacSha256 = Hmac<Sha256>;

/// The largest payload of one record.
pub(crate) const MAX_RECORD: usize = 64 << 10;
const HEADER: usize = 4;
const TAG: usize = 16;
/// Sealed bytes waiting for the socket beyond which a write waits for it.
const HIGH_WATER: usize = 4 * MAX_RECORD;
/// Bytes asked of the socket per read, at least.
const READ_CHUNK: usize = 16 << 10;

/// The MAC keys of one end of a connection: what it sends with, what it
/// checks with.
pub(crate) struct Keys {
    pub(crate) send: HmacSha256,
    pub(crate) recv: HmacSha256,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)") // never printed
    }
}

/// One direction's key and the number of its next record.
struct Direction {
    key: HmacSha256,
    seq: u64,
}

impl Direction {
    fn mac(&self, len: [u8; HEADER], payload: &[u8]) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(&len);
        mac.update(payload);
        mac
    }

    /// Appends `payload` (at most [`MAX_RECORD`] bytes) to `out` as the
    /// next record.
    fn seal(&mut self, payload: &[u8], out: &mut BytesMut) {
        debug_assert!(!payload.is_empty() && payload.len() <= MAX_RECORD);
        let len = (payload.len() as u32).to_be_bytes();
        let tag = self.mac(len, payload).finalize().into_bytes();
        out.reserve(HEADER + payload.len() + TAG);
        out.put_slice(&len);
        out.put_slice(payload);
        out.put_slice(&tag[..TAG]);
        self.seq += 1;
    }

    /// The payload of the next record if `raw` holds all of it (taken off
    /// `raw`); an error if its length is impossible or its tag wrong.
    fn open(&mut self, raw: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if raw.len() < HEADER {
            return Ok(None);
        }
        let len: [u8; HEADER] = raw[..HEADER].try_into().expect("four bytes");
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a peer record claims {n} bytes (1 to {MAX_RECORD} allowed)"),
            ));
        }
        if raw.len() < HEADER + n + TAG {
            return Ok(None);
        }
        let mut record = raw.split_to(HEADER + n + TAG);
        let (payload, tag) = record[HEADER..].split_at(n);
        self.mac(len, payload)
            .verify_truncated_left(tag)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "peer record {} failed its integrity check: the traffic was altered on its way",
                        self.seq
                    ),
                )
            })?;
        self.seq += 1;
        record.advance(HEADER);
        record.truncate(n);
        Ok(Some(record))
    }
}

/// A byte stream whose bytes travel in MACed records both ways; without
/// keys (a cluster with no secret, on loopback only) the stream itself.
pub(crate) struct RecordStream<S> {
    inner: S,
    /// (what this end sends with, what it checks with)
    keys: Option<(Direction, Direction)>,
    /// Sealed records not yet taken by the socket.
    out: BytesMut,
    /// Bytes read that do not make a whole record yet.
    raw: BytesMut,
    /// Checked payload not yet read.
    plain: BytesMut,
    /// A record failed its check: every later read fails too.
    failed: bool,
}

impl<S> RecordStream<S> {
    pub(crate) fn new(inner: S, keys: Option<Keys>) -> RecordStream<S> {
        RecordStream {
            inner,
            keys: keys.map(|k| {
                (
                    Direction {
                        key: k.send,
                        seq: 0,
                    },
                    Direction {
                        key: k.recv,
                        seq: 0,
                    },
                )
            }),
            out: BytesMut::new(),
            raw: BytesMut::new(),
            plain: BytesMut::new(),
            failed: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> RecordStream<S> {
    /// Writes the sealed records to the socket until it has them all.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some((_, recv)) = &mut this.keys else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            // The drained payload's buffer goes: `raw` can then reuse its
            // memory rather than grow beside it.
            this.plain = BytesMut::new();
            if this.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "this peer connection already failed an integrity check",
                )));
            }
            match recv.open(&mut this.raw) {
                Ok(Some(payload)) => {
                    this.plain = payload;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Err(e));
                }
            }
            this.raw.reserve(READ_CHUNK);
            // At most a chunk a read: `raw` holds at most a record and a
            // chunk.
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut (&mut this.raw).limit(READ_CHUNK)
            ))?;
            if n == 0 {
                return Poll::Ready(if this.raw.is_empty() {
                    Ok(()) // the end of the stream, between records
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer's connection ended inside a record",
                    ))
                });
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.keys.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        let n = data.len().min(MAX_RECORD);
        let (send, _) = this.keys.as_mut().expect("checked above");
        send.seal(&data[..n], &mut this.out);
        // The socket takes what it can now; the rest goes at the next
        // write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.keys.is_none() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        // A record at a time, from the first slice with bytes.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        // Without keys, as the stream (one writev for a frame's parts).
        self.keys.is_none() && self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn key(byte: u8) -> HmacSha256 {
        HmacSha256::new_from_slice(&[byte; 32]).unwrap()
    }

    /// Two ends that agree on their keys.
    fn pair(capacity: usize) -> (RecordStream<DuplexStream>, RecordStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(capacity);
        let a = RecordStream::new(
            a,
            Some(Keys {
                send: key(1),
                recv: key(2),
            }),
        );
        let b = RecordStream::new(
            b,
            Some(Keys {
                send: key(2),
                recv: key(1),
            }),
        );
        (a, b)
    }

    #[tokio::test]
    async fn bytes_of_every_size_arrive_as_written_both_ways() {
        let (mut a, mut b) = pair(8 << 10);
        let sizes = [1, 15, MAX_RECORD - 1, MAX_RECORD, MAX_RECORD + 1, 300_000];
        let messages: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 % 251) as u8).collect())
            .collect();
        let all: Vec<u8> = messages.concat();
        let write = async {
            for m in &messages {
                a.write_all(m).await.unwrap();
            }
            a.flush().await.unwrap();
            a.shutdown().await.unwrap();
            a
        };
        let read = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            (got, b)
        };
        let (mut a, (got, mut b)) = tokio::join!(write, read);
        assert_eq!(got.len(), all.len());
        assert!(got == all, "the bytes differ");
        // And back, over the other key.
        b.write_all(b"pong").await.unwrap();
        b.flush().await.unwrap();
        let mut back = [0u8; 4];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong");
    }

    /// Sealed records of `payloads` from the end that sends with key 1.
    fn sealed(payloads: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut send = Direction {
            key: key(1),
            seq: 0,
        };
        payloads
            .iter()
            .map(|p| {
                let mut out = BytesMut::new();
                send.seal(p, &mut out);
                out.to_vec()
            })
            .collect()
    }

    /// What the end that checks with key 1 makes of `wire`: the payload
    /// read, and the error that ended it, if any.
    async fn receive(wire: Vec<u8>) -> (Vec<u8>, Option<io::Error>) {
        let (mut raw, b) = tokio::io::duplex(1 << 20);
        let mut b = RecordStream::new(
            b,
            Some(Keys {
                send: key(2),
                recv: key(1),
            }),
        );
        raw.write_all(&wire).await.unwrap();
        drop(raw);
        let mut got = Vec::new();
        let err = b.read_to_end(&mut got).await.err();
        (got, err)
    }

    #[tokio::test]
    async fn an_altered_replayed_reordered_dropped_or_reflected_record_fails() {
        let r = sealed(&[b"set balance 10", b"set balance 20", b"set balance 30"]);
        let (got, err) = receive(r.concat()).await;
        assert_eq!(got, b"set balance 10set balance 20set balance 30");
        assert!(err.is_none(), "{err:?}");

        let mut flipped = r[0].clone();
        flipped[HEADER + 12] ^= 1; // "10" becomes "00"
        let cases = [
            ("altered", flipped),
            ("replayed", [&r[0][..], &r[0][..]].concat()),
            ("reordered", [&r[1][..], &r[0][..]].concat()),
            ("dropped", [&r[0][..], &r[2][..]].concat()),
        ];
        for (what, wire) in cases {
            let (_, err) = receive(wire).await;
            let err = err.unwrap_or_else(|| panic!("a {what} record was accepted"));
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert!(err.to_string().contains("integrity"), "{what}: {err}");
        }
        // A record sent back to its sender: checked with the other key.
        let (mut raw, a) = tokio::io::duplex(1 << 20);
        let mut a = RecordStream::new(
            a,
            Some(Keys {
                send: key(1),
                recv: key(2),
            }),
        );
        raw.write_all(&r[0]).await.unwrap();
        drop(raw);
        let err = a.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn a_forged_length_or_a_cut_record_fails() {
        let mut huge = ((MAX_RECORD + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 64]);
        let (_, err) = receive(huge).await;
        let err = err.expect("a record over the limit was waited for");
        assert!(err.to_string().contains("claims"), "{err}");
        let (_, err) = receive(0u32.to_be_bytes().to_vec()).await;
        let err = err.expect("an empty record was accepted");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("claims"), "{err}");
        let r = sealed(&[b"abc"]);
        let (got, err) = receive(r[0][..r[0].len() - 1].to_vec()).await;
        assert!(got.is_empty(), "a cut record's payload was read");
        assert_eq!(
            err.expect("a cut record was accepted").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn without_keys_the_bytes_go_as_they_are() {
        let (a, mut raw) = tokio::io::duplex(1024);
        let mut a = RecordStream::new(a, None);
        a.write_all(b"plain").await.unwrap();
        a.flush().await.unwrap();
        let mut got = [0u8; 5];
        raw.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"plain");
    }
}
