//! One client's byte stream: buffered reads turned into requests, and
//! replies queued and written in batches, so a pipeline of requests that
//! arrived together gets its replies in one write.
//!
//! Both buffers give memory back: after a large request or reply, a buffer
//! whose capacity is over [`SHRINK_ABOVE`] and that holds little is
//! replaced by a small one (Redis resizes its query buffer the same way),
//! so an idle client holds at most a few tens of KiB.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::listener::ClientStream;
use crate::reply::{Frame, Protocol};
use crate::request::{Limits, Parser, ProtocolError};

/// Bytes read per call at least.
const READ_CHUNK: usize = 16 * 1024;
/// A buffer with more capacity than this is shrunk once it holds at most
/// [`READ_CHUNK`] bytes.
pub const SHRINK_ABOVE: usize = 64 * 1024;

/// A connection's stream and its two buffers.
pub struct Connection {
    stream: Box<dyn ClientStream>,
    input: BytesMut,
    parser: Parser,
    output: BytesMut,
    /// How long one write may wait for the client to take bytes (the idle
    /// timeout), if there is one.
    write_timeout: Option<Duration>,
}

impl Connection {
    /// Wraps an accepted stream. With `write_timeout`, a client that takes
    /// none of its replies for that long fails the write.
    pub fn new(stream: Box<dyn ClientStream>, write_timeout: Option<Duration>) -> Connection {
        Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            parser: Parser::default(),
            output: BytesMut::with_capacity(READ_CHUNK),
            write_timeout,
        }
    }

    /// The next request already in the input buffer, without reading,
    /// and the bytes it took.
    pub fn next_buffered(
        &mut self,
        limits: Limits,
    ) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
        let before = self.input.len();
        // The parser takes a request off the buffer only once it is whole.
        let request = self.parser.next(&mut self.input, limits)?;
        Ok(request.map(|r| (r, before - self.input.len())))
    }

    /// Whether bytes of a next request are already in the input buffer
    /// (a pipeline), without parsing them.
    pub fn has_buffered(&self) -> bool {
        !self.input.is_empty()
    }

    /// The stream's file descriptor, as `CLIENT LIST` shows it.
    pub fn fd(&self) -> i64 {
        self.stream.fd()
    }

    /// Reads more bytes. Returns `false` at the end of the stream.
    pub async fn fill(&mut self) -> io::Result<bool> {
        // Reserving first: on a buffer that no longer shares its memory,
        // `reserve` takes the whole allocation back, which `shrink` then
        // gives up if it is large.
        self.input.reserve(READ_CHUNK);
        shrink(&mut self.input);
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    /// Reads what has already arrived, without waiting. Returns `false` if
    /// nothing had.
    pub fn try_fill(&mut self) -> io::Result<bool> {
        self.input.reserve(READ_CHUNK);
        match self.stream.read_now(&mut self.input) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues a reply; [`Connection::flush`] sends it.
    pub fn queue(&mut self, frame: &Frame, protocol: Protocol) {
        frame.encode(protocol, &mut self.output);
    }

    /// Queues a reply, sending as it encodes once `flush_at` bytes are
    /// queued: a reply of any size is encoded at most about `flush_at`
    /// bytes ahead of the socket, and the task yields between chunks, so
    /// one large reply neither doubles its memory in the buffer nor holds
    /// a worker thread from other clients while it is copied.
    pub async fn send(
        &mut self,
        frame: &Frame,
        protocol: Protocol,
        flush_at: usize,
    ) -> io::Result<()> {
        let mut chunks = frame.chunks(protocol);
        while chunks.fill(&mut self.output, flush_at) {
            self.flush().await?;
            tokio::task::coop::consume_budget().await;
        }
        if self.output.len() >= flush_at {
            self.flush().await?;
        }
        Ok(())
    }

    /// Bytes of replies queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.output.len()
    }

    /// Sends the queued replies. Fails with `TimedOut` if the client takes
    /// nothing for the write timeout.
    pub async fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            let write = self.stream.write(&self.output[sent..]);
            let n = match self.write_timeout {
                None => write.await?,
                Some(limit) => tokio::time::timeout(limit, write).await.map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took none of its replies within the idle timeout",
                    )
                })??,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        self.output.clear();
        shrink(&mut self.output);
        Ok(())
    }

    /// Sends what is queued and closes. The client may have sent more
    /// requests that will not be read; closing with unread input makes the
    /// kernel reset the connection, which can destroy the last reply
    /// before the client reads it. So shut down our side first and drain
    /// the client's for a moment.
    pub async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        close_gracefully(&mut *self.stream, Duration::from_millis(250)).await;
        Ok(())
    }

    /// The capacities of the input and output buffers.
    #[cfg(test)]
    fn capacities(&self) -> (usize, usize) {
        (self.input.capacity(), self.output.capacity())
    }
}

/// Replaces a buffer that has grown large and now holds little by a small
/// copy of what it holds, with room for one more read (offsets from its
/// start stay valid).
fn shrink(buf: &mut BytesMut) {
    if buf.capacity() > SHRINK_ABOVE && buf.len() <= READ_CHUNK {
        let mut small = BytesMut::with_capacity(buf.len() + READ_CHUNK);
        small.extend_from_slice(buf);
        *buf = small;
    }
}

/// Shuts down writing, then discards input until the peer closes (at most
/// `linger` and 1 MiB), so that what was written is not lost to a reset.
pub async fn close_gracefully(stream: &mut dyn ClientStream, linger: Duration) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = 1024 * 1024usize;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply;
    use tokio::net::TcpStream;

    async fn pair() -> (Connection, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Connection::new(Box::new(server), None), client)
    }

    #[tokio::test]
    async fn a_large_reply_is_encoded_only_as_fast_as_the_socket_takes_it() {
        let (mut conn, client) = pair().await;
        // 30 MB of reply to a client that reads nothing: more than the
        // socket buffers hold, so the send waits part way.
        let value = Bytes::from(vec![b'v'; 100 * 1024]);
        let frame = Frame::Array(vec![Frame::Bulk(value); 300]);
        let send = conn.send(&frame, Protocol::Resp2, 64 * 1024);
        let sent = tokio::time::timeout(Duration::from_millis(500), send).await;
        assert!(sent.is_err(), "30 MB fit in the socket buffers");
        let (_, output) = conn.capacities();
        assert!(
            output < 1024 * 1024,
            "the reply was built whole: {output} bytes of output buffer"
        );
        drop(client);
    }

    #[tokio::test]
    async fn buffers_shrink_after_a_large_request_and_reply() {
        let (mut conn, mut client) = pair().await;
        let limits = Limits {
            max_bulk_len: 16 * 1024 * 1024,
            authenticated: true,
        };
        let value = vec![b'v'; 4 * 1024 * 1024];
        let header = format!("${}\r\n", value.len());
        let mut request = format!("*2\r\n$4\r\nECHO\r\n{header}").into_bytes();
        request.extend(&value);
        request.extend(b"\r\n");
        let reply_len = header.len() + value.len() + 2;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let peer = tokio::spawn(async move {
            client.write_all(&request).await.unwrap();
            let mut reply = vec![0u8; reply_len];
            client.read_exact(&mut reply).await.unwrap();
            assert!(reply.ends_with(b"vv\r\n"));
            rx.await.unwrap();
            client.write_all(b"PING\r\n").await.unwrap();
            client
        });
        let mut largest_input = 0;
        let args = loop {
            largest_input = largest_input.max(conn.capacities().0);
            if let Some((args, _)) = conn.next_buffered(limits).unwrap() {
                break args;
            }
            assert!(conn.fill().await.unwrap());
        };
        assert!(largest_input >= value.len(), "the request grew the input");
        conn.queue(&reply::bulk(args[1].clone()), crate::reply::Protocol::Resp2);
        drop(args);
        assert!(
            conn.capacities().1 >= value.len(),
            "the reply grew the output"
        );
        conn.flush().await.unwrap();
        assert!(
            conn.capacities().1 <= SHRINK_ABOVE,
            "{:?}",
            conn.capacities()
        );
        // The next wait for a request gives the input's memory back.
        tx.send(()).unwrap();
        assert!(conn.fill().await.unwrap());
        assert!(
            conn.capacities().0 <= SHRINK_ABOVE,
            "{:?}",
            conn.capacities()
        );
        assert_eq!(
            conn.next_buffered(limits).unwrap(),
            Some((vec![Bytes::from("PING")], 6))
        );
        let _client = peer.await.unwrap();
    }
}
