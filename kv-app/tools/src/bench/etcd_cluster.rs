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
//! With `proxied`, each member's peer traffic runs through an in-process
//! proxy ([`jepsen_net`], as for kv): the member listens for peers on its
//! own port (`--listen-peer-urls`) but advertises its proxy's
//! (`--initial-advertise-peer-urls`, `--initial-cluster`), so every Raft
//! message between members crosses a proxy that [`EtcdCluster::net`] can
//! cut. etcd's peer requests name their sender in an `X-Server-From`
//! header (the member id in hex); once the cluster is up, each member's id
//! is asked of its `/v3/maintenance/status` and given to the proxies.
//!
//! etcd is expected on the `PATH` (`apt-get install etcd-server`), or named
//! with `--etcd-bin`. Dropping the cluster kills every member it started.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use jepsen_net::{Net, Sender};
use kv_client::ports::bind_restartable_port;

use crate::local_cluster::reap;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One member's name, ports and directory.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    client_url: String,
    /// Where it listens for peers.
    peer_url: String,
    /// Where the others reach it: its proxy's URL, or `peer_url`.
    advertised_peer_url: String,
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
    /// With proxies: the links between members.
    net: Option<Net>,
    /// The proxies' tasks, aborted on drop.
    proxies: Vec<tokio::task::JoinHandle<()>>,
}

impl EtcdCluster {
    /// Starts `n` members in `dir` and waits until every one reports itself
    /// healthy (which needs a leader). On failure, kills what it started.
    pub async fn up(bin: &Path, dir: &Path, n: u64, within: Duration) -> anyhow::Result<EtcdCluster> {
        Self::up_with(bin, dir, n, within, Vec::new(), false).await
    }

    /// Like [`EtcdCluster::up`], with `extra_args` given to every member,
    /// and with `proxied`, a proxy in front of every member's peer port
    /// (see the module docs).
    pub async fn up_with(
        bin: &Path,
        dir: &Path,
        n: u64,
        within: Duration,
        extra_args: Vec<String>,
        proxied: bool,
    ) -> anyhow::Result<EtcdCluster> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let listeners = (0..2 * n)
            .map(|_| bind_restartable_port())
            .collect::<Result<Vec<_>, _>>()
            .context("finding free ports")?;
        let mut members = BTreeMap::new();
        let mut proxy_listeners = BTreeMap::new();
        for (id, pair) in (1..=n).zip(listeners.chunks(2)) {
            let port = |i: usize| pair[i].local_addr().map(|a| a.port()).context("finding free ports");
            let peer_url = format!("http://127.0.0.1:{}", port(1)?);
            let advertised_peer_url = match proxied {
                true => {
                    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a proxy")?;
                    let url = format!("http://{}", l.local_addr().context("binding a proxy")?);
                    proxy_listeners.insert(id, l);
                    url
                }
                false => peer_url.clone(),
            };
            members.insert(
                id,
                Member {
                    name: format!("e{id}"),
                    client_url: format!("http://127.0.0.1:{}", port(0)?),
                    peer_url,
                    advertised_peer_url,
                    data_dir: dir.join(format!("e{id}")),
                    log: dir.join(format!("e{id}.log")),
                },
            );
        }
        drop(listeners);
        let initial_cluster = members
            .values()
            .map(|m| format!("{}={}", m.name, m.advertised_peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            bin: bin.to_path_buf(),
            extra_args,
            members,
            initial_cluster,
            children: BTreeMap::new(),
            net: proxied.then(Net::new),
            proxies: Vec::new(),
        };
        if let Some(net) = &cluster.net {
            for (id, listener) in proxy_listeners {
                let url = &cluster.members[&id].peer_url;
                let target = url
                    .trim_start_matches("http://")
                    .parse()
                    .with_context(|| format!("member {id}'s peer URL {url}"))?;
                let sender = Sender::HttpHeader("X-Server-From");
                cluster.proxies.push(net.spawn_proxy_for(id, listener, target, sender));
            }
        }
        for id in 1..=n {
            cluster.start(id)?;
        }
        cluster.wait_healthy(within).await?;
        cluster.name_members().await?;
        Ok(cluster)
    }

    /// With proxies: tells them each member's id, which etcd's peer
    /// requests carry in hex in `X-Server-From`.
    async fn name_members(&self) -> anyhow::Result<()> {
        let Some(net) = &self.net else { return Ok(()) };
        let http =
            kv_client::tls::http_client_builder(None).no_proxy().timeout(Duration::from_secs(2)).build()?;
        for (id, m) in &self.members {
            let status: serde_json::Value = http
                .post(format!("{}/v3/maintenance/status", m.client_url))
                .body("{}")
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("asking etcd member {id} for its status"))?
                .json()
                .await
                .with_context(|| format!("decoding etcd member {id}'s status"))?;
            // The gateway renders 64-bit ids as JSON strings.
            let member_id = status["header"]["member_id"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .with_context(|| format!("etcd member {id}'s status names no member id: {status}"))?;
            net.name_sender(format!("{member_id:x}"), *id);
        }
        Ok(())
    }

    /// With proxies: the links between the members, to cut and heal.
    pub fn net(&self) -> Option<&Net> {
        self.net.as_ref()
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
            .args([
                "--listen-peer-urls",
                &m.peer_url,
                "--initial-advertise-peer-urls",
                &m.advertised_peer_url,
            ])
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
    /// Member `id`'s process id, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(std::process::Child::id)
    }

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
        for proxy in &self.proxies {
            proxy.abort();
        }
    }
}
