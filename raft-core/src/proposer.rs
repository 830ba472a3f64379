//! Group commit: many concurrent writes, one log entry.
//!
//! Every log append costs an fsync on the leader and on each follower.
//! Proposing every client command as its own log entry would spend one
//! entry (its log id, its encoding, its place in an AppendEntries) per
//! command, however many clients wait. The proposer instead collects the
//! commands that arrive while earlier ones are being replicated and proposes
//! them together, as one [`Batch`] entry: one append, one fsync per node, one
//! AppendEntries round for all of them. Under light load a batch holds one
//! command and nothing waits; under heavy load batches grow, and throughput
//! with them. (The log store batches further: every append that queues up
//! during an fsync shares the next one, see [`crate::storage::log_store`].)
//!
//! At most `max_inflight_batches` batches (default 1) are being committed at
//! once; the next batch accumulates while they are. While the leader hands
//! its office off ([`crate::handoff`]), nothing new is proposed.
//!
//! # What the caller learns
//!
//! Each command gets its own outcome. [`WriteError::NotLeader`] always means
//! "not proposed": the proposer checks that this node still leads right
//! before proposing, and openraft answers `ForwardToLeader` only to a write
//! it did not append (a leader that loses office with the entry in its log
//! answers `LogEntryDiscarded` once the entry is truncated). After the entry
//! is appended, anything but a response is [`WriteError::Indeterminate`]
//! (see [`crate::RaftNode::write`]).

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver as _;
use openraft::error::{ClientWriteError, ForwardToLeader};
use openraft::raft::ClientWriteResult;
use openraft::ServerState;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{LeaderHint, WriteError};
use crate::handoff::Gate;
use crate::types::{Batch, CallbackResponder, CommittedLeaderId, LogId, Raft, RaftMetrics, TypeConfig};

/// The outcome of one proposed command: where it was committed and its
/// encoded response.
pub(crate) type Outcome = Result<(LogId, ByteBuf), WriteError>;

struct Proposal {
    command: Vec<u8>,
    reply: oneshot::Sender<Outcome>,
}

/// The handle of the batching task.
pub(crate) struct Proposer {
    tx: mpsc::Sender<Proposal>,
    task: JoinHandle<()>,
}

impl Proposer {
    pub(crate) fn spawn(raft: Raft, config: &Config, gate: Gate) -> Self {
        let (tx, rx) = mpsc::channel(config.max_batch_commands.max(1) * 4);
        let limits = Limits {
            commands: config.max_batch_commands.max(1),
            bytes: config.max_batch_bytes.max(1),
            inflight: config.max_inflight_batches.max(1),
        };
        Proposer { tx, task: tokio::spawn(run(raft, rx, limits, gate)) }
    }

    /// Queues an encoded command; the receiver yields its outcome.
    pub(crate) async fn propose(&self, command: Vec<u8>) -> Result<oneshot::Receiver<Outcome>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Proposal { command, reply }).await.map_err(|_| WriteError::ShuttingDown)?;
        Ok(rx)
    }

    pub(crate) fn shutdown(&self) {
        self.task.abort();
    }
}

struct Limits {
    commands: usize,
    bytes: usize,
    inflight: usize,
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Proposal>, limits: Limits, gate: Gate) {
    let inflight = Arc::new(Semaphore::new(limits.inflight));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = inflight.clone().acquire_owned().await else { return };
        // Take everything that queued up meanwhile, within the limits.
        // Callers that gave up waiting are dropped here, unproposed.
        let mut bytes = first.command.len();
        let mut batch = vec![first];
        while batch.len() < limits.commands && bytes < limits.bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.command.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        // A handoff holds new proposals until it is over (a batch that
        // queued up before it closed the gate included): the successor must
        // catch up with a log that has stopped growing.
        gate.wait_open().await;
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // Leadership may have moved while the batch waited. The term we
        // lead in goes with the proposal: openraft refuses it, unproposed,
        // if the leader has changed by the time it looks.
        let term = match leading_term(&raft).await {
            Ok(term) => term,
            Err(leader) => {
                for p in batch {
                    let _ = p.reply.send(Err(WriteError::NotLeader { leader: leader.clone() }));
                }
                continue;
            }
        };
        let (commands, replies): (Vec<ByteBuf>, Vec<oneshot::Sender<Outcome>>) =
            batch.into_iter().map(|p| (ByteBuf::from(p.command), p.reply)).unzip();
        tracing::trace!(commands = commands.len(), "proposing batch");
        // Each writer is answered straight from where openraft completes the
        // batch (the state machine's apply), and only then may the next
        // batch go.
        let responder = CallbackResponder::new(move |result| {
            answer(replies, result);
            drop(permit);
        });
        let proposed =
            raft.write(Batch(commands)).with_leader(CommittedLeaderId::new(term)).responder(responder).await;
        if let Err(e) = proposed {
            // The core has stopped; it dropped the responder, and with it
            // every writer's channel (they see the node stopping).
            tracing::debug!(error = %e, "proposing a batch failed: raft stopped");
            return;
        }
    }
}

/// How long a new leader's batch may wait until the leader may take writes.
/// Both steps below take one round (an fsync, one AppendEntries round trip);
/// this bounds a stuck disk or a leader cut off right after its election.
const NEW_LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The term this node leads in, or the hint of who leads instead.
///
/// Winning an election is not yet enough for openraft to take a write. The
/// leader's vote counts as *committed* (and a write pinned to its term is
/// accepted) only once the leader has saved it to its own disk; and the
/// leader accepts writes only while it holds a lease, which begins when a
/// majority first acknowledges an AppendEntries of the new term. A batch
/// that arrives in between (from a client that saw the new leader in the
/// metrics) waits for both instead of being refused: refusing would send
/// the client away from the one node that is about to take its write.
async fn leading_term(raft: &Raft) -> Result<u64, Option<LeaderHint>> {
    let check = |m: &RaftMetrics| match m.state {
        ServerState::Leader => {
            let alone = m.membership_config.membership().voter_ids().eq([m.id]);
            let acknowledged = m.last_quorum_acked.is_some() || alone;
            (m.vote.is_committed() && acknowledged).then_some(Ok(m.current_term))
        }
        _ => Some(Err(leader_hint(m))),
    };
    if let Some(known) = check(&raft.metrics().borrow_watched()) {
        return known;
    }
    let settled =
        raft.wait(Some(NEW_LEADER_WAIT)).metrics(|m| check(m).is_some(), "the new leader may write").await;
    // After the wait, a leader proposes anyway and openraft refuses the
    // batch, unproposed, if it still may not write.
    let m = match settled {
        Ok(m) => m,
        Err(_) => raft.metrics().borrow_watched().clone(),
    };
    match m.state {
        ServerState::Leader => Ok(m.current_term),
        _ => Err(leader_hint(&m)),
    }
}

/// Sends each writer of a batch its outcome.
fn answer(replies: Vec<oneshot::Sender<Outcome>>, result: ClientWriteResult<TypeConfig>) {
    let n = replies.len();
    let indeterminate =
        |reason: String, leader: Option<LeaderHint>| WriteError::Indeterminate { reason, leader };
    let failure = match result {
        Ok(resp) if resp.data.0.len() == n => {
            for (reply, data) in replies.into_iter().zip(resp.data.0) {
                let _ = reply.send(Ok((resp.log_id, data)));
            }
            return;
        }
        Ok(resp) => indeterminate(
            format!("invariant: {n} commands applied with {} responses", resp.data.0.len()),
            None,
        ),
        // Refused before it was appended: certainly not applied.
        Err(ClientWriteError::ForwardToLeader(f)) => WriteError::NotLeader { leader: forward_hint(&f) },
        Err(ClientWriteError::LogEntryDiscarded(f)) => {
            indeterminate("leadership changed after the command was proposed".into(), forward_hint(&f))
        }
        Err(e) => indeterminate(e.to_string(), None),
    };
    for reply in replies {
        let _ = reply.send(Err(failure.clone()));
    }
}

/// The leader an openraft `ForwardToLeader` names, if any.
pub(crate) fn forward_hint(f: &ForwardToLeader<TypeConfig>) -> Option<LeaderHint> {
    f.leader_id.map(|id| LeaderHint { id, node: f.leader_node.clone() })
}

pub(crate) fn leader_hint(m: &RaftMetrics) -> Option<LeaderHint> {
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id).cloned();
    Some(LeaderHint { id, node })
}
