//! Closing and reopening a data directory gives back exactly what was
//! stored: vote, log, committed and purged log ids, applied state,
//! membership and snapshot. Also: opening something that is not a valid
//! data directory fails with an error naming the path, never a panic.

mod common;

use std::collections::BTreeSet;

use common::{Register, Set};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use raft_core::codec;
use raft_core::storage::{Db, OpenError, RedbLogStore, StateMachineStore};
use raft_core::types::{log_id, Batch, Entry, EntryPayload, Membership, Vote};

fn set(term: u64, index: u64, key: &str, value: &str) -> Entry {
    let cmd = Set { key: key.into(), value: value.into() };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Batch::one(codec::encode(&cmd))) }
}

#[tokio::test]
async fn everything_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);

    let (snapshot_before, log_before) = {
        let db = Db::open(dir.path()).unwrap();
        let mut log = RedbLogStore::new(db.clone());
        let mut sm = StateMachineStore::open(db.clone(), Register).unwrap();

        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let mut entries =
            vec![Entry { log_id: log_id(1, 1), payload: EntryPayload::Membership(membership.clone()) }];
        for i in 2..=20 {
            entries.push(set(2, i, &format!("k{}", i % 5), &format!("v{i}")));
        }
        log.blocking_append(entries.clone()).await.unwrap();
        common::apply(&mut sm, entries[..15].to_vec()).await;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        log.purge(log_id(2, 10)).await.unwrap();
        log.save_committed(Some(log_id(2, 18))).await.unwrap();
        common::apply(&mut sm, entries[15..18].to_vec()).await;
        // As a node does when it shuts down.
        sm.checkpoint().unwrap();
        let log_before = log.try_get_log_entries(0..100).await.unwrap();
        (snapshot, log_before)
    };

    let db = Db::open(dir.path()).unwrap();
    let mut log = RedbLogStore::new(db.clone());
    let mut sm = StateMachineStore::open(db, Register).unwrap();

    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(2, 1)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 10)));
    assert_eq!(state.last_log_id, Some(log_id(2, 20)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 18)));
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (11..=20).collect::<Vec<_>>());
    assert_eq!(entries, log_before);

    let (applied, stored_membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 18)));
    assert_eq!(stored_membership.membership(), &membership);

    let view = sm.view().unwrap();
    assert_eq!(view.applied(), Some(log_id(2, 18)));
    // k3 was last written by entry 18 ("v18"), k4 by entry 14.
    assert_eq!(view.get(b"k3").unwrap().as_deref(), Some(&b"v18"[..]));
    assert_eq!(view.get(b"k4").unwrap().as_deref(), Some(&b"v14"[..]));

    // The applied state is the snapshot: after a restart the current one
    // is the state as checkpointed (entry 18), covering the one built at 15
    // that the purge relied on.
    assert_eq!(snapshot_before.meta.last_log_id, Some(log_id(2, 15)));
    let snapshot = sm.get_current_snapshot().await.unwrap().expect("a snapshot exists after restart");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 18)));
    assert_eq!(snapshot.meta.last_membership, snapshot_before.meta.last_membership);
    let copy = tempfile::tempdir().unwrap();
    let mut other = StateMachineStore::open(Db::open(copy.path()).unwrap(), Register).unwrap();
    other.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let view = other.view().unwrap();
    assert_eq!(view.get(b"k3").unwrap().as_deref(), Some(&b"v18"[..]), "the snapshot holds the state at 18");
    assert_eq!(view.get(b"k4").unwrap().as_deref(), Some(&b"v14"[..]));
}

/// Without a checkpoint (a crash), a reopened store holds the state as of
/// the last snapshot, and the log still holds every entry after it, which
/// openraft applies again: nothing applied is lost.
#[tokio::test]
async fn a_crash_resumes_from_the_last_snapshot_and_the_log_covers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = (1..=20).map(|i| set(1, i, &format!("k{}", i % 5), &format!("v{i}"))).collect();
    {
        let db = Db::open(dir.path()).unwrap();
        let mut log = RedbLogStore::new(db.clone());
        let mut sm = StateMachineStore::open(db, Register).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        common::apply(&mut sm, entries[..15].to_vec()).await;
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(1, 15)));
        log.purge(log_id(1, 15)).await.unwrap();
        common::apply(&mut sm, entries[15..].to_vec()).await;
        assert_eq!(sm.view().unwrap().get(b"k3").unwrap().as_deref(), Some(&b"v18"[..]));
        // Dropped without a checkpoint, as in a crash.
    }
    let db = Db::open(dir.path()).unwrap();
    let mut log = RedbLogStore::new(db.clone());
    let mut sm = StateMachineStore::open(db, Register).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 15)), "the state as of the snapshot");
    assert_eq!(sm.view().unwrap().get(b"k3").unwrap().as_deref(), Some(&b"v13"[..]));
    let rest = log.try_get_log_entries(16..=20).await.unwrap();
    assert_eq!(rest, entries[15..].to_vec(), "the log holds everything after it");
    common::apply(&mut sm, rest).await;
    assert_eq!(sm.view().unwrap().get(b"k3").unwrap().as_deref(), Some(&b"v18"[..]));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 20)));
}

/// With `set_checkpoint_every(10)`, checkpoints happen in the background as
/// commands are applied, so a crash re-applies fewer than 10: here entries
/// 1 to 25 are applied, checkpoints fall at 10 and 20, and the restart
/// resumes from exactly 20 (the test waits for each checkpoint to finish,
/// so that the next one is not skipped for running into it).
#[tokio::test]
async fn background_checkpoints_bound_what_a_restart_reapplies() {
    const EVERY: u64 = 10;
    const APPLIED: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let sm = StateMachineStore::open(db, Register).unwrap();
        sm.set_checkpoint_every(EVERY);
        for i in 1..=APPLIED {
            sm.apply_blocking(vec![set(1, i, &format!("k{i}"), "v")]).unwrap();
            if i % EVERY == 0 {
                wait_for_background_checkpoint(&sm, i);
            }
        }
        assert_eq!(sm.checkpointed_index(), 20, "no checkpoint after the one at 20");
        // Dropped without a final checkpoint, as in a crash.
    }
    // A background checkpoint thread may still hold the database for a
    // moment after the store is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let db = loop {
        match Db::open(dir.path()) {
            Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => break other.unwrap(),
        }
    };
    let mut sm = StateMachineStore::open(db, Register).unwrap();
    let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
    assert_eq!(applied, 20, "the restart resumes from the last background checkpoint");
    assert!(APPLIED - applied < EVERY, "a restart re-applies {} commands", APPLIED - applied);
    let view = sm.view().unwrap();
    for i in 1..=APPLIED {
        let want = (i <= applied).then(|| b"v".to_vec());
        assert_eq!(view.get(format!("k{i}").as_bytes()).unwrap(), want, "k{i} after the restart");
    }
}

/// Waits until the background checkpoint due after applying entry `index`
/// has written it. The previous checkpoint's thread may still be finishing
/// when this one falls due, and a checkpoint never starts while another
/// runs; an empty apply (no entry, no command) gives the store another
/// chance to start it, as the next apply would.
fn wait_for_background_checkpoint(sm: &StateMachineStore, index: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sm.checkpointed_index() < index {
        assert!(
            std::time::Instant::now() < deadline,
            "no background checkpoint at {index} within 30 s: checkpointed {}",
            sm.checkpointed_index()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        sm.apply_blocking(Vec::new()).unwrap();
    }
    assert_eq!(sm.checkpointed_index(), index, "the checkpoint holds exactly the applied state");
}

#[tokio::test]
async fn installed_snapshot_replaces_state_and_survives_reopen() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let snapshot = {
        let db = Db::open(src.path()).unwrap();
        let mut sm = StateMachineStore::open(db, Register).unwrap();
        common::apply(&mut sm, vec![set(1, 1, "a", "1"), set(1, 2, "b", "2")]).await;
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // What openraft sends to a follower: the current snapshot.
        let current = sm.get_current_snapshot().await.unwrap().expect("built");
        assert_eq!(current.meta, built.meta);
        current
    };
    {
        let db = Db::open(dst.path()).unwrap();
        let mut sm = StateMachineStore::open(db.clone(), Register).unwrap();
        common::apply(&mut sm, vec![set(1, 1, "stale", "x")]).await;
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await.unwrap();
        // No checkpoint: installing is durable on its own.
    }
    let db = Db::open(dst.path()).unwrap();
    let mut sm = StateMachineStore::open(db, Register).unwrap();
    let view = sm.view().unwrap();
    assert_eq!(view.get(b"stale").unwrap(), None, "install replaces the whole state");
    assert_eq!(view.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 2)));
    let current = sm.get_current_snapshot().await.unwrap().unwrap().meta;
    assert_eq!(
        (current.last_log_id, current.last_membership),
        (snapshot.meta.last_log_id, snapshot.meta.last_membership.clone())
    );
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft.redb"), b"this is not a redb database, just some text").unwrap();
    let err = Db::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains(dir.path().to_str().unwrap()), "error names the path: {err}");
}

/// A fresh database whose format version is then overwritten with `version`.
fn database_with_format(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(Db::open(dir.path()).unwrap());
    let db = redb::Database::open(dir.path().join("raft.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let mut meta = tx.open_table(def).unwrap();
        meta.insert("format", codec::encode(&version).as_slice()).unwrap();
    }
    tx.commit().unwrap();
    dir
}

#[test]
fn an_unknown_format_version_is_refused() {
    let dir = database_with_format(99);
    let err = Db::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::UnknownFormat { found: 99, .. }), "{err:?}");
    assert!(err.to_string().contains("raft.redb"), "{err}");
}

/// Format 1 stored log ids and votes in openraft's (term, node id) leader-id
/// form; this build decodes the standard form, so it must refuse such a
/// directory rather than misread its votes and log ids.
#[test]
fn a_format_1_directory_from_before_single_term_leaders_is_refused() {
    let dir = database_with_format(1);
    let err = Db::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::UnknownFormat { found: 1, .. }), "{err:?}");
}

#[test]
fn a_foreign_redb_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join("raft.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
            tx.open_table(def).unwrap().insert(1, 2).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = Db::open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::ForeignDatabase { .. }), "{err:?}");
}

/// Keys the corruption tests' database holds.
const CORRUPTION_KEYS: u64 = 50;

/// A data directory with a vote, a log of 300 entries and a checkpointed
/// state of 50 keys, so that corruption can land in every kind of page;
/// and the bytes of its database file.
fn database_to_corrupt() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let db = Db::open(dir.path()).unwrap();
        let mut log = RedbLogStore::new(db.clone());
        let mut sm = StateMachineStore::open(db, Register).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        let entries: Vec<_> =
            (1..=300).map(|i| set(3, i, &format!("k{}", i % CORRUPTION_KEYS), &format!("v{i}"))).collect();
        log.blocking_append(entries.clone()).await.unwrap();
        common::apply(&mut sm, entries).await;
        sm.checkpoint().unwrap();
    });
    let bytes = std::fs::read(dir.path().join("raft.redb")).unwrap();
    (dir, bytes)
}

/// Flips 16 bytes at about 256 offsets spread over `original`, writes each
/// corrupted copy as the directory's database, and calls `check` on it with
/// the offset. Returns how many of the checks returned an error.
fn at_corrupted_offsets(
    dir: &std::path::Path,
    original: &[u8],
    check: impl Fn(&std::path::Path) -> Result<(), String> + std::panic::RefUnwindSafe,
) -> usize {
    let path = dir.join("raft.redb");
    let step = (original.len() / 256).max(1);
    let mut refused = 0;
    for offset in (0..original.len()).step_by(step) {
        let mut bytes = original.to_vec();
        for b in bytes.iter_mut().skip(offset).take(16) {
            *b ^= 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        match std::panic::catch_unwind(|| check(dir)) {
            Err(_) => panic!("panicked with corruption at offset {offset} (16 bytes)"),
            Ok(Err(_)) => refused += 1,
            Ok(Ok(())) => {}
        }
    }
    refused
}

/// What a restarting node reads from its directory: the vote, the log's
/// extent and entries, the applied state and its keys. Any error is
/// returned, not unwrapped.
fn read_everything(dir: &std::path::Path) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let db = Db::open(dir).map_err(|x| e(&x))?;
    let log = RedbLogStore::try_new(db.clone()).map_err(|x| e(&x))?;
    let state = log.read_log_state().map_err(|x| e(&x))?;
    let entries = log.read_entries(..).map_err(|x| e(&x))?;
    if entries.last().map(|e| e.log_id) != state.last_log_id {
        return Err(format!("log state {state:?} disagrees with the last entry"));
    }
    let sm = StateMachineStore::open(db, Register).map_err(|x| e(&x))?;
    let view = sm.view().map_err(|x| e(&x))?;
    for k in 0..CORRUPTION_KEYS {
        view.get(format!("k{k}").as_bytes()).map_err(|x| e(&x))?;
    }
    Ok(())
}

/// `corrupted_bytes_in_the_file_never_panic` on a populated database, at
/// four times as many offsets, and a database that opens is then read the
/// way a restarting node reads it and closed. redb 4.6 panics on some
/// corrupted files that open: with this file, flipping 16 bytes at offsets
/// such as 8352 or 8432 makes the database open, and then reading the log,
/// loading the checkpoint or closing the file panics inside redb (slice
/// index out of range in `btree_base.rs:283`; the final commit in redb's
/// `Drop`, `page_manager.rs:369`). Every transaction of the storage layer
/// runs under `Db::guarded` and closing under a guard of its own, so each
/// of these is an error naming the file. Without the guards this test
/// fails: the panic escapes `read_everything`.
#[test]
fn reading_and_closing_a_corrupted_file_that_opens_never_panics() {
    let (dir, original) = database_to_corrupt();
    read_everything(dir.path()).expect("the intact database reads");
    let refused = at_corrupted_offsets(dir.path(), &original, read_everything);
    assert!(refused > 0, "no corruption at any offset was reported as an error");
}

#[test]
fn corrupted_bytes_in_the_file_never_panic() {
    // Flip bytes across the file at many offsets; each open must return
    // either a working database or an error, never panic.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        db.flush().unwrap();
    }
    let path = dir.path().join("raft.redb");
    let original = std::fs::read(&path).unwrap();
    let step = (original.len() / 64).max(1);
    for offset in (0..original.len()).step_by(step) {
        let mut bytes = original.clone();
        for b in bytes.iter_mut().skip(offset).take(16) {
            *b ^= 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| Db::open(dir.path()).map(drop));
        assert!(result.is_ok(), "Db::open panicked with corruption at offset {offset}");
    }
}
