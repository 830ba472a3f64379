//! # jepsen
//!
//! A Jepsen-style harness for the KV service: clients record what they asked
//! and what they were told, and checkers decide whether a correct system
//! could have told them that. It judges the system only from the outside,
//! as a client does.
//!
//! Read the modules in this order:
//!
//! 1. [`history`]: the history file (JSON lines, one event per line), and
//!    pairing each invocation with its completion into an operation.
//! 2. [`json`]: the values in a history, compared as JSON values (numbers
//!    by value, objects by their members in any order) and printed as
//!    written.
//! 3. [`checker`]: the verdict (valid, invalid, unknown) and the checkers;
//!    [`checker::linear`] decides linearizability per key, [`checker::set`]
//!    and [`checker::session`] judge the other workloads' histories, and
//!    [`checker::leaders`], [`checker::convergence`] and [`checker::logs`]
//!    judge what the harness polls and collects from the nodes.
//! 4. [`check`]: re-checking a stored history with every checker, which is
//!    what `jepsen check` does.
//! 5. [`sim`]: synthetic linearizable histories from a simulated register,
//!    to test and benchmark the checkers without a cluster.
//! 6. [`cli`]: the `jepsen` command line and its exit codes.
//! 7. [`net`]: the proxy on every Raft link, which cuts links per direction
//!    to make network partitions without root rights.
//! 8. [`cluster`]: real `kv-server` processes behind those proxies, which
//!    the harness can kill, restart, pause and resume.
//! 9. [`stats`]: what a run exercised, in numbers: outcomes per function
//!    and per phase (before, during and after faults), the fault timeline,
//!    recovery after each heal, and latency percentiles.
//! 10. [`plot`]: latency and throughput over time, with the faults shaded.
//! 11. [`run`]: `jepsen test`: the workloads, the nemesis, the final phase
//!     and the report of one run; [`store`] is where runs are kept.
//! 12. [`replay`]: the final log the session checker's consistent-prefix
//!     check needs, asked of a stopped node with `kv-server inspect`.
//!
//! The format and how to read a counterexample are described in
//! `docs/jepsen.md`.

pub mod check;
pub mod checker;
pub mod cli;
pub mod cluster;
pub mod history;
pub mod json;
pub mod net;
pub mod plot;
pub mod replay;
pub mod run;
pub mod sim;
pub mod stats;
pub mod store;

pub use check::{check_events, check_events_with, check_file, CheckError, CheckReport};
pub use checker::Verdict;
pub use history::{pair, read_history, write_history, Event, HistoryError, Op, Outcome, ProcessId};
pub use json::Json;
