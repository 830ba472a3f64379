//! The client side of the TCP transport: one [`TcpLink`] per peer, which
//! connects lazily, sends one request at a time, and drops its connection at
//! the first sign of trouble (see the [module docs](super)).

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::codec;
use crate::config::Config;
use crate::network::frame::{
    encode_frame, read_frame, write_encoded, write_handshake, FrameError, Handshake, HandshakeAck,
    RequestFrameRef, RequestId, ResponseFrame, HANDSHAKE_MAX_BYTES,
};
use crate::network::rpc::{RpcRequest, RpcResponse};
use crate::network::tcp::stream::PeerStream;
use crate::network::tls::{peer_identity, server_name, NodeIdentity, PeerTls};
use crate::network::transport::{Link, LinkError, Transport};
use crate::types::{Node, NodeId, TypeConfig};

/// Why an RPC could not be sent or answered. Carried inside the
/// [`LinkError`] the call returns (see the table in the
/// [module docs](super) for which kind each becomes).
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
    /// The peer refused the handshake: it belongs to another cluster, is
    /// not the node we meant to reach, or (with peer TLS) our certificate
    /// does not name the node we claim to be.
    #[error("node {target} at {addr} refused the connection: {reason}")]
    Refused {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// The peer's explanation.
        reason: String,
    },
    /// One side has peer TLS and the other does not: the peer asked for TLS
    /// and this node has no `peer_tls`, or this node has `peer_tls` and the
    /// peer accepted a plaintext connection.
    #[error("node {target} at {addr}: {detail}")]
    TlsMismatch {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// Which side lacks TLS.
        detail: &'static str,
    },
    /// The TLS handshake failed: the peer's certificate is not signed by the
    /// cluster CA or has expired, or the peer rejected ours.
    #[error("TLS handshake with node {target} at {addr} failed: {source}")]
    Tls {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// What rustls reported.
        source: std::io::Error,
    },
    /// The peer's certificate is valid but names another node than the one
    /// this link is meant to reach (or no node at all).
    #[error("node {target} at {addr} presented a certificate for {detail}")]
    WrongIdentity {
        /// The peer's node id.
        target: NodeId,
        /// The peer's `raft_addr`.
        addr: String,
        /// Whom the certificate names instead.
        detail: String,
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
    tls: Option<PeerTls>,
}

/// The client side of the TCP transport: a [`TcpLink`] per peer. Cheap to
/// clone. Give it to openraft wrapped in a
/// [`Network`](crate::network::transport::Network).
#[derive(Debug, Clone)]
pub struct TcpTransport {
    settings: Arc<ClientSettings>,
}

impl TcpTransport {
    /// The client side of node `node_id`, using `config.cluster_id`,
    /// `config.max_frame_bytes`, `config.connect_timeout` and
    /// `config.peer_tls`.
    pub fn new(node_id: NodeId, config: &Config) -> Self {
        TcpTransport {
            settings: Arc::new(ClientSettings {
                node_id,
                cluster_id: config.cluster_id.clone(),
                max_frame_bytes: config.max_frame_bytes,
                connect_timeout: config.connect_timeout,
                tls: config.peer_tls.clone(),
            }),
        }
    }
}

impl TcpTransport {
    /// Connects to the node that should be `target` at `addr`, completes
    /// the handshake (and peer TLS, if configured), and closes the
    /// connection, sending no request. Before a node is added to the
    /// cluster, this tells a misconfiguration (the node belongs to another
    /// cluster, has another id, or its certificate does not match) from a
    /// node that is merely not running yet.
    ///
    /// # Errors
    ///
    /// What [`TcpLink`]'s first request would have met:
    /// [`TransportError::Refused`], [`TransportError::TlsMismatch`],
    /// [`TransportError::Tls`] and [`TransportError::WrongIdentity`] for a
    /// peer that answers but will not be this node's peer; the others when
    /// it cannot be reached.
    pub async fn check(&self, target: NodeId, addr: &str) -> Result<(), TransportError> {
        let link = TcpLink {
            settings: self.settings.clone(),
            target,
            addr: addr.to_string(),
            stream: None,
            last_id: 0,
        };
        let mut stream = link.connect(self.settings.connect_timeout).await?;
        let _ = tokio::time::timeout(
            self.settings.connect_timeout,
            tokio::io::AsyncWriteExt::shutdown(&mut stream),
        )
        .await;
        Ok(())
    }
}

impl TransportError {
    /// Whether the peer answered and refused to be this node's peer (as
    /// opposed to not answering at all): see [`TcpTransport::check`].
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TransportError::Refused { .. }
                | TransportError::TlsMismatch { .. }
                | TransportError::Tls { .. }
                | TransportError::WrongIdentity { .. }
        )
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
/// reopened after any failure. See the [module docs](super).
#[derive(Debug)]
pub struct TcpLink {
    settings: Arc<ClientSettings>,
    target: NodeId,
    addr: String,
    /// The open connection, if any. Taken out for the duration of each RPC
    /// and put back only when the RPC completed cleanly, so an RPC that
    /// fails or is cancelled half-way leaves no connection behind.
    pub(super) stream: Option<PeerStream>,
    /// The id of the last request sent.
    pub(super) last_id: RequestId,
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
                // A refusal (another cluster, a certificate that does not
                // match) is logged with the peer's reachability, once, not
                // at every retry (see `transport`).
                self.connect(budget).await.map_err(|e| {
                    tracing::debug!(node_id = self.settings.node_id, target = self.target, error = %e, "connecting to Raft peer failed");
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
    async fn connect(&self, budget: Duration) -> Result<PeerStream, TransportError> {
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
        let handshake_err = |source| TransportError::Handshake { target, addr: addr.clone(), source };
        let (mut stream, ack) = match (acked, &self.settings.tls) {
            (Err(_), _) => return Err(timed_out()),
            (Ok(Err(source)), _) => return Err(handshake_err(source)),
            (Ok(Ok(HandshakeAck::StartTls)), Some(tls)) => {
                let stream = match timeout_at(deadline, self.start_tls(tls, stream)).await {
                    Err(_) => return Err(timed_out()),
                    Ok(result) => result?,
                };
                let mut stream = PeerStream::Tls(Box::new(stream.into()));
                match timeout_at(deadline, read_frame::<_, HandshakeAck>(&mut stream, HANDSHAKE_MAX_BYTES))
                    .await
                {
                    Err(_) => return Err(timed_out()),
                    // A server that rejects our certificate says so with a
                    // TLS alert, which arrives here (TLS 1.3 lets the client
                    // finish its handshake before the server checks).
                    Ok(Err(FrameError::Io(source))) => {
                        return Err(TransportError::Tls { target, addr, source })
                    }
                    Ok(Err(source)) => return Err(handshake_err(source)),
                    Ok(Ok(ack)) => (stream, ack),
                }
            }
            (Ok(Ok(HandshakeAck::StartTls)), None) => {
                return Err(TransportError::TlsMismatch {
                    target,
                    addr,
                    detail: "the peer requires TLS, and this node has no peer TLS configured",
                })
            }
            (Ok(Ok(HandshakeAck::Ok)), Some(_)) => {
                return Err(TransportError::TlsMismatch {
                    target,
                    addr,
                    detail: "the peer accepted a plaintext connection, and this node requires TLS",
                })
            }
            (Ok(Ok(ack)), _) => (PeerStream::Plain(stream), ack),
        };
        match ack {
            HandshakeAck::Ok => {
                tracing::debug!(node_id = self.settings.node_id, target, %addr, "connected to Raft peer");
                Ok(stream)
            }
            HandshakeAck::Refused { reason } => {
                // Best effort: end TLS cleanly; the server closes anyway.
                let _ = timeout_at(deadline, tokio::io::AsyncWriteExt::shutdown(&mut stream)).await;
                Err(TransportError::Refused { target, addr, reason })
            }
            HandshakeAck::StartTls => Err(handshake_err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a second StartTls inside TLS",
            )))),
        }
    }

    /// Runs the TLS handshake on `stream` and checks that the server's
    /// certificate names the node this link is meant to reach.
    async fn start_tls(
        &self,
        tls: &PeerTls,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
        let (target, addr) = (self.target, self.addr.clone());
        let stream = match tls.connector().connect(server_name(), stream).await {
            Ok(stream) => stream,
            Err(source) => return Err(TransportError::Tls { target, addr, source }),
        };
        let meant = NodeIdentity { cluster_id: self.settings.cluster_id.clone(), node_id: target };
        match peer_identity(stream.get_ref().1.peer_certificates()) {
            Ok(named) if named == meant => Ok(stream),
            Ok(named) => Err(TransportError::WrongIdentity { target, addr, detail: named.to_string() }),
            Err(e) => Err(TransportError::WrongIdentity { target, addr, detail: e.to_string() }),
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
///
/// On a TLS connection this looks at the TCP socket underneath: a server
/// with peer TLS sends nothing unasked (no session tickets), so any byte
/// there is a close or garbage, and the connection is dropped either way.
fn still_open(stream: &PeerStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.tcp().try_read(&mut byte) {
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
pub(super) fn entries_that_fit(id: RequestId, req: &AppendEntriesRequest<TypeConfig>, max: u32) -> usize {
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
