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
//! term. openraft can let a leader whose whole cluster restarted resume in
//! its old term without an election ("leader restore"); it then knows only
//! the commit index it last saved, which lags what it acknowledged before
//! the crash (that index is saved with a later log write, not with its own
//! fsync). Under openraft 0.9, which always did this, a read in the first
//! milliseconds after a restart of every node returned the value from
//! before an acknowledged write: the Jepsen harness caught it, and
//! `kv-app/tests/faults.rs` pins it. raft-core now turns leader restore off
//! ([`crate::Config::to_openraft`]), so a restarted node always wins a new
//! election, with a new term and a blank entry, before it serves a read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{LinearizableReadError, RaftError};
use openraft::ReadPolicy;
use tokio::sync::oneshot;

use crate::error::ReadError;
use crate::proposer::forward_hint;
use crate::types::Raft;

type Reply = oneshot::Sender<Result<u64, ReadError>>;

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
    timeout: Duration,
    queue: Arc<Mutex<Queue>>,
    rounds: Arc<std::sync::atomic::AtomicU64>,
}

impl ReadBatcher {
    pub(crate) fn new(raft: Raft, timeout: Duration) -> Self {
        ReadBatcher { raft, timeout, queue: Arc::default(), rounds: Arc::default() }
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
        match tokio::time::timeout(self.timeout, self.raft.get_read_log_id(ReadPolicy::ReadIndex)).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.index()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(ReadError::NotLeader { leader: forward_hint(&f) })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)))) => {
                Err(ReadError::NoQuorum)
            }
            Ok(Err(RaftError::Fatal(_))) => Err(ReadError::ShuttingDown),
        }
    }
}
