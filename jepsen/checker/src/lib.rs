//! # jepsen-checker
//!
//! What both test harnesses share: the history format, the checkers that
//! judge a history, and what a run exercised, in numbers and plots. The
//! `jepsen` harness (a `kv-server` cluster under faults) and the Maelstrom
//! runner (any lin-kv binary on a simulated network) record histories in
//! this format and judge them with these checkers, so `jepsen check`
//! re-checks a history from either. The crate knows nothing of the system
//! under test: it reads only what clients asked and were told, and what the
//! harness polled from the nodes.
//!
//! Read the modules in this order:
//!
//! 1. [`history`]: the history file (JSON lines, one event per line), and
//!    pairing each invocation with its completion into an operation.
//! 2. [`json`]: the values in a history, compared as JSON values (numbers
//!    by value, objects by their members in any order) and printed as
//!    written.
//! 3. [`checker`]: the verdict (valid, invalid, unknown) and the checkers;
//!    [`checker::linear`] decides linearizability per key, [`checker::set`],
//!    [`checker::session`] and [`checker::watch`] judge the other workloads'
//!    histories, [`checker::lease`] the leases beside the registers, and
//!    [`checker::leaders`], [`checker::convergence`] and [`checker::logs`]
//!    judge what the harness polls and collects from the nodes.
//! 4. [`check`]: re-checking a stored history with every checker, which is
//!    what `jepsen check` does.
//! 5. [`sim`]: synthetic linearizable histories from a simulated register,
//!    to test and benchmark the checkers without a cluster.
//! 6. [`stats`]: what a run exercised, in numbers: outcomes per function
//!    and per phase (before, during and after faults), the fault timeline,
//!    recovery after each heal, and latency percentiles.
//! 7. [`plot`]: latency and throughput over time, with the faults shaded.
//! 8. [`store`]: where runs are kept, one directory per run, in the layout
//!    both harnesses share.
//! 9. [`rollback`]: the rollback records the harness collects from the
//!    nodes after a run (`rollback.json`), which tell a leader-durable
//!    write lost by design from one lost without a trace.
//! 10. [`workload`]: what the workloads' clients do next, and how their
//!     keys and values are named in the store and in the history; shared by
//!     the harness and the simulator (`sim/`), which reach the system in
//!     different ways but must write the same histories.
//!
//! The format and how to read a counterexample are described in
//! `docs/jepsen.md`.

pub mod check;
pub mod checker;
pub mod history;
pub mod json;
pub mod plot;
pub mod rollback;
pub mod sim;
pub mod stats;
pub mod store;
pub mod workload;

pub use check::{check_events, check_events_with, check_file, CheckError, CheckReport};
pub use checker::Verdict;
pub use history::{pair, read_history, write_history, Event, HistoryError, Op, Outcome, ProcessId};
pub use json::Json;
