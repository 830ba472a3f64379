//! `kvctl` end to end, as a user runs it: `cluster up` starts real
//! `kv-server` processes and writes `cluster.json`; the key and lease
//! commands print values and use exit codes; `status --json` names the leader;
//! `transfer-leader --to N` makes N leader; `endpoint status` and `endpoint
//! health` show every node, and a stopped one; `cluster restart --rolling`
//! restarts every node, the leader last, and stops at a node that does not
//! come back; `cluster down` stops everything.

use std::process::{Command, Output};

mod common;

fn kvctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvctl")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `kvctl cluster down` when dropped, so a failing assertion does not
/// leave detached servers behind.
struct Down<'a>(&'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = kvctl(&["cluster", "down", "--dir", self.0]);
    }
}

/// Runs `kvctl cluster up` of 3 nodes in `dir`/cluster, and returns that
/// directory and its cluster.json. The caller stops the cluster ([`Down`]).
fn cluster_up(dir: &std::path::Path) -> (String, serde_json::Value) {
    let server = common::kv_server();
    let cluster_dir = dir.join("cluster").to_str().unwrap().to_owned();
    let out =
        kvctl(&["cluster", "up", "--nodes", "3", "--dir", &cluster_dir, "--bin", server.to_str().unwrap()]);
    let guard = Down(&cluster_dir);
    assert!(out.status.success(), "cluster up: {}{}", text(&out.stdout), text(&out.stderr));
    std::mem::forget(guard);
    let file = std::fs::read_to_string(dir.join("cluster/cluster.json")).unwrap();
    (cluster_dir, serde_json::from_str(&file).unwrap())
}

#[test]
fn cluster_up_put_get_cas_status_transfer_leader_and_down() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_dir, file) = cluster_up(dir.path());
    let cluster_dir = cluster_dir.as_str();
    let guard = Down(cluster_dir);
    {
        let nodes = file["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        for n in nodes {
            for field in ["id", "pid", "http_addr", "raft_addr", "data_dir"] {
                assert!(!n[field].is_null(), "cluster.json lacks {field}: {n}");
            }
        }
        let endpoints: Vec<&str> = nodes.iter().map(|n| n["http_addr"].as_str().unwrap()).collect();
        let endpoints = endpoints.join(",");
        let e = ["--endpoints", endpoints.as_str()];
        let with = |args: &[&str]| kvctl(&[&e[..], args].concat());

        let out = with(&["put", "greeting", "hello"]);
        assert!(out.status.success(), "put: {}", text(&out.stderr));
        let out = with(&["get", "greeting"]);
        assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "hello"));

        let out = with(&["get", "missing"]);
        assert_eq!(out.status.code(), Some(1), "a missing key exits 1");
        assert!(text(&out.stdout).is_empty() && !text(&out.stderr).is_empty());

        let out = with(&["cas", "greeting", "nope", "x"]);
        assert_eq!(out.status.code(), Some(1), "a CAS mismatch exits 1");
        assert!(text(&out.stderr).contains("hello"), "and shows the current value: {}", text(&out.stderr));
        let out = with(&["cas", "greeting", "hello", "hi"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&with(&["get", "greeting"]).stdout).trim(), "hi");

        // Leases: grant, put a key with it, list it, revoke it; a lease
        // that is gone exits 1, as a missing key does.
        let out = with(&["--json", "lease", "grant", "60"]);
        assert!(out.status.success(), "lease grant: {}", text(&out.stderr));
        let granted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = granted["id"].as_u64().expect("a lease id").to_string();
        assert_eq!(granted["ttl_ms"], 60_000, "{granted}");
        let out = with(&["put", "--lease", &id, "leased", "v"]);
        assert!(out.status.success(), "put --lease: {}", text(&out.stderr));
        let out = with(&["lease", "keepalive", "--once", &id]);
        assert!(out.status.success(), "keepalive --once: {}", text(&out.stderr));
        let out = with(&["--json", "lease", "list"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed["leases"][0]["key_count"], 1, "{listed}");
        let out = with(&["lease", "show", &id]);
        assert!(text(&out.stdout).contains("\n  leased\n"), "{}", text(&out.stdout));
        let out = with(&["lease", "revoke", &id]);
        assert!(text(&out.stdout).contains("1 keys deleted"), "{}", text(&out.stdout));
        assert_eq!(with(&["get", "leased"]).status.code(), Some(1), "revoked with its lease");
        for gone in
            [&["lease", "keepalive", "--once", &id][..], &["lease", "show", &id], &["lease", "revoke", &id]]
        {
            let out = with(gone);
            assert_eq!(out.status.code(), Some(1), "{gone:?}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains("not found"), "{gone:?}: {}", text(&out.stderr));
        }
        let out = with(&["put", "--lease", &id, "leased", "v"]);
        assert_eq!(out.status.code(), Some(2), "a put naming a gone lease is refused");
        assert!(text(&out.stderr).contains("lease_not_found"), "{}", text(&out.stderr));
        let out = with(&["lease", "grant", "0.1"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("it must be 500 to 86400000"), "{}", text(&out.stderr));

        let out = with(&["--json", "status"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(status["leader"].as_u64().is_some_and(|l| (1..=3).contains(&l)), "{status}");

        // transfer-leader --to N makes N leader, in the next term.
        let old = status["leader"].as_u64().unwrap();
        let old_term = status["term"].as_u64().unwrap();
        let to = if old == 3 { 2 } else { 3 };
        let out = with(&["--json", "transfer-leader", "--to", &to.to_string()]);
        assert!(out.status.success(), "transfer-leader: {}", text(&out.stderr));
        let moved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((moved["leader"].as_u64(), moved["node"].as_u64()), (Some(to), Some(old)), "{moved}");
        assert_eq!(leader_and_term(&with), (to, old_term + 1));
        let out = with(&["put", "after-transfer", "v"]);
        assert!(out.status.success(), "put after the transfer: {}", text(&out.stderr));
        // A node that is not a member is refused with a clear error.
        let out = with(&["transfer-leader", "--to", "9"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("node 9 is not a member"), "{}", text(&out.stderr));
        // campaign still asks a node to stand (it may lose to the lease).
        let old_node = nodes.iter().find(|n| n["id"].as_u64() == Some(old)).unwrap();
        let old_endpoint = old_node["http_addr"].as_str().unwrap();
        let out = with(&["campaign", old_endpoint]);
        assert!(out.status.success(), "campaign: {}", text(&out.stderr));
    }
    std::mem::forget(guard);
    let out = kvctl(&["cluster", "down", "--dir", cluster_dir]);
    assert!(out.status.success(), "cluster down: {}", text(&out.stderr));
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cluster/cluster.json")).unwrap())
            .unwrap();
    for n in file["nodes"].as_array().unwrap() {
        let pid = n["pid"].as_u64().unwrap();
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("kv-server");
        assert!(!alive, "node pid {pid} still running after cluster down");
    }
}

/// The cluster's nodes as `cluster.json` lists them: `(id, pid, http_addr)`.
fn nodes_in(cluster_dir: &str) -> Vec<(u64, u64, String)> {
    let file = std::fs::read_to_string(std::path::Path::new(cluster_dir).join("cluster.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    let nodes = file["nodes"].as_array().unwrap().iter();
    nodes
        .map(|n| {
            (n["id"].as_u64().unwrap(), n["pid"].as_u64().unwrap(), n["http_addr"].as_str().unwrap().into())
        })
        .collect()
}

/// Whether `pid` is a running kv-server (not a zombie).
fn runs_kv_server(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().contains("kv-server")
}

/// `(leader, term)` as the leader says, from `status --all --json`.
fn leader_and_term(with: &dyn Fn(&[&str]) -> Output) -> (u64, u64) {
    let out = with(&["--json", "status", "--all"]);
    assert!(out.status.success(), "status --all: {}", text(&out.stderr));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let leaders: Vec<(u64, u64)> = all
        .iter()
        .filter(|s| s["role"] == "leader")
        .map(|s| (s["id"].as_u64().unwrap(), s["term"].as_u64().unwrap()))
        .collect();
    assert_eq!(leaders.len(), 1, "one leader: {all:?}");
    leaders[0]
}

#[test]
fn cluster_restart_rolling_restarts_the_leader_last_and_stops_at_a_node_that_does_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_dir, _) = cluster_up(dir.path());
    let cluster_dir = cluster_dir.as_str();
    let _down = Down(cluster_dir);
    let server = common::kv_server();
    let server = server.to_str().unwrap();
    let before = nodes_in(cluster_dir);
    let endpoints: Vec<&str> = before.iter().map(|(_, _, e)| e.as_str()).collect();
    let endpoints = endpoints.join(",");
    let with = |args: &[&str]| kvctl(&[&["--endpoints", endpoints.as_str()][..], args].concat());
    let out = with(&["put", "greeting", "hello"]);
    assert!(out.status.success(), "put: {}", text(&out.stderr));
    let (leader, term) = leader_and_term(&with);

    // Without --rolling, restart says what to do instead, and does nothing.
    let out = kvctl(&["cluster", "restart", "--dir", cluster_dir, "--bin", server]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs --rolling"), "{}", text(&out.stderr));
    assert_eq!(nodes_in(cluster_dir), before);

    let out = kvctl(&["cluster", "restart", "--rolling", "--dir", cluster_dir, "--bin", server]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "restart --rolling: {printed}{}", text(&out.stderr));
    let restarted: Vec<u64> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("node ")?.split_once(" restarted in ")?.0.parse().ok())
        .collect();
    assert_eq!(restarted.len(), 3, "a line per node: {printed}");
    assert_eq!(restarted.last(), Some(&leader), "the leader last: {printed}");
    assert!(printed.contains(", caught up to index "), "{printed}");
    assert!(printed.contains("no node needed SIGKILL"), "every node stopped on SIGTERM: {printed}");

    // New processes, recorded in cluster.json; the old ones are gone.
    let after = nodes_in(cluster_dir);
    for ((id, old_pid, _), (_, new_pid, _)) in before.iter().zip(&after) {
        assert_ne!(old_pid, new_pid, "node {id} has a new pid");
        assert!(runs_kv_server(*new_pid), "node {id}'s new process runs");
        assert!(!runs_kv_server(*old_pid), "node {id}'s old process is gone");
    }
    assert_eq!(text(&with(&["get", "greeting"]).stdout).trim(), "hello");
    // The leader's stop, the last, was the only handoff: one term more, and
    // another node leads.
    let (new_leader, new_term) = leader_and_term(&with);
    assert_eq!(new_term, term + 1, "{printed}");
    assert_ne!(new_leader, leader);
    assert!(printed.contains(&format!("leader node {new_leader} in term {new_term}")), "{printed}");

    // A node that does not come back (here, a "binary" that refuses to
    // start) stops the restart, named with its log; the others are left
    // alone and keep serving.
    let broken = dir.path().join("broken-kv-server");
    std::fs::write(&broken, "#!/bin/sh\necho 'kv-server: cannot start: the config is broken' >&2\nexit 1\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out =
        kvctl(&["cluster", "restart", "--rolling", "--dir", cluster_dir, "--bin", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let first = after.iter().map(|(id, _, _)| *id).find(|&id| id != new_leader).unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("node {first} did not come back: it exited")), "{stderr}");
    assert!(stderr.contains("the config is broken"), "the log's tail: {stderr}");
    assert!(stderr.contains("were not touched"), "{stderr}");
    for ((id, pid, _), (_, now, _)) in after.iter().zip(&nodes_in(cluster_dir)) {
        if *id != first {
            assert_eq!((pid, runs_kv_server(*pid)), (now, true), "node {id} was left alone");
        }
    }
    let out = with(&["put", "greeting", "still here"]);
    assert!(out.status.success(), "two of three serve: {}", text(&out.stderr));
}

#[test]
fn certs_init_and_node_write_the_ca_and_a_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let bin = common::kv_server();
    let bin = bin.to_str().unwrap();

    let out = kvctl(&["certs", "--bin", bin, "init", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kvctl(&["certs", "--bin", bin, "node", "--id", "2", "--cluster-id", "prod", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["ca.pem", "ca.key", "node-2.pem", "node-2.key"] {
        let pem = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(pem.starts_with("-----BEGIN "), "{file}: {pem}");
    }

    // kv-server's refusal comes through, with a non-zero exit.
    let out = kvctl(&["certs", "--bin", bin, "init", "--dir", d]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("exists; not overwriting"), "{}", text(&out.stderr));
}

/// A one-node kv-server with `--token-file`, on ports it chose itself;
/// killed when dropped.
struct AuthServer {
    child: std::process::Child,
    http: String,
}

impl AuthServer {
    fn start(bin: &std::path::Path, dir: &std::path::Path, tokens: &str, secret: &str) -> AuthServer {
        use std::io::BufRead as _;
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut child = Command::new(bin)
            .args(["--data-dir", dir.join("data").to_str().unwrap()])
            .args(["--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"])
            .args(["--token-file", tokens, "--cluster-secret-file", secret])
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // "kv-server node 1 listening http=ADDR raft=ADDR", once it serves.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let http = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).map(str::to_owned);
        let server = AuthServer { child, http: http.unwrap_or_default() };
        assert!(!server.http.is_empty(), "kv-server did not say where it listens: {line:?}");
        server
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kvctl with `KV_TOKEN` set to `token`, or unset.
fn kvctl_with_env(args: &[&str], token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvctl"));
    match token {
        Some(token) => command.env("KV_TOKEN", token),
        None => command.env_remove("KV_TOKEN"),
    };
    command.args(args).output().unwrap()
}

#[test]
fn kvctl_sends_its_token_and_explains_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let bin = common::kv_server();
    let b = bin.to_str().unwrap();
    let tokens = dir.path().join("tokens");
    let (tokens, secret) = (tokens.to_str().unwrap(), dir.path().join("secret"));
    let secret = secret.to_str().unwrap();

    // `kvctl tokens` runs `kv-server tokens`; the token alone is on stdout.
    let add = |role: &str, name: &str| {
        let out = kvctl(&["tokens", "--bin", b, "add", "--file", tokens, "--role", role, "--name", name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let (admin, reader) = (add("admin", "ops"), add("read", "dashboard"));
    assert!(admin.starts_with("kv_") && !admin.contains(char::is_whitespace), "{admin:?}");
    let out = kvctl(&["tokens", "--bin", b, "secret", "--file", secret]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kvctl(&["tokens", "--bin", b, "list", "--file", tokens]);
    assert_eq!(text(&out.stdout), "ops\tadmin\ndashboard\tread\n");

    let server = AuthServer::start(&bin, dir.path(), tokens, secret);
    let e = ["--endpoints", server.http.as_str()];
    let run = |args: &[&str], token: Option<&str>| kvctl_with_env(&[&e[..], args].concat(), token);

    let out = run(&["--token", &admin, "put", "k", "v"], None);
    assert!(out.status.success(), "put with --token: {}", text(&out.stderr));
    let out = run(&["get", "k"], Some(&reader));
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "v"), "{}", text(&out.stderr));

    let out = run(&["get", "k"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("401 unauthenticated") && stderr.contains("give --token TOKEN"), "{stderr}");
    let out = run(&["put", "k", "w"], Some(&reader));
    assert_eq!(out.status.code(), Some(2), "a refused write certainly did not happen");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("403 forbidden") && stderr.contains("role does not allow this"), "{stderr}");
    assert_eq!(text(&run(&["get", "k"], Some(&reader)).stdout).trim(), "v");

    // bench sends the token too.
    let bench = ["bench", "--clients", "2", "--ops", "40", "--warmup", "0", "--json"];
    let out = run(&[&["--token", admin.as_str()][..], &bench[..]].concat(), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["ops"].as_u64(), report["errors"].as_u64()), (Some(40), Some(0)), "{report}");
    let out = run(&bench, None);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ops"], 0, "{report}");
    assert!(report["error_kinds"]["401 unauthenticated"].as_u64() > Some(0), "{report}");

    // A backup is an admin operation, as compaction is.
    let backup = dir.path().join("backup.kvb");
    let path = backup.to_str().unwrap();
    let out = run(&["snapshot", "save", path], Some(&reader));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("403 forbidden"), "{}", text(&out.stderr));
    assert!(
        !backup.exists() && !dir.path().join("backup.kvb.part").exists(),
        "a refused save leaves no file"
    );
    let out = run(&["snapshot", "save", path], Some(&admin));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(verified)"), "{}", text(&out.stdout));
    let out = run(&["snapshot", "save", path], Some(&admin));
    assert!(
        text(&out.stderr).contains("exists; remove it"),
        "a save never overwrites: {}",
        text(&out.stderr)
    );
    let out = kvctl(&["--json", "snapshot", "status", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["header"]["cluster_id"], "kv", "{status}");
    assert!(status["header"]["keys"].as_u64() >= Some(1), "{status}");
    let mut bytes = std::fs::read(&backup).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&backup, &bytes).unwrap();
    let out = kvctl(&["snapshot", "status", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the backup is corrupt"), "{}", text(&out.stderr));
    let out = run(&["compact"], Some(&admin));
    assert!(out.status.success(), "compact: {}", text(&out.stderr));
}

/// Whether process `pid` is gone (or a zombie, dead but not yet reaped).
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn endpoint_status_and_health_show_every_node_then_the_stopped_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_dir, file) = cluster_up(dir.path());
    let _down = Down(&cluster_dir);
    let nodes = file["nodes"].as_array().unwrap();
    let endpoints: Vec<&str> = nodes.iter().map(|n| n["http_addr"].as_str().unwrap()).collect();
    let joined = endpoints.join(",");
    let with = |args: &[&str]| kvctl(&[&["--endpoints", joined.as_str()][..], args].concat());

    // `cluster up` returns once every node names the same leader.
    let out = with(&["--json", "endpoint", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let shown: Vec<&str> = rows.iter().map(|r| r["endpoint"].as_str().unwrap()).collect();
    assert_eq!(shown, endpoints, "one row per endpoint, in order");
    let leaders: Vec<&serde_json::Value> = rows.iter().filter(|r| r["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{rows:?}");
    let leader = leaders[0]["id"].as_u64().unwrap();
    for row in &rows {
        assert_eq!(row["term"], leaders[0]["term"], "{rows:?}");
        assert_eq!(row["leader"].as_u64(), Some(leader), "{rows:?}");
        assert!(row["error"].is_null() && row["lag"].is_u64(), "{row}");
        assert!(row["db_size_bytes"].as_u64() > Some(0), "{row}");
        assert!(row["version"].as_str().is_some_and(|v| !v.is_empty()), "{row}");
    }
    let out = with(&["endpoint", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 4, "a header and a row per endpoint:\n{table}");
    assert!(table.starts_with("ENDPOINT") && table.contains(" leader "), "{table}");

    let out = with(&["endpoint", "health"]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    assert_eq!(report.matches(&format!("is healthy: leader {leader}, took ")).count(), 3, "{report}");
    assert!(report.contains(&format!("healthy: all 3 endpoints name leader {leader}")), "{report}");

    // Stop a follower: its row carries the error, and both commands fail.
    let stopped = nodes.iter().find(|n| n["id"].as_u64() != Some(leader)).unwrap();
    let pid = stopped["pid"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    while !gone(pid) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stopped = stopped["http_addr"].as_str().unwrap();

    let out = with(&["--timeout", "5", "endpoint", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", text(&out.stdout), text(&out.stderr));
    let table = text(&out.stdout);
    let row = table.lines().find(|l| l.starts_with(stopped)).unwrap();
    assert!(row.contains("unavailable"), "the stopped node's row shows its error:\n{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" leader ")).count(), 1, "{table}");
    assert!(text(&out.stderr).contains("1 of 3 endpoints did not answer"), "{}", text(&out.stderr));
    let out = with(&["--json", "--timeout", "5", "endpoint", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.iter().find(|r| r["endpoint"] == stopped).unwrap();
    assert!(row["error"].is_string() && row["id"].is_null() && row["term"].is_null(), "{row}");

    let out = with(&["--json", "--timeout", "5", "endpoint", "health"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&report["healthy"], &report["unreachable"]), (&false.into(), &1.into()), "{report}");
    let out = with(&["--timeout", "5", "endpoint", "health"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains(&format!("{stopped} is unhealthy: ")), "{}", text(&out.stdout));
}
