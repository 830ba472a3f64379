//! The TCP transport: how a node's Raft RPCs reach its peers.
//!
//! This module carries the Raft RPCs of [`super::rpc`] over TCP (optionally
//! inside mutual TLS), in the format of [`super::frame`]:
//!
//! * [`TcpServer`] accepts connections from peers on an already-bound
//!   listener, checks each peer's handshake, and hands every request to the
//!   local Raft through an [`Inbox`](crate::network::rpc::Inbox). Each connection gets its own task, so
//!   a slow or silent peer delays nobody else.
//! * [`TcpTransport`] is the client side: for each peer it creates a
//!   [`TcpLink`], which connects lazily on the first RPC, keeps the
//!   connection for the RPCs after it, and drops it at the first sign of
//!   trouble. openraft asks for two links per peer, one for replication and
//!   one for heartbeats, so a large AppendEntries never delays a heartbeat.
//!
//! # What the client reports
//!
//! A failed call is reported as one of the [`LinkError`](crate::network::transport::LinkError) kinds that
//! [`super::transport`] turns into openraft's: a connect that failed or
//! timed out, and a handshake that failed or was refused, are
//! `Unreachable`; no response within the call's timeout is `Timeout`; a
//! connection that broke mid-RPC or a peer that sent nonsense is `Network`;
//! a request over `max_frame_bytes` is `TooLarge`, with how many of an
//! AppendEntries' entries would fit.
//!
//! # One request in flight, and never a stale answer
//!
//! A [`TcpLink`] sends one request and waits for its response before it
//! sends the next (`&mut self` on every call guarantees this). If anything
//! goes wrong in between (an I/O error, a timeout, or openraft dropping the
//! RPC's future because its own deadline passed) the connection is
//! discarded, never reused: a response that arrives late on it can therefore
//! never be mistaken for the answer to a later request. Each response also
//! carries its request's id, which is checked, as a second line of defence.
//!
//! # Hostile or broken input
//!
//! Everything read from a socket is untrusted. The server reads the
//! handshake with a deadline and a 4 KiB limit, checks every frame's length
//! before reading it, and answers garbage, oversized frames and undecodable
//! requests by logging a warning and closing that one connection. No
//! malformed bytes a peer sends can panic the node or affect its other
//! connections (`tests/fuzz_decoders.rs` checks this). A peer that passes
//! the handshake is trusted, though: a well-formed request that no correct
//! node would send (a log id from a future term, a commit index it cannot
//! know) can still trip one of openraft's assertions and stop the node's
//! Raft. The inbox refuses the shapes it can check cheaply; the handshake
//! guards against mistakes, not attackers.
//!
//! With [`Config::peer_tls`](crate::Config::peer_tls) set, every connection
//! is mutual TLS and a peer must prove with its certificate that it is the
//! node its handshake claims (see [`crate::network::tls`]); without it, the
//! handshake guards against mistakes only. A production deployment would
//! also add a cap on concurrent connections and TCP keepalive; this
//! transport relies on the idle timeout below to reclaim connections from
//! peers that vanished without closing them.
//!
//! The two sides live apart, in `tcp/server.rs` (accepting and serving
//! peers) and `tcp/client.rs` (links to peers); the tests in `tcp/mod.rs`
//! run them against each other.

mod client;
mod server;
mod stream;

pub use client::{TcpLink, TcpTransport, TransportError};
pub use server::{TcpServer, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};
pub use stream::PeerStream;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::raft::AppendEntriesRequest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    use super::client::entries_that_fit;
    use super::*;
    use crate::config::Config;
    use crate::network::frame::{
        encode_frame, read_frame, read_handshake, write_frame, write_handshake, Handshake, HandshakeAck,
        RequestFrame, RequestId, ResponseFrame, HANDSHAKE_MAX_BYTES,
    };
    use crate::network::rpc::{RpcRequest, RpcResponse};
    use crate::network::transport::{Link, Transport};
    use crate::types::{Node, NodeId, Raft, TypeConfig};

    use openraft::error::RPCError;
    use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::{AppendEntriesResponse, VoteRequest, VoteResponse};
    use rand::{RngCore, SeedableRng};

    use crate::app::{AppState, ApplyContext, StateError, StateMachine};
    use crate::network::frame::PROTOCOL_VERSION;
    use crate::network::rpc::SnapshotChunk;
    use crate::network::transport::{Connection, Network};
    use crate::storage::{Db, MemLogStore, StateMachineStore};
    use crate::types::{log_id, Batch, Entry, EntryPayload, Vote};

    /// The smallest application: every command is a no-op.
    struct Nothing;

    impl StateMachine for Nothing {
        type Command = ();
        type Response = ();

        fn apply(&self, _: &mut AppState<'_>, _: ApplyContext, _: ()) -> Result<(), StateError> {
            Ok(())
        }
    }

    const CLUSTER: &str = "test-cluster";
    /// Generous: these tests check behaviour, not speed, on a busy machine.
    const RPC_TTL: Duration = Duration::from_secs(5);

    /// A server for node `node_id` on a fresh port, in front of a real
    /// (uninitialized) Raft node with an in-memory log.
    async fn start_server(node_id: NodeId) -> (TcpServer, Raft) {
        let config = Config::new(CLUSTER);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raft = Raft::new(
            node_id,
            Arc::new(config.to_openraft().unwrap()),
            Network::new(node_id, TcpTransport::new(node_id, &config), &config),
            MemLogStore::new(),
            StateMachineStore::open(Db::in_memory(), Nothing).unwrap(),
        )
        .await
        .unwrap();
        let inbox = crate::network::Inbox::new(raft.clone(), crate::election::Contact::new());
        let server = TcpServer::spawn(listener, inbox, node_id, &config);
        (server, raft)
    }

    async fn stop(server: TcpServer, raft: Raft) {
        server.shutdown().await;
        raft.shutdown().await.unwrap();
    }

    /// What openraft holds for node `from` to reach node `to` at `addr`:
    /// the TCP link inside the transport adaptor.
    async fn client(config: &Config, from: NodeId, to: NodeId, addr: SocketAddr) -> Connection<TcpLink> {
        Network::new(from, TcpTransport::new(from, config), config)
            .new_client(to, &Node::new(addr.to_string(), ""))
            .await
    }

    fn vote_request(candidate: NodeId, term: u64) -> VoteRequest<TypeConfig> {
        VoteRequest::new(Vote::new(term, candidate), None)
    }

    fn option() -> RPCOption {
        RPCOption::new(RPC_TTL)
    }

    /// Asserts that the server closes `stream` (after sending whatever it
    /// chooses to send first) instead of waiting for more input.
    async fn assert_closed_by_server(stream: &mut TcpStream) {
        let mut sink = Vec::new();
        match timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            Err(_) => panic!("the server kept a bad connection open"),
        }
    }

    /// Asserts that a well-behaved client is still served.
    async fn assert_vote_is_answered(addr: SocketAddr, candidate: NodeId) {
        let mut c = client(&Config::new(CLUSTER), candidate, 1, addr).await;
        c.vote(vote_request(candidate, 1), option()).await.unwrap();
    }

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(Batch::one(vec![0xAB; bytes])) }
    }

    fn append_request(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 2),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    #[tokio::test]
    async fn vote_from_a_peer_of_the_same_cluster_is_answered() {
        let (server, raft) = start_server(1).await;
        let mut c = client(&Config::new(CLUSTER), 2, 1, server.local_addr()).await;

        let resp = c.vote(vote_request(2, 1), option()).await.unwrap();
        // The uninitialized node has voted for nobody and has an empty log,
        // so it grants the vote.
        assert!(resp.vote_granted, "{resp:?}");
        assert_eq!(resp.vote, Vote::new(1, 2));

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn connection_is_reused_for_later_rpcs() {
        let (server, raft) = start_server(1).await;
        let mut c = client(&Config::new(CLUSTER), 2, 1, server.local_addr()).await;

        c.vote(vote_request(2, 1), option()).await.unwrap();
        let first = c
            .link()
            .stream
            .as_ref()
            .expect("connection kept after a successful RPC")
            .tcp()
            .local_addr()
            .unwrap();
        c.vote(vote_request(2, 2), option()).await.unwrap();
        let second = c.link().stream.as_ref().expect("connection kept").tcp().local_addr().unwrap();
        assert_eq!(first, second, "the second RPC opened a new connection");
        assert_eq!(c.link().last_id, 2);
        assert_eq!(server.connections_accepted(), 1);

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn new_client_does_not_connect_until_the_first_rpc() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = client(&Config::new(CLUSTER), 2, 1, listener.local_addr().unwrap()).await;
        assert!(
            timeout(Duration::from_millis(200), listener.accept()).await.is_err(),
            "new_client connected eagerly"
        );
        drop(c);
    }

    #[tokio::test]
    async fn peer_of_another_cluster_is_refused_as_unreachable() {
        let (server, raft) = start_server(1).await;
        let mut c = client(&Config::new("other-cluster"), 2, 1, server.local_addr()).await;

        let err = c.vote(vote_request(2, 1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("cluster id mismatch"), "{err}");
        assert!(c.link().stream.is_none());
        // The refused client did not disturb the server.
        assert_vote_is_answered(server.local_addr(), 3).await;

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn client_addressing_another_node_id_is_refused_as_unreachable() {
        let (server, raft) = start_server(1).await;
        // Node 1 listens there, but the client believes it reaches node 7.
        let mut c = client(&Config::new(CLUSTER), 2, 7, server.local_addr()).await;

        let err = c.vote(vote_request(2, 1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("not node 7"), "{err}");

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn other_protocol_version_is_refused_with_a_reason() {
        let (server, raft) = start_server(1).await;
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut hs = Handshake::new(CLUSTER, 2, 1);
        hs.version = PROTOCOL_VERSION - 1;
        write_handshake(&mut raw, &hs).await.unwrap();

        let ack: HandshakeAck = read_frame(&mut raw, HANDSHAKE_MAX_BYTES).await.unwrap();
        match ack {
            HandshakeAck::Refused { reason } => assert!(reason.contains("version"), "{reason}"),
            other => panic!("a handshake of another version was answered {other:?}"),
        }
        assert_closed_by_server(&mut raw).await;

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn oversized_length_prefix_closes_only_that_connection() {
        let (server, raft) = start_server(1).await;
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        write_handshake(&mut raw, &Handshake::new(CLUSTER, 2, 1)).await.unwrap();
        let ack: HandshakeAck = read_frame(&mut raw, HANDSHAKE_MAX_BYTES).await.unwrap();
        assert_eq!(ack, HandshakeAck::Ok);

        // 4 GiB announced, far above the 64 MiB limit; nothing follows.
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert_closed_by_server(&mut raw).await;
        assert_vote_is_answered(server.local_addr(), 2).await;

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn random_bytes_close_only_that_connection() {
        let (server, raft) = start_server(1).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);

        // Garbage instead of a handshake.
        let mut garbage = vec![0u8; 4096];
        rng.fill_bytes(&mut garbage);
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        raw.write_all(&garbage).await.unwrap();
        assert_closed_by_server(&mut raw).await;

        // A valid handshake, then a well-framed request that does not decode.
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        write_handshake(&mut raw, &Handshake::new(CLUSTER, 2, 1)).await.unwrap();
        let ack: HandshakeAck = read_frame(&mut raw, HANDSHAKE_MAX_BYTES).await.unwrap();
        assert_eq!(ack, HandshakeAck::Ok);
        let mut body = [0u8; 64];
        rng.fill_bytes(&mut body);
        raw.write_all(&(body.len() as u32).to_be_bytes()).await.unwrap();
        raw.write_all(&body).await.unwrap();
        assert_closed_by_server(&mut raw).await;

        assert_vote_is_answered(server.local_addr(), 2).await;
        stop(server, raft).await;
    }

    #[tokio::test]
    async fn silent_connection_is_closed_after_the_handshake_timeout_without_blocking_others() {
        let (server, raft) = start_server(1).await;
        // Connected, but never says anything.
        let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
        assert_vote_is_answered(server.local_addr(), 2).await;

        let mut sink = Vec::new();
        let closed = timeout(HANDSHAKE_TIMEOUT * 2, silent.read_to_end(&mut sink)).await;
        assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn unreachable_address_is_reported_as_unreachable() {
        // A port that was just free: nothing listens there any more.
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut c = client(&Config::new(CLUSTER), 2, 1, addr).await;

        let err = c.vote(vote_request(2, 1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn oversized_append_entries_sends_the_entries_that_fit_and_reports_a_partial_success() {
        let (server, raft) = start_server(1).await;
        let mut config = Config::new(CLUSTER);
        config.max_frame_bytes = 4096;
        let mut c = client(&config, 2, 1, server.local_addr()).await;

        // The first entry follows `prev_log_id: None`, so it has index 0.
        let entries: Vec<Entry> = (0..20).map(|i| entry(i, 1000)).collect();
        // What fits is computed exactly: that many entries fit in a frame
        // and one more does not.
        let fit = entries_that_fit(1, &append_request(entries.clone()), 4096);
        let frame_of = |n: usize| RequestFrame {
            id: 1,
            rpc: RpcRequest::AppendEntries(append_request(entries[..n].to_vec())),
        };
        assert!(fit > 0 && fit < 20, "{fit}");
        assert!(encode_frame(&frame_of(fit), 4096).is_ok(), "{fit} entries do not fit");
        assert!(encode_frame(&frame_of(fit + 1), 4096).is_err(), "{} entries fit too", fit + 1);

        // The follower gets the prefix that fits, and openraft learns how
        // far it now matches.
        let resp = c.append_entries(append_request(entries.clone()), option()).await.unwrap();
        let last = fit as u64 - 1;
        assert_eq!(resp, AppendEntriesResponse::PartialSuccess(Some(log_id(1, last))));
        let held = raft.wait(Some(RPC_TTL)).log_index(Some(last), "the prefix").await.unwrap();
        assert_eq!(held.last_log_index, Some(last), "the follower holds exactly the prefix");

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn a_snapshot_is_sent_in_pieces_and_installed() {
        use crate::types::StoredMembership;
        let (server, raft) = start_server(1).await;
        let mut config = Config::new(CLUSTER);
        config.snapshot_chunk_bytes = 64;
        let mut c = client(&config, 2, 1, server.local_addr()).await;

        // A state of a few hundred bytes: several pieces of 64.
        let mut state = crate::app::StateMap::new();
        for i in 0..20u8 {
            state.insert(crate::app::Key::from(&[i; 8][..]), vec![i; 16].into());
        }
        let meta = crate::types::SnapshotMeta {
            last_log_id: Some(log_id(1, 5)),
            last_membership: StoredMembership::default(),
        };
        let snapshot =
            crate::types::Snapshot { meta, snapshot: crate::storage::SnapshotData::from_state(state) };
        let leader_vote = Vote::new_committed(1, 2);
        let never = std::future::pending::<openraft::error::ReplicationClosed>();
        let resp = c.full_snapshot(leader_vote, snapshot, never, option()).await.unwrap();
        assert_eq!(resp.vote, leader_vote, "{resp:?}");
        let m = raft.wait(Some(RPC_TTL)).snapshot(log_id(1, 5), "the installed snapshot").await.unwrap();
        assert_eq!(m.snapshot, Some(log_id(1, 5)));
        assert_eq!(m.last_applied, Some(log_id(1, 5)));

        stop(server, raft).await;
    }

    #[tokio::test]
    async fn a_snapshot_piece_that_continues_nothing_is_refused() {
        let (server, raft) = start_server(1).await;
        let mut link = TcpTransport::new(2, &Config::new(CLUSTER))
            .link(1, &Node::new(server.local_addr().to_string(), ""));
        let chunk = SnapshotChunk {
            vote: Vote::new_committed(1, 2),
            meta: Default::default(),
            transfer: 9,
            offset: 100,
            data: vec![1, 2, 3],
            done: true,
        };
        let answer = link.call(&RpcRequest::SnapshotChunk(chunk), RPC_TTL).await.unwrap();
        match answer {
            RpcResponse::SnapshotChunk(Err(reason)) => {
                assert!(reason.contains("continues no transfer"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        stop(server, raft).await;
    }

    #[tokio::test]
    async fn append_entries_with_a_gap_is_refused_and_the_node_keeps_running() {
        let (server, raft) = start_server(1).await;
        let mut c = client(&Config::new(CLUSTER), 2, 1, server.local_addr()).await;
        // Index 5 cannot follow `prev_log_id: None`.
        let err = c.append_entries(append_request(vec![entry(5, 10)]), option()).await.unwrap_err();
        assert!(err.to_string().contains("index 0 was due"), "{err}");
        let ok = c.append_entries(append_request(vec![entry(0, 10)]), option()).await.unwrap();
        assert_eq!(ok, AppendEntriesResponse::Success);
        stop(server, raft).await;
    }

    #[tokio::test]
    async fn single_entry_larger_than_a_frame_is_reported_as_unreachable() {
        let mut config = Config::new(CLUSTER);
        config.max_frame_bytes = 1024;
        // Never contacted: the request is refused before connecting.
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut c = client(&config, 2, 1, addr).await;

        let err = c.append_entries(append_request(vec![entry(0, 2000)]), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("log entry 0 alone exceeds"), "{err}");
    }

    /// A fake peer that accepts one connection, acknowledges the handshake,
    /// and answers the first request with `respond(request id)`.
    async fn fake_peer(respond: fn(RequestId) -> ResponseFrame) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_handshake(&mut stream).await.unwrap();
            write_frame(&mut stream, &HandshakeAck::Ok, HANDSHAKE_MAX_BYTES).await.unwrap();
            let req: RequestFrame = read_frame(&mut stream, 1 << 20).await.unwrap();
            write_frame(&mut stream, &respond(req.id), 1 << 20).await.unwrap();
            // Keep the connection open so that only the id check can reject it.
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        });
        addr
    }

    #[tokio::test]
    async fn response_to_another_request_id_is_rejected_and_the_connection_dropped() {
        // Regression guard: a response that arrives after its RPC was given
        // up on must never be taken as the answer to the next request.
        let addr = fake_peer(|id| ResponseFrame {
            id: id + 1,
            rpc: RpcResponse::Vote(Ok(VoteResponse::new(Vote::new(1, 2), None, true))),
        })
        .await;
        let mut c = client(&Config::new(CLUSTER), 2, 1, addr).await;

        let err = c.vote(vote_request(2, 1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Network(_)), "{err:?}");
        assert!(err.to_string().contains("expected 1"), "{err}");
        assert!(c.link().stream.is_none(), "an out-of-step connection was kept");
    }

    #[tokio::test]
    async fn response_of_another_rpc_kind_is_rejected() {
        let addr = fake_peer(|id| ResponseFrame {
            id,
            rpc: RpcResponse::AppendEntries(Ok(AppendEntriesResponse::Success)),
        })
        .await;
        let mut c = client(&Config::new(CLUSTER), 2, 1, addr).await;

        let err = c.vote(vote_request(2, 1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Network(_)), "{err:?}");
        assert!(err.to_string().contains("answered a Vote request with a AppendEntries response"), "{err}");
    }

    #[tokio::test]
    async fn peer_that_does_not_answer_in_time_is_a_timeout() {
        // Accepts and acknowledges the handshake, then never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_handshake(&mut stream).await.unwrap();
            write_frame(&mut stream, &HandshakeAck::Ok, HANDSHAKE_MAX_BYTES).await.unwrap();
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        });
        let mut c = client(&Config::new(CLUSTER), 2, 1, addr).await;

        let ttl = Duration::from_millis(300);
        let err = c.vote(vote_request(2, 1), RPCOption::new(ttl)).await.unwrap_err();
        match err {
            RPCError::Timeout(t) => {
                assert_eq!((t.action, t.id, t.target, t.timeout), (RPCTypes::Vote, 2, 1, ttl))
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(c.link().stream.is_none(), "a connection with a pending response was kept");
        // Dropping the connection is what lets the fake peer finish.
        drop(c);
        timeout(Duration::from_secs(5), peer).await.unwrap().unwrap();
    }

    /// `TcpTransport::check` passes for the node it means, tells a node of
    /// another cluster or under another id (a refusal) from one that is
    /// not there (not a refusal), and sends no request.
    #[tokio::test]
    async fn check_tells_the_right_node_from_a_refusal_and_from_no_answer() {
        let (server, raft) = start_server(1).await;
        let addr = server.local_addr().to_string();
        let ours = TcpTransport::new(2, &Config::new(CLUSTER));
        ours.check(1, &addr).await.unwrap();

        let err = TcpTransport::new(2, &Config::new("another")).check(1, &addr).await.unwrap_err();
        assert!(err.is_refusal() && err.to_string().contains("cluster id mismatch"), "{err}");
        let err = ours.check(3, &addr).await.unwrap_err();
        assert!(err.is_refusal() && err.to_string().contains("this is node 1, not node 3"), "{err}");

        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let err = ours.check(1, &gone).await.unwrap_err();
        assert!(!err.is_refusal(), "{err}");

        // The server still serves.
        assert_vote_is_answered(server.local_addr(), 2).await;
        stop(server, raft).await;
    }

    #[tokio::test]
    async fn a_stopped_raft_behind_the_server_is_unreachable() {
        let (server, raft) = start_server(1).await;
        let addr = server.local_addr();
        // The transport keeps serving, but the Raft behind it has stopped.
        raft.shutdown().await.unwrap();
        let mut c = client(&Config::new(CLUSTER), 2, 1, addr).await;

        let err = c.vote(vote_request(2, 1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("node 1"), "{err}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_connections_and_the_listener() {
        let (server, raft) = start_server(1).await;
        let addr = server.local_addr();
        let mut c = client(&Config::new(CLUSTER), 2, 1, addr).await;
        c.vote(vote_request(2, 1), option()).await.unwrap();

        stop(server, raft).await;

        // The kept connection was closed by the server, and no new one is
        // accepted.
        let err = c.vote(vote_request(2, 2), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_) | RPCError::Network(_)), "{err:?}");
        let err = c.vote(vote_request(2, 3), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }
}
