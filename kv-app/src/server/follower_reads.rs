//! A follower's linearizable reads share one question to the leader.
//!
//! A linearizable read on a follower needs the leader's read index: the
//! leader's commit index at some moment after the read arrived, confirmed
//! by a quorum (see `raft_core::read_index`). Asking the leader once per
//! read costs one internal HTTP request per read, on both nodes; under many
//! concurrent reads that is most of their cost, and over HTTPS more so.
//!
//! So a follower asks on behalf of every read waiting at that moment. While
//! one question is in flight, reads that arrive join a waiting batch, and
//! the next question, asked as soon as the current one is answered, serves
//! them all. A read is only ever served by a question sent *after* it
//! arrived, which is what makes the index valid for it: an answer to a
//! question sent earlier could predate a write acknowledged before the
//! read began. This is the batching etcd does for its followers' read
//! index requests. With reads one at a time, nothing changes: every read
//! asks alone.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::error::ApiError;
use super::Ctx;

/// The reads waiting for a read index, and whether a question is out.
#[derive(Default)]
pub struct FollowerReads {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Reads that arrived since the question in flight was sent.
    waiting: Vec<oneshot::Sender<Result<u64, ApiError>>>,
    /// Whether a task is asking the leader.
    asking: bool,
}

impl FollowerReads {
    /// The leader's read index, from a question sent after this call began.
    pub async fn read_index(&self, ctx: &Ctx) -> Result<u64, ApiError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.waiting.push(tx);
            !std::mem::replace(&mut state.asking, true)
        };
        if start {
            tokio::spawn(ask_until_none_wait(ctx.clone()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::internal("the read index task stopped before answering (shutting down?)"))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks the leader once per batch of waiting reads, until no read waits.
async fn ask_until_none_wait(ctx: Ctx) {
    loop {
        let batch = {
            let mut state = ctx.follower_reads.lock();
            if state.waiting.is_empty() {
                state.asking = false;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        let answer = super::kv::ask_leader_for_read_index(&ctx).await;
        for read in batch {
            // A reader that gave up (its client went away) does not care.
            let _ = read.send(answer.clone());
        }
    }
}
