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
//! once; the next batch accumulates while they are. A batch that holds a
//! write at `leader` durability ([`crate::RaftNode::write_logged`]) stops
//! counting once it is durable in the leader's log: its writers wait for
//! nothing more, so the leader may run ahead of its followers, which is
//! what that durability means. While the leader hands its office off
//! ([`crate::handoff`]), nothing new is proposed.
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

use std::sync::{Arc, Mutex};

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

/// Where the outcome of a logged write goes: its log id once the entry is
/// durable in the leader's own log.
pub(crate) type LoggedOutcome = Result<LogId, WriteError>;

struct Proposal {
    command: Vec<u8>,
    reply: Reply,
}

/// When a proposal's writer is answered.
enum Reply {
    /// Once the command is applied, with its response.
    Applied(oneshot::Sender<Outcome>),
    /// Once the entry holding it is durable in this (the leader's) log.
    Logged(oneshot::Sender<LoggedOutcome>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Applied(tx) => tx.is_closed(),
            Reply::Logged(tx) => tx.is_closed(),
        }
    }
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

    /// Queues an encoded command; the receiver yields its outcome once it
    /// is applied.
    pub(crate) async fn propose(&self, command: Vec<u8>) -> Result<oneshot::Receiver<Outcome>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Proposal { command, reply: Reply::Applied(tx) }).await?;
        Ok(rx)
    }

    /// Queues an encoded command; the receiver yields its log id once the
    /// entry holding it is durable in this node's log (or why it is not).
    pub(crate) async fn propose_logged(
        &self,
        command: Vec<u8>,
    ) -> Result<oneshot::Receiver<LoggedOutcome>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.queue(Proposal { command, reply: Reply::Logged(tx) }).await?;
        Ok(rx)
    }

    async fn queue(&self, p: Proposal) -> Result<(), WriteError> {
        self.tx.send(p).await.map_err(|_| WriteError::ShuttingDown)
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
                let (_, replies, logged) = split(batch);
                answer(replies, &logged, Err(WriteError::NotLeader { leader }));
                continue;
            }
        };
        let (commands, replies, logged) = split(batch);
        tracing::trace!(commands = commands.len(), "proposing batch");
        // Writers waiting for the entry to be durable here are answered
        // when the log store says so (see `Batch`), or when the batch
        // completes, whichever comes first. Such a batch also lets the next
        // one go at that point: its writers wait for nothing more, and the
        // next batch's own fsync may as well start.
        let permit = Arc::new(Mutex::new(Some(permit)));
        let batch = if logged.is_waiting() {
            let (batch, durable) = Batch::noted(commands);
            let (waiting, permit) = (logged.clone(), permit.clone());
            tokio::spawn(async move {
                if let Ok(log_id) = durable.await {
                    waiting.answer(|| Ok(log_id));
                    release(&permit);
                }
            });
            batch
        } else {
            Batch::new(commands)
        };
        // Every other writer is answered straight from where openraft
        // completes the batch (the state machine's apply), and only then
        // may the next batch go.
        let responder = CallbackResponder::new(move |result: ClientWriteResult<TypeConfig>| {
            answer(replies, &logged, result.map_err(failure));
            release(&permit);
        });
        let proposed = raft.write(batch).with_leader(CommittedLeaderId::new(term)).responder(responder).await;
        if let Err(e) = proposed {
            // The core has stopped; it dropped the responder, and with it
            // every writer's channel (they see the node stopping).
            tracing::debug!(error = %e, "proposing a batch failed: raft stopped");
            return;
        }
    }
}

/// Lets the next batch go, if that has not happened yet.
fn release(permit: &Mutex<Option<tokio::sync::OwnedSemaphorePermit>>) {
    drop(permit.lock().unwrap_or_else(|e| e.into_inner()).take());
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

/// A batch's commands; the writers waiting for the apply, in command
/// order (`None` where the writer waits for the log); and those waiting
/// for the log.
fn split(batch: Vec<Proposal>) -> (Vec<ByteBuf>, Vec<Option<oneshot::Sender<Outcome>>>, Logged) {
    let logged = Logged::default();
    let mut commands = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        commands.push(ByteBuf::from(p.command));
        replies.push(match p.reply {
            Reply::Applied(tx) => Some(tx),
            Reply::Logged(tx) => {
                logged.0.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
                None
            }
        });
    }
    (commands, replies, logged)
}

/// The writers of a batch who wait for it to be durable in this log. The
/// first of the log store's note and the batch's completion answers them.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<oneshot::Sender<LoggedOutcome>>>>);

impl Logged {
    fn is_waiting(&self) -> bool {
        !self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    fn answer(&self, outcome: impl Fn() -> LoggedOutcome) {
        let waiting = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for tx in waiting {
            let _ = tx.send(outcome());
        }
    }
}

/// What a batch's failure means to each of its writers.
fn failure(e: ClientWriteError<TypeConfig>) -> WriteError {
    let indeterminate =
        |reason: String, leader: Option<LeaderHint>| WriteError::Indeterminate { reason, leader };
    match e {
        // Refused before it was appended: certainly not applied.
        ClientWriteError::ForwardToLeader(f) => WriteError::NotLeader { leader: forward_hint(&f) },
        ClientWriteError::LogEntryDiscarded(f) => {
            indeterminate("leadership changed after the command was proposed".into(), forward_hint(&f))
        }
        e => indeterminate(e.to_string(), None),
    }
}

/// Sends each writer of a batch its outcome: those waiting for the apply
/// their own response, those waiting for the log the log id (the entry
/// is committed, so durable here or on a majority, which is more).
fn answer(
    replies: Vec<Option<oneshot::Sender<Outcome>>>,
    logged: &Logged,
    result: Result<openraft::raft::ClientWriteResponse<TypeConfig>, WriteError>,
) {
    let n = replies.len();
    let result = match result {
        Ok(resp) if resp.data.0.len() == n => Ok(resp),
        Ok(resp) => Err(WriteError::Indeterminate {
            reason: format!("invariant: {n} commands applied with {} responses", resp.data.0.len()),
            leader: None,
        }),
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => {
            for (reply, data) in replies.into_iter().zip(resp.data.0) {
                if let Some(tx) = reply {
                    let _ = tx.send(Ok((resp.log_id, data)));
                }
            }
            logged.answer(|| Ok(resp.log_id));
        }
        Err(e) => {
            for tx in replies.into_iter().flatten() {
                let _ = tx.send(Err(e.clone()));
            }
            logged.answer(|| Err(e.clone()));
        }
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
