//! The 3-node clusters `kvctl bench failover` and `kvctl bench elections`
//! start, stop and watch: kv's ([`LocalCluster`]) and etcd's
//! ([`EtcdCluster`]) behind one interface, [`Cluster`], so that both
//! systems are measured by the same code.
//!
//! Nodes are ids 1..=3 in both. A node's view of the cluster is read from
//! its status endpoint ([`node_view`]): kv's `GET /v1/cluster/status`,
//! etcd's `POST /v3/maintenance/status`.
//!
//! # Timeouts
//!
//! Both systems can be given the same heartbeat interval and election
//! timeout T, as each reads them: etcd waits a random time in [T, 2T)
//! before it starts an election, so kv is given `--election-timeout-ms
//! T-2T`, the same range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::header::CONTENT_TYPE;
use clap::{Args, ValueEnum};
use jepsen_net::Net;
use kv_client::client::normalize_endpoint;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::etcd_cluster::EtcdCluster;
use super::worker::{find_leader, Protocol};
use crate::local_cluster::{self, ClusterConfig, LocalCluster};

/// How long a stopped node may take to exit, and a cluster to become
/// healthy again, before the run gives up.
pub(super) const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster's node ids.
pub(super) const NODE_IDS: [u64; 3] = [1, 2, 3];

/// A system the benchmarks can measure.
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

    pub(super) fn protocol(self) -> Protocol {
        match self {
            System::Kv => Protocol::Kv,
            System::Etcd => Protocol::Etcd,
        }
    }
}

/// The options of `kvctl bench failover` and `elections` that say which
/// clusters to start, and from what.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The systems to measure, one after the other: kv, etcd, or kv,etcd.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kv")]
    pub target: Vec<System>,
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

impl ClusterArgs {
    /// The targets in order, each once; an error if there are none.
    pub(super) fn targets(&self) -> anyhow::Result<Vec<System>> {
        if self.target.is_empty() {
            anyhow::bail!("--target names no system");
        }
        Ok(dedup(&self.target))
    }

    /// How to start a cluster with these binaries.
    pub(super) fn options(&self, timeouts_ms: Option<(u64, u64)>, proxied: bool) -> ClusterOptions {
        ClusterOptions { bin: self.bin.clone(), etcd_bin: self.etcd_bin.clone(), timeouts_ms, proxied }
    }
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub(super) struct ClusterOptions {
    /// The kv-server binary [default: the one next to kvctl].
    pub bin: Option<PathBuf>,
    /// The etcd binary.
    pub etcd_bin: PathBuf,
    /// Heartbeat interval and election timeout T, in milliseconds (see the
    /// module docs); `None`: each system's defaults.
    pub timeouts_ms: Option<(u64, u64)>,
    /// Run every Raft link through a proxy that [`Cluster::net`] cuts.
    pub proxied: bool,
}

/// One system's running cluster.
pub(super) struct Cluster {
    pub system: System,
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
    /// Starts a 3-node cluster of `system` in `dir` and waits until it has
    /// a leader.
    pub async fn up(system: System, options: &ClusterOptions, dir: &Path) -> anyhow::Result<Cluster> {
        let nodes = match system {
            System::Kv => {
                let bin = match &options.bin {
                    Some(bin) => bin.clone(),
                    None => local_cluster::default_server_binary()?,
                };
                let mut config = ClusterConfig::new(NODE_IDS.len() as u64, dir, bin);
                config.raft_proxies = options.proxied;
                if let Some((h, e)) = options.timeouts_ms {
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
                let timeouts = match options.timeouts_ms {
                    Some((h, e)) => vec![
                        "--heartbeat-interval".into(),
                        h.to_string(),
                        "--election-timeout".into(),
                        e.to_string(),
                    ],
                    None => Vec::new(),
                };
                let n = NODE_IDS.len() as u64;
                let cluster = EtcdCluster::up_with(
                    &options.etcd_bin,
                    dir,
                    n,
                    SETTLE_TIMEOUT,
                    timeouts,
                    options.proxied,
                )
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

    /// The system it is.
    pub fn system(&self) -> System {
        self.system
    }

    /// Node `id`'s process id, if this cluster started it and it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        match &self.nodes {
            Nodes::Kv(kv) => kv.pid(id),
            Nodes::Etcd(etcd) => etcd.pid(id),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.system.protocol()
    }

    /// Every node's base URL, node i + 1 at index i.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Node `id`'s base URL.
    pub fn endpoint(&self, id: u64) -> anyhow::Result<&str> {
        let i = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        i.and_then(|i| self.endpoints.get(i)).map(String::as_str).with_context(|| format!("no node {id}"))
    }

    /// The leader's node id.
    pub async fn leader(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let base = find_leader(http, self.protocol(), &self.endpoints).await?;
        let i = self
            .endpoints
            .iter()
            .position(|e| *e == base)
            .context("the leader is not one of the endpoints")?;
        Ok(i as u64 + 1)
    }

    /// The ids of every node but `id`.
    pub fn others(&self, id: u64) -> Vec<u64> {
        NODE_IDS.iter().copied().filter(|&n| n != id).collect()
    }

    /// The links between the nodes, if the cluster was started `proxied`.
    pub fn net(&self) -> Option<&Net> {
        match &self.nodes {
            Nodes::Kv(kv) => kv.net(),
            Nodes::Etcd(etcd) => etcd.net(),
        }
    }

    pub fn signal(&self, id: u64, sig: Signal) -> anyhow::Result<()> {
        match &self.nodes {
            Nodes::Kv(kv) => Ok(kv.signal(id, sig)?),
            Nodes::Etcd(etcd) => etcd.signal(id, sig),
        }
    }

    /// Waits for node `id` to exit; whether it did by itself in time.
    pub async fn wait_exit(&mut self, id: u64) -> anyhow::Result<bool> {
        match &mut self.nodes {
            Nodes::Kv(kv) => Ok(kv.wait_exit(id, SETTLE_TIMEOUT).await?),
            Nodes::Etcd(etcd) => Ok(etcd.wait_exit(id, SETTLE_TIMEOUT).await),
        }
    }

    /// Waits until every node names the same leader (etcd: reports itself
    /// healthy, which needs a leader).
    pub async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        match &mut self.nodes {
            Nodes::Kv(kv) => kv.wait_for_leader(SETTLE_TIMEOUT).await.map(|_| ()).map_err(Into::into),
            Nodes::Etcd(etcd) => etcd.wait_healthy(SETTLE_TIMEOUT).await,
        }
    }

    /// Starts node `id` again and waits until the cluster is healthy (kv:
    /// and the node has applied what the leader had committed).
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
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
    pub async fn down(self) {
        match self.nodes {
            Nodes::Kv(kv) => {
                let _ = tokio::task::spawn_blocking(move || kv.shutdown()).await;
            }
            Nodes::Etcd(mut etcd) => {
                for id in NODE_IDS {
                    let _ = etcd.signal(id, Signal::SIGTERM);
                }
                for id in NODE_IDS {
                    etcd.wait_exit(id, local_cluster::STOP_GRACE).await;
                }
            }
        }
    }
}

/// What one node says of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeView {
    /// It says it is the leader.
    pub is_leader: bool,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of, in the system's own naming (kv: the node
    /// id; etcd: the member id), if any.
    pub leader: Option<String>,
}

/// Asks the node at `base` for its view, from its status endpoint.
pub(super) async fn node_view(
    http: &reqwest::Client,
    protocol: Protocol,
    base: &str,
) -> anyhow::Result<NodeView> {
    let request = match protocol {
        Protocol::Kv => http.get(format!("{base}/v1/cluster/status")),
        Protocol::Etcd => http
            .post(format!("{base}/v3/maintenance/status"))
            .header(CONTENT_TYPE, "application/json")
            .body("{}"),
    };
    let status: serde_json::Value =
        request.send().await?.error_for_status()?.json().await.context("decoding the status")?;
    // etcd's gateway renders 64-bit numbers as JSON strings.
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.parse::<u64>().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    };
    Ok(match protocol {
        Protocol::Kv => NodeView {
            is_leader: status["role"].as_str() == Some("leader"),
            term: number(&status["term"]).context("a kv status without a term")?,
            leader: number(&status["leader"]).map(|l| l.to_string()),
        },
        Protocol::Etcd => {
            let member = number(&status["header"]["member_id"]);
            // etcd says leader 0 when it knows of none.
            let leader = number(&status["leader"]).filter(|&l| l != 0);
            NodeView {
                is_leader: member.is_some() && member == leader,
                // An etcd status may leave out a zero term.
                term: number(&status["raftTerm"]).unwrap_or(0),
                leader: leader.map(|l| l.to_string()),
            }
        }
    })
}

/// The run's directory: `--dir`, kept, or a temporary one, deleted when
/// this is dropped.
pub(super) struct WorkDir {
    pub path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    /// `dir`, or a new temporary directory whose name starts with `prefix`.
    pub fn new(dir: Option<PathBuf>, prefix: &str) -> anyhow::Result<WorkDir> {
        let (path, temporary) = match dir {
            Some(dir) => (dir, false),
            None => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!("{prefix}-{}-{stamp}", std::process::id());
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

/// The items in order, each once.
pub(super) fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    for t in items {
        if !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// The 1-minute load average, from `/proc/loadavg`.
pub(super) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// CPUs of this machine.
pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
