//! Re-checking a stored history: what `jepsen check` does.
//!
//! A saved run is evidence only as long as the checkers that judged it are
//! trusted. After a checker changes, every stored history can be judged
//! again: [`check_file`] reads any history in the [`crate::history`] format
//! (not only one this harness wrote: a Maelstrom run converted to it, or one
//! written by hand), pairs its operations and runs every checker that
//! applies, and [`CheckReport`] is what `jepsen check` prints.
//!
//! # Which checker sees which operations
//!
//! A history file alone decides five checkers; the leader, convergence and
//! log checkers need what the harness polled from the nodes, so they are not
//! run here.
//!
//! * **Set** ([`crate::checker::set`]): runs if the history has an `add`.
//!   Every key with an `add` is a set, and *all* operations on it (its adds
//!   and its whole-set reads) belong to the set checker. A lost element
//!   acknowledged at leader durability is excused only if a rollback record
//!   holds it: [`check_file`] reads the records from `rollback.json` next
//!   to the history, as the harness stores them ([`crate::rollback`]), so
//!   that a stored run re-checks to the verdict it had; without that file
//!   no lost element is excused.
//! * **Linearizability** ([`crate::checker::linear`]): every operation on
//!   the other keys, except reads that declare a weaker `consistency`
//!   (`"session"` or `"stale"`): those never promised linearizability, and
//!   the session checker judges them. The history is partitioned by key,
//!   not by function, on purpose: an operation whose function no checker
//!   knows (a typo, another workload's function on a register key) still
//!   reaches the register checker and is an error, rather than being
//!   silently skipped and leaving a vacuous "valid". A history of plain
//!   `read`/`write`/`cas` operations is checked exactly as before.
//! * **Watch** ([`crate::checker::watch`]): runs if the history has a
//!   `watch`. Every key under a watched prefix belongs to it (its writes,
//!   deletes and reads), and none of those reaches the other checkers: a
//!   `delete` is not a register operation, and the watch checker judges
//!   each read against the changes at the index it was served at.
//! * **Lease** ([`crate::checker::lease`]): runs if the history has an
//!   operation whose function starts with `lease-`. Those operations (the
//!   lease activity's grants, keepalives, revokes, puts and reads) belong
//!   to it alone; it reads the nemesis events too (the bound in `setup`,
//!   the leaders seen, the faults).
//! * **Session** ([`crate::checker::session`]): runs if some `ok` read
//!   carries an `index`. Read-your-writes and monotonic reads are decided
//!   from the history; consistent prefix needs the final log, which a
//!   history file does not hold, so it is not checked here.
//!
//! Keys are told apart as JSON values (see [`crate::json`]): `1` and `1.0`
//! are one key, for every checker.
//!
//! [`CheckReport::valid`] combines every verdict that ran with
//! [`Verdict::all`].

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checker::lease::{self, LeaseError, LeaseResult};
use crate::checker::linear::{self, LinearError, LinearResult};
use crate::checker::session::{self, FinalLog, SessionError, SessionResult};
use crate::checker::set::{self, SetError, SetResult};
use crate::checker::watch::{self, WatchError, WatchResult};
use crate::checker::Verdict;
use crate::history::{self, Event, Function, HistoryError, Op};
use crate::json::Json;
use crate::rollback::{self, RollbackError, Rollbacks};

/// The verdict on a whole history, and each checker's result.
///
/// Serialized as `{"valid": "valid"|"invalid"|"unknown", "linearizability":
/// {...}}`, plus `"set"` and `"session"` when those checkers ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Every checker's verdict combined: invalid if any checker found a
    /// violation, else unknown if any could not decide, else valid.
    pub valid: Verdict,
    /// Linearizability of each key as a compare-and-set register (every key
    /// that is not a set; no keys at all is valid).
    pub linearizability: LinearResult,
    /// The set workload's check, if the history has `add` operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<SetResult>,
    /// Session guarantees, if some `ok` read carries an `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionResult>,
    /// The watch workload's check, if the history has `watch` operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchResult>,
    /// The lease check, if the history has `lease-` operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseResult>,
}

/// A history that cannot be judged at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The history could not be read, or breaks the rules of a history.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The linearizability checker cannot judge these operations.
    #[error(transparent)]
    Linear(#[from] LinearError),
    /// The set checker cannot judge these operations.
    #[error(transparent)]
    Set(#[from] SetError),
    /// The session checker cannot judge these operations.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The watch checker cannot judge these operations.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The lease check cannot judge these operations.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The rollback records next to the history cannot be read.
    #[error(transparent)]
    Rollback(#[from] RollbackError),
}

/// Reads the history file at `path` and checks it, with the rollback
/// records in `rollback.json` next to it if that file exists; see
/// [`check_events_with`].
///
/// # Errors
/// As [`check_events`], [`HistoryError`]s from reading the file, and
/// [`CheckError::Rollback`] if `rollback.json` exists and cannot be read.
pub fn check_file(path: impl AsRef<Path>, budget: Duration) -> Result<CheckReport, CheckError> {
    let path = path.as_ref();
    let events = history::read_history(path)?;
    let rollbacks = rollback::read_next_to(path)?;
    check_events_with(&events, budget, None, rollbacks.as_ref())
}

/// Pairs the events into operations and runs every checker that applies
/// (see the [module docs](self)); `budget` bounds the linearizability
/// search, the only one that can take long.
///
/// # Errors
/// [`CheckError::History`] if the history breaks the pairing rules, and the
/// other variants if it holds operations a checker cannot judge (for
/// instance [`CheckError::Linear`] for an unknown function on a register
/// key). A history that is merely wrong is an `Ok` report with an invalid
/// verdict.
pub fn check_events(events: &[Event], budget: Duration) -> Result<CheckReport, CheckError> {
    check_events_with(events, budget, None, None)
}

/// As [`check_events`], with what the harness collected besides the
/// history, when the caller has it: with the final log (the harness replays
/// it after a session run), the session checker also checks consistent
/// prefix; with the nodes' rollback records, the set checker can tell a
/// leader-durable write lost by design from one lost without a trace.
///
/// # Errors
/// As [`check_events`].
pub fn check_events_with(
    events: &[Event],
    budget: Duration,
    final_log: Option<&FinalLog>,
    rollbacks: Option<&Rollbacks>,
) -> Result<CheckReport, CheckError> {
    let ops = history::pair(events)?;

    let set_keys: HashSet<String> =
        ops.iter().filter(|op| set::is_add(op)).map(|op| op.key.canonical()).collect();
    let set = if set_keys.is_empty() { None } else { Some(set::check_with(&ops, events, rollbacks)?) };

    let prefixes: Vec<String> = ops
        .iter()
        .filter(|op| watch::is_watch(op))
        .filter_map(|op| op.key.as_str().map(str::to_owned))
        .collect();
    let watch = if ops.iter().any(watch::is_watch) { Some(watch::check(&ops, events)?) } else { None };
    let watched = |f: &Function, key: &Json| {
        f.as_str() == watch::WATCH || key.as_str().is_some_and(|k| prefixes.iter().any(|p| k.starts_with(p)))
    };

    let lease = if ops.iter().any(lease::is_lease) { Some(lease::check(&ops, events)?) } else { None };

    let register_ops: Vec<Op> = ops
        .iter()
        .filter(|op| {
            !set_keys.contains(&op.key.canonical())
                && !weaker_read(op, events)
                && !watched(&op.f, &op.key)
                && !lease::is_lease(op)
        })
        .cloned()
        .collect();
    let linearizability = linear::check(&register_ops, budget)?;

    let unwatched: Vec<Event>;
    let session_events = if watch.is_some() {
        unwatched = events.iter().filter(|e| !watched(&e.f, &e.key)).cloned().collect();
        &unwatched[..]
    } else {
        events
    };
    let session = if session::has_indexed_reads(session_events) {
        Some(session::check(session_events, final_log)?)
    } else {
        None
    };

    let valid = Verdict::all(
        [
            Some(linearizability.verdict),
            set.as_ref().map(|s| s.verdict),
            session.as_ref().map(|s| s.verdict),
            watch.as_ref().map(|w| w.verdict),
            lease.as_ref().map(|l| l.verdict),
        ]
        .into_iter()
        .flatten(),
    );
    Ok(CheckReport { valid, linearizability, set, session, watch, lease })
}

/// A read that asked for less than linearizability.
fn weaker_read(op: &Op, events: &[Event]) -> bool {
    op.f == Function::Read
        && matches!(op.field(events, "consistency"), Some(Value::String(c)) if c == "session" || c == "stale")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::parse_history;

    const BUDGET: Duration = Duration::from_secs(10);

    fn report(text: &str) -> CheckReport {
        check_events(&parse_history(text).unwrap(), BUDGET).unwrap()
    }

    #[test]
    fn register_history_runs_only_linearizability_and_serializes_as_before() {
        let r = report(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":2}"#,
        );
        assert_eq!((r.valid, r.set.is_none(), r.session.is_none()), (Verdict::Valid, true, true));
        let json = serde_json::to_value(&r).unwrap();
        let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["linearizability", "valid"]);
    }

    #[test]
    fn set_keys_go_to_the_set_checker_and_other_keys_to_linearizability() {
        // As a register read, the whole-set read of "s" would be a
        // violation (nothing wrote [1]); it must not reach the register
        // checker.
        let r = report(
            r#"{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1}
{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":2}
{"process":0,"type":"invoke","f":"read","key":"s","time":3}
{"process":0,"type":"ok","f":"read","key":"s","value":[1],"time":4}"#,
        );
        assert_eq!(r.valid, Verdict::Valid);
        assert_eq!(r.set.as_ref().unwrap().verdict, Verdict::Valid);
        assert!(r.linearizability.keys.is_empty());

        let lost = report(
            r#"{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1}
{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":2}
{"process":0,"type":"invoke","f":"read","key":"s","time":3}
{"process":0,"type":"ok","f":"read","key":"s","value":[],"time":4}"#,
        );
        assert_eq!(lost.valid, Verdict::Invalid);
        assert_eq!(lost.set.unwrap().sets[0].lost.count, 1);
    }

    #[test]
    fn check_file_reads_the_rollback_records_next_to_the_history() {
        // A leader-durable add, acknowledged uncommitted, missing from the
        // final read: lost by design only if a record next to the history
        // holds it.
        let history = r#"{"process":0,"type":"invoke","f":"add","key":0,"value":5,"time":1,"durability":"leader","kv_key":"set/0/5","client_id":9,"seq":1}
{"process":0,"type":"ok","f":"add","key":0,"value":5,"time":2,"node":3,"committed":false}
{"process":1,"type":"invoke","f":"read","key":0,"time":3,"phase":"final"}
{"process":1,"type":"ok","f":"read","key":0,"value":[],"time":4,"node":1}
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(&path, history).unwrap();
        let alone = check_file(&path, BUDGET).unwrap();
        assert_eq!(alone.valid, Verdict::Invalid, "no records: nothing excuses the loss");

        let records = r#"{"nodes":[{"node":3,"records":[{"node":3,"id":1,"term":2,"entries":[{"term":1,"index":7,"kind":"writes","acknowledged":true,"writes":[{"op":"put","key":"set/0/5","client_id":9,"seq":1}]}]}]}]}"#;
        std::fs::write(dir.path().join(rollback::FILE_NAME), records).unwrap();
        let with = check_file(&path, BUDGET).unwrap();
        assert_eq!(with.valid, Verdict::Valid);
        assert_eq!(with.set.unwrap().lost_writes.unwrap().by_design, 1);

        std::fs::write(dir.path().join(rollback::FILE_NAME), "not json").unwrap();
        assert!(matches!(check_file(&path, BUDGET), Err(CheckError::Rollback(_))));
    }

    #[test]
    fn watched_keys_go_to_the_watch_checker_only() {
        // A delete is no register operation, and the indexed read would
        // run the session checker: under a watched prefix, neither does.
        let history = r#"{"process":0,"type":"invoke","f":"write","key":"w/a","value":1}
{"process":0,"type":"ok","f":"write","key":"w/a","value":1,"index":3}
{"process":1,"type":"invoke","f":"delete","key":"w/a","value":null}
{"process":1,"type":"ok","f":"delete","key":"w/a","value":null,"index":4}
{"process":2,"type":"invoke","f":"read","key":"w/a","value":null}
{"process":2,"type":"ok","f":"read","key":"w/a","value":null,"index":4}
{"process":3,"type":"invoke","f":"write","key":"x","value":1}
{"process":3,"type":"ok","f":"write","key":"x","value":1}
{"process":9,"type":"invoke","f":"watch","key":"w/","value":{"from_index":1}}
{"process":9,"type":"info","f":"watch","key":"w/","value":{"through":4,"events":[{"index":3,"op":"put","key":"w/a","value":1,"prev_value":null},{"index":4,"op":"delete","key":"w/a","value":null,"prev_value":1}]}}"#;
        let r = report(history);
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.watch.as_ref().unwrap().verdict, Verdict::Valid);
        assert_eq!(r.linearizability.keys.len(), 1, "only x is a register");
        assert!(r.session.is_none());

        let missed = report(
            &history.replace(r#",{"index":4,"op":"delete","key":"w/a","value":null,"prev_value":1}"#, ""),
        );
        assert_eq!((missed.valid, missed.watch.unwrap().verdict), (Verdict::Invalid, Verdict::Invalid));
    }

    #[test]
    fn lease_operations_go_to_the_lease_check_only() {
        // As register operations these would be errors (unknown
        // functions); the read of "lease/k" must not reach linearizability.
        let history = r#"{"process":0,"type":"invoke","f":"lease-grant","value":{"ttl_ms":1000},"time":0}
{"process":0,"type":"ok","f":"lease-grant","value":{"ttl_ms":1000},"lease":3,"time":10}
{"process":0,"type":"invoke","f":"lease-put","key":"lease/k","value":1,"lease":3,"time":20}
{"process":0,"type":"ok","f":"lease-put","key":"lease/k","value":1,"lease":3,"time":30}
{"process":1,"type":"invoke","f":"lease-read","key":"lease/k","time":40}
{"process":1,"type":"ok","f":"lease-read","key":"lease/k","value":1,"time":50}
{"process":2,"type":"invoke","f":"write","key":"x","value":1}
{"process":2,"type":"ok","f":"write","key":"x","value":1}"#;
        let r = report(history);
        assert_eq!(r.valid, Verdict::Valid, "{r:?}");
        assert_eq!(r.lease.as_ref().unwrap().reads_while_alive, 1);
        assert_eq!(r.linearizability.keys.len(), 1, "only x is a register");

        let vanished = report(&history.replace(r#""value":1,"time":50"#, r#""value":null,"time":50"#));
        assert_eq!((vanished.valid, vanished.lease.unwrap().verdict), (Verdict::Invalid, Verdict::Invalid));
    }

    #[test]
    fn unknown_function_on_a_register_key_is_still_an_error() {
        let events =
            parse_history(r#"{"process":0,"type":"invoke","f":"increment","key":"x","value":1,"time":1}"#)
                .unwrap();
        assert!(matches!(check_events(&events, BUDGET), Err(CheckError::Linear(_))));
    }

    #[test]
    fn indexed_reads_run_the_session_checker_and_weaker_reads_skip_linearizability() {
        // Process 0 writes x=1 at index 5, then a session read of its own
        // sees the older state at index 4: not linearizable either, but it
        // only promised session consistency, so only the session checker
        // may judge it, and it breaks read-your-writes.
        let r = report(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":2,"index":5}
{"process":0,"type":"invoke","f":"read","key":"x","time":3,"consistency":"session"}
{"process":0,"type":"ok","f":"read","key":"x","value":null,"time":4,"index":4,"node":2}"#,
        );
        assert_eq!(r.linearizability.verdict, Verdict::Valid);
        let session = r.session.unwrap();
        assert_eq!(session.verdict, Verdict::Invalid);
        assert_eq!(session.read_your_writes_violations, 1);
        assert_eq!(r.valid, Verdict::Invalid);
    }
}
