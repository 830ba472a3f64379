//! `kvctl bench failover`: how long writes stop when the leader of a 3-node
//! cluster stops, measured the same way on kv and on etcd.
//!
//! # What is measured
//!
//! For each system (`--target kv`, `etcd`, or `kv,etcd`), a fresh 3-node
//! cluster on this machine with default settings, and `--rounds` times:
//!
//! 1. find the leader;
//! 2. start open-loop put probes: every `--probe-interval-ms` (10 ms) one
//!    put to each of the other two nodes, the survivors, whether or not
//!    earlier ones have been answered, so that a stalled cluster does not
//!    slow the probing down; after [`WARMUP`], at least one must have
//!    succeeded;
//! 3. at a random point between two probes, send the leader SIGTERM (`--stop term`, the default: the graceful stop
//!    of a rolling restart, for which both systems hand leadership over
//!    first) or SIGKILL (`--stop kill`: a crash);
//! 4. the round's number: from sending the signal to the arrival of the
//!    first successful answer to a probe sent after it;
//! 5. wait for the stopped node to exit, start it again, and wait until the
//!    cluster is healthy (every node names the same leader; kv: the
//!    restarted node has applied what the leader had committed) before the
//!    next round.
//!
//! The resolution is the probe interval: a system that never stops taking
//! writes measures half an interval on average (the wait for the next
//! probe, uniform over the interval since the signal's phase is random)
//! plus one put's latency. Probes go to the survivors only, as a client
//! that notices a dead node would send them; a kv follower forwards a put
//! to the leader, an etcd follower forwards the proposal over Raft.
//!
//! # Targets
//!
//! | `--target` | cluster | probe | leader found by |
//! |---|---|---|---|
//! | `kv` | `kv-server` processes ([`LocalCluster`]) | `PUT /v1/kv/failover-probe/N` | `GET /v1/cluster/status` |
//! | `etcd` | `etcd` processes ([`EtcdCluster`]) | `POST /v3/kv/put` | `POST /v3/maintenance/status` |
//!
//! `scripts/failover-probe.py` makes the same measurement with Python's
//! `http.client` against a cluster that is already running, to check that
//! the numbers do not depend on this prober.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::http::header::CONTENT_TYPE;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use kv_client::client::normalize_endpoint;
use nix::sys::signal::Signal;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::etcd_cluster::EtcdCluster;
use super::report::{histogram, record};
use super::worker::{b64, find_leader, Protocol};
use crate::local_cluster::{self, ClusterConfig, LocalCluster};

/// How long probes run before the signal: connections are open and the
/// cluster is shown to take writes.
pub const WARMUP: Duration = Duration::from_millis(300);

/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopped node may take to exit, and a cluster to become
/// healthy again, before the run gives up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A system `kvctl bench failover` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// A cluster of kv-server processes.
    Kv,
    /// A cluster of etcd processes.
    Etcd,
}

impl System {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            System::Kv => "kv",
            System::Etcd => "etcd",
        }
    }
}

/// How the leader is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopWith {
    /// SIGTERM: a graceful stop, as systemd and rolling upgrades do it.
    Term,
    /// SIGKILL: a crash.
    Kill,
}

impl StopWith {
    fn signal(self) -> Signal {
        match self {
            StopWith::Term => Signal::SIGTERM,
            StopWith::Kill => Signal::SIGKILL,
        }
    }
}

/// `kvctl bench failover`'s options (`--json` is kvctl's global option).
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// The systems to measure, one after the other: kv, etcd, or kv,etcd.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kv")]
    pub target: Vec<System>,
    /// Leader stops per system.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// How the leader is stopped: term (SIGTERM, a graceful stop) or kill
    /// (SIGKILL, a crash).
    #[arg(long, value_enum, default_value_t = StopWith::Term)]
    pub stop: StopWith,
    /// Milliseconds between probes to each survivor.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub probe_interval_ms: u64,
    /// Give up on a round when no put succeeds within this many seconds of
    /// the signal.
    #[arg(long, default_value_t = 10)]
    pub round_timeout_s: u64,
    /// Both systems' heartbeat interval in milliseconds [default: each
    /// system's own, 100 ms for both]. Needs --election-timeout-ms.
    #[arg(long, requires = "election_timeout_ms", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: Option<u64>,
    /// Both systems' election timeout T in milliseconds, as each system
    /// reads it: etcd waits a random time in [T, 2T), so kv is given
    /// `--election-timeout-ms T-2T` [default: each system's own: etcd 1000,
    /// kv 500-1000]. Needs --heartbeat-ms.
    #[arg(long, requires = "heartbeat_ms", value_parser = clap::value_parser!(u64).range(1..))]
    pub election_timeout_ms: Option<u64>,
    /// The kv-server binary [default: the one next to kvctl].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// The etcd binary (Debian and Ubuntu: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Where the clusters keep their data and logs, kept afterwards
    /// [default: a temporary directory, deleted afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One system's rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemResult {
    /// The system.
    pub target: System,
    /// Each measured round's time from the signal to the first successful
    /// put, in milliseconds, in round order.
    pub samples_ms: Vec<f64>,
    /// Rounds in which no put succeeded within the round timeout.
    pub failed_rounds: u32,
    /// Median of the samples (HDR histogram, 3 significant digits).
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// The fastest round.
    pub min_ms: Option<f64>,
    /// The slowest round.
    pub max_ms: Option<f64>,
}

/// What a run measured. `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// How the leader was stopped.
    pub stop: StopWith,
    /// Rounds per system.
    pub rounds: u32,
    /// Milliseconds between probes to each survivor.
    pub probe_interval_ms: u64,
    /// CPUs of this machine.
    pub cpus: usize,
    /// The 1-minute load average when the run started (Linux), a hint of
    /// what else the machine was doing.
    pub load_average: Option<f64>,
    /// Heartbeat and election timeout given to both systems, in
    /// milliseconds; `None`: each system's defaults.
    #[serde(default)]
    pub timeouts_ms: Option<(u64, u64)>,
    /// One entry per system, in the order measured.
    pub systems: Vec<SystemResult>,
}

impl FailoverReport {
    /// The report for humans: a line of settings and one row per system.
    pub fn human(&self) -> String {
        let signal = match self.stop {
            StopWith::Term => "SIGTERM",
            StopWith::Kill => "SIGKILL",
        };
        let load = self.load_average.map_or(String::new(), |l| format!(", load average {l:.2} at the start"));
        let timeouts = match self.timeouts_ms {
            Some((h, e)) => format!(
                "heartbeat {h} ms, election timeout {e} ms (etcd: random in [{e}, {}), kv: --election-timeout-ms {e}-{})",
                2 * e,
                2 * e
            ),
            None => "each system's default timeouts".to_string(),
        };
        let mut out = format!(
            "{signal} to the leader of a 3-node cluster, {} rounds per system, {timeouts}; time from the \
             signal to the first successful put through a survivor (probes every {} ms to each); {} CPUs{load}\n\n",
            self.rounds, self.probe_interval_ms, self.cpus
        );
        out += &format!(
            "{:<8}{:>10}{:>10}{:>10}{:>10}{:>8}\n",
            "system", "p50 ms", "p90 ms", "min ms", "max ms", "failed"
        );
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
        for s in &self.systems {
            out += &format!(
                "{:<8}{:>10}{:>10}{:>10}{:>10}{:>8}\n",
                s.target.name(),
                ms(s.p50_ms),
                ms(s.p90_ms),
                ms(s.min_ms),
                ms(s.max_ms),
                s.failed_rounds
            );
        }
        if let [a, b] = &self.systems[..] {
            if let (Some(a90), Some(b90)) = (a.p90_ms, b.p90_ms) {
                out += &format!(
                    "\n{} p90 / {} p90 = {:.2}\n",
                    a.target.name(),
                    b.target.name(),
                    a90 / b90.max(1e-3)
                );
            }
        }
        out
    }
}

/// The samples' percentiles.
fn summarize(target: System, samples: Vec<Duration>, failed_rounds: u32) -> SystemResult {
    let mut h: Histogram<u64> = histogram();
    for s in &samples {
        record(&mut h, *s);
    }
    let ms = |us: u64| us as f64 / 1e3;
    let of = |f: &dyn Fn(&Histogram<u64>) -> u64| (!h.is_empty()).then(|| ms(f(&h)));
    SystemResult {
        target,
        samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        failed_rounds,
        p50_ms: of(&|h| h.value_at_quantile(0.5)),
        p90_ms: of(&|h| h.value_at_quantile(0.9)),
        min_ms: of(&|h| h.min()),
        max_ms: of(&|h| h.max()),
    }
}

/// Runs the measurement for every `--target`, printing each round's number
/// on stderr as it comes.
pub async fn run_failover(args: &FailoverArgs) -> anyhow::Result<FailoverReport> {
    if args.target.is_empty() {
        bail!("--target names no system");
    }
    let load_average = load_average();
    let workdir = WorkDir::new(args.dir.clone())?;
    let mut systems = Vec::new();
    for target in dedup(&args.target) {
        let dir = workdir.path.join(target.name());
        let mut cluster = Cluster::up(target, args, &dir).await?;
        let outcome = rounds(&mut cluster, args).await;
        cluster.down().await;
        let (samples, failed) =
            outcome.with_context(|| format!("{} (data and logs in {})", target.name(), dir.display()))?;
        systems.push(summarize(target, samples, failed));
    }
    Ok(FailoverReport {
        stop: args.stop,
        rounds: args.rounds,
        probe_interval_ms: args.probe_interval_ms,
        timeouts_ms: args.heartbeat_ms.zip(args.election_timeout_ms),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average,
        systems,
    })
}

/// The targets in order, each once.
fn dedup(targets: &[System]) -> Vec<System> {
    let mut out = Vec::new();
    for t in targets {
        if !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// `--rounds` rounds on one cluster: the samples, and the number of rounds
/// in which no put succeeded in time.
async fn rounds(cluster: &mut Cluster, args: &FailoverArgs) -> anyhow::Result<(Vec<Duration>, u32)> {
    let http = kv_client::tls::http_client_builder(None)
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(PROBE_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let interval = Duration::from_millis(args.probe_interval_ms);
    let round_timeout = Duration::from_secs(args.round_timeout_s);
    let mut samples = Vec::new();
    let mut failed = 0;
    let serial = Arc::new(AtomicU64::new(0));
    for round in 1..=args.rounds {
        let leader = cluster.leader(&http).await?;
        let survivors = cluster.others(leader);
        let mut probes = Probes::start(&http, cluster.protocol(), survivors, interval, serial.clone());
        // A random phase: the signal falls anywhere between two probes, not
        // always right after one (which would make every round wait a
        // whole interval for the next).
        let phase = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        tokio::time::sleep(WARMUP + phase).await;
        let before = probes.drain();
        if !before.iter().any(|p| p.ok) {
            probes.stop().await;
            bail!("round {round}: no probe succeeded before the signal; the cluster is not taking writes");
        }
        let signalled = Instant::now();
        cluster.signal(leader, args.stop.signal())?;
        let first = probes.first_success_after(signalled, round_timeout).await;
        probes.stop().await;
        match first {
            Some(at) => {
                let took = at - signalled;
                eprintln!(
                    "{} round {round}/{}: leader node {leader}, first put after {:.1} ms",
                    cluster.system.name(),
                    args.rounds,
                    took.as_secs_f64() * 1e3
                );
                samples.push(took);
            }
            None => {
                eprintln!(
                    "{} round {round}/{}: leader node {leader}: no put succeeded within {round_timeout:?}",
                    cluster.system.name(),
                    args.rounds
                );
                failed += 1;
            }
        }
        if !cluster.wait_exit(leader).await? && args.stop == StopWith::Term {
            eprintln!(
                "{}: node {leader} did not exit within {SETTLE_TIMEOUT:?} of SIGTERM; killed it",
                cluster.system.name()
            );
        }
        cluster.restart(leader).await?;
    }
    Ok((samples, failed))
}

/// One probe's outcome.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent: Instant,
    done: Instant,
    ok: bool,
}

/// Open-loop probes to a set of endpoints, running until stopped.
struct Probes {
    rx: mpsc::UnboundedReceiver<Probe>,
    stop: Arc<AtomicBool>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Probes {
    fn start(
        http: &reqwest::Client,
        protocol: Protocol,
        bases: Vec<String>,
        interval: Duration,
        serial: Arc<AtomicU64>,
    ) -> Probes {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (http, stop) = (http.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    for base in &bases {
                        let n = serial.fetch_add(1, Ordering::Relaxed);
                        let (http, base, tx) = (http.clone(), base.clone(), tx.clone());
                        tokio::spawn(async move {
                            let sent = Instant::now();
                            let ok = put(&http, protocol, &base, n).await;
                            let _ = tx.send(Probe { sent, done: Instant::now(), ok });
                        });
                    }
                }
            })
        };
        Probes { rx, stop, ticker }
    }

    /// The probes answered so far.
    fn drain(&mut self) -> Vec<Probe> {
        let mut out = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            out.push(p);
        }
        out
    }

    /// When the first probe sent at or after `since` succeeded, waiting at
    /// most `within` after `since`.
    async fn first_success_after(&mut self, since: Instant, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::from_std(since + within);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(p)) if p.ok && p.sent >= since => return Some(p.done),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Stops sending probes (those in flight finish on their own).
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.ticker.await;
    }
}

/// One probe: a put of a fresh key through `base`. Whether it succeeded.
async fn put(http: &reqwest::Client, protocol: Protocol, base: &str, n: u64) -> bool {
    let key = format!("failover-probe/{n}");
    let request = match protocol {
        Protocol::Kv => http
            .put(format!("{base}/v1/kv/{key}"))
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"value":"x"}"#),
        Protocol::Etcd => http
            .post(format!("{base}/v3/kv/put"))
            .header(CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key.as_bytes()), b64(b"x"))),
    };
    match request.send().await {
        // etcd's gateway answers a failed put with a non-2xx status too.
        Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// The cluster of one system.
struct Cluster {
    system: System,
    nodes: Nodes,
    /// The nodes' base URLs, node i + 1 at index i.
    endpoints: Vec<String>,
}

/// The processes of one system's cluster.
enum Nodes {
    Kv(Box<LocalCluster>),
    Etcd(EtcdCluster),
}

impl Cluster {
    async fn up(system: System, args: &FailoverArgs, dir: &Path) -> anyhow::Result<Cluster> {
        let nodes = match system {
            System::Kv => {
                let bin = match &args.bin {
                    Some(bin) => bin.clone(),
                    None => local_cluster::default_server_binary()?,
                };
                let mut config = ClusterConfig::new(3, dir, bin);
                if let (Some(h), Some(e)) = (args.heartbeat_ms, args.election_timeout_ms) {
                    config.extra_args = vec![
                        "--heartbeat-ms".into(),
                        h.to_string(),
                        "--election-timeout-ms".into(),
                        format!("{e}-{}", 2 * e),
                    ];
                }
                let cluster = LocalCluster::up(config)
                    .await
                    .with_context(|| format!("starting a kv cluster in {}", dir.display()))?;
                Nodes::Kv(Box::new(cluster))
            }
            System::Etcd => {
                let timeouts = match (args.heartbeat_ms, args.election_timeout_ms) {
                    (Some(h), Some(e)) => vec![
                        "--heartbeat-interval".into(),
                        h.to_string(),
                        "--election-timeout".into(),
                        e.to_string(),
                    ],
                    _ => Vec::new(),
                };
                let cluster = EtcdCluster::up_with(&args.etcd_bin, dir, 3, SETTLE_TIMEOUT, timeouts)
                    .await
                    .with_context(|| format!("starting an etcd cluster in {}", dir.display()))?;
                Nodes::Etcd(cluster)
            }
        };
        let raw = match &nodes {
            Nodes::Kv(kv) => kv.endpoints(),
            Nodes::Etcd(etcd) => etcd.endpoints(),
        };
        let endpoints = raw
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()
            .context("the cluster's endpoints")?;
        Ok(Cluster { system, nodes, endpoints })
    }

    fn protocol(&self) -> Protocol {
        match self.system {
            System::Kv => Protocol::Kv,
            System::Etcd => Protocol::Etcd,
        }
    }

    /// The leader's node id.
    async fn leader(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let base = find_leader(http, self.protocol(), &self.endpoints).await?;
        let i = self
            .endpoints
            .iter()
            .position(|e| *e == base)
            .context("the leader is not one of the endpoints")?;
        Ok(i as u64 + 1)
    }

    /// The endpoints of every node but `id`.
    fn others(&self, id: u64) -> Vec<String> {
        (1..).zip(&self.endpoints).filter(|(n, _)| *n != id).map(|(_, e)| e.clone()).collect()
    }

    fn signal(&self, id: u64, sig: Signal) -> anyhow::Result<()> {
        match &self.nodes {
            Nodes::Kv(kv) => Ok(kv.signal(id, sig)?),
            Nodes::Etcd(etcd) => etcd.signal(id, sig),
        }
    }

    /// Waits for node `id` to exit; whether it did by itself in time.
    async fn wait_exit(&mut self, id: u64) -> anyhow::Result<bool> {
        match &mut self.nodes {
            Nodes::Kv(kv) => Ok(kv.wait_exit(id, SETTLE_TIMEOUT).await?),
            Nodes::Etcd(etcd) => Ok(etcd.wait_exit(id, SETTLE_TIMEOUT).await),
        }
    }

    /// Starts node `id` again and waits until the cluster is healthy.
    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        match &mut self.nodes {
            Nodes::Kv(kv) => {
                kv.start(id)?;
                kv.wait_for_leader(SETTLE_TIMEOUT).await?;
                kv.wait_caught_up(id, SETTLE_TIMEOUT).await?;
                Ok(())
            }
            Nodes::Etcd(etcd) => {
                etcd.start(id)?;
                etcd.wait_healthy(SETTLE_TIMEOUT).await
            }
        }
    }

    /// Stops the cluster: SIGTERM to every node, SIGKILL after a grace period.
    async fn down(self) {
        match self.nodes {
            Nodes::Kv(kv) => {
                let _ = tokio::task::spawn_blocking(move || kv.shutdown()).await;
            }
            Nodes::Etcd(mut etcd) => {
                for id in 1..=3 {
                    let _ = etcd.signal(id, Signal::SIGTERM);
                }
                for id in 1..=3 {
                    etcd.wait_exit(id, local_cluster::STOP_GRACE).await;
                }
            }
        }
    }
}

/// The run's directory: `--dir`, kept, or a temporary one, deleted when
/// this is dropped.
struct WorkDir {
    path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    fn new(dir: Option<PathBuf>) -> anyhow::Result<WorkDir> {
        let (path, temporary) = match dir {
            Some(dir) => (dir, false),
            None => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!("kvctl-failover-{}-{stamp}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, temporary })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_samples() {
        let samples: Vec<Duration> = (1..=10).map(|ms| Duration::from_millis(ms * 10)).collect();
        let r = summarize(System::Kv, samples, 1);
        assert_eq!(r.samples_ms.len(), 10);
        // An HDR histogram of 3 significant digits: within 0.1%.
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= want / 1000.0);
        assert!(near(r.p50_ms, 50.0) && near(r.p90_ms, 90.0), "{r:?}");
        assert!(near(r.min_ms, 10.0) && near(r.max_ms, 100.0), "{r:?}");
        assert_eq!(r.failed_rounds, 1);
        let none = summarize(System::Etcd, Vec::new(), 3);
        assert_eq!((none.p50_ms, none.max_ms), (None, None));
    }

    #[test]
    fn the_table_has_one_row_per_system_and_their_ratio() {
        let report = FailoverReport {
            stop: StopWith::Term,
            rounds: 2,
            probe_interval_ms: 10,
            cpus: 2,
            load_average: Some(0.5),
            timeouts_ms: Some((30, 150)),
            systems: vec![
                summarize(System::Kv, vec![Duration::from_millis(8), Duration::from_millis(12)], 0),
                summarize(System::Etcd, vec![Duration::from_millis(4), Duration::from_millis(6)], 0),
            ],
        };
        let text = report.human();
        assert!(text.starts_with("SIGTERM to the leader"), "{text}");
        assert!(text.contains("heartbeat 30 ms, election timeout 150 ms"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("kv ") && l.contains("12.0")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("etcd ") && l.contains("6.0")), "{text}");
        assert!(text.contains("kv p90 / etcd p90 = 2.00"), "{text}");
    }

    #[test]
    fn each_target_is_measured_once_in_the_order_given() {
        assert_eq!(dedup(&[System::Etcd, System::Kv, System::Etcd]), [System::Etcd, System::Kv]);
    }
}
