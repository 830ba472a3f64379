//! Peer TLS on the Raft port: a cluster whose nodes speak mutual TLS elects
//! a leader and replicates, and every connection that cannot prove it is
//! the node it claims to be is refused, for the reason it should be, while
//! the cluster keeps working.
//!
//! Certificates are made here with `raft_core::network::tls::certs` (rcgen),
//! into a temporary directory, and loaded the way a server loads them
//! (`PeerTls::from_pem_files`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Register, Set};
use raft_core::network::tls::certs::{self, Pem, Validity};
use raft_core::network::{Link, PeerTls, RpcRequest, TcpTransport, Transport};
use raft_core::openraft::raft::VoteRequest;
use raft_core::types::Vote;
use raft_core::{Config, Node, NodeId, RaftNode};
use tokio::net::TcpListener;

const CLUSTER: &str = "tls-test";
const WAIT: Duration = Duration::from_secs(30);

/// A cluster CA and the files a node's TLS is loaded from.
struct Pki {
    dir: tempfile::TempDir,
    ca: Pem,
}

impl Pki {
    fn new(ca_name: &str) -> Pki {
        Pki { dir: tempfile::tempdir().unwrap(), ca: certs::new_ca(ca_name).unwrap() }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Node `id`'s TLS: this CA, and `pem` as its certificate and key.
    fn tls_with(&self, name: &str, pem: &Pem) -> PeerTls {
        let ca = self.write("ca.pem", &self.ca.cert);
        let cert = self.write(&format!("{name}.pem"), &pem.cert);
        let key = self.write(&format!("{name}.key"), &pem.key);
        PeerTls::from_pem_files(&ca, &cert, &key).unwrap()
    }

    fn node(&self, id: NodeId) -> Pem {
        certs::node_cert(&self.ca, CLUSTER, id, &[], Validity::years_from_now(1)).unwrap()
    }

    fn config(&self, name: &str, pem: &Pem) -> Config {
        let mut config = Config::new(CLUSTER);
        config.peer_tls = Some(self.tls_with(name, pem));
        config
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    addrs: BTreeMap<NodeId, std::net::SocketAddr>,
    nodes: BTreeMap<NodeId, RaftNode<Register>>,
}

impl Cluster {
    async fn start(pki: &Pki) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (mut addrs, mut nodes, mut members) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for id in 1..=3 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let config = pki.config(&format!("node-{id}"), &pki.node(id));
            let node = RaftNode::open(id, config, &dir.path().join(id.to_string()), Register, listener)
                .await
                .unwrap();
            addrs.insert(id, addr);
            members.insert(id, Node::new(addr.to_string(), ""));
            nodes.insert(id, node);
        }
        nodes[&1].initialize(members).await.unwrap();
        Cluster { _dir: dir, addrs, nodes }
    }

    /// Writes through whichever node leads, then waits until every node
    /// applied the write.
    async fn write_everywhere(&self, key: &str, value: &str) {
        let cmd = Set { key: key.into(), value: value.into() };
        let leader = || async { self.nodes[&1].wait_for_leader(WAIT).await.expect("a leader") };
        let index = common::write_through_leader(&self.nodes, leader, &cmd, WAIT).await;
        for node in self.nodes.values() {
            node.wait_applied(index, WAIT).await.unwrap_or_else(|e| panic!("node {} behind: {e}", node.id()));
            let got = node.view().unwrap().get(key.as_bytes()).unwrap();
            assert_eq!(got.as_deref(), Some(value.as_bytes()), "node {}", node.id());
        }
    }

    async fn shutdown(self) {
        for (_, node) in self.nodes {
            node.shutdown().await;
        }
    }
}

/// Node `from`, configured with `config`, sends a vote request to node
/// `to` at `addr`. Returns the error, which the caller expects.
async fn refused(config: &Config, from: NodeId, to: NodeId, addr: &Path) -> String {
    let mut link = TcpTransport::new(from, config).link(to, &Node::new(addr.to_str().unwrap(), ""));
    let vote = RpcRequest::Vote(VoteRequest::new(Vote::new(1, from), None));
    match link.call(&vote, Duration::from_secs(10)).await {
        Ok(answer) => panic!("node {from} was answered: {answer:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(err: &str, want: &str) {
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

#[tokio::test]
async fn tls_cluster_replicates_and_refuses_every_peer_that_cannot_prove_who_it_is() {
    let pki = Pki::new("raft test CA");
    let cluster = Cluster::start(&pki).await;
    cluster.write_everywhere("before", "1").await;
    let addr = |id: NodeId| PathBuf::from(cluster.addrs[&id].to_string());

    // A plaintext client on a TLS port.
    let err = refused(&Config::new(CLUSTER), 3, 1, &addr(1)).await;
    assert_contains(&err, "the peer requires TLS, and this node has no peer TLS configured");

    // A certificate for node 3 from another CA: node 1 rejects it during
    // the TLS handshake and tells the client with an alert. (Had the other
    // CA the same name, its signature would not verify: DecryptError.)
    let other = Pki::new("another CA");
    let foreign = certs::node_cert(&other.ca, CLUSTER, 3, &[], Validity::years_from_now(1)).unwrap();
    let err = refused(&pki.config("foreign-3", &foreign), 3, 1, &addr(1)).await;
    assert_contains(&err, "TLS handshake with node 1");
    assert_contains(&err, "UnknownCA");

    // The same CA, but a certificate that expired long ago.
    let expired = certs::node_cert(&pki.ca, CLUSTER, 3, &[], Validity { from: 2000, until: 2001 }).unwrap();
    let err = refused(&pki.config("expired-3", &expired), 3, 1, &addr(1)).await;
    assert_contains(&err, "TLS handshake with node 1");
    assert_contains(&err, "CertificateExpired");

    // Node 3 presents node 2's (valid) certificate and says it is node 3.
    let err = refused(&pki.config("stolen-2", &pki.node(2)), 3, 1, &addr(1)).await;
    assert_contains(&err, "refused the connection: certificate identity mismatch");
    assert_contains(&err, "names node 2 of cluster \"tls-test\", the handshake claims node 3");

    // Node 3 presents its own certificate and says it is node 2.
    let err = refused(&pki.config("own-3", &pki.node(3)), 2, 1, &addr(1)).await;
    assert_contains(&err, "names node 3 of cluster \"tls-test\", the handshake claims node 2");

    // The client side: node 2's address answered with node 1's certificate
    // (as if node 1 now lived there) is not node 2.
    let err = refused(&pki.config("own-3b", &pki.node(3)), 3, 2, &addr(1)).await;
    assert_contains(&err, "node 2 at");
    assert_contains(&err, "presented a certificate for node 1 of cluster \"tls-test\"");

    // A node of the right CA and the right name is answered (the vote is
    // stale, so not granted, but it is answered).
    let mut link = TcpTransport::new(3, &pki.config("again-3", &pki.node(3)))
        .link(1, &Node::new(addr(1).to_str().unwrap(), ""));
    link.call(&RpcRequest::Vote(VoteRequest::new(Vote::new(1, 3), None)), Duration::from_secs(10))
        .await
        .expect("a node with a valid certificate is served");

    // Through a proxy that reads the plaintext handshake to learn the link
    // (as the Jepsen harness's does), sends it on (the same bytes), and
    // forwards every byte after it unchanged.
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = PathBuf::from(proxy.local_addr().unwrap().to_string());
    let target = cluster.addrs[&1];
    let seen = tokio::spawn(async move {
        let (mut inbound, _) = proxy.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let hs = raft_core::network::frame::read_handshake(&mut inbound).await.unwrap();
        raft_core::network::frame::write_handshake(&mut outbound, &hs).await.unwrap();
        tokio::spawn(async move { tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await });
        (hs.from, hs.to)
    });
    let mut link = TcpTransport::new(3, &pki.config("proxied-3", &pki.node(3)))
        .link(1, &Node::new(proxy_addr.to_str().unwrap(), ""));
    link.call(&RpcRequest::Vote(VoteRequest::new(Vote::new(1, 3), None)), Duration::from_secs(10))
        .await
        .expect("TLS passes through a proxy that forwards bytes unchanged");
    assert_eq!(seen.await.unwrap(), (3, 1), "the proxy read the link from the plaintext handshake");

    // None of it disturbed the cluster.
    cluster.write_everywhere("after", "2").await;
    cluster.shutdown().await;
}
