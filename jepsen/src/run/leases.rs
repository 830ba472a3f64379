//! The lease activity of the register workload: owners that grant, renew,
//! revoke or abandon leases, and readers that keep looking at the keys
//! attached to them.
//!
//! It runs beside the register clients, on keys of its own under
//! [`KEY_PREFIX`] (never a register key, so the linearizability check is
//! unchanged), and the lease check judges it
//! ([`jepsen_checker::checker::lease`], whose docs give the history format
//! and the rules).
//!
//! * An **owner** loops: grant a lease with a TTL from [`TTLS_MS`], attach
//!   one or two fresh keys to it, renew it every 0.2 to 0.7 TTLs for half a
//!   TTL to three TTLs, then either revoke it (a third of the time) or stop
//!   renewing and let it expire, and start on the next lease at once. A
//!   renewal that finds the lease gone (`lease_not_found`) ends the lease
//!   early: under faults a keepalive can take longer than the TTL, and the
//!   lease then expires correctly. Grants, keepalives, revokes and puts are
//!   writes with the owner's session, retried on other nodes until the
//!   operation's deadline, as the register writes are.
//! * A **reader** loops: every 20 to 120 ms, read one attached key,
//!   linearizably, from a random node. A key stays on the readers' board
//!   while its lease is renewed and for [`WATCH_AFTER`] past its TTL once
//!   its owner stopped renewing it (revoked, abandoned or lost), which
//!   covers the lease's deadline (TTL plus the longest election timeout)
//!   with a margin.
//!
//! With `--unsafe-lease-expire-early` the leader ends leases at half their
//! TTL: an owner's keepalive sent more than half a TTL after the previous
//! one then finds the lease gone while it was owed, and readers find its
//! keys missing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jepsen_checker::checker::lease::{GRANT, KEEPALIVE, LEASE_NOT_FOUND, PUT, READ, REVOKE};
use jepsen_checker::history::{EventType, Function, Process};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::client::{write_with_retries, Session, Write, WriteOutcome};
use super::workload::{parse_value, Shared};

/// The prefix of every key the lease activity writes.
pub const KEY_PREFIX: &str = "lease/";

/// The TTLs owners choose from, in ms: short, so that a short run sees
/// many leases renewed, revoked and expired.
pub const TTLS_MS: [u64; 5] = [1_000, 1_500, 2_000, 2_500, 3_000];

/// How long past its TTL a key stays on the readers' board once its owner
/// stopped renewing it: more than the lease's deadline (TTL plus the
/// longest election timeout the harness runs with), so that readers look
/// after the deadline too.
pub const WATCH_AFTER: Duration = Duration::from_secs(4);

/// The keys readers read: each with the instant after which nobody reads
/// it any more (`None` while its lease is still renewed).
#[derive(Debug, Default)]
pub struct Board {
    keys: Mutex<Vec<(String, Option<Instant>)>>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Option<Instant>)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, key: String) {
        self.lock().push((key, None));
    }

    /// The owner stopped renewing the lease of `keys`: read them until
    /// `until`.
    fn retire(&self, keys: &[String], until: Instant) {
        for entry in self.lock().iter_mut().filter(|(k, _)| keys.contains(k)) {
            entry.1 = Some(until);
        }
    }

    /// A random key still read, forgetting those past their time.
    fn pick(&self, rng: &mut StdRng) -> Option<String> {
        let mut keys = self.lock();
        let now = Instant::now();
        keys.retain(|(_, until)| until.is_none_or(|u| u > now));
        keys.choose(rng).map(|(k, _)| k.clone())
    }
}

/// What a lease request ended in, as the owner acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A grant applied: the lease id.
    Granted(u64),
    /// Any other request applied.
    Ok,
    /// The lease does not exist.
    NotFound,
    /// Anything else: certainly not applied, or unknown.
    Failed,
}

/// One owner: its place in the history and its session.
pub struct Owner {
    /// Its number, which names its keys.
    id: usize,
    /// Its current process id; a new one after every `info`.
    process: u64,
    session: Session,
    rng: StdRng,
    /// Keys it has attached so far.
    keys: u64,
}

impl Owner {
    /// Owner `id`, recording as a fresh process of `shared`.
    pub fn new(id: usize, shared: &Shared, mut rng: StdRng) -> Owner {
        let session = Session { client_id: rng.gen(), seq: 0 };
        Owner { id, process: shared.new_process(), session, rng, keys: 0 }
    }

    /// Grants, renews and ends leases until `stop`.
    pub async fn run(mut self, shared: Arc<Shared>, board: Arc<Board>, stop: Instant) {
        while Instant::now() < stop {
            let ttl_ms = *TTLS_MS.choose(&mut self.rng).unwrap_or(&TTLS_MS[0]);
            let ttl = Duration::from_millis(ttl_ms);
            let grant = Write::LeaseGrant { ttl_ms };
            let Answer::Granted(lease) =
                self.call(&shared, GRANT, None, None, json!({"ttl_ms": ttl_ms}), grant).await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut keys = Vec::new();
            for _ in 0..self.rng.gen_range(1..=2) {
                self.keys += 1;
                let key = format!("{KEY_PREFIX}{}/{}", self.id, self.keys);
                let value = shared.fresh_value();
                let put = Write::LeasePut { key: key.clone(), value: value.to_string(), lease };
                if self.call(&shared, PUT, Some(lease), Some(&key), json!(value), put).await == Answer::Ok {
                    board.publish(key.clone());
                    keys.push(key);
                }
            }
            let renew_until = Instant::now() + ttl.mul_f64(self.rng.gen_range(0.5..3.0));
            let mut alive = true;
            while alive && Instant::now() < renew_until.min(stop) {
                tokio::time::sleep(ttl.mul_f64(self.rng.gen_range(0.2..0.7))).await;
                let keep = Write::LeaseKeepAlive { id: lease };
                alive = self.call(&shared, KEEPALIVE, Some(lease), None, Value::Null, keep).await
                    != Answer::NotFound;
            }
            if alive && self.rng.gen_bool(1.0 / 3.0) {
                let revoke = Write::LeaseRevoke { id: lease };
                self.call(&shared, REVOKE, Some(lease), None, Value::Null, revoke).await;
            }
            board.retire(&keys, Instant::now() + ttl + WATCH_AFTER);
        }
    }

    /// Sends one lease request (with retries) and records it: `f` with the
    /// lease id in `lease` (known before the request for all but a grant)
    /// and the key, for a put.
    async fn call(
        &mut self,
        shared: &Shared,
        f: &str,
        lease: Option<u64>,
        key: Option<&str>,
        value: Value,
        write: Write,
    ) -> Answer {
        let f = Function::Other(f.into());
        let key = key.map_or(Value::Null, |k| json!(k));
        let mut extra = Map::new();
        if let Some(id) = lease {
            extra.insert("lease".into(), json!(id));
        }
        let process = Process::Client(self.process.into());
        shared.rec.record_with(
            process.clone(),
            EventType::Invoke,
            f.clone(),
            key.clone(),
            value.clone(),
            extra.clone(),
        );
        let first = self.rng.gen_range(0..shared.nodes.len());
        let deadline = Instant::now() + shared.opts.op_timeout;
        let session = (self.session.client_id, self.session.next_seq());
        let outcome =
            write_with_retries(&shared.http, &shared.nodes, first, &write, session, deadline, false).await;
        let (kind, answer) = match outcome {
            WriteOutcome::Ok(r) => {
                extra.insert("node".into(), json!(r.node));
                (EventType::Ok, Answer::Ok)
            }
            WriteOutcome::Lease(r) => {
                extra.insert("node".into(), json!(r.node));
                if lease.is_some() {
                    (EventType::Ok, Answer::Ok)
                } else {
                    extra.insert("lease".into(), json!(r.id));
                    (EventType::Ok, Answer::Granted(r.id))
                }
            }
            WriteOutcome::LeaseNotFound => {
                extra.insert("error".into(), json!(LEASE_NOT_FOUND));
                (EventType::Fail, Answer::NotFound)
            }
            WriteOutcome::Mismatch => {
                // No lease request compares: an answer that says it did
                // proves nothing about what happened.
                extra.insert("error".into(), json!("unexpected compare-and-set mismatch"));
                (EventType::Info, Answer::Failed)
            }
            WriteOutcome::Failed(fail) => {
                extra.insert("error".into(), json!(fail.error));
                let kind = if fail.definite { EventType::Fail } else { EventType::Info };
                (kind, Answer::Failed)
            }
        };
        shared.rec.record_with(process, kind, f, key, value, extra);
        if kind == EventType::Info {
            // Its request may still apply: go on as a new process.
            self.process = shared.new_process();
        }
        answer
    }
}

/// One reader: reads a random attached key from a random node until
/// `stop`, each read a `lease-read` operation.
pub async fn read(shared: Arc<Shared>, board: Arc<Board>, mut rng: StdRng, stop: Instant) {
    let process = Process::Client(shared.new_process().into());
    let f = Function::Other(READ.into());
    loop {
        let pause = Duration::from_millis(rng.gen_range(20..120));
        if Instant::now() + pause >= stop {
            return;
        }
        tokio::time::sleep(pause).await;
        let Some(key) = board.pick(&mut rng) else { continue };
        let node = &shared.nodes[rng.gen_range(0..shared.nodes.len())];
        shared.rec.record(process.clone(), EventType::Invoke, f.clone(), json!(key), Value::Null);
        let (kind, value, extra) = match shared.http.read(node, &key, "linearizable", None).await {
            Ok(answer) => {
                let value =
                    answer.as_ref().and_then(|r| r.value.value.as_deref()).map_or(Value::Null, parse_value);
                let mut extra = Map::new();
                if let Some(r) = &answer {
                    extra.insert("node".into(), json!(r.node));
                }
                (EventType::Ok, value, extra)
            }
            // A read changes nothing: one that got no answer did not happen.
            Err(fail) => {
                (EventType::Fail, Value::Null, Map::from_iter([("error".into(), json!(fail.error))]))
            }
        };
        shared.rec.record_with(process.clone(), kind, f.clone(), json!(key), value, extra);
    }
}
