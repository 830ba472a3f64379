//! The messages this node reads and writes: Maelstrom's lin-kv workload,
//! its error codes, and the node-to-node messages of our own protocol.
//!
//! Every Maelstrom message is one line of JSON, `{"src", "dest", "body"}`.
//! A body has a `type`, and optionally a `msg_id` and an `in_reply_to`.
//!
//! # lin-kv, as a client sees it
//!
//! | request                 | success                 | errors                        |
//! |-------------------------|-------------------------|-------------------------------|
//! | `read {key}`            | `read_ok {value}`       | 20 key does not exist         |
//! | `write {key, value}`    | `write_ok`              |                               |
//! | `cas {key, from, to}`   | `cas_ok`                | 20 missing key, 22 mismatch   |
//!
//! A reply body carries exactly `type`, `in_reply_to` and the fields in
//! that table (`code` and `text` for an error), nothing else: Maelstrom's
//! client records an op with an unexpected key as failed. [`Reply`] is the
//! only way this crate builds a reply to a client, so no other key can
//! slip in.
//!
//! # Error codes, and what a client may conclude from them
//!
//! The checker must know whether a failed operation *might have happened*.
//! Codes are either definite (the operation certainly did not take effect)
//! or indefinite ([`ErrorCode::is_definite`]). This node returns
//! [`ErrorCode::TemporarilyUnavailable`] (11) only when the operation was
//! certainly not proposed to Raft, and [`ErrorCode::Timeout`] (0) when a
//! write or cas was proposed, or handed to the leader, and its fate is
//! unknown. Claiming 11 for a write that later commits would let the
//! checker accept histories that are not linearizable, or reject correct
//! ones: the failure Redis-Raft's Jepsen analysis found.
//!
//! # Between our nodes
//!
//! Our nodes talk to each other with [`PeerMessage`]s, correlated by our
//! own `rpc_id`, never by `msg_id`/`in_reply_to`: maelstrom-node 0.1.6
//! intercepts every message with a non-zero `in_reply_to` for its own RPC
//! table and never shows it to the handler (see [`crate::server`]).
//!
//! * `raft_rpc {rpc_id, rpc, data}`: one Raft RPC (AppendEntries, Vote,
//!   PreVote, a SnapshotChunk or TransferLeader); `data` is base64 of
//!   raft-core's binary encoding ([`raft_core::codec`]) of a
//!   [`raft_core::network::RpcRequest`],
//!   and `rpc` names its kind so that a human reading Maelstrom's message
//!   log can tell them apart. Answered by `raft_rpc_reply {rpc_id, data}`
//!   (the encoded [`raft_core::network::RpcResponse`]), or by
//!   `raft_rpc_refused {rpc_id, reason}` when this node cannot serve it yet.
//! * `forward {rpc_id, op}`: a client's operation, sent by a follower to the
//!   leader; `op` is the client's body without `msg_id`. Answered by
//!   `forward_reply {rpc_id, reply}`, where `reply` is the client reply
//!   without `in_reply_to`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A Maelstrom error code (Maelstrom's `doc/protocol.md`, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 0: the operation timed out; it may or may not have happened.
    Timeout,
    /// 10: this node does not implement the request type.
    NotSupported,
    /// 11: the operation certainly did not happen, and may succeed later.
    TemporarilyUnavailable,
    /// 12: the request is not well formed and certainly did not happen.
    MalformedRequest,
    /// 13: an indefinite internal failure.
    Crash,
    /// 20: the key does not exist.
    KeyDoesNotExist,
    /// 22: a `cas` found a value other than `from`.
    PreconditionFailed,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u64 {
        match self {
            ErrorCode::Timeout => 0,
            ErrorCode::NotSupported => 10,
            ErrorCode::TemporarilyUnavailable => 11,
            ErrorCode::MalformedRequest => 12,
            ErrorCode::Crash => 13,
            ErrorCode::KeyDoesNotExist => 20,
            ErrorCode::PreconditionFailed => 22,
        }
    }

    /// The code with this number, if this crate knows it.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => ErrorCode::Timeout,
            10 => ErrorCode::NotSupported,
            11 => ErrorCode::TemporarilyUnavailable,
            12 => ErrorCode::MalformedRequest,
            13 => ErrorCode::Crash,
            20 => ErrorCode::KeyDoesNotExist,
            22 => ErrorCode::PreconditionFailed,
            _ => return None,
        })
    }

    /// Whether the code tells the client that the operation certainly did
    /// not take effect (Maelstrom's "definite" errors). Timeout and crash do
    /// not: the operation may have happened.
    pub fn is_definite(self) -> bool {
        !matches!(self, ErrorCode::Timeout | ErrorCode::Crash)
    }
}

/// A lin-kv client operation. Keys and values are any JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOp {
    /// `read {key}`.
    Read {
        /// The key.
        key: Value,
    },
    /// `write {key, value}`.
    Write {
        /// The key.
        key: Value,
        /// The new value.
        value: Value,
    },
    /// `cas {key, from, to}`.
    Cas {
        /// The key.
        key: Value,
        /// The value the key must hold.
        from: Value,
        /// The value to set.
        to: Value,
    },
}

/// Why a body is not a lin-kv operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The type is not `read`, `write` or `cas`.
    #[error("message type {0:?} is not supported")]
    NotSupported(String),
    /// A required field is missing.
    #[error("{op} request has no {field:?} field")]
    MissingField {
        /// The operation.
        op: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

impl OpError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::NotSupported(_) => ErrorCode::NotSupported,
            OpError::MissingField { .. } => ErrorCode::MalformedRequest,
        }
    }
}

impl ClientOp {
    /// Whether `typ` names a lin-kv operation.
    pub fn is_op_type(typ: &str) -> bool {
        matches!(typ, "read" | "write" | "cas")
    }

    /// Parses an operation from a body's type and its other fields.
    /// Unknown fields are ignored; a missing field is an error. A field
    /// that is present with the value `null` is the JSON value `null`.
    pub fn parse(typ: &str, fields: &Map<String, Value>) -> Result<ClientOp, OpError> {
        let get = |op: &'static str, field: &'static str| {
            fields.get(field).cloned().ok_or(OpError::MissingField { op, field })
        };
        match typ {
            "read" => Ok(ClientOp::Read { key: get("read", "key")? }),
            "write" => Ok(ClientOp::Write { key: get("write", "key")?, value: get("write", "value")? }),
            "cas" => Ok(ClientOp::Cas {
                key: get("cas", "key")?,
                from: get("cas", "from")?,
                to: get("cas", "to")?,
            }),
            other => Err(OpError::NotSupported(other.to_string())),
        }
    }

    /// The operation's name, which is also its message type.
    pub fn name(&self) -> &'static str {
        match self {
            ClientOp::Read { .. } => "read",
            ClientOp::Write { .. } => "write",
            ClientOp::Cas { .. } => "cas",
        }
    }

    /// Whether the operation only reads (and so can never take effect).
    pub fn is_read(&self) -> bool {
        matches!(self, ClientOp::Read { .. })
    }

    /// The key the operation is about.
    pub fn key(&self) -> &Value {
        match self {
            ClientOp::Read { key } | ClientOp::Write { key, .. } | ClientOp::Cas { key, .. } => key,
        }
    }

    /// The operation as a body (type and fields, no `msg_id`), to forward.
    pub fn to_body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("type".into(), self.name().into());
        match self {
            ClientOp::Read { key } => {
                body.insert("key".into(), key.clone());
            }
            ClientOp::Write { key, value } => {
                body.insert("key".into(), key.clone());
                body.insert("value".into(), value.clone());
            }
            ClientOp::Cas { key, from, to } => {
                body.insert("key".into(), key.clone());
                body.insert("from".into(), from.clone());
                body.insert("to".into(), to.clone());
            }
        }
        body
    }

    /// Parses a body made by [`ClientOp::to_body`] (or a client's own).
    pub fn from_body(body: &Map<String, Value>) -> Result<ClientOp, OpError> {
        let typ = body.get("type").and_then(Value::as_str).unwrap_or("");
        ClientOp::parse(typ, body)
    }
}

/// The answer to a client's operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `read_ok {value}`.
    ReadOk {
        /// The value read.
        value: Value,
    },
    /// `write_ok`.
    WriteOk,
    /// `cas_ok`.
    CasOk,
    /// `error {code, text}`.
    Error {
        /// What went wrong, and whether the operation may have happened.
        code: ErrorCode,
        /// A human-readable explanation.
        text: String,
    },
}

impl Reply {
    /// An error reply.
    pub fn error(code: ErrorCode, text: impl Into<String>) -> Self {
        Reply::Error { code, text: text.into() }
    }

    /// The body without `in_reply_to`: exactly `type` and the workload's
    /// fields.
    pub fn to_body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        match self {
            Reply::ReadOk { value } => {
                body.insert("type".into(), "read_ok".into());
                body.insert("value".into(), value.clone());
            }
            Reply::WriteOk => {
                body.insert("type".into(), "write_ok".into());
            }
            Reply::CasOk => {
                body.insert("type".into(), "cas_ok".into());
            }
            Reply::Error { code, text } => {
                body.insert("type".into(), "error".into());
                body.insert("code".into(), code.code().into());
                body.insert("text".into(), text.clone().into());
            }
        }
        body
    }

    /// The body sent to the client: [`Reply::to_body`] plus `in_reply_to`.
    pub fn to_client_body(&self, in_reply_to: u64) -> Map<String, Value> {
        let mut body = self.to_body();
        body.insert("in_reply_to".into(), in_reply_to.into());
        body
    }

    /// Parses a body made by [`Reply::to_body`] (from a peer). Anything else
    /// is `None`: the caller decides what an unreadable answer means.
    pub fn from_body(body: &Map<String, Value>) -> Option<Reply> {
        match body.get("type")?.as_str()? {
            "read_ok" => Some(Reply::ReadOk { value: body.get("value")?.clone() }),
            "write_ok" => Some(Reply::WriteOk),
            "cas_ok" => Some(Reply::CasOk),
            "error" => Some(Reply::Error {
                code: ErrorCode::from_code(body.get("code")?.as_u64()?)?,
                text: body.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
            }),
            _ => None,
        }
    }

    /// The error code, if this is an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Reply::Error { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The node-to-node messages of our own protocol (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMessage {
    /// A Raft RPC.
    RaftRpc {
        /// Our request id, unique per sending node.
        rpc_id: u64,
        /// `AppendEntries`, `Vote`, `SnapshotChunk`, ...: for people
        /// reading message logs only; `data` says the same.
        rpc: String,
        /// base64 of the encoded `RpcRequest`.
        data: String,
    },
    /// The answer to a [`PeerMessage::RaftRpc`].
    RaftRpcReply {
        /// The request's id.
        rpc_id: u64,
        /// base64 of the encoded `RpcResponse`.
        data: String,
    },
    /// The receiver cannot serve Raft RPCs (it has not been initialized by
    /// Maelstrom yet) or could not decode the request.
    RaftRpcRefused {
        /// The request's id.
        rpc_id: u64,
        /// Why.
        reason: String,
    },
    /// A client operation, forwarded to the node believed to lead.
    Forward {
        /// Our request id, unique per sending node.
        rpc_id: u64,
        /// The operation, as [`ClientOp::to_body`] renders it.
        op: Map<String, Value>,
    },
    /// The leader's answer to a [`PeerMessage::Forward`].
    ForwardReply {
        /// The request's id.
        rpc_id: u64,
        /// The reply, as [`Reply::to_body`] renders it.
        reply: Map<String, Value>,
    },
}

impl PeerMessage {
    /// Whether `typ` is the type of one of our peer messages.
    pub fn is_peer_type(typ: &str) -> bool {
        matches!(typ, "raft_rpc" | "raft_rpc_reply" | "raft_rpc_refused" | "forward" | "forward_reply")
    }

    /// Parses a peer message from a body's type and other fields.
    pub fn parse(typ: &str, fields: &Map<String, Value>) -> Result<PeerMessage, serde_json::Error> {
        let mut body = fields.clone();
        body.insert("type".into(), typ.into());
        serde_json::from_value(Value::Object(body))
    }

    /// The body, as sent.
    pub fn to_body(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(body)) => body,
            other => {
                unreachable!("invariant: an internally tagged enum serializes to an object, got {other:?}")
            }
        }
    }

    /// For replies: the id of the request answered.
    pub fn reply_to(&self) -> Option<u64> {
        match self {
            PeerMessage::RaftRpcReply { rpc_id, .. }
            | PeerMessage::RaftRpcRefused { rpc_id, .. }
            | PeerMessage::ForwardReply { rpc_id, .. } => Some(*rpc_id),
            PeerMessage::RaftRpc { .. } | PeerMessage::Forward { .. } => None,
        }
    }
}

/// One outgoing message: exactly the three keys Maelstrom accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender: this node's Maelstrom name.
    pub src: String,
    /// The receiver: a node or a client.
    pub dest: String,
    /// The body.
    pub body: Map<String, Value>,
}

impl Envelope {
    /// The line to write to stdout (without the newline).
    pub fn to_line(&self) -> String {
        // A struct of strings and a JSON map always serializes.
        serde_json::to_string(self)
            .unwrap_or_else(|e| unreachable!("invariant: an envelope serializes ({e})"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn ops_parse_with_any_json_and_missing_fields_are_malformed() {
        let op =
            ClientOp::parse("cas", &obj(json!({"key": [1, "a"], "from": null, "to": {"x": 1}}))).unwrap();
        assert_eq!(op, ClientOp::Cas { key: json!([1, "a"]), from: Value::Null, to: json!({"x": 1}) });
        assert_eq!(ClientOp::from_body(&op.to_body()).unwrap(), op);

        let err = ClientOp::parse("write", &obj(json!({"key": 1}))).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedRequest);
        assert_eq!(ClientOp::parse("echo", &Map::new()).unwrap_err().code(), ErrorCode::NotSupported);
    }

    #[test]
    fn reply_bodies_have_exactly_the_workload_keys() {
        let keys = |r: Reply| {
            let mut k: Vec<String> = r.to_client_body(7).keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(Reply::ReadOk { value: json!(3) }), ["in_reply_to", "type", "value"]);
        assert_eq!(keys(Reply::WriteOk), ["in_reply_to", "type"]);
        assert_eq!(keys(Reply::CasOk), ["in_reply_to", "type"]);
        assert_eq!(
            keys(Reply::error(ErrorCode::KeyDoesNotExist, "x")),
            ["code", "in_reply_to", "text", "type"]
        );
    }

    #[test]
    fn replies_survive_the_trip_through_a_peer() {
        for r in [
            Reply::ReadOk { value: json!({"a": [1]}) },
            Reply::WriteOk,
            Reply::CasOk,
            Reply::error(ErrorCode::PreconditionFailed, "expected 1, found 2"),
        ] {
            assert_eq!(Reply::from_body(&r.to_body()), Some(r));
        }
        assert_eq!(Reply::from_body(&obj(json!({"type": "error", "code": 99}))), None);
        assert_eq!(Reply::from_body(&obj(json!({"type": "read_ok"}))), None);
    }

    #[test]
    fn only_timeout_and_crash_are_indefinite() {
        for code in [0, 10, 11, 12, 13, 20, 22] {
            let c = ErrorCode::from_code(code).unwrap();
            assert_eq!(c.code(), code);
            assert_eq!(c.is_definite(), code != 0 && code != 13, "{code}");
        }
    }

    #[test]
    fn peer_messages_round_trip_with_their_type() {
        let m = PeerMessage::Forward { rpc_id: 9, op: ClientOp::Read { key: json!(1) }.to_body() };
        let body = m.to_body();
        assert_eq!(body["type"], "forward");
        let mut fields = body.clone();
        let typ = fields.remove("type").unwrap();
        assert_eq!(PeerMessage::parse(typ.as_str().unwrap(), &fields).unwrap(), m);
        assert!(PeerMessage::parse("forward", &obj(json!({"rpc_id": "x"}))).is_err());
    }

    #[test]
    fn envelope_has_only_src_dest_body() {
        let line = Envelope { src: "n0".into(), dest: "c1".into(), body: Reply::WriteOk.to_client_body(0) }
            .to_line();
        let v: Value = serde_json::from_str(&line).unwrap();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["body", "dest", "src"]);
        assert_eq!(v["body"]["in_reply_to"], 0, "msg_id 0 is answered, not dropped");
    }
}
