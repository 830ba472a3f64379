//! The command line: `sim run` over a range of seeds, `sim replay` of one.
//!
//! Exit codes as `jepsen`'s: 0 every seed valid, 1 some seed invalid, 2 a
//! seed could not be judged (or the command failed).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use jepsen_checker::Verdict;

use crate::cluster::NodeOptions;
use crate::nemesis::Fault;
use crate::run::{run_seed, SeedReport, SimOptions};
use crate::workload::Workload;

/// Exit code: every seed valid.
pub const EXIT_VALID: u8 = 0;
/// Exit code: some seed invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: some seed could not be judged, or the command failed.
pub const EXIT_UNKNOWN: u8 = 2;

/// Deterministic simulation of whole raft-core clusters.
#[derive(Debug, Parser)]
#[command(name = "sim", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run many seeds and summarise; print the replay command of each failure.
    Run(RunArgs),
    /// Rerun one seed with a full trace; write its history, trace and report.
    Replay(ReplayArgs),
    /// Find a smaller run of a failing seed that still fails: fewer
    /// operations, fewer nodes, fewer kinds of fault.
    Shrink(ShrinkArgs),
}

/// What every simulated test shares.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Nodes in each cluster.
    #[arg(long, default_value_t = 5)]
    pub nodes: u64,
    /// Client operations per seed (the final reads come on top).
    #[arg(long, default_value_t = 500)]
    pub ops: u64,
    /// `register`, `set` or `session`; without it, seeds take them in turn.
    #[arg(long, value_enum)]
    pub workload: Option<Workload>,
    /// Fault kinds, comma-separated: partition, crash, disk, power, net; `all`; or
    /// `none`.
    #[arg(long, default_value = "all", value_parser = parse_faults)]
    pub faults: FaultList,
    /// Negative control: linearizable reads served from local state.
    #[arg(long)]
    pub unsafe_local_reads: bool,
    /// Negative control: appends acknowledged before they are on disk.
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// Negative control: the state machine applies retried writes again.
    #[arg(long)]
    pub unsafe_no_dedup: bool,
    /// Negative control: the log writer reports appends durable before it
    /// writes them.
    #[arg(long)]
    pub unsafe_flush_before_commit: bool,
}

/// A parsed `--faults`.
#[derive(Debug, Clone)]
pub struct FaultList(pub Vec<Fault>);

fn parse_faults(text: &str) -> Result<FaultList, String> {
    match text {
        "all" => return Ok(FaultList(Fault::ALL.to_vec())),
        "none" | "" => return Ok(FaultList(Vec::new())),
        _ => {}
    }
    let mut faults = Vec::new();
    for name in text.split(',') {
        let fault = Fault::ALL.into_iter().find(|f| f.name() == name.trim()).ok_or_else(|| {
            format!("unknown fault {name:?}: use partition, crash, disk, power, net, all or none")
        })?;
        faults.push(fault);
    }
    faults.sort();
    faults.dedup();
    Ok(FaultList(faults))
}

fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let number = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("not a seed: {s:?} ({e})"));
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a >= b {
                return Err(format!("the range {text} holds no seed"));
            }
            Ok(a..b)
        }
        None => {
            let a = number(text)?;
            Ok(a..a.saturating_add(1))
        }
    }
}

/// `sim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Seeds to run: `A..B` (B excluded) or one seed.
    #[arg(long, default_value = "0..100", value_parser = parse_seeds)]
    pub seeds: Range<u64>,
    /// The test.
    #[command(flatten)]
    pub test: TestArgs,
    /// Seeds run at once, each on its own thread (default: one per CPU).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Stop after this many failing seeds.
    #[arg(long, default_value_t = 10)]
    pub max_failures: usize,
    /// Write the summary as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `sim replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The seed to rerun.
    #[arg(long)]
    pub seed: u64,
    /// The test (must match the run that failed).
    #[command(flatten)]
    pub test: TestArgs,
    /// Where to write `history.jsonl`, `trace.txt`, `results.json` and the
    /// plots.
    #[arg(long, default_value = "sim-replay")]
    pub out: PathBuf,
}

/// `sim shrink`.
#[derive(Debug, Args)]
pub struct ShrinkArgs {
    /// The failing seed.
    #[arg(long)]
    pub seed: u64,
    /// The test it failed in.
    #[command(flatten)]
    pub test: TestArgs,
}

impl TestArgs {
    fn options(&self) -> SimOptions {
        SimOptions {
            nodes: self.nodes,
            ops: self.ops,
            workload: self.workload,
            faults: self.faults.0.clone(),
            node_options: NodeOptions {
                unsafe_no_fsync: self.unsafe_no_fsync,
                unsafe_no_dedup: self.unsafe_no_dedup,
                unsafe_flush_before_commit: self.unsafe_flush_before_commit,
            },
            unsafe_local_reads: self.unsafe_local_reads,
            trace: false,
        }
    }

    /// The flags that reproduce this test, for a replay command.
    fn flags(&self) -> String {
        let mut flags = format!("--nodes {} --ops {}", self.nodes, self.ops);
        if let Some(w) = self.workload {
            flags += &format!(" --workload {}", w.name());
        }
        let faults: Vec<&str> = self.faults.0.iter().map(|f| f.name()).collect();
        flags +=
            &format!(" --faults {}", if faults.is_empty() { "none".to_string() } else { faults.join(",") });
        for (on, flag) in [
            (self.unsafe_local_reads, " --unsafe-local-reads"),
            (self.unsafe_no_fsync, " --unsafe-no-fsync"),
            (self.unsafe_no_dedup, " --unsafe-no-dedup"),
            (self.unsafe_flush_before_commit, " --unsafe-flush-before-commit"),
        ] {
            if on {
                flags += flag;
            }
        }
        flags
    }
}

/// Runs a parsed command line and returns the exit code.
pub fn main(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Run(args) => run(&args),
        Command::Replay(args) => replay(&args),
        Command::Shrink(args) => shrink(&args),
    };
    match outcome {
        Ok(verdict) => ExitCode::from(exit_code(verdict)),
        Err(e) => {
            eprintln!("sim: {e:#}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

/// The exit code for a verdict.
pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Valid => EXIT_VALID,
        Verdict::Invalid => EXIT_INVALID,
        Verdict::Unknown => EXIT_UNKNOWN,
    }
}

/// What a `sim run` found, over all its seeds.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds whose verdict was not valid, with the verdict and the reason.
    pub failures: Vec<Failure>,
    /// Wall-clock seconds.
    pub real_secs: f64,
    /// Simulated seconds, summed over the seeds.
    pub simulated_secs: f64,
    /// Faults injected, by kind, summed.
    pub faults: BTreeMap<String, u64>,
    /// Client operations: ok, fail, info.
    pub outcomes: [u64; 3],
    /// Messages sent, lost, cut, refused, duplicated, reordered.
    pub net: crate::net::NetStats,
    /// What the disks did.
    pub disk: crate::run::DiskTotals,
}

/// One failing seed.
#[derive(Debug, serde::Serialize)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Its verdict.
    pub verdict: Verdict,
    /// What was wrong, in a line.
    pub why: String,
}

impl Summary {
    fn add(&mut self, r: &SeedReport) {
        self.seeds += 1;
        self.simulated_secs += r.simulated.as_secs_f64();
        for (k, v) in &r.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        for i in 0..3 {
            self.outcomes[i] += r.outcomes[i];
        }
        let n = &mut self.net;
        n.sent += r.net.sent;
        n.dropped += r.net.dropped;
        n.cut += r.net.cut;
        n.refused += r.net.refused;
        n.duplicated += r.net.duplicated;
        n.reordered += r.net.reordered;
        let d = &mut self.disk;
        d.writes += r.disk.writes;
        d.syncs += r.disk.syncs;
        d.power_cuts += r.disk.power_cuts;
        d.pages_lost += r.disk.pages_lost;
        d.pages_kept += r.disk.pages_kept;
        d.torn_writes += r.disk.torn_writes;
        if r.valid != Verdict::Valid {
            self.failures.push(Failure { seed: r.seed, verdict: r.valid, why: why(r) });
        }
    }

    /// The combined verdict.
    pub fn verdict(&self) -> Verdict {
        Verdict::all(self.failures.iter().map(|f| f.verdict))
    }
}

/// A one-line reason for a seed's verdict.
pub fn why(r: &SeedReport) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &r.error {
        parts.push(e.clone());
    }
    if let Some(c) = &r.check {
        if c.valid != Verdict::Valid {
            // Each checker's part of the report carries its verdict as
            // `verdict` (or `valid`); name the checkers that did not pass,
            // and the keys the linearizability checker rejected.
            let json = serde_json::to_value(c).unwrap_or_default();
            for (name, part) in json.as_object().into_iter().flatten().filter(|(name, _)| *name != "valid") {
                let verdict = part.get("verdict").or_else(|| part.get("valid")).and_then(|v| v.as_str());
                if verdict.is_some_and(|v| v != "valid") {
                    let bad_keys: Vec<String> = part
                        .get("keys")
                        .and_then(|k| k.as_array())
                        .into_iter()
                        .flatten()
                        .filter(|k| k.get("verdict").and_then(|v| v.as_str()) != Some("valid"))
                        .filter_map(|k| k.get("key").map(|k| k.to_string()))
                        .collect();
                    let keys = if bad_keys.is_empty() {
                        String::new()
                    } else {
                        format!(" (keys {})", bad_keys.join(", "))
                    };
                    parts.push(format!("{name} {}{keys}", verdict.unwrap_or("?")));
                }
            }
        }
    }
    if let Some(l) = &r.leaders {
        if l.verdict != Verdict::Valid {
            parts.push(format!("two leaders in a term ({} conflicts)", l.conflicts.len()));
        }
    }
    if let Some(c) = &r.convergence {
        if c.verdict != Verdict::Valid {
            parts.push(format!("the nodes did not converge ({} states)", c.groups.len()));
        }
    }
    parts.join("; ")
}

fn run(args: &RunArgs) -> anyhow::Result<Verdict> {
    if let Some(why) = crate::run::unsupported() {
        anyhow::bail!("{why}");
    }
    let opts = args.test.options();
    let total = args.seeds.end - args.seeds.start;
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    eprintln!(
        "sim: seeds {}..{} ({total}), {} nodes, {} ops, faults [{}], {jobs} at once",
        args.seeds.start,
        args.seeds.end,
        opts.nodes,
        opts.ops,
        opts.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
    );
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {per_sec}, eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let next = AtomicU64::new(args.seeds.start);
    let summary = Mutex::new(Summary::default());
    let reports: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= args.seeds.end {
                    return;
                }
                let report = run_seed(seed, &opts);
                let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                s.add(&report);
                if report.valid != Verdict::Valid {
                    bar.println(format!(
                        "seed {seed}: {:?}: {}\n  replay: sim replay --seed {seed} {}",
                        report.valid,
                        why(&report),
                        args.test.flags()
                    ));
                    if s.failures.len() >= args.max_failures {
                        stop.store(true, Ordering::Relaxed);
                    }
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                }
                bar.set_message(format!("{} failed", s.failures.len()));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let mut summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    summary.real_secs = started.elapsed().as_secs_f64();
    summary.failures.sort_by_key(|f| f.seed);
    let text = summary_text(&summary, &args.test);
    print!("{text}");
    std::io::stdout().flush().ok();
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.verdict())
}

/// The summary `sim run` prints.
pub fn summary_text(s: &Summary, test: &TestArgs) -> String {
    let mut out = String::new();
    let per_min = if s.real_secs > 0.0 { s.seeds as f64 * 60.0 / s.real_secs } else { 0.0 };
    let ratio = if s.real_secs > 0.0 { s.simulated_secs / s.real_secs } else { 0.0 };
    out += &format!(
        "seeds run: {}\nfailed:    {}\nreal time: {:.1} s ({per_min:.0} seeds/min)\nsimulated: {:.0} s ({ratio:.0} simulated s per real s)\n",
        s.seeds,
        s.failures.len(),
        s.real_secs,
        s.simulated_secs
    );
    let faults: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    out += &format!("faults:    {}\n", if faults.is_empty() { "none".into() } else { faults.join(", ") });
    out += &format!("client ops: {} ok, {} fail, {} info\n", s.outcomes[0], s.outcomes[1], s.outcomes[2]);
    let n = &s.net;
    out += &format!(
        "messages:  {} sent, {} lost, {} cut, {} refused, {} duplicated, {} reordered\n",
        n.sent, n.dropped, n.cut, n.refused, n.duplicated, n.reordered
    );
    let d = &s.disk;
    out += &format!(
        "disks:     {} page writes, {} syncs, {} power cuts, {} unsynced pages lost, {} kept, {} torn\n",
        d.writes, d.syncs, d.power_cuts, d.pages_lost, d.pages_kept, d.torn_writes
    );
    for f in &s.failures {
        out += &format!(
            "FAILED seed {}: {:?}: {}\n  replay: sim replay --seed {} {}\n",
            f.seed,
            f.verdict,
            f.why,
            f.seed,
            test.flags()
        );
    }
    out += &format!("verdict:   {:?}\n", s.verdict());
    out
}

fn replay(args: &ReplayArgs) -> anyhow::Result<Verdict> {
    let mut opts = args.test.options();
    opts.trace = true;
    let started = Instant::now();
    let report = run_seed(args.seed, &opts);
    let real = started.elapsed();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let history = args.out.join("history.jsonl");
    jepsen_checker::write_history(&history, &report.history)?;
    let trace = args.out.join("trace.txt");
    std::fs::write(&trace, report.trace.join("\n") + "\n")
        .with_context(|| format!("writing {}", trace.display()))?;
    // As a `jepsen test` run directory: the history, `results.json` with
    // every checker's verdict and the run's statistics, and the latency and
    // throughput plots (in simulated time); plus the trace.
    let stats = jepsen_checker::stats::summarize(&report.history)?;
    let results = serde_json::json!({ "report": &report, "stats": stats });
    let json = args.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json.display()))?;
    for (file, e) in jepsen_checker::plot::write_plots(&args.out, &report.history, &Default::default()) {
        eprintln!("sim: could not draw {file}: {e:#}");
    }
    println!("{}", replay_text(&report, real));
    println!("wrote {} (history.jsonl, trace.txt, results.json, latency.svg, rate.svg)", args.out.display());
    Ok(report.valid)
}

/// Smaller versions of `test`, most shrinking first: half the operations,
/// three nodes instead of more, one kind of fault fewer.
fn smaller(test: &TestArgs) -> Vec<TestArgs> {
    let mut out = Vec::new();
    if test.ops > 10 {
        out.push(TestArgs { ops: test.ops / 2, ..test.clone() });
    }
    if test.nodes > 3 {
        out.push(TestArgs { nodes: 3, ..test.clone() });
    }
    for i in 0..test.faults.0.len() {
        let mut faults = test.faults.0.clone();
        faults.remove(i);
        out.push(TestArgs { faults: FaultList(faults), ..test.clone() });
    }
    out
}

fn shrink(args: &ShrinkArgs) -> anyhow::Result<Verdict> {
    if let Some(why) = crate::run::unsupported() {
        anyhow::bail!("{why}");
    }
    let seed = args.seed;
    let mut test = args.test.clone();
    // Pin the workload the seed ran, so that shrinking keeps it.
    test.workload = Some(test.workload.unwrap_or_else(|| Workload::for_seed(seed)));
    let verdict = |t: &TestArgs| run_seed(seed, &t.options());
    let first = verdict(&test);
    if first.valid == Verdict::Valid {
        println!("seed {seed} is valid with {}: nothing to shrink", test.flags());
        return Ok(Verdict::Valid);
    }
    eprintln!("seed {seed} fails with {}: {}", test.flags(), why(&first));
    let mut tried = 1;
    'shrinking: loop {
        for candidate in smaller(&test) {
            tried += 1;
            let r = verdict(&candidate);
            if r.valid != Verdict::Valid {
                eprintln!("  still fails with {}: {}", candidate.flags(), why(&r));
                test = candidate;
                continue 'shrinking;
            }
        }
        break;
    }
    println!(
        "smallest failing run of seed {seed} ({tried} runs tried):
  sim replay --seed {seed} {}",
        test.flags()
    );
    Ok(first.valid)
}

/// What `sim replay` prints about its seed.
pub fn replay_text(r: &SeedReport, real: Duration) -> String {
    let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "seed {}: {} workload, {:.1} s simulated in {:.2} s\nfaults: {}\nclient ops: {} ok, {} fail, {} info; {} trace lines\nverdict: {:?}{}",
        r.seed,
        r.workload.name(),
        r.simulated.as_secs_f64(),
        real.as_secs_f64(),
        if faults.is_empty() { "none".into() } else { faults.join(", ") },
        r.outcomes[0],
        r.outcomes[1],
        r.outcomes[2],
        r.trace.len(),
        r.valid,
        if r.valid == Verdict::Valid { String::new() } else { format!(" ({})", why(r)) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_a_range_or_one_seed_and_an_empty_range_is_refused() {
        assert_eq!(parse_seeds("0..1000"), Ok(0..1000));
        assert_eq!(parse_seeds("7"), Ok(7..8));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("x..3").is_err());
    }

    #[test]
    fn faults_parse_by_name_all_and_none() {
        assert_eq!(parse_faults("all").map(|f| f.0.len()), Ok(5));
        assert_eq!(parse_faults("none").map(|f| f.0.len()), Ok(0));
        assert_eq!(parse_faults("net,crash").map(|f| f.0), Ok(vec![Fault::Crash, Fault::Net]));
        assert!(parse_faults("meteor").is_err());
    }
}
