//! A live cluster under a stream of garbage: three `kv-server` processes
//! receive 10,600 damaged or random connections on their Raft ports and
//! HTTP ports, a few at a time, while they serve a cluster. The HTTP
//! garbage covers the key routes, the lease routes and the change stream;
//! among it are watches (`GET /v1/watch`) with drawn parameters, which
//! must stream exactly when their parameters are valid; those that stream
//! are held open for a drawn time, read or not, and dropped mid-stream,
//! many at once.
//!
//! What must hold afterwards: every process still runs, no node logged a
//! panic, no HTTP request got a 500, the cluster still takes a write and
//! serves a linearizable read, the membership is unchanged, and the keys
//! written before the garbage still hold their values. No watch is left
//! counted (`kv_watches` on `/metrics` returns to 0 on every node once the
//! fuzzer's streams are gone), and watches still work: many opened at once
//! on every node are each counted, each delivers a put, and once dropped
//! the count is 0 again.
//!
//! That last check is meaningful only if no request among the garbage can
//! change those keys, so none can: every HTTP request is made harmless
//! (`common/fuzz.rs`: no write may name a known key or a cluster endpoint),
//! and no Raft-port frame sent after a valid handshake decodes as a request
//! (checked before sending; a decodable request from an accepted peer is
//! trusted by design, see `raft-core/src/network/tcp/mod.rs`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fuzz::{self, Answer, Verdict, KNOWN_PREFIX};
use common::mutate::mutated;
use common::{ProcCluster, WAIT};
use kv_client::api::{Consistency, WatchOp};
use kv_client::client::{Client, WatchOptions};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use raft_core::codec;
use raft_core::network::frame::{encode_frame, write_handshake, Handshake, RequestFrame};
use raft_core::network::RpcRequest;
use raft_core::types::Vote;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Raft-port connections, spread over the three nodes.
const RAFT_CONNECTIONS: usize = 6_000;
/// HTTP requests, spread over the three nodes.
const HTTP_REQUESTS: usize = 4_000;
/// Watch requests with drawn parameters, spread over the three nodes.
const WATCHES: usize = 600;
/// The longest the fuzzer holds a watch that streams before dropping it.
const MAX_HOLD: Duration = Duration::from_millis(500);
/// `--watch-progress-ms` of the nodes. A watch whose connection was to
/// close after its answer (`Connection: close`, as the fuzzer sends) learns
/// that its client went away only when it next writes, a progress line if
/// nothing else: a short interval keeps the wait for `kv_watches` to come
/// back to 0 short.
const WATCH_PROGRESS_MS: &str = "1000";
/// Watches opened at once on each node after the garbage.
const WATCHERS_PER_NODE: usize = 30;
/// Connections open at once: a modest rate, so that the nodes keep their
/// heartbeats on two shared cores.
const CONCURRENCY: usize = 12;
/// How long a node may take to answer or close one connection.
const PATIENCE: Duration = Duration::from_secs(10);
const KNOWN_KEYS: usize = 10;

/// Where one piece of garbage goes.
enum Shot {
    Raft(SocketAddr, Vec<u8>),
    Http(SocketAddr, fuzz::RawRequest),
    /// A watch query, and if it streams, how long to hold it and whether
    /// to read it meanwhile.
    Watch(SocketAddr, fuzz::WatchQuery, Duration, bool),
}

/// A valid handshake to node `to`, as `from` would send it.
async fn handshake(from: u64, to: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    write_handshake(&mut wire, &Handshake::new("kv", from, to)).await.unwrap();
    wire
}

/// Whether any frame in `bytes` (read from the start) decodes as a request.
fn holds_a_request(mut bytes: &[u8]) -> bool {
    while let Some((prefix, rest)) = bytes.split_first_chunk::<4>() {
        let Some((payload, rest)) = rest.split_at_checked(u32::from_be_bytes(*prefix) as usize) else {
            return false;
        };
        if codec::decode::<RequestFrame>(payload).is_ok() {
            return true;
        }
        bytes = rest;
    }
    false
}

/// Bytes for a node's Raft port, given a valid handshake `hs` to it: the
/// handshake damaged; the handshake, then damaged frames or garbage that
/// decode as no request; or plain garbage.
fn raft_bytes(hs: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let heartbeat = RequestFrame {
        id: 1,
        rpc: RpcRequest::Vote(openraft::raft::VoteRequest::new(Vote::new(1, 99), None)),
    };
    let frame = encode_frame(&heartbeat, 1 << 20).unwrap();
    let after_handshake = prop_oneof![
        mutated(vec![frame]),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|p| [&(p.len() as u32).to_be_bytes()[..], &p].concat()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
    .prop_filter("decodes as a request", |b| !holds_a_request(b));
    let hs2 = hs.clone();
    prop_oneof![
        mutated(vec![hs]),
        after_handshake.prop_map(move |b| [&hs2[..], &b].concat()),
        prop::collection::vec(any::<u8>(), 0..128),
    ]
}

/// Sends `bytes`, closes the sending half, and waits for the node to
/// close the connection.
async fn send_raft(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut sink = Vec::new();
    let closed = timeout(PATIENCE, stream.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "node at {addr} kept a garbage connection open");
}

/// Sends a drawn watch query and checks the answer against what its
/// parameters call for; a stream is handed to a task that holds it for
/// `hold` (reading it, or not) and then drops it mid-stream.
async fn send_watch(
    addr: SocketAddr,
    query: &fuzz::WatchQuery,
    hold: Duration,
    read: bool,
    holders: &Mutex<Vec<tokio::task::JoinHandle<()>>>,
) -> String {
    let verdict = fuzz::watch_verdict(&query.pairs);
    let (answer, conn) = fuzz::open(addr, &query.request(), PATIENCE).await;
    let shown = format!("{} for {:?} ({verdict:?})", answer.shown(), query.encoded);
    match (&verdict, &answer, conn) {
        (Verdict::Streams { .. }, Answer::Stream(200, _), Some(mut conn)) => {
            holders.lock().unwrap().push(tokio::spawn(async move {
                let mut sink = vec![0; 4096];
                let _ = timeout(hold, async {
                    while read && matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                    std::future::pending::<()>().await
                })
                .await;
            }));
            "stream".into()
        }
        (Verdict::Streams { from_index: Some(_) }, Answer::Status(410, _), _) => "410".into(),
        (Verdict::BadRequest, Answer::Status(400, _), _) => "400".into(),
        _ => panic!("{shown}"),
    }
}

/// `kv_watches` on node `id`'s `/metrics`: watches open there now.
async fn open_watches(c: &ProcCluster, id: u64) -> i64 {
    let (status, body) = c.request(id, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().unwrap();
    let line = text.lines().find(|l| l.starts_with("kv_watches ")).expect("kv_watches on /metrics");
    line["kv_watches ".len()..].parse().unwrap()
}

/// Waits until every node counts `n` open watches; fails after [`WAIT`].
async fn wait_open_watches(c: &ProcCluster, n: i64, when: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    for id in c.nodes.keys().copied() {
        loop {
            let open = open_watches(c, id).await;
            if open == n {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {id} counts {open} open watches {when}, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_garbage_on_every_port() {
    let c = ProcCluster::start(3, &["--watch-progress-ms", WATCH_PROGRESS_MS]).await;
    let client = c.client();
    for i in 0..KNOWN_KEYS {
        client.put(&format!("{KNOWN_PREFIX}{i}"), format!("value-{i}").as_bytes(), None).await.unwrap();
    }

    // Draw all the garbage first; the two kinds interleaved, each node in
    // turn.
    let mut runner = TestRunner::default();
    let nodes: Vec<_> = c.nodes.values().collect();
    let mut raft = Vec::new();
    for n in &nodes {
        raft.push((n.raft.parse().unwrap(), raft_bytes(handshake(99, n.id).await)));
    }
    let http = fuzz::request();
    let watch = (fuzz::watch_query(), 0..MAX_HOLD.as_millis() as u64, any::<bool>());
    let counts = [RAFT_CONNECTIONS, HTTP_REQUESTS, WATCHES];
    let total: usize = counts.iter().sum();
    let mut made = [0; 3];
    let shots: Vec<Shot> = (0..total)
        .map(|i| {
            let n = i % nodes.len();
            let addr = nodes[n].http.parse().unwrap();
            // Each kind spread evenly over the run: the one furthest behind
            // its share goes next.
            let kind = (0..3).filter(|&k| made[k] < counts[k]).min_by_key(|&k| made[k] * total / counts[k]);
            let kind = kind.expect("shots are left while i < total");
            made[kind] += 1;
            match kind {
                0 => Shot::Raft(raft[n].0, raft[n].1.new_tree(&mut runner).unwrap().current()),
                1 => Shot::Http(addr, http.new_tree(&mut runner).unwrap().current()),
                _ => {
                    let (query, hold_ms, read) = watch.new_tree(&mut runner).unwrap().current();
                    Shot::Watch(addr, query, Duration::from_millis(hold_ms), read)
                }
            }
        })
        .collect();

    let queue = Arc::new(Mutex::new(shots));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let holders = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (queue, statuses, sent, holders) =
            (queue.clone(), statuses.clone(), sent.clone(), holders.clone());
        workers.spawn(async move {
            loop {
                let Some(shot) = queue.lock().unwrap().pop() else { return };
                match shot {
                    Shot::Raft(addr, bytes) => send_raft(addr, &bytes).await,
                    Shot::Http(addr, req) => {
                        let answer = fuzz::send(addr, &req.to_bytes(), PATIENCE).await;
                        let label = match &answer {
                            Answer::Status(s, _) => s.to_string(),
                            Answer::Stream(s, _) => format!("stream {s}"),
                            Answer::Closed => "closed".into(),
                        };
                        if let Answer::Status(500, body) = &answer {
                            panic!(
                                "500 for {:?}: {}",
                                String::from_utf8_lossy(&req.to_bytes()),
                                String::from_utf8_lossy(body)
                            );
                        }
                        *statuses.lock().unwrap().entry(label).or_default() += 1;
                    }
                    Shot::Watch(addr, query, hold, read) => {
                        let label = send_watch(addr, &query, hold, read, &holders).await;
                        *statuses.lock().unwrap().entry(format!("watch {label}")).or_default() += 1;
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    assert_eq!(sent.load(Ordering::Relaxed), total);
    let held = std::mem::take(&mut *holders.lock().unwrap());
    for holder in held {
        holder.await.unwrap();
    }
    println!("HTTP answers by status: {:?}", statuses.lock().unwrap());

    let mut c = c;
    for n in c.nodes.values_mut() {
        let child = n.child.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "node {} exited", n.id);
        let log = std::fs::read_to_string(n.dir.join("server.log")).unwrap();
        assert!(!log.contains("panicked"), "node {} logged a panic:\n{log}", n.id);
    }

    let client = c.client();
    client.put("after-garbage", b"ok", None).await.unwrap();
    let read = client.get("after-garbage", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.map(|r| r.value), Some(b"ok".to_vec()));
    for i in 0..KNOWN_KEYS {
        let key = format!("{KNOWN_PREFIX}{i}");
        let read = client.get(&key, Consistency::Linearizable).await.unwrap();
        assert_eq!(read.map(|r| r.value), Some(format!("value-{i}").into_bytes()), "{key} changed");
    }
    let members = client.members().await.unwrap();
    let voters: BTreeSet<u64> = members.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]), "the membership changed");

    // Every watch the fuzzer opened is gone, and so is its count.
    wait_open_watches(&c, 0, "after the fuzzer dropped its watches").await;
    // Many watches at once on every node: each counted, each delivers.
    let mut watches = Vec::new();
    for n in c.nodes.values() {
        let node = Client::new(vec![n.http.clone()]).unwrap();
        let opened = futures::future::join_all(
            (0..WATCHERS_PER_NODE)
                .map(|_| node.watch("burst/", WatchOptions { prev: true, ..Default::default() })),
        )
        .await;
        watches.extend(opened.into_iter().map(Result::unwrap));
    }
    wait_open_watches(&c, WATCHERS_PER_NODE as i64, "with the watches open").await;
    let index = client.put("burst/k", b"v", None).await.unwrap().index;
    let events = timeout(WAIT, futures::future::join_all(watches.iter_mut().map(|w| w.next()))).await;
    for event in events.expect("every watch delivers the put") {
        let event = event.unwrap();
        assert_eq!(
            (event.index, event.op, event.key.as_str(), event.value, event.prev_value),
            (index, WatchOp::Put, "burst/k", Some(b"v".to_vec()), Some(None))
        );
    }
    drop(watches);
    wait_open_watches(&c, 0, "after the watches were dropped").await;
}
