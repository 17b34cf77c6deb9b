//! An in-memory network for a metadata group in one process: every RPC is
//! serialised and deserialised (as a wire would), and links can be cut to
//! partition the group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MetaRaft, TypeConfig};

type NodeId = u64;

/// The Raft instances of one group, and which links are cut. Clones share
/// them.
#[derive(Clone, Default)]
pub struct MemRouter {
    /// A std mutex, not a tokio one: held only to look a handle up or to
    /// change the links, never across an RPC.
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, MetaRaft>,
    /// Cut links, each as `(lower id, higher id)`: both directions.
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// Why an RPC did not get through.
#[derive(Debug, thiserror::Error)]
#[error("no route from {from} to {to}: {why}")]
struct NoRoute {
    from: NodeId,
    to: NodeId,
    why: &'static str,
}

fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl MemRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `raft` reachable as `id`.
    pub fn add(&self, id: NodeId, raft: MetaRaft) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes `id` unreachable, as a crashed process is; returns its handle.
    pub fn remove(&self, id: NodeId) -> Option<MetaRaft> {
        self.lock().nodes.remove(&id)
    }

    /// The network factory for the Raft instance `from`.
    pub fn network(&self, from: NodeId) -> MemNetwork {
        MemNetwork {
            router: self.clone(),
            from,
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.lock().cut.insert(link(a, b));
    }

    /// Cuts every link between a node of `side` and a node outside it.
    pub fn partition(&self, side: &[NodeId]) {
        let mut inner = self.lock();
        let others: Vec<NodeId> = inner
            .nodes
            .keys()
            .copied()
            .filter(|id| !side.contains(id))
            .collect();
        for &a in side {
            for &b in &others {
                inner.cut.insert(link(a, b));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<MetaRaft, NoRoute> {
        let inner = self.lock();
        if inner.cut.contains(&link(from, to)) {
            return Err(NoRoute {
                from,
                to,
                why: "the link is cut",
            });
        }
        inner.nodes.get(&to).cloned().ok_or(NoRoute {
            from,
            to,
            why: "the node is not running",
        })
    }
}

/// The [`RaftNetworkFactory`] of one Raft instance.
#[derive(Clone)]
pub struct MemNetwork {
    router: MemRouter,
    from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for MemNetwork {
    type Network = MemConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> MemConnection {
        MemConnection {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

/// A connection from one Raft instance to another.
pub struct MemConnection {
    router: MemRouter,
    from: NodeId,
    to: NodeId,
}

/// A value after a trip through JSON: what the other end would decode.
fn wire<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let bytes = serde_json::to_vec(value).expect("RPC messages serialise");
    serde_json::from_slice(&bytes).expect("RPC messages deserialise")
}

impl MemConnection {
    /// Sends `request` through the wire, calls `handle` on the target, and
    /// brings the answer back through the wire. A link cut before the call
    /// or during it loses the request or the answer.
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        request: Req,
        handle: F,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize + DeserializeOwned,
        Resp: Serialize + DeserializeOwned,
        E: std::error::Error + Serialize + DeserializeOwned,
        F: FnOnce(MetaRaft, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let unreachable = |e: NoRoute| RPCError::Unreachable(Unreachable::new(&e));
        let target = self.router.route(self.from, self.to).map_err(unreachable)?;
        let answer = handle(target, wire(&request)).await;
        self.router.route(self.from, self.to).map_err(unreachable)?;
        match wire(&answer) {
            Ok(resp) => Ok(resp),
            Err(e) => Err(RPCError::RemoteError(RemoteError::new(self.to, e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for MemConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(
            rpc,
            |raft, rpc| async move { raft.append_entries(rpc).await },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(
            rpc,
            |raft, rpc| async move { raft.install_snapshot(rpc).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(rpc, |raft, rpc| async move { raft.vote(rpc).await })
            .await
    }
}
