//! The errors of the node handle, one enum per kind of call.
//!
//! The distinction that matters most to a client is whether an operation's
//! outcome is *known*. A write that was never proposed certainly did not
//! happen ([`WriteError::NotLeader`]); a write that was proposed and then
//! lost track of ([`WriteError::Indeterminate`]) may still commit at any
//! later time, and must be reported as unknown, never as failed: a client,
//! a checker or a human that treats it as failed will one day see it appear.

use std::path::PathBuf;

use crate::types::{Node, NodeId};

/// Where the leader is, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's id.
    pub id: NodeId,
    /// The leader's addresses, if this node knows them.
    pub node: Option<Node>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be opened (see [`crate::storage::OpenError`]).
    #[error(transparent)]
    Open(#[from] crate::storage::OpenError),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft could not start on the stored state (a storage error while
    /// reading it, for example).
    #[error("raft failed to start: {0}")]
    Raft(String),
    /// The Raft listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// Anything else about the data directory.
    #[error("{path}: {reason}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why [`crate::RaftNode::write`] did not return a response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// This node is not the leader and did not propose the command. Send it
    /// to the leader, if one is known. The command certainly did not happen.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// The command was proposed, but its outcome is unknown: the request
    /// timed out, or this node lost leadership before the entry committed.
    /// It may still commit. Retrying is safe only if the command is
    /// idempotent or deduplicated by the application.
    #[error("outcome unknown: {reason}")]
    Indeterminate {
        /// What happened.
        reason: String,
        /// The leader, if known, where a deduplicated retry should go.
        leader: Option<LeaderHint>,
    },
    /// The command committed, but the state machine could not decode it
    /// (written by an incompatible build); it was applied as a no-op on
    /// every replica.
    #[error("command rejected by the state machine: {0}")]
    Undecodable(String),
    /// The node is shutting down; the command was not proposed.
    #[error("node is shutting down")]
    ShuttingDown,
}

impl WriteError {
    /// Whether the command certainly did not take effect (so retrying it
    /// elsewhere cannot apply it twice).
    pub fn certainly_not_applied(&self) -> bool {
        matches!(self, WriteError::NotLeader { .. } | WriteError::ShuttingDown)
    }

    /// The leader to retry at, if the error names one.
    pub fn leader(&self) -> Option<&LeaderHint> {
        match self {
            WriteError::NotLeader { leader } | WriteError::Indeterminate { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }
}

/// Why a read barrier ([`crate::RaftNode::read_barrier`]) failed. Reads
/// change nothing, so every variant is safe to retry.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// This node is not the leader: ask the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// The leader could not confirm with a quorum that it still leads: it may
    /// be partitioned away, and a newer leader may exist.
    #[error("leadership not confirmed by a quorum")]
    NoQuorum,
    /// No answer within the request timeout.
    #[error("timed out")]
    Timeout,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The local state could not be read.
    #[error("state machine storage: {0}")]
    Storage(String),
}

impl ReadError {
    /// The leader to retry at, if the error names one.
    pub fn leader(&self) -> Option<&LeaderHint> {
        match self {
            ReadError::NotLeader { leader } => leader.as_ref(),
            _ => None,
        }
    }
}

/// Why [`crate::RaftNode::transfer_leadership`] did not hand leadership
/// over. Only [`TransferError::NotConfirmed`] leaves the outcome open; after
/// every other variant this node's role is what it was.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// This node is not the leader: ask the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// The node named as the successor is not a voter of the current
    /// membership (a learner cannot lead).
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    /// No other voter has answered this leader within an election timeout:
    /// there is nobody to hand leadership to.
    #[error("no other voter is answering; nobody to hand leadership to")]
    NoCandidate,
    /// Another handoff is under way on this node.
    #[error("a leadership transfer is already under way")]
    InProgress,
    /// The successor did not catch up with the leader's log in time.
    /// Nothing was handed over: this node still leads and takes writes again.
    #[error("node {to} did not catch up within {within:?}; this node still leads")]
    NotCaughtUp {
        /// The chosen successor.
        to: NodeId,
        /// How long the handoff waited.
        within: std::time::Duration,
    },
    /// The successor was told to campaign, but no new leader appeared in
    /// time. Leadership may still move to it; if not, this node (which
    /// stopped sending heartbeats) is replaced by an election within an
    /// election timeout.
    #[error("node {to} was told to take over, but no new leader appeared within {within:?}")]
    NotConfirmed {
        /// The chosen successor.
        to: NodeId,
        /// How long the handoff waited.
        within: std::time::Duration,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

impl TransferError {
    /// Whether trying again later may succeed with nothing changed by the
    /// caller (the successor was slow, another transfer was running, or no
    /// leader was at hand).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransferError::NotLeader { .. }
                | TransferError::NoCandidate
                | TransferError::InProgress
                | TransferError::NotCaughtUp { .. }
        )
    }
}

/// Why a membership change or initialization failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeError {
    /// This node is not the leader: ask the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// Another membership change is still in progress; retry later.
    #[error("another membership change is in progress: {0}")]
    InProgress(String),
    /// The change is not allowed (promoting a node that is not a learner,
    /// removing the last voter, initializing with an empty membership, ...).
    #[error("membership change refused: {0}")]
    Invalid(String),
    /// The change was proposed but did not complete in time; it may still
    /// take effect. Check the membership before retrying.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}
