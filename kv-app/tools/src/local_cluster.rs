//! A cluster of `kv-server` processes on this machine, for trying things
//! out (`kvctl cluster up` / `down`) and for tests that need real processes
//! (to kill one with SIGKILL, say).
//!
//! [`LocalCluster::up`] starts N nodes, each with its own data directory
//! `DIR/node-i` and log `DIR/node-i/server.log`, all bootstrapped with the
//! same `--initial-members` list, waits until every node agrees on a leader,
//! and records the nodes in `DIR/cluster.json`:
//!
//! ```json
//! {"nodes":[{"id":1,"pid":4242,"http_addr":"127.0.0.1:40001",
//!            "raft_addr":"127.0.0.1:40002","data_dir":"DIR/node-1"}, ...]}
//! ```
//!
//! The returned [`LocalCluster`] owns the processes: dropping it kills them,
//! which is what a test wants. `kvctl cluster up` instead calls
//! [`LocalCluster::detach`] and leaves them running in their own process
//! group (so a Ctrl-C in the terminal does not reach them), and
//! [`down`] later stops them using the pids in `cluster.json`: SIGTERM, a
//! grace period, then SIGKILL.
//!
//! With [`ClusterConfig::secure`] (`kvctl cluster up --tls`) the cluster
//! runs with every protection `kv-server` has: before the first start, `up`
//! makes a CA and a certificate per node, a token file holding one `admin`
//! token and a cluster secret in `DIR/secrets` (by running `kv-server certs`
//! and `kv-server tokens`), then starts every node with peer TLS, HTTPS and
//! tokens; `cluster.json` records where those files are ([`Security`]), and
//! [`LocalCluster::client`] trusts the CA and sends the admin token.
//!
//! The data directories outlive the processes. `up` on a directory whose
//! `cluster.json` lists no running process restarts that cluster on the same
//! addresses (Raft remembers its members by address); `up` on a directory
//! whose nodes still run refuses.
//!
//! [`LocalCluster::open`] takes charge of a cluster whose nodes run
//! already (`kvctl cluster up` has exited since), and
//! [`LocalCluster::rolling_restart`] restarts its nodes one at a time
//! (`kvctl cluster restart --rolling`): followers first and the leader
//! last, each stopped with SIGTERM (a leader hands its office over first),
//! started again with the arguments `up` gives it, and caught up before the
//! next one stops, as [`kv_client::rolling`] describes. The cluster keeps a
//! majority running throughout.
//!
//! With [`ClusterConfig::raft_proxies`] every Raft link runs through an
//! in-process proxy ([`jepsen_net`], the Jepsen harness's) that can cut
//! it: the membership names each node's proxy address, and the proxy
//! forwards to the node's real Raft port. [`LocalCluster::net`] cuts and
//! heals links. The proxies live in this process, so such a cluster is for
//! measurements and tests, not for detaching.
//!
//! Shortcuts a production tool would not take: free ports are found by
//! [`bind_restartable_port`] (a random port below the kernel's ephemeral
//! range, so that a restarted node finds its port free) and the socket is
//! closed before the node starts, so another process could grab a port
//! before the node binds it; and a pid in `cluster.json` may have been
//! reused by an unrelated process, which is why on Linux a pid only counts
//! as a node if its command line names the node's data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jepsen_net::Net;
use kv_client::client::{BearerToken, Client, ClientError, ClientOptions};
use kv_client::ports::bind_restartable_port;
use kv_client::rolling::{self, CaughtUp, NotCaughtUp};
use kv_client::tls::ClientTls;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The file, in the cluster's directory, that lists its nodes.
pub const CLUSTER_FILE: &str = "cluster.json";
/// Each node's log (its stderr and stdout), in its data directory.
pub const LOG_FILE: &str = "server.log";
/// How long [`down`] waits after SIGTERM before sending SIGKILL: long
/// enough for a node to finish its in-flight writes and close its log.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// With `--base-port P`, node i's Raft port is its HTTP port plus this
/// (kv-server's own defaults are 8080 and 9080).
pub const RAFT_PORT_OFFSET: u16 = 1000;

/// Errors of [`LocalCluster`] and [`down`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalClusterError {
    /// Reading or writing a file, or starting a process, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory's nodes are still running.
    #[error("a cluster is already running in {dir} (pids {pids:?}); stop it with `kvctl cluster down --dir {dir}`")]
    AlreadyRunning {
        /// The directory.
        dir: String,
        /// The running pids.
        pids: Vec<u32>,
    },
    /// The directory holds a cluster of another size.
    #[error("{dir} holds a cluster of {existing} nodes, not {requested}; use another --dir, or delete it")]
    DifferentCluster {
        /// The directory.
        dir: String,
        /// Nodes in its cluster.json.
        existing: usize,
        /// Nodes asked for.
        requested: u64,
    },
    /// `cluster.json` could not be read.
    #[error("{path}: {reason}")]
    BadClusterFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The arguments do not describe a cluster that can be started.
    #[error("{0}")]
    Invalid(String),
    /// A node exited while the cluster was starting.
    #[error("node {id} exited during startup ({status}); the end of {log}:\n{tail}")]
    NodeExited {
        /// The node.
        id: u64,
        /// How it exited.
        status: String,
        /// Its log file.
        log: String,
        /// The log's last lines.
        tail: String,
    },
    /// No leader was agreed on in time.
    #[error("no leader after {waited:?}: {detail}; see the logs in {dir}/node-*/{LOG_FILE}")]
    NoLeader {
        /// How long we waited.
        waited: Duration,
        /// What the nodes said last.
        detail: String,
        /// The cluster's directory.
        dir: String,
    },
    /// The node id is not part of the cluster.
    #[error("no node {0} in this cluster")]
    UnknownNode(u64),
    /// [`LocalCluster::open`]: some nodes of the directory's cluster are
    /// not running.
    #[error("nodes {ids:?} of the cluster in {dir} are not running; restart the whole cluster with `kvctl cluster down --dir {dir}` and `kvctl cluster up --dir {dir}`")]
    NotRunning {
        /// The directory.
        dir: String,
        /// The nodes that are not running.
        ids: Vec<u64>,
    },
    /// A restarted node did not catch up in time.
    #[error(transparent)]
    NotCaughtUp(#[from] NotCaughtUp),
    /// [`LocalCluster::rolling_restart`]: a node did not come back. The
    /// nodes after it in the order were not touched.
    #[error("node {id} did not come back: {reason}; nodes {untouched:?} were not touched; the end of {log}:\n{tail}")]
    RestartFailed {
        /// The node.
        id: u64,
        /// What went wrong.
        reason: String,
        /// The nodes not yet restarted, left as they were.
        untouched: Vec<u64>,
        /// Its log file.
        log: String,
        /// The log's last lines.
        tail: String,
    },
    /// A status client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How many nodes (ids 1..=nodes).
    pub nodes: u64,
    /// The cluster's directory.
    pub dir: PathBuf,
    /// HTTP ports `base_port + i - 1` and Raft ports `RAFT_PORT_OFFSET`
    /// higher (Raft proxies another `RAFT_PORT_OFFSET` higher); `None`: free
    /// ports chosen by the OS.
    pub base_port: Option<u16>,
    /// The `kv-server` binary ([`default_server_binary`] finds the one
    /// built next to the running executable).
    pub bin: PathBuf,
    /// More arguments for every node (`--max-value-bytes 1024`, say).
    pub extra_args: Vec<String>,
    /// How long to wait for the nodes to agree on a leader.
    pub startup_timeout: Duration,
    /// Make certificates, an admin token and a cluster secret, and run the
    /// nodes with peer TLS, HTTPS and tokens (see the module docs). A
    /// restart keeps what the directory's cluster was created with.
    pub secure: bool,
    /// Run every Raft link through an in-process proxy that
    /// [`LocalCluster::net`] can cut (see the module docs). A restart keeps
    /// what the directory's cluster was created with.
    pub raft_proxies: bool,
}

impl ClusterConfig {
    /// `nodes` nodes in `dir` on free ports, run from `bin`.
    pub fn new(nodes: u64, dir: impl Into<PathBuf>, bin: impl Into<PathBuf>) -> Self {
        ClusterConfig {
            nodes,
            dir: dir.into(),
            base_port: None,
            bin: bin.into(),
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            secure: false,
            raft_proxies: false,
        }
    }
}

/// One node, as recorded in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: u64,
    /// Its process id (of the latest start).
    pub pid: u32,
    /// Its HTTP address, `127.0.0.1:PORT`.
    pub http_addr: String,
    /// Its Raft address, `127.0.0.1:PORT`.
    pub raft_addr: String,
    /// With [`ClusterConfig::raft_proxies`]: its proxy's address, which the
    /// membership names as its Raft address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_proxy_addr: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// The contents of `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The nodes, by id.
    pub nodes: Vec<NodeInfo>,
    /// Where a secure cluster's certificates and tokens are; absent for a
    /// plaintext cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
}

/// The files of a secure local cluster, all in `DIR/secrets`. The CA's
/// key stays there too: this is a cluster for trying things out on one
/// machine, where its owner holds every key anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The CA certificate clients trust (`kvctl --cacert`).
    pub ca: PathBuf,
    /// A file holding the admin token (mode 0600), for `KV_TOKEN`.
    pub admin_token_file: PathBuf,
    /// The token file every node is started with (hashes only).
    pub token_file: PathBuf,
    /// The cluster secret file every node is started with.
    pub cluster_secret_file: PathBuf,
}

impl Security {
    fn in_dir(dir: PathBuf) -> Security {
        Security {
            ca: dir.join("ca.pem"),
            admin_token_file: dir.join("admin.token"),
            token_file: dir.join("tokens"),
            cluster_secret_file: dir.join("cluster-secret"),
            dir,
        }
    }

    fn node_cert(&self, id: u64) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("node-{id}.pem")), self.dir.join(format!("node-{id}.key")))
    }

    /// The node flags for peer TLS, HTTPS and tokens.
    fn server_args(&self, id: u64) -> Vec<std::ffi::OsString> {
        let (cert, key) = self.node_cert(id);
        let mut args = Vec::new();
        for (flag, path) in [
            ("--peer-ca", &self.ca),
            ("--peer-cert", &cert),
            ("--peer-key", &key),
            ("--tls-ca", &self.ca),
            ("--tls-cert", &cert),
            ("--tls-key", &key),
            ("--token-file", &self.token_file),
            ("--cluster-secret-file", &self.cluster_secret_file),
        ] {
            args.push(flag.into());
            args.push(path.clone().into_os_string());
        }
        args
    }

    /// Client options that trust the CA and send the admin token.
    pub fn client_options(&self, mut options: ClientOptions) -> Result<ClientOptions, LocalClusterError> {
        let tls = ClientTls::from_pem_files(&self.ca, None).map_err(|e| {
            LocalClusterError::Invalid(format!("reading the cluster's CA {}: {e}", self.ca.display()))
        })?;
        let token = fs::read_to_string(&self.admin_token_file)
            .map_err(|source| io(format!("reading {}", self.admin_token_file.display()), source))?;
        options.tls = Some(tls);
        options.token = Some(BearerToken::new(token.trim()));
        Ok(options)
    }

    /// Makes every file, by running `bin`'s `certs` and `tokens` commands.
    fn create(dir: PathBuf, bin: &Path, ids: &[u64]) -> Result<Security, LocalClusterError> {
        let security = Security::in_dir(dir);
        let d = security.dir.clone().into_os_string();
        let run = |args: &[&std::ffi::OsStr]| -> Result<String, LocalClusterError> {
            let out = kv_client::server_env::clear(&mut Command::new(bin))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| io(format!("running {}", bin.display()), source))?;
            if !out.status.success() {
                let words: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
                return Err(LocalClusterError::Invalid(format!(
                    "{} {} failed ({}): {}",
                    bin.display(),
                    words.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        run(&["certs".as_ref(), "init".as_ref(), "--dir".as_ref(), &d])?;
        for id in ids {
            let id = id.to_string();
            run(&["certs".as_ref(), "node".as_ref(), "--id".as_ref(), id.as_ref(), "--dir".as_ref(), &d])?;
        }
        let tokens = security.token_file.clone().into_os_string();
        let token = run(&[
            "tokens".as_ref(),
            "add".as_ref(),
            "--file".as_ref(),
            &tokens,
            "--role".as_ref(),
            "admin".as_ref(),
            "--name".as_ref(),
            "admin".as_ref(),
        ])?;
        write_private(&security.admin_token_file, token.trim())?;
        let secret = security.cluster_secret_file.clone().into_os_string();
        run(&["tokens".as_ref(), "secret".as_ref(), "--file".as_ref(), &secret])?;
        Ok(security)
    }
}

/// Writes `text` and a newline to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), LocalClusterError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| io(format!("creating {}", path.display()), source))?;
    writeln!(file, "{text}").map_err(|source| io(format!("writing {}", path.display()), source))
}

impl ClusterFile {
    /// Reads `dir/cluster.json`, which must exist.
    fn load_existing(dir: &Path) -> Result<ClusterFile, LocalClusterError> {
        ClusterFile::load(dir)?.ok_or_else(|| {
            LocalClusterError::Invalid(format!(
                "no {CLUSTER_FILE} in {}: no cluster was started there",
                dir.display()
            ))
        })
    }

    /// Reads `dir/cluster.json`; `Ok(None)` if there is none.
    pub fn load(dir: &Path) -> Result<Option<ClusterFile>, LocalClusterError> {
        let path = dir.join(CLUSTER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LocalClusterError::Io { what: format!("reading {}", path.display()), source })
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|e| LocalClusterError::BadClusterFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Writes `dir/cluster.json` (via a temporary file and a rename, so a
    /// reader never sees half a file).
    pub fn save(&self, dir: &Path) -> Result<(), LocalClusterError> {
        let path = dir.join(CLUSTER_FILE);
        let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("invariant: ClusterFile serializes to JSON");
        fs::write(&tmp, text + "\n").map_err(|source| io(format!("writing {}", tmp.display()), source))?;
        fs::rename(&tmp, &path).map_err(|source| io(format!("writing {}", path.display()), source))
    }

    /// The HTTP endpoints, by node id.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.http_addr.clone()).collect()
    }
}

/// A running local cluster. Dropping it kills the nodes it started, unless
/// it was [detached](LocalCluster::detach).
#[derive(Debug)]
pub struct LocalCluster {
    config: ClusterConfig,
    file: ClusterFile,
    /// The nodes this value started.
    children: BTreeMap<u64, Child>,
    /// The nodes that ran already when [`LocalCluster::open`] took charge
    /// (started by an earlier kvctl), known by their pids in `cluster.json`.
    adopted: BTreeSet<u64>,
    leader: u64,
    restarted: bool,
    /// With [`ClusterConfig::raft_proxies`]: the links between nodes.
    net: Option<Net>,
    /// The proxies' tasks, aborted on drop.
    proxies: Vec<tokio::task::JoinHandle<()>>,
}

/// How [`LocalCluster::stop`] stopped a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// It exited within [`STOP_GRACE`] of SIGTERM.
    Exited,
    /// It still ran [`STOP_GRACE`] after SIGTERM, and was killed with SIGKILL.
    Killed,
    /// It was not running.
    NotRunning,
}

/// One node of a [rolling restart](LocalCluster::rolling_restart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRestart {
    /// The node.
    pub id: u64,
    /// Whether it led when it was stopped (then it handed leadership over).
    pub was_leader: bool,
    /// Its process before.
    pub old_pid: u32,
    /// Its process now.
    pub new_pid: u32,
    /// How it stopped.
    pub stopped: Stopped,
    /// Seconds from SIGTERM until it had caught up.
    pub seconds: f64,
    /// The leader it caught up with.
    pub leader: u64,
    /// The index it caught up to: that leader's commit index when the node
    /// first named it.
    pub caught_up_to: u64,
}

/// What a [rolling restart](LocalCluster::rolling_restart) did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollingReport {
    /// The nodes, in the order they were restarted.
    pub nodes: Vec<NodeRestart>,
    /// The leader before.
    pub leader_before: u64,
    /// Its term.
    pub term_before: u64,
    /// The leader after.
    pub leader_after: u64,
    /// Its term: one more than before when the old leader handed over.
    pub term_after: u64,
    /// Seconds the whole restart took.
    pub seconds: f64,
}

impl LocalCluster {
    /// Starts the nodes (or restarts the stopped cluster recorded in the
    /// directory), waits until they agree on a leader, and writes
    /// `cluster.json`. On failure, kills whatever it started; the logs stay.
    pub async fn up(config: ClusterConfig) -> Result<LocalCluster, LocalClusterError> {
        if config.nodes == 0 {
            return Err(LocalClusterError::Invalid("a cluster needs at least one node".into()));
        }
        let dir = &config.dir;
        fs::create_dir_all(dir).map_err(|source| io(format!("creating {}", dir.display()), source))?;
        let (file, restarted) = match ClusterFile::load(dir)? {
            Some(existing) => {
                let running: Vec<u32> =
                    existing.nodes.iter().filter(|n| is_running(n)).map(|n| n.pid).collect();
                if !running.is_empty() {
                    return Err(LocalClusterError::AlreadyRunning {
                        dir: dir.display().to_string(),
                        pids: running,
                    });
                }
                if existing.nodes.len() as u64 != config.nodes {
                    return Err(LocalClusterError::DifferentCluster {
                        dir: dir.display().to_string(),
                        existing: existing.nodes.len(),
                        requested: config.nodes,
                    });
                }
                let proxied = existing.nodes.iter().all(|n| n.raft_proxy_addr.is_some());
                if proxied != config.raft_proxies {
                    return Err(LocalClusterError::Invalid(format!(
                        "{} holds a cluster {} Raft proxies; use another --dir, or delete it",
                        dir.display(),
                        if proxied { "with" } else { "without" }
                    )));
                }
                if config.secure && existing.security.is_none() {
                    return Err(LocalClusterError::Invalid(format!(
                        "{} holds a plaintext cluster; start it without --tls, or use another --dir",
                        dir.display()
                    )));
                }
                (existing, true)
            }
            None => {
                let nodes = plan_nodes(&config)?;
                let security = match config.secure {
                    true => {
                        let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
                        Some(Security::create(dir.join("secrets"), &config.bin, &ids)?)
                    }
                    false => None,
                };
                (ClusterFile { nodes, security }, false)
            }
        };
        let mut cluster = LocalCluster {
            config,
            file,
            children: BTreeMap::new(),
            adopted: BTreeSet::new(),
            leader: 0,
            restarted,
            net: None,
            proxies: Vec::new(),
        };
        if cluster.config.raft_proxies {
            cluster.start_proxies().await?;
        }
        let ids: Vec<u64> = cluster.file.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            // On error, dropping `cluster` kills the nodes already started.
            cluster.start(id)?;
        }
        let timeout = cluster.config.startup_timeout;
        cluster.leader = cluster.wait_for_leader(timeout).await?;
        tracing::info!(nodes = cluster.file.nodes.len(), leader = cluster.leader, dir = %cluster.config.dir.display(), "local cluster up");
        Ok(cluster)
    }

    /// Takes charge of the cluster recorded in `dir` whose nodes all run
    /// already (started by `kvctl cluster up`, which has exited since), to
    /// restart them with `bin`. Nodes it starts are its own, and dropping
    /// it kills them, as with [`LocalCluster::up`]; [`LocalCluster::detach`]
    /// leaves them running. The nodes it found running are never killed on
    /// drop.
    ///
    /// # Errors
    /// If `dir` holds no cluster, or some of its nodes are not running.
    pub fn open(dir: &Path, bin: impl Into<PathBuf>) -> Result<LocalCluster, LocalClusterError> {
        let file = ClusterFile::load_existing(dir)?;
        let stopped: Vec<u64> = file.nodes.iter().filter(|n| !is_running(n)).map(|n| n.id).collect();
        if !stopped.is_empty() {
            return Err(LocalClusterError::NotRunning { dir: dir.display().to_string(), ids: stopped });
        }
        let mut config = ClusterConfig::new(file.nodes.len() as u64, dir, bin);
        config.secure = file.security.is_some();
        let adopted = file.nodes.iter().map(|n| n.id).collect();
        Ok(LocalCluster {
            config,
            file,
            children: BTreeMap::new(),
            adopted,
            leader: 0,
            restarted: false,
            net: None,
            proxies: Vec::new(),
        })
    }

    /// Binds every node's proxy address and starts its proxy.
    async fn start_proxies(&mut self) -> Result<(), LocalClusterError> {
        let net = Net::new();
        for node in &self.file.nodes {
            let proxy = node.raft_proxy_addr.as_deref().ok_or_else(|| {
                LocalClusterError::Invalid(format!("node {} has no Raft proxy address", node.id))
            })?;
            let listener = tokio::net::TcpListener::bind(proxy)
                .await
                .map_err(|source| io(format!("binding node {}'s Raft proxy at {proxy}", node.id), source))?;
            let target = node.raft_addr.parse().map_err(|e| {
                LocalClusterError::Invalid(format!("node {}'s Raft address {}: {e}", node.id, node.raft_addr))
            })?;
            self.proxies.push(net.spawn_proxy(node.id, listener, target));
        }
        self.net = Some(net);
        Ok(())
    }

    /// With [`ClusterConfig::raft_proxies`]: the links between the nodes,
    /// to cut and heal.
    pub fn net(&self) -> Option<&Net> {
        self.net.as_ref()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.file.nodes
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> Result<&NodeInfo, LocalClusterError> {
        self.file.nodes.iter().find(|n| n.id == id).ok_or(LocalClusterError::UnknownNode(id))
    }

    /// The HTTP endpoints of all nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.file.endpoints()
    }

    /// The leader found by the last [`LocalCluster::wait_for_leader`] (or by `up`).
    pub fn leader(&self) -> u64 {
        self.leader
    }

    /// Whether `up` restarted a stopped cluster rather than creating one.
    pub fn restarted(&self) -> bool {
        self.restarted
    }

    /// Where a secure cluster's certificates and tokens are.
    pub fn security(&self) -> Option<&Security> {
        self.file.security.as_ref()
    }

    /// A client for all nodes, with default options (and, for a secure
    /// cluster, trusting its CA and sending its admin token).
    pub fn client(&self) -> Result<Client, LocalClusterError> {
        self.client_with(ClientOptions::default())
    }

    /// A client with the given options (plus a secure cluster's CA and
    /// admin token).
    pub fn client_with(&self, options: ClientOptions) -> Result<Client, LocalClusterError> {
        let options = match &self.file.security {
            Some(security) => security.client_options(options)?,
            None => options,
        };
        Ok(Client::with_options(self.endpoints(), options)?)
    }

    /// Starts node `id` (again), with the same arguments as before; its data
    /// directory is reopened. Does nothing if it is running.
    pub fn start(&mut self, id: u64) -> Result<(), LocalClusterError> {
        if self.adopted.contains(&id) {
            return Ok(());
        }
        if let Some(child) = self.children.get_mut(&id) {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
            self.children.remove(&id);
        }
        let members = initial_members(&self.file.nodes);
        let node =
            self.file.nodes.iter_mut().find(|n| n.id == id).ok_or(LocalClusterError::UnknownNode(id))?;
        let security = self.file.security.as_ref().map(|s| s.server_args(id)).unwrap_or_default();
        let child = spawn_node(&self.config, node, &members, &security)?;
        node.pid = child.id();
        self.children.insert(id, child);
        self.file.save(&self.config.dir)
    }

    /// Kills node `id` with SIGKILL (a crash: nothing is flushed) and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let node = self.node(id)?.clone();
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.adopted.remove(&id) && signal(node.pid, Some(Signal::SIGKILL)).is_ok() {
            wait_until(Instant::now() + Duration::from_secs(1), || !is_running(&node));
        }
        Ok(())
    }

    /// Stops node `id` with SIGTERM (a clean shutdown: a leader hands its
    /// leadership over first), then SIGKILL if it is still running after
    /// [`STOP_GRACE`]; says which it took.
    pub async fn stop(&mut self, id: u64) -> Result<Stopped, LocalClusterError> {
        let node = self.node(id)?.clone();
        if let Some(child) = self.children.remove(&id) {
            if signal(child.id(), Some(Signal::SIGTERM)).is_err() {
                reap(child, Duration::ZERO).await;
                return Ok(Stopped::NotRunning);
            }
            return Ok(if reap(child, STOP_GRACE).await { Stopped::Exited } else { Stopped::Killed });
        }
        if !self.adopted.remove(&id) {
            return Ok(Stopped::NotRunning);
        }
        let report = terminate(vec![node]).await;
        Ok(match (report.stopped.is_empty(), report.killed.is_empty()) {
            (false, _) => Stopped::Exited,
            (true, false) => Stopped::Killed,
            (true, true) => Stopped::NotRunning,
        })
    }

    /// Node `id`'s process id, if this cluster started it.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    /// Sends `signal` to node `id` and returns at once; the node stays ours
    /// until [`LocalCluster::wait_exit`] reaps it (for measuring what
    /// happens while it stops).
    pub fn signal(&self, id: u64, sig: Signal) -> Result<(), LocalClusterError> {
        self.node(id)?;
        let child = self.children.get(&id).ok_or_else(|| {
            LocalClusterError::Invalid(format!(
                "node {id} is not running (it was not started by this cluster)"
            ))
        })?;
        signal(child.id(), Some(sig)).map_err(|e| io(format!("sending {sig} to node {id}"), e.into()))
    }

    /// Waits up to `within` for node `id`'s process to exit, and reaps it;
    /// SIGKILL if it is still running then. Returns whether it exited by
    /// itself.
    pub async fn wait_exit(&mut self, id: u64, within: Duration) -> Result<bool, LocalClusterError> {
        self.node(id)?;
        match self.children.remove(&id) {
            Some(child) => Ok(reap(child, within).await),
            None => Ok(true),
        }
    }

    /// A client whose every call is one quick attempt, for watching nodes
    /// that may be down.
    fn probe_client(&self) -> Result<Client, LocalClusterError> {
        self.client_with(ClientOptions {
            request_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            deadline: Duration::from_millis(500),
            ..ClientOptions::default()
        })
    }

    /// Whether node `id` runs, as far as this value knows: it started it,
    /// or found it running.
    fn runs(&self, id: u64) -> bool {
        self.children.contains_key(&id) || self.adopted.contains(&id)
    }

    /// Waits until every running node answers and all name the same leader,
    /// which also says it is the leader. Returns its id.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<u64, LocalClusterError> {
        self.wait_for_leader_and_term(timeout).await.map(|(leader, _)| leader)
    }

    /// [`LocalCluster::wait_for_leader`], and the leader's term.
    async fn wait_for_leader_and_term(&mut self, timeout: Duration) -> Result<(u64, u64), LocalClusterError> {
        let client = self.probe_client()?;
        let started = Instant::now();
        loop {
            self.check_children()?;
            let mut detail = Vec::new();
            let mut leaders = Vec::new();
            let mut leader_says_so = None;
            for node in &self.file.nodes {
                if !self.runs(node.id) {
                    continue;
                }
                match client.status(Some(&node.http_addr)).await {
                    Ok(s) => {
                        leaders.push(s.leader);
                        if s.leader == Some(s.id) && s.role == "leader" {
                            leader_says_so = Some(s.term);
                        }
                        detail.push(format!("node {} is {} (leader {:?})", s.id, s.role, s.leader));
                    }
                    Err(e) => {
                        leaders.push(None);
                        detail.push(format!("node {}: {e}", node.id));
                    }
                }
            }
            if let (Some(Some(leader)), Some(term)) = (leaders.first(), leader_says_so) {
                if leaders.iter().all(|l| *l == Some(*leader)) {
                    self.leader = *leader;
                    return Ok((*leader, term));
                }
            }
            if started.elapsed() >= timeout {
                return Err(LocalClusterError::NoLeader {
                    waited: timeout,
                    detail: detail.join("; "),
                    dir: self.config.dir.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `within` until node `id` has come back after a restart:
    /// it answers, names a leader, and has applied what that leader had
    /// committed when the node first named it ([`rolling::wait_caught_up`]).
    ///
    /// # Errors
    /// [`LocalClusterError::NotCaughtUp`] after `within`, and
    /// [`LocalClusterError::NodeExited`] as soon as a node this value
    /// started has exited.
    pub async fn wait_caught_up(&mut self, id: u64, within: Duration) -> Result<CaughtUp, LocalClusterError> {
        self.node(id)?;
        let client = self.probe_client()?;
        let addrs: BTreeMap<u64, String> =
            self.file.nodes.iter().map(|n| (n.id, n.http_addr.clone())).collect();
        let status = |n: u64| {
            let (client, addr) = (client.clone(), addrs.get(&n).cloned());
            async move {
                match addr {
                    Some(addr) => client.status(Some(&addr)).await.map_err(|e| e.to_string()),
                    None => Err(format!("node {n} is not in {CLUSTER_FILE}")),
                }
            }
        };
        let caught_up = rolling::wait_caught_up(id, within, status);
        tokio::pin!(caught_up);
        loop {
            tokio::select! {
                done = &mut caught_up => return Ok(done?),
                () = tokio::time::sleep(Duration::from_millis(50)) => self.check_children()?,
            }
        }
    }

    /// Restarts every node, one at a time, the leader last (see the module
    /// docs): SIGTERM, up to [`STOP_GRACE`] to exit (then SIGKILL), start
    /// with the same arguments (and this value's binary), and up to
    /// `within` to catch up ([`LocalCluster::wait_caught_up`]). Before each
    /// node, every running node must name the same leader within `within`.
    /// `progress` hears of each node as soon as it is back. `cluster.json`
    /// records each new pid at once.
    ///
    /// # Errors
    /// [`LocalClusterError::RestartFailed`] if a node does not come back:
    /// the nodes after it are left alone. A cluster without an agreed
    /// leader is not touched at all ([`LocalClusterError::NoLeader`]).
    pub async fn rolling_restart(
        &mut self,
        within: Duration,
        mut progress: impl FnMut(&NodeRestart),
    ) -> Result<RollingReport, LocalClusterError> {
        let began = Instant::now();
        let (leader_before, term_before) = self.wait_for_leader_and_term(within).await?;
        let mut pending: Vec<u64> = self.file.nodes.iter().map(|n| n.id).collect();
        let mut leader = leader_before;
        let mut nodes = Vec::new();
        while let Some(id) = rolling::next_to_restart(&pending, Some(leader)) {
            pending.retain(|&p| p != id);
            let node = self.restart_one(id, leader, within).await.map_err(|e| {
                let log = self.config.dir.join(format!("node-{id}")).join(LOG_FILE);
                let reason = match e {
                    LocalClusterError::NodeExited { status, .. } => format!("it exited ({status})"),
                    other => other.to_string(),
                };
                LocalClusterError::RestartFailed {
                    id,
                    reason,
                    untouched: pending.clone(),
                    tail: tail(&log, 20),
                    log: log.display().to_string(),
                }
            })?;
            progress(&node);
            nodes.push(node);
            if !pending.is_empty() {
                leader = self.wait_for_leader(within).await?;
            }
        }
        let (leader_after, term_after) = self.wait_for_leader_and_term(within).await?;
        Ok(RollingReport {
            nodes,
            leader_before,
            term_before,
            leader_after,
            term_after,
            seconds: began.elapsed().as_secs_f64(),
        })
    }

    /// One step of [`LocalCluster::rolling_restart`].
    async fn restart_one(
        &mut self,
        id: u64,
        leader: u64,
        within: Duration,
    ) -> Result<NodeRestart, LocalClusterError> {
        let old_pid = self.node(id)?.pid;
        let began = Instant::now();
        let stopped = self.stop(id).await?;
        self.start(id)?;
        let caught_up = self.wait_caught_up(id, within).await?;
        Ok(NodeRestart {
            id,
            was_leader: id == leader,
            old_pid,
            new_pid: self.node(id)?.pid,
            stopped,
            seconds: began.elapsed().as_secs_f64(),
            leader: caught_up.leader,
            caught_up_to: caught_up.index,
        })
    }

    /// Leaves the nodes running after this value is dropped (they are in
    /// their own process group already); returns what `cluster.json` says.
    pub fn detach(mut self) -> ClusterFile {
        self.children.clear();
        self.file.clone()
    }

    /// Stops every node (SIGTERM, then SIGKILL after [`STOP_GRACE`]).
    pub fn shutdown(mut self) {
        for child in self.children.values_mut() {
            let _ = signal(child.id(), Some(Signal::SIGTERM));
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in self.children.values_mut() {
            wait_until(deadline, || matches!(child.try_wait(), Ok(Some(_)) | Err(_)));
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// Fails if a node we started has exited.
    fn check_children(&mut self) -> Result<(), LocalClusterError> {
        for (id, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.config.dir.join(format!("node-{id}")).join(LOG_FILE);
                return Err(LocalClusterError::NodeExited {
                    id: *id,
                    status: status.to_string(),
                    tail: tail(&log, 20),
                    log: log.display().to_string(),
                });
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for proxy in &self.proxies {
            proxy.abort();
        }
    }
}

/// How [`down`] stopped each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// Exited after SIGTERM.
    pub stopped: Vec<NodeInfo>,
    /// Still running after the grace period; killed with SIGKILL.
    pub killed: Vec<NodeInfo>,
    /// Were not running.
    pub not_running: Vec<NodeInfo>,
}

impl DownReport {
    /// One line per node, by id: the node and what happened to it.
    pub fn lines(&self) -> Vec<(&NodeInfo, &'static str)> {
        let mut lines: Vec<(&NodeInfo, &'static str)> = Vec::new();
        lines.extend(self.stopped.iter().map(|n| (n, "stopped")));
        lines.extend(self.killed.iter().map(|n| (n, "killed (did not stop after SIGTERM)")));
        lines.extend(self.not_running.iter().map(|n| (n, "was not running")));
        lines.sort_by_key(|(n, _)| n.id);
        lines
    }
}

/// Stops the nodes listed in `dir/cluster.json`: SIGTERM, up to
/// [`STOP_GRACE`] for them to exit, then SIGKILL. Keeps `cluster.json` and
/// the data, so `up` can restart the cluster.
pub async fn down(dir: &Path) -> Result<DownReport, LocalClusterError> {
    let file = ClusterFile::load_existing(dir)?;
    Ok(terminate(file.nodes).await)
}

/// Sends SIGTERM to each of `nodes` that runs (by its recorded pid), waits
/// up to [`STOP_GRACE`] for them all to exit, then sends SIGKILL to the
/// rest.
async fn terminate(nodes: Vec<NodeInfo>) -> DownReport {
    let mut report = DownReport::default();
    let mut signalled = Vec::new();
    for node in nodes {
        if is_running(&node) && signal(node.pid, Some(Signal::SIGTERM)).is_ok() {
            signalled.push(node);
        } else {
            report.not_running.push(node);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while signalled.iter().any(is_running) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in signalled {
        if is_running(&node) {
            let _ = signal(node.pid, Some(Signal::SIGKILL));
            wait_until(Instant::now() + Duration::from_secs(1), || !is_running(&node));
            report.killed.push(node);
        } else {
            report.stopped.push(node);
        }
    }
    report
}

/// The kv-server binary next to the running executable (both are built
/// into the same `target/<profile>/` directory).
pub fn default_server_binary() -> Result<PathBuf, LocalClusterError> {
    let exe =
        std::env::current_exe().map_err(|source| io("finding the current executable".into(), source))?;
    let bin = exe.with_file_name(format!("kv-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Err(LocalClusterError::Invalid(format!(
            "no kv-server next to {} (build it with `cargo build -p kv-app`, or pass --bin)",
            exe.display()
        )));
    }
    Ok(bin)
}

/// Ids, addresses and data directories for a new cluster.
fn plan_nodes(config: &ClusterConfig) -> Result<Vec<NodeInfo>, LocalClusterError> {
    let n = config.nodes;
    let ports: Vec<(u16, u16, u16)> = match config.base_port {
        Some(base) => (0..n)
            .map(|i| {
                let http = u16::try_from(u64::from(base) + i).ok();
                let raft = http.and_then(|p| p.checked_add(RAFT_PORT_OFFSET));
                // Unused (0) without proxies.
                let proxy = match config.raft_proxies {
                    true => raft.and_then(|p| p.checked_add(RAFT_PORT_OFFSET)),
                    false => Some(0),
                };
                Some((http?, raft?, proxy?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                LocalClusterError::Invalid(format!("--base-port {base} leaves no room for {n} nodes"))
            })?,
        None => {
            // Hold every listener until all ports are chosen, so no port is
            // handed out twice.
            let listeners = (0..3 * n)
                .map(|_| bind_restartable_port())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| io("finding free ports".into(), source))?;
            let ports = listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| io("finding free ports".into(), source))?;
            ports.chunks(3).map(|p| (p[0], p[1], p[2])).collect()
        }
    };
    Ok(ports
        .into_iter()
        .zip(1..)
        .map(|((http, raft, proxy), id)| NodeInfo {
            id,
            pid: 0,
            http_addr: format!("127.0.0.1:{http}"),
            raft_addr: format!("127.0.0.1:{raft}"),
            raft_proxy_addr: config.raft_proxies.then(|| format!("127.0.0.1:{proxy}")),
            data_dir: config.dir.join(format!("node-{id}")),
        })
        .collect())
}

/// The `--initial-members` argument: `1=RAFT/HTTP,2=...`, where RAFT is
/// the node's proxy address if it has one.
fn initial_members(nodes: &[NodeInfo]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}={}/{}", n.id, n.raft_proxy_addr.as_ref().unwrap_or(&n.raft_addr), n.http_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts one node in the background, in its own process group, with its
/// output going to its log.
fn spawn_node(
    config: &ClusterConfig,
    node: &NodeInfo,
    members: &str,
    security: &[std::ffi::OsString],
) -> Result<Child, LocalClusterError> {
    fs::create_dir_all(&node.data_dir)
        .map_err(|source| io(format!("creating {}", node.data_dir.display()), source))?;
    let log_path = node.data_dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| io(format!("opening {}", log_path.display()), source))?;
    let log_too = log.try_clone().map_err(|source| io(format!("opening {}", log_path.display()), source))?;
    let mut command = Command::new(&config.bin);
    // The node runs with the flags below, not with KV_* variables of the
    // user's shell.
    kv_client::server_env::clear(&mut command)
        .arg("--id")
        .arg(node.id.to_string())
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--http-addr")
        .arg(&node.http_addr)
        .arg("--raft-addr")
        .arg(&node.raft_addr)
        .arg("--initial-members")
        .arg(members)
        .args(security)
        .args(&config.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_too))
        .stderr(Stdio::from(log))
        // A process group of its own: the terminal's Ctrl-C goes to
        // kvctl's group only, and the node outlives kvctl.
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|source| io(format!("starting {} for node {}", config.bin.display(), node.id), source))?;
    tracing::info!(node_id = node.id, pid = child.id(), http = %node.http_addr, raft = %node.raft_addr, "started kv-server");
    Ok(child)
}

/// Waits up to `within` (polling every 10 ms) for `child` to exit, then
/// kills it if it has not, and reaps it. Returns whether it exited by
/// itself.
pub(crate) async fn reap(mut child: Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exited = !matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    exited
}

/// Whether the node's recorded pid is a live process that is this node.
fn is_running(node: &NodeInfo) -> bool {
    let Ok(pid) = i32::try_from(node.pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // If the node is our own child and has exited, reap it, or it would
    // linger as a zombie that still answers signals.
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    match signal(node.pid, None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    // On Linux, make sure the pid was not reused by another program.
    if !Path::new("/proc/self").exists() {
        return true;
    }
    let data_dir = node.data_dir.as_os_str().as_encoded_bytes();
    for _ in 0..20 {
        let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", node.pid)) else { return false };
        if !cmdline.is_empty() {
            return cmdline.split(|&b| b == 0).any(|arg| arg == data_dir);
        }
        // An empty command line: a zombie, or a process in the middle of
        // exec (its parent is already back from spawn, its arguments are
        // not in place yet). Only the latter is worth waiting for.
        let stat = fs::read_to_string(format!("/proc/{}/stat", node.pid)).unwrap_or_default();
        if stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with('Z')) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Polls `done` every 50 ms until it is true or `deadline` passes.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a file (empty if it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let Ok(file) = File::open(path) else { return String::new() };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `signal` to process `pid` (a `u32`, as `Child::id` and
/// `cluster.json` have it).
fn signal(pid: u32, signal: Option<Signal>) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    kill(Pid::from_raw(pid), signal)
}

fn io(what: String, source: std::io::Error) -> LocalClusterError {
    LocalClusterError::Io { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_port_gives_consecutive_http_ports_and_raft_ports_1000_higher() {
        let mut config = ClusterConfig::new(3, "/tmp/c", "kv-server");
        config.base_port = Some(8080);
        let nodes = plan_nodes(&config).unwrap();
        let addrs: Vec<(u64, &str, &str)> =
            nodes.iter().map(|n| (n.id, n.http_addr.as_str(), n.raft_addr.as_str())).collect();
        assert_eq!(
            addrs,
            [
                (1, "127.0.0.1:8080", "127.0.0.1:9080"),
                (2, "127.0.0.1:8081", "127.0.0.1:9081"),
                (3, "127.0.0.1:8082", "127.0.0.1:9082")
            ]
        );
        assert_eq!(nodes[1].data_dir, Path::new("/tmp/c/node-2"));
        assert_eq!(
            initial_members(&nodes),
            "1=127.0.0.1:9080/127.0.0.1:8080,2=127.0.0.1:9081/127.0.0.1:8081,3=127.0.0.1:9082/127.0.0.1:8082"
        );

        config.base_port = Some(65000);
        assert!(matches!(plan_nodes(&config), Err(LocalClusterError::Invalid(_))));
    }

    #[test]
    fn free_ports_are_all_different() {
        let nodes = plan_nodes(&ClusterConfig::new(5, "/tmp/c", "kv-server")).unwrap();
        let mut addrs: Vec<&str> =
            nodes.iter().flat_map(|n| [n.http_addr.as_str(), n.raft_addr.as_str()]).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 10);
    }

    /// A process that stands in for a node: its command line names the data
    /// directory, and it exits promptly on SIGTERM.
    fn fake_node(data_dir: &Path) -> Child {
        Command::new("sh")
            // Gives up by itself after 30 s, so a failed test leaks nothing.
            .args([
                "-c",
                "trap 'exit 0' TERM; i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
                "sh",
            ])
            .arg(data_dir)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn up_refuses_a_running_cluster_and_down_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node-1");
        let mut child = fake_node(&data_dir);
        let running = NodeInfo {
            id: 1,
            pid: child.id(),
            http_addr: "127.0.0.1:1".into(),
            raft_addr: "127.0.0.1:2".into(),
            raft_proxy_addr: None,
            data_dir,
        };
        // A pid that is not a node: pid 1 is init, whose command line does
        // not name our data directory.
        let impostor = NodeInfo { id: 2, pid: 1, data_dir: dir.path().join("node-2"), ..running.clone() };
        let file = ClusterFile { nodes: vec![running.clone(), impostor.clone()], security: None };
        file.save(dir.path()).unwrap();
        assert_eq!(ClusterFile::load(dir.path()).unwrap(), Some(file));
        assert!(is_running(&running));
        assert!(!is_running(&impostor));

        let err = LocalCluster::up(ClusterConfig::new(2, dir.path(), "kv-server")).await.unwrap_err();
        assert!(
            matches!(err, LocalClusterError::AlreadyRunning { ref pids, .. } if pids == &[running.pid]),
            "{err}"
        );
        // A rolling restart wants every node running.
        let err = LocalCluster::open(dir.path(), "kv-server").unwrap_err();
        assert!(matches!(err, LocalClusterError::NotRunning { ref ids, .. } if ids == &[2]), "{err}");

        let report = down(dir.path()).await.unwrap();
        assert_eq!(report.stopped, std::slice::from_ref(&running));
        assert_eq!(report.not_running, [impostor]);
        assert!(report.killed.is_empty());
        assert!(!is_running(&running));
        // `down` reaped it already (it is our child); this only placates
        // the zombie lint.
        let _ = child.wait();
    }

    #[tokio::test]
    async fn down_without_a_cluster_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(down(dir.path()).await, Err(LocalClusterError::Invalid(_))));
        assert!(matches!(LocalCluster::open(dir.path(), "kv-server"), Err(LocalClusterError::Invalid(_))));
    }
}
