//! The real log store on the simulated disk (`raft_core::storage::SimDisk`),
//! in deterministic mode, as a simulator runs it: what a power failure
//! keeps and loses, at every moment a log append can be caught in.
//!
//! The contract under test is Raft's (§5.3; `storage/log_store.rs`): an
//! entry whose flush callback reported success is on stable storage, so it
//! survives any power failure; an entry that was not acknowledged may be
//! lost or kept, but the log stays a contiguous prefix of what was
//! appended. And a reopen after a crash either recovers the database or
//! reports it corrupted: it never panics.
//!
//! Each scenario runs with `raft_core::deterministic` on, on a
//! current-thread tokio runtime, so the log writer is a task and a whole
//! redb transaction runs inside one poll. Crashes inside a transaction
//! therefore come from the disk: `SimDisk::crash_after` makes the power fail
//! during the n-th call that changes it, and the sweeps below try every n.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Register, Set};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftLogStorageExt};
use openraft::type_config::TypeConfigExt;
use openraft::RaftLogReader;
use proptest::prelude::*;
use raft_core::codec;
use raft_core::network::local::LocalRouter;
use raft_core::storage::{Db, OpenError, RedbLogStore, SimDisk, StorageOptions, Survive};
use raft_core::types::{log_id, Batch, Entry, EntryPayload, TypeConfig, Vote};
use raft_core::{Config, Node, RaftNode, Storage};

/// Entries per appended batch.
const BATCH: u64 = 3;
/// Waves of appends in [`append_waves`]; wave `w` submits `w % 3 + 1`
/// batches back to back, so the writer commits groups of 1 to 3.
const WAVES: u64 = 6;

fn entry(index: u64) -> Entry {
    let cmd = Set { key: format!("k{index}"), value: format!("v{index}") };
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(Batch::one(codec::encode(&cmd))) }
}

/// Runs `scenario` as a simulator would: deterministic mode on with `seed`,
/// on a current-thread runtime, dropped (with every task) at the end.
fn simulate<T>(seed: u64, scenario: impl AsyncFnOnce() -> T) -> T {
    let _deterministic = raft_core::deterministic::enter(seed);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(scenario())
}

/// What a node acknowledged before its power failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Acked {
    /// The vote was saved (its call returned success).
    vote: bool,
    /// The highest index whose append's flush callback reported success;
    /// every batch before it was acknowledged too.
    last: u64,
}

/// One incarnation of a node's log on `disk`: opens the database (new, or
/// recovered), saves a vote, then appends [`WAVES`] waves of batches after
/// whatever the log holds, each wave submitted back to back and then waited
/// for, as openraft's core does with its flush callbacks. Stops at the first
/// failure, which on a simulated disk means the power failed.
///
/// Returns what was acknowledged, and the log store still open (`None` if
/// the database did not open): the caller decides whether the node closes
/// cleanly (drops it; redb then commits durably once more) or loses its
/// power first.
async fn append_waves(disk: &SimDisk) -> (Acked, Option<RedbLogStore>) {
    let mut acked = Acked::default();
    let Ok(db) = Db::on_backend(disk.backend(), StorageOptions::default()) else { return (acked, None) };
    let Ok(mut log) = RedbLogStore::try_new(db) else { return (acked, None) };
    if log.save_vote(&Vote::new_committed(1, 1)).await.is_ok() {
        acked.vote = true;
        append_batches(&mut log, &mut acked).await;
    }
    (acked, Some(log))
}

/// The waves of [`append_waves`], noting each acknowledgement in `acked`.
async fn append_batches(log: &mut RedbLogStore, acked: &mut Acked) {
    let Ok(state) = log.get_log_state().await else { return };
    let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
    for wave in 0..WAVES {
        let mut flushed = Vec::new();
        for _ in 0..wave % 3 + 1 {
            let (done, rx) = TypeConfig::oneshot();
            let batch: Vec<Entry> = (next..next + BATCH).map(entry).collect();
            if log.append(batch, IOFlushed::signal(done)).await.is_err() {
                return;
            }
            next += BATCH;
            flushed.push((next - 1, rx));
        }
        for (last, rx) in flushed {
            match rx.await {
                Ok(Ok(())) => acked.last = last,
                _ => return,
            }
        }
    }
}

/// How a reopen after a crash went.
#[derive(Debug, PartialEq, Eq)]
enum Reopened {
    /// The database opened; its log holds entries `1..=last`.
    Ok { last: u64 },
    /// The database was reported corrupted.
    Corrupted,
}

/// Opens a new incarnation on `disk` and checks it against what the one
/// before acknowledged: every acknowledged entry and the vote are there,
/// and the log is a contiguous prefix of what was appended, every entry the
/// one written at its index. Panics (fails the test) on any violation and
/// on any error but [`OpenError::Corrupted`].
async fn reopen_and_check(disk: &SimDisk, acked: &Acked) -> Reopened {
    let db = match Db::on_backend(disk.backend(), StorageOptions::default()) {
        Ok(db) => db,
        Err(OpenError::Corrupted { .. }) => return Reopened::Corrupted,
        Err(e) => panic!("reopening after a crash failed: {e}"),
    };
    let mut log = RedbLogStore::try_new(db).expect("a log store on the reopened database");
    let vote = log.read_vote().await.expect("reading the vote");
    if acked.vote {
        assert_eq!(vote, Some(Vote::new_committed(1, 1)), "an acknowledged vote was lost");
    }
    let entries = log.read_entries(..).expect("reading the log");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e, &entry(i as u64 + 1), "the log is not the appended prefix at position {i}");
    }
    let last = entries.len() as u64;
    assert!(last >= acked.last, "acknowledged entries up to {} lost: the log ends at {last}", acked.last);
    Reopened::Ok { last }
}

/// How many disk calls (`write`, `set_len`, `sync_data`) one incarnation of
/// [`append_waves`] makes on a new disk: the crash points to sweep.
fn disk_calls() -> u64 {
    static CALLS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CALLS.get_or_init(count_disk_calls)
}

fn count_disk_calls() -> u64 {
    let disk = SimDisk::new();
    simulate(0, async || {
        let (acked, _open) = append_waves(&disk).await;
        let batches: u64 = (0..WAVES).map(|w| w % 3 + 1).sum();
        assert_eq!(acked, Acked { vote: true, last: batches * BATCH }, "no crash: everything acknowledged");
        // Before the clean close's own calls.
        calls(&disk)
    })
}

/// One crash: a new disk, power failing during its `op`-th disk call
/// (counted from 0, below [`disk_calls`]) keeping `survive`, then a reopen.
/// Twice: the second incarnation appends again on the recovered database
/// and crashes at the same count, or, if its work took fewer calls, right
/// after it.
fn crash_at(seed: u64, op: u64, survive: Survive) -> (SimDisk, Vec<Reopened>) {
    let disk = SimDisk::new();
    let mut reopened = Vec::new();
    for round in 0..2 {
        disk.crash_after(op, survive);
        let acked = simulate(seed, async || {
            let (acked, _open) = append_waves(&disk).await;
            if !disk.crash_fired() {
                assert!(round > 0, "op {op}: the armed crash never fired");
                disk.cut_power(survive);
            }
            acked
        });
        reopened.push(simulate(seed, async || reopen_and_check(&disk, &acked).await));
    }
    (disk, reopened)
}

#[test]
fn acknowledged_appends_and_votes_survive_a_power_cut() {
    let disk = SimDisk::new();
    let acked = simulate(1, async || {
        let (acked, _open) = append_waves(&disk).await;
        disk.cut_power(Survive::Nothing);
        acked
    });
    assert!(acked.vote && acked.last > 0);
    let reopened = simulate(1, async || reopen_and_check(&disk, &acked).await);
    assert_eq!(reopened, Reopened::Ok { last: acked.last });
}

/// Opens a database on a new incarnation of `disk` and its log store.
fn open_log(disk: &SimDisk, options: StorageOptions) -> RedbLogStore {
    let db = Db::on_backend(disk.backend(), options).expect("opening the database");
    RedbLogStore::try_new(db).expect("a log store on the database")
}

/// The sum of a disk's counted calls: writes, length changes and syncs.
fn calls(disk: &SimDisk) -> u64 {
    let stats = disk.stats();
    stats.writes + stats.set_lens + stats.syncs
}

#[test]
fn writes_not_synced_are_gone_after_a_power_cut() {
    // A second append, cut at each of the disk calls of its transaction:
    // some of its pages were written, but the commit's last sync never
    // completed, so with nothing unsynced surviving the append is gone,
    // and the first one, acknowledged, stays.
    let second_calls = {
        let disk = SimDisk::new();
        simulate(0, async || {
            let mut log = open_log(&disk, StorageOptions::default());
            log.blocking_append([entry(1), entry(2)]).await.unwrap();
            let before = calls(&disk);
            log.blocking_append([entry(3)]).await.unwrap();
            calls(&disk) - before
        })
    };
    assert!(second_calls >= 2, "a durable commit writes and syncs: {second_calls} calls");
    let mut lost = 0;
    for op in 0..second_calls {
        let disk = SimDisk::new();
        simulate(op, async || {
            let mut log = open_log(&disk, StorageOptions::default());
            log.blocking_append([entry(1), entry(2)]).await.unwrap();
            disk.crash_after(op, Survive::Nothing);
            assert!(log.blocking_append([entry(3)]).await.is_err(), "op {op}: acknowledged after the crash");
        });
        assert!(disk.crash_fired());
        lost += disk.stats().pages_lost;
        let reopened = simulate(op, async || reopen_and_check(&disk, &Acked { vote: false, last: 2 }).await);
        assert_eq!(
            reopened,
            Reopened::Ok { last: 2 },
            "op {op}: an append whose commit never finished survived"
        );
    }
    assert!(lost > 0, "some cuts came after pages of the second append were written");
}

#[test]
fn appends_acknowledged_before_fsync_are_lost_at_a_power_cut() {
    // The negative control's bug (`unsafe_no_fsync`): appends acknowledged
    // after a commit without fsync. The simulated disk loses them, as a
    // machine's power failure would.
    let disk = SimDisk::new();
    let unsafe_no_fsync = StorageOptions { unsafe_no_fsync: true, ..StorageOptions::default() };
    simulate(2, async || {
        let mut log = open_log(&disk, unsafe_no_fsync);
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap(); // votes stay durable
        for i in 1..=20 {
            log.blocking_append([entry(i)]).await.unwrap();
        }
        assert_eq!(log.read_entries(..).unwrap().len(), 20, "acknowledged and readable");
        disk.cut_power(Survive::Nothing);
    });
    let reopened = simulate(2, async || reopen_and_check(&disk, &Acked { vote: true, last: 0 }).await);
    assert_eq!(reopened, Reopened::Ok { last: 0 }, "20 acknowledged, never synced, all lost");
}

#[test]
fn the_old_incarnation_is_fenced_after_a_power_cut() {
    let disk = SimDisk::new();
    simulate(3, async || {
        let mut log = open_log(&disk, StorageOptions::default());
        log.blocking_append([entry(1)]).await.unwrap();
        disk.cut_power(Survive::Nothing);
        let image = disk.durable_image();
        let writes = disk.stats().writes;
        let after = log.blocking_append([entry(2)]).await;
        assert!(after.is_err(), "a dead node appended: {after:?}");
        assert!(log.save_vote(&Vote::new_committed(2, 1)).await.is_err());
        drop(log); // closing the database tries to write too
        assert_eq!(disk.durable_image(), image, "the dead incarnation changed the disk");
        assert_eq!(disk.stats().writes, writes);
    });
    let reopened = simulate(3, async || reopen_and_check(&disk, &Acked { vote: false, last: 1 }).await);
    assert_eq!(reopened, Reopened::Ok { last: 1 });
}

#[test]
fn a_crash_at_every_disk_call_loses_no_acknowledged_entry() {
    let calls = disk_calls();
    assert!(calls > 20, "the sweep covers several transactions: {calls} calls");
    for op in 0..calls {
        let (disk, reopened) = crash_at(op, op, Survive::Nothing);
        // With nothing unsynced surviving, redb's commit protocol always
        // finds the last durable commit.
        assert!(reopened.iter().all(|r| matches!(r, Reopened::Ok { .. })), "op {op}: {reopened:?}");
        assert_eq!(disk.stats().power_cuts, 2);
    }
}

#[test]
fn torn_power_cuts_at_every_disk_call_lose_no_acknowledged_entry() {
    // Every crash point, with a seeded part of the unsynced pages kept and
    // one possibly torn; several seeds per point.
    let calls = disk_calls();
    let (mut kept, mut torn, mut corrupted) = (0, 0, 0);
    for op in 0..calls {
        for seed in [op, op + 1000, op + 2000] {
            let (disk, reopened) = crash_at(seed, op, Survive::Seeded(seed));
            corrupted += reopened.iter().filter(|r| **r == Reopened::Corrupted).count();
            kept += disk.stats().pages_kept;
            torn += disk.stats().torn_writes;
        }
    }
    assert!(kept > 0 && torn > 0, "the sweep kept ({kept}) and tore ({torn}) unsynced pages");
    assert_eq!(corrupted, 0, "redb recovers every image a torn power cut leaves");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn torn_power_cuts_lose_no_acknowledged_entry(seed in any::<u64>(), op in 0..200u64) {
        let op = op % disk_calls();
        let (_, reopened) = crash_at(seed, op, Survive::Seeded(seed));
        for r in reopened {
            let recovered_or_reported = matches!(r, Reopened::Ok { .. } | Reopened::Corrupted);
            prop_assert!(recovered_or_reported, "{:?}", r);
        }
    }
}

#[test]
fn the_same_seed_leaves_the_same_image() {
    let calls = disk_calls();
    let mut images = std::collections::BTreeSet::new();
    for seed in 0..8 {
        let run = || {
            let (disk, _) = crash_at(seed, seed * 7 % calls, Survive::Seeded(seed));
            (disk.durable_image(), disk.stats())
        };
        let (first, stats) = run();
        let (second, stats_again) = run();
        assert!(first == second, "seed {seed}: two runs left different images");
        assert_eq!(stats, stats_again, "seed {seed}");
        images.insert(first);
    }
    assert!(images.len() > 1, "different seeds leave different images");
}

#[test]
fn a_node_restarts_on_its_simulated_disk() {
    // `Storage::Opened`: a one-node cluster on a SimDisk writes, loses its
    // power, and restarts on the same disk with the write applied.
    let disk = SimDisk::new();
    let mut config = Config::new("sim-disk");
    config.election_timeout_min = Duration::from_millis(50);
    config.election_timeout_max = Duration::from_millis(100);
    config.heartbeat_interval = Duration::from_millis(20);
    let members = BTreeMap::from([(1, Node::new("n1", ""))]);
    let start = async |disk: &SimDisk| {
        let db = Db::on_backend(disk.backend(), StorageOptions::default()).unwrap();
        let router = LocalRouter::new();
        let node =
            RaftNode::start_local(1, config.clone(), Storage::Opened(db), Register, &router).await.unwrap();
        (router, node)
    };
    let get = |node: &RaftNode<Register>| node.view().unwrap().get(b"k").unwrap();

    simulate(4, async || {
        let (_router, node) = start(&disk).await;
        node.initialize(members.clone()).await.unwrap();
        let set = Set { key: "k".into(), value: "v".into() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while node.write(&set).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "no write accepted within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(&node).as_deref(), Some(&b"v"[..]));
        // The power fails with the node running; the runtime's end kills
        // its tasks.
        disk.cut_power(Survive::Nothing);
    });
    simulate(5, async || {
        let (_router, node) = start(&disk).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while get(&node).is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the write was not re-applied within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(&node).as_deref(), Some(&b"v"[..]));
        assert!(!node.initialize(members.clone()).await.unwrap(), "the restarted node was initialized");
    });
}

#[test]
fn a_backend_that_holds_no_database_is_reported_corrupted() {
    let disk = SimDisk::new();
    let backend = disk.backend();
    redb::StorageBackend::write(&backend, 0, b"this is not a redb database, just some text").unwrap();
    let err = Db::on_backend(backend, StorageOptions::default()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains(raft_core::storage::db::BACKEND_PATH), "{err}");
}

#[test]
fn a_backend_whose_creation_was_interrupted_is_created_anew() {
    // What redb leaves when the power fails between its creation's two
    // syncs: storage grown, the header written without its magic number.
    let disk = SimDisk::new();
    let backend = disk.backend();
    redb::StorageBackend::set_len(&backend, 16 * 4096).unwrap();
    redb::StorageBackend::write(&backend, 9, &[1, 2, 3]).unwrap();
    redb::StorageBackend::sync_data(&backend).unwrap();
    let reopened = simulate(6, async || reopen_and_check(&disk, &Acked::default()).await);
    assert_eq!(reopened, Reopened::Ok { last: 0 });
}
