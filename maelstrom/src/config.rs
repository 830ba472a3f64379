//! The node's settings, and Raft timing chosen for Maelstrom's network.
//!
//! # Why these timeouts
//!
//! Maelstrom delays every message between nodes by its `--latency` (mean,
//! in ms; 0 by default, up to about 100 in tests, with a constant, uniform
//! or exponential distribution). openraft uses the heartbeat interval
//! not only as the period of heartbeats but also as the deadline of each
//! AppendEntries RPC and of the quorum round behind every linearizable read
//! (see `docs/architecture/raft-core.md` and [`crate::transport`]). A
//! round trip is two message delays, so:
//!
//! * [`HEARTBEAT_INTERVAL`] (300 ms) is three mean round trips at 50 ms
//!   latency and one and a half at 100 ms. With exponential 100 ms latency a
//!   round trip exceeds it about one time in five, but a read needs only a
//!   majority to answer in time, so a 3-node read barrier fails about one
//!   time in 25 (the read is then answered with error 11, harmlessly).
//! * [`ELECTION_TIMEOUT_MIN`]..[`ELECTION_TIMEOUT_MAX`] (1–2 s): well above
//!   the heartbeat interval so that a follower starts an election only after
//!   several heartbeats in a row were lost or late (§5.2 wants
//!   `broadcastTime ≪ electionTimeout`), and short enough that a partition
//!   which isolates the leader (Maelstrom's default nemesis interval is
//!   10 s) costs a second or two of unavailability, not the whole interval.
//! * [`REQUEST_TIMEOUT`] (1 s): how long the leader waits for a write to
//!   commit or a read barrier to complete. Maelstrom's client gives up
//!   after max(10 × mean latency, 1 s), so waiting longer would only
//!   answer clients that stopped listening.
//! * [`FORWARD_TIMEOUT`] (2 s): how long a follower waits for the leader's
//!   answer to a forwarded operation: the leader's own request timeout plus
//!   a second for the two message delays on the way.
//!
//! With Maelstrom's default latency of 0 these are generous; they are
//! flags of the binary (`maelstrom-node --help`) for other networks.

use std::path::PathBuf;
use std::time::Duration;

use raft_core::Config;

/// How often the leader sends heartbeats; also the deadline of one
/// AppendEntries RPC and of a read barrier's quorum round (300 ms).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(300);
/// The shortest election timeout (1 s); also the deadline of a Vote RPC.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(1000);
/// The longest election timeout, exclusive (2 s).
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(2000);
/// How long a write waits to commit, or a read barrier to complete (1 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a follower waits for the leader to answer a forwarded client
/// operation (2 s).
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(2000);
/// Snapshot chunk size (256 KiB, about 350 KB of base64 on one line): small
/// enough that one chunk crosses Maelstrom's network as an ordinary message.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 256 << 10;
/// The deadline of one snapshot piece (3 s).
pub const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(3000);

/// Where the node keeps its Raft log and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageChoice {
    /// In memory: everything is lost when the process ends. Maelstrom's
    /// lin-kv test never restarts a node, so this is the default.
    InMemory,
    /// The durable redb store, in `DIR/<node name>` (for example
    /// `DIR/n0`): every node process of a test gets the same flag, and each
    /// keeps its own database.
    Durable(PathBuf),
}

/// Everything a node needs besides what Maelstrom's `init` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// Where the log and state live.
    pub storage: StorageChoice,
    /// The Raft settings (timeouts, batching, snapshots).
    pub raft: Config,
    /// How long a follower waits for the leader's answer to a forwarded
    /// operation.
    pub forward_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            storage: StorageChoice::InMemory,
            raft: raft_config(),
            forward_timeout: FORWARD_TIMEOUT,
        }
    }
}

/// raft-core's configuration with the Maelstrom timings above.
pub fn raft_config() -> Config {
    let mut config = Config::new("maelstrom");
    config.heartbeat_interval = HEARTBEAT_INTERVAL;
    config.election_timeout_min = ELECTION_TIMEOUT_MIN;
    config.election_timeout_max = ELECTION_TIMEOUT_MAX;
    config.request_timeout = REQUEST_TIMEOUT;
    config.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES;
    config.install_snapshot_timeout = INSTALL_SNAPSHOT_TIMEOUT;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ordered() {
        let options = NodeOptions::default();
        options.raft.to_openraft().unwrap();
        assert!(options.raft.election_timeout_min >= 3 * options.raft.heartbeat_interval);
        assert!(options.forward_timeout > options.raft.request_timeout);
    }
}
