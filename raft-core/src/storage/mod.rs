//! Storage: where a node keeps its Raft log and its applied state.
//!
//! * [`db`]: the data directory, its single redb database and format version.
//! * [`log_store`]: the durable Raft log ([`RedbLogStore`]).
//! * [`state_machine`]: the applied state and snapshots ([`StateMachineStore`]).
//! * [`mem_log`]: a log kept in memory ([`MemLogStore`]) for tests.
//! * [`options`]: how a directory is opened ([`StorageOptions`]): safe by
//!   default, or with one of the faults below switched on.
//! * [`rollback`]: the records of entries a node removed from its log
//!   because a new leader's log replaced them.
//! * [`fault`]: storage faults for crash tests and negative controls: a
//!   backend that loses unsynced writes on a kill, and acknowledging log
//!   appends before fsync.
//! * [`wal`]: an append-only log file of checksummed records in
//!   preallocated segments: one fsync writes only the pages an append
//!   covers. Not yet the node's log (see its docs).
//! * [`sim_disk`]: a simulated disk ([`SimDisk`]) for deterministic
//!   simulation: a database in memory that outlives its process, with power
//!   cuts, torn writes and crash points inside a transaction.
//!
//! redb's calls block on disk I/O, so every call from openraft's async core
//! runs on tokio's blocking pool (`blocking`), never on a core thread.

pub mod db;
pub mod fault;
pub mod log_store;
pub mod mem_log;
pub mod options;
pub mod recovery;
pub mod rollback;
pub mod sim_disk;
pub mod state_machine;
pub mod wal;

pub use db::{Db, OpenError};
pub use fault::PowerLossBackend;
pub use log_store::RedbLogStore;
pub use mem_log::MemLogStore;
pub use options::StorageOptions;
pub use sim_disk::{SimBackend, SimDir, SimDisk, SimDiskStats, Survive};
pub use state_machine::{SnapshotData, StateMachineStore};

/// Runs blocking storage work on tokio's blocking pool and waits for it.
/// A panic inside `f` is re-raised here, in the caller. In deterministic
/// mode ([`crate::deterministic`]) `f` runs inline, on the caller's task.
pub(crate) async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if crate::deterministic::is_on() {
        return f();
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("invariant: blocking storage task was cancelled ({e})"),
        },
    }
}
