//! Crashes found in node logs: panics and fatal Raft errors.
//!
//! # What is checked
//!
//! A history can look fine while a node died underneath it: the clients
//! were served by the others. The logs tell. After a run, the harness hands
//! every node's log text to [`check`], which looks line by line for:
//!
//! * **panics**: a line containing `panicked at` (Rust prints
//!   `thread 'NAME' panicked at FILE:LINE:COL:` since 1.73, and
//!   `thread 'NAME' panicked at 'MESSAGE', FILE` before). The codebase panics
//!   only on a broken internal invariant (`STYLE.md`, Errors), so any panic
//!   is a bug: the verdict is **invalid**.
//! * **fatal errors**: an `ERROR` line from `raft_core` or `openraft` that
//!   mentions storage or says `fatal`. At `error` level a library says the
//!   node cannot continue. These are reported but do **not** make the verdict
//!   invalid: a nemesis that truncates or bit-flips a node's files is
//!   *supposed* to make that node stop with a storage error. The report lets
//!   a reader match each one against the fault timeline.
//!
//! The scan is textual, so a panic message quoted inside another log line
//! counts too; that errs on the side of looking. At most
//! [`MAX_LINES_PER_NODE`] matching lines are kept per node and kind; the
//! counts are always complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Verdict;

/// How many matching lines of each kind are kept per node: enough to read
/// the first failure and its neighbours, not a copy of a log that repeats
/// one error a million times.
pub const MAX_LINES_PER_NODE: usize = 20;

/// The result of scanning the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsResult {
    /// Invalid if any node panicked, else valid.
    pub verdict: Verdict,
    /// How many panic lines were found on all nodes.
    pub panics: usize,
    /// How many fatal error lines were found on all nodes.
    pub fatal_errors: usize,
    /// The nodes with findings, in id order; clean nodes are left out.
    pub nodes: Vec<NodeFindings>,
}

/// What one node's log holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFindings {
    /// The node.
    pub node: u64,
    /// The first panic lines (at most [`MAX_LINES_PER_NODE`]).
    pub panics: Vec<LogLine>,
    /// How many panic lines in all.
    pub panic_count: usize,
    /// The first fatal error lines (at most [`MAX_LINES_PER_NODE`]).
    pub fatal_errors: Vec<LogLine>,
    /// How many fatal error lines in all.
    pub fatal_error_count: usize,
}

/// A matching log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// 1-based line number in the node's log.
    pub line: usize,
    /// The line, as written.
    pub text: String,
}

fn is_panic(line: &str) -> bool {
    line.contains("panicked at")
}

fn is_fatal_error(line: &str) -> bool {
    if !line.contains("ERROR") || !(line.contains("raft_core") || line.contains("openraft")) {
        return false;
    }
    let lower = line.to_ascii_lowercase();
    lower.contains("storage") || lower.contains("fatal")
}

/// Scans each node's log text (node id → the whole log).
pub fn check(logs: &BTreeMap<u64, String>) -> LogsResult {
    let mut nodes = Vec::new();
    for (&node, text) in logs {
        let mut found = NodeFindings {
            node,
            panics: Vec::new(),
            panic_count: 0,
            fatal_errors: Vec::new(),
            fatal_error_count: 0,
        };
        for (i, line) in text.lines().enumerate() {
            let (list, count) = if is_panic(line) {
                (&mut found.panics, &mut found.panic_count)
            } else if is_fatal_error(line) {
                (&mut found.fatal_errors, &mut found.fatal_error_count)
            } else {
                continue;
            };
            *count += 1;
            if list.len() < MAX_LINES_PER_NODE {
                list.push(LogLine { line: i + 1, text: line.to_owned() });
            }
        }
        if found.panic_count + found.fatal_error_count > 0 {
            nodes.push(found);
        }
    }
    let panics = nodes.iter().map(|n| n.panic_count).sum();
    let fatal_errors = nodes.iter().map(|n| n.fatal_error_count).sum();
    let verdict = if panics > 0 { Verdict::Invalid } else { Verdict::Valid };
    LogsResult { verdict, panics, fatal_errors, nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(entries: &[(u64, &str)]) -> BTreeMap<u64, String> {
        entries.iter().map(|&(n, t)| (n, t.to_owned())).collect()
    }

    #[test]
    fn clean_logs_are_valid() {
        let result = check(&logs(&[
            (1, "2026-01-01T00:00:00Z  INFO raft_core: became leader term=2\n"),
            (2, "2026-01-01T00:00:00Z  WARN kv_app: retrying forward\n"),
        ]));
        assert_eq!(result.verdict, Verdict::Valid);
        assert!(result.nodes.is_empty());
    }

    #[test]
    fn a_panic_in_either_format_is_invalid_and_reported_with_its_line() {
        let result = check(&logs(&[
            (1, "ok\nthread 'tokio-runtime-worker' panicked at raft-core/src/log.rs:10:5:\nindex gap\n"),
            (2, "thread 'main' panicked at 'index gap', src/main.rs:3\n"),
            (3, "INFO all good\n"),
        ]));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.panics, 2);
        assert_eq!(result.nodes.len(), 2);
        assert_eq!(result.nodes[0].panics[0].line, 2);
        assert!(result.nodes[0].panics[0].text.contains("log.rs:10:5"));
    }

    #[test]
    fn fatal_storage_errors_are_reported_without_failing_the_run() {
        let result = check(&logs(&[(
            1,
            "ERROR openraft::core: fatal error: StorageError reading log\n\
             ERROR kv_app::server: bad request\n\
             ERROR raft_core::log_store: storage corrupted at index 7\n",
        )]));
        assert_eq!(result.verdict, Verdict::Valid);
        assert_eq!(result.fatal_errors, 2);
        assert_eq!(result.nodes[0].fatal_errors[1].line, 3);
    }

    #[test]
    fn kept_lines_are_capped_but_counted() {
        let text = "thread 'x' panicked at a.rs:1:1:\n".repeat(MAX_LINES_PER_NODE + 5);
        let result = check(&logs(&[(1, &text)]));
        assert_eq!(result.nodes[0].panics.len(), MAX_LINES_PER_NODE);
        assert_eq!(result.nodes[0].panic_count, MAX_LINES_PER_NODE + 5);
        assert_eq!(result.verdict, Verdict::Invalid);
    }
}
