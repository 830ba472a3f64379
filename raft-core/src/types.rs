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
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;

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
///
/// On the leader that proposed it, a batch may also carry a note, kept in
/// memory only (never encoded, so never replicated): "tell me when this
/// entry is durable in this node's log". Writes at `leader` durability
/// ([`crate::RaftNode::write_logged`]) wait for it.
#[derive(Clone, Default)]
pub struct Batch(pub Vec<ByteBuf>, FlushNote);

impl Batch {
    /// A batch of encoded commands.
    pub fn new(commands: Vec<ByteBuf>) -> Self {
        Batch(commands, FlushNote::default())
    }

    /// A batch of one encoded command.
    pub fn one(command: Vec<u8>) -> Self {
        Batch::new(vec![ByteBuf::from(command)])
    }

    /// A batch whose log store reports, through the returned receiver, the
    /// log id the batch was written at once that write is durable.
    pub(crate) fn noted(commands: Vec<ByteBuf>) -> (Self, oneshot::Receiver<LogId>) {
        let (tx, rx) = oneshot::channel();
        (Batch(commands, FlushNote(Some(Arc::new(Mutex::new(Some(tx)))))), rx)
    }

    /// Whether a writer waits for this batch to be durable here.
    pub(crate) fn is_noted(&self) -> bool {
        self.1 .0.is_some()
    }

    /// Tells the waiting writer, if any, that the batch is durable at
    /// `log_id`. Only the first call (of any clone) reaches it.
    pub(crate) fn notify_durable(&self, log_id: LogId) {
        if let Some(note) = &self.1 .0 {
            if let Some(tx) = note.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(log_id);
            }
        }
    }
}

/// Where a batch's log store reports that it is durable (see [`Batch`]).
/// Clones of the batch share it.
#[derive(Clone, Default)]
struct FlushNote(Option<Arc<Mutex<Option<oneshot::Sender<LogId>>>>>);

/// Two batches are equal when their commands are: the note is not data.
impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Batch {}

/// Encoded exactly as a newtype of the commands (the note is not data):
/// the log's format does not change with it.
impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct("Batch", &self.0)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Batch")]
        struct Wire(Vec<ByteBuf>);
        Wire::deserialize(d).map(|Wire(commands)| Batch::new(commands))
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

/// The openraft type configuration of every node built by this crate.
///
/// `LeaderId` is standard Raft's: a leader is identified by its term alone
/// once elected, and two candidates of one term are incomparable, so a voter
/// that granted one can never grant the other (§5.2: Election Safety, at
/// most one leader per term). openraft's default would order candidates of
/// one term by node id and let a later one win the same term.
///
/// `Responder` is [`CallbackResponder`]: the proposer hands each batch a
/// callback that answers every waiting writer directly from the state
/// machine's apply, with no task in between (see [`crate::proposer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Batch;
    type R = Replies;
    type NodeId = NodeId;
    type Node = Node;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Batch, NodeId, Node>;
    type Entry = openraft::impls::Entry<CommittedLeaderId, Self::Payload>;
    type AsyncRuntime = crate::rt::Runtime;
    type Responder<T>
        = CallbackResponder<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Where openraft delivers the outcome of a write it was handed with a
/// responder: a callback, run on whichever task completes the write (the
/// state machine's apply, or the core if the write fails first). It must be
/// quick and must not block.
pub struct CallbackResponder<T>(Box<dyn FnOnce(T) + Send + 'static>);

impl<T> CallbackResponder<T> {
    /// A responder that calls `f` with the outcome.
    pub fn new(f: impl FnOnce(T) + Send + 'static) -> Self {
        CallbackResponder(Box::new(f))
    }
}

impl<T: Send + 'static> openraft::raft::responder::Responder<TypeConfig, T> for CallbackResponder<T> {
    fn on_complete(self, result: T) {
        (self.0)(result)
    }
}

/// The openraft node, for embedders who need a call this crate does not wrap.
pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachineStore>;
/// The id of a leader in the log: its term (standard Raft stores no more).
pub type CommittedLeaderId = openraft::vote::leader_id_std::CommittedLeaderId<u64>;
/// A log position: the term of the leader that created the entry, and its index.
pub type LogId = openraft::LogId<CommittedLeaderId>;
/// A term and the candidate voted for in it (and whether that vote won).
pub type Vote = openraft::impls::Vote<openraft::impls::leader_id_std::LeaderId<u64, NodeId>>;
/// One log entry: log id plus payload (blank, membership, or a [`Batch`]).
pub type Entry = openraft::impls::Entry<CommittedLeaderId, EntryPayload>;
/// The payload of an [`Entry`].
pub type EntryPayload = openraft::EntryPayload<Batch, NodeId, Node>;
/// A cluster configuration: the voters (one set, or two during a joint
/// change) and every member's addresses.
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership configuration together with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, NodeId, Node>;
/// Which entries a snapshot covers, and the membership as of its last entry.
pub type SnapshotMeta = openraft::storage::SnapshotMeta<CommittedLeaderId, NodeId, Node>;
/// A snapshot: its metadata and the state it holds.
pub type Snapshot =
    openraft::storage::Snapshot<CommittedLeaderId, NodeId, Node, crate::storage::SnapshotData>;
/// The metrics openraft publishes.
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// A log id of `term` and `index`.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term), index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins standard Raft's leader ids: two candidates of one term are
    /// incomparable, so no voter that granted one can grant the other, and a
    /// term elects at most one leader. With openraft's default leader id,
    /// (5, node 3) would be greater than (5, node 1) and could win term 5
    /// after it.
    #[test]
    fn one_term_elects_at_most_one_leader() {
        let a = Vote::new(5, 1);
        let b = Vote::new(5, 3);
        assert_eq!(a.partial_cmp(&b), None);
        assert!(Vote::new(6, 1) > b, "a greater term still supersedes");
        // A log id carries the term only: the leader's node id is not stored.
        assert_eq!(log_id(5, 7), LogId::new(CommittedLeaderId::new(5), 7));
    }
}
