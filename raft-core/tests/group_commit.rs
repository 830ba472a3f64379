//! Group commit: concurrent writes share log entries, and each still gets
//! its own response.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Register, Set};
use raft_core::network::local::LocalRouter;
use raft_core::{Config, Node, RaftNode, Storage};

type Nodes = Arc<BTreeMap<u64, RaftNode<Register>>>;

/// A 3-node in-process cluster with a leader; the router must outlive it.
async fn three_nodes(cluster: &str) -> (LocalRouter, Nodes, u64) {
    let router = LocalRouter::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let node = RaftNode::start_local(id, Config::new(cluster), Storage::InMemory, Register, &router)
            .await
            .unwrap();
        nodes.insert(id, node);
    }
    let members = (1..=3).map(|id| (id, Node::new(format!("n{id}"), ""))).collect();
    nodes[&1].initialize(members).await.unwrap();
    let leader = nodes[&1].wait_for_leader(Duration::from_secs(10)).await.unwrap();
    (router, Arc::new(nodes), leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_own_responses() {
    let (_router, nodes, leader) = three_nodes("group-commit").await;

    let writers = 200;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            let first =
                nodes[&leader].write(&Set { key: key.clone(), value: format!("first-{i}") }).await.unwrap();
            let second = nodes[&leader].write(&Set { key, value: format!("second-{i}") }).await.unwrap();
            assert_eq!(first.response, None, "writer {i}: a new key has no previous value");
            assert_eq!(
                second.response,
                Some(format!("first-{i}")),
                "writer {i} got another writer's response"
            );
            [first.log_id.index, second.log_id.index]
        }));
    }
    let mut indexes = BTreeSet::new();
    for t in tasks {
        indexes.extend(t.await.unwrap());
    }
    assert!(
        indexes.len() < 2 * writers / 2,
        "{} writes used {} log entries: concurrent writes were not batched",
        2 * writers,
        indexes.len()
    );
    for (_, n) in Arc::into_inner(nodes).unwrap() {
        n.shutdown().await;
    }
}

/// Linearizable reads are batched the same way: concurrent read barriers
/// share quorum rounds, and each still reflects every write acknowledged
/// before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_quorum_rounds_and_see_earlier_writes() {
    let (_router, nodes, leader) = three_nodes("read-batch").await;

    let readers = 64;
    let rounds_before = nodes[&leader].read_index_rounds();
    let mut tasks = Vec::new();
    for i in 0..readers {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let key = format!("r{i}");
                let w =
                    nodes[&leader].write(&Set { key: key.clone(), value: format!("{round}") }).await.unwrap();
                let index = nodes[&leader].read_barrier().await.unwrap();
                assert!(index >= w.log_id.index, "reader {i}: read index {index} is before its own write");
                let view = nodes[&leader].view().unwrap();
                assert_eq!(view.get(key.as_bytes()).unwrap().as_deref(), Some(format!("{round}").as_bytes()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rounds = nodes[&leader].read_index_rounds() - rounds_before;
    assert!(rounds < readers * 5, "{} reads took {rounds} quorum rounds: no batching", readers * 5);
}
