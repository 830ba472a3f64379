//! The client library: talks to a kv-server cluster over its HTTP API
//! (the wire types are in [`crate::api`]), finds the leader, retries what is
//! safe to retry, and says plainly when the outcome of a write is unknown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kv_client::client::ClientError> {
//! use kv_client::client::Client;
//! use kv_client::api::Consistency;
//!
//! let client = Client::new(vec!["127.0.0.1:8080".into(), "127.0.0.1:8081".into()])?;
//! client.put("greeting", b"hello", None).await?;
//! let read = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(read.map(|r| r.value), Some(b"hello".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! # Finding the leader
//!
//! Writes and linearizable reads are best sent to the leader (a follower
//! forwards them, at the cost of one more hop). The client starts with the
//! first endpoint, remembers the last endpoint that answered, follows the
//! `leader.api_addr` hint in error bodies, moves on to the next endpoint when
//! one cannot be reached, and sleeps (exponential backoff with jitter) once
//! it has tried as many times as there are endpoints without success.
//!
//! # Exactly-once writes
//!
//! A write that times out may or may not have been applied: the request may
//! have been lost, or the leader may have committed it and crashed before
//! answering. Resending it blindly could apply it twice, which is wrong for a
//! compare-and-swap (and for anything that is not idempotent). So every
//! write carries a *session* `(client_id, seq)`: `client_id` is random, `seq`
//! grows by one with every new write, and every retry of one write reuses its
//! pair. The state machine remembers, per `client_id`, the last `seq` it
//! applied and its outcome, so a retry is applied at most once and answers
//! with the remembered outcome (`duplicate: true`).
//!
//! Because the server remembers only the *last* seq per client id, the writes
//! of one session must not overlap: if seq 6 were applied while seq 5 was
//! still being retried, the server would refuse seq 5 as stale although it
//! never took effect. The client therefore keeps a small pool of sessions:
//! one write holds one session from its first attempt to its last, and
//! writes issued concurrently through the same [`Client`] use different
//! client ids. The first session's id is chosen when the client is created
//! ([`Client::client_id`]).
//!
//! # Retries and errors
//!
//! Every operation has an overall deadline ([`ClientOptions::deadline`]) and
//! each attempt a timeout ([`ClientOptions::request_timeout`]). Within the
//! deadline the client retries:
//!
//! * when the request certainly was not carried out: the connection was
//!   refused (nothing was sent), or the server answered 503 (`no_leader`,
//!   `unavailable`);
//! * for a write with a session, also when the outcome is unknown: the
//!   attempt timed out, the connection broke after the request was sent, or
//!   the server answered 504 `indeterminate`. Resending is safe because the
//!   server deduplicates.
//!
//! When the deadline passes, a write for which *any* attempt had an unknown
//! outcome is reported as [`ClientError::Indeterminate`], never as a
//! failure: it may still take effect. Only when every attempt certainly did
//! nothing is it [`ClientError::Unavailable`]. Reads have no effect, so a read
//! that runs out of time is always `Unavailable`.
//!
//! Membership changes carry no session, so they are retried only when they
//! certainly were not carried out; an unknown outcome is returned at once as
//! `Indeterminate`.
//!
//! # Session token
//!
//! Every answer carries the log `index` it reflects. The client keeps the
//! highest one it has seen ([`Client::session_token`]) and sends it with
//! `consistency=session` reads, which any node serves once it has applied up
//! to it: the client reads its own writes and never sees time go backwards,
//! even when it reads from followers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::{
    codes, AddLearnerRequest, CasRequest, ChangeResponse, Consistency, DeleteRequest, Durability, ErrorBody,
    JsonValue, ListResponse, MembersResponse, PutRequest, ReadResponse, StatusResponse, WriteResponse,
};

/// The least time left before the deadline for which another attempt is
/// started.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// How the client behaves; [`ClientOptions::default`] suits a local cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one attempt (one HTTP request) may take before the client
    /// gives up on it and, if allowed, retries. 5 s by default: several
    /// election timeouts, so a leader change does not make it expire.
    /// Membership changes and snapshots may take longer (a new learner must
    /// catch up first), so their single attempt may use the whole deadline.
    pub request_timeout: Duration,
    /// How long to establish a TCP connection. 1 s by default: on a local
    /// network a connection that takes longer goes to a node that is down
    /// or cut off, and the client should try another node instead.
    pub connect_timeout: Duration,
    /// How long one operation, with all its retries, may take. 30 s by
    /// default: long enough to ride out a leader election or a restart.
    pub deadline: Duration,
    /// The consistency of reads that do not name one.
    pub consistency: Consistency,
    /// The durability of writes that do not name one.
    pub durability: Durability,
    /// The first pause between rounds of attempts (20 ms by default); it
    /// doubles each round up to [`ClientOptions::max_backoff`].
    pub initial_backoff: Duration,
    /// The longest pause between rounds (1 s by default).
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
            consistency: Consistency::default(),
            durability: Durability::default(),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Everything that can go wrong in a client call. Classify with
/// [`ClientError::is_retryable`] and [`ClientError::outcome_known`] (or
/// [`ClientError::took_effect`]) rather than by matching on variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a definite error: a bad request, a value too
    /// large, an unknown node, a membership conflict, or an internal error.
    /// `body.retryable` says whether sending the same request again may
    /// succeed. Retryable errors (503) are only returned by single-attempt
    /// calls; others retry them until the deadline.
    #[error("server answered {status} {}: {}", body.error, body.message)]
    Server {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// A write's (or membership change's) outcome is unknown: an attempt
    /// timed out, its connection broke after the request was sent, or the
    /// server answered 504 `indeterminate`, and no later attempt settled it
    /// before the deadline. The write may or may not have taken effect, and
    /// may still take effect later. Never treat this as a failure.
    #[error("outcome unknown (the write may or may not take effect): {reason}")]
    Indeterminate {
        /// What happened, attempt by attempt.
        reason: String,
    },
    /// Nothing could be done before the deadline, and nothing was done: no
    /// endpoint could be reached, or every answer was 503 (no leader, or a
    /// read that could not be served). A write certainly did not take effect.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// The last failure.
        reason: String,
    },
    /// A `durability=all` write committed (it will not be lost, and it took
    /// effect) but not every voter confirmed it in time: a voter is down or
    /// behind.
    #[error("committed at index {index:?} but not confirmed by every voter: {message}")]
    NotFullyReplicated {
        /// The log index of the write, if the server said.
        index: Option<u64>,
        /// The server's explanation.
        message: String,
    },
    /// The server refused the write because it has already applied a later
    /// write of this session. This client never sends a new write of a
    /// session before the previous one has finished, so this means the
    /// server lost track of the session (it expired: see `SESSION_TTL_MS` in
    /// kv-app's `command` module) or another client uses the same
    /// id. The write was not applied now; whether an earlier attempt of it
    /// was applied is no longer remembered.
    #[error("write (client {client_id}, seq {seq}) superseded by a later write of the session: {message}")]
    StaleSequence {
        /// The session's client id.
        client_id: u64,
        /// The write's sequence number.
        seq: u64,
        /// The server's explanation.
        message: String,
    },
    /// The server's answer could not be understood (not the JSON of the
    /// expected type, or a value that is not valid base64).
    #[error("could not decode the answer from {endpoint}: {reason}")]
    Decode {
        /// Who answered.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// An endpoint address could not be used (the client speaks plain HTTP
    /// only, to `host:port` or `http://host:port`).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The address as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument cannot be sent (an empty key, say); nothing was sent.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
}

impl ClientError {
    /// Whether calling the same method again may succeed and is safe. True
    /// for [`ClientError::Unavailable`] and retryable server errors; false
    /// for an indeterminate write, since calling the method again sends a
    /// *new* write (with a new seq) that may apply in addition to the first.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unavailable { .. } => true,
            ClientError::Server { body, .. } => body.retryable,
            ClientError::Indeterminate { .. }
            | ClientError::NotFullyReplicated { .. }
            | ClientError::StaleSequence { .. }
            | ClientError::Decode { .. }
            | ClientError::InvalidEndpoint { .. }
            | ClientError::InvalidArgument { .. } => false,
        }
    }

    /// Whether it is known if the operation took effect. False for
    /// [`ClientError::Indeterminate`], a stale sequence, a 500 and an answer
    /// that could not be decoded; true otherwise. See
    /// [`ClientError::took_effect`] for which way.
    pub fn outcome_known(&self) -> bool {
        self.took_effect().is_some()
    }

    /// `Some(false)`: the operation certainly did not take effect.
    /// `Some(true)`: it certainly did ([`ClientError::NotFullyReplicated`]).
    /// `None`: unknown; it may take effect, now or later.
    pub fn took_effect(&self) -> Option<bool> {
        match self {
            ClientError::Unavailable { .. }
            | ClientError::InvalidEndpoint { .. }
            | ClientError::InvalidArgument { .. } => Some(false),
            // 4xx: the server looked at the request and refused it. 503: it
            // did not carry it out. 500 and anything else: unknown.
            ClientError::Server { status, .. } => {
                ((400..500).contains(status) || *status == 503).then_some(false)
            }
            ClientError::NotFullyReplicated { .. } => Some(true),
            ClientError::Indeterminate { .. }
            | ClientError::StaleSequence { .. }
            | ClientError::Decode { .. } => None,
        }
    }

    /// The server's error code, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { body, .. } => Some(&body.error),
            ClientError::NotFullyReplicated { .. } => Some(codes::NOT_FULLY_REPLICATED),
            ClientError::StaleSequence { .. } => Some(codes::STALE_SEQUENCE),
            _ => None,
        }
    }
}

/// A value read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The log index the read reflects (the serving node's applied index).
    pub index: u64,
    /// The node that served the read.
    pub node: u64,
    /// The highest index the serving node knew to be committed. For a
    /// `stale` read, `committed_index - index` is how far behind it was.
    pub committed_index: u64,
}

impl From<Read> for ReadResponse {
    /// Back to the wire form (what `kvctl --json` prints).
    fn from(r: Read) -> Self {
        ReadResponse {
            key: r.key,
            value: JsonValue::from_bytes(&r.value),
            index: r.index,
            node: r.node,
            committed_index: r.committed_index,
        }
    }
}

/// The outcome of a compare-and-swap. A mismatch is an outcome, not an
/// error: `succeeded` is false and `current` holds the value that did not
/// match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the expected value matched and the new value was stored.
    pub succeeded: bool,
    /// The value after the operation (`None`: the key does not exist).
    pub current: Option<Vec<u8>>,
    /// The log index of the operation.
    pub index: u64,
    /// The node that committed it.
    pub node: u64,
    /// True if this was the remembered outcome of an earlier attempt.
    pub duplicate: bool,
}

impl From<CasOutcome> for WriteResponse {
    /// Back to the wire form (what `kvctl --json` prints).
    fn from(c: CasOutcome) -> Self {
        WriteResponse {
            index: c.index,
            node: c.node,
            duplicate: c.duplicate,
            created: None,
            existed: None,
            succeeded: Some(c.succeeded),
            current: c.current.as_deref().map(JsonValue::from_bytes),
        }
    }
}

/// One key and its value, from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

/// The keys under a prefix, in byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys and values.
    pub items: Vec<KeyValue>,
    /// True if more keys matched than the limit allowed.
    pub more: bool,
    /// See [`Read::index`].
    pub index: u64,
    /// See [`Read::node`].
    pub node: u64,
    /// See [`Read::committed_index`].
    pub committed_index: u64,
}

impl From<Listing> for ListResponse {
    /// Back to the wire form (what `kvctl --json` prints).
    fn from(l: Listing) -> Self {
        ListResponse {
            items: l
                .items
                .into_iter()
                .map(|kv| crate::api::ListItem { key: kv.key, value: JsonValue::from_bytes(&kv.value) })
                .collect(),
            more: l.more,
            index: l.index,
            node: l.node,
            committed_index: l.committed_index,
        }
    }
}

/// A handle on a cluster. Cheap to clone; clones share the leader hint, the
/// session token and the write sessions, and may be used concurrently.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// reqwest pools connections per host and keeps them alive, so a busy
    /// client does not pay a TCP handshake per request.
    http: reqwest::Client,
    /// Base URLs, normalized to `http://host:port`.
    endpoints: Vec<String>,
    options: ClientOptions,
    routing: Mutex<Routing>,
    /// The highest log index seen in any answer.
    token: AtomicU64,
    sessions: Mutex<Vec<WriteSession>>,
    first_client_id: u64,
}

/// Where to send the next request that may go to any node.
#[derive(Debug, Default)]
struct Routing {
    /// The leader, as last hinted, or the last endpoint that answered.
    preferred: Option<String>,
    /// The endpoint to try next when there is no preferred one.
    cursor: usize,
}

/// One exactly-once session: a client id and the next seq to use.
#[derive(Debug)]
struct WriteSession {
    client_id: u64,
    next_seq: u64,
}

/// A session taken from the pool for one write; returned on drop, even when
/// the caller abandons the write half-way (the write is then indeterminate
/// and the session moves on to the next seq).
struct SessionLease<'a> {
    client: &'a Inner,
    session: Option<WriteSession>,
    client_id: u64,
    seq: u64,
}

impl Drop for SessionLease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            lock(&self.client.sessions).push(session);
        }
    }
}

/// Who may answer a call.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// Any node, preferably the leader: the client routes and fails over.
    Cluster,
    /// This node only (a normalized base URL).
    Node(&'a str),
}

/// What a call does, which decides what may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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
struct Call<'a> {
    method: Method,
    /// The path, already percent-encoded.
    path: String,
    query: Vec<(&'static str, String)>,
    /// The JSON body, serialized once.
    body: Option<Vec<u8>>,
    /// Statuses besides 2xx whose body the caller decodes itself (404 for a
    /// missing key, 412 for a failed CAS).
    accept: &'a [StatusCode],
    kind: Kind,
    target: Target<'a>,
    /// Make a single attempt (status probes, snapshot, campaign).
    once: bool,
}

/// An answer the caller decodes.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    endpoint: String,
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
    /// A client for the cluster reachable at `endpoints` (`host:port` or
    /// `http://host:port`), with [`ClientOptions::default`].
    pub fn new(endpoints: Vec<String>) -> Result<Client, ClientError> {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client with the given options.
    pub fn with_options(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "give at least one endpoint".into(),
            });
        }
        let endpoints = endpoints.iter().map(|e| normalize_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // Talk to the nodes directly: an HTTP proxy from the environment
            // would hide which node is down.
            .no_proxy()
            .build()
            .map_err(|e| ClientError::InvalidEndpoint {
                endpoint: endpoints.join(","),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let first_client_id = rand::random::<u64>();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                options,
                routing: Mutex::new(Routing::default()),
                token: AtomicU64::new(0),
                sessions: Mutex::new(vec![WriteSession { client_id: first_client_id, next_seq: 1 }]),
                first_client_id,
            }),
        })
    }

    /// The endpoints, normalized to `http://host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The client id of the first write session, chosen at random when the
    /// client was created. Writes issued concurrently may use further ids
    /// (see the module docs).
    pub fn client_id(&self) -> u64 {
        self.inner.first_client_id
    }

    /// The session token: the highest log index seen in any answer.
    /// `consistency=session` reads are served from a state at least this new.
    pub fn session_token(&self) -> u64 {
        self.inner.token.load(Ordering::Relaxed)
    }

    /// The endpoint the client currently sends to first (the last known
    /// leader, or the last endpoint that answered), if any.
    pub fn preferred_endpoint(&self) -> Option<String> {
        lock(&self.inner.routing).preferred.clone()
    }

    /// Reads `key`, from the leader or whichever node the client can reach
    /// (a `session` or `stale` read may be served by any node). `Ok(None)`:
    /// the key does not exist. `consistency: None` uses the default.
    pub async fn get(
        &self,
        key: &str,
        consistency: impl Into<Option<Consistency>>,
    ) -> Result<Option<Read>, ClientError> {
        self.get_via(Target::Cluster, key, consistency.into()).await
    }

    /// Reads `key` from the node at `endpoint` and no other (for a `stale`
    /// read, that node's state; for a linearizable one, the node may still
    /// ask the leader). Retries transient failures on that node until the
    /// deadline.
    pub async fn get_from(
        &self,
        endpoint: &str,
        key: &str,
        consistency: impl Into<Option<Consistency>>,
    ) -> Result<Option<Read>, ClientError> {
        let endpoint = normalize_endpoint(endpoint)?;
        self.get_via(Target::Node(&endpoint), key, consistency.into()).await
    }

    async fn get_via(
        &self,
        target: Target<'_>,
        key: &str,
        consistency: Option<Consistency>,
    ) -> Result<Option<Read>, ClientError> {
        let consistency = consistency.unwrap_or(self.inner.options.consistency);
        let call = Call {
            method: Method::GET,
            path: kv_path(key)?,
            query: self.read_query(consistency),
            body: None,
            accept: &[StatusCode::NOT_FOUND],
            kind: Kind::Read,
            target,
            once: false,
        };
        let reply = self.execute(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            let body: ErrorBody = decode(&reply)?;
            if body.error != codes::KEY_NOT_FOUND {
                return Err(ClientError::Server { status: reply.status.as_u16(), body });
            }
            if let Some(index) = body.index {
                self.observe(index);
            }
            return Ok(None);
        }
        let r: ReadResponse = decode(&reply)?;
        self.observe(r.index);
        Ok(Some(Read {
            value: value_bytes(&r.value, &reply.endpoint)?,
            key: r.key,
            index: r.index,
            node: r.node,
            committed_index: r.committed_index,
        }))
    }

    /// Stores `value` under `key`, exactly once. `durability: None` uses
    /// the default.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        durability: impl Into<Option<Durability>>,
    ) -> Result<WriteResponse, ClientError> {
        let path = kv_path(key)?;
        let lease = self.lease();
        let body = PutRequest {
            value: JsonValue::from_bytes(value),
            client_id: Some(lease.client_id),
            seq: Some(lease.seq),
        };
        let call = self.write_call(Method::PUT, path, &body, durability.into(), &lease, &[]);
        let reply = self.execute(&call).await?;
        self.write_response(&reply)
    }

    /// Removes `key`, exactly once. Succeeds whether or not the key existed
    /// (`existed` in the answer says which).
    pub async fn delete(
        &self,
        key: &str,
        durability: impl Into<Option<Durability>>,
    ) -> Result<WriteResponse, ClientError> {
        let path = kv_path(key)?;
        let lease = self.lease();
        let body = DeleteRequest { client_id: Some(lease.client_id), seq: Some(lease.seq) };
        let call = self.write_call(Method::DELETE, path, &body, durability.into(), &lease, &[]);
        let reply = self.execute(&call).await?;
        self.write_response(&reply)
    }

    /// Stores `new` under `key` if it currently holds `expected` (`None`:
    /// if the key does not exist), exactly once. A mismatch is a normal
    /// outcome (`succeeded: false`, with the current value), not an error.
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        durability: impl Into<Option<Durability>>,
    ) -> Result<CasOutcome, ClientError> {
        let path = format!("/v1/cas/{}", encode_key(key)?);
        let lease = self.lease();
        let expected = expected.map(JsonValue::from_bytes);
        let body = CasRequest {
            expect_absent: expected.is_none(),
            expected: expected.as_ref().and_then(|e| e.value.clone()),
            expected_b64: expected.and_then(|e| e.value_b64),
            value: JsonValue::from_bytes(new),
            client_id: Some(lease.client_id),
            seq: Some(lease.seq),
        };
        let call = self.write_call(
            Method::POST,
            path,
            &body,
            durability.into(),
            &lease,
            &[StatusCode::PRECONDITION_FAILED],
        );
        let reply = self.execute(&call).await?;
        let w = self.write_response(&reply)?;
        let current = match &w.current {
            Some(v) => Some(value_bytes(v, &reply.endpoint)?),
            None => None,
        };
        Ok(CasOutcome {
            succeeded: reply.status.is_success() && w.succeeded != Some(false),
            current,
            index: w.index,
            node: w.node,
            duplicate: w.duplicate,
        })
    }

    /// Lists up to `limit` keys starting with `prefix` (all keys: `""`), in
    /// byte order, with the server's default limit if `None`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
        consistency: impl Into<Option<Consistency>>,
    ) -> Result<Listing, ClientError> {
        let consistency = consistency.into().unwrap_or(self.inner.options.consistency);
        let mut query = vec![("prefix", prefix.to_owned())];
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        query.extend(self.read_query(consistency));
        let call = Call {
            method: Method::GET,
            path: "/v1/kv".into(),
            query,
            body: None,
            accept: &[],
            kind: Kind::Read,
            target: Target::Cluster,
            once: false,
        };
        let reply = self.execute(&call).await?;
        let l: ListResponse = decode(&reply)?;
        self.observe(l.index);
        let items = l
            .items
            .into_iter()
            .map(|item| Ok(KeyValue { value: value_bytes(&item.value, &reply.endpoint)?, key: item.key }))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Listing { items, more: l.more, index: l.index, node: l.node, committed_index: l.committed_index })
    }

    /// The status of the node at `endpoint` (one attempt), or, with `None`,
    /// of the first endpoint that answers (each tried once, in order).
    pub async fn status(&self, endpoint: Option<&str>) -> Result<StatusResponse, ClientError> {
        let endpoints = match endpoint {
            Some(e) => vec![normalize_endpoint(e)?],
            None => self.inner.endpoints.clone(),
        };
        let mut failures = Vec::new();
        for endpoint in &endpoints {
            let call = Call {
                method: Method::GET,
                path: "/v1/cluster/status".into(),
                query: Vec::new(),
                body: None,
                accept: &[],
                kind: Kind::Read,
                target: Target::Node(endpoint),
                once: true,
            };
            match self.execute(&call).await {
                Ok(reply) => return decode(&reply),
                Err(e) if endpoints.len() == 1 => return Err(e),
                Err(e) => failures.push(format!("{endpoint}: {e}")),
            }
        }
        Err(ClientError::Unavailable { reason: failures.join("; ") })
    }

    /// The members of the cluster and the leader, as some node sees them.
    pub async fn members(&self) -> Result<MembersResponse, ClientError> {
        let call = Call {
            method: Method::GET,
            path: "/v1/cluster/members".into(),
            query: Vec::new(),
            body: None,
            accept: &[],
            kind: Kind::Read,
            target: Target::Cluster,
            once: false,
        };
        decode(&self.execute(&call).await?)
    }

    /// Adds node `id` as a learner; returns once it has caught up with the
    /// log (which may take most of the deadline for a large log).
    pub async fn add_learner(
        &self,
        id: u64,
        raft_addr: &str,
        api_addr: &str,
    ) -> Result<ChangeResponse, ClientError> {
        let body = AddLearnerRequest { id, raft_addr: raft_addr.into(), api_addr: api_addr.into() };
        self.change(Method::POST, "/v1/cluster/learners".into(), Some(json(&body)?), Target::Cluster).await
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: u64) -> Result<ChangeResponse, ClientError> {
        self.change(Method::POST, format!("/v1/cluster/members/{id}/promote"), None, Target::Cluster).await
    }

    /// Removes node `id` from the cluster (voter or learner).
    pub async fn remove(&self, id: u64) -> Result<ChangeResponse, ClientError> {
        self.change(Method::DELETE, format!("/v1/cluster/members/{id}"), None, Target::Cluster).await
    }

    /// Asks the node at `endpoint` to take a snapshot now (one attempt).
    pub async fn snapshot(&self, endpoint: &str) -> Result<ChangeResponse, ClientError> {
        let endpoint = normalize_endpoint(endpoint)?;
        self.change(Method::POST, "/v1/cluster/snapshot".into(), None, Target::Node(&endpoint)).await
    }

    /// Asks the node at `endpoint` to start an election now (one attempt).
    pub async fn campaign(&self, endpoint: &str) -> Result<ChangeResponse, ClientError> {
        let endpoint = normalize_endpoint(endpoint)?;
        self.change(Method::POST, "/v1/cluster/campaign".into(), None, Target::Node(&endpoint)).await
    }

    async fn change(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        target: Target<'_>,
    ) -> Result<ChangeResponse, ClientError> {
        let once = matches!(target, Target::Node(_));
        let call =
            Call { method, path, query: Vec::new(), body, accept: &[], kind: Kind::Change, target, once };
        let reply = self.execute(&call).await?;
        let r: ChangeResponse = decode(&reply)?;
        self.observe(r.index);
        Ok(r)
    }

    // ---- Plumbing ----

    /// Takes a session from the pool (or starts a new one) for one write.
    fn lease(&self) -> SessionLease<'_> {
        let mut session = lock(&self.inner.sessions)
            .pop()
            .unwrap_or_else(|| WriteSession { client_id: rand::random::<u64>(), next_seq: 1 });
        let seq = session.next_seq;
        session.next_seq += 1;
        SessionLease { client: &self.inner, client_id: session.client_id, seq, session: Some(session) }
    }

    fn write_call<'a>(
        &self,
        method: Method,
        path: String,
        body: &impl Serialize,
        durability: Option<Durability>,
        lease: &SessionLease<'_>,
        accept: &'a [StatusCode],
    ) -> Call<'a> {
        let durability = durability.unwrap_or(self.inner.options.durability);
        Call {
            method,
            path,
            query: vec![("durability", durability_name(durability).into())],
            // The request types are plain structs of strings and numbers:
            // serializing them cannot fail.
            body: Some(serde_json::to_vec(body).expect("invariant: request bodies serialize to JSON")),
            accept,
            kind: Kind::Write { client_id: lease.client_id, seq: lease.seq },
            target: Target::Cluster,
            once: false,
        }
    }

    fn write_response(&self, reply: &Reply) -> Result<WriteResponse, ClientError> {
        let w: WriteResponse = decode(reply)?;
        self.observe(w.index);
        Ok(w)
    }

    fn read_query(&self, consistency: Consistency) -> Vec<(&'static str, String)> {
        let mut query = vec![("consistency", consistency_name(consistency).to_owned())];
        if consistency == Consistency::Session {
            query.push(("token", self.session_token().to_string()));
        }
        query
    }

    /// Raises the session token to `index`.
    fn observe(&self, index: u64) {
        self.inner.token.fetch_max(index, Ordering::Relaxed);
    }

    /// Sends `call` until it succeeds, fails definitely, or the deadline
    /// passes; see the module docs for what is retried.
    async fn execute(&self, call: &Call<'_>) -> Result<Reply, ClientError> {
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

    /// The endpoint for the next attempt.
    fn pick(&self, target: Target<'_>) -> String {
        match target {
            Target::Node(endpoint) => endpoint.to_owned(),
            Target::Cluster => {
                let routing = lock(&self.inner.routing);
                routing.preferred.clone().unwrap_or_else(|| {
                    self.inner.endpoints[routing.cursor % self.inner.endpoints.len()].clone()
                })
            }
        }
    }

    /// Moves away from an endpoint that failed, towards the leader if one was
    /// hinted. Returns true if the next attempt goes to a newly hinted leader.
    fn note_failure(&self, target: Target<'_>, endpoint: &str, leader_hint: Option<String>) -> bool {
        if matches!(target, Target::Node(_)) {
            return false;
        }
        let mut routing = lock(&self.inner.routing);
        if let Some(hint) = leader_hint.filter(|h| h != endpoint) {
            routing.preferred = Some(hint);
            return true;
        }
        if routing.preferred.as_deref() == Some(endpoint) {
            routing.preferred = None;
        }
        let n = self.inner.endpoints.len();
        routing.cursor = match self.inner.endpoints.iter().position(|e| e == endpoint) {
            Some(i) => (i + 1) % n,
            None => (routing.cursor + 1) % n,
        };
        false
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
            // The connection was never established, so nothing was sent.
            Err(e) if e.is_connect() => {
                return Attempt::NotDone {
                    reason: format!("cannot connect to {endpoint}: {}", root_cause(&e)),
                    leader_hint: None,
                    error: None,
                }
            }
            Err(e) => return Attempt::Unknown { reason: describe_transport_error(endpoint, &e) },
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) => return Attempt::Unknown { reason: describe_transport_error(endpoint, &e) },
        };
        classify_reply(Reply { status, body, endpoint: endpoint.to_owned() }, call.accept)
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
    let leader_hint =
        body.leader.as_ref().and_then(|l| l.api_addr.as_deref()).and_then(|a| normalize_endpoint(a).ok());
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

/// Turns an address into a base URL `http://host:port`.
///
/// Accepts `host:port` and `http://host:port` (a trailing `/` is fine);
/// refuses `https` (this client is built without TLS) and addresses with a
/// path.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let invalid =
        |reason: &str| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.into() };
    let trimmed = endpoint.trim();
    let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("http://{trimmed}") };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(invalid("only http:// is supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("give host:port only, without a path"));
    }
    Ok(url.origin().ascii_serialization())
}

/// Percent-encodes a key for use as one path segment: every byte of its
/// UTF-8 except the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`)
/// becomes `%XX`, so `/`, `?`, `#`, `%` and spaces survive the trip.
///
/// Refuses the empty key and the keys `.` and `..`: URL parsers remove
/// those as dot-segments (even when written `%2E`), so no path can carry them.
pub fn encode_key(key: &str) -> Result<String, ClientError> {
    if key.is_empty() {
        return Err(ClientError::InvalidArgument { reason: "the key must not be empty".into() });
    }
    if key == "." || key == ".." {
        return Err(ClientError::InvalidArgument {
            reason: format!("the key {key:?} cannot be sent in a URL path"),
        });
    }
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(out)
}

/// The path of a key: `/v1/kv/{encoded key}`.
pub fn kv_path(key: &str) -> Result<String, ClientError> {
    Ok(format!("/v1/kv/{}", encode_key(key)?))
}

fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Linearizable => "linearizable",
        Consistency::Session => "session",
        Consistency::Stale => "stale",
    }
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Majority => "majority",
        Durability::All => "all",
    }
}

fn json(body: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError::InvalidArgument { reason: format!("cannot encode: {e}") })
}

fn decode<T: DeserializeOwned>(reply: &Reply) -> Result<T, ClientError> {
    serde_json::from_slice(&reply.body).map_err(|e| ClientError::Decode {
        endpoint: reply.endpoint.clone(),
        reason: format!("{e} in {}", String::from_utf8_lossy(&reply.body)),
    })
}

fn value_bytes(value: &JsonValue, endpoint: &str) -> Result<Vec<u8>, ClientError> {
    value.to_bytes().map_err(|reason| ClientError::Decode { endpoint: endpoint.to_owned(), reason })
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

/// Locks a mutex that guards plain data; a panic elsewhere while holding it
/// cannot leave that data half-updated, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::{BodyExt as _, Full};
    use hyper::body::{Bytes, Incoming};
    use serde_json::{json, Value};

    use super::*;
    use crate::api::LeaderInfo;

    // ---- Without a server ----

    #[test]
    fn encode_key_escapes_everything_but_unreserved() {
        assert_eq!(encode_key("AZaz09-._~").unwrap(), "AZaz09-._~");
        assert_eq!(encode_key("a/b c?d#e%f+g").unwrap(), "a%2Fb%20c%3Fd%23e%25f%2Bg");
        assert_eq!(encode_key("é").unwrap(), "%C3%A9");
        assert_eq!(kv_path("users/1").unwrap(), "/v1/kv/users%2F1");
    }

    #[test]
    fn encode_key_refuses_keys_no_path_can_carry() {
        for key in ["", ".", ".."] {
            let err = encode_key(key).unwrap_err();
            assert!(matches!(err, ClientError::InvalidArgument { .. }), "{key:?}: {err}");
            assert_eq!(err.took_effect(), Some(false));
        }
        // Dots inside a longer key are fine.
        assert_eq!(encode_key("...").unwrap(), "...");
    }

    #[test]
    fn encoded_keys_survive_url_parsing_unchanged() {
        // The URL parser normalizes paths (dot segments, `\`): an encoded key
        // must reach the server byte for byte.
        for key in ["a/../b", "./x", "x/.", "back\\slash", "%2F", "a b", "…/..", "~user"] {
            let path = kv_path(key).unwrap();
            let url = reqwest::Url::parse(&format!("http://127.0.0.1:1{path}")).unwrap();
            assert_eq!(url.path(), path, "key {key:?}");
        }
    }

    #[test]
    fn endpoints_normalize_to_http_base_urls() {
        for (given, want) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            (" localhost:9 ", "http://localhost:9"),
            ("[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(normalize_endpoint(given).unwrap(), want, "{given:?}");
        }
        for bad in ["https://127.0.0.1:8080", "127.0.0.1:8080/v1", "http://", "", "ftp://x:1"] {
            assert!(
                matches!(normalize_endpoint(bad), Err(ClientError::InvalidEndpoint { .. })),
                "{bad:?} should be refused"
            );
        }
        assert!(Client::new(vec![]).is_err());
    }

    fn error_body(code: &str, retryable: bool) -> ErrorBody {
        ErrorBody { error: code.into(), message: "m".into(), retryable, leader: None, index: None }
    }

    #[test]
    fn errors_say_whether_the_write_took_effect() {
        let cases: Vec<(ClientError, bool, Option<bool>)> = vec![
            (ClientError::Indeterminate { reason: "timeout".into() }, false, None),
            (ClientError::Unavailable { reason: "refused".into() }, true, Some(false)),
            (
                ClientError::Server { status: 400, body: error_body(codes::BAD_REQUEST, false) },
                false,
                Some(false),
            ),
            (
                ClientError::Server { status: 409, body: error_body(codes::CONFLICT, false) },
                false,
                Some(false),
            ),
            (
                ClientError::Server { status: 503, body: error_body(codes::NO_LEADER, true) },
                true,
                Some(false),
            ),
            (ClientError::Server { status: 500, body: error_body(codes::INTERNAL, false) }, false, None),
            (ClientError::NotFullyReplicated { index: Some(3), message: "m".into() }, false, Some(true)),
            (ClientError::StaleSequence { client_id: 1, seq: 2, message: "m".into() }, false, None),
            (ClientError::Decode { endpoint: "e".into(), reason: "r".into() }, false, None),
        ];
        for (error, retryable, took_effect) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
            assert_eq!(error.took_effect(), took_effect, "{error}");
            assert_eq!(error.outcome_known(), took_effect.is_some(), "{error}");
        }
    }

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

    #[test]
    fn values_round_trip_through_their_json_form() {
        for bytes in [b"hello".as_slice(), b"", &[0xff, 0x00, 0x80], "ünï".as_bytes()] {
            let json = serde_json::to_string(&JsonValue::from_bytes(bytes)).unwrap();
            let back: JsonValue = serde_json::from_str(&json).unwrap();
            assert_eq!(value_bytes(&back, "e").unwrap(), bytes, "{json}");
        }
        let read = Read { key: "k".into(), value: vec![0xff], index: 4, node: 1, committed_index: 5 };
        let wire = serde_json::to_value(ReadResponse::from(read)).unwrap();
        assert_eq!(
            wire,
            json!({"key": "k", "value_b64": "/w==", "index": 4, "node": 1, "committed_index": 5})
        );
        let cas = CasOutcome { succeeded: false, current: None, index: 9, node: 2, duplicate: false };
        let wire = serde_json::to_value(WriteResponse::from(cas)).unwrap();
        assert_eq!(wire, json!({"index": 9, "node": 2, "duplicate": false, "succeeded": false}));
        let bad = JsonValue { value: None, value_b64: Some("not base64!".into()) };
        assert!(matches!(value_bytes(&bad, "e"), Err(ClientError::Decode { .. })));
    }

    // ---- Against a fake server ----

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
    }

    /// An HTTP server on 127.0.0.1:0 that answers from a script, then with
    /// a default answer, and records what it was sent. It runs on hyper, the
    /// HTTP library under reqwest, so that testing the client needs no web
    /// framework.
    #[derive(Clone)]
    struct Fake {
        script: Arc<Mutex<VecDeque<Scripted>>>,
        default: Arc<Mutex<Scripted>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        addr: String,
    }

    impl Fake {
        async fn start(script: Vec<Scripted>, default: Scripted) -> Fake {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let fake = Fake {
                script: Arc::new(Mutex::new(script.into())),
                default: Arc::new(Mutex::new(default)),
                seen: Arc::new(Mutex::new(Vec::new())),
                addr: listener.local_addr().unwrap().to_string(),
            };
            let server = fake.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let fake = server.clone();
                    let service = hyper::service::service_fn(move |request| fake.clone().handle(request));
                    tokio::spawn(async move {
                        // A client that gave up on a slow answer has closed
                        // the connection: nothing to report.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
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
            });
            let next = self.script.lock().unwrap().pop_front();
            let s = next.unwrap_or_else(|| self.default.lock().unwrap().clone());
            tokio::time::sleep(s.delay).await;
            let response = hyper::Response::builder()
                .status(s.status)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
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
}
