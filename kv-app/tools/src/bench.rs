//! `kvctl bench`: a closed-loop load generator for the KV service, which can
//! drive etcd too, so that both systems are measured by the same code.
//!
//! # How it measures
//!
//! `--clients N` workers each run a closed loop with one request in flight:
//! pick an operation (a read with probability `--read-ratio`, else a write)
//! and a key drawn uniformly from `--keys`, send the request, wait for the
//! whole answer, repeat. A run has up to three phases:
//!
//! 1. prefill (`--prefill`, not measured): every key is written once, so
//!    that reads find values;
//! 2. warm-up (`--warmup` seconds, not recorded): connections are opened and
//!    the servers reach a steady state;
//! 3. the measured phase: `--duration` seconds, or `--ops` operations.
//!
//! * **Latency** runs from just before a request is sent until the last byte
//!   of its answer has arrived. Each worker records it in microseconds in its
//!   own HDR histogram (3 significant digits); they are merged at the end.
//! * **Throughput** is the number of operations that started in the
//!   measured phase and succeeded, divided by the time from the start of
//!   that phase until the last of them finished.
//! * **CPU per operation**: the generator's own CPU time (and, with
//!   `--server-pids`, the servers'), read from `/proc/PID/stat` at the
//!   start and the end of the measured phase, divided by the operations.
//!
//! A closed loop under-reports latency when the server stalls: a stalled
//! worker sends nothing, so the requests a real client would have queued
//! meanwhile never happen ("coordinated omission"). The percentiles are
//! those of the service time at the throughput reached, not of an open
//! arrival rate. etcd's own `benchmark` tool measures the same way.
//!
//! # Targets
//!
//! | `--target` | write | linearizable read | session / stale read |
//! |---|---|---|---|
//! | `kv` | `PUT /v1/kv/{key}?durability=…` `{"value": …}` | `GET /v1/kv/{key}?consistency=linearizable` | `GET …?consistency=session&token=T` (T: the highest index this worker has seen), or `stale` |
//! | `etcd` | `POST /v3/kv/put` `{"key": b64, "value": b64}` | `POST /v3/kv/range` `{"key": b64, "serializable": false}` | the same with `"serializable": true` |
//! | `null` | the `kv` protocol against an [instant server](instant_router) started in this process | | |
//!
//! etcd's reads are either linearizable or serializable (any member's local
//! state, without a session guarantee), so `session` and `stale` both map to
//! serializable. etcd acknowledges a put once it is committed on a majority;
//! `--durability all` is refused for it.
//!
//! `--writes-to` and `--reads-to` choose where requests go: `leader` (found
//! once, before the run: kv's `GET /v1/cluster/status`, etcd's
//! `POST /v3/maintenance/status`) or `spread` (worker i uses endpoint
//! i mod n; kv followers forward writes to the leader over HTTP, etcd
//! followers forward proposals over Raft).
//!
//! # Is the generator the bottleneck?
//!
//! `--target null` runs the generator against a server that answers every
//! request at once with a prepared body; `kvctl instant-server` serves the
//! same answers from a separate process (both protocols), which can be
//! pinned to another core with `taskset`. The throughput reached there is
//! the generator's ceiling on this machine.
//!
//! Shortcuts a production tool would not take: the leader is found once,
//! so a leader change during a run shows up as errors (or as forwarded
//! writes on kv); every write carries the same value; and kv writes do not
//! use exactly-once sessions (`client_id`/`seq`), as etcd's puts have none
//! either.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kv_client::api::{codes, Consistency, Durability, JsonValue, PutRequest, StatusResponse};
use kv_client::client::normalize_endpoint;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

/// How long a worker pauses after a failed request before its next one, so
/// that an unreachable server does not turn the loop into a busy spin of
/// instant connection errors.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// `/proc/PID/stat` counts CPU time in clock ticks of 1/100 s (`USER_HZ`,
/// fixed at 100 in Linux's user-space ABI): 10 ms each.
const TICK_MS: u64 = 10;

/// The measured phase's length when neither `--duration` nor `--ops` is
/// given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The system under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A kv-server cluster, through its HTTP API.
    Kv,
    /// An etcd cluster, through its JSON gateway (`/v3/kv/...`).
    Etcd,
    /// An instant server started in this process (the kv protocol).
    Null,
}

impl Target {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Kv => "kv",
            Target::Etcd => "etcd",
            Target::Null => "null",
        }
    }
}

/// Where a kind of request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// To the leader, found before the run.
    Leader,
    /// Worker i to endpoint i mod n.
    Spread,
}

/// How workers share HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// One HTTP client, whose keep-alive pool all workers share.
    Shared,
    /// One HTTP client (and so one connection per endpoint) per worker.
    PerClient,
}

/// `kvctl bench`'s own options. The endpoints, `--consistency`,
/// `--durability`, `--timeout` (per request here) and `--json` are
/// kvctl's global options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to load: kv (a kv-server cluster), etcd (its JSON gateway at
    /// --endpoints), or null (an instant server in this process: the
    /// generator's own ceiling).
    #[arg(long, value_enum, default_value_t = Target::Kv)]
    pub target: Target,
    /// Concurrent clients, each a closed loop with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Measured seconds, after the warm-up [default: 10 unless --ops].
    #[arg(long, value_parser = parse_positive_seconds, conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Measure this many operations instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds_or_zero)]
    pub warmup: f64,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 65_536)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of operations that are reads, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Where writes go: the leader, or spread over the endpoints (kv
    /// followers forward them).
    #[arg(long, value_enum, default_value_t = Route::Leader)]
    pub writes_to: Route,
    /// Where reads go: the leader, or spread over the endpoints.
    #[arg(long, value_enum, default_value_t = Route::Spread)]
    pub reads_to: Route,
    /// Write every key once before the warm-up (not measured), so that
    /// reads find values.
    #[arg(long)]
    pub prefill: bool,
    /// HTTP keep-alive pooling: one pool shared by all clients, or one
    /// HTTP client per bench client.
    #[arg(long, value_enum, default_value_t = Pool::Shared)]
    pub pool: Pool,
    /// Async runtime threads [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Processes whose CPU time to measure over the measured phase
    /// (Linux), reported as server CPU per operation.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Seed for the keys and the read/write mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio from 0 to 1")),
    }
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations.
    Ops(u64),
}

/// Everything a run needs. [`BenchArgs::config`] builds one from the
/// command line; tests build one with [`LoadConfig::new`].
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The system under load.
    pub target: Target,
    /// Its HTTP endpoints (ignored for [`Target::Null`]).
    pub endpoints: Vec<String>,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// When the measured phase ends.
    pub stop: Stop,
    /// Unrecorded load before measuring.
    pub warmup: Duration,
    /// The key space.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// Read consistency.
    pub consistency: Consistency,
    /// Write durability (kv only).
    pub durability: Durability,
    /// Where writes go.
    pub writes_to: Route,
    /// Where reads go.
    pub reads_to: Route,
    /// Write every key once before the warm-up.
    pub prefill: bool,
    /// Connection pooling.
    pub pool: Pool,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Processes whose CPU time to report.
    pub server_pids: Vec<u32>,
    /// Random seed.
    pub seed: u64,
    /// Draw a progress bar on stderr (only ever when it is a terminal).
    pub progress: bool,
}

impl LoadConfig {
    /// A write-only load of 16 clients for one second, no warm-up, default
    /// key space and value size.
    pub fn new(target: Target, endpoints: Vec<String>) -> Self {
        LoadConfig {
            target,
            endpoints,
            clients: 16,
            stop: Stop::After(Duration::from_secs(1)),
            warmup: Duration::ZERO,
            keys: 65_536,
            value_size: 256,
            read_ratio: 0.0,
            consistency: Consistency::Linearizable,
            durability: Durability::Majority,
            writes_to: Route::Leader,
            reads_to: Route::Spread,
            prefill: false,
            pool: Pool::Shared,
            request_timeout: Duration::from_secs(30),
            server_pids: Vec::new(),
            seed: 1,
            progress: false,
        }
    }
}

impl BenchArgs {
    /// The run these options, with kvctl's global ones, describe.
    pub fn config(
        &self,
        endpoints: &[String],
        consistency: Consistency,
        durability: Durability,
        request_timeout: Duration,
    ) -> anyhow::Result<LoadConfig> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.ops == Some(0) {
            bail!("--ops must be at least 1");
        }
        if self.target == Target::Etcd && durability == Durability::All {
            bail!("etcd acknowledges a put once a majority has it; --durability all is for kv only");
        }
        let stop = match (self.ops, self.duration) {
            (Some(n), _) => Stop::Ops(n),
            (None, Some(s)) => Stop::After(Duration::from_secs_f64(s)),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        Ok(LoadConfig {
            target: self.target,
            endpoints: endpoints.to_vec(),
            clients: self.clients,
            stop,
            warmup: Duration::from_secs_f64(self.warmup),
            keys: self.keys,
            value_size: self.value_size,
            read_ratio: self.read_ratio,
            consistency,
            durability,
            writes_to: self.writes_to,
            reads_to: self.reads_to,
            prefill: self.prefill,
            pool: self.pool,
            request_timeout,
            server_pids: self.server_pids.clone(),
            seed: self.seed,
            progress: true,
        })
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The slowest operation.
    pub max: u64,
    /// The mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds (all zero if empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What a run measured, and under which settings. `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The system under load.
    pub target: Target,
    /// The endpoints writes went to.
    pub write_endpoints: Vec<String>,
    /// The endpoints reads went to.
    pub read_endpoints: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// The key space.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Fraction of reads asked for.
    pub read_ratio: f64,
    /// Read consistency (for etcd: linearizable, else serializable).
    pub consistency: Consistency,
    /// Write durability.
    pub durability: Durability,
    /// Connection pooling.
    pub pool: Pool,
    /// Seconds of unrecorded warm-up.
    pub warmup_s: f64,
    /// Seconds from the start of the measured phase until its last
    /// operation finished.
    pub elapsed_s: f64,
    /// Operations that succeeded (reads + writes).
    pub ops: u64,
    /// Reads that succeeded (including those of missing keys).
    pub reads: u64,
    /// Writes that succeeded.
    pub writes: u64,
    /// Reads that found no value.
    pub missing: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Failures by kind (`"503 no_leader"`, `"timeout"`, ...).
    pub error_kinds: BTreeMap<String, u64>,
    /// `ops / elapsed_s`.
    pub ops_per_sec: f64,
    /// Latency of every successful operation.
    pub latency_us: Latency,
    /// Latency of the reads, if there were any.
    pub read_latency_us: Option<Latency>,
    /// Latency of the writes, if there were any.
    pub write_latency_us: Option<Latency>,
    /// The generator's CPU time per operation (Linux only; with
    /// `--target null` it includes the instant server's).
    pub client_cpu_us_per_op: Option<f64>,
    /// The generator's CPU use, in cores.
    pub client_cpu_cores: Option<f64>,
    /// The `--server-pids`' CPU time per operation, summed.
    pub server_cpu_us_per_op: Option<f64>,
    /// The `--server-pids`' CPU use, in cores.
    pub server_cpu_cores: Option<f64>,
    /// Prefill writes that failed.
    pub prefill_errors: u64,
}

/// The HTTP dialect spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Kv,
    Etcd,
}

/// A read or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// How a successful operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A write took effect, or a read found a value.
    Done,
    /// A read of a key that does not exist.
    Missing,
}

/// The parts of every request that do not change from one to the next.
struct Plan {
    protocol: Protocol,
    write_bases: Vec<String>,
    read_bases: Vec<String>,
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

/// When the measured phase starts and ends, and the counters the workers
/// and the progress bar share.
struct Schedule {
    measure_start: Instant,
    deadline: Option<Instant>,
    budget: Option<u64>,
    /// Measured operations claimed so far (for `Stop::Ops`).
    claimed: AtomicU64,
    /// Measured operations finished, successful or not.
    finished: AtomicU64,
    /// Measured operations that failed.
    failed: AtomicU64,
}

/// One closed-loop client.
struct Worker {
    http: reqwest::Client,
    plan: Arc<Plan>,
    write_base: String,
    read_base: String,
    rng: StdRng,
    /// kv: the highest log index seen, the session token for session reads.
    token: u64,
}

/// One worker's measurements.
#[derive(Default)]
struct Tally {
    reads: Option<Histogram<u64>>,
    writes: Option<Histogram<u64>>,
    read_count: u64,
    write_count: u64,
    missing: u64,
    errors: BTreeMap<String, u64>,
    last_end: Option<Instant>,
}

/// A histogram of microseconds that grows to whatever latencies arrive.
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("invariant: 3 significant digits is a valid precision")
}

/// Records `latency` in microseconds. `record` grows an auto-resizing
/// histogram; `saturating_record` would instead clamp to its current
/// range, which starts at about 2 ms.
fn record(h: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
    if h.record(micros).is_err() {
        h.saturating_record(micros);
    }
}

impl Tally {
    fn record(&mut self, op: Op, result: &Result<Answer, String>, latency: Duration) {
        match result {
            Ok(answer) => {
                let (count, h) = match op {
                    Op::Read => (&mut self.read_count, &mut self.reads),
                    Op::Write => (&mut self.write_count, &mut self.writes),
                };
                *count += 1;
                record(h.get_or_insert_with(histogram), latency);
                if *answer == Answer::Missing {
                    self.missing += 1;
                }
            }
            Err(kind) => *self.errors.entry(kind.clone()).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in [(&mut self.reads, other.reads), (&mut self.writes, other.writes)] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(histogram)
                    .add(theirs)
                    .expect("invariant: auto-resizing histograms accept any value");
            }
        }
        self.read_count += other.read_count;
        self.write_count += other.write_count;
        self.missing += other.missing;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.last_end = self.last_end.max(other.last_end);
    }
}

/// The name of key number `i`.
fn key_name(i: u64) -> String {
    format!("bench-{i:08}")
}

/// A printable value of `size` bytes.
fn value_of_size(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size).map(|i| char::from(ALPHABET[i % ALPHABET.len()])).collect()
}

fn b64(bytes: &[u8]) -> String {
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
        let req = match (plan.protocol, op) {
            (Protocol::Kv, Op::Write) => self
                .http
                .put(format!("{}/v1/kv/{name}{}", self.write_base, plan.kv_write_query))
                .header(CONTENT_TYPE, "application/json")
                .body(plan.kv_put_body.clone()),
            (Protocol::Kv, Op::Read) => {
                let url = if plan.send_token {
                    format!(
                        "{}/v1/kv/{name}?consistency={}&token={}",
                        self.read_base, plan.kv_consistency, self.token
                    )
                } else {
                    format!("{}/v1/kv/{name}?consistency={}", self.read_base, plan.kv_consistency)
                };
                self.http.get(url)
            }
            (Protocol::Etcd, Op::Write) => self
                .http
                .post(format!("{}/v3/kv/put", self.write_base))
                .header(CONTENT_TYPE, "application/json")
                .body(etcd_put_body(&name, &plan.etcd_value_b64)),
            (Protocol::Etcd, Op::Read) => self
                .http
                .post(format!("{}/v3/kv/range", self.read_base))
                .header(CONTENT_TYPE, "application/json")
                .body(etcd_range_body(&name, plan.serializable)),
        };
        let resp = req.send().await.map_err(request_error)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(request_error)?;
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
    async fn prefill(&mut self, first: u64, step: u64, keys: u64, done: &AtomicU64) -> u64 {
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
    async fn run(mut self, read_ratio: f64, keys: u64, sched: Arc<Schedule>) -> Tally {
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
async fn find_leader(http: &reqwest::Client, protocol: Protocol, bases: &[String]) -> anyhow::Result<String> {
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
    let request = match protocol {
        Protocol::Kv => http.get(format!("{base}/v1/cluster/status")),
        Protocol::Etcd => http
            .post(format!("{base}/v3/maintenance/status"))
            .header(CONTENT_TYPE, "application/json")
            .body("{}"),
    };
    let status: serde_json::Value =
        request.send().await?.error_for_status()?.json().await.context("decoding the status")?;
    Ok(match protocol {
        Protocol::Kv => status.get("role").and_then(|r| r.as_str()) == Some("leader"),
        Protocol::Etcd => {
            // The gateway renders 64-bit ids as JSON strings.
            let id = |v: Option<&serde_json::Value>| match v {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let member = id(status.get("header").and_then(|h| h.get("member_id")));
            member.is_some() && member == id(status.get("leader"))
        }
    })
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

/// CPU time (user + system) that process `pid` ("self" for this one) has
/// used so far, from `/proc/PID/stat`; `None` where that cannot be read.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // after it, field 3 (the state) comes first, and utime and stime are
    // fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(TICK_MS * (utime + stime)))
}

/// The summed CPU time of several processes, if every one can be read.
fn cpu_time_of(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| cpu_time(&pid.to_string())).sum()
}

/// The progress bar: hidden unless asked for and stderr is a terminal.
fn progress_bar(cfg: &LoadConfig) -> ProgressBar {
    if !cfg.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("bench {}", cfg.target.name()));
    bar
}

/// Redraws `bar` every [`PROGRESS_TICK`] until `stop` is set.
fn spawn_ticker(
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    mut update: impl FnMut(&ProgressBar) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            update(&bar);
            tokio::time::sleep(PROGRESS_TICK).await;
        }
    })
}

/// Runs one load and returns what it measured. Needs a Tokio runtime with
/// timers and I/O; a multi-threaded one lets the generator use every core.
pub async fn run_load(cfg: &LoadConfig) -> anyhow::Result<Report> {
    let http = http_client(cfg.request_timeout)?;
    let mut instant_server = None;
    let (protocol, endpoints) = match cfg.target {
        Target::Null => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the instant server to 127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            instant_server = Some(tokio::spawn(serve_instant(listener, cfg.value_size)));
            (Protocol::Kv, vec![format!("http://{addr}")])
        }
        Target::Kv | Target::Etcd => {
            let endpoints = cfg
                .endpoints
                .iter()
                .map(|e| normalize_endpoint(e))
                .collect::<Result<Vec<_>, _>>()
                .context("bad --endpoints")?;
            if endpoints.is_empty() {
                bail!("no --endpoints given");
            }
            let protocol = if cfg.target == Target::Kv { Protocol::Kv } else { Protocol::Etcd };
            (protocol, endpoints)
        }
    };
    let result = run_against(cfg, &http, protocol, endpoints).await;
    if let Some(server) = instant_server {
        server.abort();
    }
    result
}

async fn run_against(
    cfg: &LoadConfig,
    http: &reqwest::Client,
    protocol: Protocol,
    endpoints: Vec<String>,
) -> anyhow::Result<Report> {
    let needs_leader = (cfg.writes_to == Route::Leader && (cfg.read_ratio < 1.0 || cfg.prefill))
        || (cfg.reads_to == Route::Leader && cfg.read_ratio > 0.0);
    let leader = if needs_leader && endpoints.len() > 1 {
        Some(find_leader(http, protocol, &endpoints).await?)
    } else {
        None
    };
    let route = |r: Route| match (r, &leader) {
        (Route::Leader, Some(l)) => vec![l.clone()],
        _ => endpoints.clone(),
    };
    let plan = Arc::new(Plan::new(cfg, protocol, route(cfg.writes_to), route(cfg.reads_to))?);
    let mut workers = workers(cfg, http, &plan)?;

    let bar = progress_bar(cfg);
    let prefill_errors = if cfg.prefill { prefill(cfg, &bar, &mut workers).await? } else { 0 };

    let measure_start = Instant::now() + cfg.warmup;
    let sched = Arc::new(Schedule {
        measure_start,
        deadline: match cfg.stop {
            Stop::After(d) => Some(measure_start + d),
            Stop::Ops(_) => None,
        },
        budget: match cfg.stop {
            Stop::Ops(n) => Some(n),
            Stop::After(_) => None,
        },
        claimed: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let stop_ticker = Arc::new(AtomicBool::new(false));
    let ticker = spawn_measure_ticker(cfg, &bar, &sched, &stop_ticker);
    let handles: Vec<_> =
        workers.into_iter().map(|w| tokio::spawn(w.run(cfg.read_ratio, cfg.keys, sched.clone()))).collect();
    // Sample CPU time as close to the start of the measured phase as we can.
    tokio::time::sleep_until(measure_start.into()).await;
    let cpu_start = Cpu::now(&cfg.server_pids);
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(h.await.context("a bench worker panicked")?);
    }
    let cpu_end = Cpu::now(&cfg.server_pids);
    stop_ticker.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();

    let elapsed = match (tally.last_end, sched.deadline) {
        (Some(end), _) => end.saturating_duration_since(measure_start),
        (None, Some(deadline)) => deadline - measure_start,
        (None, None) => Duration::ZERO,
    };
    Ok(report(cfg, &plan, tally, elapsed, (cpu_start, cpu_end), prefill_errors))
}

impl Plan {
    fn new(
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
            kv_write_query: match cfg.durability {
                Durability::Majority => "?durability=majority".into(),
                Durability::All => "?durability=all".into(),
            },
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

/// One worker per client; worker i sends to endpoint i mod n of its route.
fn workers(cfg: &LoadConfig, http: &reqwest::Client, plan: &Arc<Plan>) -> anyhow::Result<Vec<Worker>> {
    let mut seeds = StdRng::seed_from_u64(cfg.seed);
    (0..cfg.clients)
        .map(|i| {
            let http = match cfg.pool {
                Pool::Shared => http.clone(),
                Pool::PerClient => http_client(cfg.request_timeout)?,
            };
            Ok(Worker {
                http,
                write_base: plan.write_bases[i % plan.write_bases.len()].clone(),
                read_base: plan.read_bases[i % plan.read_bases.len()].clone(),
                plan: plan.clone(),
                rng: StdRng::seed_from_u64(seeds.gen()),
                token: 0,
            })
        })
        .collect()
}

/// Shows the warm-up, then the measured phase's progress and rate.
fn spawn_measure_ticker(
    cfg: &LoadConfig,
    bar: &ProgressBar,
    sched: &Arc<Schedule>,
    stop_ticker: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (sched, warmup, stop) = (sched.clone(), cfg.warmup, cfg.stop);
    match stop {
        Stop::After(d) => bar.set_length((warmup + d).as_millis() as u64),
        Stop::Ops(n) => bar.set_length(n),
    }
    spawn_ticker(bar.clone(), stop_ticker.clone(), move |bar| {
        let now = Instant::now();
        if now < sched.measure_start {
            let done = warmup.saturating_sub(sched.measure_start - now);
            if let Stop::After(_) = stop {
                bar.set_position(done.as_millis() as u64);
            }
            bar.set_message(format!("warm-up {:.1}/{:.1} s", done.as_secs_f64(), warmup.as_secs_f64()));
            return;
        }
        let elapsed = now - sched.measure_start;
        let finished = sched.finished.load(Ordering::Relaxed);
        let failed = sched.failed.load(Ordering::Relaxed);
        let rate = finished.saturating_sub(failed) as f64 / elapsed.as_secs_f64().max(1e-3);
        match stop {
            Stop::After(_) => bar.set_position((warmup + elapsed).as_millis() as u64),
            Stop::Ops(_) => bar.set_position(finished),
        }
        bar.set_message(format!(
            "{:.1} s, {} ops/s, {failed} errors",
            elapsed.as_secs_f64(),
            thousands(rate.round() as u64)
        ));
    })
}

/// CPU time used so far by this process and by the servers, where readable.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    generator: Option<Duration>,
    servers: Option<Duration>,
}

impl Cpu {
    fn now(server_pids: &[u32]) -> Cpu {
        Cpu { generator: cpu_time("self"), servers: cpu_time_of(server_pids) }
    }
}

/// Puts the measurements together.
fn report(
    cfg: &LoadConfig,
    plan: &Plan,
    tally: Tally,
    elapsed: Duration,
    (cpu_start, cpu_end): (Cpu, Cpu),
    prefill_errors: u64,
) -> Report {
    let elapsed_s = elapsed.as_secs_f64();
    let ops = tally.read_count + tally.write_count;
    let per_op = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if ops > 0 => Some(b.saturating_sub(a).as_secs_f64() * 1e6 / ops as f64),
        _ => None,
    };
    let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if elapsed_s > 0.0 => Some(b.saturating_sub(a).as_secs_f64() / elapsed_s),
        _ => None,
    };
    let mut all = histogram();
    for h in [&tally.reads, &tally.writes].into_iter().flatten() {
        all.add(h).expect("invariant: auto-resizing histograms accept any value");
    }
    Report {
        target: cfg.target,
        write_endpoints: plan.write_bases.clone(),
        read_endpoints: plan.read_bases.clone(),
        clients: cfg.clients,
        keys: cfg.keys,
        value_size: cfg.value_size,
        read_ratio: cfg.read_ratio,
        consistency: cfg.consistency,
        durability: cfg.durability,
        pool: cfg.pool,
        warmup_s: cfg.warmup.as_secs_f64(),
        elapsed_s,
        ops,
        reads: tally.read_count,
        writes: tally.write_count,
        missing: tally.missing,
        errors: tally.errors.values().sum(),
        error_kinds: tally.errors,
        ops_per_sec: if elapsed_s > 0.0 { ops as f64 / elapsed_s } else { 0.0 },
        latency_us: Latency::of(&all),
        read_latency_us: tally.reads.as_ref().map(Latency::of),
        write_latency_us: tally.writes.as_ref().map(Latency::of),
        client_cpu_us_per_op: per_op(cpu_start.generator, cpu_end.generator),
        client_cpu_cores: cores(cpu_start.generator, cpu_end.generator),
        server_cpu_us_per_op: per_op(cpu_start.servers, cpu_end.servers),
        server_cpu_cores: cores(cpu_start.servers, cpu_end.servers),
        prefill_errors,
    }
}

/// Writes every key once, `clients` at a time; returns the failed writes.
async fn prefill(cfg: &LoadConfig, bar: &ProgressBar, workers: &mut Vec<Worker>) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    bar.set_length(cfg.keys);
    let ticker = {
        let done = done.clone();
        spawn_ticker(bar.clone(), stop.clone(), move |bar| {
            bar.set_position(done.load(Ordering::Relaxed));
            bar.set_message("prefill");
        })
    };
    let step = workers.len() as u64;
    let handles: Vec<_> = workers
        .drain(..)
        .enumerate()
        .map(|(i, mut w)| {
            let (done, keys) = (done.clone(), cfg.keys);
            tokio::spawn(async move {
                let failed = w.prefill(i as u64, step, keys, &done).await;
                (w, failed)
            })
        })
        .collect();
    let mut failed = 0;
    for h in handles {
        let (w, f) = h.await.context("a prefill worker panicked")?;
        workers.push(w);
        failed += f;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    Ok(failed)
}

/// `n` with thousands separators: `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in microseconds, for humans: `850 µs`, `1.25 ms`, `2.10 s`.
fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

impl Report {
    /// The report for humans, several lines.
    pub fn human(&self) -> String {
        let consistency = match (self.target, self.consistency) {
            (_, Consistency::Linearizable) => "linearizable",
            (Target::Etcd, _) => "serializable",
            (_, Consistency::Session) => "session",
            (_, Consistency::Stale) => "stale",
        };
        let mut out = format!(
            "{}: {} clients, {:.1} s measured after {:.1} s warm-up; {} keys, {}-byte values, \
             {:.0}% reads ({consistency})\n",
            self.target.name(),
            self.clients,
            self.elapsed_s,
            self.warmup_s,
            thousands(self.keys),
            self.value_size,
            self.read_ratio * 100.0,
        );
        if self.read_ratio < 1.0 {
            out += &format!("writes to   {}\n", self.write_endpoints.join(", "));
        }
        if self.read_ratio > 0.0 {
            out += &format!("reads from  {}\n", self.read_endpoints.join(", "));
        }
        out += &format!(
            "ops         {} ({} writes, {} reads, {} of them missing), {} errors\n",
            thousands(self.ops),
            thousands(self.writes),
            thousands(self.reads),
            thousands(self.missing),
            thousands(self.errors)
        );
        out += &format!("throughput  {} ops/s\n", thousands(self.ops_per_sec.round() as u64));
        let line = |l: &Latency| {
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                micros(l.p50),
                micros(l.p90),
                micros(l.p99),
                micros(l.p999),
                micros(l.max)
            )
        };
        out += &format!("latency     {}\n", line(&self.latency_us));
        if let (Some(r), Some(w)) = (&self.read_latency_us, &self.write_latency_us) {
            out += &format!("  reads     {}\n  writes    {}\n", line(r), line(w));
        }
        let cpu = |per_op: Option<f64>, cores: Option<f64>| match (per_op, cores) {
            (Some(p), Some(c)) => Some(format!("{p:.0} µs/op ({c:.2} cores)")),
            _ => None,
        };
        let client = cpu(self.client_cpu_us_per_op, self.client_cpu_cores);
        let server = cpu(self.server_cpu_us_per_op, self.server_cpu_cores);
        match (client, server) {
            (Some(c), Some(s)) => out += &format!("cpu         generator {c}, servers {s}\n"),
            (Some(c), None) => out += &format!("cpu         generator {c}\n"),
            (None, Some(s)) => out += &format!("cpu         servers {s}\n"),
            (None, None) => {}
        }
        for (kind, n) in &self.error_kinds {
            out += &format!("error       {kind}: {}\n", thousands(*n));
        }
        if self.prefill_errors > 0 {
            out += &format!("prefill     {} writes failed\n", thousands(self.prefill_errors));
        }
        out
    }
}

/// Prepared answers of the instant server.
struct InstantAnswers {
    kv_status: Bytes,
    kv_read: Bytes,
    kv_write: Bytes,
    etcd_put: Bytes,
    etcd_range: Bytes,
    etcd_status: Bytes,
}

impl InstantAnswers {
    fn new(value_size: usize) -> Self {
        let value = value_of_size(value_size);
        let status = StatusResponse {
            id: 1,
            role: "leader".into(),
            term: 1,
            leader: Some(1),
            last_log_index: 1,
            committed_index: 1,
            applied_index: 1,
            checkpointed_index: 0,
            snapshot_index: None,
            purged_index: None,
            voters: vec![1],
            learners: Vec::new(),
            followers: Vec::new(),
            state_digest: String::new(),
        };
        let read = kv_client::api::ReadResponse {
            key: key_name(0),
            value: JsonValue { value: Some(value.clone()), value_b64: None },
            index: 1,
            node: 1,
            committed_index: 1,
        };
        InstantAnswers {
            kv_status: json(&status),
            kv_read: json(&read),
            kv_write: Bytes::from_static(br#"{"index":1,"node":1,"duplicate":false,"created":false}"#),
            etcd_put: Bytes::from_static(br#"{"header":{"member_id":"1","revision":"1","raft_term":"1"}}"#),
            etcd_range: Bytes::from(format!(
                r#"{{"header":{{"member_id":"1","revision":"1","raft_term":"1"}},"kvs":[{{"key":"{}","value":"{}","version":"1"}}],"count":"1"}}"#,
                b64(key_name(0).as_bytes()),
                b64(value.as_bytes())
            )),
            etcd_status: Bytes::from_static(br#"{"header":{"member_id":"1"},"leader":"1"}"#),
        }
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("invariant: API types always serialize"))
}

/// A server that answers both protocols' requests at once, with prepared
/// bodies: kv's `GET /v1/cluster/status`, `GET` and `PUT /v1/kv/{key}`, and
/// etcd's `POST /v3/kv/put`, `/v3/kv/range` and `/v3/maintenance/status`.
/// It reads each request's body, as a real server does, and nothing more.
pub fn instant_router(value_size: usize) -> axum::Router {
    let answers = InstantAnswers::new(value_size);
    // A handler that ignores the request (after reading its body) and
    // sends `body`.
    let reply = |body: Bytes| {
        move |_request: Bytes| {
            let body = body.clone();
            async move { ([(CONTENT_TYPE, "application/json")], body) }
        }
    };
    axum::Router::new()
        .route("/v1/cluster/status", get(reply(answers.kv_status)))
        .route("/v1/kv/{*key}", get(reply(answers.kv_read)).put(reply(answers.kv_write)))
        .route("/v3/kv/put", post(reply(answers.etcd_put)))
        .route("/v3/kv/range", post(reply(answers.etcd_range)))
        .route("/v3/maintenance/status", post(reply(answers.etcd_status)))
}

/// Serves [`instant_router`] on `listener` until the task is dropped.
pub async fn serve_instant(listener: tokio::net::TcpListener, value_size: usize) -> std::io::Result<()> {
    axum::serve(listener, instant_router(value_size)).await
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
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!((l.p50, l.p90, l.p99, l.p999, l.max), (500, 900, 990, 999, 1000));
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    // Regression: latencies were recorded with `saturating_record`, which
    // clamps to an auto-resizing histogram's current range instead of
    // growing it, so every latency over ~2 ms was lost and p50 read 2 µs.
    #[test]
    fn latencies_of_seconds_are_recorded_as_they_are() {
        let mut tally = Tally::default();
        for ms in [1, 50, 3_000] {
            tally.record(Op::Write, &Ok(Answer::Done), Duration::from_millis(ms));
        }
        let mut merged = Tally::default();
        merged.merge(tally);
        let l = Latency::of(merged.writes.as_ref().unwrap());
        assert_eq!(l.p50 / 1000, 50);
        assert!(l.max >= 3_000_000 && l.max < 3_010_000, "max {} µs", l.max);
    }

    #[test]
    fn tallies_merge_counts_histograms_and_errors() {
        let mut a = Tally::default();
        a.record(Op::Write, &Ok(Answer::Done), Duration::from_micros(100));
        a.record(Op::Read, &Err("503 no_leader".into()), Duration::from_micros(5));
        let mut b = Tally::default();
        b.record(Op::Read, &Ok(Answer::Missing), Duration::from_micros(300));
        b.record(Op::Read, &Err("503 no_leader".into()), Duration::from_micros(5));
        a.merge(b);
        assert_eq!((a.write_count, a.read_count, a.missing), (1, 1, 1));
        assert_eq!(a.errors["503 no_leader"], 2);
        assert_eq!(a.reads.unwrap().max(), 300);
        assert_eq!(a.writes.unwrap().len(), 1);
    }

    #[test]
    fn error_names_keep_the_code_and_drop_the_rest() {
        let kv = br#"{"error":"no_leader","message":"node 2 ...","retryable":true}"#;
        assert_eq!(http_error(503, kv), "503 no_leader");
        let etcd = br#"{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}"#;
        assert_eq!(http_error(503, etcd), "503 etcdserver: request timed out");
        assert_eq!(http_error(502, b"<html>"), "502");
    }

    #[test]
    fn cpu_time_reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(cpu_time("self").is_some());
            assert!(cpu_time_of(&[std::process::id()]).is_some());
        }
        assert_eq!(cpu_time_of(&[]), None);
    }

    #[test]
    fn thousands_and_micros_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(1_250), "1.25 ms");
        assert_eq!(micros(2_100_000), "2.10 s");
    }

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        <Wrap as clap::Parser>::try_parse_from(argv).unwrap().bench
    }

    #[test]
    fn options_become_a_config() {
        let timeout = Duration::from_secs(5);
        let endpoints = ["a:1".to_owned()];
        let c = args(&[]).config(&endpoints, Consistency::Session, Durability::All, timeout).unwrap();
        assert_eq!(c.stop, Stop::After(DEFAULT_DURATION));
        assert_eq!((c.clients, c.keys, c.value_size), (16, 65_536, 256));
        let c = args(&["--ops", "100", "--warmup", "0"])
            .config(&endpoints, Consistency::Stale, Durability::Majority, timeout)
            .unwrap();
        assert_eq!((c.stop, c.warmup), (Stop::Ops(100), Duration::ZERO));
        let etcd = args(&["--target", "etcd"]);
        assert!(etcd.config(&endpoints, Consistency::Linearizable, Durability::All, timeout).is_err());
        let none = args(&["--clients", "0"]);
        assert!(none.config(&endpoints, Consistency::Linearizable, Durability::Majority, timeout).is_err());
    }
}
