//! The simulated network between the nodes, and between clients and nodes.
//!
//! Maelstrom owns every message: a node writes `{src, dest, body}` on
//! stdout, and Maelstrom decides when (and whether) it reaches `dest`'s
//! stdin. This module does the same:
//!
//! * Node-to-node messages wait out a latency drawn from `--latency` (mean
//!   milliseconds) and `--latency-dist`, in one queue ordered by delivery
//!   time. A message delivered later never overtakes one due earlier, so
//!   each destination sees its messages in delivery-time order, as with
//!   Maelstrom's per-destination queues.
//! * Messages from and to clients have zero latency and are never
//!   partitioned: partitions are between nodes only.
//! * A partition is a *grudge*: for each destination, the sources it no
//!   longer hears. It is consulted when a message is *delivered*, not when
//!   it is sent, so messages already queued when a partition starts are
//!   dropped too, as Maelstrom drops them at dequeue time.
//!
//! Maelstrom's network never loses or duplicates a message outside a
//! partition, and neither does this one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// One message, exactly as it travels: `{src, dest, body}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The sender: a node (`n0`, …) or a client (`c0`, …).
    pub src: String,
    /// The receiver.
    pub dest: String,
    /// The payload; always an object with a string `type`.
    pub body: Value,
}

/// Whether a name is a client's: Maelstrom's clients are `c0, c1, …`.
pub fn is_client(name: &str) -> bool {
    name.starts_with('c')
}

/// How latencies are distributed around `--latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyDist {
    /// Every message takes exactly the mean.
    Constant,
    /// Uniform in [0, 2 × mean).
    Uniform,
    /// Exponential with the given mean: mostly fast, with a long tail.
    Exponential,
}

/// The latency of node-to-node messages.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Mean delay.
    pub mean: Duration,
    /// Its distribution.
    pub dist: LatencyDist,
}

impl Latency {
    /// Draws one message's delay.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let mean = self.mean.as_secs_f64();
        if mean == 0.0 {
            return Duration::ZERO;
        }
        let secs = match self.dist {
            LatencyDist::Constant => mean,
            LatencyDist::Uniform => rng.gen_range(0.0..2.0 * mean),
            // Inverse transform: -mean × ln(U) with U in (0, 1].
            LatencyDist::Exponential => -mean * (1.0 - rng.gen::<f64>()).ln(),
        };
        Duration::from_secs_f64(secs)
    }
}

/// A partition: destination → the sources whose messages it drops. Empty
/// means the network is whole.
pub type Grudge = HashMap<String, HashSet<String>>;

/// Message counts, as Maelstrom's `:net` stats report them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Messages sent.
    pub send_count: u64,
    /// Messages delivered.
    pub recv_count: u64,
}

/// Counts for all messages, those involving a client, and those between
/// nodes only.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NetStats {
    /// Every message.
    pub all: Counts,
    /// Messages to or from a client.
    pub clients: Counts,
    /// Messages between two nodes.
    pub servers: Counts,
    /// Node-to-node messages dropped by a partition.
    pub dropped: u64,
}

impl NetStats {
    fn sent(&mut self, m: &Message) {
        self.all.send_count += 1;
        if is_client(&m.src) || is_client(&m.dest) {
            self.clients.send_count += 1;
        } else {
            self.servers.send_count += 1;
        }
    }

    fn received(&mut self, m: &Message) {
        self.all.recv_count += 1;
        if is_client(&m.src) || is_client(&m.dest) {
            self.clients.recv_count += 1;
        } else {
            self.servers.recv_count += 1;
        }
    }
}

/// A message waiting in the delivery queue, ordered by delivery time, then
/// by sending order so that equal times keep the order of sending.
#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What the network shares between the router task, the node readers, the
/// clients and the nemesis.
struct Shared {
    grudge: Grudge,
    /// Each node's stdin, as a channel of lines to its writer task.
    nodes: HashMap<String, mpsc::UnboundedSender<String>>,
    /// Every client name ever handed out: a reply to one that has gone is
    /// still a valid destination (it is discarded).
    known_clients: HashSet<String>,
    /// The clients listening now.
    clients: HashMap<String, mpsc::UnboundedSender<Message>>,
    stats: NetStats,
    rng: StdRng,
    latency: Latency,
}

/// A handle on the network; cheap to clone.
#[derive(Clone)]
pub struct Net {
    shared: Arc<Mutex<Shared>>,
    queue: mpsc::UnboundedSender<Queued>,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

impl Net {
    /// Creates the network and spawns its router task (which ends when
    /// every handle is dropped). `nodes` maps each node name to its stdin.
    pub fn start(
        latency: Latency,
        rng: StdRng,
        nodes: HashMap<String, mpsc::UnboundedSender<String>>,
    ) -> Net {
        let shared = Arc::new(Mutex::new(Shared {
            grudge: Grudge::new(),
            nodes,
            known_clients: HashSet::new(),
            clients: HashMap::new(),
            stats: NetStats::default(),
            rng,
            latency,
        }));
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(route(rx, shared.clone()));
        Net { shared, queue, seq: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic elsewhere must not hide the network's counts.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `dest` is a destination a node may address: a node, or a
    /// client that exists or existed.
    pub fn is_known(&self, dest: &str) -> bool {
        let shared = self.lock();
        shared.nodes.contains_key(dest) || shared.known_clients.contains(dest)
    }

    /// Registers a client under `name`; replies to it arrive on the
    /// returned channel until [`Net::leave`].
    pub fn join(&self, name: &str) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = self.lock();
        shared.known_clients.insert(name.to_owned());
        shared.clients.insert(name.to_owned(), tx);
        rx
    }

    /// Stops listening for `name`; later replies to it are discarded.
    pub fn leave(&self, name: &str) {
        self.lock().clients.remove(name);
    }

    /// Sends a message: at once to a client, after the latency to a node
    /// (at once if it comes from a client).
    pub fn send(&self, msg: Message) {
        let mut shared = self.lock();
        shared.stats.sent(&msg);
        if is_client(&msg.dest) {
            shared.stats.received(&msg);
            if let Some(client) = shared.clients.get(&msg.dest) {
                // A client that has just gone is not an error.
                let _ = client.send(msg);
            }
            return;
        }
        let delay = if is_client(&msg.src) {
            Duration::ZERO
        } else {
            let latency = shared.latency;
            latency.sample(&mut shared.rng)
        };
        drop(shared);
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The router only stops when every handle is gone.
        let _ = self.queue.send(Queued { at: Instant::now() + delay, seq, msg });
    }

    /// Replaces the partition; an empty grudge heals the network.
    pub fn set_grudge(&self, grudge: Grudge) {
        self.lock().grudge = grudge;
    }

    /// The message counts so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }
}

/// The router: holds node-bound messages until their delivery time, then
/// drops them if a partition separates sender and receiver, or writes them
/// to the receiver's stdin.
async fn route(mut rx: mpsc::UnboundedReceiver<Queued>, shared: Arc<Mutex<Shared>>) {
    let mut heap: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse(q)| q.at);
        tokio::select! {
            incoming = rx.recv() => match incoming {
                Some(q) => heap.push(Reverse(q)),
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
                while heap.peek().is_some_and(|Reverse(q)| q.at <= now) {
                    let Some(Reverse(q)) = heap.pop() else { break };
                    deliver(&mut shared, q.msg);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn deliver(shared: &mut Shared, msg: Message) {
    if shared.grudge.get(&msg.dest).is_some_and(|srcs| srcs.contains(&msg.src)) {
        shared.stats.dropped += 1;
        return;
    }
    shared.stats.received(&msg);
    let Some(stdin) = shared.nodes.get(&msg.dest) else { return };
    match serde_json::to_string(&msg) {
        // A node that has exited no longer reads; its messages vanish.
        Ok(line) => {
            let _ = stdin.send(line);
        }
        Err(e) => tracing::error!(error = %e, "cannot serialize a message"),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn latency_means_are_close_to_the_configured_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        for dist in [LatencyDist::Constant, LatencyDist::Uniform, LatencyDist::Exponential] {
            let latency = Latency { mean: Duration::from_millis(10), dist };
            let total: f64 = (0..20_000).map(|_| latency.sample(&mut rng).as_secs_f64()).sum();
            let mean_ms = total / 20_000.0 * 1000.0;
            assert!((9.5..10.5).contains(&mean_ms), "{dist:?}: mean {mean_ms} ms");
        }
    }

    #[tokio::test]
    async fn partition_drops_queued_messages_at_delivery_time() {
        let (n1_tx, mut n1_rx) = mpsc::unbounded_channel();
        let (n0_tx, _n0_rx) = mpsc::unbounded_channel();
        let nodes = HashMap::from([("n0".to_owned(), n0_tx), ("n1".to_owned(), n1_tx)]);
        let latency = Latency { mean: Duration::from_millis(50), dist: LatencyDist::Constant };
        let net = Net::start(latency, StdRng::seed_from_u64(1), nodes);
        let msg = |i: u64| Message {
            src: "n0".into(),
            dest: "n1".into(),
            body: serde_json::json!({"type": "x", "i": i}),
        };
        net.send(msg(1));
        // Sent while whole, partitioned before delivery: dropped.
        net.set_grudge(Grudge::from([("n1".to_owned(), HashSet::from(["n0".to_owned()]))]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        net.set_grudge(Grudge::new());
        net.send(msg(2));
        let line = tokio::time::timeout(Duration::from_secs(2), n1_rx.recv()).await.unwrap().unwrap();
        assert!(line.contains("\"i\":2"), "{line}");
        assert!(n1_rx.try_recv().is_err());
        let stats = net.stats();
        assert_eq!((stats.dropped, stats.servers.send_count, stats.servers.recv_count), (1, 2, 1));
    }
}
