//! Ports for kv-server processes on loopback, for whoever starts them: a
//! local cluster (`kvctl cluster up`), a test harness, the Jepsen harness.
//! Such a server may be stopped and started again on the same port, since
//! Raft knows its members by address; [`bind_restartable_port`] says why its
//! port therefore does not come from binding port 0.

use std::net::TcpListener;

use rand::Rng;

/// A listener on a free port of 127.0.0.1 for a server that may be stopped
/// and started again on the same port (a node of a local cluster, or of a
/// test cluster that kills nodes).
///
/// Not port 0: the kernel picks that from its ephemeral range, the range
/// every outgoing connection draws its local port from too. While a node is
/// down, one of the cluster's own new connections can take its port, and
/// the restart then fails with "address in use" for as long as that
/// connection lives (seen in a Jepsen crash run: five restarts of one node
/// refused). So the port comes from below the ephemeral range, at random,
/// and is bound here: hold the listener until the port is handed out.
pub fn bind_restartable_port() -> std::io::Result<TcpListener> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_start / 2);
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", rng.gen_range(low..ephemeral_start))) {
            return Ok(l);
        }
    }
    TcpListener::bind("127.0.0.1:0")
}
