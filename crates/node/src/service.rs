//! The calls a node answers for its peers, and the proposals it makes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use ringkv_meta::{Command, Response};
use ringkv_peer::{BoxFuture, PeerHandler, PeerTransport, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Inner;
use crate::wire::{Forward, Propose, Proposed, Status};

/// A node's [`PeerHandler`].
pub(crate) struct NodeService {
    inner: Arc<Inner>,
}

impl NodeService {
    pub fn new(inner: Arc<Inner>) -> Arc<NodeService> {
        Arc::new(NodeService { inner })
    }
}

/// Metadata messages (proposals, status) are JSON: the commands use
/// serde's tagged enums, which a binary format cannot read back.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the request does not decode: {e}"))
}

pub(crate) fn encode<T: Serialize>(answer: &T) -> Vec<u8> {
    serde_json::to_vec(answer).expect("plain data serialises")
}

/// Data messages (forwarded requests and replies, pages and shipments of
/// range moves) are bincode: JSON writes bytes as arrays of numbers, about
/// four times their size, which shrank the largest value a node could
/// forward to a quarter of the frame limit.
pub(crate) fn decode_data<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    bincode::deserialize(body).map_err(|e| format!("the message does not decode: {e}"))
}

pub(crate) fn encode_data<T: Serialize>(message: &T) -> Vec<u8> {
    bincode::serialize(message).expect("plain data serialises")
}

impl PeerHandler for NodeService {
    fn handle(
        &self,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            match service {
                Service::RaftAppend | Service::RaftVote | Service::RaftSnapshot => {
                    match inner.raft_service.get() {
                        Some(raft) => raft.handle(service, body).await,
                        None => Err("this node's Raft has not started yet".into()),
                    }
                }
                Service::Propose => {
                    let request: Propose = decode(&body)?;
                    let raft = inner
                        .raft
                        .get()
                        .ok_or("this node's Raft has not started yet")?;
                    Ok(encode(&propose_here(raft, request.command).await?))
                }
                Service::Forward => {
                    let forward: Forward = decode_data(&body)?;
                    let executor = inner.executor.get().ok_or("this node is not serving yet")?;
                    Ok(encode_data(&crate::batch::serve(executor, forward).await))
                }
                Service::RangeScan => {
                    let page = crate::source::scan(&inner, decode_data(&body)?).await?;
                    Ok(encode_data(&page))
                }
                Service::RangeShip => {
                    let shipment = crate::source::ship(&inner, decode_data(&body)?).await?;
                    Ok(encode_data(&shipment))
                }
                Service::RangePull => {
                    let answer = crate::moves::pull_call(&inner, decode_data(&body)?).await?;
                    Ok(encode_data(&answer))
                }
                Service::Keys => {
                    let page = crate::keyspace::serve_keys(&inner, decode_data(&body)?).await?;
                    Ok(encode_data(&page))
                }
                Service::Count => {
                    let counted = crate::keyspace::serve_count(&inner, decode_data(&body)?).await?;
                    Ok(encode_data(&counted))
                }
                Service::Lease => {
                    let id: String = decode_data(&body)?;
                    Ok(encode_data(&crate::lease::answer(&inner, &id)))
                }
                Service::Status => Ok(encode(&status_of(&inner))),
                Service::View => Ok(encode(&*inner.view())),
                other => Err(format!("this node does not serve {other:?} calls")),
            }
        })
    }
}

/// This node's status.
pub(crate) fn status_of(inner: &Inner) -> Status {
    let (applied, last_log, leader) = match inner.raft.get() {
        Some(raft) => {
            let m = raft.metrics().borrow().clone();
            (
                m.last_applied.map_or(0, |l| l.index),
                m.last_log_index.unwrap_or(0),
                m.state == openraft::ServerState::Leader,
            )
        }
        None => (0, 0, false),
    };
    Status {
        id: inner.me.clone(),
        epoch: inner.view().epoch,
        keys: inner.cluster.dbsize() as u64,
        applied,
        last_log,
        leader,
        ready: inner.ready.load(Ordering::Acquire),
    }
}

/// Asks the node at peer address `addr` for its status.
pub(crate) async fn status(transport: &dyn PeerTransport, addr: &str) -> Result<Status, String> {
    let body = transport
        .call(addr, Service::Status, Vec::new(), Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    decode(&body)
}

/// Asks the node at peer address `addr` for the state it serves by.
pub(crate) async fn view(
    transport: &dyn PeerTransport,
    addr: &str,
) -> Result<ringkv_meta::MetaState, String> {
    let body = transport
        .call(addr, Service::View, Vec::new(), Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    decode(&body)
}

/// Proposes `command` to this node's Raft: committed and applied if it is
/// the leader, otherwise the leader's address.
pub(crate) async fn propose_here(
    raft: &ringkv_meta::raft::MetaRaft,
    command: Command,
) -> Result<Proposed, String> {
    match raft.client_write(command).await {
        Ok(answer) => Ok(Proposed::Applied(answer.data)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
            Ok(Proposed::NotLeader(to.leader_node.map(|n| n.addr)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// How long a proposal keeps looking for a leader.
const PROPOSE_FOR: Duration = Duration::from_secs(15);

/// The limit of one proposal's call to the leader: a commit takes
/// milliseconds, so a lost request or answer is retried within
/// [`PROPOSE_FOR`] (a retried command acts once).
const PROPOSE_CALL_LIMIT: Duration = Duration::from_secs(4);

/// Proposes `command` through this node: here if it leads, else at the
/// leader, following changes of leadership, for at most 15 s. A command
/// applied twice (a retry after a lost answer) acts once: the second
/// application is rejected by its precondition.
pub(crate) async fn propose(inner: &Inner, command: Command) -> Result<Response, String> {
    let raft = inner
        .raft
        .get()
        .ok_or("this node's Raft has not started yet")?;
    let deadline = tokio::time::Instant::now() + PROPOSE_FOR;
    let mut last = String::from("no leader");
    while tokio::time::Instant::now() < deadline {
        match propose_here(raft, command.clone()).await {
            Ok(Proposed::Applied(answer)) => return Ok(answer),
            Ok(Proposed::NotLeader(Some(addr))) => {
                match call_propose(&*inner.transport, &addr, &command).await {
                    Ok(Proposed::Applied(answer)) => return Ok(answer),
                    Ok(Proposed::NotLeader(_)) => last = format!("{addr} is not the leader"),
                    Err(e) => last = e,
                }
            }
            Ok(Proposed::NotLeader(None)) => last = "no leader is known".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the proposal was not committed within {PROPOSE_FOR:?}: {last}"
    ))
}

async fn call_propose(
    transport: &dyn PeerTransport,
    addr: &str,
    command: &Command,
) -> Result<Proposed, String> {
    let body = encode(&Propose {
        command: command.clone(),
    });
    let answer = transport
        .call(addr, Service::Propose, body, PROPOSE_CALL_LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    decode(&answer)
}

/// Proposes `command` through the node at peer address `seed` (a node
/// joining, which has no Raft yet), following the leader.
pub(crate) async fn propose_via(
    transport: &dyn PeerTransport,
    seed: &str,
    command: Command,
) -> Result<Response, String> {
    let deadline = tokio::time::Instant::now() + PROPOSE_FOR;
    let mut addr = seed.to_string();
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match call_propose(transport, &addr, &command).await {
            Ok(Proposed::Applied(answer)) => return Ok(answer),
            Ok(Proposed::NotLeader(Some(leader))) => {
                addr = leader;
                continue;
            }
            Ok(Proposed::NotLeader(None)) => last = format!("{addr} knows no leader"),
            Err(e) => last = e,
        }
        addr = seed.to_string();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("could not join through {seed}: {last}"))
}
