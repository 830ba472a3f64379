//! `kvctl bench watch`: how long a change takes to reach watchers, on kv
//! and on etcd, measured the same way.
//!
//! # What is measured
//!
//! For each system (`--target kv`, `etcd`, or `kv,etcd`), a fresh 3-node
//! cluster on this machine, and for each number of watchers in
//! `--watchers` (1, 100 and 1,000 by default):
//!
//! 1. that many watches are opened on one node (`--on follower`, the
//!    default, or `leader`), all on the prefix `bw/`: kv's
//!    `GET /v1/watch?prefix=bw/`, etcd's `POST /v3/watch` through its JSON
//!    gateway with the same range. A watch counts as open once the node has
//!    said so (kv: its first progress line; etcd: `"created": true`);
//! 2. the node's resident memory is read from `/proc/PID/status` before
//!    the watches open and once they all are;
//! 3. a writer sends puts to the leader at `--rate` per second, open loop
//!    (each on its own schedule, whether or not earlier ones were
//!    answered), for `--seconds`; each put writes its sequence number as
//!    the value, to one of 16 keys;
//! 4. for every put and every watcher, the **delivery latency** is the time
//!    from the arrival of the put's acknowledgement at the writer to the
//!    arrival of its event at the watcher. The writer and the watchers are
//!    tasks of this one process, so both instants come from one clock. An
//!    event may arrive before the acknowledgement (the node that serves the
//!    watch applies the change while the answer is on its way back): such a
//!    delivery counts as 0 and is reported as `before_ack`. A put whose
//!    event some watcher never received (within `--drain` seconds of the end, 2 by default) counts as
//!    `missed`.
//!
//! # Two probers
//!
//! The watchers are this process's own, so what they cost per delivery
//! is on the same two cores as the nodes, and narrows any gap between the
//! systems. Each row is measured with one of two probers (`--probers`,
//! both by default, one after the other on the same cluster):
//!
//! - `json`: each watcher is a request on reqwest's pooled client; every
//!   line is parsed into a JSON tree, and deliveries go into a shared list
//!   under a lock;
//! - `scan`: the watchers run on a thread of their own, on a
//!   single-threaded runtime; each holds one bare HTTP/1 connection
//!   (hyper's client connection, no pool), finds the value in each line's
//!   bytes without parsing the line, and keeps its deliveries to itself.
//!
//! Each row says what the generator (this whole process, writer included)
//! spent per delivery, in CPU microseconds, from `/proc/self/stat` over the
//! writing and the drain: the `scan` rows are the lighter generator.
//!
//! Both systems run with their defaults. The measurement is end to end:
//! it includes the leader's commit, the watch node's apply (a follower
//! learns of the commit with the next message from the leader), the
//! watch's fan-out to every watcher, and this process's own reading of
//! each stream. With 1,000 watchers in one process on a 2-core machine,
//! this generator's share of the cores is part of what is measured, for
//! both systems alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cluster::{self, Cluster, ClusterArgs, System, WorkDir};
use super::report::{histogram, record};

/// The prefix every watched key has.
const PREFIX: &str = "bw/";
/// Keys the writer spreads its puts over.
const KEYS: u64 = 16;
/// How long every watch may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the watchers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchOn {
    /// A follower (node 1 or 2, whichever does not lead).
    Follower,
    /// The leader.
    Leader,
}

/// How the watchers read their streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prober {
    /// reqwest, a JSON tree per line, one shared list.
    Json,
    /// One bare HTTP/1 connection each, values found in the bytes.
    Scan,
}

impl Prober {
    fn name(self) -> &'static str {
        match self {
            Prober::Json => "json",
            Prober::Scan => "scan",
        }
    }
}

/// `kvctl bench watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Numbers of watchers to measure with, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub watchers: Vec<usize>,
    /// Puts per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of puts per number of watchers.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The node the watchers connect to.
    #[arg(long, value_enum, default_value = "follower")]
    pub on: WatchOn,
    /// Seconds after the last put in which the watchers may still deliver;
    /// a put whose event a watcher has not received by then counts as
    /// missed.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// The probers to measure with, one after the other (see the module
    /// documentation).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "json,scan")]
    pub probers: Vec<Prober>,
}

/// One system and number of watchers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRow {
    pub system: System,
    #[serde(default = "json_prober")]
    pub prober: Prober,
    pub watchers: usize,
    /// Puts acknowledged.
    pub puts: u64,
    /// Puts that failed (not measured).
    pub failed_puts: u64,
    /// Why the first of them failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Deliveries measured (puts × watchers, less the missed ones).
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Deliveries that arrived before the put's acknowledgement.
    pub before_ack: u64,
    /// (put, watcher) pairs with no delivery.
    pub missed: u64,
    /// The watch node's resident memory before the watches opened, MiB.
    pub rss_before_mib: f64,
    /// And with every watch open, MiB.
    pub rss_watching_mib: f64,
    /// This process's CPU time (user and system) from the first put to
    /// the end of the drain, per delivery, in microseconds.
    #[serde(default)]
    pub generator_cpu_us: f64,
}

fn json_prober() -> Prober {
    Prober::Json
}

/// What `kvctl bench watch` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchReport {
    pub rate: f64,
    pub seconds: f64,
    #[serde(default)]
    pub drain: f64,
    pub on: WatchOn,
    pub cpus: usize,
    pub load_average: Option<f64>,
    pub rows: Vec<WatchRow>,
}

impl WatchReport {
    /// A Markdown table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} puts/s for {} s per row, then {} s for the last events; watchers on the {}; {} CPUs, load average {}\n\n",
            self.rate,
            self.seconds,
            self.drain,
            match self.on {
                WatchOn::Follower => "follower",
                WatchOn::Leader => "leader",
            },
            self.cpus,
            self.load_average.map_or("?".into(), |l| format!("{l:.2}")),
        );
        out.push_str(
            "| system | prober | watchers | puts | failed puts | deliveries | p50 ms | p99 ms | max ms | before ack | missed | RSS MiB before | RSS MiB watching | prober CPU µs/delivery |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
                r.system.name(),
                r.prober.name(),
                r.watchers,
                r.puts,
                r.failed_puts,
                r.deliveries,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.before_ack,
                r.missed,
                r.rss_before_mib,
                r.rss_watching_mib,
                r.generator_cpu_us
            ));
        }
        for r in self.rows.iter().filter(|r| r.first_failure.is_some()) {
            out.push_str(&format!(
                "\n{} ({}) with {} watchers: the first failed put: {}\n",
                r.system.name(),
                r.prober.name(),
                r.watchers,
                r.first_failure.as_deref().unwrap_or_default()
            ));
        }
        out
    }
}

/// Runs `kvctl bench watch`.
///
/// # Errors
/// If a cluster does not start, or a watch does not open.
pub async fn run_watch(args: &WatchArgs) -> anyhow::Result<WatchReport> {
    if args.rate <= 0.0 || args.seconds <= 0.0 || args.watchers.is_empty() || args.probers.is_empty() {
        bail!("--rate, --seconds, --watchers and --probers must be positive");
    }
    if !(0.0..=600.0).contains(&args.drain) {
        bail!("--drain must be between 0 and 600 seconds");
    }
    let targets = args.cluster.targets()?;
    let load_average = cluster::load_average();
    let workdir = WorkDir::new(args.cluster.dir.clone(), "kvctl-bench-watch")?;
    let http = reqwest_client()?;
    let mut rows = Vec::new();
    for &target in &targets {
        let dir = workdir.path.join(target.name());
        let options = args.cluster.options(None, false);
        let cluster = Cluster::up(target, &options, &dir).await?;
        let outcome = measure(&cluster, &http, args).await;
        cluster.down().await;
        rows.extend(
            outcome.with_context(|| format!("{} (data and logs in {})", target.name(), dir.display()))?,
        );
    }
    Ok(WatchReport {
        rate: args.rate,
        seconds: args.seconds,
        drain: args.drain,
        on: args.on,
        cpus: cluster::cpus(),
        load_average,
        rows,
    })
}

/// Plain HTTP to the clusters this command started; no overall timeout,
/// which would cut the watches (each put sets its own).
fn reqwest_client() -> anyhow::Result<reqwest::Client> {
    Ok(kv_client::tls::http_client_builder(None).no_proxy().pool_max_idle_per_host(64).build()?)
}

async fn measure(
    cluster: &Cluster,
    http: &reqwest::Client,
    args: &WatchArgs,
) -> anyhow::Result<Vec<WatchRow>> {
    let leader = cluster.leader(http).await?;
    let node = match args.on {
        WatchOn::Leader => leader,
        WatchOn::Follower => cluster.others(leader)[0],
    };
    let pid = cluster.pid(node).context("the watch node's pid")?;
    let mut rows = Vec::new();
    for &prober in &args.probers {
        for &n in &args.watchers {
            rows.push(one_row(cluster, http, args, prober, Watched { leader, node, pid }, n).await?);
        }
    }
    Ok(rows)
}

/// One watcher's deliveries: (sequence number, arrival).
type Arrivals = Vec<(u64, Instant)>;
/// A `json` watcher's deliveries, shared with the measurement.
type Deliveries = Arc<Mutex<Arrivals>>;

/// The leader, and the node whose watches are measured with its pid.
#[derive(Clone, Copy)]
struct Watched {
    leader: u64,
    node: u64,
    pid: u32,
}

async fn one_row(
    cluster: &Cluster,
    http: &reqwest::Client,
    args: &WatchArgs,
    prober: Prober,
    Watched { leader, node, pid }: Watched,
    n: usize,
) -> anyhow::Result<WatchRow> {
    let system = cluster.system();
    let rss_before = rss_mib(pid);
    let base = cluster.endpoint(node)?.to_string();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(n.max(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut json_watchers = tokio::task::JoinSet::new();
    let mut all: Vec<Deliveries> = Vec::with_capacity(n);
    let mut scan_thread = None;
    match prober {
        Prober::Json => {
            for _ in 0..n {
                let got: Deliveries = Arc::default();
                all.push(got.clone());
                json_watchers.spawn(watch_json(http.clone(), system, base.clone(), got, opened_tx.clone()));
            }
        }
        Prober::Scan => scan_thread = Some(scan_watchers(n, system, base, opened_tx.clone(), stop_rx)?),
    }
    drop(opened_tx);
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    for _ in 0..n {
        match tokio::time::timeout_at(deadline, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e.context("opening a watch")),
            _ => bail!("{n} watches did not all open within {OPEN_TIMEOUT:?}"),
        }
    }
    let rss_watching = rss_mib(pid);

    let cpu_before = own_cpu();
    let (acks, failed) = write(http, system, cluster.endpoint(leader)?, args).await;
    tokio::time::sleep(Duration::from_secs_f64(args.drain)).await;
    let cpu = own_cpu().saturating_sub(cpu_before);
    json_watchers.abort_all();
    let _ = stop_tx.send(true);
    let mut lists: Vec<Arrivals> = Vec::with_capacity(n);
    for got in &all {
        lists.push(std::mem::take(&mut *got.lock().unwrap_or_else(|e| e.into_inner())));
    }
    if let Some(thread) = scan_thread {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await?;
        lists.extend(joined.map_err(|_| anyhow::anyhow!("the scan watchers' thread panicked"))??);
    }

    let Delivered { hist, before_ack, missed, deliveries } = delivered(&acks, &lists);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(WatchRow {
        system,
        prober,
        watchers: n,
        puts: acks.len() as u64,
        failed_puts: failed.len() as u64,
        first_failure: failed.into_iter().next(),
        deliveries,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        before_ack,
        missed,
        rss_before_mib: rss_before,
        rss_watching_mib: rss_watching,
        generator_cpu_us: if deliveries == 0 { 0.0 } else { cpu.as_secs_f64() * 1e6 / deliveries as f64 },
    })
}

/// Every (put, watcher) pair, judged.
struct Delivered {
    /// Microseconds from each put's acknowledgement to its event.
    hist: Histogram<u64>,
    before_ack: u64,
    missed: u64,
    deliveries: u64,
}

fn delivered(acks: &HashMap<u64, Instant>, lists: &[Arrivals]) -> Delivered {
    let mut out = Delivered { hist: histogram(), before_ack: 0, missed: 0, deliveries: 0 };
    for got in lists {
        let arrived: HashMap<u64, Instant> = got.iter().copied().collect();
        for (seq, acked) in acks {
            match arrived.get(seq) {
                None => out.missed += 1,
                Some(at) => {
                    out.deliveries += 1;
                    if at < acked {
                        out.before_ack += 1;
                    }
                    record(&mut out.hist, at.saturating_duration_since(*acked));
                }
            }
        }
    }
    out
}

/// This process's CPU time so far, user and system, all threads, from
/// `/proc/self/stat` (in the kernel's 1/100 s ticks; zero if unreadable).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses: the
    // 14th and 15th of the line are user and system time.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// Puts at `args.rate` for `args.seconds`; returns each acknowledged
/// put's sequence number and the arrival of its acknowledgement, and why
/// each other put failed.
async fn write(
    http: &reqwest::Client,
    system: System,
    leader: &str,
    args: &WatchArgs,
) -> (HashMap<u64, Instant>, Vec<String>) {
    let acks: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let total = (args.rate * args.seconds).round() as u64;
    let start = tokio::time::Instant::now();
    let mut puts = tokio::task::JoinSet::new();
    for seq in 1..=total {
        tokio::time::sleep_until(start + interval * (seq as u32 - 1)).await;
        let (http, leader, acks) = (http.clone(), leader.to_string(), acks.clone());
        puts.spawn(async move {
            let key = format!("{PREFIX}{}", seq % KEYS);
            let value = seq.to_string();
            let req = match system {
                System::Kv => http.put(format!("{leader}/v1/kv/{key}")).json(&json!({ "value": value })),
                System::Etcd => http.post(format!("{leader}/v3/kv/put")).json(&json!({
                    "key": b64(key.as_bytes()),
                    "value": b64(value.as_bytes()),
                })),
            };
            let failure = match req.timeout(Duration::from_secs(5)).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Ok(_) if status.is_success() => {
                            acks.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, Instant::now());
                            return None;
                        }
                        Ok(body) => format!("{status}: {}", String::from_utf8_lossy(&body)),
                        Err(e) => format!("{status}: {e}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            Some(failure)
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = puts.join_next().await {
        if let Ok(Some(failure)) = done {
            failed.push(failure);
        }
    }
    let acks = acks.lock().unwrap_or_else(|e| e.into_inner());
    (acks.clone(), failed)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The key after every key with [`PREFIX`]: etcd's `range_end`.
fn prefix_end() -> Vec<u8> {
    let mut end = PREFIX.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// What a watcher sends to open its watch: method, path and query, body.
fn watch_request(system: System) -> (hyper::Method, String, Option<Vec<u8>>) {
    match system {
        System::Kv => (hyper::Method::GET, format!("/v1/watch?prefix={PREFIX}"), None),
        System::Etcd => {
            let body = json!({
                "create_request": { "key": b64(PREFIX.as_bytes()), "range_end": b64(&prefix_end()) }
            });
            (hyper::Method::POST, "/v3/watch".into(), Some(body.to_string().into_bytes()))
        }
    }
}

/// A `json` watcher: opens the watch, says so on `opened`, then records
/// every event's sequence number and arrival until it is aborted.
async fn watch_json(
    http: reqwest::Client,
    system: System,
    base: String,
    got: Deliveries,
    opened: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let (method, path, body) = watch_request(system);
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body);
    }
    let mut resp = match req.send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let _ = opened.send(Err(anyhow::anyhow!("the watch was answered {}", r.status()))).await;
            return;
        }
        Err(e) => {
            let _ = opened.send(Err(anyhow::anyhow!("sending the watch: {e}"))).await;
            return;
        }
    };
    let mut said_open = false;
    let mut buffer: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let now = Instant::now();
        buffer.extend_from_slice(&chunk);
        while let Some(newline) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else { continue };
            let (open, seqs) = match system {
                System::Kv => kv_line(&v),
                System::Etcd => etcd_line(&v),
            };
            if open && !said_open {
                said_open = true;
                let _ = opened.send(Ok(())).await;
            }
            if !seqs.is_empty() {
                let mut got = got.lock().unwrap_or_else(|e| e.into_inner());
                got.extend(seqs.into_iter().map(|s| (s, now)));
            }
        }
    }
    if !said_open {
        let _ = opened.send(Err(anyhow::anyhow!("the watch ended before it opened"))).await;
    }
}

/// The `scan` watchers, `n` of them on a thread of their own with a
/// single-threaded runtime (no work stealing between cores); the thread
/// returns each watcher's deliveries once `stop` is set.
fn scan_watchers(
    n: usize,
    system: System,
    base: String,
    opened: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<Vec<Arrivals>>>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("scan-watchers".into()).spawn(move || {
        runtime.block_on(async move {
            let mut watchers = tokio::task::JoinSet::new();
            for _ in 0..n {
                watchers.spawn(watch_scan(system, base.clone(), opened.clone(), stop.clone()));
            }
            drop(opened);
            let mut lists = Vec::with_capacity(n);
            while let Some(done) = watchers.join_next().await {
                lists.push(done.context("a scan watcher")?);
            }
            Ok(lists)
        })
    })?;
    Ok(thread)
}

/// A `scan` watcher: one HTTP/1 connection of its own; says so on
/// `opened` once the watch is open, then keeps every event's sequence
/// number and arrival until `stop`, and returns them.
async fn watch_scan(
    system: System,
    base: String,
    opened: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Arrivals {
    let mut got = Vec::new();
    let mut body = match open_scan(system, &base).await {
        Ok(body) => body,
        Err(e) => {
            let _ = opened.send(Err(e)).await;
            return got;
        }
    };
    let mut said_open = false;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            frame = http_body_util::BodyExt::frame(&mut body) => frame,
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(chunk) = frame.into_data() else { continue };
        let now = Instant::now();
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &buffer[start..start + end];
            start += end + 1;
            if scan_line(system, line, |seq| got.push((seq, now))) && !said_open {
                said_open = true;
                let _ = opened.send(Ok(())).await;
            }
        }
        buffer.drain(..start);
    }
    if !said_open {
        let _ = opened.send(Err(anyhow::anyhow!("the watch ended before it opened"))).await;
    }
    got
}

/// Opens a watch on a connection of its own and returns the response's
/// body.
async fn open_scan(system: System, base: &str) -> anyhow::Result<hyper::body::Incoming> {
    let authority = base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    // Runs until the stream ends or the body is dropped.
    tokio::spawn(connection);
    let (method, path, body) = watch_request(system);
    let mut req = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, &authority);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let body = http_body_util::Full::new(hyper::body::Bytes::from(body.unwrap_or_default()));
    let resp = sender.send_request(req.body(body)?).await?;
    if !resp.status().is_success() {
        bail!("the watch was answered {}", resp.status());
    }
    Ok(resp.into_body())
}

/// Finds what a `scan` watcher needs in one line's bytes, without parsing
/// it: each `"value":"…"` is an event's sequence number (etcd's in
/// base64). Returns whether the line says the watch is open (kv: a
/// progress line; etcd: `"created":true`).
fn scan_line(system: System, line: &[u8], mut event: impl FnMut(u64)) -> bool {
    const VALUE: &[u8] = b"\"value\":\"";
    let mut rest = line;
    while let Some(at) = find(rest, VALUE) {
        rest = &rest[at + VALUE.len()..];
        let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
        let seq = match system {
            System::Kv => std::str::from_utf8(&rest[..end]).ok().and_then(|s| s.parse().ok()),
            System::Etcd => base64::engine::general_purpose::STANDARD
                .decode(&rest[..end])
                .ok()
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()),
        };
        if let Some(seq) = seq {
            event(seq);
        }
        rest = &rest[end..];
    }
    match system {
        System::Kv => line.starts_with(b"{\"progress_index\""),
        System::Etcd => find(line, b"\"created\":true").is_some(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A kv watch line: open at the first progress line; an event's value is
/// the sequence number.
fn kv_line(v: &Value) -> (bool, Vec<u64>) {
    if v.get("progress_index").is_some() {
        return (true, Vec::new());
    }
    let seq = v.get("value").and_then(Value::as_str).and_then(|s| s.parse().ok());
    (false, seq.into_iter().collect())
}

/// An etcd gateway watch message: open at `created`; each event's value
/// (base64) is the sequence number.
fn etcd_line(v: &Value) -> (bool, Vec<u64>) {
    let result = &v["result"];
    let open = result["created"].as_bool() == Some(true);
    let seqs = result["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["kv"]["value"].as_str())
                .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .filter_map(|bytes| String::from_utf8(bytes).ok()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (open, seqs)
}

/// Resident memory of process `pid` in MiB, from `/proc/PID/status`
/// (NaN if it cannot be read).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_both_systems_give_their_sequence_numbers() {
        assert_eq!(kv_line(&json!({"progress_index": 4})), (true, vec![]));
        assert_eq!(
            kv_line(&json!({"index": 9, "op": "put", "key": "bw/1", "value": "17"})),
            (false, vec![17])
        );
        assert_eq!(
            kv_line(&json!({"index": 9, "op": "delete", "key": "bw/1", "value": null})),
            (false, vec![])
        );
        let created = json!({"result": {"header": {}, "created": true}});
        assert_eq!(etcd_line(&created), (true, vec![]));
        let events = json!({"result": {"events": [{"kv": {"key": b64(b"bw/1"), "value": b64(b"42")}},
                                                  {"kv": {"key": b64(b"bw/2"), "value": b64(b"43")}}]}});
        assert_eq!(etcd_line(&events), (false, vec![42, 43]));
        assert_eq!(prefix_end(), b"bw0".to_vec());
    }

    #[test]
    fn deliveries_are_judged_whole_however_late() {
        // Regression: the histogram clamped every delivery at about 2 ms.
        let t0 = Instant::now();
        let acks: HashMap<u64, Instant> = [(1, t0), (2, t0), (3, t0 + Duration::from_millis(5))].into();
        let lists = vec![
            vec![(1, t0 + Duration::from_millis(50)), (2, t0 + Duration::from_millis(10))],
            vec![(1, t0 + Duration::from_secs(1)), (3, t0), (2, t0 + Duration::from_millis(10))],
        ];
        let d = delivered(&acks, &lists);
        assert_eq!((d.deliveries, d.missed, d.before_ack), (5, 1, 1));
        assert_eq!(d.hist.len(), 5);
        assert!((999_000..=1_001_000).contains(&d.hist.max()), "max {} µs", d.hist.max());
        assert!(d.hist.min() <= 1, "the event before its acknowledgement counts as 0");
    }

    #[test]
    fn the_scan_prober_finds_what_the_json_prober_finds() {
        let b64 = |s: &str| super::b64(s.as_bytes());
        let lines = [
            (System::Kv, json!({"progress_index": 4})),
            (System::Kv, json!({"index": 9, "op": "put", "key": "bw/1", "value": "17"})),
            (System::Kv, json!({"index": 9, "op": "delete", "key": "bw/1", "value": null})),
            (System::Kv, json!({"index": 9, "op": "put", "key": "bw/1", "value": "x"})),
            (System::Etcd, json!({"result": {"header": {"revision": "3"}, "created": true}})),
            (
                System::Etcd,
                json!({"result": {"events": [{"kv": {"key": b64("bw/1"), "value": b64("42")}},
                                             {"kv": {"key": b64("bw/2"), "value": b64("43")}}]}}),
            ),
            (System::Etcd, json!({"result": {"events": [{"kv": {"key": b64("bw/1"), "value": "!!"}}]}})),
        ];
        for (system, line) in lines {
            let by_json = match system {
                System::Kv => kv_line(&line),
                System::Etcd => etcd_line(&line),
            };
            let mut seqs = Vec::new();
            let open = scan_line(system, line.to_string().as_bytes(), |s| seqs.push(s));
            assert_eq!((open, seqs), by_json, "{line}");
        }
    }

    #[test]
    fn rss_and_cpu_of_this_process_are_read() {
        let start = own_cpu();
        let spin = Instant::now();
        let mut x = 0u64;
        while own_cpu() == start && spin.elapsed() < Duration::from_secs(10) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(own_cpu() > start, "10 s of spinning shows in the CPU time");
        assert!(rss_mib(std::process::id()) > 0.0);
        assert!(rss_mib(u32::MAX).is_nan());
    }
}
