//! The commands the KV state machine applies: what travels in the Raft log.
//!
//! The log holds *logical* operations ("put this value under this key"), not
//! storage pages or SQL statements: each replica turns them into its own
//! storage writes, so nodes can differ in storage layout and version while
//! agreeing on the data (the notes' "logical log"). Every field a command's
//! effect depends on is inside the command, including the only clock the
//! state machine ever sees: the leader's time at proposal,
//! [`KvCommand::proposed_at_ms`].

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The longest key, in bytes of UTF-8. A constant, not configuration: the
/// state machine checks it during apply, and apply must not depend on local
/// configuration.
pub const MAX_KEY_BYTES: usize = 4096;

/// The default limit on a value's size (1 MiB); the server's is configurable
/// (`--max-value-bytes`) and checked before proposing.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// A client session not used for this long, in log time, is forgotten:
/// a retry arriving later than this after its first attempt may apply twice.
pub const SESSION_TTL_MS: u64 = 10 * 60 * 1000;

/// Expired sessions are swept when the log index is a multiple of this.
pub const SESSION_SWEEP_EVERY: u64 = 1000;

/// Identifies one write of one client, for exactly-once application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionId {
    /// Chosen at random by the client, once per client instance.
    pub client_id: u64,
    /// Increases by one with every new write of that client; a retry of the
    /// same write reuses it.
    pub seq: u64,
}

/// One write, as proposed by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// Who sent it; `None` for a client that does not ask for
    /// deduplication (a retry of such a write may apply twice).
    pub session: Option<SessionId>,
    /// The leader's wall clock when it proposed the command, in ms since the
    /// Unix epoch. Used only to expire idle sessions; the state machine keeps
    /// the maximum seen, so a leader with a slow clock cannot turn time back.
    pub proposed_at_ms: u64,
    /// What to do.
    pub op: WriteOp,
}

/// The write operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Store `value` under `key`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: ByteBuf,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Store `value` under `key` if the current value equals `expected`
    /// (`None`: if the key is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold, or `None` for "absent".
        expected: Option<ByteBuf>,
        /// The new value.
        value: ByteBuf,
    },
}

impl WriteOp {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } | WriteOp::Cas { key, .. } => key,
        }
    }
}

/// What an applied write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// A put: whether the key was new.
    Put {
        /// True if the key did not exist before.
        created: bool,
    },
    /// A delete: whether the key existed.
    Delete {
        /// True if the key existed and was removed.
        existed: bool,
    },
    /// A compare-and-swap: whether it took effect, and the value now stored.
    Cas {
        /// True if the expected value matched and the new value was stored.
        succeeded: bool,
        /// The value after the operation (`None`: absent).
        current: Option<ByteBuf>,
    },
}

/// The state machine's answer to a [`KvCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// Applied now.
    Applied(WriteOutcome),
    /// This (client, seq) was applied before; this is the remembered outcome,
    /// and nothing changed now.
    Duplicate(WriteOutcome),
    /// The client already moved on to a later seq: this is a stale retry
    /// whose outcome is no longer remembered. Nothing changed.
    StaleSequence {
        /// The last seq applied for this client.
        last_seq: u64,
    },
    /// The command is invalid (for example a key over [`MAX_KEY_BYTES`]);
    /// nothing changed. Servers validate before proposing, so this is only
    /// reached by a client that bypasses them.
    Rejected {
        /// Why.
        reason: String,
    },
}
