//! `kvctl bench failover`: how long writes stop when the leader of a
//! 3-node cluster stops or is cut off, measured the same way on kv and on
//! etcd.
//!
//! # What is measured
//!
//! For each system (`--target kv`, `etcd`, or `kv,etcd`) and each election
//! timeout (`--election-timeout-ms 150,300,500`, or each system's defaults),
//! a fresh 3-node cluster on this machine, and `--rounds` times:
//!
//! 1. find the leader;
//! 2. start open-loop put probes: every `--probe-interval-ms` (10 ms) one
//!    put to each of the other two nodes, the *majority side*, whether or
//!    not earlier ones have been answered, so that a stalled cluster does
//!    not slow the probing down; after [`WARMUP`], at least one must have
//!    succeeded. At the same rate, ask the two majority-side nodes for
//!    their status (who they think leads);
//! 3. at a random point between two probes, the *fault*:
//!    * `--stop term` (the default): SIGTERM to the leader, the graceful
//!      stop of a rolling restart, for which both systems hand leadership
//!      over first;
//!    * `--stop kill`: SIGKILL to the leader, a crash;
//!    * `--stop isolate`: the *cut*: every Raft link between the leader and
//!      the other two is dropped in both directions, silently, as an
//!      iptables DROP rule would (the cluster's Raft traffic runs through
//!      in-process proxies, [`jepsen_net`]). The leader keeps running and
//!      its clients' HTTP still reaches it. After `--isolate-ms` the links
//!      are healed;
//! 4. the round's numbers, all measured from the fault:
//!    * **first write**: to the arrival of the first successful answer to a
//!      put probe sent after it (for `isolate`, it must arrive before the
//!      heal);
//!    * **time without leader**: to the arrival of the first status answer,
//!      to a status request sent after the fault, in which a majority-side
//!      node says it is the leader. It is polled, so it is late by up to a
//!      probe interval plus one status request; and with `term`, where the
//!      leader hands over, it is the time until the new leader says so,
//!      not a time in which there was none;
//!    * with `isolate`, the **old leader's step-down**: the old leader is
//!      probed separately, at the same rate, with puts, with linearizable
//!      reads and with status requests, and the round records, for probes
//!      sent after the cut and answered before the heal, the time to the
//!      last answer that accepted a put, and to the first that refused one
//!      (any error answer, a timeout of the server's own included; a probe
//!      that got no answer in [`PROBE_TIMEOUT`] is neither), the same for
//!      reads, and the time to its first status answer that no longer says
//!      it leads. A put sent after the cut cannot commit without the
//!      majority, so a successful one means the old leader still got a
//!      majority's acknowledgement; a linearizable read it serves after the
//!      cut it serves on its leader lease, if it has one;
//! 5. let the cluster recover (`term`, `kill`: wait for the stopped node to
//!    exit and start it again; `isolate`: heal) and wait until it is
//!    healthy (every node names the same leader; kv: a restarted node has
//!    applied what the leader had committed) before the next round.
//!
//! The resolution is the probe interval: a system that never stops taking
//! writes measures half an interval on average (the wait for the next
//! probe, uniform over the interval since the fault's phase is random)
//! plus one put's latency. Probes go to the majority side only, as a client
//! that notices a dead node would send them; a kv follower forwards a put
//! to the leader over HTTP (which is not cut: only Raft traffic crosses the
//! proxies, so with `isolate` a majority-side follower may still forward a
//! put to the old leader until it learns of the new one), an etcd follower
//! forwards the proposal over Raft.
//!
//! `--plot FILE.svg` draws the cumulative distribution of the first-write
//! times, one curve per system and election timeout, as Figure 16 of the
//! Raft paper does for the time without a leader.
//!
//! # Targets
//!
//! | `--target` | cluster | probe | read probe | leader found by |
//! |---|---|---|---|---|
//! | `kv` | `kv-server` processes ([`LocalCluster`](crate::local_cluster::LocalCluster)) | `PUT /v1/kv/failover-probe/N` | `GET /v1/kv/failover-probe/read?consistency=linearizable` | `GET /v1/cluster/status` |
//! | `etcd` | `etcd` processes ([`EtcdCluster`](super::EtcdCluster)) | `POST /v3/kv/put` | `POST /v3/kv/range` | `POST /v3/maintenance/status` |
//!
//! `scripts/failover-probe.py` makes the same measurement with Python's
//! `http.client` against a cluster that is already running, to check that
//! the numbers do not depend on this prober.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::http::header::CONTENT_TYPE;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use nix::sys::signal::Signal;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::cluster::{self, node_view, Cluster, ClusterArgs, System, WorkDir, NODE_IDS};
use super::plot;
use super::report::{histogram, record};
use super::worker::{b64, Protocol};

/// How long probes run before the fault: connections are open and the
/// cluster is shown to take writes.
pub const WARMUP: Duration = Duration::from_millis(300);

/// How long one probe may take before it counts as unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `--stop isolate` without `--isolate-ms` and without timeouts: long
/// enough for etcd's default election (a random wait in [1 s, 2 s)) and
/// kv's (500-1000 ms), then a write.
const DEFAULT_ISOLATE: Duration = Duration::from_secs(5);

/// `--stop isolate` without `--isolate-ms` isolates the leader for this
/// many election timeouts T: the majority side waits up to 2T before it
/// elects, and the old leader needs up to about T to notice.
const ISOLATE_TIMEOUTS: u64 = 4;

/// The shortest default isolation: on a busy machine an election and a
/// write take longer than a small T suggests.
const MIN_DEFAULT_ISOLATE: Duration = Duration::from_secs(1);

/// How the leader is stopped or cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopWith {
    /// SIGTERM: a graceful stop, as systemd and rolling upgrades do it.
    Term,
    /// SIGKILL: a crash.
    Kill,
    /// Drop the leader's Raft links for --isolate-ms, then heal: a network
    /// partition, with the old leader still running.
    Isolate,
}

/// `kvctl bench failover`'s options (`--json` is kvctl's global option).
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// The systems and where they run.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Faults per system and election timeout.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// The fault: term (SIGTERM to the leader, a graceful stop), kill
    /// (SIGKILL, a crash) or isolate (the leader's Raft links dropped for
    /// --isolate-ms, then healed).
    #[arg(long, value_enum, default_value_t = StopWith::Term)]
    pub stop: StopWith,
    /// With --stop isolate: how long the leader stays cut off, in
    /// milliseconds [default: 4 election timeouts T, at least 1000; 5000
    /// with each system's default timeouts].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub isolate_ms: Option<u64>,
    /// Milliseconds between probes to each node probed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub probe_interval_ms: u64,
    /// Give up on a round when no put succeeds within this many seconds of
    /// the fault.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub round_timeout_s: u64,
    /// Both systems' heartbeat interval in milliseconds [default: each
    /// system's own, 100 ms for both]. Needs --election-timeout-ms.
    #[arg(long, requires = "election_timeout_ms", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: Option<u64>,
    /// Both systems' election timeout T in milliseconds, as each system
    /// reads it: etcd waits a random time in [T, 2T), so kv is given
    /// `--election-timeout-ms T-2T` [default: each system's own: etcd 1000,
    /// kv 500-1000]. Several, comma-separated (150,300,500), measure each
    /// in turn on a fresh cluster. Needs --heartbeat-ms.
    #[arg(long, requires = "heartbeat_ms", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub election_timeout_ms: Vec<u64>,
    /// Draw the cumulative distribution of the first-write times, one curve
    /// per system and election timeout, into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Percentiles of a set of samples, in milliseconds (HDR histogram, 3
/// significant digits); `None` without samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// The median.
    pub p50_ms: Option<f64>,
    /// The 90th percentile.
    pub p90_ms: Option<f64>,
    /// The smallest sample.
    pub min_ms: Option<f64>,
    /// The largest sample.
    pub max_ms: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `samples_ms`.
    pub fn of(samples_ms: &[f64]) -> Percentiles {
        let mut h: Histogram<u64> = histogram();
        for s in samples_ms {
            record(&mut h, Duration::from_secs_f64(s.max(0.0) / 1e3));
        }
        let ms = |us: u64| us as f64 / 1e3;
        let of = |f: &dyn Fn(&Histogram<u64>) -> u64| (!h.is_empty()).then(|| ms(f(&h)));
        Percentiles {
            p50_ms: of(&|h| h.value_at_quantile(0.5)),
            p90_ms: of(&|h| h.value_at_quantile(0.9)),
            min_ms: of(&|h| h.min()),
            max_ms: of(&|h| h.max()),
        }
    }
}

/// With `--stop isolate`: what the old leader did in one round, each time
/// in milliseconds from the cut, over probes sent after the cut and
/// answered before the heal; `None` when no probe qualified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OldLeaderRound {
    /// The last answer that acknowledged a put.
    pub last_write_ok_ms: Option<f64>,
    /// The first answer that refused a put.
    pub first_write_refusal_ms: Option<f64>,
    /// The last answer to a linearizable read that gave a value.
    pub last_read_ok_ms: Option<f64>,
    /// The first answer that refused a linearizable read.
    pub first_read_refusal_ms: Option<f64>,
    /// The first status answer in which it no longer says it leads.
    pub stepped_down_ms: Option<f64>,
}

/// One system's rounds at one election timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemResult {
    /// The system.
    pub target: System,
    /// The election timeout T it was given, in milliseconds; `None`: its
    /// default.
    #[serde(default)]
    pub election_timeout_ms: Option<u64>,
    /// With `--stop isolate`: how long the leader was cut off, in
    /// milliseconds.
    #[serde(default)]
    pub isolate_ms: Option<u64>,
    /// Each measured round's time from the fault to the first successful
    /// put, in milliseconds, in round order.
    pub samples_ms: Vec<f64>,
    /// Rounds in which no put succeeded within the round timeout (for
    /// `isolate`: before the heal).
    pub failed_rounds: u32,
    /// Percentiles of `samples_ms`.
    #[serde(flatten)]
    pub first_write: Percentiles,
    /// Each round's time from the fault until a majority-side node said it
    /// was the leader, in milliseconds (rounds where none did in time are
    /// left out).
    #[serde(default)]
    pub leaderless_samples_ms: Vec<f64>,
    /// Percentiles of `leaderless_samples_ms`.
    #[serde(default)]
    pub leaderless: Percentiles,
    /// With `--stop isolate`: the old leader, round by round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub old_leader: Vec<OldLeaderRound>,
}

impl SystemResult {
    /// The curve's or point's label in a plot: `kv T=150-300 ms`.
    pub fn label(&self) -> String {
        match self.election_timeout_ms {
            Some(t) => format!("{} T={t}-{} ms", self.target.name(), 2 * t),
            None => format!("{} defaults", self.target.name()),
        }
    }
}

/// What a run measured. `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// The fault.
    pub stop: StopWith,
    /// Rounds per system and timeout.
    pub rounds: u32,
    /// Milliseconds between probes to each probed node.
    pub probe_interval_ms: u64,
    /// CPUs of this machine.
    pub cpus: usize,
    /// The 1-minute load average when the run started (Linux), a hint of
    /// what else the machine was doing.
    pub load_average: Option<f64>,
    /// The heartbeat interval given to both systems, in milliseconds;
    /// `None`: each system's default.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// One entry per election timeout and system, in the order measured.
    pub systems: Vec<SystemResult>,
}

impl FailoverReport {
    /// The report for humans: a line of settings and one row per system
    /// and timeout; with `isolate`, a second table on the old leader.
    pub fn human(&self) -> String {
        let load = self.load_average.map_or(String::new(), |l| format!(", load average {l:.2} at the start"));
        let fault = match self.stop {
            StopWith::Term => "SIGTERM to the leader of a 3-node cluster".to_owned(),
            StopWith::Kill => "SIGKILL to the leader of a 3-node cluster".to_owned(),
            StopWith::Isolate => {
                let ms: Vec<String> = dedup_sorted(self.systems.iter().filter_map(|s| s.isolate_ms))
                    .map(|m| m.to_string())
                    .collect();
                format!(
                    "the leader of a 3-node cluster cut off from the other two for {} ms (Raft links dropped, then healed)",
                    ms.join("/")
                )
            }
        };
        let timeouts = match self.heartbeat_ms {
            Some(h) => format!(
                "heartbeat {h} ms, election timeout T as in the table (etcd: random in [T, 2T), kv: --election-timeout-ms T-2T)"
            ),
            None => "each system's default timeouts".to_string(),
        };
        let mut out = format!(
            "{fault}, {} rounds per row, {timeouts}; first write: from the fault to the first successful put \
             through a majority-side node; no leader: from the fault until a majority-side node says it leads \
             (both polled every {} ms); {} CPUs{load}\n\n",
            self.rounds, self.probe_interval_ms, self.cpus
        );
        out += &format!(
            "{:<8}{:>6} | {:>9}{:>9}{:>9}{:>9}{:>7} | {:>9}{:>9}{:>9}\n",
            "", "", "first", "write", "ms", "", "", "no", "leader", "ms"
        );
        out += &format!(
            "{:<8}{:>6} | {:>9}{:>9}{:>9}{:>9}{:>7} | {:>9}{:>9}{:>9}\n",
            "system", "T ms", "p50", "p90", "min", "max", "failed", "p50", "p90", "max"
        );
        for s in &self.systems {
            let w = &s.first_write;
            let l = &s.leaderless;
            out += &format!(
                "{:<8}{:>6} | {:>9}{:>9}{:>9}{:>9}{:>7} | {:>9}{:>9}{:>9}\n",
                s.target.name(),
                s.election_timeout_ms.map_or("def".to_owned(), |t| t.to_string()),
                ms(w.p50_ms),
                ms(w.p90_ms),
                ms(w.min_ms),
                ms(w.max_ms),
                s.failed_rounds,
                ms(l.p50_ms),
                ms(l.p90_ms),
                ms(l.max_ms),
            );
        }
        if let [a, b] = &self.systems[..] {
            if let (Some(a90), Some(b90)) = (a.first_write.p90_ms, b.first_write.p90_ms) {
                out += &format!(
                    "\n{} p90 / {} p90 = {:.2}\n",
                    a.target.name(),
                    b.target.name(),
                    a90 / b90.max(1e-3)
                );
            }
        }
        if self.stop == StopWith::Isolate {
            out += "\nThe old leader after the cut, ms from the cut, p50 / max over the rounds \
                    ([n]: only n rounds had such an answer before the heal; -: none):\n\n";
            out += &format!(
                "{:<8}{:>6} | {:>18}{:>18}{:>18}{:>18}{:>18}\n",
                "system",
                "T ms",
                "last put ok",
                "1st put refused",
                "last read ok",
                "1st read refused",
                "stepped down"
            );
            for s in &self.systems {
                let col = |f: fn(&OldLeaderRound) -> Option<f64>| {
                    let v: Vec<f64> = s.old_leader.iter().filter_map(f).collect();
                    let p = Percentiles::of(&v);
                    match (p.p50_ms, p.max_ms) {
                        (Some(a), Some(b)) if v.len() == s.old_leader.len() => format!("{a:.0} / {b:.0}"),
                        (Some(a), Some(b)) => format!("{a:.0} / {b:.0} [{}]", v.len()),
                        _ => "-".to_owned(),
                    }
                };
                out += &format!(
                    "{:<8}{:>6} | {:>18}{:>18}{:>18}{:>18}{:>18}\n",
                    s.target.name(),
                    s.election_timeout_ms.map_or("def".to_owned(), |t| t.to_string()),
                    col(|r| r.last_write_ok_ms),
                    col(|r| r.first_write_refusal_ms),
                    col(|r| r.last_read_ok_ms),
                    col(|r| r.first_read_refusal_ms),
                    col(|r| r.stepped_down_ms),
                );
            }
        }
        out
    }

    /// The rounds that saw no put succeed in time, over all rows.
    pub fn failed_rounds(&self) -> u32 {
        self.systems.iter().map(|s| s.failed_rounds).sum()
    }
}

/// A number of milliseconds for a table cell.
fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

/// The distinct values, sorted.
fn dedup_sorted(values: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    values.collect::<std::collections::BTreeSet<_>>().into_iter()
}

/// One round's numbers.
#[derive(Debug, Clone, Default)]
struct Round {
    first_write: Option<Duration>,
    leaderless: Option<Duration>,
    old_leader: Option<OldLeaderRound>,
}

/// A row's rounds.
fn summarize(
    target: System,
    election_timeout_ms: Option<u64>,
    isolate_ms: Option<u64>,
    rounds: &[Round],
) -> SystemResult {
    let millis = |d: Duration| d.as_secs_f64() * 1e3;
    let samples_ms: Vec<f64> = rounds.iter().filter_map(|r| r.first_write).map(millis).collect();
    let leaderless_samples_ms: Vec<f64> = rounds.iter().filter_map(|r| r.leaderless).map(millis).collect();
    SystemResult {
        target,
        election_timeout_ms,
        isolate_ms,
        failed_rounds: rounds.iter().filter(|r| r.first_write.is_none()).count() as u32,
        first_write: Percentiles::of(&samples_ms),
        samples_ms,
        leaderless: Percentiles::of(&leaderless_samples_ms),
        leaderless_samples_ms,
        old_leader: rounds.iter().filter_map(|r| r.old_leader).collect(),
    }
}

/// Runs the measurement for every election timeout and `--target`,
/// printing each round's numbers on stderr as they come, and draws
/// `--plot`.
pub async fn run_failover(args: &FailoverArgs) -> anyhow::Result<FailoverReport> {
    let targets = args.cluster.targets()?;
    if args.isolate_ms.is_some() && args.stop != StopWith::Isolate {
        bail!("--isolate-ms is for --stop isolate");
    }
    let load_average = cluster::load_average();
    let workdir = WorkDir::new(args.cluster.dir.clone(), "kvctl-failover")?;
    let timeouts: Vec<Option<u64>> = match &args.election_timeout_ms[..] {
        [] => vec![None],
        ts => cluster::dedup(ts).into_iter().map(Some).collect(),
    };
    let mut systems = Vec::new();
    for t in timeouts {
        for &target in &targets {
            let name = match t {
                Some(t) => format!("{}-{t}", target.name()),
                None => target.name().to_owned(),
            };
            let dir = workdir.path.join(name);
            let options = args.cluster.options(args.heartbeat_ms.zip(t), args.stop == StopWith::Isolate);
            let isolate = (args.stop == StopWith::Isolate).then(|| isolate_for(args.isolate_ms, t));
            let mut cluster = Cluster::up(target, &options, &dir).await?;
            let outcome = rounds(&mut cluster, args, t, isolate).await;
            cluster.down().await;
            let rounds =
                outcome.with_context(|| format!("{} (data and logs in {})", target.name(), dir.display()))?;
            let isolate_ms = isolate.map(|d| d.as_millis() as u64);
            systems.push(summarize(target, t, isolate_ms, &rounds));
        }
    }
    let report = FailoverReport {
        stop: args.stop,
        rounds: args.rounds,
        probe_interval_ms: args.probe_interval_ms,
        heartbeat_ms: args.heartbeat_ms,
        cpus: cluster::cpus(),
        load_average,
        systems,
    };
    if let Some(path) = &args.plot {
        let curves: Vec<(String, Vec<f64>)> =
            report.systems.iter().map(|s| (s.label(), s.samples_ms.clone())).collect();
        let what = match args.stop {
            StopWith::Term => "SIGTERM to the leader",
            StopWith::Kill => "SIGKILL to the leader",
            StopWith::Isolate => "leader cut off",
        };
        let title = format!("{what}: time to the first successful write, {} rounds per curve", args.rounds);
        plot::cdf(path, &title, "ms from the fault to the first successful put", &curves)
            .with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(report)
}

/// How long `--stop isolate` cuts the leader off at election timeout `t`.
fn isolate_for(isolate_ms: Option<u64>, t: Option<u64>) -> Duration {
    match (isolate_ms, t) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, Some(t)) => Duration::from_millis(ISOLATE_TIMEOUTS * t).max(MIN_DEFAULT_ISOLATE),
        (None, None) => DEFAULT_ISOLATE,
    }
}

/// `--rounds` rounds on one cluster.
async fn rounds(
    cluster: &mut Cluster,
    args: &FailoverArgs,
    t: Option<u64>,
    isolate: Option<Duration>,
) -> anyhow::Result<Vec<Round>> {
    let http = kv_client::tls::http_client_builder(None)
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(PROBE_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let interval = Duration::from_millis(args.probe_interval_ms);
    let round_timeout = match isolate {
        Some(d) => d,
        None => Duration::from_secs(args.round_timeout_s),
    };
    let serial = Arc::new(AtomicU64::new(0));
    let tag = match t {
        Some(t) => format!("{} T={t}", cluster.system.name()),
        None => cluster.system.name().to_owned(),
    };
    let mut out = Vec::new();
    for round in 1..=args.rounds {
        let leader = cluster.leader(&http).await?;
        let majority: Vec<String> = cluster
            .others(leader)
            .into_iter()
            .map(|id| cluster.endpoint(id).map(str::to_owned))
            .collect::<anyhow::Result<_>>()?;
        let probe = |ask: Ask, bases: Vec<String>| {
            Probes::start(&http, cluster.protocol(), ask, bases, interval, serial.clone())
        };
        let mut puts = probe(Ask::Put, majority.clone());
        let mut leaders = probe(Ask::IsLeader, majority);
        let old_leader = match isolate {
            Some(_) => {
                let base = vec![cluster.endpoint(leader)?.to_owned()];
                Some([
                    probe(Ask::Put, base.clone()),
                    probe(Ask::ReadLinearizable, base.clone()),
                    probe(Ask::IsLeader, base),
                ])
            }
            None => None,
        };
        // A random phase: the fault falls anywhere between two probes, not
        // always right after one (which would make every round wait a
        // whole interval for the next).
        let phase = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        tokio::time::sleep(WARMUP + phase).await;
        let before = puts.drain();
        if !before.iter().any(|p| p.outcome == Outcome::Ok) {
            puts.stop().await;
            leaders.stop().await;
            bail!("round {round}: no probe succeeded before the fault; the cluster is not taking writes");
        }
        let fault = Instant::now();
        match args.stop {
            StopWith::Term => cluster.signal(leader, Signal::SIGTERM)?,
            StopWith::Kill => cluster.signal(leader, Signal::SIGKILL)?,
            StopWith::Isolate => {
                cluster.net().context("the cluster runs without proxies")?.isolate(&NODE_IDS, leader)
            }
        }
        let first_write = puts.first_ok_after(fault, round_timeout).await.map(|at| at - fault);
        let leaderless = leaders.first_ok_after(fault, round_timeout).await.map(|at| at - fault);
        puts.stop().await;
        leaders.stop().await;
        let mut old = None;
        if let (Some(isolated), Some([mut puts, mut reads, mut status])) = (isolate, old_leader) {
            let heal = fault + isolated;
            tokio::time::sleep_until(tokio::time::Instant::from_std(heal)).await;
            cluster.net().context("the cluster runs without proxies")?.heal();
            let answered = |p: &mut Probes| -> Vec<Probe> {
                p.drain().into_iter().filter(|p| p.sent >= fault && p.done < heal).collect()
            };
            let (puts_seen, reads_seen, status_seen) =
                (answered(&mut puts), answered(&mut reads), answered(&mut status));
            for p in [puts, reads, status] {
                p.stop().await;
            }
            let since = |p: &Probe| (p.done - fault).as_secs_f64() * 1e3;
            let last = |seen: &[Probe], o: Outcome| {
                seen.iter().filter(|p| p.outcome == o).map(since).reduce(f64::max)
            };
            let first = |seen: &[Probe], o: Outcome| {
                seen.iter().filter(|p| p.outcome == o).map(since).reduce(f64::min)
            };
            old = Some(OldLeaderRound {
                last_write_ok_ms: last(&puts_seen, Outcome::Ok),
                first_write_refusal_ms: first(&puts_seen, Outcome::Refused),
                last_read_ok_ms: last(&reads_seen, Outcome::Ok),
                first_read_refusal_ms: first(&reads_seen, Outcome::Refused),
                stepped_down_ms: first(&status_seen, Outcome::Refused),
            });
        }
        let ms =
            |d: Option<Duration>| d.map_or("none".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
        let old_note = old.map_or(String::new(), |o| {
            format!(
                "; old leader stepped down after {}",
                o.stepped_down_ms.map_or("-".to_owned(), |v| format!("{v:.1} ms"))
            )
        });
        match first_write {
            Some(_) => eprintln!(
                "{tag} round {round}/{}: leader node {leader}, first put after {}, a leader after {}{old_note}",
                args.rounds,
                ms(first_write),
                ms(leaderless)
            ),
            None => eprintln!(
                "{tag} round {round}/{}: leader node {leader}: no put succeeded within {round_timeout:?}{old_note}",
                args.rounds
            ),
        }
        out.push(Round { first_write, leaderless, old_leader: old });
        match args.stop {
            StopWith::Isolate => cluster.wait_healthy().await?,
            StopWith::Term | StopWith::Kill => {
                if !cluster.wait_exit(leader).await? && args.stop == StopWith::Term {
                    eprintln!(
                        "{tag}: node {leader} did not exit within {:?} of SIGTERM; killed it",
                        cluster::SETTLE_TIMEOUT
                    );
                }
                cluster.restart(leader).await?;
            }
        }
    }
    Ok(out)
}

/// What a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// A put of a fresh key.
    Put,
    /// A linearizable read of one key (that may not exist).
    ReadLinearizable,
    /// The node's status: does it say it leads?
    IsLeader,
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The put or read succeeded; the node says it leads.
    Ok,
    /// An answer that refused the put or read; the node says it does not
    /// lead.
    Refused,
    /// No answer within [`PROBE_TIMEOUT`], or no connection.
    NoAnswer,
}

/// One probe's outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    sent: Instant,
    done: Instant,
    outcome: Outcome,
}

/// Open-loop probes to a set of endpoints, running until stopped.
pub(super) struct Probes {
    rx: mpsc::UnboundedReceiver<Probe>,
    stop: Arc<AtomicBool>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Probes {
    /// Every `interval`, sends `ask` to each of `bases`, whether or not
    /// the earlier ones were answered.
    pub(super) fn start(
        http: &reqwest::Client,
        protocol: Protocol,
        ask: Ask,
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
                            let outcome = send(&http, protocol, ask, &base, n).await;
                            let _ = tx.send(Probe { sent, done: Instant::now(), outcome });
                        });
                    }
                }
            })
        };
        Probes { rx, stop, ticker }
    }

    /// The probes answered so far.
    pub(super) fn drain(&mut self) -> Vec<Probe> {
        let mut out = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            out.push(p);
        }
        out
    }

    /// When the first probe sent at or after `since` succeeded, waiting at
    /// most `within` after `since`.
    pub(super) async fn first_ok_after(&mut self, since: Instant, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::from_std(since + within);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(p)) if p.outcome == Outcome::Ok && p.sent >= since && p.done <= since + within => {
                    return Some(p.done)
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Stops sending probes (those in flight finish on their own).
    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.ticker.await;
    }
}

/// One probe through `base`; `n` numbers the put's key.
async fn send(http: &reqwest::Client, protocol: Protocol, ask: Ask, base: &str, n: u64) -> Outcome {
    let json = |r: reqwest::RequestBuilder| r.header(CONTENT_TYPE, "application/json");
    let request = match (ask, protocol) {
        (Ask::IsLeader, _) => {
            return match node_view(http, protocol, base).await {
                Ok(view) if view.is_leader => Outcome::Ok,
                Ok(_) => Outcome::Refused,
                Err(_) => Outcome::NoAnswer,
            }
        }
        (Ask::Put, Protocol::Kv) => {
            json(http.put(format!("{base}/v1/kv/failover-probe/{n}"))).body(r#"{"value":"x"}"#)
        }
        (Ask::Put, Protocol::Etcd) => json(http.post(format!("{base}/v3/kv/put"))).body(format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(format!("failover-probe/{n}").as_bytes()),
            b64(b"x")
        )),
        (Ask::ReadLinearizable, Protocol::Kv) => {
            http.get(format!("{base}/v1/kv/failover-probe/read?consistency=linearizable"))
        }
        (Ask::ReadLinearizable, Protocol::Etcd) => json(http.post(format!("{base}/v3/kv/range")))
            .body(format!(r#"{{"key":"{}","serializable":false}}"#, b64(b"failover-probe/read"))),
    };
    let Ok(resp) = request.send().await else { return Outcome::NoAnswer };
    let status = resp.status();
    let Ok(body) = resp.bytes().await else { return Outcome::NoAnswer };
    // etcd's gateway answers a failed put or read with a non-2xx status
    // too; kv answers the read of a missing key with 404 key_not_found.
    let missing = status == reqwest::StatusCode::NOT_FOUND
        && std::str::from_utf8(&body).is_ok_and(|b| b.contains(kv_client::api::codes::KEY_NOT_FOUND));
    match status.is_success() || (ask == Ask::ReadLinearizable && missing) {
        true => Outcome::Ok,
        false => Outcome::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(first_write_ms: Option<u64>, leaderless_ms: Option<u64>) -> Round {
        Round {
            first_write: first_write_ms.map(Duration::from_millis),
            leaderless: leaderless_ms.map(Duration::from_millis),
            old_leader: None,
        }
    }

    #[test]
    fn percentiles_come_from_the_samples() {
        let mut rounds: Vec<Round> = (1..=10).map(|ms| round(Some(ms * 10), Some(ms * 5))).collect();
        rounds.push(round(None, None));
        let r = summarize(System::Kv, Some(150), None, &rounds);
        assert_eq!(r.samples_ms.len(), 10);
        // An HDR histogram of 3 significant digits: within 0.1%.
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= want / 1000.0);
        let w = r.first_write;
        assert!(near(w.p50_ms, 50.0) && near(w.p90_ms, 90.0), "{r:?}");
        assert!(near(w.min_ms, 10.0) && near(w.max_ms, 100.0), "{r:?}");
        assert!(near(r.leaderless.p50_ms, 25.0) && near(r.leaderless.max_ms, 50.0), "{r:?}");
        assert_eq!(r.failed_rounds, 1);
        assert_eq!(r.label(), "kv T=150-300 ms");
        let none = summarize(System::Etcd, None, None, &[round(None, None)]);
        assert_eq!((none.first_write.p50_ms, none.first_write.max_ms, none.failed_rounds), (None, None, 1));
        assert_eq!(none.label(), "etcd defaults");
    }

    #[test]
    fn the_table_has_one_row_per_system_and_their_ratio() {
        let report = FailoverReport {
            stop: StopWith::Term,
            rounds: 2,
            probe_interval_ms: 10,
            cpus: 2,
            load_average: Some(0.5),
            heartbeat_ms: Some(30),
            systems: vec![
                summarize(System::Kv, Some(150), None, &[round(Some(8), Some(3)), round(Some(12), Some(4))]),
                summarize(System::Etcd, Some(150), None, &[round(Some(4), None), round(Some(6), None)]),
            ],
        };
        let text = report.human();
        assert!(text.starts_with("SIGTERM to the leader"), "{text}");
        assert!(text.contains("heartbeat 30 ms"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("kv ") && l.contains("12.0") && l.contains("4.0")),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("etcd ") && l.contains("6.0")), "{text}");
        assert!(text.contains("kv p90 / etcd p90 = 2.00"), "{text}");
        assert!(!text.contains("old leader"), "{text}");
    }

    #[test]
    fn an_isolate_report_has_a_table_on_the_old_leader() {
        let old = |stepped: Option<f64>| OldLeaderRound {
            first_write_refusal_ms: Some(40.0),
            stepped_down_ms: stepped,
            ..OldLeaderRound::default()
        };
        let rounds = [
            Round { old_leader: Some(old(Some(300.0))), ..round(Some(500), Some(400)) },
            Round { old_leader: Some(old(None)), ..round(Some(600), Some(450)) },
        ];
        let report = FailoverReport {
            stop: StopWith::Isolate,
            rounds: 2,
            probe_interval_ms: 10,
            cpus: 2,
            load_average: None,
            heartbeat_ms: None,
            systems: vec![summarize(System::Kv, None, Some(5000), &rounds)],
        };
        let text = report.human();
        assert!(
            text.starts_with("the leader of a 3-node cluster cut off from the other two for 5000 ms"),
            "{text}"
        );
        let row = text.lines().filter(|l| l.starts_with("kv ")).nth(1).unwrap_or_default();
        assert!(row.contains("40 / 40") && row.contains("300 / 300 [1]") && row.contains('-'), "{text}");
    }

    #[test]
    fn the_default_isolation_is_a_few_election_timeouts() {
        assert_eq!(isolate_for(Some(700), Some(150)), Duration::from_millis(700));
        assert_eq!(isolate_for(None, Some(500)), Duration::from_millis(2000));
        assert_eq!(isolate_for(None, Some(150)), MIN_DEFAULT_ISOLATE);
        assert_eq!(isolate_for(None, None), DEFAULT_ISOLATE);
    }

    #[test]
    fn each_target_is_measured_once_in_the_order_given() {
        assert_eq!(cluster::dedup(&[System::Etcd, System::Kv, System::Etcd]), [System::Etcd, System::Kv]);
    }
}
