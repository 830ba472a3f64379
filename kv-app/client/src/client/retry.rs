//! The retry loop: sends one logical request, a [`Call`], attempt after
//! attempt until it succeeds, fails definitely, or the deadline passes. Each
//! attempt ends done, certainly not done, with an unknown outcome, or failed;
//! what the call does ([`Kind`]) decides which of those are retried, and a
//! write any of whose attempts had an unknown outcome ends indeterminate,
//! never failed. The rules are in "Retries and errors" in `mod.rs`.

use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::leader::{normalize_endpoint_for, Target};
use super::{lock, Client, ClientError};
use crate::api::{codes, ErrorBody};
use crate::tls::{describe, tls_error};

/// The least time left before the deadline for which another attempt is
/// started.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// What a call does, which decides what may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// No effect: retry every transient failure until the deadline.
    Read,
    /// A write with a session: retry even after an attempt whose outcome is
    /// unknown, since the server deduplicates.
    Write { client_id: u64, seq: u64 },
    /// A change without a session (membership, snapshot, campaign): retry
    /// only when it certainly was not carried out.
    Change,
}

/// One logical request, sent once per attempt.
pub(super) struct Call<'a> {
    pub(super) method: Method,
    /// The path, already percent-encoded.
    pub(super) path: String,
    pub(super) query: Vec<(&'static str, String)>,
    /// The JSON body, serialized once.
    pub(super) body: Option<Vec<u8>>,
    /// Statuses besides 2xx whose body the caller decodes itself (404 for a
    /// missing key, 412 for a failed CAS).
    pub(super) accept: &'a [StatusCode],
    pub(super) kind: Kind,
    pub(super) target: Target<'a>,
    /// Make a single attempt (status probes, snapshot, campaign).
    pub(super) once: bool,
}

/// An answer the caller decodes.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
    pub(super) endpoint: String,
}

pub(super) fn decode<T: DeserializeOwned>(reply: &Reply) -> Result<T, ClientError> {
    serde_json::from_slice(&reply.body).map_err(|e| ClientError::Decode {
        endpoint: reply.endpoint.clone(),
        reason: format!("{e} in {}", String::from_utf8_lossy(&reply.body)),
    })
}

/// How one attempt ended.
enum Attempt {
    Done(Reply),
    /// Certainly not carried out; worth retrying (connection refused, 503).
    NotDone {
        reason: String,
        leader_hint: Option<String>,
        error: Option<ClientError>,
    },
    /// Sent, outcome unknown (timeout, broken connection, 504).
    Unknown {
        reason: String,
    },
    /// A definite answer that retrying will not change.
    Failed(ClientError),
}

impl Client {
    /// Sends `call` until it succeeds, fails definitely, or the deadline
    /// passes; see the module docs for what is retried.
    pub(super) async fn execute(&self, call: &Call<'_>) -> Result<Reply, ClientError> {
        let options = &self.inner.options;
        let deadline = Instant::now() + options.deadline;
        let per_round = match call.target {
            Target::Cluster => self.inner.endpoints.len(),
            Target::Node(_) => 1,
        };
        // Why an earlier attempt's outcome is unknown, if one's is.
        let mut unknown: Option<String> = None;
        let mut last_failure = String::from("no attempt was made before the deadline");
        let mut failures_this_round = 0;
        let mut backoff = options.initial_backoff;
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(give_up(call.kind, unknown, last_failure));
            }
            let remaining = deadline - now;
            // An attempt begun in the last moments before the deadline would
            // most likely time out, and a timed-out write is indeterminate:
            // give up instead of turning a known outcome into an unknown one.
            if attempt > 0 && remaining < MIN_ATTEMPT {
                return Err(give_up(call.kind, unknown, last_failure));
            }
            let timeout = match call.kind {
                Kind::Change => remaining,
                Kind::Read | Kind::Write { .. } => options.request_timeout.min(remaining),
            };
            let endpoint = self.pick(call.target);
            attempt += 1;
            tracing::debug!(%endpoint, method = %call.method, path = %call.path, attempt, "sending request");
            let outcome = self.attempt(call, &endpoint, timeout).await;
            let mut follow_hint = false;
            match outcome {
                Attempt::Done(reply) => {
                    if matches!(call.target, Target::Cluster) {
                        lock(&self.inner.routing).preferred = Some(endpoint);
                    }
                    return Ok(reply);
                }
                Attempt::Failed(mut error) => {
                    tracing::debug!(%endpoint, %error, "request failed");
                    if let (
                        ClientError::StaleSequence { client_id, seq, .. },
                        Kind::Write { client_id: c, seq: s },
                    ) = (&mut error, call.kind)
                    {
                        (*client_id, *seq) = (c, s);
                    }
                    if let ClientError::NotFullyReplicated { index: Some(index), .. } = error {
                        // Committed: a session read must see it.
                        self.observe(index);
                    }
                    return Err(match (call.kind, unknown) {
                        // An earlier attempt may have applied the write, so
                        // a later refusal does not make it a failure.
                        (Kind::Write { .. }, Some(why))
                            if !matches!(
                                error,
                                ClientError::NotFullyReplicated { .. } | ClientError::StaleSequence { .. }
                            ) =>
                        {
                            ClientError::Indeterminate { reason: format!("{why}; then {error}") }
                        }
                        _ => error,
                    });
                }
                Attempt::NotDone { reason, leader_hint, error } => {
                    tracing::debug!(%endpoint, %reason, ?leader_hint, "request not carried out");
                    if call.once {
                        return Err(error.unwrap_or(ClientError::Unavailable { reason }));
                    }
                    last_failure = reason;
                    follow_hint = self.note_failure(call.target, &endpoint, leader_hint);
                }
                Attempt::Unknown { reason } => {
                    tracing::debug!(%endpoint, %reason, "request outcome unknown");
                    match call.kind {
                        Kind::Write { client_id, seq } => {
                            unknown.get_or_insert_with(|| {
                                format!("an attempt of write (client {client_id}, seq {seq}) had an unknown outcome: {reason}")
                            });
                        }
                        Kind::Change => return Err(ClientError::Indeterminate { reason }),
                        Kind::Read if call.once => return Err(ClientError::Unavailable { reason }),
                        Kind::Read => {}
                    }
                    last_failure = reason;
                    self.note_failure(call.target, &endpoint, None);
                }
            }
            // A fresh leader hint is worth trying at once; otherwise pause
            // once every endpoint has had its chance.
            failures_this_round += 1;
            if follow_hint && failures_this_round < per_round + 2 {
                continue;
            }
            if failures_this_round >= per_round {
                failures_this_round = 0;
                let remaining = deadline.saturating_duration_since(Instant::now());
                let pause = jitter(backoff).min(remaining);
                backoff = (backoff * 2).min(options.max_backoff);
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// One HTTP exchange, classified.
    async fn attempt(&self, call: &Call<'_>, endpoint: &str, timeout: Duration) -> Attempt {
        let mut request =
            self.inner.http.request(call.method.clone(), format!("{endpoint}{}", call.path)).timeout(timeout);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return failed_exchange(endpoint, &e),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) => return failed_exchange(endpoint, &e),
        };
        classify_reply(Reply { status, body, endpoint: endpoint.to_owned() }, call.accept)
    }
}

/// Sorts a failed exchange (no answer, or a broken one) into the outcomes
/// the retry loop distinguishes.
fn failed_exchange(endpoint: &str, e: &reqwest::Error) -> Attempt {
    if let Some(reason) = tls_refusal(e) {
        return Attempt::Failed(ClientError::Tls { endpoint: endpoint.to_owned(), reason });
    }
    if e.is_connect() {
        // The connection was never established, so nothing was sent.
        return Attempt::NotDone {
            reason: format!("cannot connect to {endpoint}: {}", root_cause(e)),
            leader_hint: None,
            error: None,
        };
    }
    Attempt::Unknown { reason: describe_transport_error(endpoint, e) }
}

/// The error an answer other than 2xx stands for, for a caller that makes
/// one attempt and handles the answer itself (a streamed backup).
pub(super) fn refusal(reply: Reply) -> ClientError {
    as_error(classify_reply(reply, &[]))
}

/// The error a failed exchange stands for, for such a caller.
pub(super) fn transport_error(endpoint: &str, e: &reqwest::Error) -> ClientError {
    as_error(failed_exchange(endpoint, e))
}

fn as_error(attempt: Attempt) -> ClientError {
    match attempt {
        Attempt::Failed(e) | Attempt::NotDone { error: Some(e), .. } => e,
        Attempt::NotDone { reason, .. } | Attempt::Unknown { reason } => ClientError::Unavailable { reason },
        Attempt::Done(reply) => ClientError::Decode {
            endpoint: reply.endpoint,
            reason: format!("status {} is not a refusal", reply.status),
        },
    }
}

/// Sorts an HTTP answer into the outcomes the retry loop distinguishes.
fn classify_reply(reply: Reply, accept: &[StatusCode]) -> Attempt {
    let status = reply.status;
    if status.is_success() || accept.contains(&status) {
        return Attempt::Done(reply);
    }
    let endpoint = &reply.endpoint;
    let body: ErrorBody = match serde_json::from_slice(&reply.body) {
        Ok(body) => body,
        // Something other than kv-server answered (or it crashed mid-way):
        // judge by the status alone.
        Err(_) => {
            let text = String::from_utf8_lossy(&reply.body);
            let reason = format!("{endpoint} answered {status}: {}", text.trim());
            return match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    Attempt::NotDone { reason, leader_hint: None, error: None }
                }
                StatusCode::GATEWAY_TIMEOUT => Attempt::Unknown { reason },
                _ => Attempt::Failed(ClientError::Decode {
                    endpoint: endpoint.clone(),
                    reason: format!("status {status} without an error body: {}", text.trim()),
                }),
            };
        }
    };
    let reason = format!("{endpoint} answered {status} {}: {}", body.error, body.message);
    // The hint is `host:port`; the leader speaks the scheme of the node
    // that sent it, since a cluster speaks HTTPS on every node or on none.
    let https = endpoint.starts_with("https://");
    let leader_hint = body
        .leader
        .as_ref()
        .and_then(|l| l.api_addr.as_deref())
        .and_then(|a| normalize_endpoint_for(a, https).ok());
    if status == StatusCode::GATEWAY_TIMEOUT {
        if body.error == codes::NOT_FULLY_REPLICATED {
            return Attempt::Failed(ClientError::NotFullyReplicated {
                index: body.index,
                message: body.message,
            });
        }
        return Attempt::Unknown { reason };
    }
    if status == StatusCode::CONFLICT && body.error == codes::STALE_SEQUENCE {
        // `execute` fills in the session it sent.
        return Attempt::Failed(ClientError::StaleSequence { client_id: 0, seq: 0, message: body.message });
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || body.retryable {
        let error = ClientError::Server { status: status.as_u16(), body };
        return Attempt::NotDone { reason, leader_hint, error: Some(error) };
    }
    Attempt::Failed(ClientError::Server { status: status.as_u16(), body })
}

/// The error for a call that ran out of time.
fn give_up(kind: Kind, unknown: Option<String>, last_failure: String) -> ClientError {
    match (kind, unknown) {
        (Kind::Write { .. }, Some(why)) => ClientError::Indeterminate {
            reason: format!("{why}; deadline passed, last attempt: {last_failure}"),
        },
        _ => ClientError::Unavailable { reason: format!("deadline passed; last attempt: {last_failure}") },
    }
}

/// Why TLS refused the exchange, if it did before any request was carried
/// out: any TLS failure while connecting, or a certificate alert (sent
/// only during a handshake) from a server that refused the client's
/// certificate. In TLS 1.3 the client finishes its half of the handshake
/// before the server checks its certificate, so that refusal arrives when
/// the client reads the answer; the server never saw the request.
fn tls_refusal(e: &reqwest::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    let tls = tls_error(e)?;
    let handshake_alert = matches!(
        tls,
        rustls::Error::AlertReceived(
            A::CertificateRequired
                | A::UnknownCA
                | A::BadCertificate
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::UnsupportedCertificate
                | A::AccessDenied
                | A::DecryptError
                | A::HandshakeFailure
        )
    );
    (e.is_connect() || handshake_alert).then(|| describe(tls))
}

/// "timed out" or the underlying cause, for messages.
fn describe_transport_error(endpoint: &str, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer from {endpoint} in time")
    } else {
        format!("request to {endpoint} broke off: {}", root_cause(e))
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)"):
/// reqwest's outer layers only repeat the URL and say "error sending request".
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Half of `backoff` plus a random part of the other half, so clients that
/// failed together do not retry in lockstep.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: serde_json::to_vec(&body).unwrap(),
            endpoint: "http://127.0.0.1:1".into(),
        }
    }

    fn error_json(code: &str, retryable: bool) -> Value {
        json!({"error": code, "message": "m", "retryable": retryable})
    }

    #[test]
    fn replies_are_classified_by_status_and_code() {
        let mut no_leader = error_json(codes::NO_LEADER, true);
        no_leader["leader"] = json!({"id": 2, "api_addr": "127.0.0.1:8081"});
        match classify_reply(reply(503, no_leader), &[]) {
            Attempt::NotDone { leader_hint, .. } => {
                assert_eq!(leader_hint.as_deref(), Some("http://127.0.0.1:8081"))
            }
            _ => panic!("503 must be retried as not done"),
        }
        assert!(matches!(
            classify_reply(reply(504, error_json(codes::INDETERMINATE, false)), &[]),
            Attempt::Unknown { .. }
        ));
        assert!(matches!(
            classify_reply(reply(504, error_json(codes::NOT_FULLY_REPLICATED, false)), &[]),
            Attempt::Failed(ClientError::NotFullyReplicated { .. })
        ));
        assert!(matches!(
            classify_reply(reply(409, error_json(codes::STALE_SEQUENCE, false)), &[]),
            Attempt::Failed(ClientError::StaleSequence { .. })
        ));
        assert!(matches!(
            classify_reply(reply(400, error_json(codes::BAD_REQUEST, false)), &[]),
            Attempt::Failed(ClientError::Server { status: 400, .. })
        ));
        assert!(matches!(
            classify_reply(reply(412, json!({})), &[StatusCode::PRECONDITION_FAILED]),
            Attempt::Done(_)
        ));
        let html = Reply { status: StatusCode::BAD_GATEWAY, body: b"<html>".to_vec(), endpoint: "e".into() };
        assert!(matches!(classify_reply(html, &[]), Attempt::Failed(ClientError::Decode { .. })));
    }

    #[test]
    fn running_out_of_time_is_indeterminate_only_after_an_unknown_outcome() {
        let write = Kind::Write { client_id: 1, seq: 1 };
        assert!(matches!(
            give_up(write, Some("timeout".into()), "503".into()),
            ClientError::Indeterminate { .. }
        ));
        assert!(matches!(give_up(write, None, "503".into()), ClientError::Unavailable { .. }));
        assert!(matches!(
            give_up(Kind::Read, Some("timeout".into()), "x".into()),
            ClientError::Unavailable { .. }
        ));
    }
}
