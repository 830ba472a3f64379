//! The simulated cluster: real `raft-core` nodes running the real KV state
//! machine, each on its own simulated disk, all connected by the
//! [`SimNet`].
//!
//! A node is started with [`RaftNode::start`] exactly as `kv-server` starts
//! one, except for its two seams: the transport is a
//! [`SimTransport`](crate::net::SimTransport) and the storage is a redb
//! database on a [`SimDisk`]. A crash
//! ([`Cluster::crash`]) is a power cut, in this order:
//!
//! 1. the node leaves the network, so nothing it sends from now on arrives
//!    and nothing reaches it;
//! 2. its disk loses power: whatever was not synced is lost (all of it, or
//!    a seeded part with a torn last write), and the dying incarnation's
//!    later writes fail;
//! 3. its tasks are stopped.
//!
//! Only after all three is anything else allowed to run, so the dead node
//! cannot change anything that the rest of the simulation can observe. A
//! restart ([`Cluster::restart`]) opens the same disk, as a rebooted machine
//! would, and redb recovers what it finds there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kv_app::state_machine::KvStateMachine;
use raft_core::storage::{Db, SimDisk, StorageOptions, Survive};
use raft_core::{Config, Node, NodeId, RaftNode, Storage};

use crate::disk::TracedBackend;
use crate::net::SimNet;
use crate::trace::Trace;

/// A node of the KV application.
pub type KvNode = RaftNode<KvStateMachine>;

/// What the cluster's nodes are built with: the knobs that the negative
/// controls turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeOptions {
    /// Acknowledge appends before they are durable (`unsafe_no_fsync`).
    pub unsafe_no_fsync: bool,
    /// The state machine applies a retried write again (no sessions).
    pub unsafe_no_dedup: bool,
    /// The log writer reports appends durable before it writes them
    /// ([`raft_core::deterministic::Knobs::unsafe_flush_before_commit`]).
    pub unsafe_flush_before_commit: bool,
}

/// One node's slot: its disk outlives its incarnations.
struct Slot {
    disk: SimDisk,
    node: Option<Arc<KvNode>>,
    incarnation: u64,
}

/// A simulated cluster. See the [module docs](self).
pub struct Cluster {
    net: SimNet,
    config: Config,
    options: NodeOptions,
    trace: Trace,
    slots: Mutex<BTreeMap<NodeId, Slot>>,
}

/// The Raft configuration of a simulated node: the production defaults,
/// except that snapshots come often, so that restarted and partitioned
/// nodes catch up through snapshot installs too, not only the log.
pub fn node_config(options: NodeOptions) -> Config {
    let mut config = Config::new("sim");
    config.snapshot_every = 300;
    config.keep_behind_snapshot = 50;
    config.purge_batch = 64;
    config.storage = StorageOptions { unsafe_no_fsync: options.unsafe_no_fsync, ..StorageOptions::default() };
    config
}

impl Cluster {
    /// Starts nodes `1..=n`, each on an empty disk, and forms a cluster of
    /// them (node 1 initializes it).
    pub async fn start(
        n: u64,
        net: SimNet,
        options: NodeOptions,
        trace: Trace,
    ) -> anyhow::Result<Arc<Cluster>> {
        let cluster = Arc::new(Cluster {
            net,
            config: node_config(options),
            options,
            trace,
            slots: Mutex::new(BTreeMap::new()),
        });
        for id in 1..=n {
            cluster.lock().insert(id, Slot { disk: SimDisk::new(), node: None, incarnation: 0 });
            cluster.boot(id).await?;
        }
        let members: BTreeMap<NodeId, Node> =
            (1..=n).map(|id| (id, Node::new(format!("n{id}"), ""))).collect();
        let first = cluster.node(1).ok_or_else(|| anyhow::anyhow!("node 1 did not start"))?;
        first.initialize(members).await?;
        Ok(cluster)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node ids, up or down.
    pub fn ids(&self) -> Vec<NodeId> {
        self.lock().keys().copied().collect()
    }

    /// Node `id`, if it is up.
    pub fn node(&self, id: NodeId) -> Option<Arc<KvNode>> {
        self.lock().get(&id).and_then(|s| s.node.clone())
    }

    /// Node `id`'s current incarnation (counts its starts).
    pub fn incarnation(&self, id: NodeId) -> u64 {
        self.lock().get(&id).map_or(0, |s| s.incarnation)
    }

    /// The network.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// The disk of node `id`.
    pub fn disk(&self, id: NodeId) -> Option<SimDisk> {
        self.lock().get(&id).map(|s| s.disk.clone())
    }

    /// Opens node `id` on its disk and connects it to the network.
    async fn boot(&self, id: NodeId) -> anyhow::Result<()> {
        let disk = self.disk(id).ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        let db =
            Db::on_backend(TracedBackend::new(disk.backend(), id, self.trace.clone()), self.config.storage)?;
        let app = if self.options.unsafe_no_dedup {
            KvStateMachine::unsafe_without_dedup()
        } else {
            KvStateMachine::new()
        };
        let incarnation = self.net.next_incarnation(id);
        let transport = self.net.transport(id, incarnation);
        let node = RaftNode::start(id, self.config.clone(), Storage::Opened(db), app, transport).await?;
        let added = self.net.add(id, node.inbox());
        debug_assert_eq!(added, incarnation);
        self.trace.line(format_args!("node {id} up (incarnation {incarnation})"));
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&id) {
            slot.node = Some(Arc::new(node));
            slot.incarnation = incarnation;
        }
        Ok(())
    }

    /// Restarts node `id` on its disk, if it is down. A disk that redb cannot
    /// open is an error: the simulation reports it as a failure.
    pub async fn restart(&self, id: NodeId) -> anyhow::Result<()> {
        if self.node(id).is_some() {
            return Ok(());
        }
        self.boot(id).await.map_err(|e| anyhow::anyhow!("node {id} did not restart on its disk: {e:#}"))
    }

    /// Crashes node `id` now (a power cut; see the [module docs](self)),
    /// keeping what `survive` says of its unsynced writes.
    pub fn crash(&self, id: NodeId, survive: Survive) {
        let (node, disk) = {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(&id) else { return };
            (slot.node.take(), slot.disk.clone())
        };
        if node.is_none() {
            return;
        }
        self.net.remove(id);
        let before = disk.stats();
        disk.cut_power(survive);
        let after = disk.stats();
        self.trace.line(format_args!(
            "node {id} crashed: power cut, {} unsynced pages lost, {} kept, {} torn",
            after.pages_lost - before.pages_lost,
            after.pages_kept - before.pages_kept,
            after.torn_writes - before.torn_writes
        ));
        if let Some(node) = node {
            stop_in_background(node);
        }
    }

    /// True if node `id`'s disk lost power by itself (an armed crash point
    /// fired inside a write), while the node still counts as up. The
    /// caller then finishes the crash with [`Cluster::crash`].
    pub fn disk_died(&self, id: NodeId) -> bool {
        let slots = self.lock();
        slots.get(&id).is_some_and(|s| s.node.is_some() && s.disk.crash_fired())
    }

    /// Stops every node (the end of a run), so that no task outlives it.
    pub async fn stop_all(&self) {
        let nodes: Vec<Arc<KvNode>> = self.lock().values_mut().filter_map(|s| s.node.take()).collect();
        for node in nodes {
            let _ = node.raft().shutdown().await;
        }
    }
}

/// Stops a crashed node's tasks: openraft at once; the rest as soon as no
/// client call still holds the node.
fn stop_in_background(node: Arc<KvNode>) {
    tokio::spawn(async move {
        let _ = node.raft().shutdown().await;
        let mut node = node;
        loop {
            match Arc::try_unwrap(node) {
                Ok(node) => {
                    node.shutdown_without_handoff().await;
                    return;
                }
                Err(still_shared) => {
                    node = still_shared;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}
