//! A Raft log kept in memory: for fast, deterministic tests, and for nodes
//! that need no durability (such as a Maelstrom node, whose "crash" is the
//! end of the process anyway).
//!
//! It keeps the same contract as [`super::RedbLogStore`], minus the fsync,
//! and passes the same conformance suite. Never run a production node on it:
//! a restarted node would have forgotten its votes and its log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};

use super::db::{Db, DbError};
use super::log_store::{is_noted, notify_durable};
use super::rollback;
use crate::types::{Entry, LogId, TypeConfig, Vote};

#[derive(Debug, Default)]
struct Inner {
    log: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Whether an append was ever noted at `leader` durability: until then
    /// commits need not look for flags to forget.
    noted: bool,
}

/// The in-memory log. Cheap to clone: clones share the log.
///
/// Truncations write their [rollback records](super::rollback) to a
/// database in memory too, so that a node on this log can show them.
#[derive(Debug, Clone)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
    db: Db,
}

impl Default for MemLogStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemLogStore {
    /// An empty log, with its own in-memory database for rollback records.
    pub fn new() -> Self {
        Self::on(Db::in_memory())
    }

    /// An empty log that keeps its rollback records in `db`.
    pub fn on(db: Db) -> Self {
        MemLogStore { inner: Arc::default(), db }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock is a bug in this file; the data is
        // still consistent because every method mutates in one step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one write transaction on the records' database.
    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<(), DbError>) -> std::io::Result<()> {
        let db = &self.db;
        db.guarded(|| {
            let tx = db.inner.begin_write()?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .map_err(std::io::Error::other)
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        Ok(self.lock().log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let inner = self.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id).or(inner.purged);
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        let mut inner = self.lock();
        inner.committed = committed;
        if let (Some(c), true) = (committed, inner.noted) {
            let held = inner.log.get(&c.index).map(|e| e.log_id);
            self.write(|tx| rollback::forget_committed(tx, c, |_| Ok(held)))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let noted: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| is_noted(e))
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect();
        if !noted.is_empty() {
            self.write(|tx| rollback::note_leader_durable(tx, noted))?;
            self.lock().noted = true;
        }
        {
            let mut inner = self.lock();
            for e in &entries {
                inner.log.insert(e.log_id.index, e.clone());
            }
        }
        notify_durable(&entries);
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        let mut inner = self.lock();
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let removed: Vec<Entry> = inner.log.range(from..).map(|(_, e)| e.clone()).collect();
        let term = inner.vote.map_or(0, |v| v.leader_id.term);
        self.write(|tx| rollback::record(tx, removed, term).map(|_| ()))?;
        inner.log.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let mut inner = self.lock();
        let term = inner.vote.map_or(0, |v| v.leader_id.term);
        let log = &inner.log;
        self.write(|tx| rollback::record_purged(tx, log_id, term, |i| Ok(log.get(&i).cloned())).map(|_| ()))?;
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        inner.purged = Some(log_id);
        Ok(())
    }
}
