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
    let out = kv_client::server_env::clear(&mut Command::new(SERVER)).args(args).output().unwrap();
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
    rotation_args(&dir.join("ca.pem"), dir, id)
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

/// Peer TLS files for node `id`: trust `ca`, present `dir`'s certificate.
fn rotation_args(ca: &Path, dir: &Path, id: u64) -> Vec<String> {
    let file = |name: String| dir.join(name).to_str().unwrap().to_string();
    vec![
        "--peer-ca".into(),
        ca.to_str().unwrap().into(),
        "--peer-cert".into(),
        file(format!("node-{id}.pem")),
        "--peer-key".into(),
        file(format!("node-{id}.key")),
    ]
}

/// Moving a running cluster to a new CA, one node restart at a time, as
/// `docs/security.md` describes: first every node trusts both CAs (a PEM
/// bundle), then every node presents a certificate of the new CA, then
/// every node trusts the new CA alone. After each restart the cluster
/// takes a write, and no write is lost.
#[tokio::test]
async fn a_cluster_moves_to_a_new_ca_by_rolling_restarts() {
    let certs = tempfile::tempdir().unwrap();
    let (old, new) = (certs.path().join("old"), certs.path().join("new"));
    make_certs(&old, "kv", &[1, 2, 3]);
    make_certs(&new, "kv", &[1, 2, 3]);
    let bundle = certs.path().join("both-cas.pem");
    let both =
        [std::fs::read(old.join("ca.pem")).unwrap(), std::fs::read(new.join("ca.pem")).unwrap()].concat();
    std::fs::write(&bundle, both).unwrap();

    let start_dir = old.clone();
    let mut c =
        ProcCluster::start_with(3, &[], |id| rotation_args(&start_dir.join("ca.pem"), &start_dir, id)).await;
    let mut written = 0;
    let steps: [(&str, &Path, &Path); 3] = [
        ("trust both CAs", &bundle, &old),
        ("present the new CA's certificate", &bundle, &new),
        ("trust the new CA alone", &new.join("ca.pem"), &new),
    ];
    for (step, ca, dir) in steps {
        for id in 1..=3 {
            c.kill(id);
            c.nodes.get_mut(&id).unwrap().args = rotation_args(ca, dir, id);
            c.spawn(id, &[]);
            c.serving(id).await;
            // The restarted node and the others, some still on the old
            // files, form a working cluster.
            let w = c.client().put(&format!("k{written}"), b"v", None).await;
            assert!(w.is_ok(), "{step}, node {id} restarted: a write failed: {w:?}");
            written += 1;
        }
    }
    let last = c.client().put("last", b"v", None).await.unwrap().index;
    c.converge(last).await;
    let client = c.client();
    for i in 0..written {
        let r = client.get(&format!("k{i}"), Consistency::Linearizable).await.unwrap();
        assert!(r.is_some(), "k{i} was lost");
    }
    // The old CA is no longer trusted: a node presenting an old certificate
    // is refused by every node now (its handshake fails, so it cannot
    // catch up or vote; the cluster goes on without it).
    c.kill(3);
    c.nodes.get_mut(&3).unwrap().args = rotation_args(&new.join("ca.pem"), &old, 3);
    c.spawn(3, &[]);
    c.serving(3).await;
    let w = c.client().put("after", b"v", None).await.unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let log = std::fs::read_to_string(c.nodes[&1].dir.join("server.log")).unwrap()
            + &std::fs::read_to_string(c.nodes[&2].dir.join("server.log")).unwrap();
        if log.contains("UnknownCA") || log.contains("unknown issuer") || log.contains("UnknownIssuer") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no node refused the old certificate");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let s3 = c.status(3).await.unwrap();
    assert!(s3.applied_index < w.index, "node 3, with an old certificate, caught up: {s3:?}");
}
