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
//! * **Wait until the restarted node is back** ([`wait_caught_up`]) before
//!   stopping the next one. A node that is still replaying or fetching the
//!   log is up but not yet a useful replica: stopping another node then
//!   would leave fewer than a majority able to commit (in a cluster of
//!   three, one down and one still behind). A node is back when
//!   1. it answers and names a leader, which confirms that it leads;
//!   2. it has applied everything that leader had committed when the node
//!      first named it. The bar is fixed at that moment: chasing the commit
//!      index of a cluster under write load would never end;
//!   3. that leader has heard from it since the restart (the leader's
//!      `answered_ms_ago` for it is shorter than the wait so far). A node
//!      comes back knowing its last leader and its applied state from its
//!      own disk, so in an idle cluster the first two hold at once, before
//!      the leader has reconnected (it backs off from a peer that refused
//!      it, for up to a second). Stopping the leader then would hand
//!      leadership to a node it cannot reach yet, and the handoff would
//!      stall until an election timeout.
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

/// Waits up to `within` until node `node` is back after a restart: it
/// answers and names a leader that confirms it leads, has applied that
/// leader's commit index as of the first such answer, and the leader has
/// heard from it during this wait (see the module docs). Call it right
/// after starting the node, once its old process has exited: an
/// acknowledgement younger than the wait then came from the new process.
/// `status(id)` asks node `id` for its status (one attempt); it is called
/// for `node`, and for the leader `node` names.
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
    let began = Instant::now();
    // The leader it named first (that confirmed it leads), and that
    // leader's commit index then.
    let mut bar: Option<CaughtUp> = None;
    loop {
        let last = match check(node, began, &mut bar, &status).await {
            Ok(caught_up) => return Ok(caught_up),
            Err(why) => why,
        };
        if began.elapsed() >= within {
            return Err(NotCaughtUp { node, within, last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One look at `node` and its leader for [`wait_caught_up`]: `Ok` when it
/// is back, else what is missing.
async fn check<F, Fut, E>(
    node: u64,
    began: Instant,
    bar: &mut Option<CaughtUp>,
    status: &F,
) -> Result<CaughtUp, String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<StatusResponse, E>>,
    E: Display,
{
    let s = status(node).await.map_err(|e| format!("it does not answer: {e}"))?;
    let named = s.leader;
    let leader = bar
        .map(|b| b.leader)
        .or(named)
        .ok_or_else(|| format!("it answers as {} in term {}, but knows no leader", s.role, s.term))?;
    // Measured before asking the leader, so that an acknowledgement it
    // reports as younger than this is younger than the wait.
    let waited = began.elapsed().as_millis() as u64;
    let l = match leader == node {
        true => s.clone(),
        false => status(leader)
            .await
            .map_err(|e| format!("it names node {leader} as leader, which does not answer: {e}"))?,
    };
    if l.role != "leader" {
        // Leadership moved: fix the bar again with the next leader named.
        *bar = None;
        return Err(format!("it names node {leader} as leader, which is {} in term {}", l.role, l.term));
    }
    let caught_up = *bar.get_or_insert(CaughtUp { leader, index: l.committed_index });
    if s.applied_index < caught_up.index {
        return Err(format!(
            "it has applied index {} of {} (node {leader}'s commit index)",
            s.applied_index, caught_up.index
        ));
    }
    if leader != node {
        let ago = l.followers.iter().find(|f| f.id == node).and_then(|f| f.answered_ms_ago);
        if ago.is_none_or(|ago| ago >= waited) {
            let ago = ago.map_or("never".to_owned(), |ms| format!("{ms} ms ago"));
            return Err(format!("node {leader} has not heard from it since its restart (last: {ago})"));
        }
    }
    Ok(caught_up)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::api::FollowerStatus;

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
            version: None,
            db_size_bytes: None,
        }
    }

    /// Node 1's status as the leader, which last heard from node 2
    /// `answered_ms_ago` ago.
    fn leader(committed: u64, answered_ms_ago: Option<u64>) -> StatusResponse {
        let follower = FollowerStatus { id: 2, matched_index: Some(committed), lag: 0, answered_ms_ago };
        StatusResponse { followers: vec![follower], ..status(1, Some(1), committed, committed) }
    }

    /// Answers for node 2 (restarted) and node 1 (the leader), each in
    /// turn; the last answer of each repeats.
    struct Script {
        node: Mutex<VecDeque<Result<StatusResponse, String>>>,
        leader: Mutex<VecDeque<StatusResponse>>,
    }

    impl Script {
        fn new(node: Vec<Result<StatusResponse, String>>, leader: Vec<StatusResponse>) -> Script {
            Script { node: Mutex::new(node.into()), leader: Mutex::new(leader.into()) }
        }

        async fn status(&self, id: u64) -> Result<StatusResponse, String> {
            fn next<T: Clone>(q: &Mutex<VecDeque<T>>) -> Option<T> {
                let mut q = q.lock().unwrap();
                if q.len() > 1 {
                    q.pop_front()
                } else {
                    q.front().cloned()
                }
            }
            match id {
                1 => next(&self.leader).ok_or_else(|| "no answer".into()),
                _ => next(&self.node).unwrap_or_else(|| Err("no answer".into())),
            }
        }
    }

    #[tokio::test]
    async fn the_bar_is_the_leaders_commit_index_when_the_node_first_names_it() {
        let script = Script::new(
            vec![
                Err("connection refused".into()),
                Ok(status(2, None, 0, 90)),
                Ok(status(2, Some(1), 100, 95)),
                Ok(status(2, Some(1), 130, 119)),
                // Applied 120, the leader's commit index when node 2 first
                // named it; the leader has moved on to 150 by now.
                Ok(status(2, Some(1), 150, 120)),
            ],
            vec![leader(120, Some(0)), leader(150, Some(0))],
        );
        let caught = wait_caught_up(2, Duration::from_secs(30), |id| script.status(id)).await.unwrap();
        assert_eq!(caught, CaughtUp { leader: 1, index: 120 });
    }

    #[tokio::test]
    async fn a_node_the_leader_has_not_heard_from_since_its_restart_is_not_back() {
        // Node 2 comes back with everything applied and its last leader
        // remembered, but node 1 last heard from it (its old process) long
        // before the wait began, then never again.
        let script = Script::new(vec![Ok(status(2, Some(1), 100, 100))], vec![leader(100, Some(60_000))]);
        let err = wait_caught_up(2, Duration::from_millis(100), |id| script.status(id)).await.unwrap_err();
        assert_eq!(err.last, "node 1 has not heard from it since its restart (last: 60000 ms ago)");
        let script = Script::new(vec![Ok(status(2, Some(1), 100, 100))], vec![leader(100, None)]);
        let err = wait_caught_up(2, Duration::from_millis(100), |id| script.status(id)).await.unwrap_err();
        assert_eq!(err.last, "node 1 has not heard from it since its restart (last: never)");
        // Once node 1 hears from it, it is back.
        let script = Script::new(
            vec![Ok(status(2, Some(1), 100, 100))],
            vec![leader(100, None), leader(100, Some(0))],
        );
        let caught = wait_caught_up(2, Duration::from_secs(30), |id| script.status(id)).await.unwrap();
        assert_eq!(caught, CaughtUp { leader: 1, index: 100 });
    }

    #[tokio::test]
    async fn a_leader_that_no_longer_leads_does_not_set_the_bar() {
        let deposed = StatusResponse { role: "follower".into(), leader: Some(3), ..leader(100, Some(0)) };
        let script = Script::new(vec![Ok(status(2, Some(1), 100, 100))], vec![deposed]);
        let err = wait_caught_up(2, Duration::from_millis(50), |id| script.status(id)).await.unwrap_err();
        assert_eq!(err.last, "it names node 1 as leader, which is follower in term 4");
    }

    #[tokio::test]
    async fn a_node_that_stays_behind_is_reported_with_what_it_lacks() {
        let script = Script::new(vec![Ok(status(2, Some(1), 100, 40))], vec![leader(100, Some(0))]);
        let err = wait_caught_up(2, Duration::from_millis(100), |id| script.status(id)).await.unwrap_err();
        assert_eq!(err.node, 2);
        assert_eq!(err.last, "it has applied index 40 of 100 (node 1's commit index)");

        let silent = Script::new(vec![], vec![]);
        let err = wait_caught_up(2, Duration::from_millis(50), |id| silent.status(id)).await.unwrap_err();
        assert_eq!(err.last, "it does not answer: no answer");
        assert!(err.to_string().starts_with("node 2 did not catch up within"), "{err}");
    }
}
