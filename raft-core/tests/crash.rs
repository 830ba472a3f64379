//! Crash safety of the redb log: a child process appends entries in a loop,
//! printing each index once `append` has reported it durable, applies them
//! to the state machine (in memory; see `storage/state_machine.rs`), and
//! now and then builds a snapshot (a checkpoint) and purges the log behind
//! it. The parent kills it with SIGKILL at a random moment, reopens the
//! directory, and checks that
//!
//! * every acknowledged entry is in the log, unchanged;
//! * the log is a contiguous prefix (no holes, no garbage after it);
//! * the applied state equals a replay of the log up to `applied`, which is
//!   never beyond the log: applied state is never lost or repeated;
//! * the log still holds every entry after `applied` (the purge never
//!   passed the last checkpoint), so a restart can re-apply them.
//!
//! Then it starts the child again on the same directory, which continues
//! from where the log ends, and kills it again, several rounds.
//!
//! The child is this same test binary, re-run with `--ignored --exact
//! crash_child` and the directory in an environment variable.

mod child;
mod common;

use std::io::Write;
use std::time::Duration;

use common::{Register, Set};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use raft_core::codec;
use raft_core::storage::{Db, RedbLogStore, StateMachineStore};
use raft_core::types::{log_id, Batch, Entry, EntryPayload};
use rand::Rng;

const DIR_VAR: &str = "RAFT_CORE_CRASH_DIR";

fn entry(index: u64) -> Entry {
    let cmd = Set { key: format!("k{}", index % 7), value: format!("v{index}") };
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Batch::one(codec::encode(&cmd))),
    }
}

/// The child: appends, acknowledges, applies, purges now and then. Runs
/// until killed. Does nothing when run without the directory variable.
#[test]
#[ignore = "run by crash_at_random_moments_loses_no_acknowledged_entry"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let db = Db::open(std::path::Path::new(&dir)).unwrap();
        let mut log = RedbLogStore::new(db.clone());
        let mut sm = StateMachineStore::open(db, Register).unwrap();
        let state = log.get_log_state().await.unwrap();
        let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
        let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
        // Catch the state machine up to the log, as openraft would on restart.
        if applied + 1 < next {
            let behind = log.try_get_log_entries(applied + 1..next).await.unwrap();
            common::apply(&mut sm, behind).await;
        }
        let mut out = std::io::stdout();
        loop {
            let batch: Vec<_> = (next..next + 3).map(entry).collect();
            log.blocking_append(batch.clone()).await.unwrap();
            writeln!(out, "{}", next + 2).unwrap();
            out.flush().unwrap();
            common::apply(&mut sm, batch).await;
            if next % 300 == 1 && next > 300 {
                // A snapshot (a checkpoint of the applied state), then a
                // purge behind it, keeping 100 entries, as openraft does.
                let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
                let upto = snapshot.meta.last_log_id.expect("applied").index - 100;
                log.purge(log_id(1, upto)).await.unwrap();
            }
            next += 3;
        }
    });
}

#[tokio::test]
async fn crash_at_random_moments_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut total_acked = 0;

    for round in 0..4 {
        let child = child::Child::spawn("crash_child", &[(DIR_VAR, dir.path())]);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        let acked = child.kill().iter().filter_map(|l| l.parse::<u64>().ok()).max().unwrap_or(0);
        assert!(acked > total_acked, "round {round}: the child made progress ({acked} > {total_acked})");
        total_acked = acked;

        let db = Db::open(dir.path()).unwrap();
        let mut log = RedbLogStore::new(db.clone());
        let mut sm = StateMachineStore::open(db, Register).unwrap();
        let state = log.get_log_state().await.unwrap();
        let last = state.last_log_id.expect("log not empty").index;
        assert!(last >= acked, "round {round}: acknowledged {acked} but the log ends at {last}");

        let first = state.last_purged_log_id.map_or(1, |l| l.index + 1);
        let entries = log.try_get_log_entries(first..=last).await.unwrap();
        assert_eq!(entries.len() as u64, last - first + 1, "round {round}: a hole in the log");
        for e in &entries {
            assert_eq!(e, &entry(e.log_id.index), "round {round}: entry {} changed", e.log_id.index);
        }

        // The applied state is a consistent prefix: replaying the log from
        // the purge point can only reach it if every key holds the value of
        // its last write at or before `applied`.
        let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
        assert!(applied <= last, "round {round}: applied {applied} beyond the log {last}");
        assert!(
            first <= applied + 1,
            "round {round}: purged up to {} past the checkpoint {applied}",
            first - 1
        );
        let view = sm.view().unwrap();
        for k in 0..7u64 {
            let last_write = (1..=applied).rev().find(|i| i % 7 == k);
            let got = view.get(format!("k{k}").as_bytes()).unwrap();
            let want = last_write.map(|i| format!("v{i}").into_bytes());
            assert_eq!(got, want, "round {round}: key k{k} at applied {applied}");
        }
        drop(view);
        drop(log);
        drop(sm);
    }
}
