//! The watch workload's watchers: each follows the prefix the writers
//! change, from a random node, and reconnects across faults.
//!
//! One connection is one `watch` operation in the history: its invocation
//! names the `from_index` asked for and the node, its completion holds what
//! the connection delivered (`events`, in the order received) and
//! `through`, the index through which the watcher knows it has everything:
//!
//! * every index before an event's (the server sends indexes in order);
//! * a progress line's `progress_index`;
//! * the index before an end line's `resume_index`.
//!
//! The watcher then reconnects to another random node from `through + 1`.
//! The changes of one index are sent in one piece, but a connection that
//! breaks mid-piece may deliver only some of them: `through` never counts
//! an index until something after it arrived, so the next connection asks
//! for that index again and the checker judges the partial one as a prefix.
//! A connection that goes silent for [`IDLE`] (a node cut off by a
//! partition, or paused) is dropped; the nodes send a progress line every
//! [`PROGRESS_MS`] ms when idle, so a healthy one never is.
//!
//! A `410 compacted` answer means the history this watcher needs is gone on
//! that node. Another node may still have it, so the watcher tries the
//! others first; only when every node refuses does it start over as a new
//! watcher (a new process in the history) from the oldest index offered,
//! which is what a real client does after reading a snapshot.
//!
//! After the faults end and the cluster heals, every watcher catches up to
//! the highest committed index any node reports ([`Watcher::catch_up`]), so
//! that the checker sees every change the writers made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jepsen_checker::checker::watch::WATCH;
use jepsen_checker::history::{EventType, Function, Process};
use kv_client::api::{codes, WatchEnd, WatchEvent, WatchLine};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::workload::{Shared, WATCH_PREFIX};

/// A connection that sends nothing for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(3);

/// The progress interval the nodes of a watch run are started with
/// (`kv-server --watch-progress-ms`).
pub const PROGRESS_MS: u64 = 300;

/// One watcher: its identity in the history and where it resumes.
pub struct Watcher {
    /// Its current process id (a new one only after every node refused
    /// its place).
    pub process: u64,
    /// The `from_index` of its next connection.
    pub from: u64,
    /// Its random choices of node.
    pub rng: StdRng,
    /// Nodes that answered `410` in a row, for the current `from`.
    refused: usize,
}

/// How a connection ended.
struct Delivery {
    events: Vec<Value>,
    through: u64,
    end: String,
    /// From a `410` (or a `compacted` end line): the oldest index the node
    /// still has.
    oldest: Option<u64>,
}

impl Watcher {
    /// A watcher that starts from index 1, as process `process`.
    pub fn new(process: u64, rng: StdRng) -> Watcher {
        Watcher { process, from: 1, rng, refused: 0 }
    }

    /// Follows the prefix until `stop`, one connection after another.
    pub async fn run(mut self, shared: Arc<Shared>, stop: Instant) -> Watcher {
        while Instant::now() < stop {
            self.connect(&shared, stop, None).await;
        }
        self
    }

    /// Connects until it has everything through `target`, or `deadline`
    /// passes.
    pub async fn catch_up(&mut self, shared: &Shared, target: u64, deadline: Instant) {
        while self.from <= target && Instant::now() < deadline {
            self.connect(shared, deadline, Some(target)).await;
        }
    }

    /// One connection to a random node, recorded as one `watch` operation.
    async fn connect(&mut self, shared: &Shared, until: Instant, target: Option<u64>) {
        let node_idx = self.rng.gen_range(0..shared.nodes.len());
        let node = node_idx as u64 + 1;
        let process = Process::Client(self.process.into());
        let f = Function::Other(WATCH.into());
        let mut extra = Map::new();
        extra.insert("node".into(), json!(node));
        shared.rec.record_with(
            process.clone(),
            EventType::Invoke,
            f.clone(),
            json!(WATCH_PREFIX),
            json!({ "from_index": self.from }),
            extra.clone(),
        );
        let delivery = stream(shared, &shared.nodes[node_idx], self.from, until, target).await;
        let value = json!({
            "from_index": self.from,
            "through": delivery.through,
            "events": delivery.events,
            "end": delivery.end,
        });
        shared.rec.record_with(process, EventType::Ok, f, json!(WATCH_PREFIX), value, extra);

        if let Some(oldest) = delivery.oldest.filter(|&o| o > self.from && delivery.through < self.from) {
            self.refused += 1;
            if self.refused >= shared.nodes.len() {
                // Every node has dropped this place: start over as a new
                // watcher from what they still have.
                self.process = shared.new_process();
                self.from = oldest;
                self.refused = 0;
            }
        } else {
            self.refused = 0;
            self.from = self.from.max(delivery.through + 1);
        }
        if delivery.through < self.from && Instant::now() < until {
            // Nothing new from this node: give the cluster a moment.
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(50..250))).await;
        }
    }
}

/// Reads one watch from `from` on `addr` until `until`, until it has
/// everything through `target`, or until the connection ends.
async fn stream(shared: &Shared, addr: &str, from: u64, until: Instant, target: Option<u64>) -> Delivery {
    let mut d = Delivery { events: Vec::new(), through: from - 1, end: String::new(), oldest: None };
    let mut resp = match shared.http.watch(addr, WATCH_PREFIX, from).await {
        Ok(resp) => resp,
        Err((status, failure, body)) => {
            if status == 410 {
                d.oldest = serde_json::from_slice::<WatchEnd>(&body).ok().and_then(|e| e.oldest_index);
            }
            d.end = failure.error;
            return d;
        }
    };
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        if target.is_some_and(|t| d.through >= t) {
            d.end = "caught up".into();
            return d;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            d.end = "stopped".into();
            return d;
        }
        let chunk = match tokio::time::timeout(left.min(IDLE), resp.chunk()).await {
            Err(_) if left <= IDLE => {
                d.end = "stopped".into();
                return d;
            }
            Err(_) => {
                d.end = "idle".into();
                return d;
            }
            Ok(Err(e)) => {
                d.end = format!("read: {e}");
                return d;
            }
            Ok(Ok(None)) => {
                d.end = "closed".into();
                return d;
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        buffer.extend_from_slice(&chunk);
        while let Some(newline) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            match WatchLine::parse(line) {
                Ok(WatchLine::Event(e)) => {
                    d.through = d.through.max(e.index.saturating_sub(1));
                    d.events.push(event_json(&e));
                }
                Ok(WatchLine::Progress(p)) => d.through = d.through.max(p.progress_index),
                Ok(WatchLine::End(end)) => {
                    if let Some(resume) = end.resume_index {
                        d.through = d.through.max(resume.saturating_sub(1));
                    }
                    if end.error == codes::COMPACTED {
                        d.oldest = end.oldest_index;
                    }
                    d.end = end.error;
                    return d;
                }
                Err(e) => {
                    // Kept in the history as an event the checker cannot
                    // read: a malformed line is the server's bug.
                    d.events.push(json!({ "unreadable": String::from_utf8_lossy(line), "error": e }));
                    d.end = "unreadable line".into();
                    return d;
                }
            }
        }
    }
}

/// An event as the history records it: values as the writers wrote them
/// (decimal numbers), `prev_value` null when the key did not exist.
fn event_json(e: &WatchEvent) -> Value {
    let text = |v: &Option<Vec<u8>>| match v {
        None => Value::Null,
        Some(bytes) => super::workload::parse_value(&String::from_utf8_lossy(bytes)),
    };
    let mut event = json!({ "index": e.index, "op": e.op.name(), "key": e.key, "value": text(&e.value) });
    if let Some(prev) = &e.prev_value {
        event["prev_value"] = text(prev);
    }
    event
}
