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

use crate::types::{Entry, LogId, TypeConfig, Vote};

#[derive(Debug, Default)]
struct Inner {
    log: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

/// The in-memory log. Cheap to clone: clones share the log.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemLogStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock is a bug in this file; the data is
        // still consistent because every method mutates in one step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        self.lock().committed = committed;
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
        {
            let mut inner = self.lock();
            for e in entries {
                inner.log.insert(e.log_id.index, e);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        self.lock().log.split_off(&last_log_id.map_or(0, |l| l.index + 1));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let mut inner = self.lock();
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        inner.purged = Some(log_id);
        Ok(())
    }
}
