//! Noticing that the leader is gone, and standing for election.
//!
//! A follower that hears nothing from a leader for an *election timeout*
//! concludes that it has failed and stands for election (Raft paper §5.2).
//! Each wait is drawn at random from [`Config::election_timeout_min`,
//! `election_timeout_max`), so that followers rarely time out together and
//! split the vote. This module does exactly that, and nothing more: the
//! timeout a user configures is the time from the last word of a leader to
//! the start of a campaign.
//!
//! # Why not openraft's own timer
//!
//! openraft's timer adds a *leader lease* before the timeout: a follower
//! that has heard from a leader neither votes for another candidate nor
//! campaigns itself until the lease (openraft's `election_timeout_max`) has
//! run out, and only then starts its election timeout. Its failover time is
//! therefore lease + timeout, about 1.5 to 2 seconds with the defaults here
//! where etcd's is its timeout alone (measured in `docs/benchmarks.md`).
//!
//! So raft-core switches openraft's timer off (`enable_elect: false`) and
//! runs this one, with the lease set much shorter than the timeout
//! ([`lease`]):
//!
//! * the lease still stops a node that was cut off, paused, or restarted
//!   from deposing a healthy leader: the other followers refuse it while
//!   they hear heartbeats;
//! * every campaign starts with a *pre-vote* (Raft thesis §9.6): the node
//!   asks whether it *would* win before it raises its term. A node that
//!   cannot win, because the others still hear from a leader or have more
//!   of the log, changes nothing, so it cannot force the leader to step
//!   down by showing it a higher term when it comes back;
//! * when the leader really is gone, every follower's lease has long run
//!   out by the time the first one's timeout fires, so the first pre-vote
//!   and vote succeed.
//!
//! # What counts as hearing from the leader
//!
//! [`Contact`] is touched by the node's [`crate::network::Inbox`] whenever
//! it accepts an AppendEntries (heartbeats included) or a snapshot from a
//! leader, or grants a vote (§5.2: granting a vote resets the timer, so
//! that a follower does not undercut a candidate it just voted for), and by
//! this module while the node itself leads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use rand::Rng as _;
use tokio::time::Instant;

use crate::types::{NodeId, Raft};
use crate::Config;

/// When this node last heard from a leader (or voted, or led). Shared by
/// the node's inbox, which touches it, and its election timer.
#[derive(Debug, Clone)]
pub struct Contact(Arc<Mutex<Instant>>);

impl Contact {
    /// A contact clock that starts now, as if a leader had just spoken:
    /// a node that starts waits a whole timeout before it campaigns.
    pub fn new() -> Self {
        Contact(Arc::new(Mutex::new(Instant::now())))
    }

    /// Records that a leader (or a candidate this node voted for) spoke now.
    pub fn touch(&self) {
        *self.lock() = Instant::now();
    }

    /// When that last happened.
    pub fn last(&self) -> Instant {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Contact {
    fn default() -> Self {
        Contact::new()
    }
}

/// The leader lease openraft runs with: how long after a leader's last
/// heartbeat a follower still refuses to vote for anyone else. Three
/// heartbeats or half the election timeout's lower bound, whichever is
/// longer, so that a follower that misses a heartbeat or two does not give
/// way; and never longer than that lower bound, so that by the time any
/// follower's timeout fires, the others' leases have run out too (with the
/// defaults, 300 ms against a timeout of at least 500 ms).
pub fn lease(config: &Config) -> Duration {
    let three_beats = config.heartbeat_interval * 3;
    three_beats.max(config.election_timeout_min / 2).min(config.election_timeout_min)
}

/// What the election timer needs to know about the node, from openraft's
/// metrics: its role, whether it is a voter, and whether it is the only one.
struct Standing {
    state: ServerState,
    voter: bool,
    alone: bool,
}

fn standing(raft: &Raft, id: NodeId) -> Option<Standing> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    if m.running_state.is_err() {
        return None;
    }
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    Some(Standing { state: m.state, voter: voters.contains(&id), alone: voters == [id] })
}

/// Runs the election timer of node `id` until the node shuts down.
pub(crate) async fn run(raft: Raft, id: NodeId, config: Config, contact: Contact) {
    let (min, max) = (config.election_timeout_min, config.election_timeout_max);
    // The last campaign this node started: another waits a timeout too.
    let mut campaigned: Option<Instant> = None;
    loop {
        let timeout = if max > min { rand::thread_rng().gen_range(min..max) } else { min };
        // Wait until neither a leader nor our own campaign has been heard
        // of for `timeout`, however often that is pushed back. A voter
        // that is the only one has nobody to hear from and nobody to wait
        // for: it campaigns at once (a single-node cluster, just formed or
        // restarted). Its membership is checked every heartbeat interval.
        loop {
            let now = Instant::now();
            let since = campaigned.map_or(contact.last(), |c| c.max(contact.last()));
            let deadline = since + timeout;
            if now >= deadline {
                break;
            }
            let lone = standing(&raft, id).is_some_and(|s| s.alone && s.state != ServerState::Leader);
            if lone && campaigned.is_none_or(|c| now >= c + timeout) {
                break;
            }
            tokio::time::sleep_until(deadline.min(now + config.heartbeat_interval)).await;
        }
        let Some(Standing { state, voter, alone }) = standing(&raft, id) else { return };
        match state {
            ServerState::Leader => {
                // A leader is its own contact: when it steps down, it
                // waits a whole timeout before it campaigns.
                contact.touch();
                continue;
            }
            ServerState::Shutdown => return,
            _ if !voter => {
                // A learner, or a node removed from the cluster, never
                // campaigns; it waits for the next change of membership.
                contact.touch();
                continue;
            }
            _ => {}
        }
        if !alone {
            tracing::info!(
                node_id = id,
                timeout_ms = timeout.as_millis() as u64,
                "no word from a leader within the election timeout; standing for election"
            );
        }
        // A lone voter needs nobody's agreement: no pre-vote.
        if raft.trigger().elect(!alone).await.is_err() {
            return;
        }
        campaigned = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(heartbeat: u64, min: u64, max: u64) -> Config {
        let mut c = Config::new("t");
        c.heartbeat_interval = Duration::from_millis(heartbeat);
        c.election_timeout_min = Duration::from_millis(min);
        c.election_timeout_max = Duration::from_millis(max);
        c
    }

    #[test]
    fn the_lease_covers_three_heartbeats_and_ends_before_any_timeout() {
        assert_eq!(lease(&config(100, 500, 1000)), Duration::from_millis(300));
        assert_eq!(lease(&config(30, 150, 300)), Duration::from_millis(90));
        assert_eq!(lease(&config(10, 1000, 2000)), Duration::from_millis(500));
        // Heartbeats too slow for the timeout: the lease never outlasts it.
        assert_eq!(lease(&config(100, 200, 400)), Duration::from_millis(200));
    }
}
