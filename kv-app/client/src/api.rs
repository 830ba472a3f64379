//! The HTTP API's wire types: what the server sends and the client parses.
//! Both sides use these definitions, so they cannot drift apart. The API
//! itself is described in `docs/api.md`.
//!
//! Values are arbitrary bytes. In JSON a value is carried as `"value"`, a
//! UTF-8 string, when it is valid UTF-8, and otherwise as `"value_b64"`,
//! standard base64. A request may use either; a response uses `value`
//! whenever it can.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started
    /// (ReadIndex). Served by the leader, or by a follower after it has
    /// applied the leader's read index.
    #[default]
    Linearizable,
    /// Reflects at least the state at the client's session token: the
    /// client's own earlier writes and reads (read-your-writes, monotonic
    /// reads). Served by any node once it has applied up to the token.
    Session,
    /// Whatever this node has applied now; may be behind the leader.
    Stale,
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "session" => Ok(Consistency::Session),
            "stale" => Ok(Consistency::Stale),
            other => Err(format!("unknown consistency {other:?}: use linearizable, session or stale")),
        }
    }
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Once committed: in the durable log of a majority of voters.
    #[default]
    Majority,
    /// Once every voter has it in its log: fully synchronous replication.
    /// Waits, then fails with `not_fully_replicated`, while a voter is down.
    All,
    /// Once it is durable in the leader's own log, before any follower has
    /// it: asynchronous replication. The answer says `committed: false`.
    /// **Such a write can be lost** if the leader fails before a majority
    /// has it; the old leader then keeps it in a rollback record
    /// (`kvctl rollback`). Not for conditional writes (CAS), whose answer
    /// needs the applied result.
    Leader,
}

impl Durability {
    /// The name used in query strings and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Majority => "majority",
            Durability::All => "all",
            Durability::Leader => "leader",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "majority" => Ok(Durability::Majority),
            "all" => Ok(Durability::All),
            "leader" => Ok(Durability::Leader),
            other => Err(format!("unknown durability {other:?}: use majority, all or leader")),
        }
    }
}

/// A value in JSON: exactly one of the two fields is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonValue {
    /// The value as a UTF-8 string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

impl JsonValue {
    /// The JSON form of `bytes`: `value` if UTF-8, else `value_b64`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => JsonValue { value: Some(s.to_owned()), value_b64: None },
            Err(_) => JsonValue {
                value: None,
                value_b64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    /// The bytes, or why they cannot be had.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.value, &self.value_b64) {
            (Some(s), None) => Ok(s.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("value_b64 is not valid base64: {e}")),
            (Some(_), Some(_)) => Err("give either value or value_b64, not both".into()),
            (None, None) => Err("missing value (or value_b64)".into()),
        }
    }
}

/// The body of `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// The value.
    #[serde(flatten)]
    pub value: JsonValue,
    /// For exactly-once writes: the client's id (with `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// For exactly-once writes: this write's sequence number (with `client_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The body of `DELETE /v1/kv/{key}` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// See [`PutRequest::client_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// See [`PutRequest::seq`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The body of `POST /v1/cas/{key}`. Exactly one of `expected`,
/// `expected_b64` and `expect_absent: true` must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasRequest {
    /// The value the key must hold, as UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The value the key must hold, as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_b64: Option<String>,
    /// The key must not exist (create-if-absent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expect_absent: bool,
    /// The new value.
    #[serde(flatten)]
    pub value: JsonValue,
    /// See [`PutRequest::client_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// See [`PutRequest::seq`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The body of `POST /v1/leases`: grant a lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantRequest {
    /// Time to live without a renewal, in ms.
    pub ttl_ms: u64,
    /// See [`PutRequest::client_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// See [`PutRequest::seq`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The body of `POST /v1/leases/{id}/keepalive` and `DELETE
/// /v1/leases/{id}` (optional): only the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// See [`PutRequest::client_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// See [`PutRequest::seq`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The answer to a grant, a keepalive or a revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The lease.
    pub id: u64,
    /// Its TTL in ms (grant and keepalive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// How many keys were deleted with it (revoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_deleted: Option<u64>,
    /// See [`WriteResponse::index`].
    pub index: u64,
    /// See [`WriteResponse::node`].
    pub node: u64,
    /// See [`WriteResponse::duplicate`].
    pub duplicate: bool,
}

/// One lease as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Its id.
    pub id: u64,
    /// Time to live without a renewal, in ms.
    pub ttl_ms: u64,
    /// How long the leader will wait, from now, before it expires the
    /// lease if nobody renews it; 0: it is being expired. Judged by the
    /// leader's clocks, never less than what the lease is owed.
    pub remaining_ms: u64,
    /// When it was granted or last renewed, in log time (the leaders'
    /// wall clocks, ms since the Unix epoch).
    pub renewed_at_ms: u64,
    /// How many times it was renewed.
    pub renewals: u64,
    /// How many keys are attached.
    pub key_count: u64,
}

/// The answer to `GET /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseListResponse {
    /// Every lease, in id order.
    pub leases: Vec<LeaseInfo>,
    /// See [`ReadResponse::index`].
    pub index: u64,
    /// The leader that answered.
    pub node: u64,
}

/// The answer to `GET /v1/leases/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDetailResponse {
    /// The lease.
    #[serde(flatten)]
    pub lease: LeaseInfo,
    /// Its keys, in byte order.
    pub keys: Vec<String>,
    /// See [`ReadResponse::index`].
    pub index: u64,
    /// The leader that answered.
    pub node: u64,
}

/// The answer to a read of one key (`GET /v1/kv/{key}`), 200 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResponse {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(flatten)]
    pub value: JsonValue,
    /// The log index the read reflects (the serving node's applied index):
    /// the client's new session token.
    pub index: u64,
    /// The node that served the read.
    pub node: u64,
    /// The highest index the serving node knows to be committed. For a
    /// `stale` read, `committed_index - index` is how far behind it is.
    pub committed_index: u64,
}

/// The answer to a write (PUT, DELETE, or a CAS that succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The log index of the write: the client's new session token.
    pub index: u64,
    /// The node that committed it (the leader).
    pub node: u64,
    /// True if this (client_id, seq) had been applied before, and this is
    /// the remembered outcome. Always false when `committed` is false: the
    /// write is not applied yet.
    pub duplicate: bool,
    /// False for a write acknowledged at `leader` durability: it is in the
    /// leader's durable log at `index` but not yet committed, so it may
    /// still be lost, and its outcome (`created`, `existed`) is not known.
    #[serde(default = "committed_by_default")]
    pub committed: bool,
    /// For a put: whether the key was new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// For a delete: whether the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existed: Option<bool>,
    /// For a CAS: whether it took effect (a failed CAS is a 412 with this
    /// body and `succeeded: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// For a CAS: the value after the operation (absent: the key does not
    /// exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<JsonValue>,
}

fn committed_by_default() -> bool {
    true
}

/// One key and value of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(flatten)]
    pub value: JsonValue,
}

/// The answer to `GET /v1/kv?prefix=P&limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Keys starting with the prefix, in byte order.
    pub items: Vec<ListItem>,
    /// True if more keys match than `limit` allowed.
    pub more: bool,
    /// See [`ReadResponse::index`].
    pub index: u64,
    /// See [`ReadResponse::node`].
    pub node: u64,
    /// See [`ReadResponse::committed_index`].
    pub committed_index: u64,
}

/// Where the leader is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// Its node id.
    pub id: u64,
    /// Its HTTP address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
}

/// Every error response's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code; see [`codes`].
    pub error: String,
    /// A human-readable explanation.
    pub message: String,
    /// Whether the same request may simply be sent again. For writes this is
    /// true only when the write certainly did not take effect.
    pub retryable: bool,
    /// The leader, when the error is about not being it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderInfo>,
    /// A log index the error relates to (the committed index of a write
    /// that was not fully replicated, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// The error codes, with their HTTP status.
pub mod codes {
    /// 400: the request is malformed (JSON, parameters, key encoding).
    pub const BAD_REQUEST: &str = "bad_request";
    /// 413: the key or value is over its size limit.
    pub const TOO_LARGE: &str = "too_large";
    /// 404: the key does not exist.
    pub const KEY_NOT_FOUND: &str = "key_not_found";
    /// 404: no such lease: never granted, or expired or revoked since
    /// (a keepalive, a revoke, a put with `lease=`, a lease read).
    pub const LEASE_NOT_FOUND: &str = "lease_not_found";
    /// 404: no such node in the membership.
    pub const UNKNOWN_NODE: &str = "unknown_node";
    /// The node keeps no rollback record with that id (404).
    pub const UNKNOWN_RECORD: &str = "unknown_record";
    /// A CAS whose expected value did not match. The server never sends this
    /// code: a mismatch is a 412 whose body is a [`WriteResponse`](super::WriteResponse)
    /// with `succeeded: false`, not an [`ErrorBody`](super::ErrorBody).
    /// Clients use it to name that outcome (the Jepsen harness records a
    /// mismatch as a failure with this error).
    pub const CAS_MISMATCH: &str = "cas_mismatch";
    /// 409: this (client_id, seq) is older than the client's latest write.
    pub const STALE_SEQUENCE: &str = "stale_sequence";
    /// 409: this (client_id, seq) was used before for another kind of
    /// write (a put and a lease grant, say), whose remembered outcome
    /// cannot answer this one. Nothing changed: a retry must repeat the
    /// same write, and a new write needs a new seq.
    pub const SEQUENCE_REUSED: &str = "sequence_reused";
    /// 409: another membership change is in progress, or the change is invalid.
    pub const CONFLICT: &str = "conflict";
    /// 503: no leader is known, or the leader cannot be reached; the request
    /// was not carried out. Retry later.
    pub const NO_LEADER: &str = "no_leader";
    /// 503: the read could not be served in time (no quorum, lagging node);
    /// nothing changed. Retry.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 504: the write was (or may have been) proposed, but its outcome is
    /// unknown: it may still take effect.
    pub const INDETERMINATE: &str = "indeterminate";
    /// 504: the write committed on a majority, but not every voter
    /// acknowledged it in time (durability=all).
    pub const NOT_FULLY_REPLICATED: &str = "not_fully_replicated";
    /// 500: the node's storage failed.
    pub const INTERNAL: &str = "internal";
    /// 401: the request carries no credentials, an unknown token, or a
    /// wrong cluster secret (only when the server has `--token-file`). The
    /// response has a `WWW-Authenticate: Bearer` header. Nothing changed.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// 403: the token is known but its role does not allow the request (a
    /// `read` token writing, say), or a client called a route served only
    /// to nodes. Nothing changed.
    pub const FORBIDDEN: &str = "forbidden";
    /// 410: a watch's `from_index` is older than the history the node
    /// keeps ([`WatchEnd::oldest_index`](super::WatchEnd::oldest_index)
    /// says where it starts); also the last line of a watch whose place in
    /// the history was dropped or lost to a snapshot.
    pub const COMPACTED: &str = "compacted";
    /// The last line of a watch that fell too far behind (more changes
    /// waiting for it than `kv-server --watch-buffer-changes`); watch again
    /// from its `resume_index`.
    pub const SLOW_WATCHER: &str = "slow_watcher";
    /// The last line of a watch whose node is stopping; watch again from
    /// its `resume_index`, on another node.
    pub const SHUTTING_DOWN: &str = "shutting_down";
}

/// One follower's replication state, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    /// The follower.
    pub id: u64,
    /// The last index known to be in its log (`None`: not yet known).
    pub matched_index: Option<u64>,
    /// `last_log_index - matched_index`: its replication lag in entries.
    pub lag: u64,
    /// How many milliseconds ago it last acknowledged a heartbeat or an
    /// append (`None`: not yet, to this leader). A node that restarted is
    /// in touch with the leader again once this is shorter than the time
    /// since its restart.
    #[serde(default)]
    pub answered_ms_ago: Option<u64>,
}

/// `GET /v1/cluster/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This node.
    pub id: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// The index of the last entry in this node's log.
    pub last_log_index: u64,
    /// The highest index this node knows to be committed.
    pub committed_index: u64,
    /// The index of the last entry this node applied.
    pub applied_index: u64,
    /// The index its last checkpoint of the applied state reflects (a
    /// restart re-applies the log after it).
    #[serde(default)]
    pub checkpointed_index: u64,
    /// The last index of this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// The last index purged from this node's log.
    pub purged_index: Option<u64>,
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
    /// On the leader: each other member's replication state.
    pub followers: Vec<FollowerStatus>,
    /// A digest of the applied data, equal on replicas with equal data.
    pub state_digest: String,
    /// The version of the kv-server that answered. `None` from a server
    /// older than this field.
    #[serde(default)]
    pub version: Option<String>,
    /// The size of the node's data, in bytes: its database file
    /// (`raft.redb` in its data directory: vote, checkpointed state, and in
    /// on-disk format 2 the log; free pages inside the file included) and,
    /// in format 3, its log's segments (`wal/*.wal`, each at its full,
    /// preallocated size). `None` from a server older than this field, or
    /// one that could not read the database file's size.
    #[serde(default)]
    pub db_size_bytes: Option<u64>,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Raft (TCP transport) address.
    pub raft_addr: String,
    /// HTTP address.
    pub api_addr: String,
    /// True for a voter, false for a learner.
    pub voter: bool,
}

/// `GET /v1/cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// Every member.
    pub members: Vec<Member>,
    /// The leader, if known.
    pub leader: Option<u64>,
}

/// The body of `POST /v1/cluster/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerRequest {
    /// The new node's id (never reuse a removed node's id).
    pub id: u64,
    /// Its Raft address.
    pub raft_addr: String,
    /// Its HTTP address.
    pub api_addr: String,
}

/// The answer to a membership change or a snapshot request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResponse {
    /// The log index of the change (0 for snapshot and campaign).
    pub index: u64,
    /// The node that carried it out.
    pub node: u64,
}

/// The body of `POST /v1/cluster/transfer-leader` (an empty body means
/// `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    /// The voter to hand leadership to; `None`: the one that answers and
    /// holds the most of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// The answer to `POST /v1/cluster/transfer-leader`, once leadership has
/// moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderResponse {
    /// The new leader.
    pub leader: u64,
    /// The term it leads, as the old leader saw it right after the handoff.
    pub term: u64,
    /// The node that handed leadership over (the old leader).
    pub node: u64,
}

/// `POST /v1/internal/read-index`: the leader's answer to a follower that
/// wants to serve a linearizable read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// Apply up to here, then read.
    pub index: u64,
    /// The leader that confirmed it.
    pub node: u64,
}

/// `GET /v1/cluster/rollback`: the rollback records one node keeps, oldest
/// first. A record is written when the node removes entries from its log
/// because a new leader's log replaced them (see `docs/failover.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackList {
    /// The node that keeps them.
    pub node: u64,
    /// One summary per record.
    pub records: Vec<RollbackSummary>,
}

/// One rollback record, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackSummary {
    /// The record's id on its node (1, 2, ...).
    pub id: u64,
    /// When the entries were removed, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The node's term then: the term of the leader whose log won.
    pub term: u64,
    /// Set when the entries were purged as the node installed a snapshot
    /// through this index, which may hold them or not (only acknowledged
    /// entries are recorded then); absent for a truncation, whose entries
    /// the new leader certainly lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_through: Option<u64>,
    /// The first and last log index removed.
    pub first_index: u64,
    /// See `first_index`.
    pub last_index: u64,
    /// Log entries removed.
    pub entries: usize,
    /// Client writes in them.
    pub writes: usize,
    /// Of those, the writes this node had acknowledged at `leader`
    /// durability: lost writes that some client was told were durable.
    pub acknowledged_writes: usize,
}

/// `GET /v1/cluster/rollback/{id}`: one record with every write decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackDetail {
    /// The node that keeps it.
    pub node: u64,
    /// The record's id on its node.
    pub id: u64,
    /// When the entries were removed, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The node's term then.
    pub term: u64,
    /// See [`RollbackSummary::snapshot_through`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_through: Option<u64>,
    /// The removed entries, in log order.
    pub entries: Vec<RolledBackEntry>,
}

/// One removed log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBackEntry {
    /// The term of the leader that created it.
    pub term: u64,
    /// Its log index.
    pub index: u64,
    /// `writes` (client writes), `blank` (a new leader's empty entry) or
    /// `membership` (a configuration change).
    pub kind: String,
    /// Whether this node acknowledged the writes at `leader` durability.
    pub acknowledged: bool,
    /// The client writes, in the order they were proposed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<RolledBackWrite>,
}

/// One client write that was removed from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBackWrite {
    /// `put`, `delete`, `cas`, `put_with_lease`, `lease_grant`,
    /// `lease_keepalive`, `lease_revoke` or `expire_leases`; `undecodable`
    /// if the bytes are not a write this build understands (`error` says
    /// why).
    pub op: String,
    /// The key written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// The value a put or CAS would have stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<JsonValue>,
    /// The value a CAS expected (absent with `expect_absent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<JsonValue>,
    /// The lease a `put_with_lease` attaches its key to, or the lease a
    /// `lease_keepalive` or `lease_revoke` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    /// The TTL a `lease_grant` asked for, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The leases an `expire_leases` ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<u64>,
    /// The writing client's session, if it gave one: a retry with this
    /// `client_id` and `seq` applies at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// See `client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The leader's clock when it proposed the write, in milliseconds since
    /// the Unix epoch.
    #[serde(default)]
    pub proposed_at_ms: u64,
    /// Why the write could not be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a change did to its key, in a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchOp {
    /// A put, or a compare-and-swap that succeeded: the key now holds `value`.
    Put,
    /// The key was deleted.
    Delete,
    /// The key was deleted because its lease expired.
    Expire,
}

impl WatchOp {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            WatchOp::Put => "put",
            WatchOp::Delete => "delete",
            WatchOp::Expire => "expire",
        }
    }
}

/// One change, a line of `GET /v1/watch`:
///
/// ```json
/// {"index":12,"op":"put","key":"greeting","value":"hello","prev_value":null}
/// ```
///
/// Values are encoded as everywhere in the API: `value` when the bytes are
/// UTF-8, else `value_b64` (standard base64); after a delete or expiry,
/// `"value": null`. `prev_value` (or `prev_value_b64`) is the value before
/// the change, `null` if the key did not exist, and present only on a watch
/// with `prev=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The log index of the command that made the change. Several changes
    /// may share one index (commands proposed together travel in one log
    /// entry); they always arrive together.
    pub index: u64,
    /// What happened.
    pub op: WatchOp,
    /// The key.
    pub key: String,
    /// The value after the change; `None` after a delete or expiry.
    pub value: Option<Vec<u8>>,
    /// With `prev=true`: `Some(value before)`, `Some(None)` if the key did
    /// not exist. `None` on a watch without `prev`.
    pub prev_value: Option<Option<Vec<u8>>>,
}

/// Writes `bytes` under `name` (or `name` + `_b64`), `null` for `None`.
fn serialize_bytes_field<M: serde::ser::SerializeMap>(
    map: &mut M,
    name: &'static str,
    name_b64: &'static str,
    bytes: Option<&[u8]>,
) -> Result<(), M::Error> {
    match bytes.map(std::str::from_utf8) {
        None => map.serialize_entry(name, &None::<&str>),
        Some(Ok(text)) => map.serialize_entry(name, text),
        Some(Err(_)) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes.unwrap_or_default());
            map.serialize_entry(name_b64, &b64)
        }
    }
}

impl Serialize for WatchEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("index", &self.index)?;
        map.serialize_entry("op", &self.op)?;
        map.serialize_entry("key", &self.key)?;
        serialize_bytes_field(&mut map, "value", "value_b64", self.value.as_deref())?;
        if let Some(prev) = &self.prev_value {
            serialize_bytes_field(&mut map, "prev_value", "prev_value_b64", prev.as_deref())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for WatchEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let line = RawWatchLine::deserialize(deserializer)?;
        match line.classify().map_err(serde::de::Error::custom)? {
            WatchLine::Event(event) => Ok(event),
            _ => Err(serde::de::Error::custom("not a watch event")),
        }
    }
}

/// A line of `GET /v1/watch` saying how far the watcher has got: every
/// change up to and including `progress_index` has been sent. Sent when
/// the watch starts and whenever no line was sent for a while
/// (`kv-server --watch-progress-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchProgress {
    /// The index the watcher has seen through.
    pub progress_index: u64,
}

/// The body of a refused watch (`410 compacted`), and the last line of a
/// watch the server ends (`slow_watcher`, `compacted`, `shutting_down`): an
/// [`ErrorBody`] with the indexes a watcher needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEnd {
    /// The error code: [`codes::COMPACTED`], [`codes::SLOW_WATCHER`] or
    /// [`codes::SHUTTING_DOWN`].
    pub error: String,
    /// A human-readable explanation.
    pub message: String,
    /// Whether watching again from `resume_index` may succeed (on this
    /// node or another).
    pub retryable: bool,
    /// With `compacted`: the oldest index this node can still watch from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_index: Option<u64>,
    /// On a stream that ends: the `from_index` that continues it exactly
    /// (the index after the last change sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_index: Option<u64>,
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchLine {
    /// A change.
    Event(WatchEvent),
    /// How far the watcher has got.
    Progress(WatchProgress),
    /// The server ends the stream; the last line.
    End(WatchEnd),
}

impl WatchLine {
    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<WatchLine, String> {
        let raw: RawWatchLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        raw.classify()
    }
}

/// Every field any watch line may have, parsed in one pass; `classify`
/// says which line it is.
#[derive(Deserialize)]
struct RawWatchLine {
    index: Option<u64>,
    op: Option<WatchOp>,
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<String>>,
    value_b64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    prev_value: Option<Option<String>>,
    prev_value_b64: Option<String>,
    progress_index: Option<u64>,
    error: Option<String>,
    message: Option<String>,
    retryable: Option<bool>,
    oldest_index: Option<u64>,
    resume_index: Option<u64>,
}

/// Tells a field that is present as `null` (`Some(None)`) from a missing
/// one (`None`, through `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The bytes of a `name` / `name_b64` pair: `Ok(None)` when neither holds
/// bytes (`null`), `Err` for both or for bad base64.
fn bytes_of(
    name: &str,
    text: Option<Option<String>>,
    b64: Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    match (text.flatten(), b64) {
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Some)
            .map_err(|e| format!("{name}_b64 is not valid base64: {e}")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("both {name} and {name}_b64")),
    }
}

impl RawWatchLine {
    fn classify(self) -> Result<WatchLine, String> {
        if let Some(progress_index) = self.progress_index {
            return Ok(WatchLine::Progress(WatchProgress { progress_index }));
        }
        if let Some(error) = self.error {
            return Ok(WatchLine::End(WatchEnd {
                error,
                message: self.message.unwrap_or_default(),
                retryable: self.retryable.unwrap_or(false),
                oldest_index: self.oldest_index,
                resume_index: self.resume_index,
            }));
        }
        let (Some(index), Some(op), Some(key)) = (self.index, self.op, self.key) else {
            return Err("a watch line that is no event (index, op, key), progress or error".into());
        };
        let has_prev = self.prev_value.is_some() || self.prev_value_b64.is_some();
        let value = bytes_of("value", self.value, self.value_b64)?;
        let prev = bytes_of("prev_value", self.prev_value, self.prev_value_b64)?;
        Ok(WatchLine::Event(WatchEvent { index, op, key, value, prev_value: has_prev.then_some(prev) }))
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    fn event(value: Option<&[u8]>, prev: Option<Option<&[u8]>>) -> WatchEvent {
        WatchEvent {
            index: 7,
            op: if value.is_some() { WatchOp::Put } else { WatchOp::Delete },
            key: "k".into(),
            value: value.map(<[u8]>::to_vec),
            prev_value: prev.map(|p| p.map(<[u8]>::to_vec)),
        }
    }

    #[test]
    fn events_encode_values_as_the_kv_api_does_and_parse_back() {
        let cases = [
            (event(Some(b"hi"), None), r#"{"index":7,"op":"put","key":"k","value":"hi"}"#),
            (event(Some(&[0, 255]), None), r#"{"index":7,"op":"put","key":"k","value_b64":"AP8="}"#),
            (event(None, None), r#"{"index":7,"op":"delete","key":"k","value":null}"#),
            (
                event(Some(b"new"), Some(None)),
                r#"{"index":7,"op":"put","key":"k","value":"new","prev_value":null}"#,
            ),
            (
                event(None, Some(Some(&[0xc3]))),
                r#"{"index":7,"op":"delete","key":"k","value":null,"prev_value_b64":"ww=="}"#,
            ),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(WatchLine::parse(json.as_bytes()), Ok(WatchLine::Event(event.clone())), "{json}");
            assert_eq!(serde_json::from_str::<WatchEvent>(json).unwrap(), event);
        }
    }

    #[test]
    fn progress_and_end_lines_are_told_apart_from_events_and_garbage_is_an_error() {
        assert_eq!(
            WatchLine::parse(br#"{"progress_index":41}"#),
            Ok(WatchLine::Progress(WatchProgress { progress_index: 41 }))
        );
        let end = r#"{"error":"slow_watcher","message":"m","retryable":true,"resume_index":9}"#;
        let Ok(WatchLine::End(end)) = WatchLine::parse(end.as_bytes()) else { panic!("an end line") };
        assert_eq!(
            (end.error.as_str(), end.resume_index, end.oldest_index),
            (codes::SLOW_WATCHER, Some(9), None)
        );
        for bad in
            [&br#"{"index":1}"#[..], b"not json", br#"{"index":1,"op":"put","key":"k","value_b64":"!"}"#]
        {
            assert!(WatchLine::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
