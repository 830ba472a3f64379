//! The nemesis: faults, injected on a schedule while the clients work.
//!
//! One fault is active at a time. The schedule alternates a quiet gap and a
//! fault, each lasting the nemesis interval times a random factor in
//! [0.5, 1.5), so faults start and stop at irregular moments. Each start
//! and stop is a nemesis event in the history (`start-<fault>`,
//! `stop-<fault>`), whose value names the shape or target, the nodes hit,
//! and the leader at that moment (as the status poller last saw it); a
//! start's `began` is when the nemesis began the fault (nanoseconds, as
//! event times), before the event itself was recorded.
//!
//! | fault | start | stop |
//! |-------|-------|------|
//! | `partition` | cut links in the proxy: one node isolated, the leader isolated, a random majority/minority split, a majorities ring, or a bridge; the value's `cut_off` lists the nodes left hearing less than a majority ([`cut_off`]) | heal every link |
//! | `kill` | SIGKILL the leader, a random minority, or every node | restart them on their data |
//! | `pause` | SIGSTOP the leader, for longer than an election timeout | SIGCONT |
//! | `lose-unsynced` | as `kill`, on nodes whose storage keeps unsynced writes in memory only (`--fault-lose-unsynced-writes`), so the kill loses what a power failure would | restart them |
//! | `membership` | remove a random node from the membership and kill it | wipe its data and add it back as a new node (`--join`) |
//! | `restart` | SIGTERM (a graceful stop) of the leader half the time, else of another node (of any node while no leader is known); SIGKILL if it has not exited within [`STOP_GRACE`] | start it again |
//! | `rolling-restart` | a whole rolling restart (below), recorded as it goes | recorded when the last node is back |
//!
//! A rolling restart stops and starts every node in turn, followers first
//! and the leader last, each with SIGTERM and started again on its data,
//! and waits until the restarted node has caught up before the next one
//! stops ([`kv_client::rolling`]). Unlike the other faults it is a process,
//! not a state: the fault lasts as long as the restart takes, and no hold
//! follows it. Each node's restart is a `restarted-node` nemesis event
//! (which node, whether it led, how it stopped, the index it caught up to,
//! how long it took). A graceful stop must cost no client anything:
//! writes through a rolling restart should all succeed, some a little
//! later ([`jepsen_checker::stats::fault_writes`] counts them).
//!
//! With a majorities ring each node hears a majority, but no two hear the
//! same one; with a bridge, two halves are cut from each other and one node
//! hears both. Both are shapes in which a naive implementation elects two
//! leaders.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jepsen_checker::history::{EventType, Function, Process, Recorder};
use kv_client::rolling;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use super::client::Http;
use crate::cluster::Cluster;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Network partitions through the proxy.
    Partition,
    /// SIGKILL and restart.
    Kill,
    /// SIGSTOP and SIGCONT of the leader.
    Pause,
    /// SIGKILL with loss of every write not yet fsynced.
    LoseUnsynced,
    /// Remove a node, then add it back with fresh data.
    Membership,
    /// SIGTERM (a graceful stop) and start of the leader or another node.
    Restart,
    /// SIGTERM and start of every node in turn, the leader last.
    RollingRestart,
}

impl Fault {
    /// The faults of `--nemesis all`: every one but `rolling-restart`,
    /// which is an operation to measure on its own (its writes should all
    /// succeed; see the module docs), not a fault to mix with crashes.
    pub const ALL: [Fault; 6] =
        [Fault::Partition, Fault::Kill, Fault::Pause, Fault::LoseUnsynced, Fault::Membership, Fault::Restart];

    /// Its name in the history (`start-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::LoseUnsynced => "lose-unsynced",
            Fault::Membership => "membership",
            Fault::Restart => "restart",
            Fault::RollingRestart => "rolling-restart",
        }
    }
}

/// How long a graceful stop may take before SIGKILL: a leader's handoff
/// takes at most the longest election timeout (2 s with
/// [`super::SERVER_TIMING`]), and the HTTP server then has 5 s to finish
/// the requests in flight.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Whom `kill` and `lose-unsynced` kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The current leader.
    Leader,
    /// A random minority: (n - 1) / 2 nodes.
    Minority,
    /// Every node at once.
    All,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 3] = [Target::Leader, Target::Minority, Target::All];

    fn name(self) -> &'static str {
        match self {
            Target::Leader => "leader",
            Target::Minority => "minority",
            Target::All => "all",
        }
    }
}

/// The leader as the status poller last saw it: `(term, node)`.
#[derive(Debug, Default)]
pub struct LeaderView(Mutex<Option<(u64, u64, Instant)>>);

/// How long a leader sighting stays believable.
const LEADER_FRESH: Duration = Duration::from_secs(2);

impl LeaderView {
    /// Records that `node` claimed to lead `term`.
    pub fn saw(&self, term: u64, node: u64) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let newer = match *v {
            Some((t, _, at)) => term >= t || at.elapsed() > LEADER_FRESH,
            None => true,
        };
        if newer {
            *v = Some((term, node, Instant::now()));
        }
    }

    /// The current leader, if one was seen recently.
    pub fn leader(&self) -> Option<u64> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.filter(|(_, _, at)| at.elapsed() <= LEADER_FRESH).map(|(_, n, _)| n)
    }
}

/// A fault in force, and what undoes it.
#[derive(Debug, Clone)]
pub enum Active {
    /// Links are cut.
    Partition,
    /// These nodes were killed.
    Killed(Fault, Vec<u64>),
    /// These nodes are stopped.
    Paused(Vec<u64>),
    /// This node was removed from the membership and killed.
    Removed(u64),
    /// A rolling restart ended, as the value says (the order, and an
    /// error if a node did not come back).
    Rolled(Value),
}

impl Active {
    fn fault(&self) -> Fault {
        match self {
            Active::Partition => Fault::Partition,
            Active::Killed(f, _) => *f,
            Active::Paused(_) => Fault::Pause,
            Active::Removed(_) => Fault::Membership,
            Active::Rolled(_) => Fault::RollingRestart,
        }
    }
}

/// The fault injector.
pub struct Nemesis {
    /// The cluster it breaks.
    pub cluster: Arc<tokio::sync::Mutex<Cluster>>,
    /// For membership changes.
    pub http: Http,
    /// Every node's HTTP address; node `i + 1` at index `i`.
    pub nodes: Vec<String>,
    /// The history.
    pub rec: Recorder,
    /// The leader, as last polled.
    pub leader: Arc<LeaderView>,
    /// Its random choices.
    pub rng: StdRng,
    /// The faults to choose from.
    pub faults: Vec<Fault>,
    /// Whom kills choose from.
    pub kill_targets: Vec<Target>,
    /// The mean length of a gap and of a fault.
    pub interval: Duration,
    /// The shortest pause: longer than the cluster's election timeout.
    pub min_pause: Duration,
}

impl Nemesis {
    fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn record(&self, f: String, value: Value) {
        self.rec.record(Process::Nemesis, EventType::Info, Function::Other(f), Value::Null, value);
    }

    fn span(&mut self) -> Duration {
        self.interval.mul_f64(self.rng.gen_range(0.5..1.5))
    }

    /// Runs the schedule until `stop`; returns the fault still in force
    /// then, for the final phase to undo.
    pub async fn run(mut self, stop: Instant) -> (Nemesis, Option<Active>) {
        if self.faults.is_empty() {
            return (self, None);
        }
        loop {
            let gap = self.span();
            if Instant::now() + gap >= stop {
                return (self, None);
            }
            tokio::time::sleep(gap).await;
            let fault = *self.faults.choose(&mut self.rng).expect("faults is not empty");
            let Some(active) = self.start(fault).await else { continue };
            let mut hold = self.span();
            match fault {
                Fault::Pause => hold = hold.max(self.min_pause),
                // The restart has happened; its stop only records the end.
                Fault::RollingRestart => hold = Duration::ZERO,
                _ => {}
            }
            if Instant::now() + hold >= stop {
                tokio::time::sleep_until(stop.into()).await;
                return (self, Some(active));
            }
            tokio::time::sleep(hold).await;
            self.stop(active).await;
        }
    }

    /// The leader, or a random node if none is known.
    fn leader_or_any(&mut self) -> u64 {
        let ids = self.ids();
        self.leader.leader().unwrap_or_else(|| *ids.choose(&mut self.rng).expect("nodes"))
    }

    /// Starts `fault`; `None` if it could not be started (it is recorded
    /// as a `fault-failed` nemesis event).
    pub async fn start(&mut self, fault: Fault) -> Option<Active> {
        // When the fault began, before anything was done: the start event
        // is recorded once it is in force, which may be much later (a
        // graceful stop, a membership change).
        let began = self.rec.elapsed_nanos();
        self.cluster.lock().await.reap();
        let leader = self.leader.leader();
        let ids = self.ids();
        let n = ids.len();
        let (active, mut value) = match fault {
            Fault::Partition => {
                let shapes = ["one", "leader", "majority", "majorities-ring", "bridge"];
                let shape = *shapes.choose(&mut self.rng).expect("shapes");
                let mut order = ids.clone();
                order.shuffle(&mut self.rng);
                let leader_or_any = self.leader_or_any();
                let cluster = self.cluster.lock().await;
                let net = &cluster.net;
                let grouped = |groups: &[Vec<u64>]| {
                    net.partition(&ids, groups);
                    let together = |a, b| groups.iter().any(|g| g.contains(&a) && g.contains(&b));
                    (json!({"groups": groups}), cut_off(&ids, together))
                };
                let linked = |links: &[(u64, u64)]| {
                    net.connect_only(&ids, links);
                    let up = |a, b| links.iter().any(|&l| l == (a, b) || l == (b, a));
                    cut_off(&ids, up)
                };
                let (detail, cut) = match shape {
                    "one" | "leader" => {
                        let lone = if shape == "leader" { leader_or_any } else { order[0] };
                        let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != lone).collect();
                        grouped(&[vec![lone], rest])
                    }
                    "majority" => {
                        let (minority, majority) = order.split_at(n / 2);
                        grouped(&[minority.to_vec(), majority.to_vec()])
                    }
                    "majorities-ring" => {
                        // Neighbours on a ring: with 5 nodes each hears itself
                        // and two others, a majority, but no two nodes hear the
                        // same majority. With 3 nodes a ring is a line.
                        let mut links: Vec<(u64, u64)> =
                            (0..n).map(|i| (order[i], order[(i + 1) % n])).collect();
                        if n <= 3 {
                            links.pop();
                        }
                        let cut = linked(&links);
                        (json!({"links": links}), cut)
                    }
                    _ => {
                        // Two halves that cannot hear each other, and one node
                        // in the middle that hears both.
                        let bridge = order[0];
                        let (a, b) = order[1..].split_at((n - 1) / 2);
                        let mut links = Vec::new();
                        for half in [a, b] {
                            for (i, &x) in half.iter().enumerate() {
                                links.push((bridge, x));
                                links.extend(half[i + 1..].iter().map(|&y| (x, y)));
                            }
                        }
                        let cut = linked(&links);
                        (json!({"bridge": bridge, "halves": [a, b]}), cut)
                    }
                };
                (Active::Partition, json!({"shape": shape, "detail": detail, "cut_off": cut}))
            }
            Fault::Kill | Fault::LoseUnsynced => {
                let target = *self.kill_targets.choose(&mut self.rng).unwrap_or(&Target::Leader);
                let victims: Vec<u64> = match target {
                    Target::Leader => vec![self.leader_or_any()],
                    Target::Minority => {
                        let mut order = ids.clone();
                        order.shuffle(&mut self.rng);
                        order.truncate((n - 1) / 2);
                        order
                    }
                    Target::All => ids.clone(),
                };
                let mut cluster = self.cluster.lock().await;
                for &v in &victims {
                    if let Err(e) = cluster.kill(v) {
                        tracing::warn!(node = v, error = %e, "kill failed");
                    }
                }
                (Active::Killed(fault, victims.clone()), json!({"target": target.name(), "nodes": victims}))
            }
            Fault::Restart => {
                // The leader half the time: its stop is the one that hands
                // leadership over.
                let others: Vec<u64> = ids.iter().copied().filter(|&i| Some(i) != leader).collect();
                let other = others.choose(&mut self.rng).copied();
                let (target, victim) = match (leader, other) {
                    (Some(_), Some(other)) if self.rng.gen_bool(0.5) => ("other", other),
                    (Some(leader), _) => ("leader", leader),
                    // No leader known: any node, which may be the leader.
                    (None, Some(any)) => ("any", any),
                    (None, None) => return None,
                };
                let mut cluster = self.cluster.lock().await;
                let stop = match cluster.stop(victim, STOP_GRACE).await {
                    Ok(stop) => stop,
                    Err(e) => {
                        drop(cluster);
                        let value = json!({"fault": fault.name(), "began": began, "node": victim, "error": e.to_string()});
                        self.record("fault-failed".into(), value);
                        return None;
                    }
                };
                let how = stop.map(|s| json!({"exited": s.exited, "status": s.status}));
                let value = json!({"target": target, "nodes": [victim], "stop": how});
                (Active::Killed(fault, vec![victim]), value)
            }
            Fault::RollingRestart => {
                self.record(format!("start-{}", fault.name()), json!({"leader": leader, "began": began}));
                let outcome = self.rolling_restart().await;
                return Some(Active::Rolled(outcome));
            }
            Fault::Pause => {
                let victim = self.leader_or_any();
                let mut cluster = self.cluster.lock().await;
                if let Err(e) = cluster.pause(victim, true) {
                    self.record(
                        "fault-failed".into(),
                        json!({"fault": fault.name(), "began": began, "error": e.to_string()}),
                    );
                    return None;
                }
                (Active::Paused(vec![victim]), json!({"target": "leader", "nodes": [victim]}))
            }
            Fault::Membership => {
                let victim = *ids.choose(&mut self.rng).expect("nodes");
                let others: Vec<&String> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i as u64 + 1 != victim)
                    .map(|(_, a)| a)
                    .collect();
                let mut removed = Err(String::from("no node answered"));
                for via in others {
                    match self.http.remove_member(via, victim).await {
                        Ok(()) => {
                            removed = Ok(());
                            break;
                        }
                        Err(e) => removed = Err(e.error),
                    }
                }
                if let Err(error) = removed {
                    let value =
                        json!({"fault": fault.name(), "began": began, "node": victim, "error": error});
                    self.record("fault-failed".into(), value);
                    return None;
                }
                let mut cluster = self.cluster.lock().await;
                if let Err(e) = cluster.kill(victim) {
                    tracing::warn!(node = victim, error = %e, "kill failed");
                }
                (Active::Removed(victim), json!({"nodes": [victim]}))
            }
        };
        value["leader"] = json!(leader);
        value["began"] = json!(began);
        self.record(format!("start-{}", fault.name()), value);
        Some(active)
    }

    /// Undoes a fault and records its stop.
    pub async fn stop(&mut self, active: Active) {
        let fault = active.fault();
        let mut cluster = self.cluster.lock().await;
        cluster.reap();
        let mut value = json!({});
        match &active {
            Active::Partition => cluster.net.heal(),
            Active::Killed(_, ids) => {
                for &id in ids {
                    if let Err(e) = cluster.restart(id) {
                        tracing::warn!(node = id, error = %e, "restart failed");
                    }
                }
                value = json!({"nodes": ids});
            }
            Active::Paused(ids) => {
                for &id in ids {
                    if let Err(e) = cluster.pause(id, false) {
                        tracing::warn!(node = id, error = %e, "resume failed");
                    }
                }
                value = json!({"nodes": ids});
            }
            Active::Rolled(outcome) => value = outcome.clone(),
            Active::Removed(id) => {
                let via =
                    self.nodes.iter().enumerate().find(|(i, _)| *i as u64 + 1 != *id).map(|(_, a)| a.clone());
                if let Some(via) = via {
                    if let Err(e) = cluster.rejoin_fresh(*id, &via) {
                        tracing::warn!(node = id, error = %e, "re-adding failed");
                    }
                }
                value = json!({"nodes": [id]});
            }
        }
        drop(cluster);
        if value.get("leader").is_none() {
            value["leader"] = json!(self.leader.leader());
        }
        self.record(format!("stop-{}", fault.name()), value);
    }

    /// Restarts every node in turn, followers first (in random order) and
    /// the leader last, each caught up before the next stops; records a
    /// `restarted-node` event per node. Returns the stop event's value:
    /// the order, and if a node did not come back, why and which nodes
    /// were left alone.
    async fn rolling_restart(&mut self) -> Value {
        let mut pending = self.ids();
        pending.shuffle(&mut self.rng);
        let mut order = Vec::new();
        // The leader the last restarted node caught up with: the poller's
        // view may not have seen the handoff yet.
        let mut last_leader = None;
        loop {
            let leader = self.ask_leader().await;
            let Some(id) = rolling::next_to_restart(&pending, leader) else { break };
            pending.retain(|&p| p != id);
            order.push(id);
            let began = Instant::now();
            let mut cluster = self.cluster.lock().await;
            cluster.reap();
            let stopped = cluster.stop(id, STOP_GRACE).await;
            let started = cluster.restart(id);
            drop(cluster);
            let stop = match (stopped, started) {
                (Ok(stop), Ok(())) => stop,
                (Err(e), _) | (_, Err(e)) => {
                    return json!({"nodes": order, "error": e.to_string(), "untouched": pending});
                }
            };
            let (http, nodes) = (self.http.clone(), self.nodes.clone());
            let status = |n: u64| {
                let (http, addr) = (http.clone(), nodes.get((n as usize).wrapping_sub(1)).cloned());
                async move {
                    match addr {
                        Some(addr) => http.status(&addr).await.map_err(|f| f.error),
                        None => Err(format!("there is no node {n}")),
                    }
                }
            };
            let caught_up = rolling::wait_caught_up(id, crate::cluster::SETTLE, status).await;
            let mut value = json!({
                "node": id,
                "was_leader": leader == Some(id),
                "stop": stop.map(|s| json!({"exited": s.exited, "status": s.status})),
                "ms": (began.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            });
            match caught_up {
                Ok(c) => {
                    last_leader = Some(c.leader);
                    value["leader"] = json!(c.leader);
                    value["caught_up_to"] = json!(c.index);
                    self.record("restarted-node".into(), value);
                }
                Err(e) => {
                    value["error"] = json!(e.to_string());
                    self.record("restarted-node".into(), value);
                    return json!({"nodes": order, "error": e.to_string(), "untouched": pending});
                }
            }
        }
        json!({"nodes": order, "leader": last_leader})
    }

    /// The node that says it leads, in the highest term, asking every node
    /// now (the poller's view may be a moment old); waits up to an election
    /// timeout or two for one. `None` if no node says so.
    async fn ask_leader(&self) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut leader: Option<(u64, u64)> = None;
            for addr in &self.nodes {
                if let Ok(s) = self.http.status(addr).await {
                    if s.role == "leader" && leader.is_none_or(|(term, _)| s.term > term) {
                        leader = Some((s.term, s.id));
                    }
                }
            }
            if leader.is_some() || Instant::now() >= deadline {
                return leader.map(|(_, id)| id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The final phase's first step: heals every link, resumes and restarts
    /// every node. Recorded as `final-heal`, with when it `began`.
    pub async fn heal_all(&mut self) {
        let began = self.rec.elapsed_nanos();
        let mut cluster = self.cluster.lock().await;
        cluster.reap();
        cluster.net.heal();
        let ids: BTreeSet<u64> = cluster.ids().into_iter().collect();
        for id in ids {
            let _ = cluster.pause(id, false);
            if let Err(e) = cluster.restart(id) {
                tracing::warn!(node = id, error = %e, "restart failed");
            }
        }
        drop(cluster);
        self.record("final-heal".into(), json!({"began": began}));
    }
}

/// The nodes a partition cuts off from the majority: those that can
/// exchange messages directly (`up(a, b)`) with fewer than a majority of
/// `ids`, themselves included. Raft messages are not relayed, so such a
/// node can neither commit nor be elected; as a leader it can still
/// acknowledge leader-durable writes until its lease runs out. Recorded as
/// the start event's `cut_off`, which the split-brain window reads
/// ([`jepsen_checker::stats::split_brain`]).
pub fn cut_off(ids: &[u64], up: impl Fn(u64, u64) -> bool) -> Vec<u64> {
    let majority = ids.len() / 2 + 1;
    let heard = |a: u64| 1 + ids.iter().filter(|&&b| b != a && up(a, b)).count();
    ids.iter().copied().filter(|&a| heard(a) < majority).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minority_groups_are_cut_off_and_rings_and_bridges_cut_off_no_one() {
        let ids = [1, 2, 3, 4, 5];
        let groups = [vec![1, 2], vec![3, 4, 5]];
        let together = |a, b| groups.iter().any(|g: &Vec<u64>| g.contains(&a) && g.contains(&b));
        assert_eq!(cut_off(&ids, together), [1, 2]);
        let lone = [vec![3], vec![1, 2, 4, 5]];
        assert_eq!(cut_off(&ids, |a, b| lone.iter().any(|g| g.contains(&a) && g.contains(&b))), [3]);
        // A ring: each node hears its two neighbours, a majority with itself.
        let ring = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)];
        let up = |links: &[(u64, u64)], a, b| links.iter().any(|&l| l == (a, b) || l == (b, a));
        assert!(cut_off(&ids, |a, b| up(&ring, a, b)).is_empty());
        // A bridge 1 between halves {2, 3} and {4, 5}.
        let bridge = [(1, 2), (2, 3), (1, 3), (1, 4), (4, 5), (1, 5)];
        assert!(cut_off(&ids, |a, b| up(&bridge, a, b)).is_empty());
        // Nothing up: everyone alone.
        assert_eq!(cut_off(&[1, 2, 3], |_, _| false), [1, 2, 3]);
    }
}
