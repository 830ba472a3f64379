//! openraft's own storage conformance suite, run against both log stores
//! (with the redb state machine store). It checks log state after appends,
//! truncations and purges, vote persistence, membership tracking through
//! apply, and snapshot build/install.

mod common;

use common::Register;
use openraft::testing::{StoreBuilder, Suite};
use raft_core::storage::{Db, MemLogStore, RedbLogStore, StateMachineStore};
use raft_core::types::{StorageError, TypeConfig};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, RedbLogStore, StateMachineStore<Register>, tempfile::TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RedbLogStore, StateMachineStore<Register>), StorageError> {
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

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore<Register>, ()> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore<Register>), StorageError> {
        Ok((
            (),
            MemLogStore::new(),
            StateMachineStore::open(Db::in_memory(), Register).expect("open state machine"),
        ))
    }
}

#[test]
fn redb_store_passes_openraft_storage_suite() {
    Suite::test_all(RedbBuilder).expect("storage suite");
}

#[test]
fn memory_store_passes_openraft_storage_suite() {
    Suite::test_all(MemBuilder).expect("storage suite");
}
