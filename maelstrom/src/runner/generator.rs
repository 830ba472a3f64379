//! The lin-kv workload: clients, the operations they issue, and the history
//! they record.
//!
//! This follows Maelstrom's `lin-kv` workload (Jepsen's linearizable
//! register test):
//!
//! * **Threads.** `--concurrency` threads; thread `t` always talks to node
//!   `t mod n`, and has one operation outstanding at a time. A thread starts
//!   as process `t`; after an `info` (an outcome nobody knows) the process
//!   is finished, and the thread continues as process `t + concurrency`,
//!   with a fresh client name, as Jepsen does.
//! * **Rate.** Operations are scheduled as Jepsen's `stagger` does: one
//!   schedule shared by every thread, each operation due a gap uniform in
//!   (0, 2 / `--rate`) s after the previous one, so the total rate is about
//!   `--rate` as long as enough threads are free.
//! * **Keys.** Threads form groups of 2n (n = node count). Each group works
//!   on one key at a time, keys taken in order 0, 1, 2, … from a counter
//!   shared by all groups. In a group, the first n threads only read; the
//!   others write (1/3) or compare-and-set (2/3), values uniform over 0..4.
//!   A key retires once 20 distinct processes have used it: the operation
//!   that would be the 21st process's goes to the group's next key instead
//!   (Jepsen's `process-limit 20`). Without faults a group's processes never
//!   change, so a key lives for the whole test, as in Maelstrom.
//! * **Outcomes.** A client waits max(10 × mean latency, 1 s) for a reply.
//!   `read_ok`, `write_ok`, `cas_ok` are `ok`. Error 20 on a read is an `ok`
//!   read of `null` (the key is absent, which is what the register model's
//!   `null` means). Recording it as a failed read instead would tell the
//!   checker less: an `ok` read only adds constraints, so this choice can
//!   find more violations, never hide one. A definite error (codes 1, 10, 11, 12, 14, 20,
//!   21, 22, 30) is `fail`. A timeout, or an indefinite error (0, 13, or a
//!   code Maelstrom does not define), is `info` for a write or cas and
//!   `fail` for a read, since a read changes nothing. A reply that is not
//!   the expected type or carries extra keys counts as an indefinite error.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jepsen_checker::history::{EventType, Function, Process, Recorder};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::net::{Message, Net};

/// Distinct processes a key serves before it retires (Jepsen's
/// `process-limit` in the linearizable register test).
pub const PROCESS_LIMIT: usize = 20;

/// Values are drawn from `0..VALUES`, as Maelstrom's `(rand-int 5)`.
const VALUES: u64 = 5;

/// Error codes Maelstrom defines as definite: the operation did not happen.
const DEFINITE_CODES: [i64; 9] = [1, 10, 11, 12, 14, 20, 21, 22, 30];

/// The workload's settings.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Node names.
    pub nodes: Vec<String>,
    /// Number of client threads, a multiple of 2 × node count.
    pub concurrency: usize,
    /// Target operations per second over all threads.
    pub rate: f64,
    /// How long to issue operations.
    pub time_limit: Duration,
    /// How long a client waits for a reply.
    pub client_timeout: Duration,
}

/// State shared by the threads: the schedule, the key groups, the client
/// names and the random source.
struct Shared {
    next_slot: Instant,
    groups: Vec<KeyGroup>,
    next_key: u64,
    next_client: u64,
    rng: StdRng,
}

struct KeyGroup {
    key: u64,
    processes: HashSet<u64>,
}

/// Runs every client thread until the time limit, then waits for the
/// outstanding operations to complete or time out. `first_client` is the
/// first free client number (`c0..` are used by `init`).
pub async fn run(workload: Workload, net: Net, recorder: Recorder, rng: StdRng, first_client: u64) {
    let start = Instant::now();
    let groups = workload.concurrency / (2 * workload.nodes.len());
    let shared = Arc::new(Mutex::new(Shared {
        next_slot: start,
        groups: (0..groups).map(|g| KeyGroup { key: g as u64, processes: HashSet::new() }).collect(),
        next_key: groups as u64,
        next_client: first_client,
        rng,
    }));
    let workload = Arc::new(workload);
    let mut threads = Vec::new();
    for t in 0..workload.concurrency {
        let (workload, net, recorder, shared) =
            (workload.clone(), net.clone(), recorder.clone(), shared.clone());
        threads.push(tokio::spawn(thread(t, start, workload, net, recorder, shared)));
    }
    for t in threads {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "client thread panicked");
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client thread: see the module docs.
async fn thread(
    t: usize,
    start: Instant,
    workload: Arc<Workload>,
    net: Net,
    recorder: Recorder,
    shared: Arc<Mutex<Shared>>,
) {
    let n = workload.nodes.len();
    let node = workload.nodes[t % n].clone();
    let end = start + workload.time_limit;
    let mut process = t as u64;
    let mut client = new_client(&shared);
    let mut replies = net.join(&client);
    let mut msg_id = 0u64;
    loop {
        // The next slot of the shared schedule, and this thread's operation.
        let (slot, f, key, value) = {
            let mut s = lock(&shared);
            let slot = s.next_slot.max(Instant::now());
            let gap = s.rng.gen_range(0.0..2.0 / workload.rate);
            s.next_slot = slot + Duration::from_secs_f64(gap);
            let (f, key, value) = next_op(&mut s, t, n, process);
            (slot, f, key, value)
        };
        if slot >= end {
            break;
        }
        tokio::time::sleep_until(slot.into()).await;

        msg_id += 1;
        let mut body = json!({"type": f.as_str(), "msg_id": msg_id, "key": key});
        match f {
            Function::Write => body["value"] = value.clone(),
            Function::Cas => {
                body["from"] = value[0].clone();
                body["to"] = value[1].clone();
            }
            _ => {}
        }
        let invoke_value = if f == Function::Read { Value::Null } else { value.clone() };
        recorder.record(
            Process::Client(process.into()),
            EventType::Invoke,
            f.clone(),
            json!(key),
            invoke_value,
        );
        net.send(Message { src: client.clone(), dest: node.clone(), body });

        let reply = tokio::time::timeout(workload.client_timeout, async {
            while let Some(m) = replies.recv().await {
                if m.body.get("in_reply_to").and_then(Value::as_u64) == Some(msg_id) {
                    return Some(m.body);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let (kind, result, error) = classify(&f, reply.as_ref());
        let mut extra = Map::new();
        extra.insert("node".into(), json!(node));
        if let Some(error) = error {
            extra.insert("error".into(), error);
        }
        let value = if f == Function::Read && kind == EventType::Ok { result } else { value };
        recorder.record_with(Process::Client(process.into()), kind, f, json!(key), value, extra);
        if kind == EventType::Info {
            // Jepsen: the process is finished; the thread goes on as a new one.
            process += workload.concurrency as u64;
            net.leave(&client);
            client = new_client(&shared);
            replies = net.join(&client);
        }
    }
    net.leave(&client);
}

fn new_client(shared: &Mutex<Shared>) -> String {
    let mut s = lock(shared);
    let id = s.next_client;
    s.next_client += 1;
    format!("c{id}")
}

/// Picks thread `t`'s next operation: its group's key (moving the group to a
/// new key once [`PROCESS_LIMIT`] processes have used it), and read for the
/// group's first n threads, otherwise write (1/3) or cas (2/3).
fn next_op(s: &mut Shared, t: usize, n: usize, process: u64) -> (Function, u64, Value) {
    let g = t / (2 * n);
    let fresh = s.next_key;
    let group = &mut s.groups[g];
    if !group.processes.contains(&process) && group.processes.len() >= PROCESS_LIMIT {
        group.key = fresh;
        group.processes.clear();
        s.next_key += 1;
    }
    let group = &mut s.groups[g];
    group.processes.insert(process);
    let key = group.key;
    if t % (2 * n) < n {
        return (Function::Read, key, Value::Null);
    }
    match s.rng.gen_range(0..3) {
        0 => (Function::Write, key, json!(s.rng.gen_range(0..VALUES))),
        _ => (Function::Cas, key, json!([s.rng.gen_range(0..VALUES), s.rng.gen_range(0..VALUES)])),
    }
}

/// Maps a reply (or its absence) to the outcome, the value read, and the
/// error to record. See the module docs for the rules.
fn classify(f: &Function, reply: Option<&Value>) -> (EventType, Value, Option<Value>) {
    let indefinite = |error: Value| {
        let kind = if *f == Function::Read { EventType::Fail } else { EventType::Info };
        (kind, Value::Null, Some(error))
    };
    let Some(body) = reply else { return indefinite(json!("timeout")) };
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return indefinite(json!("reply without type"));
    };
    let expected = format!("{}_ok", f.as_str());
    let allowed: &[&str] = if kind == "error" {
        &["code", "text"]
    } else if kind == expected && *f == Function::Read {
        &["value"]
    } else if kind == expected {
        &[]
    } else {
        return indefinite(json!(format!("unexpected reply type {kind:?}")));
    };
    let fields = body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    if let Some(extra) = fields
        .iter()
        .find(|k| !matches!(k.as_str(), "type" | "in_reply_to" | "msg_id") && !allowed.contains(&k.as_str()))
    {
        return indefinite(json!(format!("reply has unexpected key {extra:?}")));
    }
    if kind != "error" {
        return match body.get("value") {
            Some(value) => (EventType::Ok, value.clone(), None),
            None if *f == Function::Read => indefinite(json!("read_ok without a value")),
            None => (EventType::Ok, Value::Null, None),
        };
    }
    let Some(code) = body.get("code").and_then(Value::as_i64) else {
        return indefinite(json!("error without a code"));
    };
    let error = json!({"code": code, "text": body.get("text").cloned().unwrap_or(Value::Null)});
    if code == 20 && *f == Function::Read {
        (EventType::Ok, Value::Null, Some(error))
    } else if DEFINITE_CODES.contains(&code) {
        (EventType::Fail, Value::Null, Some(error))
    } else {
        indefinite(error)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn outcomes_follow_maelstrom_error_semantics() {
        let (r, w, c) = (Function::Read, Function::Write, Function::Cas);
        let ok = |f: &Function, body: Value| classify(f, Some(&body)).0;
        assert_eq!(classify(&r, Some(&json!({"type": "read_ok", "in_reply_to": 1, "value": 3}))).1, json!(3));
        assert_eq!(ok(&w, json!({"type": "write_ok", "in_reply_to": 1})), EventType::Ok);
        // Missing key on read: an ok read of null.
        let absent = classify(&r, Some(&json!({"type": "error", "in_reply_to": 1, "code": 20})));
        assert_eq!((absent.0, absent.1), (EventType::Ok, Value::Null));
        assert_eq!(ok(&c, json!({"type": "error", "code": 22})), EventType::Fail);
        assert_eq!(ok(&c, json!({"type": "error", "code": 20})), EventType::Fail);
        assert_eq!(ok(&w, json!({"type": "error", "code": 11})), EventType::Fail);
        assert_eq!(ok(&w, json!({"type": "error", "code": 0})), EventType::Info);
        assert_eq!(ok(&c, json!({"type": "error", "code": 13})), EventType::Info);
        assert_eq!(ok(&c, json!({"type": "error", "code": 99})), EventType::Info);
        assert_eq!(ok(&r, json!({"type": "error", "code": 0})), EventType::Fail);
        assert_eq!(classify(&w, None).0, EventType::Info);
        assert_eq!(classify(&r, None).0, EventType::Fail);
        // An extra key in a reply is treated as an indefinite error.
        assert_eq!(ok(&w, json!({"type": "write_ok", "in_reply_to": 1, "leader": "n0"})), EventType::Info);
        assert_eq!(ok(&w, json!({"type": "read_ok", "value": 1})), EventType::Info);
        assert_eq!(ok(&r, json!({"type": "read_ok", "in_reply_to": 1})), EventType::Fail);
    }

    #[test]
    fn key_retires_after_twenty_processes() {
        let mut s = Shared {
            next_slot: Instant::now(),
            groups: vec![KeyGroup { key: 0, processes: HashSet::new() }],
            next_key: 1,
            next_client: 0,
            rng: StdRng::seed_from_u64(5),
        };
        // 3 nodes, 6 threads; thread 4 keeps getting new processes.
        for p in 0..PROCESS_LIMIT as u64 {
            assert_eq!(next_op(&mut s, 4, 3, p).1, 0, "process {p} still on key 0");
        }
        // A known process stays; the 21st moves the group on.
        assert_eq!(next_op(&mut s, 4, 3, 0).1, 0);
        assert_eq!(next_op(&mut s, 4, 3, 100).1, 1);
        // Threads 0..3 read, 3..6 write or cas.
        assert_eq!(next_op(&mut s, 1, 3, 1).0, Function::Read);
        assert_ne!(next_op(&mut s, 3, 3, 3).0, Function::Read);
    }
}
