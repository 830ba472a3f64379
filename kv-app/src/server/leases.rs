//! The lease endpoints, and the leader's side of lease expiry.
//!
//! ```text
//! POST   /v1/leases                 grant        {"ttl_ms": T} → id
//! POST   /v1/leases/{id}/keepalive  renew
//! DELETE /v1/leases/{id}            revoke: end it now, delete its keys
//! GET    /v1/leases                 every lease, as the leader sees it
//! GET    /v1/leases/{id}            one lease and its keys
//! PUT    /v1/kv/{key}?lease={id}    attach a key (in `kv.rs`)
//! ```
//!
//! Grant, keepalive and revoke are writes like any other (forwarded to the
//! leader, exactly once per `(client_id, seq)`). Expiry is not a client
//! request: the leader decides it and proposes
//! [`WriteOp::ExpireLeases`], which every replica applies at the same
//! index (why it must be so is in [`crate::state_machine::leases`]).
//!
//! # How the leader decides
//!
//! [`LeaseClock`] keeps, for the current term only, when this leader
//! first saw each lease at its current renewal count, by the local
//! monotonic clock. A lease is expired when **both** of these hold:
//!
//! * monotonic: `ttl` has passed since this leader first saw the lease at
//!   its current renewal count. A new leader has seen nothing, so it gives
//!   every lease at least its full TTL from its own start, as etcd's lessor
//!   does on promotion: a leader change never expires a lease early, even
//!   though the new leader cannot know when the old one last heard from
//!   the owner. The monotonic clock does not jump when the wall clock is
//!   set.
//! * log time: the leader's wall clock is at least `renewed_at + ttl`,
//!   where `renewed_at` is the lease's log time at its last renewal. The
//!   expire command carries that same wall-clock reading as its
//!   `proposed_at_ms`, which is what lets apply check it again,
//!   deterministically.
//!
//! # The expiry bound
//!
//! [`run_expiry`] checks every [`expiry_check_interval`], a quarter of
//! the minimum election timeout. A renewal applied on the leader is seen at
//! the next check, and the expiry is proposed at the first check after the
//! TTL has passed, so with a steady leader a lease that is no longer
//! renewed expires at most `ttl + election_timeout_min / 2` plus the time to
//! commit one entry after its last renewal was applied: within its TTL
//! plus one election timeout, while the leader can commit an entry within
//! half an election timeout. After a leader change the same bound counts
//! from the new leader's start instead (that is the rule above), so a
//! lease whose owner stopped just before the old leader died lives up to
//! one TTL, plus the election, longer than it would have. Neither clock
//! can make a lease end *early*: that needs both to run fast.
//!
//! The judgment itself is never persisted or replicated: as in etcd, it is
//! the current leader's alone and starts over with each leader; only its
//! outcome, the expire command, enters the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kv_client::api::{
    codes, Durability, LeaseDetailResponse, LeaseGrantRequest, LeaseInfo, LeaseListResponse, LeaseRequest,
    LeaseResponse,
};
use tokio::time::Instant;

use super::error::ApiError;
use super::forward::{self, Forward, Kind, FORWARD_SLACK};
use super::kv::{
    body_of, durability_of, json_of, now_ms, propose, query_of, reject, sequence_reused, session_of,
    ApiResult, Applied, HttpRequest, Write, WriteParams, WriteParts,
};
use super::Ctx;
use crate::command::{
    ExpiredLease, KvCommand, KvResponse, SessionId, WriteOp, WriteOutcome, MAX_EXPIRE_BATCH,
};
use crate::state_machine::leases::{self as sm_leases, validate_ttl, Lease};

/// How often the leader checks for expired leases: a quarter of the
/// minimum election timeout, so that a lease is expired within its TTL
/// plus one election timeout of its last renewal (see the module docs).
pub fn expiry_check_interval(raft: &raft_core::Config) -> Duration {
    (raft.election_timeout_min / 4).max(Duration::from_millis(1))
}

/// What the leader has seen of one lease.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The lease's renewal count when first seen.
    renewals: u64,
    /// When this leader first saw that renewal count.
    since: Instant,
}

/// The leader's judgment of its leases: see the module docs.
#[derive(Debug, Default)]
pub struct LeaseClock {
    inner: Mutex<Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    /// The term whose leader saw `seen`.
    term: u64,
    seen: HashMap<u64, Seen>,
}

/// One lease and how long it has left, as the leader judges it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The lease.
    pub lease: Lease,
    /// How long until the leader expires it; zero: expired.
    pub remaining: Duration,
}

impl LeaseClock {
    /// Judges `leases`, the leases in the state of the leader of `term`,
    /// at monotonic time `now` and wall clock `now_ms`. Only a leader
    /// calls this, with its own term: a new term forgets everything seen
    /// before, which is what gives every lease a full TTL from a new
    /// leader's start.
    pub fn judge(&self, term: u64, leases: &[Lease], now: Instant, now_ms: u64) -> Vec<Judged> {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if t.term != term {
            t.term = term;
            t.seen.clear();
        }
        // Forget leases that are gone.
        let present: std::collections::HashSet<u64> = leases.iter().map(|l| l.id).collect();
        t.seen.retain(|id, _| present.contains(id));
        leases
            .iter()
            .map(|lease| {
                let seen = t.seen.entry(lease.id).or_insert(Seen { renewals: lease.renewals, since: now });
                if seen.renewals != lease.renewals {
                    *seen = Seen { renewals: lease.renewals, since: now };
                }
                let ttl = Duration::from_millis(lease.ttl_ms);
                let monotonic = (seen.since + ttl).saturating_duration_since(now);
                let wall = lease.renewed_at_ms.saturating_add(lease.ttl_ms).saturating_sub(now_ms);
                Judged { lease: *lease, remaining: monotonic.max(Duration::from_millis(wall)) }
            })
            .collect()
    }
}

/// The leader's expiry loop: every [`expiry_check_interval`], if this
/// node leads, judge every lease and propose the expiry of those whose
/// time is up. Runs until the server stops.
pub async fn run_expiry(ctx: Ctx) {
    let mut tick = tokio::time::interval(expiry_check_interval(&ctx.config.raft));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.node.is_leader() {
            continue;
        }
        if let Err(e) = expire_due(&ctx).await {
            tracing::warn!(node_id = ctx.id, error = %e, "lease expiry check failed; retrying at the next check");
        }
    }
}

/// One check of [`run_expiry`].
async fn expire_due(ctx: &Ctx) -> Result<(), String> {
    if ctx.config.faults.unsafe_lease_never_expire {
        // Fault injection (`--unsafe-lease-never-expire`), a negative
        // control for the Jepsen harness's lease check: keys outlive their
        // leases.
        return Ok(());
    }
    let view = ctx.node.view().map_err(|e| e.to_string())?;
    let leases = sm_leases::leases(&view).map_err(|e| e.to_string())?;
    if leases.is_empty() {
        return Ok(());
    }
    let (term, _) = ctx.node.watch_term().current();
    // One wall-clock reading for the judgment and the command: apply
    // checks `renewed_at + ttl <= log time`, and log time is at least
    // this command's `proposed_at_ms`.
    let now_ms = now_ms();
    let judged = ctx.leases.judge(term, &leases, Instant::now(), now_ms);
    if ctx.config.faults.unsafe_lease_expire_early {
        return end_early(ctx, &judged).await;
    }
    let due: Vec<ExpiredLease> = judged
        .into_iter()
        .filter(|j| j.remaining.is_zero())
        .map(|j| ExpiredLease { id: j.lease.id, renewals: j.lease.renewals })
        .collect();
    for batch in due.chunks(MAX_EXPIRE_BATCH) {
        let cmd = KvCommand {
            session: None,
            proposed_at_ms: now_ms,
            op: WriteOp::ExpireLeases { leases: batch.to_vec() },
        };
        let written = match ctx.node.write(&cmd).await {
            Ok(written) => written,
            // Deposed, or handing leadership off: the next leader judges.
            Err(raft_core::WriteError::NotLeader { .. }) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if let KvResponse::Applied(WriteOutcome::LeasesExpired { ids }) = &written.response {
            tracing::debug!(node_id = ctx.id, index = written.log_id.index, ?ids, "expired leases");
        }
    }
    Ok(())
}

/// Fault injection (`--unsafe-lease-expire-early`), a negative control for
/// the Jepsen harness's lease check: ends every lease with half its TTL or
/// less left by proposing a revoke, which apply does not check against log
/// time as it checks an expiry. An owner renewing every two thirds of the
/// TTL then loses its keys, and its lease, while it is owed them.
async fn end_early(ctx: &Ctx, judged: &[Judged]) -> Result<(), String> {
    for j in judged.iter().filter(|j| j.remaining <= Duration::from_millis(j.lease.ttl_ms / 2)) {
        let cmd = KvCommand {
            session: None,
            proposed_at_ms: now_ms(),
            op: WriteOp::LeaseRevoke { id: j.lease.id },
        };
        match ctx.node.write(&cmd).await {
            Ok(written) => {
                tracing::debug!(
                    node_id = ctx.id,
                    index = written.log_id.index,
                    lease = j.lease.id,
                    "ended early"
                )
            }
            Err(raft_core::WriteError::NotLeader { .. }) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The lease id in a path, or a 400.
fn lease_id_of(path: Result<Path<String>, PathRejection>) -> ApiResult<u64> {
    let Path(raw) = path.map_err(|e| reject(ApiError::bad_request(format!("invalid lease id: {e}"))))?;
    match raw.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(reject(ApiError::bad_request(format!(
            "invalid lease id {raw:?}: a lease id is a positive integer"
        )))),
    }
}

/// The durability a lease write asks for: anything but `leader`, whose
/// answer would come before the outcome (the id, whether the lease
/// existed) is known. `lease=` has no meaning here.
fn lease_durability(
    params: Result<axum::extract::Query<WriteParams>, QueryRejection>,
) -> ApiResult<Durability> {
    let params = query_of(params)?;
    if params.lease.is_some() {
        return Err(reject(ApiError::bad_request("lease= applies to PUT /v1/kv/{key} only")));
    }
    let durability = durability_of(params.durability.as_deref())?;
    if durability == Durability::Leader {
        return Err(reject(ApiError::bad_request(
            "durability=leader cannot answer a lease request: its outcome is known only once applied; \
             use majority or all",
        )));
    }
    Ok(durability)
}

/// The part every lease write shares: check the durability and the body,
/// let `parse` build the operation from the path and body, propose it,
/// and answer with its outcome.
async fn handle_lease_write(
    ctx: Ctx,
    w: WriteParts,
    parse: impl FnOnce(Result<Path<String>, PathRejection>, &Bytes) -> ApiResult<(WriteOp, Option<SessionId>)>,
) -> Response {
    let run = async {
        let durability = lease_durability(w.params)?;
        let body = body_of(w.body)?;
        let (op, session) = parse(w.key, &body)?;
        let http = HttpRequest { headers: &w.headers, method: w.method, uri: &w.uri, body };
        let Applied { outcome, duplicate, index } =
            propose(&ctx, Write { http, op, session, durability }).await?;
        let mut resp =
            LeaseResponse { id: 0, ttl_ms: None, keys_deleted: None, index, node: ctx.id, duplicate };
        match outcome {
            WriteOutcome::LeaseGranted { id, ttl_ms } | WriteOutcome::LeaseRenewed { id, ttl_ms } => {
                (resp.id, resp.ttl_ms) = (id, Some(ttl_ms));
            }
            WriteOutcome::LeaseRevoked { id, keys_deleted } => {
                (resp.id, resp.keys_deleted) = (id, Some(keys_deleted))
            }
            // A `(client_id, seq)` used before for a key write.
            other if duplicate => return Err(sequence_reused(index, &other)),
            other => {
                return Err(reject(ApiError::internal(format!(
                    "invariant: a lease write has a lease outcome, not {other:?}"
                ))))
            }
        }
        Ok(Json(resp).into_response())
    };
    run.await.unwrap_or_else(|r| r)
}

/// `POST /v1/leases`: grant a lease of `ttl_ms`.
pub async fn grant(State(ctx): State<Ctx>, w: WriteParts) -> Response {
    handle_lease_write(ctx, w, |_, body| {
        let req: LeaseGrantRequest = json_of(body, false)?.unwrap_or_default();
        validate_ttl(req.ttl_ms).map_err(|e| reject(ApiError::bad_request(e)))?;
        Ok((WriteOp::LeaseGrant { ttl_ms: req.ttl_ms }, session_of(req.client_id, req.seq)?))
    })
    .await
}

/// `POST /v1/leases/{id}/keepalive`: renew a lease.
pub async fn keep_alive(State(ctx): State<Ctx>, w: WriteParts) -> Response {
    handle_lease_write(ctx, w, |path, body| id_op(path, body, |id| WriteOp::LeaseKeepAlive { id })).await
}

/// `DELETE /v1/leases/{id}`: revoke a lease and delete its keys.
pub async fn revoke(State(ctx): State<Ctx>, w: WriteParts) -> Response {
    handle_lease_write(ctx, w, |path, body| id_op(path, body, |id| WriteOp::LeaseRevoke { id })).await
}

/// The operation of a request that names a lease in its path and may
/// carry a session in its body.
fn id_op(
    path: Result<Path<String>, PathRejection>,
    body: &Bytes,
    op: impl FnOnce(u64) -> WriteOp,
) -> ApiResult<(WriteOp, Option<SessionId>)> {
    let id = lease_id_of(path)?;
    let req: LeaseRequest = json_of(body, true)?.unwrap_or_default();
    Ok((op(id), session_of(req.client_id, req.seq)?))
}

/// On the leader: confirms leadership, then judges the leases of its
/// applied state. Elsewhere: `Err` with the leader's own answer to the
/// same request, forwarded, since only the leader knows how long a lease
/// has left.
async fn judged_on_leader(
    ctx: &Ctx,
    headers: &HeaderMap,
    method: Method,
    uri: &Uri,
) -> ApiResult<(Vec<Judged>, u64)> {
    if !ctx.node.is_leader() {
        let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        let req = Forward {
            headers,
            method,
            path_and_query,
            body: Bytes::new(),
            kind: Kind::Read,
            timeout: ctx.config.raft.request_timeout + FORWARD_SLACK,
        };
        return Err(forward::to_leader(ctx, ctx.node.leader_hint().as_ref(), req).await);
    }
    ctx.node.read_barrier().await.map_err(|e| reject(e.into()))?;
    let view = ctx.node.view().map_err(|e| reject(e.into()))?;
    let leases = sm_leases::leases(&view).map_err(|e| reject(e.into()))?;
    let (term, _) = ctx.node.watch_term().current();
    Ok((ctx.leases.judge(term, &leases, Instant::now(), now_ms()), view.applied_index()))
}

fn info(j: &Judged) -> LeaseInfo {
    LeaseInfo {
        id: j.lease.id,
        ttl_ms: j.lease.ttl_ms,
        remaining_ms: j.remaining.as_millis() as u64,
        renewed_at_ms: j.lease.renewed_at_ms,
        renewals: j.lease.renewals,
        key_count: j.lease.keys,
    }
}

/// `GET /v1/leases`: every lease, with the time the leader gives it.
pub async fn list(State(ctx): State<Ctx>, headers: HeaderMap, method: Method, uri: Uri) -> Response {
    let run = async {
        let (judged, index) = judged_on_leader(&ctx, &headers, method, &uri).await?;
        Ok(Json(LeaseListResponse { leases: judged.iter().map(info).collect(), index, node: ctx.id })
            .into_response())
    };
    run.await.unwrap_or_else(|r| r)
}

/// `GET /v1/leases/{id}`: one lease, with its keys.
pub async fn show(
    State(ctx): State<Ctx>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
) -> Response {
    let run = async {
        let id = lease_id_of(path)?;
        let (judged, index) = judged_on_leader(&ctx, &headers, method, &uri).await?;
        let not_found = || {
            reject(
                ApiError::new(StatusCode::NOT_FOUND, codes::LEASE_NOT_FOUND, format!("no lease {id}"))
                    .with_index(index),
            )
        };
        let j = judged.iter().find(|j| j.lease.id == id).ok_or_else(not_found)?;
        // The keys are read from a fresh view: one at least as new as the
        // judged one, so a lease that ended in between is a 404.
        let view = ctx.node.view().map_err(|e| reject(e.into()))?;
        let (_, keys) = sm_leases::lease(&view, id).map_err(|e| reject(e.into()))?.ok_or_else(not_found)?;
        Ok(Json(LeaseDetailResponse { lease: info(j), keys, index: view.applied_index(), node: ctx.id })
            .into_response())
    };
    run.await.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn lease(id: u64, renewals: u64, renewed_at_ms: u64) -> Lease {
        Lease { id, ttl_ms: 1_000, renewed_at_ms, renewals, keys: 0 }
    }

    fn remaining(clock: &LeaseClock, term: u64, leases: &[Lease], now: Instant, now_ms: u64) -> Vec<u64> {
        clock.judge(term, leases, now, now_ms).iter().map(|j| j.remaining.as_millis() as u64).collect()
    }

    #[test]
    fn a_lease_is_due_only_when_both_clocks_say_its_ttl_passed() {
        let clock = LeaseClock::default();
        let start = Instant::now();
        let l = [lease(1, 0, T0)];
        assert_eq!(remaining(&clock, 1, &l, start, T0), vec![1_000]);
        // The wall clock jumped ahead a day: the monotonic clock holds it.
        assert_eq!(remaining(&clock, 1, &l, start + Duration::from_millis(400), T0 + 86_400_000), vec![600]);
        // The wall clock is behind: log time holds it.
        assert_eq!(remaining(&clock, 1, &l, start + Duration::from_millis(1_000), T0 + 700), vec![300]);
        assert_eq!(remaining(&clock, 1, &l, start + Duration::from_millis(1_000), T0 + 1_000), vec![0]);
    }

    #[test]
    fn a_renewal_restarts_the_monotonic_ttl_from_when_the_leader_saw_it() {
        let clock = LeaseClock::default();
        let start = Instant::now();
        assert_eq!(remaining(&clock, 1, &[lease(1, 0, T0)], start, T0), vec![1_000]);
        let later = start + Duration::from_millis(900);
        assert_eq!(remaining(&clock, 1, &[lease(1, 1, T0 + 900)], later, T0 + 900), vec![1_000]);
        assert_eq!(
            remaining(&clock, 1, &[lease(1, 1, T0 + 900)], later + Duration::from_millis(999), T0 + 1_899),
            vec![1]
        );
    }

    /// The new-leader rule: a leader of a new term has seen nothing, so
    /// every lease gets its full TTL from the moment it first looks, even
    /// one whose TTL ran out in log time while there was no leader.
    #[test]
    fn a_new_term_gives_every_lease_its_full_ttl_again() {
        let clock = LeaseClock::default();
        let start = Instant::now();
        let l = [lease(1, 0, T0)];
        remaining(&clock, 1, &l, start, T0);
        let elected = start + Duration::from_millis(5_000);
        assert_eq!(remaining(&clock, 1, &l, elected, T0 + 5_000), vec![0], "same term: due");
        assert_eq!(remaining(&clock, 2, &l, elected, T0 + 5_000), vec![1_000], "new term: a full TTL");
        assert_eq!(remaining(&clock, 2, &l, elected + Duration::from_millis(1_000), T0 + 6_000), vec![0]);
    }

    #[test]
    fn a_lease_that_ended_is_forgotten_and_an_id_seen_again_starts_afresh() {
        let clock = LeaseClock::default();
        let start = Instant::now();
        remaining(&clock, 1, &[lease(1, 0, T0), lease(2, 0, T0)], start, T0);
        let later = start + Duration::from_millis(800);
        assert_eq!(remaining(&clock, 1, &[lease(2, 0, T0)], later, T0 + 800), vec![200]);
        assert_eq!(clock.inner.lock().unwrap().seen.len(), 1);
    }

    #[test]
    fn the_expiry_check_runs_four_times_per_minimum_election_timeout() {
        let mut raft = raft_core::Config::new("kv");
        raft.election_timeout_min = Duration::from_millis(1_000);
        assert_eq!(expiry_check_interval(&raft), Duration::from_millis(250));
    }
}
