//! The applied state: the application's data, the last applied log id and
//! membership, and the current snapshot.
//!
//! # In memory, checkpointed into redb
//!
//! The application's state lives in memory, in a persistent ordered map
//! ([`imbl::OrdMap`]): applying a committed entry changes memory only, and a
//! read view is an O(1) clone of the map that later applies do not disturb.
//! Durability comes from the log, which is already durable before an entry
//! can be committed. The state is written to redb only at a **checkpoint**:
//! every key changed since the previous checkpoint (found by comparing the
//! map with the one the previous checkpoint wrote, which shares every
//! untouched node with it), with the log id and membership the state
//! reflects, in one durable write transaction.
//!
//! A checkpoint is taken whenever openraft builds a snapshot
//! ([`Config::snapshot_every`](crate::Config::snapshot_every) entries), when
//! a snapshot is installed, when the node shuts down, and in the background
//! every [`Config::checkpoint_every_commands`](crate::Config::checkpoint_every_commands)
//! applied commands, which bounds what a restart must re-apply.
//!
//! # Why a restart neither loses nor repeats an applied command
//!
//! On restart the store loads the last checkpoint: a state that is exactly
//! the result of applying entries 1..=`applied` (one transaction wrote the
//! data and `applied` together). openraft then applies the entries after
//! `applied` again, from the log, up to the commit index. That works only if
//! those entries are still in the log, and they are: openraft purges the log
//! only behind a snapshot, and a snapshot's last log id is a checkpoint's
//! `applied`, made durable before the snapshot is reported built. A crash
//! loses at most the in-memory applies since the last checkpoint, which the
//! log replays. `tests/crash.rs` kills a process that appends, applies,
//! checkpoints and purges, at random moments, and checks exactly this.
//!
//! This is the classic write-ahead log and checkpoint (as in a database's
//! redo log), and the trade-off that hashicorp/raft's and etcd's
//! applications make too: the state must fit in memory, and a restart
//! re-applies the commands since the last checkpoint. It costs one redb write per
//! changed key per checkpoint instead of one per write, and a checkpoint
//! writes its keys in sorted order, so redb touches each page once.
//!
//! An earlier version applied every batch in its own redb transaction (without
//! fsync, in the log's database, so that the next log append made it
//! durable). With random keys that dirtied about one B-tree page per write,
//! which redb wrote out and the next append had to fsync, and it halved the
//! write throughput of a loaded cluster (`docs/benchmarks.md`).
//!
//! # Snapshots
//!
//! The applied state, with its log id, *is* the snapshot. Building one is a
//! checkpoint that also records its metadata (`snapshot_meta`: last
//! included log id and membership), which lets openraft purge the log
//! behind it; openraft uses only the metadata of a built snapshot
//! (`core/sm/worker.rs`). A snapshot's data ([`SnapshotData`]) is an O(1)
//! clone of the map in memory; it is encoded only when it must cross the
//! network, to a follower too far behind to catch up from the log, and the
//! follower installs it in one durable transaction that replaces its stored
//! state. A production system with a large state would stream the snapshot
//! instead of encoding it in memory.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use futures::{Stream, TryStreamExt};
use imbl::ordmap::DiffItem;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::RaftSnapshotBuilder;
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::blocking;
use super::db::{get_value, put_value, Db, DbError, SM};
use crate::app::{
    AppState, AppView, ApplyContext, EncodedStateMachine, Key, Published, StateError, StateEvent,
    StateMachine, StateMap, APP_TABLE,
};
use crate::codec;
use crate::types::{Entry, EntryPayload, LogId, Replies, Snapshot, SnapshotMeta, StoredMembership};

/// The version of the snapshot encoding, checked when one is installed.
const SNAPSHOT_FORMAT: u32 = 1;

/// Batches of up to this many commands are applied on the calling task:
/// applying works on memory and takes microseconds per command, less than
/// handing the batch to a blocking thread and back. Bigger ones (a restart
/// replaying the log) go to a blocking thread, so as not to hold up the
/// async runtime.
const INLINE_APPLY_MAX: usize = 512;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    pairs: Vec<(ByteBuf, ByteBuf)>,
}

/// The data of a snapshot: the whole applied state as of the snapshot's
/// last log id. Holding one costs O(1) (it shares the map with the state
/// it was taken from); [`SnapshotData::encode`] turns it into bytes for the
/// network, and [`SnapshotData::decode`] back.
#[derive(Clone, Default)]
pub struct SnapshotData {
    state: StateMap,
}

impl SnapshotData {
    #[cfg(test)]
    pub(crate) fn from_state(state: StateMap) -> Self {
        SnapshotData { state }
    }

    /// The snapshot's bytes: a format version and every key and value, in
    /// key order, encoded with [`crate::codec`].
    pub fn encode(&self) -> Vec<u8> {
        let pairs = self.state.iter().map(|(k, v)| (ByteBuf::from(&k[..]), ByteBuf::from(&v[..]))).collect();
        codec::encode(&SnapshotFile { format: SNAPSHOT_FORMAT, pairs })
    }

    /// Reads bytes written by [`SnapshotData::encode`]. Untrusted input
    /// (they arrive from the network): any defect is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        let file: SnapshotFile = codec::decode(bytes)?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(codec::DecodeError {
                what: "snapshot",
                reason: format!("snapshot format {} is not {SNAPSHOT_FORMAT}", file.format),
            });
        }
        let mut state = StateMap::new();
        for (k, v) in file.pairs {
            state.insert(Key::from(&k[..]), v.into_vec().into());
        }
        Ok(SnapshotData { state })
    }

    /// The number of keys it holds.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotData({} keys)", self.state.len())
    }
}

/// The state machine side of a node's storage. Cheap to clone: clones share
/// the state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    app: Arc<dyn EncodedStateMachine>,
    /// The applier's state. Its lock is held while a batch applies.
    working: Mutex<Working>,
    /// The state as of the last applied batch, for readers: they take an
    /// `Arc` and never wait for an apply.
    published: RwLock<Arc<Published>>,
    /// Held while a checkpoint or a snapshot install writes to redb, so
    /// that they never interleave.
    checkpoint: Mutex<()>,
    /// Start a background checkpoint after this many applied commands
    /// (0: never).
    checkpoint_every: AtomicU64,
    /// Commands applied since the last checkpoint started.
    since_checkpoint: AtomicU64,
    /// Whether a background checkpoint is running.
    checkpointing: AtomicBool,
    /// The thread of the last background checkpoint, joined by
    /// [`StateMachineStore::checkpoint`] so that none outlives a shutdown.
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Working {
    data: StateMap,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// The state as the last checkpoint wrote it. It shares every node of
    /// the map that no write touched since, so the next checkpoint finds
    /// what changed by walking only the nodes that differ
    /// ([`imbl::OrdMap::diff`]), without tracking each write.
    checkpointed: StateMap,
    /// The log id `checkpointed` reflects.
    checkpointed_at: Option<LogId>,
    /// The metadata of the snapshot last built or installed.
    snapshot: Option<SnapshotMeta>,
}

impl Working {
    fn published(&self) -> Arc<Published> {
        Arc::new(Published { data: self.data.clone(), applied: self.applied })
    }

    /// The metadata of a snapshot of the state now. Two snapshots at one
    /// log id hold the same data (the state machine is deterministic), so
    /// the log id names a snapshot.
    fn snapshot_meta(&self) -> SnapshotMeta {
        SnapshotMeta { last_log_id: self.applied, last_membership: self.membership.clone() }
    }
}

/// Locks `m`, also after a panic elsewhere: the state behind these locks is
/// only ever replaced whole, never left half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StateMachineStore {
    /// The state machine of `app`, kept in `db` (the same database as the
    /// node's log): loads the last checkpoint into memory.
    pub fn open(db: Db, app: impl StateMachine) -> Result<Self, DbError> {
        Self::open_shared(db, Arc::new(app))
    }

    /// Like [`StateMachineStore::open`], sharing `app` with its caller.
    pub(crate) fn open_shared(db: Db, app: Arc<dyn EncodedStateMachine>) -> Result<Self, DbError> {
        let working = load(&db)?;
        app.state_event(StateEvent::Loaded { applied: working.applied.map_or(0, |l| l.index) });
        let published = RwLock::new(working.published());
        let inner = Inner {
            db,
            app,
            working: Mutex::new(working),
            published,
            checkpoint: Mutex::new(()),
            checkpoint_every: AtomicU64::new(0),
            since_checkpoint: AtomicU64::new(0),
            checkpointing: AtomicBool::new(false),
            background: Mutex::new(None),
        };
        Ok(StateMachineStore { inner: Arc::new(inner) })
    }

    /// Also checkpoint in the background after every `commands` applied
    /// commands (0, the default, checkpoints only at snapshots, installs
    /// and shutdown). See [`Config::checkpoint_every_commands`](crate::Config::checkpoint_every_commands).
    pub fn set_checkpoint_every(&self, commands: u64) {
        self.inner.checkpoint_every.store(commands, Ordering::Relaxed);
    }

    /// The log index of the last checkpoint: a crash now would restart
    /// from the state as of this index (0: none yet).
    pub fn checkpointed_index(&self) -> u64 {
        lock(&self.inner.working).checkpointed_at.map_or(0, |l| l.index)
    }

    /// Starts a checkpoint on a thread of its own if enough commands were
    /// applied since the last one and none is running.
    fn maybe_checkpoint(&self, applied_commands: u64) {
        let every = self.inner.checkpoint_every.load(Ordering::Relaxed);
        let since =
            self.inner.since_checkpoint.fetch_add(applied_commands, Ordering::Relaxed) + applied_commands;
        if every == 0 || since < every || self.inner.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        if crate::deterministic::is_on() {
            // No threads in deterministic mode: the checkpoint runs here.
            if let Err(e) = this.checkpoint_inner(false) {
                tracing::warn!(error = %e, "checkpoint failed; the next one retries");
            }
            this.inner.checkpointing.store(false, Ordering::Release);
            return;
        }
        let spawned = std::thread::Builder::new().name("checkpoint".into()).spawn(move || {
            if let Err(e) = this.checkpoint_inner(false) {
                tracing::warn!(error = %e, "background checkpoint failed; the next one retries");
            }
            this.inner.checkpointing.store(false, Ordering::Release);
        });
        match spawned {
            // The previous thread has ended (`checkpointing` was false).
            Ok(thread) => *lock(&self.inner.background) = Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "could not start a checkpoint thread");
                self.inner.checkpointing.store(false, Ordering::Release);
            }
        }
    }

    /// A consistent view of the applied state, as of the last applied
    /// batch. Costs O(1); never waits for an apply in progress.
    pub fn view(&self) -> Result<AppView, DbError> {
        let state = self.inner.published.read().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(AppView { state })
    }

    fn applied(&self) -> (Option<LogId>, StoredMembership) {
        let w = lock(&self.inner.working);
        (w.applied, w.membership.clone())
    }

    /// Applies committed entries on the calling thread, exactly as
    /// openraft's [`RaftStateMachine::apply`] does, and returns one
    /// [`Replies`] per entry. The batch applies to a copy of the state, which
    /// replaces the state only if every command applied.
    ///
    /// For tools that replay a log outside a running node, such as the
    /// Jepsen harness rebuilding the state after each entry of a stopped
    /// node's log. The caller must pass committed entries, in log order,
    /// each exactly once: the store cannot tell.
    pub fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Replies>, DbError> {
        let mut w = lock(&self.inner.working);
        let mut data = w.data.clone();
        let mut replies = Vec::with_capacity(entries.len());
        let mut last = None;
        let mut membership = None;
        let mut commands = 0;
        let applied: Result<(), StateError> = (|| {
            let mut state = AppState { data: &mut data };
            for entry in entries {
                last = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => replies.push(Replies::default()),
                    EntryPayload::Normal(batch) => {
                        commands += batch.0.len() as u64;
                        let ctx = ApplyContext { log_id: entry.log_id };
                        let mut out = Vec::with_capacity(batch.0.len());
                        for cmd in batch.0 {
                            out.push(ByteBuf::from(self.inner.app.apply_encoded(&mut state, ctx, &cmd)?));
                        }
                        replies.push(Replies(out));
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        replies.push(Replies::default());
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = applied {
            // The copy is dropped: the applied state stays as it was.
            self.inner.app.state_event(StateEvent::Abandoned);
            return Err(e.into());
        }
        w.data = data;
        if last.is_some() {
            w.applied = last;
        }
        if let Some(m) = membership {
            w.membership = m;
        }
        let published = w.published();
        *self.inner.published.write().unwrap_or_else(|e| e.into_inner()) = published;
        if let Some(last) = last {
            // Still under the lock, so that events reach the application in
            // the order the states were published.
            self.inner.app.state_event(StateEvent::Applied { applied: last.index });
        }
        drop(w);
        self.maybe_checkpoint(commands);
        Ok(replies)
    }

    /// Writes a checkpoint: every key changed since the last one, with the
    /// log id and membership the state reflects, in one durable redb
    /// transaction. After it, a restart resumes from the state as it is now.
    /// A node calls this when it shuts down; snapshots call it too.
    pub fn checkpoint(&self) -> Result<SnapshotMeta, DbError> {
        let background = lock(&self.inner.background).take();
        if let Some(thread) = background {
            // It holds a clone of this store (and so the database) until it
            // ends; a node that shuts down must not leave it behind.
            let _ = thread.join();
        }
        self.checkpoint_inner(false).map(|(meta, _)| meta)
    }

    /// A checkpoint recorded as the current snapshot: its metadata and the
    /// state it wrote.
    fn checkpoint_snapshot(&self) -> Result<(SnapshotMeta, StateMap), DbError> {
        self.checkpoint_inner(true)
    }

    fn checkpoint_inner(&self, record_snapshot: bool) -> Result<(SnapshotMeta, StateMap), DbError> {
        let _writing = lock(&self.inner.checkpoint);
        self.inner.since_checkpoint.store(0, Ordering::Relaxed);
        let (data, checkpointed, meta) = {
            let w = lock(&self.inner.working);
            (w.data.clone(), w.checkpointed.clone(), w.snapshot_meta())
        };
        let changes = checkpointed.diff(&data).map(|change| match change {
            DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => (&k[..], Some(&v[..])),
            DiffItem::Remove(k, _) => (&k[..], None),
        });
        // On an error nothing was written, and `checkpointed` still says so.
        self.write_checkpoint(changes, &meta, record_snapshot, false)?;
        let mut w = lock(&self.inner.working);
        w.checkpointed = data.clone();
        w.checkpointed_at = meta.last_log_id;
        if record_snapshot {
            w.snapshot = Some(meta.clone());
        }
        Ok((meta, data))
    }

    /// One durable transaction: each change written (a value) or removed
    /// (`None`), the position of `meta` as applied, and `meta` as the
    /// current snapshot if `record_snapshot`. With `replace`, the stored
    /// state is cleared first.
    fn write_checkpoint<'k>(
        &self,
        changes: impl Iterator<Item = (&'k [u8], Option<&'k [u8]>)>,
        meta: &SnapshotMeta,
        record_snapshot: bool,
        replace: bool,
    ) -> Result<(), DbError> {
        let db = &self.inner.db;
        db.guarded(|| Self::write_checkpoint_unguarded(db, changes, meta, record_snapshot, replace))
    }

    fn write_checkpoint_unguarded<'k>(
        db: &Db,
        changes: impl Iterator<Item = (&'k [u8], Option<&'k [u8]>)>,
        meta: &SnapshotMeta,
        record_snapshot: bool,
        replace: bool,
    ) -> Result<(), DbError> {
        let tx = db.inner.begin_write()?;
        {
            if replace {
                tx.delete_table(APP_TABLE)?;
            }
            let mut app = tx.open_table(APP_TABLE)?;
            for (key, value) in changes {
                match value {
                    Some(value) => {
                        app.insert(key, value)?;
                    }
                    None => {
                        app.remove(key)?;
                    }
                }
            }
            let mut sm = tx.open_table(SM)?;
            match &meta.last_log_id {
                Some(applied) => put_value(&mut sm, "applied", applied)?,
                None => {
                    sm.remove("applied")?;
                }
            }
            put_value(&mut sm, "membership", &meta.last_membership)?;
            if record_snapshot {
                put_value(&mut sm, "snapshot_meta", meta)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn install(&self, meta: SnapshotMeta, data: SnapshotData) -> Result<(), DbError> {
        let state = data.state;
        let _writing = lock(&self.inner.checkpoint);
        self.write_checkpoint(state.iter().map(|(k, v)| (&k[..], Some(&v[..]))), &meta, true, true)?;
        let mut w = lock(&self.inner.working);
        *w = Working {
            data: state.clone(),
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            checkpointed: state,
            checkpointed_at: meta.last_log_id,
            snapshot: Some(meta),
        };
        let published = w.published();
        *self.inner.published.write().unwrap_or_else(|e| e.into_inner()) = published;
        let applied = w.applied.map_or(0, |l| l.index);
        self.inner.app.state_event(StateEvent::Installed { applied });
        Ok(())
    }

    /// The current snapshot: once one has been built or installed, the
    /// applied state now, which is at least as new as the recorded one.
    /// Costs O(1): the data shares the map in memory.
    fn current(&self) -> Option<Snapshot> {
        let w = lock(&self.inner.working);
        w.snapshot.as_ref()?;
        Some(Snapshot { meta: w.snapshot_meta(), snapshot: SnapshotData { state: w.data.clone() } })
    }
}

/// Reads the last checkpoint.
fn load(db: &Db) -> Result<Working, DbError> {
    db.guarded(|| load_unguarded(db))
}

fn load_unguarded(db: &Db) -> Result<Working, DbError> {
    let tx = db.inner.begin_read()?;
    let sm = tx.open_table(SM)?;
    let mut data = StateMap::new();
    match tx.open_table(APP_TABLE) {
        Ok(app) => {
            for item in redb::ReadableTable::iter(&app)? {
                let (k, v) = item?;
                data.insert(k.value().into(), v.value().into());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let applied = get_value(&sm, "applied")?;
    Ok(Working {
        data: data.clone(),
        applied,
        membership: get_value(&sm, "membership")?.unwrap_or_default(),
        checkpointed: data,
        checkpointed_at: applied,
        snapshot: get_value(&sm, "snapshot_meta")?,
    })
}

/// Turns a storage failure into the `io::Error` openraft's storage traits
/// return. openraft stops the node on any storage error: continuing after a
/// failed write could break Raft's safety.
pub(crate) fn io_err(e: DbError) -> io::Error {
    io::Error::other(e)
}

impl RaftSnapshotBuilder<crate::types::TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    /// A checkpoint that records itself as the current snapshot. openraft
    /// uses only the metadata of a built snapshot; the data is the state the
    /// checkpoint wrote, an O(1) clone.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let this = self.clone();
        let (meta, state) = blocking(move || this.checkpoint_snapshot()).await.map_err(io_err)?;
        Ok(Snapshot { meta, snapshot: SnapshotData { state } })
    }
}

impl RaftStateMachine<crate::types::TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.applied())
    }

    /// Applies every entry the stream yields as one batch (published only if
    /// all of them applied), then answers each waiting client. Answering
    /// after publishing means a client that got its answer can read its own
    /// write from this node's state.
    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<crate::types::TypeConfig>, io::Error>> + Unpin + Send,
    {
        let (entries, responders): (Vec<Entry>, Vec<_>) =
            entries.try_collect::<Vec<_>>().await?.into_iter().unzip();
        let commands: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(batch) => batch.0.len(),
                _ => 1,
            })
            .sum();
        let replies = if commands <= INLINE_APPLY_MAX {
            self.apply_blocking(entries).map_err(io_err)?
        } else {
            let this = self.clone();
            blocking(move || this.apply_blocking(entries)).await.map_err(io_err)?
        };
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        blocking(move || this.install(meta, snapshot)).await.map_err(io_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current())
    }
}
