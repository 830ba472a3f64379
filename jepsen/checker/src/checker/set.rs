//! The set workload: every acknowledged element is kept, exactly once.
//!
//! # The workload
//!
//! Clients add unique elements to a grow-only set and, at the end, read the
//! whole set back (one final read from every node). In the history:
//!
//! ```text
//! {"process":0,"type":"invoke","f":"add","key":"s","value":17,"time":10}
//! {"process":0,"type":"ok","f":"add","key":"s","value":17,"time":20}
//! {"process":5,"type":"invoke","f":"read","key":"s","time":900}
//! {"process":5,"type":"ok","f":"read","key":"s","value":[3,17,4],"time":910,"node":2}
//! ```
//!
//! * `add`: `key` names the set (any JSON, `null` if left out), `value` is
//!   the element. Each element is added at most once per set: the workload
//!   draws them from a counter. The KV service can implement it either way
//!   the issue allows: each add writes its own unique key, or appends to one
//!   value.
//! * `read`: an `ok` read's `value` is the array of elements read (`null`
//!   reads as the empty set: the set was never created).
//!
//! Every key with at least one `add` is a set; its reads are set reads.
//! Several sets in one history are checked independently.
//!
//! # What is checked
//!
//! An add's outcome says what may be read (see [`crate::history`]):
//!
//! | add outcome | in a final read |
//! |-------------|-----------------|
//! | `ok`        | must be present, exactly once; missing is **lost** |
//! | `fail`      | must be absent: certainly not applied |
//! | `info`      | may be present (**recovered**) or absent |
//! | never added | must be absent: **unexpected** |
//!
//! A *final read* is an `ok` read invoked after every add of its set was
//! invoked and every `ok` or `fail` add had completed, so every acknowledged
//! element must be in it. (`info` adds never complete; they may land at any
//! time, which the table allows for.) Lost and recovered elements are judged
//! on final reads only; an element missing from an earlier read may simply
//! not have been added yet. Duplicated, unexpected and failed-but-present
//! elements are wrong in *any* `ok` read, so every read is checked for them.
//!
//! Lost acknowledged writes are what a new leader that did not commit a
//! no-op first produced in Redis-Raft; an element read twice is a duplicated
//! application (client retries without exactly-once, as in jetcd); a
//! `fail`ed element that is present is a definite error for a write that had
//! committed (Redis-Raft again).
//!
//! The verdict is **invalid** if any element is lost (save the one
//! exception below), duplicated, unexpected or failed-but-present;
//! otherwise **unknown** if the set was never read at the end (nothing
//! proves the acknowledged elements survived); otherwise **valid**.
//!
//! # Lost by design: leader durability and rollback records
//!
//! A write acknowledged at `leader` durability is durable in the leader's
//! own log only: if that leader is deposed before a majority has it, the
//! write is lost, by design, and the old leader keeps the removed entry in a
//! rollback record ([`crate::rollback`]). The harness records, on each
//! add's invocation, the durability it asked for and the write it sent
//! (`"durability"`, `"kv_key"`, `"client_id"`, `"seq"`), and on its `ok`
//! completion the node that acknowledged it and whether the answer said the
//! write was committed (`"node"`, `"committed"`). A lost element is **lost
//! by design**, and does not make the set invalid, only if all of these
//! hold:
//!
//! * its add asked for `"durability": "leader"`, and its `ok` answer said
//!   `"committed": false`;
//! * it is absent from *every* final read (an element some final reads
//!   have and others lack was not rolled back: the nodes disagree);
//! * a rollback record on some node holds the write: its `kv_key`, from its
//!   session `(client_id, seq)`.
//!
//! Every other lost element is a violation exactly as before: an add at
//! `majority` or `all` durability, or one answered as committed, is never
//! excused, whatever the records say; nor is a leader-durable one that no
//! record explains (it vanished without a trace). Each lost element is
//! listed in [`SetKeyResult::lost_writes`] with where it was found, and
//! [`SetResult::lost_writes`] sums them up in one sentence. Both appear only
//! when there is something to say: records were given, or some add was
//! leader-durable; a history from before leader durability is reported
//! exactly as it was.
//!
//! Elements are compared as JSON values, through a canonical text form
//! (object members sorted), so `1`, `1.0` and `"1"` are different elements.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use serde_json::Value;

use super::Verdict;
use crate::history::{Event, Function, Op, Outcome};
use crate::json::Json;
use crate::rollback::{Found, Rollbacks};

/// The result of the set check, over every set in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetResult {
    /// Every set's verdict combined with [`Verdict::all`].
    pub verdict: Verdict,
    /// One result per set, in order of each set's first operation.
    pub sets: Vec<SetKeyResult>,
    /// The lost acknowledged writes of every set, matched to rollback
    /// records; present only if records were given or some add was
    /// leader-durable (see the [module docs](self#lost-by-design-leader-durability-and-rollback-records)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_writes: Option<LostWrites>,
}

/// The lost acknowledged writes of a whole history, and whether each was
/// lost by design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostWrites {
    /// Acknowledged elements missing from a final read, over every set.
    pub lost: usize,
    /// Of those, the ones acknowledged at leader durability (asked for
    /// `leader`, answered `committed: false`).
    pub leader_durable: usize,
    /// Of those lost, the ones a rollback record holds (at any durability).
    pub matched: usize,
    /// Of those lost, the ones lost by design: leader-durable, absent from
    /// every final read, and matched.
    pub by_design: usize,
    /// The nodes whose records hold a lost write, ascending.
    pub nodes: Vec<u64>,
    /// Whether rollback records were given at all.
    pub records_given: bool,
    /// Rollback records given, over every node.
    pub records: usize,
    /// The verdict on the lost writes, in one sentence.
    pub explanation: String,
}

/// One lost acknowledged element, with what the history and the rollback
/// records say about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostWrite {
    /// The element.
    pub element: Json,
    /// The durability its add asked for (`None`: not recorded, which is
    /// `majority`).
    pub durability: Option<String>,
    /// What its `ok` answer said (`None`: not recorded, which is committed).
    pub committed: Option<bool>,
    /// The node that acknowledged it, as recorded.
    pub node: Option<Value>,
    /// The key it wrote in the store.
    pub kv_key: Option<String>,
    /// Its client session id.
    pub client_id: Option<u64>,
    /// Its sequence number in the session.
    pub seq: Option<u64>,
    /// Every rollback record that holds it.
    pub found: Vec<Found>,
    /// Why it is lost: `by design` (excused), `committed` (acknowledged at
    /// majority or all durability, or answered as committed), `no record`
    /// (leader-durable, but no rollback record holds it), or `nodes
    /// disagree` (some final read has it).
    pub reason: String,
}

/// What a lost element is, in [`LostWrite::reason`].
const BY_DESIGN: &str = "by design";

/// The result for one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetKeyResult {
    /// The set's key, as written.
    pub key: Json,
    /// Invalid, unknown (no final read) or valid, as in the module docs.
    pub verdict: Verdict,
    /// Elements whose add was invoked.
    pub attempted: usize,
    /// Adds that completed `ok`.
    pub acknowledged: usize,
    /// Adds that completed `fail`.
    pub failed: usize,
    /// Adds whose outcome is unknown (`info`, or no completion).
    pub indeterminate: usize,
    /// `ok` reads of the set.
    pub reads: usize,
    /// Of those, the final reads.
    pub final_reads: usize,
    /// Acknowledged elements missing from at least one final read.
    pub lost: Elements,
    /// Elements that appear more than once in one read.
    pub duplicated: Elements,
    /// Elements read that no add ever attempted.
    pub unexpected: Elements,
    /// Elements read although their add certainly failed.
    pub failed_but_present: Elements,
    /// Indeterminate elements found in a final read: they did take effect.
    /// Not a violation.
    pub recovered: Elements,
    /// Of the lost elements, those lost by design (see the [module
    /// docs](self#lost-by-design-leader-durability-and-rollback-records)):
    /// not a violation. Left out when none.
    #[serde(default, skip_serializing_if = "Elements::is_empty")]
    pub lost_by_design: Elements,
    /// Every lost element with what is known of it; left out when empty,
    /// and empty unless records were given or some add was leader-durable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_writes: Vec<LostWrite>,
}

/// A list of elements and its length (the length alone is what a summary
/// shows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Elements {
    /// How many.
    pub count: usize,
    /// Which, in order of first add (or first read, for unexpected ones),
    /// as written.
    pub elements: Vec<Json>,
}

impl Elements {
    fn from_values(elements: Vec<Json>) -> Self {
        Elements { count: elements.len(), elements }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A history the set checker cannot judge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// One element was added twice to one set: elements must be unique, or
    /// a duplicate in a read could not be told from a second add.
    #[error("operations invoked at events {first} and {second} both add {element} to set {key}")]
    DuplicateAdd {
        /// The set.
        key: Json,
        /// The element.
        element: Json,
        /// The first add's invocation position.
        first: usize,
        /// The second add's invocation position.
        second: usize,
    },
    /// An `ok` read of a set returned something other than an array or
    /// `null`.
    #[error("read invoked at event {index}: a set read must return an array, not {value}")]
    MalformedRead {
        /// The read's invocation position.
        index: usize,
        /// The value read.
        value: Json,
    },
    /// An operation on a set other than `add` or `read`.
    #[error("operation invoked at event {index}: the set checker knows add and read, not {f}")]
    UnsupportedFunction {
        /// The operation's invocation position.
        index: usize,
        /// Its function.
        f: Function,
    },
}

/// The function name of an add.
pub const ADD: &str = "add";

/// Whether `op` adds to a set.
pub fn is_add(op: &Op) -> bool {
    op.f.as_str() == ADD
}

/// The extra fields of an add that say how it was written and answered
/// (see the [module docs](self#lost-by-design-leader-durability-and-rollback-records)).
pub mod fields {
    /// On the invocation: the durability asked for (`leader`, `majority`,
    /// `all`; absent is `majority`).
    pub const DURABILITY: &str = "durability";
    /// On the invocation: the key written in the store.
    pub const KV_KEY: &str = "kv_key";
    /// On the invocation: the client's session id.
    pub const CLIENT_ID: &str = "client_id";
    /// On the invocation: the write's sequence number in the session.
    pub const SEQ: &str = "seq";
    /// On an `ok` completion: the node that acknowledged the write.
    pub const NODE: &str = "node";
    /// On an `ok` completion: whether the answer said the write was
    /// committed (absent is committed).
    pub const COMMITTED: &str = "committed";
    /// The durability whose acknowledged writes may be lost by design.
    pub const LEADER: &str = "leader";
}

/// Whether `op` is an `ok` write acknowledged at leader durability: it
/// asked for `"durability": "leader"` and was answered `"committed": false`.
/// `events` is the history `op` was paired from.
pub fn leader_durable(op: &Op, events: &[Event]) -> bool {
    op.outcome == Outcome::Ok
        && op.field(events, fields::DURABILITY).and_then(Value::as_str) == Some(fields::LEADER)
        && op.field(events, fields::COMMITTED).and_then(Value::as_bool) == Some(false)
}

/// Checks every set in the history: each key with at least one `add`.
/// Operations on other keys are ignored. Without the events the operations
/// were paired from, and without rollback records, no lost element is
/// excused: see [`check_with`].
///
/// # Errors
/// A [`SetError`] for a history the checker cannot judge. A history that
/// merely lost elements is an `Ok` result with [`Verdict::Invalid`].
pub fn check(ops: &[Op]) -> Result<SetResult, SetError> {
    check_with(ops, &[], None)
}

/// As [`check`], reading each add's extra fields from `events` (the history
/// `ops` were paired from) and matching lost elements to `rollbacks`, so
/// that lost leader-durable writes can be excused as the [module
/// docs](self#lost-by-design-leader-durability-and-rollback-records) say.
///
/// # Errors
/// As [`check`].
pub fn check_with(
    ops: &[Op],
    events: &[Event],
    rollbacks: Option<&Rollbacks>,
) -> Result<SetResult, SetError> {
    // Each set's operations by canonical key, sets in order of first
    // operation, operations in order of invocation.
    let set_keys: HashSet<String> = ops.iter().filter(|op| is_add(op)).map(|op| op.key.canonical()).collect();
    let mut order: Vec<String> = Vec::new();
    let mut parts: HashMap<String, Vec<&Op>> = HashMap::new();
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|op| op.invoke_index);
    for op in sorted {
        let key = op.key.canonical();
        if !set_keys.contains(&key) {
            continue;
        }
        parts
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(op);
    }
    let detail = rollbacks.is_some() || ops.iter().any(|op| is_add(op) && leader_durable(op, events));
    let evidence = Evidence { events, rollbacks, detail };
    let sets = order.iter().map(|k| check_set(&parts[k], &evidence)).collect::<Result<Vec<_>, _>>()?;
    let verdict = Verdict::all(sets.iter().map(|s| s.verdict));
    let lost_writes = detail.then(|| summarize_lost(&sets, rollbacks));
    Ok(SetResult { verdict, sets, lost_writes })
}

/// What the set checker may consult besides the operations.
struct Evidence<'a> {
    /// The history, for the operations' extra fields.
    events: &'a [Event],
    /// The rollback records, if given.
    rollbacks: Option<&'a Rollbacks>,
    /// Whether to describe each lost element.
    detail: bool,
}

/// Sums up the lost writes of every set, and says what they mean.
fn summarize_lost(sets: &[SetKeyResult], rollbacks: Option<&Rollbacks>) -> LostWrites {
    let writes: Vec<&LostWrite> = sets.iter().flat_map(|s| &s.lost_writes).collect();
    let lost = writes.len();
    let leader_durable = writes
        .iter()
        .filter(|w| w.durability.as_deref() == Some(fields::LEADER) && w.committed == Some(false))
        .count();
    let matched = writes.iter().filter(|w| !w.found.is_empty()).count();
    let by_design = writes.iter().filter(|w| w.reason == BY_DESIGN).count();
    let mut nodes: Vec<u64> = writes.iter().flat_map(|w| w.found.iter().map(|f| f.node)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let on_nodes = match nodes.as_slice() {
        [] => String::new(),
        [one] => format!(" on node {one}"),
        many => {
            let names: Vec<String> = many.iter().map(u64::to_string).collect();
            format!(" on nodes {}", names.join(", "))
        }
    };
    let writes_n = |n: usize| {
        if n == 1 {
            format!("{n} lost acknowledged write")
        } else {
            format!("{n} lost acknowledged writes")
        }
    };
    let explanation = if lost == 0 {
        "no acknowledged write was lost".to_string()
    } else if by_design == lost {
        let all = if lost == 1 { "it was".to_string() } else { format!("all {lost} were") };
        format!(
            "{}: {all} acknowledged at leader durability (not committed) and matched to rollback \
             records{on_nodes}: lost by design, and for that reason only not a violation",
            writes_n(lost)
        )
    } else {
        let mut why: Vec<String> = Vec::new();
        for (reason, what) in [
            ("committed", "acknowledged as committed (majority or all durability)"),
            ("no record", "leader-durable but in no rollback record"),
            ("nodes disagree", "missing from some final reads and present in others"),
        ] {
            let n = writes.iter().filter(|w| w.reason == reason).count();
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        let records = if rollbacks.is_some() { "" } else { "; no rollback records were given" };
        format!(
            "{}, {} of them not explained: {}{records}; {by_design} lost by design{}",
            writes_n(lost),
            lost - by_design,
            why.join(", "),
            if by_design > 0 { format!(" (matched{on_nodes})") } else { String::new() }
        )
    };
    LostWrites {
        lost,
        leader_durable,
        matched,
        by_design,
        nodes,
        records_given: rollbacks.is_some(),
        records: rollbacks.map_or(0, Rollbacks::record_count),
        explanation,
    }
}

/// What an element's add said.
struct Attempt<'a> {
    element: Json,
    /// `element` in canonical form, the key of `by_element`.
    canonical: String,
    outcome: Outcome,
    /// The add's invocation position.
    invoke_index: usize,
    /// The add itself.
    op: &'a Op,
}

/// Checks one set's operations, sorted by invocation.
fn check_set(ops: &[&Op], evidence: &Evidence<'_>) -> Result<SetKeyResult, SetError> {
    let key = ops[0].key.clone();
    // Canonical element -> position in `attempts`.
    let mut by_element: HashMap<String, usize> = HashMap::new();
    let mut attempts: Vec<Attempt> = Vec::new();
    // A read invoked after this position is final.
    let mut settled_at = 0;
    let mut reads: Vec<&Op> = Vec::new();
    for &op in ops {
        match op.f.as_str() {
            ADD => {
                let element = op.value.canonical();
                if let Some(&i) = by_element.get(&element) {
                    return Err(SetError::DuplicateAdd {
                        key,
                        element: op.value.clone(),
                        first: attempts[i].invoke_index,
                        second: op.invoke_index,
                    });
                }
                by_element.insert(element.clone(), attempts.len());
                attempts.push(Attempt {
                    element: op.value.clone(),
                    canonical: element,
                    outcome: op.outcome,
                    invoke_index: op.invoke_index,
                    op,
                });
                settled_at = settled_at.max(op.invoke_index);
                if op.outcome != Outcome::Info {
                    settled_at = settled_at.max(op.complete_index.unwrap_or(op.invoke_index));
                }
            }
            "read" => {
                if op.outcome == Outcome::Ok {
                    reads.push(op);
                }
            }
            _ => return Err(SetError::UnsupportedFunction { index: op.invoke_index, f: op.f.clone() }),
        }
    }

    let mut duplicated: Vec<Json> = Vec::new();
    let mut unexpected: Vec<Json> = Vec::new();
    let mut seen_dup: HashSet<String> = HashSet::new();
    let mut seen_unexpected: HashSet<String> = HashSet::new();
    // Per attempt: present in some read; missing from some final read;
    // present in some final read.
    let mut in_any_read = vec![false; attempts.len()];
    let mut missing_from_final = vec![false; attempts.len()];
    let mut in_final = vec![false; attempts.len()];
    let mut final_reads = 0;

    for read in &reads {
        let items: Vec<Json> = match read.value.elements() {
            Some(items) => items,
            None if read.value.is_null() => Vec::new(),
            None => {
                return Err(SetError::MalformedRead { index: read.invoke_index, value: read.value.clone() })
            }
        };
        let is_final = read.invoke_index > settled_at;
        final_reads += usize::from(is_final);
        let mut here: HashSet<String> = HashSet::new();
        for item in items {
            let c = item.canonical();
            if !here.insert(c.clone()) && seen_dup.insert(c.clone()) {
                duplicated.push(item.clone());
            }
            match by_element.get(&c) {
                Some(&i) => {
                    in_any_read[i] = true;
                    in_final[i] |= is_final;
                }
                None => {
                    if seen_unexpected.insert(c) {
                        unexpected.push(item.clone());
                    }
                }
            }
        }
        if is_final {
            for (i, a) in attempts.iter().enumerate() {
                if a.outcome == Outcome::Ok && !here.contains(&a.canonical) {
                    missing_from_final[i] = true;
                }
            }
        }
    }

    let pick = |keep: &dyn Fn(usize, &Attempt) -> bool| {
        Elements::from_values(
            attempts
                .iter()
                .enumerate()
                .filter(|&(i, a)| keep(i, a))
                .map(|(_, a)| a.element.clone())
                .collect(),
        )
    };
    let lost = pick(&|i, a| a.outcome == Outcome::Ok && missing_from_final[i]);
    let failed_but_present = pick(&|i, a| a.outcome == Outcome::Fail && in_any_read[i]);
    let recovered = pick(&|i, a| a.outcome == Outcome::Info && in_final[i]);
    let count = |o: Outcome| attempts.iter().filter(|a| a.outcome == o).count();
    let duplicated = Elements::from_values(duplicated);
    let unexpected = Elements::from_values(unexpected);

    let lost_writes: Vec<LostWrite> = if evidence.detail {
        attempts
            .iter()
            .enumerate()
            .filter(|&(i, a)| a.outcome == Outcome::Ok && missing_from_final[i])
            .map(|(i, a)| describe_lost(a, in_final[i], evidence))
            .collect()
    } else {
        Vec::new()
    };
    let lost_by_design = Elements::from_values(
        lost_writes.iter().filter(|w| w.reason == BY_DESIGN).map(|w| w.element.clone()).collect(),
    );

    // Lost by design is not a violation; every other lost element is.
    let unexplained = lost.count - lost_by_design.count;
    let broken = unexplained + duplicated.count + unexpected.count + failed_but_present.count > 0;
    let verdict = if broken {
        Verdict::Invalid
    } else if final_reads == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    tracing::debug!(key = %key, ?verdict, lost = lost.count, "checked set");
    Ok(SetKeyResult {
        key,
        verdict,
        attempted: attempts.len(),
        acknowledged: count(Outcome::Ok),
        failed: count(Outcome::Fail),
        indeterminate: count(Outcome::Info),
        reads: reads.len(),
        final_reads,
        lost,
        duplicated,
        unexpected,
        failed_but_present,
        recovered,
        lost_by_design,
        lost_writes,
    })
}

/// What the history and the records say about one lost element; `in_final`
/// is whether some final read has it.
fn describe_lost(a: &Attempt<'_>, in_final: bool, evidence: &Evidence<'_>) -> LostWrite {
    let field = |name: &str| a.op.field(evidence.events, name);
    let kv_key = field(fields::KV_KEY).and_then(Value::as_str).map(str::to_owned);
    let client_id = field(fields::CLIENT_ID).and_then(Value::as_u64);
    let seq = field(fields::SEQ).and_then(Value::as_u64);
    let found = match (evidence.rollbacks, &kv_key, client_id, seq) {
        (Some(r), Some(key), Some(client_id), Some(seq)) => r.find(key, client_id, seq),
        _ => Vec::new(),
    };
    let reason = if !leader_durable(a.op, evidence.events) {
        "committed"
    } else if in_final {
        "nodes disagree"
    } else if found.is_empty() {
        "no record"
    } else {
        BY_DESIGN
    };
    LostWrite {
        element: a.element.clone(),
        durability: field(fields::DURABILITY).and_then(Value::as_str).map(str::to_owned),
        committed: field(fields::COMMITTED).and_then(Value::as_bool),
        node: field(fields::NODE).cloned(),
        kv_key,
        client_id,
        seq,
        found,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::{pair, parse_history};

    fn check_text(text: &str) -> SetResult {
        check(&pair(&parse_history(text).unwrap()).unwrap()).unwrap()
    }

    /// Adds 1 (ok), 2 (fail), 3 (info) to set "s", then the given final
    /// reads, each by its own process.
    fn history_with_final_reads(reads: &[&str]) -> String {
        let mut text = String::from(
            r#"{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1}
{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":2}
{"process":1,"type":"invoke","f":"add","key":"s","value":2,"time":3}
{"process":1,"type":"fail","f":"add","key":"s","value":2,"time":4}
{"process":2,"type":"invoke","f":"add","key":"s","value":3,"time":5}
{"process":2,"type":"info","f":"add","key":"s","value":3,"time":6}
"#,
        );
        push_final_reads(&mut text, reads);
        text
    }

    /// Appends one read of set "s" per entry of `reads`, each by its own
    /// process, after everything before it: final reads.
    fn push_final_reads(text: &mut String, reads: &[&str]) {
        for (i, read) in reads.iter().enumerate() {
            let p = 10 + i;
            text.push_str(&format!(
                "{{\"process\":{p},\"type\":\"invoke\",\"f\":\"read\",\"key\":\"s\",\"time\":{}}}\n\
                 {{\"process\":{p},\"type\":\"ok\",\"f\":\"read\",\"key\":\"s\",\"value\":{read},\"time\":{}}}\n",
                100 + i,
                200 + i
            ));
        }
    }

    #[test]
    fn every_acknowledged_element_once_is_valid_with_or_without_info_ones() {
        let result = check_text(&history_with_final_reads(&["[1]", "[3,1]"]));
        assert_eq!(result.verdict, Verdict::Valid);
        let s = &result.sets[0];
        assert_eq!((s.attempted, s.acknowledged, s.failed, s.indeterminate), (3, 1, 1, 1));
        assert_eq!((s.reads, s.final_reads), (2, 2));
        assert_eq!(s.recovered.elements, [json!(3)]);
        assert_eq!(s.lost.count, 0);
    }

    #[test]
    fn acknowledged_element_missing_from_one_final_read_is_lost() {
        let result = check_text(&history_with_final_reads(&["[1]", "[]"]));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].lost, Elements { count: 1, elements: vec![json!(1).into()] });
    }

    #[test]
    fn element_read_twice_is_duplicated() {
        let result = check_text(&history_with_final_reads(&["[1,1]"]));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].duplicated.elements, [json!(1)]);
    }

    #[test]
    fn element_never_added_is_unexpected() {
        let result = check_text(&history_with_final_reads(&["[1,\"1\"]"]));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].unexpected.elements, [json!("1")]);
    }

    #[test]
    fn failed_element_present_is_invalid() {
        let result = check_text(&history_with_final_reads(&["[1,2]"]));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].failed_but_present.elements, [json!(2)]);
    }

    #[test]
    fn without_a_final_read_the_set_is_unknown() {
        let result = check_text(&history_with_final_reads(&[]));
        assert_eq!(result.verdict, Verdict::Unknown);
    }

    #[test]
    fn read_concurrent_with_an_add_is_not_final_and_may_miss_it() {
        let result = check_text(
            r#"{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1}
{"process":1,"type":"invoke","f":"read","key":"s","time":2}
{"process":1,"type":"ok","f":"read","key":"s","value":null,"time":3}
{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":4}
{"process":1,"type":"invoke","f":"read","key":"s","time":5}
{"process":1,"type":"ok","f":"read","key":"s","value":[1],"time":6}"#,
        );
        assert_eq!(result.verdict, Verdict::Valid);
        assert_eq!((result.sets[0].reads, result.sets[0].final_reads), (2, 1));
    }

    #[test]
    fn sets_are_checked_independently_and_other_keys_ignored() {
        let result = check_text(
            r#"{"process":0,"type":"invoke","f":"add","key":"a","value":1,"time":1}
{"process":0,"type":"ok","f":"add","key":"a","value":1,"time":2}
{"process":0,"type":"invoke","f":"add","key":"b","value":1,"time":3}
{"process":0,"type":"ok","f":"add","key":"b","value":1,"time":4}
{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":5}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":6}
{"process":0,"type":"invoke","f":"read","key":"a","time":7}
{"process":0,"type":"ok","f":"read","key":"a","value":[1],"time":8}
{"process":0,"type":"invoke","f":"read","key":"b","time":9}
{"process":0,"type":"ok","f":"read","key":"b","value":[],"time":10}"#,
        );
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets.len(), 2);
        assert_eq!(
            (result.sets[0].key.value().clone(), result.sets[0].verdict),
            (json!("a"), Verdict::Valid)
        );
        assert_eq!(
            (result.sets[1].key.value().clone(), result.sets[1].verdict),
            (json!("b"), Verdict::Invalid)
        );
    }

    /// Element 1 added to set "s" at `durability` and answered with
    /// `committed`, element 2 added at majority durability; then one final
    /// read per entry of `reads`.
    fn durable_history(durability: &str, committed: bool, reads: &[&str]) -> String {
        let mut text = format!(
            r#"{{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1,"durability":"{durability}","kv_key":"set/s/1","client_id":7,"seq":3}}
{{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":2,"node":2,"committed":{committed}}}
{{"process":0,"type":"invoke","f":"add","key":"s","value":2,"time":3,"durability":"majority","kv_key":"set/s/2","client_id":7,"seq":4}}
{{"process":0,"type":"ok","f":"add","key":"s","value":2,"time":4,"node":2,"committed":true}}
"#
        );
        push_final_reads(&mut text, reads);
        text
    }

    /// Node 2's record of removing `key` written by session (7, `seq`).
    fn records(key: &str, seq: u64) -> Rollbacks {
        serde_json::from_value(json!({"nodes": [
            {"node": 1, "records": []},
            {"node": 2, "records": [{"node": 2, "id": 1, "term": 5, "entries": [
                {"term": 4, "index": 30, "kind": "writes", "acknowledged": true,
                 "writes": [{"op": "put", "key": key, "client_id": 7, "seq": seq}]}]}]}]}))
        .unwrap()
    }

    fn check_records(text: &str, rollbacks: Option<&Rollbacks>) -> SetResult {
        let events = parse_history(text).unwrap();
        check_with(&pair(&events).unwrap(), &events, rollbacks).unwrap()
    }

    #[test]
    fn lost_leader_durable_write_held_by_a_rollback_record_is_lost_by_design() {
        let result =
            check_records(&durable_history("leader", false, &["[2]", "[2]"]), Some(&records("set/s/1", 3)));
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        let s = &result.sets[0];
        assert_eq!((s.lost.count, s.lost_by_design.elements.clone()), (1, vec![json!(1).into()]));
        assert_eq!(s.lost_writes[0].reason, BY_DESIGN);
        assert_eq!(s.lost_writes[0].found[0].node, 2);
        let summary = result.lost_writes.unwrap();
        assert_eq!((summary.lost, summary.leader_durable, summary.matched, summary.by_design), (1, 1, 1, 1));
        assert_eq!(summary.nodes, [2]);
        assert!(
            summary.explanation.starts_with("1 lost acknowledged write: it was"),
            "{}",
            summary.explanation
        );
        assert!(summary.explanation.contains("on node 2"), "{}", summary.explanation);
    }

    #[test]
    fn lost_leader_durable_write_in_no_record_is_invalid() {
        // Records were collected, and none holds the write: it vanished
        // without a trace.
        let result =
            check_records(&durable_history("leader", false, &["[2]"]), Some(&records("set/s/1", 99)));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].lost_writes[0].reason, "no record");
        assert!(result.sets[0].lost_by_design.is_empty());
        // No records file at all: the same.
        let result = check_records(&durable_history("leader", false, &["[2]"]), None);
        assert_eq!(result.verdict, Verdict::Invalid);
        let summary = result.lost_writes.unwrap();
        assert_eq!((summary.by_design, summary.records_given), (0, false));
        assert!(summary.explanation.contains("no rollback records were given"), "{}", summary.explanation);
        // A record of the same session's write to another key is not it.
        let result = check_records(&durable_history("leader", false, &["[2]"]), Some(&records("set/s/9", 3)));
        assert_eq!(result.verdict, Verdict::Invalid);
    }

    #[test]
    fn lost_majority_write_is_invalid_even_with_a_rollback_record() {
        // A write acknowledged as committed must survive: a record of it
        // explains nothing.
        let result =
            check_records(&durable_history("majority", true, &["[2]"]), Some(&records("set/s/1", 3)));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].lost_writes[0].reason, "committed");
        assert_eq!(result.sets[0].lost_writes[0].found.len(), 1, "matched, and still not excused");
        // Asked for leader durability but answered as committed: the same.
        let result = check_records(&durable_history("leader", true, &["[2]"]), Some(&records("set/s/1", 3)));
        assert_eq!(result.verdict, Verdict::Invalid);
        // And a leader-durable history lost its majority write: invalid.
        let result = check_records(&durable_history("leader", false, &["[1]"]), Some(&records("set/s/1", 3)));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].lost.elements, [json!(2)]);
    }

    #[test]
    fn leader_durable_element_some_final_reads_have_is_not_excused() {
        let result =
            check_records(&durable_history("leader", false, &["[1,2]", "[2]"]), Some(&records("set/s/1", 3)));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.sets[0].lost_writes[0].reason, "nodes disagree");
    }

    #[test]
    fn without_leader_durable_adds_or_records_the_report_is_as_before() {
        let result = check_records(&durable_history("majority", true, &["[1,2]"]), None);
        assert_eq!(result.verdict, Verdict::Valid);
        assert!(result.lost_writes.is_none());
        let json = serde_json::to_value(&result).unwrap();
        assert!(json.get("lost_writes").is_none() && json["sets"][0].get("lost_writes").is_none(), "{json}");
        assert!(json["sets"][0].get("lost_by_design").is_none(), "{json}");
    }

    #[test]
    fn adding_one_element_twice_is_an_error() {
        let ops = pair(
            &parse_history(
                r#"{"process":0,"type":"invoke","f":"add","value":1,"time":1}
{"process":0,"type":"ok","f":"add","value":1,"time":2}
{"process":0,"type":"invoke","f":"add","value":1,"time":3}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(check(&ops), Err(SetError::DuplicateAdd { first: 0, second: 2, .. })));
    }

    #[test]
    fn non_array_read_and_foreign_function_are_errors() {
        let bad_read = pair(
            &parse_history(
                r#"{"process":0,"type":"invoke","f":"add","value":1,"time":1}
{"process":0,"type":"ok","f":"add","value":1,"time":2}
{"process":0,"type":"invoke","f":"read","time":3}
{"process":0,"type":"ok","f":"read","value":1,"time":4}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(check(&bad_read), Err(SetError::MalformedRead { index: 2, .. })));
        let write = pair(
            &parse_history(
                r#"{"process":0,"type":"invoke","f":"add","value":1,"time":1}
{"process":1,"type":"invoke","f":"write","value":1,"time":2}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(check(&write), Err(SetError::UnsupportedFunction { index: 1, .. })));
    }
}
