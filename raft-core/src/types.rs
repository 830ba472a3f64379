//! The concrete types this crate runs openraft with, behind short aliases.
//!
//! openraft is generic over a "type config" that names the node id, the
//! node's address record, the log payload and the response. We fix all of
//! them here so that embedders never spell out a type parameter, and so that a
//! later openraft upgrade stays inside this crate.
//!
//! The log payload is opaque bytes ([`Batch`]): the application's own
//! command type is encoded once, when it is proposed, and decoded once, when
//! it is applied (see [`crate::app`]). The log, the transport and the storage
//! are therefore not generic over the application at all.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// A node's identity in the cluster. Never reuse the id of a removed node.
pub type NodeId = u64;

/// How to reach a node: written into the membership in the log, so every
/// member learns every other member's addresses through replication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    /// Where the node's Raft transport listens (`host:port` for TCP; any
    /// string a custom transport understands, such as a Maelstrom node id).
    pub raft_addr: String,
    /// Where the node serves clients. Reported to clients that ask a
    /// follower, so they can redirect to the leader. May be empty.
    pub api_addr: String,
}

impl Node {
    /// A node record with the given Raft and client addresses.
    pub fn new(raft_addr: impl Into<String>, api_addr: impl Into<String>) -> Self {
        Node { raft_addr: raft_addr.into(), api_addr: api_addr.into() }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

/// The payload of one log entry: a batch of application commands, each the
/// bytes of the application's own command type, encoded by [`crate::codec`].
///
/// Commands proposed concurrently travel together in one entry, so that one
/// log append, one fsync and one AppendEntries round commit all of them
/// (group commit). Each command keeps its own response.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<ByteBuf>);

impl Batch {
    /// A batch of one encoded command.
    pub fn one(command: Vec<u8>) -> Self {
        Batch(vec![ByteBuf::from(command)])
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: usize = self.0.iter().map(|c| c.len()).sum();
        write!(f, "Batch({} commands, {bytes} bytes)", self.0.len())
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying one log entry produced: one encoded response per command
/// of its [`Batch`] (none for blank and membership entries).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replies(pub Vec<ByteBuf>);

impl fmt::Debug for Replies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Replies({})", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of every node built by this crate.
    pub TypeConfig:
        D = Batch,
        R = Replies,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft node, for embedders who need a call this crate does not wrap.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log position: the term of the leader that created the entry, and its index.
pub type LogId = openraft::LogId<NodeId>;
/// A term and the candidate voted for in it (and whether that vote won).
pub type Vote = openraft::Vote<NodeId>;
/// One log entry: log id plus payload (blank, membership, or a [`Batch`]).
pub type Entry = openraft::Entry<TypeConfig>;
/// The payload of an [`Entry`].
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// A membership configuration together with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Which entries a snapshot covers, and the membership as of its last entry.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot: its metadata and its bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The error type openraft expects from storage.
pub type StorageError = openraft::StorageError<NodeId>;
/// The metrics openraft publishes.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the `single-term-leader` build: two candidates of one term are
    /// incomparable, so no voter that granted one can grant the other, and a
    /// term elects at most one leader. Without the feature, (5, node 3) would
    /// be greater than (5, node 1) and could win term 5 after it.
    #[test]
    fn one_term_elects_at_most_one_leader() {
        let a = Vote::new(5, 1);
        let b = Vote::new(5, 3);
        assert_eq!(a.partial_cmp(&b), None);
        assert!(Vote::new(6, 1) > b, "a greater term still supersedes");
        // A log id carries the term only: the leader's node id is not stored.
        let id = LogId::new(openraft::CommittedLeaderId::new(5, 3), 7);
        assert_eq!(id, LogId::new(openraft::CommittedLeaderId::new(5, 1), 7));
    }
}
