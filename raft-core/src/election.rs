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
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::types::{NodeId, Raft};
use crate::Config;

/// When this node last heard from a leader (or voted, or led), and when
/// the leader's connection to it last closed. Shared by the node's inbox,
/// which updates it, and its election timer, which it wakes.
#[derive(Debug, Clone)]
pub struct Contact(Arc<ContactState>);

#[derive(Debug)]
struct ContactState {
    heard: Mutex<Heard>,
    /// Wakes the timer when the leader's connection closes.
    wake: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    last: Instant,
    left: Option<Instant>,
}

impl Contact {
    /// A contact clock that starts now, as if a leader had just spoken:
    /// a node that starts waits a whole timeout before it campaigns.
    pub fn new() -> Self {
        let heard = Heard { last: Instant::now(), left: None };
        Contact(Arc::new(ContactState { heard: Mutex::new(heard), wake: Notify::new() }))
    }

    /// Records that a leader (or a candidate this node voted for) spoke now.
    pub fn touch(&self) {
        self.lock().last = Instant::now();
    }

    /// When that last happened.
    pub fn last(&self) -> Instant {
        self.lock().last
    }

    /// Records that the current leader's connection to this node closed
    /// (the peer ended it, or it broke), and wakes the election timer.
    pub fn leader_left(&self) {
        self.lock().left = Some(Instant::now());
        self.0.wake.notify_one();
    }

    /// When the leader's connection closed, if nothing has been heard from
    /// a leader since.
    pub fn left(&self) -> Option<Instant> {
        let heard = *self.lock();
        heard.left.filter(|left| *left >= heard.last)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.0.heard.lock().unwrap_or_else(|e| e.into_inner())
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

/// How long after the last word from a leader a follower campaigns when the
/// leader's connection to it has closed: `base` plus a random part of
/// `spread`.
///
/// A closed connection is strong evidence: a process that exits or is
/// killed has its connections closed by its kernel, at once. Waiting a
/// whole timeout would only wait for the silence that is certain to come.
/// But a connection also closes when a link drops it after an error while
/// the leader lives on, so the follower still waits until it has heard
/// nothing for the lease and half a heartbeat (`base`): by then every other
/// follower's lease has run out too if the leader is really gone, and a
/// leader that is alive has reconnected and been heard (which cancels
/// this). The campaign then starts with a pre-vote, which a healthy
/// leader's other followers refuse, so a mistake costs no term.
///
/// The random part, up to half the width of the timeout's range, keeps the
/// followers from campaigning together and splitting the vote, as the
/// timeout's own randomness does (Raft paper §5.2).
pub fn after_leader_left(config: &Config) -> (Duration, Duration) {
    let spread = config.election_timeout_max.saturating_sub(config.election_timeout_min) / 2;
    (lease(config) + config.heartbeat_interval / 2, spread)
}

/// When to campaign: `timeout` after the last word from a leader (`last`)
/// or our own last campaign, whichever is later; or, if the leader's
/// connection closed (`left`) after that campaign, `early` after `last`,
/// if that is sooner.
fn campaign_at(
    last: Instant,
    left: Option<Instant>,
    campaigned: Option<Instant>,
    timeout: Duration,
    early: Duration,
) -> Instant {
    let since = campaigned.map_or(last, |c| c.max(last));
    let normal = since + timeout;
    match left {
        Some(left) if campaigned.is_none_or(|c| c < left) => normal.min(last + early),
        _ => normal,
    }
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
        let timeout = if max > min { crate::deterministic::with_rng(|r| r.gen_range(min..max)) } else { min };
        let (base, spread) = after_leader_left(&config);
        let early = base
            + if spread.is_zero() {
                spread
            } else {
                crate::deterministic::with_rng(|r| r.gen_range(Duration::ZERO..spread))
            };
        // Wait until neither a leader nor our own campaign has been heard
        // of for `timeout`, however often that is pushed back; or, once the
        // leader's connection has closed, for `early` (see `after_leader_left`).
        // A voter that is the only one has nobody to hear from and nobody
        // to wait for: it campaigns at once (a single-node cluster, just
        // formed or restarted). Its membership is checked every heartbeat
        // interval.
        loop {
            let now = Instant::now();
            let deadline = campaign_at(contact.last(), contact.left(), campaigned, timeout, early);
            if now >= deadline {
                break;
            }
            let lone = standing(&raft, id).is_some_and(|s| s.alone && s.state != ServerState::Leader);
            if lone && campaigned.is_none_or(|c| now >= c + timeout) {
                break;
            }
            // Biased: which branch wins a tie does not matter (both only
            // re-check the deadline), and a fixed order keeps simulations
            // independent of tokio's random branch choice.
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline.min(now + config.heartbeat_interval)) => {}
                () = contact.0.wake.notified() => {}
            }
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
            let quiet_ms = contact.last().elapsed().as_millis() as u64;
            if contact.left().is_some() && quiet_ms < timeout.as_millis() as u64 {
                tracing::info!(
                    node_id = id,
                    quiet_ms,
                    "the leader's connection closed and no word from it since; standing for election"
                );
            } else {
                tracing::info!(
                    node_id = id,
                    timeout_ms = timeout.as_millis() as u64,
                    "no word from a leader within the election timeout; standing for election"
                );
            }
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
    fn a_closed_leader_connection_brings_the_campaign_forward_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Nothing closed: a timeout after the last word.
        assert_eq!(campaign_at(t0, None, None, ms(500), ms(350)), t0 + ms(500));
        // The leader's connection closed: `early` after the last word.
        assert_eq!(campaign_at(t0, Some(t0 + ms(10)), None, ms(500), ms(350)), t0 + ms(350));
        // Never later than the timeout.
        assert_eq!(campaign_at(t0, Some(t0 + ms(10)), None, ms(200), ms(350)), t0 + ms(200));
        // A campaign since the closure (which failed: we are still here)
        // waits a whole timeout, as after any failed campaign.
        let c = t0 + ms(400);
        assert_eq!(campaign_at(t0, Some(t0 + ms(10)), Some(c), ms(500), ms(350)), c + ms(500));
    }

    #[test]
    fn a_word_from_the_leader_after_its_connection_closed_cancels_the_early_campaign() {
        let contact = Contact::new();
        contact.leader_left();
        assert!(contact.left().is_some());
        contact.touch();
        assert_eq!(contact.left(), None, "the leader reconnected and was heard");
    }

    #[test]
    fn the_early_campaign_waits_out_the_lease_and_spreads_like_the_timeout() {
        let (base, spread) = after_leader_left(&config(100, 500, 1000));
        assert_eq!((base, spread), (Duration::from_millis(350), Duration::from_millis(250)));
        let (base, spread) = after_leader_left(&config(30, 150, 300));
        assert_eq!((base, spread), (Duration::from_millis(105), Duration::from_millis(75)));
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
