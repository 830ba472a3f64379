//! A live cluster under a stream of garbage: three `kv-server` processes
//! receive 10,000 damaged or random connections on their Raft ports and
//! HTTP ports, a few at a time, while they serve a cluster.
//!
//! What must hold afterwards: every process still runs, no node logged a
//! panic, no HTTP request got a 500, the cluster still takes a write and
//! serves a linearizable read, the membership is unchanged, and the keys
//! written before the garbage still hold their values.
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

use common::fuzz::{self, Answer, KNOWN_PREFIX};
use common::mutate::mutated;
use common::ProcCluster;
use kv_client::api::Consistency;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use raft_core::codec;
use raft_core::network::frame::{encode_frame, write_handshake, Handshake, RequestFrame};
use raft_core::network::RpcRequest;
use raft_core::types::Vote;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Raft-port connections, spread over the three nodes.
const RAFT_CONNECTIONS: usize = 6_000;
/// HTTP requests, spread over the three nodes.
const HTTP_REQUESTS: usize = 4_000;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_garbage_on_every_port() {
    let c = ProcCluster::start(3, &[]).await;
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
    let total = RAFT_CONNECTIONS + HTTP_REQUESTS;
    let shots: Vec<Shot> = (0..total)
        .map(|i| {
            let n = i % nodes.len();
            if i * HTTP_REQUESTS % total < HTTP_REQUESTS {
                Shot::Http(nodes[n].http.parse().unwrap(), http.new_tree(&mut runner).unwrap().current())
            } else {
                Shot::Raft(raft[n].0, raft[n].1.new_tree(&mut runner).unwrap().current())
            }
        })
        .collect();

    let queue = Arc::new(Mutex::new(shots));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (queue, statuses, sent) = (queue.clone(), statuses.clone(), sent.clone());
        workers.spawn(async move {
            loop {
                let Some(shot) = queue.lock().unwrap().pop() else { return };
                match shot {
                    Shot::Raft(addr, bytes) => send_raft(addr, &bytes).await,
                    Shot::Http(addr, req) => {
                        let answer = fuzz::send(addr, &req.to_bytes(), PATIENCE).await;
                        let label = match &answer {
                            Answer::Status(s, _) => s.to_string(),
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
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    assert_eq!(sent.load(Ordering::Relaxed), RAFT_CONNECTIONS + HTTP_REQUESTS);
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
}
