//! The closed-loop workers, and the two HTTP dialects they speak: kv's API
//! and etcd's JSON gateway (the requests of each are tabled in the
//! [module docs](super)).
//!
//! A [`Worker`] keeps one request in flight: it sends it, waits for the
//! whole answer, records it, and sends the next. What does not change from
//! one request to the next (the bodies, the query strings, the endpoints)
//! is prepared once, in a [`Plan`] that all workers share. Before a run,
//! [`find_leader`] asks each endpoint whether it leads.
//!
//! A worker never panics on what a server sends: a transport error or an
//! unexpected status becomes a short, low-cardinality error name
//! (`"503 no_leader"`, `"timeout"`) that the report counts, and the worker
//! pauses for [`ERROR_PAUSE`] before its next request. A read of a key that
//! does not exist is a success ([`Answer::Missing`]), not an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use base64::Engine as _;
use kv_client::api::{codes, Consistency, JsonValue, PutRequest};
use kv_client::client::BearerToken;
use kv_client::tls::ClientTls;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Deserialize;

use super::conn::Conn;
use super::report::Tally;
use super::run::Schedule;
use super::{LoadConfig, Pool};

/// How long a worker pauses after a failed request before its next one, so
/// that an unreachable server does not turn the loop into a busy spin of
/// instant connection errors.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The HTTP dialect spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Kv,
    Etcd,
}

/// A read or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Write,
}

/// How a successful operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// A write took effect, or a read found a value.
    Done,
    /// A read of a key that does not exist.
    Missing,
}

/// The parts of every request that do not change from one to the next.
pub(super) struct Plan {
    protocol: Protocol,
    pub(super) write_bases: Vec<String>,
    pub(super) read_bases: Vec<String>,
    /// kv: the body of every put.
    kv_put_body: Bytes,
    /// kv: `?durability=...`.
    kv_write_query: String,
    /// kv: `consistency=...`.
    kv_consistency: &'static str,
    /// kv: reads send the session token.
    send_token: bool,
    /// etcd: the value, in base64.
    etcd_value_b64: String,
    /// etcd: serializable (not linearizable) reads.
    serializable: bool,
}

impl Plan {
    pub(super) fn new(
        cfg: &LoadConfig,
        protocol: Protocol,
        write_bases: Vec<String>,
        read_bases: Vec<String>,
    ) -> anyhow::Result<Plan> {
        let value = value_of_size(cfg.value_size);
        let put = PutRequest {
            value: JsonValue { value: Some(value.clone()), value_b64: None },
            ..PutRequest::default()
        };
        Ok(Plan {
            protocol,
            write_bases,
            read_bases,
            kv_put_body: Bytes::from(serde_json::to_vec(&put).context("encoding the put body")?),
            kv_write_query: format!("?durability={}", cfg.durability.name()),
            kv_consistency: match cfg.consistency {
                Consistency::Linearizable => "linearizable",
                Consistency::Session => "session",
                Consistency::Stale => "stale",
            },
            send_token: cfg.consistency == Consistency::Session,
            etcd_value_b64: b64(value.as_bytes()),
            serializable: cfg.consistency != Consistency::Linearizable,
        })
    }
}

/// How a worker reaches its endpoints.
enum Http {
    /// Through reqwest (`--pool shared` or `per-client`).
    Pooled { client: reqwest::Client, write_base: String, read_base: String },
    /// On connections of its own (`--pool connection`); `read` is `None`
    /// when reads go where writes go. Boxed: hyper's connection state is
    /// large.
    Own { write: Box<Conn>, read: Option<Box<Conn>> },
}

/// Which of a worker's endpoints a request goes to.
#[derive(Clone, Copy)]
enum Side {
    Write,
    Read,
}

impl Http {
    /// Sends one request and reads the whole answer.
    async fn send(
        &mut self,
        side: Side,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), String> {
        match self {
            Http::Pooled { client, write_base, read_base } => {
                let base = match side {
                    Side::Write => write_base,
                    Side::Read => read_base,
                };
                let mut req = client.request(method, format!("{base}{path}"));
                if let Some(body) = body {
                    req = req.header(CONTENT_TYPE, "application/json").body(body);
                }
                let resp = req.send().await.map_err(request_error)?;
                let status = resp.status().as_u16();
                Ok((status, resp.bytes().await.map_err(request_error)?))
            }
            Http::Own { write, read } => {
                let conn = match (side, read) {
                    (Side::Read, Some(read)) => read,
                    _ => write,
                };
                conn.send(method, path, body).await
            }
        }
    }
}

/// One closed-loop client.
pub(super) struct Worker {
    http: Http,
    plan: Arc<Plan>,
    rng: StdRng,
    /// kv: the highest log index seen, the session token for session reads.
    token: u64,
}

/// One worker per client; worker i sends to endpoint i mod n of its route.
pub(super) fn workers(
    cfg: &LoadConfig,
    http: &reqwest::Client,
    plan: &Arc<Plan>,
) -> anyhow::Result<Vec<Worker>> {
    let mut seeds = StdRng::seed_from_u64(cfg.seed);
    (0..cfg.clients)
        .map(|i| {
            let write_base = &plan.write_bases[i % plan.write_bases.len()];
            let read_base = &plan.read_bases[i % plan.read_bases.len()];
            let pooled = |client| Http::Pooled {
                client,
                write_base: write_base.clone(),
                read_base: read_base.clone(),
            };
            let http = match cfg.pool {
                Pool::Shared => pooled(http.clone()),
                Pool::PerClient => {
                    pooled(http_client(cfg.request_timeout, cfg.token.as_ref(), cfg.tls.as_ref())?)
                }
                Pool::Connection => {
                    let conn = |base| -> anyhow::Result<Box<Conn>> {
                        Ok(Box::new(Conn::new(
                            base,
                            cfg.request_timeout,
                            cfg.token.as_ref(),
                            cfg.tls.as_ref(),
                        )?))
                    };
                    Http::Own {
                        write: conn(write_base)?,
                        read: if read_base == write_base { None } else { Some(conn(read_base)?) },
                    }
                }
            };
            Ok(Worker { http, plan: plan.clone(), rng: StdRng::seed_from_u64(seeds.gen()), token: 0 })
        })
        .collect()
}

/// The name of key number `i`.
pub(super) fn key_name(i: u64) -> String {
    format!("bench-{i:08}")
}

/// A printable value of `size` bytes.
pub(super) fn value_of_size(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size).map(|i| char::from(ALPHABET[i % ALPHABET.len()])).collect()
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// etcd's JSON gateway body for a put.
fn etcd_put_body(key: &str, value_b64: &str) -> String {
    format!(r#"{{"key":"{}","value":"{value_b64}"}}"#, b64(key.as_bytes()))
}

/// etcd's JSON gateway body for a read of one key.
fn etcd_range_body(key: &str, serializable: bool) -> String {
    format!(r#"{{"key":"{}","serializable":{serializable}}}"#, b64(key.as_bytes()))
}

/// The `index` field of a kv answer (success or error), if any.
#[derive(Deserialize)]
struct Indexed {
    index: Option<u64>,
}

/// The part of etcd's range answer that says whether the key exists.
#[derive(Deserialize)]
struct RangeAnswer {
    #[serde(default)]
    kvs: Vec<serde::de::IgnoredAny>,
}

/// A short, low-cardinality name for a failed HTTP answer: the status and
/// the body's `error` field (kv's code, or etcd's gateway message).
fn http_error(status: u16, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    match detail {
        Some(d) => format!("{status} {}", d.chars().take(80).collect::<String>()),
        None => format!("{status}"),
    }
}

fn request_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        e.without_url().to_string()
    }
}

impl Worker {
    /// Sends one operation on `key` and waits for the whole answer.
    async fn request(&mut self, op: Op, key: u64) -> Result<Answer, String> {
        let plan = &*self.plan;
        let name = key_name(key);
        let (side, method, path, body) = match (plan.protocol, op) {
            (Protocol::Kv, Op::Write) => (
                Side::Write,
                Method::PUT,
                format!("/v1/kv/{name}{}", plan.kv_write_query),
                Some(plan.kv_put_body.clone()),
            ),
            (Protocol::Kv, Op::Read) => {
                let path = if plan.send_token {
                    format!("/v1/kv/{name}?consistency={}&token={}", plan.kv_consistency, self.token)
                } else {
                    format!("/v1/kv/{name}?consistency={}", plan.kv_consistency)
                };
                (Side::Read, Method::GET, path, None)
            }
            (Protocol::Etcd, Op::Write) => (
                Side::Write,
                Method::POST,
                "/v3/kv/put".to_owned(),
                Some(Bytes::from(etcd_put_body(&name, &plan.etcd_value_b64))),
            ),
            (Protocol::Etcd, Op::Read) => (
                Side::Read,
                Method::POST,
                "/v3/kv/range".to_owned(),
                Some(Bytes::from(etcd_range_body(&name, plan.serializable))),
            ),
        };
        let (status, body) = self.http.send(side, method, &path, body).await?;
        match plan.protocol {
            Protocol::Kv => {
                let missing = status == 404
                    && op == Op::Read
                    && serde_json::from_slice::<kv_client::api::ErrorBody>(&body)
                        .is_ok_and(|e| e.error == codes::KEY_NOT_FOUND);
                if !(200..300).contains(&status) && !missing {
                    return Err(http_error(status, &body));
                }
                if plan.send_token {
                    if let Ok(Indexed { index: Some(index) }) = serde_json::from_slice(&body) {
                        self.token = self.token.max(index);
                    }
                }
                Ok(if missing { Answer::Missing } else { Answer::Done })
            }
            Protocol::Etcd => {
                if !(200..300).contains(&status) {
                    return Err(http_error(status, &body));
                }
                if op == Op::Read {
                    let answer: RangeAnswer =
                        serde_json::from_slice(&body).map_err(|_| "undecodable range answer".to_owned())?;
                    if answer.kvs.is_empty() {
                        return Ok(Answer::Missing);
                    }
                }
                Ok(Answer::Done)
            }
        }
    }

    /// Writes keys `first, first + step, ...` once each; returns the
    /// number of failed writes.
    pub(super) async fn prefill(&mut self, first: u64, step: u64, keys: u64, done: &AtomicU64) -> u64 {
        let mut failed = 0;
        let mut key = first;
        while key < keys {
            if self.request(Op::Write, key).await.is_err() {
                failed += 1;
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            done.fetch_add(1, Ordering::Relaxed);
            key += step;
        }
        failed
    }

    /// The closed loop: runs until the schedule says stop.
    pub(super) async fn run(mut self, read_ratio: f64, keys: u64, sched: Arc<Schedule>) -> Tally {
        let mut tally = Tally::default();
        loop {
            let start = Instant::now();
            if sched.deadline.is_some_and(|d| start >= d) {
                break;
            }
            let measured = start >= sched.measure_start;
            if let (true, Some(budget)) = (measured, sched.budget) {
                if sched.claimed.fetch_add(1, Ordering::Relaxed) >= budget {
                    break;
                }
            }
            let op = if read_ratio > 0.0 && self.rng.gen_bool(read_ratio) { Op::Read } else { Op::Write };
            let key = self.rng.gen_range(0..keys);
            let result = self.request(op, key).await;
            let end = Instant::now();
            if measured {
                tally.record(op, &result, end - start);
                tally.last_end = Some(end);
                sched.finished.fetch_add(1, Ordering::Relaxed);
                if result.is_err() {
                    sched.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if result.is_err() {
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
        tally
    }
}

/// Finds the endpoint that says it is the leader, retrying for a few
/// seconds while an election may be under way.
pub(super) async fn find_leader(
    http: &reqwest::Client,
    protocol: Protocol,
    bases: &[String],
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut notes = Vec::new();
        for base in bases {
            match is_leader(http, protocol, base).await {
                Ok(true) => return Ok(base.clone()),
                Ok(false) => notes.push(format!("{base}: not the leader")),
                Err(e) => notes.push(format!("{base}: {e:#}")),
            }
        }
        if Instant::now() >= deadline {
            bail!("no endpoint says it is the leader ({})", notes.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn is_leader(http: &reqwest::Client, protocol: Protocol, base: &str) -> anyhow::Result<bool> {
    Ok(super::cluster::node_view(http, protocol, base).await?.is_leader)
}

/// An HTTP client for the load, sending `token` (if any) as a bearer token
/// with every request, and speaking HTTPS with `tls` (if any).
pub(super) fn http_client(
    timeout: Duration,
    token: Option<&BearerToken>,
    tls: Option<&ClientTls>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(reqwest::header::AUTHORIZATION, token.header_value()?);
    }
    kv_client::tls::http_client_builder(tls)
        .default_headers(headers)
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_bodies_carry_key_and_value_in_base64() {
        let put: serde_json::Value = serde_json::from_str(&etcd_put_body("bench-00000007", "dmFs")).unwrap();
        assert_eq!(put["key"], b64(b"bench-00000007"));
        assert_eq!(put["value"], "dmFs");
        let range: serde_json::Value = serde_json::from_str(&etcd_range_body("k", true)).unwrap();
        assert_eq!(range["key"], b64(b"k"));
        assert_eq!(range["serializable"], true);
    }

    #[test]
    fn values_have_the_asked_size_and_keys_sort_by_number() {
        assert_eq!(value_of_size(0), "");
        assert_eq!(value_of_size(256).len(), 256);
        assert!(key_name(9) < key_name(10));
    }

    #[test]
    fn error_names_keep_the_code_and_drop_the_rest() {
        let kv = br#"{"error":"no_leader","message":"node 2 ...","retryable":true}"#;
        assert_eq!(http_error(503, kv), "503 no_leader");
        let etcd = br#"{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}"#;
        assert_eq!(http_error(503, etcd), "503 etcdserver: request timed out");
        assert_eq!(http_error(502, b"<html>"), "502");
    }
}
