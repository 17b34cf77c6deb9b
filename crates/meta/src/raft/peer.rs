//! Raft over the peer transport (`ringkv-peer`): [`PeerNetwork`] sends a
//! node's Raft RPCs, [`RaftService`] answers them. Messages are JSON in
//! the transport's bodies; the same code runs over TCP and in memory.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use ringkv_peer::{BoxFuture, PeerHandler, PeerTransport, Service, TransportError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MetaRaft, TypeConfig};

type NodeId = u64;

/// The [`RaftNetworkFactory`] of one node: its Raft calls go through
/// `transport` to each target's `BasicNode::addr` (its peer address).
#[derive(Clone)]
pub struct PeerNetwork {
    transport: Arc<dyn PeerTransport>,
    /// The node's own Raft id (for errors and logs).
    from: NodeId,
}

impl PeerNetwork {
    /// The network of Raft node `from`.
    pub fn new(transport: Arc<dyn PeerTransport>, from: NodeId) -> PeerNetwork {
        PeerNetwork { transport, from }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            transport: Arc::clone(&self.transport),
            from: self.from,
            target,
            addr: node.addr.clone(),
        }
    }
}

/// Raft calls from one node to one peer.
pub struct PeerConnection {
    transport: Arc<dyn PeerTransport>,
    from: NodeId,
    target: NodeId,
    addr: String,
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        service: Service,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(request).expect("Raft RPCs serialise");
        let limit = option.hard_ttl();
        let answer = self
            .transport
            .call(&self.addr, service, body, limit)
            .await
            .map_err(|e| match e {
                // A peer that refuses the call (its Raft has not started
                // yet) is as good as unreachable: openraft backs off from
                // it instead of retrying at once, which spins.
                TransportError::Unreachable { .. }
                | TransportError::Auth { .. }
                | TransportError::Refused { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                    action: match service {
                        Service::RaftVote => openraft::network::RPCTypes::Vote,
                        Service::RaftSnapshot => openraft::network::RPCTypes::InstallSnapshot,
                        _ => openraft::network::RPCTypes::AppendEntries,
                    },
                    id: self.from,
                    target: self.target,
                    timeout: limit,
                }),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        let answer: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&answer)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Service::RaftAppend, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Service::RaftSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Service::RaftVote, &rpc, &option).await
    }

    /// The pauses after each unreachable answer, until one call succeeds:
    /// 25 ms doubling to openraft's constant 500 ms. A joining node learns
    /// its Raft id from the join's answer and only then starts its Raft,
    /// while the leader adds it as a learner at once: its first calls were
    /// refused, and with 500 ms from the first refusal a join often spent
    /// half a second before its copy began (`docs/BENCHMARKS.md`, node
    /// section 12).
    fn backoff(&self) -> Backoff {
        Backoff::new(backoff_pauses())
    }
}

/// [`PeerConnection`]'s pauses after unreachable answers.
fn backoff_pauses() -> impl Iterator<Item = Duration> + Send + 'static {
    (0u32..).map(|i| Duration::from_millis((25u64 << i.min(5)).min(500)))
}

/// Answers the Raft calls of a node's peers with its [`MetaRaft`].
pub struct RaftService {
    raft: MetaRaft,
}

impl RaftService {
    /// The handler of `raft`'s peer calls.
    pub fn new(raft: MetaRaft) -> Arc<RaftService> {
        Arc::new(RaftService { raft })
    }
}

fn decode<T: DeserializeOwned>(service: Service, body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("a {service:?} request does not decode: {e}"))
}

fn encode<T: Serialize>(answer: &T) -> Result<Vec<u8>, String> {
    Ok(serde_json::to_vec(answer).expect("Raft answers serialise"))
}

impl PeerHandler for RaftService {
    fn handle(
        &self,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            match service {
                Service::RaftAppend => {
                    let rpc: AppendEntriesRequest<TypeConfig> = decode(service, &body)?;
                    encode(&raft.append_entries(rpc).await)
                }
                Service::RaftVote => {
                    let rpc: VoteRequest<NodeId> = decode(service, &body)?;
                    encode(&raft.vote(rpc).await)
                }
                Service::RaftSnapshot => {
                    let rpc: InstallSnapshotRequest<TypeConfig> = decode(service, &body)?;
                    encode(&raft.install_snapshot(rpc).await)
                }
                other => Err(format!("this node does not serve {other:?} calls")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_short_and_settles_at_half_a_second() {
        let pauses: Vec<u64> = backoff_pauses()
            .take(8)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [25, 50, 100, 200, 400, 500, 500, 500]);
    }
}
