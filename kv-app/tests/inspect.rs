//! `kv-server inspect`, run as an operator or a harness would: on the data
//! directory of a real node after it was killed.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::ProcCluster;
use serde_json::{json, Value};

fn inspect(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv-server"))
        .arg("inspect")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_a_killed_node_and_replays_its_committed_writes() {
    let mut cluster = ProcCluster::start(1, &[]).await;
    let client = cluster.client();
    client.put("a", b"1", None).await.unwrap();
    client.put("b", &[0xff, 0x00], None).await.unwrap();
    let last = client.delete("a", None).await.unwrap().index;
    let applied = cluster.status(1).await.unwrap().applied_index;
    assert!(applied >= last);
    let dir = cluster.nodes[&1].dir.clone();

    let refused = inspect(&dir, &[]);
    assert!(!refused.status.success(), "a running node's directory is locked");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is its node stopped?"));

    cluster.kill(1);

    // The summary, for people and as JSON.
    let text = stdout(&inspect(&dir, &[]));
    assert!(text.contains("voters          [1]"), "{text}");
    assert!(text.contains("for node 1 (a leader elected)"), "{text}");
    let summary: Value = serde_json::from_str(&stdout(&inspect(&dir, &["--json"]))).unwrap();
    assert_eq!(summary["voters"], json!([1]));
    assert_eq!(summary["voted_for"], json!(1));
    assert!(summary["last_index"].as_u64().unwrap() >= last, "{summary}");

    // Every committed write, with the value after it, one JSON line each.
    let committed = applied.to_string();
    let out = stdout(&inspect(&dir, &["--writes", "--committed", &committed]));
    let writes: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let writes: Vec<Value> = writes
        .into_iter()
        .map(|mut w| {
            w.as_object_mut().unwrap().remove("index");
            w
        })
        .collect();
    assert_eq!(
        writes,
        vec![
            json!({"key": "a", "value": "1"}),
            json!({"key": "b", "value": null, "value_b64": "/wA="}),
            json!({"key": "a", "value": null}),
        ]
    );

    // An index beyond the log is refused, not replayed short.
    let beyond = (applied + 10).to_string();
    let out = inspect(&dir, &["--writes", "--committed", &beyond]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("committed entries are missing"));
}

#[test]
fn inspect_refuses_a_directory_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = inspect(dir.path(), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no raft.redb in this directory"));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created");
    let out = Command::new(env!("CARGO_BIN_EXE_kv-server")).args(["--id", "2", "inspect"]).output().unwrap();
    assert!(!out.status.success(), "server flags and inspect do not mix");
}
