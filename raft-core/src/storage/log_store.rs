//! The durable Raft log, kept in redb.
//!
//! Raft may count an entry towards a commit only once it is on stable
//! storage of a majority (§5.3, and Figure 2's "persistent state"): a node
//! that acknowledged an entry and then forgot it in a crash could let a
//! committed entry disappear. So every method here that changes state
//! returns, or calls back, only after its write transaction committed with
//! [`redb::Durability::Immediate`], which fsyncs.
//!
//! # Invariants
//! * Indexes are contiguous after the last purged entry: no holes.
//! * A vote is durable before `save_vote` returns: a node that forgets its
//!   vote can vote twice in one term and elect two leaders (split brain).
//!   Term and vote are one value, written in one transaction (hashicorp/raft
//!   once wrote them separately and could double-vote after a crash).
//! * `purge` records the last purged log id in the same transaction that
//!   deletes the entries, so `get_log_state` never reports a log that starts
//!   after a hole.
//!
//! A database opened with [`StorageOptions::unsafe_no_fsync`] breaks the
//! first promise on purpose: appends are acknowledged without an fsync (see
//! [`super::fault`]). Nothing else changes.
//!
//! [`StorageOptions::unsafe_no_fsync`]: super::StorageOptions::unsafe_no_fsync

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError};
use redb::{Durability, ReadableDatabase, ReadableTable};

use super::blocking;
use super::db::{get_value, put_value, Db, DbError, LOG, META, SM};
use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The Raft log on redb. Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct RedbLogStore {
    db: Db,
    /// The newest commit index openraft told us of, not yet written: it
    /// rides along with the next log append (see `save_committed`).
    committed: std::sync::Arc<std::sync::Mutex<Option<LogId>>>,
}

impl RedbLogStore {
    /// A log store on an opened database.
    pub fn new(db: Db) -> Self {
        RedbLogStore { db, committed: Default::default() }
    }

    fn pending_committed(&self) -> Option<LogId> {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner())
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
    /// largest of the commit index saved with the last log append, the
    /// last applied log id (an entry is applied only once committed), and
    /// the commit index this store was told of since. The true commit index
    /// may be further ahead, never behind.
    pub fn read_committed_hint(&self) -> Result<Option<LogId>, DbError> {
        let saved = self.read_meta::<Option<LogId>>("committed").map(Option::flatten)?;
        let tx = self.db.inner.begin_read()?;
        let applied: Option<LogId> = match tx.open_table(SM) {
            Ok(sm) => get_value(&sm, "applied")?,
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(saved.max(applied).max(self.pending_committed()))
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, DbError> {
        let tx = self.db.inner.begin_read()?;
        let table = tx.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end))? {
            let (_, v) = item?;
            out.push(codec::decode::<Entry>(v.value())?);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, DbError> {
        let tx = self.db.inner.begin_read()?;
        let meta = tx.open_table(META)?;
        let purged: Option<LogId> = get_value(&meta, "purged")?;
        let log = tx.open_table(LOG)?;
        let last = match log.last()? {
            Some((_, v)) => Some(codec::decode::<Entry>(v.value())?.log_id),
            None => purged,
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DbError> {
        let tx = self.db.inner.begin_read()?;
        let meta = tx.open_table(META)?;
        get_value(&meta, key)
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), DbError> {
        let mut tx = self.db.inner.begin_write()?;
        tx.set_durability(durability).map_err(redb::Error::from)?;
        {
            let mut meta = tx.open_table(META)?;
            put_value(&mut meta, key, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn append_entries(&self, entries: &[Entry]) -> Result<(), DbError> {
        let durability =
            if self.db.options().unsafe_no_fsync { Durability::None } else { Durability::Immediate };
        let mut tx = self.db.inner.begin_write()?;
        tx.set_durability(durability).map_err(redb::Error::from)?;
        {
            let mut log = tx.open_table(LOG)?;
            for entry in entries {
                log.insert(entry.log_id.index, codec::encode(entry).as_slice())?;
            }
            if let Some(committed) = self.pending_committed() {
                let mut meta = tx.open_table(META)?;
                put_value(&mut meta, "committed", &Some(committed))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes entries with index in `range`, and records `purged` if given,
    /// in one durable transaction.
    fn delete_range(&self, range: (Bound<u64>, Bound<u64>), purged: Option<LogId>) -> Result<(), DbError> {
        let mut tx = self.db.inner.begin_write()?;
        tx.set_durability(Durability::Immediate).map_err(redb::Error::from)?;
        {
            let mut log = tx.open_table(LOG)?;
            log.retain_in::<u64, _>(range, |_, _| false)?;
            if let Some(purged) = purged {
                let mut meta = tx.open_table(META)?;
                put_value(&mut meta, "purged", &purged)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Turns a storage failure into openraft's error. openraft stops the node on
/// any storage error: continuing after a failed write could break Raft's
/// safety, so stopping is the only safe reaction.
pub(crate) fn read_err(e: DbError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

pub(crate) fn write_err(e: DbError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let this = self.clone();
        let (start, end) = bounds(&range);
        blocking(move || this.read_range(start, end)).await.map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let this = self.clone();
        blocking(move || this.log_state()).await.map_err(read_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let this = self.clone();
        let vote = *vote;
        blocking(move || this.write_meta("vote", &vote, Durability::Immediate))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let this = self.clone();
        blocking(move || this.read_meta("vote")).await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// The commit index lets a restarted node re-apply committed entries
    /// before it hears from a leader. It is only a hint (losing the latest
    /// value in a crash is harmless: the applied index is committed too, and
    /// the leader tells us again), so it is not worth a write of its own:
    /// redb runs one write transaction at a time, and a transaction per
    /// commit would also hold up the next log append (about a tenth of the
    /// write throughput, and 0.3 ms of a single client's latency, in
    /// `docs/benchmarks.md`). It is kept in memory and written inside the
    /// next log append's transaction.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut pending = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        *pending = (*pending).max(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let this = self.clone();
        blocking(move || this.read_committed_hint()).await.map_err(read_err)
    }

    /// Writes the entries in one transaction, fsyncs, and only then reports
    /// them flushed. Many entries arrive together when openraft batches
    /// proposals, so one fsync covers many client writes. (With
    /// `unsafe_no_fsync`, it reports them flushed without the fsync.)
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        let res = blocking(move || this.append_entries(&entries)).await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    /// Removes `[log_id.index, ∞)`: entries a new leader does not have.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let this = self.clone();
        blocking(move || this.delete_range((Bound::Included(log_id.index), Bound::Unbounded), None))
            .await
            .map_err(write_err)
    }

    /// Removes `(-∞, log_id.index]`, already covered by a snapshot.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let this = self.clone();
        blocking(move || this.delete_range((Bound::Unbounded, Bound::Included(log_id.index)), Some(log_id)))
            .await
            .map_err(write_err)
    }
}
