//! One client's byte stream: buffered reads turned into requests, and
//! replies queued and written in batches, so a pipeline of requests that
//! arrived together gets its replies in one write.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::reply::Frame;
use crate::request::{ProtocolError, next_request};

/// Bytes read per call at least.
const READ_CHUNK: usize = 16 * 1024;

/// A connection's stream and its two buffers.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
    max_bulk_len: usize,
}

impl Connection {
    /// Wraps an accepted stream; `max_bulk_len` bounds each argument.
    pub fn new(stream: TcpStream, max_bulk_len: usize) -> Connection {
        Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(READ_CHUNK),
            max_bulk_len,
        }
    }

    /// The next request already in the input buffer, without reading.
    pub fn next_buffered(&mut self) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        next_request(&mut self.input, self.max_bulk_len)
    }

    /// Reads more bytes. Returns `false` at the end of the stream.
    pub async fn fill(&mut self) -> io::Result<bool> {
        self.input.reserve(READ_CHUNK);
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    /// Reads what has already arrived, without waiting. Returns `false` if
    /// nothing had.
    pub fn try_fill(&mut self) -> io::Result<bool> {
        self.input.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.input) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues a reply; [`Connection::flush`] sends it.
    pub fn queue(&mut self, frame: &Frame) {
        extend_encode(&mut self.output, frame, false)
            .expect("encoding into a buffer that grows to fit cannot fail");
    }

    /// Bytes of replies queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.output.len()
    }

    /// Sends the queued replies.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Sends what is queued and closes. The client may have sent more
    /// requests that will not be read; closing with unread input makes the
    /// kernel reset the connection, which can destroy the last reply
    /// before the client reads it. So shut down our side first and drain
    /// the client's for a moment.
    pub async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        close_gracefully(&mut self.stream).await;
        Ok(())
    }
}

/// Shuts down writing, then discards input until the peer closes (at most
/// a quarter of a second and 1 MiB).
pub async fn close_gracefully(stream: &mut TcpStream) {
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
    let _ = tokio::time::timeout(Duration::from_millis(250), drain).await;
}
