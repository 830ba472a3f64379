//! The final log, for the session checker's consistent-prefix check: a
//! stopped node's Raft log, replayed entry by entry.
//!
//! The session checker ([`jepsen_checker::checker::session`]) asks of every read
//! whether the value it returned is the value its key held after *some
//! prefix* of the agreed log: exactly the prefix up to the index the read
//! says it reflects. To answer, it needs, for each key, the value after
//! every entry that touched it: a [`FinalLog`]. This module builds one from
//! a node's data directory after the run, when every node has been
//! stopped.
//!
//! This is the one place where the harness looks inside the service rather
//! than talking to it as a client: the log is not exposed over HTTP, and
//! reading it offline, after the run, cannot disturb what was tested.
//!
//! # How
//!
//! 1. Open the directory with `raft-core`'s [`Db`] (the node must be
//!    stopped: a running node holds the database's lock).
//! 2. Decide how far the log is known to be committed (below).
//! 3. Read the log from index 1. If its start was purged behind a snapshot,
//!    the prefix is incomplete and the replay refuses: the harness runs the
//!    session workload with snapshots effectively off.
//! 4. Apply the entries one at a time to a fresh in-memory copy of the KV
//!    state machine, the same code the nodes ran, and after each entry read
//!    back every key its commands touched. Each (entry, key) becomes one
//!    [`LogWrite`], even when the command changed nothing (a failed
//!    compare-and-swap, a duplicate): the value after it is still correct.
//!
//! # Only committed entries
//!
//! A node's log may end in entries that were never committed and that a
//! later leader would overwrite, so the replay stops at the commit index.
//! `raft-core` saves the commit index it knows as a hint, and
//! [`final_log`] uses that. But the hint is written without its own fsync:
//! after a SIGKILL it is only as new as the node's last durable log append,
//! which usually means the last few committed entries are missing. A caller
//! that knows better, such as the harness, which read every node's applied
//! index from its status before stopping it, passes that index as
//! [`ReplayOptions::committed`]: an applied entry is committed by
//! definition. The replay then goes to the larger of the two.
//!
//! Keys and values in the KV service are byte strings; the harness uses
//! UTF-8 for both, and a value that is not UTF-8 is an error rather than a
//! guess.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context};
use jepsen_checker::checker::session::{FinalLog, LogWrite};
use kv_app::command::KvCommand;
use kv_app::state_machine::{self, KvStateMachine};
use raft_core::codec;
use raft_core::storage::{db::DB_FILE, Db, RedbLogStore, StateMachineStore};
use raft_core::types::EntryPayload;
use serde_json::Value;

/// How to replay a data directory's log. The default replays what the
/// directory itself says is committed, with the state machine every real
/// node runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// An index the caller knows to be committed (such as the applied index
    /// the node reported before it was stopped). The replay goes up to the
    /// larger of this and the commit index saved in the directory, and
    /// fails if the log ends before it.
    pub committed: Option<u64>,
    /// The state machine the nodes ran. A run with `kv-server
    /// --unsafe-no-dedup` needs [`KvStateMachine::unsafe_without_dedup`],
    /// or retried writes replay differently than they applied.
    pub state_machine: KvStateMachine,
}

/// The committed writes of the stopped node whose data directory is
/// `data_dir`, replayed up to the commit index saved there. See the
/// [module docs](self) for why that index may be behind after a kill, and
/// [`final_log_with`] to give a better one.
///
/// # Errors
/// If the directory holds no database, the node is still running, the log
/// was purged behind a snapshot (no complete prefix from index 1), the log
/// ends before the commit index, nothing is known to be committed although
/// the log has entries, or a stored entry or value does not decode.
pub fn final_log(data_dir: &Path) -> anyhow::Result<FinalLog> {
    final_log_with(data_dir, ReplayOptions::default())
}

/// Like [`final_log`], as `options` say.
pub fn final_log_with(data_dir: &Path, options: ReplayOptions) -> anyhow::Result<FinalLog> {
    let dir = data_dir.display();
    // Db::open would create an empty database: a typo must not look like
    // an empty log.
    if !data_dir.join(DB_FILE).is_file() {
        bail!("{dir}: no {DB_FILE} in this directory; is it a kv-server data directory?");
    }
    let db = Db::open(data_dir).with_context(|| format!("opening {dir} (is its node stopped?)"))?;
    let log = RedbLogStore::new(db);

    let state = log.read_log_state().with_context(|| format!("{dir}: reading the log state"))?;
    if let Some(purged) = state.last_purged_log_id {
        bail!(
            "{dir}: the log was purged up to index {} behind a snapshot, so it has no complete prefix \
             from index 1 to replay; run the session workload with snapshots off",
            purged.index
        );
    }
    let last = state.last_log_id.map_or(0, |l| l.index);
    let hint = log.read_committed_hint().with_context(|| format!("{dir}: reading the commit index"))?;
    let committed = hint.map_or(0, |l| l.index).max(options.committed.unwrap_or(0));
    if committed > last {
        bail!(
            "{dir}: the log ends at index {last}, before the committed index {committed}: committed \
             entries are missing (lost in a crash of a node run with --unsafe-no-fsync?)"
        );
    }
    if committed == 0 && last > 0 {
        bail!(
            "{dir}: the log has {last} entries but no commit index was saved (it is written without \
             fsync); pass the node's last applied index as ReplayOptions::committed"
        );
    }

    let entries = log.read_entries(1..=committed).with_context(|| format!("{dir}: reading the log"))?;
    let sm = StateMachineStore::open(Db::in_memory(), options.state_machine)
        .context("an in-memory state machine")?;
    let mut writes = Vec::new();
    for (entry, expected_index) in entries.into_iter().zip(1..) {
        let index = entry.log_id.index;
        if index != expected_index {
            bail!("{dir}: the log has a hole: index {index} follows {}", expected_index - 1);
        }
        let keys = touched_keys(&entry.payload);
        sm.apply_blocking(vec![entry]).with_context(|| format!("{dir}: applying entry {index}"))?;
        let view = sm.view().with_context(|| format!("reading the state after entry {index}"))?;
        for key in keys {
            let value = match state_machine::get(&view, &key)? {
                Some(bytes) => Value::String(String::from_utf8(bytes).map_err(|_| {
                    anyhow::anyhow!("{dir}: the value of {key:?} after entry {index} is not UTF-8")
                })?),
                None => Value::Null,
            };
            writes.push(LogWrite { index, key: Value::String(key), value });
        }
    }
    Ok(FinalLog { entries: writes })
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
            .map(|command| command.op.key().to_string())
            .collect(),
        EntryPayload::Blank | EntryPayload::Membership(_) => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    //! A real node, in process: write, stop, replay.

    use std::collections::BTreeMap;

    use kv_app::command::{SessionId, WriteOp};
    use kv_app::server::{self, ServerConfig};
    use raft_core::openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use raft_core::types::{log_id, Batch, Entry};
    use serde_json::json;

    use super::*;

    fn command(op: WriteOp) -> KvCommand {
        KvCommand { session: None, proposed_at_ms: 1, op }
    }

    fn put(key: &str, value: &str) -> KvCommand {
        command(WriteOp::Put { key: key.into(), value: value.as_bytes().to_vec().into() })
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_puts_cas_and_delete_with_the_value_after_each_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut retried = put("s", "once");
        retried.session = Some(SessionId { client_id: 7, seq: 1 });
        let commands = [
            put("a", "1"),
            put("b", "2"),
            cas("a", "1", "3"), // succeeds
            cas("b", "9", "4"), // fails: "b" stays "2"
            command(WriteOp::Delete { key: "a".into() }),
            retried.clone(),
            put("s", "other"),
            retried, // a duplicate: changes nothing
        ];
        let ix = run_node(dir.path(), &commands).await;

        let log = final_log(dir.path()).unwrap();
        let w = |i: usize, key: &str, value: Value| LogWrite { index: ix[i], key: json!(key), value };
        assert_eq!(
            log.entries,
            vec![
                w(0, "a", json!("1")),
                w(1, "b", json!("2")),
                w(2, "a", json!("3")),
                w(3, "b", json!("2")),
                w(4, "a", Value::Null),
                w(5, "s", json!("once")),
                w(6, "s", json!("other")),
                w(7, "s", json!("other")),
            ]
        );

        // The same log, replayed as a cluster run with --unsafe-no-dedup
        // applied it: the retry writes again.
        let options =
            ReplayOptions { state_machine: KvStateMachine::unsafe_without_dedup(), ..Default::default() };
        let log = final_log_with(dir.path(), options).unwrap();
        assert_eq!(log.entries.last(), Some(&w(7, "s", json!("once"))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committed_index_beyond_the_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ix = run_node(dir.path(), &[put("k", "v")]).await;
        let options = ReplayOptions { committed: Some(ix[0] + 5), ..Default::default() };
        let err = final_log_with(dir.path(), options).unwrap_err().to_string();
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
                payload: EntryPayload::Normal(Batch::one(codec::encode(&put("k", "v")))),
            });
            log.blocking_append(entries).await.unwrap();
            log.purge(id(2)).await.unwrap();
        }
        let err = final_log(dir.path()).unwrap_err().to_string();
        assert!(err.contains("purged up to index 2"), "{err}");
    }

    #[test]
    fn a_directory_without_a_database_is_an_error_not_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let err = final_log(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no raft.redb"), "{err}");
        assert!(!dir.path().join(DB_FILE).exists(), "nothing was created");
    }
}
