//! Client redirection, done by the server: a request that only the leader
//! can serve (a write, a membership change, the read index of a
//! linearizable read) is forwarded to the leader's HTTP address, and the
//! leader's answer is passed back unchanged.
//!
//! A forwarded request carries the forwarding node's id and current term
//! (`x-kv-forwarded-by`, `x-kv-forwarded-term`). A node that receives one and
//! is not the leader forwards it again only to a leader of a *later* term,
//! and answers 503 otherwise, so two nodes with stale ideas of who leads
//! cannot bounce a request between them: along any chain of forwards the
//! term grows at every hop. The second hop is what a leader that has just
//! handed its office over does with the forwarded writes it held during the
//! handoff (see `raft_core::handoff`): it sends them on to its successor,
//! and the client gets its answer instead of a 503.
//!
//! The caller's credentials (its `Authorization` header, or a node's
//! cluster secret) go along unchanged, and the leader checks them again;
//! a request this node refused never gets here (`auth.rs`).
//!
//! What the client learns when forwarding fails depends on whether the
//! request could have reached the leader: a refused connection means it
//! certainly did not (503, retryable); a timeout or a broken connection
//! after sending means it might have (504 indeterminate, for writes).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kv_client::api::{codes, LeaderInfo};
use raft_core::LeaderHint;

use super::error::{leader_info, ApiError};
use super::Ctx;

/// How much longer a forwarding node waits than the leader itself does, so
/// that the leader's own answer (even a timeout) arrives first.
pub const FORWARD_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// The header that marks a forwarded request, with the forwarding node's id.
pub const FORWARDED_BY: &str = "x-kv-forwarded-by";

/// The header with the forwarding node's term when it forwarded.
pub const FORWARDED_TERM: &str = "x-kv-forwarded-term";

/// Whether this request was already forwarded once.
pub fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_BY)
}

/// Whether a request may be forwarded by a node whose current term is
/// `term`: if nobody forwarded it yet, or the last forwarder did so in an
/// earlier term (a request without a readable term counts as forwarded in
/// the latest term, and goes no further).
fn may_forward(headers: &HeaderMap, term: u64) -> bool {
    if !was_forwarded(headers) {
        return true;
    }
    let forwarded_in = headers.get(FORWARDED_TERM).and_then(|t| t.to_str().ok()?.parse::<u64>().ok());
    forwarded_in.is_some_and(|t| t < term)
}

/// Whether a failed forward may have carried out the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads and read-index requests: a failure is always retryable.
    Read,
    /// Writes and membership changes: a failure after sending is
    /// indeterminate.
    Write,
}

/// A request to pass on to the leader.
pub struct Forward<'a> {
    /// The original request's headers.
    pub headers: &'a HeaderMap,
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub path_and_query: &'a str,
    /// Its body.
    pub body: Bytes,
    /// What a failure may mean.
    pub kind: Kind,
    /// How long to wait for the leader's answer.
    pub timeout: std::time::Duration,
}

/// Sends the request to the leader and returns its response as is, waiting
/// at most `timeout` for it (a little more than the leader itself waits).
pub async fn to_leader(ctx: &Ctx, leader: Option<&LeaderHint>, req: Forward<'_>) -> Response {
    let Forward { headers, method, path_and_query, body, kind, timeout } = req;
    let info = leader_info(leader);
    let (term, _) = ctx.node.watch_term().current();
    if !may_forward(headers, term) {
        return ApiError::no_leader(
            format!("node {} is not the leader and does not forward a forwarded request again", ctx.id),
            info,
        )
        .into_response();
    }
    let Some(addr) = info.as_ref().and_then(|l| l.api_addr.clone()) else {
        return ApiError::no_leader("no leader is known; retry shortly", info).into_response();
    };
    let url = ctx.node_url(&addr, path_and_query);
    let mut req = ctx
        .http
        .request(method, &url)
        .timeout(timeout)
        .header(FORWARDED_BY, ctx.id.to_string())
        .header(FORWARDED_TERM, term.to_string())
        .body(body);
    // The caller's credentials go along unchanged: the leader checks them
    // again against its own token file (see `auth.rs`).
    let passed_on = [
        axum::http::header::CONTENT_TYPE,
        axum::http::header::AUTHORIZATION,
        axum::http::HeaderName::from_static(super::auth::CLUSTER_SECRET_HEADER),
    ];
    for name in passed_on {
        if let Some(value) = headers.get(&name) {
            req = req.header(name, value);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            // The leader's 401 names the scheme it wants (auth.rs).
            let challenge = resp.headers().get(axum::http::header::WWW_AUTHENTICATE).cloned();
            match resp.bytes().await {
                Ok(bytes) => {
                    let mut response =
                        (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes)
                            .into_response();
                    if let Some(challenge) = challenge {
                        response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
                    }
                    response
                }
                Err(e) => failed(kind, format!("reading the leader's answer failed: {e}"), info),
            }
        }
        Err(e) if e.is_connect() => {
            ApiError::no_leader(format!("cannot reach the leader at {addr}: {e}"), info).into_response()
        }
        Err(e) => failed(kind, format!("forwarding to the leader at {addr} failed: {e}"), info),
    }
}

fn failed(kind: Kind, message: String, info: Option<LeaderInfo>) -> Response {
    match kind {
        Kind::Read => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, message)
            .with_leader(info)
            .into_response(),
        Kind::Write => ApiError::indeterminate(message, info).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(term: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(FORWARDED_BY, "1".parse().unwrap());
        if let Some(t) = term {
            h.insert(FORWARDED_TERM, t.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_request_goes_on_only_to_a_leader_of_a_later_term() {
        assert!(may_forward(&HeaderMap::new(), 1), "a request from a client");
        assert!(may_forward(&forwarded(Some("4")), 5), "forwarded before a handoff to term 5");
        assert!(!may_forward(&forwarded(Some("5")), 5), "two stale views of term 5 would bounce");
        assert!(!may_forward(&forwarded(Some("6")), 5));
        assert!(!may_forward(&forwarded(None), 5), "no term: goes no further");
        assert!(!may_forward(&forwarded(Some("x")), 5));
    }
}
