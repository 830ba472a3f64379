//! `kv-server`: one node of the replicated KV service.
//!
//! With no flags it runs a single-node cluster with its data in `./data`,
//! HTTP on 127.0.0.1:8080 and Raft on 127.0.0.1:9080, initializing itself
//! on first start and reopening its data afterwards.
//!
//! `kv-server inspect --data-dir D` prints what a stopped node's data
//! directory holds, and `--writes` its committed log replayed, one JSON line
//! per key each entry wrote (see `kv_app::inspect`).
//!
//! `kv-server restore --from BACKUP --data-dir D` makes the data directory
//! of a node of a new cluster from a backup (`kvctl snapshot save`), and
//! `--force-new-cluster` makes a stopped survivor the only voter of its
//! cluster before it starts (see `kv_app::restore` and
//! `docs/operations.md`).
//!
//! `kv-server tokens` makes and edits the token file of `--token-file` and
//! the cluster secret file of `--cluster-secret-file` (see
//! `kv_app::tokens`). A running server reads both again on SIGHUP.
//!
//! Every flag of a node can also come from an environment variable
//! (`KV_DATA_DIR` for `--data-dir`) or from the TOML file of `--config`;
//! `kv_app::config_file` says how and in which order. Logs go to stderr, as
//! text or (`--log-format json`) one JSON object per line.
//!
//! The flags under "Fault injection" exist for the Jepsen harness: each
//! breaks one guarantee on purpose, so that the harness can show its
//! checkers catch the breakage (see "Fault-injection flags" in
//! `docs/architecture/kv-app.md`). Never use them on data you care about.

/// mimalloc instead of the system allocator: the write path allocates and
/// frees many short-lived buffers (request bodies, encoded commands, redb
/// pages), and glibc's malloc showed up as about a tenth of the leader's CPU
/// in profiles (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use kv_app::changes::Retention;
use kv_app::config_file::{self, Merged};
use kv_app::inspect::{self, ReplayOptions};
use kv_app::server::auth::AuthFiles;
use kv_app::server::tls::{is_loopback, HttpTls};
use kv_app::server::watch::WatchConfig;
use kv_app::server::{self, Faults, ServerConfig};
use kv_app::state_machine::KvStateMachine;
use kv_app::tokens::{self, Role, SecretChange};
use raft_core::network::PeerTls;
use raft_core::storage::StorageOptions;
use raft_core::Node;

/// The help heading of the flags that break guarantees on purpose.
const FAULTS: &str = "Fault injection (testing only: these break the service's guarantees)";
const PEER_TLS: &str = "Peer TLS (mutual TLS on the Raft port; all three or none)";
const HTTPS: &str = "HTTPS (TLS on the HTTP API; --tls-cert, --tls-key and --tls-ca together)";
const AUTH: &str = "Client authentication (bearer tokens with roles; both or neither)";
const LOGS: &str = "Logs (on stderr)";
const WATCH: &str = "Watch (the change stream, GET /v1/watch; see docs/watch.md)";

/// The end of `--help`: where else flags can be set.
const SETTINGS: &str = "\
Every flag can also be set by an environment variable, KV_ and the flag's
name in capitals with '_' for '-' (KV_DATA_DIR=/var/lib/kv), or in the TOML
file of --config, keyed by the flag's name (data-dir = \"/var/lib/kv\",
insecure = true). The command line wins over a variable, a variable over the
file, the file over the default.";

/// The filter of the logs when nothing sets one: openraft's own info lines
/// (one per vote, per replication stream) would drown kv-server's, and its
/// heartbeat worker warns at every failed heartbeat (ten a second for each
/// peer that is down); raft-core logs a peer's reachability itself, when it
/// changes and every 30 s while a peer stays down.
const DEFAULT_LOG_LEVEL: &str = "info,openraft=warn,openraft::core::heartbeat=error";

#[derive(Parser, Debug)]
#[command(
    name = "kv-server",
    version,
    about = "A node of the replicated key-value service (Raft on openraft + redb)",
    args_conflicts_with_subcommands = true,
    after_help = SETTINGS
)]
struct Cli {
    #[command(flatten)]
    args: Args,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what a stopped node's data directory holds, or (--writes) its
    /// committed log replayed. The node must be stopped.
    Inspect(InspectArgs),
    /// Make the certificates of peer TLS (--peer-ca, --peer-cert,
    /// --peer-key) and HTTPS (--tls-ca, --tls-cert, --tls-key, and client
    /// certificates). `kvctl certs` runs this.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Make, list and remove the bearer tokens of --token-file, and make
    /// the --cluster-secret-file. `kvctl tokens` runs this.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Make the data directory of a node of a new cluster from a backup
    /// (`kvctl snapshot save`). Run it for every node of the new cluster,
    /// with the same backup and --initial-members, then start the nodes
    /// with the same --initial-members.
    Restore(RestoreArgs),
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    /// The data directory to make: it must not exist or be empty.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// The new cluster's members, every one a voter, as
    /// "ID=RAFT_ADDR/HTTP_ADDR,..." (as for starting). Default: a
    /// single-node cluster of this node at --raft-addr and --http-addr.
    #[arg(long)]
    initial_members: Option<String>,
    /// With no --initial-members: the Raft address this node will listen on.
    #[arg(long, default_value = "127.0.0.1:9080", conflicts_with = "initial_members")]
    raft_addr: String,
    /// With no --initial-members: the HTTP address this node will listen on.
    #[arg(long, default_value = "127.0.0.1:8080", conflicts_with = "initial_members")]
    http_addr: String,
    /// The cluster's name: the backup must be of a cluster of this name.
    #[arg(long, default_value = "kv")]
    cluster_id: String,
}

#[derive(Subcommand, Debug)]
enum TokensCommand {
    /// Make a token, append its hash to FILE (created if missing), and
    /// print the token: the only time it is shown.
    Add {
        /// The token file.
        #[arg(long)]
        file: PathBuf,
        /// read, write (includes read) or admin (includes write).
        #[arg(long)]
        role: Role,
        /// Whose token it is, unique in FILE (A-Z a-z 0-9 . _ @ -).
        #[arg(long)]
        name: String,
    },
    /// Print each token's name and role (never its hash).
    List {
        /// The token file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove the token named NAME from FILE.
    Remove {
        /// The token file.
        #[arg(long)]
        file: PathBuf,
        /// The token's name.
        #[arg(long)]
        name: String,
    },
    /// Make a new cluster secret file (mode 0600); with --add, add a new
    /// secret to it; with --retire-first, remove its oldest secret.
    Secret {
        /// The cluster secret file.
        #[arg(long)]
        file: PathBuf,
        /// Add a new secret after the existing ones (accepted at once,
        /// sent once the older ones are retired).
        #[arg(long, conflicts_with = "retire_first")]
        add: bool,
        /// Remove the first secret, so that nodes send the next one.
        #[arg(long)]
        retire_first: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Make a new cluster CA: DIR/ca.pem and DIR/ca.key.
    Init {
        /// Where to write them (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make node ID's certificate, signed by DIR's CA: DIR/node-ID.pem and
    /// DIR/node-ID.key, naming raft://CLUSTER_ID/node/ID (for the Raft
    /// port) and each --host (for HTTPS). It serves as server and as
    /// client certificate, so one certificate does for both ports.
    Node {
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// The cluster's name, as given to kv-server --cluster-id.
        #[arg(long, default_value = "kv")]
        cluster_id: String,
        /// A DNS name or IP address that clients and the other nodes use
        /// to reach this node's HTTP API. Repeat it for each name.
        #[arg(long = "host", value_name = "HOST", default_values = kv_app::certs::DEFAULT_HOSTS)]
        hosts: Vec<String>,
        /// The directory holding the CA (from `certs init`).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make a client certificate, signed by DIR's CA: DIR/client-NAME.pem
    /// and DIR/client-NAME.key, for clusters run with --client-cert-auth
    /// (kvctl --cert and --key, curl --cert and --key).
    Client {
        /// The client's name (its certificate's common name): letters,
        /// digits, '-', '_' and '.'.
        #[arg(long)]
        name: String,
        /// The directory holding the CA (from `certs init`).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The data directory of a stopped node.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long, conflicts_with = "writes")]
    json: bool,
    /// Replay the committed log from index 1 and print, for every entry and
    /// every key it wrote, the key's value right after it: one JSON object
    /// per line, {"index", "key", "value"} (`null`: deleted; a value that is
    /// not UTF-8 comes as base64 in "value_b64"). A key deleted because a
    /// lease ended also has "deleted_by" (lease_revoke or expire_leases)
    /// and "lease". Needs the whole log: a node that purged its log behind
    /// a snapshot is refused.
    #[arg(long)]
    writes: bool,
    /// With --writes: an index known to be committed (such as the node's
    /// last applied index), when the commit index saved on disk may be
    /// behind it (it is written without an fsync of its own).
    #[arg(long, requires = "writes")]
    committed: Option<u64>,
    /// With --writes: replay as a node run with --unsafe-no-dedup applied.
    #[arg(long, requires = "writes")]
    unsafe_no_dedup: bool,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// A line per event, for people (in colour on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A node's flags. `main` gives each an environment variable and lets the
/// file of `--config` set it too (`kv_app::config_file`): a new flag needs
/// nothing more.
#[derive(clap::Args, Debug)]
struct Args {
    /// Read settings from this TOML file, one per flag, keyed by its name:
    /// data-dir = "/var/lib/kv", insecure = true. Flags and KV_* variables
    /// override it; an unknown key is refused.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The log format. json's objects hold "timestamp", "level", "target",
    /// "message" and the event's fields.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, help_heading = LOGS)]
    log_format: LogFormat,
    /// What to log: a level (error, warn, info, debug, trace, off) or a
    /// filter as RUST_LOG takes it ("info,kv_app=debug"). RUST_LOG counts as
    /// a variable for this flag, after KV_LOG_LEVEL.
    #[arg(long, value_name = "LEVEL_OR_FILTER", default_value = DEFAULT_LOG_LEVEL, help_heading = LOGS)]
    log_level: String,
    /// This node's id: a positive integer, unique in the cluster, never reused.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Where this node keeps its data (created if missing).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// The address clients reach this node on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// The address this node's Raft transport listens on.
    #[arg(long, default_value = "127.0.0.1:9080")]
    raft_addr: String,
    /// The Raft address other nodes should use to reach this node, when it
    /// differs from --raft-addr (behind a proxy, say). Recorded in the
    /// membership by --join and by a single-node start. Default: --raft-addr.
    #[arg(long)]
    advertise_raft_addr: Option<String>,
    /// The cluster's name; nodes refuse Raft traffic from other clusters.
    #[arg(long, default_value = "kv")]
    cluster_id: String,
    /// Peer TLS: the cluster CA's certificate (PEM). With --peer-cert and
    /// --peer-key, every Raft connection, in and out, is mutual TLS. Make
    /// them with `kvctl certs init` and `kvctl certs node`.
    #[arg(long, help_heading = PEER_TLS)]
    peer_ca: Option<PathBuf>,
    /// Peer TLS: this node's certificate (PEM), naming
    /// raft://CLUSTER_ID/node/ID and signed by --peer-ca.
    #[arg(long, help_heading = PEER_TLS)]
    peer_cert: Option<PathBuf>,
    /// Peer TLS: this node's private key (PEM).
    #[arg(long, help_heading = PEER_TLS)]
    peer_key: Option<PathBuf>,
    /// HTTPS: this node's certificate (PEM), naming the hosts clients and
    /// the other nodes reach it at (`kvctl certs node --host`). With it,
    /// the HTTP API speaks HTTPS only, and this node calls the others with
    /// https://. Give every node of a cluster HTTPS, or none.
    #[arg(long, help_heading = HTTPS)]
    tls_cert: Option<PathBuf>,
    /// HTTPS: this node's private key (PEM).
    #[arg(long, help_heading = HTTPS)]
    tls_key: Option<PathBuf>,
    /// HTTPS: the CA certificate (PEM) that signed the other nodes' HTTPS
    /// certificates (trusted when this node calls them) and, with
    /// --client-cert-auth, the clients' certificates.
    #[arg(long, help_heading = HTTPS)]
    tls_ca: Option<PathBuf>,
    /// HTTPS: require every client to present a certificate signed by
    /// --tls-ca (`kvctl certs client`). Nodes present their --tls-cert.
    #[arg(long, help_heading = HTTPS)]
    client_cert_auth: bool,
    /// Serve on a non-loopback --http-addr without HTTPS, or a non-loopback
    /// --raft-addr without peer TLS. Without it kv-server refuses to: anyone
    /// who can reach such a port could read, write and change the cluster.
    #[arg(long)]
    insecure: bool,
    /// Require a bearer token on every HTTP request but /health: one token
    /// per line, as "ROLE NAME HASH" (make them with `kvctl tokens add`).
    /// Re-read on SIGHUP. Give every node the same file.
    #[arg(long, help_heading = AUTH, requires = "cluster_secret_file")]
    token_file: Option<PathBuf>,
    /// The secret nodes show each other on the routes only nodes may call
    /// (make it with `kvctl tokens secret`). Re-read on SIGHUP. Give every
    /// node the same file.
    #[arg(long, help_heading = AUTH, requires = "token_file")]
    cluster_secret_file: Option<PathBuf>,
    /// Form a new cluster of these members on first start, as
    /// "ID=RAFT_ADDR/HTTP_ADDR,...". Give every node the same list.
    /// Default: a single-node cluster of this node.
    #[arg(long)]
    initial_members: Option<String>,
    /// Join a running cluster through any member's HTTP address, instead of
    /// forming one. Ignored when the data directory already holds a cluster.
    #[arg(long, conflicts_with = "initial_members")]
    join: Option<String>,
    /// Disaster recovery, when a majority of the voters is lost for good:
    /// before starting, make this node the only voter of its cluster,
    /// keeping everything in its log; then add members back (--join). Never
    /// start the old members again with their old data. Harmless while this
    /// node is still the only voter; remove it once members are back.
    #[arg(long, conflicts_with_all = ["join", "initial_members"])]
    force_new_cluster: bool,
    /// The largest value accepted, in bytes.
    #[arg(long, default_value_t = kv_app::command::DEFAULT_MAX_VALUE_BYTES)]
    max_value_bytes: usize,
    /// Keep at most this many changes (key, value, value before) for
    /// watches to start from; a from_index older than the oldest kept is
    /// answered 410 compacted.
    #[arg(long, default_value_t = WatchConfig::default().retention.max_changes as u64,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = WATCH)]
    watch_history_changes: u64,
    /// Keep at most about this many bytes of keys and values in the watch
    /// history (besides the newest log entry's changes, always kept).
    #[arg(long, default_value_t = WatchConfig::default().retention.max_bytes as u64,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = WATCH)]
    watch_history_bytes: u64,
    /// Drop changes from the watch history once they are this many seconds
    /// old.
    #[arg(long, default_value_t = WatchConfig::default().retention.max_age.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..), help_heading = WATCH)]
    watch_history_secs: u64,
    /// End a watch with a slow_watcher line (naming the index to resume
    /// from) when more than this many changes published since it started
    /// wait for it. Keep it below --watch-history-changes, so that the
    /// resume index is still kept.
    #[arg(long, default_value_t = WatchConfig::default().buffer_changes as u64,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = WATCH)]
    watch_buffer_changes: u64,
    /// Send a watch a progress line ({"progress_index":N}) after this many
    /// milliseconds without a line.
    #[arg(long, default_value_t = WatchConfig::default().progress_every.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = WATCH)]
    watch_progress_ms: u64,
    /// Take a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Also checkpoint the applied state every this many applied commands
    /// (0: only at snapshots). A restart re-applies the commands since the
    /// last checkpoint, so this bounds how long it takes.
    #[arg(long, default_value_t = raft_core::Config::new("kv").checkpoint_every_commands)]
    checkpoint_every: u64,
    /// Log entries kept behind a snapshot when the log is purged, so that a
    /// follower a little behind catches up from the log instead of a full
    /// snapshot.
    #[arg(long, default_value_t = 1_000)]
    snapshot_keep_entries: u64,
    /// Write batches the leader keeps in flight at once (group commit: the
    /// next batch collects commands while these commit).
    #[arg(long, default_value_t = raft_core::Config::new("kv").max_inflight_batches)]
    max_inflight_batches: usize,
    /// While following, write every log append through the log writer
    /// thread, as the leader does, instead of on the task that serves the
    /// AppendEntries whenever that thread is idle (the default; it saves two
    /// thread hand-offs per commit).
    #[arg(long)]
    follower_writes_through_thread: bool,
    /// The most writes proposed together in one log entry (1: one entry
    /// per write, no group commit).
    #[arg(long, default_value_t = raft_core::Config::new("kv").max_batch_commands)]
    max_batch_commands: usize,
    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Election timeout range in milliseconds, as MIN-MAX.
    #[arg(long, default_value = "500-1000")]
    election_timeout_ms: String,
    /// Open the data directory so that a kill loses every write not yet
    /// fsynced, as a power failure would. Safe code still loses nothing it
    /// acknowledged.
    #[arg(long, help_heading = FAULTS)]
    fault_lose_unsynced_writes: bool,
    /// Acknowledge log appends before fsync. With
    /// --fault-lose-unsynced-writes, killing a majority loses acknowledged
    /// writes.
    #[arg(long, help_heading = FAULTS)]
    unsafe_no_fsync: bool,
    /// Serve consistency=linearizable reads from this node's applied state,
    /// with no ReadIndex and no leader: a deposed leader or a lagging
    /// follower returns stale values.
    #[arg(long, help_heading = FAULTS)]
    unsafe_local_reads: bool,
    /// Ignore client sessions: a retried write (same client_id and seq)
    /// applies again. Give all nodes of a cluster the same value.
    #[arg(long, help_heading = FAULTS)]
    unsafe_no_dedup: bool,
    /// Start every watch at this node's latest index, whatever from_index
    /// it asked for: a watcher that reconnects misses the changes made
    /// meanwhile.
    #[arg(long, help_heading = FAULTS)]
    unsafe_watch_from_latest: bool,
    /// As leader, end a lease once half its TTL has passed without a
    /// renewal: its keys vanish while the owner still renews in time.
    #[arg(long, help_heading = FAULTS)]
    unsafe_lease_expire_early: bool,
    /// As leader, never expire a lease: keys stay after their owner stopped
    /// renewing, past their TTL.
    #[arg(long, help_heading = FAULTS)]
    unsafe_lease_never_expire: bool,
}

/// The peer TLS of `--peer-ca`, `--peer-cert` and `--peer-key`: all three
/// or none.
fn peer_tls(args: &Args) -> Result<Option<PeerTls>> {
    match (&args.peer_ca, &args.peer_cert, &args.peer_key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => {
            Ok(Some(PeerTls::from_pem_files(ca, cert, key).context("loading peer TLS")?))
        }
        (ca, cert, key) => bail!(
            "peer TLS needs --peer-ca, --peer-cert and --peer-key together (or none of them); missing {}",
            missing([(ca, "--peer-ca"), (cert, "--peer-cert"), (key, "--peer-key")])
        ),
    }
}

/// The HTTPS of `--tls-cert`, `--tls-key` and `--tls-ca` (all three or
/// none), and `--client-cert-auth` (which needs them).
fn http_tls(args: &Args) -> Result<Option<HttpTls>> {
    match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (None, None, None) if args.client_cert_auth => {
            bail!("--client-cert-auth needs HTTPS: give --tls-cert, --tls-key and --tls-ca")
        }
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(
            HttpTls::from_pem_files(cert, key, ca, args.client_cert_auth)
                .context("loading HTTPS (--tls-*)")?,
        )),
        (cert, key, ca) => bail!(
            "HTTPS needs --tls-cert, --tls-key and --tls-ca together (or none of them); missing {}",
            missing([(cert, "--tls-cert"), (key, "--tls-key"), (ca, "--tls-ca")])
        ),
    }
}

/// The names of the flags in a set that must go together which were not
/// given, as "--a, --b".
fn missing(flags: [(&Option<PathBuf>, &str); 3]) -> String {
    let names: Vec<&str> = flags.iter().filter(|(v, _)| v.is_none()).map(|(_, name)| *name).collect();
    names.join(", ")
}

/// Refuses to serve a port that other machines may reach without TLS on
/// it, unless `--insecure` is given (then warns). Checked before binding.
fn check_exposure(args: &Args, peer_tls: bool, https: bool) -> Result<()> {
    let mut open = Vec::new();
    if !https && !is_loopback(&args.http_addr) {
        open.push(format!(
            "--http-addr {} is not a loopback address, and the HTTP API has no TLS \
             (give --tls-cert, --tls-key and --tls-ca)",
            args.http_addr
        ));
    }
    if !peer_tls && !is_loopback(&args.raft_addr) {
        open.push(format!(
            "--raft-addr {} is not a loopback address, and the Raft port has no TLS \
             (give --peer-ca, --peer-cert and --peer-key)",
            args.raft_addr
        ));
    }
    if open.is_empty() {
        return Ok(());
    }
    if args.insecure {
        for port in &open {
            tracing::warn!("{port}; serving it anyway (--insecure)");
        }
        return Ok(());
    }
    bail!("refusing to start: {}; or pass --insecure to serve without TLS anyway", open.join("; "))
}

/// `kv-server restore`.
fn run_restore(args: RestoreArgs) -> Result<()> {
    let members = match &args.initial_members {
        Some(s) => parse_members(s)?,
        None => BTreeMap::from([(args.id, Node::new(&args.raft_addr, &args.http_addr))]),
    };
    let restored = kv_app::restore::restore(&args.from, &args.data_dir, args.id, &members, &args.cluster_id)?;
    let h = &restored.header;
    println!(
        "restored node {} in {} from {}: {} keys and {} sessions at index {} (term {}), data digest {}, \
         taken from node {} of cluster {:?}; members {}",
        args.id,
        args.data_dir.display(),
        args.from.display(),
        h.keys,
        h.sessions,
        h.index,
        h.term,
        h.digest,
        h.node_id,
        h.cluster_id,
        members.keys().map(|id| id.to_string()).collect::<Vec<_>>().join(", "),
    );
    Ok(())
}

/// `--force-new-cluster`: makes this node the only voter before it starts.
fn force_new_cluster(data_dir: &std::path::Path, id: u64) -> Result<()> {
    let forced =
        raft_core::storage::recovery::force_new_cluster(data_dir, id).context("--force-new-cluster")?;
    match forced.membership_entry {
        Some(entry) => tracing::warn!(
            node_id = id,
            previous_voters = ?forced.previous_voters,
            entries_kept = forced.last_index,
            membership_index = entry.index,
            "--force-new-cluster: this node is now the only voter; add members back with --join, \
             and remove the flag"
        ),
        None => tracing::info!(
            node_id = id,
            "--force-new-cluster: this node already is the only voter; nothing to do (remove the flag \
             before adding members back)"
        ),
    }
    Ok(())
}

fn parse_members(s: &str) -> Result<BTreeMap<u64, Node>> {
    let mut members = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) =
            part.split_once('=').with_context(|| format!("{part:?}: expected ID=RAFT_ADDR/HTTP_ADDR"))?;
        let (raft, http) =
            addrs.split_once('/').with_context(|| format!("{part:?}: expected ID=RAFT_ADDR/HTTP_ADDR"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("{part:?}: {id:?} is not a node id"))?;
        if members.insert(id, Node::new(raft.trim(), http.trim())).is_some() {
            bail!("node id {id} appears twice in --initial-members");
        }
    }
    Ok(members)
}

/// The command line, with a variable for every flag and the config file's
/// settings merged in; exits with clap's message on a bad argument or after
/// `--help`. The subcommands (`inspect`, `certs`, `tokens`) take their own
/// flags only: no variable, no file.
fn parse() -> Result<(Cli, ArgMatches, Merged)> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = if config_file::names_subcommand(&Cli::command(), &args) {
        Cli::command()
    } else {
        config_file::with_env(Cli::command())
    };
    let merged = config_file::merge(&command, args)?;
    let matches = match command.try_get_matches_from(&merged.args) {
        Ok(matches) => matches,
        Err(e) => {
            let _ = e.print();
            if let (true, Some(note)) = (e.use_stderr(), merged.note()) {
                eprintln!("\n{note}");
            }
            std::process::exit(e.exit_code());
        }
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Ok((cli, matches, merged))
}

/// Installs the log subscriber: `--log-format`, and the filter of
/// [`log_filter`]. Colour codes only when stderr is a terminal, so that a
/// log redirected to a file holds plain text.
fn install_tracing(args: &Args, matches: &ArgMatches, merged: &Merged) -> Result<()> {
    let (filter, from) = log_filter(args, matches, merged);
    let filter = parse_filter(&filter, from)?;
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
    Ok(())
}

/// Where the log filter came from: named in the error that refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterFrom {
    /// `--log-level`, or its default.
    Flag,
    /// `KV_LOG_LEVEL`.
    Variable,
    /// `RUST_LOG`, read as tracing reads it (a bare word is a module name).
    RustLog,
    /// `log-level` in the config file.
    File,
}

impl std::fmt::Display for FilterFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FilterFrom::Flag => "--log-level",
            FilterFrom::Variable => "KV_LOG_LEVEL",
            FilterFrom::RustLog => "RUST_LOG",
            FilterFrom::File => "log-level in the config file",
        })
    }
}

/// The log filter, and where it came from: `--log-level` on the command
/// line, then `KV_LOG_LEVEL`, then `RUST_LOG`, then `log-level` in the
/// config file, then [`DEFAULT_LOG_LEVEL`]. RUST_LOG ranks as the
/// environment variable it is, over the file, so that `RUST_LOG=debug` can
/// debug a node whatever its file says.
fn log_filter(args: &Args, matches: &ArgMatches, merged: &Merged) -> (String, FilterFrom) {
    let from_file = merged.from_file.iter().any(|f| f == "log-level");
    match matches.value_source("log_level") {
        Some(ValueSource::CommandLine) if !from_file => (args.log_level.clone(), FilterFrom::Flag),
        Some(ValueSource::EnvVariable) => (args.log_level.clone(), FilterFrom::Variable),
        _ => match std::env::var("RUST_LOG") {
            Ok(rust_log) if !rust_log.trim().is_empty() => (rust_log, FilterFrom::RustLog),
            _ if from_file => (args.log_level.clone(), FilterFrom::File),
            _ => (args.log_level.clone(), FilterFrom::Flag),
        },
    }
}

/// A level or a filter, as [`install_tracing`] takes it. But for RUST_LOG,
/// a single word must be a level: tracing would read any other word as the
/// name of a module to log everything of, so a typo (`--log-level
/// verbose`) would silently log nothing of kv-server.
fn parse_filter(filter: &str, from: FilterFrom) -> Result<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let single_word = !filter.contains(['=', ',', '[', ':']);
    if from != FilterFrom::RustLog && single_word && !LEVELS.contains(&filter.trim().to_lowercase().as_str())
    {
        bail!(
            "{from}: {filter:?} is not a level ({}) nor a filter such as \"info,kv_app=debug\"",
            LEVELS.join(", ")
        );
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("{from}: {filter:?} is not a log filter"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (cli, matches, merged) = parse()?;
    install_tracing(&cli.args, &matches, &merged)?;
    if let Some(file) = &merged.file {
        tracing::info!(
            file = %file.display(),
            set = %merged.from_file.join(" "),
            overridden = %merged.overridden.join(" "),
            "settings read from the config file"
        );
    }
    match cli.command {
        Some(Command::Inspect(inspect)) => return run_inspect(inspect).await,
        Some(Command::Certs(command)) => {
            let written = match command {
                CertsCommand::Init { dir } => kv_app::certs::init(&dir)?,
                CertsCommand::Node { id, cluster_id, hosts, dir } => {
                    kv_app::certs::node(&dir, id, &cluster_id, &hosts)?
                }
                CertsCommand::Client { name, dir } => kv_app::certs::client(&dir, &name)?,
            };
            for path in written {
                println!("wrote {}", path.display());
            }
            return Ok(());
        }
        Some(Command::Tokens(command)) => return run_tokens(command),
        Some(Command::Restore(restore)) => return run_restore(restore),
        None => {}
    }
    let args = cli.args;
    if args.id == 0 {
        bail!("--id must be a positive integer");
    }
    let (min, max) = args
        .election_timeout_ms
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .context("--election-timeout-ms: expected MIN-MAX, e.g. 500-1000")?;

    let peer_tls = peer_tls(&args)?;
    let http_tls = http_tls(&args)?;
    check_exposure(&args, peer_tls.is_some(), http_tls.is_some())?;
    if args.force_new_cluster {
        force_new_cluster(&args.data_dir, args.id)?;
    }

    let http = tokio::net::TcpListener::bind(&args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", args.http_addr))?;
    let raft = tokio::net::TcpListener::bind(&args.raft_addr)
        .await
        .with_context(|| format!("binding the Raft address {}", args.raft_addr))?;

    let mut config = ServerConfig::new(args.id, &args.data_dir);
    config.raft = raft_core::Config::new(args.cluster_id);
    config.raft.peer_tls = peer_tls;
    config.http_tls = http_tls;
    config.raft.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    config.raft.election_timeout_min = Duration::from_millis(min);
    config.raft.election_timeout_max = Duration::from_millis(max);
    config.raft.snapshot_every = args.snapshot_every;
    config.raft.checkpoint_every_commands = args.checkpoint_every;
    config.raft.max_inflight_batches = args.max_inflight_batches.max(1);
    config.raft.follower_writes_in_place = !args.follower_writes_through_thread;
    config.raft.max_batch_commands = args.max_batch_commands.max(1);
    config.raft.keep_behind_snapshot = args.snapshot_keep_entries;
    config.raft.purge_batch = config.raft.purge_batch.min(args.snapshot_every.max(1));
    config.raft.storage = StorageOptions {
        lose_unsynced_writes: args.fault_lose_unsynced_writes,
        unsafe_no_fsync: args.unsafe_no_fsync,
        ..StorageOptions::default()
    };
    config.faults = Faults {
        unsafe_local_reads: args.unsafe_local_reads,
        unsafe_no_dedup: args.unsafe_no_dedup,
        unsafe_watch_from_latest: args.unsafe_watch_from_latest,
        unsafe_lease_expire_early: args.unsafe_lease_expire_early,
        unsafe_lease_never_expire: args.unsafe_lease_never_expire,
    };
    config.auth = match (args.token_file, args.cluster_secret_file) {
        (Some(token_file), Some(cluster_secret_file)) => Some(AuthFiles { token_file, cluster_secret_file }),
        // clap's `requires` lets only both or neither through.
        _ => None,
    };
    config.max_value_bytes = args.max_value_bytes;
    config.watch = WatchConfig {
        retention: Retention {
            max_changes: usize::try_from(args.watch_history_changes).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(args.watch_history_bytes).unwrap_or(usize::MAX),
            max_age: Duration::from_secs(args.watch_history_secs),
        },
        buffer_changes: usize::try_from(args.watch_buffer_changes).unwrap_or(usize::MAX),
        progress_every: Duration::from_millis(args.watch_progress_ms),
    };
    config.join = args.join;
    config.advertise_raft_addr = args.advertise_raft_addr;
    config.initial_members = match &args.initial_members {
        Some(s) => parse_members(s)?,
        None if config.join.is_none() => {
            let raft_addr = match &config.advertise_raft_addr {
                Some(addr) => addr.clone(),
                None => raft.local_addr()?.to_string(),
            };
            BTreeMap::from([(args.id, Node::new(raft_addr, http.local_addr()?.to_string()))])
        }
        None => BTreeMap::new(),
    };

    let server = server::start(config, http, raft).await?;
    println!("kv-server node {} listening http={} raft={}", args.id, server.http_addr, server.raft_addr);

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hangup.recv() => {
                // Server::reload_auth logs what it loaded, or why not.
                if let Ok(None) = server.reload_auth() {
                    tracing::info!("SIGHUP: no --token-file, nothing to reload");
                }
            }
        }
    }
    // A graceful stop: a leader hands its leadership to a caught-up voter
    // first, so the others need not wait out an election timeout.
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// `kv-server tokens`: a token goes to stdout alone, so that a script can
/// capture it; everything else goes to stderr.
fn run_tokens(command: TokensCommand) -> Result<()> {
    const RELOAD: &str = "give every node the same file and send each kv-server SIGHUP to load it";
    match command {
        TokensCommand::Add { file, role, name } => {
            let token = tokens::add(&file, role, &name)?;
            println!("{token}");
            eprintln!("added {role} token {name:?} to {} (shown only this once); {RELOAD}", file.display());
        }
        TokensCommand::List { file } => {
            for entry in tokens::list(&file)? {
                println!("{}\t{}", entry.name, entry.role);
            }
        }
        TokensCommand::Remove { file, name } => {
            let removed = tokens::remove(&file, &name)?;
            eprintln!("removed {} token {name:?} from {}; {RELOAD}", removed.role, file.display());
        }
        TokensCommand::Secret { file, add, retire_first } => {
            let change = match (add, retire_first) {
                (true, _) => SecretChange::Add,
                (_, true) => SecretChange::RetireFirst,
                _ => SecretChange::Create,
            };
            let count = tokens::change_secret(&file, change)?;
            eprintln!("{} holds {count} cluster secret(s); {RELOAD}", file.display());
        }
    }
    Ok(())
}

/// `kv-server inspect`: prints to stdout what [`kv_app::inspect`] reads.
async fn run_inspect(args: InspectArgs) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.writes {
        let state_machine = if args.unsafe_no_dedup {
            KvStateMachine::unsafe_without_dedup()
        } else {
            KvStateMachine::default()
        };
        let options = ReplayOptions { committed: args.committed, state_machine };
        for write in inspect::committed_writes(&args.data_dir, options)? {
            serde_json::to_writer(&mut out, &write)?;
            writeln!(out)?;
        }
    } else {
        let s = inspect::summary(&args.data_dir).await?;
        if args.json {
            serde_json::to_writer_pretty(&mut out, &s)?;
            writeln!(out)?;
        } else {
            let vote = match s.voted_for {
                None => "none".to_string(),
                Some(node) => {
                    let kind = if s.vote_committed { "a leader elected" } else { "a candidate" };
                    format!("term {} for node {node} ({kind})", s.vote_term)
                }
            };
            let purged = match s.purged_index {
                0 => String::new(),
                i => format!(", purged through {i}"),
            };
            writeln!(out, "data directory  {}", args.data_dir.display())?;
            writeln!(out, "vote            {vote}")?;
            writeln!(out, "log             last index {}, term {}{purged}", s.last_index, s.last_term)?;
            writeln!(out, "committed       at least index {}", s.committed_index)?;
            writeln!(out, "checkpoint      the applied state as of index {}", s.checkpoint_index)?;
            writeln!(out, "voters          {:?}", s.voters)?;
            writeln!(out, "learners        {:?}", s.learners)?;
        }
    }
    out.flush()?;
    Ok(())
}
