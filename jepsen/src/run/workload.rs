//! The workloads: what the clients do, and how each operation is written
//! into the history.
//!
//! Every worker is one client thread bound to one node (worker `w` talks to
//! node `w mod n` first), so some clients always talk to followers and to
//! whichever node is being partitioned or paused: a deposed leader's stale
//! answer reaches the history instead of being hidden by a smart client.
//! Workers pace themselves to the test's total `rate`, with random gaps.
//!
//! * **register** ([`Kind::Register`]): independent keys, each a register
//!   that a group of `threads_per_key` workers reads, writes and
//!   compare-and-sets. Written values are unique (a run-wide counter), so a
//!   read can only be explained by the one write that wrote its value, and a
//!   CAS expects the last value its group saw. After `ops_per_key`
//!   operations a group moves on to a fresh key, so each key's history stays
//!   small enough for the linearizability search. Reads are linearizable.
//! * **set** ([`Kind::Set`]): each `add` writes a unique element as its own
//!   key (`set/<k>/<element>`); a few operations read the whole set back
//!   with a linearizable listing. Sets rotate every [`SET_SIZE`] elements
//!   to keep each listing small.
//! * **session** ([`Kind::Session`]): writes to a few keys, `session` reads
//!   (with the worker's token: the highest index it has written or read)
//!   and `stale` reads, all on the worker's own node, so most are served by
//!   followers. Every answer's `index`, `node` and (for reads)
//!   `committed_index` is recorded for the session checker.
//! * **watch** ([`Kind::Watch`]): writers put unique values to a few keys
//!   under `w/`, sometimes delete one, and read one now and then (each
//!   `ok` write, delete and read records its `index`); meanwhile watchers
//!   follow the prefix from random nodes, reconnecting across faults
//!   ([`super::watcher`]). The watch checker
//!   ([`jepsen_checker::checker::watch`]) compares what every watcher was
//!   delivered with the writers' acknowledged indexes, with each other,
//!   and with the reads.
//!
//! Puts (a register `write`, a set `add`) go out at the run's durability
//! (`--durability`); a compare-and-set always at `majority`, the only
//! level that can answer it. Each write's invocation records what was sent
//! (`durability`, `kv_key`, and the session's `client_id` and `seq`), and
//! its `ok` completion who acknowledged it and whether the answer said it
//! was committed (`node`, `committed`): the set checker needs them to match
//! a lost leader-durable write to a node's rollback record
//! ([`jepsen_checker::checker::set`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jepsen_checker::checker::set::fields;
use jepsen_checker::history::{EventType, Function, Process, Recorder};
pub use jepsen_checker::workload::{parse_value, WATCH_PREFIX};
use jepsen_checker::workload::{Generator, Op, Shape};
use kv_client::api::Durability;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::client::{write_with_retries, Failure, Http, Session, Write, WriteOutcome};

/// Elements per set in the set workload, before adds move to a new set.
pub const SET_SIZE: u64 = 2_000;

/// Keys the session workload writes and reads.
pub const SESSION_KEYS: u64 = 10;

/// Keys the watch workload changes, all under [`WATCH_PREFIX`].
pub const WATCH_KEYS: u64 = 8;

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Linearizable registers: read, write, compare-and-set.
    Register,
    /// A grow-only set: unique adds, whole-set reads.
    Set,
    /// Session and stale reads through followers.
    Session,
    /// Watchers following the changes that writers make.
    Watch,
}

impl Kind {
    /// The workload, as the shared generator names it.
    fn generator_kind(self) -> jepsen_checker::workload::Kind {
        use jepsen_checker::workload::Kind as G;
        match self {
            Kind::Register => G::Register,
            Kind::Set => G::Set,
            Kind::Session => G::Session,
            Kind::Watch => G::Watch,
        }
    }

    /// The name used in the store path and the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Set => "set",
            Kind::Session => "session",
            Kind::Watch => "watch",
        }
    }
}

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// The workload.
    pub kind: Kind,
    /// Worker threads.
    pub concurrency: usize,
    /// Total operations per second over all workers (approximately).
    pub rate: f64,
    /// The deadline of one operation, retries included.
    pub op_timeout: Duration,
    /// Register: workers sharing one key.
    pub threads_per_key: usize,
    /// Register: operations on a key before its group moves on.
    pub ops_per_key: u64,
    /// The probability that a write's first answer is lost (ignored, then
    /// retried with the same session).
    pub lose_responses: f64,
    /// When puts are acknowledged (compare-and-sets are always
    /// `majority`: their answer needs the applied result).
    pub durability: Durability,
}

/// What workers share: the nodes, the history, the generator state.
pub struct Shared {
    /// HTTP access.
    pub http: Http,
    /// Every node's HTTP address; node `i + 1` is at index `i`.
    pub nodes: Vec<String>,
    /// The history.
    pub rec: Recorder,
    /// The options.
    pub opts: WorkloadOptions,
    next_process: AtomicU64,
    /// What each worker does next, the run-wide counters, the keys used.
    generator: Generator,
}

/// One worker's identity and session.
pub struct Worker {
    /// Its index, which also fixes its node and register group.
    pub id: usize,
    /// Its current process id; a new one after every `info`.
    pub process: u64,
    /// Its session for exactly-once writes.
    pub session: Session,
    /// Session workload: the highest index it has written or read.
    pub token: u64,
    /// Its random choices (seeded from the test's seed).
    pub rng: StdRng,
}

impl Shared {
    /// Shared state for `opts.concurrency` workers against `nodes`.
    pub fn new(http: Http, nodes: Vec<String>, rec: Recorder, opts: WorkloadOptions) -> Shared {
        let shape = Shape {
            kind: opts.kind.generator_kind(),
            clients_per_key: opts.threads_per_key,
            ops_per_key: opts.ops_per_key,
            set_size: SET_SIZE,
            set_read_ratio: 0.02,
            session_keys: SESSION_KEYS,
            watch_keys: WATCH_KEYS,
        };
        Shared {
            http,
            nodes,
            rec,
            next_process: AtomicU64::new(opts.concurrency as u64),
            generator: Generator::new(shape, opts.concurrency),
            opts,
        }
    }

    /// A fresh process id (for a worker after an `info`, and for the final
    /// reads).
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// A value no other write of the run uses.
    pub(crate) fn fresh_value(&self) -> u64 {
        self.generator.fresh_value()
    }

    /// The keys (registers) or sets used so far.
    pub fn used_keys(&self) -> Vec<u64> {
        self.generator.used_keys()
    }

    /// The node a worker talks to first.
    fn home(&self, w: &Worker) -> usize {
        w.id % self.nodes.len()
    }

    fn learn(&self, w: &Worker, key: u64, value: Option<u64>) {
        self.generator.learn(w.id, key, value);
    }

    fn kv_key(&self, key: u64) -> String {
        self.generator.kv_key(key)
    }

    fn hkey(&self, key: u64) -> Value {
        self.generator.hkey(key)
    }

    fn hvalue(&self, text: &str) -> Value {
        self.generator.hvalue(text)
    }

    /// Runs one worker until `stop`.
    pub async fn worker(self: Arc<Self>, mut w: Worker, stop: Instant) {
        let interval = self.opts.concurrency as f64 / self.opts.rate.max(0.001);
        loop {
            let pause = Duration::from_secs_f64(interval * w.rng.gen_range(0.0..2.0));
            if Instant::now() + pause >= stop {
                return;
            }
            tokio::time::sleep(pause).await;
            let op = self.generator.choose(w.id, &mut w.rng);
            self.perform(&mut w, op, Map::new()).await;
        }
    }

    /// Invokes `op`, waits for its outcome, and records both.
    async fn perform(&self, w: &mut Worker, op: Op, mut extra: Map<String, Value>) -> EventType {
        let home = self.home(w);
        let node = self.nodes[home].clone();
        let deadline = Instant::now() + self.opts.op_timeout;
        if self.opts.kind == Kind::Session {
            extra.insert("session".into(), json!(w.id));
        }
        match op {
            Op::Read { key, consistency } => {
                let f = Function::Read;
                let mut inv = extra.clone();
                if self.opts.kind == Kind::Session {
                    inv.insert("consistency".into(), json!(consistency));
                }
                self.invoke(w, &f, self.hkey(key), Value::Null, inv.clone());
                let token = (consistency == "session").then_some(w.token);
                match self.http.read(&node, &self.kv_key(key), consistency, token).await {
                    Ok(answer) => {
                        let (value, mut done) = (answer.as_ref().and_then(|r| r.value.value.clone()), inv);
                        let parsed = value.as_deref().map(|v| self.hvalue(v)).unwrap_or(Value::Null);
                        if let Some(r) = &answer {
                            done.insert("node".into(), json!(r.node));
                            if self.opts.kind == Kind::Watch {
                                done.insert("index".into(), json!(r.index));
                            }
                            if self.opts.kind == Kind::Session {
                                done.insert("index".into(), json!(r.index));
                                done.insert("committed_index".into(), json!(r.committed_index));
                                w.token = w.token.max(r.index);
                            }
                        }
                        self.learn(w, key, parsed.as_u64());
                        self.complete(w, EventType::Ok, &f, self.hkey(key), parsed, done)
                    }
                    Err(fail) => self.failed(
                        w,
                        &f,
                        self.hkey(key),
                        Value::Null,
                        inv,
                        Failure { definite: true, ..fail },
                    ),
                }
            }
            Op::Write { key, value } => {
                let write = Write::Put {
                    key: self.kv_key(key),
                    value: value.to_string(),
                    durability: self.opts.durability,
                };
                let hvalue = self.hvalue(&value.to_string());
                self.write(w, Function::Write, key, hvalue, write, home, deadline, extra).await
            }
            Op::Cas { key, from, to } => {
                let write = Write::Cas {
                    key: self.kv_key(key),
                    expected: Some(from.to_string()),
                    value: to.to_string(),
                };
                self.write(w, Function::Cas, key, json!([from, to]), write, home, deadline, extra).await
            }
            Op::Delete { key } => {
                let write = Write::Delete { key: self.kv_key(key) };
                let f = Function::Other(jepsen_checker::checker::watch::DELETE.into());
                self.write(w, f, key, Value::Null, write, home, deadline, extra).await
            }
            Op::Add { set, element } => {
                let write = Write::Put {
                    key: format!("{}{element}", self.kv_key(set)),
                    value: element.to_string(),
                    durability: self.opts.durability,
                };
                let f = Function::Other("add".into());
                self.write(w, f, set, json!(element), write, home, deadline, extra).await
            }
            Op::ReadSet { set } => {
                let f = Function::Read;
                self.invoke(w, &f, json!(set), Value::Null, extra.clone());
                match self.http.list(&node, &self.kv_key(set), SET_SIZE as usize * 2).await {
                    Ok(list) if !list.more => {
                        let elements: Vec<Value> = list
                            .items
                            .iter()
                            .map(|i| parse_value(i.value.value.as_deref().unwrap_or("")))
                            .collect();
                        let mut done = extra;
                        done.insert("node".into(), json!(list.node));
                        self.complete(w, EventType::Ok, &f, json!(set), Value::Array(elements), done)
                    }
                    Ok(_) => {
                        let fail = Failure { definite: true, error: "listing truncated".into() };
                        self.failed(w, &f, json!(set), Value::Null, extra, fail)
                    }
                    Err(fail) => self.failed(w, &f, json!(set), Value::Null, extra, fail),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        w: &mut Worker,
        f: Function,
        key: u64,
        value: Value,
        write: Write,
        home: usize,
        deadline: Instant,
        extra: Map<String, Value>,
    ) -> EventType {
        // What was sent, on the invocation: the set checker finds a lost
        // leader-durable write in the nodes' rollback records by its key
        // and session.
        let seq = w.session.next_seq();
        let to = match &write {
            Write::Put { value, .. } | Write::Cas { value, .. } => value.parse::<u64>().ok(),
            _ => None,
        };
        let mut inv = extra.clone();
        inv.insert(fields::DURABILITY.into(), json!(write.durability().name()));
        if let Some(kv_key) = write.kv_key() {
            inv.insert(fields::KV_KEY.into(), json!(kv_key));
        }
        inv.insert(fields::CLIENT_ID.into(), json!(w.session.client_id));
        inv.insert(fields::SEQ.into(), json!(seq));
        self.invoke(w, &f, self.hkey(key), value.clone(), inv);
        let lose = w.rng.gen::<f64>() < self.opts.lose_responses;
        let session = (w.session.client_id, seq);
        match write_with_retries(&self.http, &self.nodes, home, &write, session, deadline, lose).await {
            WriteOutcome::Ok(r) => {
                let mut done = extra;
                done.insert(fields::NODE.into(), json!(r.node));
                // False: acknowledged at leader durability, not committed.
                done.insert(fields::COMMITTED.into(), json!(r.committed));
                if let Some(existed) = r.existed {
                    done.insert("existed".into(), json!(existed));
                }
                if r.duplicate {
                    // A retry's answer: the write applied earlier, at an
                    // index before this one.
                    done.insert("duplicate".into(), json!(true));
                }
                if matches!(self.opts.kind, Kind::Session | Kind::Watch) {
                    done.insert("index".into(), json!(r.index));
                    w.token = w.token.max(r.index);
                }
                self.learn(w, key, to);
                self.complete(w, EventType::Ok, &f, self.hkey(key), value, done)
            }
            WriteOutcome::Mismatch => {
                let fail = Failure { definite: true, error: kv_client::api::codes::CAS_MISMATCH.into() };
                self.failed(w, &f, self.hkey(key), value, extra, fail)
            }
            WriteOutcome::Failed(fail) => self.failed(w, &f, self.hkey(key), value, extra, fail),
            WriteOutcome::Lease(_) | WriteOutcome::LeaseNotFound => {
                // No workload write names a lease: an answer about one
                // says nothing sure about this write.
                let fail =
                    Failure { definite: false, error: "a lease answer to a write without a lease".into() };
                self.failed(w, &f, self.hkey(key), value, extra, fail)
            }
        }
    }

    fn invoke(&self, w: &Worker, f: &Function, key: Value, value: Value, extra: Map<String, Value>) {
        self.rec.record_with(
            Process::Client(w.process.into()),
            EventType::Invoke,
            f.clone(),
            key,
            value,
            extra,
        );
    }

    fn complete(
        &self,
        w: &mut Worker,
        kind: EventType,
        f: &Function,
        key: Value,
        value: Value,
        extra: Map<String, Value>,
    ) -> EventType {
        self.rec.record_with(Process::Client(w.process.into()), kind, f.clone(), key, value, extra);
        if kind == EventType::Info {
            // Its operation may still take effect at any time: the worker
            // goes on as a new process, concurrent with it.
            w.process = self.new_process();
        }
        kind
    }

    fn failed(
        &self,
        w: &mut Worker,
        f: &Function,
        key: Value,
        value: Value,
        mut extra: Map<String, Value>,
        fail: Failure,
    ) -> EventType {
        extra.insert("error".into(), json!(fail.error));
        let kind = if fail.definite { EventType::Fail } else { EventType::Info };
        self.complete(w, kind, f, key, value, extra)
    }

    /// The final reads: every key (or set) used, from every node, marked
    /// `"phase": "final"`. Each node is asked until it answers or
    /// `deadline` passes, so a slow node still contributes its read.
    pub async fn final_reads(&self, deadline: Instant, rng: &mut StdRng) {
        let keys = self.used_keys();
        for node_idx in 0..self.nodes.len() {
            let mut w = Worker {
                id: node_idx,
                process: self.new_process(),
                session: Session { client_id: rng.gen(), seq: 0 },
                token: 0,
                rng: rand::SeedableRng::seed_from_u64(rng.gen()),
            };
            for &key in &keys {
                let op = self.generator.final_read(key);
                let mut phase = Map::new();
                phase.insert("phase".into(), json!("final"));
                loop {
                    let kind = self.perform(&mut w, op.clone(), phase.clone()).await;
                    if kind == EventType::Ok || Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
