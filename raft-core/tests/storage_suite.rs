//! openraft's own storage conformance suite, run against both log stores
//! (with the redb state machine store). It checks log state after appends,
//! truncations and purges, vote persistence, membership tracking through
//! apply, and snapshot build/install. Then a property of our own: no entry
//! leaves either log except into a rollback record or by a purge.

mod common;

use std::collections::BTreeSet;

use common::Register;
use openraft::storage::RaftLogStorage;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::RaftLogReader as _;
use proptest::prelude::*;
use raft_core::storage::{rollback, Db, MemLogStore, RedbLogStore, StateMachineStore, StorageOptions};
use raft_core::types::TypeConfig;

type StorageError = openraft::StorageError<TypeConfig>;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, RedbLogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, RedbLogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        Ok((
            dir,
            RedbLogStore::new(db.clone()),
            StateMachineStore::open(db, Register).expect("open state machine"),
        ))
    }
}

/// The log in a file of its own (on-disk format 3).
struct FileLogBuilder;

fn open_file_log(dir: &std::path::Path) -> Db {
    let options = StorageOptions { log_file: true, ..StorageOptions::default() };
    let db = Db::open_with(dir, options).expect("open db");
    assert_eq!(db.format(), raft_core::storage::db::FORMAT_LOG_FILE);
    db
}

impl StoreBuilder<TypeConfig, RedbLogStore, StateMachineStore, tempfile::TempDir> for FileLogBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, RedbLogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_file_log(dir.path());
        Ok((
            dir,
            RedbLogStore::new(db.clone()),
            StateMachineStore::open(db, Register).expect("open state machine"),
        ))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore), StorageError> {
        Ok((
            (),
            MemLogStore::new(),
            StateMachineStore::open(Db::in_memory(), Register).expect("open state machine"),
        ))
    }
}

#[tokio::test]
async fn redb_store_passes_openraft_storage_suite() {
    Suite::test_all(RedbBuilder).await.expect("storage suite");
}

#[tokio::test]
async fn file_log_store_passes_openraft_storage_suite() {
    Suite::test_all(FileLogBuilder).await.expect("storage suite");
}

#[tokio::test]
async fn memory_store_passes_openraft_storage_suite() {
    Suite::test_all(MemBuilder).await.expect("storage suite");
}

/// One step of a random history of a log.
#[derive(Debug, Clone)]
enum Step {
    /// Append this many entries at the end, in the current term.
    Append(u64),
    /// Truncate after this fraction (0..=100 %) of the entries after the
    /// purge point, in a new term (as a follower does when a new leader's
    /// log disagrees).
    Truncate(u8),
    /// Purge up to this fraction of the entries.
    Purge(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..5).prop_map(Step::Append),
        2 => (0u8..=100).prop_map(Step::Truncate),
        1 => (0u8..=100).prop_map(Step::Purge),
    ]
}

/// Runs `steps` on `store` and checks that no entry ever left the log
/// except into a rollback record (a truncation) or below the purge point.
async fn no_entry_leaves_without_a_record<S: RaftLogStorage<TypeConfig>>(
    mut store: S,
    db: &Db,
    steps: &[Step],
) {
    use openraft::storage::IOFlushed;
    use raft_core::types::{log_id, Batch, Entry, EntryPayload, Vote};

    let mut term = 1;
    let mut last = 0u64;
    let mut purged = 0u64;
    let mut appended: Vec<(u64, u64)> = Vec::new();
    store.save_vote(&Vote::new(term, 1)).await.unwrap();
    for s in steps {
        match *s {
            Step::Append(n) => {
                let entries: Vec<Entry> = (last + 1..=last + n)
                    .map(|i| Entry {
                        log_id: log_id(term, i),
                        payload: EntryPayload::Normal(Batch::one(vec![1])),
                    })
                    .collect();
                appended.extend(entries.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)));
                store.append(entries, IOFlushed::noop()).await.unwrap();
                last += n;
            }
            Step::Truncate(pct) => {
                let keep = purged + (last - purged) * u64::from(pct) / 100;
                term += 1;
                store.save_vote(&Vote::new(term, 1)).await.unwrap();
                let mut reader = store.get_log_reader().await;
                let at = match keep {
                    0 => None,
                    k if k == purged => store.get_log_state().await.unwrap().last_purged_log_id,
                    k => reader.try_get_log_entries(k..=k).await.unwrap().first().map(|e| e.log_id),
                };
                store.truncate_after(at).await.unwrap();
                last = keep;
            }
            Step::Purge(pct) => {
                let upto = purged + (last - purged) * u64::from(pct) / 100;
                if upto > purged {
                    let mut reader = store.get_log_reader().await;
                    let id = reader.try_get_log_entries(upto..=upto).await.unwrap()[0].log_id;
                    store.purge(id).await.unwrap();
                    purged = upto;
                }
            }
        }
    }
    let mut reader = store.get_log_reader().await;
    let in_log: BTreeSet<(u64, u64)> = reader
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect();
    let recorded: Vec<(u64, u64)> = rollback::records(db)
        .unwrap()
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| (e.term, e.index)))
        .collect();
    let recorded_set: BTreeSet<(u64, u64)> = recorded.iter().copied().collect();
    assert_eq!(recorded.len(), recorded_set.len(), "an entry is recorded once");
    for e in &appended {
        let (in_l, in_r, below) = (in_log.contains(e), recorded_set.contains(e), e.1 <= purged);
        assert!(in_l || in_r || below, "entry {e:?} left the log without a record");
        assert!(!(in_l && in_r), "entry {e:?} is recorded but still in the log");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn no_entry_leaves_the_redb_log_without_a_record(steps in proptest::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        rt.block_on(no_entry_leaves_without_a_record(RedbLogStore::new(db.clone()), &db, &steps));
    }

    #[test]
    fn no_entry_leaves_the_file_log_without_a_record(steps in proptest::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = open_file_log(dir.path());
        rt.block_on(no_entry_leaves_without_a_record(RedbLogStore::new(db.clone()), &db, &steps));
    }

    #[test]
    fn no_entry_leaves_the_memory_log_without_a_record(steps in proptest::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let db = Db::in_memory();
        rt.block_on(no_entry_leaves_without_a_record(MemLogStore::on(db.clone()), &db, &steps));
    }
}
