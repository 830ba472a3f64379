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
//! # Authentication
//!
//! A cluster started with `--token-file` wants a bearer token on every
//! request; give it with [`ClientOptions::with_token`]. A missing or
//! unknown token is refused with 401 (`unauthenticated`), a token whose
//! role does not allow the request with 403 (`forbidden`); both are
//! definite answers (nothing changed) and are not retried.
//!
//! # Session token
//!
//! Every answer carries the log `index` it reflects. The client keeps the
//! highest one it has seen ([`Client::session_token`]) and sends it with
//! `consistency=session` reads, which any node serves once it has applied up
//! to it: the client reads its own writes and never sees time go backwards,
//! even when it reads from followers.
//!
//! # The code
//!
//! This file holds the [`Client`] handle and its options. `kv.rs`,
//! `leases.rs` and `cluster.rs` turn each operation into a request and its answer into a
//! typed result; `session.rs` leases exactly-once sessions to writes;
//! `leader.rs` chooses the endpoint for each attempt; `retry.rs` sends a
//! request until it succeeds, fails definitely or runs out of time; and
//! `error.rs` holds [`ClientError`] and how to classify it. The tests in
//! `tests/fake_server.rs` run the client against a scripted fake server.
//!
//! # Watching
//!
//! [`Client::watch`] follows the changes to the keys under a prefix, as
//! `GET /v1/watch` streams them, and resumes by itself on another endpoint
//! when a connection ends, without losing or repeating a change; `watch.rs`
//! says how, and `docs/watch.md` what the stream guarantees.
//!
//! # HTTPS
//!
//! With [`ClientOptions::tls`] set, the client speaks HTTPS: endpoints
//! given as `host:port` become `https://host:port`, and so do the leader
//! hints servers send. A TLS failure (a certificate the client does not
//! trust, or a server that refuses the client's) is a configuration
//! error, reported at once as [`ClientError::Tls`] without trying other
//! nodes: every node of a cluster shares one CA, so another node would
//! fail the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{Consistency, Durability};
use crate::tls::{http_client_builder, ClientTls};

mod backup;
mod cluster;
mod error;
mod kv;
mod leader;
mod leases;
mod retry;
mod session;
mod watch;

pub use backup::BackupDownload;
pub use error::ClientError;
pub use kv::{encode_key, kv_path, CasOutcome, KeyValue, Listing, Read};
use leader::Routing;
pub use leader::{normalize_endpoint, normalize_endpoint_for};
pub use leases::{is_lease_not_found, LeaseKeeper};
use session::WriteSession;
pub use watch::{Watch, WatchOptions};

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
    /// HTTPS: the CA to trust and the client certificate to present (see
    /// [`crate::tls`]). `None` (the default): plain HTTP.
    pub tls: Option<ClientTls>,
    /// The bearer token sent with every request (`Authorization: Bearer
    /// …`), for a cluster started with `--token-file`. None by default.
    pub token: Option<BearerToken>,
}

impl ClientOptions {
    /// These options, sending `token` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(BearerToken::new(token));
        self
    }
}

/// A bearer token. Its `Debug` form hides it, so that logging the options
/// does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token, as `kv-server tokens add` printed it.
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The token as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header's value that carries it, marked
    /// sensitive so that reqwest's and hyper's debug output hide it.
    pub fn header_value(&self) -> Result<reqwest::header::HeaderValue, ClientError> {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
                ClientError::InvalidArgument {
                    reason: "the bearer token holds characters an HTTP header cannot carry".into(),
                }
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(hidden)")
    }
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
            tls: None,
            token: None,
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
    /// Base URLs, normalized to `http://host:port` (`https://` with TLS).
    endpoints: Vec<String>,
    options: ClientOptions,
    routing: Mutex<Routing>,
    /// The highest log index seen in any answer.
    token: AtomicU64,
    sessions: Mutex<Vec<WriteSession>>,
    first_client_id: u64,
}

impl Client {
    /// A client for the cluster reachable at `endpoints` (`host:port` or
    /// `http://host:port`; `https://host:port` needs [`ClientOptions::tls`]),
    /// with [`ClientOptions::default`].
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
        let https = options.tls.is_some();
        let endpoints =
            endpoints.iter().map(|e| normalize_endpoint_for(e, https)).collect::<Result<Vec<_>, _>>()?;
        if let (Some(e), false) = (endpoints.iter().find(|e| e.starts_with("https://")), https) {
            return Err(ClientError::InvalidEndpoint {
                endpoint: e.clone(),
                reason: "https:// needs the CA to trust (ClientOptions::tls; kvctl --cacert)".into(),
            });
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &options.token {
            headers.insert(reqwest::header::AUTHORIZATION, token.header_value()?);
        }
        let http = http_client_builder(options.tls.as_ref())
            .default_headers(headers)
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

    /// The endpoints, normalized to `http://host:port` (`https://` with TLS).
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

    /// `endpoint` as a base URL, `https://` by default when the client has
    /// TLS.
    fn normalize(&self, endpoint: &str) -> Result<String, ClientError> {
        normalize_endpoint_for(endpoint, self.inner.options.tls.is_some())
    }

    /// Raises the session token to `index`.
    fn observe(&self, index: u64) {
        self.inner.token.fetch_max(index, Ordering::Relaxed);
    }
}

/// Locks a mutex that guards plain data; a panic elsewhere while holding it
/// cannot leave that data half-updated, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
