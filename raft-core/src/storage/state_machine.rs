//! The applied state: the application's data, the last applied log id, the
//! last applied membership, and the current snapshot, all in the node's
//! redb database.
//!
//! # Why a restart neither loses nor repeats an applied command
//!
//! Each batch of committed entries is applied in **one** write transaction
//! that also records the batch's last log id as `applied`. Data and position
//! therefore move together: after any crash, the database holds some
//! transaction's state, whose `applied` says exactly which entries it
//! includes, and openraft re-applies only the entries after it.
//!
//! That transaction commits *without* its own fsync
//! ([`redb::Durability::None`]). It is still safe, because the log lives in
//! the same database: every later durable commit (the next log append, vote
//! or purge) makes it durable too, and a crash before that merely rolls the
//! state back to an earlier `applied`, from which the still-present log
//! entries are applied again. The one case where the log could not cover the
//! gap, a purge, is itself a durable commit made after the snapshot it
//! relies on, so it makes that state durable first. This saves one fsync per
//! batch on the write path.
//!
//! # Snapshots
//!
//! The applied state is already durable and consistent with its `applied`
//! log id, so it *is* the snapshot: nothing is copied into the database.
//! Building a snapshot records only its metadata (`snapshot_meta`: last
//! included log id and membership), which lets openraft purge the log
//! behind it. When a snapshot is needed, to send to a follower that is too
//! far behind to catch up from the log, it is read from one redb read
//! transaction (the application table and the `applied` it reflects, at
//! least as new as the recorded metadata) and encoded with
//! [`crate::codec`]. A follower installs it in one write transaction.
//!
//! An earlier version stored a copy of the whole table with each snapshot:
//! at 65,536 keys that was an 18 MB write, holding redb's single writer
//! (and so every log append) while it was fsynced, and it halved the write
//! throughput of a loaded cluster (`docs/benchmarks.md`). A production
//! system with a large state would also stream the snapshot from the read
//! transaction instead of encoding it in memory.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{RaftSnapshotBuilder, StorageIOError};
use redb::{Durability, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::blocking;
use super::db::{get_value, put_value, Db, DbError, SM};
use crate::app::{AppState, AppView, ApplyContext, StateMachine, APP_TABLE};
use crate::codec;
use crate::types::{
    Entry, EntryPayload, LogId, Replies, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The version of the snapshot encoding, checked when one is installed.
const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    pairs: Vec<(ByteBuf, ByteBuf)>,
}

/// The state machine side of a node's storage. Cheap to clone.
pub struct StateMachineStore<A: StateMachine> {
    db: Db,
    app: Arc<A>,
}

impl<A: StateMachine> Clone for StateMachineStore<A> {
    fn clone(&self) -> Self {
        StateMachineStore { db: self.db.clone(), app: self.app.clone() }
    }
}

impl<A: StateMachine> StateMachineStore<A> {
    /// The state machine of `app`, kept in `db` (the same database as the
    /// node's log; see the module docs for why that matters).
    pub fn new(db: Db, app: A) -> Self {
        StateMachineStore { db, app: Arc::new(app) }
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// A consistent view of the applied state. Reads from redb on the
    /// calling thread; the reads are short and usually served from cache.
    pub fn view(&self) -> Result<AppView, DbError> {
        let tx = self.db.inner.begin_read()?;
        let sm = tx.open_table(SM)?;
        let applied: Option<LogId> = get_value(&sm, "applied")?;
        let table = match tx.open_table(APP_TABLE) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(AppView { table, applied })
    }

    fn applied(&self) -> Result<(Option<LogId>, StoredMembership), DbError> {
        let tx = self.db.inner.begin_read()?;
        let sm = tx.open_table(SM)?;
        Ok((get_value(&sm, "applied")?, get_value(&sm, "membership")?.unwrap_or_default()))
    }

    /// Applies committed entries in one transaction on the calling thread,
    /// exactly as openraft's [`RaftStateMachine::apply`] does (which calls
    /// this on tokio's blocking pool), and returns one [`Replies`] per entry.
    ///
    /// For tools that replay a log outside a running node, such as the
    /// Jepsen harness rebuilding the state after each entry of a stopped
    /// node's log. The caller must pass committed entries, in log order,
    /// each exactly once: the store cannot tell.
    pub fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Replies>, DbError> {
        let mut tx = self.db.inner.begin_write()?;
        tx.set_durability(Durability::None).map_err(redb::Error::from)?;
        let mut replies = Vec::with_capacity(entries.len());
        {
            let mut sm = tx.open_table(SM)?;
            let mut state = AppState { table: tx.open_table(APP_TABLE)? };
            let mut last = None;
            let mut membership = None;
            for entry in entries {
                last = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => replies.push(Replies::default()),
                    EntryPayload::Normal(batch) => {
                        let ctx = ApplyContext { log_id: entry.log_id };
                        let mut out = Vec::with_capacity(batch.0.len());
                        for cmd in batch.0 {
                            // Every replica runs the same decoder on the
                            // same bytes, so even a command that fails to
                            // decode gets the same (error) response everywhere.
                            let result: Result<A::Response, String> = match codec::decode::<A::Command>(&cmd)
                            {
                                Ok(c) => Ok(self.app.apply(&mut state, ctx, c)?),
                                Err(e) => Err(e.to_string()),
                            };
                            out.push(ByteBuf::from(codec::encode(&result)));
                        }
                        replies.push(Replies(out));
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        replies.push(Replies::default());
                    }
                }
            }
            if let Some(last) = last {
                put_value(&mut sm, "applied", &last)?;
            }
            if let Some(m) = membership {
                put_value(&mut sm, "membership", &m)?;
            }
        }
        tx.commit()?;
        Ok(replies)
    }

    fn build(&self) -> Result<Snapshot, DbError> {
        let snapshot = self.read_snapshot()?;
        let tx = self.db.inner.begin_write()?;
        {
            let mut sm = tx.open_table(SM)?;
            // A snapshot installed from the leader while this one was being
            // read may be newer; never record an older one.
            let current: Option<SnapshotMeta> = get_value(&sm, "snapshot_meta")?;
            if current.is_none_or(|c| c.last_log_id <= snapshot.meta.last_log_id) {
                put_value(&mut sm, "snapshot_meta", &snapshot.meta)?;
            }
        }
        tx.commit()?;
        Ok(snapshot)
    }

    /// A snapshot of the applied state as one read transaction sees it: the
    /// application table with the `applied` and `membership` it reflects.
    /// The state *is* the snapshot, so nothing is copied into the database:
    /// a snapshot is encoded only when it is asked for.
    fn read_snapshot(&self) -> Result<Snapshot, DbError> {
        let tx = self.db.inner.begin_read()?;
        let sm = tx.open_table(SM)?;
        let applied: Option<LogId> = get_value(&sm, "applied")?;
        let membership: StoredMembership = get_value(&sm, "membership")?.unwrap_or_default();
        let mut pairs = Vec::new();
        match tx.open_table(APP_TABLE) {
            Ok(app) => {
                for item in app.iter()? {
                    let (k, v) = item?;
                    pairs.push((ByteBuf::from(k.value()), ByteBuf::from(v.value())));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let data = codec::encode(&SnapshotFile { format: SNAPSHOT_FORMAT, pairs });
        // The state machine is deterministic, so two snapshots at one log
        // id hold the same data and may share an id: keep the recorded
        // one's (an installed snapshot carries the leader's), else name it
        // after the log id.
        let recorded: Option<SnapshotMeta> = get_value(&sm, "snapshot_meta")?;
        let snapshot_id = match (recorded, applied) {
            (Some(r), _) if r.last_log_id == applied => r.snapshot_id,
            (_, Some(l)) => format!("{}-{}", l.leader_id.term, l.index),
            (_, None) => "0-0".to_string(),
        };
        let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }

    fn install(&self, meta: SnapshotMeta, data: Vec<u8>) -> Result<(), DbError> {
        let file: SnapshotFile = codec::decode(&data)?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(codec::DecodeError {
                what: "snapshot",
                reason: format!("snapshot format {} is not {SNAPSHOT_FORMAT}", file.format),
            }
            .into());
        }
        let tx = self.db.inner.begin_write()?;
        {
            tx.delete_table(APP_TABLE)?;
            let mut app = tx.open_table(APP_TABLE)?;
            for (k, v) in &file.pairs {
                app.insert(k.as_slice(), v.as_slice())?;
            }
            let mut sm = tx.open_table(SM)?;
            match &meta.last_log_id {
                Some(applied) => put_value(&mut sm, "applied", applied)?,
                None => {
                    sm.remove("applied")?;
                }
            }
            put_value(&mut sm, "membership", &meta.last_membership)?;
            put_value(&mut sm, "snapshot_meta", &meta)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The current snapshot: once one has been built or installed, the
    /// applied state now, which is at least as new as the recorded one
    /// (applied only grows, and the durable commit that recorded the
    /// snapshot made the state it was read from durable too).
    fn current(&self) -> Result<Option<Snapshot>, DbError> {
        let recorded = {
            let tx = self.db.inner.begin_read()?;
            let sm = tx.open_table(SM)?;
            get_value::<SnapshotMeta>(&sm, "snapshot_meta")?
        };
        match recorded {
            None => Ok(None),
            Some(_) => self.read_snapshot().map(Some),
        }
    }
}

fn sm_read_err(e: DbError) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: DbError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl<A: StateMachine> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        blocking(move || this.build()).await.map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl<A: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<A> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let this = self.clone();
        blocking(move || this.applied()).await.map_err(sm_read_err)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Replies>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        blocking(move || this.apply_blocking(entries)).await.map_err(sm_write_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        let signature = meta.signature();
        blocking(move || this.install(meta, snapshot.into_inner()))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let this = self.clone();
        blocking(move || this.current()).await.map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
