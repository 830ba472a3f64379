//! The client against a scripted fake server on 127.0.0.1:0: which requests
//! it sends, what it retries and with which session, where it goes after a
//! leader hint or a refused connection, and when it reports a write as
//! indeterminate rather than failed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use kv_client::api::{codes, Consistency, Durability, LeaderInfo};
use kv_client::client::{Client, ClientError, ClientOptions};
use serde_json::{json, Value};

mod support;

fn error_json(code: &str, retryable: bool) -> Value {
    json!({"error": code, "message": "m", "retryable": retryable})
}

/// One scripted answer.
#[derive(Clone)]
struct Scripted {
    delay: Duration,
    status: u16,
    body: Value,
}

fn answer(status: u16, body: Value) -> Scripted {
    Scripted { delay: Duration::ZERO, status, body }
}

/// A request the fake server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
    authorization: Option<String>,
}

/// An HTTP server on 127.0.0.1:0 that answers from a script, then with
/// a default answer, and records what it was sent.
#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    default: Arc<Mutex<Scripted>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    addr: String,
}

impl Fake {
    async fn start(script: Vec<Scripted>, default: Scripted) -> Fake {
        let mut fake = Fake {
            script: Arc::new(Mutex::new(script.into())),
            default: Arc::new(Mutex::new(default)),
            seen: Arc::new(Mutex::new(Vec::new())),
            addr: String::new(),
        };
        let server = fake.clone();
        fake.addr = support::serve(move |request| server.clone().handle(request)).await;
        fake
    }

    async fn handle(
        self,
        request: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            authorization: parts
                .headers
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned()),
        });
        let next = self.script.lock().unwrap().pop_front();
        let s = next.unwrap_or_else(|| self.default.lock().unwrap().clone());
        tokio::time::sleep(s.delay).await;
        let response = hyper::Response::builder()
            .status(s.status)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&s.body).unwrap())))
            .unwrap();
        Ok(response)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The (client_id, seq) of every request received.
    fn sessions(&self) -> Vec<(u64, u64)> {
        self.seen()
            .iter()
            .map(|s| (s.body["client_id"].as_u64().unwrap(), s.body["seq"].as_u64().unwrap()))
            .collect()
    }
}

fn write_ok(index: u64) -> Value {
    json!({"index": index, "node": 1, "duplicate": false, "created": true})
}

fn fast() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        deadline: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn write_retried_after_503_keeps_its_client_id_and_seq() {
    let no_leader = answer(503, error_json(codes::NO_LEADER, true));
    let fake = Fake::start(vec![no_leader.clone(), no_leader], answer(200, write_ok(7))).await;
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();

    let w = client.put("a/b c", b"v", None).await.unwrap();
    assert_eq!(w.index, 7);
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "two refusals, then success");
    assert!(seen.iter().all(|s| s.method == "PUT" && s.path == "/v1/kv/a%2Fb%20c"));
    assert!(seen.iter().all(|s| s.query == "durability=majority" && s.body["value"] == "v"));
    assert_eq!(fake.sessions(), vec![(client.client_id(), 1); 3]);
    assert_eq!(client.session_token(), 7);

    // The next write is a new one: same client id, next seq.
    client.delete("k", Durability::All).await.unwrap();
    let last = fake.seen().pop().unwrap();
    assert_eq!((last.method.as_str(), last.query.as_str()), ("DELETE", "durability=all"));
    assert_eq!(fake.sessions().last(), Some(&(client.client_id(), 2)));
}

#[tokio::test]
async fn client_follows_the_leader_hint_and_stays_with_the_leader() {
    let leader = Fake::start(vec![], answer(200, write_ok(3))).await;
    let mut not_leader = error_json(codes::NO_LEADER, true);
    not_leader["leader"] =
        serde_json::to_value(LeaderInfo { id: 2, api_addr: Some(leader.addr.clone()) }).unwrap();
    let follower = Fake::start(vec![], answer(503, not_leader)).await;
    let client = Client::with_options(vec![follower.addr.clone()], fast()).unwrap();

    client.put("k", b"1", None).await.unwrap();
    assert_eq!((follower.seen().len(), leader.seen().len()), (1, 1));
    assert_eq!(client.preferred_endpoint(), Some(format!("http://{}", leader.addr)));
    client.put("k", b"2", None).await.unwrap();
    assert_eq!(
        (follower.seen().len(), leader.seen().len()),
        (1, 2),
        "second write goes straight to the leader"
    );
    assert_eq!(leader.sessions(), vec![(client.client_id(), 1), (client.client_id(), 2)]);
}

#[tokio::test]
async fn client_moves_on_from_an_endpoint_that_refuses_connections() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let alive = Fake::start(vec![], answer(200, write_ok(1))).await;
    let client = Client::with_options(vec![dead.clone(), alive.addr.clone()], fast()).unwrap();
    client.put("k", b"v", None).await.unwrap();
    assert_eq!(alive.seen().len(), 1);

    // A refused connection means nothing was sent: with no other
    // endpoint, the write certainly did not apply.
    let options = ClientOptions { deadline: Duration::from_millis(200), ..fast() };
    let client = Client::with_options(vec![dead], options).unwrap();
    let err = client.put("k", b"v", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn stale_sequence_names_the_write() {
    let fake = Fake::start(vec![], answer(409, error_json(codes::STALE_SEQUENCE, false))).await;
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();
    let err = client.delete("k", None).await.unwrap_err();
    match err {
        ClientError::StaleSequence { client_id, seq, .. } => {
            assert_eq!((client_id, seq), (client.client_id(), 1))
        }
        other => panic!("expected StaleSequence, got {other}"),
    }
}

#[tokio::test]
async fn write_that_keeps_getting_504_is_indeterminate_not_failed() {
    let fake = Fake::start(vec![], answer(504, error_json(codes::INDETERMINATE, false))).await;
    let options = ClientOptions { deadline: Duration::from_millis(300), ..fast() };
    let client = Client::with_options(vec![fake.addr.clone()], options).unwrap();

    let err = client.put("k", b"v", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err}");
    assert!(!err.outcome_known() && !err.is_retryable());
    let sessions = fake.sessions();
    assert!(sessions.len() >= 2, "retried until the deadline, got {}", sessions.len());
    assert!(sessions.iter().all(|s| *s == (client.client_id(), 1)), "every retry reuses the seq");
}

#[tokio::test]
async fn write_that_keeps_timing_out_is_indeterminate_not_failed() {
    let slow = Scripted { delay: Duration::from_secs(10), status: 200, body: write_ok(1) };
    let fake = Fake::start(vec![], slow).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(50),
        deadline: Duration::from_millis(300),
        ..fast()
    };
    let client = Client::with_options(vec![fake.addr.clone()], options).unwrap();

    let err = client.cas("k", Some(b"old"), b"new", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err}");
    assert_eq!(err.took_effect(), None);
    let sessions = fake.sessions();
    assert!(sessions.len() >= 2, "retried until the deadline, got {}", sessions.len());
    assert!(sessions.iter().all(|s| *s == (client.client_id(), 1)));
}

#[tokio::test]
async fn refusal_after_an_unknown_outcome_is_still_indeterminate() {
    // The first attempt may have applied the write; later 503s say only
    // that the later attempts did not.
    let first = answer(504, error_json(codes::INDETERMINATE, false));
    let fake = Fake::start(vec![first], answer(503, error_json(codes::NO_LEADER, true))).await;
    let options = ClientOptions { deadline: Duration::from_millis(200), ..fast() };
    let client = Client::with_options(vec![fake.addr.clone()], options).unwrap();
    let err = client.put("k", b"v", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "{err}");
}

#[tokio::test]
async fn write_refused_until_the_deadline_is_unavailable_and_did_not_apply() {
    let fake = Fake::start(vec![], answer(503, error_json(codes::NO_LEADER, true))).await;
    let options = ClientOptions { deadline: Duration::from_millis(200), ..fast() };
    let client = Client::with_options(vec![fake.addr.clone()], options).unwrap();
    let err = client.put("k", b"v", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
    assert_eq!(err.took_effect(), Some(false));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn definite_refusal_is_returned_at_once() {
    let fake = Fake::start(vec![], answer(413, error_json(codes::TOO_LARGE, false))).await;
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();
    let err = client.put("k", b"v", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { status: 413, .. }), "{err}");
    assert_eq!(err.code(), Some(codes::TOO_LARGE));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn cas_mismatch_is_an_outcome_not_an_error() {
    let body =
        json!({"index": 5, "node": 1, "duplicate": false, "succeeded": false, "current": {"value": "x"}});
    let fake = Fake::start(vec![], answer(412, body)).await;
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();

    let outcome = client.cas("k", None, b"new", None).await.unwrap();
    assert!(!outcome.succeeded);
    assert_eq!(outcome.current.as_deref(), Some(b"x".as_slice()));
    let seen = fake.seen().pop().unwrap();
    assert_eq!(seen.path, "/v1/cas/k");
    assert_eq!(seen.body["expect_absent"], true);
    assert_eq!(seen.body["value"], "new");
    assert_eq!(fake.seen().len(), 1, "a mismatch is not retried");
}

#[tokio::test]
async fn missing_key_is_none_and_session_reads_carry_the_token() {
    let mut not_found = error_json(codes::KEY_NOT_FOUND, false);
    not_found["index"] = json!(7);
    let fake = Fake::start(
        vec![answer(404, not_found)],
        answer(
            200,
            json!({
                "key": "k", "value": "v", "index": 9, "node": 2, "committed_index": 10
            }),
        ),
    )
    .await;
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();

    assert_eq!(client.get("k", None).await.unwrap(), None);
    assert_eq!(client.session_token(), 7);
    let read = client.get("k", Consistency::Session).await.unwrap().unwrap();
    assert_eq!((read.value.as_slice(), read.index, read.node), (b"v".as_slice(), 9, 2));
    let queries: Vec<String> = fake.seen().into_iter().map(|s| s.query).collect();
    assert_eq!(queries, ["consistency=linearizable", "consistency=session&token=7"]);
    assert_eq!(client.session_token(), 9);
}

#[tokio::test]
async fn reads_are_retried_until_served() {
    let unavailable = answer(503, error_json(codes::UNAVAILABLE, true));
    let ok = json!({"key": "k", "value": "v", "index": 1, "node": 1, "committed_index": 1});
    let fake = Fake::start(vec![unavailable.clone(), unavailable], answer(200, ok)).await;
    let client = Client::with_options(vec!["127.0.0.1:1".into()], fast()).unwrap();
    let read = client.get_from(&fake.addr, "k", Consistency::Stale).await.unwrap();
    assert_eq!(read.map(|r| r.value), Some(b"v".to_vec()));
    assert_eq!(fake.seen().len(), 3);
    assert!(fake.seen().iter().all(|s| s.query == "consistency=stale"));
}

#[tokio::test]
async fn concurrent_writes_use_separate_sessions() {
    // The server remembers one seq per client id, so two writes of one
    // session must never be in flight at once.
    let slow = Scripted { delay: Duration::from_millis(100), status: 200, body: write_ok(1) };
    let fake = Fake::start(vec![], slow).await;
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();
    let (a, b) = tokio::join!(client.put("a", b"1", None), client.put("b", b"2", None));
    a.unwrap();
    b.unwrap();
    let mut sessions = fake.sessions();
    sessions.sort();
    assert_ne!(sessions[0].0, sessions[1].0, "two sessions: {sessions:?}");
    assert!(sessions.iter().all(|s| s.1 == 1));
    // Both sessions go back to the pool; the next write reuses one.
    client.put("c", b"3", None).await.unwrap();
    assert_eq!(fake.sessions()[2].1, 2);
}

#[tokio::test]
async fn the_token_goes_with_every_request_and_a_401_is_not_retried() {
    let refused = answer(401, error_json(codes::UNAUTHENTICATED, false));
    let fake = Fake::start(vec![answer(200, write_ok(1))], refused).await;
    let client = Client::with_options(vec![fake.addr.clone()], fast().with_token("kv_0123")).unwrap();
    client.put("k", b"v", None).await.unwrap();
    let err = client.get("k", Consistency::Linearizable).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::UNAUTHENTICATED), "{err}");
    assert_eq!(err.took_effect(), Some(false), "a refusal is a definite answer");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "the 401 was not retried: {seen:?}");
    assert!(seen.iter().all(|s| s.authorization.as_deref() == Some("Bearer kv_0123")), "{seen:?}");
    assert!(!format!("{:?}", client.options()).contains("kv_0123"), "Debug hides the token");

    // Without a token, no Authorization header at all.
    let client = Client::with_options(vec![fake.addr.clone()], fast()).unwrap();
    assert!(client.get("k", Consistency::Linearizable).await.is_err());
    assert_eq!(fake.seen().last().unwrap().authorization, None);
    let bad = Client::with_options(vec![fake.addr.clone()], fast().with_token("a\nb"));
    assert!(matches!(bad, Err(ClientError::InvalidArgument { .. })));
}
