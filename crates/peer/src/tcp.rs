//! The network transport: tarpc over TCP, after the secret handshake, in
//! MACed records ([`crate::records`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::client::RpcError;
use tarpc::serde_transport;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::LengthDelimitedCodec;
use tracing::{debug, warn};

use crate::auth::{self, Handshake, Secret};
use crate::records::RecordStream;
use crate::{BoxFuture, DEFAULT_FRAME_LIMIT, PeerHandler, PeerTransport, Service, TransportError};

/// Bodies travel as `ByteBuf`: serde's `Vec<u8>` is a sequence, which
/// bincode writes and reads a byte at a time (a range copy's pages spent
/// a tenth of the target's CPU there); `ByteBuf` is the same bytes on the
/// wire, copied whole.
#[tarpc::service]
trait Peer {
    /// One call: the service, the body; the handler's answer.
    async fn call(service: Service, body: ByteBuf) -> Result<ByteBuf, String>;
}

/// The bounds a peer server and client enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest frame read or written (a request or an answer with its
    /// envelope); a longer one closes the connection.
    pub frame: usize,
    /// How long a new connection has to complete the handshake.
    pub handshake: Duration,
    /// Handshakes in progress at once; a connection over it is closed at
    /// accept. Strangers can hold these (for `handshake` each), never the
    /// slots of authenticated peers.
    pub handshakes: usize,
    /// Handshakes in progress at once from one IP address: strangers on
    /// one host cannot hold the whole handshake budget, so peers on other
    /// hosts still get in.
    pub handshakes_per_source: usize,
    /// Authenticated peer connections served at once; a peer over it is
    /// closed after its handshake.
    pub connections: usize,
    /// Calls served at once per connection; more wait (backpressure).
    pub calls_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame: DEFAULT_FRAME_LIMIT,
            handshake: Duration::from_secs(2),
            handshakes: 64,
            handshakes_per_source: 8,
            connections: 256,
            calls_per_connection: 64,
        }
    }
}

/// Bytes of a request's envelope (tarpc's context and ids, the service
/// tag, the body's length), kept free under the frame limit.
const ENVELOPE: usize = 512;

#[derive(Clone)]
struct Served {
    handler: Arc<dyn PeerHandler>,
    /// The largest answer that fits in a frame with its envelope.
    room: usize,
}

impl Peer for Served {
    async fn call(
        self,
        _: tarpc::context::Context,
        service: Service,
        body: ByteBuf,
    ) -> Result<ByteBuf, String> {
        match self.handler.handle(service, body.into_vec()).await {
            // Not sendable: the caller is told now, not at its deadline.
            Ok(answer) if answer.len() > self.room => Err(format!(
                "the answer of {} bytes is over the {}-byte frame limit",
                answer.len(),
                self.room
            )),
            result => result.map(ByteBuf::from),
        }
    }
}

/// A running peer server; dropping it stops it and closes its
/// connections.
pub struct PeerServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PeerServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the peers that connect to `listener` with `handler`. Each
/// connection must pass the handshake with `secret` within
/// `limits.handshake` before anything else is read from it; at most
/// `limits.handshakes` are in their handshake at once and at most
/// `limits.connections` authenticated peers are served at once, from
/// separate budgets. Authenticated connections use TCP keepalive, so a
/// peer that vanished (a partition, a power cut) frees its slot.
///
/// Refuses (`InvalidInput`) a listener on a non-loopback address without
/// a secret of at least 16 bytes ([`check_secret`](crate::check_secret)).
pub fn serve(
    listener: TcpListener,
    secret: Secret,
    handler: Arc<dyn PeerHandler>,
    limits: Limits,
) -> std::io::Result<PeerServer> {
    let addr = listener.local_addr()?;
    crate::check_secret(addr, &secret)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let task = tokio::spawn(async move {
        let shaking = Arc::new(Semaphore::new(limits.handshakes));
        let sources = Sources::default();
        let slots = Arc::new(Semaphore::new(limits.connections));
        // Owned here: aborting the server aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, from) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of descriptors, say: wait rather than spin.
                            warn!(error = %e, "peer accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(source) = sources.enter(from.ip(), limits.handshakes_per_source) else {
                        warn!(%from, limit = limits.handshakes_per_source, "too many peer handshakes from one address; closing one");
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&shaking).try_acquire_owned() else {
                        warn!(%from, limit = limits.handshakes, "too many peer handshakes at once; closing one");
                        continue;
                    };
                    let shake = (permit, source);
                    let (secret, handler, slots) = (secret.clone(), Arc::clone(&handler), Arc::clone(&slots));
                    connections.spawn(async move {
                        connection(stream, from, secret, handler, limits, shake, slots).await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(PeerServer { addr, task })
}

async fn connection(
    mut stream: TcpStream,
    from: SocketAddr,
    secret: Secret,
    handler: Arc<dyn PeerHandler>,
    limits: Limits,
    shake: (OwnedSemaphorePermit, SourceSlot),
    slots: Arc<Semaphore>,
) {
    let _ = stream.set_nodelay(true);
    let shaken = tokio::time::timeout(limits.handshake, auth::accept(&mut stream, &secret)).await;
    drop(shake);
    let keys = match shaken {
        Ok(Ok(keys)) => keys,
        Ok(Err(e)) => {
            warn!(%from, error = %e, "peer handshake failed; closing");
            return;
        }
        Err(_) => {
            warn!(%from, limit = ?limits.handshake, "peer handshake timed out; closing");
            return;
        }
    };
    let Ok(_slot) = slots.try_acquire_owned() else {
        warn!(%from, limit = limits.connections, "too many peer connections; closing one");
        return;
    };
    keepalive(&stream);
    debug!(%from, "peer connected");
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(limits.frame)
        .new_framed(RecordStream::new(stream, keys));
    let transport = serde_transport::new(framed, Bincode::default());
    BaseChannel::with_defaults(transport)
        .execute(
            Served {
                handler,
                room: limits.frame.saturating_sub(ENVELOPE),
            }
            .serve(),
        )
        .for_each_concurrent(limits.calls_per_connection, |call| call)
        .await;
    debug!(%from, "peer disconnected");
}

/// Handshakes in progress per source address.
#[derive(Clone, Default)]
struct Sources(Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>);

/// One handshake in progress from `ip`; dropping it ends it.
struct SourceSlot {
    sources: Sources,
    ip: std::net::IpAddr,
}

impl Sources {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, usize>> {
        // Counter updates only: a poisoned map is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a handshake from `ip`, if it has fewer than `limit`.
    fn enter(&self, ip: std::net::IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut map = self.map();
        let n = map.entry(ip).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.map();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Probes an idle connection after 10 s, every 5 s, 3 times: a peer that
/// vanished is noticed within about 25 s and its connection closed.
fn keepalive(stream: &TcpStream) {
    let probe = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&probe) {
        debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// Calls to peers over TCP: one connection per peer address, made on the
/// first call and reused until it breaks. Calls that find no connection
/// wait for one of them to make it (a peer admits few handshakes at once
/// from one address: fifty clients' first forwards each dialling were
/// refused past the eighth).
pub struct TcpTransport {
    secret: Secret,
    limits: Limits,
    clients: Mutex<HashMap<String, PeerClient>>,
    /// One dial at a time per address.
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TcpTransport {
    /// A transport that authenticates with `secret`.
    pub fn new(secret: Secret, limits: Limits) -> TcpTransport {
        TcpTransport {
            secret,
            limits,
            clients: Mutex::default(),
            dialing: Mutex::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerClient>> {
        // Inserts and removals only: a poisoned map is still whole.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to `addr`, made (and authenticated) by `deadline`
    /// if there is none.
    async fn client(&self, addr: &str, deadline: Instant) -> Result<PeerClient, TransportError> {
        if let Some(client) = self.clients().get(addr) {
            return Ok(client.clone());
        }
        let unreachable = |why: String| TransportError::Unreachable {
            addr: addr.to_owned(),
            why,
        };
        let dial = Arc::clone(
            self.dialing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(addr.to_owned())
                .or_default(),
        );
        let Ok(_dialing) = tokio::time::timeout_at(deadline, dial.lock()).await else {
            return Err(unreachable(
                "another call's connection attempt is still running".into(),
            ));
        };
        // Made by the call that dialled while this one waited.
        if let Some(client) = self.clients().get(addr) {
            return Ok(client.clone());
        }
        let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("connecting timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        keepalive(&stream);
        let keys = match tokio::time::timeout_at(deadline, auth::connect(&mut stream, &self.secret))
            .await
        {
            Ok(Ok(keys)) => keys,
            Ok(Err(Handshake::BadProof)) => {
                return Err(TransportError::Auth {
                    addr: addr.to_owned(),
                    why: Handshake::BadProof.to_string(),
                });
            }
            Ok(Err(e)) => return Err(unreachable(format!("handshake: {e}"))),
            Err(_) => return Err(unreachable("the handshake timed out".into())),
        };
        let framed = LengthDelimitedCodec::builder()
            .max_frame_length(self.limits.frame)
            .new_framed(RecordStream::new(stream, keys));
        let transport = serde_transport::new(framed, Bincode::default());
        let client = PeerClient::new(tarpc::client::Config::default(), transport).spawn();
        self.clients().insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    fn forget(&self, addr: &str) {
        self.clients().remove(addr);
    }
}

impl PeerTransport for TcpTransport {
    fn call(
        &self,
        addr: &str,
        service: Service,
        body: Vec<u8>,
        limit: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let room = self.limits.frame.saturating_sub(ENVELOPE);
            if body.len() > room {
                return Err(TransportError::TooLarge {
                    addr,
                    service,
                    len: body.len(),
                    limit: room,
                });
            }
            let deadline = Instant::now() + limit;
            let client = self.client(&addr, deadline).await?;
            let mut context = tarpc::context::current();
            context.deadline = deadline.into_std();
            match client.call(context, service, ByteBuf::from(body)).await {
                Ok(Ok(answer)) => Ok(answer.into_vec()),
                Ok(Err(why)) => Err(TransportError::Refused { addr, service, why }),
                Err(RpcError::DeadlineExceeded) => Err(TransportError::Timeout {
                    addr,
                    service,
                    limit,
                }),
                Err(e) => {
                    // The next call reconnects.
                    self.forget(&addr);
                    Err(TransportError::Lost {
                        addr,
                        service,
                        why: e.to_string(),
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as `ByteBuf` is the same bytes on the wire as the
    /// `Vec<u8>` peers of earlier builds send: they still understand
    /// each other.
    #[test]
    fn a_body_encodes_as_a_vec_of_bytes_did() {
        let body: Vec<u8> = (0..=255).chain(0..17).collect();
        let old = bincode::serialize(&(Service::Forward, body.clone())).unwrap();
        let new = bincode::serialize(&(Service::Forward, ByteBuf::from(body.clone()))).unwrap();
        assert_eq!(old, new);
        let back: (Service, ByteBuf) = bincode::deserialize(&old).unwrap();
        assert_eq!(back.1.into_vec(), body);
    }
}
