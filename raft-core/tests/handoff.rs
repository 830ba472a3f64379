//! Leadership handoff on a graceful stop, on the in-process transport.
//!
//! A leader that stops hands its office to a caught-up voter first
//! (`raft_core::handoff`). These clusters run with an election timeout of
//! 30 to 60 seconds: no follower campaigns on its own while a test runs, so
//! a leader that exists within [`WAIT`] (20 s) of the old one's stop can
//! only have been made by the handoff. Without it, nobody would lead then.
//! The tests assert who leads and in which term, never how fast.
//!
//! Each test stops its remaining nodes without a handoff: with such long
//! timeouts, a handoff to a node stopped a moment earlier would wait out
//! its whole bound (an election timeout).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{Register, Set};
use raft_core::network::local::LocalRouter;
use raft_core::{
    AppState, ApplyContext, Config, Node, NodeId, RaftNode, Role, StateError, StateMachine, Storage,
    TransferError, WriteError,
};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(20);

/// A configuration under which nothing but a handoff (or `campaign`) makes
/// a leader while a test runs.
fn patient(cluster: &str) -> Config {
    let mut config = Config::new(cluster);
    config.election_timeout_min = Duration::from_secs(30);
    config.election_timeout_max = Duration::from_secs(60);
    config
}

/// Starts `n` in-process nodes running `app()`, and makes node 1 leader.
async fn start<A: StateMachine>(
    router: &LocalRouter,
    config: &Config,
    n: u64,
    app: impl Fn() -> A,
) -> BTreeMap<NodeId, RaftNode<A>> {
    let mut nodes = BTreeMap::new();
    for id in 1..=n {
        let node = RaftNode::start_local(id, config.clone(), Storage::InMemory, app(), router).await.unwrap();
        nodes.insert(id, node);
    }
    let members = (1..=n).map(|id| (id, Node::new(format!("n{id}"), ""))).collect();
    nodes[&1].initialize(members).await.unwrap();
    nodes[&1].campaign().await.unwrap();
    wait_for("node 1 to lead", || async { nodes[&1].is_leader() }).await;
    nodes
}

async fn wait_for<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, f: F) {
    let deadline = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn set(key: &str, value: &str) -> Set {
    Set { key: key.into(), value: value.into() }
}

/// The nodes that say they lead, with their terms, once one does: the old
/// leader has seen its successor's first AppendEntries when the handoff
/// returns, but the successor may publish its own metrics a moment later.
async fn leaders<A: StateMachine>(nodes: &BTreeMap<NodeId, RaftNode<A>>) -> Vec<(NodeId, u64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut found = Vec::new();
        for (id, node) in nodes {
            let m = node.metrics().await;
            if m.role == Role::Leader {
                found.push((*id, m.term));
            }
        }
        if !found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stop_all<A: StateMachine>(nodes: BTreeMap<NodeId, RaftNode<A>>) {
    for (_, n) in nodes {
        n.shutdown_without_handoff().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_off_and_its_successor_leads_the_next_term_at_once() {
    let router = LocalRouter::new();
    let mut nodes = start(&router, &patient("handoff-stop"), 3, || Register).await;
    for i in 0..20 {
        nodes[&1].write(&set(&format!("k{i}"), "before")).await.unwrap();
    }
    let old_term = nodes[&1].metrics().await.term;

    nodes.remove(&1).unwrap().shutdown().await;

    // Long before any follower's election timer could expire.
    let found = leaders(&nodes).await;
    let [(new, term)] = found[..] else {
        panic!("expected one leader right after the handoff, found {found:?}")
    };
    assert_eq!(term, old_term + 1, "the successor won the very next term: no second election");
    // The other survivor follows it in that term, and nothing was lost.
    let written = nodes[&new].write(&set("after", "handoff")).await.unwrap();
    let other = *nodes.keys().find(|id| **id != new).unwrap();
    nodes[&other].wait_applied(written.log_id.index, WAIT).await.unwrap();
    let m = nodes[&other].metrics().await;
    assert_eq!((m.term, m.leader, m.role), (old_term + 1, Some(new), Role::Follower));
    let view = nodes[&other].view().unwrap();
    for i in 0..20 {
        assert!(view.get(format!("k{i}").as_bytes()).unwrap().is_some(), "write k{i} lost in the handoff");
    }
    drop(view);
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_a_named_voter_makes_it_leader_and_redirects_writes_there() {
    let router = LocalRouter::new();
    let nodes = start(&router, &patient("handoff-named"), 3, || Register).await;
    nodes[&1].write(&set("k", "v")).await.unwrap();
    let old_term = nodes[&1].metrics().await.term;

    // Refusals first: each leaves node 1 leading.
    assert_eq!(nodes[&1].transfer_leadership(Some(9)).await, Err(TransferError::NotAVoter(9)));
    match nodes[&2].transfer_leadership(Some(3)).await {
        Err(TransferError::NotLeader { leader: Some(hint) }) => assert_eq!(hint.id, 1),
        other => panic!("a follower cannot hand off: {other:?}"),
    }
    assert_eq!(nodes[&1].transfer_leadership(Some(1)).await, Ok(1), "the leader already leads");
    assert!(nodes[&1].is_leader());

    assert_eq!(nodes[&1].transfer_leadership(Some(3)).await, Ok(3));
    assert_eq!(leaders(&nodes).await, [(3, old_term + 1)]);
    let old = nodes[&1].metrics().await;
    assert_eq!((old.role, old.leader), (Role::Follower, Some(3)));
    // A write to the old leader is refused unproposed, naming the new one.
    match nodes[&1].write(&set("k", "w")).await {
        Err(WriteError::NotLeader { leader: Some(hint) }) => assert_eq!(hint.id, 3),
        other => panic!("expected a redirect to node 3, got {other:?}"),
    }
    nodes[&3].write(&set("k", "w")).await.unwrap();
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_passes_over_a_lagging_follower_for_the_caught_up_one() {
    let router = LocalRouter::new();
    let mut nodes = start(&router, &patient("handoff-lagging"), 3, || Register).await;
    // Node 2 keeps answering heartbeats but receives no entries: it lags.
    // It has the lower id, so a choice that ignored the log would take it.
    router.stall_replication(1, 2);
    let mut last = 0;
    for i in 0..20 {
        last = nodes[&1].write(&set(&format!("k{i}"), "v")).await.unwrap().log_id.index;
    }
    let m = nodes[&1].metrics().await;
    assert!(m.matched[&2] < Some(last) && m.matched[&3] >= Some(last), "node 2 lags, node 3 does not: {m:?}");
    let old_term = m.term;

    nodes.remove(&1).unwrap().shutdown().await;

    assert_eq!(leaders(&nodes).await, [(3, old_term + 1)], "node 3, caught up, took over at once");
    // Node 2 catches up from its new leader.
    let written = nodes[&3].write(&set("after", "handoff")).await.unwrap();
    nodes[&2].wait_applied(written.log_id.index, WAIT).await.unwrap();
    assert_eq!(nodes[&2].metrics().await.leader, Some(3));
    router.heal();
    stop_all(nodes).await;
}

/// A client's write, deduplicated by (client, seq) as a real application's
/// sessions do: a retry of an applied write is answered without applying.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    client: u64,
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Applied {
    /// Applied now.
    Now,
    /// An earlier attempt applied it.
    Earlier,
}

/// Per client: the last seq applied, and one record per applied seq with
/// the number of times it was applied.
struct Journal;

impl StateMachine for Journal {
    type Command = Step;
    type Response = Applied;

    fn apply(&self, state: &mut AppState<'_>, _ctx: ApplyContext, s: Step) -> Result<Applied, StateError> {
        let last_key = format!("last/{}", s.client);
        let last: u64 =
            state.get(last_key.as_bytes())?.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap());
        if s.seq <= last {
            return Ok(Applied::Earlier);
        }
        state.insert(last_key.as_bytes(), s.seq.to_string().as_bytes())?;
        let entry = format!("entry/{}/{:06}", s.client, s.seq);
        let times: u64 =
            state.get(entry.as_bytes())?.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap());
        state.insert(entry.as_bytes(), (times + 1).to_string().as_bytes())?;
        Ok(Applied::Now)
    }
}

type Shared = Arc<RwLock<BTreeMap<NodeId, Arc<RaftNode<Journal>>>>>;

/// The node to send the next attempt to: `hint` if it is running, else
/// whichever running node knows a running leader, else any running node.
fn route(nodes: &Shared, hint: Option<NodeId>) -> Arc<RaftNode<Journal>> {
    let nodes = nodes.read().unwrap();
    if let Some(node) = hint.and_then(|id| nodes.get(&id)) {
        return node.clone();
    }
    let known = nodes.values().find_map(|n| n.leader_hint().and_then(|h| nodes.get(&h.id)));
    known.unwrap_or_else(|| nodes.values().next().unwrap()).clone()
}

/// One client: writes seq 1..=n in order, retrying each under the same seq
/// until it is acknowledged. Returns how many answers said "applied by an
/// earlier attempt". Panics if such an attempt was only ever refused as not
/// proposed: `NotLeader` must mean the write did not happen.
async fn client(nodes: Shared, client: u64, n: u64, acked: Arc<std::sync::atomic::AtomicU64>) -> u64 {
    let mut earlier = 0;
    let mut hint = None;
    for seq in 1..=n {
        let mut maybe_applied = false;
        let deadline = Instant::now() + WAIT;
        loop {
            let node = route(&nodes, hint);
            match node.write(&Step { client, seq }).await {
                Ok(w) => {
                    if w.response == Applied::Earlier {
                        assert!(
                            maybe_applied,
                            "client {client} seq {seq}: refused as not proposed, yet applied"
                        );
                        earlier += 1;
                    }
                    break;
                }
                Err(WriteError::NotLeader { leader }) => hint = leader.map(|l| l.id),
                Err(WriteError::Indeterminate { leader, .. }) => {
                    maybe_applied = true;
                    hint = leader.map(|l| l.id);
                }
                Err(WriteError::ShuttingDown) => hint = None,
                Err(e) => panic!("client {client} seq {seq}: {e}"),
            }
            assert!(Instant::now() < deadline, "client {client} seq {seq} not acknowledged within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    earlier
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_flight_during_a_handoff_are_applied_exactly_once() {
    const CLIENTS: u64 = 4;
    const WRITES: u64 = 60;
    let router = LocalRouter::new();
    let started = start(&router, &patient("handoff-sessions"), 3, || Journal).await;
    let nodes: Shared = Arc::new(RwLock::new(started.into_iter().map(|(id, n)| (id, Arc::new(n))).collect()));
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> =
        (1..=CLIENTS).map(|c| tokio::spawn(client(nodes.clone(), c, WRITES, acked.clone()))).collect();

    // Hand off while the clients are writing, then stop the old leader as
    // a server does.
    wait_for("a quarter of the writes", || async {
        acked.load(std::sync::atomic::Ordering::Relaxed) >= CLIENTS * WRITES / 4
    })
    .await;
    let old = nodes.read().unwrap()[&1].clone();
    let old_term = old.metrics().await.term;
    let new = old.transfer_leadership(None).await.unwrap();
    assert_ne!(new, 1);
    nodes.write().unwrap().remove(&1);
    let deadline = Instant::now() + WAIT;
    let mut old = old;
    let old = loop {
        // A client may hold the old node for one more (refused) attempt.
        match Arc::try_unwrap(old) {
            Ok(node) => break node,
            Err(still_shared) => old = still_shared,
        }
        assert!(Instant::now() < deadline, "clients keep using the stopped leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    old.shutdown_without_handoff().await;

    let mut retried_after_applying = 0;
    for c in clients {
        retried_after_applying += c.await.unwrap();
    }
    let nodes: BTreeMap<NodeId, RaftNode<Journal>> = std::mem::take(&mut *nodes.write().unwrap())
        .into_iter()
        .map(|(id, n)| (id, Arc::try_unwrap(n).ok().expect("the clients are done")))
        .collect();
    let leader = &nodes[&new];
    assert_eq!(leader.metrics().await.term, old_term + 1);
    leader.read_barrier().await.unwrap();
    let view = leader.view().unwrap();
    for c in 1..=CLIENTS {
        for seq in 1..=WRITES {
            let entry = view.get(format!("entry/{c}/{seq:06}").as_bytes()).unwrap();
            assert_eq!(entry.as_deref(), Some(&b"1"[..]), "client {c} seq {seq}: applied {entry:?} times");
        }
        assert_eq!(view.get(format!("last/{c}").as_bytes()).unwrap(), Some(WRITES.to_string().into_bytes()));
    }
    drop(view);
    println!("{retried_after_applying} retries were answered as applied by an earlier attempt");
    stop_all(nodes).await;
}
