//! Ports for kv-server processes on loopback, for whoever starts them: a
//! local cluster (`kvctl cluster up`), a test harness, the Jepsen harness.
//! Such a server may be stopped and started again on the same port, since
//! Raft knows its members by address; [`bind_restartable_port`] says why its
//! port therefore does not come from binding port 0.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use rand::Rng;

/// Every port [`bind_restartable_port`] has handed out in this process.
/// The caller drops the listener before its server binds the port, and the
/// port is random: without this, two clusters started at once in one
/// process (tests running in parallel) could be handed the same port, and
/// the second server to bind it fails with "address in use" (seen once in
/// CI: a Jepsen test's node 3 never started).
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Mutex::default)
}

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
/// and is bound here: hold the listener until the port is handed out. A
/// port is never handed out twice in one process.
pub fn bind_restartable_port() -> std::io::Result<TcpListener> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_start / 2);
    let mut rng = rand::thread_rng();
    let mut taken = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = rng.gen_range(low..ephemeral_start);
        if taken.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            taken.insert(port);
            return Ok(l);
        }
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    taken.insert(l.local_addr()?.port());
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_handed_out_twice_even_once_its_listener_is_dropped() {
        // 500 random ports from about 22,000 would repeat one with
        // probability above 99% if nothing remembered them.
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let port = bind_restartable_port().unwrap().local_addr().unwrap().port();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}
