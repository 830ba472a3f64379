//! Property tests: the Raft port's decoders, fed random and mutated bytes.
//!
//! Everything a peer sends is untrusted (see `src/network/tcp/mod.rs`,
//! "Hostile or broken input"). These tests start from valid encodings (a
//! real handshake, real AppendEntries, Vote, PreVote, SnapshotChunk and
//! TransferLeader request frames), damage them (flip, overwrite, insert and
//! delete bytes, truncate), and also send bytes that were never valid. They
//! check:
//!
//! * `read_frame` and `read_handshake` return exactly the error the bytes
//!   call for (computed independently from the bytes: `Closed`, an
//!   unexpected end of stream, `TooLarge`, `BadMagic`, `UnsupportedVersion`,
//!   or a decode error), never panic, and never read past the frame;
//! * whatever decodes re-encodes to a value that decodes the same;
//! * a real node's TCP server, fed the same bytes, answers only with
//!   well-formed frames, closes the connection soon after the peer stops
//!   sending, never panics, and its Raft keeps running.
//!
//! The in-memory decoders cannot block: a hang there would be an endless
//! loop, which shows as this test never finishing. The server checks are
//! bounded by a timeout per connection.

mod common;
#[path = "support/mutate.rs"]
mod mutate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use common::Register;
use futures::executor::block_on;
use mutate::{counted_runtime, first_panic, mutated, PANICS};
use openraft::async_runtime::WatchReceiver as _;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use proptest::prelude::*;
use raft_core::codec;
use raft_core::network::frame::{
    encode_frame, read_frame, read_handshake, write_handshake, FrameError, Handshake, HandshakeAck,
    RequestFrame, ResponseFrame, HANDSHAKE_MAX_BYTES, MAGIC, PROTOCOL_VERSION,
};
use raft_core::network::rpc::SnapshotChunk;
use raft_core::network::RpcRequest;
use raft_core::types::{
    log_id, Batch, Entry, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote,
};
use raft_core::{Config, Node, RaftNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::time::timeout;

const CLUSTER: &str = "fuzz";
/// The node behind the server under test, and the peer it expects.
const SERVER_ID: u64 = 1;
const PEER_ID: u64 = 2;
/// A frame limit small enough that mutated length prefixes often land on
/// both sides of it (64 KiB).
const MAX_FRAME: u32 = 64 * 1024;
/// How long the server may take to close a connection after the peer
/// stopped sending (generous: a debug build on a shared machine).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

// ---- Valid encodings to start from ----

fn entry(term: u64, index: u64, payload: EntryPayload) -> Entry {
    Entry { log_id: log_id(term, index), payload }
}

fn membership() -> Membership {
    let nodes = BTreeMap::from([(1, Node::new("127.0.0.1:1", "")), (2, Node::new("127.0.0.1:2", ""))]);
    Membership::new(vec![BTreeSet::from([1, 2])], nodes).unwrap()
}

/// One request of every kind the server decodes.
fn valid_requests() -> Vec<RpcRequest> {
    let leader = Vote::new_committed(3, PEER_ID);
    let append = AppendEntriesRequest {
        vote: leader,
        prev_log_id: None,
        leader_commit: Some(log_id(3, 1)),
        entries: vec![
            entry(3, 0, EntryPayload::Blank),
            entry(3, 1, EntryPayload::Normal(Batch::one(b"{\"key\":\"k\",\"value\":\"v\"}".to_vec()))),
            entry(3, 2, EntryPayload::Membership(membership())),
        ],
    };
    let heartbeat = AppendEntriesRequest {
        vote: leader,
        prev_log_id: Some(log_id(3, 2)),
        leader_commit: None,
        entries: vec![],
    };
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(3, 2)),
        last_membership: StoredMembership::new(Some(log_id(3, 2)), membership()),
    };
    let chunk =
        SnapshotChunk { vote: leader, meta, transfer: 7, offset: 0, data: vec![1, 2, 3, 4], done: true };
    vec![
        RpcRequest::AppendEntries(append),
        RpcRequest::AppendEntries(heartbeat),
        RpcRequest::Vote(VoteRequest::new(Vote::new(4, PEER_ID), Some(log_id(3, 2)))),
        RpcRequest::PreVote(VoteRequest::new(Vote::new(4, PEER_ID), None)),
        RpcRequest::SnapshotChunk(chunk),
        RpcRequest::TransferLeader(TransferLeaderRequest::new(leader, SERVER_ID, Some(log_id(3, 2)))),
    ]
}

/// Each valid request as a whole frame, length prefix included.
fn valid_frames() -> Vec<Vec<u8>> {
    valid_requests()
        .into_iter()
        .enumerate()
        .map(|(i, rpc)| encode_frame(&RequestFrame { id: i as u64 + 1, rpc }, MAX_FRAME).unwrap())
        .collect()
}

fn valid_handshake() -> Vec<u8> {
    let mut wire = Vec::new();
    block_on(write_handshake(&mut wire, &Handshake::new(CLUSTER, PEER_ID, SERVER_ID))).unwrap();
    wire
}

/// A frame whose payload is damaged but whose length prefix is right, so
/// that the bytes reach the payload decoder instead of failing on length.
fn mutated_payload() -> impl Strategy<Value = Vec<u8>> {
    let payloads: Vec<Vec<u8>> = valid_frames().into_iter().map(|f| f[4..].to_vec()).collect();
    mutated(payloads).prop_map(|payload| with_prefix(&payload))
}

fn with_prefix(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// Bytes that may be a request frame: damaged real ones, random payloads
/// behind a right prefix, and plain garbage.
fn request_frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => mutated(valid_frames()),
        3 => mutated_payload(),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|p| with_prefix(&p)),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

// ---- What the bytes call for ----

/// What `read_frame` must do with `bytes`, worked out from the bytes alone.
#[derive(Debug)]
enum Expected<'a> {
    Closed,
    Eof,
    TooLarge(u64),
    /// A complete frame: `read_frame` decodes `payload` or reports a
    /// decode error, and leaves `rest` unread.
    Payload {
        payload: &'a [u8],
        rest: &'a [u8],
    },
}

fn expected_frame(bytes: &[u8], max: u32) -> Expected<'_> {
    if bytes.is_empty() {
        return Expected::Closed;
    }
    let Some((prefix, body)) = bytes.split_first_chunk::<4>() else { return Expected::Eof };
    let len = u32::from_be_bytes(*prefix);
    if len > max {
        return Expected::TooLarge(u64::from(len));
    }
    match body.split_at_checked(len as usize) {
        Some((payload, rest)) => Expected::Payload { payload, rest },
        None => Expected::Eof,
    }
}

/// Reads one `RequestFrame` from `bytes` and checks the outcome against
/// [`expected_frame`]. Returns the frame if one decoded.
fn check_read_frame(bytes: &[u8], max: u32) -> Result<Option<RequestFrame>, TestCaseError> {
    let mut r = bytes;
    let got = block_on(read_frame::<_, RequestFrame>(&mut r, max));
    match (expected_frame(bytes, max), got) {
        (Expected::Closed, Err(FrameError::Closed)) => Ok(None),
        (Expected::Eof, Err(FrameError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        (Expected::TooLarge(want), Err(FrameError::TooLarge { len, max: m })) => {
            prop_assert_eq!((len, m), (want, max));
            Ok(None)
        }
        (Expected::Payload { payload, rest }, got) => {
            prop_assert_eq!(r, rest, "read_frame read past the frame");
            match got {
                Err(FrameError::Decode(e)) => {
                    prop_assert!(!e.reason.is_empty(), "a decode error without a reason");
                    prop_assert!(codec::decode::<RequestFrame>(payload).is_err());
                    Ok(None)
                }
                Ok(frame) => {
                    // Whatever decodes is a value we can encode again, and
                    // that encoding decodes to the same value.
                    let again: RequestFrame = codec::decode(&codec::encode(&frame)).unwrap();
                    prop_assert_eq!(format!("{again:?}"), format!("{frame:?}"));
                    Ok(Some(frame))
                }
                Err(e) => Err(TestCaseError::fail(format!("a complete frame gave {e:?}"))),
            }
        }
        (want, got) => Err(TestCaseError::fail(format!("expected {want:?}, got {got:?}"))),
    }
}

// ---- A real node behind a real server, shared by all cases ----

struct Target {
    rt: Runtime,
    node: RaftNode<Register>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let rt = counted_runtime();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(CLUSTER);
        config.max_frame_bytes = MAX_FRAME;
        // An uninitialized node: it follows whoever sends it a valid
        // AppendEntries, so decoded requests reach its Raft and change it.
        let (node, addr) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (RaftNode::open(SERVER_ID, config, dir.path(), Register, listener).await.unwrap(), addr)
        });
        Target { rt, node, addr, _dir: dir }
    })
}

/// Sends `bytes` on a fresh connection, closes the sending half, and checks
/// what comes back: nothing, or a handshake answer followed (if it was
/// `Ok`) by well-formed responses; and that the server closes the
/// connection within [`CLOSE_WITHIN`].
async fn send_to_server(addr: SocketAddr, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close (or reset) before reading everything: both are
    // fine, and show up as errors here.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let read = timeout(CLOSE_WITHIN, stream.read_to_end(&mut answer)).await;
    let reset = match read {
        Err(_) => return Err(TestCaseError::fail("the server kept the connection open")),
        Ok(Ok(_)) => false,
        Ok(Err(e)) => {
            prop_assert!(
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
                "{e}"
            );
            true
        }
    };

    // A reset may cut the answer short; a clean close may not.
    let mut r = &answer[..];
    let ack = match read_frame::<_, HandshakeAck>(&mut r, HANDSHAKE_MAX_BYTES).await {
        Err(FrameError::Closed) => return Ok(()),
        Err(FrameError::Io(_)) if reset => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(format!("a malformed handshake answer: {e}"))),
        Ok(ack) => ack,
    };
    if let HandshakeAck::Refused { .. } = ack {
        prop_assert!(r.is_empty(), "the server went on after refusing");
        return Ok(());
    }
    loop {
        match read_frame::<_, ResponseFrame>(&mut r, MAX_FRAME).await {
            Ok(_) => {}
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Io(_)) if reset => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("a malformed response: {e}"))),
        }
    }
}

/// Runs `bytes` against the shared server and checks that nothing
/// panicked and its Raft still runs.
fn check_server(bytes: &[u8]) -> Result<(), TestCaseError> {
    let t = target();
    t.rt.block_on(send_to_server(t.addr, bytes))?;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked: {}", first_panic());
    let running = t.node.raft().metrics().borrow_watched().running_state.clone();
    prop_assert!(running.is_ok(), "the Raft stopped: {:?}", running);
    Ok(())
}

/// A well-formed request with arbitrary field values: it decodes, so it
/// reaches the node's Raft, which must refuse nonsense without stopping.
/// Small terms and indexes, so that requests collide with what the node
/// already holds.
fn arbitrary_request() -> impl Strategy<Value = RpcRequest> {
    let vote = (0..6u64, 0..4u64, any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    });
    let log = || prop::option::of((0..6u64, 0..8u64).prop_map(|(t, i)| log_id(t, i)));
    let append = (vote.clone(), log(), log(), prop::collection::vec(0..6u64, 0..4)).prop_map(
        |(vote, prev_log_id, leader_commit, terms)| {
            // Contiguous after `prev_log_id`, as the inbox demands; terms as drawn.
            let first = prev_log_id.map_or(0, |l| l.index + 1);
            let entries = (first..).zip(terms).map(|(i, t)| entry(t, i, EntryPayload::Blank)).collect();
            RpcRequest::AppendEntries(AppendEntriesRequest { vote, prev_log_id, leader_commit, entries })
        },
    );
    prop_oneof![
        append,
        (vote.clone(), log()).prop_map(|(v, l)| RpcRequest::Vote(VoteRequest::new(v, l))),
        (vote.clone(), log()).prop_map(|(v, l)| RpcRequest::PreVote(VoteRequest::new(v, l))),
        (vote, 0..4u64, log())
            .prop_map(|(v, to, l)| RpcRequest::TransferLeader(TransferLeaderRequest::new(v, to, l))),
    ]
}

/// Bytes a peer might send on a new connection.
fn connection_bytes() -> impl Strategy<Value = Vec<u8>> {
    let handshake = valid_handshake();
    let first_request = valid_frames()[2].clone();
    let hs = handshake.clone();
    prop_oneof![
        // A damaged handshake, then a valid request.
        2 => mutated(vec![handshake.clone()]).prop_map(move |mut b| {
            b.extend_from_slice(&first_request);
            b
        }),
        // A valid handshake, then one to three requests, some damaged.
        5 => prop::collection::vec(request_frame_bytes(), 1..4).prop_map(move |frames| {
            let mut b = hs.clone();
            frames.iter().for_each(|f| b.extend_from_slice(f));
            b
        }),
        // Garbage from the first byte, sometimes behind the right magic.
        1 => prop::collection::vec(any::<u8>(), 0..128),
        1 => prop::collection::vec(any::<u8>(), 0..128).prop_map(|g| [&MAGIC[..], &g].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn read_frame_returns_what_the_bytes_call_for(bytes in request_frame_bytes()) {
        check_read_frame(&bytes, MAX_FRAME)?;
    }

    #[test]
    fn read_frame_honours_any_limit(bytes in request_frame_bytes(), max in 0..1024u32) {
        check_read_frame(&bytes, max)?;
    }

    #[test]
    fn read_handshake_returns_what_the_bytes_call_for(
        bytes in prop_oneof![
            3 => mutated(vec![valid_handshake()]),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ]
    ) {
        let mut r = &bytes[..];
        let got = block_on(read_handshake(&mut r));
        let eof = |e: &FrameError| matches!(e, FrameError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
        if bytes.len() < MAGIC.len() {
            prop_assert!(got.as_ref().is_err_and(eof), "{:?}", got);
        } else if bytes[..MAGIC.len()] != MAGIC {
            let is_bad_magic = matches!(&got, Err(FrameError::BadMagic { got }) if got[..] == bytes[..MAGIC.len()]);
            prop_assert!(is_bad_magic, "{:?}", got);
        } else if bytes.len() < MAGIC.len() + 2 {
            prop_assert!(got.as_ref().is_err_and(eof), "{:?}", got);
        } else if u16::from_be_bytes([bytes[5], bytes[6]]) != PROTOCOL_VERSION {
            let unsupported = matches!(got, Err(FrameError::UnsupportedVersion { supported: PROTOCOL_VERSION, .. }));
            prop_assert!(unsupported, "{:?}", got);
        } else {
            // The rest is a frame of at most HANDSHAKE_MAX_BYTES.
            let frame = &bytes[MAGIC.len() + 2..];
            match (expected_frame(frame, HANDSHAKE_MAX_BYTES), got) {
                (Expected::Closed, Err(FrameError::Closed)) => {}
                (Expected::Eof, Err(e)) if eof(&e) => {}
                (Expected::TooLarge(want), Err(FrameError::TooLarge { len, .. })) => prop_assert_eq!(len, want),
                (Expected::Payload { rest, .. }, Ok(hs)) => {
                    prop_assert_eq!(r, rest);
                    prop_assert_eq!(hs.version, PROTOCOL_VERSION);
                }
                (Expected::Payload { rest, .. }, Err(FrameError::Decode(_))) => prop_assert_eq!(r, rest),
                (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
            }
        }
    }
}

proptest! {
    // Each case is a TCP connection to a real node; fewer of them.
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn server_survives_damaged_and_random_connections(bytes in connection_bytes()) {
        check_server(&bytes)?;
    }

    // A limit, not fixed here: a peer that passes the handshake can stop
    // the node's Raft with a well-formed request no correct leader sends.
    // openraft asserts its invariants instead of refusing such requests
    // (for example `has_log_id`: a `prev_log_id` above the committed log id
    // at a committed index; and the state machine worker's `assert_eq` on
    // the index to apply); the inbox refuses only one such shape (entries
    // with a gap). Peer TLS is the defence: only a node with a certificate
    // from the cluster CA that names it passes the handshake, and such a
    // node is trusted (Raft tolerates crashes, not lies; see the threat
    // model in docs/security.md), and kv-server refuses a non-loopback Raft
    // address without peer TLS. Run with `--ignored`: most runs of 300
    // cases fail (the first panic poisons the shared node, so read the
    // first panic in the output, not the "minimal" input).
    #[test]
    #[ignore = "out of the threat model: well-formed nonsense from an authenticated peer panics openraft"]
    fn server_survives_well_formed_requests_of_arbitrary_content(
        rpcs in prop::collection::vec(arbitrary_request(), 1..4)
    ) {
        let mut bytes = valid_handshake();
        for (id, rpc) in (1..).zip(rpcs) {
            bytes.extend(encode_frame(&RequestFrame { id, rpc }, MAX_FRAME).unwrap());
        }
        check_server(&bytes)?;
    }
}

/// The shared server answers a well-formed request at all: otherwise the
/// property above would pass against a server that closes everything.
#[test]
fn server_answers_a_valid_vote() {
    let bytes = [valid_handshake(), valid_frames()[3].clone()].concat();
    let t = target();
    let answer = t.rt.block_on(async {
        let mut stream = TcpStream::connect(t.addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        timeout(CLOSE_WITHIN, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        answer
    });
    let mut r = &answer[..];
    let ack: HandshakeAck = block_on(read_frame(&mut r, HANDSHAKE_MAX_BYTES)).unwrap();
    assert_eq!(ack, HandshakeAck::Ok);
    let resp: ResponseFrame = block_on(read_frame(&mut r, MAX_FRAME)).unwrap();
    assert_eq!((resp.id, resp.rpc.name()), (4, "PreVote"));
}
