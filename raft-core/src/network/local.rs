//! An in-process transport: nodes in one process call each other's Raft
//! handles directly, with no sockets and no encoding.
//!
//! For fast tests, for embedders' own tests, and for benchmarks that want to
//! measure Raft rather than the network. A test can cut a node off
//! ([`LocalRouter::isolate`]) or a single direction of a link
//! ([`LocalRouter::block`]) to simulate partitions: the caller then sees the
//! peer as unreachable, exactly as a dropped TCP connection would look. It
//! can also let a follower fall behind while it keeps answering heartbeats
//! ([`LocalRouter::stall_replication`]), as one with a slow disk would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::rpc::{Inbox, RpcRequest, RpcResponse};
use super::transport::{Link, LinkError, Transport};
use crate::types::{Node, NodeId};

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<NodeId, Arc<Inbox>>,
    isolated: BTreeSet<NodeId>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    stalled: BTreeSet<(NodeId, NodeId)>,
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

    /// Makes the node whose inbox is `inbox` reachable as node `id`.
    pub fn register(&self, id: NodeId, inbox: Inbox) {
        self.lock().nodes.insert(id, Arc::new(inbox));
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

    /// Drops the AppendEntries requests from `from` to `to` that carry log
    /// entries, and lets everything else through, heartbeats (AppendEntries
    /// without entries) included: `to` keeps answering but falls behind.
    pub fn stall_replication(&self, from: NodeId, to: NodeId) {
        self.lock().stalled.insert((from, to));
    }

    /// Restores all links.
    pub fn heal(&self) {
        let mut r = self.lock();
        r.isolated.clear();
        r.blocked.clear();
        r.stalled.clear();
    }

    /// The transport of node `from`.
    pub fn transport(&self, from: NodeId) -> LocalTransport {
        LocalTransport { router: self.clone(), from }
    }

    fn route(&self, from: NodeId, to: NodeId, request: Option<&RpcRequest>) -> Result<Arc<Inbox>, LinkError> {
        let r = self.lock();
        let stalled = r.stalled.contains(&(from, to))
            && matches!(request, Some(RpcRequest::AppendEntries(req)) if !req.entries.is_empty());
        let cut = stalled
            || r.isolated.contains(&from)
            || r.isolated.contains(&to)
            || r.blocked.contains(&(from, to));
        match r.nodes.get(&to) {
            Some(inbox) if !cut => Ok(inbox.clone()),
            _ => Err(LinkError::Unreachable(format!("node {to} is not reachable from node {from}").into())),
        }
    }
}

/// The [`Transport`] of one node on a [`LocalRouter`].
pub struct LocalTransport {
    router: LocalRouter,
    from: NodeId,
}

impl Transport for LocalTransport {
    type Link = LocalLink;

    fn link(&self, target: NodeId, _node: &Node) -> LocalLink {
        LocalLink { router: self.router.clone(), from: self.from, target }
    }
}

/// One node's link to one peer on a [`LocalRouter`].
pub struct LocalLink {
    router: LocalRouter,
    from: NodeId,
    target: NodeId,
}

impl Link for LocalLink {
    async fn call(&mut self, request: &RpcRequest, timeout: Duration) -> Result<RpcResponse, LinkError> {
        let peer = self.router.route(self.from, self.target, Some(request))?;
        let answer = tokio::time::timeout(timeout, peer.serve(self.from, request.clone()))
            .await
            .map_err(|_| LinkError::Timeout(timeout))?;
        // The reply crosses the same link back: a one-way block towards us
        // loses it, as it would on a real network.
        self.router.route(self.target, self.from, None)?;
        Ok(answer)
    }
}
