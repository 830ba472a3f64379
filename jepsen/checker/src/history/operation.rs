//! From events to operations: [`pair`] matches each client's invocation
//! with its completion into one [`Op`], and enforces the rules the [module
//! docs](super#from-events-to-operations) list, naming the line of the first
//! event that breaks one. An operation's [`Outcome`] is what the checkers
//! must explain: `ok` happened, `fail` did not, `info` may happen at any time
//! after its invocation, or never.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{Event, EventType, Function, Process, ProcessId};
use super::HistoryError;
use crate::json::Json;

/// The outcome of an operation, once its invocation and completion are
/// paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened, between its invocation and its completion.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// It may have happened, at any moment after its invocation, including
    /// after its completion was recorded. Also the outcome of an invocation
    /// that never completed.
    Info,
}

/// One client operation: an invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client process that performed it, as written.
    pub process: ProcessId,
    /// The function.
    pub f: Function,
    /// The key, from the invocation.
    pub key: Json,
    /// The invocation's value (what to write, `[from, to]` for a cas),
    /// except for an `ok` read, where it is the value read.
    pub value: Json,
    /// What the client learnt.
    pub outcome: Outcome,
    /// The invocation's `time`; `None` (and left out when serialized) if
    /// the invocation has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_time: Option<u64>,
    /// The completion's `time`, or `None` if the operation never completed
    /// or its completion has no time.
    pub complete_time: Option<u64>,
    /// The invocation's position in the history (0-based index of the
    /// event). Checkers use positions, not times, as real-time order.
    pub invoke_index: usize,
    /// The completion's position in the history, or `None` if the operation
    /// never completed.
    pub complete_index: Option<usize>,
}

impl Op {
    /// An extra field (`node`, `index`, `consistency`, ...) of this
    /// operation, from its completion if that has it, else from its
    /// invocation. `events` must be the history the operation was paired
    /// from; a position outside it reads as absent.
    pub fn field<'a>(&self, events: &'a [Event], name: &str) -> Option<&'a Value> {
        let completion = self.complete_index.and_then(|i| events.get(i));
        completion
            .and_then(|e| e.extra.get(name))
            .or_else(|| events.get(self.invoke_index).and_then(|e| e.extra.get(name)))
    }
}

/// Where an event is: its position among the events (0-based), and the line
/// of the file it was read from (1-based), if it was read from one.
/// Displayed as `line N`, or `event N` for an event recorded in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The 0-based position among the events (blank lines do not count).
    pub index: usize,
    /// The 1-based line in the file.
    pub line: Option<usize>,
}

impl Position {
    fn of(events: &[Event], index: usize) -> Position {
        Position { index, line: events.get(index).and_then(|e| e.line) }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}"),
            None => write!(f, "event {}", self.index),
        }
    }
}

/// Pairs each client invocation with its completion, in invocation order,
/// and checks that the history obeys the rules in the [module
/// docs](super#from-events-to-operations). Nemesis events are skipped.
///
/// An `ok` read's [`Op::value`] is the value read; every other operation
/// keeps its invocation's value. An invocation with no completion becomes an
/// [`Outcome::Info`] operation with no completion. An `info` completion
/// closes the invocation, so the process may invoke again; the operation
/// stays [`Outcome::Info`], pending for ever.
///
/// # Errors
/// [`HistoryError::ConcurrentInvoke`], [`HistoryError::CompletionWithoutInvoke`]
/// or [`HistoryError::CompletionMismatch`] for the first event that breaks a
/// rule, naming its line (or position, for events recorded in memory).
pub fn pair(events: &[Event]) -> Result<Vec<Op>, HistoryError> {
    let mut ops: Vec<Op> = Vec::new();
    // Process -> the index in `ops` of its open invocation.
    let mut open: HashMap<&ProcessId, usize> = HashMap::new();

    for (index, event) in events.iter().enumerate() {
        let Process::Client(process) = &event.process else { continue };
        let at = Position::of(events, index);
        if event.kind == EventType::Invoke {
            if let Some(&o) = open.get(process) {
                let open = Position::of(events, ops[o].invoke_index);
                return Err(HistoryError::ConcurrentInvoke { at, process: process.clone(), open });
            }
            open.insert(process, ops.len());
            ops.push(Op {
                process: process.clone(),
                f: event.f.clone(),
                key: event.key.clone(),
                value: event.value.clone(),
                outcome: Outcome::Info,
                invoke_time: event.time,
                complete_time: None,
                invoke_index: index,
                complete_index: None,
            });
            continue;
        }

        let Some(o) = open.remove(process) else {
            return Err(HistoryError::CompletionWithoutInvoke { at, process: process.clone() });
        };
        let op = &mut ops[o];
        // A completion may leave out the key, but may not name another one.
        if op.f != event.f || (!event.key.is_null() && op.key != event.key) {
            return Err(HistoryError::CompletionMismatch {
                at,
                process: process.clone(),
                invoked: format!("{} on key {}", op.f, op.key),
                completed: format!("{} on key {}", event.f, event.key),
            });
        }
        op.complete_time = event.time;
        op.complete_index = Some(index);
        op.outcome = match event.kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            // `Invoke` was handled above. An `info` closes the invocation,
            // and the process is free to go on; the operation itself stays
            // pending, which is what the checkers read `Info` as.
            EventType::Info | EventType::Invoke => Outcome::Info,
        };
        if op.outcome == Outcome::Ok && op.f == Function::Read {
            op.value = event.value.clone();
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::parse_history;

    fn pair_text(text: &str) -> Result<Vec<Op>, HistoryError> {
        pair(&parse_history(text).expect("test history parses"))
    }

    #[test]
    fn pair_matches_invocations_with_completions() {
        let ops = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":2}
{"process":"nemesis","type":"info","f":"kill","value":"n1","time":3}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":4}
{"process":1,"type":"ok","f":"read","key":"x","value":1,"time":5}
{"process":0,"type":"invoke","f":"cas","key":"x","value":[1,2],"time":6}
{"process":0,"type":"fail","f":"cas","key":"x","value":[1,2],"time":7}"#,
        )
        .unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0],
            Op {
                process: 0.into(),
                f: Function::Write,
                key: json!("x").into(),
                value: json!(1).into(),
                outcome: Outcome::Ok,
                invoke_time: Some(1),
                complete_time: Some(4),
                invoke_index: 0,
                complete_index: Some(3),
            }
        );
        // An ok read carries the value read, not the invocation's null.
        assert_eq!(
            (ops[1].f.clone(), ops[1].value.clone(), ops[1].outcome),
            (Function::Read, json!(1).into(), Outcome::Ok)
        );
        assert_eq!((ops[2].value.clone(), ops[2].outcome), (json!([1, 2]).into(), Outcome::Fail));
    }

    #[test]
    fn op_field_prefers_the_completion_then_the_invocation() {
        let events = parse_history(
            r#"{"process":0,"type":"invoke","f":"read","key":"x","time":1,"consistency":"session","index":1}
{"process":0,"type":"ok","f":"read","key":"x","value":1,"time":2,"index":7}"#,
        )
        .unwrap();
        let ops = pair(&events).unwrap();
        assert_eq!(ops[0].field(&events, "index"), Some(&json!(7)));
        assert_eq!(ops[0].field(&events, "consistency"), Some(&json!("session")));
        assert_eq!(ops[0].field(&events, "node"), None);
        // Paired from another history: out of range reads as absent.
        assert_eq!(ops[0].field(&events[..0], "index"), None);
    }

    #[test]
    fn invocation_without_completion_is_info() {
        let ops =
            pair_text(r#"{"process":4,"type":"invoke","f":"write","key":"x","value":1,"time":1}"#).unwrap();
        assert_eq!(ops[0].outcome, Outcome::Info);
        assert_eq!(ops[0].complete_time, None);
        assert_eq!(ops[0].complete_index, None);
    }

    #[test]
    fn second_invoke_while_open_is_rejected_naming_both_lines() {
        let err = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}

{"process":0,"type":"invoke","f":"read","key":"x","time":2}"#,
        )
        .unwrap_err();
        let at = Position { index: 1, line: Some(3) };
        let open = Position { index: 0, line: Some(1) };
        assert!(
            matches!(&err, HistoryError::ConcurrentInvoke { at: a, open: o, .. } if *a == at && *o == open),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.starts_with("line 3: process 0") && message.contains("at line 1"), "{message}");
    }

    #[test]
    fn completion_without_invoke_is_rejected_naming_the_line() {
        let err =
            pair_text(r#"{"process":2,"type":"ok","f":"read","key":"x","value":1,"time":1}"#).unwrap_err();
        assert!(
            matches!(&err, HistoryError::CompletionWithoutInvoke { at: Position { index: 0, line: Some(1) }, process } if *process == 2.into()),
            "{err}"
        );
        assert!(err.to_string().starts_with("line 1: process 2 completed"), "{err}");
    }

    #[test]
    fn errors_on_events_recorded_in_memory_name_the_position() {
        let events = vec![Event::new(
            Process::Client(5.into()),
            EventType::Ok,
            Function::Read,
            json!("x"),
            json!(1),
            1,
        )];
        let err = pair(&events).unwrap_err();
        assert!(err.to_string().starts_with("event 0: process 5"), "{err}");
    }

    #[test]
    fn process_may_go_on_after_info_and_the_info_operation_stays_pending() {
        let ops = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"info","f":"write","key":"x","value":1,"time":2}
{"process":0,"type":"invoke","f":"read","key":"x","time":3}
{"process":0,"type":"ok","f":"read","key":"x","value":1,"time":4}"#,
        )
        .unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].outcome, ops[0].complete_index), (Outcome::Info, Some(1)));
        assert_eq!((ops[1].outcome, ops[1].process.clone()), (Outcome::Ok, 0.into()));
    }

    #[test]
    fn late_completion_after_info_is_a_completion_without_invoke() {
        // The info closed the invocation; an ok for it afterwards has
        // nothing open to complete.
        let err = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1}
{"process":0,"type":"info","f":"write","key":"x","value":1}
{"process":0,"type":"ok","f":"write","key":"x","value":1}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, HistoryError::CompletionWithoutInvoke { at: Position { line: Some(3), .. }, .. }),
            "{err}"
        );
    }

    #[test]
    fn completion_of_another_function_or_key_is_rejected() {
        let other_f = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"ok","f":"read","key":"x","value":1,"time":2}"#,
        );
        assert!(matches!(
            other_f,
            Err(HistoryError::CompletionMismatch { at: Position { index: 1, .. }, .. })
        ));
        let other_key = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"ok","f":"write","key":"y","value":1,"time":2}"#,
        );
        assert!(matches!(
            other_key,
            Err(HistoryError::CompletionMismatch { at: Position { index: 1, .. }, .. })
        ));
        // The same key spelt another way is the same key.
        let respelt = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":1,"value":1,"time":1}
{"process":0,"type":"ok","f":"write","key":1.0,"value":1,"time":2}"#,
        );
        assert_eq!(respelt.unwrap()[0].outcome, Outcome::Ok);
    }
}
