//! Raft RPCs carried as Maelstrom messages.
//!
//! openraft asks the application for a network ([`RaftNetworkFactory`]) that
//! delivers AppendEntries, Vote and InstallSnapshot to a peer and brings
//! back its answer. Under Maelstrom the only network is Maelstrom's own: a
//! node may talk to other nodes only by writing messages to stdout, which
//! Maelstrom delivers (with latency, or not at all during a partition) to
//! the peer's stdin. So each RPC becomes one `raft_rpc` message and its
//! answer one `raft_rpc_reply` message (see [`crate::protocol`]):
//!
//! ```text
//! leader n0                          Maelstrom                     follower n1
//!  append_entries(req) ─▶ {"type":"raft_rpc","rpc_id":7,"data":…} ─▶ raft().append_entries(req)
//!  returns resp ◀──── {"type":"raft_rpc_reply","rpc_id":7,"data":…} ◀─ resp
//! ```
//!
//! The request and the response are encoded with raft-core's binary codec
//! ([`raft_core::codec`], the same encoding as its TCP frames) and then
//! base64, because a Maelstrom body is JSON.
//!
//! # Timeouts, and what openraft is told
//!
//! Each RPC waits for its answer at most `option.hard_ttl()`, the deadline
//! openraft itself enforces: the heartbeat interval for AppendEntries, the
//! minimum election timeout for Vote, the snapshot timeout for
//! InstallSnapshot. The pending entry is removed on the answer, on the
//! timeout, or when openraft drops the call first ([`crate::rpc`]), so a
//! partition that swallows every message grows nothing.
//!
//! | what happened | error | what openraft does |
//! |---|---|---|
//! | no answer by `hard_ttl` (dropped by a partition, or slow) | `Timeout` | retries at the next heartbeat or election round |
//! | the peer refused: not initialized by Maelstrom yet | `Unreachable` | backs off ([`MaelstromConnection`]: 50 ms doubling to 1 s) |
//! | this node can no longer send (stdout closed) | `Unreachable` | backs off |
//! | the answer does not decode, or is of another kind | `Network` | retries |
//! | the peer's Raft returned an error | `RemoteError` | reports it |
//!
//! A message that is lost and a message that is slow look the same to a
//! Maelstrom node, so silence is a `Timeout`, never `Unreachable`: only a
//! peer that answers "I cannot serve you" is known to be unreachable.
//!
//! # What this transport does not do
//!
//! It does not split a large AppendEntries: a line is bounded only by the
//! receiving node's input limit ([`crate::input::MAX_LINE_BYTES`]), far
//! above what `max_entries_per_append` small lin-kv commands take.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use raft_core::network::frame::{RpcRequest, RpcResponse};
use raft_core::openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use raft_core::openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use raft_core::openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raft_core::types::TypeConfig;
use raft_core::{codec, Node, NodeId};

use crate::outbox::Outbox;
use crate::protocol::{Envelope, PeerMessage};
use crate::rpc::Calls;

/// The first wait after a peer refused an RPC (50 ms), doubling up to
/// [`BACKOFF_MAX`]. Refusals only happen while Maelstrom is still sending
/// `init` to the nodes, which takes milliseconds.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between RPCs to a peer that refuses them (1 s).
pub const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// The base64 flavour of `data` fields.
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why the transport could not deliver an RPC or understand its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// This node's outbox is closed: the process is shutting down.
    #[error("cannot send to {peer}: outbox closed")]
    OutboxClosed {
        /// The peer.
        peer: String,
    },
    /// The peer refused the RPC.
    #[error("{peer} refused the RPC: {reason}")]
    Refused {
        /// The peer.
        peer: String,
        /// The peer's reason.
        reason: String,
    },
    /// The answer could not be decoded, or answered another kind of RPC.
    #[error("bad answer from {peer}: {reason}")]
    BadAnswer {
        /// The peer.
        peer: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Encodes an RPC request or response for a `data` field.
pub fn encode_data<T: serde::Serialize>(value: &T) -> String {
    B64.encode(codec::encode(value))
}

/// Decodes a `data` field. Untrusted input: errors, never panics, and
/// raft-core's codec bounds what it allocates.
pub fn decode_data<T: serde::de::DeserializeOwned>(data: &str) -> Result<T, String> {
    let bytes = B64.decode(data).map_err(|e| format!("not base64: {e}"))?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}

/// The name of an RPC kind, as put in `raft_rpc`'s `rpc` field.
pub fn rpc_name(rpc: &RpcRequest) -> &'static str {
    match rpc.rpc_type() {
        RPCTypes::AppendEntries => "AppendEntries",
        RPCTypes::Vote => "Vote",
        RPCTypes::InstallSnapshot => "InstallSnapshot",
    }
}

/// The network factory of one node: creates a [`MaelstromConnection`] per
/// peer. Give it to [`raft_core::RaftNode::start`].
pub struct MaelstromNetwork {
    me: NodeId,
    my_name: String,
    outbox: Outbox,
    calls: Arc<Calls>,
}

impl MaelstromNetwork {
    /// The transport of node `me` (Maelstrom name `my_name`), sending through
    /// `outbox` and waiting on `calls`.
    pub fn new(me: NodeId, my_name: impl Into<String>, outbox: Outbox, calls: Arc<Calls>) -> Self {
        MaelstromNetwork { me, my_name: my_name.into(), outbox, calls }
    }
}

impl RaftNetworkFactory<TypeConfig> for MaelstromNetwork {
    type Network = MaelstromConnection;

    /// A client for `target`, whose Maelstrom name is `node.raft_addr`
    /// (see [`crate::ids`]). Sends nothing until the first RPC.
    async fn new_client(&mut self, target: NodeId, node: &Node) -> MaelstromConnection {
        MaelstromConnection {
            me: self.me,
            my_name: self.my_name.clone(),
            target,
            peer: node.raft_addr.clone(),
            outbox: self.outbox.clone(),
            calls: self.calls.clone(),
        }
    }
}

/// RPCs from this node to one peer. See the [module docs](self).
pub struct MaelstromConnection {
    me: NodeId,
    my_name: String,
    target: NodeId,
    peer: String,
    outbox: Outbox,
    calls: Arc<Calls>,
}

impl MaelstromConnection {
    /// Sends one RPC and waits for the peer's answer until `hard_ttl`.
    async fn call<E: std::error::Error>(
        &mut self,
        rpc: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, RPCError<NodeId, Node, E>> {
        let action = rpc.rpc_type();
        let timeout = option.hard_ttl();
        let call = self.calls.start(&self.peer);
        let body = PeerMessage::RaftRpc {
            rpc_id: call.id(),
            rpc: rpc_name(&rpc).to_string(),
            data: encode_data(&rpc),
        };
        let envelope = Envelope { src: self.my_name.clone(), dest: self.peer.clone(), body: body.to_body() };
        if self.outbox.send(envelope).await.is_err() {
            let e = TransportError::OutboxClosed { peer: self.peer.clone() };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let answer = match call.wait(timeout).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::debug!(node_id = self.me, target = self.target, rpc = %action, ?timeout, "Raft RPC timed out");
                return Err(RPCError::Timeout(Timeout { action, id: self.me, target: self.target, timeout }));
            }
        };
        match answer {
            PeerMessage::RaftRpcReply { data, .. } => match decode_data::<RpcResponse>(&data) {
                Ok(resp) if resp.rpc_type() == action => Ok(resp),
                Ok(resp) => Err(self.bad_answer(format!("answered {} to {action}", resp.rpc_type()))),
                Err(reason) => Err(self.bad_answer(reason)),
            },
            PeerMessage::RaftRpcRefused { reason, .. } => {
                let e = TransportError::Refused { peer: self.peer.clone(), reason };
                tracing::debug!(node_id = self.me, target = self.target, error = %e, "Raft RPC refused");
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            other => Err(self.bad_answer(format!("unexpected message {other:?}"))),
        }
    }

    fn bad_answer<E: std::error::Error>(&self, reason: String) -> RPCError<NodeId, Node, E> {
        let e = TransportError::BadAnswer { peer: self.peer.clone(), reason };
        tracing::warn!(node_id = self.me, target = self.target, error = %e, "Raft RPC failed");
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, Node, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

type RpcResult<T, E = raft_core::openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for MaelstromConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(RpcRequest::AppendEntries(rpc), &option).await? {
            RpcResponse::AppendEntries(result) => result.map_err(|e| self.remote(e)),
            _ => Err(self.bad_answer("answer of another kind".into())),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(RpcRequest::InstallSnapshot(rpc), &option).await? {
            RpcResponse::InstallSnapshot(result) => result.map_err(|e| self.remote(e)),
            _ => Err(self.bad_answer("answer of another kind".into())),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(RpcRequest::Vote(rpc), &option).await? {
            RpcResponse::Vote(result) => result.map_err(|e| self.remote(e)),
            _ => Err(self.bad_answer("answer of another kind".into())),
        }
    }

    /// Waits [`BACKOFF_MIN`] after the first refusal, doubling up to
    /// [`BACKOFF_MAX`]; openraft drops the backoff after the next success.
    fn backoff(&self) -> Backoff {
        raft_core::network::doubling_backoff(BACKOFF_MIN, BACKOFF_MAX)
    }
}

/// Serves one incoming Raft RPC on `raft` and returns the answer to send.
pub async fn serve(raft: &raft_core::types::Raft, rpc_id: u64, data: &str) -> PeerMessage {
    let request = match decode_data::<RpcRequest>(data) {
        Ok(request) => request,
        Err(reason) => {
            return PeerMessage::RaftRpcRefused { rpc_id, reason: format!("undecodable request: {reason}") }
        }
    };
    let response = request.serve(raft).await;
    PeerMessage::RaftRpcReply { rpc_id, data: encode_data(&response) }
}

#[cfg(test)]
mod tests {
    use raft_core::openraft::Vote;

    use super::*;

    #[test]
    fn data_round_trips_and_garbage_is_an_error() {
        let rpc = RpcRequest::Vote(VoteRequest { vote: Vote::new(3, 2), last_log_id: None });
        let back: RpcRequest = decode_data(&encode_data(&rpc)).unwrap();
        assert_eq!(rpc_name(&back), "Vote");
        assert!(decode_data::<RpcRequest>("!!!").is_err());
        assert!(decode_data::<RpcRequest>(&B64.encode([0xFFu8; 16])).is_err());
    }

    fn connection(calls: &Arc<Calls>) -> (MaelstromConnection, tokio::sync::mpsc::Receiver<Envelope>) {
        let (outbox, rx) = Outbox::channel();
        let conn = MaelstromConnection {
            me: 1,
            my_name: "n0".into(),
            target: 2,
            peer: "n1".into(),
            outbox,
            calls: calls.clone(),
        };
        (conn, rx)
    }

    fn vote() -> VoteRequest<NodeId> {
        VoteRequest { vote: Vote::new(1, 1), last_log_id: None }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_timeout_and_leaves_no_entry() {
        let calls = Calls::new();
        let (mut conn, mut sent) = connection(&calls);
        let err = conn.vote(vote(), RPCOption::new(Duration::from_millis(200))).await.unwrap_err();
        assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");
        let msg = sent.recv().await.unwrap();
        assert_eq!((msg.src.as_str(), msg.dest.as_str()), ("n0", "n1"));
        assert_eq!(msg.body["type"], "raft_rpc");
        assert_eq!(msg.body["rpc"], "Vote");
        assert!(calls.is_empty());
    }

    #[tokio::test]
    async fn refusal_is_unreachable_and_a_reply_is_decoded() {
        let calls = Calls::new();
        let (mut conn, mut sent) = connection(&calls);
        // The peer refuses the first RPC and grants the second.
        let calls2 = calls.clone();
        let responder = tokio::spawn(async move {
            let msg = sent.recv().await.unwrap();
            let id = msg.body["rpc_id"].as_u64().unwrap();
            calls2.complete(
                "n1",
                id,
                PeerMessage::RaftRpcRefused { rpc_id: id, reason: "not initialized".into() },
            );
            let msg = sent.recv().await.unwrap();
            let id = msg.body["rpc_id"].as_u64().unwrap();
            let resp = RpcResponse::Vote(Ok(VoteResponse {
                vote: Vote::new(1, 1),
                vote_granted: true,
                last_log_id: None,
            }));
            calls2.complete("n1", id, PeerMessage::RaftRpcReply { rpc_id: id, data: encode_data(&resp) });
        });
        let err = conn.vote(vote(), RPCOption::new(Duration::from_secs(30))).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        let resp = conn.vote(vote(), RPCOption::new(Duration::from_secs(30))).await.unwrap();
        assert!(resp.vote_granted);
        responder.await.unwrap();
        assert!(calls.is_empty());
    }
}
