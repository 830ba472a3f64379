//! `kv-server`: one replica of the KV service, serving HTTP.
//!
//! A server is a [`raft_core::RaftNode`] running the
//! [`crate::state_machine::KvStateMachine`], plus an axum
//! router that turns HTTP requests into Raft writes and reads:
//!
//! * [`kv`]: keys: get, put, delete, compare-and-swap, list, each read at
//!   the consistency level the client asks for;
//! * [`leases`]: grant, renew, revoke and list leases, and the leader's
//!   loop that decides when a lease has expired;
//! * [`cluster`]: status, membership changes, snapshots, elections,
//!   leadership transfer;
//! * [`backup`]: a consistent copy of the applied state, streamed;
//! * [`forward`]: passing requests only the leader can serve to the leader;
//! * [`follower_reads`]: a follower's linearizable reads sharing one read
//!   index question to the leader;
//! * [`watch`]: the change stream, `GET /v1/watch`, served by any node
//!   from the changes it has applied;
//! * [`metrics`]: `/metrics` for Prometheus;
//! * [`auth`]: with `--token-file`, who may call which route (bearer
//!   tokens with roles for clients, a cluster secret for nodes);
//! * [`error`]: how failures map to status codes and error bodies;
//! * [`tls`]: HTTPS, and the listener that runs TLS handshakes for axum.
//!
//! [`start`] takes already-bound listeners, so tests can use port 0.

// Handlers return early with a ready `Response` as the error value; it is
// large, but only built on the error path, once per request.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod error;
pub mod follower_reads;
pub mod forward;
pub mod kv;
pub mod leases;
pub mod metrics;
pub mod rollback;
pub mod tls;
pub mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use kv_client::api::AddLearnerRequest;
use raft_core::{Node, NodeId, RaftNode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::changes::ChangeLog;
use crate::command::DEFAULT_MAX_VALUE_BYTES;
use crate::state_machine::KvStateMachine;

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// Where its redb database lives.
    pub data_dir: PathBuf,
    /// The members to form a new cluster with, if this node's data
    /// directory is empty and `join` is not set. Each node of a static
    /// cluster is started with the same list; initializing several nodes
    /// with the *same* list is safe.
    pub initial_members: BTreeMap<NodeId, Node>,
    /// The HTTP address of any member of a running cluster to join.
    pub join: Option<String>,
    /// The Raft address other nodes should use to reach this node, recorded
    /// in the membership when it joins; `None`: the address the Raft
    /// listener is bound to. Set it when peers reach this node through
    /// another address (a proxy, a NAT).
    pub advertise_raft_addr: Option<String>,
    /// The largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// How long a session or linearizable read on a lagging node waits for
    /// it to catch up before answering 503.
    pub read_wait: Duration,
    /// Raft settings, including the storage faults
    /// ([`raft_core::Config::storage`]).
    pub raft: raft_core::Config,
    /// HTTPS on the HTTP API, and for calls to the other nodes; `None`:
    /// plain HTTP.
    pub http_tls: Option<tls::HttpTls>,
    /// The service-level faults; all off by default.
    pub faults: Faults,
    /// Bearer tokens and the cluster secret (`--token-file`,
    /// `--cluster-secret-file`); `None`: the HTTP API is open to anyone
    /// who can reach it.
    pub auth: Option<auth::AuthFiles>,
    /// The change stream: history kept, slow-watcher cut-off, progress.
    pub watch: watch::WatchConfig,
}

/// Faults that break the service's guarantees on purpose, so that the
/// Jepsen harness can check that its checkers notice (negative controls).
/// Never enable them on data you care about. Every node of a test cluster
/// gets the same faults: `unsafe_no_dedup` changes what `apply` does, and
/// replicas applying differently would diverge.
///
/// The storage faults live in [`raft_core::Config::storage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Serve `consistency=linearizable` reads (single key and list) from
    /// this node's applied state, as if they were `stale`: no ReadIndex, no
    /// question to the leader. A deposed leader or a lagging follower then
    /// returns stale values, which a linearizability checker must report.
    pub unsafe_local_reads: bool,
    /// Apply every write as if it carried no session: a retry of a write
    /// that already applied applies again
    /// ([`KvStateMachine::unsafe_without_dedup`]). When clients retry a
    /// compare-and-swap whose answer was lost, it applies twice, which the
    /// Jepsen harness's linearizability checker must report.
    pub unsafe_no_dedup: bool,
    /// Start every watch at this node's latest index, whatever
    /// `from_index` it asked for: a watcher that reconnects misses the
    /// changes made while it was away, which the Jepsen harness's watch
    /// checker must report.
    pub unsafe_watch_from_latest: bool,
    /// The leader ends a lease once half its TTL has passed without a
    /// renewal, by revoking it (a revoke is not checked against log time
    /// in apply, as an expiry is): keys vanish while their owner is still
    /// renewing within the TTL, which the Jepsen harness's lease check
    /// must report.
    pub unsafe_lease_expire_early: bool,
    /// The leader never expires a lease: keys stay after their owner
    /// stopped renewing, past the TTL and the documented bound, which the
    /// Jepsen harness's lease check must report (as `outlived`).
    pub unsafe_lease_never_expire: bool,
}

impl ServerConfig {
    /// Defaults for node `id` with data in `data_dir`.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            id,
            data_dir: data_dir.into(),
            initial_members: BTreeMap::new(),
            join: None,
            advertise_raft_addr: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            read_wait: Duration::from_secs(5),
            raft: raft_core::Config::new("kv"),
            http_tls: None,
            faults: Faults::default(),
            auth: None,
            watch: watch::WatchConfig::default(),
        }
    }
}

/// What every handler can reach. Cheap to clone: one reference count
/// (axum clones the state for every request that extracts it).
#[derive(Clone)]
pub struct Ctx(Arc<Shared>);

impl std::ops::Deref for Ctx {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What a [`Ctx`] holds.
pub struct Shared {
    /// This node's id.
    pub id: NodeId,
    /// The Raft node.
    pub node: Arc<RaftNode<KvStateMachine>>,
    /// HTTP client used to forward requests to the leader.
    pub http: reqwest::Client,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The configuration.
    pub config: Arc<ServerConfig>,
    /// The tokens and cluster secrets in force; `None` when auth is off.
    pub auth: Option<Arc<auth::Auth>>,
    /// The linearizable reads waiting for the leader's read index.
    pub follower_reads: Arc<follower_reads::FollowerReads>,
    /// The changes this node applied, for watchers.
    pub changes: Arc<ChangeLog>,
    /// Becomes true when the server stops: open watches end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The leader's judgment of how long each lease has left.
    pub leases: Arc<leases::LeaseClock>,
}

/// A running server.
pub struct Server {
    /// The HTTP address.
    pub http_addr: SocketAddr,
    /// The Raft transport's address.
    pub raft_addr: SocketAddr,
    ctx: Ctx,
    http_task: JoinHandle<()>,
    watch_task: JoinHandle<()>,
    lease_task: JoinHandle<()>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

/// Opens the node's data directory, starts Raft and the HTTP API, and forms
/// or joins the cluster if this node is new.
pub async fn start(config: ServerConfig, http: TcpListener, raft: TcpListener) -> anyhow::Result<Server> {
    let http_addr = http.local_addr()?;
    let raft_addr = raft.local_addr()?;
    let app = if config.faults.unsafe_no_dedup {
        tracing::warn!(node_id = config.id, "fault injection: client sessions ignored, retries apply again");
        KvStateMachine::unsafe_without_dedup()
    } else {
        KvStateMachine::new()
    };
    let changes = Arc::new(ChangeLog::new(config.watch.retention));
    let app = app.with_change_log(changes.clone());
    if config.faults.unsafe_local_reads {
        tracing::warn!(node_id = config.id, "fault injection: linearizable reads served from local state");
    }
    if config.faults.unsafe_watch_from_latest {
        tracing::warn!(node_id = config.id, "fault injection: watches start at the latest index");
    }
    if config.faults.unsafe_lease_expire_early {
        tracing::warn!(node_id = config.id, "fault injection: leases end at half their TTL");
    }
    if config.faults.unsafe_lease_never_expire {
        tracing::warn!(node_id = config.id, "fault injection: leases never expire");
    }
    if let Some(tls) = &config.raft.peer_tls {
        // A node whose certificate names another node would be refused by
        // every peer; say so at startup instead.
        let named = tls.identity().context("the peer TLS certificate")?;
        if named.node_id != config.id || named.cluster_id != config.raft.cluster_id {
            anyhow::bail!(
                "the peer TLS certificate names {named}, but this is node {} of cluster {:?}",
                config.id,
                config.raft.cluster_id
            );
        }
        tracing::info!(node_id = config.id, "peer TLS on: Raft connections are mutual TLS");
    }
    if let Some(tls) = &config.http_tls {
        check_https_names(&config, tls, http_addr)?;
        let client_cert_auth = tls.client_cert_auth();
        tracing::info!(node_id = config.id, client_cert_auth, "HTTPS on: the HTTP API speaks TLS only");
    }
    let auth = match &config.auth {
        None => None,
        Some(files) => {
            let auth =
                auth::Auth::load(files.clone()).context("loading the token and cluster secret files")?;
            log_auth_loaded(config.id, auth.loaded());
            Some(Arc::new(auth))
        }
    };
    let node = RaftNode::open(config.id, config.raft.clone(), &config.data_dir, app, raft)
        .await
        .with_context(|| format!("opening node {} in {}", config.id, config.data_dir.display()))?;
    let node = Arc::new(node);
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let ctx = Ctx(Arc::new(Shared {
        id: config.id,
        node: node.clone(),
        http: tls::node_client_builder(config.http_tls.as_ref())
            .timeout(config.raft.request_timeout + Duration::from_secs(2))
            .build()
            .context("building the HTTP client")?,
        metrics: Arc::new(metrics::Metrics::new()),
        config: Arc::new(config.clone()),
        auth,
        follower_reads: Arc::default(),
        changes,
        shutdown: shutdown_rx.clone(),
        leases: Arc::default(),
    }));

    let app = router(ctx.clone());
    let stopped = async move {
        let _ = shutdown_rx.wait_for(|stop| *stop).await;
    };
    let http_task = match &config.http_tls {
        Some(tls) => tokio::spawn(serve(tls::TlsListener::new(http, tls, config.id), app, stopped)),
        None => tokio::spawn(serve(http, app, stopped)),
    };
    let watch_task = tokio::spawn(watch_leadership(ctx.clone()));
    let lease_task = tokio::spawn(leases::run_expiry(ctx.clone()));

    let (fresh, learner) = {
        let m = node.metrics().await;
        (m.voters.is_empty() && m.learners.is_empty(), m.learners.contains(&config.id))
    };
    if let (Some(join), true) = (&config.join, fresh || learner) {
        // A node that stopped between being added as a learner and being
        // promoted finishes joining on restart.
        join_cluster(&ctx, join, raft_addr, http_addr, !fresh).await?;
    } else if fresh && !config.initial_members.is_empty() {
        if !config.initial_members.contains_key(&config.id) {
            bail!("--initial-members does not include this node's id {}", config.id);
        }
        node.initialize(config.initial_members.clone()).await?;
    }
    tracing::info!(node_id = config.id, %http_addr, %raft_addr, "kv-server serving");
    Ok(Server { http_addr, raft_addr, ctx, http_task, watch_task, lease_task, shutdown_tx })
}

impl Server {
    /// The Raft node.
    pub fn node(&self) -> &Arc<RaftNode<KvStateMachine>> {
        &self.ctx.node
    }

    /// Reads the token file and the cluster secret file again (`kv-server`
    /// does on SIGHUP) and puts them in force for the requests that arrive
    /// from now on. `Ok(None)`: auth is off, nothing to read. On an error
    /// the tokens and secrets loaded before stay in force.
    pub fn reload_auth(&self) -> Result<Option<auth::Loaded>, crate::tokens::FileError> {
        let Some(auth) = &self.ctx.auth else { return Ok(None) };
        match auth.reload() {
            Ok(loaded) => {
                log_auth_loaded(self.ctx.id, loaded);
                Ok(Some(loaded))
            }
            Err(e) => {
                // An error, not a warning: the node goes on, but without
                // the change the operator made, which may have been the
                // removal of a leaked token.
                tracing::error!(
                    node_id = self.ctx.id,
                    error = %e,
                    "reloading the token files failed; the tokens loaded before stay in force"
                );
                Err(e)
            }
        }
    }

    /// Stops the server gracefully: a leader first hands its leadership to
    /// a caught-up voter while HTTP still serves (requests that arrive
    /// meanwhile wait, then are forwarded to the new leader; see
    /// [`RaftNode::transfer_leadership`]), then HTTP stops taking requests
    /// and finishes those in flight, and the node stops and flushes its
    /// database.
    pub async fn shutdown(self) {
        let node = &self.ctx.node;
        if node.is_leader() {
            match node.transfer_leadership(None).await {
                Ok(leader) => tracing::info!(node_id = self.ctx.id, leader, "handed leadership off"),
                Err(e) => tracing::warn!(node_id = self.ctx.id, reason = %e, "stopping without a handoff"),
            }
        }
        let _ = self.shutdown_tx.send(true);
        self.watch_task.abort();
        let _ = self.watch_task.await;
        self.lease_task.abort();
        let _ = self.lease_task.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http_task).await;
        let node = self.ctx.node.clone();
        drop(self.ctx);
        match Arc::try_unwrap(node) {
            // The handoff is done (or failed) already.
            Ok(node) => node.shutdown_without_handoff().await,
            Err(node) => {
                // A handler still holds the node (a stuck request); stop Raft anyway.
                let _ = node.raft().shutdown().await;
            }
        }
    }
}

/// Serves `app` on `listener` until `stopped` completes.
async fn serve<L>(listener: L, app: Router, stopped: impl std::future::Future<Output = ()> + Send + 'static)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Refuses to start with an HTTPS certificate that does not name the host
/// the other nodes reach this node at (its address in `--initial-members`,
/// else the address it is bound to): forwarding to it would fail every
/// time. Certificates made for peer TLS alone name no host at all.
fn check_https_names(config: &ServerConfig, tls: &tls::HttpTls, bound: SocketAddr) -> anyhow::Result<()> {
    let advertised = config.initial_members.get(&config.id).map(|m| m.api_addr.clone());
    let addr = advertised.unwrap_or_else(|| bound.to_string());
    let host = match addr.parse::<SocketAddr>() {
        // Every address at once: the name peers use is not known here.
        Ok(a) if a.ip().is_unspecified() => return Ok(()),
        Ok(a) => a.ip().to_string(),
        Err(_) => addr.rsplit_once(':').map_or(addr.as_str(), |(host, _)| host).to_string(),
    };
    tls.check_names(&host).map_err(|e| {
        anyhow::anyhow!(
            "the HTTPS certificate (--tls-cert) does not name {host}, where this node is reached ({e}); \
             make one that does: kv-server certs node --host {host} ..."
        )
    })
}

fn router(ctx: Ctx) -> Router {
    // A value may arrive base64-encoded (4/3 larger) inside a JSON body.
    let body_limit = ctx.config.max_value_bytes.saturating_mul(4) / 3 + 64 * 1024;
    Router::new()
        .route("/health", get(cluster::health))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/kv", get(kv::list))
        .route("/v1/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/cas/{*key}", post(kv::cas))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/leases", get(leases::list).post(leases::grant))
        .route("/v1/leases/{id}", get(leases::show).delete(leases::revoke))
        .route("/v1/leases/{id}/keepalive", post(leases::keep_alive))
        .route("/v1/cluster/status", get(cluster::status))
        .route("/v1/cluster/members", get(cluster::members))
        .route("/v1/cluster/learners", post(cluster::add_learner))
        .route("/v1/cluster/members/{id}/promote", post(cluster::promote))
        .route("/v1/cluster/members/{id}", axum::routing::delete(cluster::remove))
        .route("/v1/cluster/snapshot", post(cluster::snapshot))
        .route("/v1/cluster/backup", get(backup::backup))
        .route("/v1/cluster/rollback", get(rollback::list))
        .route("/v1/cluster/rollback/{id}", get(rollback::show))
        .route("/v1/cluster/campaign", post(cluster::campaign))
        .route("/v1/cluster/transfer-leader", post(cluster::transfer_leader))
        .route("/v1/internal/read-index", post(kv::read_index))
        .fallback(cluster::not_found)
        .method_not_allowed_fallback(cluster::method_not_allowed)
        // Checks the caller too (`auth::admit`).
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(ctx)
}

/// Asks a running cluster to add this node as a learner (which waits until
/// it has caught up) and then to promote it to voter.
/// How many times a join step answered "retryable" is tried, 500 ms apart:
/// long enough for another node's join, with its catch-up, to finish.
const JOIN_RETRYABLE_ATTEMPTS: u32 = 240;

async fn join_cluster(
    ctx: &Ctx,
    via: &str,
    raft_addr: SocketAddr,
    http_addr: SocketAddr,
    already_learner: bool,
) -> anyhow::Result<()> {
    let base = if via.contains("://") { via.to_string() } else { ctx.node_url(via, "") };
    let http = tls::node_client_builder(ctx.config.http_tls.as_ref())
        .timeout(ctx.config.raft.change_timeout)
        .build()?;
    // Peers dial the address recorded here, so it must be the one they can
    // reach, which behind a proxy is not the one we listen on.
    let raft_addr = ctx.config.advertise_raft_addr.clone().unwrap_or_else(|| raft_addr.to_string());
    let req = AddLearnerRequest { id: ctx.id, raft_addr, api_addr: http_addr.to_string() };
    let steps = [
        ("adding as learner", format!("{base}/v1/cluster/learners"), Some(&req)),
        ("promoting to voter", format!("{base}/v1/cluster/members/{}/promote", ctx.id), None),
    ];
    for (what, url, body) in steps.into_iter().skip(usize::from(already_learner)) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut r = http.post(&url);
            if let Some(auth) = &ctx.auth {
                // Joining is one of the things nodes do for each other.
                r = r.header(auth::CLUSTER_SECRET_HEADER, auth.secret_to_send());
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            match r.send().await {
                Ok(resp) if resp.status().is_success() => break,
                // A promotion whose first answer was lost may have happened.
                Ok(resp)
                    if resp.status() == reqwest::StatusCode::CONFLICT
                        && body.is_none()
                        && ctx.node.metrics().await.voters.contains(&ctx.id) =>
                {
                    break
                }
                Ok(resp) if attempt < 30 && resp.status().as_u16() >= 500 => {}
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    // Another node's change in progress (nodes joining at
                    // once): wait for it, for as long as a change may take.
                    let retryable =
                        serde_json::from_str::<kv_client::api::ErrorBody>(&text).is_ok_and(|b| b.retryable);
                    if !(retryable && attempt < JOIN_RETRYABLE_ATTEMPTS) {
                        bail!("joining via {base}: {what} failed: {status} {text}");
                    }
                    tracing::info!(node_id = ctx.id, "joining via {base}: {what}: {text}; retrying");
                }
                Err(e) if attempt < 30 => tracing::warn!(error = %e, "joining via {base}: {what}; retrying"),
                Err(e) => bail!("joining via {base}: {what}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::info!(node_id = ctx.id, "joined: {what} done");
    }
    Ok(())
}

fn log_auth_loaded(node_id: NodeId, loaded: auth::Loaded) {
    tracing::info!(
        node_id,
        tokens = loaded.tokens(),
        admin = loaded.admin,
        write = loaded.write,
        read = loaded.read,
        cluster_secrets = loaded.cluster_secrets,
        "auth on: loaded {} tokens",
        loaded.tokens()
    );
    if loaded.tokens() == 0 {
        tracing::warn!(node_id, "the token file holds no token: every client request but /health is refused");
    }
}

/// Counts leader changes and new terms for `/metrics`, and logs them.
async fn watch_leadership(ctx: Ctx) {
    let mut watch = ctx.node.watch_term();
    let (mut term, mut leader) = watch.current();
    while watch.changed().await {
        let (t, l) = watch.current();
        if t != term {
            ctx.metrics.terms_seen.inc();
            term = t;
        }
        if l != leader {
            ctx.metrics.leader_changes.inc();
            tracing::info!(node_id = ctx.id, term = t, leader = ?l, "leader changed");
            leader = l;
        }
    }
}
