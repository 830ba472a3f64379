//! The key-value endpoints, and the three read paths.
//!
//! ```text
//! linearizable (leader):    read_barrier: quorum confirms leadership,
//!                           wait applied ≥ read index, read local state
//! linearizable (follower):  ask the leader for its read index
//!                           (POST /v1/internal/read-index), wait until
//!                           *this* node applied it, read local state
//! session:                  wait until applied ≥ the client's token, read
//! stale:                    read local state now; report committed index
//! ```
//!
//! Writes go to the leader (forwarded if they arrive elsewhere), are
//! committed by Raft, applied by the state machine exactly once per
//! (client_id, seq), and acknowledged at `majority` (committed) or `all`
//! (every voter has the entry in its log) durability. At `leader`
//! durability a put or delete is acknowledged once it is durable in the
//! leader's own log, before it is committed: the answer says
//! `committed: false`, and the write may yet be lost (and kept in a
//! rollback record, see `cluster::rollback_list`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kv_client::api::{
    codes, CasRequest, Consistency, DeleteRequest, Durability, JsonValue, ListItem, ListResponse, PutRequest,
    ReadIndexResponse, ReadResponse, WriteResponse,
};
use raft_core::{AppView, LeaderHint, WriteError};
use serde::Deserialize;
use serde_bytes::ByteBuf;

use super::error::{leader_info, ApiError};
use super::forward::{self, Forward, Kind, FORWARD_SLACK};
use super::Ctx;
use crate::command::{KvCommand, KvResponse, SessionId, WriteOp, WriteOutcome, MAX_KEY_BYTES};
use crate::state_machine;

/// The most keys one list request may ask for.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Query parameters of reads.
#[derive(Debug, Deserialize)]
pub struct ReadParams {
    consistency: Option<String>,
    token: Option<u64>,
}

/// Query parameters of writes.
#[derive(Debug, Deserialize)]
pub struct WriteParams {
    pub(super) durability: Option<String>,
    /// The lease to attach the key to (`PUT` only).
    pub(super) lease: Option<u64>,
}

/// Query parameters of a listing.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    prefix: Option<String>,
    limit: Option<usize>,
    consistency: Option<String>,
    token: Option<u64>,
}

/// A handler step's result: `Err` is the response to send at once.
pub(super) type ApiResult<T> = Result<T, Response>;

pub(super) fn reject(e: ApiError) -> Response {
    e.into_response()
}

fn key_of(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(key) = path.map_err(|e| reject(ApiError::bad_request(format!("invalid key: {e}"))))?;
    if key.is_empty() {
        return Err(reject(ApiError::bad_request("the key is empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(reject(ApiError::too_large(format!(
            "the key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        ))));
    }
    Ok(key)
}

pub(super) fn query_of<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t).map_err(|e| reject(ApiError::bad_request(format!("invalid query: {e}"))))
}

fn consistency_of(s: Option<&str>) -> ApiResult<Consistency> {
    s.map_or(Ok(Consistency::default()), |s| s.parse().map_err(|e: String| reject(ApiError::bad_request(e))))
}

pub(super) fn durability_of(s: Option<&str>) -> ApiResult<Durability> {
    s.map_or(Ok(Durability::default()), |s| s.parse().map_err(|e: String| reject(ApiError::bad_request(e))))
}

pub(super) fn json_of<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    allow_empty: bool,
) -> ApiResult<Option<T>> {
    if body.is_empty() && allow_empty {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| reject(ApiError::bad_request(format!("invalid JSON body: {e}"))))
}

pub(super) fn session_of(client_id: Option<u64>, seq: Option<u64>) -> ApiResult<Option<SessionId>> {
    match (client_id, seq) {
        (None, None) => Ok(None),
        (Some(client_id), Some(seq)) if seq >= 1 => Ok(Some(SessionId { client_id, seq })),
        (Some(_), Some(_)) => Err(reject(ApiError::bad_request("seq starts at 1"))),
        _ => Err(reject(ApiError::bad_request("give both client_id and seq, or neither"))),
    }
}

fn value_of(ctx: &Ctx, v: &JsonValue, what: &str) -> ApiResult<Vec<u8>> {
    let bytes = v.to_bytes().map_err(|e| reject(ApiError::bad_request(format!("{what}: {e}"))))?;
    if bytes.len() > ctx.config.max_value_bytes {
        return Err(reject(ApiError::too_large(format!(
            "{what} is {} bytes; the limit is {}",
            bytes.len(),
            ctx.config.max_value_bytes
        ))));
    }
    Ok(bytes)
}

pub(super) fn body_of(body: BodyResult) -> ApiResult<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        let err = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("request body too large: {e}"))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        };
        reject(err)
    })
}

/// Makes the local state fresh enough for `consistency`, and returns a view
/// of it.
pub(super) async fn prepare_read(
    ctx: &Ctx,
    consistency: Consistency,
    token: Option<u64>,
) -> ApiResult<AppView> {
    match consistency {
        Consistency::Stale => {}
        // Fault injection (`--unsafe-local-reads`): a linearizable read
        // served like a stale one. This is the bug ReadIndex prevents.
        Consistency::Linearizable if ctx.config.faults.unsafe_local_reads => {}
        Consistency::Session => {
            if let Some(token) = token {
                ctx.node.wait_applied(token, ctx.config.read_wait).await.map_err(|e| {
                    reject(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::UNAVAILABLE,
                        format!(
                            "node {} has not applied index {token} yet ({e}); retry or ask another node",
                            ctx.id
                        ),
                    ))
                })?;
            }
        }
        Consistency::Linearizable => {
            if ctx.node.is_leader() {
                ctx.node.read_barrier().await.map_err(|e| reject(e.into()))?;
            } else {
                let index = read_index_from_leader(ctx).await?;
                ctx.node.wait_applied(index, ctx.config.read_wait).await.map_err(|e| reject(e.into()))?;
            }
        }
    }
    ctx.node.view().map_err(|e| reject(e.into()))
}

/// A follower's half of a linearizable read: the leader's read index,
/// shared with the follower's other linearizable reads
/// ([`super::follower_reads`]).
async fn read_index_from_leader(ctx: &Ctx) -> ApiResult<u64> {
    ctx.follower_reads.read_index(ctx).await.map_err(reject)
}

/// Asks the leader for its read index: one `POST /v1/internal/read-index`.
pub(super) async fn ask_leader_for_read_index(ctx: &Ctx) -> Result<u64, ApiError> {
    let hint = ctx.node.leader_hint();
    let info = leader_info(hint.as_ref());
    let Some(addr) = info.as_ref().and_then(|l| l.api_addr.clone()) else {
        return Err(ApiError::no_leader("no leader is known; retry shortly", info));
    };
    let unavailable = |m: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, m).with_leader(info.clone())
    };
    let mut req = ctx
        .http
        .post(ctx.node_url(&addr, "/v1/internal/read-index"))
        .header(forward::FORWARDED_BY, ctx.id.to_string());
    if let Some(auth) = &ctx.auth {
        req = req.header(super::auth::CLUSTER_SECRET_HEADER, auth.secret_to_send());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| unavailable(format!("asking the leader at {addr} for a read index: {e}")))?;
    if !resp.status().is_success() {
        let status = resp.status();
        if matches!(status.as_u16(), 401 | 403) {
            tracing::warn!(
                node_id = ctx.id,
                leader = %addr,
                "the leader refused this node's cluster secret: every node needs the same --cluster-secret-file"
            );
        }
        let text = resp.text().await.unwrap_or_default();
        return Err(unavailable(format!("the leader at {addr} gave no read index: {status} {text}")));
    }
    let r: ReadIndexResponse =
        resp.json().await.map_err(|e| unavailable(format!("bad read index answer from {addr}: {e}")))?;
    Ok(r.index)
}

/// The commit index reported with a read (at most a few milliseconds old;
/// never below the read's own index, which callers ensure with `max`).
async fn committed_index(ctx: &Ctx) -> u64 {
    ctx.node.committed_index().await
}

/// `GET /v1/kv/{key}`.
pub async fn get(
    State(ctx): State<Ctx>,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Response {
    let run = async {
        let key = key_of(key)?;
        let params = query_of(params)?;
        let consistency = consistency_of(params.consistency.as_deref())?;
        let view = prepare_read(&ctx, consistency, params.token).await?;
        let value = state_machine::get(&view, &key).map_err(|e| reject(e.into()))?;
        let index = view.applied_index();
        let committed_index = committed_index(&ctx).await.max(index);
        Ok(match value {
            Some(v) => Json(ReadResponse {
                key,
                value: JsonValue::from_bytes(&v),
                index,
                node: ctx.id,
                committed_index,
            })
            .into_response(),
            None => ApiError::new(StatusCode::NOT_FOUND, codes::KEY_NOT_FOUND, format!("no key {key:?}"))
                .with_index(index)
                .into_response(),
        })
    };
    run.await.unwrap_or_else(|r| r)
}

/// `GET /v1/kv?prefix=P&limit=N`.
pub async fn list(State(ctx): State<Ctx>, params: Result<Query<ListParams>, QueryRejection>) -> Response {
    let run = async {
        let params = query_of(params)?;
        let consistency = consistency_of(params.consistency.as_deref())?;
        let limit = params.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(reject(ApiError::bad_request(format!("limit must be 1 to {MAX_LIST_LIMIT}"))));
        }
        let prefix = params.prefix.unwrap_or_default();
        let view = prepare_read(&ctx, consistency, params.token).await?;
        let (items, more) = state_machine::list(&view, &prefix, limit).map_err(|e| reject(e.into()))?;
        let index = view.applied_index();
        Ok(Json(ListResponse {
            items: items
                .into_iter()
                .map(|(key, v)| ListItem { key, value: JsonValue::from_bytes(&v) })
                .collect(),
            more,
            index,
            node: ctx.id,
            committed_index: committed_index(&ctx).await.max(index),
        })
        .into_response())
    };
    run.await.unwrap_or_else(|r| r)
}

/// `POST /v1/internal/read-index`: on the leader, confirm leadership and
/// return the index a follower must apply before serving a linearizable read.
pub async fn read_index(State(ctx): State<Ctx>) -> Response {
    match ctx.node.read_index().await {
        Ok(index) => Json(ReadIndexResponse { index, node: ctx.id }).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The request a write handler extracted, ready to propose.
pub(super) struct Write<'a> {
    pub(super) http: HttpRequest<'a>,
    pub(super) op: WriteOp,
    pub(super) session: Option<SessionId>,
    pub(super) durability: Durability,
}

/// The request as received, to forward it unchanged.
pub(super) struct HttpRequest<'a> {
    pub(super) headers: &'a HeaderMap,
    pub(super) method: Method,
    pub(super) uri: &'a Uri,
    pub(super) body: Bytes,
}

pub(super) type BodyResult = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// Everything a write handler needs from the request, extracted once. Each
/// part keeps its own extraction result, so that a bad key, query or body
/// becomes our JSON error rather than axum's plain-text rejection.
pub struct WriteParts {
    /// The one path parameter: the key, or a lease id.
    pub(super) key: Result<Path<String>, PathRejection>,
    pub(super) params: Result<Query<WriteParams>, QueryRejection>,
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
    pub(super) uri: Uri,
    pub(super) body: BodyResult,
}

impl<S: Send + Sync> FromRequest<S> for WriteParts {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let key = Path::<String>::from_request_parts(&mut parts, state).await;
        let params = Query::<WriteParams>::from_request_parts(&mut parts, state).await;
        let (method, headers, uri) = (parts.method.clone(), parts.headers.clone(), parts.uri.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await;
        Ok(WriteParts { key, params, method, headers, uri, body })
    }
}

/// The part every write handler shares: validate the key, the durability
/// and the body, let `parse` build the operation, then propose it.
async fn handle_write(
    ctx: Ctx,
    w: WriteParts,
    parse: impl FnOnce(&Ctx, String, &Bytes) -> ApiResult<(WriteOp, Option<SessionId>)>,
) -> Response {
    let run = async {
        let key = key_of(w.key)?;
        let params = query_of(w.params)?;
        let durability = durability_of(params.durability.as_deref())?;
        let body = body_of(w.body)?;
        let (mut op, session) = parse(&ctx, key, &body)?;
        if let Some(lease) = params.lease {
            op = match op {
                WriteOp::Put { key, value } => WriteOp::PutWithLease { key, value, lease },
                _ => return Err(reject(ApiError::bad_request("lease= applies to PUT only"))),
            };
        }
        let needs_outcome = match op {
            WriteOp::Cas { .. } => Some("answer a CAS: its result"),
            WriteOp::PutWithLease { .. } => Some("attach a lease: whether the lease exists"),
            _ => None,
        };
        if let (Durability::Leader, Some(what)) = (durability, needs_outcome) {
            return Err(reject(ApiError::bad_request(format!(
                "durability=leader cannot {what} is known only once applied; use majority or all"
            ))));
        }
        let write_req = Write {
            http: HttpRequest { headers: &w.headers, method: w.method, uri: &w.uri, body },
            op,
            session,
            durability,
        };
        Ok(write(&ctx, write_req).await)
    };
    run.await.unwrap_or_else(|r| r)
}

/// `PUT /v1/kv/{key}`.
pub async fn put(State(ctx): State<Ctx>, w: WriteParts) -> Response {
    handle_write(ctx, w, |ctx, key, body| {
        let req: PutRequest = json_of(body, false)?.unwrap_or_default();
        let value = value_of(ctx, &req.value, "value")?;
        Ok((WriteOp::Put { key, value: ByteBuf::from(value) }, session_of(req.client_id, req.seq)?))
    })
    .await
}

/// `DELETE /v1/kv/{key}`.
pub async fn delete(State(ctx): State<Ctx>, w: WriteParts) -> Response {
    handle_write(ctx, w, |_, key, body| {
        let req: DeleteRequest = json_of(body, true)?.unwrap_or_default();
        Ok((WriteOp::Delete { key }, session_of(req.client_id, req.seq)?))
    })
    .await
}

/// `POST /v1/cas/{key}`.
pub async fn cas(State(ctx): State<Ctx>, w: WriteParts) -> Response {
    handle_write(ctx, w, |ctx, key, body| {
        let req: CasRequest = json_of(body, false)?.unwrap_or_default();
        let expected = match (&req.expected, &req.expected_b64, req.expect_absent) {
            (Some(s), None, false) => {
                Some(value_of(ctx, &JsonValue { value: Some(s.clone()), value_b64: None }, "expected")?)
            }
            (None, Some(b), false) => {
                Some(value_of(ctx, &JsonValue { value: None, value_b64: Some(b.clone()) }, "expected_b64")?)
            }
            (None, None, true) => None,
            _ => {
                return Err(reject(ApiError::bad_request(
                    "give exactly one of expected, expected_b64 and expect_absent: true",
                )))
            }
        };
        let value = value_of(ctx, &req.value, "value")?;
        let op = WriteOp::Cas { key, expected: expected.map(ByteBuf::from), value: ByteBuf::from(value) };
        Ok((op, session_of(req.client_id, req.seq)?))
    })
    .await
}

/// The wall clock in ms since the Unix epoch: a command's `proposed_at_ms`.
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Passes a write that this node did not propose on to the leader.
async fn forward_write(ctx: &Ctx, http: HttpRequest<'_>, leader: Option<&LeaderHint>) -> Response {
    let pq = http.uri.path_and_query().map_or(http.uri.path(), |pq| pq.as_str());
    let req = Forward {
        headers: http.headers,
        method: http.method,
        path_and_query: pq,
        body: http.body,
        kind: Kind::Write,
        timeout: ctx.config.raft.request_timeout + FORWARD_SLACK,
    };
    forward::to_leader(ctx, leader, req).await
}

/// A write the state machine applied (or recognised as a retry).
pub(super) struct Applied {
    /// What it did.
    pub(super) outcome: WriteOutcome,
    /// True if it was a retry of an applied write.
    pub(super) duplicate: bool,
    /// Its log index.
    pub(super) index: u64,
}

/// Proposes a write on the leader, or forwards it there. `Ok` once the
/// state machine applied it (at the durability asked for); `Err` with the
/// response to send otherwise: the leader's answer to a forwarded write,
/// the acknowledgement of a `leader`-durability write, or an error.
pub(super) async fn propose(ctx: &Ctx, w: Write<'_>) -> ApiResult<Applied> {
    let cmd = KvCommand { session: w.session, proposed_at_ms: now_ms(), op: w.op };
    if w.durability == Durability::Leader {
        return Err(match ctx.node.write_logged(&cmd).await {
            // In the leader's durable log, not yet committed: no outcome.
            Ok(log_id) => Json(WriteResponse {
                index: log_id.index,
                node: ctx.id,
                duplicate: false,
                committed: false,
                created: None,
                existed: None,
                succeeded: None,
                current: None,
            })
            .into_response(),
            // Not proposed here: safe to pass on to the leader.
            Err(WriteError::NotLeader { leader }) => forward_write(ctx, w.http, leader.as_ref()).await,
            Err(e) => ApiError::from(e).into_response(),
        });
    }
    let written = match ctx.node.write(&cmd).await {
        Ok(written) => written,
        // Not proposed here: safe to pass on to the leader.
        Err(WriteError::NotLeader { leader }) => {
            return Err(forward_write(ctx, w.http, leader.as_ref()).await)
        }
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let index = written.log_id.index;
    // The state machine refused it, at `index`: nothing changed.
    let refused = |e: ApiError| e.with_index(index).into_response();
    let (outcome, duplicate) = match written.response {
        KvResponse::Applied(o) => (o, false),
        KvResponse::Duplicate(o) => (o, true),
        KvResponse::StaleSequence { last_seq } => {
            return Err(refused(ApiError::new(
                StatusCode::CONFLICT,
                codes::STALE_SEQUENCE,
                format!("this client already wrote seq {last_seq}; a retry of an older write is not applied"),
            )))
        }
        KvResponse::Rejected { reason } => return Err(refused(ApiError::bad_request(reason))),
        KvResponse::LeaseNotFound { id } => {
            return Err(refused(ApiError::new(
                StatusCode::NOT_FOUND,
                codes::LEASE_NOT_FOUND,
                format!("no lease {id}: it was never granted, or it expired or was revoked"),
            )))
        }
    };
    if w.durability == Durability::All {
        if let Err(e) = wait_all_voters(ctx, index).await {
            return Err(e.into_response());
        }
    }
    Ok(Applied { outcome, duplicate, index })
}

/// Proposes a key write (put, delete, CAS) and answers with its outcome.
async fn write(ctx: &Ctx, w: Write<'_>) -> Response {
    let Applied { outcome, duplicate, index } = match propose(ctx, w).await {
        Ok(applied) => applied,
        Err(response) => return response,
    };
    let mut resp = WriteResponse {
        index,
        node: ctx.id,
        duplicate,
        committed: true,
        created: None,
        existed: None,
        succeeded: None,
        current: None,
    };
    let mut status = StatusCode::OK;
    match outcome {
        WriteOutcome::Put { created } => resp.created = Some(created),
        WriteOutcome::Delete { existed } => resp.existed = Some(existed),
        WriteOutcome::Cas { succeeded, current } => {
            resp.succeeded = Some(succeeded);
            resp.current = current.map(|c| JsonValue::from_bytes(&c));
            if !succeeded {
                status = StatusCode::PRECONDITION_FAILED;
            }
        }
        other if duplicate => return sequence_reused(index, &other),
        other => {
            return ApiError::internal(format!(
                "invariant: a key write has a key write's outcome, not {other:?}"
            ))
            .into_response()
        }
    }
    (status, Json(resp)).into_response()
}

/// The answer to a write whose session repeated the remembered outcome of
/// another kind of write: the client used one `(client_id, seq)` for two
/// different writes. The outcome the session holds belongs to the first
/// and cannot answer this one; nothing was applied (`409
/// sequence_reused`).
pub(super) fn sequence_reused(index: u64, remembered: &WriteOutcome) -> Response {
    let first = match remembered {
        WriteOutcome::Put { .. } => "a put",
        WriteOutcome::Delete { .. } => "a delete",
        WriteOutcome::Cas { .. } => "a compare-and-swap",
        WriteOutcome::LeaseGranted { .. } => "a lease grant",
        WriteOutcome::LeaseRenewed { .. } => "a lease keepalive",
        WriteOutcome::LeaseRevoked { .. } => "a lease revoke",
        WriteOutcome::LeasesExpired { .. } => "a lease expiry",
    };
    ApiError::new(
        StatusCode::CONFLICT,
        codes::SEQUENCE_REUSED,
        format!(
            "this client_id and seq were used for {first}, which applied; a retry must repeat that write, \
             and this one needs a new seq. Nothing was applied now"
        ),
    )
    .with_index(index)
    .into_response()
}

/// Waits until every voter's log holds `index` (fully synchronous
/// replication), or times out while any voter is down or slow.
async fn wait_all_voters(ctx: &Ctx, index: u64) -> Result<(), ApiError> {
    let timeout: Duration = ctx.config.raft.request_timeout;
    let waited = ctx
        .node
        .raft()
        .wait(Some(timeout))
        .metrics(
            |m| {
                let replication = m.replication.as_ref();
                m.membership_config.membership().voter_ids().all(|v| {
                    v == m.id
                        || replication
                            .and_then(|r| r.get(&v))
                            .and_then(|l| l.as_ref())
                            .is_some_and(|l| l.index >= index)
                })
            },
            "durability=all",
        )
        .await;
    waited.map(|_| ()).map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            codes::NOT_FULLY_REPLICATED,
            format!(
                "committed at index {index} on a majority, but not every voter acknowledged it within {timeout:?}"
            ),
        )
        .with_index(index)
    })
}
