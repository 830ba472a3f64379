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
//!    event some watcher never received (within 2 s of the end) counts as
//!    `missed`.
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

/// The prefix every watched key has.
const PREFIX: &str = "bw/";
/// Keys the writer spreads its puts over.
const KEYS: u64 = 16;
/// How long after the last put the watchers may still deliver.
const DRAIN: Duration = Duration::from_secs(2);
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
}

/// One system and number of watchers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRow {
    pub system: System,
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
}

/// What `kvctl bench watch` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchReport {
    pub rate: f64,
    pub seconds: f64,
    pub on: WatchOn,
    pub cpus: usize,
    pub load_average: Option<f64>,
    pub rows: Vec<WatchRow>,
}

impl WatchReport {
    /// A Markdown table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} puts/s for {} s per row, watchers on the {}; {} CPUs, load average {}\n\n",
            self.rate,
            self.seconds,
            match self.on {
                WatchOn::Follower => "follower",
                WatchOn::Leader => "leader",
            },
            self.cpus,
            self.load_average.map_or("?".into(), |l| format!("{l:.2}")),
        );
        out.push_str(
            "| system | watchers | puts | failed puts | deliveries | p50 ms | p99 ms | max ms | before ack | missed | RSS MiB before | RSS MiB watching |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} |\n",
                r.system.name(),
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
                r.rss_watching_mib
            ));
        }
        for r in self.rows.iter().filter(|r| r.first_failure.is_some()) {
            out.push_str(&format!(
                "\n{} with {} watchers: the first failed put: {}\n",
                r.system.name(),
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
    if args.rate <= 0.0 || args.seconds <= 0.0 || args.watchers.is_empty() {
        bail!("--rate, --seconds and --watchers must be positive");
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
    for &n in &args.watchers {
        rows.push(one_row(cluster, http, args, leader, node, pid, n).await?);
    }
    Ok(rows)
}

/// Each watcher's deliveries: (sequence number, arrival).
type Deliveries = Arc<Mutex<Vec<(u64, Instant)>>>;

async fn one_row(
    cluster: &Cluster,
    http: &reqwest::Client,
    args: &WatchArgs,
    leader: u64,
    node: u64,
    pid: u32,
    n: usize,
) -> anyhow::Result<WatchRow> {
    let system = cluster.system();
    let rss_before = rss_mib(pid);
    let base = cluster.endpoint(node)?.to_string();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(n.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    let mut all: Vec<Deliveries> = Vec::with_capacity(n);
    for _ in 0..n {
        let got: Deliveries = Arc::default();
        all.push(got.clone());
        tasks.spawn(watch_one(http.clone(), system, base.clone(), got, opened_tx.clone()));
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

    let (acks, failed) = write(http, system, cluster.endpoint(leader)?, args).await;
    tokio::time::sleep(DRAIN).await;
    tasks.abort_all();

    let mut hist = Histogram::<u64>::new(3).context("a histogram")?;
    let (mut before_ack, mut missed, mut deliveries) = (0, 0, 0);
    for got in &all {
        let got = got.lock().unwrap_or_else(|e| e.into_inner());
        let arrived: HashMap<u64, Instant> = got.iter().copied().collect();
        for (seq, acked) in &acks {
            match arrived.get(seq) {
                None => missed += 1,
                Some(at) => {
                    deliveries += 1;
                    if at < acked {
                        before_ack += 1;
                    }
                    let us = at.saturating_duration_since(*acked).as_micros() as u64;
                    hist.saturating_record(us);
                }
            }
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(WatchRow {
        system,
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
    })
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

/// One watcher: opens the watch, says so on `opened`, then records every
/// event's sequence number and arrival until it is aborted.
async fn watch_one(
    http: reqwest::Client,
    system: System,
    base: String,
    got: Deliveries,
    opened: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let req = match system {
        System::Kv => http.get(format!("{base}/v1/watch")).query(&[("prefix", PREFIX)]),
        System::Etcd => http.post(format!("{base}/v3/watch")).json(&json!({
            "create_request": { "key": b64(PREFIX.as_bytes()), "range_end": b64(&prefix_end()) }
        })),
    };
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
    fn rss_of_this_process_is_read() {
        assert!(rss_mib(std::process::id()) > 0.0);
        assert!(rss_mib(u32::MAX).is_nan());
    }
}
