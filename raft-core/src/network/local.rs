//! An in-process transport: nodes in one process call each other's Raft
//! handles directly, with no sockets and no encoding.
//!
//! For fast tests, for embedders' own tests, and for benchmarks that want to
//! measure Raft rather than the network. A test can cut a node off
//! ([`LocalRouter::isolate`]) or a single direction of a link
//! ([`LocalRouter::block`]) to simulate partitions: the caller then sees the
//! peer as unreachable, exactly as a dropped TCP connection would look.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::types::{Node, NodeId, Raft, TypeConfig};

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
    blocked: BTreeSet<(NodeId, NodeId)>,
}

/// Connects the nodes of one process. Cheap to clone: clones share routes.
#[derive(Clone, Default)]
pub struct LocalRouter {
    routes: Arc<Mutex<Routes>>,
}

impl LocalRouter {
    /// A router with no nodes.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `raft` reachable as node `id`.
    pub fn register(&self, id: NodeId, raft: Raft) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable, as if its process had died.
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Drops all traffic to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Drops traffic sent by `from` to `to` (one direction only).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Restores all links.
    pub fn heal(&self) {
        let mut r = self.lock();
        r.isolated.clear();
        r.blocked.clear();
    }

    /// The network factory for node `from`, to pass to openraft.
    pub fn network(&self, from: NodeId) -> LocalNetwork {
        LocalNetwork { router: self.clone(), from }
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<Raft, Unreachable> {
        let r = self.lock();
        let cut = r.isolated.contains(&from) || r.isolated.contains(&to) || r.blocked.contains(&(from, to));
        match r.nodes.get(&to) {
            Some(raft) if !cut => Ok(raft.clone()),
            _ => Err(Unreachable::new(&std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("node {to} is not reachable from node {from}"),
            ))),
        }
    }
}

/// The [`RaftNetworkFactory`] of one node on a [`LocalRouter`].
pub struct LocalNetwork {
    router: LocalRouter,
    from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for LocalNetwork {
    type Network = LocalConnection;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> LocalConnection {
        LocalConnection { router: self.router.clone(), from: self.from, target }
    }
}

/// One node's link to one peer on a [`LocalRouter`].
pub struct LocalConnection {
    router: LocalRouter,
    from: NodeId,
    target: NodeId,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl LocalConnection {
    fn peer(&self) -> Result<Raft, Unreachable> {
        self.router.route(self.from, self.target)
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for LocalConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let peer = self.peer()?;
        let resp = peer.append_entries(rpc).await.map_err(|e| self.remote(e))?;
        // The reply crosses the same link back: a one-way block towards us
        // loses it, as it would on a real network.
        self.router.route(self.target, self.from)?;
        Ok(resp)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let peer = self.peer()?;
        let resp = peer.install_snapshot(rpc).await.map_err(|e| self.remote(e))?;
        self.router.route(self.target, self.from)?;
        Ok(resp)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let peer = self.peer()?;
        let resp = peer.vote(rpc).await.map_err(|e| self.remote(e))?;
        self.router.route(self.target, self.from)?;
        Ok(resp)
    }
}
