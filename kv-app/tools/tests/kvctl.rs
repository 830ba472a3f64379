//! `kvctl` end to end, as a user runs it: `cluster up` starts real
//! `kv-server` processes and writes `cluster.json`; the key commands print
//! values and use exit codes; `status --json` names the leader;
//! `transfer-leader --to N` makes N leader; `cluster down` stops everything.

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

#[test]
fn cluster_up_put_get_cas_status_transfer_leader_and_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::kv_server();
    let cluster_dir = dir.path().join("cluster");
    let cluster_dir = cluster_dir.to_str().unwrap();
    let out =
        kvctl(&["cluster", "up", "--nodes", "3", "--dir", cluster_dir, "--bin", server.to_str().unwrap()]);
    let guard = Down(cluster_dir);
    assert!(out.status.success(), "cluster up: {}{}", text(&out.stdout), text(&out.stderr));
    {
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("cluster/cluster.json")).unwrap())
                .unwrap();
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
        let out = with(&["--json", "status", "--all"]);
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let leaders: Vec<(u64, u64)> = all
            .iter()
            .filter(|s| s["role"] == "leader")
            .map(|s| (s["id"].as_u64().unwrap(), s["term"].as_u64().unwrap()))
            .collect();
        assert_eq!(leaders, [(to, old_term + 1)], "{all:?}");
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
