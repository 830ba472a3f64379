//! The nemesis: faults on a seeded schedule, the same kinds the jepsen
//! harness injects, plus the two only a simulation can: a power cut inside
//! a write, and a lossy network.
//!
//! One fault at a time: a quiet gap, then a fault held for a while, then
//! its repair, until the clients are done. Each start and stop is written
//! into the history as a nemesis event, as the harness does.
//!
//! | kind | what | repair |
//! |---|---|---|
//! | `partition` | cuts links in one of the harness's shapes: `one` (a random node alone), `leader` (the leader alone), `majority` (a random majority and the rest), `ring` (each node sees only its neighbours), `bridge` (two halves joined by one node) | heal |
//! | `crash` | a power cut on a random node (the leader half the time): unsynced writes lost | restart on its disk |
//! | `disk` | a power cut *inside* one of the leader's writes: the disk dies at its n-th write or sync, a seeded part of the unsynced writes survives, the last torn | restart on its disk |
//! | `power` | a power cut of a majority of the nodes at once, or of all of them (a rack or a data centre going dark): each keeps a seeded part of its unsynced writes | restart each on its disk |
//! | `net` | a lossy network: drops, duplicates, late copies, slower links | back to healthy |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_core::storage::Survive;
use raft_core::NodeId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::cluster::Cluster;
use crate::net::NetFaults;
use crate::workload::History;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Network partitions of the harness's shapes.
    Partition,
    /// Power cuts between writes.
    Crash,
    /// Power cuts inside a write, with torn writes.
    Disk,
    /// A power cut of a majority of the nodes at once.
    Power,
    /// Message loss, duplication and reordering.
    Net,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 5] = [Fault::Partition, Fault::Crash, Fault::Disk, Fault::Power, Fault::Net];

    /// The name in the history and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Crash => "crash",
            Fault::Disk => "disk",
            Fault::Power => "power",
            Fault::Net => "net",
        }
    }
}

/// The partition shapes.
const SHAPES: [&str; 5] = ["one", "leader", "majority", "ring", "bridge"];

/// Faults injected, by kind (partitions also by shape), for the summary.
pub type FaultCounts = BTreeMap<String, u64>;

/// Runs faults from `kinds` until `done` is set, then repairs everything.
/// Returns how many of each it injected.
pub async fn run(
    cluster: Arc<Cluster>,
    history: History,
    kinds: Vec<Fault>,
    seed: u64,
    done: Arc<AtomicBool>,
) -> FaultCounts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = FaultCounts::new();
    if kinds.is_empty() {
        return counts;
    }
    let ids = cluster.ids();
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1_000))).await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let fault = *kinds.choose(&mut rng).unwrap_or(&Fault::Partition);
        let hold = Duration::from_millis(rng.gen_range(200..2_000));
        match fault {
            Fault::Partition => {
                let shape = SHAPES[rng.gen_range(0..SHAPES.len())];
                let leader = leader_of(&cluster);
                let cuts = partition(shape, &ids, leader, &mut rng);
                let shown: Vec<[NodeId; 2]> = cuts.iter().map(|&(a, b)| [a, b]).collect();
                cluster.net().set_cuts(cuts);
                history.nemesis("start-partition", json!({"shape": shape, "cuts": shown}));
                *counts.entry(format!("partition-{shape}")).or_default() += 1;
                tokio::time::sleep(hold).await;
                cluster.net().set_cuts(BTreeSet::new());
                history.nemesis("stop-partition", json!({"shape": shape}));
            }
            Fault::Crash => {
                let victim = match leader_of(&cluster) {
                    Some(l) if rng.gen_bool(0.5) => l,
                    _ => ids[rng.gen_range(0..ids.len())],
                };
                cluster.crash(victim, Survive::Nothing);
                history.nemesis("start-crash", json!({"node": victim}));
                *counts.entry("crash".into()).or_default() += 1;
                tokio::time::sleep(hold).await;
                restart(&cluster, &history, victim, "crash").await;
            }
            Fault::Disk => {
                let Some(victim) = leader_of(&cluster) else { continue };
                let Some(disk) = cluster.disk(victim) else { continue };
                let after = rng.gen_range(0..24);
                disk.crash_after(after, Survive::Seeded(rng.gen()));
                history.nemesis("start-disk", json!({"node": victim, "after_ops": after}));
                // The disk dies by itself at its armed operation; give it
                // the hold time to get there.
                let until = tokio::time::Instant::now() + hold;
                while tokio::time::Instant::now() < until && !cluster.disk_died(victim) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if cluster.disk_died(victim) {
                    cluster.crash(victim, Survive::Nothing);
                    *counts.entry("disk".into()).or_default() += 1;
                    tokio::time::sleep(hold).await;
                    restart(&cluster, &history, victim, "disk").await;
                } else {
                    disk.disarm();
                    history.nemesis("stop-disk", json!({"node": victim, "fired": false}));
                }
            }
            Fault::Power => {
                let mut victims = ids.clone();
                victims.shuffle(&mut rng);
                if rng.gen_bool(0.5) {
                    victims.truncate(ids.len() / 2 + 1);
                }
                victims.sort_unstable();
                for &victim in &victims {
                    cluster.crash(victim, Survive::Seeded(rng.gen()));
                }
                history.nemesis("start-power", json!({"nodes": victims}));
                *counts.entry("power".into()).or_default() += 1;
                tokio::time::sleep(hold).await;
                for &victim in &victims {
                    restart(&cluster, &history, victim, "power").await;
                }
            }
            Fault::Net => {
                cluster.net().set_faults(NetFaults::lossy());
                history.nemesis("start-net", json!({}));
                *counts.entry("net".into()).or_default() += 1;
                tokio::time::sleep(hold).await;
                cluster.net().set_faults(NetFaults::healthy());
                history.nemesis("stop-net", json!({}));
            }
        }
    }
    heal(&cluster, &history).await;
    counts
}

/// Repairs everything: links healed, network healthy, every node up.
pub async fn heal(cluster: &Cluster, history: &History) {
    cluster.net().set_cuts(BTreeSet::new());
    cluster.net().set_faults(NetFaults::healthy());
    for id in cluster.ids() {
        if cluster.disk_died(id) {
            cluster.crash(id, Survive::Nothing);
        }
        if cluster.node(id).is_none() {
            restart(cluster, history, id, "final").await;
        }
    }
    history.nemesis("final-heal", json!({}));
}

async fn restart(cluster: &Cluster, history: &History, id: NodeId, why: &str) {
    match cluster.restart(id).await {
        Ok(()) => history.nemesis(&format!("stop-{why}"), json!({"node": id})),
        Err(e) => history.nemesis("restart-failed", json!({"node": id, "error": format!("{e:#}")})),
    }
}

/// The node that believes it leads, if one is up and does.
fn leader_of(cluster: &Cluster) -> Option<NodeId> {
    cluster.ids().into_iter().find(|&id| cluster.node(id).is_some_and(|n| n.is_leader()))
}

/// The directed links a partition of `shape` cuts.
pub fn partition(
    shape: &str,
    ids: &[NodeId],
    leader: Option<NodeId>,
    rng: &mut StdRng,
) -> BTreeSet<(NodeId, NodeId)> {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    let n = ids.len();
    // Which nodes each node can still reach.
    let reach: Vec<(NodeId, Vec<NodeId>)> = match shape {
        "one" | "leader" => {
            let alone = if shape == "leader" { leader.unwrap_or(shuffled[0]) } else { shuffled[0] };
            ids.iter()
                .map(|&a| (a, ids.iter().copied().filter(|&b| (a == alone) == (b == alone)).collect()))
                .collect()
        }
        "majority" => {
            let major: BTreeSet<NodeId> = shuffled[..n / 2 + 1].iter().copied().collect();
            ids.iter()
                .map(|&a| {
                    (a, ids.iter().copied().filter(|b| major.contains(&a) == major.contains(b)).collect())
                })
                .collect()
        }
        "ring" => shuffled
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, vec![a, shuffled[(i + 1) % n], shuffled[(i + n - 1) % n]]))
            .collect(),
        _ => {
            // bridge: the first half, the bridge node, the second half.
            let bridge = shuffled[n / 2];
            let left: BTreeSet<NodeId> = shuffled[..n / 2].iter().copied().collect();
            ids.iter()
                .map(|&a| {
                    let sees = ids
                        .iter()
                        .copied()
                        .filter(|&b| a == bridge || b == bridge || left.contains(&a) == left.contains(&b))
                        .collect();
                    (a, sees)
                })
                .collect()
        }
    };
    let mut cuts = BTreeSet::new();
    for (a, sees) in reach {
        for &b in ids {
            if a != b && !sees.contains(&b) {
                cuts.insert((a, b));
            }
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(shape: &str, n: u64, leader: Option<NodeId>) -> BTreeSet<(NodeId, NodeId)> {
        let ids: Vec<NodeId> = (1..=n).collect();
        partition(shape, &ids, leader, &mut StdRng::seed_from_u64(1))
    }

    #[test]
    fn the_leader_shape_cuts_the_leader_off_from_everyone_and_nothing_else() {
        let c = cuts("leader", 5, Some(3));
        assert_eq!(c.len(), 8);
        assert!(c.iter().all(|&(a, b)| a == 3 || b == 3));
    }

    #[test]
    fn a_majority_partition_leaves_exactly_one_side_with_a_majority() {
        let c = cuts("majority", 5, None);
        // 3 and 2 nodes: 3 * 2 links each way.
        assert_eq!(c.len(), 12);
    }

    #[test]
    fn a_ring_of_five_leaves_each_node_two_neighbours() {
        let c = cuts("ring", 5, None);
        for a in 1..=5 {
            assert_eq!(c.iter().filter(|&&(x, _)| x == a).count(), 2, "node {a}");
        }
    }

    #[test]
    fn a_bridge_node_reaches_everyone_and_the_halves_reach_only_their_own() {
        let c = cuts("bridge", 5, None);
        let bridge: Vec<NodeId> = (1..=5).filter(|a| !c.iter().any(|&(x, y)| x == *a || y == *a)).collect();
        assert_eq!(bridge.len(), 1);
        assert_eq!(c.len(), 8);
    }

    #[test]
    fn cuts_are_symmetric() {
        for shape in SHAPES {
            let c = cuts(shape, 5, Some(2));
            assert!(c.iter().all(|&(a, b)| c.contains(&(b, a))), "{shape}");
        }
    }
}
