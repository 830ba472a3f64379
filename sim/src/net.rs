//! The simulated network between the nodes: every message's fate drawn from
//! the seed.
//!
//! A node sends through a [`SimTransport`], raft-core's [`Transport`] seam,
//! so everything above it (openraft, raft-core's connection handling,
//! backoff, timeouts) is the real code. A request and its answer each
//! cross the network after a latency drawn from [`NetFaults`], and each can
//! be lost; a lost message leaves the sender waiting until its own timeout,
//! as on a real network where nothing says a packet was dropped. A
//! request may also arrive twice (at once, or late, after newer ones:
//! that is how a retransmitted or delayed packet reorders a stream). A
//! duplicate's answer goes nowhere.
//!
//! Partitions are a set of cut directed links ([`SimNet::set_cuts`]); a
//! message on a cut link is lost, whether it was sent during the partition
//! or was in flight when it began. A crashed node is gone from the network
//! ([`SimNet::remove`]): messages to it fail at once, as a refused
//! connection does, and messages *from* it (sent before it died, still in
//! flight) never arrive, because each node's incarnation is numbered and a
//! message carries its sender's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft_core::network::{Inbox, Link, LinkError, RpcRequest, RpcResponse, Transport};
use raft_core::{Node, NodeId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::trace::Trace;

/// How the network misbehaves. Probabilities are per message.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NetFaults {
    /// The shortest one-way latency.
    pub latency_min: Duration,
    /// The longest one-way latency (uniform between the two).
    pub latency_max: Duration,
    /// A request or an answer is lost.
    pub drop: f64,
    /// A request is delivered twice, the copy at once.
    pub duplicate: f64,
    /// A request is delivered twice, the copy late (up to
    /// [`NetFaults::reorder_max`]), after newer requests on the same link.
    pub reorder: f64,
    /// The longest delay of a late copy.
    pub reorder_max: Duration,
}

impl NetFaults {
    /// A healthy network: latency only.
    pub fn healthy() -> NetFaults {
        NetFaults {
            latency_min: Duration::from_micros(100),
            latency_max: Duration::from_millis(2),
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_max: Duration::from_millis(400),
        }
    }

    /// A lossy network: what the `net` fault turns on while it lasts.
    pub fn lossy() -> NetFaults {
        NetFaults {
            drop: 0.05,
            duplicate: 0.02,
            reorder: 0.02,
            latency_max: Duration::from_millis(20),
            ..Self::healthy()
        }
    }
}

/// What the network did, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    /// Requests sent.
    pub sent: u64,
    /// Requests and answers lost to the `drop` probability.
    pub dropped: u64,
    /// Requests and answers lost on a cut link.
    pub cut: u64,
    /// Requests to a node that was down.
    pub refused: u64,
    /// Copies delivered at once.
    pub duplicated: u64,
    /// Copies delivered late.
    pub reordered: u64,
}

struct Peer {
    incarnation: u64,
    inbox: Arc<Inbox>,
}

struct State {
    rng: StdRng,
    faults: NetFaults,
    peers: BTreeMap<NodeId, Peer>,
    /// The incarnation each node is in (or was in, if it is down).
    incarnations: BTreeMap<NodeId, u64>,
    cuts: BTreeSet<(NodeId, NodeId)>,
    stats: NetStats,
}

/// The network of one simulated cluster. Cheap to clone.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
    trace: Trace,
}

/// The fate of one request, drawn when it is sent.
enum Fate {
    /// The receiver is down: the sender learns at once.
    Refused,
    /// Lost on the way there: the sender waits out its timeout.
    Lost,
    /// Delivered after `there`; the answer takes `back`, unless it is lost.
    Delivered { there: Duration, back: Duration, answer_lost: bool, copy: Option<Duration> },
}

impl SimNet {
    /// A network whose choices come from `seed`.
    pub fn new(seed: u64, faults: NetFaults, trace: Trace) -> SimNet {
        let state = State {
            rng: StdRng::seed_from_u64(seed),
            faults,
            peers: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            cuts: BTreeSet::new(),
            stats: NetStats::default(),
        };
        SimNet { state: Arc::new(Mutex::new(state)), trace }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects a new incarnation of node `id`, replacing any earlier one,
    /// and returns its number.
    pub fn add(&self, id: NodeId, inbox: Inbox) -> u64 {
        let mut s = self.lock();
        let incarnation = s.incarnations.get(&id).map_or(1, |i| i + 1);
        s.incarnations.insert(id, incarnation);
        s.peers.insert(id, Peer { incarnation, inbox: Arc::new(inbox) });
        incarnation
    }

    /// The incarnation number node `id`'s next [`SimNet::add`] will get.
    pub fn next_incarnation(&self, id: NodeId) -> u64 {
        self.lock().incarnations.get(&id).map_or(1, |i| i + 1)
    }

    /// Takes node `id` off the network: it crashed.
    pub fn remove(&self, id: NodeId) {
        self.lock().peers.remove(&id);
    }

    /// Cuts exactly these directed links, healing every other.
    pub fn set_cuts(&self, cuts: BTreeSet<(NodeId, NodeId)>) {
        self.lock().cuts = cuts;
    }

    /// Changes how the network misbehaves from now on.
    pub fn set_faults(&self, faults: NetFaults) {
        self.lock().faults = faults;
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// The transport of incarnation `incarnation` of node `id`.
    pub fn transport(&self, id: NodeId, incarnation: u64) -> SimTransport {
        SimTransport { net: self.clone(), from: id, incarnation }
    }

    fn latency(s: &mut State) -> Duration {
        let (min, max) = (s.faults.latency_min, s.faults.latency_max);
        if max > min {
            s.rng.gen_range(min..=max)
        } else {
            min
        }
    }

    /// Draws the fate of a request from `from` to `to`.
    fn fate(&self, to: NodeId) -> Fate {
        let mut s = self.lock();
        s.stats.sent += 1;
        if !s.peers.contains_key(&to) {
            s.stats.refused += 1;
            return Fate::Refused;
        }
        let drop = s.faults.drop;
        if drop > 0.0 && s.rng.gen_bool(drop) {
            s.stats.dropped += 1;
            return Fate::Lost;
        }
        let there = Self::latency(&mut s);
        let back = Self::latency(&mut s);
        let answer_lost = drop > 0.0 && s.rng.gen_bool(drop);
        let (dup, reorder, reorder_max) = (s.faults.duplicate, s.faults.reorder, s.faults.reorder_max);
        let copy = if dup > 0.0 && s.rng.gen_bool(dup) {
            s.stats.duplicated += 1;
            Some(Duration::ZERO)
        } else if reorder > 0.0 && s.rng.gen_bool(reorder) {
            s.stats.reordered += 1;
            Some(s.rng.gen_range(Duration::ZERO..=reorder_max))
        } else {
            None
        };
        if answer_lost {
            s.stats.dropped += 1;
        }
        Fate::Delivered { there, back, answer_lost, copy }
    }

    /// The receiver's inbox if a message from incarnation `incarnation` of
    /// `from` reaches `to` now: both alive, the link not cut.
    fn arrive(&self, from: NodeId, incarnation: u64, to: NodeId) -> Option<Arc<Inbox>> {
        let mut s = self.lock();
        let sender_alive = s.peers.get(&from).is_some_and(|p| p.incarnation == incarnation);
        if !sender_alive {
            return None;
        }
        if s.cuts.contains(&(from, to)) {
            s.stats.cut += 1;
            return None;
        }
        s.peers.get(&to).map(|p| p.inbox.clone())
    }
}

/// One node's side of the [`SimNet`].
pub struct SimTransport {
    net: SimNet,
    from: NodeId,
    incarnation: u64,
}

impl Transport for SimTransport {
    type Link = SimLink;

    fn link(&self, target: NodeId, _node: &Node) -> SimLink {
        SimLink { net: self.net.clone(), from: self.from, incarnation: self.incarnation, to: target }
    }
}

/// One node's link to one peer on the [`SimNet`].
pub struct SimLink {
    net: SimNet,
    from: NodeId,
    incarnation: u64,
    to: NodeId,
}

/// A short description of a request for the trace.
fn describe(request: &RpcRequest) -> String {
    match request {
        RpcRequest::AppendEntries(r) => format!(
            "append term={} prev={} n={} commit={}",
            r.vote.leader_id().term,
            r.prev_log_id.map_or(0, |l| l.index),
            r.entries.len(),
            r.leader_commit.map_or(0, |l| l.index)
        ),
        RpcRequest::Vote(r) => format!("vote term={}", r.vote.leader_id().term),
        RpcRequest::PreVote(r) => format!("prevote term={}", r.vote.leader_id().term),
        RpcRequest::SnapshotChunk(c) => format!("snapshot-chunk offset={} done={}", c.offset, c.done),
        RpcRequest::TransferLeader(_) => "transfer-leader".to_string(),
    }
}

impl Link for SimLink {
    async fn call(&mut self, request: &RpcRequest, timeout: Duration) -> Result<RpcResponse, LinkError> {
        let (from, to, net) = (self.from, self.to, self.net.clone());
        let what = describe(request);
        match net.fate(to) {
            Fate::Refused => {
                net.trace.line(format_args!("net {from}->{to} refused {what}"));
                Err(LinkError::Unreachable(format!("node {to} is down").into()))
            }
            Fate::Lost => {
                net.trace.line(format_args!("net {from}->{to} lost {what}"));
                tokio::time::sleep(timeout).await;
                Err(LinkError::Timeout(timeout))
            }
            Fate::Delivered { there, back, answer_lost, copy } => {
                let incarnation = self.incarnation;
                let exchange = async {
                    tokio::time::sleep(there).await;
                    let Some(inbox) = net.arrive(from, incarnation, to) else {
                        net.trace.line(format_args!("net {from}->{to} cut {what}"));
                        return std::future::pending().await;
                    };
                    net.trace.line(format_args!("net {from}->{to} deliver {what}"));
                    if let Some(delay) = copy {
                        let (net, request, what) = (net.clone(), request.clone(), what.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            if let Some(inbox) = net.arrive(from, incarnation, to) {
                                net.trace.line(format_args!("net {from}->{to} copy {what}"));
                                inbox.serve(from, request).await;
                            }
                        });
                    }
                    let answer = inbox.serve(from, request.clone()).await;
                    tokio::time::sleep(back).await;
                    if answer_lost || net.arrive(to, net.incarnation_of(to), from).is_none() {
                        net.trace.line(format_args!("net {to}->{from} answer lost {what}"));
                        return std::future::pending().await;
                    }
                    net.trace.line(format_args!("net {to}->{from} answer {what}"));
                    answer
                };
                tokio::time::timeout(timeout, exchange).await.map_err(|_| LinkError::Timeout(timeout))
            }
        }
    }
}

impl SimNet {
    /// Whether a message from `from` to `to` would cross now: `to` is up
    /// and the link is not cut. (The latency and loss of a real message
    /// are not drawn: for the client path's one hop between nodes.)
    pub fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        let s = self.lock();
        s.peers.contains_key(&to) && !s.cuts.contains(&(from, to))
    }

    /// The incarnation node `id` is in now (0 if never started).
    fn incarnation_of(&self, id: NodeId) -> u64 {
        self.lock().incarnations.get(&id).copied().unwrap_or(0)
    }
}
