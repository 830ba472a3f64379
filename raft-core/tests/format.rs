//! The encodings of openraft's types in the log, the vote and the state
//! machine's records are the ones the openraft 0.9 build wrote (on-disk
//! format 2): a data directory of the previous release is read, not
//! misread.
//!
//! Each byte string below was printed by that build (`raft_core::codec`
//! over openraft 0.9.25 with `single-term-leader`) for the value the test
//! builds. A change of encoding in a future openraft would fail here before
//! it misread anyone's data; then bump `FORMAT_VERSION` and write a
//! migration.

use std::collections::{BTreeMap, BTreeSet};

use raft_core::codec::{decode, encode};
use raft_core::types::{
    log_id, Batch, Entry, EntryPayload, LogId, Membership, Node, NodeId, SnapshotMeta, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `value` encodes to exactly `old`, and `old` decodes to `value`.
fn same<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T, old: &str) {
    assert_eq!(encode(&value), hex(old), "{value:?} encodes differently");
    assert_eq!(decode::<T>(&hex(old)).unwrap(), value);
}

fn membership() -> Membership {
    let nodes: BTreeMap<NodeId, Node> = [
        (1, Node::new("127.0.0.1:9081", "127.0.0.1:8081")),
        (2, Node::new("a:2", "b:2")),
        (3, Node::new("a:3", "")),
    ]
    .into_iter()
    .collect();
    Membership::new(vec![BTreeSet::from([1, 2])], nodes).unwrap()
}

const MEMBERSHIP: &str =
    "0102010203010e3132372e302e302e313a393038310e3132372e302e302e313a383038310203613a3203623a320303613a3300";

#[test]
fn log_ids_and_votes_encode_as_format_2() {
    let id: LogId = log_id(5, 7);
    same(id, "0507");
    same(Some(id), "010507");
    same(Vote::new(5, 3), "05010300");
    same(Vote::new_committed(5, 3), "05010301");
}

#[test]
fn log_entries_encode_as_format_2() {
    same(Entry { log_id: log_id(5, 7), payload: EntryPayload::Blank }, "050700");
    let batch = Batch::new(vec![vec![1u8, 2, 3].into(), vec![9u8].into()]);
    same(Entry { log_id: log_id(5, 7), payload: EntryPayload::Normal(batch) }, "05070102030102030109");
    same(
        Entry { log_id: log_id(5, 7), payload: EntryPayload::Membership(membership()) },
        &format!("050702{MEMBERSHIP}"),
    );
}

#[test]
fn state_machine_records_encode_as_format_2() {
    let stored = StoredMembership::new(Some(log_id(5, 7)), membership());
    same(stored.clone(), &format!("010507{MEMBERSHIP}"));
    // 0.9 also wrote a snapshot id ("5-7"), which 0.10 no longer has: it is
    // read and ignored, and written empty.
    let meta = SnapshotMeta { last_log_id: Some(log_id(5, 7)), last_membership: stored };
    let old = format!("010507010507{MEMBERSHIP}03352d37");
    assert_eq!(decode::<SnapshotMeta>(&hex(&old)).unwrap(), meta);
    assert_eq!(encode(&meta), hex(&format!("010507010507{MEMBERSHIP}00")));
}
