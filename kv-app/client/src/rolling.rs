//! A rolling restart as a client sees it: which node to restart next, and
//! when a restarted node is back.
//!
//! A rolling restart stops and starts every node of a cluster in turn, so
//! that a majority always runs and the cluster keeps serving (to pick up a
//! new binary, new flags, or new certificates). Two rules make it cheap:
//!
//! * **Followers first, the leader last** ([`next_to_restart`]). Stopping a
//!   follower costs the cluster nothing; stopping the leader costs one
//!   handoff (a graceful stop hands leadership to a caught-up voter, Raft
//!   thesis §3.10). A follower that comes back while another node leads
//!   does not take leadership back, so the leader's stop is the only
//!   handoff, and the term rises by one over the whole restart.
//! * **Wait until the restarted node has caught up** ([`wait_caught_up`])
//!   before stopping the next one. A node that is still replaying or
//!   fetching the log is up but not yet a useful replica: stopping another
//!   node then would leave fewer than a majority able to commit (in a
//!   cluster of three, one down and one still behind). A node is back when
//!   it answers, names a leader, and has applied everything that leader
//!   had committed when the node first named it. The bar is fixed at that
//!   moment: chasing the commit index of a cluster under write load would
//!   never end.
//!
//! This module only decides and asks; whoever runs the processes stops and
//! starts them (`kvctl cluster restart --rolling` in kv-tools, the Jepsen
//! harness's `rolling-restart` fault). It asks through a status function
//! the caller passes in, so each caller keeps its own HTTP client, its TLS
//! and its token.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::api::StatusResponse;

/// How often [`wait_caught_up`] asks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The node to restart next: the first of `pending` (the nodes not yet
/// restarted, in the caller's order) that is not `leader`; the leader only
/// when it is the last one left. `None` when `pending` is empty.
pub fn next_to_restart(pending: &[u64], leader: Option<u64>) -> Option<u64> {
    pending.iter().copied().find(|&id| Some(id) != leader).or_else(|| pending.first().copied())
}

/// A restarted node that is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// The leader it named when it came back.
    pub leader: u64,
    /// That leader's commit index then, which the node has applied.
    pub index: u64,
}

/// The node did not catch up in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node} did not catch up within {within:?}: {last}")]
pub struct NotCaughtUp {
    /// The node.
    pub node: u64,
    /// How long it was given.
    pub within: Duration,
    /// What it (or its leader) said last: why it was not back yet.
    pub last: String,
}

/// Waits up to `within` until node `node` answers, names a leader, and
/// has applied that leader's commit index as of the first answer that
/// named it. `status(id)` asks node `id` for its status (one attempt); it
/// is called for `node`, and for the leader `node` names.
///
/// # Errors
/// [`NotCaughtUp`] after `within`, saying what was missing.
pub async fn wait_caught_up<F, Fut, E>(
    node: u64,
    within: Duration,
    status: F,
) -> Result<CaughtUp, NotCaughtUp>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<StatusResponse, E>>,
    E: Display,
{
    let deadline = Instant::now() + within;
    // The leader it named first, and that leader's commit index then.
    let mut bar: Option<CaughtUp> = None;
    loop {
        let last = match status(node).await {
            Err(e) => format!("it does not answer: {e}"),
            Ok(s) => match (bar, s.leader) {
                (Some(bar), _) if s.applied_index >= bar.index => return Ok(bar),
                (Some(bar), _) => {
                    format!(
                        "it has applied index {} of {} (node {}'s commit index)",
                        s.applied_index, bar.index, bar.leader
                    )
                }
                (None, None) => format!("it answers as {} in term {}, but knows no leader", s.role, s.term),
                (None, Some(leader)) => {
                    let committed = if leader == node {
                        Ok(s.committed_index)
                    } else {
                        status(leader).await.map(|l| l.committed_index)
                    };
                    match committed {
                        Ok(index) if s.applied_index >= index => return Ok(CaughtUp { leader, index }),
                        Ok(index) => {
                            bar = Some(CaughtUp { leader, index });
                            format!(
                                "it has applied index {} of {index} (node {leader}'s commit index)",
                                s.applied_index
                            )
                        }
                        Err(e) => format!("it names node {leader} as leader, which does not answer: {e}"),
                    }
                }
            },
        };
        if Instant::now() >= deadline {
            return Err(NotCaughtUp { node, within, last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn followers_go_first_and_the_leader_last() {
        assert_eq!(next_to_restart(&[1, 2, 3], Some(1)), Some(2));
        assert_eq!(next_to_restart(&[3, 1], Some(3)), Some(1));
        assert_eq!(next_to_restart(&[3], Some(3)), Some(3), "the leader, once it is the last one");
        // Leadership moved to a node already restarted: any pending node.
        assert_eq!(next_to_restart(&[2, 3], Some(1)), Some(2));
        assert_eq!(next_to_restart(&[2, 3], None), Some(2));
        assert_eq!(next_to_restart(&[], Some(1)), None);
    }

    fn status(id: u64, leader: Option<u64>, committed: u64, applied: u64) -> StatusResponse {
        StatusResponse {
            id,
            role: if leader == Some(id) { "leader" } else { "follower" }.into(),
            term: 4,
            leader,
            last_log_index: committed,
            committed_index: committed,
            applied_index: applied,
            checkpointed_index: 0,
            snapshot_index: None,
            purged_index: None,
            voters: vec![1, 2, 3],
            learners: vec![],
            followers: vec![],
            state_digest: String::new(),
        }
    }

    /// Answers for node 2 (restarted) and node 1 (the leader), in turn.
    struct Script {
        node: Mutex<VecDeque<Result<StatusResponse, String>>>,
        leader: Mutex<VecDeque<StatusResponse>>,
    }

    impl Script {
        async fn status(&self, id: u64) -> Result<StatusResponse, String> {
            if id == 1 {
                let mut leader = self.leader.lock().unwrap();
                let s = if leader.len() > 1 { leader.pop_front() } else { leader.front().cloned() };
                return s.ok_or_else(|| "no answer".into());
            }
            let mut node = self.node.lock().unwrap();
            let s = if node.len() > 1 { node.pop_front() } else { node.front().cloned() };
            s.unwrap_or_else(|| Err("no answer".into()))
        }
    }

    #[tokio::test]
    async fn the_bar_is_the_leaders_commit_index_when_the_node_first_names_it() {
        let script = Script {
            node: Mutex::new(VecDeque::from([
                Err("connection refused".into()),
                Ok(status(2, None, 0, 90)),
                Ok(status(2, Some(1), 100, 95)),
                Ok(status(2, Some(1), 130, 119)),
                // Applied 120, the leader's commit index when node 2 first
                // named it; the leader has moved on to 150 by now.
                Ok(status(2, Some(1), 150, 120)),
            ])),
            leader: Mutex::new(VecDeque::from([status(1, Some(1), 120, 120), status(1, Some(1), 150, 150)])),
        };
        let caught = wait_caught_up(2, Duration::from_secs(30), |id| script.status(id)).await.unwrap();
        assert_eq!(caught, CaughtUp { leader: 1, index: 120 });
    }

    #[tokio::test]
    async fn a_node_that_stays_behind_is_reported_with_what_it_lacks() {
        let script = Script {
            node: Mutex::new(VecDeque::from([Ok(status(2, Some(1), 100, 40))])),
            leader: Mutex::new(VecDeque::from([status(1, Some(1), 100, 100)])),
        };
        let err = wait_caught_up(2, Duration::from_millis(100), |id| script.status(id)).await.unwrap_err();
        assert_eq!(err.node, 2);
        assert_eq!(err.last, "it has applied index 40 of 100 (node 1's commit index)");

        let silent = Script { node: Mutex::new(VecDeque::new()), leader: Mutex::new(VecDeque::new()) };
        let err = wait_caught_up(2, Duration::from_millis(50), |id| silent.status(id)).await.unwrap_err();
        assert_eq!(err.last, "it does not answer: no answer");
        assert!(err.to_string().starts_with("node 2 did not catch up within"), "{err}");
    }
}
