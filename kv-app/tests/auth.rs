//! Authentication and roles on the HTTP API, end to end: `kv-server`
//! processes started with `--token-file` and `--cluster-secret-file`, the
//! files made by `kv-server tokens` (what `kvctl tokens` runs).
//!
//! * Each role opens its routes and no more; a refused request (401 or
//!   403) changes nothing and is counted in `/metrics`; `/health` is open.
//! * The internal read-index route is served to nodes only: a client
//!   token, even an admin's, gets 403, no credentials 401.
//! * A three-node cluster with auth still forwards writes, serves
//!   linearizable reads on followers (which call that route), does not
//!   forward refused requests, and lets a new node join.
//! * SIGHUP reloads the files: a new token works, a removed one gets 401,
//!   a malformed file keeps the tokens loaded before. The leader checks a
//!   forwarded request's token again.
//! * Startup refuses a malformed token file, naming the line, and a token
//!   file without a cluster secret.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ProcCluster;
use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::Value;

const SERVER: &str = env!("CARGO_BIN_EXE_kv-server");
const SECRET_HEADER: &str = "x-kv-cluster-secret";

/// Runs `kv-server ARGS` to completion; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = kv_client::server_env::clear(&mut Command::new(SERVER)).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A token file with one token of each role, and a cluster secret file.
struct Files {
    _dir: tempfile::TempDir,
    tokens: PathBuf,
    secret: PathBuf,
    read: String,
    write: String,
    admin: String,
}

fn add_token(file: &Path, role: &str, name: &str) -> String {
    let (ok, stdout, stderr) =
        run(&["tokens", "add", "--file", file.to_str().unwrap(), "--role", role, "--name", name]);
    assert!(ok, "tokens add: {stderr}");
    assert!(stderr.contains("shown only this once"), "{stderr}");
    stdout.trim().to_owned()
}

fn make_files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let secret = dir.path().join("cluster-secret");
    let (ok, _, stderr) = run(&["tokens", "secret", "--file", secret.to_str().unwrap()]);
    assert!(ok, "tokens secret: {stderr}");
    let read = add_token(&tokens, "read", "reader");
    let write = add_token(&tokens, "write", "writer");
    let admin = add_token(&tokens, "admin", "ops");
    Files { _dir: dir, tokens, secret, read, write, admin }
}

impl Files {
    fn args(&self) -> Vec<String> {
        vec![
            "--token-file".into(),
            self.tokens.to_str().unwrap().into(),
            "--cluster-secret-file".into(),
            self.secret.to_str().unwrap().into(),
        ]
    }

    /// The secret the nodes send: the file's first line that is not a comment.
    fn cluster_secret(&self) -> String {
        let text = std::fs::read_to_string(&self.secret).unwrap();
        text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap().trim().to_owned()
    }
}

async fn start(n: u64, files: &Files) -> ProcCluster {
    let args = files.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProcCluster::start_as(n, &args, |_| Vec::new(), Some(&files.admin)).await
}

/// Who a request claims to be.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Token(&'a str),
    Peer(&'a str),
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn call(addr: &str, who: As<'_>, method: Method, path: &str, body: Option<&str>) -> Answer {
    let mut req = kv_client::tls::http_client_builder(None)
        .build()
        .unwrap()
        .request(method, format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(20));
    req = match who {
        As::Nobody => req,
        As::Token(token) => req.header(AUTHORIZATION, format!("Bearer {token}")),
        As::Peer(secret) => req.header(SECRET_HEADER, secret),
    };
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

/// `kv_auth_refusals_total{reason}` on the node at `addr` (0 before the first).
async fn refusals(addr: &str, token: &str, reason: &str) -> u64 {
    let a = call(addr, As::Token(token), Method::GET, "/metrics", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let prefix = format!("kv_auth_refusals_total{{reason=\"{reason}\"}} ");
    let text = a.body.as_str().unwrap();
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.trim().parse().unwrap())
}

fn assert_401(a: &Answer, message: &str) {
    assert_eq!(a.status, 401, "{}", a.body);
    let challenge = a.headers.get(WWW_AUTHENTICATE).map(|v| v.to_str().unwrap()).unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "WWW-Authenticate: {challenge:?}");
    assert_eq!(a.body["error"], "unauthenticated", "{}", a.body);
    assert_eq!(a.body["retryable"], false, "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains(message), "{}", a.body);
}

fn assert_403(a: &Answer, message: &str) {
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["error"], "forbidden", "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains(message), "{}", a.body);
}

async fn value_of(addr: &str, token: &str, key: &str) -> Value {
    let a = call(addr, As::Token(token), Method::GET, &format!("/v1/kv/{key}"), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_opens_its_routes_and_refusals_change_nothing_and_are_counted() {
    let f = make_files();
    let c = start(1, &f).await;
    let addr = c.nodes[&1].http.clone();
    let addr = addr.as_str();
    let (unauth_before, forbidden_before) =
        (refusals(addr, &f.read, "unauthenticated").await, refusals(addr, &f.read, "forbidden").await);
    let (mut unauth, mut forbidden) = (0, 0);

    // /health is open.
    let a = call(addr, As::Nobody, Method::GET, "/health", None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("ok")), "{}", a.body);

    // No credentials, or unknown ones: 401 on every other route.
    for (method, path) in [
        (Method::GET, "/v1/kv/k"),
        (Method::GET, "/v1/kv"),
        (Method::GET, "/v1/watch"),
        (Method::GET, "/v1/cluster/status"),
        (Method::GET, "/v1/cluster/members"),
        (Method::GET, "/metrics"),
        (Method::GET, "/no/such/route"),
    ] {
        assert_401(&call(addr, As::Nobody, method, path, None).await, "no credentials");
        unauth += 1;
    }
    let bad = call(addr, As::Token("kv_not-a-token"), Method::GET, "/v1/kv/k", None).await;
    assert_401(&bad, "unknown token");
    assert!(bad.headers[WWW_AUTHENTICATE].to_str().unwrap().contains("invalid_token"));
    unauth += 1;
    let put = Some(r#"{"value":"v1"}"#);
    assert_401(&call(addr, As::Nobody, Method::PUT, "/v1/kv/k", put).await, "no credentials");
    unauth += 1;

    // write: writes, and reads.
    let a = call(addr, As::Token(&f.write), Method::PUT, "/v1/kv/k", put).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(value_of(addr, &f.write, "k").await, "v1");

    // read: reads; every write is 403 and changes nothing.
    assert_eq!(value_of(addr, &f.read, "k").await, "v1");
    // A watch is a read.
    let options = kv_client::client::ClientOptions::default().with_token(f.read.clone());
    let reader = kv_client::client::Client::with_options(vec![addr.to_owned()], options).unwrap();
    let from_one = kv_client::client::WatchOptions { from_index: Some(1), ..Default::default() };
    let mut watch = reader.watch("k", from_one).await.unwrap();
    assert_eq!(watch.next().await.unwrap().key, "k");
    for (method, path, body) in [
        (Method::PUT, "/v1/kv/k", Some(r#"{"value":"v2"}"#)),
        (Method::DELETE, "/v1/kv/k", None),
        (Method::POST, "/v1/cas/k", Some(r#"{"expected":"v1","value":"v2"}"#)),
    ] {
        assert_403(&call(addr, As::Token(&f.read), method, path, body).await, "has role read");
        forbidden += 1;
    }
    assert_eq!(value_of(addr, &f.read, "k").await, "v1", "a refused write changed nothing");
    for path in ["/v1/cluster/status", "/v1/cluster/members", "/metrics", "/v1/kv?prefix=k"] {
        let a = call(addr, As::Token(&f.read), Method::GET, path, None).await;
        assert_eq!(a.status, 200, "read on {path}: {}", a.body);
    }
    let a = call(addr, As::Token(&f.read), Method::GET, "/no/such/route", None).await;
    assert_eq!(a.status, 404, "{}", a.body);

    // write: no membership change, snapshot or election.
    let learner = Some(r#"{"id":9,"raft_addr":"127.0.0.1:1","api_addr":"127.0.0.1:2"}"#);
    for (method, path, body) in [
        (Method::POST, "/v1/cluster/snapshot", None),
        (Method::POST, "/v1/cluster/campaign", None),
        (Method::POST, "/v1/cluster/learners", learner),
        (Method::POST, "/v1/cluster/members/1/promote", None),
        (Method::DELETE, "/v1/cluster/members/1", None),
    ] {
        assert_403(&call(addr, As::Token(&f.write), method, path, body).await, "needs admin");
        forbidden += 1;
    }
    let members = call(addr, As::Token(&f.read), Method::GET, "/v1/cluster/members", None).await;
    assert_eq!(members.body["members"].as_array().unwrap().len(), 1, "nothing was added or removed");

    // admin: all of it.
    let a =
        call(addr, As::Token(&f.admin), Method::POST, "/v1/cas/k", Some(r#"{"expected":"v1","value":"v3"}"#))
            .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = call(addr, As::Token(&f.admin), Method::POST, "/v1/cluster/snapshot", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = call(addr, As::Token(&f.admin), Method::POST, "/v1/cluster/campaign", None).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // The internal route: nodes only. No client token opens it.
    let path = "/v1/internal/read-index";
    for token in [&f.read, &f.write, &f.admin] {
        let a = call(addr, As::Token(token), Method::POST, path, None).await;
        assert_403(&a, "served only to nodes of the cluster");
        forbidden += 1;
    }
    assert_401(&call(addr, As::Nobody, Method::POST, path, None).await, "no credentials");
    let wrong = "f".repeat(64);
    assert_401(
        &call(addr, As::Peer(&wrong), Method::POST, path, None).await,
        "cluster secret does not match",
    );
    unauth += 2;
    c.leader().await;
    let secret = f.cluster_secret();
    let a = call(addr, As::Peer(&secret), Method::POST, path, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["index"].as_u64().is_some(), "{}", a.body);
    // The secret opens nothing else.
    assert_403(&call(addr, As::Peer(&secret), Method::GET, "/v1/kv/k", None).await, "opens only the routes");
    forbidden += 1;

    assert_eq!(value_of(addr, &f.read, "k").await, "v3");
    assert_eq!(refusals(addr, &f.read, "unauthenticated").await - unauth_before, unauth);
    assert_eq!(refusals(addr, &f.read, "forbidden").await - forbidden_before, forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_auth_forwards_serves_follower_reads_and_admits_a_joining_node() {
    let f = make_files();
    let mut c = start(3, &f).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let (l_addr, f_addr) = (c.nodes[&leader].http.clone(), c.nodes[&follower].http.clone());

    // A write sent to a follower is forwarded with its token; the leader commits it.
    let a = call(&f_addr, As::Token(&f.write), Method::PUT, "/v1/kv/k", Some(r#"{"value":"1"}"#)).await;
    assert_eq!((a.status, a.body["node"].as_u64()), (200, Some(leader)), "{}", a.body);

    // A refused write is refused by the follower itself, never forwarded.
    let leader_refusals = refusals(&l_addr, &f.read, "forbidden").await;
    let follower_refusals = refusals(&f_addr, &f.read, "forbidden").await;
    let a = call(&f_addr, As::Token(&f.read), Method::PUT, "/v1/kv/k", Some(r#"{"value":"2"}"#)).await;
    assert_403(&a, "has role read");
    assert_401(
        &call(&f_addr, As::Nobody, Method::PUT, "/v1/kv/k", Some(r#"{"value":"2"}"#)).await,
        "no credentials",
    );
    assert_eq!(refusals(&f_addr, &f.read, "forbidden").await, follower_refusals + 1);
    assert_eq!(refusals(&l_addr, &f.read, "forbidden").await, leader_refusals, "nothing reached the leader");

    // A linearizable read on the follower: it asks the leader for its read
    // index with the cluster secret.
    let a = call(&f_addr, As::Token(&f.read), Method::GET, "/v1/kv/k?consistency=linearizable", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["value"].as_str(), a.body["node"].as_u64()),
        (Some("1"), Some(follower)),
        "{}",
        a.body
    );

    // A new node joins through the follower (which forwards both steps,
    // with the cluster secret, to the leader).
    c.add_node(4);
    c.spawn(4, &["--join", &f_addr]);
    let deadline = Instant::now() + common::WAIT;
    loop {
        if let Some(s) = c.status(4).await {
            if s.voters.contains(&4) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "node 4 did not become a voter with auth on");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n4 = c.nodes[&4].http.clone();
    let a = call(&n4, As::Token(&f.read), Method::GET, "/v1/kv/k?consistency=linearizable", None).await;
    assert_eq!((a.status, a.body["value"].as_str()), (200, Some("1")), "{}", a.body);
}

fn log_of(c: &ProcCluster, id: u64) -> String {
    std::fs::read_to_string(c.nodes[&id].dir.join("server.log")).unwrap_or_default()
}

/// What a node logs when it has loaded the token files, or failed to.
const RELOADED: [&str; 2] = ["auth on: loaded", "reloading the token files failed"];

/// Sends SIGHUP to node `id` and waits until it logged that it reloaded
/// (or failed to); returns that log line.
async fn reload(c: &ProcCluster, id: u64) -> String {
    let reloads = |log: &str| -> Vec<String> {
        log.lines().filter(|l| RELOADED.iter().any(|r| l.contains(r))).map(str::to_owned).collect()
    };
    let before = reloads(&log_of(c, id)).len();
    let pid = c.nodes[&id].child.as_ref().unwrap().id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + common::WAIT;
    loop {
        let log = log_of(c, id);
        if let Some(line) = reloads(&log).get(before) {
            return line.clone();
        }
        assert!(Instant::now() < deadline, "node {id} logged no reload after SIGHUP:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tokens_and_a_malformed_file_keeps_the_old_ones() {
    let f = make_files();
    let c = start(3, &f).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let f_addr = c.nodes[&follower].http.clone();
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    let a = call(&f_addr, As::Token(&f.write), Method::PUT, "/v1/kv/k", Some(r#"{"value":"1"}"#)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let new = add_token(&f.tokens, "write", "new-writer");
    assert_401(&call(&f_addr, As::Token(&new), Method::GET, "/v1/kv/k", None).await, "unknown token");

    // Only the follower reloads: it accepts the new token, but the leader,
    // which checks a forwarded write's token again, does not yet.
    let line = reload(&c, follower).await;
    assert!(line.contains("loaded 4 tokens"), "{line}");
    assert_eq!(value_of(&f_addr, &new, "k").await, "1");
    let a = call(&f_addr, As::Token(&new), Method::PUT, "/v1/kv/k", Some(r#"{"value":"2"}"#)).await;
    assert_401(&a, "unknown token");
    // Every node reloads: the write goes through.
    for id in &ids {
        let line = reload(&c, *id).await;
        assert!(line.contains("loaded 4 tokens"), "{line}");
    }
    let a = call(&f_addr, As::Token(&new), Method::PUT, "/v1/kv/k", Some(r#"{"value":"2"}"#)).await;
    assert_eq!((a.status, a.body["node"].as_u64()), (200, Some(leader)), "{}", a.body);

    // Removing the old write token and reloading locks it out everywhere.
    let (ok, _, stderr) =
        run(&["tokens", "remove", "--file", f.tokens.to_str().unwrap(), "--name", "writer"]);
    assert!(ok, "{stderr}");
    for id in &ids {
        let line = reload(&c, *id).await;
        assert!(line.contains("loaded 3 tokens"), "{line}");
        let addr = &c.nodes[id].http;
        assert_401(&call(addr, As::Token(&f.write), Method::GET, "/v1/kv/k", None).await, "unknown token");
    }

    // A malformed file is refused on reload, and the tokens in force stay.
    std::fs::write(&f.tokens, "admin ops\n").unwrap();
    for id in &ids {
        let line = reload(&c, *id).await;
        assert!(line.contains("reloading the token files failed"), "{line}");
        assert!(line.contains("line 1: expected ROLE NAME HASH, found 2 field(s)"), "{line}");
        assert_eq!(value_of(&c.nodes[id].http, &new, "k").await, "2");
        assert_eq!(value_of(&c.nodes[id].http, &f.admin, "k").await, "2");
    }
}

#[tokio::test]
async fn startup_refuses_a_malformed_token_file_and_a_token_file_without_a_secret() {
    let f = make_files();
    let data = tempfile::tempdir().unwrap();
    let common_args = ["--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--data-dir"];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = common_args.to_vec();
        args.push(data.path().to_str().unwrap());
        args.extend_from_slice(extra);
        run(&args)
    };
    let (tokens, secret) = (f.tokens.to_str().unwrap(), f.secret.to_str().unwrap());

    let (ok, _, stderr) = with(&["--token-file", tokens]);
    assert!(!ok);
    assert!(stderr.contains("--cluster-secret-file"), "{stderr}");

    let mut text = std::fs::read_to_string(&f.tokens).unwrap();
    let lines = text.lines().count();
    text.push_str("superuser root sha256:00\n");
    std::fs::write(&f.tokens, text).unwrap();
    let (ok, _, stderr) = with(&["--token-file", tokens, "--cluster-secret-file", secret]);
    assert!(!ok);
    let expected = format!("line {}: unknown role \"superuser\"", lines + 1);
    assert!(stderr.contains(&expected), "{stderr} lacks {expected:?}");
}

#[test]
fn tokens_list_shows_names_and_roles_but_never_hashes() {
    let f = make_files();
    let file = f.tokens.to_str().unwrap();
    let (ok, stdout, stderr) = run(&["tokens", "list", "--file", file]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "reader\tread\nwriter\twrite\nops\tadmin\n");
    let (ok, _, stderr) = run(&["tokens", "add", "--file", file, "--role", "root", "--name", "x"]);
    assert!(!ok);
    assert!(stderr.contains("unknown role \"root\""), "{stderr}");
    let (ok, _, stderr) = run(&["tokens", "remove", "--file", file, "--name", "nobody"]);
    assert!(!ok);
    assert!(stderr.contains("has no token named \"nobody\""), "{stderr}");
    let (ok, _, _) = run(&["tokens", "remove", "--file", file, "--name", "reader"]);
    assert!(ok);
    let (_, stdout, _) = run(&["tokens", "list", "--file", file]);
    assert_eq!(stdout, "writer\twrite\nops\tadmin\n");
}
