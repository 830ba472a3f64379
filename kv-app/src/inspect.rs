//! `kv-server inspect`: what a stopped node's data directory holds, read
//! offline.
//!
//! Two questions come up after a node stops (a crash, a test run, a
//! restore): *what is in this directory*, and *what did the agreed log
//! write*. Both are answered here, from the files alone, so that tools
//! (the Jepsen harness among them) can ask the service instead of opening
//! the library's storage themselves:
//!
//! * [`summary`]: the saved vote, the log's extent, the commit index the
//!   node saved, the index of the applied state's last checkpoint, and the
//!   membership in force.
//! * [`committed_writes`]: the committed log replayed from index 1, one
//!   [`LogWrite`] per (entry, key it wrote): the key's value right after
//!   that entry. A session checker needs exactly this to ask whether a read
//!   saw a *prefix* of the log. The keys a lease's end deleted (a revoke,
//!   or the leader's expiry) are among them, marked with the command and
//!   the lease: no command of the entry names them, so they are learnt from
//!   the replay's change stream ([`crate::changes`]).
//!
//! The node must be stopped: a running node holds the database's lock,
//! and opening fails with a clear error. Opening a directory that a crash
//! left unclean lets redb repair it first, as a restart would.
//!
//! # Replaying only what was committed
//!
//! A log may end in entries that were never committed and that a later
//! leader would have overwritten, so the replay stops at the commit index.
//! The node saves the commit index it knows together with its log writes,
//! without an fsync of its own: after a kill it may lag a few entries
//! behind. A caller that knows a larger committed index (the harness reads
//! every node's applied index before stopping it, and an applied entry is
//! committed by definition) passes it as [`ReplayOptions::committed`]; the
//! replay goes to the larger of the two and fails if the log ends before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use raft_core::codec;
use raft_core::openraft::storage::{RaftLogReader, RaftStateMachine};
use raft_core::storage::{db::DB_FILE, Db, RedbLogStore, StateMachineStore};
use raft_core::types::EntryPayload;
use serde::{Deserialize, Serialize};

use kv_client::api::JsonValue;

use crate::changes::{ChangeKind, ChangeLog, Read, Retention};
use crate::command::{KvCommand, WriteOp};
use crate::state_machine::{self, KvStateMachine};

/// What a data directory holds, as `kv-server inspect` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The term of the saved vote (0: the node never voted).
    pub vote_term: u64,
    /// The node the saved vote is for, if any.
    pub voted_for: Option<u64>,
    /// Whether the saved vote is a leader's granted by a quorum.
    pub vote_committed: bool,
    /// The index the log was purged through (behind a snapshot); 0 if never.
    pub purged_index: u64,
    /// The last log index (0: an empty log).
    pub last_index: u64,
    /// The term of the last log entry (0: an empty log).
    pub last_term: u64,
    /// An index known to be committed: the saved commit index, or the
    /// applied index if that is larger. The true commit index may be ahead.
    pub committed_index: u64,
    /// The index the applied state was last checkpointed at: a restart
    /// resumes from here and re-applies the log after it.
    pub checkpoint_index: u64,
    /// The voters of the membership in force: the newest in the log, or
    /// the checkpointed state's if the log holds none.
    pub voters: Vec<u64>,
    /// The learners (non-voting members) of that membership.
    pub learners: Vec<u64>,
}

/// One log entry that wrote a key, and the key's value right after it.
///
/// In JSON (`kv-server inspect --writes`, one per line): `value` is the
/// value as a UTF-8 string, or `null` if the entry left the key absent
/// (a delete); a value that is not UTF-8 has `"value": null` and its bytes
/// in standard base64 under `value_b64`. A key deleted because a lease
/// ended in the entry also has `deleted_by` and `lease`:
/// `{"index":9,"key":"k","value":null,"deleted_by":"lease_revoke","lease":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogWrite {
    /// The entry's log index.
    pub index: u64,
    /// The key a command of the entry wrote.
    pub key: String,
    /// The key's value after the entry, if it is UTF-8.
    pub value: Option<String>,
    /// The key's value after the entry, if it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// For a key that a lease's end deleted in this entry: the command
    /// that ended the lease, as [`WriteOp::name`] names it:
    /// `lease_revoke` (a client's revoke) or `expire_leases` (the leader's
    /// expiry). `value` is still the value after the whole entry, which is
    /// `null` unless a later command of the same entry wrote the key again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
    /// With `deleted_by`: the lease that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
}

impl LogWrite {
    fn new(index: u64, key: String, value: Option<Vec<u8>>, ended: Option<LeaseDeletion>) -> Self {
        let JsonValue { value, value_b64 } = match value {
            None => JsonValue { value: None, value_b64: None },
            Some(bytes) => JsonValue::from_bytes(&bytes),
        };
        LogWrite {
            index,
            key,
            value,
            value_b64,
            deleted_by: ended.map(|d| d.command.to_owned()),
            lease: ended.map(|d| d.lease),
        }
    }
}

/// A key deleted because a lease ended: by which command, and which lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseDeletion {
    /// [`WriteOp::name`] of the command that ended the lease.
    command: &'static str,
    lease: u64,
}

/// How to replay a directory's log: see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// An index the caller knows to be committed. The replay goes up to the
    /// larger of this and the commit index saved in the directory, and fails
    /// if the log ends before it.
    pub committed: Option<u64>,
    /// The state machine the node ran: a cluster run with `kv-server
    /// --unsafe-no-dedup` needs [`KvStateMachine::unsafe_without_dedup`],
    /// or retried writes replay differently than they applied.
    pub state_machine: KvStateMachine,
}

/// Opens the database of the stopped node whose data directory is `dir`,
/// refusing a directory that holds none (opening would create an empty
/// one, and a typo must not look like an empty log).
fn open(dir: &Path) -> anyhow::Result<Db> {
    let shown = dir.display();
    if !dir.join(DB_FILE).is_file() {
        bail!("{shown}: no {DB_FILE} in this directory; is it a kv-server data directory?");
    }
    Db::open(dir).with_context(|| format!("opening {shown} (is its node stopped?)"))
}

/// What the data directory `dir` holds.
///
/// # Errors
/// If the directory holds no database, its node is still running, or the
/// stored metadata does not decode.
pub async fn summary(dir: &Path) -> anyhow::Result<Summary> {
    let shown = dir.display();
    let db = open(dir)?;
    let mut log = RedbLogStore::new(db.clone());
    let vote = log.read_vote().await.with_context(|| format!("{shown}: reading the vote"))?;
    let state = log.read_log_state().with_context(|| format!("{shown}: reading the log state"))?;
    let committed =
        log.read_committed_hint().with_context(|| format!("{shown}: reading the commit index"))?;
    let mut sm = StateMachineStore::open(db, KvStateMachine::default())
        .with_context(|| format!("{shown}: loading the applied state"))?;
    let (applied, membership) =
        sm.applied_state().await.with_context(|| format!("{shown}: reading the applied state"))?;
    // The membership in force is the newest one in the log (a node uses a
    // membership from the moment it appends it), else the checkpoint's.
    let first = state.last_purged_log_id.map_or(0, |l| l.index + 1);
    let last = state.last_log_id.map_or(0, |l| l.index);
    let entries = log.read_entries(first..=last).with_context(|| format!("{shown}: reading the log"))?;
    let newest = entries.iter().rev().find_map(|e| match &e.payload {
        EntryPayload::Membership(m) => Some(m.clone()),
        _ => None,
    });
    let membership = newest.unwrap_or_else(|| membership.membership().clone());
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners = membership.learner_ids().collect();
    Ok(Summary {
        vote_term: vote.as_ref().map_or(0, |v| v.leader_id.term),
        voted_for: vote.as_ref().map(|v| v.leader_id.voted_for),
        vote_committed: vote.as_ref().is_some_and(|v| v.committed),
        purged_index: state.last_purged_log_id.map_or(0, |l| l.index),
        last_index: state.last_log_id.map_or(0, |l| l.index),
        last_term: state.last_log_id.map_or(0, |l| l.leader_id.term),
        committed_index: committed.map_or(0, |l| l.index),
        checkpoint_index: applied.map_or(0, |l| l.index),
        voters,
        learners,
    })
}

/// The committed writes of the stopped node whose data directory is `dir`,
/// replayed from index 1 with the state machine `options` name.
///
/// # Errors
/// If the directory holds no database, its node is still running, the log
/// was purged behind a snapshot (no complete prefix from index 1), the log
/// ends before the committed index or has a hole, nothing is known to be
/// committed although the log has entries, or an entry does not apply.
pub fn committed_writes(dir: &Path, options: ReplayOptions) -> anyhow::Result<Vec<LogWrite>> {
    let shown = dir.display();
    let log = RedbLogStore::new(open(dir)?);
    let state = log.read_log_state().with_context(|| format!("{shown}: reading the log state"))?;
    if let Some(purged) = state.last_purged_log_id {
        bail!(
            "{shown}: the log was purged up to index {} behind a snapshot, so it has no complete prefix \
             from index 1 to replay; run the node with snapshots off (a large --snapshot-every) to keep one",
            purged.index
        );
    }
    let last = state.last_log_id.map_or(0, |l| l.index);
    let hint = log.read_committed_hint().with_context(|| format!("{shown}: reading the commit index"))?;
    let committed = hint.map_or(0, |l| l.index).max(options.committed.unwrap_or(0));
    if committed > last {
        bail!(
            "{shown}: the log ends at index {last}, before the committed index {committed}: committed \
             entries are missing (lost in a crash of a node run with --unsafe-no-fsync?)"
        );
    }
    if committed == 0 && last > 0 {
        bail!(
            "{shown}: the log has {last} entries but no commit index was saved (it is written without \
             fsync); pass the node's last applied index with --committed"
        );
    }

    let entries = log.read_entries(1..=committed).with_context(|| format!("{shown}: reading the log"))?;
    // The replay's change stream says which keys a lease's end deleted.
    // Only the newest entry's changes are read, and a history keeps at
    // least its newest index, so one change is the bound to ask for.
    let changes = Arc::new(ChangeLog::new(Retention { max_changes: 1, ..Retention::default() }));
    let sm = StateMachineStore::open(Db::in_memory(), options.state_machine.with_change_log(changes.clone()))
        .context("an in-memory state machine")?;
    let mut writes = Vec::new();
    for (entry, expected_index) in entries.into_iter().zip(1..) {
        let index = entry.log_id.index;
        if index != expected_index {
            bail!("{shown}: the log has a hole: index {index} follows {}", expected_index - 1);
        }
        let mut keys: BTreeMap<String, Option<LeaseDeletion>> =
            touched_keys(&entry.payload).into_iter().map(|key| (key, None)).collect();
        sm.apply_blocking(vec![entry]).with_context(|| format!("{shown}: applying entry {index}"))?;
        for (key, deletion) in lease_deletions(&changes, index) {
            keys.insert(key, Some(deletion));
        }
        let view = sm.view().with_context(|| format!("reading the state after entry {index}"))?;
        for (key, ended) in keys {
            let value = state_machine::get(&view, &key)?;
            writes.push(LogWrite::new(index, key, value, ended));
        }
    }
    Ok(writes)
}

/// The keys that a lease's end deleted at `index`, the entry just
/// applied, from the replay's change log. A key deleted by two lease
/// commands of one entry (deleted, written again, attached to another
/// lease that ends too) names the last.
fn lease_deletions(changes: &ChangeLog, index: u64) -> Vec<(String, LeaseDeletion)> {
    let Read::Changes { indexes, .. } = changes.read(index, usize::MAX, index) else {
        // The newest index is always kept; nothing older is asked for.
        return Vec::new();
    };
    let mut out = Vec::new();
    for change in indexes.iter().filter(|c| c.index == index).flat_map(|c| c.changes.iter()) {
        let Some(lease) = change.lease else { continue };
        let command = match change.kind {
            ChangeKind::Expire => WriteOp::ExpireLeases { leases: Vec::new() }.name(),
            // A lease's end only deletes: a revoke's deletions are deletes.
            ChangeKind::Delete | ChangeKind::Put => WriteOp::LeaseRevoke { id: lease }.name(),
        };
        out.push((change.key.clone(), LeaseDeletion { command, lease }));
    }
    out
}

/// The keys the commands of an entry write, each once, in key order. Blank
/// and membership entries touch none; a command that does not decode
/// changed nothing on the nodes either (they answer it with an error).
fn touched_keys(payload: &EntryPayload) -> BTreeSet<String> {
    match payload {
        EntryPayload::Normal(batch) => batch
            .0
            .iter()
            .filter_map(|bytes| codec::decode::<KvCommand>(bytes).ok())
            // Lease operations name no key (the keys a revoke or an
            // expiry deletes are found by applying it: `lease_deletions`).
            .filter_map(|command| command.op.key().map(str::to_owned))
            .collect(),
        EntryPayload::Blank | EntryPayload::Membership(_) => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    //! A real node, in process: write, stop, inspect.

    use std::collections::BTreeMap;

    use raft_core::openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use raft_core::types::{log_id, Batch, Entry};

    use super::*;
    use crate::command::{SessionId, WriteOp};
    use crate::server::{self, ServerConfig};

    fn command(op: WriteOp) -> KvCommand {
        KvCommand { session: None, proposed_at_ms: 1, op }
    }

    fn put(key: &str, value: &[u8]) -> KvCommand {
        command(WriteOp::Put { key: key.into(), value: value.to_vec().into() })
    }

    fn cas(key: &str, expected: &str, value: &str) -> KvCommand {
        let expected = Some(expected.as_bytes().to_vec().into());
        command(WriteOp::Cas { key: key.into(), expected, value: value.as_bytes().to_vec().into() })
    }

    /// Starts a single-node kv-server in `dir`, runs `commands` one by one,
    /// stops it cleanly, and returns each command's log index.
    async fn run_node(dir: &Path, commands: &[KvCommand]) -> Vec<u64> {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raft = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = ServerConfig::new(1, dir);
        let me = raft_core::Node::new(raft.local_addr().unwrap().to_string(), "");
        config.initial_members = BTreeMap::from([(1, me)]);
        let server = server::start(config, http, raft).await.unwrap();
        let mut indexes = Vec::new();
        for c in commands {
            let written = loop {
                // The node elects itself shortly after initializing.
                match server.node().write(c).await {
                    Ok(w) => break w,
                    Err(raft_core::WriteError::NotLeader { .. }) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("write failed: {e}"),
                }
            };
            indexes.push(written.log_id.index);
        }
        server.shutdown().await;
        indexes
    }

    fn w(index: u64, key: &str, value: Option<&str>) -> LogWrite {
        LogWrite::new(index, key.into(), value.map(|v| v.as_bytes().to_vec()), None)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_puts_cas_and_delete_with_the_value_after_each_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut retried = put("s", b"once");
        retried.session = Some(SessionId { client_id: 7, seq: 1 });
        let commands = [
            put("a", b"1"),
            put("b", b"2"),
            cas("a", "1", "3"), // succeeds
            cas("b", "9", "4"), // fails: "b" stays "2"
            command(WriteOp::Delete { key: "a".into() }),
            retried.clone(),
            put("s", b"other"),
            retried, // a duplicate: changes nothing
            put("bin", &[0xff, 0x00]),
        ];
        let ix = run_node(dir.path(), &commands).await;

        let writes = committed_writes(dir.path(), ReplayOptions::default()).unwrap();
        let binary = LogWrite { value_b64: Some("/wA=".into()), ..w(ix[8], "bin", None) };
        assert_eq!(
            writes,
            vec![
                w(ix[0], "a", Some("1")),
                w(ix[1], "b", Some("2")),
                w(ix[2], "a", Some("3")),
                w(ix[3], "b", Some("2")),
                w(ix[4], "a", None),
                w(ix[5], "s", Some("once")),
                w(ix[6], "s", Some("other")),
                w(ix[7], "s", Some("other")),
                binary,
            ]
        );

        // The same log, replayed as a cluster run with --unsafe-no-dedup
        // applied it: the retry writes again.
        let options =
            ReplayOptions { state_machine: KvStateMachine::unsafe_without_dedup(), ..Default::default() };
        let writes = committed_writes(dir.path(), options).unwrap();
        assert_eq!(writes[7], w(ix[7], "s", Some("once")));

        let summary = summary(dir.path()).await.unwrap();
        assert_eq!((summary.voted_for, summary.vote_committed), (Some(1), true));
        assert!(summary.vote_term >= 1);
        assert_eq!(summary.voters, vec![1]);
        assert!(summary.learners.is_empty());
        assert_eq!(summary.purged_index, 0);
        assert!(summary.last_index >= ix[8], "{summary:?}");
        assert!(summary.committed_index >= ix[8], "a clean stop saves everything it applied: {summary:?}");
        assert!(summary.checkpoint_index >= ix[8], "a clean stop checkpoints: {summary:?}");
    }

    /// The keys a revoke or an expiry deletes are named by no command of
    /// their entry; the replay lists them as deletions all the same, with
    /// the command and the lease that deleted them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_the_keys_a_lease_revoke_or_expiry_deleted_naming_the_command_and_lease() {
        let dir = tempfile::tempdir().unwrap();
        // A TTL of a day, granted at log time 1: the running leader's own
        // expiry check waits a day of its clock before proposing, so the
        // only expiry is the one below, whose log time is past the TTL.
        let day = crate::command::MAX_LEASE_TTL_MS;
        let leased = |key: &str, lease| {
            command(WriteOp::PutWithLease { key: key.into(), value: b"v".to_vec().into(), lease })
        };
        let expiry = KvCommand {
            proposed_at_ms: 1 + day,
            ..command(WriteOp::ExpireLeases {
                leases: vec![crate::command::ExpiredLease { id: 2, renewals: 0 }],
            })
        };
        let commands = [
            command(WriteOp::LeaseGrant { ttl_ms: day }),
            command(WriteOp::LeaseGrant { ttl_ms: day }),
            leased("a", 1),
            leased("b", 1),
            leased("c", 2),
            put("free", b"v"),
            command(WriteOp::LeaseRevoke { id: 1 }),
            expiry,
            // Lease 1 is gone: this revoke deletes nothing.
            command(WriteOp::LeaseRevoke { id: 1 }),
        ];
        let ix = run_node(dir.path(), &commands).await;

        let writes = committed_writes(dir.path(), ReplayOptions::default()).unwrap();
        let ended = |index, key: &str, by: &str, lease| LogWrite {
            deleted_by: Some(by.into()),
            lease: Some(lease),
            ..w(index, key, None)
        };
        assert_eq!(
            writes,
            vec![
                w(ix[2], "a", Some("v")),
                w(ix[3], "b", Some("v")),
                w(ix[4], "c", Some("v")),
                w(ix[5], "free", Some("v")),
                ended(ix[6], "a", "lease_revoke", 1),
                ended(ix[6], "b", "lease_revoke", 1),
                ended(ix[7], "c", "expire_leases", 2),
            ]
        );
        let line = serde_json::to_string(&writes[4]).unwrap();
        assert_eq!(
            line,
            format!(r#"{{"index":{},"key":"a","value":null,"deleted_by":"lease_revoke","lease":1}}"#, ix[6])
        );
        let plain = serde_json::to_string(&writes[0]).unwrap();
        assert!(!plain.contains("deleted_by") && !plain.contains("lease"), "{plain}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committed_index_beyond_the_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ix = run_node(dir.path(), &[put("k", b"v")]).await;
        let options = ReplayOptions { committed: Some(ix[0] + 5), ..Default::default() };
        let err = committed_writes(dir.path(), options).unwrap_err().to_string();
        assert!(err.contains("committed entries are missing"), "{err}");
    }

    #[tokio::test]
    async fn a_purged_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RedbLogStore::new(Db::open(dir.path()).unwrap());
            let id = |index| log_id(1, index);
            let entries = (1..=4).map(|i| Entry {
                log_id: id(i),
                payload: EntryPayload::Normal(Batch::one(codec::encode(&put("k", b"v")))),
            });
            log.blocking_append(entries).await.unwrap();
            log.purge(id(2)).await.unwrap();
        }
        let err = committed_writes(dir.path(), ReplayOptions::default()).unwrap_err().to_string();
        assert!(err.contains("purged up to index 2"), "{err}");
        let summary = summary(dir.path()).await.unwrap();
        assert_eq!((summary.purged_index, summary.last_index, summary.last_term), (2, 4, 1));
        assert_eq!((summary.vote_term, summary.voted_for), (0, None), "never voted");
    }

    #[tokio::test]
    async fn a_directory_without_a_database_is_an_error_not_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let err = committed_writes(dir.path(), ReplayOptions::default()).unwrap_err().to_string();
        assert!(err.contains("no raft.redb"), "{err}");
        let err = summary(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("no raft.redb"), "{err}");
        assert!(!dir.path().join(DB_FILE).exists(), "nothing was created");
    }
}
