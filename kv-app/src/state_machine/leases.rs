//! Leases in the replicated state: grant, renew, revoke, expire, and the
//! keys attached to them.
//!
//! A lease is a TTL that its owner keeps renewing; keys attached to it are
//! deleted when it ends. *When* it ends is the hard part. Every replica
//! applies the same commands to the same state, and that is only true if
//! `apply` reads nothing else, a clock least of all: a replica that deleted
//! keys when *its own* clock said a lease was over would delete them at a
//! different point in the log than its peers, and the replicas would hold
//! different data from then on. So expiry is not something a replica
//! notices while applying. The leader decides it, by its own clocks (see
//! `server/leases.rs`), and proposes [`WriteOp::ExpireLeases`]; the
//! replicas apply that command like any other write, at the same index.
//!
//! # What apply checks
//!
//! An expiry decided by the leader may reach the log after the lease was
//! renewed (the keepalive committed between the leader's decision and its
//! proposal), or it may come from a leader that was deposed meanwhile.
//! Apply therefore ends a lease only if, deterministically:
//!
//! * the lease still exists;
//! * its renewal count is the one the leader judged ([`ExpiredLease`]):
//!   a renewal after the decision increments it, and the stale expiry is
//!   then a no-op;
//! * its TTL has run out in *log time* (the state machine's own clock,
//!   the largest `proposed_at_ms` applied so far; see the parent module):
//!   `log_time >= renewed_at + ttl`, where `renewed_at` is the log time of
//!   its grant or last renewal. The leader proposes only once its own wall
//!   clock says so, and the command carries that clock reading, so a
//!   correct leader's expiry always passes this check.
//!
//! A keepalive, on the other hand, renews any lease that still exists,
//! however long ago its last renewal: a lease ends only when the leader
//! says so, never because one replica's arithmetic says it should have.
//!
//! # Storage layout
//!
//! | key                              | value                                 |
//! |----------------------------------|---------------------------------------|
//! | `l/` + lease id (8 bytes, BE)    | a `LeaseRecord`, [`codec`]            |
//! | `k/` + lease id (BE) + key       | empty: the key is attached to the lease |
//! | `a/` + key                       | the key's lease id (8 bytes, BE)      |
//! | `m/leases`                       | a `LeaseMeta`: next id, lease count   |
//! | `m/lease-totals`                 | a `LeaseTotals`: renewals, revokes, expiries |
//!
//! `k/` lists a lease's keys (to delete them), `a/` finds a key's lease (to
//! detach it when the key is overwritten without one). Ids come from a
//! counter that never goes back, so an id is never reused, and a keepalive
//! meant for a lease that expired cannot renew a later one. All of it is
//! replicated state: snapshots carry it, as they carry sessions.
//!
//! `LeaseTotals` counts what happened to leases for `/metrics` ([`stats`]).
//! It is replicated state like the rest, so every replica shows the same
//! totals at the same applied index, followers included, and they survive
//! restarts and travel in snapshots. It came after `LeaseMeta` under a key
//! of its own, since bincode cannot decode a record that gained fields: a
//! state written before it counts renewals, revokes and expiries from the
//! first one applied after.
//!
//! # Attaching and detaching
//!
//! [`WriteOp::PutWithLease`] attaches its key to the lease (moving it from
//! another lease if it had one); a lease that does not exist refuses the
//! put ([`crate::command::KvResponse::LeaseNotFound`], nothing written). A put without a
//! lease, a successful compare-and-swap and a delete detach the key, as in
//! etcd, where a put without a lease clears the key's lease.
//!
//! # Where keys are deleted
//!
//! Revoke and expiry delete keys in one place, `end_lease`, which is
//! where a change stream must record them (as `delete` for a revoke and
//! `expire` for an expiry: [`LeaseEnd`] says which).

use serde::{Deserialize, Serialize};

use raft_core::app::{AppState, AppView, StateError};
use raft_core::codec;

use super::{change_key, decode_record, for_each_with_prefix, user_key, ChangeSink, Remembered, SCAN_PAGE};
use crate::changes::ChangeKind;
use crate::command::{
    ExpiredLease, WriteOp, WriteOutcome, MAX_EXPIRE_BATCH, MAX_KEYS_PER_LEASE, MAX_LEASES, MAX_LEASE_TTL_MS,
    MIN_LEASE_TTL_MS,
};

/// Prefix of lease records: `l/` + id (big-endian) → `LeaseRecord`.
const LEASE_PREFIX: &[u8] = b"l/";

/// Prefix of a lease's keys: `k/` + id (big-endian) + key → empty.
const LEASE_KEYS_PREFIX: &[u8] = b"k/";

/// Prefix of the key → lease index: `a/` + key → id (big-endian).
const ATTACHED_PREFIX: &[u8] = b"a/";

/// The lease counters (`LeaseMeta`).
const LEASE_META_KEY: &[u8] = b"m/leases";

/// What happened to leases, for `/metrics` (`LeaseTotals`).
const LEASE_TOTALS_KEY: &[u8] = b"m/lease-totals";

/// One lease, stored under `l/` + id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    /// Time to live without a renewal, in ms.
    ttl_ms: u64,
    /// Log time of the grant or the last renewal.
    renewed_at_ms: u64,
    /// How many times it was renewed (0 after the grant).
    renewals: u64,
    /// How many keys are attached.
    keys: u64,
}

/// The lease counters, stored under `m/leases`. Absent means all zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseMeta {
    /// The last id handed out (0: none yet).
    last_id: u64,
    /// How many leases exist.
    count: u64,
}

/// What happened to leases since the state began, stored under
/// `m/lease-totals`. Absent means all zeros. (Grants need no count: ids
/// are handed out one by one, so `LeaseMeta::last_id` is the number of
/// grants.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseTotals {
    /// Keepalives applied to a lease that existed.
    keepalives: u64,
    /// Leases ended by a revoke.
    revoked: u64,
    /// Leases ended by the leader's expiry.
    expired: u64,
}

/// The lease figures `/metrics` shows, read from the applied state: the
/// same on every replica that applied the same entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases that exist now.
    pub alive: u64,
    /// Keys attached to those leases.
    pub attached_keys: u64,
    /// Leases ever granted.
    pub granted: u64,
    /// Keepalives applied (to a lease that existed; a retry answered from
    /// the session is not counted again).
    pub keepalives: u64,
    /// Leases ended by a revoke.
    pub revoked: u64,
    /// Leases ended by the leader's expiry.
    pub expired: u64,
}

/// A lease as the read API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: u64,
    /// Time to live without a renewal, in ms.
    pub ttl_ms: u64,
    /// Log time (ms since the Unix epoch, by the leaders' clocks) of its
    /// grant or last renewal.
    pub renewed_at_ms: u64,
    /// How many times it was renewed.
    pub renewals: u64,
    /// How many keys are attached.
    pub keys: u64,
}

/// Why a lease ended, for whoever records the deleted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Revoked by a client: its keys are deleted as if by a delete.
    Revoked,
    /// Not renewed for its TTL, by the leader's judgment.
    Expired,
}

/// Why a TTL is not accepted: out of [`MIN_LEASE_TTL_MS`]..=[`MAX_LEASE_TTL_MS`].
pub fn validate_ttl(ttl_ms: u64) -> Result<(), String> {
    if (MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(format!("ttl_ms is {ttl_ms}; it must be {MIN_LEASE_TTL_MS} to {MAX_LEASE_TTL_MS}"))
    }
}

/// Applies a lease operation; `None` for an operation that is not one.
pub(super) fn apply(
    state: &mut AppState<'_>,
    sink: ChangeSink<'_>,
    log_time_ms: u64,
    op: &WriteOp,
) -> Result<Option<Remembered>, StateError> {
    let done = match op {
        WriteOp::LeaseGrant { ttl_ms } => grant(state, log_time_ms, *ttl_ms)?,
        WriteOp::LeaseKeepAlive { id } => keep_alive(state, log_time_ms, *id)?,
        WriteOp::LeaseRevoke { id } => revoke(state, sink, *id)?,
        WriteOp::ExpireLeases { leases } => expire(state, sink, log_time_ms, leases)?,
        WriteOp::Put { .. } | WriteOp::Delete { .. } | WriteOp::Cas { .. } | WriteOp::PutWithLease { .. } => {
            return Ok(None)
        }
    };
    Ok(Some(done))
}

fn grant(state: &mut AppState<'_>, log_time_ms: u64, ttl_ms: u64) -> Result<Remembered, StateError> {
    if let Err(reason) = validate_ttl(ttl_ms) {
        return Ok(Remembered::Rejected(reason));
    }
    let mut meta = lease_meta(state)?;
    if meta.count >= MAX_LEASES {
        return Ok(Remembered::Rejected(format!(
            "{MAX_LEASES} leases exist, the most allowed; revoke one or let one expire first"
        )));
    }
    meta.last_id += 1;
    meta.count += 1;
    let id = meta.last_id;
    let record = LeaseRecord { ttl_ms, renewed_at_ms: log_time_ms, renewals: 0, keys: 0 };
    state.insert(&lease_key(id), &codec::encode(&record))?;
    state.insert(LEASE_META_KEY, &codec::encode(&meta))?;
    Ok(Remembered::Outcome(WriteOutcome::LeaseGranted { id, ttl_ms }))
}

fn keep_alive(state: &mut AppState<'_>, log_time_ms: u64, id: u64) -> Result<Remembered, StateError> {
    let Some(mut record) = lease_record(state, id)? else {
        return Ok(Remembered::LeaseNotFound(id));
    };
    record.renewed_at_ms = log_time_ms;
    record.renewals += 1;
    state.insert(&lease_key(id), &codec::encode(&record))?;
    count(state, |t| t.keepalives += 1)?;
    Ok(Remembered::Outcome(WriteOutcome::LeaseRenewed { id, ttl_ms: record.ttl_ms }))
}

fn revoke(state: &mut AppState<'_>, sink: ChangeSink<'_>, id: u64) -> Result<Remembered, StateError> {
    if lease_record(state, id)?.is_none() {
        return Ok(Remembered::LeaseNotFound(id));
    }
    let keys_deleted = end_lease(state, sink, id, LeaseEnd::Revoked)?;
    count(state, |t| t.revoked += 1)?;
    Ok(Remembered::Outcome(WriteOutcome::LeaseRevoked { id, keys_deleted }))
}

fn expire(
    state: &mut AppState<'_>,
    sink: ChangeSink<'_>,
    log_time_ms: u64,
    leases: &[ExpiredLease],
) -> Result<Remembered, StateError> {
    if leases.len() > MAX_EXPIRE_BATCH {
        return Ok(Remembered::Rejected(format!(
            "an expiry names {} leases; the most is {MAX_EXPIRE_BATCH}",
            leases.len()
        )));
    }
    let mut ids = Vec::new();
    for judged in leases {
        let Some(record) = lease_record(state, judged.id)? else { continue };
        let due = record.renewed_at_ms.saturating_add(record.ttl_ms) <= log_time_ms;
        if record.renewals == judged.renewals && due {
            end_lease(state, sink, judged.id, LeaseEnd::Expired)?;
            ids.push(judged.id);
        }
    }
    if !ids.is_empty() {
        count(state, |t| t.expired += ids.len() as u64)?;
    }
    Ok(Remembered::Outcome(WriteOutcome::LeasesExpired { ids }))
}

/// Adds to the lease totals.
fn count(state: &mut AppState<'_>, add: impl FnOnce(&mut LeaseTotals)) -> Result<(), StateError> {
    let mut totals: LeaseTotals = or_default(LEASE_TOTALS_KEY, state.get(LEASE_TOTALS_KEY)?)?;
    add(&mut totals);
    state.insert(LEASE_TOTALS_KEY, &codec::encode(&totals))
}

/// Ends lease `id`: deletes every key attached to it, their index entries
/// and the lease itself; returns how many keys were deleted. The one place
/// where a lease's keys are deleted, for a revoke and an expiry alike: a
/// change stream records each deleted key here, with `end` telling a
/// revoke (`delete`) from an expiry (`expire`).
pub(super) fn end_lease(
    state: &mut AppState<'_>,
    sink: ChangeSink<'_>,
    id: u64,
    end: LeaseEnd,
) -> Result<u64, StateError> {
    let kind = match end {
        LeaseEnd::Revoked => ChangeKind::Delete,
        LeaseEnd::Expired => ChangeKind::Expire,
    };
    // Every change recorded below names the lease that ended.
    let sink = ChangeSink { lease: Some(id), ..sink };
    let prefix = lease_keys_prefix(id);
    let mut deleted = 0;
    loop {
        // Everything read is removed, so each page starts at the prefix.
        let page = state.scan_prefix(&prefix, &prefix, SCAN_PAGE)?;
        if page.is_empty() {
            break;
        }
        for (entry, _) in page {
            let key = &entry[prefix.len()..];
            state.remove(&entry)?;
            state.remove(&attached_key(key))?;
            match std::str::from_utf8(key) {
                // Through the one function that changes data, so that
                // watchers see the key go (`delete` or `expire`).
                Ok(user_key) => {
                    change_key(state, sink, kind, user_key, None)?;
                }
                // Keys are validated as UTF-8 before they are attached;
                // an index entry that is not one is removed all the same.
                Err(_) => {
                    state.remove(&[super::DATA_PREFIX, key].concat())?;
                }
            }
            tracing::trace!(lease = id, ?end, key = %String::from_utf8_lossy(key), "deleted a lease's key");
            deleted += 1;
        }
    }
    state.remove(&lease_key(id))?;
    let mut meta = lease_meta(state)?;
    meta.count = meta.count.saturating_sub(1);
    state.insert(LEASE_META_KEY, &codec::encode(&meta))?;
    Ok(deleted)
}

/// Checks that `key` may be attached to lease `id`, before the put writes
/// anything: `Err` with the reply that refuses it.
pub(super) fn check_attach(
    state: &AppState<'_>,
    key: &str,
    id: u64,
) -> Result<Result<(), Remembered>, StateError> {
    let Some(record) = lease_record(state, id)? else {
        return Ok(Err(Remembered::LeaseNotFound(id)));
    };
    if attached_lease(state, key)? != Some(id) && record.keys >= MAX_KEYS_PER_LEASE {
        return Ok(Err(Remembered::Rejected(format!(
            "lease {id} holds {MAX_KEYS_PER_LEASE} keys, the most allowed"
        ))));
    }
    Ok(Ok(()))
}

/// Attaches `key` to lease `id` (which [`check_attach`] accepted),
/// detaching it from any other lease first.
pub(super) fn attach(state: &mut AppState<'_>, key: &str, id: u64) -> Result<(), StateError> {
    if attached_lease(state, key)? == Some(id) {
        return Ok(());
    }
    detach(state, key)?;
    let mut record = lease_record(state, id)?.ok_or_else(|| {
        StateError::corrupt(format!("invariant: lease {id} was checked to exist before attach"))
    })?;
    record.keys += 1;
    state.insert(&lease_key(id), &codec::encode(&record))?;
    state.insert(&[lease_keys_prefix(id).as_slice(), key.as_bytes()].concat(), &[])?;
    state.insert(&attached_key(key.as_bytes()), &id.to_be_bytes())?;
    Ok(())
}

/// Detaches `key` from its lease, if it has one (a put without a lease, a
/// successful CAS, a delete).
pub(super) fn detach(state: &mut AppState<'_>, key: &str) -> Result<(), StateError> {
    let Some(id) = attached_lease(state, key)? else { return Ok(()) };
    state.remove(&attached_key(key.as_bytes()))?;
    state.remove(&[lease_keys_prefix(id).as_slice(), key.as_bytes()].concat())?;
    if let Some(mut record) = lease_record(state, id)? {
        record.keys = record.keys.saturating_sub(1);
        state.insert(&lease_key(id), &codec::encode(&record))?;
    }
    Ok(())
}

/// The lease `key` is attached to, if any.
fn attached_lease(state: &AppState<'_>, key: &str) -> Result<Option<u64>, StateError> {
    let map_key = attached_key(key.as_bytes());
    match state.get(&map_key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(decode_id(&map_key, &bytes)?)),
    }
}

fn lease_record(state: &AppState<'_>, id: u64) -> Result<Option<LeaseRecord>, StateError> {
    let key = lease_key(id);
    state.get(&key)?.map(|bytes| decode_record(&key, &bytes)).transpose()
}

fn lease_meta(state: &AppState<'_>) -> Result<LeaseMeta, StateError> {
    or_default(LEASE_META_KEY, state.get(LEASE_META_KEY)?)
}

/// The record stored under `key` (read as `bytes`), or its default if
/// there is none.
fn or_default<T: serde::de::DeserializeOwned + Default>(
    key: &[u8],
    bytes: Option<Vec<u8>>,
) -> Result<T, StateError> {
    bytes.map_or_else(|| Ok(T::default()), |bytes| decode_record(key, &bytes))
}

/// Every lease, in id order.
pub fn leases(view: &AppView) -> Result<Vec<Lease>, StateError> {
    let mut out = Vec::new();
    for_each_with_prefix(
        |start, limit| view.scan_prefix(LEASE_PREFIX, start, limit),
        LEASE_PREFIX,
        |key, value| {
            let id = decode_id(&key, &key[LEASE_PREFIX.len()..])?;
            out.push(lease_of(id, decode_record(&key, &value)?));
            Ok(())
        },
    )?;
    Ok(out)
}

/// The lease figures of the applied state `view`, for `/metrics`. Reads
/// every lease record (at most [`MAX_LEASES`]) to add up their keys, the
/// same work as one expiry check of the leader.
pub fn stats(view: &AppView) -> Result<LeaseStats, StateError> {
    let leases = leases(view)?;
    let meta: LeaseMeta = or_default(LEASE_META_KEY, view.get(LEASE_META_KEY)?)?;
    let totals: LeaseTotals = or_default(LEASE_TOTALS_KEY, view.get(LEASE_TOTALS_KEY)?)?;
    Ok(LeaseStats {
        alive: leases.len() as u64,
        attached_keys: leases.iter().map(|l| l.keys).sum(),
        granted: meta.last_id,
        keepalives: totals.keepalives,
        revoked: totals.revoked,
        expired: totals.expired,
    })
}

/// Lease `id` and its keys in byte order, if it exists.
pub fn lease(view: &AppView, id: u64) -> Result<Option<(Lease, Vec<String>)>, StateError> {
    let key = lease_key(id);
    let Some(bytes) = view.get(&key)? else { return Ok(None) };
    let lease = lease_of(id, decode_record(&key, &bytes)?);
    let prefix = lease_keys_prefix(id);
    let mut keys = Vec::new();
    for_each_with_prefix(
        |start, limit| view.scan_prefix(&prefix, start, limit),
        &prefix,
        |entry, _| {
            keys.push(user_key(&[super::DATA_PREFIX, &entry[prefix.len()..]].concat()));
            Ok(())
        },
    )?;
    Ok(Some((lease, keys)))
}

/// The lease `key` is attached to, if any (for tests and the read API).
pub fn lease_of_key(view: &AppView, key: &str) -> Result<Option<u64>, StateError> {
    let map_key = attached_key(key.as_bytes());
    view.get(&map_key)?.map(|bytes| decode_id(&map_key, &bytes)).transpose()
}

fn lease_of(id: u64, r: LeaseRecord) -> Lease {
    Lease { id, ttl_ms: r.ttl_ms, renewed_at_ms: r.renewed_at_ms, renewals: r.renewals, keys: r.keys }
}

fn lease_key(id: u64) -> Vec<u8> {
    [LEASE_PREFIX, &id.to_be_bytes()].concat()
}

fn lease_keys_prefix(id: u64) -> Vec<u8> {
    [LEASE_KEYS_PREFIX, &id.to_be_bytes()].concat()
}

fn attached_key(key: &[u8]) -> Vec<u8> {
    [ATTACHED_PREFIX, key].concat()
}

/// A lease id stored as 8 big-endian bytes; anything else means the
/// record was not written by this module ([`StateError::Corrupt`]).
fn decode_id(key: &[u8], bytes: &[u8]) -> Result<u64, StateError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        StateError::corrupt(format!("the lease id under {:?} is not 8 bytes", String::from_utf8_lossy(key)))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    //! Leases driven through the same real storage as the parent module's
    //! tests (its `Replica`), one log entry at a time.

    use openraft::storage::RaftStateMachine as _;
    use openraft::RaftSnapshotBuilder as _;
    use proptest::prelude::*;

    use super::super::tests::{applied_put, bytes, cas, delete, plain, put, sessioned, Replica, T0};
    use super::*;
    use crate::command::{KvCommand, KvResponse};

    const TTL: u64 = 2_000;

    fn at(at_ms: u64, op: WriteOp) -> KvCommand {
        KvCommand { session: None, proposed_at_ms: at_ms, op }
    }

    fn grant(ttl_ms: u64) -> WriteOp {
        WriteOp::LeaseGrant { ttl_ms }
    }

    fn keep_alive(id: u64) -> WriteOp {
        WriteOp::LeaseKeepAlive { id }
    }

    fn revoke(id: u64) -> WriteOp {
        WriteOp::LeaseRevoke { id }
    }

    fn put_leased(key: &str, value: &str, lease: u64) -> WriteOp {
        WriteOp::PutWithLease { key: key.into(), value: bytes(value), lease }
    }

    fn expire(judged: &[(u64, u64)]) -> WriteOp {
        WriteOp::ExpireLeases {
            leases: judged.iter().map(|&(id, renewals)| ExpiredLease { id, renewals }).collect(),
        }
    }

    fn granted(id: u64) -> KvResponse {
        KvResponse::Applied(WriteOutcome::LeaseGranted { id, ttl_ms: TTL })
    }

    fn expired(ids: &[u64]) -> KvResponse {
        KvResponse::Applied(WriteOutcome::LeasesExpired { ids: ids.to_vec() })
    }

    /// A new replica that installed a snapshot of `from`, as a follower
    /// too far behind the leader does.
    async fn copy_by_snapshot(from: &mut Replica) -> Replica {
        let mut builder = from.store.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("build snapshot");
        let snapshot = from.store.get_current_snapshot().await.expect("read snapshot").expect("built");
        let mut to = Replica::new();
        to.store.install_snapshot(&snapshot.meta, snapshot.snapshot).await.expect("install snapshot");
        to.jump_to(from.next_index);
        to
    }

    impl Replica {
        fn leases(&self) -> Vec<Lease> {
            leases(&self.view()).expect("leases")
        }

        fn lease_keys(&self, id: u64) -> Option<Vec<String>> {
            lease(&self.view(), id).expect("lease").map(|(_, keys)| keys)
        }

        fn lease_of(&self, key: &str) -> Option<u64> {
            lease_of_key(&self.view(), key).expect("lease_of_key")
        }
    }

    #[tokio::test]
    async fn grant_hands_out_new_ids_and_refuses_a_ttl_out_of_range() {
        let mut r = Replica::new();
        assert_eq!(r.apply(plain(grant(TTL))).await, granted(1));
        assert_eq!(r.apply(plain(grant(TTL))).await, granted(2));
        for ttl in [0, MIN_LEASE_TTL_MS - 1, MAX_LEASE_TTL_MS + 1, u64::MAX] {
            let reply = r.apply(plain(grant(ttl))).await;
            assert!(
                matches!(&reply, KvResponse::Rejected { reason } if reason.contains("ttl_ms")),
                "{reply:?}"
            );
        }
        assert_eq!(r.leases().len(), 2);
        // Revoking does not free an id for reuse: a keepalive meant for a
        // lease that ended can never renew a newer one.
        r.apply(plain(revoke(2))).await;
        assert_eq!(r.apply(plain(grant(TTL))).await, granted(3));
        let bounds = [MIN_LEASE_TTL_MS, MAX_LEASE_TTL_MS];
        for ttl in bounds {
            assert!(matches!(r.apply(plain(grant(ttl))).await, KvResponse::Applied(_)));
        }
    }

    #[tokio::test]
    async fn a_put_naming_an_unknown_lease_is_refused_and_changes_nothing() {
        let mut r = Replica::new();
        r.apply(plain(put("k", "old"))).await;
        let digest = r.digest();
        assert_eq!(r.apply(plain(put_leased("k", "new", 7))).await, KvResponse::LeaseNotFound { id: 7 });
        assert_eq!(r.apply(plain(put_leased("fresh", "v", 7))).await, KvResponse::LeaseNotFound { id: 7 });
        assert_eq!(r.digest(), digest);
        assert_eq!(r.get("k"), Some(b"old".to_vec()));
        assert_eq!(r.lease_of("k"), None);
    }

    #[tokio::test]
    async fn revoke_deletes_the_attached_keys_and_only_those() {
        let mut r = Replica::new();
        r.apply(plain(grant(TTL))).await;
        r.apply(plain(grant(TTL))).await;
        assert_eq!(r.apply(plain(put_leased("a", "1", 1))).await, applied_put(true));
        r.apply(plain(put_leased("b", "2", 1))).await;
        r.apply(plain(put_leased("c", "3", 2))).await;
        r.apply(plain(put("free", "4"))).await;
        assert_eq!(r.lease_keys(1), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(r.leases()[0].keys, 2);

        assert_eq!(
            r.apply(plain(revoke(1))).await,
            KvResponse::Applied(WriteOutcome::LeaseRevoked { id: 1, keys_deleted: 2 })
        );
        assert_eq!((r.get("a"), r.get("b")), (None, None));
        assert_eq!(r.get("c"), Some(b"3".to_vec()));
        assert_eq!(r.get("free"), Some(b"4".to_vec()));
        assert_eq!((r.lease_of("a"), r.lease_of("c")), (None, Some(2)));
        assert_eq!(r.leases().iter().map(|l| l.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(r.apply(plain(revoke(1))).await, KvResponse::LeaseNotFound { id: 1 });
    }

    #[tokio::test]
    async fn expire_ends_a_lease_whose_ttl_ran_out_in_log_time() {
        let mut r = Replica::new();
        r.apply(at(T0, grant(TTL))).await;
        r.apply(at(T0, put_leased("k", "v", 1))).await;
        assert_eq!(r.apply(at(T0 + TTL, expire(&[(1, 0)]))).await, expired(&[1]));
        assert_eq!(r.get("k"), None);
        assert!(r.leases().is_empty());
        assert_eq!(r.apply(at(T0, keep_alive(1))).await, KvResponse::LeaseNotFound { id: 1 });
        assert_eq!(r.apply(at(T0, put_leased("k", "v", 1))).await, KvResponse::LeaseNotFound { id: 1 });
        assert_eq!(r.get("k"), None);
    }

    /// The race the renewal count exists for: the leader judged lease 1
    /// expired at renewal 0, but a keepalive committed before its expiry
    /// command. The expiry must not end the renewed lease.
    #[tokio::test]
    async fn an_expiry_judged_before_a_renewal_is_a_no_op() {
        let mut r = Replica::new();
        r.apply(at(T0, grant(TTL))).await;
        r.apply(at(T0, put_leased("k", "v", 1))).await;
        assert_eq!(
            r.apply(at(T0 + TTL, keep_alive(1))).await,
            KvResponse::Applied(WriteOutcome::LeaseRenewed { id: 1, ttl_ms: TTL })
        );
        let digest = r.digest();
        assert_eq!(r.apply(at(T0 + TTL + 1, expire(&[(1, 0)]))).await, expired(&[]));
        assert_eq!(r.digest(), digest);
        assert_eq!(r.get("k"), Some(b"v".to_vec()));
        // The renewal restarted the TTL in log time too: the right count,
        // too early, is still a no-op; once due, it ends the lease.
        assert_eq!(r.apply(at(T0 + 2 * TTL - 1, expire(&[(1, 1)]))).await, expired(&[]));
        assert_eq!(r.apply(at(T0 + 2 * TTL, expire(&[(1, 1)]))).await, expired(&[1]));
        assert_eq!(r.get("k"), None);
    }

    /// A leader whose clock ran fast, or any replica's arithmetic, cannot
    /// end a lease before its TTL has passed in log time.
    #[tokio::test]
    async fn an_expiry_before_the_ttl_passed_in_log_time_is_a_no_op() {
        let mut r = Replica::new();
        r.apply(at(T0, grant(TTL))).await;
        r.apply(at(T0, put_leased("k", "v", 1))).await;
        assert_eq!(r.apply(at(T0 + TTL - 1, expire(&[(1, 0)]))).await, expired(&[]));
        assert_eq!(r.get("k"), Some(b"v".to_vec()));
        assert_eq!(r.leases().len(), 1);
    }

    /// Apply reads no clock: log time far past a lease's TTL does not end
    /// it, and a keepalive still renews it. Only the leader's expiry does.
    #[tokio::test]
    async fn a_lease_past_its_ttl_lives_until_the_leader_expires_it() {
        let mut r = Replica::new();
        r.apply(at(T0, grant(TTL))).await;
        r.apply(at(T0, put_leased("k", "v", 1))).await;
        r.apply(at(T0 + 100 * TTL, put("other", "v"))).await;
        assert_eq!(r.get("k"), Some(b"v".to_vec()));
        assert!(matches!(r.apply(at(T0, keep_alive(1))).await, KvResponse::Applied(_)));
        let lease = r.leases()[0];
        // Renewed at log time (the maximum seen), not the slow proposal's.
        assert_eq!((lease.renewals, lease.renewed_at_ms), (1, T0 + 100 * TTL));
    }

    #[tokio::test]
    async fn a_put_without_a_lease_a_delete_and_a_successful_cas_detach_the_key() {
        let mut r = Replica::new();
        r.apply(plain(grant(TTL))).await;
        for key in ["p", "d", "c", "failed-cas"] {
            r.apply(plain(put_leased(key, "v", 1))).await;
        }
        r.apply(plain(put("p", "plain"))).await;
        r.apply(plain(delete("d"))).await;
        r.apply(plain(cas("c", Some("v"), "swapped"))).await;
        r.apply(plain(cas("failed-cas", Some("other"), "x"))).await;
        assert_eq!(r.lease_keys(1), Some(vec!["failed-cas".to_owned()]));
        assert_eq!(r.leases()[0].keys, 1);

        // Detached keys survive the revoke; the key a failed CAS left
        // attached goes with it.
        r.apply(plain(revoke(1))).await;
        assert_eq!(r.get("p"), Some(b"plain".to_vec()));
        assert_eq!(r.get("c"), Some(b"swapped".to_vec()));
        assert_eq!((r.get("d"), r.get("failed-cas")), (None, None));
    }

    #[tokio::test]
    async fn a_put_with_another_lease_moves_the_key() {
        let mut r = Replica::new();
        r.apply(plain(grant(TTL))).await;
        r.apply(plain(grant(TTL))).await;
        r.apply(plain(put_leased("k", "1", 1))).await;
        assert_eq!(r.apply(plain(put_leased("k", "2", 2))).await, applied_put(false));
        // Attaching again to the same lease counts the key once.
        r.apply(plain(put_leased("k", "3", 2))).await;
        assert_eq!((r.lease_keys(1), r.lease_keys(2)), (Some(vec![]), Some(vec!["k".to_owned()])));
        assert_eq!(r.leases().iter().map(|l| l.keys).collect::<Vec<_>>(), vec![0, 1]);
        r.apply(plain(revoke(1))).await;
        assert_eq!(r.get("k"), Some(b"3".to_vec()));
    }

    #[tokio::test]
    async fn lease_writes_with_a_session_apply_once() {
        let mut r = Replica::new();
        let first = sessioned(1, 1, T0, grant(TTL));
        assert_eq!(r.apply(first.clone()).await, granted(1));
        assert_eq!(
            r.apply(first).await,
            KvResponse::Duplicate(WriteOutcome::LeaseGranted { id: 1, ttl_ms: TTL })
        );
        assert_eq!(r.leases().len(), 1, "a retried grant creates no second lease");

        let renew = sessioned(1, 2, T0 + 10, keep_alive(1));
        r.apply(renew.clone()).await;
        r.apply(renew).await;
        assert_eq!(r.leases()[0].renewals, 1, "a retried keepalive renews once");

        // A refusal is remembered too: the retry gets the same answer even
        // though lease 5 exists by then.
        let missing = sessioned(1, 3, T0, put_leased("k", "v", 5));
        assert_eq!(r.apply(missing.clone()).await, KvResponse::LeaseNotFound { id: 5 });
        for _ in 0..4 {
            r.apply(plain(grant(TTL))).await;
        }
        assert_eq!(r.apply(missing).await, KvResponse::LeaseNotFound { id: 5 });
        assert_eq!(r.get("k"), None);
    }

    #[tokio::test]
    async fn the_keys_of_a_lease_and_the_number_of_leases_are_bounded() {
        let mut r = Replica::new();
        r.apply(plain(grant(TTL))).await;
        let puts: Vec<KvCommand> =
            (0..MAX_KEYS_PER_LEASE).map(|i| plain(put_leased(&format!("k{i}"), "v", 1))).collect();
        for chunk in puts.chunks(2_000) {
            r.apply_batch(chunk).await;
        }
        let reply = r.apply(plain(put_leased("one-more", "v", 1))).await;
        assert!(
            matches!(&reply, KvResponse::Rejected { reason } if reason.contains("lease 1 holds")),
            "{reply:?}"
        );
        assert_eq!(r.get("one-more"), None);
        // Overwriting a key already attached is not one more.
        assert_eq!(r.apply(plain(put_leased("k0", "w", 1))).await, applied_put(false));

        let grants: Vec<KvCommand> = (1..MAX_LEASES).map(|_| plain(grant(TTL))).collect();
        for chunk in grants.chunks(2_000) {
            r.apply_batch(chunk).await;
        }
        let reply = r.apply(plain(grant(TTL))).await;
        assert!(
            matches!(&reply, KvResponse::Rejected { reason } if reason.contains("leases exist")),
            "{reply:?}"
        );
        // Ending one makes room for one.
        let revoked = r.apply(plain(revoke(1))).await;
        assert_eq!(
            revoked,
            KvResponse::Applied(WriteOutcome::LeaseRevoked { id: 1, keys_deleted: MAX_KEYS_PER_LEASE })
        );
        assert!(matches!(r.apply(plain(grant(TTL))).await, KvResponse::Applied(_)));
    }

    #[tokio::test]
    async fn an_expiry_skips_leases_already_gone_and_names_at_most_a_batch() {
        let mut r = Replica::new();
        r.apply(at(T0, grant(TTL))).await;
        r.apply(at(T0, grant(TTL))).await;
        r.apply(at(T0, revoke(1))).await;
        assert_eq!(r.apply(at(T0 + TTL, expire(&[(1, 0), (2, 0), (2, 0)]))).await, expired(&[2]));
        let too_many: Vec<(u64, u64)> = (0..=MAX_EXPIRE_BATCH as u64).map(|i| (i, 0)).collect();
        assert!(matches!(r.apply(at(T0 + TTL, expire(&too_many))).await, KvResponse::Rejected { .. }));
    }

    /// What `/metrics` shows comes from the applied state: each grant,
    /// applied keepalive, revoke and expiry counts once (a refused or
    /// retried one not at all), the gauges follow the leases and their
    /// keys, and a replica that installed a snapshot shows the same.
    #[tokio::test]
    async fn stats_count_what_applied_once_and_travel_in_snapshots() {
        let mut r = Replica::new();
        assert_eq!(stats(&r.view()).unwrap(), LeaseStats::default());
        for _ in 0..3 {
            r.apply(at(T0, grant(TTL))).await;
        }
        r.apply(at(T0, grant(1))).await; // refused: out of range
        for (key, lease) in [("a", 1), ("b", 1), ("c", 2), ("d", 3)] {
            r.apply(at(T0, put_leased(key, "v", lease))).await;
        }
        r.apply(at(T0, put_leased("e", "v", 9))).await; // no lease 9
        let renew = sessioned(5, 1, T0, keep_alive(1));
        r.apply(renew.clone()).await;
        r.apply(renew).await; // a retry: answered from the session
        r.apply(at(T0, keep_alive(2))).await;
        r.apply(at(T0, keep_alive(9))).await; // no lease 9
        r.apply(at(T0, revoke(2))).await;
        r.apply(at(T0, revoke(2))).await; // gone already
                                          // Lease 3 was never renewed: due at T0 + TTL. Lease 1 was renewed,
                                          // so an expiry judged at renewal 0 leaves it alone.
        r.apply(at(T0 + TTL, expire(&[(3, 0), (1, 0)]))).await;
        let expected =
            LeaseStats { alive: 1, attached_keys: 2, granted: 3, keepalives: 2, revoked: 1, expired: 1 };
        assert_eq!(stats(&r.view()).unwrap(), expected);
        let copy = copy_by_snapshot(&mut r).await;
        assert_eq!(stats(&copy.view()).unwrap(), expected);
    }

    #[tokio::test]
    async fn lease_state_travels_in_snapshots() {
        let mut leader = Replica::new();
        leader.apply(at(T0, grant(TTL))).await;
        leader.apply(at(T0, put_leased("k", "v", 1))).await;
        let mut follower = copy_by_snapshot(&mut leader).await;

        assert_eq!(follower.leases(), leader.leases());
        assert_eq!(follower.lease_keys(1), Some(vec!["k".to_owned()]));
        // The id counter came along: the next grant does not reuse id 1.
        assert_eq!(follower.apply(at(T0, grant(TTL))).await, granted(2));
        assert_eq!(follower.apply(at(T0 + TTL, expire(&[(1, 0)]))).await, expired(&[1]));
        assert_eq!(follower.get("k"), None);
    }

    /// A generated mix of lease and key writes, with expiries naming
    /// arbitrary renewal counts and times.
    fn op_strategy() -> impl Strategy<Value = WriteOp> {
        let key = prop::sample::select(vec!["a", "b", "c", "d"]);
        let id = 1..5u64;
        prop_oneof![
            2 => Just(grant(TTL)),
            2 => id.clone().prop_map(keep_alive),
            1 => id.clone().prop_map(revoke),
            3 => (key.clone(), id.clone()).prop_map(|(k, l)| put_leased(k, "v", l)),
            1 => key.clone().prop_map(|k| put(k, "plain")),
            1 => key.prop_map(delete),
            2 => prop::collection::vec((id, 0..3u64), 1..4).prop_map(|v| expire(&v)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Every replica agrees: one replica applies the whole history;
        /// another installs a snapshot taken part-way and applies the rest
        /// later, with real time passing in between. Same replies, same
        /// leases, same keys, same data.
        #[test]
        fn replicas_applying_the_same_log_agree(
            ops in prop::collection::vec((op_strategy(), 0..3_000u64), 1..40),
            cut in any::<prop::sample::Index>(),
        ) {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async {
                let commands: Vec<KvCommand> = ops
                    .into_iter()
                    .scan(T0, |t, (op, step)| {
                        *t += step;
                        Some(at(*t, op))
                    })
                    .collect();
                let cut = cut.index(commands.len());
                let mut a = Replica::new();
                let mut replies = Vec::new();
                for c in &commands {
                    replies.push(a.apply(c.clone()).await);
                }
                let mut source = Replica::new();
                for c in &commands[..cut] {
                    source.apply(c.clone()).await;
                }
                let mut b = copy_by_snapshot(&mut source).await;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                for (c, reply) in commands[cut..].iter().zip(&replies[cut..]) {
                    assert_eq!(&b.apply(c.clone()).await, reply);
                }
                assert_eq!(a.leases(), b.leases());
                assert_eq!(a.digest(), b.digest());
                for l in a.leases() {
                    assert_eq!(a.lease_keys(l.id), b.lease_keys(l.id));
                    assert_eq!(a.lease_keys(l.id).map(|k| k.len() as u64), Some(l.keys), "the count matches the index");
                }
                // Every key's lease index agrees with the lease's key list.
                for key in ["a", "b", "c", "d"] {
                    let owner = a.lease_of(key);
                    assert_eq!(owner, b.lease_of(key));
                    if let Some(id) = owner {
                        assert!(a.lease_keys(id).expect("an owner exists").contains(&key.to_owned()));
                        assert!(a.get(key).is_some(), "an attached key exists");
                    }
                }
            });
        }
    }
}
