//! The instant server: a stand-in for kv and etcd that answers every
//! request at once with a prepared body, so that a run against it
//! (`--target null`, or `kvctl instant-server` in a process of its own)
//! measures the generator's own cost. The throughput reached there is the
//! generator's ceiling on this machine.
//!
//! It answers only the routes the workers and the leader finding use, each
//! with 200 and a well-formed body: it always says it leads, every read
//! finds a value, and it stores nothing. It reads each request's body, as
//! a real server does, so that the generator's cost of sending one is paid.

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use kv_client::api::{JsonValue, StatusResponse};
use serde::Serialize;

use super::worker::{b64, key_name, value_of_size};

/// Prepared answers of the instant server.
struct InstantAnswers {
    kv_status: Bytes,
    kv_read: Bytes,
    kv_write: Bytes,
    etcd_put: Bytes,
    etcd_range: Bytes,
    etcd_status: Bytes,
}

impl InstantAnswers {
    fn new(value_size: usize) -> Self {
        let value = value_of_size(value_size);
        let status = StatusResponse {
            id: 1,
            role: "leader".into(),
            term: 1,
            leader: Some(1),
            last_log_index: 1,
            committed_index: 1,
            applied_index: 1,
            checkpointed_index: 0,
            snapshot_index: None,
            purged_index: None,
            voters: vec![1],
            learners: Vec::new(),
            followers: Vec::new(),
            state_digest: String::new(),
            version: None,
            db_size_bytes: None,
        };
        let read = kv_client::api::ReadResponse {
            key: key_name(0),
            value: JsonValue { value: Some(value.clone()), value_b64: None },
            index: 1,
            node: 1,
            committed_index: 1,
        };
        InstantAnswers {
            kv_status: json(&status),
            kv_read: json(&read),
            kv_write: Bytes::from_static(br#"{"index":1,"node":1,"duplicate":false,"created":false}"#),
            etcd_put: Bytes::from_static(br#"{"header":{"member_id":"1","revision":"1","raft_term":"1"}}"#),
            etcd_range: Bytes::from(format!(
                r#"{{"header":{{"member_id":"1","revision":"1","raft_term":"1"}},"kvs":[{{"key":"{}","value":"{}","version":"1"}}],"count":"1"}}"#,
                b64(key_name(0).as_bytes()),
                b64(value.as_bytes())
            )),
            etcd_status: Bytes::from_static(br#"{"header":{"member_id":"1"},"leader":"1"}"#),
        }
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("invariant: API types always serialize"))
}

/// A server that answers both protocols' requests at once, with prepared
/// bodies: kv's `GET /v1/cluster/status`, `GET` and `PUT /v1/kv/{key}`, and
/// etcd's `POST /v3/kv/put`, `/v3/kv/range` and `/v3/maintenance/status`.
/// It reads each request's body, as a real server does, and nothing more.
pub fn instant_router(value_size: usize) -> axum::Router {
    let answers = InstantAnswers::new(value_size);
    // A handler that ignores the request (after reading its body) and
    // sends `body`.
    let reply = |body: Bytes| {
        move |_request: Bytes| {
            let body = body.clone();
            async move { ([(CONTENT_TYPE, "application/json")], body) }
        }
    };
    axum::Router::new()
        .route("/v1/cluster/status", get(reply(answers.kv_status)))
        .route("/v1/kv/{*key}", get(reply(answers.kv_read)).put(reply(answers.kv_write)))
        .route("/v3/kv/put", post(reply(answers.etcd_put)))
        .route("/v3/kv/range", post(reply(answers.etcd_range)))
        .route("/v3/maintenance/status", post(reply(answers.etcd_status)))
}

/// Serves [`instant_router`] on `listener` until the task is dropped.
pub async fn serve_instant(listener: tokio::net::TcpListener, value_size: usize) -> std::io::Result<()> {
    axum::serve(listener, instant_router(value_size)).await
}
