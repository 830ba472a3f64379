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

    // The load generator speaks HTTPS with the same options.
    let out = with(&["--json", "bench", "--ops", "20", "--clients", "2", "--warmup", "0", "--keys", "10"]);
    assert!(out.status.success(), "bench: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ops"], 20, "{report}");

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
