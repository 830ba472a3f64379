//! Reading and writing history files: JSON lines, one event per line.
//!
//! The reader takes every well-formed history in the format the [module
//! docs](super) describe, whichever tool wrote it, and refuses, naming the
//! line, only what has no meaning: a line that is not a JSON object, a field
//! named twice, a `process`, `type` or `f` that is missing or of the wrong
//! kind. It reads each field as its JSON text, so values keep their spelling,
//! and lines that spell a process id the same way share one [`Process`]. The
//! writer writes each event back with its other fields as they were read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::event::{Event, EventType, Function, Process, PROCESS_EXPECTED};
use super::HistoryError;
use crate::json::Json;

impl Event {
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

/// Reads a history file. Blank lines are skipped.
///
/// # Errors
/// [`HistoryError::Open`] if the file cannot be opened, and
/// [`HistoryError::Read`] or [`HistoryError::Parse`] with the line number
/// for the first line that cannot be read or is not an event.
pub fn read_history(path: impl AsRef<Path>) -> Result<Vec<Event>, HistoryError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|error| HistoryError::Open { path: path.to_owned(), error })?;
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
        let line = line.map_err(|error| HistoryError::Read { line: line_no, error })?;
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
    let file = File::create(path).map_err(|error| HistoryError::Open { path: path.to_owned(), error })?;
    let mut out = BufWriter::new(file);
    write_events(&mut out, events)
        .and_then(|()| out.flush())
        .map_err(|error| HistoryError::Write { path: path.to_owned(), error })
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::{pair, Op, Outcome, ProcessId};

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
}
