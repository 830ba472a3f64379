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

use kv_app::command::{MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS};
use kv_client::api::{LeaseGrantRequest, LeaseRequest};

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
/// their query parameters; the change stream and the lease routes; cluster
/// endpoints only to read.
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
    "/v1/watch?prefix=fuzz/&from_index=1&prev=true",
    "/v1/watch?prefix=fuzz%2Fa&prev=false",
    "/v1/watch?from_index=18446744073709551615",
    "/v1/watch?prefix=a&prefix=b",
    "/v1/watch",
    "/v1/leases",
    "/v1/leases?durability=all",
    "/v1/leases/1",
    "/v1/leases/1/keepalive",
    "/v1/leases/18446744073709551616",
    "/v1/kv/fuzz/a?lease=1",
    "/v1/kv/fuzz/a?lease=1&durability=majority",
];

/// Valid bodies to damage: a PUT, a DELETE, the three kinds of CAS, and
/// a lease grant, keepalive and revoke.
pub const BODIES: &[&str] = &[
    r#"{"value":"v"}"#,
    r#"{"value_b64":"aGVsbG8="}"#,
    r#"{"value":"v","client_id":7,"seq":1}"#,
    r#"{"client_id":7,"seq":2}"#,
    r#"{"expected":"v","value":"w"}"#,
    r#"{"expected_b64":"dg==","value":"w"}"#,
    r#"{"expect_absent":true,"value":"w","client_id":8,"seq":1}"#,
    r#"{"ttl_ms":1000}"#,
    r#"{"ttl_ms":600000,"client_id":9,"seq":1}"#,
    r#"{"client_id":9,"seq":2}"#,
    r#"{"value":"v","client_id":9,"seq":2}"#,
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
    /// A stream that stays open (a watch): the status, and the body as far
    /// as its first line (in HTTP/1.1's chunked framing).
    Stream(u16, Vec<u8>),
    /// The server closed the connection without answering.
    Closed,
}

impl Answer {
    /// The answer for a failure message, its body as text.
    pub fn shown(&self) -> String {
        match self {
            Answer::Status(status, body) => format!("{status} {}", String::from_utf8_lossy(body)),
            Answer::Stream(status, first) => format!("{status} stream: {}", String::from_utf8_lossy(first)),
            Answer::Closed => "closed".into(),
        }
    }
}

/// Sends `bytes` on a new connection and reads the answer; a stream is
/// dropped after its first line, as a watcher that goes away would. A
/// server waiting for bytes that a damaged request announced but never
/// sent is told, after `patience`, that no more will come (the sending
/// half is closed); it must then answer or close within `patience` again.
/// Panics if it does neither: that is a hang.
pub async fn send(addr: SocketAddr, bytes: &[u8], patience: Duration) -> Answer {
    open(addr, bytes, patience).await.0
}

/// [`send`], which for an [`Answer::Stream`] also returns the connection,
/// still open, for the caller to read on or drop.
pub async fn open(addr: SocketAddr, bytes: &[u8], patience: Duration) -> (Answer, Option<TcpStream>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before reading everything.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let mut read = timeout(patience, read_answer(&mut stream, &mut answer)).await;
    if read.is_err() && answer.is_empty() {
        let _ = stream.shutdown().await;
        read = timeout(patience, read_answer(&mut stream, &mut answer)).await;
        assert!(read.is_ok(), "the server neither answered nor closed: {:?}", String::from_utf8_lossy(bytes));
    }
    let Some(status) = parse_status(&answer) else { return (Answer::Closed, None) };
    let body = body_of(&answer).to_vec();
    match read {
        Ok(true) => (Answer::Stream(status, body), Some(stream)),
        _ => (Answer::Status(status, body), None),
    }
}

/// Reads until the server closes the connection (false), or until
/// `answer` holds a stream's first line (true).
async fn read_answer(stream: &mut TcpStream, answer: &mut Vec<u8>) -> bool {
    loop {
        match stream.read_buf(answer).await {
            Ok(0) | Err(_) => return false,
            Ok(_) if is_open_stream(answer) => return true,
            Ok(_) => {}
        }
    }
}

/// Whether `answer` is the start of a newline-delimited JSON stream (a
/// watch), as far as one whole line of its body.
fn is_open_stream(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    head.contains("content-type: application/x-ndjson") && body_of(answer).windows(2).any(|w| w == b"}\n")
}

/// The bytes after the head of an answer.
fn body_of(answer: &[u8]) -> &[u8] {
    answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(&[][..], |p| &answer[p + 4..])
}

fn parse_status(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

// --- The change stream: watch queries and what the server must make of
// them. Every byte outside the unreserved set is percent-encoded, and
// unreserved ones sometimes are too, so each query reaches the handler
// (no URI is refused on the way) and decodes to exactly the pairs drawn.

/// A generated `GET /v1/watch` query: the pairs as drawn, and as sent.
#[derive(Debug, Clone)]
pub struct WatchQuery {
    /// Names and values, before encoding.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The query string, encoded.
    pub encoded: String,
}

impl WatchQuery {
    /// The whole request.
    pub fn request(&self) -> Vec<u8> {
        format!("GET /v1/watch?{} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n", self.encoded)
            .into_bytes()
    }
}

/// What the server must answer to a watch query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A stream (or, for a `from_index` older than the node's history,
    /// 410 compacted).
    Streams {
        /// The `from_index` asked for.
        from_index: Option<u64>,
    },
    /// 400 with our JSON error body.
    BadRequest,
}

/// Interesting values for any parameter: the valid ones, and the ways each
/// can be wrong (out of range, negative, not a number, a float, signs and
/// spaces, the wrong words, too long).
const WATCH_VALUES: &[&str] = &[
    "",
    "fuzz/",
    "a/b",
    "known-",
    "1",
    "2",
    "0",
    "-1",
    "+5",
    " 1",
    "1.0",
    "0x10",
    "00001",
    "1e3",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "true",
    "false",
    "True",
    "yes",
    "abc",
];

const WATCH_NAMES: &[&str] = &["prefix", "from_index", "prev"];

fn watch_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(seeds(WATCH_VALUES)),
        2 => mutated(seeds(WATCH_VALUES)),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        1 => prop::collection::vec(0u8..10, 1..30).prop_map(|d| d.iter().map(|d| b'0' + d).collect::<Vec<u8>>()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        // Around the longest prefix accepted, a key's longest.
        1 => prop::sample::select(vec![4_095usize, 4_096, 4_097]).prop_map(|n| vec![b'k'; n]),
    ]
}

fn watch_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::sample::select(seeds(WATCH_NAMES)),
        1 => mutated(seeds(WATCH_NAMES)),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

/// Percent-encodes `bytes`: unreserved bytes (RFC 3986) stay as they are
/// unless the next bit of `bits` says to encode them anyway.
fn encode(bytes: &[u8], bits: &mut impl Iterator<Item = bool>) -> String {
    let mut out = String::new();
    for &b in bytes {
        let unreserved = b.is_ascii_alphanumeric() || b"-_~".contains(&b);
        let force = bits.next().unwrap_or(false);
        if unreserved && !force {
            out.push(b as char);
        } else if bits.next().unwrap_or(false) {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An endless run of bits, from `seed`.
fn bits(seed: u64) -> impl Iterator<Item = bool> {
    (0..64).cycle().map(move |i| (seed >> i) & 1 == 1)
}

/// Zero to four parameters, named mostly as the API does, with values of
/// every kind; repeated names, unknown names, and names without `=`.
pub fn watch_query() -> impl Strategy<Value = WatchQuery> {
    (prop::collection::vec((watch_name(), watch_value(), any::<bool>()), 0..5), any::<u64>()).prop_map(
        |(drawn, seed)| {
            let mut bits = bits(seed);
            let mut parts = Vec::new();
            let mut pairs = Vec::new();
            for (name, value, bare) in drawn {
                let name_enc = encode(&name, &mut bits);
                if bare && value.is_empty() {
                    parts.push(name_enc);
                } else {
                    parts.push(format!("{name_enc}={}", encode(&value, &mut bits)));
                }
                pairs.push((name, value));
            }
            WatchQuery { pairs, encoded: parts.join("&") }
        },
    )
}

/// What the server must make of `pairs` (`docs/api.md`): a known
/// parameter given twice, a prefix longer than a key can be, a
/// `from_index` that is not a whole number from 1, or a `prev` that is
/// neither `true` nor `false` is a 400; unknown names are ignored. Names
/// and values are read as UTF-8, invalid sequences replaced.
pub fn watch_verdict(pairs: &[(Vec<u8>, Vec<u8>)]) -> Verdict {
    let mut known = std::collections::BTreeMap::new();
    for (name, value) in pairs {
        let name = String::from_utf8_lossy(name).into_owned();
        if !WATCH_NAMES.contains(&name.as_str()) {
            continue;
        }
        if known.insert(name, String::from_utf8_lossy(value).into_owned()).is_some() {
            return Verdict::BadRequest;
        }
    }
    let prefix_ok = known.get("prefix").is_none_or(|p| p.len() <= 4096);
    let from_index = match known.get("from_index") {
        None => Ok(None),
        Some(s) => s.parse::<u64>().ok().filter(|&n| n >= 1).map(Some).ok_or(()),
    };
    let prev_ok = known.get("prev").is_none_or(|p| p == "true" || p == "false");
    match from_index {
        Ok(from_index) if prefix_ok && prev_ok => Verdict::Streams { from_index },
        _ => Verdict::BadRequest,
    }
}

// --- Lease requests, each with the answer its parts call for.

/// One generated lease request.
#[derive(Debug, Clone)]
pub enum LeaseCall {
    /// `POST /v1/leases` with this body.
    Grant(Vec<u8>),
    /// `POST /v1/leases/{id}/keepalive`: the id's bytes, and the body.
    KeepAlive(Vec<u8>, Vec<u8>),
    /// `DELETE /v1/leases/{id}`.
    Revoke(Vec<u8>, Vec<u8>),
    /// `GET /v1/leases/{id}`.
    Show(Vec<u8>),
    /// `PUT /v1/kv/fuzz/leased?lease={value}` with a valid body.
    Put(Vec<u8>),
}

/// What a lease request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// Carried out: 200, or 404 `lease_not_found` for a lease that does
    /// not exist (a grant always succeeds).
    Done,
    /// A valid request in a client session: the session may remember an
    /// earlier answer for the same `(client_id, seq)` (200, 400, 404) or
    /// have moved past it (409).
    InSession,
    /// 400 with our JSON error body.
    BadRequest,
}

const LEASE_IDS: &[&str] = &[
    "1",
    "2",
    "0",
    "-1",
    "+1",
    "007",
    " 1",
    "1.5",
    "1e2",
    "abc",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
];

/// Lease bodies to damage. Two carry the session `(7, 1)` that a put
/// body in [`BODIES`] carries too: one `(client_id, seq)` used for a key
/// write and a lease write, the client's mistake, must get a 409, never a
/// 500 (it once did).
const LEASE_BODIES: &[&str] = &[
    r#"{"ttl_ms":1000}"#,
    r#"{"ttl_ms":86400000}"#,
    r#"{"ttl_ms":1000,"client_id":7,"seq":1}"#,
    r#"{"client_id":7,"seq":1}"#,
    r#"{}"#,
    "",
];

fn lease_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(seeds(LEASE_IDS)),
        2 => mutated(seeds(LEASE_IDS)),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 1..12),
    ]
    // An empty segment would be another route.
    .prop_filter("an empty id", |id| !id.is_empty())
}

fn lease_body() -> impl Strategy<Value = Vec<u8>> {
    let ttl = prop_oneof![
        Just("0".to_string()),
        Just("499".to_string()),
        Just("500".to_string()),
        Just("86400000".to_string()),
        Just("86400001".to_string()),
        Just("-1".to_string()),
        Just("1e3".to_string()),
        Just("1000.5".to_string()),
        Just("\"1000\"".to_string()),
        Just("18446744073709551616".to_string()),
        Just("null".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (500..=86_400_000u64).prop_map(|n| n.to_string()),
    ];
    prop_oneof![
        3 => ttl.prop_map(|t| format!(r#"{{"ttl_ms":{t}}}"#).into_bytes()),
        2 => mutated(seeds(LEASE_BODIES)),
        2 => prop::sample::select(seeds(LEASE_BODIES)),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ]
}

/// Lease requests of every route, with damaged ids, bodies and `lease=`
/// values.
pub fn lease_call() -> impl Strategy<Value = LeaseCall> {
    prop_oneof![
        lease_body().prop_map(LeaseCall::Grant),
        (lease_id(), lease_body()).prop_map(|(id, body)| LeaseCall::KeepAlive(id, body)),
        (lease_id(), lease_body()).prop_map(|(id, body)| LeaseCall::Revoke(id, body)),
        lease_id().prop_map(LeaseCall::Show),
        lease_id().prop_map(LeaseCall::Put),
    ]
}

impl LeaseCall {
    /// The request on the wire; ids and `lease=` values percent-encoded
    /// as in [`watch_query`] (`.` always, so no segment reads as a
    /// relative path).
    pub fn request(&self, seed: u64) -> Vec<u8> {
        let mut bits = bits(seed);
        let mut enc = |b: &[u8]| encode(b, &mut bits);
        let (method, target, body): (&str, String, &[u8]) = match self {
            LeaseCall::Grant(body) => ("POST", "/v1/leases".into(), body.as_slice()),
            LeaseCall::KeepAlive(id, body) => {
                ("POST", format!("/v1/leases/{}/keepalive", enc(id)), body.as_slice())
            }
            LeaseCall::Revoke(id, body) => ("DELETE", format!("/v1/leases/{}", enc(id)), body.as_slice()),
            LeaseCall::Show(id) => ("GET", format!("/v1/leases/{}", enc(id)), b"".as_slice()),
            LeaseCall::Put(id) => {
                ("PUT", format!("/v1/kv/fuzz/leased?lease={}", enc(id)), br#"{"value":"v"}"#.as_slice())
            }
        };
        let mut out = format!(
            "{method} {target} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// What the server must answer (`docs/api.md`).
    pub fn verdict(&self) -> LeaseVerdict {
        match self {
            LeaseCall::Grant(body) => match serde_json::from_slice::<LeaseGrantRequest>(body) {
                Ok(req) if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&req.ttl_ms) => {
                    LeaseVerdict::BadRequest
                }
                Ok(req) => session_verdict(req.client_id, req.seq),
                Err(_) => LeaseVerdict::BadRequest,
            },
            LeaseCall::KeepAlive(id, body) | LeaseCall::Revoke(id, body) => {
                if lease_id_of(id).is_none() {
                    return LeaseVerdict::BadRequest;
                }
                if body.is_empty() {
                    return LeaseVerdict::Done;
                }
                match serde_json::from_slice::<LeaseRequest>(body) {
                    Ok(req) => session_verdict(req.client_id, req.seq),
                    Err(_) => LeaseVerdict::BadRequest,
                }
            }
            LeaseCall::Show(id) => {
                if lease_id_of(id).is_some() {
                    LeaseVerdict::Done
                } else {
                    LeaseVerdict::BadRequest
                }
            }
            // `lease=` is any u64 (0 names no lease: 404).
            LeaseCall::Put(value) => {
                match std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()) {
                    Some(_) => LeaseVerdict::Done,
                    None => LeaseVerdict::BadRequest,
                }
            }
        }
    }
}

/// A lease id as a path segment must be: a whole number from 1.
fn lease_id_of(id: &[u8]) -> Option<u64> {
    std::str::from_utf8(id).ok()?.parse::<u64>().ok().filter(|&id| id > 0)
}

fn session_verdict(client_id: Option<u64>, seq: Option<u64>) -> LeaseVerdict {
    match (client_id, seq) {
        (None, None) => LeaseVerdict::Done,
        (Some(_), Some(seq)) if seq >= 1 => LeaseVerdict::InSession,
        _ => LeaseVerdict::BadRequest,
    }
}
