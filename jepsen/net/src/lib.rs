//! # jepsen-net
//!
//! Network partitions without root rights: every Raft link runs through a
//! proxy that the harness controls. The Jepsen harness (`jepsen::net`
//! re-exports this crate) and `kvctl bench failover --stop isolate` share
//! it; it is a crate of its own so that neither depends on the other, and
//! it links nothing of ours.
//!
//! Each node's Raft address *in the cluster membership* is the address of
//! its proxy; the proxy forwards to the node's real Raft listener. Raft
//! connections start with a handshake that names the sending and the
//! receiving node, so the proxy knows, for every byte, which directed link
//! `from → to` it travels on. The proxy reads the handshake as any tool on
//! the wire could, from its documented layout (below), and passes its bytes
//! on unchanged; it does not link the library that wrote them. The harness
//! cuts links per direction; a cut link *holds* its bytes instead of
//! forwarding them, as a network that drops packets does to a TCP stream:
//! nothing arrives, the sender's RPC times out and it drops the
//! connection, and whatever was held is discarded with it. After a heal,
//! held bytes of connections still open flow again, like retransmissions.
//!
//! Clients reach nodes' HTTP APIs directly, never through the proxy: a
//! partitioned leader keeps answering clients, which is exactly how a
//! deposed leader's stale read becomes visible to the checker.
//!
//! The same proxy serves other Raft implementations whose peer traffic is
//! HTTP (`kvctl bench failover --stop isolate` runs etcd behind it): there
//! the sender is named by a request header of the connection's first
//! request ([`Sender::HttpHeader`], etcd's `X-Server-From`), and the
//! harness tells the proxy which node each name belongs to
//! ([`Net::name_sender`]). A connection whose sender is not (yet) known is
//! never held.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A node's id in the cluster.
pub type NodeId = u64;

/// The start of every Raft connection, as `raft-core`'s transport writes it
/// (`docs/architecture/raft-core.md`, "The wire"): the magic `b"RCORE"`, the
/// protocol version (u16, big-endian), then one frame, a u32 big-endian
/// length and that many bytes of bincode (standard configuration: integers
/// as varints, a string as its varint length and its bytes) holding the
/// cluster id, the sending node and the receiving node, in that order.
const MAGIC: &[u8; 5] = b"RCORE";
/// The longest handshake frame the transport accepts (4 KiB).
const HANDSHAKE_MAX_BYTES: usize = 4096;

/// The handshake frame's fields.
#[derive(Debug, Deserialize)]
struct HandshakeBody {
    _cluster_id: String,
    from: NodeId,
    to: NodeId,
}

/// A connection's handshake: its raw bytes, to pass on unchanged, and who
/// it says is talking to whom.
struct Handshake {
    bytes: Vec<u8>,
    from: NodeId,
    to: NodeId,
}

/// Reads the handshake a Raft connection starts with.
async fn read_handshake<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Handshake> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut bytes = vec![0u8; MAGIC.len() + 2 + 4];
    r.read_exact(&mut bytes).await?;
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(invalid("not a Raft connection (no RCORE magic)".into()));
    }
    let len = u32::from_be_bytes(bytes[MAGIC.len() + 2..].try_into().expect("four bytes")) as usize;
    if len > HANDSHAKE_MAX_BYTES {
        return Err(invalid(format!("a handshake frame of {len} bytes")));
    }
    let start = bytes.len();
    bytes.resize(start + len, 0);
    r.read_exact(&mut bytes[start..]).await?;
    let (body, _): (HandshakeBody, usize) =
        bincode::serde::decode_from_slice(&bytes[start..], bincode::config::standard())
            .map_err(|e| invalid(format!("a handshake that does not decode: {e}")))?;
    Ok(Handshake { bytes, from: body.from, to: body.to })
}

/// The longest HTTP request head [`Sender::HttpHeader`] reads (16 KiB);
/// a connection whose head is longer passes with its sender unknown.
const HTTP_HEAD_MAX_BYTES: usize = 16 * 1024;

/// How a proxy learns which node is talking to the node behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// raft-core's handshake, which every Raft connection starts with,
    /// names both ends (see the module docs).
    RaftCoreHandshake,
    /// The connection starts with an HTTP request carrying this header,
    /// whose value names the sending node; [`Net::name_sender`] maps the
    /// value to a node. etcd's peer requests carry
    /// `X-Server-From: <member id in hex>`.
    HttpHeader(&'static str),
}

/// One end of a proxied connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    /// A node, known by its id.
    Node(NodeId),
    /// A node known by a name it sent, resolved when a link is checked.
    Named(String),
    /// A sender the proxy could not tell.
    Unknown,
}

/// Which directed links are cut. Cheap to clone: clones share the state.
#[derive(Clone, Debug)]
pub struct Net {
    cut: Arc<Mutex<BTreeSet<(NodeId, NodeId)>>>,
    /// [`Sender::HttpHeader`] values, and the node each belongs to.
    names: Arc<Mutex<BTreeMap<String, NodeId>>>,
    changed: watch::Sender<u64>,
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    /// A network with every link up.
    pub fn new() -> Self {
        Net {
            cut: Arc::new(Mutex::new(BTreeSet::new())),
            names: Arc::new(Mutex::new(BTreeMap::new())),
            changed: watch::channel(0).0,
        }
    }

    /// Says that a [`Sender::HttpHeader`] value `name` is node `node`;
    /// connections that named themselves so, open or not yet, are held
    /// across that node's cut links from now on.
    pub fn name_sender(&self, name: impl Into<String>, node: NodeId) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).insert(name.into(), node);
        self.changed.send_modify(|g| *g += 1);
    }

    /// The node behind `peer`, if known.
    fn resolve(&self, peer: &Peer) -> Option<NodeId> {
        match peer {
            Peer::Node(id) => Some(*id),
            Peer::Named(name) => self.names.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied(),
            Peer::Unknown => None,
        }
    }

    /// Whether bytes from `from` to `to` are held; never for an unknown end.
    fn holds(&self, from: &Peer, to: &Peer) -> bool {
        match (self.resolve(from), self.resolve(to)) {
            (Some(from), Some(to)) => self.is_cut(from, to),
            _ => false,
        }
    }

    /// Isolates `node` from every other of `nodes`, in both directions.
    /// Replaces any earlier cut.
    pub fn isolate(&self, nodes: &[NodeId], node: NodeId) {
        let rest: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != node).collect();
        self.partition(nodes, &[vec![node], rest]);
    }

    fn update(&self, f: impl FnOnce(&mut BTreeSet<(NodeId, NodeId)>)) {
        f(&mut self.cut.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_modify(|g| *g += 1);
    }

    /// Whether bytes from `from` to `to` are held.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).contains(&(from, to))
    }

    /// The directed links currently cut.
    pub fn cut_links(&self) -> Vec<(NodeId, NodeId)> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Cuts `from → to` (one direction).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.update(|c| {
            c.insert((from, to));
        });
    }

    /// Splits `nodes` into `groups`: links inside a group stay up, links
    /// between groups are cut in both directions. Replaces any earlier cut.
    pub fn partition(&self, nodes: &[NodeId], groups: &[Vec<NodeId>]) {
        let group_of = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        self.update(|c| {
            c.clear();
            for &a in nodes {
                for &b in nodes {
                    if a != b && group_of(a) != group_of(b) {
                        c.insert((a, b));
                    }
                }
            }
        });
    }

    /// Keeps exactly the given undirected links up among `nodes`; cuts every
    /// other pair in both directions (for rings and bridges, whose node
    /// sets overlap). Replaces any earlier cut.
    pub fn connect_only(&self, nodes: &[NodeId], links: &[(NodeId, NodeId)]) {
        let up = |a: NodeId, b: NodeId| links.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a));
        self.update(|c| {
            c.clear();
            for &a in nodes {
                for &b in nodes {
                    if a != b && !up(a, b) {
                        c.insert((a, b));
                    }
                }
            }
        });
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.update(BTreeSet::clear);
    }

    /// Starts the proxy in front of node `to`: accepts Raft connections on
    /// `listener` and forwards them to `target`, the node's real Raft
    /// address. Runs until aborted.
    pub fn spawn_proxy(&self, to: NodeId, listener: TcpListener, target: SocketAddr) -> JoinHandle<()> {
        self.spawn_proxy_for(to, listener, target, Sender::RaftCoreHandshake)
    }

    /// [`Net::spawn_proxy`] for connections whose sender is told as
    /// `sender` says.
    pub fn spawn_proxy_for(
        &self,
        to: NodeId,
        listener: TcpListener,
        target: SocketAddr,
        sender: Sender,
    ) -> JoinHandle<()> {
        let net = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let net = net.clone();
                tokio::spawn(async move {
                    if let Err(e) = net.relay(to, inbound, target, sender).await {
                        tracing::debug!(to, error = %e, "proxied connection ended");
                    }
                });
            }
        })
    }

    async fn relay(
        &self,
        to: NodeId,
        mut inbound: TcpStream,
        target: SocketAddr,
        sender: Sender,
    ) -> std::io::Result<()> {
        let (first_bytes, from) = match sender {
            Sender::RaftCoreHandshake => {
                let hs = read_handshake(&mut inbound).await?;
                if hs.to != to {
                    // Not ours to judge: pass it on, the node refuses it.
                    tracing::debug!(to, claimed = hs.to, "handshake addressed to another node");
                }
                (hs.bytes, Peer::Node(hs.from))
            }
            Sender::HttpHeader(name) => {
                let head = read_http_head(&mut inbound).await?;
                let from = header_value(&head, name).map_or(Peer::Unknown, Peer::Named);
                (head, from)
            }
        };
        let to = Peer::Node(to);
        // A connection attempt across a cut link hangs, as a SYN that is
        // dropped would: wait for the link before connecting.
        self.wait_up(&from, &to).await;
        let mut outbound = TcpStream::connect(target).await?;
        outbound.write_all(&first_bytes).await?;
        let (in_r, in_w) = inbound.into_split();
        let (out_r, out_w) = outbound.into_split();
        let forward = self.pump(&from, &to, in_r, out_w);
        let backward = self.pump(&to, &from, out_r, in_w);
        // Either side closing ends both directions.
        tokio::select! {
            r = forward => r,
            r = backward => r,
        }
    }

    async fn wait_up(&self, from: &Peer, to: &Peer) {
        let mut changed = self.changed.subscribe();
        while self.holds(from, to) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Copies bytes travelling `from → to`, holding them while that link is
    /// cut.
    async fn pump(
        &self,
        from: &Peer,
        to: &Peer,
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            self.wait_up(from, to).await;
            w.write_all(&buf[..n]).await?;
        }
    }
}

/// Reads the start of a connection up to the end of its first HTTP
/// request head (an empty line), or [`HTTP_HEAD_MAX_BYTES`], or the end of
/// the stream: every byte read, to pass on unchanged (it may hold the
/// start of a body too).
async fn read_http_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while bytes.len() < HTTP_HEAD_MAX_BYTES && !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok(bytes)
}

/// The value of header `name` (case-insensitive) in an HTTP request head.
fn header_value(head: &[u8], name: &str) -> Option<String> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A handshake as the transport writes it: see [`read_handshake`].
    fn handshake(from: NodeId, to: NodeId) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a>(&'a str, NodeId, NodeId);
        let body =
            bincode::serde::encode_to_vec(Body("test", from, to), bincode::config::standard()).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&2u16.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    /// An echo server standing in for a node's Raft listener: reads the
    /// handshake, then echoes bytes.
    async fn echo_node() -> SocketAddr {
        echo_node_with(true).await
    }

    /// An echo server that reads a handshake first if `handshake`, then
    /// echoes bytes (without one: every byte, an HTTP head too).
    async fn echo_node_with(handshake: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    if handshake {
                        let _ = read_handshake(&mut s).await;
                    }
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn connect(proxy: SocketAddr, from: NodeId, to: NodeId) -> TcpStream {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(&handshake(from, to)).await.unwrap();
        s
    }

    async fn roundtrip(s: &mut TcpStream, within: Duration) -> bool {
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        matches!(tokio::time::timeout(within, s.read_exact(&mut buf)).await, Ok(Ok(_)))
    }

    #[tokio::test]
    async fn cut_link_holds_bytes_and_heal_releases_them() {
        let net = Net::new();
        let node = echo_node().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let task = net.spawn_proxy(2, l, node);

        let mut s = connect(proxy, 1, 2).await;
        assert!(roundtrip(&mut s, Duration::from_secs(5)).await, "an open link passes bytes");

        net.cut(2, 1); // only the answer's direction
        assert!(!roundtrip(&mut s, Duration::from_millis(300)).await, "the echo is held");
        net.heal();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping", "held bytes flow after the heal");
        task.abort();
    }

    #[tokio::test]
    async fn partition_cuts_between_groups_only() {
        let net = Net::new();
        net.partition(&[1, 2, 3, 4, 5], &[vec![1, 2], vec![3, 4, 5]]);
        assert!(net.is_cut(1, 3) && net.is_cut(3, 1) && net.is_cut(5, 2));
        assert!(!net.is_cut(1, 2) && !net.is_cut(3, 5));
        net.connect_only(&[1, 2, 3], &[(1, 2), (2, 3)]);
        assert!(net.is_cut(1, 3) && net.is_cut(3, 1) && !net.is_cut(2, 1) && !net.is_cut(3, 2));
        net.heal();
        assert!(net.cut_links().is_empty());
    }

    #[tokio::test]
    async fn an_http_sender_is_known_by_its_header_once_named() {
        let net = Net::new();
        let node = echo_node_with(false).await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let task = net.spawn_proxy_for(2, l, node, Sender::HttpHeader("X-Server-From"));
        let mut s = TcpStream::connect(proxy).await.unwrap();
        let request = b"GET /raft/stream/message/a1 HTTP/1.1\r\nx-server-from: a1\r\n\r\n";
        s.write_all(request).await.unwrap();
        let mut head = vec![0u8; request.len()];
        s.read_exact(&mut head).await.unwrap();
        net.isolate(&[1, 2, 3], 1);
        assert!(roundtrip(&mut s, Duration::from_secs(5)).await, "an unnamed sender is never held");
        net.name_sender("a1", 1);
        assert!(!roundtrip(&mut s, Duration::from_millis(300)).await, "node 1 is isolated");
        net.heal();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(
            header_value(b"POST /raft HTTP/1.1\r\nHost: x\r\nX-Server-From: 7f\r\n\r\n", "x-server-from"),
            Some("7f".into())
        );
        assert_eq!(header_value(b"POST /raft HTTP/1.1\r\nHost: x\r\n", "x-server-from"), None);
        task.abort();
    }

    #[tokio::test]
    async fn new_connections_across_a_cut_link_hang_until_healed() {
        let net = Net::new();
        let node = echo_node().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let task = net.spawn_proxy(2, l, node);
        net.cut(1, 2);
        let mut s = connect(proxy, 1, 2).await;
        assert!(!roundtrip(&mut s, Duration::from_millis(300)).await);
        let mut other = connect(proxy, 3, 2).await;
        assert!(roundtrip(&mut other, Duration::from_secs(5)).await, "other links are unaffected");
        net.heal();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
        task.abort();
    }
}
