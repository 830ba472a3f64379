//! The storage faults of `storage/fault.rs`, seen from outside: a child
//! process opens a data directory with [`StorageOptions`], appends log
//! entries and prints each index once `append` acknowledged it, then waits
//! to be killed with SIGKILL. The parent reopens the directory with safe
//! storage and looks at what survived.
//!
//! * With every unsynced write lost (a kill as a power failure), every
//!   acknowledged entry survives: the log fsyncs before it acknowledges.
//! * Acknowledging before fsync on top of that loses acknowledged entries:
//!   the negative control, showing that the test can see a loss. (redb keeps
//!   a commit without fsync in its own memory until the next durable one, so
//!   this control would lose entries on a kill even on a plain file.)
//!
//! The child is this same test binary, re-run with `--ignored --exact
//! fault_child` and its settings in environment variables.

mod child;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::RaftLogReader;
use raft_core::storage::{Db, OpenError, RedbLogStore, StorageOptions};
use raft_core::types::{log_id, Batch, Entry, EntryPayload};

const DIR_VAR: &str = "RAFT_CORE_FAULT_DIR";
/// Set (to any path) to make the child acknowledge appends before fsync.
const NO_FSYNC_VAR: &str = "RAFT_CORE_FAULT_NO_FSYNC";
/// How many entries the child appends, three per append.
const ENTRIES: u64 = 60;

/// The entry at `index`. The log store never decodes commands, so any
/// bytes will do.
fn entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Batch::one(format!("command {index}").into_bytes())),
    }
}

fn faulty(unsafe_no_fsync: bool) -> StorageOptions {
    StorageOptions { lose_unsynced_writes: true, unsafe_no_fsync, ..StorageOptions::default() }
}

/// The child: appends [`ENTRIES`] entries, printing the last index of each
/// acknowledged append, prints `done`, and waits to be killed. Does nothing
/// when run without the directory variable.
#[test]
#[ignore = "run by the other tests of this file"]
fn fault_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let no_fsync = std::env::var_os(NO_FSYNC_VAR).is_some();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let db = Db::open_with(Path::new(&dir), faulty(no_fsync)).unwrap();
        let mut log = RedbLogStore::new(db);
        let mut out = std::io::stdout();
        for first in (1..=ENTRIES).step_by(3) {
            log.blocking_append((first..first + 3).map(entry)).await.unwrap();
            writeln!(out, "{}", first + 2).unwrap();
        }
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
        std::future::pending::<()>().await;
    });
}

/// Runs the child to `done`, kills it, and returns the last index it
/// acknowledged and the entries the reopened log holds.
async fn append_then_kill(dir: &Path, no_fsync: bool) -> (u64, Vec<Entry>) {
    let mut env = vec![(DIR_VAR, dir)];
    if no_fsync {
        env.push((NO_FSYNC_VAR, dir));
    }
    let child = child::Child::spawn("fault_child", &env);
    let mut acked = 0;
    loop {
        let line = child.next_line(Duration::from_secs(30)).expect("the child prints `done` in time");
        if line == "done" {
            break;
        }
        // Other lines are the test harness's own ("running 1 test").
        if let Ok(index) = line.parse() {
            acked = index;
        }
    }
    child.kill();

    let mut log = RedbLogStore::new(Db::open(dir).unwrap());
    let state = log.get_log_state().await.unwrap();
    let last = state.last_log_id.map_or(0, |l| l.index);
    let entries = log.try_get_log_entries(1..=last).await.unwrap();
    (acked, entries)
}

#[tokio::test]
async fn a_kill_as_power_failure_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, entries) = append_then_kill(dir.path(), false).await;
    assert_eq!(acked, ENTRIES);
    let want: Vec<_> = (1..=ENTRIES).map(entry).collect();
    assert_eq!(entries, want, "every acknowledged entry survives, unchanged and in order");
}

#[tokio::test]
async fn acknowledging_before_fsync_loses_acknowledged_entries_in_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, entries) = append_then_kill(dir.path(), true).await;
    assert_eq!(acked, ENTRIES);
    // Nothing after the database's creation was fsynced, so the whole
    // acknowledged log is gone; what is left is still a clean prefix.
    assert!((entries.len() as u64) < acked, "acknowledged {acked}, {} survived", entries.len());
    let want: Vec<_> = (1..=entries.len() as u64).map(entry).collect();
    assert_eq!(entries, want);
}

/// A clean shutdown is not a power failure: dropping the database writes
/// out what it holds, so even unfsynced appends survive it.
#[tokio::test]
async fn a_clean_close_keeps_unfsynced_appends() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = RedbLogStore::new(Db::open_with(dir.path(), faulty(true)).unwrap());
        log.blocking_append((1..=3).map(entry)).await.unwrap();
    }
    let mut log = RedbLogStore::new(Db::open(dir.path()).unwrap());
    assert_eq!(log.try_get_log_entries(1..=3).await.unwrap(), (1..=3).map(entry).collect::<Vec<_>>());
}

#[test]
fn the_fault_backend_still_locks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open_with(dir.path(), faulty(false)).unwrap();
    let err = Db::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
}
