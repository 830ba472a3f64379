//! The cluster under test: real `kv-server` processes on 127.0.0.1, each
//! with its own data directory, with every Raft link running through the
//! harness's proxy ([`crate::net`]).
//!
//! Node `i` listens for Raft on its own address, but the membership the
//! cluster is formed with names its *proxy's* address, so every Raft byte
//! between nodes crosses a proxy that the harness can cut per direction.
//! Clients reach each node's HTTP API directly. The harness can also kill a
//! node (SIGKILL), stop it gracefully (SIGTERM), restart it on its data
//! directory, and pause and resume it (SIGSTOP/SIGCONT), as the process
//! nemeses need.
//!
//! With [`ClusterSpec::tls`], every node runs with peer TLS, HTTPS and
//! tokens ([`crate::tls`]), including a node that rejoins with fresh data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::task::JoinHandle;

use crate::net::Net;
use crate::tls::Credentials;

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many nodes (ids 1..=nodes).
    pub nodes: u64,
    /// Where node `i` keeps its data (`dir/node-i`) and its log
    /// (`dir/node-i/server.log`).
    pub dir: PathBuf,
    /// The `kv-server` binary.
    pub bin: PathBuf,
    /// Extra arguments for every node.
    pub extra_args: Vec<String>,
    /// Peer TLS, HTTPS and tokens for every node; `None`: plaintext, open
    /// to anyone on 127.0.0.1.
    pub tls: Option<Credentials>,
}

/// One node's addresses and process.
#[derive(Debug)]
pub struct NodeProc {
    /// Its id.
    pub id: u64,
    /// Its HTTP address (clients connect here, never through a proxy).
    pub http_addr: String,
    /// Where it listens for Raft.
    pub raft_addr: String,
    /// Its proxy's address: the Raft address in the cluster's membership.
    pub proxy_addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Set once the node was re-added with fresh data: it then starts with
    /// `--join` through this HTTP address instead of `--initial-members`.
    join: Option<String>,
    child: Option<Child>,
    paused: bool,
}

/// How a graceful [stop](Cluster::stop) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Whether the node exited by itself within the grace period; if not,
    /// it was killed.
    pub exited: bool,
    /// Its exit status, as the OS words it (`exit status: 0`,
    /// `signal: 9 (SIGKILL)`).
    pub status: String,
}

/// A running cluster. Dropping it kills every node and stops the proxies.
pub struct Cluster {
    /// The network between nodes.
    pub net: Net,
    nodes: BTreeMap<u64, NodeProc>,
    spec: ClusterSpec,
    members: String,
    proxies: Vec<JoinHandle<()>>,
    exits: Vec<(u64, String)>,
}

/// Why the cluster could not be started or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// An I/O failure (binding a port, creating a directory, spawning).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// No node with that id.
    #[error("no node {0}")]
    UnknownNode(u64),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// A free address for a node that the nemesis kills and restarts on it
/// (see [`kv_client::ports::bind_restartable_port`] for why not port 0).
fn free_port() -> Result<String, ClusterError> {
    let l = kv_client::ports::bind_restartable_port().map_err(io("binding a free port"))?;
    Ok(l.local_addr().map_err(io("reading a bound port"))?.to_string())
}

impl Cluster {
    /// Starts the proxies and the nodes. Returns once every process is
    /// spawned; use a client to wait for a leader.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster, ClusterError> {
        let net = Net::new();
        let mut nodes = BTreeMap::new();
        let mut proxies = Vec::new();
        for id in 1..=spec.nodes {
            let listener =
                tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(io("binding a proxy"))?;
            let proxy_addr = listener.local_addr().map_err(io("reading a proxy address"))?.to_string();
            let raft_addr = free_port()?;
            let target = raft_addr.parse().map_err(|e| ClusterError::Io {
                what: format!("parsing {raft_addr}"),
                source: std::io::Error::other(e),
            })?;
            proxies.push(net.spawn_proxy(id, listener, target));
            let data_dir = spec.dir.join(format!("node-{id}"));
            let node = NodeProc {
                id,
                http_addr: free_port()?,
                raft_addr,
                proxy_addr,
                data_dir,
                join: None,
                child: None,
                paused: false,
            };
            nodes.insert(id, node);
        }
        let members: Vec<String> =
            nodes.values().map(|n| format!("{}={}/{}", n.id, n.proxy_addr, n.http_addr)).collect();
        let mut cluster =
            Cluster { net, nodes, spec, members: members.join(","), proxies, exits: Vec::new() };
        for id in 1..=cluster.spec.nodes {
            cluster.restart(id)?;
        }
        Ok(cluster)
    }

    /// The nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeProc> {
        self.nodes.values()
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Every node's HTTP address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.http_addr.clone()).collect()
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> Result<&NodeProc, ClusterError> {
        self.nodes.get(&id).ok_or(ClusterError::UnknownNode(id))
    }

    /// Whether node `id`'s process is running (possibly paused).
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    /// Starts node `id` on its data directory (again, after a kill). A node
    /// that already runs is left alone.
    pub fn restart(&mut self, id: u64) -> Result<(), ClusterError> {
        let members = self.members.clone();
        let node = self.nodes.get_mut(&id).ok_or(ClusterError::UnknownNode(id))?;
        if node.child.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&node.data_dir)
            .map_err(io(format!("creating {}", node.data_dir.display())))?;
        let log = log_path(&node.data_dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let mut cmd = Command::new(&self.spec.bin);
        // The node runs with the flags below, not with KV_* variables of the
        // user's shell (a KV_UNSAFE_* one would break the run's guarantees).
        kv_client::server_env::clear(&mut cmd);
        cmd.args(["--id", &id.to_string(), "--data-dir"]).arg(&node.data_dir).args([
            "--http-addr",
            &node.http_addr,
            "--raft-addr",
            &node.raft_addr,
        ]);
        match &node.join {
            // Joining: the membership must name the proxy, not the listener.
            Some(via) => cmd.args(["--join", via, "--advertise-raft-addr", &node.proxy_addr]),
            None => cmd.args(["--initial-members", &members]),
        };
        if let Some(tls) = &self.spec.tls {
            cmd.args(tls.node_args(id));
        }
        let child = cmd
            .args(&self.spec.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", self.spec.bin.display())))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL: the process dies at once, with no chance to flush anything.
    pub fn kill(&mut self, id: u64) -> Result<(), ClusterError> {
        let node = self.nodes.get_mut(&id).ok_or(ClusterError::UnknownNode(id))?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// SIGTERM: a graceful stop, in which a leader first hands its
    /// leadership to a caught-up voter. Waits up to `grace` for the process
    /// to exit, and kills it (SIGKILL) if it has not by then. `None` if it
    /// was not running.
    ///
    /// An exit by itself with a failure status is a crash all the same: it
    /// is remembered with the exits [`Cluster::reap`] notices.
    pub async fn stop(&mut self, id: u64, grace: Duration) -> Result<Option<Stop>, ClusterError> {
        let node = self.nodes.get_mut(&id).ok_or(ClusterError::UnknownNode(id))?;
        let Some(mut child) = node.child.take() else { return Ok(None) };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        if node.paused {
            // A stopped process handles SIGTERM only once it runs again.
            let _ = kill(pid, Signal::SIGCONT);
            node.paused = false;
        }
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        let mut status = child.try_wait();
        while matches!(status, Ok(None)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            status = child.try_wait();
        }
        let exited = !matches!(status, Ok(None));
        if !exited {
            let _ = child.kill();
        }
        let (status, success) = match child.wait() {
            Ok(s) => (s.to_string(), s.success()),
            Err(e) => (format!("unknown ({e})"), false),
        };
        if exited && !success {
            self.exits.push((id, format!("{status} after SIGTERM")));
        }
        Ok(Some(Stop { exited, status }))
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: a paused node neither sends nor
    /// answers anything, like a long garbage-collection pause.
    pub fn pause(&mut self, id: u64, pause: bool) -> Result<(), ClusterError> {
        let node = self.nodes.get_mut(&id).ok_or(ClusterError::UnknownNode(id))?;
        if let Some(child) = &node.child {
            let signal = if pause { Signal::SIGSTOP } else { Signal::SIGCONT };
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            kill(pid, signal).map_err(|e| ClusterError::Io {
                what: format!("sending {signal} to node {id}"),
                source: std::io::Error::from(e),
            })?;
            node.paused = pause;
        }
        Ok(())
    }

    /// Kills node `id`, deletes its data (keeping its log file, which the
    /// log checker reads), and starts it as a new node that joins the
    /// cluster through `via` (another node's HTTP address): the "remove a
    /// node and add it back with fresh data" fault. The caller removes it
    /// from the membership first.
    pub fn rejoin_fresh(&mut self, id: u64, via: &str) -> Result<(), ClusterError> {
        self.kill(id)?;
        let node = self.nodes.get_mut(&id).ok_or(ClusterError::UnknownNode(id))?;
        let entries =
            std::fs::read_dir(&node.data_dir).map_err(io(format!("listing {}", node.data_dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path != log_path(&node.data_dir) {
                let removed =
                    if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                removed.map_err(io(format!("deleting {}", path.display())))?;
            }
        }
        node.join = Some(via.to_string());
        self.restart(id)
    }

    /// Notices nodes whose process ended on its own (a crash, a panic, a
    /// refused command line), remembers them, and forgets their process so
    /// that [`Cluster::restart`] starts them again.
    pub fn reap(&mut self) {
        for node in self.nodes.values_mut() {
            let Some(child) = &mut node.child else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                self.exits.push((node.id, status.to_string()));
                node.child = None;
                node.paused = false;
            }
        }
    }

    /// Every exit [`Cluster::reap`] noticed: `(node, exit status)`. Nodes
    /// the harness killed are not in it.
    pub fn exits(&self) -> &[(u64, String)] {
        &self.exits
    }

    /// Each node's log so far.
    pub fn logs(&self) -> BTreeMap<u64, String> {
        self.nodes
            .values()
            .map(|n| (n.id, std::fs::read_to_string(log_path(&n.data_dir)).unwrap_or_default()))
            .collect()
    }
}

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server.log")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            // A stopped process does not die of SIGKILL until it runs again.
            let _ = self.pause(id, false);
            let _ = self.kill(id);
        }
        for p in &self.proxies {
            p.abort();
        }
    }
}

/// How long to wait for a cluster to settle in tests and the harness.
pub const SETTLE: Duration = Duration::from_secs(30);
