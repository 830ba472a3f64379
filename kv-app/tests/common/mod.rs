// Test support: a cluster of real `kv-server` processes on 127.0.0.1, each
// with its own data directory under one temporary directory. Every process
// is killed when the cluster is dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kv_client::api::StatusResponse;
use kv_client::client::{BearerToken, Client, ClientOptions};
use kv_client::tls::ClientTls;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct NodeProc {
    pub id: u64,
    pub http: String,
    pub raft: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Arguments for this node only, on every start (peer TLS files, say).
    pub args: Vec<String>,
}

pub struct ProcCluster {
    pub tmp: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub extra_args: Vec<String>,
    /// The bearer token the helpers below send (status, raw requests, the
    /// client), for a cluster started with `--token-file`.
    pub token: Option<String>,
    http: reqwest::Client,
    /// HTTPS: what the test's clients trust and present; `None`: plain HTTP.
    pub tls: Option<ClientTls>,
}

/// A free port on 127.0.0.1, released for the server. Not port 0: nodes are
/// restarted on their port (see `bind_restartable_port`).
pub fn free_addr() -> String {
    let l = kv_client::ports::bind_restartable_port().unwrap();
    l.local_addr().unwrap().to_string()
}

impl ProcCluster {
    /// Starts `n` nodes forming one cluster, and waits for a leader.
    pub async fn start(n: u64, extra_args: &[&str]) -> ProcCluster {
        Self::start_with(n, extra_args, |_| Vec::new()).await
    }

    /// Like [`ProcCluster::start`], with `node_args(id)` added to node
    /// `id`'s arguments on every start.
    pub async fn start_with(
        n: u64,
        extra_args: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
    ) -> ProcCluster {
        Self::start_as(n, extra_args, node_args, None).await
    }

    /// Like [`ProcCluster::start_with`], with the helpers sending `token`.
    pub async fn start_as(
        n: u64,
        extra_args: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
        token: Option<&str>,
    ) -> ProcCluster {
        Self::start_full(n, extra_args, node_args, token, None).await
    }

    /// Like [`ProcCluster::start_with`], for nodes that serve HTTPS: the
    /// cluster's own requests (status, [`ProcCluster::client`]) use `tls`.
    pub async fn start_with_tls(
        n: u64,
        extra_args: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
        tls: Option<ClientTls>,
    ) -> ProcCluster {
        Self::start_full(n, extra_args, node_args, None, tls).await
    }

    /// [`ProcCluster::start_with`], with the helpers sending `token` and
    /// speaking HTTPS with `tls`.
    pub async fn start_full(
        n: u64,
        extra_args: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
        token: Option<&str>,
        tls: Option<ClientTls>,
    ) -> ProcCluster {
        let mut c = Self::plan(n, extra_args, node_args, token, tls);
        c.spawn_all().await;
        c
    }

    /// A cluster of `n` nodes whose data directories `kv-server restore`
    /// made from `backup`, started, with a leader.
    pub async fn start_restored(n: u64, backup: &std::path::Path) -> ProcCluster {
        let mut c = Self::plan(n, &[], |_| Vec::new(), None, None);
        let members = c.members();
        for node in c.nodes.values() {
            let out = Command::new(env!("CARGO_BIN_EXE_kv-server"))
                .arg("restore")
                .arg("--from")
                .arg(backup)
                .arg("--data-dir")
                .arg(&node.dir)
                .args(["--id", &node.id.to_string(), "--initial-members", &members])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "restore node {}: {}",
                node.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c.spawn_all().await;
        c
    }

    /// The nodes' addresses and directories, none started.
    fn plan(
        n: u64,
        extra_args: &[&str],
        node_args: impl Fn(u64) -> Vec<String>,
        token: Option<&str>,
        tls: Option<ClientTls>,
    ) -> ProcCluster {
        let mut c = ProcCluster {
            tmp: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            token: token.map(str::to_owned),
            http: kv_client::tls::http_client_builder(tls.as_ref()).build().unwrap(),
            tls,
        };
        for id in 1..=n {
            let dir = c.tmp.path().join(format!("node-{id}"));
            let args = node_args(id);
            c.nodes.insert(id, NodeProc { id, http: free_addr(), raft: free_addr(), dir, child: None, args });
        }
        c
    }

    /// `--initial-members` for the planned nodes.
    pub fn members(&self) -> String {
        let members: Vec<String> =
            self.nodes.values().map(|n| format!("{}={}/{}", n.id, n.raft, n.http)).collect();
        members.join(",")
    }

    /// Starts every planned node with `--initial-members` and waits for a leader.
    async fn spawn_all(&mut self) {
        let members = self.members();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.spawn(id, &["--initial-members", &members]);
        }
        self.settled().await;
    }

    /// Starts (or restarts) node `id` with its usual addresses and directory.
    pub fn spawn(&mut self, id: u64, args: &[&str]) {
        let node = self.nodes.get_mut(&id).unwrap();
        std::fs::create_dir_all(&node.dir).unwrap();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("server.log")).unwrap();
        let child = kv_client::server_env::clear(&mut Command::new(env!("CARGO_BIN_EXE_kv-server")))
            .args(["--id", &id.to_string(), "--data-dir"])
            .arg(&node.dir)
            .args(["--http-addr", &node.http, "--raft-addr", &node.raft])
            // Seven clusters of debug builds share two cores while these
            // tests run: a longer election timeout keeps a busy CPU from
            // looking like a dead leader.
            .args(["--heartbeat-ms", "150", "--election-timeout-ms", "1000-2000"])
            .args(args)
            .args(&node.args)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// Adds a node that is not yet a member (to join later).
    pub fn add_node(&mut self, id: u64) {
        let dir = self.tmp.path().join(format!("node-{id}"));
        self.nodes.insert(
            id,
            NodeProc { id, http: free_addr(), raft: free_addr(), dir, child: None, args: Vec::new() },
        );
    }

    /// SIGKILL: the process dies at once, with no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, a graceful stop (a leader hands off first), and waits until
    /// the process has exited; SIGKILL if it has not within [`WAIT`].
    pub async fn terminate(&mut self, id: u64) {
        let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let _ = child.kill();
        let _ = child.wait();
        assert!(exited, "node {id} did not stop within {WAIT:?} of SIGTERM");
    }

    /// The node's log (its stderr), as written so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].dir.join("server.log")).unwrap_or_default()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.http.clone()).collect()
    }

    pub fn client(&self) -> Client {
        let options = ClientOptions {
            token: self.token.clone().map(BearerToken::new),
            tls: self.tls.clone(),
            ..Default::default()
        };
        Client::with_options(self.endpoints(), options).unwrap()
    }

    /// The URL of `path` on node `id`.
    pub fn url(&self, id: u64, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.nodes[&id].http)
    }

    /// `req` with the cluster's token, if it has one.
    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// A node's status, or None if it does not answer.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let url = self.url(id, "/v1/cluster/status");
        let resp = self.authed(self.http.get(url)).timeout(Duration::from_secs(2)).send().await.ok()?;
        resp.json().await.ok()
    }

    /// Waits until node `id` answers status requests (it may have no leader).
    pub async fn serving(&self, id: u64) {
        let deadline = Instant::now() + WAIT;
        while self.status(id).await.is_none() {
            assert!(Instant::now() < deadline, "node {id} did not start serving within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            for n in self.nodes.values().filter(|n| n.child.is_some()) {
                if let Some(s) = self.status(n.id).await {
                    if s.role == "leader" {
                        return s.id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until there is a leader and every running node knows it (a
    /// follower that has not yet heard from a new leader answers a forwarded
    /// write with `503 no_leader`), and returns the leader.
    pub async fn settled(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader().await;
            let mut all = true;
            for n in self.nodes.values().filter(|n| n.child.is_some()) {
                all &= self.status(n.id).await.is_some_and(|s| s.leader == Some(leader));
            }
            if all {
                return leader;
            }
            assert!(Instant::now() < deadline, "the nodes did not agree on leader {leader} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied `index` and they all hold
    /// the same data (equal digests).
    pub async fn converge(&self, index: u64) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut digests = Vec::new();
            for n in self.nodes.values().filter(|n| n.child.is_some()) {
                match self.status(n.id).await {
                    Some(s) if s.applied_index >= index => digests.push(s.state_digest),
                    _ => break,
                }
            }
            let running = self.nodes.values().filter(|n| n.child.is_some()).count();
            if digests.len() == running && digests.windows(2).all(|w| w[0] == w[1]) {
                return digests[0].clone();
            }
            assert!(Instant::now() < deadline, "nodes did not converge on index {index} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Raw HTTP, for tests that check status codes and bodies exactly.
    pub async fn request(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let url = self.url(id, path);
        let mut req = self.authed(self.http.request(method, url)).timeout(Duration::from_secs(20));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }
}

/// `text` without the terminal colour codes (`ESC [ ... m`) the server's
/// log may hold.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence, a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        // A failed test's nodes leave their logs in a directory that is
        // about to be removed: show the end of each, so a failure seen
        // once (in CI, say) can be read.
        if std::thread::panicking() {
            for node in self.nodes.values() {
                let log = std::fs::read_to_string(node.dir.join("server.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- node {} server.log (last 60 lines) ---", node.id);
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[path = "../../../raft-core/tests/support/mutate.rs"]
pub mod mutate;

pub mod fuzz;
