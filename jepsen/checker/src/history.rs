//! The history: what the clients asked for, what they were told, and in
//! which order.
//!
//! A Jepsen-style test never looks inside the system it tests. It records,
//! from the clients' side, every operation's *invocation* (the moment a
//! client sent a request) and its *completion* (the moment the client learnt
//! the outcome), and afterwards asks whether any legal execution of the
//! system could have produced those observations. The record is the
//! history; the checkers in [`crate::checker`] judge it.
//!
//! The reader accepts every well-formed history in this JSON-lines format,
//! whichever tool wrote it (this harness, the Maelstrom runner, Jepsen or
//! Knossos exports, Porcupine-style generators, or a person), and refuses,
//! naming the line, only what has no meaning.
//!
//! # The file format
//!
//! JSON lines: one [`Event`] (a JSON object) per line, **in real-time
//! order**: a line is written after every line that happened before it.
//! Blank lines are skipped.
//!
//! ```text
//! {"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1000}
//! {"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":1500}
//! {"process":0,"type":"ok","f":"write","key":"x","value":1,"time":2000}
//! {"process":1,"type":"ok","f":"read","key":"x","value":1,"time":2100,"node":"n2"}
//! {"process":"nemesis","type":"info","f":"start-partition","value":"majority","time":2500}
//! ```
//!
//! * `process` (required): who. Any JSON scalar (an integer, any other
//!   number, a string, `true`, `false`, `null`) names a client process; two
//!   ids are one process when they are equal JSON values (see
//!   [`crate::json`]: `1` and `1.0` are one process, `1` and `"1"` two). The
//!   strings `"nemesis"` and `":nemesis"` (an EDN keyword written as a
//!   string) name the nemesis, the fault injector; its events may carry any
//!   `f` and `value`, and the checkers skip them. An array or an object is
//!   not a process id.
//! * `type` (required): `invoke` (the request was sent), then exactly one
//!   of `ok` (it happened), `fail` (it certainly did not happen) or `info`
//!   (nobody knows: a timed-out write may have taken effect, or may still
//!   take effect later). The keyword spellings `:invoke`, `:ok`, `:fail`,
//!   `:info` are read the same way. Anything else is an error.
//! * `f` (required): the function, a string: `read`, `write`, `cas` or
//!   anything a workload defines (`:read` is read as `read`).
//! * `key`, `value`: any JSON; a missing one is `null`. A `write`'s value is
//!   the value written, a `cas` value is `[from, to]`, and an `ok` read's
//!   value is the value read (`null`: the key was absent). Values are
//!   compared as JSON values (numbers by value, objects by their members in
//!   any order) and printed as written; see [`crate::json`].
//! * `time` (optional): nanoseconds since the test started, a non-negative
//!   integer (`null` is the same as leaving it out). It is for reports and
//!   plots only: the *order of the lines* is what the checkers take as real
//!   time, so that two clocks read a few nanoseconds apart cannot reorder
//!   events. A report leaves out what it would need the time for (latencies,
//!   plots, recovery durations) where it is missing.
//! * Any other field (`node`, `index`, `error`, ...) is kept as it is in
//!   [`Event::extra`] and written back unchanged.
//!
//! A line that is not a JSON object, names a field twice, lacks `process`,
//! `type` or `f`, or has one of the wrong kind, is an error naming the line.
//!
//! # From events to operations
//!
//! The checkers reason about operations, not events: [`pair`] matches each
//! client's invocation with its completion and yields one [`Op`] per
//! invocation. It also enforces the rules that make a history meaningful,
//! and reports the line of the first event that breaks one:
//!
//! * A process does one thing at a time: it may not invoke while an earlier
//!   invocation of its own is still open (invoked, not yet completed), and
//!   it may not complete what it never invoked.
//! * A completion names the same `f` as its invocation, and the same `key`
//!   if it names one.
//!
//! And two rules about operations whose outcome is unknown:
//!
//! * **An operation that ended with `info` is pending for ever.** It may
//!   have taken effect at any moment after its invocation, may take effect
//!   at any later moment, however late, or never. Its `info` line closes the
//!   invocation (the process may go on), but not the operation: the
//!   checkers treat it as concurrent with everything invoked after it. So a
//!   process that goes on after an `info` (a client that timed out and
//!   carried on) is fine, and its next operation is a new operation,
//!   concurrent with the pending one; nothing orders the two, although one
//!   process issued both.
//! * An invocation that never completed (the test ended first) counts as
//!   `info`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
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
    fn from_json(id: Json) -> Option<Process> {
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
const PROCESS_EXPECTED: &str =
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
    fn from_name(name: &str) -> Option<EventType> {
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
    fn from_name(name: &str) -> Function {
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

/// One line of a history file. See the [module docs](self) for the format.
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

    /// Reads one event from the text of a JSON object; `line` is where it
    /// was found, if in a file.
    ///
    /// # Errors
    /// A message saying what is wrong with it.
    fn parse(text: &str, line: Option<usize>, processes: &mut ProcessCache) -> Result<Event, EventError> {
        let fields: Fields<'_> = serde_json::from_str(text).map_err(EventError::Json)?;
        let mut process = None;
        let mut kind = None;
        let mut f = None;
        let mut key = Json::null();
        let mut value = Json::null();
        let mut time = None;
        let mut extra = Map::new();
        let mut seen: Vec<&str> = Vec::with_capacity(fields.0.len());
        for (name, raw) in &fields.0 {
            let name: &str = name;
            if seen.contains(&name) {
                return Err(EventError::Field(format!("the field `{name}` appears twice")));
            }
            seen.push(name);
            let json = || Json::from_written(raw).map_err(EventError::Json);
            match name {
                "process" => process = Some(processes.get(raw)?),
                "type" => {
                    let name = string(raw)?;
                    kind = Some(name.as_deref().and_then(EventType::from_name).ok_or_else(|| {
                        EventError::Field(format!(
                            "unknown `type` {}: expected \"invoke\", \"ok\", \"fail\" or \"info\"",
                            raw.get()
                        ))
                    })?);
                }
                "f" => {
                    let Some(name) = string(raw)? else {
                        return Err(EventError::Field(format!("`f` must be a string, not {}", raw.get())));
                    };
                    let name = name.strip_prefix(':').unwrap_or(&name);
                    f = Some(Function::from_name(name));
                }
                "key" => key = json()?,
                "value" => value = json()?,
                "time" => {
                    let t = json()?;
                    time = match t.value() {
                        Value::Null => None,
                        v => Some(v.as_u64().ok_or_else(|| {
                            EventError::Field(format!(
                                "`time` must be a non-negative integer (nanoseconds), not {t}"
                            ))
                        })?),
                    };
                }
                _ => {
                    let v: Value = serde_json::from_str(raw.get()).map_err(EventError::Json)?;
                    extra.insert(name.to_owned(), v);
                }
            }
        }
        let missing = |field: &str| EventError::Field(format!("missing field `{field}`"));
        Ok(Event {
            process: process.ok_or_else(|| missing("process"))?,
            kind: kind.ok_or_else(|| missing("type"))?,
            f: f.ok_or_else(|| missing("f"))?,
            key,
            value,
            time,
            extra,
            line,
        })
    }
}

/// A field's string value, borrowed from the line when it has no escapes;
/// `None` if the value is not a string.
fn string(raw: &RawValue) -> Result<Option<Cow<'_, str>>, EventError> {
    let text = raw.get();
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Ok(Some(Cow::Borrowed(inner)));
        }
    }
    match serde_json::from_str::<Value>(text).map_err(EventError::Json)? {
        Value::String(s) => Ok(Some(Cow::Owned(s))),
        _ => Ok(None),
    }
}

/// The process ids of one history, by the text of their `process` field:
/// most lines repeat an id already seen, and then share it instead of
/// reading it again.
#[derive(Default)]
struct ProcessCache(HashMap<Box<str>, Process>);

impl ProcessCache {
    fn get(&mut self, raw: &RawValue) -> Result<Process, EventError> {
        if let Some(process) = self.0.get(raw.get()) {
            return Ok(process.clone());
        }
        let id = Json::from_written(raw).map_err(EventError::Json)?;
        let found = kind_of(&id);
        let process = Process::from_json(id)
            .ok_or_else(|| EventError::Field(format!("{PROCESS_EXPECTED}, not {found}")))?;
        self.0.insert(raw.get().into(), process.clone());
        Ok(process)
    }
}

/// The kind of a JSON value, for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Event::parse(raw.get(), None, &mut ProcessCache::default())
            .map_err(|e| de::Error::custom(e.message()))
    }
}

/// The fields of one line in the order written, each as its JSON text.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A field name, borrowed from the line unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object (one event)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
                    fields.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// Why a line is not an event.
enum EventError {
    /// Not JSON, or not an object.
    Json(serde_json::Error),
    /// A field is missing, repeated, or of the wrong kind.
    Field(String),
}

impl EventError {
    fn message(&self) -> String {
        match self {
            EventError::Json(e) => e.to_string(),
            EventError::Field(message) => message.clone(),
        }
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
    /// A line is not a valid event: not JSON, not an object, a field is
    /// missing, repeated or has the wrong kind, or `type` is not one of the
    /// four.
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
    /// A process invoked an operation while its previous invocation was
    /// still open (not completed): a process does one thing at a time.
    #[error(
        "{at}: process {process} invoked again while its operation invoked at {open} is still open \
         (a process does one thing at a time)"
    )]
    ConcurrentInvoke {
        /// The offending invocation.
        at: Position,
        /// The process.
        process: ProcessId,
        /// The invocation still open.
        open: Position,
    },
    /// A completion (`ok`, `fail`, `info`) for a process with no open
    /// invocation.
    #[error("{at}: process {process} completed an operation it never invoked (no open invocation)")]
    CompletionWithoutInvoke {
        /// The completion.
        at: Position,
        /// The process.
        process: ProcessId,
    },
    /// A completion names another function or key than its invocation.
    #[error("{at}: process {process} completed {completed} but had invoked {invoked}")]
    CompletionMismatch {
        /// The completion.
        at: Position,
        /// The process.
        process: ProcessId,
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
/// test). Blank lines are skipped; each event remembers its line.
///
/// # Errors
/// As [`read_history`], minus opening.
pub fn read_events(reader: impl BufRead) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    let mut processes = ProcessCache::default();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|source| HistoryError::Read { line: line_no, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let event = Event::parse(&line, Some(line_no), &mut processes).map_err(|e| match e {
            EventError::Json(e) => parse_error(line_no, &e),
            EventError::Field(message) => HistoryError::Parse { line: line_no, column: None, message },
        })?;
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

    fn client(id: Value) -> Process {
        Process::Client(ProcessId::new(id.into()).expect("a scalar"))
    }

    #[test]
    fn parse_keeps_extra_fields_and_round_trips() {
        let text = r#"{"process":3,"type":"ok","f":"read","key":"x","value":7,"time":12,"node":"n2","index":40}
{"process":"nemesis","type":"info","f":"start-partition","value":{"isolated":["n1"]},"time":13}
"#;
        let events = parse_history(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].process, Process::Client(3.into()));
        assert_eq!(events[0].kind, EventType::Ok);
        assert_eq!(events[0].f, Function::Read);
        assert_eq!(events[0].time, Some(12));
        assert_eq!(events[0].line, Some(1));
        assert_eq!(events[0].extra.get("node"), Some(&json!("n2")));
        assert_eq!(events[0].extra.get("index"), Some(&json!(40)));
        assert_eq!(events[1].process, Process::Nemesis);
        assert_eq!(events[1].f, Function::Other("start-partition".into()));
        assert!(events[1].key.is_null());

        let mut written = Vec::new();
        write_events(&mut written, &events).unwrap();
        assert_eq!(read_events(written.as_slice()).unwrap(), events);
    }

    #[test]
    fn write_then_read_file_gives_the_same_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let events = vec![
            Event::new(Process::Client(0.into()), EventType::Invoke, Function::Write, json!(1), json!(5), 10),
            Event::new(Process::Client(0.into()), EventType::Ok, Function::Write, json!(1), json!(5), 20),
        ];
        write_history(&path, &events).unwrap();
        assert_eq!(read_history(&path).unwrap(), events);
    }

    #[test]
    fn values_and_process_ids_are_written_back_as_they_were_read() {
        let text = r#"{"process":"c1","type":"invoke","f":"write","key":1.0,"value":{"b":2.50,"a":1e0}}"#;
        let events = parse_history(text).unwrap();
        let mut written = Vec::new();
        write_events(&mut written, &events).unwrap();
        let line = String::from_utf8(written).unwrap();
        assert_eq!(
            line.trim_end(),
            r#"{"process":"c1","type":"invoke","f":"write","key":1.0,"value":{"b":2.50,"a":1e0}}"#
        );
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
    fn malformed_events_are_parse_errors_naming_the_line_and_the_problem() {
        let cases = [
            (r#"{"type":"invoke","f":"read"}"#, "missing field `process`"),
            (r#"{"process":0,"f":"read"}"#, "missing field `type`"),
            (r#"{"process":0,"type":"invoke"}"#, "missing field `f`"),
            (r#"{"process":[0],"type":"invoke","f":"read"}"#, "not an array"),
            (r#"{"process":{"id":0},"type":"invoke","f":"read"}"#, "not an object"),
            (r#"{"process":0,"type":"done","f":"read"}"#, "unknown `type` \"done\""),
            (r#"{"process":0,"type":1,"f":"read"}"#, "unknown `type` 1"),
            (r#"{"process":0,"type":"invoke","f":7}"#, "`f` must be a string"),
            (
                r#"{"process":0,"type":"invoke","f":"read","time":-1}"#,
                "`time` must be a non-negative integer",
            ),
            (
                r#"{"process":0,"type":"invoke","f":"read","time":1.5}"#,
                "`time` must be a non-negative integer",
            ),
            (r#"{"process":0,"type":"invoke","f":"read","value":1,"value":2}"#, "`value` appears twice"),
            (r#"[0,"invoke","read"]"#, "a JSON object"),
        ];
        for (line, expected) in cases {
            let text = format!("\n{line}\n");
            let err = parse_history(&text).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, HistoryError::Parse { line: 2, .. }), "{line}: {message}");
            assert!(message.starts_with("line 2") && message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn any_json_scalar_is_a_client_process_id() {
        for id in [json!(7), json!(-3), json!(2.5), json!("alice"), json!(""), json!(true), json!(null)] {
            let text = format!(
                r#"{{"process":{id},"type":"invoke","f":"write","key":"x","value":1}}
{{"process":{id},"type":"ok","f":"write","key":"x","value":1}}"#
            );
            let events = parse_history(&text).unwrap();
            assert_eq!(events[0].process, client(id.clone()));
            let ops = pair(&events).unwrap();
            assert_eq!((ops.len(), ops[0].outcome), (1, Outcome::Ok), "{id}");
            assert_eq!(ops[0].process.as_json(), &id);
        }
    }

    #[test]
    fn numerically_equal_process_ids_are_one_process_and_a_string_is_another() {
        // 1 and 1.0 are one process: its second invocation overlaps its first.
        let err = pair_text(
            r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1}
{"process":1.0,"type":"invoke","f":"read","key":"x"}"#,
        )
        .unwrap_err();
        assert!(matches!(err, HistoryError::ConcurrentInvoke { .. }), "{err}");
        // 1 and "1" are two processes, each doing one thing.
        let ops = pair_text(
            r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1}
{"process":"1","type":"invoke","f":"read","key":"x"}
{"process":1e0,"type":"ok","f":"write","key":"x","value":1}
{"process":"1","type":"ok","f":"read","key":"x","value":1}"#,
        )
        .unwrap();
        assert_eq!(ops.iter().map(|op| op.outcome).collect::<Vec<_>>(), [Outcome::Ok, Outcome::Ok]);
        assert_eq!(ops[1].process.to_string(), r#""1""#);
    }

    #[test]
    fn process_ids_built_in_code_equal_the_same_ids_read_from_a_file() {
        let events = parse_history(
            r#"{"process":100,"type":"invoke","f":"read"}
{"process":1e2,"type":"invoke","f":"read"}"#,
        )
        .unwrap();
        assert_eq!(events[0].process, Process::Client(100.into()));
        assert_eq!(events[1].process, Process::Client(100.into()));
        assert_eq!(events[1].process.to_string(), "1e2", "shown as written");
    }

    #[test]
    fn nemesis_and_keyword_nemesis_are_the_nemesis_and_are_skipped_by_pairing() {
        let events = parse_history(
            r#"{"process":"nemesis","type":"info","f":"start-partition"}
{"process":":nemesis","type":"info","f":"stop-partition"}"#,
        )
        .unwrap();
        assert_eq!((&events[0].process, &events[1].process), (&Process::Nemesis, &Process::Nemesis));
        assert!(pair(&events).unwrap().is_empty());
    }

    #[test]
    fn keyword_spellings_of_type_and_f_are_read_as_their_names() {
        let ops = pair_text(
            r#"{"process":0,"type":":invoke","f":":cas","key":"x","value":[1,2]}
{"process":0,"type":":fail","f":":cas","key":"x","value":[1,2]}"#,
        )
        .unwrap();
        assert_eq!((ops[0].f.clone(), ops[0].outcome), (Function::Cas, Outcome::Fail));
    }

    #[test]
    fn time_is_optional_and_null_time_is_no_time() {
        let ops = pair_text(
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":null}
{"process":0,"type":"invoke","f":"read","key":"x","time":5}
{"process":0,"type":"ok","f":"read","key":"x","value":1}"#,
        )
        .unwrap();
        assert_eq!((ops[0].invoke_time, ops[0].complete_time), (None, None));
        assert_eq!((ops[1].invoke_time, ops[1].complete_time), (Some(5), None));
        // Without a time, an operation serializes without one.
        let json = serde_json::to_value(&ops[0]).unwrap();
        assert!(json.get("invoke_time").is_none(), "{json}");
    }

    #[test]
    fn escaped_field_names_are_read_as_their_names() {
        let events =
            parse_history(r#"{"pro\u0063ess":0,"type":"invoke","\u0066":"read","ti\u006de":3}"#).unwrap();
        assert_eq!((events[0].f.clone(), events[0].time), (Function::Read, Some(3)));
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

    #[test]
    fn recorder_appends_in_order_with_nondecreasing_times_and_extras() {
        let recorder = Recorder::new(Instant::now());
        let clone = recorder.clone();
        recorder.record(Process::Client(0.into()), EventType::Invoke, Function::Write, json!("x"), json!(1));
        let mut extra = Map::new();
        extra.insert("node".into(), json!("n1"));
        clone.record_with(
            Process::Client(0.into()),
            EventType::Ok,
            Function::Write,
            json!("x"),
            json!(1),
            extra,
        );
        let events = recorder.events();
        assert_eq!(events.len(), 2, "clones share one history");
        assert_eq!((events[0].kind, events[1].kind), (EventType::Invoke, EventType::Ok));
        let (t0, t1) = (events[0].time.unwrap(), events[1].time.unwrap());
        assert!(t0 <= t1);
        assert!(t1 <= recorder.elapsed_nanos());
        assert!(events[0].extra.is_empty());
        assert_eq!(events[1].extra.get("node"), Some(&json!("n1")));
    }
}
