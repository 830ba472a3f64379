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
//!
//! # The code, in reading order
//!
//! * `event`: the [`Event`] and the names in it ([`Process`], [`EventType`],
//!   [`Function`]).
//! * `file`: reading and writing history files ([`read_history`],
//!   [`write_history`]).
//! * `operation`: pairing events into operations ([`pair`], [`Op`],
//!   [`Outcome`]).
//! * `recorder`: the [`Recorder`] a running test appends to.
//! * This file: [`HistoryError`], everything that can go wrong.

mod event;
mod file;
mod operation;
mod recorder;

use std::io;
use std::path::PathBuf;

pub use self::event::{Event, EventType, Function, Process, ProcessId};
pub use self::file::{parse_history, read_events, read_history, write_events, write_history};
pub use self::operation::{pair, Op, Outcome, Position};
pub use self::recorder::Recorder;

/// Everything that can go wrong reading, writing or pairing a history.
///
/// The operating system's error is part of the message (and not also the
/// error's `source`), so a report that prints the whole chain says it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The history file could not be opened or created.
    #[error("cannot open {}: {error}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// Reading failed part-way (an I/O error, or a line that is not UTF-8).
    #[error("line {line}: cannot read: {error}")]
    Read {
        /// The 1-based line number.
        line: usize,
        /// What went wrong.
        error: io::Error,
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
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
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
