//! The watch workload: every committed change is delivered to every watcher
//! once, in log order, with the right before-image, and nothing else is.
//!
//! # The workload
//!
//! Writers put unique values to keys under a prefix, and sometimes delete
//! a key; watchers on random nodes follow the prefix, and each reconnects
//! (to any node) from the index after the last one it was sure of. In the
//! history, a writer's operations are ordinary writes and deletes, each
//! `ok` one carrying the log `index` it was committed at (and a delete
//! whether the key `existed`: deleting an absent key changes nothing and
//! has no event; and `"duplicate": true` for the answer to a retry of a
//! write that had already applied, whose `index` is the retry's, later
//! than the write's own); a watcher's
//! connection is one `watch` operation whose key is the prefix:
//!
//! ```text
//! {"process":0,"type":"invoke","f":"write","key":"w/3","value":17}
//! {"process":0,"type":"ok","f":"write","key":"w/3","value":17,"index":41}
//! {"process":1,"type":"invoke","f":"delete","key":"w/3","value":null}
//! {"process":1,"type":"ok","f":"delete","key":"w/3","value":null,"index":44,"existed":true}
//! {"process":9,"type":"invoke","f":"watch","key":"w/","value":{"from_index":1},"node":2}
//! {"process":9,"type":"info","f":"watch","key":"w/","value":{"from_index":1,"through":44,
//!   "events":[{"index":41,"op":"put","key":"w/3","value":17,"prev_value":null},
//!             {"index":44,"op":"delete","key":"w/3","value":null,"prev_value":17}]}}
//! {"process":5,"type":"invoke","f":"read","key":"w/3","value":null}
//! {"process":5,"type":"ok","f":"read","key":"w/3","value":null,"index":44}
//! ```
//!
//! A `watch` completion's value holds what the connection delivered:
//! `events`, in the order received, and `through`, the index through which
//! the stream said it was complete (its last progress line or its last
//! whole index; absent means the last event's index). A connection that
//! ended with an error or a cut-off is `info`, like one that ended cleanly:
//! what it delivered is judged either way. Values are compared as JSON
//! values ([`crate::json`]), so writers' values must be unique.
//!
//! # What is checked
//!
//! The checker first rebuilds the committed sequence of changes, the
//! *canonical* list of events at each index, from every connection that
//! covered that index (it ran from its `from_index` through its `through`).
//! Then, as violations:
//!
//! * **reordered**: a connection delivered a lower index after a higher one;
//! * **before from_index**: an event older than the index asked for (a
//!   resumed watcher would see it twice);
//! * **outside prefix**: an event for a key the watch did not ask for;
//! * **unreadable**: a line the watcher could not parse (recorded as
//!   `{"unreadable": line, "error": why}` among the events);
//! * **repeated**: one watcher (process) was delivered the same index by
//!   two connections (a resume that went back), or the same event twice;
//! * **gap**: a watcher's next connection started past the index after the
//!   previous one's `through` (its client resumed from the wrong place);
//! * **disagree**: two connections that both covered an index delivered
//!   different events for it;
//! * **missing**: a connection covered an index but delivered fewer events
//!   for it than another connection did, or lacks an acknowledged write
//!   committed at that index;
//! * **never written**: a `put` event whose value no write sent to that
//!   key, a `delete` event with no delete of that key, an `expire` event
//!   (this workload attaches no leases), or an event for a write or delete
//!   that certainly failed;
//! * **wrong index**: an event for an acknowledged write or delete at
//!   another index than its acknowledgement named, or one write's event at
//!   two indices (it was applied twice);
//! * **before-image**: a `prev_value` that is not the key's value before
//!   the change, judged wherever the canonical sequence is known without a
//!   hole since the key's previous change (or since index 1);
//! * **read disagrees**: an `ok` read that carries the `index` it was
//!   served at, of a key under a watched prefix, returned another value
//!   than the canonical sequence gives at that index (judged where the
//!   sequence is known without a hole from index 1 through it).
//!
//! The verdict is **invalid** with any violation; **unknown** if no
//! connection covered any index (nothing was shown); **valid** otherwise.
//! The negative control that shows the checker can fail is a server that
//! resumes a watcher from its own latest index instead of the one asked
//! for: its events then start after `from_index`, and every change in
//! between is **missing** from that connection.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Verdict;
use crate::history::{Event, Function, Op, Outcome};
use crate::json::Json;

/// The function name of a watcher's connection.
pub const WATCH: &str = "watch";
/// The function name of a writer's delete.
pub const DELETE: &str = "delete";

/// How many violations the result lists in full; the counts cover all.
const LISTED: usize = 50;

/// Whether `op` is a watcher's connection.
pub fn is_watch(op: &Op) -> bool {
    op.f.as_str() == WATCH
}

/// The result of the watch check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchResult {
    /// Invalid, unknown or valid, as the [module docs](self) say.
    pub verdict: Verdict,
    /// Watch connections (operations).
    pub connections: usize,
    /// Events delivered, over every connection.
    pub events: usize,
    /// Indices with at least one change in the canonical sequence.
    pub indices_with_changes: usize,
    /// The highest index some connection covered.
    pub covered_through: u64,
    /// Acknowledged writes and deletes whose index some connection covered:
    /// each was checked to be delivered there.
    pub acknowledged_checked: usize,
    /// Reads checked against the canonical sequence.
    pub reads_checked: usize,
    /// Events whose before-image was checked.
    pub before_images_checked: usize,
    /// Violations by kind (`missing`, `reordered`, ...).
    pub violation_counts: BTreeMap<String, usize>,
    /// The first violations, in the order found.
    pub violations: Vec<Violation>,
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// Its kind, as the module docs name it: `missing`, `reordered`, ...
    pub kind: String,
    /// The watcher process, if the violation is one connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Json>,
    /// The log index it concerns.
    pub index: u64,
    /// What was wrong, in words.
    pub detail: String,
}

/// A history the watch checker cannot judge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A `watch` invocation without a `from_index` of at least 1.
    #[error("watch invoked at event {index}: its value needs a \"from_index\" of at least 1, not {value}")]
    MalformedWatch {
        /// The invocation's position.
        index: usize,
        /// Its value.
        value: Json,
    },
    /// A `watch` completion whose events are not a list of events with an
    /// index, an op and a key.
    #[error("watch completed at event {index}: {problem}")]
    MalformedEvents {
        /// The completion's position.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// Two writes sent one value, so an event could not name its write.
    #[error("writes invoked at events {first} and {second} both send {value}: values must be unique")]
    DuplicateValue {
        /// The value.
        value: Json,
        /// The first write's invocation position.
        first: usize,
        /// The second's.
        second: usize,
    },
}

/// One change as a connection delivered it.
#[derive(Debug, Clone)]
struct Change {
    index: u64,
    op: String,
    key: String,
    /// Canonical text of the value (`null` for a delete or expire).
    value: String,
    /// Canonical text of the before-image, if the watch asked for it.
    prev: Option<String>,
    /// The event as written, for messages.
    shown: Value,
}

impl Change {
    fn same(&self, other: &Change) -> bool {
        self.index == other.index
            && self.op == other.op
            && self.key == other.key
            && self.value == other.value
            && (self.prev.is_none() || other.prev.is_none() || self.prev == other.prev)
    }
}

/// One watch connection.
struct Connection {
    process: Json,
    prefix: String,
    from: u64,
    through: u64,
    changes: Vec<Change>,
    /// Lines the watcher could not read (recorded as `{"unreadable": ...}`).
    unreadable: Vec<Value>,
    invoke_index: usize,
}

/// What the history says about a value written, or a key deleted.
struct Written {
    key: String,
    outcome: Outcome,
    index: Option<u64>,
    /// For an `ok` delete: whether the key existed (`"existed"` on the
    /// completion). A delete of an absent key changes nothing, so it has
    /// no event.
    existed: Option<bool>,
    /// The answer said `"duplicate": true`: a retry of a write that had
    /// already applied, at an earlier index than the retry's `index`.
    duplicate: bool,
    invoke_index: usize,
}

fn canonical(value: &Value) -> String {
    Json::from(value.clone()).canonical()
}

fn key_text(key: &Json) -> Option<String> {
    key.as_str().map(str::to_owned)
}

struct Findings {
    counts: BTreeMap<String, usize>,
    listed: Vec<Violation>,
}

impl Findings {
    fn add(&mut self, kind: &str, process: Option<&Json>, index: u64, detail: String) {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        if self.listed.len() < LISTED {
            self.listed.push(Violation { kind: kind.to_owned(), process: process.cloned(), index, detail });
        }
    }
}

/// Checks the watch workload: every `watch` operation, against the writes,
/// deletes and reads of keys under the watched prefixes. `events` is the
/// history `ops` were paired from (the connections' deliveries and the
/// acknowledged indices are read from the completions).
///
/// # Errors
/// A [`WatchError`] for a history the checker cannot judge. A history whose
/// watchers saw something wrong is an `Ok` result with
/// [`Verdict::Invalid`].
pub fn check(ops: &[Op], events: &[Event]) -> Result<WatchResult, WatchError> {
    let mut found = Findings { counts: BTreeMap::new(), listed: Vec::new() };
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|op| op.invoke_index);

    let connections = connections(&sorted, events)?;
    let prefixes: Vec<&str> = connections.iter().map(|c| c.prefix.as_str()).collect();
    let watched = |key: &str| prefixes.iter().any(|p| key.starts_with(p));
    let (writes, deletes) = writes(&sorted, events, &watched)?;

    // Each connection on its own.
    for c in &connections {
        for line in &c.unreadable {
            found.add("unreadable", Some(&c.process), c.from, format!("the watcher could not read {line}"));
        }
        let mut last = 0;
        for (n, change) in c.changes.iter().enumerate() {
            if change.index < last {
                found.add(
                    "reordered",
                    Some(&c.process),
                    change.index,
                    format!("index {} after index {last}", change.index),
                );
            }
            last = last.max(change.index);
            if change.index < c.from {
                found.add(
                    "before from_index",
                    Some(&c.process),
                    change.index,
                    format!("asked from {}, got {}", c.from, change.shown),
                );
            }
            if !change.key.starts_with(&c.prefix) {
                found.add(
                    "outside prefix",
                    Some(&c.process),
                    change.index,
                    format!("prefix {:?}, got {}", c.prefix, change.shown),
                );
            }
            if c.changes[..n].iter().any(|earlier| earlier.same(change)) {
                found.add("repeated", Some(&c.process), change.index, format!("{} twice", change.shown));
            }
        }
    }

    // Each watcher across its connections, in invocation order.
    let mut by_process: HashMap<String, Vec<&Connection>> = HashMap::new();
    for c in &connections {
        by_process.entry(c.process.canonical()).or_default().push(c);
    }
    for list in by_process.values() {
        for pair in list.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if after.from > before.through + 1 {
                found.add(
                    "gap",
                    Some(&after.process),
                    before.through + 1,
                    format!(
                        "a connection complete through {} was followed by one from {}",
                        before.through, after.from
                    ),
                );
            }
            let seen: Vec<u64> = before.changes.iter().map(|c| c.index).collect();
            if let Some(again) =
                after.changes.iter().find(|c| seen.contains(&c.index) && c.index <= before.through)
            {
                found.add(
                    "repeated",
                    Some(&after.process),
                    again.index,
                    format!("index {} delivered again after a resume", again.index),
                );
            }
        }
    }

    // The canonical sequence: each index's events, from the connections
    // that covered it; every covering connection must agree.
    let mut canonical_at: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
    let mut covered: Vec<(u64, u64)> = Vec::new();
    for c in &connections {
        if c.through >= c.from {
            covered.push((c.from, c.through));
        }
        let mut at: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
        for change in &c.changes {
            at.entry(change.index).or_default().push(change.clone());
        }
        for (index, list) in at {
            let known = canonical_at.entry(index).or_default();
            let common = known.len().min(list.len());
            if let Some(i) = (0..common).find(|&i| !known[i].same(&list[i])) {
                found.add(
                    "disagree",
                    Some(&c.process),
                    index,
                    format!("{} where another connection saw {}", list[i].shown, known[i].shown),
                );
            } else if list.len() > known.len() {
                *known = list;
            }
        }
    }
    let covered = merge(covered);
    let covers = |index: u64| covered.iter().any(|&(a, b)| a <= index && index <= b);
    let covered_through = covered.iter().map(|&(_, b)| b).max().unwrap_or(0);

    // A covering connection must have every canonical event of the index.
    for c in &connections {
        for (&index, list) in canonical_at.range(c.from..=c.through.max(c.from)) {
            if index > c.through {
                break;
            }
            let got = c.changes.iter().filter(|x| x.index == index).count();
            if got < list.len() {
                found.add(
                    "missing",
                    Some(&c.process),
                    index,
                    format!(
                        "covered index {index} but delivered {got} of its {} events, e.g. {}",
                        list.len(),
                        list[got].shown
                    ),
                );
            }
        }
    }

    // Events against what the writers sent.
    let mut applied_at: HashMap<String, u64> = HashMap::new();
    for (&index, list) in &canonical_at {
        for change in list {
            match change.op.as_str() {
                "put" => match writes.get(&change.value) {
                    None => {
                        found.add("never written", None, index, format!("no write sent {}", change.shown))
                    }
                    Some(w) if w.key != change.key => found.add(
                        "never written",
                        None,
                        index,
                        format!("{} but that value was written to {:?}", change.shown, w.key),
                    ),
                    Some(w) if w.outcome == Outcome::Fail => found.add(
                        "never written",
                        None,
                        index,
                        format!("{} from a write that failed", change.shown),
                    ),
                    Some(w) => {
                        // A duplicate's answer names the retry's index; the
                        // write itself applied earlier.
                        if w.index.is_some_and(|i| if w.duplicate { index > i } else { index != i }) {
                            found.add(
                                "wrong index",
                                None,
                                index,
                                format!(
                                    "{} but the write was acknowledged at {}",
                                    change.shown,
                                    w.index.unwrap()
                                ),
                            );
                        }
                        if let Some(first) = applied_at.insert(change.value.clone(), index) {
                            found.add(
                                "wrong index",
                                None,
                                index,
                                format!(
                                    "{} was also delivered at index {first}: applied twice",
                                    change.shown
                                ),
                            );
                        }
                    }
                },
                "delete" => {
                    let of_key = deletes.get(&change.key).map(Vec::as_slice).unwrap_or_default();
                    let explained = of_key.iter().any(|d| match (d.outcome, d.index) {
                        (Outcome::Fail, _) => false,
                        (Outcome::Ok, Some(i)) => {
                            (if d.duplicate { index <= i } else { index == i }) && d.existed != Some(false)
                        }
                        _ => true,
                    });
                    if !explained {
                        found.add(
                            "never written",
                            None,
                            index,
                            format!("no delete explains {}", change.shown),
                        );
                    }
                }
                _ => found.add(
                    "never written",
                    None,
                    index,
                    format!("{}: this workload attaches no leases", change.shown),
                ),
            }
        }
    }

    // Acknowledged writes and deletes must be at their index.
    // The coverage that starts at index 1, with no hole: a duplicate's
    // write applied somewhere in it, before the retry's index.
    let from_start = covered.first().filter(|r| r.0 <= 1).map_or(0, |r| r.1);
    let mut acknowledged_checked = 0;
    for (value, w) in &writes {
        let judged =
            |i: u64| w.outcome == Outcome::Ok && if w.duplicate { i <= from_start } else { covers(i) };
        let Some(index) = w.index.filter(|&i| judged(i)) else { continue };
        acknowledged_checked += 1;
        let put_here = |l: &Vec<Change>| l.iter().any(|c| c.op == "put" && &c.value == value);
        let there = if w.duplicate {
            canonical_at.range(..=index).any(|(_, l)| put_here(l))
        } else {
            canonical_at.get(&index).is_some_and(put_here)
        };
        if !there {
            found.add(
                "missing",
                None,
                index,
                format!("the acknowledged write of {value} to {:?} was not delivered", w.key),
            );
        }
    }
    for (key, list) in &deletes {
        for d in list {
            // A duplicate names the retry's index, and a delete's event
            // names only its key: which earlier event was its is unknown.
            let changed = d.existed != Some(false) && !d.duplicate;
            let Some(index) = d.index.filter(|&i| d.outcome == Outcome::Ok && changed && covers(i)) else {
                continue;
            };
            acknowledged_checked += 1;
            let there =
                canonical_at.get(&index).is_some_and(|l| l.iter().any(|c| c.op == "delete" && &c.key == key));
            if !there {
                found.add(
                    "missing",
                    None,
                    index,
                    format!("the acknowledged delete of {key:?} was not delivered"),
                );
            }
        }
    }

    // Before-images and reads, replaying the canonical sequence wherever it
    // has no hole.
    let (before_images_checked, reads_checked) =
        replay(&canonical_at, &covered, &sorted, events, &watched, &mut found);

    let delivered: usize = connections.iter().map(|c| c.changes.len()).sum();
    let verdict = if !found.counts.is_empty() {
        Verdict::Invalid
    } else if covered.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(WatchResult {
        verdict,
        connections: connections.len(),
        events: delivered,
        indices_with_changes: canonical_at.values().filter(|l| !l.is_empty()).count(),
        covered_through,
        acknowledged_checked,
        reads_checked,
        before_images_checked,
        violation_counts: found.counts,
        violations: found.listed,
    })
}

/// Replays the canonical sequence through the covered ranges, checking
/// each event's before-image and each read served at a covered index.
/// Returns how many of each were checked.
fn replay(
    canonical_at: &BTreeMap<u64, Vec<Change>>,
    covered: &[(u64, u64)],
    ops: &[&Op],
    events: &[Event],
    watched: &dyn Fn(&str) -> bool,
    found: &mut Findings,
) -> (usize, usize) {
    // Reads by the index they were served at.
    let mut reads: BTreeMap<u64, Vec<(String, &Op)>> = BTreeMap::new();
    for op in ops {
        if op.f != Function::Read || op.outcome != Outcome::Ok {
            continue;
        }
        let Some(key) = key_text(&op.key).filter(|k| watched(k)) else { continue };
        let Some(index) = op.field(events, "index").and_then(Value::as_u64) else { continue };
        reads.entry(index).or_default().push((key, op));
    }

    let null = canonical(&Value::Null);
    let (mut images, mut checked_reads) = (0, 0);
    // A key's value is known exactly from index 1 on (absent keys are
    // null), or since its first change after a hole in the coverage.
    let mut state: HashMap<String, String> = HashMap::new();
    let mut from_start = false;
    let mut next = 1;
    for &(from, through) in covered {
        if from > next {
            state.clear();
            from_start = false;
        } else if from <= 1 {
            from_start = true;
        }
        let known = |state: &HashMap<String, String>, key: &str| {
            state.get(key).cloned().or_else(|| from_start.then(|| null.clone()))
        };
        let start = from.max(next);
        let mut indices: Vec<u64> = canonical_at.range(start..=through).map(|(i, _)| *i).collect();
        indices.extend(reads.range(start..=through).map(|(i, _)| *i));
        indices.sort_unstable();
        indices.dedup();
        for index in indices {
            for change in canonical_at.get(&index).map(Vec::as_slice).unwrap_or_default() {
                if let (Some(before), Some(prev)) = (known(&state, &change.key), &change.prev) {
                    images += 1;
                    if &before != prev {
                        found.add(
                            "before-image",
                            None,
                            index,
                            format!("{} but the value before was {before}", change.shown),
                        );
                    }
                }
                let after = if change.op == "put" { change.value.clone() } else { null.clone() };
                state.insert(change.key.clone(), after);
            }
            for (key, op) in reads.get(&index).map(Vec::as_slice).unwrap_or_default() {
                let Some(expected) = known(&state, key) else { continue };
                checked_reads += 1;
                if expected != op.value.canonical() {
                    found.add(
                        "read disagrees",
                        Some(op.process.as_json()),
                        index,
                        format!("read {key:?} = {} at index {index}, the changes give {expected}", op.value),
                    );
                }
            }
        }
        next = next.max(through.saturating_add(1));
    }
    (images, checked_reads)
}

/// Merges ranges into disjoint ones, ascending; adjacent ranges join.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Reads every `watch` operation.
fn connections(ops: &[&Op], events: &[Event]) -> Result<Vec<Connection>, WatchError> {
    let mut out = Vec::new();
    for op in ops.iter().filter(|op| is_watch(op)) {
        let from = op.value.get("from_index").and_then(Value::as_u64).filter(|&f| f >= 1);
        let Some(from) = from else {
            return Err(WatchError::MalformedWatch { index: op.invoke_index, value: op.value.clone() });
        };
        let prefix = key_text(&op.key).unwrap_or_default();
        let done = op.complete_index.and_then(|i| events.get(i).map(|e| (i, e)));
        let (changes, unreadable, through) = match done {
            Some((i, e)) => read_delivery(i, &e.value, from)?,
            None => (Vec::new(), Vec::new(), from - 1),
        };
        out.push(Connection {
            process: op.process.as_json().clone(),
            prefix,
            from,
            through,
            changes,
            unreadable,
            invoke_index: op.invoke_index,
        });
    }
    out.sort_by_key(|c| c.invoke_index);
    Ok(out)
}

/// A completion's `events` (the readable ones, and the lines the watcher
/// could not read) and `through`.
fn read_delivery(at: usize, value: &Value, from: u64) -> Result<(Vec<Change>, Vec<Value>, u64), WatchError> {
    let malformed = |problem: String| WatchError::MalformedEvents { index: at, problem };
    let list = match value.get("events") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(malformed(format!("\"events\" must be a list, not {other}"))),
    };
    let mut changes = Vec::with_capacity(list.len());
    let mut unreadable = Vec::new();
    for e in list {
        if e.get("unreadable").is_some() {
            unreadable.push(e.clone());
            continue;
        }
        let index = e.get("index").and_then(Value::as_u64);
        let op = e.get("op").and_then(Value::as_str);
        let key = e.get("key").and_then(Value::as_str);
        let (Some(index), Some(op), Some(key)) = (index, op, key) else {
            return Err(malformed(format!("an event needs an index, an op and a key: {e}")));
        };
        changes.push(Change {
            index,
            op: op.to_owned(),
            key: key.to_owned(),
            value: canonical(e.get("value").unwrap_or(&Value::Null)),
            prev: e.get("prev_value").map(canonical),
            shown: e.clone(),
        });
    }
    let last = changes.iter().map(|c| c.index).max().unwrap_or(from - 1);
    let through = match value.get("through") {
        None | Some(Value::Null) => last,
        Some(t) => t.as_u64().ok_or_else(|| malformed(format!("\"through\" must be an index, not {t}")))?,
    };
    Ok((changes, unreadable, through))
}

/// The writes (by canonical value) and deletes (by key) of watched keys.
#[allow(clippy::type_complexity)]
fn writes(
    ops: &[&Op],
    events: &[Event],
    watched: &dyn Fn(&str) -> bool,
) -> Result<(HashMap<String, Written>, HashMap<String, Vec<Written>>), WatchError> {
    let mut writes: HashMap<String, Written> = HashMap::new();
    let mut deletes: HashMap<String, Vec<Written>> = HashMap::new();
    for op in ops {
        let Some(key) = key_text(&op.key).filter(|k| watched(k)) else { continue };
        let index =
            if op.outcome == Outcome::Ok { op.field(events, "index").and_then(Value::as_u64) } else { None };
        let existed = op.field(events, "existed").and_then(Value::as_bool);
        let duplicate = op.field(events, "duplicate").and_then(Value::as_bool) == Some(true);
        let w =
            Written { key, outcome: op.outcome, index, existed, duplicate, invoke_index: op.invoke_index };
        if op.f == Function::Write {
            let value = op.value.canonical();
            if let Some(first) = writes.get(&value) {
                return Err(WatchError::DuplicateValue {
                    value: op.value.clone(),
                    first: first.invoke_index,
                    second: op.invoke_index,
                });
            }
            writes.insert(value, w);
        } else if op.f.as_str() == DELETE {
            deletes.entry(w.key.clone()).or_default().push(w);
        }
    }
    Ok((writes, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{pair, parse_history};

    fn run(text: &str) -> WatchResult {
        let events = parse_history(text).expect("test history parses");
        let ops = pair(&events).expect("test history pairs");
        check(&ops, &events).expect("checkable")
    }

    fn kinds(r: &WatchResult) -> Vec<&str> {
        r.violation_counts.keys().map(String::as_str).collect()
    }

    /// Two writes, a delete, a read, and two watchers: one that saw it all
    /// in one connection, one that reconnected in the middle.
    const GOOD: &str = r#"{"process":0,"type":"invoke","f":"write","key":"w/a","value":1}
{"process":0,"type":"ok","f":"write","key":"w/a","value":1,"index":3}
{"process":0,"type":"invoke","f":"write","key":"w/a","value":2}
{"process":0,"type":"ok","f":"write","key":"w/a","value":2,"index":5}
{"process":1,"type":"invoke","f":"delete","key":"w/a","value":null}
{"process":1,"type":"ok","f":"delete","key":"w/a","value":null,"index":6,"existed":true}
{"process":2,"type":"invoke","f":"read","key":"w/a","value":null}
{"process":2,"type":"ok","f":"read","key":"w/a","value":2,"index":5}
{"process":9,"type":"invoke","f":"watch","key":"w/","value":{"from_index":1}}
{"process":9,"type":"info","f":"watch","key":"w/","value":{"through":7,"events":[{"index":3,"op":"put","key":"w/a","value":1,"prev_value":null},{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},{"index":6,"op":"delete","key":"w/a","value":null,"prev_value":2}]}}
{"process":8,"type":"invoke","f":"watch","key":"w/","value":{"from_index":1}}
{"process":8,"type":"info","f":"watch","key":"w/","value":{"through":4,"events":[{"index":3,"op":"put","key":"w/a","value":1,"prev_value":null}]}}
{"process":8,"type":"invoke","f":"watch","key":"w/","value":{"from_index":5}}
{"process":8,"type":"info","f":"watch","key":"w/","value":{"events":[{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},{"index":6,"op":"delete","key":"w/a","value":null,"prev_value":2}]}}"#;

    #[test]
    fn a_complete_ordered_history_is_valid() {
        let r = run(GOOD);
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!((r.connections, r.events, r.indices_with_changes, r.covered_through), (3, 6, 3, 7));
        assert_eq!((r.acknowledged_checked, r.reads_checked, r.before_images_checked), (3, 1, 3));
    }

    #[test]
    fn no_coverage_is_unknown() {
        let r = run(r#"{"process":9,"type":"invoke","f":"watch","key":"w/","value":{"from_index":4}}"#);
        assert_eq!(r.verdict, Verdict::Unknown);
    }

    #[test]
    fn a_resume_from_the_latest_index_is_missing_events() {
        // The negative control: asked from 5, the node answered from 6.
        let bad = GOOD.replace(
            r#"{"events":[{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},{"index":6"#,
            r#"{"through":6,"events":[{"index":6"#,
        );
        let r = run(&bad);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["missing"], "{r:?}");
        assert_eq!(r.violations[0].index, 5);
    }

    #[test]
    fn a_lost_acknowledged_write_is_missing_even_if_no_watcher_saw_it() {
        let bad = GOOD.replace(r#"{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},"#, "");
        let r = run(&bad);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(kinds(&r).contains(&"missing"), "{r:?}");
    }

    #[test]
    fn reordered_repeated_and_before_from_index_are_caught() {
        let reordered = GOOD.replace(
            r#"[{"index":3,"op":"put","key":"w/a","value":1,"prev_value":null},{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},{"index":6"#,
            r#"[{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},{"index":3,"op":"put","key":"w/a","value":1,"prev_value":null},{"index":6"#,
        );
        assert!(kinds(&run(&reordered)).contains(&"reordered"));

        // Asked from 3 again, the node must deliver index 3 again: a
        // connection that skips it is missing it.
        let skipped = GOOD.replace(r#"{"from_index":5}"#, r#"{"from_index":3}"#);
        assert_eq!(kinds(&run(&skipped)), ["missing"]);

        let repeated = GOOD.replace(
            r#"{"from_index":5}}
{"process":8,"type":"info","f":"watch","key":"w/","value":{"events":["#,
            r#"{"from_index":5}}
{"process":8,"type":"info","f":"watch","key":"w/","value":{"events":[{"index":3,"op":"put","key":"w/a","value":1,"prev_value":null},"#,
        );
        let r = run(&repeated);
        assert!(kinds(&r).contains(&"before from_index") && kinds(&r).contains(&"repeated"), "{r:?}");
    }

    #[test]
    fn a_gap_between_connections_is_caught() {
        let gap = GOOD.replace(r#"{"from_index":5}"#, r#"{"from_index":6}"#).replace(
            r#"{"events":[{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},"#,
            r#"{"events":["#,
        );
        assert_eq!(kinds(&run(&gap)), ["gap"]);
    }

    #[test]
    fn disagreeing_watchers_wrong_before_images_and_unknown_values_are_caught() {
        let disagree = GOOD.replacen(r#""value":2,"prev_value":1}"#, r#""value":2,"prev_value":7}"#, 1);
        let r = run(&disagree);
        assert!(kinds(&r).contains(&"disagree") && kinds(&r).contains(&"before-image"), "{r:?}");

        let unknown = GOOD.replace(r#""value":1,"prev_value":null"#, r#""value":11,"prev_value":null"#);
        let r = run(&unknown);
        assert!(kinds(&r).contains(&"never written"), "{r:?}");

        let failed = GOOD.replace(
            r#"{"process":0,"type":"ok","f":"write","key":"w/a","value":1,"index":3}"#,
            r#"{"process":0,"type":"fail","f":"write","key":"w/a","value":1}"#,
        );
        assert!(kinds(&run(&failed)).contains(&"never written"));

        let moved = GOOD.replace(r#""value":1,"index":3}"#, r#""value":1,"index":4}"#);
        assert!(kinds(&run(&moved)).contains(&"wrong index"));

        let expire = GOOD.replace(r#""op":"delete""#, r#""op":"expire""#);
        assert!(kinds(&run(&expire)).contains(&"never written"));
    }

    #[test]
    fn a_duplicate_answer_names_the_retry_whose_write_applied_before() {
        // The write of 2 applied at 5; its retry was answered at 6 as a
        // duplicate (the delete moved to 7).
        let retried = GOOD
            .replace(r#""value":2,"index":5}"#, r#""value":2,"index":6,"duplicate":true}"#)
            .replace(r#""index":6,"existed":true}"#, r#""index":7,"existed":true}"#)
            .replace(r#"{"index":6,"op":"delete""#, r#"{"index":7,"op":"delete""#);
        let r = run(&retried);
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        // A duplicate answered before its write's event is wrong.
        let early = GOOD.replace(r#""value":2,"index":5}"#, r#""value":2,"index":4,"duplicate":true}"#);
        assert!(kinds(&run(&early)).contains(&"wrong index"));
        // And one whose write no watcher saw at all is missing.
        let lost = retried.replace(r#"{"index":5,"op":"put","key":"w/a","value":2,"prev_value":1},"#, "");
        assert!(kinds(&run(&lost)).contains(&"missing"));
    }

    #[test]
    fn a_delete_of_an_absent_key_has_no_event() {
        let absent = GOOD.replace(r#""index":6,"existed":true}"#, r#""index":6,"existed":false}"#);
        let r = run(&absent);
        assert!(kinds(&r).contains(&"never written"), "an event for a delete that changed nothing: {r:?}");
        let none =
            absent.replace(r#",{"index":6,"op":"delete","key":"w/a","value":null,"prev_value":2}"#, "");
        let r = run(&none);
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(r.acknowledged_checked, 2);
    }

    #[test]
    fn a_read_that_disagrees_with_the_changes_is_caught() {
        let stale = GOOD.replace(
            r#"{"process":2,"type":"ok","f":"read","key":"w/a","value":2,"index":5}"#,
            r#"{"process":2,"type":"ok","f":"read","key":"w/a","value":1,"index":5}"#,
        );
        let r = run(&stale);
        assert_eq!(kinds(&r), ["read disagrees"], "{r:?}");
    }

    #[test]
    fn malformed_watches_are_errors() {
        let events =
            parse_history(r#"{"process":9,"type":"invoke","f":"watch","key":"w/","value":{}}"#).unwrap();
        let ops = pair(&events).unwrap();
        assert!(matches!(check(&ops, &events), Err(WatchError::MalformedWatch { .. })));
        let events = parse_history(
            r#"{"process":9,"type":"invoke","f":"watch","key":"w/","value":{"from_index":1}}
{"process":9,"type":"ok","f":"watch","key":"w/","value":{"events":[{"op":"put"}]}}"#,
        )
        .unwrap();
        let ops = pair(&events).unwrap();
        assert!(matches!(check(&ops, &events), Err(WatchError::MalformedEvents { .. })));
    }
}
