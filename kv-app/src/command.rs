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

/// The shortest lease TTL accepted, in ms. Below about an election
/// timeout a lease could not survive a leader change anyway; half a second
/// still lets tests use short leases.
pub const MIN_LEASE_TTL_MS: u64 = 500;

/// The longest lease TTL accepted, in ms (one day). A lease is for
/// liveness ("this owner is still here"); something meant to outlive a day
/// without renewal wants no lease.
pub const MAX_LEASE_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The most leases that may exist at once. Each costs a record, and the
/// leader reads every lease on each expiry check, so the bound is also a
/// bound on that work.
pub const MAX_LEASES: u64 = 10_000;

/// The most keys one lease may hold. Expiring or revoking a lease deletes
/// all its keys in one command, so this bounds the work of one apply.
pub const MAX_KEYS_PER_LEASE: u64 = 10_000;

/// The most leases one [`WriteOp::ExpireLeases`] may name; the leader
/// splits a longer list over several commands.
pub const MAX_EXPIRE_BATCH: usize = 256;

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
    // The variants below came with leases. bincode numbers variants in
    // declaration order, so new ones go at the end: the entries already in
    // logs and snapshots keep decoding as what they were.
    /// Create a lease of `ttl_ms` (between [`MIN_LEASE_TTL_MS`] and
    /// [`MAX_LEASE_TTL_MS`]); the state machine picks its id.
    LeaseGrant {
        /// Time to live without a renewal, in ms.
        ttl_ms: u64,
    },
    /// Renew lease `id`: its TTL starts again.
    LeaseKeepAlive {
        /// The lease.
        id: u64,
    },
    /// End lease `id` now and delete its keys.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// Store `value` under `key` and attach the key to lease `lease`, which
    /// must exist. (A plain [`WriteOp::Put`] detaches the key from any
    /// lease.)
    PutWithLease {
        /// The key.
        key: String,
        /// The value.
        value: ByteBuf,
        /// The lease the key belongs to from now on.
        lease: u64,
    },
    /// Proposed by the leader alone: these leases were not renewed for
    /// their TTL, end them and delete their keys. Each names the renewal it
    /// judged, so a lease renewed after the leader decided is left alone.
    ExpireLeases {
        /// The leases, at most [`MAX_EXPIRE_BATCH`].
        leases: Vec<ExpiredLease>,
    },
}

/// One lease the leader judged expired, in [`WriteOp::ExpireLeases`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredLease {
    /// The lease.
    pub id: u64,
    /// Its renewal count when the leader judged it (0: never renewed since
    /// its grant). Apply ends the lease only if the count is still this.
    pub renewals: u64,
}

impl WriteOp {
    /// The key the operation writes, for the operations that name one
    /// (lease operations other than a put name none).
    pub fn key(&self) -> Option<&str> {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key }
            | WriteOp::Cas { key, .. }
            | WriteOp::PutWithLease { key, .. } => Some(key),
            WriteOp::LeaseGrant { .. }
            | WriteOp::LeaseKeepAlive { .. }
            | WriteOp::LeaseRevoke { .. }
            | WriteOp::ExpireLeases { .. } => None,
        }
    }

    /// The operation's name, as traces and rollback records show it.
    pub fn name(&self) -> &'static str {
        match self {
            WriteOp::Put { .. } => "put",
            WriteOp::Delete { .. } => "delete",
            WriteOp::Cas { .. } => "cas",
            WriteOp::LeaseGrant { .. } => "lease_grant",
            WriteOp::LeaseKeepAlive { .. } => "lease_keepalive",
            WriteOp::LeaseRevoke { .. } => "lease_revoke",
            WriteOp::PutWithLease { .. } => "put_with_lease",
            WriteOp::ExpireLeases { .. } => "expire_leases",
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
    // Lease outcomes: at the end, for the same reason as in `WriteOp`
    // (sessions store outcomes).
    /// A lease was granted.
    LeaseGranted {
        /// Its id, never used before in this cluster.
        id: u64,
        /// Its TTL in ms.
        ttl_ms: u64,
    },
    /// A lease was renewed.
    LeaseRenewed {
        /// The lease.
        id: u64,
        /// Its TTL in ms, which starts again now.
        ttl_ms: u64,
    },
    /// A lease was revoked.
    LeaseRevoked {
        /// The lease.
        id: u64,
        /// How many keys were deleted with it.
        keys_deleted: u64,
    },
    /// The leader's expiry: the leases that ended (those of the command
    /// that were renewed meanwhile, or are gone already, are not listed).
    LeasesExpired {
        /// The leases ended now.
        ids: Vec<u64>,
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
    /// The command is invalid (for example a key over [`MAX_KEY_BYTES`], or
    /// a lease TTL out of range), or would pass a bound ([`MAX_LEASES`],
    /// [`MAX_KEYS_PER_LEASE`]); nothing changed. Servers check what they
    /// can before proposing, so an invalid command is only reached by a
    /// client that bypasses them; the bounds depend on the state and are
    /// checked here only.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The command names a lease that does not exist (never granted, or
    /// expired or revoked since); nothing changed.
    LeaseNotFound {
        /// The lease named.
        id: u64,
    },
}

#[cfg(test)]
mod tests {
    use raft_core::codec;

    use super::*;

    fn encoded(op: WriteOp) -> Vec<u8> {
        codec::encode(&KvCommand {
            session: Some(SessionId { client_id: 7, seq: 1 }),
            proposed_at_ms: 1000,
            op,
        })
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The log and the snapshots hold commands of every earlier release.
    /// Leases added variants at the end of `WriteOp` (bincode numbers
    /// variants in order), so an entry written before them decodes as the
    /// same command, and one written now by an old variant has the same
    /// bytes as then. The bytes: session (Some, 7, 1), time (varint 1000),
    /// the variant's index, then its fields.
    #[test]
    fn commands_from_before_leases_keep_their_bytes_and_leases_come_after() {
        let put = WriteOp::Put { key: "k".into(), value: ByteBuf::from(b"v".to_vec()) };
        assert_eq!(hex(&encoded(put)), "010701fbe80300016b0176");
        assert_eq!(hex(&encoded(WriteOp::Delete { key: "k".into() })), "010701fbe80301016b");
        let cas = WriteOp::Cas { key: "k".into(), expected: None, value: ByteBuf::from(b"v".to_vec()) };
        assert_eq!(hex(&encoded(cas)), "010701fbe80302016b000176");
        let new = [
            WriteOp::LeaseGrant { ttl_ms: 1 },
            WriteOp::LeaseKeepAlive { id: 1 },
            WriteOp::LeaseRevoke { id: 1 },
            WriteOp::PutWithLease { key: String::new(), value: ByteBuf::new(), lease: 1 },
            WriteOp::ExpireLeases { leases: vec![] },
        ];
        for (index, op) in (3u8..).zip(new) {
            let bytes = encoded(op.clone());
            assert_eq!(bytes[6], index, "{op:?}");
            assert_eq!(codec::decode::<KvCommand>(&bytes).expect("decodes").op, op);
        }
    }
}
