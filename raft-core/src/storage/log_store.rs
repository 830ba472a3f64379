//! The durable Raft log, kept in a file of its own ([`super::wal`], on-disk
//! format 3) or, in a directory created before that, in redb (format 2),
//! written by a dedicated thread so that the leader's fsync overlaps
//! replication.
//!
//! The module describes the redb case; a format-3 store differs only in
//! where the writer puts things (`write_group_to_file`): entries go to the
//! log file and one `fdatasync` ends each group, while votes, rollback
//! records and the purged log id go to redb, each in a durable transaction,
//! in queue order.
//!
//! Raft may count an entry towards a commit only once it is on stable
//! storage (§5.3, and Figure 2's "persistent state"): a node that
//! acknowledged an entry and then forgot it in a crash could let a
//! committed entry disappear. But nothing requires the *leader* to finish
//! its own write before it sends the entry to followers: the leader is just
//! one of the votes a commit needs, and counts once its write is durable
//! (Raft thesis §10.2.1). etcd and TiKV overlap the two; so does this store.
//!
//! # The asynchronous append
//!
//! ```text
//!   openraft core                 RedbLogStore                 writer thread
//!   ─────────────                 ────────────                 ─────────────
//!   append(e5..e7, cb) ─────────▶ e5..e7 into `pending`
//!                                 (readable at once) ──queue──▶ takes every queued op,
//!   ◀──────────── returns          ...                          one redb transaction,
//!   replicate e5..e7 to                                         commit (fsync)
//!   followers meanwhile                                         drop e5..e7 from `pending`
//!                     ◀──────────────────────── cb: flushed ─── call cb, in queue order
//!   leader's own vote counts
//! ```
//!
//! `append` puts the entries into an in-memory `pending` map, where readers
//! (openraft's replication tasks) find them immediately, queues them for
//! the writer thread, and returns. The writer takes *everything* queued at
//! that moment (appends, votes, truncations, purges, in order) and writes
//! it in one redb transaction committed with
//! [`redb::Durability::Immediate`], which fsyncs. Only then does it call
//! the flush callbacks, in the order the operations were queued. A busy
//! leader therefore pays one fsync for every append that queued up during
//! the previous one (group commit), and its fsync runs while the
//! AppendEntries requests are on the wire.
//!
//! # A follower writes in place
//!
//! The overlap is the leader's gain. A follower has nothing to overlap its
//! write with: it answers the AppendEntries once the entries are durable.
//! So a follower's append, while the writer is idle, is written on the
//! calling task, by the same group write, before `append` returns
//! ([`RedbLogStore::write_in_place_when_following`], which `RaftNode` turns
//! on unless `Config::follower_writes_in_place` is off). That saves the two
//! thread hand-offs of every commit's follower half: waking the writer, and
//! the writer waking openraft's core with the callback.
//!
//! # Ordering (openraft's `docs/protocol/io_ordering.md`)
//!
//! Every write goes through the one queue and is applied in queue order:
//!
//! * `save_vote`, `truncate_after` and `purge` queue their operation and
//!   *wait* for its durable commit before returning. A vote is therefore
//!   durable before the node sends any message that depends on it, and a
//!   term's vote is durable no later than any entry of that term that
//!   follows it in the queue (they share a transaction, or the vote's
//!   commits first). A truncation is never reordered with an append.
//! * An append's callback fires only after the transaction holding its
//!   entries, and every operation queued before them, has committed.
//!
//! # Invariants
//! * Indexes are contiguous after the last purged entry: no holes. Readers
//!   see `pending` over redb, and an entry leaves `pending` only after the
//!   transaction that holds it committed.
//! * A vote is durable before `save_vote` returns: a node that forgets its
//!   vote can vote twice in one term and elect two leaders (split brain).
//!   Term and vote are one value, written in one transaction (hashicorp/raft
//!   once wrote them separately and could double-vote after a crash).
//! * `purge` records the last purged log id in the same transaction that
//!   deletes the entries, so `get_log_state` never reports a log that starts
//!   after a hole.
//!
//! A database opened with [`StorageOptions::unsafe_no_fsync`] breaks the
//! append promise on purpose: a group of appends is committed with
//! [`redb::Durability::None`] and its callbacks fire without an fsync (see
//! [`super::fault`]). Votes, truncations and purges stay durable.
//!
//! [`StorageOptions::unsafe_no_fsync`]: super::StorageOptions::unsafe_no_fsync

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use redb::{Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use super::blocking;
use super::db::{get_value, put_value, Db, DbError, LOG, META, SM};
use super::rollback;
use super::wal::{read_located, Wal};
use crate::codec;
use crate::types::{Entry, EntryPayload, LogId, NodeId, TypeConfig, Vote};

/// The writer takes at most this many queued operations into one
/// transaction (1,024), so that a flood of appends cannot make one
/// transaction, and the wait of the first append in it, unbounded.
const MAX_OPS_PER_TRANSACTION: usize = 1024;

/// The Raft log on redb. Cheap to clone: clones share the database, the
/// pending entries and the writer thread.
#[derive(Clone)]
pub struct RedbLogStore {
    shared: Arc<Shared>,
}

impl Debug for RedbLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbLogStore").field("db", &self.shared.state.db).finish_non_exhaustive()
    }
}

/// What the store's clones share. Dropping the last clone stops the writer
/// thread, after it has written everything queued, and waits for it: the
/// database is closed when the store is gone.
struct Shared {
    state: Arc<State>,
    /// The writer's queue; `None` once shutting down.
    queue: Mutex<Option<Queue>>,
    /// The writer thread; `None` in deterministic mode, where the writer is
    /// a task.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The writer's queue: to its thread, or, in deterministic mode
/// ([`crate::deterministic`]), to a task on the caller's runtime that does
/// the same work in the same order.
enum Queue {
    Thread(mpsc::Sender<Op>),
    Task(tokio::sync::mpsc::UnboundedSender<Op>),
}

/// What the writer thread shares with the store's clones.
struct State {
    db: Db,
    /// The log's own file, in a format-3 directory; `None`: the log is the
    /// database's `log` table.
    wal: Option<Mutex<Wal>>,
    /// Entries appended but not yet durable, by index.
    pending: Mutex<BTreeMap<u64, Entry>>,
    /// The newest commit index openraft told us of, not yet written: it
    /// rides along with the next write transaction (see `save_committed`).
    committed: Mutex<Option<LogId>>,
    /// The last durably saved vote, for readers.
    vote: Mutex<Option<Vote>>,
    /// Set when a write transaction failed: every later write fails too,
    /// because the writes after a lost one would leave a hole.
    failed: Mutex<Option<String>>,
    /// Format 3: the index at or below which the `leader` durability flags
    /// of the log file's records no longer count, their entries known to
    /// be committed (what `rollback::forget_committed` does to the
    /// `leader_durable` table in format 2). Kept in the log file's note.
    flags_forgotten_through: Mutex<u64>,
    /// Operations queued for the writer and not yet reported.
    outstanding: AtomicUsize,
    /// Held by whoever writes a group: the writer thread, or an append
    /// written in place (see [`RedbLogStore::write_in_place_when_following`]).
    writing: Mutex<()>,
    /// This node's id plus one, once the node has asked for appends to be
    /// written in place while it follows; 0: never.
    in_place_for: AtomicU64,
}

/// The note a format-3 log store keeps in its log file: the commit index
/// hint, and where its `leader` durability flags stop counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Note {
    committed: Option<LogId>,
    flags_forgotten_through: u64,
}

impl Note {
    fn of(wal: &Wal) -> Result<Option<Note>, DbError> {
        Ok(wal.note().map(codec::decode::<Note>).transpose()?)
    }
}

/// One queued write.
enum Op {
    Append { entries: Vec<Entry>, done: IOFlushed<TypeConfig> },
    Vote { vote: Vote, done: oneshot::Sender<io::Result<()>> },
    TruncateAfter { after: Option<LogId>, done: oneshot::Sender<io::Result<()>> },
    Purge { upto: LogId, done: oneshot::Sender<io::Result<()>> },
}

/// Locks `m`, also after a panic elsewhere: every value behind these locks
/// is replaced in one step, never left half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedbLogStore {
    /// A log store on an opened database. Starts the writer thread.
    pub fn new(db: Db) -> Self {
        Self::try_new(db)
            .unwrap_or_else(|e| panic!("invariant: a log store starts on an opened database ({e})"))
    }

    /// A log store on an opened database, or why its vote could not be read
    /// or its writer thread not started.
    pub fn try_new(db: Db) -> Result<Self, DbError> {
        let vote = read_meta::<Vote>(&db, "vote")?;
        let wal = db.open_log_file()?;
        let note = match &wal {
            Some(wal) => Note::of(wal)?,
            None => None,
        };
        let wal = wal.map(Mutex::new);
        let state = Arc::new(State {
            db,
            wal,
            pending: Mutex::new(BTreeMap::new()),
            committed: Mutex::new(None),
            vote: Mutex::new(vote),
            failed: Mutex::new(None),
            flags_forgotten_through: Mutex::new(note.map_or(0, |n| n.flags_forgotten_through)),
            outstanding: AtomicUsize::new(0),
            writing: Mutex::new(()),
            in_place_for: AtomicU64::new(0),
        });
        let writer_state = state.clone();
        let (queue, writer) = if crate::deterministic::is_on() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(run_writer_task(writer_state, rx));
            (Queue::Task(tx), None)
        } else {
            let (tx, rx) = mpsc::channel();
            let writer = std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || run_writer(&writer_state, &rx))
                .map_err(|e| DbError::Redb(redb::Error::Io(e)))?;
            (Queue::Thread(tx), Some(writer))
        };
        let shared = Shared { state, queue: Mutex::new(Some(queue)), writer: Mutex::new(writer) };
        Ok(RedbLogStore { shared: Arc::new(shared) })
    }

    fn state(&self) -> &State {
        &self.shared.state
    }

    /// The entries with an index in `range`, read on the calling thread.
    ///
    /// For tools that inspect a *stopped* node's log, such as the Jepsen
    /// harness replaying it; a running node reads through openraft's
    /// [`RaftLogReader`], which keeps the blocking read off the async core.
    pub fn read_entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, DbError> {
        let (start, end) = bounds(&range);
        self.read_range(start, end)
    }

    /// The last purged and the last log id, read on the calling thread
    /// (see [`RedbLogStore::read_entries`]).
    pub fn read_log_state(&self) -> Result<LogState<TypeConfig>, DbError> {
        self.log_state()
    }

    /// A log id known to be committed, read on the calling thread: the
    /// largest of the commit index saved with the last write, the last
    /// applied log id (an entry is applied only once committed), and the
    /// commit index this store was told of since. The true commit index may
    /// be further ahead, never behind.
    pub fn read_committed_hint(&self) -> Result<Option<LogId>, DbError> {
        let db = &self.state().db;
        let saved = read_meta::<Option<LogId>>(db, "committed").map(Option::flatten)?;
        let applied: Option<LogId> = db.guarded(|| {
            let tx = db.inner.begin_read()?;
            match tx.open_table(SM) {
                Ok(sm) => get_value(&sm, "applied"),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })?;
        let noted = match &self.state().wal {
            Some(wal) => Note::of(&lock(wal))?.and_then(|n| n.committed),
            None => None,
        };
        Ok(saved.max(applied).max(noted).max(*lock(&self.state().committed)))
    }

    /// Reads `[start, end)`: pending entries over what redb holds. The
    /// pending entries are copied *before* redb's read transaction starts,
    /// so an entry the writer moves from one to the other in between is
    /// found in one of them, never in neither.
    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, DbError> {
        let pending: Vec<Entry> =
            lock(&self.state().pending).range((start, end)).map(|(_, e)| e.clone()).collect();
        let redb_end = match pending.first() {
            Some(first) => Bound::Excluded(first.log_id.index),
            None => end,
        };
        let mut out = Vec::new();
        if let Some(wal) = &self.state().wal {
            if !empty_range(start, redb_end) {
                let (from, to) = index_range(start, redb_end);
                let located = lock(wal).locate(from, to);
                for record in read_located(&located)? {
                    out.push(codec::decode::<Entry>(&record.payload)?);
                }
            }
        } else if !empty_range(start, redb_end) {
            let db = &self.state().db;
            db.guarded(|| {
                let tx = db.inner.begin_read()?;
                let table = tx.open_table(LOG)?;
                for item in table.range::<u64>((start, redb_end))? {
                    let (_, v) = item?;
                    out.push(codec::decode::<Entry>(v.value())?);
                }
                Ok(())
            })?;
        }
        out.extend(pending);
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, DbError> {
        let last_pending = lock(&self.state().pending).values().next_back().map(|e| e.log_id);
        let db = &self.state().db;
        if let Some(wal) = &self.state().wal {
            let purged = read_meta::<LogId>(db, "purged")?;
            let last = match last_pending {
                Some(last) => Some(last),
                None => {
                    let located = {
                        let wal = lock(wal);
                        wal.bounds().map(|(_, last)| wal.locate(last, last + 1)).unwrap_or_default()
                    };
                    match read_located(&located)?.pop() {
                        Some(record) => Some(codec::decode::<Entry>(&record.payload)?.log_id),
                        None => purged,
                    }
                }
            };
            return Ok(LogState { last_purged_log_id: purged, last_log_id: last });
        }
        db.guarded(|| {
            let tx = db.inner.begin_read()?;
            let meta = tx.open_table(META)?;
            let purged: Option<LogId> = get_value(&meta, "purged")?;
            let log = tx.open_table(LOG)?;
            let last = match last_pending {
                Some(last) => Some(last),
                None => match log.last()? {
                    Some((_, v)) => Some(codec::decode::<Entry>(v.value())?.log_id),
                    None => purged,
                },
            };
            Ok(LogState { last_purged_log_id: purged, last_log_id: last })
        })
    }

    /// Lets this node's log writes skip the writer thread while it follows
    /// another leader: an append of entries is then written, and its
    /// callback called, on the calling task before `append` returns,
    /// whenever nothing is queued for the writer or being written by it.
    ///
    /// Overlapping the log write with replication is the leader's gain; a
    /// follower has nothing to overlap its write with. Its writer thread
    /// only adds two hand-offs to every AppendEntries it serves: waking the
    /// thread, and the thread telling openraft's core the write is done.
    /// On a small virtual machine each costs tens of microseconds, on the
    /// path of every commit. The write itself, its ordering with what was
    /// queued before (nothing: the writer is idle) and its durability are
    /// the writer's: the same group write, by the same code. The price is
    /// that the follower's openraft core, the caller, waits for the fsync
    /// instead of handling its next message; a follower's next message is
    /// mostly the next AppendEntries, which has to wait for this write
    /// anyway.
    ///
    /// `id` is this node's id. An append while the last saved vote is for
    /// this node (it leads, or stands for election) goes to the writer
    /// thread as before, and so does every append of a store whose node
    /// never called this. A store in deterministic mode
    /// ([`crate::deterministic`]) always writes through its writer task,
    /// where the simulator's crash points are.
    pub fn write_in_place_when_following(&self, id: NodeId) {
        self.state().in_place_for.store(id.saturating_add(1), Ordering::SeqCst);
    }

    /// Writes the append `op` here and now if this node follows another
    /// leader and the writer is idle (see
    /// [`RedbLogStore::write_in_place_when_following`]); otherwise hands
    /// `op` back, to be queued.
    fn write_in_place(&self, op: Op) -> Option<Op> {
        let state = self.state();
        let Some(me) = state.in_place_for.load(Ordering::SeqCst).checked_sub(1) else { return Some(op) };
        let following = lock(&state.vote).is_some_and(|v| v.leader_id.voted_for != me);
        let threaded = matches!(&*lock(&self.shared.queue), Some(Queue::Thread(_)));
        if !(following && threaded) {
            return Some(op);
        }
        // Holding `writing`, with nothing outstanding, nothing queued can
        // be written before or during this write: what is queued from now
        // on waits for the lock, and comes after this append anyway.
        let Ok(_writing) = state.writing.try_lock() else { return Some(op) };
        if state.outstanding.load(Ordering::SeqCst) != 0 {
            return Some(op);
        }
        write_and_report(state, vec![op]);
        None
    }

    /// Queues `op` for the writer; fails if the writer stopped.
    fn submit(&self, op: Op) -> io::Result<()> {
        if let Some(reason) = lock(&self.state().failed).clone() {
            return Err(io::Error::other(format!("the log store failed earlier: {reason}")));
        }
        match &*lock(&self.shared.queue) {
            Some(Queue::Thread(queue)) => {
                self.state().outstanding.fetch_add(1, Ordering::SeqCst);
                queue.send(op).map_err(|_| {
                    self.state().outstanding.fetch_sub(1, Ordering::SeqCst);
                    io::Error::other("the log writer thread has stopped")
                })
            }
            Some(Queue::Task(queue)) => {
                queue.send(op).map_err(|_| io::Error::other("the log writer task has stopped"))
            }
            None => Err(io::Error::other("the log store is shutting down")),
        }
    }

    /// Queues a write that completes through `rx`, and waits for it.
    async fn submit_and_wait(
        &self,
        op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Op,
    ) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.submit(op(done))?;
        rx.await.unwrap_or_else(|_| Err(io::Error::other("the log writer thread stopped before the write")))
    }
}

impl Drop for Shared {
    /// Closes the queue and waits for the writer to finish what was queued.
    fn drop(&mut self) {
        drop(lock(&self.queue).take());
        if let Some(writer) = lock(&self.writer).take() {
            if writer.join().is_err() {
                tracing::error!("the log writer thread panicked");
            }
        }
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(db: &Db, key: &str) -> Result<Option<T>, DbError> {
    db.guarded(|| {
        let tx = db.inner.begin_read()?;
        let meta = tx.open_table(META)?;
        get_value(&meta, key)
    })
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

/// `(start, end)` as a half-open range `[from, to)`.
fn index_range(start: Bound<u64>, end: Bound<u64>) -> (u64, u64) {
    let from = match start {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match end {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

/// Whether `(start, end)` holds no index.
fn empty_range(start: Bound<u64>, end: Bound<u64>) -> bool {
    let first = match start {
        Bound::Included(s) => s,
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => s,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match end {
        Bound::Included(e) => first > e,
        Bound::Excluded(e) => first >= e,
        Bound::Unbounded => false,
    }
}

// ---------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------

/// Takes every queued operation, writes them in one transaction, and
/// reports each one's completion, until the queue closes.
fn run_writer(state: &State, queue: &mpsc::Receiver<Op>) {
    while let Ok(first) = queue.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_OPS_PER_TRANSACTION {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let n = ops.len();
        let _writing = lock(&state.writing);
        write_and_report(state, ops);
        state.outstanding.fetch_sub(n, Ordering::SeqCst);
    }
}

/// The writer of deterministic mode: [`run_writer`] as a task. It groups
/// whatever queued while it waited, exactly as the thread does.
///
/// The simulator's [`Knobs`](crate::deterministic::Knobs) act here: a write
/// may take simulated time (so that other tasks, and crashes, run while it
/// is in progress), and the negative control reports appends before they
/// are written.
async fn run_writer_task(state: Arc<State>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Op>) {
    while let Some(first) = queue.recv().await {
        let mut ops = vec![first];
        while ops.len() < MAX_OPS_PER_TRANSACTION {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        if crate::deterministic::knobs().unsafe_flush_before_commit {
            for op in &mut ops {
                if let Op::Append { entries, done } = op {
                    notify_durable(entries);
                    std::mem::replace(done, IOFlushed::noop()).io_completed(Ok(()));
                }
            }
        }
        if let Some(latency) = crate::deterministic::storage_latency() {
            tokio::time::sleep(latency).await;
        }
        write_and_report(&state, ops);
    }
}

/// Writes one group of queued operations in one transaction, and reports
/// each one's completion in queue order.
fn write_and_report(state: &State, ops: Vec<Op>) {
    let failed = lock(&state.failed).clone();
    let result = match failed {
        Some(reason) => Err(format!("the log store failed earlier: {reason}")),
        None => write_group(state, &ops).map_err(|e| {
            tracing::error!(error = %e, "writing the Raft log failed; the node stops");
            *lock(&state.failed) = Some(e.to_string());
            e.to_string()
        }),
    };
    if result.is_ok() {
        // Entries leave `pending` only now that redb holds them durably
        // (see `read_range`). An entry replaced in `pending` since (a
        // truncation and a new append at its index) has another log id
        // and stays.
        let mut pending = lock(&state.pending);
        for op in &ops {
            if let Op::Append { entries, .. } = op {
                for e in entries {
                    if pending.get(&e.log_id.index).is_some_and(|p| p.log_id == e.log_id) {
                        pending.remove(&e.log_id.index);
                    }
                }
            }
        }
    }
    for op in ops {
        let outcome = || result.clone().map_err(io::Error::other);
        match op {
            Op::Append { done, entries } => {
                if result.is_ok() {
                    notify_durable(&entries);
                }
                done.io_completed(outcome())
            }
            Op::Vote { done, .. } | Op::TruncateAfter { done, .. } | Op::Purge { done, .. } => {
                let _ = done.send(outcome());
            }
        }
    }
}

/// Whether a writer waits for `entry` to be durable on this node.
pub(crate) fn is_noted(entry: &Entry) -> bool {
    matches!(&entry.payload, EntryPayload::Normal(batch) if batch.is_noted())
}

/// Tells the writers waiting for `entries` that they are durable here.
pub(crate) fn notify_durable(entries: &[Entry]) {
    for e in entries {
        if let EntryPayload::Normal(batch) = &e.payload {
            batch.notify_durable(e.log_id);
        }
    }
}

/// Writes `ops` in order in one transaction and commits it: durably, unless
/// every op is an append and the database acknowledges appends before fsync
/// (`unsafe_no_fsync`).
fn write_group(state: &State, ops: &[Op]) -> Result<(), DbError> {
    match &state.wal {
        Some(wal) => state.db.guarded(|| write_group_to_file(state, wal, ops)),
        None => state.db.guarded(|| write_group_unguarded(state, ops)),
    }
}

/// The flag of a format-3 log record whose entry a writer waits for at
/// `leader` durability (what the `leader_durable` table notes in format 2).
const FLAG_NOTED: u8 = 1;

/// [`write_group`] for a log in a file of its own (format 3). Appends go to
/// the file; votes, and the rollback records and purged log id of
/// truncations and purges, to the database, each in a durable transaction
/// of its own, in queue order. The file is synced once, at the end, outside
/// its lock (readers go on meanwhile), unless the group is only appends
/// and the database acknowledges appends before fsync.
///
/// A truncation writes its rollback record before the file's truncation
/// record: a crash between the two leaves the entries in the log, and the
/// next truncation records them again (twice, never not at all).
fn write_group_to_file(state: &State, wal: &Mutex<Wal>, ops: &[Op]) -> Result<(), DbError> {
    let only_appends = ops.iter().all(|op| matches!(op, Op::Append { .. }));
    let mut new_vote = None;
    let durable_tx = || -> Result<redb::WriteTransaction, DbError> {
        let mut tx = state.db.inner.begin_write()?;
        tx.set_durability(Durability::Immediate).map_err(redb::Error::from)?;
        Ok(tx)
    };
    let entry_of = |record: super::wal::Record| -> Result<(Entry, bool), DbError> {
        Ok((codec::decode::<Entry>(&record.payload)?, record.flags & FLAG_NOTED != 0))
    };
    for op in ops {
        match op {
            Op::Append { entries, .. } => {
                let encoded: Vec<(u64, u8, Vec<u8>)> = entries
                    .iter()
                    .map(|e| (e.log_id.index, if is_noted(e) { FLAG_NOTED } else { 0 }, codec::encode(e)))
                    .collect();
                lock(wal).append(encoded.iter().map(|(i, f, b)| (*i, *f, b.as_slice())))?;
            }
            Op::Vote { vote, .. } => {
                let tx = durable_tx()?;
                {
                    let mut meta = tx.open_table(META)?;
                    put_value(&mut meta, "vote", vote)?;
                    if let Some(committed) = *lock(&state.committed) {
                        put_value(&mut meta, "committed", &Some(committed))?;
                    }
                }
                tx.commit()?;
                new_vote = Some(*vote);
            }
            Op::TruncateAfter { after, .. } => {
                let from = after.map_or(0, |l| l.index + 1);
                let removed = lock(wal).read(from, u64::MAX)?;
                if !removed.is_empty() {
                    let removed = removed.into_iter().map(entry_of).collect::<Result<Vec<_>, _>>()?;
                    let term = new_vote.or(*lock(&state.vote)).map_or(0, |v| v.leader_id.term);
                    let tx = durable_tx()?;
                    rollback::record_flagged(&tx, removed, term)?;
                    tx.commit()?;
                }
                lock(wal).truncate_from(from)?;
            }
            Op::Purge { upto, .. } => {
                // Acknowledged entries not known to be committed get a
                // record before they go (a snapshot installed over an old
                // leader's tail). Known to be committed: at or below a
                // commit index whose entry this log holds (Log Matching).
                let committed = *lock(&state.committed);
                let noted = lock(wal).flagged(0, upto.index.saturating_add(1), FLAG_NOTED);
                let held_at = |index: u64| -> Result<Option<LogId>, DbError> {
                    match lock(wal).read(index, index.saturating_add(1))?.pop() {
                        Some(record) => Ok(Some(entry_of(record)?.0.log_id)),
                        None => Ok(None),
                    }
                };
                let proven = match committed {
                    Some(c) if held_at(c.index)? == Some(c) => c.index,
                    _ => 0,
                };
                let forgotten = proven.max(*lock(&state.flags_forgotten_through));
                let mut flagged = Vec::new();
                for index in noted.into_iter().filter(|&i| i > forgotten) {
                    if let Some(record) = lock(wal).read(index, index + 1)?.pop() {
                        flagged.push(entry_of(record)?.0);
                    }
                }
                let term = new_vote.or(*lock(&state.vote)).map_or(0, |v| v.leader_id.term);
                let tx = durable_tx()?;
                rollback::record_purged_flagged(&tx, *upto, term, flagged)?;
                {
                    let mut meta = tx.open_table(META)?;
                    put_value(&mut meta, "purged", upto)?;
                    if let Some(committed) = committed {
                        put_value(&mut meta, "committed", &Some(committed))?;
                    }
                }
                tx.commit()?;
                lock(wal).purge_through(upto.index)?;
            }
        }
    }
    // The commit index rides along, as a note, when it moved (see
    // `save_committed`), with where the flags stop counting: up to a
    // commit index this log holds, by Log Matching (a commit index it does
    // not hold, a snapshot's installed over a diverging log, proves
    // nothing about the flagged entries before it; one with no flagged
    // entry before it needs no proof).
    if let Some(c) = *lock(&state.committed) {
        let mut forgotten = *lock(&state.flags_forgotten_through);
        if c.index > forgotten {
            let flagged = lock(wal).flagged(forgotten + 1, c.index.saturating_add(1), FLAG_NOTED);
            let held = || -> Result<bool, DbError> {
                match lock(wal).read(c.index, c.index.saturating_add(1))?.pop() {
                    Some(record) => Ok(entry_of(record)?.0.log_id == c),
                    None => Ok(false),
                }
            };
            if flagged.is_empty() || held()? {
                forgotten = c.index;
            }
        }
        let note = codec::encode(&Note { committed: Some(c), flags_forgotten_through: forgotten });
        let mut wal = lock(wal);
        if wal.note() != Some(note.as_slice()) {
            wal.write_note(&note)?;
        }
        *lock(&state.flags_forgotten_through) = forgotten;
    }
    if !(only_appends && state.db.options().unsafe_no_fsync) {
        let unsynced = lock(wal).to_sync();
        if let Some((file, name)) = unsynced {
            file.sync_data().map_err(|source| super::wal::WalError::Io { file: name, source })?;
            lock(wal).mark_synced();
        }
    }
    if new_vote.is_some() {
        *lock(&state.vote) = new_vote;
    }
    Ok(())
}

fn write_group_unguarded(state: &State, ops: &[Op]) -> Result<(), DbError> {
    let only_appends = ops.iter().all(|op| matches!(op, Op::Append { .. }));
    let durability = if only_appends && state.db.options().unsafe_no_fsync {
        Durability::None
    } else {
        Durability::Immediate
    };
    let mut new_vote = None;
    let mut tx = state.db.inner.begin_write()?;
    tx.set_durability(durability).map_err(redb::Error::from)?;
    {
        let mut log = tx.open_table(LOG)?;
        let mut meta = tx.open_table(META)?;
        let entry_at = |log: &redb::Table<u64, &[u8]>, index: u64| -> Result<Option<Entry>, DbError> {
            match log.get(index)? {
                Some(v) => Ok(Some(codec::decode::<Entry>(v.value())?)),
                None => Ok(None),
            }
        };
        // Entries now known to be committed can no longer be lost: their
        // `leader` durability flags go (see `rollback`).
        if let Some(committed) = *lock(&state.committed) {
            rollback::forget_committed(&tx, committed, |i| Ok(entry_at(&log, i)?.map(|e| e.log_id)))?;
        }
        for op in ops {
            match op {
                Op::Append { entries, .. } => {
                    for entry in entries {
                        log.insert(entry.log_id.index, codec::encode(entry).as_slice())?;
                    }
                    let noted = entries.iter().filter(|e| is_noted(e));
                    let positions: Vec<(u64, u64)> =
                        noted.map(|e| (e.log_id.index, e.log_id.leader_id.term)).collect();
                    if !positions.is_empty() {
                        rollback::note_leader_durable(&tx, positions)?;
                    }
                }
                Op::Vote { vote, .. } => {
                    put_value(&mut meta, "vote", vote)?;
                    new_vote = Some(*vote);
                }
                Op::TruncateAfter { after, .. } => {
                    // Nothing leaves the log without its rollback record,
                    // written in this same transaction.
                    let from = after.map_or(0, |l| l.index + 1);
                    let mut removed = Vec::new();
                    for item in log.range::<u64>(from..)? {
                        let (_, v) = item?;
                        removed.push(codec::decode::<Entry>(v.value())?);
                    }
                    let vote = new_vote.or(*lock(&state.vote));
                    rollback::record(&tx, removed, vote.map_or(0, |v| v.leader_id.term))?;
                    log.retain_in::<u64, _>(from.., |_, _| false)?;
                }
                Op::Purge { upto, .. } => {
                    // Acknowledged entries not known to be committed get a
                    // record before they go (a snapshot installed over an
                    // old leader's tail). Known to be committed is judged
                    // again here, against the log as this transaction has
                    // it: the entry at the commit index may have been
                    // appended earlier in this same group.
                    if let Some(committed) = *lock(&state.committed) {
                        rollback::forget_committed(&tx, committed, |i| {
                            Ok(entry_at(&log, i)?.map(|e| e.log_id))
                        })?;
                    }
                    let vote = new_vote.or(*lock(&state.vote));
                    let term = vote.map_or(0, |v| v.leader_id.term);
                    rollback::record_purged(&tx, *upto, term, |i| entry_at(&log, i))?;
                    log.retain_in::<u64, _>(..=upto.index, |_, _| false)?;
                    put_value(&mut meta, "purged", upto)?;
                }
            }
        }
        if let Some(committed) = *lock(&state.committed) {
            put_value(&mut meta, "committed", &Some(committed))?;
        }
    }
    tx.commit()?;
    if new_vote.is_some() {
        *lock(&state.vote) = new_vote;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// openraft's storage traits
// ---------------------------------------------------------------------------

fn io_err(e: DbError) -> io::Error {
    io::Error::other(e)
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        // Replication mostly reads what was just appended: serve it from
        // memory without a trip to a blocking thread.
        let first_pending = lock(&self.state().pending).keys().next().copied();
        let from_memory = match (first_pending, start) {
            (Some(first), Bound::Included(s)) => s >= first,
            (Some(first), Bound::Excluded(s)) => s >= first,
            _ => false,
        };
        if from_memory {
            return self.read_range(start, end).map_err(io_err);
        }
        let this = self.clone();
        blocking(move || this.read_range(start, end)).await.map_err(io_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.state().vote))
    }
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let this = self.clone();
        blocking(move || this.log_state()).await.map_err(io_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Queues the vote and returns once it is durable (with everything
    /// queued before it).
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.submit_and_wait(|done| Op::Vote { vote, done }).await
    }

    /// The commit index lets a restarted node re-apply committed entries
    /// before it hears from a leader. It is only a hint (losing the latest
    /// value in a crash is harmless: the applied index is committed too, and
    /// the leader tells us again), so it is not worth a write of its own:
    /// redb runs one write transaction at a time, and a transaction per
    /// commit would also hold up the next log append. It is kept in memory
    /// and written inside the next write transaction.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut pending = lock(&self.state().committed);
        *pending = (*pending).max(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let this = self.clone();
        blocking(move || this.read_committed_hint()).await.map_err(io_err)
    }

    /// Makes the entries readable, queues them for the writer thread and
    /// returns; `callback` fires once they are durable. See the
    /// [module docs](self). A follower's append may instead be written
    /// before this returns ([`RedbLogStore::write_in_place_when_following`]).
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let op = Op::Append { entries, done: callback };
        let Some(Op::Append { entries, done: callback }) = self.write_in_place(op) else {
            return Ok(());
        };
        {
            let mut pending = lock(&self.state().pending);
            for e in &entries {
                pending.insert(e.log_id.index, e.clone());
            }
        }
        self.submit(Op::Append { entries, done: callback })
    }

    /// Removes `(last_log_id, ∞)`: entries a new leader does not have.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.submit_and_wait(|done| Op::TruncateAfter { after: last_log_id, done }).await
    }

    /// Removes `(-∞, log_id.index]`, already covered by a snapshot.
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.submit_and_wait(|done| Op::Purge { upto: log_id, done }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer may take an append and a purge in one group (it was
    /// slow to wake, and both were queued). The entry at the commit index
    /// is then appended in the same transaction as the purge: the purge
    /// must still see that the entries behind it are committed, and keep
    /// no rollback record of them.
    #[test]
    fn a_purge_in_the_group_that_appended_the_commit_index_records_nothing() {
        use crate::types::log_id;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let state = State {
            db: db.clone(),
            wal: None,
            pending: Mutex::new(BTreeMap::new()),
            committed: Mutex::new(Some(log_id(1, 3))),
            vote: Mutex::new(Some(Vote::new(1, 1))),
            failed: Mutex::new(None),
            flags_forgotten_through: Mutex::new(0),
            outstanding: AtomicUsize::new(0),
            writing: Mutex::new(()),
            in_place_for: AtomicU64::new(0),
        };
        let (noted, _durable) = crate::types::Batch::noted(vec![serde_bytes::ByteBuf::from(vec![2u8])]);
        let mut entries: Vec<Entry> = (1..=3)
            .map(|i| Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Normal(crate::types::Batch::one(vec![1])),
            })
            .collect();
        entries[1].payload = EntryPayload::Normal(noted);
        let (purged, _) = oneshot::channel();
        let ops =
            [Op::Append { entries, done: IOFlushed::noop() }, Op::Purge { upto: log_id(1, 2), done: purged }];
        write_group(&state, &ops).unwrap();
        let records = rollback::records(&db).unwrap();
        assert!(records.is_empty(), "committed entries are not rolled back: {records:?}");
    }

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|i| Entry {
                log_id: crate::types::log_id(term, i),
                payload: EntryPayload::Normal(crate::types::Batch::one(vec![i as u8])),
            })
            .collect()
    }

    /// Appends `entries` and says whether they were durable (their
    /// callback called) by the time `append` returned; then waits for them.
    async fn durable_on_return(store: &mut RedbLogStore, entries: Vec<Entry>, hold_writer: bool) -> bool {
        use openraft::type_config::TypeConfigExt;
        let (done, mut flushed) = TypeConfig::oneshot();
        let shared = store.clone();
        let writing = hold_writer.then(|| lock(&shared.state().writing));
        store.append(entries, IOFlushed::signal(done)).await.unwrap();
        let on_return = flushed.try_recv().is_ok();
        drop(writing);
        if !on_return {
            flushed.await.unwrap().unwrap();
        }
        on_return
    }

    /// A follower's append is written before `append` returns; a leader's
    /// goes to the writer thread; and so does a follower's while the
    /// writer is busy, behind what it is writing. Whatever the path, the
    /// entries are in the log, in order, after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_writes_in_place_and_a_leader_through_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RedbLogStore::new(Db::open(dir.path()).unwrap());
            store.write_in_place_when_following(2);
            store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            assert!(
                durable_on_return(&mut store, entries(1, 1..=3), false).await,
                "a follower writes in place"
            );
            assert!(
                !durable_on_return(&mut store, entries(1, 4..=5), true).await,
                "a follower queues behind a busy writer"
            );
            store.save_vote(&Vote::new_committed(2, 2)).await.unwrap();
            assert!(
                !durable_on_return(&mut store, entries(2, 6..=6), true).await,
                "a leader writes through its thread"
            );
            let other_dir = tempfile::tempdir().unwrap();
            let mut other = RedbLogStore::new(Db::open(other_dir.path()).unwrap());
            other.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            assert!(
                !durable_on_return(&mut other, entries(1, 1..=1), true).await,
                "without the node's id, nothing is written in place"
            );
        }
        let store = RedbLogStore::new(Db::open(dir.path()).unwrap());
        let got: Vec<u64> = store.read_entries(..).unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn empty_ranges() {
        use Bound::*;
        assert!(empty_range(Included(5), Excluded(5)));
        assert!(!empty_range(Included(5), Included(5)));
        assert!(empty_range(Excluded(u64::MAX), Unbounded));
        assert!(!empty_range(Unbounded, Excluded(1)));
        assert!(empty_range(Unbounded, Excluded(0)));
    }
}
