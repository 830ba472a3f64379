//! `kvctl bench elections`: the other side of the election timeout
//! trade-off. A short election timeout makes failover fast (`kvctl bench
//! failover`), but a follower that merely stalls for a moment (a garbage
//! collection, a busy core, a slow disk) then times out and starts an
//! election that no failure called for; Raft §9.3 asks for a timeout well
//! above the broadcast time for this reason. This scenario counts those
//! *needless elections*.
//!
//! # What is measured
//!
//! For each election timeout T (`--election-timeout-ms 150,300,500,1000`,
//! with `--heartbeat-ms`, mapped onto each system as `kvctl bench failover`
//! maps them: etcd T, kv T-2T) and each system, a fresh 3-node cluster, and
//! for `--duration` seconds:
//!
//! * a heavy write load: `--clients` closed-loop clients putting 256-byte
//!   values, spread over the three nodes (`kvctl bench`'s load, [`run_load`]);
//! * every `--pause-every-ms` (jittered by ±50%), one follower (a node that
//!   did not say it leads when last asked) is paused with SIGSTOP for a
//!   random [`PAUSE_FRACTION`] of T, then resumed with SIGCONT. The pause
//!   is shorter than any election timeout the node could draw, so a
//!   follower that hears the leader's heartbeat right after it resumes has
//!   no reason to start an election; no node ever fails. Two options
//!   change what stalls: `--pause leader` pauses the node that last said
//!   it leads instead (its followers hear nothing meanwhile), and
//!   `--pause-ms LO-HI` draws every pause from a fixed range instead of a
//!   fraction of T, as a garbage collection or a slow disk stalls a
//!   process for as long as it does whatever the timeout; then a pause
//!   longer than T is no failure either, only a stall;
//! * every [`WATCH_INTERVAL`], each node is asked for its status (its term,
//!   and whether it leads).
//!
//! Then:
//!
//! * **elections**: the highest term any node reported at the end less the
//!   highest before the load: every term is started by one election, won
//!   or not, so this counts elections even between two polls;
//! * **leaders elected**: how often a node was seen leading in a term
//!   higher than the last leader seen (an election won; polled, so two
//!   quick ones may count as one).
//!
//! Both are given per minute of the load. Every one of them is needless:
//! none was called for by a failure. Some come from the load alone (a
//! machine whose cores are busy delays heartbeats as a pause does).
//!
//! With failover times for the same timeouts (`--failover-rounds N`
//! measures them in this run with `kvctl bench failover --stop kill`, or
//! `--failover-json FILE` reads a report of an earlier `kvctl bench
//! failover --json`), `--plot FILE.svg` draws one point per system and
//! timeout: needless elections per minute against the failover p50, the
//! trade-off an operator chooses T on.
//!
//! A shortcut: the node is chosen from the last status answers, so a
//! follower's pause can hit a node that has just become leader (and a
//! leader's one that has just lost office).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::cluster::{self, node_view, Cluster, ClusterArgs, NodeView, System, WorkDir, NODE_IDS};
use super::failover::{run_failover, FailoverArgs, FailoverReport, StopWith};
use super::plot;
use super::{run_load, LoadConfig, Route, Stop, Target};

/// A pause lasts this fraction of the election timeout T, drawn uniformly:
/// with a heartbeat interval of at most T/4, a pause plus the wait for the
/// next heartbeat stays below T.
pub const PAUSE_FRACTION: (f64, f64) = (0.25, 0.75);

/// How often every node is asked for its status.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// How long a status request may take; a paused node does not answer.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long one put of the load may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Which node a pause stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseWho {
    /// A node that did not say it leads when last asked.
    Follower,
    /// The node that last said it leads.
    Leader,
}

/// `kvctl bench elections`' options (`--json` is kvctl's global option).
#[derive(Debug, Clone, Args)]
pub struct ElectionsArgs {
    /// The systems and where they run.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Both systems' heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,
    /// Election timeouts T to measure, comma-separated, each on a fresh
    /// cluster (etcd: random in [T, 2T); kv: --election-timeout-ms T-2T).
    #[arg(long, value_delimiter = ',', default_value = "150,300,500,1000", value_parser = clap::value_parser!(u64).range(1..))]
    pub election_timeout_ms: Vec<u64>,
    /// Seconds of load (and pauses) per system and timeout.
    #[arg(long, default_value_t = 60.0, value_parser = super::parse_positive_seconds)]
    pub duration: f64,
    /// Concurrent closed-loop writers.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub clients: u64,
    /// Milliseconds between the starts of two pauses, on average (each
    /// wait is drawn from half to one and a half times this).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pause_every_ms: u64,
    /// Which node a pause stops: a follower or the leader.
    #[arg(long, value_enum, default_value_t = PauseWho::Follower)]
    pub pause: PauseWho,
    /// Draw every pause's length from LO-HI milliseconds (or exactly N),
    /// whatever T is [default: 25-75% of T].
    #[arg(long, value_parser = parse_range_ms)]
    pub pause_ms: Option<(u64, u64)>,
    /// Also measure failover (SIGKILL to the leader, `kvctl bench failover
    /// --stop kill`) this many rounds per system and timeout, for the plot.
    #[arg(long, default_value_t = 0, conflicts_with = "failover_json")]
    pub failover_rounds: u32,
    /// Failover times for the plot from an earlier `kvctl bench failover
    /// --json` report, matched by system and election timeout.
    #[arg(long)]
    pub failover_json: Option<PathBuf>,
    /// Draw needless elections per minute against the failover p50, one
    /// point per system and timeout, into this SVG file (needs failover
    /// times).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seed for the pauses and the load's keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One system at one election timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionsResult {
    /// The system.
    pub target: System,
    /// Its election timeout T, in milliseconds.
    pub election_timeout_ms: u64,
    /// Seconds the load ran.
    pub seconds: f64,
    /// Nodes paused.
    pub pauses: u32,
    /// The pauses' mean length, in milliseconds.
    pub mean_pause_ms: f64,
    /// Elections started: the highest term at the end less the highest
    /// before the load.
    pub elections: u64,
    /// New leaders seen (an election won).
    pub leaders_elected: u64,
    /// `elections` per minute: the needless elections.
    pub elections_per_min: f64,
    /// `leaders_elected` per minute.
    pub leaders_elected_per_min: f64,
    /// Successful puts per second of the load.
    pub writes_per_sec: f64,
    /// Puts that failed.
    pub write_errors: u64,
    /// The failover p50 at this timeout (SIGKILL to the leader, first
    /// write), in milliseconds, if measured or read.
    pub failover_p50_ms: Option<f64>,
}

/// What a run measured. `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionsReport {
    /// The heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Concurrent writers.
    pub clients: u64,
    /// Mean milliseconds between pauses.
    pub pause_every_ms: u64,
    /// Which node a pause stopped.
    #[serde(default = "follower")]
    pub pause: PauseWho,
    /// The range pause lengths were drawn from, in milliseconds; `None`:
    /// [`PAUSE_FRACTION`] of T.
    #[serde(default)]
    pub pause_ms: Option<(u64, u64)>,
    /// CPUs of this machine.
    pub cpus: usize,
    /// The 1-minute load average when the run started (Linux).
    pub load_average: Option<f64>,
    /// One entry per election timeout and system, in the order measured.
    pub results: Vec<ElectionsResult>,
    /// The failover rounds measured in this run (`--failover-rounds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
}

impl ElectionsReport {
    /// The report for humans: a line of settings and a row per system and
    /// timeout.
    pub fn human(&self) -> String {
        let load = self.load_average.map_or(String::new(), |l| format!(", load average {l:.2} at the start"));
        let length = match self.pause_ms {
            Some((lo, hi)) => format!("{lo}-{hi} ms"),
            None => format!("{:.0}-{:.0}% of T", PAUSE_FRACTION.0 * 100.0, PAUSE_FRACTION.1 * 100.0),
        };
        let who = match self.pause {
            PauseWho::Follower => "a follower",
            PauseWho::Leader => "the leader",
        };
        let mut out = format!(
            "{} writers on a 3-node cluster, {who} paused (SIGSTOP) for {length} about every {} ms, \
             heartbeat {} ms; elections: terms started, per minute; leaders: new leaders seen, per minute; \
             {} CPUs{load}\n\n",
            self.clients, self.pause_every_ms, self.heartbeat_ms, self.cpus
        );
        out += &format!(
            "{:<8}{:>7}{:>8}{:>9}{:>14}{:>12}{:>11}{:>9}{:>18}\n",
            "system",
            "T ms",
            "pauses",
            "seconds",
            "elections/min",
            "leaders/min",
            "writes/s",
            "errors",
            "failover p50 ms"
        );
        for r in &self.results {
            out += &format!(
                "{:<8}{:>7}{:>8}{:>9.0}{:>14.2}{:>12.2}{:>11.0}{:>9}{:>18}\n",
                r.target.name(),
                r.election_timeout_ms,
                r.pauses,
                r.seconds,
                r.elections_per_min,
                r.leaders_elected_per_min,
                r.writes_per_sec,
                r.write_errors,
                r.failover_p50_ms.map_or("-".to_owned(), |v| format!("{v:.1}")),
            );
        }
        out
    }
}

/// Runs the scenario for every timeout and system, then failover if asked,
/// and draws `--plot`.
pub async fn run_elections(args: &ElectionsArgs) -> anyhow::Result<ElectionsReport> {
    let targets = args.cluster.targets()?;
    if args.election_timeout_ms.is_empty() {
        bail!("--election-timeout-ms names no timeout");
    }
    if args.plot.is_some() && args.failover_rounds == 0 && args.failover_json.is_none() {
        bail!("--plot needs failover times: --failover-rounds N or --failover-json FILE");
    }
    let load_average = cluster::load_average();
    let workdir = WorkDir::new(args.cluster.dir.clone(), "kvctl-elections")?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut results = Vec::new();
    for t in cluster::dedup(&args.election_timeout_ms) {
        for &target in &targets {
            let dir = workdir.path.join(format!("{}-{t}", target.name()));
            let options = args.cluster.options(Some((args.heartbeat_ms, t)), false);
            let mut cluster = Cluster::up(target, &options, &dir).await?;
            let outcome = one(&mut cluster, args, t, &mut rng).await;
            cluster.down().await;
            let r =
                outcome.with_context(|| format!("{} (data and logs in {})", target.name(), dir.display()))?;
            eprintln!(
                "{} T={t}: {} elections, {} leaders elected in {:.0} s ({} pauses)",
                target.name(),
                r.elections,
                r.leaders_elected,
                r.seconds,
                r.pauses
            );
            results.push(r);
        }
    }
    let failover = match (args.failover_rounds, &args.failover_json) {
        (0, None) => None,
        (0, Some(path)) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let report: FailoverReport = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a `kvctl bench failover --json` report", path.display()))?;
            if report.heartbeat_ms != Some(args.heartbeat_ms) {
                eprintln!(
                    "kvctl: bench elections: {} was measured with heartbeat {:?} ms, not {} ms",
                    path.display(),
                    report.heartbeat_ms,
                    args.heartbeat_ms
                );
            }
            Some(report)
        }
        (rounds, _) => {
            let failover = FailoverArgs {
                cluster: ClusterArgs { dir: Some(workdir.path.join("failover")), ..args.cluster.clone() },
                rounds,
                stop: StopWith::Kill,
                isolate_ms: None,
                probe_interval_ms: 10,
                round_timeout_s: 10,
                heartbeat_ms: Some(args.heartbeat_ms),
                election_timeout_ms: args.election_timeout_ms.clone(),
                plot: None,
            };
            Some(run_failover(&failover).await?)
        }
    };
    if let Some(f) = &failover {
        for r in &mut results {
            r.failover_p50_ms = f
                .systems
                .iter()
                .find(|s| s.target == r.target && s.election_timeout_ms == Some(r.election_timeout_ms))
                .and_then(|s| s.first_write.p50_ms);
        }
    }
    if let Some(path) = &args.plot {
        let points: Vec<plot::Point> = results
            .iter()
            .filter_map(|r| {
                Some(plot::Point {
                    label: format!(
                        "{} {}-{} ms",
                        r.target.name(),
                        r.election_timeout_ms,
                        2 * r.election_timeout_ms
                    ),
                    series: r.target.name().to_owned(),
                    x: r.elections_per_min,
                    y: r.failover_p50_ms?,
                })
            })
            .collect();
        if points.is_empty() {
            bail!("no failover time matches a system and timeout measured here; nothing to plot");
        }
        let who = match args.pause {
            PauseWho::Follower => "a follower",
            PauseWho::Leader => "the leader",
        };
        let length = match args.pause_ms {
            Some((lo, hi)) => format!("{lo}-{hi} ms"),
            None => format!("{:.0}-{:.0}% of T", PAUSE_FRACTION.0 * 100.0, PAUSE_FRACTION.1 * 100.0),
        };
        let title = format!(
            "Election timeout trade-off (heartbeat {} ms, {} writers, {who} paused {length} every ~{} ms)",
            args.heartbeat_ms, args.clients, args.pause_every_ms
        );
        let axes = ("needless elections per minute", "failover p50, ms (SIGKILL to the first write)");
        plot::tradeoff(path, &title, axes, &points).with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(ElectionsReport {
        heartbeat_ms: args.heartbeat_ms,
        clients: args.clients,
        pause_every_ms: args.pause_every_ms,
        pause: args.pause,
        pause_ms: args.pause_ms,
        cpus: cluster::cpus(),
        load_average,
        results,
        failover,
    })
}

/// `--pause-ms`: `LO-HI` or `N` milliseconds.
fn parse_range_ms(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?} is not LO-HI or N milliseconds (100-400, 200)");
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi) =
        (lo.trim().parse::<u64>().map_err(|_| bad())?, hi.trim().parse::<u64>().map_err(|_| bad())?);
    match 0 < lo && lo <= hi {
        true => Ok((lo, hi)),
        false => Err(bad()),
    }
}

/// The default of [`ElectionsReport::pause`] in reports that predate it.
fn follower() -> PauseWho {
    PauseWho::Follower
}

/// What the status answers have shown so far.
#[derive(Debug, Default)]
struct Watch {
    /// The highest term any node reported.
    max_term: u64,
    /// The term of the last leader seen.
    leader_term: u64,
    /// New leaders seen.
    leaders_elected: u64,
    /// Each node's last answer.
    last: BTreeMap<u64, NodeView>,
}

impl Watch {
    fn see(&mut self, id: u64, view: NodeView) {
        self.max_term = self.max_term.max(view.term);
        if view.is_leader && view.term > self.leader_term {
            if self.leader_term > 0 {
                self.leaders_elected += 1;
            }
            self.leader_term = view.term;
        }
        self.last.insert(id, view);
    }

    /// The nodes whose last answer said they lead (`leader`) or not.
    fn saying(&self, leader: bool) -> Vec<u64> {
        NODE_IDS
            .iter()
            .copied()
            .filter(|id| self.last.get(id).is_some_and(|v| v.is_leader == leader))
            .collect()
    }
}

/// One system at one timeout: the load, the pauses and the watch.
async fn one(
    cluster: &mut Cluster,
    args: &ElectionsArgs,
    t: u64,
    rng: &mut StdRng,
) -> anyhow::Result<ElectionsResult> {
    let http = kv_client::tls::http_client_builder(None)
        .no_proxy()
        .timeout(STATUS_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let mut watch = Watch::default();
    for id in NODE_IDS {
        let view = node_view(&http, cluster.protocol(), cluster.endpoint(id)?).await?;
        watch.see(id, view);
    }
    let baseline = watch.max_term;
    // Count leaders elected from here on.
    watch.leaders_elected = 0;

    let (tx, mut views) = mpsc::unbounded_channel();
    let watcher = {
        let (http, protocol) = (http.clone(), cluster.protocol());
        let bases: Vec<(u64, String)> = NODE_IDS
            .iter()
            .map(|&id| (id, cluster.endpoint(id).map(str::to_owned)))
            .map(|(id, e)| e.map(|e| (id, e)))
            .collect::<anyhow::Result<_>>()?;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for (id, base) in &bases {
                    let (http, base, tx, id) = (http.clone(), base.clone(), tx.clone(), *id);
                    tokio::spawn(async move {
                        if let Ok(view) = node_view(&http, protocol, &base).await {
                            let _ = tx.send((id, view));
                        }
                    });
                }
            }
        })
    };

    let mut cfg = LoadConfig::new(
        match cluster.system {
            System::Kv => Target::Kv,
            System::Etcd => Target::Etcd,
        },
        cluster.endpoints().to_vec(),
    );
    cfg.clients = usize::try_from(args.clients).context("--clients")?;
    cfg.stop = Stop::After(Duration::from_secs_f64(args.duration));
    cfg.writes_to = Route::Spread;
    cfg.keys = 4096;
    cfg.request_timeout = REQUEST_TIMEOUT;
    cfg.seed = rng.gen();
    let started = Instant::now();
    let load = tokio::spawn(async move { run_load(&cfg).await });
    tokio::pin!(load);

    let every = args.pause_every_ms as f64;
    let mut next_pause =
        Instant::now() + Duration::from_millis(rng.gen_range(every * 0.5..every * 1.5) as u64);
    let mut paused: Option<(u64, Instant)> = None;
    let mut pauses = 0u32;
    let mut paused_for = Duration::ZERO;
    let outcome = loop {
        let wake = paused.map_or(next_pause, |(_, until)| until);
        tokio::select! {
            done = &mut load => break done,
            Some((id, view)) = views.recv() => watch.see(id, view),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                match paused.take() {
                    Some((id, _)) => {
                        cluster.signal(id, Signal::SIGCONT)?;
                        next_pause = Instant::now()
                            + Duration::from_millis(rng.gen_range(every * 0.5..every * 1.5) as u64);
                    }
                    None => {
                        let candidates = watch.saying(args.pause == PauseWho::Leader);
                        if candidates.is_empty() {
                            next_pause = Instant::now() + WATCH_INTERVAL;
                            continue;
                        }
                        let id = candidates[rng.gen_range(0..candidates.len())];
                        let length = match args.pause_ms {
                            Some((lo, hi)) => Duration::from_millis(rng.gen_range(lo..=hi)),
                            None => Duration::from_millis(t).mul_f64(rng.gen_range(PAUSE_FRACTION.0..PAUSE_FRACTION.1)),
                        };
                        cluster.signal(id, Signal::SIGSTOP)?;
                        paused = Some((id, Instant::now() + length));
                        pauses += 1;
                        paused_for += length;
                    }
                }
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some((id, _)) = paused {
        cluster.signal(id, Signal::SIGCONT)?;
    }
    watcher.abort();
    // The last answers still on their way.
    tokio::time::sleep(STATUS_TIMEOUT).await;
    while let Ok((id, view)) = views.try_recv() {
        watch.see(id, view);
    }
    let report = outcome.context("the load task")??;
    let per_min = |n: u64| n as f64 * 60.0 / seconds;
    let elections = watch.max_term.saturating_sub(baseline);
    Ok(ElectionsResult {
        target: cluster.system,
        election_timeout_ms: t,
        seconds,
        pauses,
        mean_pause_ms: if pauses == 0 { 0.0 } else { paused_for.as_secs_f64() * 1e3 / f64::from(pauses) },
        elections,
        leaders_elected: watch.leaders_elected,
        elections_per_min: per_min(elections),
        leaders_elected_per_min: per_min(watch.leaders_elected),
        writes_per_sec: report.ops_per_sec,
        write_errors: report.errors,
        failover_p50_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(is_leader: bool, term: u64) -> NodeView {
        NodeView { is_leader, term, leader: None }
    }

    #[test]
    fn the_watch_counts_new_leaders_and_the_highest_term() {
        let mut w = Watch::default();
        w.see(1, view(true, 2));
        w.see(2, view(false, 2));
        assert_eq!((w.max_term, w.leaders_elected), (2, 0));
        // A candidate's term rises without a leader: an election, not a
        // new leader.
        w.see(3, view(false, 4));
        w.see(1, view(true, 2));
        assert_eq!((w.max_term, w.leaders_elected), (4, 0));
        w.see(2, view(true, 5));
        w.see(2, view(true, 5));
        assert_eq!((w.max_term, w.leaders_elected), (5, 1));
        assert_eq!(w.saying(false), [3]);
        assert_eq!(w.saying(true), [1, 2], "nodes 1 and 2 said last that they lead");
    }

    #[test]
    fn pause_lengths_are_a_range_or_one_number() {
        assert_eq!(parse_range_ms("100-400"), Ok((100, 400)));
        assert_eq!(parse_range_ms("200"), Ok((200, 200)));
        for bad in ["400-100", "0", "x", "1-2-3", ""] {
            assert!(parse_range_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_system_and_timeout() {
        let r = |target, t, per_min| ElectionsResult {
            target,
            election_timeout_ms: t,
            seconds: 60.0,
            pauses: 20,
            mean_pause_ms: 0.5 * t as f64,
            elections: 3,
            leaders_elected: 2,
            elections_per_min: per_min,
            leaders_elected_per_min: 2.0,
            writes_per_sec: 1000.0,
            write_errors: 4,
            failover_p50_ms: Some(250.0),
        };
        let report = ElectionsReport {
            heartbeat_ms: 30,
            clients: 32,
            pause_every_ms: 3000,
            pause: PauseWho::Leader,
            pause_ms: Some((100, 400)),
            cpus: 2,
            load_average: None,
            results: vec![r(System::Kv, 150, 3.0), r(System::Etcd, 1000, 0.0)],
            failover: None,
        };
        let text = report.human();
        assert!(
            text.contains("the leader paused (SIGSTOP) for 100-400 ms") && text.contains("heartbeat 30 ms"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("kv ") && l.contains(" 150 ") && l.contains("3.00")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("etcd ") && l.contains("1000") && l.contains("250.0")),
            "{text}"
        );
    }
}
