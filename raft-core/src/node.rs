//! The node handle: one replica of an application, with the calls an
//! embedder needs and nothing more.
//!
//! ```text
//!   client ──write──▶ RaftNode (leader) ──append──▶ log (fsync)
//!                        │   └──AppendEntries──▶ followers (fsync, ack)
//!                        │ majority acked = committed
//!                        ▼
//!                     apply ──▶ StateMachine ──▶ response to client
//! ```
//!
//! A node is opened on a data directory ([`RaftNode::open`]) or built from
//! parts ([`RaftNode::start`]). A new cluster is formed once, by calling
//! [`RaftNode::initialize`] on one node with the initial members; every
//! later start, including a restart after a crash, reads the vote, log and
//! membership from storage and rejoins without being initialized again.
//!
//! # Leader failure
//!
//! Only the leader accepts writes. When it fails, followers stop hearing
//! heartbeats, and after an election timeout (see [`crate::election`]: a
//! pre-vote first, so that a node that cannot win changes nothing) one of
//! them becomes a candidate, increments the *term*, and asks for votes. A voter grants at
//! most one vote per term, durably, and only to a candidate whose log is at
//! least as up-to-date as its own (§5.4.1); a candidate needs a majority.
//! Two majorities always share a node, so at most one leader wins each term
//! (Election Safety, §5.2), a superseded leader can no longer commit (no
//! split brain), and the winner holds every committed entry (no lost
//! committed writes). This is standard Raft because raft-core gives
//! openraft the standard leader id type (see [`crate::types::TypeConfig`]
//! and `docs/architecture/raft-core.md`). A deposed leader that comes back learns
//! the new term from the first message it receives and steps down; its
//! uncommitted entries are overwritten.
//!
//! Clients learn where the leader is from errors that carry a
//! [`crate::error::LeaderHint`].
//!
//! # Stopping
//!
//! [`RaftNode::shutdown`] is a graceful stop: a leader first hands its
//! office to a caught-up voter ([`RaftNode::transfer_leadership`], see
//! [`crate::handoff`]), so that the others elect its successor at once
//! instead of after an election timeout, and only then stops. Call it on
//! SIGTERM. [`RaftNode::shutdown_without_handoff`] stops at once, leaving the
//! others to notice the silence, as a crash would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Instant as _, ServerState};
use tokio::net::TcpListener;

use crate::app::{AppView, StateMachine};
use crate::codec;
use crate::config::Config;
use crate::election::{self, Contact};
use crate::error::{ChangeError, LeaderHint, ReadError, StartError, TransferError, WriteError};
use crate::handoff::{self, Gate};
use crate::network::local::LocalRouter;
use crate::network::tcp::{TcpServer, TcpTransport};
use crate::network::{Inbox, Network, Transport};
use crate::proposer::{forward_hint, leader_hint, Proposer};
use crate::read_index::ReadBatcher;
use crate::storage::db::{DbError, BACKEND_PATH};
use crate::storage::rollback::{self, RollbackRecord};
use crate::storage::{blocking, Db, MemLogStore, RedbLogStore, StateMachineStore};
use crate::types::{LogId, Node, NodeId, Raft, RaftMetrics, TypeConfig};

/// Where a node keeps its log and state.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Durable: one redb database in this directory (created if missing),
    /// opened with [`Config::storage`].
    Durable(std::path::PathBuf),
    /// In memory only; everything is lost when the node stops.
    InMemory,
    /// Durable, on a database the caller opened: with the same log store
    /// and state machine store as [`Storage::Durable`], on any redb backend
    /// ([`Db::on_backend`]), such as a simulator's [`SimDisk`]. The
    /// database keeps the [`StorageOptions`] it was opened with;
    /// [`Config::storage`] does not apply.
    ///
    /// [`SimDisk`]: crate::storage::SimDisk
    /// [`StorageOptions`]: crate::storage::StorageOptions
    Opened(Db),
}

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes and replicates them: leads, and a majority has
    /// acknowledged it within the lease. A leader that no majority has
    /// acknowledged for longer (cut off, or its followers stalled) takes no
    /// writes and serves no linearizable reads: it is reported as a
    /// [`Role::Follower`] that knows no leader, the way etcd's check quorum
    /// makes it step down. (openraft keeps it in its Leader state until it
    /// hears of a higher term, and it resumes leading if the majority
    /// answers again first.)
    Leader,
    /// A voter that follows the leader.
    Follower,
    /// A voter that is campaigning for leadership.
    Candidate,
    /// Receives the log but does not vote (also a node not yet in the cluster).
    Learner,
    /// Stopped.
    Shutdown,
}

impl From<ServerState> for Role {
    fn from(s: ServerState) -> Self {
        match s {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// What a node knows about itself and, if it leads, about its followers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeMetrics {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The index of the last entry in its log.
    pub last_log_index: u64,
    /// The highest index it knows to be committed.
    pub committed_index: u64,
    /// The index of the last entry applied to its state machine.
    pub applied_index: u64,
    /// The index its last checkpoint reflects: a crash now would restart
    /// from the state as of this index and re-apply the log after it.
    pub checkpointed_index: u64,
    /// The last index covered by its current snapshot.
    pub snapshot_index: Option<u64>,
    /// The last index purged from its log.
    pub purged_index: Option<u64>,
    /// Voters of the current membership.
    pub voters: BTreeSet<NodeId>,
    /// Learners of the current membership.
    pub learners: BTreeSet<NodeId>,
    /// Every member's addresses.
    pub nodes: BTreeMap<NodeId, Node>,
    /// On the leader only: for each other member, the last index known to be
    /// in its log (`None` before the first successful AppendEntries). The
    /// difference from `last_log_index` is that follower's replication lag.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// On the leader only: how long ago a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// On the leader only: for each other member, how long ago (in
    /// milliseconds) it last acknowledged a heartbeat or an append (`None`:
    /// not yet, to this leader). A follower that restarted has answered
    /// the leader once this is shorter than the time since its restart.
    pub millis_since_ack: BTreeMap<NodeId, Option<u64>>,
}

/// Whether the leader that `m` describes has lost its majority: none has
/// acknowledged it for longer than `lease` (check quorum). A leader not yet
/// acknowledged at all (just elected) or alone in its cluster has not.
fn quorum_lost(m: &RaftMetrics, lease: Duration) -> bool {
    let alone = m.membership_config.membership().voter_ids().eq([m.id]);
    m.state == ServerState::Leader
        && !alone
        && m.last_quorum_acked.as_ref().is_some_and(|at| at.elapsed() > lease)
}

impl NodeMetrics {
    fn from_raft(m: &RaftMetrics, checkpointed_index: u64, lease: Duration) -> Self {
        let membership = m.membership_config.membership();
        let lost = quorum_lost(m, lease);
        NodeMetrics {
            id: m.id,
            role: if lost { Role::Follower } else { m.state.into() },
            term: m.current_term,
            leader: if lost { None } else { m.current_leader },
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            checkpointed_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter().filter(|(id, _)| **id != m.id).map(|(id, l)| (*id, l.map(|l| l.index))).collect()
                })
                .unwrap_or_default(),
            millis_since_quorum_ack: m.last_quorum_acked.as_ref().map(|at| at.elapsed().as_millis() as u64),
            millis_since_ack: m
                .heartbeat
                .as_ref()
                .map(|h| {
                    h.iter()
                        .filter(|(id, _)| **id != m.id)
                        .map(|(id, at)| (*id, at.as_ref().map(|at| at.elapsed().as_millis() as u64)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}

/// A node's term and the leader it knows of, followed as they change.
pub struct TermWatch {
    rx: openraft::type_config::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
}

impl TermWatch {
    /// The current term and the leader this node knows of in it.
    pub fn current(&self) -> (u64, Option<NodeId>) {
        let m = self.rx.borrow_watched();
        (m.current_term, m.current_leader)
    }

    /// Waits until anything about the node changes (not only its term or
    /// leader: compare [`TermWatch::current`] before and after). Returns
    /// `false` once the node has stopped.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// A committed and applied command's response, and where it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<R> {
    /// The log position of the command. Every replica that has applied this
    /// index reflects the write: clients use it as a session token.
    pub log_id: LogId,
    /// What the state machine returned.
    pub response: R,
}

/// One replica of the application `A`. See the [module docs](self).
pub struct RaftNode<A: StateMachine> {
    id: NodeId,
    config: Config,
    raft: Raft,
    app: Arc<A>,
    sm: StateMachineStore,
    /// The database file, or `None` in memory.
    db_path: Option<PathBuf>,
    /// The database that holds the log's rollback records.
    records: Db,
    server: Option<TcpServer>,
    proposer: Proposer,
    reads: ReadBatcher,
    /// Closed while this node hands its leadership off: new writes and
    /// read-index requests wait until the handoff is over.
    gate: Gate,
    /// When a leader was last heard from, for the election timer.
    contact: Contact,
    /// The election timer ([`crate::election`]).
    elections: tokio::task::JoinHandle<()>,
}

impl<A: StateMachine> RaftNode<A> {
    /// Opens a durable node on `data_dir` that talks to its peers over TCP,
    /// serving Raft RPCs on `raft_listener` (already bound, so that tests can
    /// bind port 0).
    ///
    /// On a fresh directory the node waits to be initialized or added to a
    /// cluster; on one that holds state it resumes as the member it was.
    pub async fn open(
        id: NodeId,
        config: Config,
        data_dir: &Path,
        app: A,
        raft_listener: TcpListener,
    ) -> Result<Self, StartError> {
        let transport = TcpTransport::new(id, &config);
        let mut node =
            Self::start(id, config, Storage::Durable(data_dir.to_path_buf()), app, transport).await?;
        node.server = Some(TcpServer::spawn(raft_listener, node.inbox(), id, &node.config));
        Ok(node)
    }

    /// Starts a node on `router`, the in-process transport, and registers it
    /// there. For tests and single-process clusters.
    pub async fn start_local(
        id: NodeId,
        config: Config,
        storage: Storage,
        app: A,
        router: &LocalRouter,
    ) -> Result<Self, StartError> {
        let node = Self::start(id, config, storage, app, router.transport(id)).await?;
        router.register(id, node.inbox());
        Ok(node)
    }

    /// Starts a node from parts: any storage, any transport. The caller is
    /// responsible for delivering incoming RPCs to the node, through its
    /// [`RaftNode::inbox`].
    pub async fn start<T: Transport>(
        id: NodeId,
        config: Config,
        storage: Storage,
        app: A,
        transport: T,
    ) -> Result<Self, StartError> {
        let raft_config = Arc::new(config.to_openraft()?);
        let network = Network::new(id, transport, &config);
        let app = Arc::new(app);
        let raft_err = |e: openraft::error::Fatal<TypeConfig>| StartError::Raft(e.to_string());
        // How long each step of a start takes, for operators: opening the
        // file (redb repairs it after a crash), loading the checkpointed
        // state, and openraft's start, which re-applies the log since.
        let started = tokio::time::Instant::now();
        let mut steps_ms = [0u128; 2];
        // The durable kinds differ only in who opens the database; what
        // errors name is its directory, or what the database is on.
        let durable = match storage {
            Storage::Durable(dir) => Some((Db::open_with(&dir, config.storage)?, dir)),
            Storage::Opened(db) => {
                let on = db.path().map_or_else(|| PathBuf::from(BACKEND_PATH), Path::to_path_buf);
                Some((db, on))
            }
            Storage::InMemory => None,
        };
        steps_ms[0] = started.elapsed().as_millis();
        let (raft, db, sm) = match durable {
            Some((db, dir)) => {
                let sm = StateMachineStore::open_shared(db.clone(), app.clone()).map_err(|e| {
                    StartError::DataDir {
                        path: dir.clone(),
                        reason: format!("loading the applied state: {e}"),
                    }
                })?;
                steps_ms[1] = started.elapsed().as_millis();
                let log = RedbLogStore::try_new(db.clone()).map_err(|e| StartError::DataDir {
                    path: dir.clone(),
                    reason: format!("opening the log: {e}"),
                })?;
                if config.follower_writes_in_place {
                    log.write_in_place_when_following(id);
                }
                let raft = Raft::new(id, raft_config, network, log, sm.clone()).await.map_err(raft_err)?;
                (raft, db, sm)
            }
            None => {
                let db = Db::in_memory();
                let sm = StateMachineStore::open_shared(db.clone(), app.clone())
                    .map_err(|e| StartError::Raft(format!("state machine: {e}")))?;
                let raft = Raft::new(id, raft_config, network, MemLogStore::on(db.clone()), sm.clone())
                    .await
                    .map_err(raft_err)?;
                (raft, db, sm)
            }
        };
        sm.set_checkpoint_every(config.checkpoint_every_commands);
        tracing::info!(
            node_id = id,
            path = ?db.path(),
            open_ms = steps_ms[0],
            load_state_ms = steps_ms[1].saturating_sub(steps_ms[0]),
            raft_start_ms = started.elapsed().as_millis().saturating_sub(steps_ms[1]),
            applied_index = sm.view().map_or(0, |v| v.applied_index()),
            "raft node started"
        );
        let gate = Gate::new();
        let proposer = Proposer::spawn(raft.clone(), &config, gate.clone());
        let reads = ReadBatcher::new(raft.clone(), config.request_timeout);
        let db_path = db.path().map(Path::to_path_buf);
        let records = db.clone();
        let contact = Contact::new();
        let elections = tokio::spawn(election::run(raft.clone(), id, config.clone(), contact.clone()));
        Ok(RaftNode {
            id,
            config,
            raft,
            app,
            sm,
            db_path,
            records,
            server: None,
            proposer,
            reads,
            gate,
            contact,
            elections,
        })
    }

    /// Where this node's transport delivers the RPCs that peers send it:
    /// every transport needs one (the TCP and in-process transports make
    /// their own). Its election timer learns from it when a leader was
    /// last heard from, so RPCs delivered any other way would make the
    /// node campaign against a healthy leader (which the others refuse).
    pub fn inbox(&self) -> Inbox {
        Inbox::new(self.raft.clone(), self.contact.clone())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The file that holds everything this node keeps on disk (its log, its
    /// vote and its checkpointed state; see [`crate::storage::db`]), or
    /// `None` for a node in memory.
    pub fn db_path(&self) -> Option<&Path> {
        self.db_path.as_deref()
    }

    /// The address the TCP transport listens on, if this node uses it.
    pub fn raft_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(|s| s.local_addr())
    }

    /// How many connections from peers the TCP transport has accepted since
    /// the node started (`None` on another transport). A healthy cluster
    /// keeps a few per peer open; a number that grows with the load means
    /// connections are being opened per request.
    pub fn raft_connections_accepted(&self) -> Option<u64> {
        self.server.as_ref().map(|s| s.connections_accepted())
    }

    /// The openraft handle, for what this type does not wrap.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// Forms a new cluster of `members`, which must include this node. Call
    /// it on one node, once. Returns `Ok(false)` if this node was already
    /// initialized (which is how a restarted node answers: harmless). Never
    /// initialize different nodes with *different* member sets: each would
    /// form its own cluster, and the two would elect two leaders.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<bool, ChangeError> {
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(node_id = self.id, "cluster initialized");
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
                Err(ChangeError::Invalid(e.to_string()))
            }
            Err(RaftError::Fatal(_)) => Err(ChangeError::ShuttingDown),
        }
    }

    /// Proposes `command`, waits until it is committed and applied here, and
    /// returns the state machine's response. Concurrent calls are committed
    /// together in one log entry ([`crate::proposer`]).
    ///
    /// Only the leader accepts writes. This node checks its role *before*
    /// proposing, so [`WriteError::NotLeader`] always means the command was
    /// not proposed. Once proposed, anything but a response is
    /// [`WriteError::Indeterminate`]: openraft also reports "forward to
    /// leader" when a leader loses its office with the entry in its log, and
    /// that entry may yet be committed by the next leader (treating that
    /// answer as a definite failure is how Redis-Raft once acknowledged a
    /// failure for a write that had committed).
    ///
    /// While this node hands its leadership off
    /// ([`RaftNode::transfer_leadership`]), a write waits until the handoff
    /// is over (at most an election timeout), and is then refused with
    /// `NotLeader` naming the new leader, or proposed here if the handoff
    /// failed.
    pub async fn write(&self, command: &A::Command) -> Result<Written<A::Response>, WriteError> {
        self.may_propose().await?;
        let rx = self.proposer.propose(codec::encode(command)).await?;
        let (log_id, data) = match tokio::time::timeout(self.config.request_timeout, rx).await {
            Err(_) => {
                return Err(WriteError::Indeterminate {
                    reason: format!("not committed within {:?}", self.config.request_timeout),
                    leader: self.leader_hint(),
                })
            }
            Ok(Err(_)) => {
                return Err(WriteError::Indeterminate { reason: "node stopped".into(), leader: None })
            }
            Ok(Ok(outcome)) => outcome?,
        };
        match codec::decode::<Result<A::Response, String>>(&data) {
            Ok(Ok(response)) => Ok(Written { log_id, response }),
            Ok(Err(reason)) => Err(WriteError::Undecodable(reason)),
            Err(e) => Err(WriteError::Undecodable(e.to_string())),
        }
    }

    /// Waits out a handoff, then checks that this node leads: a write
    /// refused here was not proposed.
    async fn may_propose(&self) -> Result<(), WriteError> {
        self.gate.wait_open().await;
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        match m.state {
            // A leader without a majority would only queue the write
            // behind batches that cannot commit: refuse it now, unproposed
            // (openraft would refuse it too, once it got that far).
            ServerState::Leader if quorum_lost(&m, election::lease(&self.config)) => {
                Err(WriteError::NotLeader { leader: None })
            }
            ServerState::Leader => Ok(()),
            _ => Err(WriteError::NotLeader { leader: leader_hint(&m) }),
        }
    }

    /// Proposes `command` and returns once the entry holding it is durable
    /// in this node's own log: `leader` durability, the asynchronous end of
    /// the trade-off. It returns the entry's log id, and no response (the
    /// command is not applied yet; its outcome is known only once it is).
    ///
    /// **The write can be lost.** It is committed only once a majority has
    /// it. If this leader fails first, the next leader may not have it;
    /// when this node rejoins, the entry is removed from its log and kept
    /// in a [rollback record](crate::storage::rollback) instead
    /// ([`RaftNode::rollback_records`]), for an operator to recover or
    /// discard. Meanwhile it is applied nowhere. If it is committed, it is
    /// applied exactly as a [`RaftNode::write`] would be.
    ///
    /// Errors as for [`RaftNode::write`]: `NotLeader` means not proposed;
    /// after proposing, a failure is `Indeterminate`.
    pub async fn write_logged(&self, command: &A::Command) -> Result<LogId, WriteError> {
        self.may_propose().await?;
        let rx = self.proposer.propose_logged(codec::encode(command)).await?;
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Err(_) => Err(WriteError::Indeterminate {
                reason: format!("not durable in the leader's log within {:?}", self.config.request_timeout),
                leader: self.leader_hint(),
            }),
            Ok(Err(_)) => Err(WriteError::Indeterminate { reason: "node stopped".into(), leader: None }),
            Ok(Ok(outcome)) => outcome,
        }
    }

    /// The records of entries this node removed from its log because a
    /// new leader's log replaced them, oldest first (see
    /// [`crate::storage::rollback`]).
    pub async fn rollback_records(&self) -> Result<Vec<RollbackRecord>, DbError> {
        let db = self.records.clone();
        blocking(move || rollback::records(&db)).await
    }

    /// The rollback record `id`, if this node keeps it.
    pub async fn rollback_record(&self, id: u64) -> Result<Option<RollbackRecord>, DbError> {
        let db = self.records.clone();
        blocking(move || rollback::get(&db, id)).await
    }

    /// A linearizable read barrier (ReadIndex, Raft thesis §6.4): confirms
    /// with a quorum that this node is still the leader, then waits until
    /// the local state machine has applied everything committed before the
    /// call. A read of [`RaftNode::view`] after it returns sees every write
    /// that completed before the barrier started. Returns the read index.
    ///
    /// No clock is involved: a leader that has been deposed but does not
    /// know it yet cannot get the quorum's confirmation, so it cannot serve
    /// a stale value.
    pub async fn read_barrier(&self) -> Result<u64, ReadError> {
        let index = self.read_index().await?;
        self.wait_applied(index, self.config.request_timeout).await?;
        Ok(index)
    }

    /// The first half of [`RaftNode::read_barrier`], for serving reads on
    /// followers: on the leader, confirms leadership with a quorum and
    /// returns the index a reader must have applied before reading. A
    /// follower that obtains it from the leader, waits until it has applied
    /// that index itself, and then reads locally, serves a linearizable read
    /// without the data passing through the leader.
    ///
    /// Concurrent calls share quorum rounds (see [`crate::read_index`]):
    /// each call joins the next round to start, so under load one round of
    /// heartbeats serves many reads.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        // During a handoff, wait for its end: a leader that has sent
        // `TimeoutNow` refuses reads, and its successor is about to serve them.
        self.gate.wait_open().await;
        self.reads.read_index().await
    }

    /// How many leadership-confirmation rounds [`RaftNode::read_index`] has
    /// run since the node started: fewer than reads when reads are batched.
    pub fn read_index_rounds(&self) -> u64 {
        self.reads.rounds()
    }

    /// Waits until this node has applied at least `index` (for example a
    /// read index obtained from the leader, or a client's session token).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReadError> {
        if self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index) >= index {
            return Ok(());
        }
        match self.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "wait_applied").await {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ReadError::Timeout),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(ReadError::ShuttingDown),
        }
    }

    /// The local applied state, as it is now: possibly behind the leader
    /// (replication lag). [`AppView::applied`] says how far it reaches.
    pub fn view(&self) -> Result<AppView, ReadError> {
        self.sm.view().map_err(|e| ReadError::Storage(e.to_string()))
    }

    /// Adds `id` as a learner (a non-voting member that receives the log)
    /// and waits until it has caught up with the leader.
    pub async fn add_learner(&self, id: NodeId, node: Node) -> Result<LogId, ChangeError> {
        let fut = self.raft.add_learner(id, node, true);
        self.change(fut).await
    }

    /// Makes the learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<LogId, ChangeError> {
        let fut = self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false);
        self.change(fut).await
    }

    /// Removes `id` from the cluster, voter or learner. A removed node stops
    /// receiving the log; never add it back under the same id with its old
    /// data.
    pub async fn remove(&self, id: NodeId) -> Result<LogId, ChangeError> {
        let is_voter =
            self.raft.metrics().borrow_watched().membership_config.membership().voter_ids().any(|v| v == id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let fut = self.raft.change_membership(change, false);
        self.change(fut).await
    }

    async fn change(
        &self,
        fut: impl std::future::Future<
            Output = Result<
                openraft::raft::ClientWriteResponse<TypeConfig>,
                RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
            >,
        >,
    ) -> Result<LogId, ChangeError> {
        use openraft::error::ChangeMembershipError as E;
        match tokio::time::timeout(self.config.change_timeout, fut).await {
            Err(_) => Err(ChangeError::Indeterminate(format!(
                "not complete within {:?}",
                self.config.change_timeout
            ))),
            Ok(Ok(resp)) => Ok(resp.log_id),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ChangeError::NotLeader { leader: forward_hint(&f) })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)))) => {
                Err(ChangeError::Indeterminate(format!(
                    "the change was discarded by a change of leader (leader now: {:?})",
                    f.leader_id
                )))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::PreconditionFailed(e)))) => {
                Err(ChangeError::Invalid(e.to_string()))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(E::InProgress(e))))) => {
                Err(ChangeError::InProgress(e.to_string()))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ChangeError::Invalid(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(_))) => Err(ChangeError::ShuttingDown),
        }
    }

    /// Asks this node to campaign for leadership now, instead of waiting for
    /// an election timeout. It wins only if its log is up to date and a
    /// majority grants its vote.
    pub async fn campaign(&self) -> Result<(), ChangeError> {
        self.raft.trigger().elect(false).await.map_err(|_| ChangeError::ShuttingDown)
    }

    /// Hands this node's leadership to the voter `to`, or, with `None`, to
    /// the voter that holds the most of the log of those that acknowledged
    /// one of the last [`handoff::ANSWERED_WITHIN_HEARTBEATS`] heartbeats;
    /// returns the new leader. Only the leader can do this.
    ///
    /// New writes and linearizable reads on this node wait meanwhile, and
    /// are then redirected to the new leader ([`WriteError::NotLeader`]);
    /// writes proposed before are committed and answered first. The
    /// successor is brought fully up to date, then told to campaign at once,
    /// and wins the next term without an election timeout's wait. The whole
    /// handoff takes at most [`Config::election_timeout_max`]; see
    /// [`crate::handoff`] for the steps and what each failure leaves behind.
    /// `to` naming this node succeeds at once.
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<NodeId, TransferError> {
        let bounds = handoff::Bounds {
            within: self.config.election_timeout_max,
            answered_within: (self.config.heartbeat_interval * handoff::ANSWERED_WITHIN_HEARTBEATS)
                .min(self.config.election_timeout_min),
        };
        handoff::hand_off(&self.raft, &self.gate, to, bounds).await
    }

    /// Takes a snapshot now (and lets the log behind it be purged).
    pub async fn snapshot(&self) -> Result<(), ChangeError> {
        self.raft.trigger().snapshot().await.map_err(|_| ChangeError::ShuttingDown)
    }

    /// The node's current metrics, including its committed index.
    pub async fn metrics(&self) -> NodeMetrics {
        let raft_metrics = self.raft.metrics().borrow_watched().clone();
        NodeMetrics::from_raft(&raft_metrics, self.sm.checkpointed_index(), election::lease(&self.config))
    }

    /// The highest index this node knows to be committed (and holds in its
    /// log), from openraft's published metrics: cheap enough to call on
    /// every read.
    pub async fn committed_index(&self) -> u64 {
        self.raft.metrics().borrow_watched().local_committed.map_or(0, |l| l.index)
    }

    /// The index of the last entry this node applied.
    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index)
    }

    /// Whether this node currently believes it is the leader. Only a hint:
    /// it may have been deposed without knowing it yet (see
    /// [`RaftNode::read_barrier`] for how reads stay safe anyway).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader && !quorum_lost(&m, election::lease(&self.config))
    }

    /// The leader this node knows of, with its addresses (none if this node
    /// is a leader that has lost its majority, see [`Role::Leader`]).
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if quorum_lost(&m, election::lease(&self.config)) {
            return None;
        }
        leader_hint(&m)
    }

    /// Follows this node's term and the leader it knows of as they change
    /// (for metrics and logs; see [`TermWatch`]).
    pub fn watch_term(&self) -> TermWatch {
        TermWatch { rx: self.raft.metrics() }
    }

    /// Waits until this node knows of a leader, and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "wait_for_leader")
            .await
            .ok()?;
        m.current_leader
    }

    /// Stops the node gracefully. A leader first hands its leadership to a
    /// caught-up voter ([`RaftNode::transfer_leadership`]; at most an election
    /// timeout, and it stops anyway if that fails), then the node stops as
    /// [`RaftNode::shutdown_without_handoff`] does.
    pub async fn shutdown(self) {
        if self.is_leader() {
            match self.transfer_leadership(None).await {
                Ok(leader) => tracing::debug!(node_id = self.id, leader, "handed off before stopping"),
                Err(e) => tracing::info!(node_id = self.id, reason = %e, "stopping without a handoff"),
            }
        }
        self.shutdown_without_handoff().await;
    }

    /// Stops the node at once, leader or not: the transport stops accepting
    /// connections, openraft stops, and the applied state is checkpointed
    /// (made durable, with everything before it). If it led, the others
    /// elect a new leader after an election timeout, as after a crash.
    pub async fn shutdown_without_handoff(mut self) {
        self.elections.abort();
        self.proposer.shutdown();
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node_id = self.id, error = %e, "raft did not stop cleanly");
        }
        // A checkpoint, so that the next start resumes from the state as it
        // is now instead of re-applying the log since the last snapshot.
        let sm = self.sm.clone();
        if let Err(e) = crate::storage::blocking(move || sm.checkpoint()).await {
            tracing::warn!(node_id = self.id, error = %e, "final checkpoint failed");
        }
        tracing::info!(node_id = self.id, "raft node stopped");
    }
}
