//! openraft's own storage conformance suite, run against both log stores
//! (with the redb state machine store). It checks log state after appends,
//! truncations and purges, vote persistence, membership tracking through
//! apply, and snapshot build/install.

mod common;

use common::Register;
use openraft::testing::log::{StoreBuilder, Suite};
use raft_core::storage::{Db, MemLogStore, RedbLogStore, StateMachineStore};
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
async fn memory_store_passes_openraft_storage_suite() {
    Suite::test_all(MemBuilder).await.expect("storage suite");
}
