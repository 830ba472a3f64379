//! The harness's cluster: real `kv-server` processes whose Raft links run
//! through the partition proxy. Cutting the leader off makes the majority
//! elect a new leader; the old one can no longer serve a linearizable read
//! (clients still reach it directly); healing lets everything converge.
//! With the credentials of `jepsen test --tls`, the same cluster runs every
//! security layer, its peer TLS passes the proxies, and it serves the
//! harness's client while refusing any client short of its credentials.

use std::time::{Duration, Instant};

use jepsen::cluster::{Cluster, ClusterSpec, SETTLE};
use jepsen::run::client::{write_with_retries, Http, Write, WriteOutcome};
use jepsen::tls::Credentials;
use kv_client::api::{Consistency, Durability, StatusResponse};
use kv_client::client::{Client, ClientError, ClientOptions};
use kv_client::tls::ClientTls;

mod common;
use common::kv_server;

async fn status(addr: &str) -> Option<StatusResponse> {
    let client = Client::with_options(vec![addr.to_string()], quick()).ok()?;
    client.status(Some(addr)).await.ok()
}

fn quick() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

/// Waits until a node among `ids` leads, with a term above `above`.
async fn leader_among(c: &Cluster, ids: &[u64], above: u64) -> (u64, u64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        for id in ids {
            if let Some(s) = status(&c.node(*id).unwrap().http_addr).await {
                if s.role == "leader" && s.term > above {
                    return (s.id, s.term);
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader among {ids:?} within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_the_leader_through_the_proxy_elects_another_and_heal_converges() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        dir: dir.path().to_path_buf(),
        bin: kv_server(),
        extra_args: vec![],
        tls: None,
    };
    let c = Cluster::start(spec).await.unwrap();
    let ids = c.ids();
    let (old, term) = leader_among(&c, &ids, 0).await;
    let client = Client::new(c.endpoints()).unwrap();
    client.put("k", b"before", None).await.unwrap();

    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != old).collect();
    c.net.partition(&ids, &[vec![old], others.clone()]);
    let (new, new_term) = leader_among(&c, &others, term).await;
    assert_ne!(new, old);
    assert!(new_term > term);

    // The old leader is still reachable by clients, but cannot confirm its
    // leadership with a majority: no linearizable read from it.
    let old_addr = c.node(old).unwrap().http_addr.clone();
    let lonely = Client::with_options(vec![old_addr.clone()], quick()).unwrap();
    match lonely.get_from(&old_addr, "k", Consistency::Linearizable).await {
        // Nothing served, though the node was reached: it holds the read
        // while it waits for a majority to confirm its leadership, so the
        // client's attempts time out (or it answers 503 when it gives up).
        // A connection failure would prove nothing about the read path.
        Err(ClientError::Unavailable { reason }) => assert!(
            !reason.contains("cannot connect")
                && (reason.contains("in time") || reason.contains("answered 503")),
            "not a refusal to serve: {reason}"
        ),
        other => panic!("the isolated old leader served a linearizable read: {other:?}"),
    }
    // It was reachable all along: it serves a read from its local state.
    let stale = lonely.get_from(&old_addr, "k", Consistency::Stale).await.unwrap().unwrap();
    assert_eq!(stale.value, b"before");

    let w = Client::new(others.iter().map(|id| c.node(*id).unwrap().http_addr.clone()).collect())
        .unwrap()
        .put("k", b"after", None)
        .await
        .unwrap();

    c.net.heal();
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = status(&old_addr).await;
        if s.as_ref().is_some_and(|s| s.applied_index >= w.index && s.role != "leader") {
            break;
        }
        assert!(Instant::now() < deadline, "the old leader did not rejoin: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = lonely.get_from(&old_addr, "k", Consistency::Stale).await.unwrap().unwrap();
    assert_eq!(r.value, b"after", "the old leader caught up with the new leader's write");
    assert!(c.logs().values().all(|l| !l.contains("panicked at")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_the_harness_through_the_proxies_and_refuses_clients_without_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Credentials::create(&kv_server(), &dir.path().join("tls"), 3).unwrap();
    let spec = ClusterSpec {
        nodes: 3,
        dir: dir.path().join("nodes"),
        bin: kv_server(),
        extra_args: vec![],
        tls: Some(tls.clone()),
    };
    let c = Cluster::start(spec).await.unwrap();
    let endpoints = c.endpoints();

    // Every Raft link runs through a proxy, so a committed write proves
    // that peer TLS passes the proxies; the harness's client, over HTTPS
    // with its certificate and token, got it acknowledged.
    let harness = Http::new(Duration::from_secs(2), Some(&tls)).unwrap();
    let write = Write::Put { key: "k".into(), value: "v".into(), durability: Durability::Majority };
    let deadline = Instant::now() + SETTLE;
    match write_with_retries(&harness, &endpoints, 0, &write, (7, 1), deadline, false).await {
        WriteOutcome::Ok(_) => {}
        other => panic!("the harness could not write over TLS: {other:?}"),
    }
    // The rollback records are an admin request: the harness's token may
    // make it, as it does after every run.
    let records = harness.rollback_list(&endpoints[0]).await.expect("the admin token reads rollback records");
    assert_eq!(records.node, 1);
    let status = harness.status(&endpoints[0]).await.unwrap();
    assert_eq!(status.id, 1);

    // Plain HTTP to the HTTPS port: answered 400, nothing served.
    let plain = Http::new(Duration::from_secs(2), None).unwrap();
    let refused = plain.status(&endpoints[0]).await.unwrap_err();
    assert_eq!(refused.error, kv_client::api::codes::BAD_REQUEST, "{refused:?}");

    // HTTPS with the client certificate but no token: 401.
    let https_only = ClientOptions { tls: Some(tls.client_tls().clone()), ..quick() };
    let no_token = Client::with_options(endpoints.clone(), https_only).unwrap();
    match no_token.get("k", None).await {
        Err(ClientError::Server { status: 401, .. }) => {}
        other => panic!("a client without a token was not refused with 401: {other:?}"),
    }

    // The token without a client certificate: the TLS handshake fails.
    let ca_only = ClientTls::from_pem_files(&tls.dir().join("ca.pem"), None).unwrap();
    let no_cert = ClientOptions { tls: Some(ca_only), ..quick() }.with_token(tls.token().as_str());
    let no_cert = Client::with_options(endpoints.clone(), no_cert).unwrap();
    match no_cert.get("k", None).await {
        Err(ClientError::Tls { reason, .. }) => assert!(reason.contains("client certificate"), "{reason}"),
        other => panic!("a client without a certificate was not refused in the handshake: {other:?}"),
    }

    for (id, log) in c.logs() {
        for line in ["peer TLS on", "HTTPS on", "auth on: loaded 1 tokens"] {
            assert!(log.contains(line), "node {id}'s log does not say {line:?}:\n{log}");
        }
        assert!(!log.contains("panicked at"), "node {id} panicked:\n{log}");
    }
}
