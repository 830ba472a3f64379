//! Property tests: the HTTP API, fed damaged and random requests.
//!
//! One single-node server runs in this process (`kv_app::server::start` on
//! 127.0.0.1:0), behind its real router. Requests go out as raw bytes (see
//! `common/fuzz.rs`): valid methods, paths, query strings, headers and JSON
//! bodies with bytes flipped, inserted, deleted or cut off, and plain
//! garbage. The properties:
//!
//! * malformed input gets a 4xx (or, when it is not even HTTP, a closed
//!   connection), never a 5xx; the one 5xx allowed is 503 for a session
//!   read whose token the node has not applied, which is the documented
//!   answer to a token from the future;
//! * a PUT whose body is not a valid `PutRequest` gets 400 with our JSON
//!   error body (`"error":"bad_request"`), not axum's plain-text rejection;
//! * nothing panics (a panic hook counts panics in every task), and the
//!   server answers or closes every connection (no hangs);
//! * a watch (`GET /v1/watch`) with drawn parameters (repeated, unknown,
//!   percent-encoded; indexes huge, negative, not numbers) streams, first
//!   a progress line, exactly when its parameters are valid, and gets our
//!   400 otherwise; the stream is dropped after its first line;
//! * a lease request (grant, keepalive, revoke, read, a put with `lease=`)
//!   with a drawn id, body or `lease=` value is carried out (200, or 404
//!   for a lease that does not exist) exactly when it is valid, and gets
//!   our 400 otherwise.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use common::fuzz::{self, Answer, LeaseVerdict, Verdict};
use common::mutate::{counted_runtime, first_panic, PANICS};
use kv_app::server::{self, Server, ServerConfig};
use kv_client::api::{ErrorBody, PutRequest};
use proptest::prelude::*;
use raft_core::Node;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// How long a request may go unanswered before the test closes its sending
/// half, and then again before it calls the server hung.
const PATIENCE: Duration = Duration::from_secs(5);

struct Target {
    rt: Runtime,
    server: Server,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let rt = counted_runtime();
        let dir = tempfile::tempdir().unwrap();
        let server = rt.block_on(async {
            let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let raft = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let node =
                Node::new(raft.local_addr().unwrap().to_string(), http.local_addr().unwrap().to_string());
            let mut config = ServerConfig::new(1, dir.path());
            config.initial_members = BTreeMap::from([(1, node)]);
            // A session token from the future waits this long for 503.
            config.read_wait = Duration::from_millis(200);
            let server = server::start(config, http, raft).await.unwrap();
            let leader = server.node().wait_for_leader(Duration::from_secs(30)).await;
            assert_eq!(leader, Some(1), "the single node did not become leader");
            server
        });
        Target { rt, server, _dir: dir }
    })
}

fn send(bytes: &[u8]) -> Answer {
    let t = target();
    t.rt.block_on(fuzz::send(t.server.http_addr, bytes, PATIENCE))
}

fn addr() -> SocketAddr {
    target().server.http_addr
}

fn assert_no_panic() -> Result<(), TestCaseError> {
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked: {}", first_panic());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_requests_get_4xx_never_5xx(req in fuzz::request()) {
        let answer = send(&req.to_bytes());
        if let Answer::Status(status, body) = &answer {
            let future_token = *status == 503 && req.has_token();
            prop_assert!(
                *status < 500 || future_token,
                "{} for {:?}: {}", status, String::from_utf8_lossy(&req.to_bytes()), String::from_utf8_lossy(body)
            );
        }
        assert_no_panic()?;
    }

    #[test]
    fn put_with_an_invalid_body_gets_our_400(body in fuzz::put_body()) {
        let mut bytes = b"PUT /v1/kv/fuzz/body HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n".to_vec();
        bytes.extend(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        bytes.extend(&body);
        let answer = send(&bytes);
        let Answer::Status(status, reply) = answer else {
            return Err(TestCaseError::fail("a well-formed HTTP request was not answered"));
        };
        if serde_json::from_slice::<PutRequest>(&body).is_err() {
            prop_assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
            let error: ErrorBody = serde_json::from_slice(&reply).unwrap();
            prop_assert_eq!(error.error, "bad_request");
        } else {
            prop_assert!(status < 500, "{} for a valid-JSON body: {}", status, String::from_utf8_lossy(&reply));
        }
        assert_no_panic()?;
    }
}

/// `answer` is one of our JSON error bodies (an `ErrorBody`, or a watch's
/// `WatchEnd`) with code `error`.
fn is_our_error(answer: &[u8], error: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(answer).is_ok_and(|e| e["error"] == error)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_watch_streams_exactly_when_its_parameters_are_valid(query in fuzz::watch_query()) {
        let verdict = fuzz::watch_verdict(&query.pairs);
        let answer = send(&query.request());
        let shown = format!("{} for {:?} ({:?})", answer.shown(), query.encoded, verdict);
        match (&verdict, &answer) {
            (Verdict::Streams { .. }, Answer::Stream(200, first)) => {
                prop_assert!(String::from_utf8_lossy(first).contains(r#"{"progress_index":"#), "{}", shown);
            }
            // Older than the node's history (possible only with a from_index).
            (Verdict::Streams { from_index: Some(_) }, Answer::Status(410, body)) => {
                prop_assert!(is_our_error(body, "compacted"), "{}", shown);
            }
            (Verdict::BadRequest, Answer::Status(400, body)) => {
                prop_assert!(is_our_error(body, "bad_request"), "{}", shown);
            }
            _ => prop_assert!(false, "{}", shown),
        }
        assert_no_panic()?;
    }

    #[test]
    fn a_lease_request_is_carried_out_exactly_when_it_is_valid(call in fuzz::lease_call(), seed in any::<u64>()) {
        let verdict = call.verdict();
        let request = call.request(seed);
        let answer = send(&request);
        let shown = format!("{} for {:?} ({:?})", answer.shown(), String::from_utf8_lossy(&request), verdict);
        let Answer::Status(status, body) = &answer else {
            return Err(TestCaseError::fail(format!("not an answer: {shown}")));
        };
        match (verdict, *status) {
            (LeaseVerdict::Done, 200) => {}
            (LeaseVerdict::Done, 404) => prop_assert!(is_our_error(body, "lease_not_found"), "{}", shown),
            (LeaseVerdict::InSession, 200 | 400 | 404 | 409) => {}
            (LeaseVerdict::BadRequest, 400) => prop_assert!(is_our_error(body, "bad_request"), "{}", shown),
            _ => prop_assert!(false, "{}", shown),
        }
        assert_no_panic()?;
    }
}

/// The server under test does answer well-formed requests: otherwise the
/// properties above would hold for a server that closes every connection.
#[test]
fn server_answers_a_valid_put_and_get() {
    let put = br#"{"value":"v"}"#;
    let mut bytes = b"PUT /v1/kv/fuzz/valid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    bytes.extend(format!("Content-Length: {}\r\n\r\n", put.len()).as_bytes());
    bytes.extend(put);
    assert!(matches!(send(&bytes), Answer::Status(200, _)));
    let get = b"GET /v1/kv/fuzz/valid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    match target().rt.block_on(fuzz::send(addr(), get, PATIENCE)) {
        Answer::Status(200, body) => assert!(String::from_utf8_lossy(&body).contains(r#""value":"v""#)),
        other => panic!("{other:?}"),
    }
}
