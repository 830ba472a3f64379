//! The event: one line of a history, and the names in it.
//!
//! An [`Event`] says who ([`Process`]: a client, named by a [`ProcessId`]
//! that may be any JSON scalar, or the nemesis), what ([`EventType`]: the
//! invocation or one of the three outcomes), which [`Function`], on which
//! key, with which value, and when, and keeps every other field of its line
//! as written. Two process ids are one process when they are equal JSON
//! values, so `1` and `1.0` are one process and `"1"` is another.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::json::Json;

/// A client process's id: any JSON scalar, kept as written. Two ids are the
/// same process when they are equal JSON values, so `1` and `1.0` are one
/// process and `1` and `"1"` are two. Cheap to clone: every operation of a
/// process shares one.
#[derive(Clone)]
pub struct ProcessId(Arc<ProcessIdInner>);

struct ProcessIdInner {
    /// The id as written.
    id: Json,
    /// Its canonical text, the identity (see [`crate::json`]).
    canonical: Box<str>,
}

impl ProcessId {
    /// The id, if it is a scalar: a number, a string, `true`, `false` or
    /// `null`.
    pub fn new(id: Json) -> Option<ProcessId> {
        if id.is_array() || id.is_object() {
            return None;
        }
        let canonical = id.canonical().into_boxed_str();
        Some(ProcessId(Arc::new(ProcessIdInner { id, canonical })))
    }

    /// The id as written.
    pub fn as_json(&self) -> &Json {
        &self.0.id
    }
}

impl From<u64> for ProcessId {
    fn from(id: u64) -> Self {
        let id = Json::from(Value::from(id));
        let canonical = id.canonical().into_boxed_str();
        ProcessId(Arc::new(ProcessIdInner { id, canonical }))
    }
}

impl PartialEq for ProcessId {
    fn eq(&self, other: &Self) -> bool {
        self.0.canonical == other.0.canonical
    }
}

impl Eq for ProcessId {}

impl Hash for ProcessId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.canonical.hash(state);
    }
}

impl fmt::Display for ProcessId {
    /// As written: `3`, `"alice"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.id.fmt(f)
    }
}

impl fmt::Debug for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessId({})", self.0.id)
    }
}

impl Serialize for ProcessId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.id.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ProcessId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = Json::deserialize(deserializer)?;
        ProcessId::new(id).ok_or_else(|| de::Error::custom("a process id must be a JSON scalar"))
    }
}

/// Who produced an event: a client process, or the nemesis (the fault
/// injector). Serialized as the client's id as written, or as the string
/// `"nemesis"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Process {
    /// A client process. It does one thing at a time; after an `info` it
    /// may go on under the same id (this harness's clients take a new one).
    Client(ProcessId),
    /// The nemesis: partitions, crashes, pauses. Its events record when a
    /// fault started and stopped.
    Nemesis,
}

impl Process {
    /// Reads a `process` field: the nemesis's names, or a client's id.
    pub(super) fn from_json(id: Json) -> Option<Process> {
        match id.as_str() {
            Some("nemesis" | ":nemesis") => Some(Process::Nemesis),
            _ => ProcessId::new(id).map(Process::Client),
        }
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(p) => p.fmt(f),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => p.serialize(serializer),
            Process::Nemesis => serializer.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = Json::deserialize(deserializer)?;
        Process::from_json(id).ok_or_else(|| de::Error::custom(PROCESS_EXPECTED))
    }
}

/// What a `process` field must be.
pub(super) const PROCESS_EXPECTED: &str =
    "`process` must be a JSON scalar (a number, a string, true, false or null), or \"nemesis\"";

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

impl EventType {
    /// Reads a `type` field's string, plain or as an EDN keyword (`:ok`).
    pub(super) fn from_name(name: &str) -> Option<EventType> {
        match name.strip_prefix(':').unwrap_or(name) {
            "invoke" => Some(EventType::Invoke),
            "ok" => Some(EventType::Ok),
            "fail" => Some(EventType::Fail),
            "info" => Some(EventType::Info),
            _ => None,
        }
    }
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

impl Function {
    /// The function named `name` (allocating only for [`Function::Other`]).
    pub(super) fn from_name(name: &str) -> Function {
        match name {
            "read" => Function::Read,
            "write" => Function::Write,
            "cas" => Function::Cas,
            _ => Function::Other(name.to_owned()),
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

/// One line of a history file. See the [module docs](super) for the format.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Who: a client process or the nemesis.
    pub process: Process,
    /// What happened: an invocation or an outcome.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function: `read`, `write`, `cas`, or a workload's own.
    pub f: Function,
    /// The key the operation is on; `null` when absent from the line.
    pub key: Json,
    /// The argument (on an invocation) or the result (on an `ok` read);
    /// `null` when absent from the line.
    pub value: Json,
    /// Nanoseconds since the start of the test, for reports; `None` when
    /// the line has none. The checkers order events by their position in
    /// the history, not by this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    /// Every other field of the line, kept and written back as it was.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The 1-based line of the file the event was read from, for error
    /// messages; `None` for an event recorded in memory. Not written.
    #[serde(skip)]
    pub line: Option<usize>,
}

impl Event {
    /// An event with no extra fields, at `time` nanoseconds.
    pub fn new(process: Process, kind: EventType, f: Function, key: Value, value: Value, time: u64) -> Self {
        Event {
            process,
            kind,
            f,
            key: key.into(),
            value: value.into(),
            time: Some(time),
            extra: Map::new(),
            line: None,
        }
    }
}

impl PartialEq for Event {
    /// Two events are equal when they say the same thing: the line they were
    /// read from is not part of it, and values compare as JSON values.
    fn eq(&self, other: &Self) -> bool {
        self.process == other.process
            && self.kind == other.kind
            && self.f == other.f
            && self.key == other.key
            && self.value == other.value
            && self.time == other.time
            && self.extra == other.extra
    }
}
