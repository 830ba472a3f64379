//! A data directory written by the previous release opens unchanged.
//!
//! `fixtures/format2-kv-server.redb` is the `raft.redb` of a single-node
//! `kv-server` built on openraft 0.9.25 (on-disk format 2), made like this:
//! 2,600 puts `k1..k2600 = v1..v2600` with `--snapshot-every 1000
//! --snapshot-keep-entries 10` (so it holds a snapshot at 1999 and a log
//! purged up to 1989), a delete of `k5`, a CAS of `k6` to `cas6`, two
//! session writes of `sess` (client 77, seq 1 and 2), then SIGKILL: the
//! entries after the last checkpoint (1999) are only in the log. Its state
//! digest was `1bbbba1c717df386` at applied index 2605.
//!
//! This build (openraft 0.10) must read its vote, log, checkpoint and
//! sessions as they are: re-apply the log after the checkpoint, reach the
//! same state, and remember the session.

use std::time::Duration;

use kv_app::command::{KvCommand, KvResponse, SessionId, WriteOp, WriteOutcome};
use kv_app::server::{self, ServerConfig};
use kv_app::state_machine::{digest, get};

const FIXTURE: &[u8] = include_bytes!("fixtures/format2-kv-server.redb");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_directory_of_the_openraft_0_9_release_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft.redb"), FIXTURE).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raft = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // No initial members: the node resumes as the member it was.
    let server = server::start(ServerConfig::new(1, dir.path()), http, raft).await.unwrap();
    let node = server.node();

    assert_eq!(node.wait_for_leader(Duration::from_secs(20)).await, Some(1));
    node.read_barrier().await.unwrap();
    let view = node.view().unwrap();
    assert!(view.applied_index() >= 2605, "applied {}", view.applied_index());
    assert_eq!(digest(&view).unwrap(), "1bbbba1c717df386", "the same state as before the kill");
    assert_eq!(get(&view, "k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(get(&view, "k2600").unwrap().as_deref(), Some(&b"v2600"[..]));
    assert_eq!(get(&view, "k5").unwrap(), None, "deleted");
    assert_eq!(get(&view, "k6").unwrap().as_deref(), Some(&b"cas6"[..]));
    assert_eq!(get(&view, "sess").unwrap().as_deref(), Some(&b"s2"[..]));

    // The session table came through too: a retry of client 77's seq 2 is
    // recognised, not applied again.
    let retry = KvCommand {
        session: Some(SessionId { client_id: 77, seq: 2 }),
        proposed_at_ms: 1,
        op: WriteOp::Put { key: "sess".into(), value: b"s2".to_vec().into() },
    };
    let written = node.write(&retry).await.unwrap();
    assert_eq!(written.response, KvResponse::Duplicate(WriteOutcome::Put { created: false }));

    let m = node.metrics().await;
    assert_eq!(m.snapshot_index.map(|i| i >= 1999), Some(true), "{m:?}");
    assert_eq!(m.purged_index, Some(1989));
    server.shutdown().await;
}
