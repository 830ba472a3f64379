//! Simulated clients: the jepsen harness's workloads, run against the
//! simulated cluster, written into a history the same checkers judge.
//!
//! Each client is a task with its own seeded generator, bound to a home
//! node (client `c` to node `c mod n + 1`), so some always talk to
//! followers and to whichever node is crashed or cut off. A client talks to
//! a node across the client network, which has latency but no partitions
//! (as in the jepsen harness, where only the Raft ports are cut). What a
//! client does per request is what `kv-server` and `kv-client` do together:
//!
//! * **writes** carry the client's session (`client_id`, `seq`); a node
//!   that does not lead names the leader, and the client retries there with
//!   the same session, as `kv-client` does after a redirect. An answer that
//!   never came (the node crashed, the call timed out, the answer was
//!   "lost" on purpose) makes the outcome unknown, and the client retries
//!   with the same session until the operation's deadline: the state
//!   machine applies a session's write at most once, so a retry is safe.
//!   Gave up with no answer: `info`. Refused before proposing: `fail`.
//! * **linearizable reads** on the leader go through its read barrier; on a
//!   follower, the follower asks the leader for its read index and waits
//!   until it has applied it (`kv-server`'s follower read path), so a
//!   follower cut off from the leader cannot serve one.
//! * **session** and **stale** reads are served by the home node alone.
//!
//! The workloads are the harness's, drawn from the same
//! [`Generator`] (see [`jepsen_checker::workload`] for the reasoning):
//! **register** (groups of clients on one key, unique values, reads,
//! writes and compare-and-sets, moving to a fresh key after a few dozen
//! operations), **set** (unique adds, whole-set reads), and **session**
//! (writes, session reads with the client's token, stale reads, all
//! through the home node). Sets are smaller here (200 elements, read one
//! time in twenty) than in the harness, so that short runs read each set
//! several times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_checker::checker::set::fields;
use jepsen_checker::history::{Event, EventType, Function, Process};
use jepsen_checker::workload::{Generator, Op, Shape};
use kv_app::command::{KvCommand, KvResponse, SessionId, WriteOp, WriteOutcome};
use raft_core::{AppView, NodeId, WriteError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::trace::Trace;

/// Elements per set before adds move to a new set.
pub const SET_SIZE: u64 = 200;

/// Keys the session workload writes and reads.
pub const SESSION_KEYS: u64 = 8;

/// Which workload the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Linearizable registers: read, write, compare-and-set.
    Register,
    /// A grow-only set: unique adds, whole-set reads.
    Set,
    /// Session and stale reads through followers.
    Session,
}

impl Workload {
    /// The workload, as the shared generator names it.
    fn generator_kind(self) -> jepsen_checker::workload::Kind {
        use jepsen_checker::workload::Kind as G;
        match self {
            Workload::Register => G::Register,
            Workload::Set => G::Set,
            Workload::Session => G::Session,
        }
    }

    /// The name in summaries and file names.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Session => "session",
        }
    }

    /// The workload of seed `seed` when a run mixes all three.
    pub fn for_seed(seed: u64) -> Workload {
        [Workload::Register, Workload::Set, Workload::Session][(seed % 3) as usize]
    }
}

/// How the clients behave.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ClientOptions {
    /// The workload.
    pub workload: Workload,
    /// Client tasks.
    pub clients: usize,
    /// Operations to invoke in all (the final reads come on top).
    pub ops: u64,
    /// The mean pause between one client's operations.
    pub think: Duration,
    /// One operation's deadline, retries included.
    pub op_timeout: Duration,
    /// Register: clients sharing one key.
    pub clients_per_key: usize,
    /// Register: operations on a key before its group moves on.
    pub ops_per_key: u64,
    /// The probability that a write's first answer is ignored (the client
    /// retries with the same session, as after a lost answer).
    pub lose_answers: f64,
    /// Negative control: linearizable reads served from the home node's
    /// local state, without asking the leader (`--unsafe-local-reads`).
    pub unsafe_local_reads: bool,
}

impl ClientOptions {
    /// The defaults for `workload` with `ops` operations.
    pub fn new(workload: Workload, ops: u64) -> ClientOptions {
        ClientOptions {
            workload,
            clients: 6,
            ops,
            think: Duration::from_millis(30),
            op_timeout: Duration::from_secs(5),
            clients_per_key: 3,
            ops_per_key: 40,
            lose_answers: 0.02,
            unsafe_local_reads: false,
        }
    }
}

/// The history of a simulated run, stamped with simulated time. The
/// simulation is single-threaded, so appending in call order keeps the
/// events in time order, as the format requires.
#[derive(Clone)]
pub struct History {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    trace: Trace,
}

impl History {
    /// An empty history starting now (simulated time).
    pub fn new(trace: Trace) -> History {
        History { start: Instant::now(), events: Arc::default(), trace }
    }

    /// Appends an event stamped with the simulated time.
    pub fn record(
        &self,
        process: Process,
        kind: EventType,
        f: Function,
        key: Value,
        value: Value,
        extra: Map<String, Value>,
    ) {
        let time = self.elapsed_nanos();
        let mut event = Event::new(process, kind, f, key, value, time);
        event.extra = extra;
        if self.trace.is_on() {
            self.trace.line(format_args!("history {}", serde_json::to_string(&event).unwrap_or_default()));
        }
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    /// A nemesis event (`start-…`, `stop-…`, `crash`, …).
    pub fn nemesis(&self, f: &str, value: Value) {
        self.record(
            Process::Nemesis,
            EventType::Info,
            Function::Other(f.to_string()),
            Value::Null,
            value,
            Map::new(),
        );
    }

    /// Simulated nanoseconds since the run began.
    pub fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Simulated wall-clock time for a command's `proposed_at_ms`: a fixed
    /// epoch plus the simulated time since the run began, so that it is the
    /// same in every run of a seed.
    pub fn now_ms(&self) -> u64 {
        const EPOCH_MS: u64 = 1_800_000_000_000;
        EPOCH_MS + self.start.elapsed().as_millis() as u64
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the clients share.
pub struct Clients {
    cluster: Arc<Cluster>,
    history: History,
    opts: ClientOptions,
    next_process: AtomicU64,
    remaining: AtomicU64,
    /// What each client does next (the harness's generator).
    generator: Generator,
}

/// One client task's identity.
struct Client {
    id: usize,
    process: u64,
    client_id: u64,
    seq: u64,
    token: u64,
    rng: StdRng,
}

/// Why an operation did not complete `ok`.
struct Failure {
    definite: bool,
    error: String,
}

impl Failure {
    fn definite(error: impl Into<String>) -> Failure {
        Failure { definite: true, error: error.into() }
    }
}

impl Clients {
    /// Clients for `cluster`, writing into `history`.
    pub fn new(cluster: Arc<Cluster>, history: History, opts: ClientOptions) -> Arc<Clients> {
        let shape = Shape {
            kind: opts.workload.generator_kind(),
            clients_per_key: opts.clients_per_key,
            ops_per_key: opts.ops_per_key,
            set_size: SET_SIZE,
            set_read_ratio: 0.05,
            session_keys: SESSION_KEYS,
            watch_keys: 1,
        };
        Arc::new(Clients {
            cluster,
            history,
            opts,
            next_process: AtomicU64::new(opts.clients as u64),
            remaining: AtomicU64::new(opts.ops),
            generator: Generator::new(shape, opts.clients),
        })
    }

    /// Runs every client until the operations are used up. Each client's
    /// choices come from `seed`.
    pub async fn run(self: &Arc<Self>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let tasks: Vec<_> = (0..self.opts.clients)
            .map(|id| {
                let c = Client {
                    id,
                    process: id as u64,
                    client_id: rng.gen(),
                    seq: 0,
                    token: 0,
                    rng: StdRng::seed_from_u64(rng.gen()),
                };
                tokio::spawn(self.clone().client(c))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn client(self: Arc<Self>, mut c: Client) {
        let think = self.opts.think.as_secs_f64();
        loop {
            if self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                .is_err()
            {
                return;
            }
            let pause = Duration::from_secs_f64(think * c.rng.gen_range(0.0..2.0));
            tokio::time::sleep(pause).await;
            let op = self.generator.choose(c.id, &mut c.rng);
            self.perform(&mut c, op, Map::new()).await;
        }
    }

    /// The final reads, once the cluster is healed and quiet: every key (or
    /// set) used, from every node, marked `"phase": "final"`, each retried
    /// until it succeeds or a minute of simulated time passed.
    pub async fn final_reads(&self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys = self.generator.used_keys();
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, _) in self.cluster.ids().iter().enumerate() {
            let mut c = Client {
                id: i,
                process: self.next_process.fetch_add(1, Ordering::Relaxed),
                client_id: rng.gen(),
                seq: 0,
                token: 0,
                rng: StdRng::seed_from_u64(rng.gen()),
            };
            for &key in &keys {
                let op = self.generator.final_read(key);
                let mut phase = Map::new();
                phase.insert("phase".into(), json!("final"));
                loop {
                    let kind = self.perform(&mut c, op.clone(), phase.clone()).await;
                    if kind == EventType::Ok || Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn learn(&self, c: &Client, key: u64, value: Option<u64>) {
        self.generator.learn(c.id, key, value);
    }

    fn kv_key(&self, key: u64) -> String {
        self.generator.kv_key(key)
    }

    fn hkey(&self, key: u64) -> Value {
        self.generator.hkey(key)
    }

    fn hvalue(&self, bytes: &[u8]) -> Value {
        self.generator.hvalue(&String::from_utf8_lossy(bytes))
    }

    fn home(&self, c: &Client) -> NodeId {
        let ids = self.cluster.ids();
        ids[c.id % ids.len()]
    }

    /// One crossing of the client network.
    async fn hop(c: &mut Client) {
        let micros = c.rng.gen_range(200..3_000);
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }

    /// Invokes `op`, waits for its outcome, and records both.
    async fn perform(&self, c: &mut Client, op: Op, mut extra: Map<String, Value>) -> EventType {
        if self.opts.workload == Workload::Session {
            extra.insert("session".into(), json!(c.id));
        }
        match op {
            Op::Read { key, consistency } => {
                let mut inv = extra.clone();
                if self.opts.workload == Workload::Session {
                    inv.insert("consistency".into(), json!(consistency));
                }
                self.invoke(c, &Function::Read, self.hkey(key), Value::Null, inv.clone());
                let home = self.home(c);
                match self.read_view(c, home, consistency).await {
                    Ok((view, committed)) => {
                        let value = match kv_app::state_machine::get(&view, &self.kv_key(key)) {
                            Ok(v) => v,
                            Err(e) => {
                                return self.failed(
                                    c,
                                    &Function::Read,
                                    self.hkey(key),
                                    Value::Null,
                                    inv,
                                    Failure::definite(e.to_string()),
                                )
                            }
                        };
                        let parsed = value.as_deref().map_or(Value::Null, |v| self.hvalue(v));
                        let mut done = inv;
                        done.insert("node".into(), json!(home));
                        if self.opts.workload == Workload::Session {
                            let index = view.applied_index();
                            done.insert("index".into(), json!(index));
                            done.insert("committed_index".into(), json!(committed.max(index)));
                            c.token = c.token.max(index);
                        }
                        self.learn(c, key, parsed.as_u64());
                        self.complete(c, EventType::Ok, &Function::Read, self.hkey(key), parsed, done)
                    }
                    Err(fail) => self.failed(
                        c,
                        &Function::Read,
                        self.hkey(key),
                        Value::Null,
                        inv,
                        Failure { definite: true, ..fail },
                    ),
                }
            }
            Op::ReadSet { set } => {
                self.invoke(c, &Function::Read, json!(set), Value::Null, extra.clone());
                let home = self.home(c);
                match self.read_view(c, home, "linearizable").await {
                    Ok((view, _)) => {
                        match kv_app::state_machine::list(&view, &self.kv_key(set), SET_SIZE as usize * 2) {
                            Ok((items, false)) => {
                                let elements: Vec<Value> =
                                    items.iter().map(|(_, v)| self.hvalue(v)).collect();
                                let mut done = extra;
                                done.insert("node".into(), json!(home));
                                self.complete(
                                    c,
                                    EventType::Ok,
                                    &Function::Read,
                                    json!(set),
                                    Value::Array(elements),
                                    done,
                                )
                            }
                            Ok((_, true)) => self.failed(
                                c,
                                &Function::Read,
                                json!(set),
                                Value::Null,
                                extra,
                                Failure::definite("listing truncated"),
                            ),
                            Err(e) => self.failed(
                                c,
                                &Function::Read,
                                json!(set),
                                Value::Null,
                                extra,
                                Failure::definite(e.to_string()),
                            ),
                        }
                    }
                    Err(fail) => self.failed(
                        c,
                        &Function::Read,
                        json!(set),
                        Value::Null,
                        extra,
                        Failure { definite: true, ..fail },
                    ),
                }
            }
            Op::Write { key, value } => {
                let put = WriteOp::Put { key: self.kv_key(key), value: ByteBuf::from(value.to_string()) };
                let hvalue = self.hvalue(value.to_string().as_bytes());
                self.write(c, Function::Write, key, self.hkey(key), hvalue, put, Some(value), extra).await
            }
            Op::Cas { key, from, to } => {
                let cas = WriteOp::Cas {
                    key: self.kv_key(key),
                    expected: Some(ByteBuf::from(from.to_string())),
                    value: ByteBuf::from(to.to_string()),
                };
                self.write(c, Function::Cas, key, self.hkey(key), json!([from, to]), cas, Some(to), extra)
                    .await
            }
            Op::Add { set, element } => {
                let put = WriteOp::Put {
                    key: format!("{}{element}", self.kv_key(set)),
                    value: ByteBuf::from(element.to_string()),
                };
                self.write(
                    c,
                    Function::Other("add".into()),
                    set,
                    json!(set),
                    json!(element),
                    put,
                    None,
                    extra,
                )
                .await
            }
            Op::Delete { key } => {
                // No workload of the simulator deletes (the watch workload
                // runs only in the harness); written as the harness would.
                let delete = WriteOp::Delete { key: self.kv_key(key) };
                let f = Function::Other(jepsen_checker::checker::watch::DELETE.into());
                self.write(c, f, key, self.hkey(key), Value::Null, delete, None, extra).await
            }
        }
    }

    /// A view of `home`'s state fresh enough for `consistency`, and the
    /// commit index `home` knows of.
    async fn read_view(
        &self,
        c: &mut Client,
        home: NodeId,
        consistency: &str,
    ) -> Result<(AppView, u64), Failure> {
        Self::hop(c).await;
        let node =
            self.cluster.node(home).ok_or_else(|| Failure::definite(format!("node {home} is down")))?;
        let timeout = Duration::from_secs(5);
        match consistency {
            "stale" => {}
            "session" => {
                node.wait_applied(c.token, timeout).await.map_err(|e| Failure::definite(e.to_string()))?
            }
            _ if self.opts.unsafe_local_reads => {}
            _ if node.is_leader() => {
                node.read_barrier().await.map_err(|e| Failure::definite(e.to_string()))?;
            }
            _ => {
                // The follower read path: the leader's read index, across
                // the network between the nodes.
                let leader = node.leader_hint().ok_or_else(|| Failure::definite("no leader known"))?.id;
                if !self.cluster.net().reachable(home, leader) {
                    return Err(Failure::definite(format!("node {home} cannot reach leader {leader}")));
                }
                let leader_node = self
                    .cluster
                    .node(leader)
                    .ok_or_else(|| Failure::definite(format!("leader {leader} is down")))?;
                Self::hop(c).await;
                let index = leader_node.read_index().await.map_err(|e| Failure::definite(e.to_string()))?;
                Self::hop(c).await;
                node.wait_applied(index, timeout).await.map_err(|e| Failure::definite(e.to_string()))?;
            }
        }
        let view = node.view().map_err(|e| Failure::definite(e.to_string()))?;
        let committed = node.committed_index().await;
        Self::hop(c).await;
        // The node crashed while the answer was on its way: it never came.
        if self.cluster.node(home).is_none() {
            return Err(Failure::definite(format!("node {home} crashed before answering")));
        }
        Ok((view, committed))
    }

    /// Proposes a write with retries (see the [module docs](self)) and
    /// records it.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        c: &mut Client,
        f: Function,
        key: u64,
        hkey: Value,
        value: Value,
        op: WriteOp,
        learns: Option<u64>,
        extra: Map<String, Value>,
    ) -> EventType {
        c.seq += 1;
        let kv_key = match &op {
            WriteOp::Put { key, .. } | WriteOp::Cas { key, .. } => Some(key.clone()),
            _ => None,
        };
        let mut inv = extra.clone();
        inv.insert(fields::DURABILITY.into(), json!("majority"));
        if let Some(kv_key) = kv_key {
            inv.insert(fields::KV_KEY.into(), json!(kv_key));
        }
        inv.insert(fields::CLIENT_ID.into(), json!(c.client_id));
        inv.insert(fields::SEQ.into(), json!(c.seq));
        self.invoke(c, &f, hkey.clone(), value.clone(), inv);
        let session = SessionId { client_id: c.client_id, seq: c.seq };
        match self.propose_with_retries(c, op, session).await {
            Ok((index, node, response)) => {
                let (outcome, duplicate) = match response {
                    KvResponse::Applied(o) => (o, false),
                    KvResponse::Duplicate(o) => (o, true),
                    other => {
                        let fail = Failure::definite(format!("refused: {other:?}"));
                        return self.failed(c, &f, hkey, value, extra, fail);
                    }
                };
                if let WriteOutcome::Cas { succeeded: false, .. } = outcome {
                    return self.failed(c, &f, hkey, value, extra, Failure::definite("cas_mismatch"));
                }
                let mut done = extra;
                done.insert(fields::NODE.into(), json!(node));
                done.insert(fields::COMMITTED.into(), json!(true));
                if duplicate {
                    done.insert("duplicate".into(), json!(true));
                }
                if self.opts.workload == Workload::Session {
                    done.insert("index".into(), json!(index));
                    c.token = c.token.max(index);
                }
                self.learn(c, key, learns);
                self.complete(c, EventType::Ok, &f, hkey, value, done)
            }
            Err(fail) => self.failed(c, &f, hkey, value, extra, fail),
        }
    }

    /// Sends a write to the client's home node, follows redirects, and
    /// retries an unknown outcome with the same session until the
    /// operation's deadline.
    async fn propose_with_retries(
        &self,
        c: &mut Client,
        op: WriteOp,
        session: SessionId,
    ) -> Result<(u64, NodeId, KvResponse), Failure> {
        let deadline = Instant::now() + self.opts.op_timeout;
        let mut target = self.home(c);
        let mut unknown: Option<String> = None;
        let mut lose_first = c.rng.gen_bool(self.opts.lose_answers);
        let give_up = |unknown: Option<String>, last: String| match unknown {
            Some(why) => Failure { definite: false, error: why },
            None => Failure::definite(last),
        };
        loop {
            if Instant::now() >= deadline {
                return Err(give_up(unknown, "no leader accepted the write in time".into()));
            }
            Self::hop(c).await;
            let Some(node) = self.cluster.node(target) else {
                target = self.next_node(target);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let incarnation = self.cluster.incarnation(target);
            let cmd =
                KvCommand { session: Some(session), proposed_at_ms: self.history.now_ms(), op: op.clone() };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let answer = tokio::time::timeout(remaining, node.write(&cmd)).await;
            drop(node);
            let crashed =
                self.cluster.incarnation(target) != incarnation || self.cluster.node(target).is_none();
            Self::hop(c).await;
            match answer {
                _ if crashed => {
                    unknown = Some(format!("node {target} crashed during the write"));
                    target = self.next_node(target);
                }
                Err(_) => unknown = Some("timed out".into()),
                Ok(Ok(written)) if lose_first => {
                    lose_first = false;
                    unknown = Some("answer lost (on purpose)".into());
                    let _ = written;
                }
                Ok(Ok(written)) => return Ok((written.log_id.index, target, written.response)),
                Ok(Err(WriteError::NotLeader { leader })) => {
                    target = leader.map_or_else(|| self.next_node(target), |l| l.id);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => {
                    unknown = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn next_node(&self, after: NodeId) -> NodeId {
        let ids = self.cluster.ids();
        let i = ids.iter().position(|&id| id == after).unwrap_or(0);
        ids[(i + 1) % ids.len()]
    }

    fn invoke(&self, c: &Client, f: &Function, key: Value, value: Value, extra: Map<String, Value>) {
        self.history.record(
            Process::Client(c.process.into()),
            EventType::Invoke,
            f.clone(),
            key,
            value,
            extra,
        );
    }

    fn complete(
        &self,
        c: &mut Client,
        kind: EventType,
        f: &Function,
        key: Value,
        value: Value,
        extra: Map<String, Value>,
    ) -> EventType {
        self.history.record(Process::Client(c.process.into()), kind, f.clone(), key, value, extra);
        if kind == EventType::Info {
            c.process = self.next_process.fetch_add(1, Ordering::Relaxed);
        }
        kind
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        c: &mut Client,
        f: &Function,
        key: Value,
        value: Value,
        mut extra: Map<String, Value>,
        fail: Failure,
    ) -> EventType {
        extra.insert("error".into(), json!(fail.error));
        let kind = if fail.definite { EventType::Fail } else { EventType::Info };
        self.complete(c, kind, f, key, value, extra)
    }
}
