//! Rollback records: the log entries each node removed during a run because
//! a new leader's log replaced them, as the harness collected them after the
//! final reads (`rollback.json` in the run's directory).
//!
//! A write acknowledged at `leader` durability is durable in the leader's
//! own log before any follower has it, so it can be lost: if that leader is
//! deposed before a majority has the entry, the next leader's log does not
//! hold it, and the old leader removes it from its log when it rejoins. A
//! node that removes entries keeps them in a record, and the set checker
//! ([`crate::checker::set`]) asks these records whether each lost
//! acknowledged element was lost *that* way, by design, or vanished without
//! a trace (a bug).
//!
//! # The file
//!
//! One JSON object: for every node the harness asked, either its records
//! (every record in full, as `GET /v1/cluster/rollback/{id}` answers) or
//! why it could not be read:
//!
//! ```text
//! {"nodes": [
//!   {"node": 1, "records": [
//!     {"node": 1, "id": 1, "at_unix_ms": 1767225600000, "term": 4, "entries": [
//!       {"term": 3, "index": 812, "kind": "writes", "acknowledged": true, "writes": [
//!         {"op": "put", "key": "set/0/1517", "value": {"value": "1517"},
//!          "client_id": 77, "seq": 40, "proposed_at_ms": 1767225599100}]}]}]},
//!   {"node": 2, "records": []},
//!   {"node": 3, "error": "connect: connection refused"}]}
//! ```
//!
//! Fields not listed here are ignored, and missing ones take their empty
//! value, so records from an older or newer server still read. A write is
//! found by its key and its client session (`client_id`, `seq`): the
//! session is unique per write in a run, and the key guards against a
//! session reused by a client that forgot its sequence.
//!
//! The crate still knows nothing of the system under test: this is the
//! evidence the harness collected, in the shape the server reports it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name of the records' file in a run's directory, next to
/// `history.jsonl`.
pub const FILE_NAME: &str = "rollback.json";

/// Every node's rollback records, as collected after a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollbacks {
    /// One entry per node asked.
    #[serde(default)]
    pub nodes: Vec<NodeRollbacks>,
}

/// One node's records, or why they could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRollbacks {
    /// The node asked.
    pub node: u64,
    /// Its records, oldest first.
    #[serde(default)]
    pub records: Vec<Record>,
    /// Why its records (or some of them) could not be read; `None` if all
    /// were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One rollback record: the entries a node removed at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The node that removed them and keeps the record.
    #[serde(default)]
    pub node: u64,
    /// The record's id on that node.
    #[serde(default)]
    pub id: u64,
    /// When they were removed, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub at_unix_ms: u64,
    /// The node's term then: the term of the leader whose log won.
    #[serde(default)]
    pub term: u64,
    /// The removed entries, in log order.
    #[serde(default)]
    pub entries: Vec<Entry>,
}

/// One removed log entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created it.
    #[serde(default)]
    pub term: u64,
    /// Its log index.
    #[serde(default)]
    pub index: u64,
    /// `writes`, `blank` or `membership`.
    #[serde(default)]
    pub kind: String,
    /// Whether this node had acknowledged its writes at `leader`
    /// durability.
    #[serde(default)]
    pub acknowledged: bool,
    /// The client writes in it.
    #[serde(default)]
    pub writes: Vec<Write>,
}

/// One client write in a removed entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Write {
    /// `put`, `delete`, `cas`, or `undecodable`.
    #[serde(default)]
    pub op: String,
    /// The key written.
    #[serde(default)]
    pub key: String,
    /// The value written, as the server shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The writing client's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// The write's sequence number in that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Where a rolled-back write was found: which node's record, and the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// The node that keeps the record.
    pub node: u64,
    /// The record's id on that node.
    pub record: u64,
    /// The removed entry's log index.
    pub index: u64,
    /// The removed entry's term.
    pub term: u64,
    /// Whether that node had acknowledged the entry at `leader` durability.
    pub acknowledged: bool,
}

impl Rollbacks {
    /// Every removed copy of the write to `key` from session
    /// `(client_id, seq)`, on any node, in the order of the file.
    pub fn find(&self, key: &str, client_id: u64, seq: u64) -> Vec<Found> {
        let mut found = Vec::new();
        for node in &self.nodes {
            for record in &node.records {
                for entry in &record.entries {
                    let matches =
                        |w: &Write| w.key == key && w.client_id == Some(client_id) && w.seq == Some(seq);
                    if entry.writes.iter().any(matches) {
                        found.push(Found {
                            // The record names its node; a record without one
                            // belongs to the node it was read from.
                            node: if record.node != 0 { record.node } else { node.node },
                            record: record.id,
                            index: entry.index,
                            term: entry.term,
                            acknowledged: entry.acknowledged,
                        });
                    }
                }
            }
        }
        found
    }

    /// How many records, over every node.
    pub fn record_count(&self) -> usize {
        self.nodes.iter().map(|n| n.records.len()).sum()
    }
}

/// Why a records file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The file is not a records file.
    #[error("{path} is not a rollback records file: {error}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong with it.
        error: serde_json::Error,
    },
}

/// Reads a records file.
///
/// # Errors
/// If it cannot be read or is not in the format above.
pub fn read(path: &Path) -> Result<Rollbacks, RollbackError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|error| RollbackError::Read { path: shown.clone(), error })?;
    serde_json::from_str(&text).map_err(|error| RollbackError::Parse { path: shown, error })
}

/// Reads the records file next to a history (`rollback.json` in the same
/// directory), if there is one.
///
/// # Errors
/// If it exists and cannot be read, as [`read`].
pub fn read_next_to(history: &Path) -> Result<Option<Rollbacks>, RollbackError> {
    let path = history.with_file_name(FILE_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    read(&path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"nodes": [
      {"node": 1, "records": [
        {"node": 1, "id": 2, "at_unix_ms": 5, "term": 4, "future_field": true, "entries": [
          {"term": 3, "index": 812, "kind": "writes", "acknowledged": true, "writes": [
            {"op": "put", "key": "set/0/1517", "value": {"value": "1517"}, "client_id": 77, "seq": 40}]},
          {"term": 3, "index": 813, "kind": "blank", "acknowledged": false}]}]},
      {"node": 2, "records": [
        {"id": 1, "entries": [{"index": 812, "writes": [{"op": "put", "key": "set/0/1517", "client_id": 77, "seq": 40}]}]}]},
      {"node": 3, "error": "connect: connection refused"}]}"#;

    #[test]
    fn a_write_is_found_by_key_and_session_on_every_node_that_removed_it() {
        let r: Rollbacks = serde_json::from_str(FILE).unwrap();
        assert_eq!(r.record_count(), 2);
        let found = r.find("set/0/1517", 77, 40);
        assert_eq!(
            found.iter().map(|f| (f.node, f.record, f.acknowledged)).collect::<Vec<_>>(),
            [(1, 2, true), (2, 1, false)]
        );
        assert!(r.find("set/0/1517", 77, 41).is_empty(), "another seq");
        assert!(r.find("set/0/1518", 77, 40).is_empty(), "another key");
        assert!(r.find("set/0/1517", 78, 40).is_empty(), "another client");
        assert_eq!(r.nodes[2].error.as_deref(), Some("connect: connection refused"));
    }

    #[test]
    fn a_missing_file_is_none_and_a_malformed_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let history = dir.path().join("history.jsonl");
        assert!(read_next_to(&history).unwrap().is_none());
        std::fs::write(dir.path().join(FILE_NAME), "[1,2]").unwrap();
        assert!(matches!(read_next_to(&history), Err(RollbackError::Parse { .. })));
        std::fs::write(dir.path().join(FILE_NAME), FILE).unwrap();
        assert_eq!(read_next_to(&history).unwrap().unwrap().record_count(), 2);
    }
}
