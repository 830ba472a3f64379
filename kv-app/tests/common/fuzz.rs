// Test support: random and damaged HTTP requests, sent as raw bytes so that
// nothing on the way (a client library's URL parser, its header checks)
// cleans them up first.
//
// Every request this module makes is *harmless to the keys the tests
// check*: a request with a method that could write, aimed at a path that
// names a known key (`KNOWN_PREFIX`) or the cluster endpoints, is turned
// into a GET before it is sent (see `harmless`). The fuzz tests can then
// assert that the known keys and the membership did not change, and that
// assertion cannot be broken by a lucky mutation.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::mutate::mutated;

/// The keys whose values the tests check start with this; no fuzzed write
/// can name them.
pub const KNOWN_PREFIX: &str = "known-";

/// One HTTP/1.1 request, in parts that are damaged separately.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Vec<u8>,
    /// Path and query string.
    pub target: Vec<u8>,
    /// Extra header lines, each ending in CRLF (or damaged).
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The bytes on the wire. `Connection: close` makes the server close
    /// after its answer; `Content-Length` matches the body, unless the
    /// damaged extra headers announce another.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.method);
        b.push(b' ');
        b.extend_from_slice(&self.target);
        b.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
        b.extend_from_slice(&self.headers);
        b.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        b.extend_from_slice(&self.body);
        b
    }

    /// Whether the target carries a session token, which a node may wait
    /// for and then answer 503 "not applied yet": the documented answer to
    /// a token from the future, not a failure.
    pub fn has_token(&self) -> bool {
        String::from_utf8_lossy(&self.target).contains("token")
    }
}

/// `%XX` decoded once, as the router does before matching a key.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The request, unless it could write a known key or change the cluster:
/// then the same request as a GET.
pub fn harmless(mut req: RawRequest) -> RawRequest {
    let method = String::from_utf8_lossy(&req.method).to_ascii_uppercase();
    let target = String::from_utf8_lossy(&percent_decoded(&req.target)).to_ascii_lowercase();
    let may_write = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
    let aims_at_kept_state = target.contains(KNOWN_PREFIX) || target.contains("cluster");
    if may_write && aims_at_kept_state {
        req.method = b"GET".to_vec();
    }
    req
}

/// Valid request targets to damage: every read and write endpoint, with
/// their query parameters; cluster endpoints only to read.
const TARGETS: &[&str] = &[
    "/v1/kv/fuzz/a",
    "/v1/kv/fuzz/a?consistency=linearizable",
    "/v1/kv/fuzz/a?consistency=session&token=1",
    "/v1/kv/fuzz/a?consistency=stale",
    "/v1/kv/fuzz/a?durability=all",
    "/v1/kv?prefix=fuzz/&limit=10&consistency=linearizable",
    "/v1/cas/fuzz/a?durability=majority",
    "/v1/kv/known-0",
    "/v1/internal/read-index",
    "/health",
    "/metrics",
    "/v1/cluster/status",
    "/v1/cluster/members",
];

/// Valid bodies to damage: a PUT, a DELETE and the three kinds of CAS.
pub const BODIES: &[&str] = &[
    r#"{"value":"v"}"#,
    r#"{"value_b64":"aGVsbG8="}"#,
    r#"{"value":"v","client_id":7,"seq":1}"#,
    r#"{"client_id":7,"seq":2}"#,
    r#"{"expected":"v","value":"w"}"#,
    r#"{"expected_b64":"dg==","value":"w"}"#,
    r#"{"expect_absent":true,"value":"w","client_id":8,"seq":1}"#,
    "",
];

const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE"];

const HEADERS: &[&str] = &[
    "",
    "Content-Type: application/json\r\n",
    "x-kv-forwarded-by: 2\r\n",
    "Accept: */*\r\nContent-Type: text/plain\r\n",
];

fn seeds(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// A part: as is, damaged, or random.
fn part(list: &[&str], max_random: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(seeds(list)),
        4 => mutated(seeds(list)),
        1 => prop::collection::vec(any::<u8>(), 0..max_random),
    ]
}

/// A request with some or all of its parts damaged, made [`harmless`].
pub fn request() -> impl Strategy<Value = RawRequest> {
    (part(METHODS, 8), part(TARGETS, 64), part(HEADERS, 64), part(BODIES, 128))
        .prop_map(|(method, target, headers, body)| harmless(RawRequest { method, target, headers, body }))
}

/// A damaged or random body for `PUT /v1/kv/fuzz/body`.
pub fn put_body() -> impl Strategy<Value = Vec<u8>> {
    part(BODIES, 128)
}

/// What became of one raw request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The status code of the answer, and its body.
    Status(u16, Vec<u8>),
    /// The server closed the connection without answering.
    Closed,
}

/// Sends `bytes` on a new connection and reads the answer. A server waiting
/// for bytes that a damaged request announced but never sent is told, after
/// `patience`, that no more will come (the sending half is closed); it must
/// then answer or close within `patience` again. Panics if it does neither:
/// that is a hang.
pub async fn send(addr: SocketAddr, bytes: &[u8], patience: Duration) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before reading everything.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let done = timeout(patience, stream.read_to_end(&mut answer)).await.is_ok();
    if !done && answer.is_empty() {
        let _ = stream.shutdown().await;
        let read = timeout(patience, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server neither answered nor closed: {:?}", String::from_utf8_lossy(bytes));
    }
    parse_status(&answer).map_or(Answer::Closed, |status| {
        let body =
            answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(Vec::new(), |p| answer[p + 4..].to_vec());
        Answer::Status(status, body)
    })
}

fn parse_status(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}
