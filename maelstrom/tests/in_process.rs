//! Protocol tests of the lin-kv node without Maelstrom's JVM: N nodes in
//! one process, connected by an in-memory router that plays Maelstrom's
//! network.
//!
//! The router takes each node's outgoing envelopes, renders them as the
//! JSON line the binary would print, checks that line with the input gate
//! (so every line a node writes must be a message maelstrom-node accepts),
//! parses it back with maelstrom-node's own `Message` type, and hands it to
//! the destination node in a task of its own, as maelstrom-node does. It can
//! isolate nodes: messages between an isolated node and any other node are
//! dropped, as in a Maelstrom partition; clients reach every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maelstrom::input::Gate;
use maelstrom::outbox::Outbox;
use maelstrom::protocol::Envelope;
use maelstrom::{LinKvNode, NodeOptions};
use mnode::protocol::Message;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

/// How long a test waits for a client reply. Generous: the machine is busy.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Net {
    isolated: BTreeSet<String>,
    /// Messages dropped by isolation.
    dropped: u64,
    /// Messages delivered between nodes, by body type.
    delivered: BTreeMap<String, u64>,
    /// Every body sent to a client.
    client_bodies: Vec<Map<String, Value>>,
    /// Client calls waiting for their reply, by msg_id.
    waiting: HashMap<u64, oneshot::Sender<Envelope>>,
}

#[derive(Clone)]
struct Cluster {
    nodes: Arc<BTreeMap<String, Arc<LinKvNode>>>,
    net: Arc<Mutex<Net>>,
    next_msg_id: Arc<AtomicU64>,
    /// How long each message between nodes takes (clients: no delay, as
    /// in Maelstrom).
    latency: Duration,
}

impl Cluster {
    /// `n` nodes, not yet initialized, with the default (Maelstrom) options.
    fn new(n: usize) -> Cluster {
        Cluster::with_latency(n, Duration::ZERO)
    }

    /// `n` nodes whose messages to each other take `latency`.
    fn with_latency(n: usize, latency: Duration) -> Cluster {
        Cluster::with_options(n, latency, NodeOptions::default())
    }

    /// `n` nodes with these options.
    fn with_options(n: usize, latency: Duration, options: NodeOptions) -> Cluster {
        let net = Arc::new(Mutex::new(Net::default()));
        let mut nodes = BTreeMap::new();
        let mut outboxes = Vec::new();
        for i in 0..n {
            let (outbox, rx) = Outbox::channel();
            let name = format!("n{i}");
            nodes.insert(name, Arc::new(LinKvNode::new(options.clone(), outbox)));
            outboxes.push(rx);
        }
        let cluster =
            Cluster { nodes: Arc::new(nodes), net, next_msg_id: Arc::new(AtomicU64::new(1)), latency };
        for mut rx in outboxes {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                while let Some(envelope) = rx.recv().await {
                    cluster.route(envelope);
                }
            });
        }
        cluster
    }

    fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    fn node(&self, name: &str) -> &Arc<LinKvNode> {
        &self.nodes[name]
    }

    fn route(&self, envelope: Envelope) {
        let line = envelope.to_line();
        assert!(Gate::new().check(line.as_bytes()).is_ok(), "a node wrote an invalid line: {line}");
        let mut net = self.net.lock().unwrap();
        if envelope.dest.starts_with('c') {
            net.client_bodies.push(envelope.body.clone());
            let id = envelope.body.get("in_reply_to").and_then(Value::as_u64);
            if let Some(tx) = id.and_then(|id| net.waiting.remove(&id)) {
                let _ = tx.send(envelope);
            }
            return;
        }
        if net.isolated.contains(&envelope.src) || net.isolated.contains(&envelope.dest) {
            net.dropped += 1;
            return;
        }
        let typ = envelope.body.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(rpc) = envelope.body.get("rpc").and_then(Value::as_str) {
            *net.delivered.entry(format!("{typ}:{rpc}")).or_default() += 1;
        }
        *net.delivered.entry(typ).or_default() += 1;
        drop(net);
        let msg: Message = serde_json::from_str(&line).expect("gate-checked line parses");
        let node = self.nodes.get(&envelope.dest).expect("message to an unknown node").clone();
        let latency = self.latency;
        tokio::spawn(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            node.handle(msg).await
        });
    }

    async fn init_all(&self) {
        let names = self.names();
        for (name, node) in self.nodes.iter() {
            node.init(name, &names).await.unwrap();
        }
    }

    /// Sends `body` from client `c1` to `node` and returns the reply envelope.
    async fn call(&self, node: &str, mut body: Map<String, Value>) -> Envelope {
        let msg_id = self.next_msg_id.fetch_add(1, Ordering::Relaxed);
        body.insert("msg_id".into(), msg_id.into());
        let (tx, rx) = oneshot::channel();
        self.net.lock().unwrap().waiting.insert(msg_id, tx);
        let line = json!({"src": "c1", "dest": node, "body": body}).to_string();
        let msg: Message = serde_json::from_str(&line).unwrap();
        let target = self.node(node).clone();
        tokio::spawn(async move { target.handle(msg).await });
        let reply = tokio::time::timeout(REPLY_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("no reply to {line} within {REPLY_TIMEOUT:?}"))
            .unwrap();
        assert_eq!(reply.src, node, "the reply comes from the node asked");
        assert_eq!(reply.dest, "c1");
        reply
    }

    async fn read(&self, node: &str, key: Value) -> Map<String, Value> {
        self.call(node, obj(json!({"type": "read", "key": key}))).await.body
    }

    async fn write(&self, node: &str, key: Value, value: Value) -> Map<String, Value> {
        self.call(node, obj(json!({"type": "write", "key": key, "value": value}))).await.body
    }

    async fn cas(&self, node: &str, key: Value, from: Value, to: Value) -> Map<String, Value> {
        self.call(node, obj(json!({"type": "cas", "key": key, "from": from, "to": to}))).await.body
    }

    async fn leader(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let isolated = self.net.lock().unwrap().isolated.clone();
            for (name, node) in self.nodes.iter() {
                if isolated.contains(name) {
                    continue;
                }
                if node.raft().is_some_and(|r| r.is_leader()) {
                    return name.clone();
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn isolate(&self, name: &str) {
        self.net.lock().unwrap().isolated.insert(name.to_string());
    }

    fn heal(&self) {
        self.net.lock().unwrap().isolated.clear();
    }

    fn delivered(&self, typ: &str) -> u64 {
        self.net.lock().unwrap().delivered.get(typ).copied().unwrap_or(0)
    }

    async fn shutdown(&self) {
        for node in self.nodes.values() {
            node.shutdown().await;
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn typ(body: &Map<String, Value>) -> &str {
    body.get("type").and_then(Value::as_str).unwrap_or("")
}

fn code(body: &Map<String, Value>) -> Option<u64> {
    (typ(body) == "error").then(|| body["code"].as_u64().unwrap())
}

/// Every body sent to a client has exactly the keys Maelstrom allows.
fn assert_no_extra_keys(cluster: &Cluster) {
    let net = cluster.net.lock().unwrap();
    assert!(!net.client_bodies.is_empty());
    for body in &net.client_bodies {
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.sort();
        let expected: &[&str] = match typ(body) {
            "read_ok" => &["in_reply_to", "type", "value"],
            "write_ok" | "cas_ok" => &["in_reply_to", "type"],
            "error" => &["code", "in_reply_to", "text", "type"],
            other => panic!("unexpected reply type {other:?} in {body:?}"),
        };
        assert_eq!(keys, expected, "{body:?}");
    }
}

/// Writes through `node` until one succeeds (elections may be under way).
async fn write_until_ok(cluster: &Cluster, node: &str, key: Value, value: Value, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = cluster.write(node, key.clone(), value.clone()).await;
        if typ(&reply) == "write_ok" {
            return;
        }
        assert!(matches!(code(&reply), Some(0 | 11 | 13)), "{reply:?}");
        assert!(
            Instant::now() < deadline,
            "no successful write through {node} within {timeout:?}: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_read_on_every_node_and_followers_forward() {
    let cluster = Cluster::new(3);
    cluster.init_all().await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = cluster.names().into_iter().find(|n| *n != leader).unwrap();

    let reply = cluster.write(&follower, json!(1), json!(10)).await;
    assert_eq!(typ(&reply), "write_ok", "{reply:?}");
    assert!(cluster.delivered("forward") >= 1 && cluster.delivered("forward_reply") >= 1);

    for node in cluster.names() {
        let reply = cluster.read(&node, json!(1)).await;
        assert_eq!(reply.get("value"), Some(&json!(10)), "read at {node}: {reply:?}");
    }
    assert_no_extra_keys(&cluster);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_and_read_error_codes() {
    let cluster = Cluster::new(3);
    cluster.init_all().await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = cluster.names().into_iter().find(|n| *n != leader).unwrap();

    for node in [&leader, &follower] {
        let key = json!(format!("k-{node}"));
        assert_eq!(code(&cluster.read(node, key.clone()).await), Some(20), "read of a missing key");
        assert_eq!(
            code(&cluster.cas(node, key.clone(), json!(0), json!(1)).await),
            Some(20),
            "cas on a missing key"
        );
        assert_eq!(typ(&cluster.write(node, key.clone(), json!(2)).await), "write_ok");
        let mismatch = cluster.cas(node, key.clone(), json!(0), json!(1)).await;
        assert_eq!(code(&mismatch), Some(22), "{mismatch:?}");
        assert_eq!(typ(&cluster.cas(node, key.clone(), json!(2), json!(3)).await), "cas_ok");
        assert_eq!(cluster.read(node, key.clone()).await.get("value"), Some(&json!(3)));
    }

    // Any JSON is a key or a value; equal JSON is the same key.
    let key = json!({"b": 1, "a": [true, null]});
    assert_eq!(typ(&cluster.write(&follower, key.clone(), json!({"v": "x"})).await), "write_ok");
    let same_key = serde_json::from_str::<Value>(r#"{"a":[true,null],"b":1}"#).unwrap();
    assert_eq!(cluster.read(&leader, same_key).await.get("value"), Some(&json!({"v": "x"})));

    // Malformed and unsupported requests.
    assert_eq!(code(&cluster.call(&leader, obj(json!({"type": "write", "key": 1}))).await.body), Some(12));
    assert_eq!(code(&cluster.call(&follower, obj(json!({"type": "echo", "echo": 1}))).await.body), Some(10));
    assert_no_extra_keys(&cluster);
    cluster.shutdown().await;
}

/// Maelstrom may deliver a peer's messages before a node's own init; a
/// client operation then gets 11 (certainly not done), a Raft RPC is
/// refused, and the node works normally once initialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_init_are_answered_and_do_no_harm() {
    let cluster = Cluster::new(1);
    let reply = cluster.read("n0", json!(1)).await;
    assert_eq!(code(&reply), Some(11), "{reply:?}");
    let reply = cluster.write("n0", json!(1), json!(1)).await;
    assert_eq!(code(&reply), Some(11), "{reply:?}");

    cluster.init_all().await;
    cluster.leader(Duration::from_secs(20)).await;
    assert_eq!(typ(&cluster.write("n0", json!(1), json!(5)).await), "write_ok");
    assert_eq!(cluster.read("n0", json!(1)).await.get("value"), Some(&json!(5)));
    assert_no_extra_keys(&cluster);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_rpcs_before_init_are_refused() {
    let (outbox, mut sent) = Outbox::channel();
    let node = LinKvNode::new(NodeOptions::default(), outbox);
    let raft_rpc =
        r#"{"src":"n1","dest":"n0","body":{"type":"raft_rpc","rpc_id":4,"rpc":"Vote","data":"AAAA"}}"#;
    node.handle(serde_json::from_str(raft_rpc).unwrap()).await;
    let answer = sent.recv().await.unwrap();
    assert_eq!((answer.src.as_str(), answer.dest.as_str()), ("n0", "n1"));
    assert_eq!(answer.body["type"], "raft_rpc_refused");
    assert_eq!(answer.body["rpc_id"], 4);

    let forward =
        r#"{"src":"n1","dest":"n0","body":{"type":"forward","rpc_id":5,"op":{"type":"read","key":1}}}"#;
    node.handle(serde_json::from_str(forward).unwrap()).await;
    let answer = sent.recv().await.unwrap();
    assert_eq!(answer.body["type"], "forward_reply");
    assert_eq!(answer.body["reply"]["code"], 11);

    // Malformed peer messages and stray replies are dropped without a word.
    for line in [
        r#"{"src":"n1","dest":"n0","body":{"type":"raft_rpc","rpc_id":"x"}}"#,
        r#"{"src":"n1","dest":"n0","body":{"type":"forward_reply","rpc_id":99,"reply":{}}}"#,
        r#"{"src":"c1","dest":"n0","body":{"type":"read_ok","msg_id":3,"value":1}}"#,
    ] {
        node.handle(serde_json::from_str(line).unwrap()).await;
    }
    assert!(sent.try_recv().is_err());
    assert_eq!(node.pending_calls(), 0);
}

/// Isolating the leader: the others elect a new one and keep serving; the
/// old leader, which may still believe it leads, never serves a stale
/// read; and while its messages are dropped, no node's table of pending
/// requests grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_pending_requests_stay_bounded() {
    let cluster = Cluster::new(3);
    cluster.init_all().await;
    let old = cluster.leader(Duration::from_secs(20)).await;
    let others: Vec<String> = cluster.names().into_iter().filter(|n| *n != old).collect();
    assert_eq!(typ(&cluster.write(&others[0], json!("k"), json!(1)).await), "write_ok");

    cluster.isolate(&old);
    // The others still believe `old` leads, and what they forward to it is
    // lost. They cannot know whether it proposed the write: indefinite (0),
    // never 11. A read never takes effect: 11.
    let (write, read) =
        tokio::join!(cluster.write(&others[0], json!("k"), json!(9)), cluster.read(&others[1], json!("k")));
    assert_eq!(code(&write), Some(0), "{write:?}");
    assert_eq!(code(&read), Some(11), "{read:?}");

    write_until_ok(&cluster, &others[0], json!("k"), json!(2), Duration::from_secs(30)).await;
    let new = cluster.leader(Duration::from_secs(5)).await;
    assert_ne!(new, old);
    assert_eq!(cluster.read(&others[1], json!("k")).await.get("value"), Some(&json!(2)));

    // The old leader cannot confirm its leadership: no stale 1.
    let stale = cluster.read(&old, json!("k")).await;
    assert_eq!(code(&stale), Some(11), "isolated old leader answered {stale:?}");
    let write = cluster.write(&old, json!("k"), json!(3)).await;
    assert!(matches!(code(&write), Some(0 | 11)), "{write:?}");

    // Keep the partition for a while and watch the pending tables: entries
    // must leave on timeout, not accumulate with every dropped message.
    let dropped_before = cluster.net.lock().unwrap().dropped;
    let mut most = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for node in cluster.nodes.values() {
            most = most.max(node.pending_calls());
        }
    }
    let dropped = cluster.net.lock().unwrap().dropped - dropped_before;
    assert!(dropped >= 20, "the partition dropped only {dropped} messages; the test proves nothing");
    assert!(most <= 20, "pending requests reached {most} while {dropped} messages were dropped");

    // Healed, the old leader catches up and serves through the new leader.
    cluster.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = cluster.read(&old, json!("k")).await;
        match reply.get("value") {
            // The old leader's write of 3 never left it, so the new leader's
            // log overwrites it: only 2 can be read.
            Some(v) if *v == json!(2) => break,
            Some(v) => panic!("read {v} after heal; expected 2"),
            None => {
                assert!(matches!(code(&reply), Some(0 | 11)), "{reply:?}");
                assert!(Instant::now() < deadline, "old leader does not serve after heal: {reply:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_no_extra_keys(&cluster);
    cluster.shutdown().await;
}

/// A counter incremented by compare-and-set from several clients while a
/// nemesis isolates random nodes. Every `cas_ok` must be in the final value
/// (no acknowledged write lost across leader changes), and nothing but
/// `cas_ok` and indefinite answers may be (an operation answered 11, 20 or
/// 22 must not have happened):
///
/// `acknowledged <= final value <= acknowledged + indefinite`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_counter_under_partitions_loses_nothing_and_invents_nothing() {
    cas_counter_under_partitions(Duration::ZERO).await;
}

/// The same with 50 ms per message between nodes: the default timeouts
/// must still elect leaders and serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_counter_under_partitions_with_latency() {
    cas_counter_under_partitions(Duration::from_millis(50)).await;
}

async fn cas_counter_under_partitions(latency: Duration) {
    const CLIENTS: usize = 4;
    const RUN: Duration = Duration::from_secs(12);

    let cluster = Cluster::with_latency(3, latency);
    cluster.init_all().await;
    cluster.leader(Duration::from_secs(20)).await;
    write_until_ok(&cluster, "n0", json!("counter"), json!(0), Duration::from_secs(30)).await;

    let deadline = Instant::now() + RUN;
    let nemesis = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let names = cluster.names();
            let mut i = 0;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                cluster.heal();
                if i % 2 == 0 {
                    cluster.isolate(&names[(i / 2) % names.len()]);
                }
                i += 1;
            }
            cluster.heal();
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let cluster = cluster.clone();
            let node = format!("n{}", c % 3);
            tokio::spawn(async move {
                let (mut acknowledged, mut indefinite) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let read = cluster.read(&node, json!("counter")).await;
                    let Some(v) = read.get("value").and_then(Value::as_u64) else {
                        assert_eq!(code(&read), Some(11), "{read:?}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let cas = cluster.cas(&node, json!("counter"), json!(v), json!(v + 1)).await;
                    match (typ(&cas), code(&cas)) {
                        ("cas_ok", _) => acknowledged += 1,
                        (_, Some(0 | 13)) => indefinite += 1,
                        (_, Some(11 | 22)) => {}
                        _ => panic!("unexpected answer to cas: {cas:?}"),
                    }
                }
                (acknowledged, indefinite)
            })
        })
        .collect();
    let (mut acknowledged, mut indefinite) = (0, 0);
    for client in clients {
        let (a, i) = client.await.unwrap();
        acknowledged += a;
        indefinite += i;
    }
    nemesis.await.unwrap();

    // The faults are healed; the cluster must serve the final read, and a
    // cluster that never does fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let final_value = loop {
        let read = cluster.read("n0", json!("counter")).await;
        if let Some(v) = read.get("value").and_then(Value::as_u64) {
            break v;
        }
        assert!(Instant::now() < deadline, "n0 never served the final read of the counter: {read:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(acknowledged >= 5, "only {acknowledged} increments succeeded; the test proves little");
    assert!(
        acknowledged <= final_value && final_value <= acknowledged + indefinite,
        "final {final_value}, acknowledged {acknowledged}, indefinite {indefinite}"
    );
    assert_no_extra_keys(&cluster);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_rejects_bad_names_and_a_second_init() {
    use maelstrom::InitError;
    let (outbox, _sent) = Outbox::channel();
    let node = LinKvNode::new(NodeOptions::default(), outbox);
    let ids = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(matches!(node.init("x1", &ids(&["x1"])).await, Err(InitError::BadNodeName(_))));
    assert!(matches!(node.init("n0", &ids(&["n0", "c1"])).await, Err(InitError::BadNodeName(_))));
    assert!(matches!(node.init("n5", &ids(&["n0", "n1"])).await, Err(InitError::NotAMember(_))));
    assert!(node.name().is_none(), "a failed init leaves the node uninitialized");
    node.init("n0", &ids(&["n0"])).await.unwrap();
    assert_eq!(node.name(), Some("n0"));
    assert!(matches!(node.init("n0", &ids(&["n0"])).await, Err(InitError::AlreadyInitialized(_))));
    node.shutdown().await;
}

/// A follower that missed entries the leader has already purged behind a
/// snapshot catches up by a snapshot, sent in pieces as Maelstrom messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot_over_messages() {
    let mut options = NodeOptions::default();
    options.raft.snapshot_every = 10;
    options.raft.keep_behind_snapshot = 0;
    options.raft.purge_batch = 1;
    let cluster = Cluster::with_options(3, Duration::ZERO, options);
    cluster.init_all().await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let lagging = cluster.names().into_iter().find(|n| *n != leader).unwrap();

    cluster.isolate(&lagging);
    for i in 0..40 {
        let reply = cluster.write(&leader, json!(i % 5), json!(i)).await;
        assert_eq!(typ(&reply), "write_ok", "{reply:?}");
    }
    let leader_raft = cluster.node(&leader).raft().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_raft.metrics().await.purged_index.unwrap_or(0) < 20 {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.heal();
    let target = leader_raft.metrics().await.applied_index;
    let follower_raft = cluster.node(&lagging).raft().unwrap();
    follower_raft.wait_applied(target, Duration::from_secs(30)).await.unwrap();
    assert!(cluster.delivered("raft_rpc:SnapshotChunk") >= 1, "caught up without a snapshot");
    // The follower's own state (read locally, not through the leader).
    let view = follower_raft.view().unwrap();
    for key in 0..5 {
        let value = maelstrom::lin_kv::read(&view, &key.to_string()).unwrap();
        assert_eq!(value, Some(json!(35 + key)), "key {key} on {lagging}");
    }
    cluster.shutdown().await;
}
