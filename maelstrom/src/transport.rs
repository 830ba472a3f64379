//! Raft RPCs carried as Maelstrom messages.
//!
//! raft-core asks for a [`Transport`]: a [`Link`] per peer that carries one
//! Raft RPC ([`RpcRequest`]) to the peer and brings back its answer. Under Maelstrom the only network is Maelstrom's own: a
//! node may talk to other nodes only by writing messages to stdout, which
//! Maelstrom delivers (with latency, or not at all during a partition) to
//! the peer's stdin. So each RPC becomes one `raft_rpc` message and its
//! answer one `raft_rpc_reply` message (see [`crate::protocol`]):
//!
//! ```text
//! leader n0                          Maelstrom                     follower n1
//!  call(AppendEntries) ─▶ {"type":"raft_rpc","rpc_id":7,"data":…} ─▶ inbox.serve(request)
//!  returns answer ◀── {"type":"raft_rpc_reply","rpc_id":7,"data":…} ◀─ answer
//! ```
//!
//! The request and the response are encoded with raft-core's binary codec
//! ([`raft_core::codec`], the same encoding as its TCP frames) and then
//! base64, because a Maelstrom body is JSON.
//!
//! # Timeouts, and what raft-core is told
//!
//! Each RPC waits for its answer at most the timeout raft-core passes, the
//! deadline openraft itself enforces: the heartbeat interval for
//! AppendEntries, the minimum election timeout for Vote, the snapshot
//! timeout for each piece of a snapshot. The pending entry is removed on the
//! answer, on the timeout, or when the call is dropped first
//! ([`crate::rpc`]), so a partition that swallows every message grows
//! nothing.
//!
//! | what happened | [`LinkError`] | what openraft does |
//! |---|---|---|
//! | no answer in time (dropped by a partition, or slow) | `Timeout` | retries at the next heartbeat or election round |
//! | the peer refused: not initialized by Maelstrom yet | `Unreachable` | backs off (50 ms doubling to 1 s) |
//! | this node can no longer send (stdout closed) | `Unreachable` | backs off |
//! | the answer does not decode | `Network` | retries |
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
//! Snapshots arrive in pieces of `snapshot_chunk_bytes` anyway.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use raft_core::network::{Inbox, Link, LinkError, RpcRequest, RpcResponse, Transport};
use raft_core::{codec, Node, NodeId};

use crate::outbox::Outbox;
use crate::protocol::{Envelope, PeerMessage};
use crate::rpc::Calls;

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
    /// The answer could not be decoded.
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

/// The transport of one node: creates a [`MaelstromLink`] per peer. Give it
/// to [`raft_core::RaftNode::start`].
pub struct MaelstromTransport {
    me: NodeId,
    my_name: String,
    outbox: Outbox,
    calls: Arc<Calls>,
}

impl MaelstromTransport {
    /// The transport of node `me` (Maelstrom name `my_name`), sending through
    /// `outbox` and waiting on `calls`.
    pub fn new(me: NodeId, my_name: impl Into<String>, outbox: Outbox, calls: Arc<Calls>) -> Self {
        MaelstromTransport { me, my_name: my_name.into(), outbox, calls }
    }
}

impl Transport for MaelstromTransport {
    type Link = MaelstromLink;

    /// A link to `target`, whose Maelstrom name is `node.raft_addr` (see
    /// [`crate::ids`]). Sends nothing until the first RPC.
    fn link(&self, target: NodeId, node: &Node) -> MaelstromLink {
        MaelstromLink {
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
pub struct MaelstromLink {
    me: NodeId,
    my_name: String,
    target: NodeId,
    peer: String,
    outbox: Outbox,
    calls: Arc<Calls>,
}

impl Link for MaelstromLink {
    /// Sends one RPC as a `raft_rpc` message and waits for the peer's answer
    /// until `timeout`.
    async fn call(&mut self, rpc: &RpcRequest, timeout: Duration) -> Result<RpcResponse, LinkError> {
        let call = self.calls.start(&self.peer);
        let body =
            PeerMessage::RaftRpc { rpc_id: call.id(), rpc: rpc.name().to_string(), data: encode_data(rpc) };
        let envelope = Envelope { src: self.my_name.clone(), dest: self.peer.clone(), body: body.to_body() };
        if self.outbox.send(envelope).await.is_err() {
            return Err(LinkError::Unreachable(Box::new(TransportError::OutboxClosed {
                peer: self.peer.clone(),
            })));
        }
        let answer = match call.wait(timeout).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::debug!(
                    node_id = self.me,
                    target = self.target,
                    rpc = rpc.name(),
                    ?timeout,
                    "Raft RPC timed out"
                );
                return Err(LinkError::Timeout(timeout));
            }
        };
        match answer {
            PeerMessage::RaftRpcReply { data, .. } => {
                decode_data::<RpcResponse>(&data).map_err(|reason| self.bad_answer(reason))
            }
            PeerMessage::RaftRpcRefused { reason, .. } => {
                let e = TransportError::Refused { peer: self.peer.clone(), reason };
                tracing::debug!(node_id = self.me, target = self.target, error = %e, "Raft RPC refused");
                Err(LinkError::Unreachable(Box::new(e)))
            }
            other => Err(self.bad_answer(format!("unexpected message {other:?}"))),
        }
    }
}

impl MaelstromLink {
    fn bad_answer(&self, reason: String) -> LinkError {
        let e = TransportError::BadAnswer { peer: self.peer.clone(), reason };
        tracing::warn!(node_id = self.me, target = self.target, error = %e, "Raft RPC failed");
        LinkError::Network(Box::new(e))
    }
}

/// Serves one incoming Raft RPC from node `from` on `inbox` and returns the
/// answer to send.
pub async fn serve(inbox: &Inbox, from: NodeId, rpc_id: u64, data: &str) -> PeerMessage {
    let request = match decode_data::<RpcRequest>(data) {
        Ok(request) => request,
        Err(reason) => {
            return PeerMessage::RaftRpcRefused { rpc_id, reason: format!("undecodable request: {reason}") }
        }
    };
    let response = inbox.serve(from, request).await;
    PeerMessage::RaftRpcReply { rpc_id, data: encode_data(&response) }
}

#[cfg(test)]
mod tests {
    use raft_core::network::rpc::RpcResponse;
    use raft_core::openraft::raft::{VoteRequest, VoteResponse};
    use raft_core::types::Vote;

    use super::*;

    #[test]
    fn data_round_trips_and_garbage_is_an_error() {
        let rpc = RpcRequest::Vote(VoteRequest::new(Vote::new(3, 2), None));
        let back: RpcRequest = decode_data(&encode_data(&rpc)).unwrap();
        assert_eq!(back.name(), "Vote");
        assert!(decode_data::<RpcRequest>("!!!").is_err());
        assert!(decode_data::<RpcRequest>(&B64.encode([0xFFu8; 16])).is_err());
    }

    fn link(calls: &Arc<Calls>) -> (MaelstromLink, tokio::sync::mpsc::Receiver<Envelope>) {
        let (outbox, rx) = Outbox::channel();
        let link = MaelstromTransport::new(1, "n0", outbox, calls.clone()).link(2, &Node::new("n1", ""));
        (link, rx)
    }

    fn vote() -> RpcRequest {
        RpcRequest::Vote(VoteRequest::new(Vote::new(1, 1), None))
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_timeout_and_leaves_no_entry() {
        let calls = Calls::new();
        let (mut link, mut sent) = link(&calls);
        let err = link.call(&vote(), Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, LinkError::Timeout(_)), "{err:?}");
        let msg = sent.recv().await.unwrap();
        assert_eq!((msg.src.as_str(), msg.dest.as_str()), ("n0", "n1"));
        assert_eq!(msg.body["type"], "raft_rpc");
        assert_eq!(msg.body["rpc"], "Vote");
        assert!(calls.is_empty());
    }

    #[tokio::test]
    async fn refusal_is_unreachable_and_a_reply_is_decoded() {
        let calls = Calls::new();
        let (mut link, mut sent) = link(&calls);
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
            let resp = RpcResponse::Vote(Ok(VoteResponse::new(Vote::new(1, 1), None, true)));
            calls2.complete("n1", id, PeerMessage::RaftRpcReply { rpc_id: id, data: encode_data(&resp) });
        });
        let err = link.call(&vote(), Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, LinkError::Unreachable(_)), "{err:?}");
        match link.call(&vote(), Duration::from_secs(30)).await.unwrap() {
            RpcResponse::Vote(Ok(resp)) => assert!(resp.vote_granted),
            other => panic!("expected a granted vote, got {other:?}"),
        }
        responder.await.unwrap();
        assert!(calls.is_empty());
    }
}
