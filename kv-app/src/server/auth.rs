//! Who may call which route: bearer tokens for clients, a cluster secret
//! for nodes, checked ([`admit`]) before any handler runs, by the one
//! middleware every request goes through (`metrics::track`, so that a
//! refused request is counted and timed like the rest).
//!
//! Without `--token-file` everything is let through and the
//! API is open to anyone who can reach it, as it always was. With it:
//!
//! * A client sends `Authorization: Bearer <token>`. The token's line in
//!   the token file ([`crate::tokens`]) gives its role, and the route needs
//!   one ([`access`]): reads need `read` (listing leases too), writes
//!   `write` (granting, renewing and revoking leases too), membership
//!   changes, snapshots and elections `admin`. `/health` is open.
//! * A node sends the cluster secret in the [`CLUSTER_SECRET_HEADER`]
//!   header. It opens only what nodes call on each other:
//!   `/v1/internal/read-index` (a follower's linearizable read) and the
//!   two steps of joining (add learner, promote). No client token opens
//!   the internal route, not even an admin's.
//!
//! A request with no credentials, an unknown token or a wrong secret is
//! refused with 401 and `WWW-Authenticate: Bearer`; a known caller
//! without the role the route needs, with 403. Either way the handler
//! never runs, so nothing changes and nothing is forwarded to the leader,
//! and `/metrics` counts the refusal (`kv_auth_refusals_total`).
//!
//! A follower that forwards a request to the leader passes the caller's
//! credentials on unchanged (`forward.rs`), and the leader checks them
//! again against its own files: every node must be given the same token
//! file and cluster secret file.
//!
//! Both files are read at startup and again by [`Auth::reload`] (on
//! SIGHUP in `kv-server`). A reload that fails keeps what was loaded
//! before, so a typo cannot lock everyone out.
//!
//! A production system would also rate-limit failed attempts and could
//! accept a node's TLS client certificate in place of the cluster secret.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::{MatchedPath, Request};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kv_client::api::codes;

use super::error::ApiError;
use super::Ctx;
use crate::tokens::{ClusterSecrets, FileError, Role, TokenFile};

/// The header in which nodes send the cluster secret to each other.
pub const CLUSTER_SECRET_HEADER: &str = "x-kv-cluster-secret";

/// The files auth is read from. Both are needed: a node must be able to
/// reach its peers' internal routes, which no client token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFiles {
    /// The token file (`--token-file`); its format is in [`crate::tokens`].
    pub token_file: PathBuf,
    /// The cluster secret file (`--cluster-secret-file`).
    pub cluster_secret_file: PathBuf,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials (`/health`).
    Open,
    /// A client token of this role or a higher one.
    Client(Role),
    /// An admin token, or a node (joining the cluster).
    AdminOrPeer,
    /// Only a node, with the cluster secret.
    Peer,
}

/// The access each route needs, by its method and its route pattern as
/// the router names it (`None`: no route matched, the 404 fallback). A
/// route this table does not name needs `admin`, so that a route added to
/// the router without a line here fails closed.
pub fn access(method: &Method, route: Option<&str>) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let Some(route) = route else {
        // Telling a client that a path does not exist reveals nothing a
        // reader of docs/api.md does not know.
        return Access::Client(Role::Read);
    };
    match (route, method.as_str()) {
        ("/health", _) => Access::Open,
        (
            "/metrics"
            | "/v1/kv"
            | "/v1/kv/{*key}"
            | "/v1/watch"
            | "/v1/leases"
            | "/v1/leases/{id}"
            | "/v1/cluster/status"
            | "/v1/cluster/members",
            _,
        ) if read => Access::Client(Role::Read),
        ("/v1/kv/{*key}", "PUT" | "DELETE")
        | ("/v1/cas/{*key}" | "/v1/leases" | "/v1/leases/{id}/keepalive", "POST")
        | ("/v1/leases/{id}", "DELETE") => Access::Client(Role::Write),
        ("/v1/cluster/learners" | "/v1/cluster/members/{id}/promote", "POST") => Access::AdminOrPeer,
        ("/v1/cluster/members/{id}", "DELETE")
        | ("/v1/cluster/snapshot" | "/v1/cluster/campaign" | "/v1/cluster/transfer-leader", "POST")
        | ("/v1/cluster/backup" | "/v1/cluster/rollback" | "/v1/cluster/rollback/{id}", "GET") => {
            Access::Client(Role::Admin)
        }
        ("/v1/internal/read-index", "POST") => Access::Peer,
        _ => Access::Client(Role::Admin),
    }
}

/// What was loaded from the files, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Tokens of each role.
    pub admin: usize,
    /// See `admin`.
    pub write: usize,
    /// See `admin`.
    pub read: usize,
    /// Cluster secrets accepted.
    pub cluster_secrets: usize,
}

impl Loaded {
    /// All tokens.
    pub fn tokens(&self) -> usize {
        self.admin + self.write + self.read
    }
}

/// The credentials in force, swapped whole on reload.
#[derive(Debug)]
struct Credentials {
    tokens: TokenFile,
    secrets: ClusterSecrets,
}

impl Credentials {
    fn load(files: &AuthFiles) -> Result<Credentials, FileError> {
        Ok(Credentials {
            tokens: TokenFile::load(&files.token_file)?,
            secrets: ClusterSecrets::load(&files.cluster_secret_file)?,
        })
    }

    fn summary(&self) -> Loaded {
        Loaded {
            admin: self.tokens.count(Role::Admin),
            write: self.tokens.count(Role::Write),
            read: self.tokens.count(Role::Read),
            cluster_secrets: self.secrets.count(),
        }
    }
}

/// A node's tokens and cluster secrets. Shared by every request.
#[derive(Debug)]
pub struct Auth {
    files: AuthFiles,
    current: RwLock<Arc<Credentials>>,
}

/// Who sent a request, once their credentials checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    /// A client, with the name and role of its token.
    Client { name: String, role: Role },
    /// Another node of the cluster.
    Peer,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// 401: no credentials, or credentials this node does not know.
    Unauthenticated { message: String, invalid_token: bool },
    /// 403: a known caller, but not allowed this route.
    Forbidden(String),
}

impl Auth {
    /// Reads both files; fails if either cannot be read or parsed.
    pub fn load(files: AuthFiles) -> Result<Auth, FileError> {
        let credentials = Credentials::load(&files)?;
        Ok(Auth { files, current: RwLock::new(Arc::new(credentials)) })
    }

    /// Reads both files again and, if both parse, puts them in force for
    /// the requests that arrive from now on. On an error the credentials
    /// loaded before stay in force.
    pub fn reload(&self) -> Result<Loaded, FileError> {
        let credentials = Arc::new(Credentials::load(&self.files)?);
        let loaded = credentials.summary();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = credentials;
        Ok(loaded)
    }

    /// What is in force now.
    pub fn loaded(&self) -> Loaded {
        self.credentials().summary()
    }

    /// The cluster secret this node sends to its peers.
    pub fn secret_to_send(&self) -> String {
        self.credentials().secrets.to_send().to_owned()
    }

    fn credentials(&self) -> Arc<Credentials> {
        // Only a swap of one Arc happens under the lock: nothing can leave
        // it half-written.
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Who sent `headers`: the cluster secret header, if present, claims a
    /// node; otherwise the bearer token names a client.
    fn identify(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let credentials = self.credentials();
        let unauthenticated = |message: &str, invalid_token: bool| Refusal::Unauthenticated {
            message: message.to_owned(),
            invalid_token,
        };
        if let Some(secret) = headers.get(CLUSTER_SECRET_HEADER) {
            let secret = secret.to_str().unwrap_or_default();
            return if credentials.secrets.accepts(secret) {
                Ok(Caller::Peer)
            } else {
                Err(unauthenticated("the cluster secret does not match this node's", false))
            };
        }
        let Some(header) = headers.get(AUTHORIZATION) else {
            return Err(unauthenticated("no credentials: send Authorization: Bearer <token>", false));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header is not Bearer <token>", true))?;
        match credentials.tokens.find(token) {
            Some(entry) => Ok(Caller::Client { name: entry.name.clone(), role: entry.role }),
            None => Err(unauthenticated("unknown token", true)),
        }
    }

    /// Whether the sender of `headers` may make a request that needs
    /// `access`; `what` names the request in a refusal.
    fn authorize(&self, access: Access, headers: &HeaderMap, what: impl fmt::Display) -> Result<(), Refusal> {
        if access == Access::Open {
            return Ok(());
        }
        let caller = self.identify(headers)?;
        let allowed = match (&caller, access) {
            (_, Access::Open) | (Caller::Peer, Access::Peer | Access::AdminOrPeer) => true,
            (Caller::Client { role, .. }, Access::AdminOrPeer) => role.includes(Role::Admin),
            (Caller::Client { role, .. }, Access::Client(needed)) => role.includes(needed),
            (Caller::Client { .. }, Access::Peer) | (Caller::Peer, Access::Client(_)) => false,
        };
        if allowed {
            return Ok(());
        }
        Err(Refusal::Forbidden(match (&caller, access) {
            (Caller::Client { name, .. }, Access::Peer) => {
                format!("{what} is served only to nodes of the cluster, not to clients (token {name:?})")
            }
            (Caller::Peer, _) => {
                format!("the cluster secret opens only the routes nodes call on each other, not {what}")
            }
            (Caller::Client { name, role }, _) => {
                let needed = match access {
                    Access::Client(needed) => needed,
                    _ => Role::Admin,
                };
                format!("token {name:?} has role {role}; {what} needs {needed}")
            }
        }))
    }
}

impl Refusal {
    /// The label of `kv_auth_refusals_total`.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::Forbidden(_) => "forbidden",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated { message, invalid_token } => {
                let mut response =
                    ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED, message).into_response();
                // RFC 6750 §3: the scheme to use, and whether the token
                // sent was the problem.
                let challenge = if invalid_token {
                    r#"Bearer realm="kv", error="invalid_token""#
                } else {
                    r#"Bearer realm="kv""#
                };
                response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                response
            }
            Refusal::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, message).into_response()
            }
        }
    }
}

/// Whether `req` may go on to its handler: `Err` holds the refusal to
/// answer instead, already logged and counted. With auth off, every
/// request may.
pub fn admit(ctx: &Ctx, req: &Request) -> Result<(), Response> {
    let Some(auth) = &ctx.auth else { return Ok(()) };
    let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let access = access(req.method(), route);
    let (method, path) = (req.method(), req.uri().path());
    auth.authorize(access, req.headers(), format_args!("{method} {path}")).map_err(|refusal| {
        tracing::debug!(node_id = ctx.id, %method, path, reason = refusal.reason(), ?refusal, "refused");
        ctx.metrics.auth_refused(refusal.reason());
        refusal.into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Digest;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("tokens");
        let lines: Vec<String> =
            [("read", "r", "t-read"), ("write", "w", "t-write"), ("admin", "a", "t-admin")]
                .iter()
                .map(|(role, name, token)| format!("{role} {name} {}\n", Digest::of(token)))
                .collect();
        std::fs::write(&token_file, lines.concat()).unwrap();
        let cluster_secret_file = dir.path().join("secret");
        std::fs::write(&cluster_secret_file, format!("{SECRET}\n")).unwrap();
        let auth = Auth::load(AuthFiles { token_file, cluster_secret_file }).unwrap();
        (dir, auth)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    fn secret(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CLUSTER_SECRET_HEADER, HeaderValue::from_str(s).unwrap());
        h
    }

    #[test]
    fn each_route_needs_its_role() {
        let (get, put, post, delete) = (Method::GET, Method::PUT, Method::POST, Method::DELETE);
        let cases = [
            (&get, Some("/health"), Access::Open),
            (&post, Some("/health"), Access::Open),
            (&get, Some("/metrics"), Access::Client(Role::Read)),
            (&get, Some("/v1/kv"), Access::Client(Role::Read)),
            (&get, Some("/v1/kv/{*key}"), Access::Client(Role::Read)),
            (&get, Some("/v1/watch"), Access::Client(Role::Read)),
            (&Method::HEAD, Some("/v1/kv/{*key}"), Access::Client(Role::Read)),
            (&get, Some("/v1/cluster/status"), Access::Client(Role::Read)),
            (&get, Some("/v1/cluster/members"), Access::Client(Role::Read)),
            (&put, Some("/v1/kv/{*key}"), Access::Client(Role::Write)),
            (&delete, Some("/v1/kv/{*key}"), Access::Client(Role::Write)),
            (&post, Some("/v1/cas/{*key}"), Access::Client(Role::Write)),
            (&get, Some("/v1/leases"), Access::Client(Role::Read)),
            (&get, Some("/v1/leases/{id}"), Access::Client(Role::Read)),
            (&post, Some("/v1/leases"), Access::Client(Role::Write)),
            (&post, Some("/v1/leases/{id}/keepalive"), Access::Client(Role::Write)),
            (&delete, Some("/v1/leases/{id}"), Access::Client(Role::Write)),
            (&put, Some("/v1/leases/{id}"), Access::Client(Role::Admin)),
            (&post, Some("/v1/cluster/learners"), Access::AdminOrPeer),
            (&post, Some("/v1/cluster/members/{id}/promote"), Access::AdminOrPeer),
            (&delete, Some("/v1/cluster/members/{id}"), Access::Client(Role::Admin)),
            (&post, Some("/v1/cluster/snapshot"), Access::Client(Role::Admin)),
            (&post, Some("/v1/cluster/campaign"), Access::Client(Role::Admin)),
            (&post, Some("/v1/cluster/transfer-leader"), Access::Client(Role::Admin)),
            (&get, Some("/v1/cluster/backup"), Access::Client(Role::Admin)),
            (&get, Some("/v1/cluster/rollback"), Access::Client(Role::Admin)),
            (&get, Some("/v1/cluster/rollback/{id}"), Access::Client(Role::Admin)),
            (&post, Some("/v1/internal/read-index"), Access::Peer),
            (&get, None, Access::Client(Role::Read)),
            // Fails closed: a route or method the table does not name.
            (&post, Some("/v1/kv/{*key}"), Access::Client(Role::Admin)),
            (&get, Some("/v1/new-route"), Access::Client(Role::Admin)),
            (&get, Some("/v1/internal/read-index"), Access::Client(Role::Admin)),
        ];
        for (method, route, expected) in cases {
            assert_eq!(access(method, route), expected, "{method} {route:?}");
        }
    }

    #[test]
    fn roles_open_what_they_include_and_refuse_the_rest_with_403() {
        let (_dir, auth) = auth();
        let ok = |access, headers: &HeaderMap| auth.authorize(access, headers, "X").is_ok();
        assert!(ok(Access::Client(Role::Read), &bearer("t-read")));
        assert!(!ok(Access::Client(Role::Write), &bearer("t-read")));
        assert!(ok(Access::Client(Role::Write), &bearer("t-write")));
        assert!(!ok(Access::AdminOrPeer, &bearer("t-write")));
        assert!(ok(Access::AdminOrPeer, &bearer("t-admin")));
        assert!(ok(Access::Client(Role::Read), &bearer("t-admin")));
        let err = auth.authorize(Access::Client(Role::Write), &bearer("t-read"), "PUT /v1/kv/k");
        assert_eq!(
            err,
            Err(Refusal::Forbidden("token \"r\" has role read; PUT /v1/kv/k needs write".into()))
        );
        assert!(ok(Access::Open, &HeaderMap::new()));
    }

    #[test]
    fn only_the_cluster_secret_opens_peer_routes() {
        let (_dir, auth) = auth();
        assert!(auth.authorize(Access::Peer, &secret(SECRET), "X").is_ok());
        assert!(auth.authorize(Access::AdminOrPeer, &secret(SECRET), "X").is_ok());
        let admin = auth.authorize(Access::Peer, &bearer("t-admin"), "X");
        assert!(matches!(admin, Err(Refusal::Forbidden(m)) if m.contains("served only to nodes")));
        let peer_on_kv = auth.authorize(Access::Client(Role::Read), &secret(SECRET), "X");
        assert!(matches!(peer_on_kv, Err(Refusal::Forbidden(m)) if m.contains("cluster secret opens only")));
        let wrong = auth.authorize(Access::Peer, &secret(&SECRET.replace('0', "1")), "X");
        assert!(matches!(wrong, Err(Refusal::Unauthenticated { .. })));
    }

    #[test]
    fn missing_malformed_or_unknown_credentials_are_401() {
        let (_dir, auth) = auth();
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        let cases = [
            (HeaderMap::new(), "no credentials", false),
            (basic, "not Bearer <token>", true),
            (bearer("t-nope"), "unknown token", true),
            (bearer(""), "not Bearer <token>", true),
        ];
        for (headers, message, invalid) in cases {
            match auth.authorize(Access::Client(Role::Read), &headers, "X") {
                Err(Refusal::Unauthenticated { message: m, invalid_token }) => {
                    assert!(m.contains(message), "{m:?} lacks {message:?}");
                    assert_eq!(invalid_token, invalid, "{m}");
                }
                other => panic!("expected 401 for {headers:?}, got {other:?}"),
            }
        }
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let mut lower = HeaderMap::new();
        lower.insert(AUTHORIZATION, HeaderValue::from_static("bearer t-read"));
        assert!(auth.authorize(Access::Client(Role::Read), &lower, "X").is_ok());
    }

    #[test]
    fn a_failed_reload_keeps_the_tokens_loaded_before() {
        let (_dir, auth) = auth();
        assert_eq!(auth.loaded(), Loaded { admin: 1, write: 1, read: 1, cluster_secrets: 1 });
        std::fs::write(&auth.files.token_file, format!("write w2 {}\n", Digest::of("t-new"))).unwrap();
        assert_eq!(auth.reload().unwrap().tokens(), 1);
        assert!(auth.authorize(Access::Client(Role::Write), &bearer("t-new"), "X").is_ok());
        assert!(auth.authorize(Access::Client(Role::Read), &bearer("t-read"), "X").is_err());

        std::fs::write(&auth.files.token_file, "write broken\n").unwrap();
        let err = auth.reload().unwrap_err().to_string();
        assert!(err.contains("line 1: expected ROLE NAME HASH"), "{err}");
        assert!(auth.authorize(Access::Client(Role::Write), &bearer("t-new"), "X").is_ok());
    }
}
