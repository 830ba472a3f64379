//! A cluster of etcd processes on this machine, for `kvctl bench failover
//! --target etcd`: the same job [`crate::local_cluster`] does for kv-server,
//! with etcd's own flags.
//!
//! Each member gets a data directory `DIR/eN` and a log `DIR/eN.log`, and a
//! client and a peer port on 127.0.0.1 chosen by
//! [`bind_restartable_port`] (a restarted member finds its port free). The
//! members run with etcd's defaults (100 ms heartbeat, 1 s election
//! timeout), as `scripts/bench-vs-etcd.sh` starts them, and a member is
//! restarted with the same command line: etcd reads its membership from its
//! data directory and ignores the `--initial-cluster` flags then.
//!
//! etcd is expected on the `PATH` (`apt-get install etcd-server`), or named
//! with `--etcd-bin`. Dropping the cluster kills every member it started.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kv_client::ports::bind_restartable_port;

use crate::local_cluster::reap;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One member's name, ports and directory.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A running etcd cluster; its members are ids 1..=n.
#[derive(Debug)]
pub struct EtcdCluster {
    bin: PathBuf,
    /// Passed to every member after the flags above (timeouts, say).
    extra_args: Vec<String>,
    members: BTreeMap<u64, Member>,
    initial_cluster: String,
    children: BTreeMap<u64, Child>,
}

impl EtcdCluster {
    /// Starts `n` members in `dir` and waits until every one reports itself
    /// healthy (which needs a leader). On failure, kills what it started.
    pub async fn up(bin: &Path, dir: &Path, n: u64, within: Duration) -> anyhow::Result<EtcdCluster> {
        Self::up_with(bin, dir, n, within, Vec::new()).await
    }

    /// Like [`EtcdCluster::up`], with `extra_args` given to every member.
    pub async fn up_with(
        bin: &Path,
        dir: &Path,
        n: u64,
        within: Duration,
        extra_args: Vec<String>,
    ) -> anyhow::Result<EtcdCluster> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let listeners = (0..2 * n)
            .map(|_| bind_restartable_port())
            .collect::<Result<Vec<_>, _>>()
            .context("finding free ports")?;
        let mut members = BTreeMap::new();
        for (id, pair) in (1..=n).zip(listeners.chunks(2)) {
            let port = |i: usize| pair[i].local_addr().map(|a| a.port()).context("finding free ports");
            members.insert(
                id,
                Member {
                    name: format!("e{id}"),
                    client_url: format!("http://127.0.0.1:{}", port(0)?),
                    peer_url: format!("http://127.0.0.1:{}", port(1)?),
                    data_dir: dir.join(format!("e{id}")),
                    log: dir.join(format!("e{id}.log")),
                },
            );
        }
        drop(listeners);
        let initial_cluster =
            members.values().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster {
            bin: bin.to_path_buf(),
            extra_args,
            members,
            initial_cluster,
            children: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.start(id)?;
        }
        cluster.wait_healthy(within).await?;
        Ok(cluster)
    }

    /// The client URLs, by member id.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.values().map(|m| m.client_url.clone()).collect()
    }

    /// Starts member `id` (again) with its usual command line.
    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let m = self.members.get(&id).with_context(|| format!("no etcd member {id}"))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-token", "kvctl-bench"])
            .args(["--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {} (install it with `apt-get install etcd-server`)", self.bin.display())
            })?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Sends `sig` to member `id` and returns at once.
    pub fn signal(&self, id: u64, sig: Signal) -> anyhow::Result<()> {
        let child = self.children.get(&id).with_context(|| format!("etcd member {id} is not running"))?;
        let pid = i32::try_from(child.id()).context("a pid out of range")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("sending {sig} to etcd member {id}"))
    }

    /// Waits up to `within` for member `id` to exit, and reaps it (SIGKILL
    /// if it is still running then). Returns whether it exited by itself.
    pub async fn wait_exit(&mut self, id: u64, within: Duration) -> bool {
        match self.children.remove(&id) {
            Some(child) => reap(child, within).await,
            None => true,
        }
    }

    /// Waits until every member answers `GET /health` with
    /// `{"health":"true"}` (etcd says so only when it knows a leader).
    pub async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let http =
            kv_client::tls::http_client_builder(None).no_proxy().timeout(Duration::from_secs(1)).build()?;
        let deadline = Instant::now() + within;
        loop {
            for (id, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = &self.members[id].log;
                    bail!("etcd member {id} exited ({status}); see {}", log.display());
                }
            }
            let mut sick = Vec::new();
            for (id, m) in &self.members {
                let healthy = match http.get(format!("{}/health", m.client_url)).send().await {
                    Ok(resp) => resp.text().await.is_ok_and(|t| t.contains(r#""health":"true""#)),
                    Err(_) => false,
                };
                if !healthy {
                    sick.push(*id);
                }
            }
            if sick.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("etcd members {sick:?} not healthy after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
