//! Cluster endpoints: status, membership changes, snapshots, elections and
//! leadership transfer.
//!
//! Membership changes are log entries like any write, so only the leader
//! can make them; a follower forwards them. A new node joins in two steps:
//! it is first added as a *learner*, which receives the log but does not
//! vote, and only once it has caught up is it promoted to *voter*. Adding a
//! voter that is far behind would make every commit wait for a node that
//! cannot acknowledge anything yet.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kv_client::api::{
    codes, AddLearnerRequest, ChangeResponse, FollowerStatus, Member, MembersResponse, StatusResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use raft_core::{ChangeError, Node, NodeMetrics, TransferError};
use serde_json::json;

use super::error::ApiError;
use super::forward::{self, Forward, Kind, FORWARD_SLACK};
use super::Ctx;
use crate::state_machine;

/// `GET /health`: the process is up and its node answers.
pub async fn health(State(ctx): State<Ctx>) -> Response {
    let m = ctx.node.metrics().await;
    Json(json!({"status": "ok", "node": ctx.id, "role": role(&m), "leader": m.leader})).into_response()
}

fn role(m: &NodeMetrics) -> String {
    serde_json::to_value(m.role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `GET /v1/cluster/status`: this node's view of the cluster.
pub async fn status(State(ctx): State<Ctx>) -> Response {
    let m = ctx.node.metrics().await;
    let digest = match ctx
        .node
        .view()
        .map_err(ApiError::from)
        .and_then(|v| state_machine::digest(&v).map_err(ApiError::from))
    {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let followers = m
        .matched
        .iter()
        .map(|(id, matched)| FollowerStatus {
            id: *id,
            matched_index: *matched,
            lag: m.last_log_index.saturating_sub(matched.unwrap_or(0)),
            answered_ms_ago: m.millis_since_ack.get(id).copied().flatten(),
        })
        .collect();
    Json(StatusResponse {
        id: m.id,
        role: role(&m),
        term: m.term,
        leader: m.leader,
        last_log_index: m.last_log_index,
        committed_index: m.committed_index,
        applied_index: m.applied_index,
        checkpointed_index: m.checkpointed_index,
        snapshot_index: m.snapshot_index,
        purged_index: m.purged_index,
        voters: m.voters.iter().copied().collect(),
        learners: m.learners.iter().copied().collect(),
        followers,
        state_digest: digest,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        db_size_bytes: db_size_bytes(&ctx).await,
    })
    .into_response()
}

/// The size of the node's data: its database file and, in on-disk format
/// 3, the segments of its log file (each at its full, preallocated size),
/// read from their metadata on a blocking-pool thread (`tokio::fs`), so
/// that a slow disk does not stall the runtime; `None` for a node in
/// memory, or when the database file cannot be read (a status answer is
/// more use without the size than not at all).
async fn db_size_bytes(ctx: &Ctx) -> Option<u64> {
    let path = ctx.node.db_path()?;
    let mut total = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata.len(),
        Err(e) => {
            tracing::debug!(node_id = ctx.id, path = %path.display(), error = %e, "reading the database's size");
            return None;
        }
    };
    let log_dir = path.with_file_name(raft_core::storage::db::WAL_DIR);
    if let Ok(mut segments) = tokio::fs::read_dir(&log_dir).await {
        while let Ok(Some(segment)) = segments.next_entry().await {
            total += segment.metadata().await.map_or(0, |m| m.len());
        }
    }
    Some(total)
}

/// `GET /v1/cluster/members`.
pub async fn members(State(ctx): State<Ctx>) -> Response {
    let m = ctx.node.metrics().await;
    let members = m
        .nodes
        .iter()
        .map(|(id, n)| Member {
            id: *id,
            raft_addr: n.raft_addr.clone(),
            api_addr: n.api_addr.clone(),
            voter: m.voters.contains(id),
        })
        .collect();
    Json(MembersResponse { members, leader: m.leader }).into_response()
}

/// Runs a membership change on the leader, or forwards it there.
async fn change(
    ctx: &Ctx,
    headers: &HeaderMap,
    method: Method,
    uri: &Uri,
    body: Bytes,
    result: Result<raft_core::LogId, ChangeError>,
) -> Response {
    match result {
        Ok(log_id) => Json(ChangeResponse { index: log_id.index, node: ctx.id }).into_response(),
        Err(ChangeError::NotLeader { leader }) => {
            let pq = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            forward::to_leader(ctx, leader.as_ref(), change_forward(ctx, headers, method, pq, body)).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /v1/cluster/learners`: add a node as a learner and wait until it
/// has caught up.
pub async fn add_learner(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (body, req) = match json_body::<AddLearnerRequest>(body, None) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    if req.raft_addr.is_empty() || req.api_addr.is_empty() {
        return ApiError::bad_request("raft_addr and api_addr are required").into_response();
    }
    if let Some(forwarded) = forward_unless_leader(&ctx, &headers, Method::POST, &uri, body.clone()).await {
        return forwarded;
    }
    // A node that answers on its Raft port but will not be this cluster's
    // node `id` (another cluster id, another node id, a certificate that
    // does not match) is refused here, before anything is proposed: added,
    // it would stay in the membership, unreachable, and the request would
    // wait for it to catch up until the change timed out. A node that does
    // not answer yet may still be starting, and is added as before.
    let transport = raft_core::network::TcpTransport::new(ctx.id, &ctx.config.raft);
    match transport.check(req.id, &req.raft_addr).await {
        Err(e) if e.is_refusal() => {
            let message = format!("not added: {e}; nothing changed");
            return ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, message).into_response();
        }
        Err(e) => {
            tracing::info!(node_id = ctx.id, learner = req.id, error = %e, "adding a learner that does not answer yet")
        }
        Ok(()) => {}
    }
    let result = ctx.node.add_learner(req.id, Node::new(req.raft_addr, req.api_addr)).await;
    change(&ctx, &headers, Method::POST, &uri, body, result).await
}

/// The request body, and the JSON value it holds; `if_empty` stands for an
/// empty body (`None`: a body is required). A 400 otherwise.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    if_empty: Option<T>,
) -> Result<(Bytes, T), Response> {
    let Ok(body) = body else {
        return Err(ApiError::bad_request("cannot read the request body").into_response());
    };
    if let (true, Some(value)) = (body.is_empty(), if_empty) {
        return Ok((body, value));
    }
    match serde_json::from_slice(&body) {
        Ok(value) => Ok((body, value)),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}")).into_response()),
    }
}

/// A membership change to pass on: it may wait for a learner to catch up.
fn change_forward<'a>(
    ctx: &Ctx,
    headers: &'a HeaderMap,
    method: Method,
    path_and_query: &'a str,
    body: Bytes,
) -> Forward<'a> {
    Forward {
        headers,
        method,
        path_and_query,
        body,
        kind: Kind::Write,
        timeout: ctx.config.raft.change_timeout + FORWARD_SLACK,
    }
}

/// On a follower, passes a membership change on to the leader, whose view of
/// the membership is the one that counts (a follower may not have applied
/// the latest change yet). `None` on the leader, which handles it itself.
async fn forward_unless_leader(
    ctx: &Ctx,
    headers: &HeaderMap,
    method: Method,
    uri: &Uri,
    body: Bytes,
) -> Option<Response> {
    if ctx.node.is_leader() {
        return None;
    }
    let leader = ctx.node.leader_hint();
    let pq = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    Some(forward::to_leader(ctx, leader.as_ref(), change_forward(ctx, headers, method, pq, body)).await)
}

/// The node's metrics and the member id named in the path, or a 400/404.
async fn member(ctx: &Ctx, id: &str) -> Result<(NodeMetrics, u64), Response> {
    let m = ctx.node.metrics().await;
    let id = id_of(ctx, id, &m)?;
    Ok((m, id))
}

fn id_of(ctx: &Ctx, id: &str, m: &NodeMetrics) -> Result<u64, Response> {
    let id: u64 =
        id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not a node id")).into_response())?;
    if !m.nodes.contains_key(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_NODE,
            format!("node {id} is not a member (as far as node {} knows)", ctx.id),
        )
        .into_response());
    }
    Ok(id)
}

/// `POST /v1/cluster/members/{id}/promote`: make a learner a voter.
pub async fn promote(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(forwarded) = forward_unless_leader(&ctx, &headers, Method::POST, &uri, Bytes::new()).await {
        return forwarded;
    }
    let (m, id) = match member(&ctx, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if m.voters.contains(&id) {
        return ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, format!("node {id} is already a voter"))
            .into_response();
    }
    let result = ctx.node.promote(id).await;
    change(&ctx, &headers, Method::POST, &uri, Bytes::new(), result).await
}

/// `DELETE /v1/cluster/members/{id}`: remove a voter or learner.
pub async fn remove(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(forwarded) = forward_unless_leader(&ctx, &headers, Method::DELETE, &uri, Bytes::new()).await {
        return forwarded;
    }
    let id = match member(&ctx, &id).await {
        Ok((_, id)) => id,
        Err(r) => return r,
    };
    let result = ctx.node.remove(id).await;
    change(&ctx, &headers, Method::DELETE, &uri, Bytes::new(), result).await
}

/// `POST /v1/cluster/snapshot`: take a snapshot on this node now.
pub async fn snapshot(State(ctx): State<Ctx>) -> Response {
    match ctx.node.snapshot().await {
        Ok(()) => Json(ChangeResponse { index: 0, node: ctx.id }).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /v1/cluster/campaign`: ask this node to stand for election now.
pub async fn campaign(State(ctx): State<Ctx>) -> Response {
    match ctx.node.campaign().await {
        Ok(()) => Json(ChangeResponse { index: 0, node: ctx.id }).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /v1/cluster/transfer-leader` `{"to": N}`: the leader hands its
/// leadership to voter N, or (no `to`, or an empty body) to the voter that
/// answers and holds the most of the log, and answers once a new leader
/// leads (see [`raft_core::handoff`]). A follower passes it on to the leader.
pub async fn transfer_leader(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (body, req) = match json_body(body, Some(TransferLeaderRequest::default())) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    if let Some(forwarded) = forward_unless_leader(&ctx, &headers, Method::POST, &uri, body.clone()).await {
        return forwarded;
    }
    if let Some(to) = req.to {
        let m = ctx.node.metrics().await;
        if let Err(r) = id_of(&ctx, &to.to_string(), &m) {
            return r;
        }
    }
    match ctx.node.transfer_leadership(req.to).await {
        Ok(leader) => {
            let term = ctx.node.metrics().await.term;
            Json(TransferLeaderResponse { leader, term, node: ctx.id }).into_response()
        }
        // Leadership moved before the handoff began: pass it on.
        Err(TransferError::NotLeader { leader }) => {
            let pq = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            forward::to_leader(&ctx, leader.as_ref(), change_forward(&ctx, &headers, Method::POST, pq, body))
                .await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Any other path.
pub async fn not_found(uri: Uri) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {}", uri.path()))
        .into_response()
}

/// A known path with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
