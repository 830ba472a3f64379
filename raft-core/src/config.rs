//! Node configuration, with defaults chosen for a cluster on one machine or
//! one data centre, with an fsync on every append.
//!
//! # Timeouts and failure detection
//!
//! A follower decides the leader has failed when it hears nothing for an
//! *election timeout*, drawn at random from
//! `[election_timeout_min, election_timeout_max)` so that followers rarely
//! time out together and split the vote (§5.2). The leader sends heartbeats
//! every `heartbeat_interval` to keep followers from timing out.
//!
//! Too short a timeout, and a slow disk or a busy CPU looks like a dead
//! leader: needless elections, each a short outage. Too long, and a real
//! failure takes that long to detect. The rule of thumb is
//! `heartbeat_interval ≪ election timeout`, with the election timeout an
//! order of magnitude above the round trip plus fsync time.
//!
//! openraft also uses `heartbeat_interval` as the timeout of each
//! AppendEntries RPC, so the heartbeat must exceed the time a follower needs
//! to fsync a full batch of `max_entries_per_append` entries and answer.
//! The 100 ms default leaves room for a slow disk; openraft's own 50 ms does
//! not under load on a shared 2-core machine.
//!
//! # Choices made for the embedder
//!
//! [`Config::to_openraft`] also sets what is not a knob here: a restarted
//! leader never resumes its old term without an election (openraft's
//! "leader restore" is off; see [`crate::read_index`] for why), and
//! snapshots of at most `snapshot_chunk_bytes` per message.

use std::time::Duration;

use crate::network::tls::PeerTls;
use crate::storage::StorageOptions;

/// Everything a node needs to know that is not stored in its data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Identifies the cluster. Nodes refuse Raft connections from nodes of
    /// another cluster, so a misdirected node can never join.
    pub cluster_id: String,
    /// How often the leader sends heartbeats; also openraft's timeout for
    /// one AppendEntries RPC. Default 100 ms.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout: how long a follower
    /// waits without word from a leader before it stands for election
    /// ([`crate::election`]). Default 500 ms.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    /// Default 1000 ms.
    pub election_timeout_max: Duration,
    /// Take a snapshot after this many entries were applied since the last
    /// one; the log before the snapshot is then purged. Default 10,000.
    pub snapshot_every: u64,
    /// Also write a checkpoint of the applied state (see
    /// [`crate::storage::state_machine`]) after this many commands were
    /// applied since the last one, in the background. A restart re-applies
    /// the commands since the last checkpoint, so this bounds how long a
    /// restart takes whatever the size of the log's entries; each
    /// checkpoint writes the keys changed since the previous one. 0: only
    /// at snapshots. Default 100,000.
    pub checkpoint_every_commands: u64,
    /// Entries to keep in the log behind a snapshot, so that a follower
    /// that is only a little behind catches up from the log rather than by
    /// a full snapshot transfer. Default 1,000.
    pub keep_behind_snapshot: u64,
    /// The most entries sent in one AppendEntries RPC. Default 256.
    pub max_entries_per_append: u64,
    /// Purge the log only once at least this many entries can be deleted in
    /// one transaction. Default 1,024 (openraft's default of 1 would mean
    /// one fsync per purged entry).
    pub purge_batch: u64,
    /// Snapshots are sent to followers in pieces of this many bytes.
    /// Default 1 MiB; must be well below `max_frame_bytes`.
    pub snapshot_chunk_bytes: u64,
    /// Timeout for sending one snapshot chunk. Default 10 s.
    pub install_snapshot_timeout: Duration,
    /// The largest frame the TCP transport sends or accepts. Default 64 MiB.
    /// An AppendEntries request that would be larger is split by openraft
    /// into smaller ones.
    pub max_frame_bytes: u32,
    /// How long the TCP transport waits to connect to a peer. Default 1 s.
    pub connect_timeout: Duration,
    /// The most commands proposed together in one log entry (group commit;
    /// see [`crate::proposer`]). Default 1,024.
    pub max_batch_commands: usize,
    /// Stop adding commands to a batch once it holds this many bytes.
    /// Default 1 MiB (a single larger command still travels alone).
    pub max_batch_bytes: usize,
    /// How many batches may be in the middle of being committed at once.
    /// Default 1: the next batch fills up while the previous one commits.
    /// More in flight means smaller batches and more fsyncs; on the machine
    /// in `docs/benchmarks.md`, 2 and 4 were 15% and 45% slower at 64
    /// writers.
    pub max_inflight_batches: usize,
    /// Whether a follower writes the entries of an AppendEntries on the
    /// task that serves it, when its log writer is idle, instead of handing
    /// them to the writer thread (see
    /// [`crate::storage::RedbLogStore::write_in_place_when_following`]).
    /// Default on: it takes two thread hand-offs off every commit's path.
    /// The leader always writes through its thread, so that its fsync
    /// overlaps replication.
    pub follower_writes_in_place: bool,
    /// How long [`crate::RaftNode::write`] and
    /// [`crate::RaftNode::read_barrier`] wait. A write that times out is
    /// *indeterminate*: it may still commit. Default 5 s.
    pub request_timeout: Duration,
    /// How long membership changes wait (adding a learner waits for it to
    /// catch up, which may take a snapshot transfer). Default 60 s.
    pub change_timeout: Duration,
    /// How a durable node opens its data directory. The default is safe;
    /// the fields inject storage faults for crash tests and negative
    /// controls (see [`crate::storage::fault`]). Ignored by in-memory storage.
    pub storage: StorageOptions,
    /// Mutual TLS on every Raft connection, in and out: the cluster's CA,
    /// this node's certificate (which must name it, see
    /// [`crate::network::tls`]) and key. `None` (the default): plain TCP,
    /// and anyone who can reach the Raft port and knows the cluster id can
    /// speak Raft to the node.
    pub peer_tls: Option<PeerTls>,
}

impl Config {
    /// The defaults, for a cluster called `cluster_id`.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        Config {
            cluster_id: cluster_id.into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            snapshot_every: 10_000,
            checkpoint_every_commands: 100_000,
            keep_behind_snapshot: 1_000,
            max_entries_per_append: 256,
            purge_batch: 1_024,
            snapshot_chunk_bytes: 1 << 20,
            install_snapshot_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(1),
            max_batch_commands: 1024,
            max_batch_bytes: 1 << 20,
            max_inflight_batches: 1,
            follower_writes_in_place: true,
            request_timeout: Duration::from_secs(5),
            change_timeout: Duration::from_secs(60),
            storage: StorageOptions::default(),
            peer_tls: None,
        }
    }

    /// The openraft configuration this config stands for, validated.
    #[allow(clippy::result_large_err)] // openraft's own error type
    pub fn to_openraft(&self) -> Result<openraft::Config, openraft::ConfigError> {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        // Checked here: openraft sees only the lease derived from them.
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(openraft::ConfigError::ElectionTimeout {
                min: ms(self.election_timeout_min),
                max: ms(self.election_timeout_max),
            });
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(openraft::ConfigError::ElectionTimeoutLTHeartBeat {
                election_timeout_min: ms(self.election_timeout_min),
                heartbeat_interval: ms(self.heartbeat_interval),
            });
        }
        let lease = crate::election::lease(self);
        openraft::Config {
            cluster_name: self.cluster_id.clone(),
            heartbeat_interval: ms(self.heartbeat_interval),
            install_snapshot_timeout: ms(self.install_snapshot_timeout),
            max_payload_entries: self.max_entries_per_append,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            purge_batch_size: self.purge_batch,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            enable_leader_restore: Some(false),
            // raft-core runs its own election timer ([`crate::election`]):
            // openraft's would wait out the leader lease before the timeout.
            // openraft's timeouts then only set the lease, which is
            // `election_timeout_max`; its minimum must lie below it.
            enable_elect: false,
            enable_pre_vote: Some(true),
            election_timeout_max: ms(lease),
            election_timeout_min: ms(lease).saturating_sub(1),
            ..Default::default()
        }
        .validate()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("raft-core")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_for_openraft_which_times_no_election_itself() {
        let c = Config::default().to_openraft().unwrap();
        assert_eq!(c.heartbeat_interval, 100);
        assert!(!c.enable_elect, "raft-core's election timer runs instead");
        assert_eq!(c.enable_pre_vote, Some(true));
        // openraft's timeouts set only the lease: 300 ms, three heartbeats.
        assert_eq!(c.election_timeout_max, 300);
    }

    #[test]
    fn inverted_election_timeouts_are_rejected() {
        let mut c = Config::default();
        c.election_timeout_max = c.election_timeout_min;
        assert!(c.to_openraft().is_err());
    }
}
