//! The server side of the TCP transport: accepting peers' connections,
//! checking their handshakes, and serving their requests, one task per
//! connection (see the [module docs](super) for what it promises).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use crate::config::Config;
use crate::network::frame::{
    read_frame, read_handshake, write_frame, FrameError, Handshake, HandshakeAck, RequestFrame,
    ResponseFrame, HANDSHAKE_MAX_BYTES,
};
use crate::network::rpc::Inbox;
use crate::network::tcp::stream::PeerStream;
use crate::network::tls::{peer_identity, NodeIdentity, PeerTls};
use crate::types::NodeId;

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

/// A refusal of the same reason from the same address is logged again at
/// most this often (30 s): a misconfigured peer retries at every heartbeat.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);

/// The most (address, reason) pairs whose refusals are remembered: beyond
/// it, the memory is cleared (a flood of distinct refusals is logged, not
/// held).
const REFUSAL_LOG_KEYS: usize = 1024;

/// What every connection task of one server needs.
#[derive(Debug)]
struct ServerContext {
    inbox: Inbox,
    node_id: NodeId,
    /// Connections accepted since the server started.
    accepted: std::sync::atomic::AtomicU64,
    cluster_id: String,
    max_frame_bytes: u32,
    /// Mutual TLS on every connection, if configured.
    tls: Option<PeerTls>,
    /// Refusals logged lately, by peer address and reason.
    refusals: std::sync::Mutex<RefusalLog>,
}

/// When each refusal was last logged, and how many like it were not since.
#[derive(Debug, Default)]
struct RefusalLog(std::collections::HashMap<(std::net::IpAddr, String), (tokio::time::Instant, u64)>);

impl RefusalLog {
    /// Whether to log this refusal now, and how many like it went unlogged
    /// since the last line.
    fn note(&mut self, ip: std::net::IpAddr, reason: String, now: tokio::time::Instant) -> Option<u64> {
        if self.0.len() >= REFUSAL_LOG_KEYS && !self.0.contains_key(&(ip, reason.clone())) {
            self.0.clear();
        }
        match self.0.entry((ip, reason)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((now, 0));
                Some(0)
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let (logged, unlogged) = o.get_mut();
                if now.saturating_duration_since(*logged) < REFUSAL_LOG_EVERY {
                    *unlogged += 1;
                    return None;
                }
                let since = std::mem::take(unlogged);
                *logged = now;
                Some(since)
            }
        }
    }
}

/// Serves Raft RPCs from peers. See the [module docs](super).
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
    pub fn spawn(listener: TcpListener, inbox: Inbox, node_id: NodeId, config: &Config) -> TcpServer {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("invariant: a bound TcpListener has a local address ({e})"));
        let ctx = Arc::new(ServerContext {
            inbox,
            node_id,
            accepted: Default::default(),
            cluster_id: config.cluster_id.clone(),
            max_frame_bytes: config.max_frame_bytes,
            tls: config.peer_tls.clone(),
            refusals: Default::default(),
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
    #[error("TLS handshake with a peer claiming to be node {from} failed: {source}")]
    Tls { from: NodeId, source: std::io::Error },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("writing a response took longer than {0:?}")]
    WriteTimeout(Duration),
}

/// Serves one connection from start to end. Never fails: whatever goes
/// wrong is logged and ends this connection only.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, ctx: Arc<ServerContext>) {
    let node_id = ctx.node_id;
    // Requests and responses are small and latency-bound: send at once.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(node_id, %peer, error = %e, "cannot set TCP_NODELAY");
    }

    let (mut stream, from) = match accept_handshake(stream, &ctx).await {
        Ok(accepted) => accepted,
        // A peer that left halfway through the handshake (a link cut by a
        // partition, a paused or killed node) was refused nothing.
        Err(ServeError::Tls { source, .. }) if left_early(&source) => {
            tracing::debug!(node_id, %peer, error = %source, "Raft connection closed during the TLS handshake");
            return;
        }
        Err(e) => {
            let reason = e.to_string();
            let now = tokio::time::Instant::now();
            let log =
                ctx.refusals.lock().unwrap_or_else(|e| e.into_inner()).note(peer.ip(), reason.clone(), now);
            if let Some(unlogged) = log {
                tracing::warn!(node_id, %peer, %reason, refused_since_last_logged = unlogged, "refused Raft connection");
            }
            return;
        }
    };
    tracing::debug!(node_id, %peer, from, "accepted Raft connection");

    match serve_requests(&mut stream, &ctx, from).await {
        Ok(Ended::Idle) => tracing::debug!(node_id, %peer, from, "closed an idle Raft connection"),
        Ok(Ended::ByPeer { served }) => {
            tracing::debug!(node_id, %peer, from, served, "Raft connection closed by the peer");
            // A connection that carried no request (a peer checking that
            // this node is the one it means, before adding it) says
            // nothing about the leader.
            if served > 0 {
                ctx.inbox.peer_left(from);
            }
        }
        Err(e) => {
            tracing::warn!(node_id, %peer, from, error = %e, "closing Raft connection");
            // The connection broke under the peer (reset, or cut off in
            // the middle of a frame): it may have died.
            if matches!(e, ServeError::Frame(FrameError::Io(_))) {
                ctx.inbox.peer_left(from);
            }
        }
    }
}

/// Whether a TLS handshake failed because the peer went away (end of
/// stream, reset), not because anything it sent was refused.
fn left_early(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Reads and checks the handshake, runs the TLS handshake if the server
/// has peer TLS, and acknowledges. Returns the connection and the peer's
/// node id. On a mismatch, tells the peer why before returning the error.
async fn accept_handshake(
    mut stream: TcpStream,
    ctx: &ServerContext,
) -> Result<(PeerStream, NodeId), ServeError> {
    let hs = match timeout(HANDSHAKE_TIMEOUT, read_handshake(&mut stream)).await {
        Err(_) => return Err(ServeError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
        // The socket failed or the peer left: nobody to tell.
        Ok(Err(e @ (FrameError::Io(_) | FrameError::Closed))) => return Err(ServeError::Handshake(e)),
        Ok(Err(e)) => {
            refuse(&mut stream, e.to_string()).await;
            return Err(ServeError::Handshake(e));
        }
        Ok(Ok(hs)) => hs,
    };

    let mut stream = match &ctx.tls {
        None => PeerStream::Plain(stream),
        Some(tls) => {
            // The plaintext preamble said who the peer claims to be; the
            // TLS handshake proves it (checked against the certificate in
            // `check_handshake`).
            let started = async {
                write_frame(&mut stream, &HandshakeAck::StartTls, HANDSHAKE_MAX_BYTES).await?;
                Ok::<_, FrameError>(tls.acceptor().accept(stream).await)
            };
            match timeout(HANDSHAKE_TIMEOUT, started).await {
                Err(_) => return Err(ServeError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
                Ok(Err(e)) => return Err(ServeError::Handshake(e)),
                Ok(Ok(Err(source))) => return Err(ServeError::Tls { from: hs.from, source }),
                Ok(Ok(Ok(tls))) => PeerStream::Tls(Box::new(tls.into())),
            }
        }
    };

    if let Some(reason) = check_handshake(&hs, &stream, ctx) {
        refuse(&mut stream, reason.clone()).await;
        return Err(ServeError::Refused { from: hs.from, reason });
    }

    match timeout(WRITE_TIMEOUT, write_frame(&mut stream, &HandshakeAck::Ok, HANDSHAKE_MAX_BYTES)).await {
        Err(_) => Err(ServeError::WriteTimeout(WRITE_TIMEOUT)),
        Ok(Err(e)) => Err(ServeError::Handshake(e)),
        Ok(Ok(())) => Ok((stream, hs.from)),
    }
}

/// Why the handshake `hs` must be refused, if it must: another cluster,
/// another node meant, or (over TLS) a certificate that does not name the
/// cluster and node the handshake claims.
fn check_handshake(hs: &Handshake, stream: &PeerStream, ctx: &ServerContext) -> Option<String> {
    if hs.cluster_id != ctx.cluster_id {
        return Some(format!(
            "cluster id mismatch: this node belongs to cluster {:?}, the peer to cluster {:?}",
            clip(&ctx.cluster_id),
            clip(&hs.cluster_id)
        ));
    }
    if hs.to != ctx.node_id {
        return Some(format!("this is node {}, not node {}", ctx.node_id, hs.to));
    }
    if let PeerStream::Tls(tls) = stream {
        let claimed = NodeIdentity { cluster_id: hs.cluster_id.clone(), node_id: hs.from };
        match peer_identity(tls.get_ref().1.peer_certificates()) {
            Err(e) => return Some(format!("certificate identity: {e}")),
            Ok(named) if named != claimed => {
                return Some(format!(
                    "certificate identity mismatch: the certificate names node {} of cluster {:?}, \
                     the handshake claims node {} of cluster {:?}",
                    named.node_id,
                    clip(&named.cluster_id),
                    claimed.node_id,
                    clip(&claimed.cluster_id)
                ))
            }
            Ok(_) => {}
        }
    }
    None
}

/// Tells the peer why its connection is refused, best effort, and lingers
/// briefly so the refusal is read rather than lost to a connection reset
/// (closing a socket with unread input makes the kernel send a reset).
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, reason: String) {
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

/// How a connection that raised no error ended.
enum Ended {
    /// The peer closed it between two requests, after `served` of them.
    ByPeer { served: u64 },
    /// The peer sent nothing for [`IDLE_TIMEOUT`], and this side closed it.
    Idle,
}

/// Answers requests, one at a time, until the peer closes the connection,
/// stays idle for [`IDLE_TIMEOUT`], or sends something invalid.
async fn serve_requests(
    stream: &mut PeerStream,
    ctx: &ServerContext,
    from: NodeId,
) -> Result<Ended, ServeError> {
    let mut served = 0;
    loop {
        let request: RequestFrame = match timeout(IDLE_TIMEOUT, read_frame(stream, ctx.max_frame_bytes)).await
        {
            Err(_) => return Ok(Ended::Idle),
            Ok(Err(FrameError::Closed)) => return Ok(Ended::ByPeer { served }),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(request)) => request,
        };
        let id = request.id;
        tracing::debug!(node_id = ctx.node_id, from, id, rpc = request.rpc.name(), "serving Raft RPC");

        let response = ResponseFrame { id, rpc: ctx.inbox.serve(from, request.rpc).await };
        served += 1;
        match timeout(WRITE_TIMEOUT, write_frame(stream, &response, ctx.max_frame_bytes)).await {
            Err(_) => return Err(ServeError::WriteTimeout(WRITE_TIMEOUT)),
            Ok(result) => result?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer refused at every heartbeat is logged once per 30 s, with the
    /// count of refusals in between; another reason or address is logged
    /// at once.
    #[test]
    fn a_repeated_refusal_is_logged_every_30s_with_a_count() {
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let mut log = RefusalLog::default();
        assert_eq!(log.note(a, "wrong cluster".into(), at(0)), Some(0));
        for ms in (100..30_000).step_by(100) {
            assert_eq!(log.note(a, "wrong cluster".into(), at(ms)), None, "at {ms} ms");
        }
        assert_eq!(log.note(a, "wrong node".into(), at(500)), Some(0));
        assert_eq!(log.note(b, "wrong cluster".into(), at(500)), Some(0));
        assert_eq!(log.note(a, "wrong cluster".into(), at(30_000)), Some(299));
        assert_eq!(log.note(a, "wrong cluster".into(), at(30_100)), None);
    }

    #[test]
    fn the_refusal_memory_is_bounded() {
        let now = tokio::time::Instant::now();
        let ip = "127.0.0.1".parse().unwrap();
        let mut log = RefusalLog::default();
        for i in 0..3 * REFUSAL_LOG_KEYS {
            assert_eq!(log.note(ip, format!("reason {i}"), now), Some(0));
            assert!(log.0.len() <= REFUSAL_LOG_KEYS);
        }
    }
}
