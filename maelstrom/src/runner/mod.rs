//! A local, Maelstrom-compatible test runner for the `lin-kv` workload.
//!
//! The real Maelstrom is a JVM program; this runner reproduces what its
//! `lin-kv` test does so that any lin-kv binary (ours or another) can be
//! checked without a JVM. It takes Maelstrom's flags:
//!
//! ```text
//! maelstrom-runner test -w lin-kv --bin PATH --node-count 3 --concurrency 2n \
//!     --rate 100 --time-limit 20 --latency 10 --nemesis partition
//! ```
//!
//! A run goes through the modules in this order:
//!
//! 1. [`nodes`]: spawn the binary N times, send `init`, and check every line
//!    the nodes write against the protocol.
//! 2. [`net`]: route messages with the configured latency; partitions drop
//!    them at delivery time.
//! 3. [`nemesis`]: start and stop partitions of Maelstrom's shapes on its
//!    schedule.
//! 4. [`generator`]: the clients, issuing reads, writes and compare-and-sets
//!    with Maelstrom's semantics, and recording the history.
//! 5. [`report`]: check the history (linearizability per key, stats,
//!    availability) and write `store/lin-kv/<time>/`.
//!
//! `docs/maelstrom.md` lists what this reproduces of Maelstrom and what it
//! does not.

pub mod generator;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jepsen_checker::checker::Verdict;
use jepsen_checker::history::{EventType, Function, Process, Recorder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use self::generator::Workload;
use self::net::{Grudge, Latency, LatencyDist, Net};
use self::nodes::Nodes;

/// Exit code for a valid history.
pub const EXIT_VALID: u8 = 0;
/// Exit code for an invalid history.
pub const EXIT_INVALID: u8 = 1;
/// Exit code for an unknown verdict or a harness error.
pub const EXIT_UNKNOWN: u8 = 2;

/// The only nemesis Maelstrom's lin-kv uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NemesisKind {
    /// Network partitions.
    Partition,
}

/// `maelstrom test`'s flags, with Maelstrom's defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct TestOptions {
    /// The workload; only `lin-kv` is supported.
    #[arg(short = 'w', long)]
    pub workload: String,
    /// The node binary, run once per node without arguments.
    #[arg(long)]
    pub bin: PathBuf,
    /// Number of nodes, named n0..n{N-1}.
    #[arg(long, default_value_t = 5)]
    pub node_count: usize,
    /// Client threads: a number, or `Kn` for K × node count. Must be a
    /// multiple of 2 × node count.
    #[arg(long, default_value = "2n")]
    pub concurrency: String,
    /// Target operations per second, over all clients.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Seconds during which clients issue operations.
    #[arg(long, default_value_t = 10.0)]
    pub time_limit: f64,
    /// Mean node-to-node latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency: u64,
    /// How latencies are distributed around the mean.
    #[arg(long, value_enum, default_value = "constant")]
    pub latency_dist: LatencyDist,
    /// Faults to inject (only `partition`); none by default.
    #[arg(long, value_enum)]
    pub nemesis: Vec<NemesisKind>,
    /// Mean seconds between nemesis events.
    #[arg(long, default_value_t = 10.0)]
    pub nemesis_interval: f64,
    /// Seed for every random choice (latencies, operations, partitions).
    /// Timing still varies between runs, so a seed does not replay a run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where runs are stored: `<store>/lin-kv/<time>/`.
    #[arg(long, default_value = "store")]
    pub store: PathBuf,
    /// Seconds the linearizability search may take before the verdict is
    /// unknown.
    #[arg(long, default_value_t = 60.0)]
    pub check_time_limit: f64,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The overall verdict.
    pub verdict: Verdict,
    /// The run's directory.
    pub dir: PathBuf,
    /// The results document (also in `results.json`).
    pub results: Value,
}

impl RunOutcome {
    /// The process exit code for this verdict.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Valid => EXIT_VALID,
            Verdict::Invalid => EXIT_INVALID,
            Verdict::Unknown => EXIT_UNKNOWN,
        }
    }
}

/// Parses `--concurrency`: `N` or `Kn`.
fn concurrency(text: &str, nodes: usize) -> anyhow::Result<usize> {
    let value = match text.strip_suffix('n') {
        Some("") => nodes,
        Some(k) => k.parse::<usize>().context("--concurrency must be N or Kn")? * nodes,
        None => text.parse::<usize>().context("--concurrency must be N or Kn")?,
    };
    anyhow::ensure!(
        value > 0 && value % (2 * nodes) == 0,
        "--concurrency {value} must be a positive multiple of 2 × node count ({})",
        2 * nodes
    );
    Ok(value)
}

fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .with_context(|| format!("{flag} {secs} is not a usable number of seconds"))
}

/// Runs one test and writes its directory.
///
/// # Errors
/// On a harness failure: bad flags, a binary that cannot start, a node that
/// does not answer `init` in time, files that cannot be written. A history
/// that is merely not linearizable is an `Ok` with an invalid verdict.
pub async fn run_test(opts: &TestOptions) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!(
        opts.workload == "lin-kv",
        "only the lin-kv workload is supported, not {:?}",
        opts.workload
    );
    anyhow::ensure!(opts.node_count > 0, "--node-count must be at least 1");
    anyhow::ensure!(opts.rate > 0.0 && opts.rate.is_finite(), "--rate must be positive");
    let concurrency = concurrency(&opts.concurrency, opts.node_count)?;
    let time_limit = seconds("--time-limit", opts.time_limit)?;
    let interval = seconds("--nemesis-interval", opts.nemesis_interval)?;
    let check_budget = seconds("--check-time-limit", opts.check_time_limit)?;
    let latency = Latency { mean: Duration::from_millis(opts.latency), dist: opts.latency_dist };
    // Maelstrom's client timeout.
    let client_timeout = (latency.mean * 10).max(Duration::from_secs(1));
    let seed = opts.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let partitions = opts.nemesis.contains(&NemesisKind::Partition);

    let dir = jepsen_checker::store::run_dir(&opts.store, "lin-kv")?;
    let log_dir = dir.join("node-logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    tracing::info!(dir = %dir.display(), seed, "starting lin-kv run");

    let (mut nodes, stdins) = Nodes::spawn(&opts.bin, opts.node_count, &log_dir)?;
    let net = Net::start(latency, StdRng::seed_from_u64(seed), stdins);
    nodes.start_readers(&net);
    if let Err(e) = nodes.init(&net).await {
        nodes.kill().await;
        return Err(e);
    }

    let start = Instant::now();
    let recorder = Recorder::new(start);
    let nemesis = partitions.then(|| {
        let (net, recorder, ids) = (net.clone(), recorder.clone(), nodes.ids.clone());
        let rng = StdRng::seed_from_u64(seed.wrapping_add(1));
        tokio::spawn(run_nemesis(net, ids, interval, start + time_limit, recorder, rng))
    });
    let workload =
        Workload { nodes: nodes.ids.clone(), concurrency, rate: opts.rate, time_limit, client_timeout };
    let first_client = opts.node_count as u64;
    generator::run(
        workload,
        net.clone(),
        recorder.clone(),
        StdRng::seed_from_u64(seed.wrapping_add(2)),
        first_client,
    )
    .await;
    if let Some(nemesis) = nemesis {
        nemesis.abort();
    }
    let run_secs = start.elapsed().as_secs_f64();
    nodes.kill().await;
    let violations = nodes.violations.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let settings = json!({
        "name": "lin-kv",
        "bin": opts.bin.display().to_string(),
        "node-count": opts.node_count,
        "concurrency": concurrency,
        "rate": opts.rate,
        "time-limit": opts.time_limit,
        "latency": {"mean": opts.latency, "dist": format!("{:?}", opts.latency_dist).to_lowercase()},
        "nemesis": if partitions { json!(["partition"]) } else { json!([]) },
        "nemesis-interval": opts.nemesis_interval,
        "client-timeout-ms": client_timeout.as_millis() as u64,
        "seed": seed,
        "run-seconds": run_secs,
    });
    let events = recorder.events();
    let data = report::RunData { events, net: net.stats(), violations, settings, check_budget };
    report::write_history(&dir, &data.events)?;
    let (verdict, results) = report::judge(&data)?;
    report::write_results(&dir, &data.events, &results, time_limit)?;
    Ok(RunOutcome { verdict, dir, results })
}

/// Starts and stops partitions until `end`; see [`nemesis`].
async fn run_nemesis(
    net: Net,
    nodes: Vec<String>,
    interval: Duration,
    end: Instant,
    recorder: Recorder,
    mut rng: StdRng,
) {
    let nemesis = |f: &str, value: Value| {
        recorder.record(Process::Nemesis, EventType::Info, Function::Other(f.to_owned()), Value::Null, value);
    };
    loop {
        let at = Instant::now() + nemesis::gap(interval, &mut rng);
        if at >= end {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        let (grudge, description) = nemesis::partition(&nodes, &mut rng);
        net.set_grudge(grudge);
        nemesis("start-partition", description);

        let at = Instant::now() + nemesis::gap(interval, &mut rng);
        if at >= end {
            // The test ends mid-partition, as Maelstrom's may.
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        net.set_grudge(Grudge::new());
        nemesis("stop-partition", Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_accepts_n_multiples_of_twice_the_node_count() {
        assert_eq!(concurrency("2n", 3).unwrap(), 6);
        assert_eq!(concurrency("12", 3).unwrap(), 12);
        assert!(concurrency("n", 3).is_err());
        assert!(concurrency("7", 3).is_err());
        assert!(concurrency("x", 3).is_err());
    }
}
