//! `raft_core::storage::recovery`, on durable nodes of the in-process
//! transport: a cluster seeded from a state elects a leader and serves that
//! state, and a survivor forced into a cluster of its own keeps every entry
//! it held.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Register, Set};
use raft_core::network::local::LocalRouter;
use raft_core::storage::recovery::{self, RecoveryError};
use raft_core::types::log_id;
use raft_core::{Config, Node, NodeId, RaftNode, Storage};

const WAIT: Duration = Duration::from_secs(20);

fn config() -> Config {
    let mut config = Config::new("recovery");
    config.election_timeout_min = Duration::from_millis(150);
    config.election_timeout_max = Duration::from_millis(300);
    config.heartbeat_interval = Duration::from_millis(50);
    config
}

fn members(ids: &[NodeId]) -> BTreeMap<NodeId, Node> {
    ids.iter().map(|&id| (id, Node::new(format!("n{id}"), ""))).collect()
}

async fn start(router: &LocalRouter, id: NodeId, dir: &Path) -> RaftNode<Register> {
    RaftNode::start_local(id, config(), Storage::Durable(dir.to_path_buf()), Register, router).await.unwrap()
}

/// The node that leads once all of `nodes` agree on one.
async fn leader(nodes: &BTreeMap<NodeId, RaftNode<Register>>) -> NodeId {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for node in nodes.values() {
            seen.push(node.metrics().await.leader);
        }
        if let Some(Some(l)) = seen.first().copied() {
            if seen.iter().all(|s| *s == Some(l)) && nodes[&l].is_leader() {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader within {WAIT:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn get(node: &RaftNode<Register>, key: &str) -> Option<String> {
    node.view().unwrap().get(key.as_bytes()).unwrap().map(|v| String::from_utf8(v).unwrap())
}

async fn write(nodes: &BTreeMap<NodeId, RaftNode<Register>>, key: &str, value: &str) -> u64 {
    let cmd = Set { key: key.into(), value: value.into() };
    common::write_through_leader(nodes, || leader(nodes), &cmd, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_cluster_elects_a_leader_and_serves_the_seeded_state() {
    let tmp = tempfile::tempdir().unwrap();
    let state = vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())];
    let at = log_id(7, 100);
    for id in 1..=3 {
        recovery::seed(&tmp.path().join(format!("n{id}")), id, at, &members(&[1, 2, 3]), state.clone())
            .unwrap();
    }
    assert!(!tmp.path().join(".n1.seeding").exists(), "the staging directory was renamed into place");

    let router = LocalRouter::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&router, id, &tmp.path().join(format!("n{id}"))).await);
    }
    let l = leader(&nodes).await;
    let m = nodes[&l].metrics().await;
    assert!(m.term > 7, "the first election is for a term after the seed's, got {}", m.term);
    assert_eq!(get(&nodes[&l], "a").as_deref(), Some("1"));
    assert_eq!(get(&nodes[&l], "b").as_deref(), Some("2"));
    assert_eq!(m.voters.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3]);

    let index = write(&nodes, "c", "3").await;
    assert!(index > 100, "new entries follow the seeded position, got {index}");
    for node in nodes.values() {
        node.wait_applied(index, WAIT).await.unwrap();
        assert_eq!(get(node, "a").as_deref(), Some("1"));
        assert_eq!(get(node, "c").as_deref(), Some("3"));
    }
    for node in nodes.into_values() {
        node.shutdown_without_handoff().await;
    }
}

#[test]
fn seeding_refuses_a_non_empty_directory_and_a_node_outside_the_members() {
    let tmp = tempfile::tempdir().unwrap();
    let used = tmp.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("keep.txt"), b"mine").unwrap();
    let err = recovery::seed(&used, 1, log_id(1, 5), &members(&[1]), vec![]).unwrap_err();
    assert!(matches!(err, RecoveryError::NotEmpty(_)), "{err}");
    assert_eq!(std::fs::read(used.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&used).unwrap().count(), 1, "nothing was added");

    let fresh = tmp.path().join("fresh");
    let err = recovery::seed(&fresh, 4, log_id(1, 5), &members(&[1, 2, 3]), vec![]).unwrap_err();
    assert!(err.to_string().contains("node 4 is not among the members"), "{err}");
    assert!(!fresh.exists());

    // An empty directory (made by an operator beforehand) is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    recovery::seed(&empty, 1, log_id(1, 5), &members(&[1]), vec![]).unwrap();
    assert!(empty.join(raft_core::storage::db::DB_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_forced_into_a_new_cluster_keeps_every_entry_it_held() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: NodeId| tmp.path().join(format!("n{id}"));
    let router = LocalRouter::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&router, id, &dir(id)).await);
    }
    nodes[&1].initialize(members(&[1, 2, 3])).await.unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = write(&nodes, &format!("k{i}"), &format!("v{i}")).await;
    }
    // The survivor: the leader, which holds every committed entry.
    let survivor = leader(&nodes).await;
    let held = nodes[&survivor].metrics().await.last_log_index;
    assert!(held >= last);
    for node in nodes.into_values() {
        node.shutdown_without_handoff().await;
    }

    let wrong = recovery::force_new_cluster(&dir(survivor), 9).unwrap_err();
    assert!(wrong.to_string().contains("node 9 is not a member"), "{wrong}");
    let forced = recovery::force_new_cluster(&dir(survivor), survivor).unwrap();
    assert_eq!(forced.previous_voters, vec![[1, 2, 3].into()]);
    assert_eq!(forced.last_index, held);
    assert_eq!(forced.membership_entry.map(|l| l.index), Some(held + 1));
    let again = recovery::force_new_cluster(&dir(survivor), survivor).unwrap();
    assert_eq!(again.membership_entry, None, "a second run changes nothing");

    // The others are gone: the survivor alone leads and has everything.
    let router = LocalRouter::new();
    let nodes = BTreeMap::from([(survivor, start(&router, survivor, &dir(survivor)).await)]);
    assert_eq!(leader(&nodes).await, survivor);
    let m = nodes[&survivor].metrics().await;
    assert_eq!(m.voters.iter().copied().collect::<Vec<_>>(), vec![survivor]);
    for i in 0..20 {
        assert_eq!(get(&nodes[&survivor], &format!("k{i}")), Some(format!("v{i}")), "k{i}");
    }
    let index = write(&nodes, "after", "yes").await;
    assert!(index > held + 1);

    // And members join it as they would any cluster.
    let joiner = start(&router, 4, &dir(4)).await;
    nodes[&survivor].add_learner(4, Node::new("n4", "")).await.unwrap();
    nodes[&survivor].promote(4).await.unwrap();
    joiner.wait_applied(index, WAIT).await.unwrap();
    assert_eq!(get(&joiner, "k7").as_deref(), Some("v7"));
    joiner.shutdown_without_handoff().await;
    for node in nodes.into_values() {
        node.shutdown_without_handoff().await;
    }

    let missing = recovery::force_new_cluster(&tmp.path().join("nothing"), 1).unwrap_err();
    assert!(missing.to_string().contains("no data directory here"), "{missing}");
}
