//! Session guarantees: what one client sees of its own writes and reads.
//!
//! # The workload
//!
//! Clients read through followers with `session` consistency: each client
//! carries a token (the highest log index it has written or read), and a
//! node answers a session read only once it has applied that index. That is
//! cheaper than a linearizable read and promises less: not the latest value,
//! but never an older one than the client has already seen. `stale` reads
//! promise nothing but a prefix of the log, and report how far behind they
//! were.
//!
//! # Required fields
//!
//! The checker needs fields beyond the basic history format, which kv-app's
//! answers carry (`index`, `node`, `committed_index`):
//!
//! | event | field | meaning |
//! |-------|-------|---------|
//! | `ok` of a `write` or `cas` | `index` | the log index of the write |
//! | `ok` of a `read` | `index` | the applied index the value reflects |
//! | `ok` of a `read` | `node` | the node that answered (reported only) |
//! | `ok` of a stale `read` | `committed_index` | the node's commit index then (for lag) |
//! | `invoke` or `ok` of a `read` | `consistency` | `"linearizable"` (default), `"session"` or `"stale"` |
//! | any client event | `session` | the client session (default: the process) |
//!
//! This harness's clients continue under a new process id after a timeout
//! (a history may also let a process go on after an `info`, see
//! [`crate::history`]), but the token and therefore the session go on: the
//! harness names the session with a `session` field on its events so that the
//! guarantees are checked across the whole chain of processes. Without it,
//! each process is its own session.
//!
//! `ok` writes and reads without `index` cannot be checked; they are counted
//! (`unindexed`), and a history with no indexed read at all is `unknown`.
//!
//! # What is checked
//!
//! For each session, in history order (a session does one thing at a time):
//!
//! * **Read your writes**: a non-stale read of key `k` after the session's
//!   own `ok` write of `k` at index `i` reflects an index `≥ i`.
//! * **Monotonic reads**: the session's non-stale reads, over all keys,
//!   never reflect a smaller index than an earlier one.
//! * **Consistent prefix** (when the final log is given, as a [`FinalLog`]):
//!   every read, stale ones included, returns exactly the value its key
//!   holds after replaying the log up to the read's index. A stale read from
//!   a deposed leader or a follower passes this, which is the point of
//!   `stale`; a read that mixes entries from two histories of the log, or
//!   returns a value no prefix held, does not.
//!
//! Any violation makes the verdict **invalid**. Reads with `consistency:
//! "stale"` are also summarised as a lag distribution: `committed_index -
//! index`, in log entries.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Verdict;
use crate::history::{self, Event, Function, HistoryError, Op, Outcome};
use crate::json::{canonical, Json};

/// How many violations are listed; the counts are always complete. A
/// broken guarantee usually breaks on thousands of reads at once, and the
/// first hundred are enough to see the pattern and find the fault.
pub const MAX_VIOLATIONS: usize = 100;

/// The log as the nodes finally agreed on it, for consistent prefix: every
/// entry that set a key, in any order. Entries that set no key (blank,
/// membership) are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalLog {
    /// The writes.
    pub entries: Vec<LogWrite>,
}

/// One log entry that set a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogWrite {
    /// Its log index.
    pub index: u64,
    /// The key it set.
    pub key: Value,
    /// The key's value after the entry was applied (`null`: deleted).
    pub value: Value,
}

/// The result of the session check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// Invalid if any guarantee was broken; unknown if no read carried an
    /// index; else valid.
    pub verdict: Verdict,
    /// Sessions seen.
    pub sessions: usize,
    /// `ok` reads with an `index`, checked.
    pub reads_checked: usize,
    /// `ok` writes and reads without an `index`, which could not be checked.
    pub unindexed: usize,
    /// Whether consistent prefix was checked (a final log was given).
    pub consistent_prefix_checked: bool,
    /// Violations of read-your-writes.
    pub read_your_writes_violations: usize,
    /// Violations of monotonic reads.
    pub monotonic_reads_violations: usize,
    /// Violations of consistent prefix.
    pub consistent_prefix_violations: usize,
    /// The first [`MAX_VIOLATIONS`] violations, in history order.
    pub violations: Vec<Violation>,
    /// How far behind the commit index stale reads were, if any reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_lag: Option<LagStats>,
}

/// A broken session guarantee. Serialized with a `"kind"` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Violation {
    /// A read did not reflect the session's own earlier write of the key.
    ReadYourWrites {
        /// The session.
        session: Value,
        /// The key, as written.
        key: Json,
        /// The write's log index.
        write_index: u64,
        /// The index the read reflected, smaller than `write_index`.
        read_index: u64,
        /// The node that answered the read.
        node: Value,
        /// The read.
        read: Op,
    },
    /// A read reflected an older index than an earlier read of the session.
    MonotonicReads {
        /// The session.
        session: Value,
        /// The index the earlier read reflected.
        previous_index: u64,
        /// The index this read reflected, smaller.
        read_index: u64,
        /// The node that answered the read.
        node: Value,
        /// The read.
        read: Op,
    },
    /// A read's value is not the key's value in the log at the read's index.
    ConsistentPrefix {
        /// The key, as written.
        key: Json,
        /// The index the read reported.
        read_index: u64,
        /// The key's value after replaying the log up to `read_index`.
        expected: Value,
        /// The node that answered the read.
        node: Value,
        /// The read, whose `value` is what it returned.
        read: Op,
    },
}

/// A distribution of stale-read lag, in log entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagStats {
    /// How many stale reads reported both indexes.
    pub count: usize,
    /// The smallest lag.
    pub min: u64,
    /// The median (nearest rank).
    pub median: u64,
    /// The 99th percentile (nearest rank).
    pub p99: u64,
    /// The largest lag.
    pub max: u64,
}

impl LagStats {
    /// The distribution of `lags`, or `None` if empty.
    pub fn of(mut lags: Vec<u64>) -> Option<LagStats> {
        lags.sort_unstable();
        let n = lags.len();
        // Nearest rank: the smallest value with at least p of the values at
        // or below it.
        let rank = |p: usize| lags[(n * p).div_ceil(100).max(1) - 1];
        Some(LagStats { count: n, min: *lags.first()?, median: rank(50), p99: rank(99), max: lags[n - 1] })
    }
}

/// A history (or final log) the session checker cannot judge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The history breaks the pairing rules.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A field the checker reads has the wrong type.
    #[error("operation invoked at event {index}: field {field} must be {expected}, not {value}")]
    MalformedField {
        /// The operation's invocation position.
        index: usize,
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        value: Value,
    },
    /// The final log sets one key twice at one index.
    #[error("the final log sets key {key} twice at index {index}")]
    DuplicateLogEntry {
        /// The index.
        index: u64,
        /// The key.
        key: Value,
    },
}

/// Whether any `ok` read in the history carries an `index`: what decides
/// whether `jepsen check` runs this checker.
pub fn has_indexed_reads(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| e.kind == history::EventType::Ok && e.f == Function::Read && e.extra.contains_key("index"))
}

fn u64_field(op: &Op, events: &[Event], field: &'static str) -> Result<Option<u64>, SessionError> {
    match op.field(events, field) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| SessionError::MalformedField {
            index: op.invoke_index,
            field,
            expected: "a non-negative integer",
            value: v.clone(),
        }),
    }
}

/// The final log, per key: (index, value) sorted by index.
fn replay_index(log: &FinalLog) -> Result<HashMap<String, Vec<(u64, Value)>>, SessionError> {
    let mut keys: HashMap<String, Vec<(u64, Value)>> = HashMap::new();
    for w in &log.entries {
        keys.entry(canonical(&w.key)).or_default().push((w.index, w.value.clone()));
    }
    for (key, writes) in &mut keys {
        writes.sort_by_key(|(i, _)| *i);
        if let Some(pair) = writes.windows(2).find(|p| p[0].0 == p[1].0) {
            let key = serde_json::from_str(key).unwrap_or(Value::Null);
            return Err(SessionError::DuplicateLogEntry { index: pair[0].0, key });
        }
    }
    Ok(keys)
}

/// Counts a violation, and lists it while the list is short.
fn found(result: &mut SessionResult, v: Violation) {
    match v {
        Violation::ReadYourWrites { .. } => result.read_your_writes_violations += 1,
        Violation::MonotonicReads { .. } => result.monotonic_reads_violations += 1,
        Violation::ConsistentPrefix { .. } => result.consistent_prefix_violations += 1,
    }
    if result.violations.len() < MAX_VIOLATIONS {
        result.violations.push(v);
    }
}

/// Checks the session guarantees of a history's reads and, with `log`, that
/// every read is a consistent prefix of it.
///
/// # Errors
/// [`SessionError::History`] if the history breaks the pairing rules,
/// [`SessionError::MalformedField`] if `index`, `committed_index` or
/// `consistency` has the wrong type, [`SessionError::DuplicateLogEntry`] for
/// a contradictory log. A history that merely breaks a guarantee is an `Ok`
/// result with [`Verdict::Invalid`].
pub fn check(events: &[Event], log: Option<&FinalLog>) -> Result<SessionResult, SessionError> {
    let ops = history::pair(events)?;
    let replay = log.map(replay_index).transpose()?;

    #[derive(Default)]
    struct State {
        /// Canonical key -> the highest index of the session's own ok write.
        written: HashMap<String, u64>,
        /// The highest index a non-stale read reflected.
        read: Option<u64>,
    }
    let mut sessions: HashMap<String, State> = HashMap::new();
    let mut result = SessionResult {
        verdict: Verdict::Valid,
        sessions: 0,
        reads_checked: 0,
        unindexed: 0,
        consistent_prefix_checked: replay.is_some(),
        read_your_writes_violations: 0,
        monotonic_reads_violations: 0,
        consistent_prefix_violations: 0,
        violations: Vec::new(),
        stale_lag: None,
    };
    let mut lags = Vec::new();
    // `pair` yields operations in invocation order, so each session's
    // operations come in the order the session performed them.
    for op in ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        let session_id =
            op.field(events, "session").cloned().unwrap_or_else(|| op.process.as_json().value().clone());
        let state = sessions.entry(canonical(&session_id)).or_default();
        let key = op.key.canonical();
        let index = u64_field(op, events, "index")?;
        match op.f {
            Function::Write | Function::Cas => match index {
                Some(i) => {
                    let w = state.written.entry(key).or_insert(i);
                    *w = (*w).max(i);
                }
                None => result.unindexed += 1,
            },
            Function::Read => {
                let Some(read_index) = index else {
                    result.unindexed += 1;
                    continue;
                };
                result.reads_checked += 1;
                let consistency = match op.field(events, "consistency") {
                    None => "linearizable",
                    Some(Value::String(s)) => s.as_str(),
                    Some(other) => {
                        return Err(SessionError::MalformedField {
                            index: op.invoke_index,
                            field: "consistency",
                            expected: "a string",
                            value: other.clone(),
                        })
                    }
                };
                let node = op.field(events, "node").cloned().unwrap_or(Value::Null);
                if consistency == "stale" {
                    if let Some(committed) = u64_field(op, events, "committed_index")? {
                        lags.push(committed.saturating_sub(read_index));
                    }
                } else {
                    if let Some(&write_index) = state.written.get(&key) {
                        if read_index < write_index {
                            let v = Violation::ReadYourWrites {
                                session: session_id.clone(),
                                key: op.key.clone(),
                                write_index,
                                read_index,
                                node: node.clone(),
                                read: op.clone(),
                            };
                            found(&mut result, v);
                        }
                    }
                    match state.read {
                        Some(previous_index) if read_index < previous_index => {
                            let v = Violation::MonotonicReads {
                                session: session_id.clone(),
                                previous_index,
                                read_index,
                                node: node.clone(),
                                read: op.clone(),
                            };
                            found(&mut result, v);
                        }
                        _ => state.read = Some(read_index),
                    }
                }
                if let Some(replay) = &replay {
                    let writes = replay.get(&key).map(Vec::as_slice).unwrap_or_default();
                    let upto = writes.partition_point(|(i, _)| *i <= read_index);
                    let expected = upto.checked_sub(1).map_or(Value::Null, |at| writes[at].1.clone());
                    if op.value != expected {
                        let v = Violation::ConsistentPrefix {
                            key: op.key.clone(),
                            read_index,
                            expected,
                            node,
                            read: op.clone(),
                        };
                        found(&mut result, v);
                    }
                }
            }
            // Other functions (a set's add, say) carry no session promise.
            Function::Other(_) => {}
        }
    }

    result.sessions = sessions.len();
    result.stale_lag = LagStats::of(lags);
    let violations = result.read_your_writes_violations
        + result.monotonic_reads_violations
        + result.consistent_prefix_violations;
    result.verdict = if violations > 0 {
        Verdict::Invalid
    } else if result.reads_checked == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    tracing::debug!(sessions = result.sessions, verdict = ?result.verdict, "checked session guarantees");
    Ok(result)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::parse_history;

    fn run(text: &str, log: Option<&FinalLog>) -> SessionResult {
        check(&parse_history(text).unwrap(), log).unwrap()
    }

    /// Session "c1" writes x=1 at index 5 through process 0, times out on
    /// a second write, and continues as process 1 (same session).
    const WRITE_THEN_NEW_PROCESS: &str = r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1,"session":"c1"}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":2,"index":5,"session":"c1"}
{"process":0,"type":"invoke","f":"write","key":"x","value":2,"time":3,"session":"c1"}
{"process":0,"type":"info","f":"write","key":"x","value":2,"time":4,"session":"c1"}
"#;

    fn read(process: u64, session: &str, key: &str, value: Value, extra: &str) -> String {
        format!(
            "{{\"process\":{process},\"type\":\"invoke\",\"f\":\"read\",\"key\":\"{key}\",\"time\":10,\"session\":\"{session}\"}}\n\
             {{\"process\":{process},\"type\":\"ok\",\"f\":\"read\",\"key\":\"{key}\",\"value\":{value},\"time\":11,\"session\":\"{session}\",{extra}}}\n"
        )
    }

    fn log() -> FinalLog {
        FinalLog {
            entries: vec![
                LogWrite { index: 5, key: json!("x"), value: json!(1) },
                LogWrite { index: 7, key: json!("x"), value: json!(2) },
                LogWrite { index: 6, key: json!("y"), value: json!(9) },
            ],
        }
    }

    #[test]
    fn session_reads_at_or_after_own_write_are_valid() {
        let text = format!(
            "{WRITE_THEN_NEW_PROCESS}{}{}",
            read(1, "c1", "x", json!(1), r#""index":5,"node":2,"consistency":"session""#),
            read(1, "c1", "x", json!(2), r#""index":7,"node":3,"consistency":"session""#),
        );
        let result = run(&text, Some(&log()));
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        assert_eq!((result.sessions, result.reads_checked), (1, 2));
        assert!(result.consistent_prefix_checked);
    }

    #[test]
    fn read_behind_own_write_in_a_later_process_breaks_read_your_writes() {
        // The read is by process 1, but in session c1, which wrote x at 5.
        let text =
            format!("{WRITE_THEN_NEW_PROCESS}{}", read(1, "c1", "x", json!(null), r#""index":4,"node":2"#));
        let result = run(&text, None);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.read_your_writes_violations, 1);
        assert!(matches!(
            &result.violations[0],
            Violation::ReadYourWrites { write_index: 5, read_index: 4, .. }
        ));
        // Another session may read behind c1's write.
        let other = format!("{WRITE_THEN_NEW_PROCESS}{}", read(2, "c2", "x", json!(null), r#""index":4"#));
        assert_eq!(run(&other, None).verdict, Verdict::Valid);
    }

    #[test]
    fn read_going_back_in_index_breaks_monotonic_reads() {
        let text = format!(
            "{}{}",
            read(0, "c", "y", json!(9), r#""index":6,"node":1"#),
            read(0, "c", "x", json!(null), r#""index":3,"node":2"#),
        );
        let result = run(&text, None);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(matches!(
            &result.violations[0],
            Violation::MonotonicReads { previous_index: 6, read_index: 3, .. }
        ));
    }

    #[test]
    fn stale_reads_may_go_back_but_must_be_a_prefix_and_report_lag() {
        let text = format!(
            "{}{}{}",
            read(0, "c", "x", json!(2), r#""index":7,"consistency":"stale","committed_index":7"#),
            read(0, "c", "x", json!(1), r#""index":5,"consistency":"stale","committed_index":9"#),
            read(0, "c", "x", json!(null), r#""index":4,"consistency":"stale","committed_index":14"#),
        );
        let result = run(&text, Some(&log()));
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        assert_eq!(result.stale_lag, Some(LagStats { count: 3, min: 0, median: 4, p99: 10, max: 10 }));
    }

    #[test]
    fn read_value_that_no_prefix_held_breaks_consistent_prefix() {
        // At index 6 x was 1 (set at 5); a stale read there saw 2, set only at 7.
        let text = read(0, "c", "x", json!(2), r#""index":6,"consistency":"stale""#);
        let result = run(&text, Some(&log()));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(matches!(
            &result.violations[0],
            Violation::ConsistentPrefix { read_index: 6, expected, .. } if *expected == json!(1)
        ));
        // Without the log, it cannot be caught.
        assert_eq!(run(&text, None).verdict, Verdict::Valid);
    }

    #[test]
    fn without_indexed_reads_the_check_is_unknown() {
        let result = run(WRITE_THEN_NEW_PROCESS, None);
        assert_eq!(result.verdict, Verdict::Unknown);
        assert_eq!(result.reads_checked, 0);
    }

    #[test]
    fn malformed_index_and_contradictory_log_are_errors() {
        let text = read(0, "c", "x", json!(1), r#""index":"five""#);
        let err = check(&parse_history(&text).unwrap(), None).unwrap_err();
        assert!(matches!(err, SessionError::MalformedField { field: "index", .. }), "{err}");
        let mut bad = log();
        bad.entries.push(LogWrite { index: 5, key: json!("x"), value: json!(3) });
        let ok = read(0, "c", "x", json!(1), r#""index":5"#);
        let err = check(&parse_history(&ok).unwrap(), Some(&bad)).unwrap_err();
        assert!(matches!(err, SessionError::DuplicateLogEntry { index: 5, .. }), "{err}");
    }

    #[test]
    fn lag_percentiles_use_nearest_rank() {
        let stats = LagStats::of((1..=100).collect()).unwrap();
        assert_eq!((stats.min, stats.median, stats.p99, stats.max), (1, 50, 99, 100));
        assert_eq!(LagStats::of(Vec::new()), None);
    }
}
