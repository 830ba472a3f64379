//! Network partitions without root rights: every Raft link runs through a
//! proxy that the harness controls.
//!
//! Each node's Raft address *in the cluster membership* is the address of
//! its proxy; the proxy forwards to the node's real Raft listener. Raft
//! connections start with a handshake that names the sending and the
//! receiving node (see `raft_core::network::frame`), so the proxy knows, for
//! every byte, which directed link `from → to` it travels on. The harness
//! cuts links per direction; a cut link *holds* its bytes instead of
//! forwarding them, as a network that drops packets does to a TCP stream:
//! nothing arrives, the sender's RPC times out and it drops the
//! connection, and whatever was held is discarded with it. After a heal,
//! held bytes of connections still open flow again, like retransmissions.
//!
//! Clients reach nodes' HTTP APIs directly, never through the proxy: a
//! partitioned leader keeps answering clients, which is exactly how a
//! deposed leader's stale read becomes visible to the checker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use raft_core::network::frame::{read_handshake, write_handshake};
use raft_core::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which directed links are cut. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct Net {
    cut: Arc<Mutex<BTreeSet<(NodeId, NodeId)>>>,
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
        Net { cut: Arc::new(Mutex::new(BTreeSet::new())), changed: watch::channel(0).0 }
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
        let net = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let net = net.clone();
                tokio::spawn(async move {
                    if let Err(e) = net.relay(to, inbound, target).await {
                        tracing::debug!(to, error = %e, "proxied connection ended");
                    }
                });
            }
        })
    }

    async fn relay(&self, to: NodeId, mut inbound: TcpStream, target: SocketAddr) -> std::io::Result<()> {
        let hs = read_handshake(&mut inbound).await.map_err(std::io::Error::other)?;
        let from = hs.from;
        if hs.to != to {
            // Not ours to judge: pass it on, the node refuses it.
            tracing::debug!(to, claimed = hs.to, "handshake addressed to another node");
        }
        // A connection attempt across a cut link hangs, as a SYN that is
        // dropped would: wait for the link before connecting.
        self.wait_up(from, to).await;
        let mut outbound = TcpStream::connect(target).await?;
        write_handshake(&mut outbound, &hs).await.map_err(std::io::Error::other)?;
        let (in_r, in_w) = inbound.into_split();
        let (out_r, out_w) = outbound.into_split();
        let forward = self.pump(from, to, in_r, out_w);
        let backward = self.pump(to, from, out_r, in_w);
        // Either side closing ends both directions.
        tokio::select! {
            r = forward => r,
            r = backward => r,
        }
    }

    async fn wait_up(&self, from: NodeId, to: NodeId) {
        let mut changed = self.changed.subscribe();
        while self.is_cut(from, to) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Copies bytes travelling `from → to`, holding them while that link is
    /// cut.
    async fn pump(
        &self,
        from: NodeId,
        to: NodeId,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use raft_core::network::frame::Handshake;

    use super::*;

    /// An echo server standing in for a node's Raft listener: reads the
    /// handshake, then echoes bytes.
    async fn echo_node() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = read_handshake(&mut s).await;
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
        write_handshake(&mut s, &Handshake::new("test", from, to)).await.unwrap();
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
