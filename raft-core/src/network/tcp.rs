//! The TCP transport: how a node's Raft RPCs reach its peers.
//!
//! This module carries the Raft RPCs of [`super::rpc`] over plain TCP, in the
//! format of [`super::frame`]:
//!
//! * [`TcpServer`] accepts connections from peers on an already-bound
//!   listener, checks each peer's handshake, and hands every request to the
//!   local Raft through an [`Inbox`]. Each connection gets its own task, so
//!   a slow or silent peer delays nobody else.
//! * [`TcpTransport`] is the client side: for each peer it creates a
//!   [`TcpLink`], which connects lazily on the first RPC, keeps the
//!   connection for the RPCs after it, and drops it at the first sign of
//!   trouble. openraft asks for two links per peer, one for replication and
//!   one for heartbeats, so a large AppendEntries never delays a heartbeat.
//!
//! # What the client reports
//!
//! A failed call is reported as one of the [`LinkError`] kinds that
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
//! requests by logging a warning and closing that one connection. Nothing a
//! peer sends can panic the node or affect its other connections.
//!
//! A production deployment would add authentication and encryption (mutual
//! TLS), a cap on concurrent connections, and TCP keepalive; this transport
//! relies on the idle timeout below to reclaim connections from peers that
//! vanished without closing them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, timeout_at, Instant};

use super::frame::{
    encode_frame, read_frame, read_handshake, write_encoded, write_frame, write_handshake, FrameError,
    Handshake, HandshakeAck, RequestFrame, RequestFrameRef, RequestId, ResponseFrame, HANDSHAKE_MAX_BYTES,
};
use super::rpc::{Inbox, RpcRequest, RpcResponse};
use super::transport::{Link, LinkError, Transport};
use crate::codec;
use crate::config::Config;
use crate::types::{Node, NodeId, Raft, TypeConfig};

/// How long the server waits for a new connection's handshake (5 s). Long
/// enough for a loaded peer; short enough that half-open connections do not
/// pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server closes a connection on which no request arrived for this long
/// (60 s). A leader sends heartbeats every `heartbeat_interval`, so a live
/// replication connection is never idle this long; the connections this
/// reclaims belong to finished elections' vote requests and to peers that
/// died without closing their socket.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server may take to write one response (10 s) before it
/// gives up on a peer that stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After refusing a handshake, the server keeps reading (and discarding) for
/// at most this long (1 s) before it closes, so that the peer reads the
/// refusal instead of a connection reset.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The most bytes discarded while lingering after a refusal (64 KiB).
const REFUSAL_LINGER_BYTES: u64 = 64 * 1024;

/// How long the accept loop pauses after `accept` fails (100 ms). Failures
/// such as running out of file descriptors persist for a while; retrying at
/// once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Refusal reasons quote at most this many characters of a cluster id, so a
/// refusal always fits in a handshake-sized frame.
const MAX_QUOTED_CHARS: usize = 64;

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// What every connection task of one server needs.
#[derive(Debug)]
struct ServerContext {
    inbox: Inbox,
    node_id: NodeId,
    /// Connections accepted since the server started.
    accepted: std::sync::atomic::AtomicU64,
    cluster_id: String,
    max_frame_bytes: u32,
}

/// Serves Raft RPCs from peers. See the [module docs](self).
///
/// Dropping the server stops it as [`TcpServer::shutdown`] does, but without
/// waiting for it to finish.
#[derive(Debug)]
pub struct TcpServer {
    node_id: NodeId,
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    accept: JoinHandle<()>,
    ctx: Arc<ServerContext>,
}

impl TcpServer {
    /// Starts serving the Raft RPCs of node `node_id` on `listener`, for the
    /// cluster `config.cluster_id`, accepting frames of at most
    /// `config.max_frame_bytes`.
    ///
    /// The listener is already bound, so the caller picks the address (tests
    /// bind `127.0.0.1:0`). Must be called from within a tokio runtime.
    pub fn spawn(listener: TcpListener, raft: Raft, node_id: NodeId, config: &Config) -> TcpServer {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("invariant: a bound TcpListener has a local address ({e})"));
        let ctx = Arc::new(ServerContext {
            inbox: Inbox::new(raft),
            node_id,
            accepted: Default::default(),
            cluster_id: config.cluster_id.clone(),
            max_frame_bytes: config.max_frame_bytes,
        });
        let (stop, stopped) = oneshot::channel();
        let accept = tokio::spawn(accept_loop(listener, ctx.clone(), stopped));
        tracing::info!(node_id, %local_addr, "Raft transport listening");
        TcpServer { node_id, local_addr, stop, accept, ctx }
    }

    /// How many connections the server has accepted since it started.
    pub fn connections_accepted(&self) -> u64 {
        self.ctx.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The address the server listens on (with the real port when the
    /// listener was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, closes every open connection (aborting
    /// any request being served), and waits until all of that is done. The
    /// listening socket is closed when this returns.
    pub async fn shutdown(self) {
        // An error means the accept loop already ended; there is nothing to stop.
        let _ = self.stop.send(());
        if let Err(e) = self.accept.await {
            tracing::error!(node_id = self.node_id, error = %e, "Raft transport accept task failed");
        }
        tracing::info!(node_id = self.node_id, local_addr = %self.local_addr, "Raft transport stopped");
    }
}

/// Accepts connections until told to stop (or until the [`TcpServer`] is
/// dropped), then closes the listener and every connection.
async fn accept_loop(listener: TcpListener, ctx: Arc<ServerContext>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Ready on `send(())` and when the sender is dropped alike.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    connections.spawn(serve_connection(stream, peer, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(node_id = ctx.node_id, error = %e, "accepting a Raft connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            // Reap finished connection tasks so the set does not grow.
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(node_id = ctx.node_id, error = %e, "Raft connection task panicked");
                    }
                }
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Why the server closed a connection.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("bad handshake: {0}")]
    Handshake(FrameError),
    #[error("refused node {from}: {reason}")]
    Refused { from: NodeId, reason: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("writing a response took longer than {0:?}")]
    WriteTimeout(Duration),
}

/// Serves one connection from start to end. Never fails: whatever goes
/// wrong is logged and ends this connection only.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<ServerContext>) {
    let node_id = ctx.node_id;
    // Requests and responses are small and latency-bound: send at once.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(node_id, %peer, error = %e, "cannot set TCP_NODELAY");
    }

    let from = match accept_handshake(&mut stream, &ctx).await {
        Ok(from) => from,
        Err(e) => {
            tracing::warn!(node_id, %peer, reason = %e, "refused Raft connection");
            return;
        }
    };
    tracing::debug!(node_id, %peer, from, "accepted Raft connection");

    match serve_requests(&mut stream, &ctx, from).await {
        Ok(()) => tracing::debug!(node_id, %peer, from, "Raft connection closed"),
        Err(e) => {
            tracing::warn!(node_id, %peer, from, error = %e, "closing Raft connection")
        }
    }
}

/// Reads and checks the handshake, and acknowledges it. Returns the peer's
/// node id. On a mismatch, tells the peer why before returning the error.
async fn accept_handshake(stream: &mut TcpStream, ctx: &ServerContext) -> Result<NodeId, ServeError> {
    let hs = match timeout(HANDSHAKE_TIMEOUT, read_handshake(stream)).await {
        Err(_) => return Err(ServeError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
        // The socket failed or the peer left: nobody to tell.
        Ok(Err(e @ (FrameError::Io(_) | FrameError::Closed))) => return Err(ServeError::Handshake(e)),
        Ok(Err(e)) => {
            refuse(stream, e.to_string()).await;
            return Err(ServeError::Handshake(e));
        }
        Ok(Ok(hs)) => hs,
    };

    let reason = if hs.cluster_id != ctx.cluster_id {
        Some(format!(
            "cluster id mismatch: this node belongs to cluster {:?}, the peer to cluster {:?}",
            clip(&ctx.cluster_id),
            clip(&hs.cluster_id)
        ))
    } else if hs.to != ctx.node_id {
        Some(format!("this is node {}, not node {}", ctx.node_id, hs.to))
    } else {
        None
    };
    if let Some(reason) = reason {
        refuse(stream, reason.clone()).await;
        return Err(ServeError::Refused { from: hs.from, reason });
    }

    match timeout(WRITE_TIMEOUT, write_frame(stream, &HandshakeAck::Ok, HANDSHAKE_MAX_BYTES)).await {
        Err(_) => Err(ServeError::WriteTimeout(WRITE_TIMEOUT)),
        Ok(Err(e)) => Err(ServeError::Handshake(e)),
        Ok(Ok(())) => Ok(hs.from),
    }
}

/// Tells the peer why its connection is refused, best effort, and lingers
/// briefly so the refusal is read rather than lost to a connection reset
/// (closing a socket with unread input makes the kernel send a reset).
async fn refuse(stream: &mut TcpStream, reason: String) {
    let ack = HandshakeAck::Refused { reason };
    let _ = timeout(REFUSAL_LINGER, async {
        write_frame(stream, &ack, HANDSHAKE_MAX_BYTES).await?;
        stream.shutdown().await?;
        let mut rest = (&mut *stream).take(REFUSAL_LINGER_BYTES);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
        Ok::<(), FrameError>(())
    })
    .await;
}

/// The first `MAX_QUOTED_CHARS` characters of `s`.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Answers requests, one at a time, until the peer closes the connection,
/// stays idle for [`IDLE_TIMEOUT`], or sends something invalid.
async fn serve_requests(stream: &mut TcpStream, ctx: &ServerContext, from: NodeId) -> Result<(), ServeError> {
    loop {
        let request: RequestFrame = match timeout(IDLE_TIMEOUT, read_frame(stream, ctx.max_frame_bytes)).await
        {
            Err(_) => {
                tracing::debug!(node_id = ctx.node_id, from, "closing idle Raft connection");
                return Ok(());
            }
            Ok(Err(FrameError::Closed)) => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(request)) => request,
        };
        let id = request.id;
        tracing::debug!(node_id = ctx.node_id, from, id, rpc = request.rpc.name(), "serving Raft RPC");

        let response = ResponseFrame { id, rpc: ctx.inbox.serve(from, request.rpc).await };
        match timeout(WRITE_TIMEOUT, write_frame(stream, &response, ctx.max_frame_bytes)).await {
            Err(_) => return Err(ServeError::WriteTimeout(WRITE_TIMEOUT)),
            Ok(result) => result?,
        }
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// Why an RPC could not be sent or answered. Carried inside the
/// [`LinkError`] the call returns (see the table in the
/// [module docs](self) for which kind each becomes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCP connection could not be opened (refused, no route, an
    /// address that does not resolve).
    #[error("cannot connect to node {target} at {addr}: {source}")]
    Connect {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// Connecting and completing the handshake took longer than allowed
    /// (the smaller of `connect_timeout` and the call's timeout).
    #[error("connecting to node {target} at {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// The time allowed.
        after: Duration,
    },
    /// The handshake failed: the connection broke, or the peer answered
    /// something that is not a handshake acknowledgement.
    #[error("handshake with node {target} at {addr} failed: {source}")]
    Handshake {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// What went wrong.
        source: FrameError,
    },
    /// The peer refused the handshake: it belongs to another cluster, or is
    /// not the node we meant to reach.
    #[error("node {target} at {addr} refused the connection: {reason}")]
    Refused {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// The peer's explanation.
        reason: String,
    },
    /// Sending the request or reading the response failed.
    #[error("RPC to node {target} failed: {source}")]
    Frame {
        /// The peer's node id.
        target: NodeId,
        /// What went wrong.
        source: FrameError,
    },
    /// The response answers another request than the one just sent.
    #[error("node {target} answered request {got}, expected {expected}")]
    IdMismatch {
        /// The peer's node id.
        target: NodeId,
        /// The id of the request sent.
        expected: RequestId,
        /// The id in the response.
        got: RequestId,
    },
    /// A request is larger than `max_frame_bytes`.
    #[error("{rpc} request to node {target} needs more than {max} bytes: {detail}")]
    TooLarge {
        /// The peer's node id.
        target: NodeId,
        /// The kind of RPC.
        rpc: &'static str,
        /// `max_frame_bytes`.
        max: u32,
        /// What is too large.
        detail: String,
    },
}

/// What every link made by one [`TcpTransport`] needs.
#[derive(Debug)]
struct ClientSettings {
    node_id: NodeId,
    cluster_id: String,
    max_frame_bytes: u32,
    connect_timeout: Duration,
}

/// The client side of the TCP transport: a [`TcpLink`] per peer. Cheap to
/// clone. Give it to openraft wrapped in a
/// [`Network`](super::transport::Network).
#[derive(Debug, Clone)]
pub struct TcpTransport {
    settings: Arc<ClientSettings>,
}

impl TcpTransport {
    /// The client side of node `node_id`, using `config.cluster_id`,
    /// `config.max_frame_bytes` and `config.connect_timeout`.
    pub fn new(node_id: NodeId, config: &Config) -> Self {
        TcpTransport {
            settings: Arc::new(ClientSettings {
                node_id,
                cluster_id: config.cluster_id.clone(),
                max_frame_bytes: config.max_frame_bytes,
                connect_timeout: config.connect_timeout,
            }),
        }
    }
}

impl Transport for TcpTransport {
    type Link = TcpLink;

    fn link(&self, target: NodeId, node: &Node) -> TcpLink {
        TcpLink {
            settings: self.settings.clone(),
            target,
            addr: node.raft_addr.clone(),
            stream: None,
            last_id: 0,
        }
    }
}

/// RPCs to one peer over one TCP connection, opened on first use and
/// reopened after any failure. See the [module docs](self).
#[derive(Debug)]
pub struct TcpLink {
    settings: Arc<ClientSettings>,
    target: NodeId,
    addr: String,
    /// The open connection, if any. Taken out for the duration of each RPC
    /// and put back only when the RPC completed cleanly, so an RPC that
    /// fails or is cancelled half-way leaves no connection behind.
    stream: Option<TcpStream>,
    /// The id of the last request sent.
    last_id: RequestId,
}

impl Link for TcpLink {
    /// Encodes, sends and awaits one request, and returns the peer's answer.
    async fn call(&mut self, rpc: &RpcRequest, timeout: Duration) -> Result<RpcResponse, LinkError> {
        self.last_id += 1;
        let id = self.last_id;
        let bytes = match encode_frame(&RequestFrameRef { id, rpc }, self.settings.max_frame_bytes) {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.oversized(id, rpc, e)),
        };
        self.exchange(&bytes, id, timeout).await
    }
}

impl TcpLink {
    /// Sends an encoded request on the open connection (opening one first if
    /// needed) and reads the response, all within `ttl`.
    async fn exchange(
        &mut self,
        request: &[u8],
        id: RequestId,
        ttl: Duration,
    ) -> Result<RpcResponse, LinkError> {
        let deadline = Instant::now() + ttl;
        let mut stream = match self.stream.take() {
            Some(stream) if still_open(&stream) => stream,
            _ => {
                // Give up connecting well before the call's deadline, so that
                // an unreachable peer is reported as `Unreachable` and backed
                // off from, not as a timeout retried at once.
                let budget = self.settings.connect_timeout.min(ttl / 2);
                self.connect(budget).await.map_err(|e| {
                    if matches!(e, TransportError::Refused { .. }) {
                        tracing::warn!(node_id = self.settings.node_id, target = self.target, error = %e, "Raft peer refused connection");
                    }
                    LinkError::Unreachable(Box::new(e))
                })?
            }
        };

        let max = self.settings.max_frame_bytes;
        let exchanged = timeout_at(deadline, async {
            write_encoded(&mut stream, request).await?;
            read_frame::<_, ResponseFrame>(&mut stream, max).await
        })
        .await;
        let response = match exchanged {
            Err(_) => return Err(LinkError::Timeout(ttl)),
            Ok(Err(source)) => {
                return Err(LinkError::Network(Box::new(TransportError::Frame {
                    target: self.target,
                    source,
                })))
            }
            Ok(Ok(response)) => response,
        };
        if response.id != id {
            return Err(LinkError::Network(Box::new(TransportError::IdMismatch {
                target: self.target,
                expected: id,
                got: response.id,
            })));
        }
        self.stream = Some(stream);
        Ok(response.rpc)
    }

    /// Opens a connection to the peer and completes the handshake, within
    /// `budget`.
    async fn connect(&self, budget: Duration) -> Result<TcpStream, TransportError> {
        let target = self.target;
        let addr = self.addr.clone();
        let deadline = Instant::now() + budget;
        let timed_out = || TransportError::ConnectTimeout { target, addr: addr.clone(), after: budget };

        let mut stream = match timeout_at(deadline, TcpStream::connect(addr.as_str())).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(source)) => return Err(TransportError::Connect { target, addr, source }),
            Ok(Ok(stream)) => stream,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(node_id = self.settings.node_id, target, error = %e, "cannot set TCP_NODELAY");
        }

        let hs = Handshake::new(self.settings.cluster_id.clone(), self.settings.node_id, target);
        let acked = timeout_at(deadline, async {
            write_handshake(&mut stream, &hs).await?;
            read_frame::<_, HandshakeAck>(&mut stream, HANDSHAKE_MAX_BYTES).await
        })
        .await;
        match acked {
            Err(_) => Err(timed_out()),
            Ok(Err(source)) => Err(TransportError::Handshake { target, addr, source }),
            Ok(Ok(HandshakeAck::Refused { reason })) => Err(TransportError::Refused { target, addr, reason }),
            Ok(Ok(HandshakeAck::Ok)) => {
                tracing::debug!(node_id = self.settings.node_id, target, %addr, "connected to Raft peer");
                Ok(stream)
            }
        }
    }

    /// The error for a request that does not fit in one frame: for an
    /// AppendEntries, with how many of its entries would fit (see
    /// [`LinkError::TooLarge`]).
    fn oversized(&self, id: RequestId, rpc: &RpcRequest, e: FrameError) -> LinkError {
        let max = self.settings.max_frame_bytes;
        let (fit, detail) = match rpc {
            RpcRequest::AppendEntries(req) => {
                let fit = entries_that_fit(id, req, max);
                let detail = match req.entries.get(fit) {
                    Some(next) if fit == 0 => {
                        format!("log entry {} alone exceeds the frame limit ({e})", next.log_id.index)
                    }
                    _ => format!("{} entries exceed the frame limit ({e})", req.entries.len()),
                };
                (fit, detail)
            }
            _ => (0, e.to_string()),
        };
        let source = TransportError::TooLarge { target: self.target, rpc: rpc.name(), max, detail };
        LinkError::TooLarge { fit, source: Box::new(source) }
    }
}

/// Whether a kept connection still looks usable: the peer has not closed it
/// (the server closes idle connections) and sent nothing unasked. A check
/// without waiting; a connection that dies later fails the RPC instead.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        // 0: the peer closed it. More: bytes nobody asked for.
        Ok(_) => false,
    }
}

/// How many of `req`'s leading entries fit in one frame of `max` bytes,
/// sent with request id `id`.
///
/// A frame's payload is the request without entries plus, for the entries,
/// a varint count and each entry's encoding in turn, so the sizes add up.
fn entries_that_fit(id: RequestId, req: &AppendEntriesRequest<TypeConfig>, max: u32) -> usize {
    let empty = RpcRequest::AppendEntries(AppendEntriesRequest {
        vote: req.vote,
        prev_log_id: req.prev_log_id,
        leader_commit: req.leader_commit,
        entries: Vec::new(),
    });
    // The empty request already has a 1-byte count; a count takes at most 9.
    let mut size = codec::encode(&RequestFrameRef { id, rpc: &empty }).len() as u64 + 8;
    let mut fit = 0;
    for entry in &req.entries {
        size += codec::encode(entry).len() as u64;
        if size > u64::from(max) {
            break;
        }
        fit += 1;
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let server = TcpServer::spawn(listener, raft.clone(), node_id, &config);
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
        let first =
            c.link().stream.as_ref().expect("connection kept after a successful RPC").local_addr().unwrap();
        c.vote(vote_request(2, 2), option()).await.unwrap();
        let second = c.link().stream.as_ref().expect("connection kept").local_addr().unwrap();
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
            HandshakeAck::Ok => panic!("a handshake of another version was accepted"),
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
            state.insert(vec![i; 8].into(), vec![i; 16].into());
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
