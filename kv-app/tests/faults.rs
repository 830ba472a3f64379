//! `kv-server`'s fault-injection flags on real processes: each breaks the
//! guarantee it says it breaks, and nothing else changes without it (the
//! lease flag's correct twin is in `leases.rs`: a key renewed in time stays,
//! through a failover too). Also
//! `--advertise-raft-addr`, the address a joining node records for itself.
//! (`--unsafe-no-dedup` is checked on the state machine itself, in
//! `state_machine.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::ProcCluster;
use kv_client::api::Consistency;
use reqwest::Method;

/// Writes `value` under `key` on node `id`; panics unless acknowledged.
async fn put(c: &ProcCluster, id: u64, key: &str, value: &str) {
    let body = format!(r#"{{"value":"{value}"}}"#);
    let (status, reply) = c.request(id, Method::PUT, &format!("/v1/kv/{key}"), Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_local_reads_serve_a_stale_linearizable_read() {
    let mut c = ProcCluster::start(3, &[]).await;
    let leader = c.leader().await;
    put(&c, leader, "k", "old").await;
    c.converge(c.status(leader).await.unwrap().last_log_index).await;
    // The next append carries the commit of "old" to the followers (its
    // index is saved with their log), so a restarted follower re-applies it.
    put(&c, leader, "filler", "x").await;
    c.converge(c.status(leader).await.unwrap().last_log_index).await;

    // The lagging node: down while "k" changes, then alone.
    let lagging = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.kill(lagging);
    put(&c, leader, "k", "new").await;
    for id in [1, 2, 3] {
        c.kill(id);
    }

    c.spawn(lagging, &[]);
    c.serving(lagging).await;
    let (status, reply) = c.request(lagging, Method::GET, "/v1/kv/k?consistency=linearizable", None).await;
    assert_ne!(status, 200, "a node without a leader cannot serve a linearizable read: {reply}");
    c.kill(lagging);

    c.spawn(lagging, &["--unsafe-local-reads"]);
    c.serving(lagging).await;
    let (status, reply) = c.request(lagging, Method::GET, "/v1/kv/k?consistency=linearizable", None).await;
    assert_eq!((status, reply["value"].as_str()), (200, Some("old")), "the stale value: {reply}");
}

/// After a kill of every node, openraft lets the old leader resume in its
/// old term without an election, knowing only the commit index it last
/// saved. A linearizable read through it must still see every write it
/// acknowledged before the kill (`raft-core/src/read_index.rs`). Without
/// that guard, the first read after the restart returned the value before
/// the last acknowledged write in most trials (the Jepsen harness found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_with_its_whole_cluster_reads_its_acknowledged_writes() {
    let mut c = ProcCluster::start(3, &[]).await;
    let http = kv_client::tls::http_client_builder(None).build().unwrap();
    let mut value = 0;
    for trial in 0..4 {
        let leader = c.leader().await;
        for _ in 0..30 {
            value += 1;
            put(&c, leader, "x", &value.to_string()).await;
        }
        for id in [1, 2, 3] {
            c.kill(id);
        }
        for id in [1, 2, 3] {
            c.spawn(id, &[]);
        }
        // The first read the old leader answers, as soon as it answers.
        let url = format!("http://{}/v1/kv/x?consistency=linearizable", c.nodes[&leader].http);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let seen = loop {
            assert!(std::time::Instant::now() < deadline, "trial {trial}: node {leader} never answered");
            let answer = http.get(&url).timeout(std::time::Duration::from_secs(2)).send().await;
            if let Ok(resp) = answer {
                if resp.status() == 200 {
                    let body: serde_json::Value = resp.json().await.unwrap();
                    break body["value"].as_str().unwrap().to_string();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        };
        assert_eq!(
            seen,
            value.to_string(),
            "trial {trial}: a read through node {leader} missed an acknowledged write"
        );
    }
}

/// A single node acknowledges a write after its own log append. Returns
/// whether the write is still there after a SIGKILL and a restart.
async fn write_survives_kill(flags: &[&str]) -> bool {
    let mut c = ProcCluster::start(1, flags).await;
    put(&c, 1, "k", "acknowledged").await;
    c.kill(1);
    c.spawn(1, &[]);
    c.leader().await;
    let (status, reply) = c.request(1, Method::GET, "/v1/kv/k", None).await;
    match status {
        200 => true,
        404 => false,
        _ => panic!("unexpected answer {status}: {reply}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_that_loses_unsynced_writes_loses_an_acknowledged_write_only_without_fsync() {
    assert!(
        write_survives_kill(&["--fault-lose-unsynced-writes"]).await,
        "the log fsyncs before acknowledging, so a power-failure-like kill loses nothing acknowledged"
    );
    assert!(
        !write_survives_kill(&["--fault-lose-unsynced-writes", "--unsafe-no-fsync"]).await,
        "acknowledged before fsync, the write is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_registers_the_advertised_raft_address() {
    let mut c = ProcCluster::start(1, &[]).await;
    c.add_node(2);
    // Another name for the same listener: reachable, but not the bind address.
    let port = c.nodes[&2].raft.rsplit_once(':').unwrap().1.to_string();
    let advertised = format!("localhost:{port}");
    let via = c.nodes[&1].http.clone();
    c.spawn(2, &["--join", &via, "--advertise-raft-addr", &advertised]);

    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let (_, members) = c.request(1, Method::GET, "/v1/cluster/members", None).await;
        let node2 = members["members"].as_array().and_then(|m| m.iter().find(|m| m["id"] == 2).cloned());
        if let Some(node2) = node2 {
            assert_eq!(node2["raft_addr"], advertised.as_str(), "{members}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node 2 never joined: {members}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The leader reaches node 2 at the advertised address: it becomes a voter.
    let deadline = std::time::Instant::now() + common::WAIT;
    while !c.status(2).await.is_some_and(|s| s.voters.contains(&2)) {
        assert!(std::time::Instant::now() < deadline, "node 2 was not promoted");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `--unsafe-lease-expire-early`, the Jepsen harness's negative control for
/// leases: the leader ends a lease once half its TTL has passed without a
/// renewal. A correct leader never deletes a leased key before its TTL; this
/// one must, and not before half of it. Both bounds are on the safe side of
/// the timing: the grant was sent after `granted`, and the leader checks
/// four times per minimum election timeout, far within the TTL's other half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_lease_expire_early_deletes_a_leased_key_before_its_ttl() {
    let c = ProcCluster::start(1, &["--unsafe-lease-expire-early"]).await;
    let client = c.client();
    let ttl = Duration::from_secs(10);
    let granted = Instant::now();
    let id = client.lease_grant(ttl).await.unwrap().id;
    client.put_with_lease("owned", b"x", id, None).await.unwrap();
    while client.get("owned", Consistency::Linearizable).await.unwrap().is_some() {
        assert!(granted.elapsed() < ttl, "the key lived out its TTL: the fault changed nothing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(granted.elapsed() >= ttl / 2, "ended before half its TTL: {:?}", granted.elapsed());
    let renewed = client.lease_keep_alive(id).await.unwrap_err();
    assert_eq!(renewed.code(), Some(kv_client::api::codes::LEASE_NOT_FOUND), "{renewed}");
}

/// `--unsafe-lease-never-expire`: the leader never expires a lease. A key
/// whose owner stopped renewing is still there well past its TTL plus the
/// documented bound (one election timeout), where a correct leader must
/// have deleted it; only its owner's revoke removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_lease_never_expire_keeps_a_leased_key_past_its_deadline() {
    // The cluster runs with election timeouts of 1 to 2 s: the deadline is
    // the TTL plus 2 s.
    let c = ProcCluster::start(1, &["--unsafe-lease-never-expire"]).await;
    let client = c.client();
    let ttl = Duration::from_millis(500);
    let id = client.lease_grant(ttl).await.unwrap().id;
    client.put_with_lease("owned", b"x", id, None).await.unwrap();
    tokio::time::sleep(ttl + Duration::from_secs(4)).await;
    let read = client.get("owned", Consistency::Linearizable).await.unwrap();
    assert!(read.is_some(), "the key went: the fault changed nothing");
    assert_eq!(client.lease_revoke(id).await.unwrap().keys_deleted, Some(1));
    assert!(client.get("owned", Consistency::Linearizable).await.unwrap().is_none());
}
