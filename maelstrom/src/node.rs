//! The lin-kv node: what it does with each message, independent of how
//! messages reach it.
//!
//! [`LinKvNode::handle`] takes one parsed message and answers it through
//! the [`Outbox`]. It never fails and never panics on input: whatever
//! arrives, the worst outcome is an error reply or a warning on stderr. The
//! real binary feeds it from maelstrom-node ([`crate::server`]); the tests
//! feed it from an in-memory router.
//!
//! # Life of a node
//!
//! ```text
//!  start ──▶ waiting for init ──init──▶ running (one RaftNode)
//!             │ client op: error 11        │ client op: serve or forward
//!             │ raft_rpc: refused          │ raft_rpc: raft().append_entries/vote/…
//!             │ forward: error 11          │ forward: serve if leader, else 11
//! ```
//!
//! On `init`, every node starts its [`RaftNode`] (with the Maelstrom
//! transport of [`crate::transport`]), and the node with the lowest id
//! (`n0`) forms the cluster by calling `initialize` with all members. The
//! others learn the membership from n0's first message, as any Raft node
//! added to a cluster does. Initializing from one node only is what keeps
//! the members from forming two clusters (see
//! [`RaftNode::initialize`]).
//!
//! # Serving a client operation
//!
//! Only the leader serves operations; a follower forwards them:
//!
//! ```text
//! client ─read/write/cas─▶ n1 (follower) ──forward{rpc_id, op}──▶ n0 (leader)
//!                                                                   │ write/cas: RaftNode::write
//!                                                                   │ read: read_barrier, then view
//! client ◀─reply (in_reply_to)── n1 ◀──forward_reply{rpc_id, reply}─┘
//! ```
//!
//! Reads are linearizable without entering the log: the leader first
//! confirms with a quorum that it still leads and waits until it has
//! applied everything committed before the read ([`RaftNode::read_barrier`],
//! Raft thesis §6.4), then reads its own state. A deposed leader that does
//! not know it yet cannot get that confirmation, so it answers error 11
//! rather than a stale value.
//!
//! A forwarded operation is not forwarded again: a node that receives one
//! and does not lead answers 11 (it did not propose it), and the client's
//! next operation goes to whoever leads by then.
//!
//! # Error codes
//!
//! | outcome | code | why |
//! |---|---|---|
//! | not initialized yet, no leader known, the node asked is not the leader (`WriteError::NotLeader`), shutting down, could not send the forward | 11 | certainly not proposed |
//! | proposed, then timed out or lost leadership (`WriteError::Indeterminate`) | 0 | may still commit |
//! | a write/cas forwarded, and no answer from the leader in time | 0 | the leader may have proposed it |
//! | a read that could not be confirmed or was not answered in time | 11 | a read never takes effect, so failing it is always safe |
//! | `cas` on a missing key / wrong `from`; `read` of a missing key | 20 / 22 / 20 | the state machine's verdict |
//! | an answer that cannot be read, or another indefinite failure of a write | 13 | may have happened |

use std::collections::BTreeMap;
use std::sync::Arc;

use mnode::protocol::Message;
use raft_core::{ChangeError, Node, NodeId, RaftNode, ReadError, StartError, Storage, WriteError};
use tokio::sync::OnceCell;

use crate::config::{NodeOptions, StorageChoice};
use crate::ids::{self, BadNodeName};
use crate::lin_kv::{self, canonical_json, identity, LinKv, LinKvCommand, LinKvResponse};
use crate::outbox::Outbox;
use crate::protocol::{ClientOp, Envelope, ErrorCode, PeerMessage, Reply};
use crate::rpc::{CallError, Calls};
use crate::transport::{self, MaelstromTransport};

/// Why `init` could not start the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A node name is not `n0`, `n1`, ….
    #[error(transparent)]
    BadNodeName(#[from] BadNodeName),
    /// `node_id` is not among `node_ids`.
    #[error("{0} is not in node_ids")]
    NotAMember(String),
    /// The node was already initialized (Maelstrom sends `init` once).
    #[error("already initialized as {0}")]
    AlreadyInitialized(String),
    /// The Raft node could not start (storage could not be opened, ...).
    #[error("starting the Raft node: {0}")]
    Start(#[from] StartError),
    /// `initialize` failed on the node that forms the cluster.
    #[error("forming the cluster: {0}")]
    Initialize(#[from] ChangeError),
}

/// The state of an initialized node.
struct Running {
    me: NodeId,
    name: String,
    raft: RaftNode<LinKv>,
    /// Answers Raft RPCs from peers with `raft`.
    inbox: raft_core::network::Inbox,
}

/// One lin-kv node. See the [module docs](self).
pub struct LinKvNode {
    options: NodeOptions,
    outbox: Outbox,
    calls: Arc<Calls>,
    running: OnceCell<Arc<Running>>,
}

impl LinKvNode {
    /// A node that sends through `outbox` and waits for `init`.
    pub fn new(options: NodeOptions, outbox: Outbox) -> Self {
        LinKvNode { options, outbox, calls: Calls::new(), running: OnceCell::new() }
    }

    /// This node's Maelstrom name, once initialized.
    pub fn name(&self) -> Option<&str> {
        self.running.get().map(|r| r.name.as_str())
    }

    /// The Raft node, once initialized.
    pub fn raft(&self) -> Option<&RaftNode<LinKv>> {
        self.running.get().map(|r| &r.raft)
    }

    /// How many requests to other nodes (Raft RPCs and forwarded operations)
    /// await an answer. Bounded by what can be in flight within the
    /// longest timeout; it does not grow while a partition drops messages.
    pub fn pending_calls(&self) -> usize {
        self.calls.len()
    }

    /// Handles Maelstrom's `init`: starts the Raft node as `node_id` in a
    /// cluster of `node_ids`, and forms the cluster if this node has the
    /// lowest id. The caller answers `init_ok` (maelstrom-node does).
    pub async fn init(&self, node_id: &str, node_ids: &[String]) -> Result<(), InitError> {
        if let Some(r) = self.running.get() {
            return Err(InitError::AlreadyInitialized(r.name.clone()));
        }
        let me = ids::raft_id(node_id)?;
        let mut members = BTreeMap::new();
        for name in node_ids {
            members.insert(ids::raft_id(name)?, Node::new(name.clone(), ""));
        }
        if !members.contains_key(&me) {
            return Err(InitError::NotAMember(node_id.to_string()));
        }
        let mut started = false;
        self.running
            .get_or_try_init(|| async {
                started = true;
                let storage = match &self.options.storage {
                    StorageChoice::InMemory => Storage::InMemory,
                    StorageChoice::Durable(dir) => Storage::Durable(dir.join(node_id)),
                };
                let transport = MaelstromTransport::new(me, node_id, self.outbox.clone(), self.calls.clone());
                let raft = RaftNode::start(me, self.options.raft.clone(), storage, LinKv, transport).await?;
                let lowest = members.keys().next().copied();
                if lowest == Some(me) {
                    if let Err(e) = raft.initialize(members.clone()).await {
                        raft.shutdown().await;
                        return Err(InitError::Initialize(e));
                    }
                }
                tracing::info!(node_id = me, name = node_id, members = members.len(), "node initialized");
                let inbox = raft.inbox();
                Ok(Arc::new(Running { me, name: node_id.to_string(), raft, inbox }))
            })
            .await?;
        if started {
            Ok(())
        } else {
            Err(InitError::AlreadyInitialized(self.name().unwrap_or_default().to_string()))
        }
    }

    /// Handles one message other than `init`. Never fails: anything
    /// unexpected is answered with an error or logged and dropped.
    pub async fn handle(&self, msg: Message) {
        let typ = msg.body.typ.as_str();
        if ClientOp::is_op_type(typ) {
            self.serve_client(msg).await;
        } else if PeerMessage::is_peer_type(typ) {
            match PeerMessage::parse(typ, &msg.body.extra) {
                Ok(peer) => self.serve_peer(&msg.src, &msg.dest, peer).await,
                Err(e) => tracing::warn!(src = %msg.src, typ, error = %e, "malformed peer message dropped"),
            }
        } else if typ == "init" {
            tracing::warn!(src = %msg.src, "init delivered to handle(); ignored");
        } else if typ == "error" || typ.ends_with("_ok") || typ.ends_with("_reply") {
            // A reply to something we never asked: answering it could start
            // an endless exchange of errors.
            tracing::debug!(src = %msg.src, typ, "unexpected reply dropped");
        } else {
            let reply =
                Reply::error(ErrorCode::NotSupported, format!("message type {typ:?} is not supported"));
            self.send(&msg.dest, &msg.src, reply.to_client_body(msg.body.msg_id)).await;
        }
    }

    /// Stops Raft. Messages handled afterwards are answered as by a node that
    /// cannot serve (11, refused).
    pub async fn shutdown(&self) {
        if let Some(r) = self.running.get() {
            if let Err(e) = r.raft.raft().shutdown().await {
                tracing::warn!(node_id = r.me, error = %e, "raft did not stop cleanly");
            }
        }
    }

    /// Sends `body` to `dest`, from this node's name (or, before init, from
    /// the name the message being answered was addressed to).
    async fn send(&self, fallback_src: &str, dest: &str, body: serde_json::Map<String, serde_json::Value>) {
        let src = self.name().unwrap_or(fallback_src).to_string();
        if self.outbox.send(Envelope { src, dest: dest.to_string(), body }).await.is_err() {
            tracing::debug!(dest, "outbox closed; message not sent");
        }
    }

    async fn serve_client(&self, msg: Message) {
        let reply = match ClientOp::parse(&msg.body.typ, &msg.body.extra) {
            Err(e) => Reply::error(e.code(), e.to_string()),
            Ok(op) => match self.running.get() {
                None => Reply::error(ErrorCode::TemporarilyUnavailable, "node not initialized yet"),
                Some(r) => self.execute_or_forward(r, &op).await,
            },
        };
        tracing::debug!(src = %msg.src, msg_id = msg.body.msg_id, ?reply, "client reply");
        self.send(&msg.dest, &msg.src, reply.to_client_body(msg.body.msg_id)).await;
    }

    async fn execute_or_forward(&self, r: &Running, op: &ClientOp) -> Reply {
        if r.raft.is_leader() {
            return execute(r, op).await;
        }
        match r.raft.leader_hint() {
            None => Reply::error(ErrorCode::TemporarilyUnavailable, "no leader known"),
            Some(hint) if hint.id == r.me => execute(r, op).await,
            Some(hint) => {
                let leader = hint.node.map(|n| n.raft_addr).unwrap_or_else(|| ids::node_name(hint.id));
                self.forward(r, &leader, op).await
            }
        }
    }

    /// Sends `op` to `leader` and waits for its answer.
    async fn forward(&self, r: &Running, leader: &str, op: &ClientOp) -> Reply {
        let call = self.calls.start(leader);
        let body = PeerMessage::Forward { rpc_id: call.id(), op: op.to_body() }.to_body();
        let envelope = Envelope { src: r.name.clone(), dest: leader.to_string(), body };
        if self.outbox.send(envelope).await.is_err() {
            return Reply::error(ErrorCode::TemporarilyUnavailable, "cannot send to the leader");
        }
        let timeout = self.options.forward_timeout;
        let answer = call.wait(timeout).await;
        let unreadable = |what: String| {
            if op.is_read() {
                Reply::error(ErrorCode::TemporarilyUnavailable, what)
            } else {
                Reply::error(ErrorCode::Crash, format!("{what}; the operation may have happened"))
            }
        };
        match answer {
            Ok(PeerMessage::ForwardReply { reply, .. }) => Reply::from_body(&reply)
                .unwrap_or_else(|| unreadable(format!("unreadable answer from leader {leader}"))),
            Ok(other) => unreadable(format!("unexpected answer from leader {leader}: {other:?}")),
            Err(CallError::Timeout(t)) if op.is_read() => Reply::error(
                ErrorCode::TemporarilyUnavailable,
                format!("read forwarded to {leader}: no answer within {t:?}"),
            ),
            Err(CallError::Timeout(t)) => Reply::error(
                ErrorCode::Timeout,
                format!("forwarded to {leader}: no answer within {t:?}; the operation may have happened"),
            ),
        }
    }

    async fn serve_peer(&self, src: &str, dest: &str, peer: PeerMessage) {
        match peer {
            PeerMessage::RaftRpc { rpc_id, data, .. } => {
                let answer = match (self.running.get(), ids::raft_id(src)) {
                    (None, _) => PeerMessage::RaftRpcRefused { rpc_id, reason: "not initialized yet".into() },
                    (Some(_), Err(e)) => PeerMessage::RaftRpcRefused { rpc_id, reason: e.to_string() },
                    (Some(r), Ok(from)) => transport::serve(&r.inbox, from, rpc_id, &data).await,
                };
                self.send(dest, src, answer.to_body()).await;
            }
            PeerMessage::Forward { rpc_id, op } => {
                let reply = match (ClientOp::from_body(&op), self.running.get()) {
                    (Err(e), _) => Reply::error(e.code(), e.to_string()),
                    (Ok(_), None) => {
                        Reply::error(ErrorCode::TemporarilyUnavailable, "leader not initialized yet")
                    }
                    (Ok(op), Some(r)) if r.raft.is_leader() => execute(r, &op).await,
                    (Ok(_), Some(r)) => Reply::error(
                        ErrorCode::TemporarilyUnavailable,
                        format!(
                            "{} is not the leader (leader: {:?}); not proposed",
                            r.name,
                            r.raft.leader_hint().map(|h| h.id)
                        ),
                    ),
                };
                let answer = PeerMessage::ForwardReply { rpc_id, reply: reply.to_body() };
                self.send(dest, src, answer.to_body()).await;
            }
            reply => {
                let Some(id) = reply.reply_to() else { return };
                if !self.calls.complete(src, id, reply) {
                    tracing::debug!(src, rpc_id = id, "answer to a request no longer pending dropped");
                }
            }
        }
    }
}

/// Serves `op` on this node, which believes it leads.
async fn execute(r: &Running, op: &ClientOp) -> Reply {
    match op {
        ClientOp::Read { key } => read_linearizable(r, key).await,
        ClientOp::Write { key, value } => {
            let cmd = LinKvCommand::Write { key: identity(key), value: canonical_json(value) };
            write(r, cmd, Reply::WriteOk).await
        }
        ClientOp::Cas { key, from, to } => {
            let cmd = LinKvCommand::Cas { key: identity(key), from: identity(from), to: canonical_json(to) };
            write(r, cmd, Reply::CasOk).await
        }
    }
}

/// A linearizable read on the leader: read barrier, then the local state.
async fn read_linearizable(r: &Running, key: &serde_json::Value) -> Reply {
    if let Err(e) = r.raft.read_barrier().await {
        let text = match e {
            ReadError::NoQuorum => "leadership not confirmed by a quorum".to_string(),
            other => other.to_string(),
        };
        return Reply::error(ErrorCode::TemporarilyUnavailable, format!("read not served: {text}"));
    }
    let value = r
        .raft
        .view()
        .map_err(|e| e.to_string())
        .and_then(|view| lin_kv::read(&view, &identity(key)).map_err(|e| e.to_string()));
    match value {
        Ok(Some(value)) => Reply::ReadOk { value },
        Ok(None) => Reply::error(ErrorCode::KeyDoesNotExist, format!("key {key} does not exist")),
        Err(e) => Reply::error(ErrorCode::TemporarilyUnavailable, format!("read failed: {e}")),
    }
}

/// Proposes a write or cas and maps its outcome to a reply.
async fn write(r: &Running, cmd: LinKvCommand, ok: Reply) -> Reply {
    match r.raft.write(&cmd).await {
        Ok(written) => match written.response {
            LinKvResponse::Ok => ok,
            LinKvResponse::NotFound => Reply::error(ErrorCode::KeyDoesNotExist, "key does not exist"),
            LinKvResponse::Mismatch { current } => {
                let from = match &cmd {
                    LinKvCommand::Cas { from, .. } => from.as_str(),
                    LinKvCommand::Write { .. } => "?",
                };
                Reply::error(ErrorCode::PreconditionFailed, format!("expected {from}, found {current}"))
            }
        },
        Err(e @ (WriteError::NotLeader { .. } | WriteError::ShuttingDown)) => {
            Reply::error(ErrorCode::TemporarilyUnavailable, format!("{e}; not proposed"))
        }
        Err(e @ WriteError::Indeterminate { .. }) => Reply::error(ErrorCode::Timeout, e.to_string()),
        Err(e) => Reply::error(ErrorCode::Crash, e.to_string()),
    }
}
