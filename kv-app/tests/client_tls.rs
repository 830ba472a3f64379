//! HTTPS on the HTTP API end to end: certificates made by `kv-server certs`
//! (what `kvctl certs` runs), three `kv-server` processes with peer TLS and
//! `--tls-cert`, `--tls-key`, `--tls-ca` (and `--client-cert-auth`), and the
//! client library against them. Writes and linearizable reads are sent to a
//! follower, so that forwarding to the leader and asking it for a read index
//! go over HTTPS between the nodes. With bearer tokens on too, the
//! client's token and the cluster secret travel inside that TLS.
//!
//! Also each refusal: plain HTTP on the HTTPS port, a client that trusts
//! another CA, a client without a certificate or with one from another CA;
//! and the startup checks: the TLS flags go together, a certificate must
//! name the node's host, and a port reachable from other machines needs TLS
//! unless `--insecure` is given.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::ProcCluster;
use kv_client::api::Consistency;
use kv_client::client::{Client, ClientError, ClientOptions};
use kv_client::tls::ClientTls;

const SERVER: &str = env!("CARGO_BIN_EXE_kv-server");

/// Runs `kv-server ARGS` to completion; returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let (ok, _, stderr) = run_out(args);
    (ok, stderr)
}

/// Runs `kv-server ARGS` to completion; returns (success, stdout, stderr).
fn run_out(args: &[&str]) -> (bool, String, String) {
    let out = kv_client::server_env::clear(&mut Command::new(SERVER)).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn certs(dir: &Path, args: &[&str]) {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--dir", dir.to_str().unwrap()]);
    let (ok, stderr) = run(&all);
    assert!(ok, "kv-server {all:?}: {stderr}");
}

/// A CA in `dir` and certificates for nodes 1 to 3 (default hosts:
/// localhost and 127.0.0.1), and for a client named "app".
fn make_certs(dir: &Path) {
    certs(dir, &["init"]);
    for id in ["1", "2", "3"] {
        certs(dir, &["node", "--id", id]);
    }
    certs(dir, &["client", "--name", "app"]);
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// Peer TLS and HTTPS with node `id`'s certificate for both ports.
fn node_args(dir: &Path, id: u64, client_cert_auth: bool) -> Vec<String> {
    let (cert, key) = (file(dir, &format!("node-{id}.pem")), file(dir, &format!("node-{id}.key")));
    let ca = file(dir, "ca.pem");
    let mut args = vec![
        "--peer-ca".into(),
        ca.clone(),
        "--peer-cert".into(),
        cert.clone(),
        "--peer-key".into(),
        key.clone(),
        "--tls-ca".into(),
        ca,
        "--tls-cert".into(),
        cert,
        "--tls-key".into(),
        key,
    ];
    if client_cert_auth {
        args.push("--client-cert-auth".into());
    }
    args
}

fn trust(dir: &Path, identity: Option<&str>) -> ClientTls {
    let ca = dir.join("ca.pem");
    let identity = identity.map(|name| (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key"))));
    ClientTls::from_pem_files(&ca, identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).unwrap()
}

/// A client of node `id` only, with `tls`, that gives up quickly.
fn client_of(c: &ProcCluster, id: u64, tls: Option<ClientTls>) -> Client {
    let options = ClientOptions { tls, deadline: Duration::from_secs(20), ..ClientOptions::default() };
    Client::with_options(vec![c.nodes[&id].http.clone()], options).unwrap()
}

/// Asserts that a write was refused by TLS, for `why`, and certainly did
/// not take effect.
fn assert_tls_refusal<T: std::fmt::Debug>(result: Result<T, ClientError>, why: &str) {
    match result {
        Err(e @ ClientError::Tls { .. }) => {
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(e.took_effect(), Some(false), "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
        other => panic!("expected a TLS refusal ({why}), got {other:?}"),
    }
}

async fn a_follower(c: &ProcCluster) -> (u64, u64) {
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    (leader, follower)
}

/// Writes through `follower` (which forwards them to the leader) and reads
/// them back linearizably from it (it asks the leader for a read index):
/// both are node-to-node HTTPS calls.
async fn forwarded_writes_and_reads_work(client: &Client, leader: u64, follower: u64) {
    for i in 0..5 {
        let w = client.put(&format!("k{i}"), format!("v{i}").as_bytes(), None).await.unwrap();
        assert_eq!(w.node, leader, "node {follower} forwarded the write to the leader");
    }
    let r = client.get("k3", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!(r.value, b"v3");
    assert_eq!(r.node, follower, "the follower served the read itself, after the leader's read index");
}

#[tokio::test]
async fn an_https_cluster_forwards_and_refuses_plain_http_and_unknown_cas() {
    let pki = tempfile::tempdir().unwrap();
    make_certs(pki.path());
    let dir = pki.path().to_path_buf();
    let c =
        ProcCluster::start_with_tls(3, &[], |id| node_args(&dir, id, false), Some(trust(&dir, None))).await;
    for n in c.nodes.values() {
        let log = std::fs::read_to_string(n.dir.join("server.log")).unwrap();
        assert!(log.contains("HTTPS on"), "node {} did not start with HTTPS:\n{log}", n.id);
    }
    let (leader, follower) = a_follower(&c).await;
    let client = client_of(&c, follower, Some(trust(&dir, None)));
    forwarded_writes_and_reads_work(&client, leader, follower).await;

    // The change stream is served over HTTPS like the rest.
    let from_one = kv_client::client::WatchOptions { from_index: Some(1), ..Default::default() };
    let mut watch = client.watch("k", from_one).await.unwrap();
    assert_eq!(watch.next().await.unwrap().key, "k0");

    // Plain HTTP on the HTTPS port: a 400 that says what to do.
    let plain = kv_client::tls::http_client_builder(None).build().unwrap();
    let resp = plain.get(format!("http://{}/v1/kv/k1", c.nodes[&follower].http)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("speaks HTTPS"), "{body}");

    // Clients that are slow or speak garbage do not hold up the others:
    // one sends nothing, one half a TLS record, one bytes that are neither
    // TLS nor HTTP; all stay open while a real client is served.
    let addr = c.nodes[&follower].http.clone();
    let silent = TcpStream::connect(&addr).unwrap();
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(&[0x16, 0x03]).unwrap();
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(&[0xff; 64]).unwrap();
    let r = client.get("k1", Consistency::Stale).await.unwrap().unwrap();
    assert_eq!(r.value, b"v1");
    // The garbage got the same 400, and the connection was closed.
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    garbage.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    drop((silent, half));

    // A client that trusts another CA refuses the server's certificate,
    // at once and for certain: nothing was sent.
    let other = tempfile::tempdir().unwrap();
    certs(other.path(), &["init"]);
    let stranger = client_of(&c, follower, Some(trust(other.path(), None)));
    assert_tls_refusal(stranger.put("k1", b"x", None).await, "not signed by the CA this client trusts");

    // After all that, the node still serves, and nothing changed.
    let r = client.get("k1", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!(r.value, b"v1");
}

#[tokio::test]
async fn with_client_cert_auth_only_clients_with_the_clusters_certificates_get_in() {
    let pki = tempfile::tempdir().unwrap();
    make_certs(pki.path());
    let dir = pki.path().to_path_buf();
    let app = trust(&dir, Some("client-app"));
    let c = ProcCluster::start_with_tls(3, &[], |id| node_args(&dir, id, true), Some(app.clone())).await;
    let (leader, follower) = a_follower(&c).await;

    // A valid client certificate works, and the nodes present theirs when
    // the follower forwards to the leader.
    let client = client_of(&c, follower, Some(app));
    forwarded_writes_and_reads_work(&client, leader, follower).await;

    // No client certificate: refused, and the write certainly not done.
    let anonymous = client_of(&c, follower, Some(trust(&dir, None)));
    assert_tls_refusal(anonymous.put("k1", b"x", None).await, "requires a client certificate");

    // A certificate from another CA (trusting the right one): refused.
    let other = tempfile::tempdir().unwrap();
    certs(other.path(), &["init"]);
    certs(other.path(), &["client", "--name", "app"]);
    let ca = dir.join("ca.pem");
    let (cert, key) = (other.path().join("client-app.pem"), other.path().join("client-app.key"));
    let forged = ClientTls::from_pem_files(&ca, Some((&cert, &key))).unwrap();
    let forged = client_of(&c, follower, Some(forged));
    assert_tls_refusal(forged.put("k1", b"x", None).await, "refused this client's certificate");

    // Nothing changed, and the cluster still serves.
    let r = client.get("k1", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!(r.value, b"v1");
}

#[tokio::test]
async fn tokens_and_the_cluster_secret_work_over_https() {
    let pki = tempfile::tempdir().unwrap();
    make_certs(pki.path());
    let dir = pki.path().to_path_buf();
    let (tokens, secret) = (dir.join("tokens"), dir.join("cluster-secret"));
    let (ok, _, stderr) = run_out(&["tokens", "secret", "--file", secret.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, token, stderr) =
        run_out(&["tokens", "add", "--file", tokens.to_str().unwrap(), "--role", "write", "--name", "app"]);
    assert!(ok, "{stderr}");
    let token = token.trim().to_string();
    let auth = ["--token-file", tokens.to_str().unwrap(), "--cluster-secret-file", secret.to_str().unwrap()];
    let tls = trust(&dir, Some("client-app"));
    let c =
        ProcCluster::start_full(3, &auth, |id| node_args(&dir, id, true), Some(&token), Some(tls.clone()))
            .await;
    let (leader, follower) = a_follower(&c).await;

    // The follower forwards the writes with the client's token and asks
    // the leader for read indexes with the cluster secret, all over HTTPS.
    let options = ClientOptions { tls: Some(tls.clone()), ..ClientOptions::default() }.with_token(token);
    let client = Client::with_options(vec![c.nodes[&follower].http.clone()], options).unwrap();
    forwarded_writes_and_reads_work(&client, leader, follower).await;

    // A client certificate alone is not a token.
    let no_token = client_of(&c, follower, Some(tls));
    match no_token.get("k1", Consistency::Linearizable).await {
        Err(ClientError::Server { status: 401, .. }) => {}
        other => panic!("expected 401 without a token, got {other:?}"),
    }
}

#[test]
fn https_flags_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, stderr) = run(&["--data-dir", d, "--tls-cert", "n.pem"]);
    assert!(!ok);
    assert!(stderr.contains("HTTPS needs --tls-cert, --tls-key and --tls-ca together"), "{stderr}");
    assert!(stderr.contains("missing --tls-key, --tls-ca"), "{stderr}");
    let (ok, stderr) = run(&["--data-dir", d, "--client-cert-auth"]);
    assert!(!ok);
    assert!(stderr.contains("--client-cert-auth needs HTTPS"), "{stderr}");
}

#[test]
fn a_node_does_not_start_with_a_certificate_that_does_not_name_its_host() {
    let pki = tempfile::tempdir().unwrap();
    certs(pki.path(), &["init"]);
    certs(pki.path(), &["node", "--id", "1", "--host", "kv1.example"]);
    let data = tempfile::tempdir().unwrap();
    let (cert, key, ca) =
        (file(pki.path(), "node-1.pem"), file(pki.path(), "node-1.key"), file(pki.path(), "ca.pem"));
    let (ok, stderr) = run(&[
        "--http-addr",
        "127.0.0.1:0",
        "--raft-addr",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca,
    ]);
    assert!(!ok);
    assert!(stderr.contains("the HTTPS certificate (--tls-cert) does not name 127.0.0.1"), "{stderr}");
    assert!(stderr.contains("--host 127.0.0.1"), "{stderr}");
}

#[test]
fn a_non_loopback_port_without_tls_is_refused_before_binding() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("node");
    let d = data_dir.to_str().unwrap();

    let (ok, stderr) = run(&["--data-dir", d, "--http-addr", "0.0.0.0:0", "--raft-addr", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        stderr.contains("refusing to start: --http-addr 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure"), "{stderr}");

    let (ok, stderr) = run(&["--data-dir", d, "--http-addr", "127.0.0.1:0", "--raft-addr", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(stderr.contains("--raft-addr 0.0.0.0:0 is not a loopback address"), "{stderr}");
    assert!(stderr.contains("--peer-cert"), "{stderr}");

    // A host name other than localhost counts as reachable from elsewhere.
    let (ok, stderr) = run(&["--data-dir", d, "--http-addr", "kv.example:8080"]);
    assert!(!ok);
    assert!(stderr.contains("--http-addr kv.example:8080 is not a loopback address"), "{stderr}");

    // Refused before anything was bound or opened.
    assert!(!data_dir.exists(), "the node got as far as opening its data directory");
}

#[test]
fn insecure_serves_a_non_loopback_port_without_tls_with_a_warning() {
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is never an address of this machine:
    // the node passes the check, warns, and then fails to bind, so the test
    // never opens a port beyond the loopback interface.
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let (ok, stderr) =
        run(&["--data-dir", d, "--http-addr", "192.0.2.1:0", "--raft-addr", "127.0.0.1:0", "--insecure"]);
    assert!(!ok);
    assert!(!stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("serving it anyway (--insecure)"), "{stderr}");
    assert!(stderr.contains("binding the HTTP address 192.0.2.1:0"), "{stderr}");
}
