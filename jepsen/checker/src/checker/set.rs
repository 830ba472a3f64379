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
//! The verdict is **invalid** if any element is lost, duplicated,
//! unexpected or failed-but-present; otherwise **unknown** if the set was
//! never read at the end (nothing proves the acknowledged elements
//! survived); otherwise **valid**.
//!
//! Elements are compared as JSON values, through a canonical text form
//! (object members sorted), so `1`, `1.0` and `"1"` are different elements.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::Verdict;
use crate::history::{Function, Op, Outcome};
use crate::json::Json;

/// The result of the set check, over every set in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetResult {
    /// Every set's verdict combined with [`Verdict::all`].
    pub verdict: Verdict,
    /// One result per set, in order of each set's first operation.
    pub sets: Vec<SetKeyResult>,
}

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

/// Checks every set in the history: each key with at least one `add`.
/// Operations on other keys are ignored.
///
/// # Errors
/// A [`SetError`] for a history the checker cannot judge. A history that
/// merely lost elements is an `Ok` result with [`Verdict::Invalid`].
pub fn check(ops: &[Op]) -> Result<SetResult, SetError> {
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
    let sets = order.iter().map(|k| check_set(&parts[k])).collect::<Result<Vec<_>, _>>()?;
    let verdict = Verdict::all(sets.iter().map(|s| s.verdict));
    Ok(SetResult { verdict, sets })
}

/// What an element's add said.
struct Attempt {
    element: Json,
    /// `element` in canonical form, the key of `by_element`.
    canonical: String,
    outcome: Outcome,
    /// The add's invocation position.
    invoke_index: usize,
}

/// Checks one set's operations, sorted by invocation.
fn check_set(ops: &[&Op]) -> Result<SetKeyResult, SetError> {
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

    let broken = lost.count + duplicated.count + unexpected.count + failed_but_present.count > 0;
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
    })
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
        for (i, read) in reads.iter().enumerate() {
            let p = 10 + i;
            text.push_str(&format!(
                "{{\"process\":{p},\"type\":\"invoke\",\"f\":\"read\",\"key\":\"s\",\"time\":{}}}\n\
                 {{\"process\":{p},\"type\":\"ok\",\"f\":\"read\",\"key\":\"s\",\"value\":{read},\"time\":{}}}\n",
                100 + i,
                200 + i
            ));
        }
        text
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
