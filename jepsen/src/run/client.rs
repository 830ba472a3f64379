//! The harness's client: one HTTP request per attempt, and an honest
//! account of what each answer proves.
//!
//! A Jepsen client's most important job is *classification*. Every
//! operation ends as exactly one of:
//!
//! * **ok**: the node said it happened;
//! * **fail**: it certainly did not happen. The request never reached a
//!   node (connection refused), or the node said so (`retryable: true`, a
//!   CAS whose expected value did not match, a malformed request);
//! * **info**: nobody knows. The request was sent and no answer came back
//!   (a timeout, a dropped connection), or the node said `indeterminate`.
//!
//! Calling an unknown outcome `fail` would let the checker assume a write
//! that may have taken effect did not, and report a correct system as
//! broken; calling it `ok` would hide lost writes. Reads change nothing, so
//! a read that got no answer is simply a `fail`.
//!
//! Writes carry the client's session `(client_id, seq)` and are retried with
//! the *same* session after a failure or a timeout, on the next node, until
//! the operation's deadline: the server's exactly-once table applies the
//! write at most once however many attempts arrive, and answers a repeat
//! with the first attempt's outcome. That is also why a server started with
//! `--unsafe-no-dedup` is caught: a retried CAS that had already applied is
//! applied again, or reports a mismatch for a change that did happen.

use std::time::{Duration, Instant};

use kv_client::api::{
    codes, CasRequest, DeleteRequest, Durability, ErrorBody, JsonValue, LeaseGrantRequest, LeaseRequest,
    LeaseResponse, ListResponse, PutRequest, ReadResponse, RollbackList, StatusResponse, WriteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::tls::Credentials;

/// Why an attempt did not succeed, and whether its effect is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// True if the operation certainly did not take effect.
    pub definite: bool,
    /// The server's error code, or what went wrong on the way.
    pub error: String,
}

impl Failure {
    fn definite(error: impl Into<String>) -> Failure {
        Failure { definite: true, error: error.into() }
    }

    fn unknown(error: impl Into<String>) -> Failure {
        Failure { definite: false, error: error.into() }
    }
}

/// What a write attempt ended in.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Applied (or a CAS whose expected value matched).
    Ok(WriteResponse),
    /// A lease grant, keepalive or revoke applied.
    Lease(LeaseResponse),
    /// A CAS whose expected value did not match: certainly not applied.
    Mismatch,
    /// A lease request (or a put with `lease=`) refused because the lease
    /// does not exist: certainly not applied, and decisive.
    LeaseNotFound,
    /// Anything else.
    Failed(Failure),
}

/// A value for one of the harness's keys: all are UTF-8 strings.
fn json_value(v: &str) -> JsonValue {
    JsonValue { value: Some(v.to_string()), value_b64: None }
}

/// The client session of one worker: writes are exactly-once per
/// `(client_id, seq)`.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// The client's id.
    pub client_id: u64,
    /// The next sequence number.
    pub seq: u64,
}

impl Session {
    /// Takes the next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// A write request, sent as it is on every attempt.
#[derive(Debug, Clone)]
pub enum Write {
    /// `PUT /v1/kv/{key}?durability=...`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// When the write is acknowledged: at `leader` durability once it
        /// is in the leader's log, uncommitted, and so possibly lost.
        durability: Durability,
    },
    /// `POST /v1/cas/{key}`: `expected: None` means "must be absent".
    Cas {
        /// The key.
        key: String,
        /// The value it must hold.
        expected: Option<String>,
        /// The new value.
        value: String,
    },
    /// `DELETE /v1/kv/{key}`.
    Delete {
        /// The key.
        key: String,
    },
    /// `PUT /v1/kv/{key}?lease={lease}`: put and attach to a lease.
    LeasePut {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease.
        lease: u64,
    },
    /// `POST /v1/leases`: grant a lease of `ttl_ms`.
    LeaseGrant {
        /// Its time to live, in ms.
        ttl_ms: u64,
    },
    /// `POST /v1/leases/{id}/keepalive`.
    LeaseKeepAlive {
        /// The lease.
        id: u64,
    },
    /// `DELETE /v1/leases/{id}`.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
}

impl Write {
    /// The KV key it writes, if it writes one.
    pub fn kv_key(&self) -> Option<&str> {
        match self {
            Write::Put { key, .. }
            | Write::Cas { key, .. }
            | Write::Delete { key }
            | Write::LeasePut { key, .. } => Some(key),
            Write::LeaseGrant { .. } | Write::LeaseKeepAlive { .. } | Write::LeaseRevoke { .. } => None,
        }
    }

    /// When it is acknowledged: a put at the durability it asks for,
    /// everything else once committed (a CAS and the lease requests need
    /// their applied outcome).
    pub fn durability(&self) -> Durability {
        match self {
            Write::Put { durability, .. } => *durability,
            _ => Durability::Majority,
        }
    }
}

/// HTTP access to the nodes, shared by every worker.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    attempt_timeout: Duration,
    /// `http`, or `https` for a cluster run with [`Credentials`].
    scheme: &'static str,
}

impl Http {
    /// A client whose every attempt gives up after `attempt_timeout`. With
    /// `tls`, it speaks HTTPS, trusting only the run's CA and presenting
    /// the harness's client certificate, and sends the harness's token
    /// with every request.
    ///
    /// # Errors
    /// If the HTTP client cannot be built, or the token cannot be carried
    /// in a header.
    pub fn new(attempt_timeout: Duration, tls: Option<&Credentials>) -> anyhow::Result<Http> {
        let mut builder = kv_client::tls::http_client_builder(tls.map(Credentials::client_tls))
            .connect_timeout(attempt_timeout.min(Duration::from_millis(500)))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(tls) = tls {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, tls.token().header_value()?);
            builder = builder.default_headers(headers);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Http { client: builder.build()?, attempt_timeout, scheme })
    }

    /// The URL of `path` on `node` (`host:port`).
    fn url(&self, node: &str, path: &str) -> String {
        format!("{}://{node}{path}", self.scheme)
    }

    /// Sends a request and decodes a 2xx body as `T`; every other ending is
    /// a [`Failure`], with the error body's code when there is one.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, (u16, Failure)> {
        let resp = match req.timeout(self.attempt_timeout).send().await {
            Ok(resp) => resp,
            // Connecting failed: the request was never sent.
            Err(e) if e.is_connect() => return Err((0, Failure::definite(connect_error(&e)))),
            Err(e) if e.is_timeout() => return Err((0, Failure::unknown("timeout"))),
            Err(e) => return Err((0, Failure::unknown(format!("request: {e}")))),
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err((status, Failure::unknown("timeout"))),
            Err(e) => return Err((status, Failure::unknown(format!("body: {e}")))),
        };
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| (status, Failure::unknown(format!("undecodable answer: {e}"))));
        }
        Err((status, classify(status, &bytes)))
    }

    /// `GET /v1/kv/{key}` with a consistency level (and session token).
    /// A missing key is `Ok(None)`.
    pub async fn read(
        &self,
        node: &str,
        key: &str,
        consistency: &str,
        token: Option<u64>,
    ) -> Result<Option<ReadResponse>, Failure> {
        let mut query = vec![("consistency", consistency.to_string())];
        if let Some(t) = token {
            query.push(("token", t.to_string()));
        }
        let req = self.client.get(self.url(node, &format!("/v1/kv/{key}"))).query(&query);
        match self.send::<ReadResponse>(req).await {
            Ok(r) => Ok(Some(r)),
            Err((404, f)) if f.error == codes::KEY_NOT_FOUND => Ok(None),
            Err((_, f)) => Err(Failure { definite: true, ..f }),
        }
    }

    /// `GET /v1/kv?prefix=...`, linearizable, up to `limit` keys.
    pub async fn list(&self, node: &str, prefix: &str, limit: usize) -> Result<ListResponse, Failure> {
        let query = [("prefix", prefix.to_string()), ("limit", limit.to_string())];
        let req = self.client.get(self.url(node, "/v1/kv")).query(&query);
        self.send(req).await.map_err(|(_, f)| Failure { definite: true, ..f })
    }

    /// One attempt at a write, with the session's `(client_id, seq)`.
    pub async fn write(&self, node: &str, w: &Write, client_id: u64, seq: u64) -> WriteOutcome {
        let sent = match w {
            Write::Put { key, value, durability } => {
                let body =
                    PutRequest { value: json_value(value), client_id: Some(client_id), seq: Some(seq) };
                let mut req = self.client.put(self.url(node, &format!("/v1/kv/{key}")));
                if *durability != Durability::Majority {
                    req = req.query(&[("durability", durability.name())]);
                }
                self.send_json::<WriteResponse>(req, &body).await
            }
            Write::Cas { key, expected, value } => {
                let body = CasRequest {
                    expected: expected.clone(),
                    expected_b64: None,
                    expect_absent: expected.is_none(),
                    value: json_value(value),
                    client_id: Some(client_id),
                    seq: Some(seq),
                };
                self.send_json::<WriteResponse>(
                    self.client.post(self.url(node, &format!("/v1/cas/{key}"))),
                    &body,
                )
                .await
            }
            Write::Delete { key } => {
                let body = DeleteRequest { client_id: Some(client_id), seq: Some(seq) };
                let req = self.client.delete(self.url(node, &format!("/v1/kv/{key}")));
                self.send_json::<WriteResponse>(req, &body).await
            }
            Write::LeasePut { key, value, lease } => {
                let body =
                    PutRequest { value: json_value(value), client_id: Some(client_id), seq: Some(seq) };
                let req =
                    self.client.put(self.url(node, &format!("/v1/kv/{key}"))).query(&[("lease", lease)]);
                self.send_json::<WriteResponse>(req, &body).await
            }
            Write::LeaseGrant { ttl_ms } => {
                let body = LeaseGrantRequest { ttl_ms: *ttl_ms, client_id: Some(client_id), seq: Some(seq) };
                return self.lease_write(self.client.post(self.url(node, "/v1/leases")), &body).await;
            }
            Write::LeaseKeepAlive { id } => {
                let body = LeaseRequest { client_id: Some(client_id), seq: Some(seq) };
                let req = self.client.post(self.url(node, &format!("/v1/leases/{id}/keepalive")));
                return self.lease_write(req, &body).await;
            }
            Write::LeaseRevoke { id } => {
                let body = LeaseRequest { client_id: Some(client_id), seq: Some(seq) };
                let req = self.client.delete(self.url(node, &format!("/v1/leases/{id}")));
                return self.lease_write(req, &body).await;
            }
        };
        match sent {
            Ok(r) if r.succeeded == Some(false) => WriteOutcome::Mismatch,
            Ok(r) => WriteOutcome::Ok(r),
            // A CAS whose expected value did not match answers 412 with a
            // WriteResponse (`succeeded: false`) as its body.
            Err((412, _)) => WriteOutcome::Mismatch,
            Err((404, f)) if f.error == codes::LEASE_NOT_FOUND => WriteOutcome::LeaseNotFound,
            Err((_, f)) => WriteOutcome::Failed(f),
        }
    }

    /// One attempt at a lease grant, keepalive or revoke.
    async fn lease_write(&self, req: reqwest::RequestBuilder, body: &impl Serialize) -> WriteOutcome {
        match self.send_json::<LeaseResponse>(req, body).await {
            Ok(r) => WriteOutcome::Lease(r),
            Err((404, f)) if f.error == codes::LEASE_NOT_FOUND => WriteOutcome::LeaseNotFound,
            Err((_, f)) => WriteOutcome::Failed(f),
        }
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        body: &impl Serialize,
    ) -> Result<T, (u16, Failure)> {
        self.send(req.json(body)).await
    }

    /// `GET /v1/watch?prefix=...&from_index=...&prev=true`: the response,
    /// once its status line arrived, for the caller to read line by line
    /// (its body has no deadline: a watch lasts as long as its reader
    /// wants). A status other than 200 is a failure with the error body's
    /// code; `410 compacted` comes back as `Err((410, body))`.
    pub async fn watch(
        &self,
        node: &str,
        prefix: &str,
        from_index: u64,
    ) -> Result<reqwest::Response, (u16, Failure, Vec<u8>)> {
        let query =
            [("prefix", prefix.to_string()), ("from_index", from_index.to_string()), ("prev", "true".into())];
        let req = self.client.get(self.url(node, "/v1/watch")).query(&query);
        let resp = match tokio::time::timeout(self.attempt_timeout, req.send()).await {
            Err(_) => return Err((0, Failure::definite("timeout"), Vec::new())),
            Ok(Err(e)) if e.is_connect() => {
                return Err((0, Failure::definite(connect_error(&e)), Vec::new()))
            }
            Ok(Err(e)) => return Err((0, Failure::definite(format!("request: {e}")), Vec::new())),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(resp);
        }
        let body = tokio::time::timeout(self.attempt_timeout, resp.bytes()).await;
        let body = body.ok().and_then(Result::ok).map(|b| b.to_vec()).unwrap_or_default();
        Err((status, classify(status, &body), body))
    }

    /// `GET /v1/cluster/status`.
    pub async fn status(&self, node: &str) -> Result<StatusResponse, Failure> {
        let req = self.client.get(self.url(node, "/v1/cluster/status"));
        self.send(req).await.map_err(|(_, f)| f)
    }

    /// `GET /v1/cluster/rollback`: the summaries of the node's rollback
    /// records (an admin request: with `--tls`, the harness's token is an
    /// admin's).
    pub async fn rollback_list(&self, node: &str) -> Result<RollbackList, Failure> {
        let req = self.client.get(self.url(node, "/v1/cluster/rollback"));
        self.send(req).await.map_err(|(_, f)| f)
    }

    /// `GET /v1/cluster/rollback/{id}`: one record in full, as the node
    /// answers it (kept as JSON, so that `rollback.json` holds every field
    /// the server gives).
    pub async fn rollback_show(&self, node: &str, id: u64) -> Result<serde_json::Value, Failure> {
        let req = self.client.get(self.url(node, &format!("/v1/cluster/rollback/{id}")));
        self.send(req).await.map_err(|(_, f)| f)
    }

    /// `DELETE /v1/cluster/members/{id}`, through any node.
    pub async fn remove_member(&self, node: &str, id: u64) -> Result<(), Failure> {
        let req = self.client.delete(self.url(node, &format!("/v1/cluster/members/{id}")));
        self.send::<serde_json::Value>(req).await.map(|_| ()).map_err(|(_, f)| f)
    }
}

/// What a failed connection says: for a TLS handshake that failed, what
/// is wrong with the certificates (a misconfigured `--tls` run fails every
/// request this way); else reqwest's words and the innermost cause
/// (refused, timed out, closed during the handshake), which reqwest's
/// words leave out.
fn connect_error(e: &reqwest::Error) -> String {
    if let Some(tls) = kv_client::tls::tls_error(e) {
        return format!("connect: TLS: {}", kv_client::tls::describe(tls));
    }
    let mut innermost = None;
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost {
        Some(c) => format!("connect: {e}: {c}"),
        None => format!("connect: {e}"),
    }
}

/// What an error answer proves: `retryable` errors and refusals of the
/// request itself (a refused token, too: the node did nothing) were
/// certainly not applied; everything else may have been.
fn classify(status: u16, body: &[u8]) -> Failure {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => {
            let definite = e.retryable
                || matches!(
                    e.error.as_str(),
                    codes::BAD_REQUEST
                        | codes::TOO_LARGE
                        | codes::KEY_NOT_FOUND
                        | codes::LEASE_NOT_FOUND
                        | codes::CAS_MISMATCH
                        | codes::STALE_SEQUENCE
                        | codes::UNKNOWN_NODE
                        | codes::CONFLICT
                        | codes::UNAUTHENTICATED
                        | codes::FORBIDDEN
                );
            Failure { definite, error: e.error }
        }
        Err(_) => Failure::unknown(format!("HTTP {status} without an error body")),
    }
}

/// A write with retries: attempts go to `nodes` in turn starting at
/// `first`, all with the same `(client_id, seq)`, until one is decisive or
/// `deadline` passes. Returns the decisive outcome, or the last failure
/// made indefinite if any attempt's effect was unknown.
///
/// With `lose_first`, the first answer is ignored as if it had been lost on
/// the way back (a timeout after the server acted), and the write is
/// retried: harmless with exactly-once writes, and the way the
/// `--unsafe-no-dedup` control is caught.
pub async fn write_with_retries(
    http: &Http,
    nodes: &[String],
    first: usize,
    w: &Write,
    session: (u64, u64),
    deadline: Instant,
    lose_first: bool,
) -> WriteOutcome {
    let mut unknown = false;
    let mut attempt = 0;
    loop {
        let node = &nodes[(first + attempt) % nodes.len()];
        attempt += 1;
        let outcome = http.write(node, w, session.0, session.1).await;
        let outcome = match outcome {
            WriteOutcome::Failed(f) if f.definite => WriteOutcome::Failed(f),
            _ if lose_first && attempt == 1 => {
                WriteOutcome::Failed(Failure::unknown("answer lost (simulated)"))
            }
            other => other,
        };
        match outcome {
            WriteOutcome::Failed(f) => {
                unknown |= !f.definite;
                // Leave time for the attempt to finish: starting one that is
                // sure to be cut off would only add an unknown outcome.
                if Instant::now() + http.attempt_timeout / 2 >= deadline {
                    return WriteOutcome::Failed(Failure { definite: !unknown, ..f });
                }
                tokio::time::sleep(Duration::from_millis(20 * attempt.min(10) as u64)).await;
            }
            decisive => return decisive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, retryable: bool) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: code.into(),
            message: String::new(),
            retryable,
            leader: None,
            index: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_definite_failure_that_says_why() {
        // A port nobody listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let http = Http::new(Duration::from_secs(1), None).unwrap();
        let failure = http.status(&addr).await.unwrap_err();
        assert!(failure.definite, "{failure:?}");
        assert!(failure.error.starts_with("connect: "), "{failure:?}");
        assert!(failure.error.to_lowercase().contains("refused"), "the cause is left out: {failure:?}");
    }

    #[test]
    fn errors_are_definite_only_when_they_prove_nothing_happened() {
        assert!(classify(503, &body(codes::NO_LEADER, true)).definite);
        assert!(classify(412, &body(codes::CAS_MISMATCH, false)).definite);
        assert!(classify(400, &body(codes::BAD_REQUEST, false)).definite);
        assert!(classify(404, &body(codes::LEASE_NOT_FOUND, false)).definite);
        // A refused token: no handler ran, nothing was forwarded.
        assert!(classify(401, &body(codes::UNAUTHENTICATED, false)).definite);
        assert!(classify(403, &body(codes::FORBIDDEN, false)).definite);
        assert!(!classify(504, &body(codes::INDETERMINATE, false)).definite);
        assert!(!classify(504, &body(codes::NOT_FULLY_REPLICATED, false)).definite);
        assert!(!classify(500, &body(codes::INTERNAL, false)).definite);
        assert!(!classify(502, b"<html>bad gateway</html>").definite);
    }
}
