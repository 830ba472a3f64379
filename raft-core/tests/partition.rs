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
use raft_core::codec;
use raft_core::network::local::LocalRouter;
use raft_core::storage::rollback::RolledBackPayload;
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

/// A follower cut off from everyone times out again and again, but each
/// time it only asks, with a pre-vote, whether it could win; nobody answers,
/// so it never raises its term. When it comes back, the leader it left is
/// still the leader, in the same term: a node that cannot win an election
/// cannot disturb a healthy cluster either (the Raft thesis §9.6). Without
/// the pre-vote, it would come back with a term raised once per timeout,
/// and the leader would step down on seeing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_and_back_neither_raises_its_term_nor_deposes_the_leader() {
    let router = LocalRouter::new();
    let (nodes, leader) = quick_cluster(&router, "rejoin-test").await;
    let set = Set { key: "k".into(), value: "v".into() };
    let term = nodes[&leader].metrics().await.term;
    let cut = (1..=3).find(|id| *id != leader).unwrap();

    router.isolate(cut);
    // Ten election timeouts and more, alone.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let alone = nodes[&cut].metrics().await;
    assert_eq!(alone.term, term, "a node that could not win a pre-vote kept its term");
    assert_ne!(alone.role, Role::Leader);

    router.heal();
    wait_for("the cut-off follower to catch up", || async {
        nodes[&cut].metrics().await.leader == Some(leader)
            && nodes[&cut].metrics().await.applied_index >= nodes[&leader].metrics().await.applied_index
    })
    .await;
    // Long enough for a disruption to show: several election timeouts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = nodes[&leader].metrics().await;
    assert_eq!((m.role, m.term), (Role::Leader, term), "the leader stayed, in its term");
    nodes[&leader].write(&set).await.unwrap();

    for (_, n) in nodes {
        n.shutdown_without_handoff().await;
    }
}

/// When the leader dies, a follower stands for election once its timeout
/// passes without word from it, and wins: the pre-vote succeeds because the
/// others' leader lease, shorter than any timeout, has run out too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_a_follower_wins_the_next_election() {
    let router = LocalRouter::new();
    let (mut nodes, old) = quick_cluster(&router, "failover-test").await;
    let old_term = nodes[&old].metrics().await.term;
    router.unregister(old);
    nodes.remove(&old).unwrap().shutdown_without_handoff().await;

    let survivor = *nodes.keys().next().unwrap();
    wait_for("a new leader", || async {
        let m = nodes[&survivor].metrics().await;
        m.leader.is_some_and(|l| l != old) && m.term > old_term
    })
    .await;
    let new = nodes[&survivor].metrics().await.leader.unwrap();
    nodes[&new].write(&Set { key: "k".into(), value: "after".into() }).await.unwrap();
    for (_, n) in nodes {
        n.shutdown_without_handoff().await;
    }
}

/// The asynchronous end of the durability trade-off, end to end: a write
/// acknowledged at `leader` durability (durable in the leader's own log,
/// replicated nowhere) while no follower takes entries; the leader is cut
/// off, the others elect a new leader and write on; when the old leader
/// rejoins, its entry is replaced by the new leader's log, so the
/// acknowledged write is lost, and the old leader kept it in a rollback
/// record, flagged as acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_durable_write_lost_in_a_failover_is_kept_in_a_rollback_record() {
    let router = LocalRouter::new();
    let (nodes, old) = quick_cluster(&router, "rollback-test").await;
    let old_term = nodes[&old].metrics().await.term;
    let (logged, new) = lose_a_leader_durable_write(&router, &nodes, old).await;
    nodes[&new].write(&set("after")).await.unwrap();
    rejoin(&router, &nodes, old, new).await;

    let value = nodes[&old].view().unwrap().get(b"k").unwrap();
    assert_eq!(value.as_deref(), Some(&b"after"[..]), "the acknowledged write is gone from the state");
    let records = nodes[&old].rollback_records().await.unwrap();
    let lost: Vec<_> = records.iter().flat_map(|r| &r.entries).filter(|e| e.index == logged.index).collect();
    assert_eq!(lost.len(), 1, "one record of the lost entry: {records:?}");
    assert_eq!((lost[0].term, lost[0].leader_durable), (old_term, true));
    let RolledBackPayload::Commands(commands) = &lost[0].payload else { panic!("not commands: {lost:?}") };
    let decoded: Vec<Set> = commands.iter().map(|c| codec::decode(c).unwrap()).collect();
    assert_eq!(decoded, [set("leader-only")]);
    let record = nodes[&old].rollback_record(records[0].id).await.unwrap();
    assert_eq!(record.as_ref(), Some(&records[0]));
    for f in (1..=3).filter(|id| *id != old) {
        assert!(nodes[&f].rollback_records().await.unwrap().is_empty(), "node {f} never had the entry");
    }
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

/// The same loss, but the old leader returns so far behind that it catches
/// up by installing the new leader's snapshot, which purges its log
/// instead of truncating it: the acknowledged entry still gets a record,
/// marked with the snapshot's index (the snapshot might have held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_durable_write_purged_behind_a_snapshot_is_kept_in_a_rollback_record() {
    let router = LocalRouter::new();
    let mut config = quick_config("rollback-snapshot-test");
    config.snapshot_every = 20;
    config.keep_behind_snapshot = 0;
    config.purge_batch = 1;
    let (nodes, old) = quick_cluster_with(&router, config).await;
    let (logged, new) = lose_a_leader_durable_write(&router, &nodes, old).await;
    for i in 0..60 {
        nodes[&new].write(&set(&format!("after-{i}"))).await.unwrap();
    }
    wait_for("the new leader to purge its log behind a snapshot", || async {
        nodes[&new].metrics().await.purged_index.is_some_and(|p| p > logged.index + 20)
    })
    .await;
    rejoin(&router, &nodes, old, new).await;
    assert!(nodes[&old].metrics().await.snapshot_index.is_some(), "it caught up by snapshot");
    let records = nodes[&old].rollback_records().await.unwrap();
    let lost: Vec<_> = records
        .iter()
        .filter(|r| r.snapshot_through.is_some())
        .flat_map(|r| &r.entries)
        .filter(|e| e.index == logged.index && e.leader_durable)
        .collect();
    assert_eq!(lost.len(), 1, "a record of the purged acknowledged entry: {records:?}");
    let RolledBackPayload::Commands(commands) = &lost[0].payload else { panic!("not commands: {lost:?}") };
    assert_eq!(codec::decode::<Set>(&commands[0]).unwrap(), set("leader-only"));
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

/// A leader cut off from the majority stops taking writes once its lease
/// runs out, a lease after the majority's last acknowledgement (check
/// quorum): the split-brain window of a `leader`-durable write is at most
/// that long, and from then on it reports itself a follower that knows no
/// leader. It serves no linearizable read from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_refuses_writes_once_its_lease_runs_out() {
    let router = LocalRouter::new();
    let (nodes, old) = quick_cluster(&router, "step-down-test").await;
    let lease = raft_core::election::lease(nodes[&old].config());
    router.isolate(old);
    match nodes[&old].read_barrier().await {
        Err(ReadError::NoQuorum | ReadError::Timeout | ReadError::NotLeader { .. }) => {}
        other => panic!("the isolated leader must not serve a linearizable read: {other:?}"),
    }
    tokio::time::sleep(lease + nodes[&old].config().heartbeat_interval * 2).await;
    let set = Set { key: "k".into(), value: "late".into() };
    match nodes[&old].write_logged(&set).await {
        Err(WriteError::NotLeader { .. }) => {}
        other => panic!("past its lease, the isolated leader must refuse, unproposed: {other:?}"),
    }
    match nodes[&old].write(&set).await {
        Err(WriteError::NotLeader { .. }) => {}
        other => panic!("past its lease, the isolated leader must refuse, unproposed: {other:?}"),
    }
    // It no longer reports itself leader (check quorum), nor names one.
    let m = nodes[&old].metrics().await;
    assert_eq!((m.role, m.leader), (Role::Follower, None), "{m:?}");
    assert!(!nodes[&old].is_leader());
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

fn set(value: &str) -> Set {
    Set { key: "k".into(), value: value.into() }
}

/// Makes leader `old` acknowledge `set("leader-only")` at `leader`
/// durability while its followers keep answering heartbeats (so it keeps
/// its lease) but take no entries, as if their disks had stalled; then
/// cuts it off until the others elect a new leader. Returns the write's
/// log id and the new leader.
async fn lose_a_leader_durable_write(
    router: &LocalRouter,
    nodes: &BTreeMap<u64, RaftNode<Register>>,
    old: u64,
) -> (raft_core::LogId, u64) {
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let old_term = nodes[&old].metrics().await.term;
    for f in &others {
        router.stall_replication(old, *f);
    }
    let logged =
        nodes[&old].write_logged(&set("leader-only")).await.expect("acknowledged at leader durability");
    assert!(
        nodes[&old].metrics().await.committed_index < logged.index,
        "acknowledged before any follower had it, so not committed"
    );
    router.isolate(old);
    wait_for("a new leader among the majority", || async {
        let m = nodes[&others[0]].metrics().await;
        m.leader.is_some_and(|l| l != old) && m.term > old_term
    })
    .await;
    (logged, nodes[&others[0]].metrics().await.leader.unwrap())
}

/// Heals the network and waits until `old` follows `new` and has applied
/// everything `new` has.
async fn rejoin(router: &LocalRouter, nodes: &BTreeMap<u64, RaftNode<Register>>, old: u64, new: u64) {
    router.heal();
    wait_for("the old leader to follow the new one and catch up", || async {
        let m = nodes[&old].metrics().await;
        m.leader == Some(new) && m.applied_index >= nodes[&new].metrics().await.applied_index
    })
    .await;
}

/// Three in-process nodes with short timeouts (heartbeat 20 ms, election
/// 100 to 200 ms), a leader, and one write that every node has applied, so
/// that each knows the membership (a node that never received it does not
/// know it is a voter). Returns the nodes and the leader.
async fn quick_cluster(router: &LocalRouter, name: &str) -> (BTreeMap<u64, RaftNode<Register>>, u64) {
    quick_cluster_with(router, quick_config(name)).await
}

fn quick_config(name: &str) -> Config {
    let mut config = Config::new(name);
    config.heartbeat_interval = Duration::from_millis(20);
    config.election_timeout_min = Duration::from_millis(100);
    config.election_timeout_max = Duration::from_millis(200);
    config
}

async fn quick_cluster_with(
    router: &LocalRouter,
    config: Config,
) -> (BTreeMap<u64, RaftNode<Register>>, u64) {
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let node =
            RaftNode::start_local(id, config.clone(), Storage::InMemory, Register, router).await.unwrap();
        nodes.insert(id, node);
    }
    let members = (1..=3).map(|id| (id, Node::new(format!("n{id}"), ""))).collect();
    nodes[&1].initialize(members).await.unwrap();
    let leader = nodes[&1].wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let set = Set { key: "k".into(), value: "before".into() };
    let index = nodes[&leader].write(&set).await.unwrap().log_id.index;
    for node in nodes.values() {
        node.wait_applied(index, Duration::from_secs(10)).await.unwrap();
    }
    (nodes, leader)
}
