//! The history: what the clients asked for, what they were told, and when.
//!
//! A Jepsen-style test never looks inside the system it tests. It records,
//! from the clients' side, every operation's *invocation* (the moment a
//! client sent a request) and its *completion* (the moment the client learnt
//! the outcome), and afterwards asks whether any legal execution of the
//! system could have produced those observations. The record is the
//! history; the checkers in [`crate::checker`] judge it.
//!
//! # The file format
//!
//! JSON lines: one [`Event`] per line, in real-time order (a line is written
//! after every line that happened before it; a running test appends through
//! a [`Recorder`], which keeps that promise):
//!
//! ```text
//! {"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1000}
//! {"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":1500}
//! {"process":0,"type":"ok","f":"write","key":"x","value":1,"time":2000}
//! {"process":1,"type":"ok","f":"read","key":"x","value":1,"time":2100,"node":"n2"}
//! {"process":"nemesis","type":"info","f":"start-partition","value":"majority","time":2500}
//! ```
//!
//! * `process`: which client sent it, a non-negative integer, or the string
//!   `"nemesis"` for fault injection (nemesis events may carry any `f` and
//!   `value`; the checkers ignore them).
//! * `type`: `invoke` (the request was sent), then exactly one of `ok` (it
//!   happened), `fail` (it certainly did not happen) or `info` (nobody knows:
//!   a timed-out write may have taken effect, or may still take effect
//!   later).
//! * `f`: the function, `read`, `write`, `cas` or anything a workload defines.
//! * `key`, `value`: any JSON. A `write`'s value is the value written, a
//!   `cas` value is `[from, to]`, and an `ok` read's value is the value read
//!   (`null` means the key was absent). A missing `key` or `value` reads as
//!   `null`.
//! * `time`: nanoseconds since the test started. It is for reports and
//!   plots; the *order of the lines* is what the checkers take as real time,
//!   so that two clocks read a few nanoseconds apart cannot reorder events.
//! * Any other field (`node`, `index`, `error`, ...) is kept as it is in
//!   [`Event::extra`] and written back unchanged.
//!
//! # From events to operations
//!
//! The checkers reason about operations, not events: [`pair`] matches each
//! client's invocation with its completion and yields one [`Op`] per
//! invocation. It also enforces the rules that make a history meaningful:
//!
//! * A process does one thing at a time: it may not invoke while an earlier
//!   invocation of its own is outstanding, and it may not complete what it
//!   never invoked.
//! * After an `info` a process is finished. Its last operation may still take
//!   effect at any later moment, so it stays concurrent with everything after
//!   it; if the same process id went on, its next operation would appear to
//!   follow the unfinished one, which is not known. A client that times out
//!   therefore continues under a new process id.
//! * An invocation that never completed (the test ended first) counts as
//!   `info`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Who produced an event: a client process, or the nemesis (the fault
/// injector). Serialized as an integer or as the string `"nemesis"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Process {
    /// A client process. A client that saw an `info` continues under a new
    /// number.
    Client(u64),
    /// The nemesis: partitions, crashes, pauses. Its events record when a
    /// fault started and stopped.
    Nemesis,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(p) => write!(f, "{p}"),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => serializer.serialize_u64(*p),
            Process::Nemesis => serializer.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProcessVisitor;

        impl Visitor<'_> for ProcessVisitor {
            type Value = Process;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or the string \"nemesis\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Process, E> {
                Ok(Process::Client(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Process, E> {
                u64::try_from(v)
                    .map(Process::Client)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Process, E> {
                if v == "nemesis" {
                    Ok(Process::Nemesis)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }

        deserializer.deserialize_any(ProcessVisitor)
    }
}

/// An event's `type`: the invocation, or one of the three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the request.
    Invoke,
    /// The operation happened, and `value` holds its result.
    Ok,
    /// The operation certainly did not happen (the request was refused, or
    /// a compare-and-set found another value).
    Fail,
    /// Unknown: the operation may have happened, or may still happen later
    /// (a timeout, a broken connection).
    Info,
}

/// An operation's function (`f`). The register checkers know `read`,
/// `write` and `cas`; workloads may define others, kept in
/// [`Function::Other`]. Serialized as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Function {
    /// Read a key; an `ok` read's value is what was read (`null`: absent).
    Read,
    /// Write a value to a key.
    Write,
    /// Compare-and-set: `[from, to]` sets the key to `to` if it holds `from`.
    Cas,
    /// Any other function (a nemesis action, another workload's operation).
    Other(String),
}

impl Function {
    /// The name as written in the history.
    pub fn as_str(&self) -> &str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Other(name) => name,
        }
    }
}

impl From<String> for Function {
    fn from(name: String) -> Self {
        match name.as_str() {
            "read" => Function::Read,
            "write" => Function::Write,
            "cas" => Function::Cas,
            _ => Function::Other(name),
        }
    }
}

impl From<Function> for String {
    fn from(f: Function) -> Self {
        match f {
            Function::Other(name) => name,
            other => other.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a history file. See the [module docs](self) for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Who: a client process or the nemesis.
    pub process: Process,
    /// What happened: an invocation or an outcome.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function: `read`, `write`, `cas`, or a workload's own.
    pub f: Function,
    /// The key the operation is on; `null` when absent from the line.
    #[serde(default)]
    pub key: Value,
    /// The argument (on an invocation) or the result (on an `ok` read);
    /// `null` when absent from the line.
    #[serde(default)]
    pub value: Value,
    /// Nanoseconds since the start of the test, for reports. The checkers
    /// order events by their position in the history, not by this.
    pub time: u64,
    /// Every other field of the line, kept and written back as it was.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Event {
    /// An event with no extra fields.
    pub fn new(process: Process, kind: EventType, f: Function, key: Value, value: Value, time: u64) -> Self {
        Event { process, kind, f, key, value, time, extra: Map::new() }
    }
}

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
    /// The client process that performed it.
    pub process: u64,
    /// The function.
    pub f: Function,
    /// The key, from the invocation.
    pub key: Value,
    /// The invocation's value (what to write, `[from, to]` for a cas),
    /// except for an `ok` read, where it is the value read.
    pub value: Value,
    /// What the client learnt.
    pub outcome: Outcome,
    /// The invocation's `time`.
    pub invoke_time: u64,
    /// The completion's `time`, or `None` if the operation never completed.
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

/// Everything that can go wrong reading, writing or pairing a history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The history file could not be opened or created.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Reading failed part-way (an I/O error, or a line that is not UTF-8).
    #[error("line {line}: cannot read: {source}")]
    Read {
        /// The 1-based line number.
        line: usize,
        /// What went wrong.
        source: io::Error,
    },
    /// A line is not a valid event: not JSON, or a field is missing or has
    /// the wrong type.
    #[error("line {line}{}: {message}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
    Parse {
        /// The 1-based line number.
        line: usize,
        /// The 1-based column, when the JSON itself is malformed.
        column: Option<usize>,
        /// What is wrong with it.
        message: String,
    },
    /// Writing the history failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A process invoked an operation while its previous one was still
    /// outstanding: a process does one thing at a time.
    #[error(
        "event {index}: process {process} invoked again while its operation invoked at event \
         {outstanding} is outstanding"
    )]
    ConcurrentInvoke {
        /// The position of the offending invocation (0-based).
        index: usize,
        /// The process.
        process: u64,
        /// The position of the outstanding invocation.
        outstanding: usize,
    },
    /// A completion (`ok`, `fail`, `info`) for a process with nothing
    /// outstanding.
    #[error("event {index}: process {process} completed an operation it never invoked")]
    CompletionWithoutInvoke {
        /// The position of the completion (0-based).
        index: usize,
        /// The process.
        process: u64,
    },
    /// A process went on after an `info`. Its unfinished operation may take
    /// effect at any later time, so the client must continue as a new
    /// process id.
    #[error(
        "event {index}: process {process} went on after its operation ended with info at event \
         {info_index}; a client must continue under a new process id after an info"
    )]
    ProcessAfterInfo {
        /// The position of the offending event (0-based).
        index: usize,
        /// The process.
        process: u64,
        /// The position of the `info` completion.
        info_index: usize,
    },
    /// A completion names another function or key than its invocation.
    #[error("event {index}: process {process} completed {completed} but had invoked {invoked}")]
    CompletionMismatch {
        /// The position of the completion (0-based).
        index: usize,
        /// The process.
        process: u64,
        /// The invocation's `f` and `key`.
        invoked: String,
        /// The completion's `f` and `key`.
        completed: String,
    },
}

/// Reads a history file. Blank lines are skipped.
///
/// # Errors
/// [`HistoryError::Open`] if the file cannot be opened, and
/// [`HistoryError::Read`] or [`HistoryError::Parse`] with the line number
/// for the first line that cannot be read or is not an event.
pub fn read_history(path: impl AsRef<Path>) -> Result<Vec<Event>, HistoryError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| HistoryError::Open { path: path.to_owned(), source })?;
    read_events(BufReader::new(file))
}

/// Reads a history from any reader (a file, a socket, a byte string in a
/// test). Blank lines are skipped.
///
/// # Errors
/// As [`read_history`], minus opening.
pub fn read_events(reader: impl BufRead) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|source| HistoryError::Read { line: line_no, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|e| parse_error(line_no, &e))?;
        events.push(event);
    }
    Ok(events)
}

/// Parses a history held in a string (convenient in tests).
///
/// # Errors
/// As [`read_events`].
pub fn parse_history(text: &str) -> Result<Vec<Event>, HistoryError> {
    read_events(text.as_bytes())
}

/// serde_json appends "at line 1 column N" to its messages; within one line
/// the column is what helps, and the line is ours to report.
fn parse_error(line: usize, e: &serde_json::Error) -> HistoryError {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) if e.line() != 0 => message[..at].to_owned(),
        _ => message,
    };
    let column = (e.line() != 0 && e.column() != 0).then_some(e.column());
    HistoryError::Parse { line, column, message }
}

/// Writes a history file, one event per line, replacing the file if it
/// exists.
///
/// # Errors
/// [`HistoryError::Open`] if the file cannot be created,
/// [`HistoryError::Write`] if writing fails.
pub fn write_history(path: impl AsRef<Path>, events: &[Event]) -> Result<(), HistoryError> {
    let path = path.as_ref();
    let file = File::create(path).map_err(|source| HistoryError::Open { path: path.to_owned(), source })?;
    let mut out = BufWriter::new(file);
    write_events(&mut out, events)
        .and_then(|()| out.flush())
        .map_err(|source| HistoryError::Write { path: path.to_owned(), source })
}

/// Writes events as JSON lines to any writer. A harness recording a live
/// test calls this with one event at a time, as each happens.
///
/// # Errors
/// Whatever the writer returns.
pub fn write_events(mut out: impl Write, events: &[Event]) -> io::Result<()> {
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Pairs each client invocation with its completion, in invocation order,
/// and checks that the history obeys the rules in the [module
/// docs](self#from-events-to-operations). Nemesis events are skipped.
///
/// An `ok` read's [`Op::value`] is the value read; every other operation
/// keeps its invocation's value. An invocation with no completion becomes an
/// [`Outcome::Info`] operation with no completion time.
///
/// # Errors
/// [`HistoryError::ConcurrentInvoke`], [`HistoryError::CompletionWithoutInvoke`],
/// [`HistoryError::ProcessAfterInfo`] or [`HistoryError::CompletionMismatch`]
/// for the first event that breaks a rule.
pub fn pair(events: &[Event]) -> Result<Vec<Op>, HistoryError> {
    let mut ops: Vec<Op> = Vec::new();
    // Process -> the index in `ops` of its outstanding operation.
    let mut outstanding: HashMap<u64, usize> = HashMap::new();
    // Process -> the position of the `info` that finished it.
    let mut finished: HashMap<u64, usize> = HashMap::new();

    for (index, event) in events.iter().enumerate() {
        let Process::Client(process) = event.process else { continue };
        if let Some(&info_index) = finished.get(&process) {
            return Err(HistoryError::ProcessAfterInfo { index, process, info_index });
        }
        if event.kind == EventType::Invoke {
            if let Some(&open) = outstanding.get(&process) {
                let outstanding = ops[open].invoke_index;
                return Err(HistoryError::ConcurrentInvoke { index, process, outstanding });
            }
            outstanding.insert(process, ops.len());
            ops.push(Op {
                process,
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

        let Some(open) = outstanding.remove(&process) else {
            return Err(HistoryError::CompletionWithoutInvoke { index, process });
        };
        let op = &mut ops[open];
        // A completion may leave out the key, but may not name another one.
        if op.f != event.f || (!event.key.is_null() && op.key != event.key) {
            return Err(HistoryError::CompletionMismatch {
                index,
                process,
                invoked: format!("{} on key {}", op.f, op.key),
                completed: format!("{} on key {}", event.f, event.key),
            });
        }
        op.complete_time = Some(event.time);
        op.complete_index = Some(index);
        op.outcome = match event.kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            // `Invoke` was handled above; an `info` finishes the process.
            EventType::Info | EventType::Invoke => {
                finished.insert(process, index);
                Outcome::Info
            }
        };
        if op.outcome == Outcome::Ok && op.f == Function::Read {
            op.value = event.value.clone();
        }
    }
    Ok(ops)
}

/// Records a live history: the one place a running test appends events.
///
/// The file format promises that lines are in real-time order, and the
/// checkers take that order, not the `time` field, as real time. So an
/// event's time is read *while the lock is held*, and the event is appended
/// before the lock is released: of two events recorded concurrently, the one
/// appended first also has the earlier (or equal) time, and an operation
/// that completed before another was invoked precedes it in the history.
///
/// A `Recorder` is cheap to clone; every clone appends to the same history,
/// so each client task and the nemesis hold their own.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Time zero of the test: event times are nanoseconds since then.
    start: Instant,
    /// The events, in the order they were appended.
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// An empty history whose times count from `start`.
    pub fn new(start: Instant) -> Recorder {
        Recorder { start, events: Arc::default() }
    }

    /// Nanoseconds since `start`, the clock event times are read from
    /// (saturating at `u64::MAX`, some 584 years).
    pub fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends an event with no extra fields, stamped with the current time.
    pub fn record(&self, process: Process, kind: EventType, f: Function, key: Value, value: Value) {
        self.record_with(process, kind, f, key, value, Map::new());
    }

    /// Appends an event with extra fields (`node`, `error`, `phase`, ...),
    /// stamped with the current time.
    pub fn record_with(
        &self,
        process: Process,
        kind: EventType,
        f: Function,
        key: Value,
        value: Value,
        extra: Map<String, Value>,
    ) {
        // A panic elsewhere while holding the lock cannot leave the vector
        // half-written (a push either happened or not), so a poisoned lock
        // is still safe to use.
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut event = Event::new(process, kind, f, key, value, self.elapsed_nanos());
        event.extra = extra;
        events.push(event);
    }

    /// A copy of the events recorded after the first `n`.
    pub fn events_since(&self, n: usize) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.get(n..).map(<[Event]>::to_vec).unwrap_or_default()
    }

    /// A copy of the events recorded so far, in real-time order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pair_text(text: &str) -> Result<Vec<Op>, HistoryError> {
        pair(&parse_history(text).expect("test history parses"))
    }

    #[test]
    fn parse_keeps_extra_fields_and_round_trips() {
        let text = r#"{"process":3,"type":"ok","f":"read","key":"x","value":7,"time":12,"node":"n2","index":40}
{"process":"nemesis","type":"info","f":"start-partition","value":{"isolated":["n1"]},"time":13}
"#;
        let events = parse_history(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].process, Process::Client(3));
        assert_eq!(events[0].kind, EventType::Ok);
        assert_eq!(events[0].f, Function::Read);
        assert_eq!(events[0].extra.get("node"), Some(&json!("n2")));
        assert_eq!(events[0].extra.get("index"), Some(&json!(40)));
        assert_eq!(events[1].process, Process::Nemesis);
        assert_eq!(events[1].f, Function::Other("start-partition".into()));
        assert_eq!(events[1].key, Value::Null);

        let mut written = Vec::new();
        write_events(&mut written, &events).unwrap();
        assert_eq!(read_events(written.as_slice()).unwrap(), events);
    }

    #[test]
    fn write_then_read_file_gives_the_same_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let events = vec![
            Event::new(Process::Client(0), EventType::Invoke, Function::Write, json!(1), json!(5), 10),
            Event::new(Process::Client(0), EventType::Ok, Function::Write, json!(1), json!(5), 20),
        ];
        write_history(&path, &events).unwrap();
        assert_eq!(read_history(&path).unwrap(), events);
    }

    #[test]
    fn malformed_line_reports_its_line_number() {
        let text = "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":1,\"time\":1}\n\n{\"process\":0,\"type\":";
        match parse_history(text) {
            Err(HistoryError::Parse { line: 3, column: Some(_), .. }) => {}
            other => panic!("expected a parse error on line 3, got {other:?}"),
        }
    }

    #[test]
    fn missing_field_and_bad_process_are_parse_errors() {
        let missing_time = r#"{"process":0,"type":"invoke","f":"read","key":1}"#;
        let err = parse_history(missing_time).unwrap_err();
        assert!(err.to_string().contains("line 1") && err.to_string().contains("time"), "{err}");

        let negative = r#"{"process":-1,"type":"invoke","f":"read","key":1,"time":0}"#;
        assert!(matches!(parse_history(negative), Err(HistoryError::Parse { line: 1, .. })));

        let bad_type = r#"{"process":0,"type":"done","f":"read","key":1,"time":0}"#;
        assert!(matches!(parse_history(bad_type), Err(HistoryError::Parse { line: 1, .. })));
    }

    #[test]
    fn missing_file_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_history(dir.path().join("nope")), Err(HistoryError::Open { .. })));
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
                process: 0,
                f: Function::Write,
                key: json!("x"),
                value: json!(1),
                outcome: Outcome::Ok,
                invoke_time: 1,
                complete_time: Some(4),
                invoke_index: 0,
                complete_index: Some(3),
            }
        );
        // An ok read carries the value read, not the invocation's null.
        assert_eq!(
            (ops[1].f.clone(), ops[1].value.clone(), ops[1].outcome),
            (Function::Read, json!(1), Outcome::Ok)
        );
        assert_eq!((ops[2].value.clone(), ops[2].outcome), (json!([1, 2]), Outcome::Fail));
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
    fn second_invoke_while_outstanding_is_rejected() {
        let err = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"invoke","f":"read","key":"x","time":2}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, HistoryError::ConcurrentInvoke { index: 1, process: 0, outstanding: 0 }),
            "{err}"
        );
    }

    #[test]
    fn completion_without_invoke_is_rejected() {
        let err =
            pair_text(r#"{"process":2,"type":"ok","f":"read","key":"x","value":1,"time":1}"#).unwrap_err();
        assert!(matches!(err, HistoryError::CompletionWithoutInvoke { index: 0, process: 2 }), "{err}");
    }

    #[test]
    fn process_continuing_after_info_is_rejected() {
        let err = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"info","f":"write","key":"x","value":1,"time":2}
{"process":0,"type":"invoke","f":"read","key":"x","time":3}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, HistoryError::ProcessAfterInfo { index: 2, process: 0, info_index: 1 }),
            "{err}"
        );
    }

    #[test]
    fn completion_of_another_function_or_key_is_rejected() {
        let other_f = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"ok","f":"read","key":"x","value":1,"time":2}"#,
        );
        assert!(matches!(other_f, Err(HistoryError::CompletionMismatch { index: 1, .. })));
        let other_key = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"ok","f":"write","key":"y","value":1,"time":2}"#,
        );
        assert!(matches!(other_key, Err(HistoryError::CompletionMismatch { index: 1, .. })));
    }

    #[test]
    fn recorder_appends_in_order_with_nondecreasing_times_and_extras() {
        let recorder = Recorder::new(Instant::now());
        let clone = recorder.clone();
        recorder.record(Process::Client(0), EventType::Invoke, Function::Write, json!("x"), json!(1));
        let mut extra = Map::new();
        extra.insert("node".into(), json!("n1"));
        clone.record_with(Process::Client(0), EventType::Ok, Function::Write, json!("x"), json!(1), extra);
        let events = recorder.events();
        assert_eq!(events.len(), 2, "clones share one history");
        assert_eq!((events[0].kind, events[1].kind), (EventType::Invoke, EventType::Ok));
        assert!(events[0].time <= events[1].time);
        assert!(events[1].time <= recorder.elapsed_nanos());
        assert!(events[0].extra.is_empty());
        assert_eq!(events[1].extra.get("node"), Some(&json!("n1")));
    }
}
