//! Where client connections come from: a TCP listener, or an in-process
//! channel of byte streams.
//!
//! The in-process kind exists for simulations on a paused clock: a real
//! socket's bytes do not wait for tokio's clock, so a paused runtime that
//! finds nothing to do jumps to its next timer and fires timeouts while a
//! reply is on its way. Over in-memory streams every wait is the runtime's
//! own, and a seeded simulation runs the same server code as over TCP.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Bytes an in-memory stream buffers each way before a writer waits.
const MEMORY_STREAM_BUFFER: usize = 64 * 1024;

/// A client's byte stream, as a connection uses it.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The file descriptor `CLIENT LIST` shows (`-1`: none).
    fn fd(&self) -> i64 {
        -1
    }

    /// Reads what has already arrived into `buf`, without waiting:
    /// `Ok(0)` at the end of the stream, `WouldBlock` if nothing had.
    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut chunk = [0u8; 16 * 1024];
        let mut read = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *self).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Ok(read.filled().len())
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes what the stream takes now, without waiting.
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self).poll_write(&mut cx, bytes) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl ClientStream for TcpStream {
    fn fd(&self) -> i64 {
        use std::os::fd::AsRawFd;
        i64::from(self.as_raw_fd())
    }

    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.try_read_buf(buf)
    }

    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

impl ClientStream for DuplexStream {}

/// Where a server accepts its clients.
pub struct Listener {
    kind: Kind,
}

enum Kind {
    Tcp(TcpListener),
    Memory {
        addr: SocketAddr,
        incoming: mpsc::UnboundedReceiver<DuplexStream>,
        next_port: Arc<AtomicU16>,
    },
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener {
            kind: Kind::Tcp(listener),
        }
    }
}

/// Opens connections to an in-memory [`Listener`].
#[derive(Clone)]
pub struct Connector {
    incoming: mpsc::UnboundedSender<DuplexStream>,
}

impl Connector {
    /// A new client connection; fails once the listener is gone.
    pub fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(MEMORY_STREAM_BUFFER);
        self.incoming.send(server).map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the in-memory listener is closed",
            )
        })?;
        Ok(client)
    }
}

impl Listener {
    /// An in-memory listener that reports `addr` as its address, and the
    /// connector that opens connections to it.
    pub fn memory(addr: SocketAddr) -> (Listener, Connector) {
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = Listener {
            kind: Kind::Memory {
                addr,
                incoming: rx,
                next_port: Arc::new(AtomicU16::new(1)),
            },
        };
        (listener, Connector { incoming: tx })
    }

    /// The address clients reach.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.kind {
            Kind::Tcp(listener) => listener.local_addr(),
            Kind::Memory { addr, .. } => Ok(*addr),
        }
    }

    /// The next connection and its peer's address. An in-memory listener
    /// whose connectors are all gone waits forever, as an idle socket does.
    pub(crate) async fn accept(&mut self) -> io::Result<(Box<dyn ClientStream>, SocketAddr)> {
        match &mut self.kind {
            Kind::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), peer))
            }
            Kind::Memory {
                incoming,
                next_port,
                ..
            } => match incoming.recv().await {
                Some(stream) => {
                    let port = next_port.fetch_add(1, Ordering::Relaxed);
                    Ok((
                        Box::new(stream),
                        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    ))
                }
                None => std::future::pending().await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn read_now_takes_what_arrived_and_never_waits() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::with_capacity(64);
        let e = server.read_now(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"PING\r\n").await.unwrap();
        assert_eq!(server.read_now(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..], b"PING\r\n");
        drop(client);
        assert_eq!(server.read_now(&mut buf).unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn a_memory_listener_accepts_until_it_is_dropped() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
        let (mut listener, connector) = Listener::memory(addr);
        assert_eq!(listener.local_addr().unwrap(), addr);
        let _client = connector.connect().unwrap();
        let (_stream, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::LOCALHOST);
        drop(listener);
        assert_eq!(
            connector.connect().unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }
}
