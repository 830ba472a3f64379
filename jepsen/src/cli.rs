//! The `jepsen` command line.
//!
//! Each subcommand ends in a [`Verdict`], and the exit code says which, so
//! scripts and CI can act on it without parsing the output:
//!
//! | exit code | meaning                                                 |
//! |-----------|---------------------------------------------------------|
//! | 0         | valid                                                   |
//! | 1         | invalid: a checker proved a violation                   |
//! | 2         | unknown (a checker ran out of time), or an error such as a malformed history |

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use jepsen_checker::checker::Verdict;
use kv_client::api::Durability;

use crate::run::nemesis::{Fault, Target};
use crate::run::workload::Kind;
use crate::run::TestOptions;

/// The exit code for a valid verdict.
pub const EXIT_VALID: u8 = 0;
/// The exit code for an invalid verdict.
pub const EXIT_INVALID: u8 = 1;
/// The exit code for an unknown verdict, and for any error.
pub const EXIT_UNKNOWN: u8 = 2;

/// A Jepsen-style harness for the KV service: records what clients see and
/// checks it.
#[derive(Debug, Parser)]
#[command(name = "jepsen", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Start a kv-server cluster on 127.0.0.1, run a workload against it
    /// while injecting faults, and check what the clients saw. Writes
    /// `<store>/<workload>/<time>/` (history, results.json, plots, node
    /// logs) and prints a summary. Exit code 0 valid, 1 invalid, 2 unknown
    /// or error.
    Test(TestArgs),
    /// Re-check a stored history file (JSON lines, one event per line, see
    /// docs/jepsen.md) and print the verdict as JSON on stdout; the rollback
    /// records in rollback.json next to it, if there, are read too. Exit
    /// code 0 valid, 1 invalid, 2 unknown or error.
    Check(CheckArgs),
}

/// Arguments of `jepsen test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// register: linearizable registers (read, write, compare-and-set) on
    /// rotating keys, with leases beside them (--lease-clients). set: unique adds, whole-set reads; checks lost and
    /// duplicated elements. session: session and stale reads through
    /// followers; checks read-your-writes, monotonic reads and consistent
    /// prefix.
    #[arg(long, value_enum, default_value = "register")]
    pub workload: Kind,
    /// Nodes in the cluster (3 or 5 are the interesting sizes).
    #[arg(long, default_value_t = 5)]
    pub nodes: u64,
    /// Faults, comma-separated: partition (one node, the leader, a
    /// majority/minority split, a majorities ring, a bridge), kill (SIGKILL
    /// and restart of the leader, a minority or all nodes), pause (SIGSTOP
    /// of the leader past the election timeout), lose-unsynced (kill with
    /// loss of every write not yet fsynced), membership (remove a node and
    /// add it back with fresh data), restart (SIGTERM, a graceful stop, of
    /// the leader or another node, and start), rolling-restart (every node
    /// in turn, the leader last, each caught up before the next stops);
    /// `all` for every one but rolling-restart, `none` for none.
    #[arg(long, default_value = "partition,kill,pause", value_parser = parse_faults)]
    pub nemesis: NemesisList,
    /// Whom kill and lose-unsynced choose from, comma-separated: leader,
    /// minority, all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "leader,minority,all")]
    pub kill_targets: Vec<Target>,
    /// Seconds the clients run (the final phase comes after).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    pub time_limit: Duration,
    /// When the workload's puts are acknowledged: majority (once
    /// committed), all (once every voter has it), or leader (once in the
    /// leader's own log, before any follower has it: may be lost on
    /// failover, by design). Compare-and-sets are always majority. leader
    /// needs --workload set: lost writes are then valid only if each is in
    /// a node's rollback record, which the harness collects at the end.
    #[arg(long, default_value = "majority", value_parser = parse_durability)]
    pub durability: Durability,
    /// Client operations per second, over all clients.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Client workers; worker i talks to node i mod n first.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Watch workload: watchers following the writers' changes, each from
    /// a random node, besides the client workers.
    #[arg(long, default_value_t = 3)]
    pub watchers: usize,
    /// Register workload: lease owners (granting, renewing, revoking and
    /// abandoning short leases with keys of their own), and as many
    /// readers of those keys, besides the client workers; judged by the
    /// lease check. 0 for none.
    #[arg(long, default_value_t = 2)]
    pub lease_clients: usize,
    /// Seed of every random choice (operations, faults, victims, gaps);
    /// random if not given, and printed either way.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Mean seconds of a fault, and of the gap between faults; each is
    /// drawn between 0.5 and 1.5 times this.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub nemesis_interval: Duration,
    /// Seconds of quiet after the final heal, before the final reads.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub quiet: Duration,
    /// Seconds one request may take before the client gives up on it (a
    /// write's outcome is then unknown, and it is retried).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub attempt_timeout: Duration,
    /// Seconds one operation may take, retries included.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub op_timeout: Duration,
    /// Register workload: clients sharing one key.
    #[arg(long, default_value_t = 2)]
    pub threads_per_key: usize,
    /// Register workload: operations on a key before its clients move on
    /// to a fresh key (bounds each key's linearizability search).
    #[arg(long, default_value_t = 200)]
    pub ops_per_key: u64,
    /// Probability (0 to 1) that a write's first answer is lost on its way
    /// back: the client ignores it and retries with the same session, as
    /// after a timeout. Harmless with exactly-once writes; with
    /// --unsafe-no-dedup, retried writes apply twice.
    #[arg(long, default_value_t = 0.0)]
    pub lose_responses: f64,
    /// Where runs are written.
    #[arg(long, default_value = "store")]
    pub store: PathBuf,
    /// The kv-server binary; by default the one next to this binary.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Negative control: nodes serve linearizable reads from local state,
    /// without ReadIndex (`kv-server --unsafe-local-reads`). Expect invalid.
    #[arg(long)]
    pub unsafe_local_reads: bool,
    /// Negative control: nodes forget the exactly-once table, so a retried
    /// write applies again (`kv-server --unsafe-no-dedup`). Expect invalid.
    #[arg(long)]
    pub unsafe_no_dedup: bool,
    /// Negative control: nodes acknowledge appends before fsync
    /// (`kv-server --unsafe-no-fsync`); with the lose-unsynced fault,
    /// acknowledged writes vanish. Expect invalid.
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// Negative control for the watch workload: nodes start a resumed
    /// watch from their own latest index instead of the one asked for
    /// (`kv-server --unsafe-watch-from-latest`), so a watcher that
    /// reconnects misses what happened meanwhile. Expect invalid.
    #[arg(long)]
    pub unsafe_watch_from_latest: bool,
    /// Negative control for the register workload's leases: the leader
    /// ends a lease at half its TTL (`kv-server
    /// --unsafe-lease-expire-early`), so keys vanish, and keepalives find
    /// their lease gone, while the owner renews in time. Expect invalid.
    #[arg(long)]
    pub unsafe_lease_expire_early: bool,
    /// Negative control for the register workload's leases: the leader
    /// never expires a lease (`kv-server --unsafe-lease-never-expire`), so
    /// keys outlive their leases past the TTL plus one election timeout.
    /// Expect invalid wherever the history proves a steady leader.
    #[arg(long)]
    pub unsafe_lease_never_expire: bool,
    /// An extra kv-server argument for every node, repeatable, for the
    /// server configuration under test (`--server-arg=--max-inflight-batches=8`);
    /// recorded with the options in results.json.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Seconds the checkers may take; past it the verdict is unknown.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_seconds)]
    pub check_budget: Duration,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Run every security layer: make a CA, node certificates, a client
    /// certificate, an admin token and a cluster secret in the run's
    /// `tls/` directory (with kv-server's `certs` and `tokens`), start
    /// every node with peer TLS, HTTPS with --client-cert-auth and
    /// --token-file, and talk to it over HTTPS with the token.
    #[arg(long)]
    pub tls: bool,
}

/// The faults chosen with `--nemesis`.
#[derive(Debug, Clone)]
pub struct NemesisList(pub Vec<Fault>);

fn parse_faults(text: &str) -> Result<NemesisList, String> {
    let mut faults = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "all" => faults.extend(Fault::ALL),
            "none" => {}
            _ => faults.push(
                <Fault as clap::ValueEnum>::from_str(name, false)
                    .map_err(|_| format!("unknown fault {name:?}; known: {}", fault_names()))?,
            ),
        }
    }
    faults.sort();
    faults.dedup();
    Ok(NemesisList(faults))
}

fn fault_names() -> String {
    let faults = <Fault as clap::ValueEnum>::value_variants();
    faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

/// Arguments of `jepsen check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history file.
    pub path: PathBuf,
    /// Seconds the checkers may take in total (fractions allowed). When they
    /// run out the verdict is unknown, never valid.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    pub budget: Duration,
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    text.parse()
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable number of seconds: {e}"))
}

/// The exit code for a verdict.
pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Valid => EXIT_VALID,
        Verdict::Invalid => EXIT_INVALID,
        Verdict::Unknown => EXIT_UNKNOWN,
    }
}

/// Runs a parsed command line and returns the process's exit code. Errors
/// are printed on stderr as one line and exit with [`EXIT_UNKNOWN`].
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(verdict) => ExitCode::from(exit_code(verdict)),
        Err(e) => {
            eprintln!("jepsen: {e:#}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Verdict> {
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Test(args) => test(args),
    }
}

/// `jepsen test`: runs the test, prints the summary, and returns the
/// verdict.
fn test(args: TestArgs) -> anyhow::Result<Verdict> {
    let opts = test_options(args)?;
    eprintln!(
        "jepsen: {} workload, {} nodes, faults [{}], {:?}, seed {}, durability {}{}",
        opts.workload.name(),
        opts.nodes,
        opts.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        opts.time_limit,
        opts.seed,
        opts.durability.name(),
        if opts.tls { ", over TLS" } else { "" }
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let outcome = runtime.block_on(crate::run::run(opts))?;
    print_stdout(&crate::run::report::summary(&outcome))?;
    Ok(outcome.verdict)
}

/// The run's options from the command line.
///
/// # Errors
/// If no kv-server binary is given or found.
pub fn test_options(args: TestArgs) -> anyhow::Result<TestOptions> {
    let server_bin = match args.server_bin {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("locating this binary")?;
            crate::run::server_next_to(&exe).with_context(|| {
                format!(
                    "no kv-server next to {}; build it (`cargo build --release -p kv-app`) or pass --server-bin",
                    exe.display()
                )
            })?
        }
    };
    let mut server_args = Vec::new();
    for (on, flag) in [
        (args.unsafe_local_reads, "--unsafe-local-reads"),
        (args.unsafe_no_dedup, "--unsafe-no-dedup"),
        (args.unsafe_no_fsync, "--unsafe-no-fsync"),
        (args.unsafe_watch_from_latest, "--unsafe-watch-from-latest"),
        (args.unsafe_lease_expire_early, "--unsafe-lease-expire-early"),
        (args.unsafe_lease_never_expire, "--unsafe-lease-never-expire"),
    ] {
        if on {
            server_args.push(flag.to_string());
        }
    }
    server_args.extend(args.server_arg);
    Ok(TestOptions {
        workload: args.workload,
        nodes: args.nodes,
        faults: args.nemesis.0,
        kill_targets: args.kill_targets,
        time_limit: args.time_limit,
        rate: args.rate,
        concurrency: args.concurrency,
        watchers: args.watchers,
        lease_clients: args.lease_clients,
        seed: args.seed.unwrap_or_else(rand::random),
        interval: args.nemesis_interval,
        quiet: args.quiet,
        attempt_timeout: args.attempt_timeout,
        op_timeout: args.op_timeout,
        threads_per_key: args.threads_per_key,
        ops_per_key: args.ops_per_key,
        lose_responses: args.lose_responses.clamp(0.0, 1.0),
        store: args.store,
        server_bin,
        server_args,
        check_budget: args.check_budget,
        progress: !args.no_progress,
        tls: args.tls,
        durability: args.durability,
    })
}

/// `jepsen check`: prints the report as pretty JSON on stdout.
fn check(args: &CheckArgs) -> anyhow::Result<Verdict> {
    let report = jepsen_checker::check::check_file(&args.path, args.budget)
        .with_context(|| format!("checking {}", args.path.display()))?;
    let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
    print_stdout(&format!("{json}\n"))?;
    Ok(report.valid)
}

/// Writes `text` to stdout. A reader that stopped early (`jepsen check … |
/// head`) is not an error: the exit code still gives the verdict.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn budget_accepts_fractions_and_rejects_nonsense() {
        let cli = Cli::try_parse_from(["jepsen", "check", "h.jsonl", "--budget", "0.5"]).unwrap();
        let Command::Check(args) = cli.command else { panic!("not check") };
        assert_eq!(args.budget, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["jepsen", "check", "h.jsonl", "--budget", "-1"]).is_err());
        assert!(Cli::try_parse_from(["jepsen", "check", "h.jsonl", "--budget", "soon"]).is_err());
    }

    #[test]
    fn nemesis_lists_accept_all_none_and_names() {
        let parse = |t: &str| parse_faults(t).map(|l| l.0);
        assert_eq!(parse("all").unwrap(), Fault::ALL.to_vec());
        assert!(parse("none").unwrap().is_empty());
        assert_eq!(parse("kill, partition,kill").unwrap(), vec![Fault::Partition, Fault::Kill]);
        assert_eq!(parse("lose-unsynced").unwrap(), vec![Fault::LoseUnsynced]);
        assert!(!parse("all").unwrap().contains(&Fault::RollingRestart));
        assert_eq!(parse("all,rolling-restart").unwrap().last(), Some(&Fault::RollingRestart));
        let unknown = parse("meteor").unwrap_err();
        assert!(unknown.contains("unknown fault") && unknown.contains("rolling-restart"), "{unknown}");
    }

    #[test]
    fn durability_defaults_to_majority_and_rejects_unknown_levels() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["jepsen", "test"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Test(t) => t.durability,
                Command::Check(_) => panic!("not test"),
            })
        };
        assert_eq!(parse(&[]).unwrap(), Durability::Majority);
        assert_eq!(parse(&["--durability", "leader"]).unwrap(), Durability::Leader);
        assert_eq!(parse(&["--durability", "all"]).unwrap(), Durability::All);
        assert!(parse(&["--durability", "one"]).is_err());
    }

    #[test]
    fn server_args_pass_through_after_the_negative_controls() {
        let cli = Cli::try_parse_from([
            "jepsen",
            "test",
            "--server-bin",
            "/bin/true",
            "--unsafe-no-dedup",
            "--server-arg",
            "--max-inflight-batches=8",
            "--server-arg=--fault-lose-unsynced-writes",
        ])
        .unwrap();
        let Command::Test(args) = cli.command else { panic!("not test") };
        let opts = test_options(args).unwrap();
        assert_eq!(
            opts.server_args,
            ["--unsafe-no-dedup", "--max-inflight-batches=8", "--fault-lose-unsynced-writes"]
        );
    }

    #[test]
    fn exit_codes_follow_the_verdict() {
        assert_eq!(exit_code(Verdict::Valid), 0);
        assert_eq!(exit_code(Verdict::Invalid), 1);
        assert_eq!(exit_code(Verdict::Unknown), 2);
    }
}
