//! Peer TLS end to end: certificates made by `kv-server certs` (what
//! `kvctl certs` runs), three `kv-server` processes started with
//! `--peer-ca`, `--peer-cert` and `--peer-key`, and writes and reads through
//! them. Also the startup errors: the TLS flags go together, and a node
//! refuses to start with a certificate that names another node.

mod common;

use std::path::Path;
use std::process::Command;

use common::ProcCluster;
use kv_client::api::Consistency;

const SERVER: &str = env!("CARGO_BIN_EXE_kv-server");

/// Runs `kv-server ARGS` to completion; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SERVER).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn make_certs(dir: &Path, cluster_id: &str, ids: &[u64]) {
    let d = dir.to_str().unwrap();
    let (ok, stdout, stderr) = run(&["certs", "init", "--dir", d]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ca.pem") && stdout.contains("ca.key"), "{stdout}");
    for id in ids {
        let (ok, _, stderr) =
            run(&["certs", "node", "--id", &id.to_string(), "--cluster-id", cluster_id, "--dir", d]);
        assert!(ok, "{stderr}");
    }
}

fn tls_args(dir: &Path, id: u64) -> Vec<String> {
    let file = |name: String| dir.join(name).to_str().unwrap().to_string();
    vec![
        "--peer-ca".into(),
        file("ca.pem".into()),
        "--peer-cert".into(),
        file(format!("node-{id}.pem")),
        "--peer-key".into(),
        file(format!("node-{id}.key")),
    ]
}

#[tokio::test]
async fn a_tls_cluster_of_kv_servers_serves_writes_and_reads() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "kv-tls", &[1, 2, 3]);
    let dir = certs.path().to_path_buf();
    let c = ProcCluster::start_with(3, &["--cluster-id", "kv-tls"], |id| tls_args(&dir, id)).await;

    let client = c.client();
    let mut last = 0;
    for i in 0..20 {
        last = client.put(&format!("k{i}"), format!("v{i}").as_bytes(), None).await.unwrap().index;
    }
    // Every node applied the writes, which reached them only over TLS.
    c.converge(last).await;
    let r = client.get("k7", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!(r.value, b"v7");
    for n in c.nodes.values() {
        let log = std::fs::read_to_string(n.dir.join("server.log")).unwrap();
        assert!(log.contains("peer TLS on"), "node {} did not start with TLS:\n{log}", n.id);
    }
}

#[test]
fn peer_tls_flags_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, _, stderr) = run(&["--data-dir", d, "--peer-ca", "ca.pem", "--peer-key", "k.key"]);
    assert!(!ok);
    assert!(stderr.contains("peer TLS needs --peer-ca, --peer-cert and --peer-key together"), "{stderr}");
    assert!(stderr.contains("missing --peer-cert"), "{stderr}");
}

#[tokio::test]
async fn a_node_does_not_start_with_another_nodes_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "kv", &[2]);
    let data = tempfile::tempdir().unwrap();
    let mut args: Vec<String> =
        ["--id", "1", "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--data-dir"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.push(data.path().to_str().unwrap().into());
    args.extend(tls_args(certs.path(), 2));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, stderr) = run(&args);
    assert!(!ok);
    assert!(
        stderr.contains(
            "the peer TLS certificate names node 2 of cluster \"kv\", but this is node 1 of cluster \"kv\""
        ),
        "{stderr}"
    );
}
