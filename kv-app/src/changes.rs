//! The change log: what each applied command did to each key, kept for a
//! while so that watchers (`GET /v1/watch`, [`crate::server::watch`]) can
//! read it from any index still retained.
//!
//! The Raft log holds *commands* ("compare-and-swap `k` from 1 to 2"); a
//! watcher wants *row changes* ("`k` became 2; it was 1"). The state machine
//! turns one into the other while it applies: every write to a data key
//! goes through one function ([`crate::state_machine`]'s `change_key`),
//! which records a [`Change`] with the key's value after and before. So the
//! change log is a logical (row-based) log derived from the command log;
//! `docs/watch.md` explains why and what it guarantees.
//!
//! # Staged, then published
//!
//! `apply` runs on a copy of the state that becomes the applied state only
//! once its whole batch has applied (see [`raft_core::app`]). Changes are
//! therefore *staged* while a batch applies, and published into the
//! history only when raft-core reports the batch applied
//! ([`StateEvent::Applied`]); an abandoned batch's changes are dropped. A
//! watcher never sees a change that the node's state does not hold.
//!
//! # Where history starts, honestly
//!
//! History lives in memory only. It starts empty at the index the node's
//! state was loaded from (the last checkpoint, on a restart: the log after
//! it is applied again and fills the history) or installed from (a
//! snapshot from the leader: the changes inside it were never applied
//! here). From then on it holds every change, until retention drops the
//! oldest. [`ChangeLog::oldest_index`] is the smallest `from_index` it can
//! serve: older ones get `410 compacted`.
//!
//! # Retention
//!
//! [`Retention`] bounds the history by changes, by bytes and by age; the
//! oldest index is dropped first, and all changes of one index together
//! (they came from one log entry, and a watcher resumes at an index, never
//! inside one). The newest index is always kept, so the bound is the limit
//! plus one entry's changes. A production system would also spill older
//! history to disk; this one keeps only what fits the limits in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raft_core::StateEvent;
use tokio::sync::watch;

/// Why a key changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A put, or a compare-and-swap that succeeded: the key holds `value`.
    Put,
    /// A delete of a key that existed (a delete of an absent key changes
    /// nothing and records nothing).
    Delete,
    /// The key was deleted because its lease expired.
    Expire,
}

/// One change to one key, made by the command at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The log index of the command that made it.
    pub index: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The key (the user's key, without the state machine's prefix).
    pub key: String,
    /// The value after the change; `None` after a delete or an expiry.
    pub value: Option<Vec<u8>>,
    /// The value before the change; `None` if the key did not exist.
    pub prev: Option<Vec<u8>>,
    /// The lease whose end deleted the key (a revoke, [`ChangeKind::Delete`],
    /// or an expiry, [`ChangeKind::Expire`]); `None` for a change made by a
    /// command that names the key.
    pub lease: Option<u64>,
}

impl Change {
    /// Roughly what the change costs in memory, for [`Retention::max_bytes`].
    fn bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + self.key.len()
            + self.value.as_ref().map_or(0, Vec::len)
            + self.prev.as_ref().map_or(0, Vec::len)
    }
}

/// How much history a node keeps (`kv-server --watch-history-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many changes (at least 1).
    pub max_changes: usize,
    /// Keep at most about this many bytes of keys and values.
    pub max_bytes: usize,
    /// Drop changes published longer ago than this.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_changes: 100_000, max_bytes: 64 << 20, max_age: Duration::from_secs(600) }
    }
}

/// The changes of one log index, published together.
#[derive(Debug)]
pub struct IndexChanges {
    /// The log index.
    pub index: u64,
    /// Its changes, in the order the commands applied.
    pub changes: Vec<Change>,
    published: Instant,
    bytes: usize,
    /// How many changes were published before this index, ever: the
    /// difference of two such counts is the number of changes between.
    published_before: u64,
}

/// What [`ChangeLog::read`] found.
#[derive(Debug)]
pub enum Read {
    /// The retained changes from the index asked for on.
    Changes {
        /// Whole indexes, oldest first: at least one if any is retained
        /// from the index asked for on, then more up to the limit given.
        indexes: Vec<Arc<IndexChanges>>,
        /// Where the next read starts: every index before it has been
        /// returned (or had no changes).
        next: u64,
        /// How many retained changes, from the index asked for or
        /// `backlog_from`, whichever is later, on, were waiting before this
        /// read: how far behind the reader is.
        backlog: usize,
    },
    /// The index asked for is older than the history: its changes are
    /// gone (or were never seen here).
    Compacted {
        /// The smallest index that can be read.
        oldest: u64,
    },
}

/// A node's change log: the changes staged by the batch being applied and
/// the published history. Shared by the state machine, which records, and
/// every watcher, which reads.
pub struct ChangeLog {
    staged: Mutex<Vec<Change>>,
    history: Mutex<History>,
    /// The index after the last published one; every publication (and
    /// reset) sends, so watchers wake up.
    next: watch::Sender<u64>,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = lock(&self.history);
        write!(f, "ChangeLog(indexes {}..{}, {} changes)", h.oldest, h.next, h.changes)
    }
}

/// Locks `m`, also after a panic elsewhere: the history is only changed by
/// whole steps that a panic cannot leave half done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChangeLog {
    /// An empty change log keeping history by `retention`.
    pub fn new(retention: Retention) -> Self {
        let retention = Retention { max_changes: retention.max_changes.max(1), ..retention };
        ChangeLog {
            staged: Mutex::default(),
            history: Mutex::new(History::new(retention)),
            next: watch::channel(1).0,
        }
    }

    /// Stages `change`, made by the batch being applied. Called by the
    /// state machine only.
    pub(crate) fn stage(&self, change: Change) {
        lock(&self.staged).push(change);
    }

    /// Publishes or drops what was staged, or starts the history afresh,
    /// as raft-core reports (see [`raft_core::StateMachine::on_state_event`]).
    pub fn on_state_event(&self, event: StateEvent) {
        self.on_state_event_at(event, Instant::now());
    }

    fn on_state_event_at(&self, event: StateEvent, now: Instant) {
        let staged = std::mem::take(&mut *lock(&self.staged));
        let next = {
            let mut h = lock(&self.history);
            match event {
                StateEvent::Applied { applied } => h.publish(staged, applied, now),
                StateEvent::Loaded { applied } | StateEvent::Installed { applied } => h.reset(applied),
                // The staged changes were dropped above; nothing else changed.
                StateEvent::Abandoned => {}
                _ => tracing::warn!(?event, "unknown state event; the change log ignores it"),
            }
            h.next
        };
        self.next.send_replace(next);
    }

    /// Up to about `limit` changes (whole indexes, at least one index)
    /// from index `from` on; the backlog counts those from `backlog_from`
    /// on, if that is later (a watcher catching up on history it asked for
    /// is not behind).
    pub fn read(&self, from: u64, limit: usize, backlog_from: u64) -> Read {
        lock(&self.history).read(from, limit, backlog_from, Instant::now())
    }

    /// [`ChangeLog::oldest_index`] and [`ChangeLog::next_index`], read
    /// together (a snapshot install between two separate reads could move
    /// both).
    pub fn bounds(&self) -> (u64, u64) {
        let h = lock(&self.history);
        (h.oldest, h.next)
    }

    /// The smallest index a watch can start from.
    pub fn oldest_index(&self) -> u64 {
        lock(&self.history).oldest
    }

    /// The index after the last one published: a watch without a
    /// `from_index` starts here.
    pub fn next_index(&self) -> u64 {
        lock(&self.history).next
    }

    /// How many changes are retained.
    pub fn len(&self) -> usize {
        lock(&self.history).changes
    }

    /// Whether no change is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that wakes up whenever something is published, carrying
    /// [`ChangeLog::next_index`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }
}

/// The published history. Invariants: `indexes` are in increasing order,
/// each non-empty, all `>= oldest` and `< next`; `changes` and `bytes` are
/// their totals.
#[derive(Debug)]
struct History {
    indexes: VecDeque<Arc<IndexChanges>>,
    /// The smallest `from` a read can serve: every change at or after it
    /// that was published is still here.
    oldest: u64,
    /// The index after the last applied one.
    next: u64,
    changes: usize,
    bytes: usize,
    /// How many changes were ever published.
    published: u64,
    retention: Retention,
}

impl History {
    fn new(retention: Retention) -> Self {
        History {
            indexes: VecDeque::new(),
            oldest: 1,
            next: 1,
            changes: 0,
            bytes: 0,
            published: 0,
            retention,
        }
    }

    /// Forgets everything: the state now reflects the entries up to
    /// `applied`, and changes are known only after it.
    fn reset(&mut self, applied: u64) {
        self.indexes.clear();
        (self.changes, self.bytes) = (0, 0);
        self.oldest = applied + 1;
        self.next = applied + 1;
    }

    /// Adds the changes of a batch applied through `applied`.
    fn publish(&mut self, staged: Vec<Change>, applied: u64, now: Instant) {
        let mut staged = staged.into_iter().peekable();
        while let Some(first) = staged.next() {
            let index = first.index;
            let mut changes = vec![first];
            while let Some(c) = staged.next_if(|c| c.index == index) {
                changes.push(c);
            }
            let bytes = changes.iter().map(Change::bytes).sum();
            let published_before = self.published;
            self.published += changes.len() as u64;
            self.changes += changes.len();
            self.bytes += bytes;
            self.indexes.push_back(Arc::new(IndexChanges {
                index,
                changes,
                published: now,
                bytes,
                published_before,
            }));
        }
        self.next = self.next.max(applied + 1);
        self.evict(now);
    }

    /// Drops the oldest indexes while over a limit, but never the newest.
    fn evict(&mut self, now: Instant) {
        let r = self.retention;
        while self.indexes.len() > 1 {
            let front = &self.indexes[0];
            let too_old = now.saturating_duration_since(front.published) > r.max_age;
            if !(self.changes > r.max_changes || self.bytes > r.max_bytes || too_old) {
                break;
            }
            self.drop_front();
        }
        // The newest index alone is kept whatever its size, but not
        // forever: age applies to it too.
        if let Some(front) = self.indexes.front() {
            if now.saturating_duration_since(front.published) > r.max_age {
                self.drop_front();
            }
        }
    }

    fn drop_front(&mut self) {
        if let Some(gone) = self.indexes.pop_front() {
            self.changes -= gone.changes.len();
            self.bytes -= gone.bytes;
            self.oldest = self.oldest.max(gone.index + 1);
        }
    }

    fn read(&mut self, from: u64, limit: usize, backlog_from: u64, now: Instant) -> Read {
        self.evict(now);
        if from < self.oldest {
            return Read::Compacted { oldest: self.oldest };
        }
        let start = self.indexes.partition_point(|i| i.index < from);
        let waiting = self.indexes.partition_point(|i| i.index < from.max(backlog_from));
        let backlog = self.indexes.get(waiting).map_or(0, |i| (self.published - i.published_before) as usize);
        let mut indexes = Vec::new();
        let mut taken = 0;
        for i in self.indexes.iter().skip(start) {
            if taken >= limit.max(1) {
                break;
            }
            taken += i.changes.len();
            indexes.push(i.clone());
        }
        let next = match indexes.last() {
            Some(last) if start + indexes.len() < self.indexes.len() => last.index + 1,
            _ => from.max(self.next),
        };
        Read::Changes { indexes, next, backlog }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, key: &str, value: &str) -> Change {
        Change {
            index,
            kind: ChangeKind::Put,
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
            prev: None,
            lease: None,
        }
    }

    fn log(max_changes: usize) -> ChangeLog {
        ChangeLog::new(Retention { max_changes, ..Retention::default() })
    }

    /// Applies one batch: stages `changes`, then reports it applied.
    fn apply(log: &ChangeLog, changes: Vec<Change>, applied: u64, now: Instant) {
        for c in changes {
            log.stage(c);
        }
        log.on_state_event_at(StateEvent::Applied { applied }, now);
    }

    /// The indexes and keys a read returns, and its `next`.
    fn read(log: &ChangeLog, from: u64, limit: usize) -> (Vec<(u64, String)>, u64) {
        match log.read(from, limit, 0) {
            Read::Changes { indexes, next, .. } => {
                let seen = indexes.iter().flat_map(|i| i.changes.iter().map(|c| (c.index, c.key.clone())));
                (seen.collect(), next)
            }
            Read::Compacted { oldest } => panic!("compacted at {oldest}"),
        }
    }

    #[test]
    fn staged_changes_appear_only_once_their_batch_applied_and_abandoned_ones_never() {
        let log = log(100);
        log.stage(put(1, "a", "1"));
        assert_eq!(read(&log, 1, 10), (vec![], 1), "staged is not published");
        log.on_state_event(StateEvent::Abandoned);
        log.on_state_event(StateEvent::Applied { applied: 1 });
        assert_eq!(read(&log, 1, 10), (vec![], 2), "the abandoned change is gone; index 1 is passed");

        apply(&log, vec![put(2, "b", "1"), put(2, "c", "1"), put(4, "d", "1")], 5, Instant::now());
        assert_eq!(
            read(&log, 1, 10),
            (vec![(2, "b".into()), (2, "c".into()), (4, "d".into())], 6),
            "an index without changes (3, 5) is simply passed"
        );
        assert_eq!(read(&log, 3, 10), (vec![(4, "d".into())], 6));
        assert_eq!(read(&log, 9, 10), (vec![], 9), "a reader ahead of the node stays where it is");
    }

    #[test]
    fn a_read_returns_whole_indexes_and_says_where_to_go_on() {
        let log = log(100);
        apply(
            &log,
            vec![put(1, "a", "1"), put(1, "b", "1"), put(2, "c", "1"), put(3, "d", "1")],
            3,
            Instant::now(),
        );
        // A limit of 1 still returns all of index 1, and no more.
        assert_eq!(read(&log, 1, 1), (vec![(1, "a".into()), (1, "b".into())], 2));
        assert_eq!(read(&log, 2, 1), (vec![(2, "c".into())], 3));
        assert_eq!(read(&log, 3, 1), (vec![(3, "d".into())], 4));
        let Read::Changes { backlog, .. } = log.read(2, 1, 0) else { panic!("retained") };
        assert_eq!(backlog, 2, "changes from index 2 on");
        let Read::Changes { backlog, .. } = log.read(1, 1, 3) else { panic!("retained") };
        assert_eq!(backlog, 1, "changes from backlog_from (3) on");
        let Read::Changes { backlog, .. } = log.read(1, 1, 4) else { panic!("retained") };
        assert_eq!(backlog, 0);
    }

    #[test]
    fn retention_by_count_drops_whole_oldest_indexes_and_moves_oldest_on() {
        let log = log(3);
        let now = Instant::now();
        apply(&log, vec![put(1, "a", "1"), put(1, "b", "1")], 1, now);
        apply(&log, vec![put(2, "c", "1")], 2, now);
        assert_eq!(log.oldest_index(), 1);
        apply(&log, vec![put(4, "d", "1")], 4, now);
        // 4 changes > 3: index 1 goes, both of its changes.
        assert_eq!(log.oldest_index(), 2);
        assert_eq!(log.len(), 2);
        assert!(matches!(log.read(1, 10, 0), Read::Compacted { oldest: 2 }));
        assert_eq!(read(&log, 2, 10), (vec![(2, "c".into()), (4, "d".into())], 5));
    }

    #[test]
    fn the_newest_index_is_kept_even_when_alone_it_is_over_the_limits() {
        let log = ChangeLog::new(Retention { max_changes: 1, max_bytes: 10, ..Retention::default() });
        let big = "x".repeat(1000);
        apply(&log, vec![put(1, "a", &big), put(1, "b", &big)], 1, Instant::now());
        assert_eq!(read(&log, 1, 10).0.len(), 2);
        apply(&log, vec![put(2, "c", "1")], 2, Instant::now());
        assert_eq!(log.oldest_index(), 2);
        assert_eq!(read(&log, 2, 10), (vec![(2, "c".into())], 3));
    }

    #[test]
    fn retention_by_bytes_counts_keys_values_and_before_images() {
        let one = put(1, "k", "v").bytes();
        let log = ChangeLog::new(Retention { max_bytes: 2 * one, ..Retention::default() });
        let now = Instant::now();
        apply(&log, vec![put(1, "k", "v")], 1, now);
        apply(&log, vec![put(2, "k", "v")], 2, now);
        assert_eq!(log.oldest_index(), 1, "two changes fit");
        let mut with_prev = put(3, "k", "v");
        with_prev.prev = Some(b"v".to_vec());
        apply(&log, vec![with_prev], 3, now);
        assert_eq!(log.oldest_index(), 3, "the before-image made it larger than one change: both older go");
    }

    #[test]
    fn retention_by_age_drops_old_indexes_even_without_new_changes() {
        let max_age = Duration::from_secs(60);
        let log = ChangeLog::new(Retention { max_age, ..Retention::default() });
        let then = Instant::now();
        apply(&log, vec![put(1, "a", "1")], 1, then);
        apply(&log, vec![put(2, "b", "1")], 2, then + max_age);
        // Later, with nothing new: the read itself drops what is too old.
        let later = then + max_age + Duration::from_secs(1);
        assert!(matches!(lock(&log.history).read(1, 10, 0, later), Read::Compacted { oldest: 2 }));
        let much_later = later + max_age;
        assert!(matches!(lock(&log.history).read(2, 10, 0, much_later), Read::Compacted { oldest: 3 }));
        assert!(matches!(lock(&log.history).read(3, 10, 0, much_later), Read::Changes { next: 3, .. }));
    }

    #[test]
    fn loading_or_installing_starts_history_after_the_new_state() {
        let log = log(100);
        log.on_state_event(StateEvent::Loaded { applied: 7 });
        assert_eq!((log.oldest_index(), log.next_index()), (8, 8));
        assert!(matches!(log.read(7, 10, 0), Read::Compacted { oldest: 8 }));
        apply(&log, vec![put(8, "a", "1")], 8, Instant::now());
        // A snapshot through 20 leaves a gap: 9 to 20 were never applied here.
        let mut woken = log.subscribe();
        log.on_state_event(StateEvent::Installed { applied: 20 });
        assert!(woken.has_changed().unwrap(), "watchers are woken to notice");
        assert_eq!(*woken.borrow_and_update(), 21);
        assert!(matches!(log.read(9, 10, 0), Read::Compacted { oldest: 21 }));
        assert_eq!(log.len(), 0);
        assert_eq!(read(&log, 21, 10), (vec![], 21));
    }
}
