//! Watching the nodes: every node's status, polled throughout the run.
//!
//! The samples feed the leader checker ([`jepsen_checker::checker::leaders`]: at
//! most one leader per term), tell the nemesis who leads (to isolate,
//! kill or pause the leader), and at the end decide convergence.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jepsen_checker::checker::convergence::FinalStatus;
use jepsen_checker::checker::leaders::StatusSample;
use jepsen_checker::checker::lease::LEADER_SEEN;
use jepsen_checker::history::{EventType, Function, Process, Recorder};
use serde_json::{json, Value};

use super::client::Http;
use super::nemesis::LeaderView;

/// How often every node is asked.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// Polls every node's status until `stop`, returning every answer. With
/// `record_leaders`, every answer that says "leader" is also a
/// `leader-seen` nemesis event in the history, stamped when it arrived and
/// holding when it was requested (`sent`), the node and its term: the lease
/// check proves a steady leader from them
/// ([`jepsen_checker::checker::lease`]).
pub async fn poll(
    http: Http,
    nodes: Vec<String>,
    rec: Recorder,
    leader: Arc<LeaderView>,
    stop: Arc<tokio::sync::Notify>,
    record_leaders: bool,
) -> Vec<StatusSample> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.notified() => break,
        }
        let mut asks = tokio::task::JoinSet::new();
        for addr in &nodes {
            let (http, addr, rec, leader, samples) =
                (http.clone(), addr.clone(), rec.clone(), leader.clone(), samples.clone());
            asks.spawn(async move {
                let sent = rec.elapsed_nanos();
                if let Ok(s) = http.status(&addr).await {
                    if s.role == "leader" {
                        leader.saw(s.term, s.id);
                        if record_leaders {
                            let value = json!({"node": s.id, "term": s.term, "sent": sent});
                            let f = Function::Other(LEADER_SEEN.into());
                            rec.record(Process::Nemesis, EventType::Info, f, Value::Null, value);
                        }
                    }
                    let sample = StatusSample {
                        time: rec.elapsed_nanos(),
                        node: s.id,
                        term: s.term,
                        role: s.role,
                        leader: s.leader,
                    };
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
                }
            });
        }
        while asks.join_next().await.is_some() {}
    }
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner());
    samples.clone()
}

/// Waits until every node reports the same applied index and state digest
/// (or `within` passes), and returns each node's last answer.
pub async fn converge(http: &Http, nodes: &[String], within: Duration) -> Vec<FinalStatus> {
    let deadline = Instant::now() + within;
    loop {
        let mut statuses = Vec::new();
        for addr in nodes {
            if let Ok(s) = http.status(addr).await {
                statuses.push(FinalStatus {
                    node: s.id,
                    applied_index: s.applied_index,
                    state_digest: s.state_digest,
                });
            }
        }
        let agreed = statuses.len() == nodes.len()
            && statuses.windows(2).all(|w| {
                (w[0].applied_index, &w[0].state_digest) == (w[1].applied_index, &w[1].state_digest)
            });
        if agreed || Instant::now() >= deadline {
            return statuses;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
