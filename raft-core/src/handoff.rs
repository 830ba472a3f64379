//! Leadership handoff: a leader that is about to stop first hands its office
//! to a caught-up voter, so that the cluster does not sit out an election
//! timeout without a leader.
//!
//! When a leader simply stops, its followers notice only by the silence:
//! each waits for its election timeout (on top of the lease it granted the
//! leader, see `docs/architecture/raft-core.md`) before it campaigns, and
//! every write waits with it. A planned stop (a rolling restart, an upgrade,
//! `systemctl stop`) need not cost that: the leader knows it is leaving and
//! can name its successor. This is the leadership transfer of the Raft
//! thesis (§3.10), which etcd does on every graceful stop of a leader:
//!
//! 1. **Stop taking new proposals.** A `Gate` closes: [`crate::RaftNode::write`],
//!    the proposer and [`crate::RaftNode::read_index`] hold new work until the
//!    handoff is over. Otherwise the target would chase a log that keeps
//!    growing.
//! 2. **Choose the target**: of the voters that acknowledged one of the last
//!    few heartbeats, the one that holds the most of the leader's log (the
//!    *matched* index in openraft's replication metrics); of equals, the one
//!    that answered last (`choose`). A voter that has not answered recently
//!    is probably down, and one that answered a while ago may be stopping
//!    too: handing either the office would only delay the election that
//!    has to follow.
//! 3. **Bring it fully up to date**: wait until its matched index reaches
//!    the leader's last log index.
//! 4. **Tell it to campaign at once** (the thesis's `TimeoutNow`): openraft's
//!    `trigger().transfer_leader(to)`. From then on the leader refuses
//!    writes with `ForwardToLeader` naming the target and sends no more
//!    heartbeats; it sends every voter a `TransferLeader` message
//!    ([`crate::network::RpcRequest::TransferLeader`]) with its vote and last
//!    log id. The target waits until its own log is flushed that far, then
//!    campaigns in the next term with a vote request marked as a transfer,
//!    which voters grant although the old leader's lease has not expired
//!    (thesis §4.2.3). Its log is the most up-to-date, so it wins.
//! 5. **Wait until leadership has moved**: this node has seen the new
//!    leader in a later term, and has applied everything it had proposed,
//!    so that every write proposed before the gate closed is answered.
//! 6. **Open the gate.** The requests held meanwhile find this node a
//!    follower and get [`crate::WriteError::NotLeader`] (certainly not
//!    proposed) naming the new leader, where a client or a forwarding server
//!    sends them next.
//!
//! # Bounds
//!
//! The whole handoff takes at most one election timeout
//! ([`crate::Config::election_timeout_max`]), as the thesis prescribes. If
//! the target has not caught up by then, nothing was handed over and this
//! node still leads ([`TransferError::NotCaughtUp`]). If the transfer was
//! sent but no new leader appeared in time ([`TransferError::NotConfirmed`]),
//! this node stays in openraft's transfer mode, refusing writes and sending
//! no heartbeats, so that a new leader follows within an election timeout
//! anyway; a node that is shutting down just stops.
//!
//! # What it cannot promise
//!
//! A handoff moves leadership; it is not needed for safety. Every guarantee
//! of Raft holds whether or not it completes: the target wins only by a
//! majority's votes, in a new term, with a log that holds every committed
//! entry.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;
use openraft::{Instant as _, ServerState};
use tokio::sync::watch;

use crate::error::TransferError;
use crate::proposer::leader_hint;
use crate::types::{NodeId, Raft, RaftMetrics};

/// Whether new proposals are held because a handoff is under way. Cheap to
/// clone: clones share the state.
#[derive(Clone)]
pub(crate) struct Gate {
    /// `true` while a handoff holds new work.
    closed: Arc<watch::Sender<bool>>,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Gate { closed: Arc::new(watch::Sender::new(false)) }
    }

    /// Closes the gate until the returned guard is dropped; `None` if it is
    /// closed already (another handoff is under way).
    fn close(&self) -> Option<Closed> {
        let closed_now = self.closed.send_if_modified(|closed| !std::mem::replace(closed, true));
        closed_now.then(|| Closed { gate: self.clone() })
    }

    /// Waits while a handoff holds new work (at most one election timeout:
    /// the handoff's own bound). Returns at once when the gate is open.
    pub(crate) async fn wait_open(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|closed| !*closed).await;
    }
}

/// Reopens the gate when dropped: at the end of a handoff, whether it
/// succeeded, failed or was abandoned half-way (its future dropped).
struct Closed {
    gate: Gate,
}

impl Drop for Closed {
    fn drop(&mut self) {
        self.gate.closed.send_replace(false);
    }
}

/// How many heartbeat intervals a voter may have been silent for and still
/// be handed leadership. A live follower acknowledges every heartbeat; five
/// missed in a row means it is down, stopping, or too slow to lead.
pub const ANSWERED_WITHIN_HEARTBEATS: u32 = 5;

/// A voter the leader could hand off to, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The voter.
    pub(crate) id: NodeId,
    /// The last index known to be in its log (`None`: nothing yet).
    pub(crate) matched: Option<u64>,
    /// How long ago it last acknowledged a heartbeat or an append (`None`:
    /// never, to this leader).
    pub(crate) answered_ago: Option<Duration>,
}

/// The voter to hand leadership to: of those that answered within `recent`,
/// the one holding the most of the log; of equals, the one that answered
/// last, then the lowest id. `None` if no voter answered within `recent`.
pub(crate) fn choose(candidates: &[Candidate], recent: Duration) -> Option<NodeId> {
    candidates
        .iter()
        .filter(|c| c.answered_ago.is_some_and(|ago| ago < recent))
        .max_by(|a, b| {
            // Greater is better: more log, a more recent answer, a smaller id.
            a.matched.cmp(&b.matched).then(b.answered_ago.cmp(&a.answered_ago)).then(b.id.cmp(&a.id))
        })
        .map(|c| c.id)
}

/// The other voters, as the leader's metrics `m` describe them.
fn candidates(m: &RaftMetrics) -> Vec<Candidate> {
    let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    voters
        .into_iter()
        .filter(|id| *id != m.id)
        .map(|id| Candidate {
            id,
            matched: matched(m, id),
            answered_ago: m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&id))
                .and_then(|at| at.as_ref())
                .map(|at| at.elapsed()),
        })
        .collect()
}

/// The last index the leader knows to be in `id`'s log.
fn matched(m: &RaftMetrics, id: NodeId) -> Option<u64> {
    m.replication.as_ref().and_then(|r| r.get(&id)).and_then(|l| l.as_ref()).map(|l| l.index)
}

/// Waits until `done` holds for the node's metrics, until `deadline`.
/// `None` on timeout or when the node stops.
async fn wait_until(
    raft: &Raft,
    deadline: tokio::time::Instant,
    what: &str,
    done: impl Fn(&RaftMetrics) -> bool + Send,
) -> Option<RaftMetrics> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    raft.wait(Some(left)).metrics(done, what).await.ok()
}

/// How long one handoff may take, and how recently a voter must have
/// answered to be chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The whole handoff: an election timeout.
    pub(crate) within: Duration,
    /// [`ANSWERED_WITHIN_HEARTBEATS`] heartbeat intervals.
    pub(crate) answered_within: Duration,
}

/// Hands this node's leadership to `to`, or to the voter [`choose`] picks,
/// within `bounds`; returns the new leader. See the [module docs](self) for
/// the steps.
pub(crate) async fn hand_off(
    raft: &Raft,
    gate: &Gate,
    to: Option<NodeId>,
    bounds: Bounds,
) -> Result<NodeId, TransferError> {
    let within = bounds.within;
    let deadline = tokio::time::Instant::now() + within;
    let m = raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader {
        return Err(TransferError::NotLeader { leader: leader_hint(&m) });
    }
    if to == Some(m.id) {
        return Ok(m.id);
    }
    if let Some(to) = to {
        if !m.membership_config.membership().voter_ids().any(|v| v == to) {
            return Err(TransferError::NotAVoter(to));
        }
    }

    // Step 1: hold new work. Whatever was proposed before is in the log
    // (or about to be: the proposer's batch in flight, which the target
    // then waits for, see step 4).
    let _closed = gate.close().ok_or(TransferError::InProgress)?;

    // Step 2: the successor.
    let m = raft.metrics().borrow_watched().clone();
    let target = match to {
        Some(to) => to,
        None => choose(&candidates(&m), bounds.answered_within).ok_or(TransferError::NoCandidate)?,
    };
    tracing::info!(node_id = m.id, to = target, term = m.current_term, "handing leadership off");

    // Step 3: the successor holds everything this node has.
    let caught_up = wait_until(raft, deadline, "the handoff target has caught up", |m| {
        m.state != ServerState::Leader || matched(m, target) >= m.last_log_index
    })
    .await;
    let Some(caught_up) = caught_up else {
        return Err(TransferError::NotCaughtUp { to: target, within });
    };
    if caught_up.state != ServerState::Leader {
        return Err(TransferError::NotLeader { leader: leader_hint(&caught_up) });
    }

    // Step 4: TimeoutNow. openraft sends the leader's last log id with it,
    // so an entry appended since the metrics above is waited for too.
    let term = caught_up.current_term;
    raft.trigger().transfer_leader(target).await.map_err(|_| TransferError::ShuttingDown)?;
    let proposed = raft.metrics().borrow_watched().last_log_index.max(caught_up.last_log_index);

    // Step 5: a leader of a later term, and every proposal here answered.
    let moved = wait_until(raft, deadline, "leadership has moved", |m| {
        m.current_term > term && m.current_leader.is_some_and(|l| l != m.id)
    })
    .await;
    let Some(moved) = moved else {
        return Err(TransferError::NotConfirmed { to: target, within });
    };
    let new_leader = moved.current_leader.unwrap_or(target);
    let applied = wait_until(raft, deadline, "proposals before the handoff applied", |m| {
        m.last_applied.map(|l| l.index) >= proposed
    })
    .await;
    if applied.is_none() {
        tracing::warn!(node_id = m.id, index = ?proposed, "handoff done before this node applied its last proposal");
    }
    tracing::info!(node_id = m.id, leader = new_leader, term = moved.current_term, "leadership handed off");
    // Step 6: dropping `_closed` lets held requests go on, to be redirected.
    Ok(new_leader)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECENT: Duration = Duration::from_millis(500);

    fn voter(id: NodeId, matched: Option<u64>, answered_ms_ago: Option<u64>) -> Candidate {
        Candidate { id, matched, answered_ago: answered_ms_ago.map(Duration::from_millis) }
    }

    #[test]
    fn the_answering_voter_with_the_most_log_is_chosen() {
        // A lagging follower that answers loses to one that is caught up.
        assert_eq!(choose(&[voter(2, Some(7), Some(10)), voter(3, Some(9), Some(90))], RECENT), Some(3));
        // A caught-up voter that stopped answering is probably down.
        assert_eq!(choose(&[voter(2, Some(7), Some(10)), voter(3, Some(9), Some(900))], RECENT), Some(2));
        assert_eq!(choose(&[voter(2, Some(7), Some(10)), voter(3, Some(9), None)], RECENT), Some(2));
        // Nothing replicated yet counts as least.
        assert_eq!(choose(&[voter(2, None, Some(10)), voter(3, Some(1), Some(10))], RECENT), Some(3));
    }

    #[test]
    fn of_equal_logs_the_latest_to_answer_wins_then_the_lowest_id() {
        // Node 2 answered a while ago: it may be stopping too.
        let equal = [voter(2, Some(9), Some(300)), voter(3, Some(9), Some(20)), voter(4, Some(9), Some(20))];
        assert_eq!(choose(&equal, RECENT), Some(3));
        assert_eq!(choose(&[voter(2, Some(9), Some(600)), voter(3, Some(9), None)], RECENT), None);
        assert_eq!(choose(&[], RECENT), None);
    }

    #[tokio::test]
    async fn the_gate_holds_work_until_the_handoff_is_dropped() {
        let gate = Gate::new();
        gate.wait_open().await;
        let closed = gate.close().expect("an open gate closes");
        assert!(gate.close().is_none(), "one handoff at a time");
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "held while closed");
        drop(closed);
        waiter.await.unwrap();
        assert!(gate.close().is_some(), "open again after the guard is dropped");
    }
}
