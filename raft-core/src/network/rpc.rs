//! The messages every transport carries, and how a node answers them.
//!
//! Raft needs three RPCs (paper Figure 2 and §7): AppendEntries, RequestVote
//! and InstallSnapshot. openraft adds two: a pre-vote (a vote that changes
//! nothing, asked before a candidate disturbs the cluster with a new term)
//! and a leadership transfer notice. [`RpcRequest`] is one of them, as it
//! travels from one node to another; [`RpcResponse`] is the answer.
//!
//! A snapshot is sent as a sequence of [`SnapshotChunk`]s, each small
//! enough for one message, over the same link. The receiving node
//! assembles them in its [`Inbox`] (one transfer in progress per sender)
//! and installs the snapshot when the last one arrives.
//!
//! Every transport (TCP, in-process, Maelstrom, a simulator) carries these
//! same values; how it encodes them is its own business. [`Inbox::serve`]
//! is what every transport does with a request that arrived: hand it to the
//! local Raft and wrap the answer.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use openraft::async_runtime::WatchReceiver as _;
use openraft::error::Fatal;
use openraft::network::RPCTypes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::election::Contact;
use crate::storage::SnapshotData;
use crate::types::{
    EntryPayload, LogId, Membership, Node, NodeId, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote,
};

/// One Raft RPC, as sent by a node to a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
#[allow(clippy::large_enum_variant)]
pub enum RpcRequest {
    /// Replicate entries, or a heartbeat when there are none (§5.3).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote in an election (§5.2).
    Vote(VoteRequest<TypeConfig>),
    /// Ask whether a vote *would* be granted, without changing any state
    /// (the Raft thesis §9.6: pre-vote).
    PreVote(VoteRequest<TypeConfig>),
    /// One piece of a snapshot, for a follower whose missing entries were
    /// already purged from the leader's log (§7).
    SnapshotChunk(SnapshotChunk),
    /// The leader is handing its office to the node named in the request.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

impl RpcRequest {
    /// Which kind of RPC this is, as openraft names it (a pre-vote is a
    /// kind of vote).
    pub fn rpc_type(&self) -> RPCTypes {
        match self {
            RpcRequest::AppendEntries(_) => RPCTypes::AppendEntries,
            RpcRequest::Vote(_) | RpcRequest::PreVote(_) => RPCTypes::Vote,
            RpcRequest::SnapshotChunk(_) => RPCTypes::InstallSnapshot,
            RpcRequest::TransferLeader(_) => RPCTypes::TransferLeader,
        }
    }

    /// The RPC's name, for logs and for transports that label messages.
    pub fn name(&self) -> &'static str {
        match self {
            RpcRequest::AppendEntries(_) => "AppendEntries",
            RpcRequest::Vote(_) => "Vote",
            RpcRequest::PreVote(_) => "PreVote",
            RpcRequest::SnapshotChunk(_) => "SnapshotChunk",
            RpcRequest::TransferLeader(_) => "TransferLeader",
        }
    }
}

/// One piece of a snapshot in transfer. The pieces of one transfer share
/// its `transfer` id and follow each other without gaps; the last one has
/// `done` set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sending leader's vote: a follower refuses a snapshot from a
    /// leader it no longer follows.
    pub vote: Vote,
    /// Which entries the snapshot covers.
    pub meta: SnapshotMeta,
    /// Names this transfer; a new transfer from the same sender replaces an
    /// unfinished one.
    pub transfer: u64,
    /// Where `data` starts in the encoded snapshot.
    pub offset: u64,
    /// The bytes of this piece ([`SnapshotData::encode`], cut up).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Whether this is the last piece.
    pub done: bool,
}

/// What the peer's Raft answered to an [`RpcRequest`] of the same kind, or
/// why it could not answer (it is shutting down, or the request made no
/// sense to it), in words.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum RpcResponse {
    /// The answer to [`RpcRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, String>),
    /// The answer to [`RpcRequest::Vote`].
    Vote(Result<VoteResponse<TypeConfig>, String>),
    /// The answer to [`RpcRequest::PreVote`].
    PreVote(Result<VoteResponse<TypeConfig>, String>),
    /// The answer to a [`SnapshotChunk`]: `None` while more pieces are
    /// expected, the installing node's vote after the last one.
    SnapshotChunk(Result<Option<SnapshotResponse<TypeConfig>>, String>),
    /// The answer to [`RpcRequest::TransferLeader`].
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
}

impl RpcResponse {
    /// The name of the RPC this answers (see [`RpcRequest::name`]).
    pub fn name(&self) -> &'static str {
        match self {
            RpcResponse::AppendEntries(_) => "AppendEntries",
            RpcResponse::Vote(_) => "Vote",
            RpcResponse::PreVote(_) => "PreVote",
            RpcResponse::SnapshotChunk(_) => "SnapshotChunk",
            RpcResponse::TransferLeader(_) => "TransferLeader",
        }
    }
}

/// A snapshot being received from one sender.
struct Partial {
    transfer: u64,
    bytes: Vec<u8>,
}

/// The receiving side of a node's transport: answers requests from peers
/// with the local Raft, and assembles snapshots sent in pieces.
pub struct Inbox {
    raft: Raft,
    /// Touched whenever a leader is heard from (see [`crate::election`]).
    contact: Contact,
    /// Unfinished snapshot transfers, one per sender at most.
    partial: Mutex<HashMap<NodeId, Partial>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

/// Whether the entries follow `prev_log_id` without a gap and with terms
/// that never go down and never exceed the sender's term, as every correct
/// leader sends them. openraft asserts these (and stops the node), so a
/// malformed request from a peer is refused here instead.
fn check_contiguous(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    let first = req.prev_log_id.map_or(0, |l| l.index + 1);
    let leader_term = req.vote.leader_id().term;
    let mut term = req.prev_log_id.map_or(0, |l| l.leader_id.term);
    if term > leader_term {
        return Err(format!("AppendEntries from term {leader_term} with a previous entry of term {term}"));
    }
    for (due, e) in (first..).zip(&req.entries) {
        if e.log_id.index != due {
            return Err(format!("AppendEntries entry at index {} where index {due} was due", e.log_id.index));
        }
        let t = e.log_id.leader_id.term;
        if t < term || t > leader_term {
            return Err(format!(
                "AppendEntries from term {leader_term}: entry {} of term {t} follows one of term {term}",
                e.log_id.index
            ));
        }
        term = t;
    }
    Ok(())
}

/// Whether `m` keeps the rule every membership openraft makes keeps:
/// each voter has a node (its addresses), and no configuration of a
/// joint membership is empty. openraft does not check a membership that
/// arrives from a peer, and a voter without a node stops it later (an
/// `unwrap` in its broadcast to voters, found by the fuzz test
/// `server_survives_damaged_and_random_connections`).
fn check_membership(m: &Membership) -> Result<(), String> {
    let nodes: std::collections::BTreeMap<NodeId, Node> = m.nodes().map(|(id, n)| (*id, n.clone())).collect();
    Membership::new(m.get_joint_config().clone(), nodes)
        .map(|_| ())
        .map_err(|e| format!("a malformed membership: {e}"))
}

/// [`check_contiguous`], [`check_membership`] for every membership
/// entry, and a committed vote: a leader's vote is committed before it
/// sends anything (openraft asserts it, in debug builds, on the follower).
fn check_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    check_leader_vote(&req.vote, "AppendEntries")?;
    check_contiguous(req)?;
    for e in &req.entries {
        if let EntryPayload::Membership(m) = &e.payload {
            check_membership(m).map_err(|why| format!("AppendEntries entry {}: {why}", e.log_id.index))?;
        }
    }
    Ok(())
}

/// Whether the log ids `req` names agree with `committed`, this node's
/// committed log id: at or below the committed index, a correct leader's
/// log holds the committed entries (Leader Completeness), so none of its
/// log ids there has a term above the committed one. openraft asserts
/// this (in debug builds) when it compares `prev_log_id` with its log;
/// the damaged-bytes fuzz test tripped that assertion.
fn check_against_committed(
    req: &AppendEntriesRequest<TypeConfig>,
    committed: Option<LogId>,
) -> Result<(), String> {
    let Some(committed) = committed else { return Ok(()) };
    let named = req.prev_log_id.iter().chain(req.entries.iter().map(|e| &e.log_id));
    for id in named {
        if id.index <= committed.index && id.leader_id.term > committed.leader_id.term {
            return Err(format!(
                "AppendEntries names log id {id} at or below this node's committed log id {committed}, \
                 with a later term"
            ));
        }
    }
    Ok(())
}

/// Whether `vote`, sent with a leader's request, is committed, as every
/// leader's is.
fn check_leader_vote(vote: &Vote, rpc: &str) -> Result<(), String> {
    if vote.is_committed() {
        Ok(())
    } else {
        Err(format!("{rpc} with vote {vote}, which is not a leader's (not committed)"))
    }
}

fn fatal(e: Fatal<TypeConfig>) -> String {
    e.to_string()
}

impl Inbox {
    /// The inbox of the node whose Raft is `raft` and whose election timer
    /// watches `contact`. [`crate::RaftNode::inbox`] makes one of these
    /// for a node.
    pub fn new(raft: Raft, contact: Contact) -> Self {
        Inbox { raft, contact, partial: Mutex::new(HashMap::new()) }
    }

    fn partial(&self) -> MutexGuard<'_, HashMap<NodeId, Partial>> {
        self.partial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the node that node `from`'s connection to it has closed (the
    /// peer ended it, or it broke). If `from` is the leader this node
    /// follows, the election timer may campaign sooner
    /// ([`crate::election::after_leader_left`]). Transports that see
    /// connections call it; others need not.
    pub fn peer_left(&self, from: NodeId) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.current_leader == Some(from) && m.id != from && m.state != openraft::ServerState::Leader {
            tracing::debug!(node_id = m.id, leader = from, "the leader's connection closed");
            self.contact.leader_left();
        }
    }

    /// Hands `request`, sent by node `from`, to the local Raft and returns
    /// its answer. Never panics on what a peer sent: a malformed snapshot is
    /// answered with an error.
    pub async fn serve(&self, from: NodeId, request: RpcRequest) -> RpcResponse {
        match request {
            RpcRequest::AppendEntries(req) => {
                let committed = self.raft.metrics().borrow_watched().local_committed;
                if let Err(reason) =
                    check_append(&req).and_then(|()| check_against_committed(&req, committed))
                {
                    tracing::warn!(from, %reason, "refused a malformed AppendEntries");
                    return RpcResponse::AppendEntries(Err(reason));
                }
                let resp = self.raft.append_entries(req).await;
                // Anything but "your term is behind mine" means this node
                // accepts the sender as its leader.
                if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    self.contact.touch();
                }
                RpcResponse::AppendEntries(resp.map_err(|e| e.to_string()))
            }
            RpcRequest::Vote(req) => {
                let resp = self.raft.vote(req).await;
                if matches!(&resp, Ok(r) if r.vote_granted) {
                    self.contact.touch();
                }
                RpcResponse::Vote(resp.map_err(|e| e.to_string()))
            }
            RpcRequest::PreVote(req) => {
                RpcResponse::PreVote(self.raft.pre_vote(req).await.map_err(|e| e.to_string()))
            }
            RpcRequest::SnapshotChunk(chunk) => {
                RpcResponse::SnapshotChunk(self.receive_chunk(from, chunk).await)
            }
            RpcRequest::TransferLeader(req) => {
                RpcResponse::TransferLeader(self.raft.handle_transfer_leader(req).await.map_err(fatal))
            }
        }
    }

    /// Hands a whole snapshot to the local Raft, as the last piece of a
    /// transfer does: for transports that carry it in one piece.
    pub async fn install(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse<TypeConfig>, String> {
        // openraft stops the node (panics) on a snapshot no correct leader
        // could send: refuse the defects we can see from here, a vote that
        // is not a leader's, a malformed membership, and a snapshot
        // reaching past the sending leader's own term.
        check_leader_vote(&vote, "a snapshot")?;
        check_membership(snapshot.meta.last_membership.membership())
            .map_err(|why| format!("a snapshot with {why}"))?;
        let snapshot_term = snapshot.meta.last_log_id.map_or(0, |l| l.leader_id.term);
        if snapshot_term > vote.leader_id().term {
            return Err(format!(
                "a snapshot up to term {snapshot_term} from a leader of term {}",
                vote.leader_id().term
            ));
        }
        let resp = self.raft.install_full_snapshot(vote, snapshot).await.map_err(fatal)?;
        self.contact.touch();
        Ok(resp)
    }

    async fn receive_chunk(
        &self,
        from: NodeId,
        chunk: SnapshotChunk,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, String> {
        let complete = {
            let mut partial = self.partial();
            let entry = if chunk.offset == 0 {
                partial.insert(from, Partial { transfer: chunk.transfer, bytes: Vec::new() });
                partial.get_mut(&from)
            } else {
                partial.get_mut(&from).filter(|p| p.transfer == chunk.transfer)
            };
            let Some(p) = entry else {
                return Err(format!(
                    "snapshot piece at offset {} of transfer {} from node {from} continues no transfer in progress",
                    chunk.offset, chunk.transfer
                ));
            };
            if p.bytes.len() as u64 != chunk.offset {
                let have = p.bytes.len();
                partial.remove(&from);
                return Err(format!(
                    "snapshot piece at offset {} from node {from}, expected offset {have}",
                    chunk.offset
                ));
            }
            p.bytes.extend_from_slice(&chunk.data);
            if !chunk.done {
                return Ok(None);
            }
            partial.remove(&from).map(|p| p.bytes).unwrap_or_default()
        };
        let data = SnapshotData::decode(&complete).map_err(|e| format!("snapshot from node {from}: {e}"))?;
        let snapshot = Snapshot { meta: chunk.meta, snapshot: data };
        self.install(chunk.vote, snapshot).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::types::{log_id, Entry};

    fn append(term: u64, prev: Option<LogId>, entries: &[(u64, u64)]) -> AppendEntriesRequest<TypeConfig> {
        let entries = entries
            .iter()
            .map(|&(t, i)| Entry { log_id: log_id(t, i), payload: EntryPayload::Blank })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: prev,
            leader_commit: None,
            entries,
        }
    }

    #[test]
    fn what_a_correct_leader_sends_passes() {
        assert_eq!(check_contiguous(&append(3, None, &[])), Ok(()));
        assert_eq!(check_contiguous(&append(3, Some(log_id(1, 4)), &[(1, 5), (2, 6), (3, 7)])), Ok(()));
    }

    /// A membership as a peer's bytes may carry it: any configs, any
    /// nodes (openraft's own constructor would refuse the bad ones).
    fn membership(configs: &[&[NodeId]], nodes: &[NodeId]) -> Membership {
        let configs: Vec<std::collections::BTreeSet<NodeId>> =
            configs.iter().map(|c| c.iter().copied().collect()).collect();
        let nodes: std::collections::BTreeMap<NodeId, Node> =
            nodes.iter().map(|&id| (id, Node::new(format!("127.0.0.1:{id}"), ""))).collect();
        crate::codec::decode(&crate::codec::encode(&(configs, nodes))).unwrap()
    }

    /// Found by the fuzz test: a membership entry whose voter has no node
    /// was stored, and openraft's broadcast to voters panicked on it later.
    #[test]
    fn a_membership_with_a_voter_without_a_node_or_an_empty_config_is_refused() {
        let with = |m: Membership| {
            let mut req = append(1, None, &[(1, 0)]);
            req.entries[0].payload = EntryPayload::Membership(m);
            check_append(&req)
        };
        assert_eq!(with(membership(&[&[1, 2]], &[1, 2, 3])), Ok(()));
        assert_eq!(with(membership(&[&[1, 2], &[2, 3]], &[1, 2, 3])), Ok(()));
        let refused = with(membership(&[&[1, 2]], &[1])).unwrap_err();
        assert!(refused.contains("entry 0: a malformed membership"), "{refused}");
        assert!(with(membership(&[&[1], &[]], &[1])).is_err());
        assert!(check_membership(&membership(&[&[4]], &[1])).is_err());
    }

    /// Found by the fuzz test: a `prev_log_id` below the committed index
    /// with a later term than the committed entry's tripped openraft's
    /// debug assertion.
    #[test]
    fn log_ids_at_or_below_the_committed_index_with_a_later_term_are_refused() {
        let committed = Some(log_id(2, 3));
        let check = |prev: Option<LogId>, entries: &[(u64, u64)]| {
            check_against_committed(&append(5, prev, entries), committed)
        };
        assert_eq!(check(Some(log_id(2, 3)), &[(5, 4)]), Ok(()));
        assert_eq!(check(Some(log_id(1, 1)), &[(1, 2), (2, 3), (5, 4)]), Ok(()));
        assert_eq!(check(Some(log_id(5, 4)), &[]), Ok(()));
        assert_eq!(check_against_committed(&append(5, Some(log_id(5, 1)), &[]), None), Ok(()));
        let refused = check(Some(log_id(3, 1)), &[]).unwrap_err();
        assert!(refused.contains("with a later term"), "{refused}");
        assert!(check(Some(log_id(2, 2)), &[(4, 3)]).is_err());
    }

    /// Found by the fuzz test: an AppendEntries whose vote was not
    /// committed tripped openraft's debug assertion that a leader's is.
    #[test]
    fn an_append_from_an_uncommitted_vote_is_refused() {
        let mut req = append(2, None, &[]);
        assert_eq!(check_append(&req), Ok(()));
        req.vote = Vote::new(2, 1);
        let refused = check_append(&req).unwrap_err();
        assert!(refused.contains("not committed"), "{refused}");
    }

    #[test]
    fn gaps_falling_terms_and_terms_above_the_leaders_are_refused() {
        let refused = |req| check_contiguous(&req).unwrap_err();
        assert!(refused(append(3, Some(log_id(1, 4)), &[(1, 6)])).contains("index 5 was due"));
        assert!(refused(append(3, Some(log_id(2, 4)), &[(1, 5)])).contains("of term 1 follows one of term 2"));
        assert!(refused(append(3, None, &[(2, 0), (1, 1)])).contains("of term 1 follows one of term 2"));
        assert!(refused(append(3, None, &[(4, 0)])).contains("from term 3: entry 0 of term 4"));
        assert!(refused(append(3, Some(log_id(5, 1)), &[])).contains("previous entry of term 5"));
    }
}
