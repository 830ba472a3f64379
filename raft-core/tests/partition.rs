//! Split brain, and why Raft does not suffer from it, on the in-process
//! transport (no sockets, fast and repeatable).
//!
//! The leader of a 3-node cluster is cut off from the others. The two others
//! hold a majority: they elect a new leader in a higher term and go on. The
//! old leader still *believes* it leads, but it can no longer commit
//! anything (no majority acknowledges its entries) and cannot serve a
//! linearizable read (no majority confirms its leadership). When the
//! partition heals it sees the higher term, steps down, and its uncommitted
//! entry is overwritten by the new leader's log.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Register, Set};
use raft_core::network::local::LocalRouter;
use raft_core::{Config, Node, RaftNode, ReadError, Role, Storage, WriteError};

async fn wait_for<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_cannot_commit_or_read_and_steps_down_on_heal() {
    let router = LocalRouter::new();
    let mut config = Config::new("partition-test");
    config.request_timeout = Duration::from_millis(1500);
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let node =
            RaftNode::start_local(id, config.clone(), Storage::InMemory, Register, &router).await.unwrap();
        nodes.insert(id, node);
    }
    let members = (1..=3).map(|id| (id, Node::new(format!("n{id}"), ""))).collect();
    nodes[&1].initialize(members).await.unwrap();
    let old = nodes[&1].wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let set = |k: &str, v: &str| Set { key: k.into(), value: v.into() };
    nodes[&old].write(&set("k", "committed")).await.unwrap();
    let old_term = nodes[&old].metrics().await.term;

    router.isolate(old);
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    wait_for("a new leader among the majority", || async {
        let m = nodes[&others[0]].metrics().await;
        m.leader.is_some_and(|l| l != old) && m.term > old_term
    })
    .await;
    let new = nodes[&others[0]].metrics().await.leader.unwrap();
    nodes[&new].write(&set("k", "from-new-leader")).await.unwrap();

    // The old leader may still think it leads, but nothing it does counts.
    match nodes[&old].write(&set("k", "from-old-leader")).await {
        Err(WriteError::Indeterminate { .. } | WriteError::NotLeader { .. }) => {}
        other => panic!("the isolated leader must not commit: {other:?}"),
    }
    match nodes[&old].read_barrier().await {
        Err(ReadError::NoQuorum | ReadError::Timeout | ReadError::NotLeader { .. }) => {}
        other => panic!("the isolated leader must not serve a linearizable read: {other:?}"),
    }

    router.heal();
    wait_for("the old leader to step down and catch up", || async {
        let m = nodes[&old].metrics().await;
        m.role == Role::Follower
            && m.leader == Some(new)
            && m.applied_index >= nodes[&new].metrics().await.applied_index
    })
    .await;
    let value = nodes[&old].view().unwrap().get(b"k").unwrap();
    assert_eq!(value.as_deref(), Some(&b"from-new-leader"[..]), "the uncommitted entry was overwritten");

    for (_, n) in nodes {
        n.shutdown().await;
    }
}
