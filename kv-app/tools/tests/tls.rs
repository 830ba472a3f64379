//! `kvctl` over HTTPS, as a user runs it: `kvctl certs` makes a CA, a node
//! certificate and a client certificate (through `kv-server certs`), a
//! `kv-server` serves HTTPS with `--client-cert-auth`, and `kvctl` with
//! `--cacert`, `--cert` and `--key` writes, reads and benchmarks it; without
//! a client certificate it is refused.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};

mod common;

fn kvctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvctl")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Kills the server when dropped, so a failing assertion leaves no process.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kvctl_speaks_https_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    let bin = common::kv_server();
    let bin = bin.to_str().unwrap();
    for args in [
        vec!["init", "--dir", p],
        vec!["node", "--id", "1", "--dir", p],
        vec!["client", "--name", "ops", "--dir", p],
    ] {
        let out = kvctl(&[&["certs", "--bin", bin][..], &args].concat());
        assert!(out.status.success(), "kvctl certs {args:?}: {}", text(&out.stderr));
    }
    let file = |name: &str| pki.join(name).to_str().unwrap().to_string();

    let data = dir.path().join("data");
    let mut child = Command::new(bin)
        .args(["--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--tls-cert", &file("node-1.pem"), "--tls-key", &file("node-1.key")])
        .args(["--tls-ca", &file("ca.pem"), "--client-cert-auth"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    // "kv-server node 1 listening http=127.0.0.1:PORT raft=..."
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no http address in {line:?}"))
        .to_string();

    let (cacert, cert, key) = (file("ca.pem"), file("client-ops.pem"), file("client-ops.key"));
    let tls = ["--endpoints", &http, "--cacert", &cacert, "--cert", &cert, "--key", &key];
    let with = |args: &[&str]| kvctl(&[&tls[..], args].concat());

    let out = with(&["put", "greeting", "hello"]);
    assert!(out.status.success(), "put: {}", text(&out.stderr));
    let out = with(&["get", "greeting"]);
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "hello"), "{}", text(&out.stderr));
    let out = with(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The load generator speaks HTTPS with the same options, through
    // reqwest's pool and on connections of its own.
    for pool in ["shared", "connection"] {
        let load = ["--ops", "20", "--clients", "2", "--warmup", "0", "--keys", "10", "--pool", pool];
        let out = with(&[&["--json", "bench"][..], &load].concat());
        assert!(out.status.success(), "bench --pool {pool}: {}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((&report["ops"], &report["errors"]), (&20.into(), &0.into()), "{pool}: {report}");
    }

    // The load generator on its own connections says why TLS failed.
    let load = ["--json", "bench", "--pool", "connection", "--ops", "4", "--warmup", "0", "--keys", "10"];
    let out = kvctl(&[&["--endpoints", &http, "--cacert", &cacert][..], &load].concat());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&String> = report["error_kinds"].as_object().unwrap().keys().collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k.contains("requires a client certificate")),
        "without a client certificate: {report}"
    );
    let out = kvctl(
        &[&["--endpoints", &http, "--cacert", &cert, "--cert", &cert, "--key", &key][..], &load].concat(),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&String> = report["error_kinds"].as_object().unwrap().keys().collect();
    assert!(
        !kinds.is_empty()
            && kinds.iter().all(|k| k.starts_with("tls: ") && k.contains("not signed by the CA")),
        "trusting another CA: {report}"
    );

    // Without a client certificate: refused, exit 2, and the reason.
    let out = kvctl(&["--endpoints", &http, "--cacert", &cacert, "put", "greeting", "bye"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("requires a client certificate"), "{}", text(&out.stderr));
    // A certificate without its key (or the other way round) is a usage error.
    let out = kvctl(&["--endpoints", &http, "--cacert", &cacert, "--cert", &cert, "get", "greeting"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--key"), "{}", text(&out.stderr));

    // Nothing changed.
    assert_eq!(text(&with(&["get", "greeting"]).stdout).trim(), "hello");
}

/// Runs `kvctl cluster down` when dropped, so a failing assertion does not
/// leave detached servers behind.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = kvctl(&["cluster", "down", "--dir", &self.0]);
    }
}

/// `kvctl cluster up --tls`: a 3-node cluster with peer TLS, HTTPS and
/// tokens, usable with the files and the command it prints; it refuses
/// plaintext and requests without the token, and a restart (all at once, or
/// rolling) keeps it secure.
#[test]
fn cluster_up_tls_starts_a_cluster_with_every_protection_on() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let c = cluster.to_str().unwrap().to_string();
    let bin = common::kv_server();
    let bin = bin.to_str().unwrap();
    let out = kvctl(&["cluster", "up", "--tls", "--nodes", "3", "--dir", &c, "--bin", bin]);
    let _down = Down(c.clone());
    assert!(out.status.success(), "cluster up --tls: {}", text(&out.stderr));
    let printed = text(&out.stdout);

    let secrets = cluster.join("secrets");
    let ca = secrets.join("ca.pem");
    let token = std::fs::read_to_string(secrets.join("admin.token")).unwrap();
    let token = token.trim();
    assert!(printed.contains(ca.to_str().unwrap()), "names the CA to trust: {printed}");
    assert!(printed.contains("admin.token"), "names the admin token's file: {printed}");
    assert!(!printed.contains(token), "never prints the token itself: {printed}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(secrets.join("admin.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the admin token file is private: {mode:o}");

    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.join("cluster.json")).unwrap()).unwrap();
    let http: Vec<String> =
        file["nodes"].as_array().unwrap().iter().map(|n| n["http_addr"].as_str().unwrap().into()).collect();
    let https: Vec<String> = http.iter().map(|a| format!("https://{a}")).collect();
    let https = https.join(",");
    let ca = ca.to_str().unwrap();
    let secure = |args: &[&str]| {
        kvctl(&[&["--cacert", ca, "--token", token, "--endpoints", https.as_str()][..], args].concat())
    };

    let out = secure(&["put", "greeting", "hello"]);
    assert!(out.status.success(), "put with the CA and the admin token: {}", text(&out.stderr));
    let out = secure(&["--consistency", "linearizable", "get", "greeting"]);
    assert_eq!(text(&out.stdout).trim(), "hello", "{}", text(&out.stderr));
    // The load generator on connections of its own sends the token too.
    let load = ["--json", "bench", "--pool", "connection", "--ops", "20", "--warmup", "0", "--keys", "10"];
    let out = secure(&load);
    assert!(out.status.success(), "bench --pool connection: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&report["ops"], &report["errors"]), (&20.into(), &0.into()), "{report}");
    // Without the token every request is refused (one endpoint, so no
    // leader lookup stops the run first).
    let one = https.split(',').next().unwrap();
    let out = kvctl(&[&["--cacert", ca, "--endpoints", one][..], &load].concat());
    assert_eq!(out.status.code(), Some(2), "no operation succeeded: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&report["ops"], &report["errors"]), (&0.into(), &20.into()), "{report}");
    let kinds = report["error_kinds"].as_object().unwrap();
    assert!(kinds.keys().all(|k| k.starts_with("401")), "{report}");

    // Each protection is on: no token, no CA, plaintext HTTP.
    let out = kvctl(&["--cacert", ca, "--endpoints", https.as_str(), "get", "greeting"]);
    assert_eq!(out.status.code(), Some(2), "without a token: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = kvctl(&["--token", token, "--endpoints", https.as_str(), "get", "greeting"]);
    assert!(!out.status.success(), "without the CA the server's certificate is not trusted");
    let plain = http.join(",");
    let out = kvctl(&["--token", token, "--endpoints", plain.as_str(), "get", "greeting"]);
    assert!(!out.status.success(), "plaintext HTTP is refused: {}", text(&out.stdout));
    // Peer TLS is on: every node's log says so.
    for n in file["nodes"].as_array().unwrap() {
        let log = std::path::Path::new(n["data_dir"].as_str().unwrap()).join("server.log");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.contains("peer TLS on"), "{}: {log}", n["id"]);
    }

    // Down and up again without --tls: the cluster keeps its protections
    // and its data.
    let out = kvctl(&["cluster", "down", "--dir", &c]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kvctl(&["cluster", "up", "--dir", &c, "--nodes", "3", "--bin", bin]);
    assert!(out.status.success(), "restart: {}", text(&out.stderr));
    let out = secure(&["get", "greeting"]);
    assert_eq!(text(&out.stdout).trim(), "hello", "{}", text(&out.stderr));
    let out = kvctl(&["--cacert", ca, "--endpoints", https.as_str(), "get", "greeting"]);
    assert_eq!(out.status.code(), Some(2), "still refuses a request without a token");

    // So does a rolling restart, which asks the nodes over HTTPS with the
    // admin token (the restarted nodes get the same certificates).
    let out = kvctl(&["cluster", "restart", "--rolling", "--dir", &c, "--bin", bin]);
    assert!(out.status.success(), "restart --rolling: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).matches(" restarted in ").count(), 3, "{}", text(&out.stdout));
    let out = secure(&["get", "greeting"]);
    assert_eq!(text(&out.stdout).trim(), "hello", "{}", text(&out.stderr));
    let out = kvctl(&["--cacert", ca, "--endpoints", https.as_str(), "get", "greeting"]);
    assert_eq!(out.status.code(), Some(2), "still refuses a request without a token");
}
