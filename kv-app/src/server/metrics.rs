//! `/metrics`: the node's state and its HTTP traffic in Prometheus' text
//! format.
//!
//! Request counts and latencies are recorded by a middleware as requests
//! complete. Raft's own figures (term, indexes, per-follower replication
//! lag) are read from the node when the endpoint is scraped, so they are
//! never stale. Leader changes are counted by a task that watches the
//! node's metrics. The lease figures are read from the applied state when
//! scraped (`state_machine::leases::stats`): its totals are replicated
//! state, so a follower shows the same numbers as the leader once it has
//! applied as far, and a restart does not set them back to zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::Ctx;

type Labels = Vec<(String, String)>;

/// By route: each method and status seen, with its counter and histogram.
type RequestHandles = HashMap<Box<str>, Vec<(&'static str, u16, Counter, Histogram)>>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The node's metrics registry and the metrics updated as things happen.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// The counter and histogram of each route, method and status seen so
    /// far (both share their values with the families above), so that
    /// recording a request of a kind seen before allocates nothing.
    request_handles: RwLock<RequestHandles>,
    /// Times this node saw the leader change (including to "none").
    pub leader_changes: Counter,
    /// Times this node saw a new term (each is an election somewhere).
    pub terms_seen: Counter,
    term: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    is_leader: Gauge,
    follower_lag: Family<Labels, Gauge>,
    follower_matched: Family<Labels, Gauge<i64, AtomicI64>>,
    sessions: Gauge,
    auth_refusals: Family<Labels, Counter>,
    /// Watches open now (`GET /v1/watch`).
    pub watches: Gauge,
    watch_ends: Family<Labels, Counter>,
    watch_history_changes: Gauge,
    watch_history_oldest: Gauge,
    leases: Gauge,
    lease_keys: Gauge,
    leases_granted: Counter,
    leases_revoked: Counter,
    leases_expired: Counter,
    lease_keepalives: Counter,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("kv")),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            request_handles: RwLock::default(),
            leader_changes: Counter::default(),
            terms_seen: Counter::default(),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            committed_index: Gauge::default(),
            applied_index: Gauge::default(),
            is_leader: Gauge::default(),
            follower_lag: Family::default(),
            follower_matched: Family::default(),
            sessions: Gauge::default(),
            auth_refusals: Family::default(),
            watches: Gauge::default(),
            watch_ends: Family::default(),
            watch_history_changes: Gauge::default(),
            watch_history_oldest: Gauge::default(),
            leases: Gauge::default(),
            lease_keys: Gauge::default(),
            leases_granted: Counter::default(),
            leases_revoked: Counter::default(),
            leases_expired: Counter::default(),
            lease_keepalives: Counter::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register("http_requests", "HTTP requests by route, method and status", m.requests.clone());
            r.register("http_request_seconds", "HTTP request latency by route and method", m.latency.clone());
            r.register("leader_changes", "Leader changes seen by this node", m.leader_changes.clone());
            r.register(
                "raft_terms",
                "New terms seen by this node (each follows an election)",
                m.terms_seen.clone(),
            );
            r.register("raft_term", "Current Raft term", m.term.clone());
            r.register(
                "raft_last_log_index",
                "Index of the last entry in this node's log",
                m.last_log_index.clone(),
            );
            r.register(
                "raft_committed_index",
                "Highest index this node knows to be committed",
                m.committed_index.clone(),
            );
            r.register("raft_applied_index", "Index of the last entry applied here", m.applied_index.clone());
            r.register("raft_is_leader", "1 if this node is the leader", m.is_leader.clone());
            r.register(
                "raft_follower_lag_entries",
                "On the leader: entries each follower is behind (last log index - matched index)",
                m.follower_lag.clone(),
            );
            r.register(
                "raft_follower_matched_index",
                "On the leader: last index known to be in each follower's log (-1: unknown)",
                m.follower_matched.clone(),
            );
            r.register("sessions", "Client sessions remembered for exactly-once writes", m.sessions.clone());
            r.register(
                "auth_refusals",
                "Requests refused before their handler ran: no or unknown credentials (unauthenticated), or a role that does not allow them (forbidden)",
                m.auth_refusals.clone(),
            );
            r.register("watches", "Watches (GET /v1/watch) open now", m.watches.clone());
            r.register(
                "watch_ends",
                "Watches the server ended, by reason: slow_watcher, compacted or shutting_down",
                m.watch_ends.clone(),
            );
            r.register(
                "watch_history_changes",
                "Changes kept for watches to start from",
                m.watch_history_changes.clone(),
            );
            r.register(
                "watch_history_oldest_index",
                "The oldest index a watch can start from (older: 410 compacted)",
                m.watch_history_oldest.clone(),
            );
            r.register("leases", "Leases that exist in this node's applied state", m.leases.clone());
            r.register("lease_keys", "Keys attached to a lease", m.lease_keys.clone());
            r.register("leases_granted", "Leases granted", m.leases_granted.clone());
            r.register("leases_revoked", "Leases ended by a revoke", m.leases_revoked.clone());
            r.register("leases_expired", "Leases ended by the leader's expiry", m.leases_expired.clone());
            r.register(
                "lease_keepalives",
                "Keepalives applied to a lease that existed",
                m.lease_keepalives.clone(),
            );
        }
        m
    }

    /// Counts a watch the server ended, by `reason` (the end line's error code).
    pub fn watch_ended(&self, reason: &str) {
        self.watch_ends.get_or_create(&vec![("reason".to_string(), reason.to_string())]).inc();
    }

    fn record(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let method = method_label(method);
        {
            let handles = self.request_handles.read().unwrap_or_else(|p| p.into_inner());
            let seen =
                handles.get(route).and_then(|l| l.iter().find(|(m, s, ..)| *m == method && *s == status));
            if let Some((_, _, count, latency)) = seen {
                count.inc();
                latency.observe(seconds);
                return;
            }
        }
        let labels = vec![
            ("route".to_string(), route.to_string()),
            ("method".to_string(), method.to_string()),
            ("status".to_string(), status.to_string()),
        ];
        let count = self.requests.get_or_create(&labels).clone();
        let labels =
            vec![("route".to_string(), route.to_string()), ("method".to_string(), method.to_string())];
        let latency = self.latency.get_or_create(&labels).clone();
        count.inc();
        latency.observe(seconds);
        let mut handles = self.request_handles.write().unwrap_or_else(|p| p.into_inner());
        let kinds = handles.entry(route.into()).or_default();
        // Another request of the same kind may have come first.
        if !kinds.iter().any(|(m, s, ..)| *m == method && *s == status) {
            kinds.push((method, status, count, latency));
        }
    }

    /// Counts a request that `auth` refused, by `reason` (`unauthenticated`
    /// or `forbidden`).
    pub fn auth_refused(&self, reason: &str) {
        self.auth_refusals.get_or_create(&vec![("reason".to_string(), reason.to_string())]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The middleware every request goes through: it checks the caller
/// ([`super::auth::admit`]), then counts and times the request by its
/// route, refused ones included. One middleware, not one for each: each
/// costs a boxed future and a copy of the service per request.
pub async fn track(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = match super::auth::admit(&ctx, &req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal,
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    ctx.metrics.record(route, &method, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

/// A method's label: its name if HTTP defines it, else `OTHER`, so that a
/// client cannot add a label value per made-up method.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"];
    KNOWN.iter().position(|m| m == method).map_or("OTHER", |i| NAMES[i])
}

/// `GET /metrics`.
pub async fn scrape(State(ctx): State<Ctx>) -> Response {
    let m = ctx.node.metrics().await;
    let g = &ctx.metrics;
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    g.term.set(as_i64(m.term));
    g.last_log_index.set(as_i64(m.last_log_index));
    g.committed_index.set(as_i64(m.committed_index));
    g.applied_index.set(as_i64(m.applied_index));
    g.is_leader.set(i64::from(m.is_leader()));
    g.follower_lag.clear();
    g.follower_matched.clear();
    for (id, matched) in &m.matched {
        let labels = vec![("follower".to_string(), id.to_string())];
        g.follower_lag
            .get_or_create(&labels)
            .set(as_i64(m.last_log_index.saturating_sub(matched.unwrap_or(0))));
        g.follower_matched.get_or_create(&labels).set(matched.map_or(-1, as_i64));
    }
    let (oldest, _) = ctx.changes.bounds();
    g.watch_history_oldest.set(as_i64(oldest));
    g.watch_history_changes.set(as_i64(ctx.changes.len() as u64));
    if let Ok(view) = ctx.node.view() {
        if let Ok(n) = crate::state_machine::session_count(&view) {
            g.sessions.set(as_i64(n as u64));
        }
        if let Ok(l) = crate::state_machine::leases::stats(&view) {
            g.leases.set(as_i64(l.alive));
            g.lease_keys.set(as_i64(l.attached_keys));
            // Totals kept in the replicated state: the counters show them
            // as they are, rather than counting on their own.
            for (counter, total) in [
                (&g.leases_granted, l.granted),
                (&g.leases_revoked, l.revoked),
                (&g.leases_expired, l.expired),
                (&g.lease_keepalives, l.keepalives),
            ] {
                counter.inner().store(total, Ordering::Relaxed);
            }
        }
    }
    let mut out = String::new();
    let registry = g.registry.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = encode(&mut out, &registry) {
        return super::error::ApiError::internal(format!("encoding metrics: {e}")).into_response();
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        encode(&mut out, &m.registry.lock().unwrap()).unwrap();
        out
    }

    /// Requests are counted by kind, also once the kind's handles are
    /// cached, and a made-up method gets one label value for all.
    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.record("/v1/kv/{*key}", &Method::PUT, 200, 0.001);
        }
        m.record("/v1/kv/{*key}", &Method::PUT, 503, 0.001);
        m.record("/v1/kv/{*key}", &Method::GET, 200, 0.001);
        for name in ["FOO", "BAR"] {
            m.record("/health", &Method::from_bytes(name.as_bytes()).unwrap(), 405, 0.001);
        }
        let out = text(&m);
        let count = |labels: &str| {
            let prefix = format!("kv_http_requests_total{{{labels}}} ");
            out.lines().find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
        };
        assert_eq!(
            count(r#"route="/v1/kv/{*key}",method="PUT",status="200""#).as_deref(),
            Some("3"),
            "{out}"
        );
        assert_eq!(
            count(r#"route="/v1/kv/{*key}",method="PUT",status="503""#).as_deref(),
            Some("1"),
            "{out}"
        );
        assert_eq!(
            count(r#"route="/v1/kv/{*key}",method="GET",status="200""#).as_deref(),
            Some("1"),
            "{out}"
        );
        assert_eq!(count(r#"route="/health",method="OTHER",status="405""#).as_deref(), Some("2"), "{out}");
        assert!(!out.contains("FOO") && !out.contains("BAR"), "{out}");
        let seconds = r#"kv_http_request_seconds_count{route="/v1/kv/{*key}",method="PUT"} 4"#;
        assert!(out.lines().any(|l| l == seconds), "{out}");
    }
}
