//! ReadIndex batching: many concurrent linearizable reads, one round of
//! leadership confirmation.
//!
//! A linearizable read on the leader needs two facts established *after*
//! the read arrived: the index every acknowledged write has reached (the
//! leader's commit index, the *read index*), and that this node is still
//! the leader, confirmed by a quorum answering a heartbeat. openraft's
//! `get_read_log_id` does both, and sends a heartbeat to every voter for
//! each call: at 64 concurrent reads that is 64 heartbeat rounds where one
//! would do.
//!
//! The batcher runs rounds one after another. A reader joins the *next*
//! round, never the one in flight: the round in flight may have read the
//! commit index and sent its heartbeats before the reader arrived, and a
//! write acknowledged in between would then be missing from its answer.
//! Every reader waiting when a round starts shares that round, so under
//! load one quorum round serves every read that arrived during the previous
//! one, and a lone reader waits for at most one round it did not need.
//!
//! This is the batching etcd's `linearizableReadLoop` does, and that the
//! Raft thesis (§6.4) suggests.
//!
//! # A leader that survives its own restart
//!
//! The thesis also requires that a leader know the commit index before it
//! serves reads: a newly elected leader first commits a blank entry of its
//! term. openraft 0.9 lets a leader whose whole cluster restarted resume in
//! its old term without an election, and then it knows only the commit
//! index it last saved, which lags what it acknowledged before the crash
//! (it is saved with the next log append, not with its own fsync). Its read
//! index would miss writes it acknowledged, and a read in the first few
//! milliseconds after the restart returned the value from before one: the
//! Jepsen harness caught this after a kill of every node. So the batcher
//! remembers the term the node restarted in and its last log index then:
//! while the node still leads in that term, the read index is at least that
//! index. Every write acknowledged before the restart is in that prefix of
//! the leader's own log (a leader acknowledges only what it has appended),
//! and those entries commit as soon as a follower catches up; in any later
//! term the new leader's blank entry does the job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use crate::error::{LeaderHint, ReadError};
use crate::types::Raft;

type Reply = oneshot::Sender<Result<u64, ReadError>>;

/// What a node's durable log said when it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestoredLog {
    /// The term of its stored vote.
    pub(crate) term: u64,
    /// Its last log index.
    pub(crate) last_index: u64,
}

#[derive(Default)]
struct Queue {
    /// Readers waiting for the next round.
    waiting: Vec<Reply>,
    /// Whether the task running rounds is alive.
    running: bool,
}

/// Coalesces concurrent read-index requests into shared rounds.
#[derive(Clone)]
pub(crate) struct ReadBatcher {
    raft: Raft,
    /// The term of the vote this node restarted with, and its last log
    /// index then (see the module docs).
    restored: Option<RestoredLog>,
    timeout: Duration,
    queue: Arc<Mutex<Queue>>,
    rounds: Arc<std::sync::atomic::AtomicU64>,
}

impl ReadBatcher {
    pub(crate) fn new(raft: Raft, timeout: Duration, restored: Option<RestoredLog>) -> Self {
        ReadBatcher { raft, restored, timeout, queue: Arc::default(), rounds: Arc::default() }
    }

    /// How many quorum rounds have run (for tests and metrics).
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The read index of a round that started after this call: on the
    /// leader, the commit index at that moment, with leadership confirmed
    /// by a quorum.
    pub(crate) async fn read_index(&self) -> Result<u64, ReadError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(self.clone().run_rounds());
        }
        rx.await.unwrap_or(Err(ReadError::ShuttingDown))
    }

    /// Runs rounds until nobody waits.
    async fn run_rounds(self) {
        loop {
            let readers = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            self.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = self.round().await;
            for reader in readers {
                let _ = reader.send(result.clone());
            }
        }
    }

    /// One round: openraft reads the commit index and confirms leadership.
    async fn round(&self) -> Result<u64, ReadError> {
        match tokio::time::timeout(self.timeout, self.raft.get_read_log_id()).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Ok((read_log_id, _applied))) => {
                let index = read_log_id.map_or(0, |l| l.index);
                match self.restored {
                    Some(r) if self.raft.metrics().borrow().current_term == r.term => {
                        Ok(index.max(r.last_index))
                    }
                    _ => Ok(index),
                }
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ReadError::NotLeader {
                    leader: f.leader_id.map(|id| LeaderHint { id, node: f.leader_node }),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Err(ReadError::NoQuorum),
            Ok(Err(RaftError::Fatal(_))) => Err(ReadError::ShuttingDown),
        }
    }
}
