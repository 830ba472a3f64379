//! Rollback records: what a node removed from its log, kept for an operator.
//!
//! A follower removes the tail of its log when the leader's log disagrees
//! with it (Raft paper §5.3: the leader's log wins). Under the usual rule
//! nothing of value is lost: an entry is acknowledged to a client only once
//! a majority has it, and every later leader has it too (§5.4), so only
//! entries that no client was told about can be removed.
//!
//! Acknowledging a write at `leader` durability ([`crate::RaftNode::write_logged`])
//! gives that rule up for speed: the write is acknowledged once it is
//! durable in the leader's own log. If that leader fails before a majority
//! has the entry, the next leader may not have it, and when the old leader
//! rejoins, its log is made to agree with the new leader's and the
//! acknowledged write is gone. MongoDB handles its `w:1` writes the same way
//! and, since 4.4, writes what a rollback removed to files that an operator
//! can read; this module does that for raft-core.
//!
//! # What is kept
//!
//! Every truncation of the log that removes at least one entry writes one
//! [`RollbackRecord`], *in the same transaction* as the removal: no entry
//! leaves the log without its record, a crash leaves either both or
//! neither. The record holds each removed entry (its term, its index, its
//! payload) and whether this node acknowledged it at `leader` durability
//! (the log store notes that, in the transaction that made the entry
//! durable, in a small `leader_durable` table, and forgets that once the
//! entry is known to be committed).
//!
//! A node far behind catches up by installing a snapshot instead, and then
//! *purges* its log up to the snapshot's index rather than truncating it.
//! Entries purged that way were committed and are in the snapshot, except
//! an old leader's uncommitted tail, which the snapshot may or may not
//! hold: its acknowledged entries (still flagged, since nothing proved them
//! committed) go into a record too, marked with the snapshot's index
//! ([`RollbackRecord::snapshot_through`]): their writes may be in the
//! snapshot, or lost.
//!
//! Retention is bounded: the newest [`RETAIN_RECORDS`] records, and no more
//! than [`RETAIN_BYTES`] of them, the oldest dropped first (the newest is
//! always kept, whatever its size).

use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::db::{Db, DbError};
use crate::codec;
use crate::types::{Entry, EntryPayload, LogId, Membership};

/// The records, by id (1, 2, ...).
pub(crate) const ROLLBACK: TableDefinition<u64, &[u8]> = TableDefinition::new("rollback");

/// The indexes of entries in the log that this node acknowledged at
/// `leader` durability, with their terms. Written with the entry, removed
/// with it (into a record, or by a purge).
pub(crate) const LEADER_DURABLE: TableDefinition<u64, u64> = TableDefinition::new("leader_durable");

/// The most records kept (1,000).
pub const RETAIN_RECORDS: usize = 1000;

/// The most bytes of records kept (64 MiB), the newest record excepted.
pub const RETAIN_BYTES: usize = 64 << 20;

/// One truncation of a node's log: the entries it removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// Increasing from 1 on each node.
    pub id: u64,
    /// When the entries were removed, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The node's term when it removed them: the term of the leader whose
    /// log replaced them.
    pub term: u64,
    /// `Some(i)`: the entries were purged when the node installed a
    /// snapshot through index `i`, which may hold them (if the new leader
    /// had them) or not; only acknowledged entries are recorded then.
    /// `None`: a truncation, which removes only entries the new leader's
    /// log does not have.
    pub snapshot_through: Option<u64>,
    /// The removed entries, in log order.
    pub entries: Vec<RolledBackEntry>,
}

/// One entry removed from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBackEntry {
    /// The term of the leader that created it.
    pub term: u64,
    /// Its index in the log.
    pub index: u64,
    /// Whether this node, leading, acknowledged the entry's writes at
    /// `leader` durability: then some client was told they were durable,
    /// and they are lost unless an operator recovers them from here.
    pub leader_durable: bool,
    /// What the entry held.
    pub payload: RolledBackPayload,
}

/// What a removed entry held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolledBackPayload {
    /// A new leader's first entry, with nothing in it.
    Blank,
    /// A configuration change.
    Membership(Membership),
    /// Application commands, each in the application's own encoding (the
    /// application decodes them, as it does when it applies them).
    Commands(Vec<ByteBuf>),
}

impl RolledBackEntry {
    fn new(entry: Entry, leader_durable: bool) -> Self {
        let payload = match entry.payload {
            EntryPayload::Blank => RolledBackPayload::Blank,
            EntryPayload::Membership(m) => RolledBackPayload::Membership(m),
            EntryPayload::Normal(batch) => RolledBackPayload::Commands(batch.0),
        };
        RolledBackEntry {
            term: entry.log_id.leader_id.term,
            index: entry.log_id.index,
            leader_durable,
            payload,
        }
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Notes, in the transaction that writes them, that the entries at these
/// (index, term) positions are acknowledged at `leader` durability.
pub(crate) fn note_leader_durable(
    tx: &WriteTransaction,
    positions: impl IntoIterator<Item = (u64, u64)>,
) -> Result<(), DbError> {
    let mut table = tx.open_table(LEADER_DURABLE)?;
    for (index, term) in positions {
        table.insert(index, term)?;
    }
    Ok(())
}

/// Writes the record of `removed` (the entries a truncation takes out of
/// the log, in order), in the transaction that removes them, and applies
/// the retention limits. Removes nothing and records nothing when `removed`
/// is empty. Returns the new record's id.
pub(crate) fn record(tx: &WriteTransaction, removed: Vec<Entry>, term: u64) -> Result<Option<u64>, DbError> {
    let Some(first) = removed.first().map(|e| e.log_id.index) else { return Ok(None) };
    let mut flags = tx.open_table(LEADER_DURABLE)?;
    let mut entries = Vec::with_capacity(removed.len());
    for entry in removed {
        let noted = flags.get(entry.log_id.index)?.map(|t| t.value());
        let leader_durable = noted == Some(entry.log_id.leader_id.term);
        entries.push(RolledBackEntry::new(entry, leader_durable));
    }
    flags.retain_in::<u64, _>(first.., |_, _| false)?;
    drop(flags);
    insert(tx, term, None, entries).map(Some)
}

/// [`record`] for a log that keeps the flags itself (a format-3 log's
/// records carry them): `removed` pairs each entry with whether this node
/// acknowledged it at `leader` durability.
pub(crate) fn record_flagged(
    tx: &WriteTransaction,
    removed: Vec<(Entry, bool)>,
    term: u64,
) -> Result<Option<u64>, DbError> {
    if removed.is_empty() {
        return Ok(None);
    }
    let entries = removed.into_iter().map(|(e, flagged)| RolledBackEntry::new(e, flagged)).collect();
    insert(tx, term, None, entries).map(Some)
}

/// [`record_purged`] for a log that keeps the flags itself: `flagged` are
/// the entries being purged that this node acknowledged at `leader`
/// durability and that are not known to be committed.
pub(crate) fn record_purged_flagged(
    tx: &WriteTransaction,
    upto: LogId,
    term: u64,
    flagged: Vec<Entry>,
) -> Result<Option<u64>, DbError> {
    if flagged.is_empty() {
        return Ok(None);
    }
    let entries = flagged.into_iter().map(|e| RolledBackEntry::new(e, true)).collect();
    insert(tx, term, Some(upto.index), entries).map(Some)
}

/// Forgets the flags of entries known to be committed: those up to
/// `committed`, provided the log holds `committed` itself (`log_id_at`
/// says what the log holds at an index). By the Log Matching property, the
/// entries before an entry two logs share are the same in both, so every
/// flagged entry up to it is committed and can no longer be lost. A
/// commit index this log does not hold (a snapshot's, installed over a
/// diverging log) proves nothing about the entries here.
pub(crate) fn forget_committed(
    tx: &WriteTransaction,
    committed: LogId,
    log_id_at: impl FnOnce(u64) -> Result<Option<LogId>, DbError>,
) -> Result<(), DbError> {
    let mut flags = tx.open_table(LEADER_DURABLE)?;
    let Some(first) = flags.first()?.map(|(k, _)| k.value()) else { return Ok(()) };
    if first > committed.index || log_id_at(committed.index)? != Some(committed) {
        return Ok(());
    }
    flags.retain_in::<u64, _>(..=committed.index, |_, _| false)?;
    Ok(())
}

/// Before a purge up to `upto` (behind a snapshot), records the entries
/// being purged that are still flagged as acknowledged at `leader`
/// durability and not known to be committed (see the module docs), and
/// forgets every flag up to `upto`. `entry_at` reads the log.
pub(crate) fn record_purged(
    tx: &WriteTransaction,
    upto: LogId,
    term: u64,
    entry_at: impl Fn(u64) -> Result<Option<Entry>, DbError>,
) -> Result<Option<u64>, DbError> {
    let mut flags = tx.open_table(LEADER_DURABLE)?;
    let mut flagged = Vec::new();
    for item in flags.range::<u64>(..=upto.index)? {
        let (k, v) = item?;
        flagged.push((k.value(), v.value()));
    }
    flags.retain_in::<u64, _>(..=upto.index, |_, _| false)?;
    drop(flags);
    let mut entries = Vec::new();
    for (index, flag_term) in flagged {
        if let Some(entry) = entry_at(index)?.filter(|e| e.log_id.leader_id.term == flag_term) {
            entries.push(RolledBackEntry::new(entry, true));
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    insert(tx, term, Some(upto.index), entries).map(Some)
}

/// Writes a new record and applies the retention limits; returns its id.
fn insert(
    tx: &WriteTransaction,
    term: u64,
    snapshot_through: Option<u64>,
    entries: Vec<RolledBackEntry>,
) -> Result<u64, DbError> {
    let mut table = tx.open_table(ROLLBACK)?;
    let id = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    let record = RollbackRecord { id, at_unix_ms: now_unix_ms(), term, snapshot_through, entries };
    table.insert(id, codec::encode(&record).as_slice())?;
    // Retention: drop the oldest while over either limit.
    let mut sizes: Vec<(u64, usize)> = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        sizes.push((k.value(), v.value().len()));
    }
    let mut bytes: usize = sizes.iter().map(|(_, n)| n).sum();
    let mut count = sizes.len();
    for (k, n) in sizes {
        if count <= 1 || (count <= RETAIN_RECORDS && bytes <= RETAIN_BYTES) {
            break;
        }
        table.remove(k)?;
        count -= 1;
        bytes -= n;
    }
    Ok(id)
}

/// Every record kept in `db`, oldest first.
pub fn records(db: &Db) -> Result<Vec<RollbackRecord>, DbError> {
    read(db, |table| {
        let mut out = Vec::new();
        for item in table.iter()? {
            let (_, v) = item?;
            out.push(codec::decode(v.value())?);
        }
        Ok(out)
    })
    .map(Option::unwrap_or_default)
}

/// The record `id`, if it is kept.
pub fn get(db: &Db, id: u64) -> Result<Option<RollbackRecord>, DbError> {
    read(db, |table| match table.get(id)? {
        Some(v) => Ok(Some(codec::decode(v.value())?)),
        None => Ok(None),
    })
    .map(Option::flatten)
}

/// Runs `f` on the records table; `None` if no record was ever written.
fn read<T>(
    db: &Db,
    f: impl FnOnce(&redb::ReadOnlyTable<u64, &'static [u8]>) -> Result<T, DbError>,
) -> Result<Option<T>, DbError> {
    db.guarded(|| {
        let tx = db.inner.begin_read()?;
        match tx.open_table(ROLLBACK) {
            Ok(table) => f(&table).map(Some),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::RaftLogReader as _;

    use super::*;
    use crate::storage::{MemLogStore, RedbLogStore};
    use crate::types::{log_id, Batch, Vote};

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Batch::one(vec![index as u8])) }
    }

    /// Appends entries 1..=5 of term 1, the third one noted (a writer
    /// waits for it at `leader` durability), then truncates after 2, on a
    /// new term's vote: one record of 3..=5, only 3 flagged.
    async fn truncation_is_recorded<S: RaftLogStorage<crate::types::TypeConfig>>(mut store: S, db: &Db) {
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        let (noted, durable) = Batch::noted(vec![ByteBuf::from(vec![3u8])]);
        let mut entries: Vec<Entry> = (1..=5).map(|i| entry(1, i)).collect();
        entries[2].payload = EntryPayload::Normal(noted);
        store.append(entries, IOFlushed::noop()).await.unwrap();
        store.save_vote(&Vote::new(2, 2)).await.unwrap();
        assert_eq!(durable.await.unwrap(), log_id(1, 3), "the writer learns where its entry is durable");
        assert!(records(db).unwrap().is_empty(), "nothing removed yet");

        store.truncate_after(Some(log_id(1, 2))).await.unwrap();
        let all = records(db).unwrap();
        assert_eq!(all.len(), 1);
        let r = &all[0];
        assert_eq!((r.id, r.term), (1, 2));
        let got: Vec<(u64, u64, bool)> =
            r.entries.iter().map(|e| (e.term, e.index, e.leader_durable)).collect();
        assert_eq!(got, [(1, 3, true), (1, 4, false), (1, 5, false)]);
        assert_eq!(r.entries[1].payload, RolledBackPayload::Commands(vec![ByteBuf::from(vec![4u8])]));
        assert_eq!(get(db, 1).unwrap().as_ref(), Some(r));
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(0..10).await.unwrap().len(), 2, "the log kept 1 and 2");

        // A truncation that removes nothing records nothing.
        store.truncate_after(Some(log_id(1, 2))).await.unwrap();
        assert_eq!(records(db).unwrap().len(), 1);

        // A new entry at a flagged index is not flagged: the flag left with
        // the entry it belonged to.
        store.append([entry(2, 3)], IOFlushed::noop()).await.unwrap();
        store.truncate_after(Some(log_id(1, 2))).await.unwrap();
        let all = records(db).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].entries.len(), 1);
        assert!(!all[1].entries[0].leader_durable);
    }

    #[tokio::test]
    async fn the_redb_log_records_every_truncation_and_keeps_it() {
        for log_file in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path(), log_file);
            truncation_is_recorded(RedbLogStore::new(db.clone()), &db).await;
            drop(db);
            let db = Db::open(dir.path()).unwrap();
            assert_eq!(records(&db).unwrap().len(), 2, "the records survive a restart");
        }
    }

    #[tokio::test]
    async fn the_memory_log_records_every_truncation() {
        let db = Db::in_memory();
        truncation_is_recorded(MemLogStore::on(db.clone()), &db).await;
    }

    /// Entries 1..=3 of term 1, the second acknowledged at `leader`
    /// durability.
    async fn noted_log<S: RaftLogStorage<crate::types::TypeConfig>>(store: &mut S) {
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        let (noted, _durable) = Batch::noted(vec![ByteBuf::from(vec![2u8])]);
        let mut entries: Vec<Entry> = (1..=3).map(|i| entry(1, i)).collect();
        entries[1].payload = EntryPayload::Normal(noted);
        store.append(entries, IOFlushed::noop()).await.unwrap();
    }

    /// The flags in the `leader_durable` table (format 2; a format-3 log
    /// keeps them in its records, and has no such table).
    fn flags(db: &Db) -> usize {
        let tx = db.inner.begin_read().unwrap();
        match tx.open_table(LEADER_DURABLE) {
            Ok(table) => table.iter().unwrap().count(),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => panic!("{e}"),
        }
    }

    /// A data directory in `dir`: the log in the database (format 2) or in
    /// a file of its own (format 3).
    fn open(dir: &std::path::Path, log_file: bool) -> Db {
        let options = crate::storage::StorageOptions { log_file, ..Default::default() };
        let db = Db::open_with(dir, options).unwrap();
        assert_eq!(db.format(), if log_file { 3 } else { 2 });
        db
    }

    /// A node that installs a snapshot over its own uncommitted tail purges
    /// that tail: its acknowledged entry gets a record, marked with the
    /// snapshot's index, since the snapshot may or may not hold it.
    async fn a_purge_behind_a_foreign_snapshot_records_acknowledged_entries<
        S: RaftLogStorage<crate::types::TypeConfig>,
    >(
        mut store: S,
        db: &Db,
    ) {
        noted_log(&mut store).await;
        store.save_vote(&Vote::new(2, 2)).await.unwrap();
        // The snapshot's last log id, from the new leader's term, is not in
        // this log: the commit index proves nothing about entry 2.
        store.save_committed(Some(log_id(2, 5))).await.unwrap();
        store.purge(log_id(2, 5)).await.unwrap();
        let all = records(db).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!((all[0].term, all[0].snapshot_through), (2, Some(5)));
        let got: Vec<(u64, u64, bool)> =
            all[0].entries.iter().map(|e| (e.term, e.index, e.leader_durable)).collect();
        assert_eq!(got, [(1, 2, true)], "only the acknowledged entry");
        assert_eq!(flags(db), 0);
    }

    /// Once the log's own entry at the commit index is committed, every
    /// flagged entry before it is too: a later purge (log compaction)
    /// records nothing.
    async fn compaction_of_committed_entries_records_nothing<S: RaftLogStorage<crate::types::TypeConfig>>(
        mut store: S,
        db: &Db,
    ) {
        noted_log(&mut store).await;
        store.save_committed(Some(log_id(1, 3))).await.unwrap();
        store.purge(log_id(1, 2)).await.unwrap();
        assert!(records(db).unwrap().is_empty(), "committed entries are not rolled back");
        assert_eq!(flags(db), 0);
    }

    /// Once the log's own entry at the commit index is known committed, the
    /// flagged entries before it stay forgotten: a later purge behind a
    /// snapshot this log does not hold (installed after the node lost its
    /// leadership) records nothing. Format 2 removes the flags from its
    /// table; format 3 keeps them in the log file and remembers, in its
    /// note, where they stop counting.
    #[tokio::test]
    async fn flags_stay_forgotten_once_their_entries_are_known_committed() {
        for log_file in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path(), log_file);
            let mut store = RedbLogStore::new(db.clone());
            noted_log(&mut store).await;
            // The entries are durable (a vote waits for what was queued
            // before it) before the commit index arrives, as in a cluster.
            store.save_vote(&Vote::new(1, 1)).await.unwrap();
            store.save_committed(Some(log_id(1, 3))).await.unwrap();
            // Any write carries the commit index to the writer.
            store.save_vote(&Vote::new(2, 2)).await.unwrap();
            drop(store);
            // Also across a restart.
            let mut store = RedbLogStore::new(db.clone());
            store.save_committed(Some(log_id(2, 5))).await.unwrap();
            store.purge(log_id(2, 5)).await.unwrap();
            assert!(records(&db).unwrap().is_empty(), "log_file {log_file}: {:?}", records(&db).unwrap());
        }
    }

    #[tokio::test]
    async fn the_redb_log_records_acknowledged_entries_a_snapshot_purges() {
        for log_file in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path(), log_file);
            a_purge_behind_a_foreign_snapshot_records_acknowledged_entries(
                RedbLogStore::new(db.clone()),
                &db,
            )
            .await;
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path(), log_file);
            compaction_of_committed_entries_records_nothing(RedbLogStore::new(db.clone()), &db).await;
        }
    }

    #[tokio::test]
    async fn the_memory_log_records_acknowledged_entries_a_snapshot_purges() {
        let db = Db::in_memory();
        a_purge_behind_a_foreign_snapshot_records_acknowledged_entries(MemLogStore::on(db.clone()), &db)
            .await;
        let db = Db::in_memory();
        compaction_of_committed_entries_records_nothing(MemLogStore::on(db.clone()), &db).await;
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_records() {
        let db = Db::in_memory();
        let mut store = MemLogStore::on(db.clone());
        for _ in 0..RETAIN_RECORDS + 5 {
            store.append([entry(1, 1)], IOFlushed::noop()).await.unwrap();
            store.truncate_after(None).await.unwrap();
        }
        let all = records(&db).unwrap();
        assert_eq!(all.len(), RETAIN_RECORDS);
        assert_eq!(all.first().map(|r| r.id), Some(6), "the five oldest were dropped");
        assert_eq!(all.last().map(|r| r.id), Some(RETAIN_RECORDS as u64 + 5));
    }
}
