//! Surgery on a stopped node's data directory: seeding the nodes of a new
//! cluster from a copy of the applied state (restoring a backup), and
//! turning one survivor into a cluster of one voter when the others are
//! gone for good (disaster recovery).
//!
//! Both step outside Raft on purpose, and both are safe only under a
//! condition that Raft cannot check, so the operator must:
//!
//! * [`seed`] makes every node of a *new* cluster start from the same state,
//!   as if each had installed the same snapshot. Give every node the same
//!   state, log position and members; a node seeded differently would hold
//!   a different history under the same log ids.
//! * [`force_new_cluster`] rewrites the membership of one survivor to itself
//!   alone. Every entry in its log becomes committed, including any tail the
//!   old cluster never committed (writes whose clients were never answered,
//!   so keeping them breaks no promise). An entry the old cluster committed
//!   but this survivor never received is lost, which is why the operator
//!   picks the survivor with the longest log (`kv-server inspect` prints
//!   it). The old members must never run again with their old data: they
//!   would form a second cluster that believes it is the first.
//!
//! Neither leaves a half-done directory behind: [`seed`] builds the new
//! directory beside the target and renames it into place, and
//! [`force_new_cluster`] writes one redb transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use super::db::{get_value, put_value, Db, DbError, OpenError, LOG, META, SM};
use crate::app::APP_TABLE;
use crate::codec;
use crate::types::{
    Entry, EntryPayload, LogId, Membership, Node, NodeId, SnapshotMeta, StoredMembership, Vote,
};

/// Why a data directory could not be seeded or rewritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The target of [`seed`] holds something: a restore never overwrites.
    #[error("{0}: the directory is not empty; a restore writes only into a new or empty directory")]
    NotEmpty(PathBuf),
    /// The data directory could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading or writing it failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io { path: path.to_path_buf(), source }
}

/// Makes `dir` the data directory of node `id` of a new cluster whose voters
/// are `members`, holding `state` (the application's byte map, in any order)
/// as the state applied up to log position `at`.
///
/// The node starts as if it had installed a snapshot at `at`: its log is
/// empty and purged up to `at`, its applied state and membership are the
/// snapshot's, and its term is `at`'s term (so the first election is for
/// the term after, and every entry the new cluster writes has a greater log
/// id than `at`). Seed every node of the new cluster with the same `at`,
/// `members` and `state`, then start them; they elect a leader among
/// themselves without being initialized.
///
/// `dir` must not exist or be empty. The directory is built beside it (as
/// `.NAME.seeding`) and renamed into place once complete and durable, so a
/// failure at any point leaves `dir` as it was.
pub fn seed(
    dir: &Path,
    id: NodeId,
    at: LogId,
    members: &BTreeMap<NodeId, Node>,
    state: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<(), RecoveryError> {
    if !members.contains_key(&id) {
        return Err(RecoveryError::Invalid(format!(
            "node {id} is not among the members ({})",
            members.keys().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RecoveryError::NotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir)(e)),
    }
    let name = dir
        .file_name()
        .ok_or_else(|| RecoveryError::Invalid(format!("{}: not a directory name", dir.display())))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = parent.join(format!(".{}.seeding", name.to_string_lossy()));
    if staging.exists() {
        // Left by a restore that failed or was killed; it was never used.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let written = write_seed(&staging, id, at, members, state);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if dir.exists() {
        // Empty (checked above): rename cannot replace a directory on
        // every platform, so remove it first.
        std::fs::remove_dir(dir).map_err(io(dir))?;
    }
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    // Make the rename itself durable.
    std::fs::File::open(&parent).and_then(|d| d.sync_all()).map_err(io(&parent))?;
    tracing::info!(node_id = id, path = %dir.display(), term = at.leader_id.term, index = at.index, "data directory seeded");
    Ok(())
}

fn write_seed(
    staging: &Path,
    id: NodeId,
    at: LogId,
    members: &BTreeMap<NodeId, Node>,
    state: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<(), RecoveryError> {
    let db = Db::open(staging)?;
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let membership = Membership::new(vec![voters], members.clone())
        .map_err(|e| RecoveryError::Invalid(format!("the members do not make a membership: {e}")))?;
    let membership = StoredMembership::new(Some(at), membership);
    let meta = SnapshotMeta { last_log_id: Some(at), last_membership: membership.clone() };
    db.guarded(|| {
        let tx = db.inner.begin_write()?;
        {
            let mut app = tx.open_table(APP_TABLE)?;
            for (key, value) in state {
                app.insert(key.as_slice(), value.as_slice())?;
            }
            let mut sm = tx.open_table(SM)?;
            put_value(&mut sm, "applied", &at)?;
            put_value(&mut sm, "membership", &membership)?;
            put_value(&mut sm, "snapshot_meta", &meta)?;
            let mut m = tx.open_table(META)?;
            put_value(&mut m, "vote", &Vote::new(at.leader_id.term, id))?;
            put_value(&mut m, "purged", &at)?;
            put_value(&mut m, "committed", &Some(at))?;
            tx.open_table(LOG)?;
        }
        tx.commit()?;
        Ok(())
    })?;
    Ok(())
}

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedCluster {
    /// The voters before (one set, or two during a joint change).
    pub previous_voters: Vec<BTreeSet<NodeId>>,
    /// The entry that made the node the only voter, or `None` if it already
    /// was (nothing was written).
    pub membership_entry: Option<LogId>,
    /// The last log index before that entry: every entry up to it commits
    /// once the node leads.
    pub last_index: u64,
}

/// Makes the stopped node `id` in `dir` the only voter of its cluster,
/// keeping its whole log and state (see the [module docs](self) for when
/// this is safe).
///
/// It appends one membership entry, with the node alone as voter and no
/// learner, after the last entry of its log, in the term of the node's
/// vote (at least that of its last entry). Started again, the node elects
/// itself in the next term and commits everything before that entry; new
/// members then join it as they would any cluster. If the node already is
/// the only voter, nothing is written, so starting again with the same
/// request is harmless until members are added.
pub fn force_new_cluster(dir: &Path, id: NodeId) -> Result<ForcedCluster, RecoveryError> {
    if !dir.join(super::db::DB_FILE).exists() {
        return Err(RecoveryError::Invalid(format!(
            "{}: no data directory here (no {})",
            dir.display(),
            super::db::DB_FILE
        )));
    }
    let db = Db::open(dir)?;
    let found = db.guarded(|| read_cluster(&db))?;
    let Some((last, membership)) = found else {
        return Err(RecoveryError::Invalid(format!(
            "{}: this node never joined a cluster; there is nothing to recover",
            dir.display()
        )));
    };
    let previous_voters = membership.get_joint_config().clone();
    let node = membership.get_node(&id).cloned().ok_or_else(|| {
        RecoveryError::Invalid(format!(
            "node {id} is not a member of the cluster in {} (its members: {}); is --id right?",
            dir.display(),
            membership.nodes().map(|(n, _)| n.to_string()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let alone = BTreeSet::from([id]);
    if previous_voters == [alone.clone()] && membership.nodes().count() == 1 {
        return Ok(ForcedCluster { previous_voters, membership_entry: None, last_index: last.index });
    }
    let vote: Option<Vote> = db.guarded(|| {
        let tx = db.inner.begin_read()?;
        get_value(&tx.open_table(META)?, "vote")
    })?;
    let term = vote.map_or(0, |v| v.leader_id().term).max(last.leader_id.term);
    let membership = Membership::new(vec![alone], BTreeMap::from([(id, node)]))
        .map_err(|e| RecoveryError::Invalid(format!("a membership of node {id} alone: {e}")))?;
    let entry = Entry {
        log_id: crate::types::log_id(term, last.index + 1),
        payload: EntryPayload::Membership(membership),
    };
    match db.open_log_file()? {
        Some(mut wal) => {
            let bytes = codec::encode(&entry);
            wal.append([(entry.log_id.index, 0, bytes.as_slice())]).map_err(DbError::from)?;
            wal.sync().map_err(DbError::from)?;
        }
        None => db.guarded(|| {
            let tx = db.inner.begin_write()?;
            tx.open_table(LOG)?.insert(entry.log_id.index, codec::encode(&entry).as_slice())?;
            tx.commit()?;
            Ok(())
        })?,
    }
    tracing::warn!(
        node_id = id,
        path = %dir.display(),
        previous_voters = ?previous_voters,
        index = entry.log_id.index,
        "forced a new cluster: this node is now the only voter"
    );
    Ok(ForcedCluster { previous_voters, membership_entry: Some(entry.log_id), last_index: last.index })
}

/// The last log id the node holds (in its log, or behind its last purge or
/// checkpoint) and its latest membership (the last membership entry in its
/// log, else the checkpoint's); `None` for a node that never joined.
fn read_cluster(db: &Db) -> Result<Option<(LogId, Membership)>, DbError> {
    let tx = db.inner.begin_read()?;
    let purged: Option<LogId> = get_value(&tx.open_table(META)?, "purged")?;
    let (applied, stored): (Option<LogId>, Option<StoredMembership>) = match tx.open_table(SM) {
        Ok(sm) => (get_value(&sm, "applied")?, get_value(&sm, "membership")?),
        Err(redb::TableError::TableDoesNotExist(_)) => (None, None),
        Err(e) => return Err(e.into()),
    };
    let mut last = None;
    let mut membership = None;
    let mut visit = |bytes: &[u8]| -> Result<bool, DbError> {
        let entry: Entry = codec::decode(bytes)?;
        last = last.or(Some(entry.log_id));
        if let EntryPayload::Membership(m) = entry.payload {
            membership = Some(m);
            return Ok(true);
        }
        Ok(false)
    };
    match db.open_log_file()? {
        Some(wal) => {
            // Newest first, a chunk at a time, up to the last membership.
            let (first, mut end) = wal.bounds().map_or((0, 0), |(f, l)| (f, l + 1));
            'scan: while end > first {
                let start = end.saturating_sub(256).max(first);
                for record in wal.read(start, end)?.iter().rev() {
                    if visit(&record.payload)? {
                        break 'scan;
                    }
                }
                end = start;
            }
        }
        None => {
            for item in tx.open_table(LOG)?.iter()?.rev() {
                if visit(item?.1.value())? {
                    break;
                }
            }
        }
    }
    let last = last.max(purged).max(applied);
    let membership = membership.or_else(|| stored.map(|s| s.membership().clone()));
    Ok(last.zip(membership))
}
