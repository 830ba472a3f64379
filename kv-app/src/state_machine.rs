//! The KV state machine: how a replica applies a [`KvCommand`], exactly once
//! per client write, and how the server reads the result.
//!
//! Every replica runs [`KvStateMachine::apply`] on the same committed
//! commands in the same order. Because `apply` depends on nothing but the
//! state and the command (no clock, no random numbers, no configuration, no
//! `HashMap` iteration), every replica goes through the same sequence of
//! states, and two replicas that applied the same prefix of the log hold the
//! same bytes. [`digest`] lets tests and operators check that.
//!
//! # Storage layout
//!
//! `raft-core` gives the application one sorted byte map (see
//! [`raft_core::app`]). This module divides it by prefix:
//!
//! | key                              | value                                        |
//! |----------------------------------|----------------------------------------------|
//! | `d/` + key (UTF-8 bytes)         | the value, raw bytes                         |
//! | `s/` + client id (8 bytes, BE)   | a `SessionRecord` (see below), [`codec`]     |
//! | `m/meta`                         | a `Meta`: log time and last sweep, [`codec`] |
//! | `l/`, `k/`, `a/`, `m/leases`     | leases and their keys: see [`leases`]        |
//!
//! Data keys keep the user's byte order (the map is sorted and `d/` is a
//! common prefix), so a listing by prefix is one range scan. Client ids are
//! big-endian so that sessions sort numerically. Nothing outside `d/` is
//! data: [`get`], [`list`] and [`digest`] never see sessions or meta, but a
//! snapshot copies the whole map, so sessions and log time travel with it.
//!
//! # Exactly-once writes: client sessions
//!
//! A client that times out cannot know whether its write was applied (the
//! outcome is *indeterminate*), so it retries; without help, a retried put
//! after someone else's put would overwrite the newer value. A client that
//! wants exactly-once application sends a [`SessionId`]: its own random
//! `client_id` and a `seq` that grows by one per new write and stays the
//! same on a retry. For each client the state machine remembers the last
//! `seq` applied and the reply it produced, in the state machine's own state
//! next to the data it wrote, so that the two are checkpointed together and
//! can never disagree after a crash (Raft thesis §6.3). On a command with a session:
//!
//! * `seq` greater than the remembered one, or no session yet: apply, and
//!   remember `(seq, reply, log time)`;
//! * `seq` equal: a retry of the last write. Return
//!   [`KvResponse::Duplicate`] with the remembered outcome and change no data,
//!   even if the data changed since; refresh the session's last-used time;
//! * `seq` smaller: a retry of a write the client has already moved past.
//!   Its outcome is no longer remembered (one reply per client is kept), so
//!   return [`KvResponse::StaleSequence`] and change nothing.
//!
//! A client must therefore have at most one write in flight per
//! `client_id`; concurrent writers need distinct ids.
//!
//! [`KvStateMachine::unsafe_without_dedup`] turns all of this off, as a
//! negative control for the tests that look for duplicated writes.
//!
//! # Invalid commands
//!
//! A command whose key is empty or longer than [`MAX_KEY_BYTES`] gets
//! [`KvResponse::Rejected`] and writes no data. Empty keys are rejected
//! because no HTTP path (`/v1/kv/{key}`) can name them; the server rejects
//! both cases before proposing, so only a client that bypasses it gets here.
//! Value sizes are *not* checked here: the limit is server configuration,
//! and `apply` must not read configuration.
//!
//! A rejected command that carries a session **is** remembered like any
//! other: its `seq` is used up, a retry gets the same `Rejected` answer back
//! from the session record (not `Duplicate`, which carries an outcome a
//! rejection does not have), and an earlier `seq` becomes stale. The answer
//! for one `(client, seq)` is thus decided once, whatever the client sends
//! with that `seq` later.
//!
//! # Log time and session expiry
//!
//! Sessions must be forgotten eventually or the table grows with every
//! client instance ever started. Expiry needs a clock, and `apply` may not
//! read one, so the state machine keeps its own: **log time**, the largest
//! [`KvCommand::proposed_at_ms`] applied so far. Every replica computes the
//! same log time at the same index, and it never goes back, even after a
//! new leader with a slow clock takes over. A session's last-used time is
//! the log time of the command that last applied or repeated it.
//!
//! Once per [`SESSION_SWEEP_EVERY`] indexes, at the first command applied at
//! or after each multiple of it, every session with
//! `last_used + SESSION_TTL_MS < log time` is removed. "At or after", because
//! the entry at the multiple itself may be a blank or membership entry that
//! never reaches the state machine; and "first command", because `raft-core`
//! puts several commands into one entry and they all share its index (the
//! index of the last sweep is kept in meta for that reason).
//!
//! The consequence, which clients must accept: a session is remembered for
//! at least [`SESSION_TTL_MS`] of log time after its last use, but a retry
//! that arrives after its session was swept is treated as new and **applies
//! a second time**. Between sweeps an expired session is still honoured.
//!
//! # Changes, for watchers
//!
//! Every write to a data key goes through one function, `change_key`,
//! which also records the change with the key's value before it into the
//! node's [`ChangeLog`], if the state machine has one
//! ([`KvStateMachine::with_change_log`]). Recording reads the state and
//! writes only to the change log, so `apply` changes the same state with or
//! without it. Changes are staged while a batch applies and published once
//! raft-core reports the batch applied ([`StateMachine::on_state_event`]);
//! [`crate::changes`] says how, and `docs/watch.md` why.
//!
//! # Leases
//!
//! Keys can be attached to a lease, which its owner renews and which ends
//! by a revoke or by an expiry the leader decides and replicates; its keys
//! are deleted then. The [`leases`] module explains why expiry is a
//! command and not something a replica notices by its clock.
//!
//! # Shortcuts
//!
//! * A sweep scans every session. A production system with many clients
//!   would also index sessions by last-used time, so that a sweep reads only
//!   the expired ones.
//! * A session remembers its whole last outcome, which for a
//!   compare-and-swap includes the current value (up to the server's value
//!   limit).
//! * The session record's encoding includes [`WriteOutcome`]'s: changing
//!   that type changes the format of state on disk and in snapshots.
//! * A record of this module that fails to decode is a
//!   [`StateError::Corrupt`]: the node stops applying rather than guess.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tracing::{debug, trace};

use raft_core::app::{AppState, AppView, ApplyContext, KeyValue, StateError, StateEvent, StateMachine};
use raft_core::codec;

use crate::changes::{Change, ChangeKind, ChangeLog};
use crate::command::{
    KvCommand, KvResponse, SessionId, WriteOp, WriteOutcome, MAX_KEY_BYTES, SESSION_SWEEP_EVERY,
    SESSION_TTL_MS,
};

pub mod leases;

/// Prefix of the user's data: `d/` + key bytes → value bytes.
const DATA_PREFIX: &[u8] = b"d/";

/// Prefix of client sessions: `s/` + client id (big-endian) → `SessionRecord`.
const SESSION_PREFIX: &[u8] = b"s/";

/// The one key holding the state machine's own bookkeeping (`Meta`).
const META_KEY: &[u8] = b"m/meta";

/// How many entries one range read returns when a scan visits a whole
/// prefix; bounds the memory of a sweep or a digest, not their total work.
const SCAN_PAGE: usize = 256;

/// The replicated key-value state machine. See the [module docs](self).
///
/// [`KvStateMachine::new`] (also the `Default`) is the one every real node
/// runs; a server gives it a change log ([`KvStateMachine::with_change_log`]).
#[derive(Debug, Clone, Default)]
pub struct KvStateMachine {
    /// Ignore sessions; see [`KvStateMachine::unsafe_without_dedup`].
    unsafe_no_dedup: bool,
    /// Where changes to data keys are recorded for watchers, if anywhere.
    changes: Option<Arc<ChangeLog>>,
}

impl KvStateMachine {
    /// The state machine with exactly-once writes through client sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// **Testing only: breaks exactly-once writes.** A state machine that
    /// applies every command as if it carried no session, so each retry of a
    /// write applies again. It is a negative control of the Jepsen harness
    /// (`kv-server --unsafe-no-dedup`): with clients retrying writes whose
    /// answer was lost, a retried compare-and-swap applies twice, and the
    /// linearizability checker must report it.
    ///
    /// `apply` must not depend on local configuration, and this does: every
    /// replica of a cluster must be built the same way, or replicas that
    /// apply the same log reach different states.
    pub fn unsafe_without_dedup() -> Self {
        KvStateMachine { unsafe_no_dedup: true, changes: None }
    }

    /// This state machine, recording every change it makes to a data key
    /// in `changes` (see [`crate::changes`]). Recording is a side output:
    /// what `apply` does to the state is the same with or without it.
    pub fn with_change_log(self, changes: Arc<ChangeLog>) -> Self {
        KvStateMachine { changes: Some(changes), ..self }
    }

    /// The change log it records into, if any.
    pub fn change_log(&self) -> Option<&Arc<ChangeLog>> {
        self.changes.as_ref()
    }
}

/// Why a key is not accepted. The server checks the same rule before
/// proposing ([`validate_key`]); the state machine checks it again during
/// apply and answers [`KvResponse::Rejected`] with this error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// The key is the empty string.
    #[error("the key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`] bytes of UTF-8.
    #[error("the key is {len} bytes; the limit is {MAX_KEY_BYTES}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
}

/// Checks that `key` may be written: non-empty and at most
/// [`MAX_KEY_BYTES`] bytes. (UTF-8 is guaranteed by `String`.)
pub fn validate_key(key: &str) -> Result<(), InvalidKey> {
    if key.is_empty() {
        Err(InvalidKey::Empty)
    } else if key.len() > MAX_KEY_BYTES {
        Err(InvalidKey::TooLong { len: key.len() })
    } else {
        Ok(())
    }
}

/// What a session remembers about its last `seq`: the reply it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Remembered {
    /// The write was applied with this outcome.
    Outcome(WriteOutcome),
    /// The write was rejected for this reason.
    Rejected(String),
    /// The write named a lease that does not exist. (Added with leases, at
    /// the end so that older session records decode as before.)
    LeaseNotFound(u64),
}

impl Remembered {
    /// The reply to the command that produced it.
    fn first_reply(self) -> KvResponse {
        match self {
            Remembered::Outcome(o) => KvResponse::Applied(o),
            Remembered::Rejected(reason) => KvResponse::Rejected { reason },
            Remembered::LeaseNotFound(id) => KvResponse::LeaseNotFound { id },
        }
    }

    /// The reply to a retry of that command: the same answer, marked as a
    /// duplicate when there is an outcome to repeat.
    fn retry_reply(self) -> KvResponse {
        match self {
            Remembered::Outcome(o) => KvResponse::Duplicate(o),
            Remembered::Rejected(reason) => KvResponse::Rejected { reason },
            Remembered::LeaseNotFound(id) => KvResponse::LeaseNotFound { id },
        }
    }
}

/// One client's session, stored under `s/` + client id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionRecord {
    /// The highest `seq` applied for this client.
    last_seq: u64,
    /// The reply `last_seq` got, repeated to its retries.
    reply: Remembered,
    /// Log time of the last command that applied or repeated `last_seq`.
    last_used_ms: u64,
}

impl SessionRecord {
    /// Whether a sweep at `log_time_ms` forgets this session.
    fn expired_at(&self, log_time_ms: u64) -> bool {
        self.last_used_ms.saturating_add(SESSION_TTL_MS) < log_time_ms
    }
}

/// The state machine's bookkeeping, stored under `m/meta`. Absent means
/// all zeros (nothing applied yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    /// Log time: the largest `proposed_at_ms` applied so far. Never decreases.
    log_time_ms: u64,
    /// The index at which sessions were last swept (0: never).
    swept_at_index: u64,
}

impl StateMachine for KvStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;

    /// Applies one write. Order of work, identical on every replica:
    /// advance log time, apply the command through its session, sweep
    /// expired sessions if one is due, save log time.
    fn apply(
        &self,
        state: &mut AppState<'_>,
        ctx: ApplyContext,
        command: KvCommand,
    ) -> Result<KvResponse, StateError> {
        let before: Meta = match state.get(META_KEY)? {
            Some(bytes) => decode_record(META_KEY, &bytes)?,
            None => Meta::default(),
        };
        let mut meta = before;
        // The maximum, not the command's own time: a new leader whose clock
        // is behind the old one's must not turn log time back, or sessions
        // last used under the old leader would look younger than they are
        // and outlive their TTL.
        meta.log_time_ms = meta.log_time_ms.max(command.proposed_at_ms);

        trace!(index = ctx.index(), key = command.op.key(), op = command.op.name(), "applying KV command");
        let command = if self.unsafe_no_dedup { KvCommand { session: None, ..command } } else { command };
        let sink = ChangeSink { log: self.changes.as_deref(), index: ctx.index(), lease: None };
        let reply = apply_in_session(state, sink, meta.log_time_ms, command)?;

        // Integer division: true at the first command whose index is at or
        // past a multiple of SESSION_SWEEP_EVERY that no sweep covered yet.
        if ctx.index() / SESSION_SWEEP_EVERY > meta.swept_at_index / SESSION_SWEEP_EVERY {
            let removed = sweep_expired_sessions(state, meta.log_time_ms)?;
            meta.swept_at_index = ctx.index();
            debug!(index = ctx.index(), removed, log_time_ms = meta.log_time_ms, "swept client sessions");
        }

        if meta != before {
            state.insert(META_KEY, &codec::encode(&meta))?;
        }
        Ok(reply)
    }

    /// Publishes or drops the changes `apply` staged (see [`crate::changes`]).
    fn on_state_event(&self, event: StateEvent) {
        if let Some(changes) = &self.changes {
            changes.on_state_event(event);
        }
    }
}

/// Where [`change_key`] records: the node's change log, if it keeps one,
/// the index of the command being applied, and the lease whose end is
/// deleting keys, if that is what the command is doing.
#[derive(Debug, Clone, Copy)]
struct ChangeSink<'a> {
    log: Option<&'a ChangeLog>,
    index: u64,
    /// Set by `leases::end_lease` for the keys it deletes.
    lease: Option<u64>,
}

/// Sets the data key `key` to `value` (`None`: removes it), and records the
/// change, with the value before it, for watchers; returns the value before.
///
/// This is the only way `apply` changes data, so no change escapes the
/// change stream. `kind` says why the key changes: a put (or a successful
/// compare-and-swap), a delete, or a lease expiry. Removing a key that does
/// not exist changes nothing and records nothing.
fn change_key(
    state: &mut AppState<'_>,
    sink: ChangeSink<'_>,
    kind: ChangeKind,
    key: &str,
    value: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, StateError> {
    let map_key = data_key(key);
    let prev = match value {
        Some(v) => state.replace(&map_key, v)?,
        None => {
            let Some(prev) = state.get(&map_key)? else { return Ok(None) };
            state.remove(&map_key)?;
            Some(prev)
        }
    };
    if let Some(log) = sink.log {
        let value = value.map(<[u8]>::to_vec);
        log.stage(Change {
            index: sink.index,
            kind,
            key: key.to_owned(),
            value,
            prev: prev.clone(),
            lease: sink.lease,
        });
    }
    Ok(prev)
}

/// Applies `command`, deduplicating through its session if it has one.
fn apply_in_session(
    state: &mut AppState<'_>,
    sink: ChangeSink<'_>,
    log_time_ms: u64,
    command: KvCommand,
) -> Result<KvResponse, StateError> {
    let Some(SessionId { client_id, seq }) = command.session else {
        // No session: no deduplication, a retry may apply twice.
        return Ok(validate_and_write(state, sink, log_time_ms, &command.op)?.first_reply());
    };

    let session_key = session_key(client_id);
    if let Some(bytes) = state.get(&session_key)? {
        let mut record: SessionRecord = decode_record(&session_key, &bytes)?;
        if seq == record.last_seq {
            // A retry of the last write: repeat its answer, write no data,
            // and keep the session alive for the client still retrying.
            if record.last_used_ms != log_time_ms {
                record.last_used_ms = log_time_ms;
                state.insert(&session_key, &codec::encode(&record))?;
            }
            return Ok(record.reply.retry_reply());
        }
        if seq < record.last_seq {
            return Ok(KvResponse::StaleSequence { last_seq: record.last_seq });
        }
    }

    let reply = validate_and_write(state, sink, log_time_ms, &command.op)?;
    let record = SessionRecord { last_seq: seq, reply: reply.clone(), last_used_ms: log_time_ms };
    state.insert(&session_key, &codec::encode(&record))?;
    Ok(reply.first_reply())
}

/// Validates the key and, if it is valid, performs the write.
fn validate_and_write(
    state: &mut AppState<'_>,
    sink: ChangeSink<'_>,
    log_time_ms: u64,
    op: &WriteOp,
) -> Result<Remembered, StateError> {
    if let Some(done) = leases::apply(state, sink, log_time_ms, op)? {
        return Ok(done);
    }
    let Some(key) = op.key() else {
        unreachable!("invariant: every operation that is not a lease operation names a key")
    };
    if let Err(e) = validate_key(key) {
        return Ok(Remembered::Rejected(e.to_string()));
    }
    let outcome = match op {
        WriteOp::Put { value, .. } => {
            let prev = change_key(state, sink, ChangeKind::Put, key, Some(value))?;
            leases::detach(state, key)?;
            WriteOutcome::Put { created: prev.is_none() }
        }
        WriteOp::PutWithLease { value, lease, .. } => {
            if let Err(refused) = leases::check_attach(state, key, *lease)? {
                return Ok(refused);
            }
            let prev = change_key(state, sink, ChangeKind::Put, key, Some(value))?;
            leases::attach(state, key, *lease)?;
            WriteOutcome::Put { created: prev.is_none() }
        }
        WriteOp::Delete { .. } => {
            leases::detach(state, key)?;
            let prev = change_key(state, sink, ChangeKind::Delete, key, None)?;
            WriteOutcome::Delete { existed: prev.is_some() }
        }
        WriteOp::Cas { expected, value, .. } => {
            let current = state.get(&data_key(key))?;
            // `expected: None` matches only an absent key: create-if-absent.
            if current.as_deref() == expected.as_deref().map(|e| e.as_slice()) {
                change_key(state, sink, ChangeKind::Put, key, Some(value))?;
                leases::detach(state, key)?;
                WriteOutcome::Cas { succeeded: true, current: Some(value.clone()) }
            } else {
                WriteOutcome::Cas { succeeded: false, current: current.map(ByteBuf::from) }
            }
        }
        WriteOp::LeaseGrant { .. }
        | WriteOp::LeaseKeepAlive { .. }
        | WriteOp::LeaseRevoke { .. }
        | WriteOp::ExpireLeases { .. } => {
            unreachable!("invariant: lease operations were applied by leases::apply above")
        }
    };
    Ok(Remembered::Outcome(outcome))
}

/// Removes every session unused for longer than [`SESSION_TTL_MS`] of log
/// time; returns how many were removed.
fn sweep_expired_sessions(state: &mut AppState<'_>, log_time_ms: u64) -> Result<usize, StateError> {
    let mut expired = Vec::new();
    for_each_with_prefix(
        |start, limit| state.scan_prefix(SESSION_PREFIX, start, limit),
        SESSION_PREFIX,
        |key, value| {
            let record: SessionRecord = decode_record(&key, &value)?;
            if record.expired_at(log_time_ms) {
                expired.push(key);
            }
            Ok(())
        },
    )?;
    for key in &expired {
        state.remove(key)?;
    }
    Ok(expired.len())
}

/// The value stored under `key`, if any.
pub fn get(view: &AppView, key: &str) -> Result<Option<Vec<u8>>, StateError> {
    view.get(&data_key(key))
}

/// Keys and their values, in key order, as [`list`] returns them.
pub type Listing = Vec<(String, Vec<u8>)>;

/// Up to `limit` keys that start with `prefix`, with their values, in byte
/// order of the keys; and whether more keys with that prefix exist. An
/// empty prefix lists everything.
pub fn list(view: &AppView, prefix: &str, limit: usize) -> Result<(Listing, bool), StateError> {
    let prefix = data_key(prefix);
    // One more than asked for tells whether there are more.
    let mut pairs = view.scan_prefix(&prefix, &prefix, limit.saturating_add(1))?;
    let more = pairs.len() > limit;
    pairs.truncate(limit);
    let items = pairs.into_iter().map(|(k, v)| (user_key(&k), v)).collect();
    Ok((items, more))
}

/// A digest of the data (keys and values, not sessions or meta) as 16 hex
/// digits. Two replicas whose data is equal have equal digests; different
/// data gives different digests except for a hash collision.
///
/// The hash is FNV-1a 64, written out below, over each key and value in key
/// order, each preceded by its length as 8 little-endian bytes (so that
/// `{"ab": "c"}` and `{"a": "bc"}` differ). It is chosen because it is fixed:
/// the same bytes hash the same in every process, version and build, unlike
/// `std`'s `DefaultHasher`, whose algorithm the standard library may change.
/// It is not a cryptographic hash: it detects accidental divergence, not
/// tampering.
pub fn digest(view: &AppView) -> Result<String, StateError> {
    let mut hash = Fnv1a64::new();
    for_each_with_prefix(
        |start, limit| view.scan_prefix(DATA_PREFIX, start, limit),
        DATA_PREFIX,
        |key, value| {
            let key = &key[DATA_PREFIX.len()..];
            hash.write(&(key.len() as u64).to_le_bytes());
            hash.write(key);
            hash.write(&(value.len() as u64).to_le_bytes());
            hash.write(&value);
            Ok(())
        },
    )?;
    Ok(format!("{:016x}", hash.finish()))
}

/// How many client sessions are remembered (for metrics and tests).
pub fn session_count(view: &AppView) -> Result<usize, StateError> {
    count_prefix(view, SESSION_PREFIX)
}

/// How many keys hold data (what `GET /v1/kv` would list, all pages).
pub fn key_count(view: &AppView) -> Result<usize, StateError> {
    count_prefix(view, DATA_PREFIX)
}

fn count_prefix(view: &AppView, prefix: &[u8]) -> Result<usize, StateError> {
    let mut count = 0;
    for_each_with_prefix(
        |start, limit| view.scan_prefix(prefix, start, limit),
        prefix,
        |_, _| {
            count += 1;
            Ok(())
        },
    )?;
    Ok(count)
}

/// The 64-bit Fowler–Noll–Vo hash, variant 1a: for each byte, xor it in,
/// then multiply by the FNV prime.
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a64(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Visits every entry whose key starts with `prefix`, in key order, reading
/// [`SCAN_PAGE`] entries at a time through `scan(start, limit)`.
fn for_each_with_prefix(
    mut scan: impl FnMut(&[u8], usize) -> Result<Vec<KeyValue>, StateError>,
    prefix: &[u8],
    mut visit: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let mut start = prefix.to_vec();
    loop {
        let page = scan(&start, SCAN_PAGE)?;
        let full = page.len() == SCAN_PAGE;
        if let Some((last, _)) = page.last() {
            // The smallest key greater than `last`: `last` followed by 0.
            start = last.clone();
            start.push(0);
        }
        for (k, v) in page {
            visit(k, v)?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// The map key of the user's `key`.
fn data_key(key: &str) -> Vec<u8> {
    [DATA_PREFIX, key.as_bytes()].concat()
}

/// The user's key of a map key under [`DATA_PREFIX`].
fn user_key(map_key: &[u8]) -> String {
    // Data keys are written only from a `String`, so they are UTF-8; the
    // lossy conversion only matters for a database that is already corrupt.
    String::from_utf8_lossy(map_key.strip_prefix(DATA_PREFIX).unwrap_or(map_key)).into_owned()
}

/// The map key of a client's session.
fn session_key(client_id: u64) -> Vec<u8> {
    [SESSION_PREFIX, &client_id.to_be_bytes()].concat()
}

/// Decodes a session record or the meta record.
///
/// These records are written only by this module, in this format, inside
/// redb (which checksums its pages), and reach other nodes only inside
/// snapshots of the same format. Bytes that do not decode mean the
/// invariant "every record under `s/` and `m/` was written by this
/// version's encoder" is broken; the node must stop rather than guess,
/// because a guess (such as "no session") could make this replica apply a
/// write that the others deduplicated. So it is a [`StateError::Corrupt`],
/// which stops the node's apply loop.
fn decode_record<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StateError> {
    codec::decode(bytes).map_err(|e| {
        StateError::corrupt(format!(
            "the record under {:?} does not decode: {e}",
            String::from_utf8_lossy(key)
        ))
    })
}

#[cfg(test)]
mod tests {
    //! These tests drive the state machine through `raft-core`'s real
    //! storage (an in-memory redb), applying log entries the way openraft
    //! does, and read back through the same views the server uses.

    use std::collections::BTreeMap;

    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;
    use proptest::prelude::*;
    use raft_core::storage::{Db, StateMachineStore};
    use raft_core::types::{log_id, Batch, Entry, EntryPayload};

    use super::*;

    /// A plausible wall clock at proposal (ms since the Unix epoch).
    pub(super) const T0: u64 = 1_700_000_000_000;

    /// One replica's state machine, fed log entries one index at a time.
    pub(super) struct Replica {
        pub(super) store: StateMachineStore,
        pub(super) next_index: u64,
    }

    impl Replica {
        pub(super) fn new() -> Self {
            Self::of(KvStateMachine::new())
        }

        fn of(sm: KvStateMachine) -> Self {
            Replica { store: StateMachineStore::open(Db::in_memory(), sm).expect("open"), next_index: 1 }
        }

        /// Makes the next entry land at `index`, as if openraft had applied
        /// blank or membership entries in between (the application never
        /// sees those).
        pub(super) fn jump_to(&mut self, index: u64) {
            assert!(index >= self.next_index, "log indexes only grow");
            self.next_index = index;
        }

        /// Applies one entry at the next index; returns its encoded replies.
        pub(super) async fn apply_entry(&mut self, payload: EntryPayload) -> Vec<ByteBuf> {
            let log_id = log_id(1, self.next_index);
            self.next_index += 1;
            let mut replies = self.store.apply_blocking(vec![Entry { log_id, payload }]).expect("apply");
            assert_eq!(replies.len(), 1, "one Replies per entry");
            replies.remove(0).0
        }

        /// Applies `commands` as one batch entry (sharing one log index).
        pub(super) async fn apply_batch(&mut self, commands: &[KvCommand]) -> Vec<KvResponse> {
            let batch = Batch::new(commands.iter().map(|c| ByteBuf::from(codec::encode(c))).collect());
            let replies = self.apply_entry(EntryPayload::Normal(batch)).await;
            replies
                .iter()
                .map(|r| {
                    codec::decode::<Result<KvResponse, String>>(r)
                        .expect("reply decodes")
                        .expect("command decodes")
                })
                .collect()
        }

        /// Applies one command in its own entry.
        pub(super) async fn apply(&mut self, command: KvCommand) -> KvResponse {
            self.apply_batch(&[command]).await.remove(0)
        }

        pub(super) fn view(&self) -> AppView {
            self.store.view().expect("view")
        }

        pub(super) fn get(&self, key: &str) -> Option<Vec<u8>> {
            get(&self.view(), key).expect("get")
        }

        pub(super) fn digest(&self) -> String {
            digest(&self.view()).expect("digest")
        }

        pub(super) fn sessions(&self) -> usize {
            session_count(&self.view()).expect("session_count")
        }
    }

    pub(super) fn bytes(s: &str) -> ByteBuf {
        ByteBuf::from(s.as_bytes())
    }

    pub(super) fn put(key: &str, value: &str) -> WriteOp {
        WriteOp::Put { key: key.into(), value: bytes(value) }
    }

    pub(super) fn delete(key: &str) -> WriteOp {
        WriteOp::Delete { key: key.into() }
    }

    pub(super) fn cas(key: &str, expected: Option<&str>, value: &str) -> WriteOp {
        WriteOp::Cas { key: key.into(), expected: expected.map(bytes), value: bytes(value) }
    }

    /// A command without a session, proposed at `T0`.
    pub(super) fn plain(op: WriteOp) -> KvCommand {
        KvCommand { session: None, proposed_at_ms: T0, op }
    }

    /// A command of session `(client_id, seq)`, proposed at `at_ms`.
    pub(super) fn sessioned(client_id: u64, seq: u64, at_ms: u64, op: WriteOp) -> KvCommand {
        KvCommand { session: Some(SessionId { client_id, seq }), proposed_at_ms: at_ms, op }
    }

    pub(super) fn applied_put(created: bool) -> KvResponse {
        KvResponse::Applied(WriteOutcome::Put { created })
    }

    #[tokio::test]
    async fn put_then_get_returns_value_and_reports_whether_created() {
        let mut r = Replica::new();
        assert_eq!(r.get("k"), None);
        assert_eq!(r.apply(plain(put("k", "v1"))).await, applied_put(true));
        assert_eq!(r.get("k"), Some(b"v1".to_vec()));
        assert_eq!(r.apply(plain(put("k", "v2"))).await, applied_put(false));
        assert_eq!(r.get("k"), Some(b"v2".to_vec()));
    }

    /// Every change the change log holds, as (index, kind, key, value, prev).
    type Seen = (u64, ChangeKind, &'static str, Option<&'static str>, Option<&'static str>);
    /// A [`Seen`] with owned strings.
    type Recorded = (u64, ChangeKind, String, Option<String>, Option<String>);

    fn changes(log: &ChangeLog) -> Vec<Recorded> {
        let text = |v: &Option<Vec<u8>>| v.as_ref().map(|v| String::from_utf8(v.clone()).unwrap());
        match log.read(1, usize::MAX, 0) {
            crate::changes::Read::Changes { indexes, .. } => indexes
                .iter()
                .flat_map(|i| i.changes.iter())
                .map(|c| (c.index, c.kind, c.key.clone(), text(&c.value), text(&c.prev)))
                .collect(),
            other => panic!("history from index 1: {other:?}"),
        }
    }

    fn owned(seen: &[Seen]) -> Vec<Recorded> {
        seen.iter()
            .map(|(i, k, key, v, p)| (*i, *k, key.to_string(), v.map(Into::into), p.map(Into::into)))
            .collect()
    }

    #[tokio::test]
    async fn every_data_change_is_recorded_once_with_its_before_image_and_nothing_else_is() {
        let log = Arc::new(ChangeLog::new(Default::default()));
        let mut r = Replica::of(KvStateMachine::new().with_change_log(log.clone()));
        use ChangeKind::{Delete, Put};

        r.apply(plain(put("k", "1"))).await; // 1
        r.apply(sessioned(7, 1, T0, put("k", "2"))).await; // 2
        r.apply(sessioned(7, 1, T0, put("k", "2"))).await; // 3: a duplicate, changes nothing
        r.apply(plain(cas("k", Some("2"), "3"))).await; // 4
        r.apply(plain(cas("k", Some("2"), "4"))).await; // 5: a mismatch, changes nothing
        r.apply(plain(delete("k"))).await; // 6
        r.apply(plain(delete("k"))).await; // 7: nothing to delete
        r.apply(plain(put("", "v"))).await; // 8: rejected
        r.apply_batch(&[plain(put("a", "x")), plain(put("b", "y"))]).await; // 9: one entry, two changes
        assert_eq!(
            changes(&log),
            owned(&[
                (1, Put, "k", Some("1"), None),
                (2, Put, "k", Some("2"), Some("1")),
                (4, Put, "k", Some("3"), Some("2")),
                (6, Delete, "k", None, Some("3")),
                (9, Put, "a", Some("x"), None),
                (9, Put, "b", Some("y"), None),
            ])
        );
        assert_eq!(log.next_index(), 10);
    }

    /// A lease's keys leave through the same path as any delete: watchers
    /// see `delete` for a revoke and `expire` for an expiry, with the value
    /// before; a put that moves a key off its lease is an ordinary put.
    #[tokio::test]
    async fn a_lease_ending_records_each_of_its_keys_as_deleted_or_expired() {
        let log = Arc::new(ChangeLog::new(Default::default()));
        let mut r = Replica::of(KvStateMachine::new().with_change_log(log.clone()));
        use ChangeKind::{Delete, Expire, Put};
        let at = |ms: u64, op: WriteOp| KvCommand { session: None, proposed_at_ms: ms, op };
        let leased = |key: &str, value: &str, lease: u64| WriteOp::PutWithLease {
            key: key.into(),
            value: ByteBuf::from(value.as_bytes().to_vec()),
            lease,
        };
        r.apply(at(T0, WriteOp::LeaseGrant { ttl_ms: 2_000 })).await; // 1: lease 1
        r.apply(at(T0, WriteOp::LeaseGrant { ttl_ms: 2_000 })).await; // 2: lease 2
        r.apply(at(T0, leased("a", "1", 1))).await; // 3
        r.apply(at(T0, leased("b", "2", 2))).await; // 4
        r.apply(at(T0, WriteOp::LeaseRevoke { id: 1 })).await; // 5
        let expire =
            WriteOp::ExpireLeases { leases: vec![crate::command::ExpiredLease { id: 2, renewals: 0 }] };
        r.apply(at(T0 + 2_000, expire)).await; // 6
        assert_eq!(
            changes(&log),
            owned(&[
                (3, Put, "a", Some("1"), None),
                (4, Put, "b", Some("2"), None),
                (5, Delete, "a", None, Some("1")),
                (6, Expire, "b", None, Some("2")),
            ])
        );
    }

    #[tokio::test]
    async fn recording_changes_does_not_change_what_apply_does() {
        let log = Arc::new(ChangeLog::new(Default::default()));
        let (mut with, mut without) =
            (Replica::of(KvStateMachine::new().with_change_log(log)), Replica::new());
        for c in [plain(put("a", "1")), sessioned(1, 1, T0, cas("a", Some("1"), "2")), plain(delete("a"))] {
            assert_eq!(with.apply(c.clone()).await, without.apply(c).await);
        }
        assert_eq!(with.digest(), without.digest());
        assert_eq!(with.sessions(), without.sessions());
    }

    #[tokio::test]
    async fn delete_reports_whether_the_key_existed() {
        let mut r = Replica::new();
        r.apply(plain(put("k", "v"))).await;
        let existed = |existed| KvResponse::Applied(WriteOutcome::Delete { existed });
        assert_eq!(r.apply(plain(delete("k"))).await, existed(true));
        assert_eq!(r.get("k"), None);
        assert_eq!(r.apply(plain(delete("k"))).await, existed(false));
    }

    #[tokio::test]
    async fn cas_with_expected_none_creates_only_if_absent() {
        let mut r = Replica::new();
        assert_eq!(
            r.apply(plain(cas("k", None, "first"))).await,
            KvResponse::Applied(WriteOutcome::Cas { succeeded: true, current: Some(bytes("first")) })
        );
        assert_eq!(
            r.apply(plain(cas("k", None, "second"))).await,
            KvResponse::Applied(WriteOutcome::Cas { succeeded: false, current: Some(bytes("first")) })
        );
        assert_eq!(r.get("k"), Some(b"first".to_vec()));
    }

    #[tokio::test]
    async fn cas_mismatch_returns_current_value_and_changes_nothing() {
        let mut r = Replica::new();
        // Expecting a value on an absent key fails and reports it absent.
        assert_eq!(
            r.apply(plain(cas("k", Some("x"), "y"))).await,
            KvResponse::Applied(WriteOutcome::Cas { succeeded: false, current: None })
        );
        assert_eq!(r.get("k"), None);

        r.apply(plain(put("k", "a"))).await;
        let digest = r.digest();
        assert_eq!(
            r.apply(plain(cas("k", Some("b"), "c"))).await,
            KvResponse::Applied(WriteOutcome::Cas { succeeded: false, current: Some(bytes("a")) })
        );
        assert_eq!(r.digest(), digest);
    }

    #[tokio::test]
    async fn cas_match_replaces_value() {
        let mut r = Replica::new();
        r.apply(plain(put("k", "a"))).await;
        assert_eq!(
            r.apply(plain(cas("k", Some("a"), "b"))).await,
            KvResponse::Applied(WriteOutcome::Cas { succeeded: true, current: Some(bytes("b")) })
        );
        assert_eq!(r.get("k"), Some(b"b".to_vec()));
    }

    #[tokio::test]
    async fn commands_without_session_are_not_deduplicated() {
        let mut r = Replica::new();
        let c = plain(put("k", "v"));
        assert_eq!(r.apply(c.clone()).await, applied_put(true));
        assert_eq!(r.apply(c).await, applied_put(false));
        assert_eq!(r.sessions(), 0);
    }

    #[tokio::test]
    async fn retried_seq_returns_duplicate_and_does_not_overwrite_newer_value() {
        let mut r = Replica::new();
        let first = sessioned(1, 1, T0, put("k", "v1"));
        assert_eq!(r.apply(first.clone()).await, applied_put(true));
        // Another client writes after it; then the first client's retry of
        // seq 1 arrives (its first reply was lost).
        r.apply(sessioned(2, 1, T0, put("k", "v2"))).await;
        let digest = r.digest();
        assert_eq!(r.apply(first).await, KvResponse::Duplicate(WriteOutcome::Put { created: true }));
        assert_eq!(r.get("k"), Some(b"v2".to_vec()));
        assert_eq!(r.digest(), digest);
    }

    #[tokio::test]
    async fn retried_cas_repeats_its_remembered_outcome() {
        let mut r = Replica::new();
        let first = sessioned(1, 1, T0, cas("k", None, "mine"));
        let outcome = WriteOutcome::Cas { succeeded: true, current: Some(bytes("mine")) };
        assert_eq!(r.apply(first.clone()).await, KvResponse::Applied(outcome.clone()));
        r.apply(plain(delete("k"))).await;
        // Re-executed, the CAS would now succeed again and recreate the key.
        assert_eq!(r.apply(first).await, KvResponse::Duplicate(outcome));
        assert_eq!(r.get("k"), None);
    }

    /// The negative control of the test above: without deduplication the
    /// retried CAS executes again, now against a changed value, and reports
    /// a mismatch instead of its remembered success.
    #[tokio::test]
    async fn without_dedup_a_retried_cas_applies_again() {
        let mut r = Replica::of(KvStateMachine::unsafe_without_dedup());
        let first = sessioned(1, 1, T0, cas("k", None, "mine"));
        let applied = |succeeded, current| KvResponse::Applied(WriteOutcome::Cas { succeeded, current });
        assert_eq!(r.apply(first.clone()).await, applied(true, Some(bytes("mine"))));
        r.apply(plain(put("k", "theirs"))).await;
        assert_eq!(r.apply(first).await, applied(false, Some(bytes("theirs"))));
        assert_eq!(r.sessions(), 0, "no session is remembered");
    }

    #[tokio::test]
    async fn older_seq_is_stale_and_changes_nothing() {
        let mut r = Replica::new();
        r.apply(sessioned(1, 1, T0, put("k", "v1"))).await;
        r.apply(sessioned(1, 2, T0, put("k", "v2"))).await;
        let digest = r.digest();
        assert_eq!(
            r.apply(sessioned(1, 1, T0, put("k", "v1"))).await,
            KvResponse::StaleSequence { last_seq: 2 }
        );
        assert_eq!(r.get("k"), Some(b"v2".to_vec()));
        assert_eq!(r.digest(), digest);
    }

    #[tokio::test]
    async fn sessions_of_different_clients_are_independent() {
        let mut r = Replica::new();
        r.apply(sessioned(1, 5, T0, put("a", "1"))).await;
        // Client 2 starts at a lower seq than client 1 reached: not stale.
        assert_eq!(r.apply(sessioned(2, 1, T0, put("b", "1"))).await, applied_put(true));
        assert_eq!(r.sessions(), 2);
    }

    #[tokio::test]
    async fn oversized_or_empty_key_is_rejected_and_changes_nothing() {
        let mut r = Replica::new();
        r.apply(plain(put("k", "v"))).await;
        let digest = r.digest();
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        for op in [put(&long, "v"), delete(&long), cas(&long, None, "v"), put("", "v")] {
            let reply = r.apply(plain(op)).await;
            assert!(matches!(reply, KvResponse::Rejected { .. }), "{reply:?}");
        }
        assert_eq!(r.digest(), digest);
        assert_eq!(r.sessions(), 0);
        assert_eq!(r.get(&long), None);

        let longest = "x".repeat(MAX_KEY_BYTES);
        assert_eq!(r.apply(plain(put(&longest, "v"))).await, applied_put(true));
    }

    #[tokio::test]
    async fn rejected_command_with_session_uses_up_its_seq() {
        let mut r = Replica::new();
        let bad = sessioned(1, 1, T0, put("", "v"));
        let reply = r.apply(bad.clone()).await;
        assert_eq!(reply, KvResponse::Rejected { reason: InvalidKey::Empty.to_string() });
        assert_eq!(r.sessions(), 1);
        // A retry gets the same answer, from the session record.
        assert_eq!(r.apply(bad.clone()).await, reply);
        // The next seq applies; after it the rejected seq is stale.
        assert_eq!(r.apply(sessioned(1, 2, T0, put("k", "v"))).await, applied_put(true));
        assert_eq!(r.apply(bad).await, KvResponse::StaleSequence { last_seq: 2 });
        assert_eq!(r.get(""), None);
    }

    #[tokio::test]
    async fn sessions_expire_only_at_a_sweep_index_by_log_time() {
        let mut r = Replica::new();
        let first = sessioned(1, 1, T0, put("k", "v"));
        r.apply(first.clone()).await;

        // Log time jumps past client 1's TTL, but no sweep is due yet.
        let late = T0 + SESSION_TTL_MS + 1;
        r.jump_to(SESSION_SWEEP_EVERY - 1);
        r.apply(sessioned(2, 1, late, put("other", "v"))).await;
        assert_eq!(r.sessions(), 2);

        // The sweep at the next multiple forgets client 1 (last used at T0)
        // and keeps client 2 (last used now).
        assert_eq!(r.next_index, SESSION_SWEEP_EVERY);
        r.apply(plain(put("tick", "v"))).await;
        assert_eq!(r.sessions(), 1);

        // The documented consequence: a retry after expiry applies again.
        assert_eq!(r.apply(first).await, applied_put(false));
        assert_eq!(
            r.apply(sessioned(2, 1, late, put("other", "v"))).await,
            KvResponse::Duplicate(WriteOutcome::Put { created: true })
        );
    }

    #[tokio::test]
    async fn duplicate_retry_keeps_its_session_alive() {
        let mut r = Replica::new();
        let first = sessioned(1, 1, T0, put("k", "v"));
        r.apply(first.clone()).await;
        let retry_at = T0 + SESSION_TTL_MS;
        let retry = KvCommand { proposed_at_ms: retry_at, ..first.clone() };
        assert!(matches!(r.apply(retry).await, KvResponse::Duplicate(_)));

        // Past T0's TTL but within the retry's: the session survives.
        r.jump_to(SESSION_SWEEP_EVERY);
        r.apply(KvCommand { proposed_at_ms: retry_at + 10, ..plain(put("tick", "v")) }).await;
        assert_eq!(r.sessions(), 1);
        assert!(matches!(r.apply(first).await, KvResponse::Duplicate(_)));
    }

    #[tokio::test]
    async fn leader_clock_going_back_does_not_turn_log_time_back() {
        let mut r = Replica::new();
        let old = sessioned(1, 1, T0, put("a", "v"));
        r.apply(old.clone()).await;
        let fast = T0 + 2 * SESSION_TTL_MS;
        let recent = sessioned(2, 1, fast, put("b", "v"));
        r.apply(recent.clone()).await;

        // A new leader whose clock is far behind proposes at the sweep
        // index. Log time stays at `fast`, so client 1 (last used at T0)
        // expires; had it gone back to T0, client 1 would survive.
        r.jump_to(SESSION_SWEEP_EVERY);
        r.apply(plain(put("tick", "v"))).await;
        assert_eq!(r.sessions(), 1);
        assert_eq!(r.apply(old).await, applied_put(false));

        // A retry proposed by the slow leader refreshes client 2 to log
        // time (`fast`), not to its own proposal time (T0): it survives a
        // sweep at fast + TTL/2, which would expire a session used at T0.
        let slow_retry = KvCommand { proposed_at_ms: T0, ..recent.clone() };
        assert!(matches!(r.apply(slow_retry).await, KvResponse::Duplicate(_)));
        r.jump_to(2 * SESSION_SWEEP_EVERY);
        r.apply(KvCommand { proposed_at_ms: fast + SESSION_TTL_MS / 2, ..plain(put("tick", "v")) }).await;
        assert!(matches!(r.apply(recent).await, KvResponse::Duplicate(_)));
    }

    #[tokio::test]
    async fn sweep_runs_once_per_index_when_commands_share_an_entry() {
        let mut r = Replica::new();
        r.apply(sessioned(1, 1, T0, put("a", "v"))).await;

        // One entry at the sweep index holds two commands; the first sweeps
        // (log time T0 + 1: nothing expired). The second carries a log time
        // that would expire client 1, but must not sweep a second time.
        r.jump_to(SESSION_SWEEP_EVERY);
        let late = T0 + SESSION_TTL_MS + 5;
        r.apply_batch(&[
            KvCommand { proposed_at_ms: T0 + 1, ..plain(put("b", "v")) },
            sessioned(2, 1, late, put("c", "v")),
        ])
        .await;
        assert_eq!(r.sessions(), 2);
        // Nor does any later index before the next multiple.
        r.apply(KvCommand { proposed_at_ms: late, ..plain(put("d", "v")) }).await;
        assert_eq!(r.sessions(), 2);

        r.jump_to(2 * SESSION_SWEEP_EVERY);
        r.apply(KvCommand { proposed_at_ms: late, ..plain(put("e", "v")) }).await;
        assert_eq!(r.sessions(), 1);
    }

    #[tokio::test]
    async fn sweep_happens_at_first_command_after_a_multiple_that_was_not_a_command() {
        let mut r = Replica::new();
        r.apply(sessioned(1, 1, T0, put("a", "v"))).await;
        r.jump_to(SESSION_SWEEP_EVERY - 1);
        r.apply(KvCommand { proposed_at_ms: T0 + SESSION_TTL_MS + 1, ..plain(put("b", "v")) }).await;
        // The entry at the multiple is a blank entry (a new leader's first).
        assert!(r.apply_entry(EntryPayload::Blank).await.is_empty());
        assert_eq!(r.sessions(), 1);
        r.apply(plain(put("c", "v"))).await;
        assert_eq!(r.sessions(), 0);
    }

    #[tokio::test]
    async fn list_returns_prefixed_keys_in_byte_order_and_reports_more() {
        let mut r = Replica::new();
        for key in ["b", "abc", "a", "ab", "a/x"] {
            r.apply(plain(put(key, key))).await;
        }
        let keys = |(items, more): (Listing, bool)| {
            (
                items
                    .into_iter()
                    .map(|(k, v)| {
                        assert_eq!(k.as_bytes(), v, "value is the key");
                        k
                    })
                    .collect::<Vec<_>>(),
                more,
            )
        };
        let v = r.view();
        assert_eq!(
            keys(list(&v, "a", 10).unwrap()),
            (vec!["a".into(), "a/x".into(), "ab".into(), "abc".into()], false)
        );
        assert_eq!(keys(list(&v, "a", 2).unwrap()), (vec!["a".into(), "a/x".into()], true));
        assert_eq!(
            keys(list(&v, "a", 4).unwrap()),
            (vec!["a".into(), "a/x".into(), "ab".into(), "abc".into()], false)
        );
        // Sessions and meta are not data, so an empty prefix lists data only.
        assert_eq!(keys(list(&v, "", usize::MAX).unwrap()).0.len(), 5);
        assert_eq!(keys(list(&v, "zz", 10).unwrap()), (vec![], false));
        assert_eq!(keys(list(&v, "", 0).unwrap()), (vec![], true));
    }

    #[test]
    fn fnv1a_matches_published_test_vectors() {
        // From the FNV reference test suite (Noll, "FNV hash test vectors").
        let hash = |s: &[u8]| {
            let mut h = Fnv1a64::new();
            h.write(s);
            h.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[tokio::test]
    async fn same_commands_give_equal_digests_and_different_data_different_ones() {
        let commands = [plain(put("a", "1")), plain(put("b", "2")), plain(cas("a", Some("1"), "3"))];
        let (mut x, mut y) = (Replica::new(), Replica::new());
        assert_eq!(x.digest(), y.digest());
        for c in &commands {
            x.apply(c.clone()).await;
            y.apply(c.clone()).await;
        }
        assert_eq!(x.digest(), y.digest());

        y.apply(plain(put("b", "other"))).await;
        assert_ne!(x.digest(), y.digest());
    }

    #[tokio::test]
    async fn digest_covers_data_only_and_separates_keys_from_values() {
        // Same data, one written through a session and one without.
        let (mut x, mut y) = (Replica::new(), Replica::new());
        x.apply(plain(put("k", "v"))).await;
        y.apply(sessioned(7, 1, T0 + 99, put("k", "v"))).await;
        assert_eq!(x.digest(), y.digest());

        let (mut p, mut q) = (Replica::new(), Replica::new());
        p.apply(plain(put("ab", "c"))).await;
        q.apply(plain(put("a", "bc"))).await;
        assert_ne!(p.digest(), q.digest());
    }

    #[tokio::test]
    async fn sessions_survive_snapshot_install_so_retries_stay_deduplicated() {
        let mut leader = Replica::new();
        let first = sessioned(1, 1, T0, put("k", "v1"));
        leader.apply(first.clone()).await;
        leader.apply(plain(put("k", "v2"))).await;

        let mut builder = leader.store.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("build snapshot");
        // What the leader sends to a follower that is too far behind.
        let snapshot = leader.store.get_current_snapshot().await.expect("read snapshot").expect("built");
        let mut follower = Replica::new();
        follower.store.install_snapshot(&snapshot.meta, snapshot.snapshot).await.expect("install snapshot");
        follower.jump_to(leader.next_index);

        assert_eq!(follower.view().applied(), leader.view().applied());
        assert_eq!(follower.digest(), leader.digest());
        assert_eq!(follower.sessions(), 1);
        assert_eq!(follower.apply(first).await, KvResponse::Duplicate(WriteOutcome::Put { created: true }));
        assert_eq!(follower.get("k"), Some(b"v2".to_vec()));
    }

    /// One step of a generated history: a new write by a client, or a
    /// retry of an earlier write (chosen among those already sent).
    #[derive(Debug, Clone)]
    enum Step {
        Write { client: u64, op: WriteOp },
        Retry(prop::sample::Index),
    }

    fn op_strategy() -> impl Strategy<Value = WriteOp> {
        let key = prop::sample::select(vec!["a", "b", "c"]);
        let value = prop::sample::select(vec!["1", "2"]);
        let expected = prop::option::of(prop::sample::select(vec!["1", "2"]));
        prop_oneof![
            (key.clone(), value.clone()).prop_map(|(k, v)| put(k, v)),
            key.clone().prop_map(delete),
            (key, expected, value).prop_map(|(k, e, v)| cas(k, e, v)),
        ]
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..3u64, op_strategy()).prop_map(|(client, op)| Step::Write { client, op }),
            1 => any::<prop::sample::Index>().prop_map(Step::Retry),
        ]
    }

    /// The data a history must produce: each write applied once, in order.
    fn model(writes: &[KvCommand]) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::new();
        for c in writes {
            match &c.op {
                WriteOp::Put { key, value } => {
                    data.insert(key.clone(), value.to_vec());
                }
                WriteOp::Delete { key } => {
                    data.remove(key);
                }
                WriteOp::Cas { key, expected, value } => {
                    if data.get(key).map(Vec::as_slice) == expected.as_deref().map(|e| e.as_slice()) {
                        data.insert(key.clone(), value.to_vec());
                    }
                }
                other => unreachable!("histories hold key writes only, not {other:?}"),
            }
        }
        data
    }

    /// Replica `once` applies each write once; replica `retried` applies
    /// the same writes interleaved with retries of earlier ones.
    async fn run_history(steps: Vec<Step>) {
        let (mut once, mut retried) = (Replica::new(), Replica::new());
        let mut seqs = [0u64; 3];
        let mut sent: Vec<(KvCommand, KvResponse)> = Vec::new();
        for step in steps {
            match step {
                Step::Write { client, op } => {
                    seqs[client as usize] += 1;
                    let c = sessioned(client, seqs[client as usize], T0 + sent.len() as u64, op);
                    let reply = once.apply(c.clone()).await;
                    assert_eq!(retried.apply(c.clone()).await, reply, "same reply on both replicas");
                    sent.push((c, reply));
                }
                Step::Retry(i) if !sent.is_empty() => {
                    let (c, first) = sent[i.index(sent.len())].clone();
                    let session = c.session.expect("generated writes have sessions");
                    let reply = retried.apply(c).await;
                    if session.seq == seqs[session.client_id as usize] {
                        let KvResponse::Applied(outcome) = first else { panic!("writes apply: {first:?}") };
                        assert_eq!(reply, KvResponse::Duplicate(outcome));
                    } else {
                        let last_seq = seqs[session.client_id as usize];
                        assert_eq!(reply, KvResponse::StaleSequence { last_seq });
                    }
                }
                Step::Retry(_) => {}
            }
        }
        let writes: Vec<KvCommand> = sent.into_iter().map(|(c, _)| c).collect();
        let expected: Vec<(String, Vec<u8>)> = model(&writes).into_iter().collect();
        assert_eq!(list(&once.view(), "", usize::MAX).unwrap(), (expected, false));
        assert_eq!(once.digest(), retried.digest());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn retries_never_change_the_data(steps in prop::collection::vec(step_strategy(), 1..60)) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(run_history(steps));
        }
    }
}
