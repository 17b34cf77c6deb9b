//! Calls between ringkv node processes.
//!
//! One trait, [`PeerTransport`]: call the peer at an address with a
//! [`Service`] tag and a body of bytes, within a time limit, and get bytes
//! back. The layer above serialises its own messages (the Raft RPCs of
//! `ringkv-meta`, later client forwarding and range moves), so this crate
//! knows nothing of them. A node answers with a [`PeerHandler`].
//!
//! Two implementations, so that the same node code runs over either:
//! - [`TcpTransport`] and [`serve`]: tarpc over TCP, one reused connection
//!   per peer, length-delimited bincode frames with a size limit, per-call
//!   deadlines (carried to the server, which drops late work), and a
//!   handshake that authenticates both ends with the cluster secret before
//!   any frame is read ([`Secret`], an HMAC-SHA256 challenge-response),
//!   then every byte in records with a MAC keyed from that handshake
//!   (`records.rs`).
//! - [`MemTransport`]: peers in one process, the same frame limit and
//!   deadlines, links that tests can cut, and seeded [`Faults`] (lost
//!   requests and answers, delays that reorder) for simulations.
//!
//! Why tarpc rather than tonic: our messages are serde types already
//! (openraft's RPCs are), and tarpc needs no schema or build step; the
//! design is in `docs/DISTRIBUTED.md`, section 7.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod auth;
mod mem;
mod records;
mod tcp;

pub use auth::{Secret, SecretError, check_secret};
pub use mem::{Faults, MemTransport};
pub use tcp::{Limits, PeerServer, TcpTransport, serve};

/// What a call is for; the receiving node's [`PeerHandler`] routes on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Service {
    /// Raft `AppendEntries`.
    RaftAppend,
    /// Raft `Vote`.
    RaftVote,
    /// Raft `InstallSnapshot` (one chunk).
    RaftSnapshot,
    /// A metadata command for the Raft leader, from a member or a joining
    /// node.
    Propose,
    /// A client request for the node that serves its keys.
    Forward,
    /// A page of a moving range, read from its source.
    RangeScan,
    /// The keys of moving ranges written since their copy began, read
    /// from their fenced source.
    RangeShip,
    /// A range move's target is told to pull ranges (by the coordinator).
    RangePull,
    /// A node's view of the cluster (`ringkv cluster status`).
    Status,
    /// The metadata state a node serves by: a node removed from the
    /// cluster no longer receives the log, and refreshes its view this way
    /// to keep forwarding requests.
    View,
    /// The keys a node serves in some token intervals (`SCAN` and `KEYS`
    /// on another node read the whole key space with these).
    Keys,
    /// How many keys a node serves (`DBSIZE` on another node).
    Count,
    /// A node asks the Raft leader to renew its lease on serving.
    Lease,
}

/// Why a call failed. Whether the peer acted on it is unknown unless the
/// variant says so: callers retry only what is safe to repeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No connection could be made (nothing was sent).
    #[error("cannot reach the peer at {addr}: {why}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// The OS's or the handshake's reason.
        why: String,
    },
    /// The peer did not prove it holds the cluster secret, or refused ours
    /// (nothing was sent).
    #[error(
        "the peer at {addr} failed the handshake ({why}): check that every node has the same --cluster-secret"
    )]
    Auth {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The request is larger than the frame limit (nothing was sent).
    #[error("a {service:?} request of {len} bytes to {addr} is over the {limit}-byte frame limit")]
    TooLarge {
        /// The peer's address.
        addr: String,
        /// The call.
        service: Service,
        /// The request's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// No answer within the time limit (the peer may have acted).
    #[error("the peer at {addr} did not answer a {service:?} call within {limit:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// The call.
        service: Service,
        /// The time limit.
        limit: Duration,
    },
    /// The connection broke during the call (the peer may have acted).
    #[error("the connection to {addr} broke during a {service:?} call: {why}")]
    Lost {
        /// The peer's address.
        addr: String,
        /// The call.
        service: Service,
        /// What the transport said.
        why: String,
    },
    /// The peer's handler refused the call, saying why.
    #[error("the peer at {addr} refused a {service:?} call: {why}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// The call.
        service: Service,
        /// The handler's message.
        why: String,
    },
}

/// A boxed future, as the traits return (they are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a node does with the calls its peers make.
pub trait PeerHandler: Send + Sync + 'static {
    /// Answers one call. An `Err` reaches the caller as
    /// [`TransportError::Refused`] with its message.
    fn handle(
        &self,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// Calls to peers.
pub trait PeerTransport: Send + Sync + 'static {
    /// Sends `body` to the peer at `addr` for `service` and waits for its
    /// answer, at most `limit`.
    fn call(
        &self,
        addr: &str,
        service: Service,
        body: Vec<u8>,
        limit: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
}

impl<T: PeerTransport + ?Sized> PeerTransport for Arc<T> {
    fn call(
        &self,
        addr: &str,
        service: Service,
        body: Vec<u8>,
        limit: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        (**self).call(addr, service, body, limit)
    }
}

/// The default largest frame: 16 MiB, room for a Raft snapshot chunk or a
/// batch of a range move, and a bound on what one peer can make a node
/// buffer.
pub const DEFAULT_FRAME_LIMIT: usize = 16 << 20;
