//! What a transport must do, and how any transport is given to openraft.
//!
//! A transport carries one [`RpcRequest`] to one peer and brings back its
//! [`RpcResponse`]: that is all a [`Link`] does. Everything Raft-specific
//! about sending is here, once, for every transport:
//!
//! * **Failure kinds.** openraft decides what to do after a failed RPC from
//!   the kind of error, so a link reports one of three:
//!
//!   | [`LinkError`] | openraft's error | what openraft does |
//!   |---|---|---|
//!   | `Unreachable`: could not connect, the peer refused us, or the peer's Raft has stopped | `Unreachable` | waits (50 ms doubling to 1 s) before the next RPC to that peer |
//!   | `Timeout`: no answer in time | `Timeout` | retries at its next heartbeat or election round |
//!   | `Network`: the connection broke mid-RPC, or the peer answered nonsense | `Network` | retries |
//!
//! * **Requests too large for one message.** A link whose messages have a
//!   size limit answers an AppendEntries that exceeds it with
//!   [`LinkError::TooLarge`] and how many of its entries would fit. The
//!   [`Connection`] then sends only that many and reports a partial success
//!   (`AppendEntriesResponse::PartialSuccess`), and openraft sends the rest
//!   next. When not even one entry fits, no retry can help: that is a
//!   configuration error (`max_frame_bytes` below the largest command),
//!   logged as such and reported as unreachable, so that openraft backs off.
//!
//! * **Snapshots.** A snapshot is encoded and sent in pieces of
//!   [`Config::snapshot_chunk_bytes`](crate::Config::snapshot_chunk_bytes)
//!   ([`super::rpc::SnapshotChunk`]), one after the other on the same
//!   link, and the peer's [`super::rpc::Inbox`] installs it after the last.
//!
//! * **Reachability in the log.** openraft retries an unreachable peer
//!   all the time (its heartbeat worker every heartbeat interval), so a
//!   line per failed RPC would flood the log while a peer is down. A
//!   [`Network`] logs each peer's reachability itself instead: a warning
//!   when RPCs to it start failing, again every [`STILL_DOWN_EVERY`] while
//!   they do, and a line when it answers again, with how long it was away.
//!
//! [`super::tcp`], [`super::local`] and the Maelstrom node each implement
//! [`Transport`]; [`Network`] turns one into openraft's network.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};

use super::rpc::{RpcRequest, RpcResponse, SnapshotChunk};
use crate::config::Config;
use crate::storage::SnapshotData;
use crate::types::{Node, NodeId, Snapshot, TypeConfig, Vote};

/// A boxed error, as a link reports what went wrong.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The first wait before retrying an unreachable peer (50 ms).
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// The longest wait between retries of an unreachable peer (1 s): a peer
/// that comes back is noticed within a second, well within an election
/// timeout's order of magnitude.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A way for one node to reach its peers. See the [module docs](self).
pub trait Transport: Send + Sync + 'static {
    /// The link to one peer.
    type Link: Link;

    /// A link to node `target`, reachable at `node`. Must not connect yet:
    /// the address may be wrong or the peer down, and openraft cannot handle
    /// an error here; the first call reports it instead.
    fn link(&self, target: NodeId, node: &Node) -> Self::Link;
}

/// Carries requests to one peer, one at a time.
pub trait Link: Send + Sync + 'static {
    /// Sends `request` and returns the peer's answer, or fails within
    /// `timeout` ([`LinkError::Timeout`]).
    fn call(
        &mut self,
        request: &RpcRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<RpcResponse, LinkError>> + Send;
}

/// Why a [`Link`] brought back no answer. See the table in the
/// [module docs](self).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer cannot be reached now; wait before trying again.
    #[error(transparent)]
    Unreachable(BoxError),
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The exchange failed half-way, or the answer made no sense.
    #[error(transparent)]
    Network(BoxError),
    /// The request exceeds what one message may carry. For an
    /// AppendEntries, `fit` is how many of its leading entries would fit.
    #[error("request too large: {source}")]
    TooLarge {
        /// How many leading entries fit in one message (AppendEntries only).
        fit: usize,
        /// What exceeded which limit.
        source: BoxError,
    },
}

/// openraft's wait before retrying an unreachable peer: `min` after the first
/// failure, doubling up to `max`. openraft drops it after the next success.
pub fn doubling_backoff(min: Duration, max: Duration) -> Backoff {
    Backoff::new(std::iter::successors(Some(min), move |d| Some((*d * 2).min(max))))
}

/// While RPCs to a peer keep failing, how often that is logged again
/// (30 s).
pub const STILL_DOWN_EVERY: Duration = Duration::from_secs(30);

/// A [`Transport`], as openraft's network factory.
pub struct Network<T> {
    transport: T,
    settings: Settings,
    /// Each peer's reachability, shared by all the connections to it
    /// (openraft opens several: replication, heartbeats, votes).
    peers: HashMap<NodeId, Arc<Mutex<Reachability>>>,
}

/// Whether a peer answered its last RPC, as the log tells it.
#[derive(Debug, Default)]
enum Reachability {
    /// It answered, or nothing was sent yet.
    #[default]
    Up,
    /// RPCs have failed since `since`; the last line about it was logged at
    /// `logged`.
    Down { since: tokio::time::Instant, logged: tokio::time::Instant, failures: u64 },
}

/// What to log after an RPC's outcome, if anything.
#[derive(Debug, PartialEq)]
enum Change {
    /// The first failure after answers.
    WentDown,
    /// Failing for `for_` now, `failures` RPCs in all.
    StillDown { for_: Duration, failures: u64 },
    /// Answering again after `after`, and `failures` failed RPCs.
    CameBack { after: Duration, failures: u64 },
}

impl Reachability {
    fn answered(&mut self, now: tokio::time::Instant) -> Option<Change> {
        match std::mem::take(self) {
            Reachability::Up => None,
            Reachability::Down { since, failures, .. } => {
                Some(Change::CameBack { after: now.saturating_duration_since(since), failures })
            }
        }
    }

    fn failed(&mut self, now: tokio::time::Instant) -> Option<Change> {
        match self {
            Reachability::Up => {
                *self = Reachability::Down { since: now, logged: now, failures: 1 };
                Some(Change::WentDown)
            }
            Reachability::Down { since, logged, failures } => {
                *failures += 1;
                if now.saturating_duration_since(*logged) < STILL_DOWN_EVERY {
                    return None;
                }
                *logged = now;
                Some(Change::StillDown { for_: now.saturating_duration_since(*since), failures: *failures })
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    me: NodeId,
    chunk_bytes: usize,
    snapshot_timeout: Duration,
}

impl<T: Transport> Network<T> {
    /// The network of node `me` over `transport`, with the snapshot settings
    /// of `config`.
    pub fn new(me: NodeId, transport: T, config: &Config) -> Self {
        let settings = Settings {
            me,
            chunk_bytes: usize::try_from(config.snapshot_chunk_bytes).unwrap_or(usize::MAX).max(1),
            snapshot_timeout: config.install_snapshot_timeout,
        };
        Network { transport, settings, peers: HashMap::new() }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = Connection<T::Link>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection<T::Link> {
        let reachability = self.peers.entry(target).or_default().clone();
        Connection { link: self.transport.link(target, node), target, settings: self.settings, reachability }
    }
}

/// One node's RPCs to one peer, over any [`Link`].
pub struct Connection<L> {
    link: L,
    target: NodeId,
    settings: Settings,
    reachability: Arc<Mutex<Reachability>>,
}

/// The error of a failed RPC, in openraft's terms.
type RpcError = RPCError<TypeConfig>;

impl<L> Connection<L> {
    /// The link underneath.
    pub fn link(&self) -> &L {
        &self.link
    }
}

impl<L: Link> Connection<L> {
    /// Sends `request` over the link, and logs a change of the peer's
    /// reachability (see the [module docs](self)). Any answer counts as
    /// reachable, a refusal too.
    async fn call(&mut self, request: &RpcRequest, timeout: Duration) -> Result<RpcResponse, LinkError> {
        let answer = self.link.call(request, timeout).await;
        let now = tokio::time::Instant::now();
        let change = {
            let mut peer = self.reachability.lock().unwrap_or_else(|e| e.into_inner());
            match &answer {
                Ok(_) => peer.answered(now),
                Err(LinkError::TooLarge { .. }) => None,
                Err(_) => peer.failed(now),
            }
        };
        let (me, target) = (self.settings.me, self.target);
        match (change, &answer) {
            (None, _) => {}
            (Some(Change::WentDown), Err(e)) => {
                tracing::warn!(node_id = me, target, error = %e, "Raft peer not answering; retrying with backoff")
            }
            (Some(Change::StillDown { for_, failures }), Err(e)) => tracing::warn!(
                node_id = me,
                target,
                down_s = for_.as_secs(),
                failed_rpcs = failures,
                error = %e,
                "Raft peer still not answering"
            ),
            (Some(Change::CameBack { after, failures }), _) => tracing::info!(
                node_id = me,
                target,
                down_ms = after.as_millis() as u64,
                failed_rpcs = failures,
                "Raft peer answering again"
            ),
            (Some(_), Ok(_)) => {}
        }
        answer
    }

    fn rpc_error(&self, e: LinkError, action: RPCTypes) -> RpcError {
        let (me, target) = (self.settings.me, self.target);
        match e {
            LinkError::Unreachable(e) => {
                tracing::debug!(node_id = me, target, error = %e, "Raft peer unreachable");
                RPCError::Unreachable(Unreachable::from_string(e))
            }
            LinkError::Timeout(timeout) => {
                tracing::debug!(node_id = me, target, rpc = %action, "Raft RPC timed out");
                RPCError::Timeout(Timeout { action, id: me, target, timeout })
            }
            LinkError::Network(e) => {
                tracing::debug!(node_id = me, target, error = %e, "Raft RPC failed");
                RPCError::Network(NetworkError::from_string(e))
            }
            LinkError::TooLarge { source, .. } => {
                tracing::error!(node_id = me, target, rpc = %action, error = %source, "cannot send Raft RPC: too large, whatever is left out");
                // Retrying at once cannot help; let openraft back off.
                RPCError::Unreachable(Unreachable::from_string(source))
            }
        }
    }

    /// The peer's Raft could not answer (it is shutting down): back off.
    fn refused(&self, reason: String) -> RpcError {
        tracing::debug!(node_id = self.settings.me, target = self.target, %reason, "Raft peer could not answer");
        RPCError::Unreachable(Unreachable::from_string(format!("node {}: {reason}", self.target)))
    }

    /// The peer answered another kind of RPC than was asked.
    fn wrong_answer(&self, asked: &'static str, got: &RpcResponse) -> RpcError {
        let reason =
            format!("node {} answered a {asked} request with a {} response", self.target, got.name());
        tracing::warn!(node_id = self.settings.me, target = self.target, %reason, "Raft peer out of step");
        RPCError::Network(NetworkError::from_string(reason))
    }

    async fn vote_like(
        &mut self,
        request: RpcRequest,
        option: &RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let name = request.name();
        match self.call(&request, option.hard_ttl()).await {
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote)),
            Ok(RpcResponse::Vote(Ok(resp)) | RpcResponse::PreVote(Ok(resp))) => Ok(resp),
            Ok(RpcResponse::Vote(Err(reason)) | RpcResponse::PreVote(Err(reason))) => {
                Err(self.refused(reason))
            }
            Ok(other) => Err(self.wrong_answer(name, &other)),
        }
    }

    /// Sends one snapshot piece, unless openraft cancels the transfer first.
    async fn send_chunk(
        &mut self,
        chunk: SnapshotChunk,
        cancel: &mut (impl Future<Output = ReplicationClosed> + Unpin),
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, StreamingError<TypeConfig>> {
        let request = RpcRequest::SnapshotChunk(chunk);
        let timeout = self.settings.snapshot_timeout;
        // Biased: a cancelled transfer stops before another piece is sent.
        let answer = tokio::select! {
            biased;
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = self.call(&request, timeout) => answer,
        };
        match answer {
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot).into()),
            Ok(RpcResponse::SnapshotChunk(Ok(resp))) => Ok(resp),
            Ok(RpcResponse::SnapshotChunk(Err(reason))) => {
                tracing::warn!(node_id = self.settings.me, target = self.target, %reason, "Raft peer refused a snapshot piece");
                Err(StreamingError::Network(NetworkError::from_string(reason)))
            }
            Ok(other) => Err(self.wrong_answer("SnapshotChunk", &other).into()),
        }
    }
}

impl<L: Link> RaftNetworkV2<TypeConfig> for Connection<L> {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let mut request = RpcRequest::AppendEntries(rpc);
        let mut trimmed = false;
        loop {
            let answer = self.call(&request, option.hard_ttl()).await;
            let RpcRequest::AppendEntries(sent) = &mut request else {
                unreachable!("invariant: the request stays an AppendEntries");
            };
            return match answer {
                Err(LinkError::TooLarge { fit, source }) if fit > 0 && fit < sent.entries.len() => {
                    tracing::debug!(
                        node_id = self.settings.me,
                        target = self.target,
                        entries = sent.entries.len(),
                        fit,
                        error = %source,
                        "AppendEntries too large for one message; sending the entries that fit"
                    );
                    sent.entries.truncate(fit);
                    trimmed = true;
                    continue;
                }
                Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries)),
                // Only a prefix was sent: tell openraft how far the peer now
                // matches, and it sends the rest next.
                Ok(RpcResponse::AppendEntries(Ok(AppendEntriesResponse::Success))) if trimmed => {
                    Ok(AppendEntriesResponse::PartialSuccess(sent.entries.last().map(|e| e.log_id)))
                }
                Ok(RpcResponse::AppendEntries(Ok(resp))) => Ok(resp),
                Ok(RpcResponse::AppendEntries(Err(reason))) => Err(self.refused(reason)),
                Ok(other) => Err(self.wrong_answer("AppendEntries", &other)),
            };
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.vote_like(RpcRequest::Vote(rpc), &option).await
    }

    /// A peer that cannot be asked is not counted as granting: the error
    /// goes back to openraft (its default would grant).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.vote_like(RpcRequest::PreVote(rpc), &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut cancel = std::pin::pin!(cancel);
        let data = snapshot.snapshot;
        let bytes = crate::storage::blocking(move || data.encode()).await;
        let transfer: u64 = crate::deterministic::random_u64();
        tracing::info!(
            node_id = self.settings.me,
            target = self.target,
            last_log_id = ?snapshot.meta.last_log_id,
            bytes = bytes.len(),
            "sending a snapshot"
        );
        let mut offset = 0;
        loop {
            let end = (offset + self.settings.chunk_bytes).min(bytes.len());
            let chunk = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                transfer,
                offset: offset as u64,
                data: bytes[offset..end].to_vec(),
                done: end == bytes.len(),
            };
            let done = chunk.done;
            match self.send_chunk(chunk, &mut cancel).await? {
                Some(resp) => return Ok(resp),
                None if done => {
                    let reason = format!(
                        "node {} acknowledged the last snapshot piece without installing",
                        self.target
                    );
                    return Err(StreamingError::Network(NetworkError::from_string(reason)));
                }
                None => offset = end,
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        match self.call(&RpcRequest::TransferLeader(req), option.hard_ttl()).await {
            Err(e) => Err(self.rpc_error(e, RPCTypes::TransferLeader)),
            Ok(RpcResponse::TransferLeader(Ok(resp))) => Ok(resp),
            Ok(RpcResponse::TransferLeader(Err(reason))) => Err(self.refused(reason)),
            Ok(other) => Err(self.wrong_answer("TransferLeader", &other)),
        }
    }

    /// Waits [`BACKOFF_MIN`] after the first failure to reach the peer,
    /// doubling up to [`BACKOFF_MAX`]. openraft drops the backoff after the
    /// next successful RPC.
    fn backoff(&self) -> Option<Backoff> {
        Some(doubling_backoff(BACKOFF_MIN, BACKOFF_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer going down is logged once, then every 30 s while it stays
    /// down, and its return once: not once per failed heartbeat.
    #[test]
    fn a_peer_down_is_logged_on_change_and_every_30s() {
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut peer = Reachability::default();
        assert_eq!(peer.answered(at(0)), None);
        assert_eq!(peer.failed(at(100)), Some(Change::WentDown));
        for ms in (200..30_100).step_by(100) {
            assert_eq!(peer.failed(at(ms)), None, "at {ms} ms");
        }
        assert_eq!(
            peer.failed(at(30_100)),
            Some(Change::StillDown { for_: Duration::from_secs(30), failures: 301 })
        );
        assert_eq!(peer.failed(at(30_200)), None);
        assert_eq!(
            peer.answered(at(31_100)),
            Some(Change::CameBack { after: Duration::from_secs(31), failures: 302 })
        );
        assert_eq!(peer.answered(at(31_200)), None);
        assert_eq!(peer.failed(at(40_000)), Some(Change::WentDown));
    }

    #[test]
    fn backoff_doubles_from_50ms_up_to_1s() {
        let waits: Vec<_> = doubling_backoff(BACKOFF_MIN, BACKOFF_MAX).take(7).collect();
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
    }
}
