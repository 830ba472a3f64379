//! `kvctl`, the command-line client: argument parsing and output, on top of
//! [`kv_client::client`], [`crate::local_cluster`] and [`crate::bench`]. The binary
//! (`src/bin/kvctl.rs`) only parses arguments and calls [`main`].
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | a definite "no": `get` of a missing key, a `cas` whose expected value did not match, an `endpoint health` whose endpoints all answered but know no leader or name different ones |
//! | 2 | an error: bad arguments, an unreachable cluster, a refused request (a write that certainly did not take effect), a failed read, an `endpoint status` or `endpoint health` with an endpoint that did not answer |
//! | 3 | a write's (or membership change's) outcome is unknown: it timed out, and may or may not take effect |
//!
//! Errors are one line on stderr. With `--json`, answers are the server's
//! JSON, one object per line, on stdout.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use kv_client::api::{
    codes, ChangeResponse, Consistency, Durability, ListResponse, ReadResponse, StatusResponse, WriteResponse,
};
use kv_client::client::{BearerToken, Client, ClientError, ClientOptions, WatchOptions};
use kv_client::tls::ClientTls;
use serde::Serialize;

use crate::bench::{self, BenchArgs, ElectionsArgs, FailoverArgs, WatchArgs};
use crate::endpoint;
use crate::lease::{self, LeaseCommand};
use crate::local_cluster::{self, ClusterConfig, LocalCluster, NodeRestart, Stopped};
use crate::{rollback, snapshot};

/// Exit code: a definite negative answer (missing key, CAS mismatch).
pub const EXIT_NO: u8 = 1;
/// Exit code: an error.
pub const EXIT_ERROR: u8 = 2;
/// Exit code: a write whose outcome is unknown.
pub const EXIT_INDETERMINATE: u8 = 3;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "kvctl", version, about = "Talk to a kv-server cluster, or run one locally")]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The cluster's HTTP endpoints, comma-separated (host:port,
    /// http://host:port or https://host:port; with --cacert, host:port
    /// means https).
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    pub endpoints: Vec<String>,
    /// Read consistency: linearizable, session or stale.
    #[arg(long, global = true, default_value = "linearizable")]
    pub consistency: Consistency,
    /// Write durability: majority, all, or leader (acknowledged once in
    /// the leader's durable log, before it is committed: faster, and lost
    /// if the leader fails first; see `kvctl rollback`). A CAS is never
    /// acknowledged at leader durability: it uses majority.
    #[arg(long, global = true, default_value = "majority")]
    pub durability: Durability,
    /// Print the server's JSON answer instead of a human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many seconds, retries included.
    #[arg(long, global = true, default_value_t = 30.0, value_parser = parse_seconds)]
    pub timeout: f64,
    /// The bearer token to send, for a cluster started with --token-file
    /// (make one with `kvctl tokens add`). Prefer the environment variable:
    /// a command line is visible to other users of the machine.
    #[arg(long, global = true, env = "KV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// HTTPS: the CA certificate (PEM) to trust for the servers'
    /// certificates (kv-server --tls-ca). With it, kvctl speaks HTTPS.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// HTTPS: this client's certificate (PEM), for servers run with
    /// --client-cert-auth (`kvctl certs client`). Needs --key and --cacert.
    #[arg(long = "cert", id = "tls_cert", global = true, value_name = "FILE", requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// HTTPS: the private key (PEM) of --cert.
    // The ids differ from the field names: `key` is also the argument of
    // `put`, `get` and others, and clap keeps one value per id.
    #[arg(long = "key", id = "tls_key", global = true, value_name = "FILE", requires = "tls_cert")]
    pub key: Option<PathBuf>,
}

impl GlobalArgs {
    /// The TLS of `--cacert`, `--cert` and `--key`, if any.
    pub fn tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let Some(ca) = &self.cacert else {
            if self.cert.is_some() {
                bail!("--cert and --key need --cacert: the CA that signed the servers' certificates");
            }
            return Ok(None);
        };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let tls = ClientTls::from_pem_files(ca, identity).context("loading --cacert/--cert/--key")?;
        Ok(Some(tls))
    }
}

/// The commands.
// Parsed once per run, so the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store VALUE under KEY (--lease ID: attached to a lease, deleted
    /// when it ends; without it the key is detached from any lease).
    Put {
        /// The key.
        key: String,
        /// The value (UTF-8).
        value: String,
        /// The lease to attach the key to (`kvctl lease grant`).
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Print KEY's value (exit 1 if it does not exist).
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY (succeeds whether or not it existed).
    Del {
        /// The key.
        key: String,
    },
    /// Set KEY to TO if it holds FROM, or with --absent if it does not
    /// exist. Exit 1 on a mismatch, printing the current value.
    #[command(override_usage = "kvctl cas KEY FROM TO\n       kvctl cas --absent KEY TO")]
    Cas {
        /// The key.
        key: String,
        /// FROM TO, or just TO with --absent.
        #[arg(num_args = 1..=2, required = true, value_name = "VALUE")]
        values: Vec<String>,
        /// Require the key to be absent instead of giving FROM.
        #[arg(long)]
        absent: bool,
    },
    /// Print every change to the keys starting with PREFIX (all keys: "")
    /// as it happens, one JSON line each, until interrupted. Resumes on
    /// another endpoint, missing and repeating nothing, when a connection
    /// ends; exits 2 if the history from --from-index is gone everywhere.
    Watch {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Start with the changes at this log index (default: from now).
        /// After a read whose answer had "index": I, give I + 1.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        from_index: Option<u64>,
        /// Include each key's value before the change (prev_value).
        #[arg(long)]
        prev: bool,
    },
    /// List keys starting with PREFIX (all keys: "").
    List {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Leases: `lease grant TTL`, `lease keepalive ID [--once]`, `lease
    /// revoke ID`, `lease list`, `lease show ID`. Keys put with `--lease
    /// ID` are deleted when the lease expires or is revoked.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Show the status of the first reachable endpoint (--all: of every one).
    Status {
        /// Ask every endpoint.
        #[arg(long)]
        all: bool,
    },
    /// Ask every endpoint of --endpoints at once: `endpoint status` (a
    /// table), `endpoint health`.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// List the members and the leader.
    Members,
    /// Add a node as a learner (returns once it has caught up).
    AddLearner {
        /// The new node's id (never reuse a removed node's id).
        id: u64,
        /// Its Raft address.
        raft_addr: String,
        /// Its HTTP address.
        api_addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The node id.
        id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node id.
        id: u64,
    },
    /// Ask a node to compact its log now: checkpoint its applied state as
    /// a Raft snapshot and purge the log behind it (default: the first
    /// endpoint). Not a backup: see `kvctl snapshot save`.
    Compact {
        /// The node's HTTP address.
        endpoint: Option<String>,
    },
    /// Back up a running cluster (`save`), check a backup (`status`), or
    /// make a new cluster's data directories from one (`restore`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Show the writes nodes removed from their logs because a new
    /// leader's log replaced them: `rollback list` (every endpoint),
    /// `rollback show ID --endpoint E`. Under `--durability leader` these
    /// can be acknowledged writes that were lost. Needs an admin token.
    #[command(subcommand)]
    Rollback(RollbackCommand),
    /// Ask a node to start an election (default: the first endpoint).
    Campaign {
        /// The node's HTTP address.
        endpoint: Option<String>,
    },
    /// Ask the leader to hand leadership to another voter, and wait until
    /// that one leads (at most about an election timeout). Writes pause
    /// meanwhile; none is lost.
    TransferLeader {
        /// The voter to hand leadership to [default: the voter that answers
        /// and holds the most of the log].
        #[arg(long)]
        to: Option<u64>,
    },
    /// Run a cluster of kv-server processes on this machine.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Make the certificates of peer TLS and HTTPS by running `kv-server
    /// certs ARGS`: `certs init --dir D` makes a CA, `certs node --id N
    /// --cluster-id C [--host H]... --dir D` a node's certificate (for
    /// --peer-cert and --tls-cert), `certs client --name NAME --dir D` a
    /// client's (for --cert); `kvctl certs help` says more.
    #[command(disable_help_flag = true)]
    Certs {
        /// The kv-server binary (default: the one next to kvctl). Give it
        /// before ARGS.
        #[arg(long)]
        bin: Option<PathBuf>,
        /// The arguments of `kv-server certs`, passed on as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Make the bearer tokens of kv-server --token-file and its cluster
    /// secret file by running `kv-server tokens ARGS`: `tokens add --file F
    /// --role read|write|admin --name N` prints a new token, `tokens list
    /// --file F`, `tokens remove --file F --name N`, `tokens secret --file
    /// S`; `kvctl tokens help` says more.
    #[command(disable_help_flag = true)]
    Tokens {
        /// The kv-server binary (default: the one next to kvctl). Give it
        /// before ARGS.
        #[arg(long)]
        bin: Option<PathBuf>,
        /// The arguments of `kv-server tokens`, passed on as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Load a kv or etcd cluster with N closed-loop clients and report
    /// throughput and latency percentiles; `bench failover` measures how
    /// long writes stop when the leader stops (see `docs/benchmarks.md`).
    Bench(BenchCommand),
    /// Answer kv and etcd requests at once, with prepared bodies: a server
    /// to measure `kvctl bench` itself against.
    InstantServer {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Bytes per value in read answers.
        #[arg(long, default_value_t = 256)]
        value_size: usize,
    },
}

/// `kvctl endpoint ...`: every endpoint asked at once, once each, within
/// --timeout (see [`crate::endpoint`]).
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// A table of every endpoint's node: role, term, leader, indexes, lag,
    /// size on disk, version.
    ///
    /// One row per endpoint: its node's id, role, term, the leader it knows
    /// of, its applied and committed index, its lag, the size of its
    /// database file and its kv-server version; an endpoint that does not
    /// answer gets a row with its error. LAG is how many entries of the
    /// leader's log the node has not applied yet (the leader's last log
    /// index minus the node's applied index), blank when no endpoint that
    /// answered leads. --json prints an array of objects with the same
    /// fields. Exits 0 if every endpoint answered, 2 if not.
    Status,
    /// Whether every endpoint answers and all name the same leader.
    ///
    /// Prints a line per endpoint and a summary (--json: one object).
    /// Exits 0 when healthy, 1 when every endpoint answered but they know
    /// no leader or name different ones, 2 when an endpoint did not
    /// answer.
    Health,
}

/// `kvctl bench [OPTIONS]` (a load) or `kvctl bench failover [OPTIONS]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    /// A measurement other than a load.
    #[command(subcommand)]
    pub scenario: Option<BenchScenario>,
    /// The load's options.
    #[command(flatten)]
    pub load: BenchArgs,
}

/// The measurements `kvctl bench` makes besides a load.
#[derive(Debug, Subcommand)]
pub enum BenchScenario {
    /// Start a 3-node kv (or etcd) cluster, stop its leader --rounds times
    /// (SIGTERM or SIGKILL) or cut it off (isolate), and report the time
    /// from the fault to the first successful put through a survivor and
    /// until a survivor leads: p50, p90, min, max.
    Failover(FailoverArgs),
    /// For each election timeout, start a 3-node kv (or etcd) cluster, put
    /// it under a heavy write load, pause a follower briefly (SIGSTOP, less
    /// than the timeout) every few seconds, and count the elections that
    /// start though nothing failed, per minute.
    Elections(ElectionsArgs),
    /// Start a 3-node kv (or etcd) cluster, open --watchers watches on one
    /// node, put at a fixed rate through the leader, and report the time
    /// from each put's acknowledgement to its event at each watcher (p50,
    /// p99, max) and the node's memory with the watches open.
    Watch(WatchArgs),
}

/// `kvctl rollback ...`.
#[derive(Debug, Subcommand)]
pub enum RollbackCommand {
    /// One line per rollback record of every endpoint of --endpoints: the
    /// node, the record's id and time, the term of the leader whose log
    /// replaced the entries, the log indexes removed, the writes in them
    /// and how many of those the node had acknowledged (at leader
    /// durability). Exits 0 if every endpoint answered, 2 if not.
    List,
    /// Every write of one record, decoded: key, value, the client's
    /// session (client_id, seq), and whether it had been acknowledged. To
    /// recover a write, put it again (a retry with its client_id and seq
    /// would apply at most once).
    Show {
        /// The record's id (from `rollback list`).
        id: u64,
        /// The node that keeps it [default: the first endpoint].
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// `kvctl snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent copy of the cluster's data (with client sessions,
    /// its log index and term, and a checksum) to FILE, taken at a
    /// linearizable point: every write acknowledged before the save began
    /// is in it. The cluster keeps serving meanwhile. Needs an admin token
    /// on a cluster with tokens.
    Save {
        /// Where to write it; must not exist (it is written as FILE.part
        /// and renamed once complete and checked).
        file: PathBuf,
        /// The node to take it from [default: the first endpoint that
        /// answers]. A follower spares the leader the work.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Print a backup's metadata after checking it whole (checksum, order,
    /// length); exit 2 if it is damaged.
    Status {
        /// The backup file.
        file: PathBuf,
    },
    /// Make the data directory of a node of a new cluster from a backup by
    /// running `kv-server restore ARGS` (`--from FILE --data-dir D --id N
    /// --initial-members ...`); `kvctl snapshot restore --help` says more.
    Restore {
        /// The kv-server binary (default: the one next to kvctl). Give it
        /// before ARGS.
        #[arg(long)]
        bin: Option<PathBuf>,
        /// The arguments of `kv-server restore`, passed on as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `kvctl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start N nodes in the background and wait for a leader. With an
    /// existing stopped cluster in DIR, restart it.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Where the nodes keep their data, logs and cluster.json.
        #[arg(long)]
        dir: PathBuf,
        /// HTTP ports P, P+1, ...; Raft ports P+1000, ... (default: free ports).
        #[arg(long)]
        base_port: Option<u16>,
        /// The kv-server binary (default: the one next to kvctl).
        #[arg(long)]
        bin: Option<PathBuf>,
        /// Make a CA, node certificates, an admin token and a cluster
        /// secret in DIR/secrets, and run the nodes with peer TLS, HTTPS
        /// and tokens (see docs/security.md). A restart keeps what the
        /// cluster was created with.
        #[arg(long)]
        tls: bool,
    },
    /// Stop the nodes listed in DIR/cluster.json (their data stays).
    Down {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Restart every node of the running cluster in DIR with --rolling: one
    /// at a time, followers first and the leader last, each stopped with
    /// SIGTERM (SIGKILL after 5 s), started with the same arguments and
    /// caught up before the next one stops, so the cluster keeps serving.
    /// --timeout bounds each node's return. To restart every node at once
    /// (writes stop meanwhile), run `cluster down`, then `cluster up`.
    Restart {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
        /// One node at a time (required: a restart of every node at once
        /// is `cluster down` and `cluster up`).
        #[arg(long)]
        rolling: bool,
        /// The kv-server binary to start the nodes with (default: the one
        /// next to kvctl): a new build upgrades the nodes one at a time.
        #[arg(long)]
        bin: Option<PathBuf>,
    },
}

/// `kvctl certs ARGS` and `kvctl tokens ARGS`: runs `kv-server SUBCOMMAND
/// ARGS` and passes on its output and exit status. kvctl is a client and
/// makes no certificates or tokens itself; kv-server does, with
/// raft-core's certificate code and kv-app's token file code.
fn server_tool(subcommand: &str, args: &[String], bin: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bin = match bin {
        Some(bin) => bin,
        None => local_cluster::default_server_binary()?,
    };
    let status = std::process::Command::new(&bin)
        .arg(subcommand)
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        // kv-server already printed why, on stderr.
        bail!("{} {subcommand} failed ({status})", bin.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A positive number of seconds, for clap.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// Runs the command and turns the result into an exit code, printing a
/// one-line error to stderr on failure.
pub fn main(cli: Cli) -> ExitCode {
    // One request at a time needs one thread; a load generator or a server
    // wants every core.
    let mut builder = match &cli.command {
        Command::Bench(BenchCommand { load: BenchArgs { threads, .. }, .. }) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                b.worker_threads((*n).max(1));
            }
            b
        }
        Command::InstantServer { .. } => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kvctl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let changes_state = cli.command.changes_state();
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvctl: {e:#}{}", refusal_hint(&e));
            ExitCode::from(error_exit_code(&e, changes_state))
        }
    }
}

/// What to do about a refusal (by an authenticating cluster, or of a
/// watch whose history is gone), as a sentence
/// to append to the error line; empty for any other error.
pub fn refusal_hint(e: &anyhow::Error) -> &'static str {
    let code = e.chain().filter_map(|cause| cause.downcast_ref::<ClientError>()).find_map(|c| c.code());
    match code {
        Some(codes::UNAUTHENTICATED) => {
            " (the cluster wants a valid token: give --token TOKEN or set KV_TOKEN; `kvctl tokens add` makes one)"
        }
        Some(codes::FORBIDDEN) => " (the token's role does not allow this: read < write < admin)",
        Some(codes::COMPACTED) => {
            " (read the keys: `kvctl --json list PREFIX` answers with an \"index\" I; then watch with --from-index I+1)"
        }
        _ => "",
    }
}

/// The exit code for a failed command: [`EXIT_INDETERMINATE`] if it was a
/// write (or membership change) whose outcome is unknown, else
/// [`EXIT_ERROR`].
pub fn error_exit_code(e: &anyhow::Error, changes_state: bool) -> u8 {
    let unknown =
        e.chain().filter_map(|cause| cause.downcast_ref::<ClientError>()).any(|c| !c.outcome_known());
    if changes_state && unknown {
        EXIT_INDETERMINATE
    } else {
        EXIT_ERROR
    }
}

impl Command {
    /// Whether the command asks the cluster to change something (so that
    /// an error may leave its outcome unknown).
    pub fn changes_state(&self) -> bool {
        match self {
            Command::Put { .. }
            | Command::Del { .. }
            | Command::Cas { .. }
            | Command::AddLearner { .. }
            | Command::Promote { .. }
            | Command::Remove { .. }
            | Command::Compact { .. }
            | Command::Campaign { .. }
            | Command::TransferLeader { .. } => true,
            Command::Lease(command) => command.changes_state(),
            Command::Get { .. }
            | Command::List { .. }
            | Command::Watch { .. }
            | Command::Status { .. }
            | Command::Endpoint(_)
            | Command::Members
            | Command::Snapshot(_)
            | Command::Rollback(_)
            | Command::Cluster(_)
            | Command::Certs { .. }
            | Command::Tokens { .. }
            | Command::Bench(_)
            | Command::InstantServer { .. } => false,
        }
    }
}

/// Runs one command. `Ok` carries the exit code of an answer (0, or 1 for a
/// definite "no"); `Err` is an error to report.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let deadline = Duration::from_secs_f64(g.timeout);
    match cli.command {
        Command::Cluster(command) => return cluster(command, g.json, deadline).await,
        Command::Certs { args, bin } => return server_tool("certs", &args, bin),
        Command::Snapshot(SnapshotCommand::Restore { args, bin }) => {
            return server_tool("restore", &args, bin)
        }
        Command::Snapshot(SnapshotCommand::Status { file }) => {
            let r = snapshot::status(&file)?;
            if g.json {
                print_json(&r)?;
            } else {
                println!("{}", snapshot::describe(&r));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Tokens { args, bin } => return server_tool("tokens", &args, bin),
        _ => {}
    }
    let tls = g.tls()?;
    let options = ClientOptions {
        deadline,
        request_timeout: ClientOptions::default().request_timeout.min(deadline),
        consistency: g.consistency,
        durability: g.durability,
        // An empty KV_TOKEN (`KV_TOKEN= kvctl ...`) means no token.
        token: g.token.clone().filter(|t| !t.is_empty()).map(BearerToken::new),
        tls: tls.clone(),
        ..ClientOptions::default()
    };
    match cli.command {
        Command::Bench(BenchCommand { scenario: Some(BenchScenario::Failover(args)), .. }) => {
            return run_failover(&args, g.json).await;
        }
        Command::Bench(BenchCommand { scenario: Some(BenchScenario::Elections(args)), .. }) => {
            return run_elections(&args, g.json).await;
        }
        Command::Bench(BenchCommand { scenario: Some(BenchScenario::Watch(args)), .. }) => {
            return run_watch_bench(&args, g.json).await;
        }
        Command::Bench(BenchCommand { scenario: None, load }) => {
            let mut config = load.config(&g.endpoints, g.consistency, g.durability, deadline)?;
            config.token = options.token.clone();
            config.tls = tls;
            return run_bench(&config, g.json).await;
        }
        Command::InstantServer { listen, value_size } => return instant_server(&listen, value_size).await,
        _ => {}
    }
    let client = Client::with_options(g.endpoints.clone(), options).context("bad --endpoints")?;
    let first_endpoint = client.endpoints()[0].clone();
    match cli.command {
        Command::Put { key, value, lease } => {
            let w = match lease {
                None => client.put(&key, value.as_bytes(), None).await,
                Some(id) => client.put_with_lease(&key, value.as_bytes(), id, None).await,
            }
            .with_context(|| format!("put {key:?}"))?;
            print_write(g.json, &w, w.created.map(|c| if c { "created" } else { "updated" }))?;
        }
        Command::Get { key } => match client.get(&key, None).await.with_context(|| format!("get {key:?}"))? {
            Some(read) if g.json => print_json(&ReadResponse::from(read))?,
            Some(read) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&read.value)?;
                out.write_all(b"\n")?;
            }
            None => {
                eprintln!("kvctl: key {key:?} not found");
                return Ok(ExitCode::from(EXIT_NO));
            }
        },
        Command::Del { key } => {
            let w = client.delete(&key, None).await.with_context(|| format!("delete {key:?}"))?;
            print_write(g.json, &w, w.existed.map(|e| if e { "deleted" } else { "did not exist" }))?;
        }
        Command::Cas { key, values, absent } => {
            let (expected, new) = match (absent, values.as_slice()) {
                (false, [from, to]) => (Some(from.as_bytes()), to),
                (true, [to]) => (None, to),
                (false, _) => bail!("cas takes KEY FROM TO (or --absent KEY TO)"),
                (true, _) => bail!("with --absent, cas takes KEY TO"),
            };
            let outcome = client
                .cas(&key, expected, new.as_bytes(), None)
                .await
                .with_context(|| format!("cas {key:?}"))?;
            let succeeded = outcome.succeeded;
            let current = outcome.current.clone();
            if g.json {
                print_json(&WriteResponse::from(outcome))?;
            } else if succeeded {
                println!("OK (index {}, node {})", outcome.index, outcome.node);
            }
            if !succeeded {
                match current {
                    Some(v) => eprintln!("kvctl: cas {key:?} failed: current value is {}", show(&v)),
                    None => eprintln!("kvctl: cas {key:?} failed: the key does not exist"),
                }
                return Ok(ExitCode::from(EXIT_NO));
            }
        }
        Command::List { prefix, limit } => {
            let listing =
                client.list(&prefix, limit, None).await.with_context(|| format!("list {prefix:?}"))?;
            if g.json {
                print_json(&ListResponse::from(listing))?;
            } else {
                for item in &listing.items {
                    println!("{}\t{}", item.key, show(&item.value));
                }
                if listing.more {
                    eprintln!("kvctl: more keys match; raise --limit to see them");
                }
            }
        }
        Command::Watch { prefix, from_index, prev } => {
            let options = WatchOptions { from_index, prev, ..WatchOptions::default() };
            let mut watch =
                client.watch(&prefix, options).await.with_context(|| format!("watch {prefix:?}"))?;
            let mut out = std::io::stdout().lock();
            loop {
                let event = watch.next().await.with_context(|| format!("watch {prefix:?}"))?;
                serde_json::to_writer(&mut out, &event)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
        }
        Command::Status { all } => {
            if all {
                let mut statuses = Vec::new();
                for endpoint in client.endpoints() {
                    match client.status(Some(endpoint)).await {
                        Ok(s) => statuses.push((endpoint.clone(), Some(s))),
                        Err(e) => {
                            let e = anyhow::Error::new(e);
                            eprintln!("kvctl: {endpoint}: {e}{}", refusal_hint(&e));
                            statuses.push((endpoint.clone(), None));
                        }
                    }
                }
                if statuses.iter().all(|(_, s)| s.is_none()) {
                    bail!("no endpoint answered");
                }
                if g.json {
                    print_json(&statuses.iter().filter_map(|(_, s)| s.as_ref()).collect::<Vec<_>>())?;
                } else {
                    for (endpoint, status) in &statuses {
                        if let Some(s) = status {
                            println!("{endpoint}: {}", status_line(s));
                        }
                    }
                }
            } else {
                let s = client.status(None).await.context("status")?;
                if g.json {
                    print_json(&s)?;
                } else {
                    print_status(&s);
                }
            }
        }
        Command::Lease(command) => return lease::run(command, &client, g.json).await,
        Command::Endpoint(command) => {
            return run_endpoint(command, &client, &g.endpoints, deadline, g.json).await
        }
        Command::Members => {
            let m = client.members().await.context("members")?;
            if g.json {
                print_json(&m)?;
            } else {
                for member in &m.members {
                    let role = if member.voter { "voter" } else { "learner" };
                    let leader = if m.leader == Some(member.id) { " (leader)" } else { "" };
                    println!(
                        "{}\t{role}\thttp={}\traft={}{leader}",
                        member.id, member.api_addr, member.raft_addr
                    );
                }
            }
        }
        Command::AddLearner { id, raft_addr, api_addr } => {
            let r = client
                .add_learner(id, &raft_addr, &api_addr)
                .await
                .with_context(|| format!("add learner {id}"))?;
            print_change(g.json, &r)?;
        }
        Command::Promote { id } => {
            let r = client.promote(id).await.with_context(|| format!("promote {id}"))?;
            print_change(g.json, &r)?;
        }
        Command::Remove { id } => {
            let r = client.remove(id).await.with_context(|| format!("remove {id}"))?;
            print_change(g.json, &r)?;
        }
        Command::Compact { endpoint } => {
            let endpoint = endpoint.unwrap_or(first_endpoint);
            let r = client.snapshot(&endpoint).await.with_context(|| format!("compact on {endpoint}"))?;
            print_change(g.json, &r)?;
        }
        Command::Snapshot(SnapshotCommand::Save { file, endpoint }) => {
            let r = snapshot::save(&client, endpoint.as_deref(), &file, g.json).await?;
            if g.json {
                print_json(&r)?;
            } else {
                println!("{}", snapshot::describe(&r));
            }
        }
        Command::Rollback(RollbackCommand::List) => {
            return rollback::list(&client, &g.endpoints, deadline, g.json).await;
        }
        Command::Rollback(RollbackCommand::Show { id, endpoint }) => {
            let endpoint = endpoint.unwrap_or(first_endpoint);
            let r = client
                .rollback_show(&endpoint, id)
                .await
                .with_context(|| format!("rollback record {id} of {endpoint}"))?;
            if g.json {
                print_json(&r)?;
            } else {
                print!("{}", rollback::describe(&r));
            }
        }
        Command::Campaign { endpoint } => {
            let endpoint = endpoint.unwrap_or(first_endpoint);
            let r = client.campaign(&endpoint).await.with_context(|| format!("campaign on {endpoint}"))?;
            print_change(g.json, &r)?;
        }
        Command::TransferLeader { to } => {
            let r = client.transfer_leader(to).await.context("transfer leadership")?;
            if g.json {
                print_json(&r)?;
            } else {
                println!("OK (node {} leads term {}; handed over by node {})", r.leader, r.term, r.node);
            }
        }
        Command::Snapshot(SnapshotCommand::Status { .. } | SnapshotCommand::Restore { .. })
        | Command::Cluster(_)
        | Command::Certs { .. }
        | Command::Tokens { .. }
        | Command::Bench(_)
        | Command::InstantServer { .. } => {
            unreachable!("invariant: commands that need no client are handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn cluster(command: ClusterCommand, json: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Up { nodes, dir, base_port, bin, tls } => {
            let bin = match bin {
                Some(bin) => bin,
                None => local_cluster::default_server_binary()?,
            };
            let mut config = ClusterConfig::new(nodes, &dir, bin);
            config.base_port = base_port;
            config.secure = tls;
            let cluster = LocalCluster::up(config)
                .await
                .with_context(|| format!("starting a cluster in {}", dir.display()))?;
            let leader = cluster.leader();
            let restarted = cluster.restarted();
            let file = cluster.detach();
            if json {
                print_json(&file)?;
            } else {
                let verb = if restarted { "restarted" } else { "started" };
                println!("{verb} {} nodes in {}; leader: node {leader}", file.nodes.len(), dir.display());
                for n in &file.nodes {
                    println!(
                        "node {}: http={} raft={} pid={} log={}",
                        n.id,
                        n.http_addr,
                        n.raft_addr,
                        n.pid,
                        n.data_dir.join(local_cluster::LOG_FILE).display()
                    );
                }
                match &file.security {
                    None => {
                        let endpoints = file.endpoints().join(",");
                        println!("endpoints: {endpoints}");
                        println!("try: kvctl --endpoints {endpoints} put greeting hello");
                    }
                    Some(security) => {
                        let endpoints: Vec<String> =
                            file.nodes.iter().map(|n| format!("https://{}", n.http_addr)).collect();
                        let endpoints = endpoints.join(",");
                        println!("endpoints: {endpoints} (peer TLS, HTTPS and tokens on)");
                        println!("CA certificate: {}", security.ca.display());
                        println!("admin token: in {} (mode 0600)", security.admin_token_file.display());
                        println!("try: export KV_TOKEN=$(cat {})", security.admin_token_file.display());
                        println!(
                            "     kvctl --cacert {} --endpoints {endpoints} put greeting hello",
                            security.ca.display()
                        );
                        println!(
                            "more tokens: kvctl tokens add --file {} --role read --name NAME, then \
                             kill -HUP each node's pid",
                            security.token_file.display()
                        );
                    }
                }
                println!("stop: kvctl cluster down --dir {}", dir.display());
            }
        }
        ClusterCommand::Restart { dir, rolling, bin } => {
            return restart(&dir, rolling, bin, json, timeout).await
        }
        ClusterCommand::Down { dir } => {
            let report = local_cluster::down(&dir)
                .await
                .with_context(|| format!("stopping the cluster in {}", dir.display()))?;
            if json {
                print_json(&report)?;
            } else {
                for (node, how) in report.lines() {
                    println!("node {} (pid {}): {how}", node.id, node.pid);
                }
                println!("data kept in {}; `kvctl cluster up --dir {0}` restarts it", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvctl endpoint status` and `kvctl endpoint health`: ask every endpoint,
/// print the table or the verdict, and pick the exit code (see
/// [`EndpointCommand`]).
async fn run_endpoint(
    command: EndpointCommand,
    client: &Client,
    endpoints: &[String],
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let answers = endpoint::ask_all(client, endpoints, timeout).await;
    let failed = endpoint::failures(&answers);
    match command {
        EndpointCommand::Status => {
            let rows = endpoint::status_rows(&answers);
            if json {
                print_json(&rows)?;
            } else {
                print!("{}", endpoint::status_table(&rows));
            }
            if failed > 0 {
                eprintln!("kvctl: endpoint status: {failed} of {} endpoints did not answer", answers.len());
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }
        EndpointCommand::Health => {
            let report = endpoint::health(&answers);
            if json {
                print_json(&report)?;
            } else {
                for e in &report.endpoints {
                    println!("{}", e.line());
                }
                println!("{}", report.summary);
            }
            match (report.healthy, report.unreachable) {
                (true, _) => {}
                (false, 0) => return Ok(ExitCode::from(EXIT_NO)),
                (false, _) => return Ok(ExitCode::from(EXIT_ERROR)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvctl cluster restart --rolling`: a line per node as it comes back,
/// then a summary (with `--json`, the report alone). The nodes it started
/// keep running whatever happens.
async fn restart(
    dir: &std::path::Path,
    rolling: bool,
    bin: Option<PathBuf>,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    if !rolling {
        bail!(
            "cluster restart needs --rolling: it restarts one node at a time and the cluster keeps \
             serving; to restart every node at once, run `kvctl cluster down --dir {0}` and then \
             `kvctl cluster up --dir {0}`",
            dir.display()
        );
    }
    let bin = match bin {
        Some(bin) => bin,
        None => local_cluster::default_server_binary()?,
    };
    let mut cluster = LocalCluster::open(dir, bin).context("cluster restart")?;
    if !json {
        println!(
            "restarting the {} nodes in {} one at a time, followers first, the leader last",
            cluster.nodes().len(),
            dir.display()
        );
    }
    let restarted = cluster
        .rolling_restart(timeout, |node| {
            if !json {
                println!("{}", restart_line(node));
            }
        })
        .await;
    cluster.detach();
    let report = restarted.context("rolling restart")?;
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let killed: Vec<String> =
        report.nodes.iter().filter(|n| n.stopped == Stopped::Killed).map(|n| n.id.to_string()).collect();
    let killed = match killed.as_slice() {
        [] => "no node needed SIGKILL".to_owned(),
        ids => format!("SIGKILL needed for node {}", ids.join(", ")),
    };
    println!(
        "restarted {} nodes in {:.1} s; leader node {} in term {} (was node {} in term {}); {killed}; pids in {}",
        report.nodes.len(),
        report.seconds,
        report.leader_after,
        report.term_after,
        report.leader_before,
        report.term_before,
        dir.join(local_cluster::CLUSTER_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `node 2 restarted in 1.3 s, caught up to index 512`, and what was
/// unusual about it.
fn restart_line(node: &NodeRestart) -> String {
    let mut line = format!(
        "node {} restarted in {:.1} s, caught up to index {}",
        node.id, node.seconds, node.caught_up_to
    );
    if node.stopped == Stopped::Killed {
        line.push_str(&format!(
            " (it did not stop within {} s of SIGTERM and was killed)",
            local_cluster::STOP_GRACE.as_secs()
        ));
    }
    if node.was_leader {
        line.push_str(&format!(" (it led; node {} leads now)", node.leader));
    }
    line
}

/// `kvctl bench`: runs the load, prints the report; exits 2 if no
/// operation succeeded.
async fn run_bench(config: &bench::LoadConfig, json: bool) -> anyhow::Result<ExitCode> {
    let report = bench::run_load(config).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.human());
    }
    if report.ops == 0 {
        eprintln!("kvctl: bench: no operation succeeded");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvctl bench failover`: runs the rounds, prints the table; exits 2 if a
/// round saw no put succeed.
async fn run_failover(args: &FailoverArgs, json: bool) -> anyhow::Result<ExitCode> {
    let report = bench::run_failover(args).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.human());
    }
    let failed = report.failed_rounds();
    if failed > 0 {
        eprintln!("kvctl: bench failover: {failed} rounds saw no put succeed in time");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvctl bench watch`: measures every system and number of watchers,
/// prints the table; exits 2 if a watcher missed a change.
async fn run_watch_bench(args: &WatchArgs, json: bool) -> anyhow::Result<ExitCode> {
    let report = bench::run_watch(args).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.table());
    }
    let missed: u64 = report.rows.iter().map(|r| r.missed).sum();
    if missed > 0 {
        eprintln!("kvctl: bench watch: {missed} deliveries never arrived");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvctl bench elections`: runs every timeout, prints the table; exits 2
/// if failover rounds measured along saw no put succeed.
async fn run_elections(args: &ElectionsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let report = bench::run_elections(args).await?;
    if json {
        print_json(&report)?;
    } else {
        if let Some(failover) = &report.failover {
            println!("{}", failover.human());
        }
        print!("{}", report.human());
    }
    let failed = report.failover.as_ref().map_or(0, |f| f.failed_rounds());
    if failed > 0 {
        eprintln!("kvctl: bench elections: {failed} failover rounds saw no put succeed in time");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvctl instant-server`: serves until interrupted.
async fn instant_server(listen: &str, value_size: usize) -> anyhow::Result<ExitCode> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    println!("instant server listening on {}", listener.local_addr()?);
    tokio::select! {
        served = bench::serve_instant(listener, value_size) => served.context("serving")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value).context("encoding JSON")?;
    println!("{line}");
    Ok(())
}

fn print_write(json: bool, w: &WriteResponse, what: Option<&str>) -> anyhow::Result<()> {
    if json {
        return print_json(w);
    }
    let mut notes = vec![format!("index {}", w.index), format!("node {}", w.node)];
    notes.extend(what.map(str::to_owned));
    if !w.committed {
        notes.push("in the leader's log, not yet committed: may be lost if the leader fails".into());
    }
    if w.duplicate {
        notes.push("applied by an earlier attempt".into());
    }
    println!("OK ({})", notes.join(", "));
    Ok(())
}

fn print_change(json: bool, r: &ChangeResponse) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    println!("OK (index {}, node {})", r.index, r.node);
    Ok(())
}

fn status_line(s: &StatusResponse) -> String {
    let leader = s.leader.map_or("none".to_owned(), |l| l.to_string());
    format!(
        "node {} {} term {} leader {leader} last_log {} committed {} applied {}",
        s.id, s.role, s.term, s.last_log_index, s.committed_index, s.applied_index
    )
}

fn print_status(s: &StatusResponse) {
    let opt = |v: Option<u64>| v.map_or("none".to_owned(), |v| v.to_string());
    println!("node:            {}", s.id);
    println!("role:            {}", s.role);
    println!("term:            {}", s.term);
    println!("leader:          {}", opt(s.leader));
    println!("last log index:  {}", s.last_log_index);
    println!("committed index: {}", s.committed_index);
    println!("applied index:   {}", s.applied_index);
    println!("snapshot index:  {}", opt(s.snapshot_index));
    println!("purged index:    {}", opt(s.purged_index));
    println!("voters:          {:?}", s.voters);
    println!("learners:        {:?}", s.learners);
    for f in &s.followers {
        let answered =
            f.answered_ms_ago.map_or("never answered".to_owned(), |ms| format!("answered {ms} ms ago"));
        println!("follower {}:      matched {} lag {} {answered}", f.id, opt(f.matched_index), f.lag);
    }
    println!("state digest:    {}", s.state_digest);
}

/// A value for humans: as text if UTF-8, else escaped.
fn show(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) => s.to_owned(),
        Err(_) => value.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    fn failed(error: ClientError) -> anyhow::Error {
        Err::<(), _>(error).context("put \"k\"").unwrap_err()
    }

    #[test]
    fn unknown_write_outcome_exits_3_and_definite_failure_exits_2() {
        let timed_out = failed(ClientError::Indeterminate { reason: "timeout".into() });
        assert_eq!(error_exit_code(&timed_out, true), EXIT_INDETERMINATE);
        let refused = failed(ClientError::Unavailable { reason: "refused".into() });
        assert_eq!(error_exit_code(&refused, true), EXIT_ERROR);
        // A read has no outcome to be unsure of.
        let garbled = failed(ClientError::Decode { endpoint: "e".into(), reason: "r".into() });
        assert_eq!(error_exit_code(&garbled, false), EXIT_ERROR);
        assert_eq!(error_exit_code(&garbled, true), EXIT_INDETERMINATE);
        assert_eq!(error_exit_code(&anyhow::anyhow!("bad --endpoints"), true), EXIT_ERROR);
    }

    #[test]
    fn cas_takes_from_and_to_or_absent_and_to() {
        let cli = Cli::try_parse_from(["kvctl", "cas", "k", "a", "b"]).unwrap();
        assert!(
            matches!(cli.command, Command::Cas { ref values, absent: false, .. } if values == &["a", "b"])
        );
        let cli = Cli::try_parse_from(["kvctl", "cas", "--absent", "k", "b"]).unwrap();
        assert!(matches!(cli.command, Command::Cas { ref values, absent: true, .. } if values == &["b"]));
        assert!(Cli::try_parse_from(["kvctl", "cas", "k"]).is_err());
    }

    #[test]
    fn global_options_parse_anywhere() {
        let cli = Cli::try_parse_from([
            "kvctl",
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "--consistency",
            "stale",
            "--json",
            "--timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.global.consistency, Consistency::Stale);
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, 0.5);
        assert!(Cli::try_parse_from(["kvctl", "--timeout", "0", "get", "k"]).is_err());
        assert!(Cli::try_parse_from(["kvctl", "--durability", "some", "put", "k", "v"]).is_err());
    }

    #[test]
    fn tls_options_parse_beside_a_key_argument() {
        let cli = Cli::try_parse_from([
            "kvctl", "put", "k", "v", "--cacert", "ca.pem", "--cert", "c.pem", "--key", "c.key",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Put { ref key, .. } if key == "k"));
        assert_eq!(cli.global.key.as_deref(), Some(std::path::Path::new("c.key")));
        assert_eq!(cli.global.cert.as_deref(), Some(std::path::Path::new("c.pem")));
        assert!(Cli::try_parse_from(["kvctl", "--cert", "c.pem", "get", "k"]).is_err(), "--cert needs --key");
        let no_ca = Cli::try_parse_from(["kvctl", "--cert", "c.pem", "--key", "c.key", "get", "k"]).unwrap();
        let err = no_ca.global.tls().unwrap_err();
        assert!(err.to_string().contains("need --cacert"), "{err}");
    }
}
