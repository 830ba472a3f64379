//! The local runner (`maelstrom-runner`) against real processes.
//!
//! Two tiny Python nodes in `tests/nodes/`, independent of our Rust code,
//! prove that the runner judges any lin-kv binary and can tell right from
//! wrong: `proxy_n0.py` (every node forwards to n0, which holds the only
//! copy) must be valid, and `local_map.py` (each node keeps its own map)
//! must be invalid. Then our own `maelstrom-node` must be valid on three
//! and on five nodes with partitions and latency; and a node that breaks the
//! protocol or never answers `init` must be reported.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_maelstrom-runner"))
}

fn python_node(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nodes").join(name)
}

/// Runs the runner with `args` plus a temporary store; returns the exit
/// code, the results, and the run's directory (kept alive by the TempDir).
fn run(args: &[&str]) -> (i32, Value, tempfile::TempDir, PathBuf) {
    let store = tempfile::tempdir().expect("temp dir");
    let output = runner()
        .args(["test", "-w", "lin-kv"])
        .args(args)
        .arg("--store")
        .arg(store.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run maelstrom-runner");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().expect("runner exited normally");
    let dir = store.path().join("lin-kv/latest");
    let text = std::fs::read_to_string(dir.join("results.json"))
        .unwrap_or_else(|e| panic!("no results.json ({e}); exit {code}; stderr:\n{stderr}"));
    let results: Value = serde_json::from_str(&text).expect("results.json is JSON");
    (code, results, store, dir)
}

fn assert_run_files(dir: &Path, nodes: usize) {
    for file in ["results.edn", "results.json", "history.jsonl", "history.txt", "latency-raw.svg", "rate.svg"]
    {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    for i in 0..nodes {
        assert!(dir.join(format!("node-logs/n{i}.log")).is_file(), "n{i}.log missing");
    }
    let edn = std::fs::read_to_string(dir.join("results.edn")).unwrap();
    assert!(edn.contains(":valid?") && edn.contains(":msgs-per-op"), "{edn}");
    // The history re-reads and pairs under the shared format's rules.
    let events = jepsen_checker::read_history(dir.join("history.jsonl")).expect("history.jsonl parses");
    jepsen_checker::pair(&events).expect("history pairs");
}

#[test]
fn linearizable_python_proxy_is_valid() {
    let (code, results, _store, dir) = run(&[
        "--bin",
        python_node("proxy_n0.py").to_str().unwrap(),
        "--node-count",
        "3",
        "--concurrency",
        "2n",
        "--rate",
        "50",
        "--time-limit",
        "5",
        "--seed",
        "1",
    ]);
    assert_eq!(results["valid?"], true, "{results:#}");
    assert_eq!(code, 0);
    assert_eq!(results["stats"]["valid?"], true);
    assert!(results["stats"]["count"].as_u64().unwrap() > 100, "{results:#}");
    // Followers forward to n0: node-to-node traffic exists.
    assert!(results["net"]["msgs-per-op"].as_f64().unwrap() > 0.0);
    assert_eq!(results["protocol"]["violations"], serde_json::json!([]));
    assert_run_files(&dir, 3);
}

#[test]
fn python_node_with_a_map_per_node_is_invalid() {
    let (code, results, _store, dir) = run(&[
        "--bin",
        python_node("local_map.py").to_str().unwrap(),
        "--node-count",
        "3",
        "--rate",
        "50",
        "--time-limit",
        "5",
        "--seed",
        "2",
    ]);
    assert_eq!(results["valid?"], false, "{results:#}");
    assert_eq!(code, 1);
    let invalid = results["workload"]["invalid-keys"].as_array().unwrap();
    assert!(!invalid.is_empty());
    assert!(invalid[0]["counterexample"].is_object(), "{:#}", invalid[0]);
    assert_run_files(&dir, 3);
}

#[test]
fn our_node_is_valid_under_partitions_and_latency() {
    let (code, results, _store, dir) = run(&[
        "--bin",
        env!("CARGO_BIN_EXE_maelstrom-node"),
        "--node-count",
        "3",
        "--concurrency",
        "2n",
        "--rate",
        "50",
        "--time-limit",
        "20",
        "--latency",
        "10",
        "--nemesis",
        "partition",
        "--nemesis-interval",
        "3",
        "--seed",
        "3",
    ]);
    assert_eq!(results["valid?"], true, "{results:#}");
    assert_eq!(code, 0);
    assert_eq!(results["protocol"]["violations"], serde_json::json!([]));
    let history = std::fs::read_to_string(dir.join("history.txt")).unwrap();
    assert!(history.contains("start-partition"), "the nemesis never partitioned the network");
    assert!(results["availability"]["ok-fraction"].as_f64().unwrap() > 0.3, "{results:#}");
    assert_run_files(&dir, 3);
}

#[test]
fn our_node_is_valid_on_five_nodes_under_partitions() {
    let (code, results, _store, dir) = run(&[
        "--bin",
        env!("CARGO_BIN_EXE_maelstrom-node"),
        "--node-count",
        "5",
        "--rate",
        "50",
        "--time-limit",
        "20",
        "--latency",
        "10",
        "--latency-dist",
        "uniform",
        "--nemesis",
        "partition",
        "--nemesis-interval",
        "3",
        "--seed",
        "5",
    ]);
    assert_eq!(results["valid?"], true, "{results:#}");
    assert_eq!(code, 0);
    assert_eq!(results["protocol"]["violations"], serde_json::json!([]));
    assert_run_files(&dir, 5);
}

/// A node that never answers `init` makes the runner give up (after
/// `INIT_TIMEOUT`, 10 s) with a harness error naming the node, instead of
/// waiting for it forever. The deadline below only keeps a hang from
/// stalling CI; it is far above the init timeout, so a slow machine does
/// not trip it.
#[test]
fn a_node_that_never_answers_init_is_a_harness_error() {
    const HANG: std::time::Duration = std::time::Duration::from_secs(120);
    let store = tempfile::tempdir().unwrap();
    let silent = script(store.path(), "silent.sh", "#!/bin/sh\nexec cat >/dev/null\n");
    let mut child = runner()
        .args(["test", "-w", "lin-kv", "--node-count", "1", "--time-limit", "1", "--bin"])
        .arg(&silent)
        .arg("--store")
        .arg(store.path())
        .stdout(std::process::Stdio::null())
        // A file, not a pipe: nobody reads a pipe while the runner runs.
        .stderr(std::fs::File::create(store.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + HANG;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the runner still waits for init_ok after {HANG:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(store.path().join("stderr")).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no init_ok") && stderr.contains("n0"), "names the silent node: {stderr}");
}

/// Writes an executable script into `dir`.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_node_that_writes_garbage_is_reported_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // Answers init, prints one line that is not a message, then answers
    // every request with a definite error. The runner must report the line
    // and ignore everything after it, so no operation gets an answer.
    let node = script(
        dir.path(),
        "noisy.py",
        r#"#!/usr/bin/env python3
import json, sys
noisy = True
for line in sys.stdin:
    msg = json.loads(line)
    body = msg["body"]
    if body["type"] == "init":
        out = {"type": "init_ok"}
    else:
        if noisy:
            print("hello", flush=True)
            noisy = False
        out = {"type": "error", "code": 11, "text": "unavailable"}
    out["in_reply_to"] = body["msg_id"]
    print(json.dumps({"src": "n0", "dest": msg["src"], "body": out}), flush=True)
"#,
    );
    let (code, results, _store, _dir) =
        run(&["--bin", node.to_str().unwrap(), "--node-count", "1", "--rate", "20", "--time-limit", "2"]);
    let violations = results["protocol"]["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{results:#}");
    assert_eq!(violations[0]["node"], "n0");
    assert!(violations[0]["reason"].as_str().unwrap().starts_with("not JSON"), "{:#}", violations[0]);
    assert_eq!(violations[0]["line"], "hello");
    // Ignored answers are timeouts: reads fail, writes are indeterminate,
    // nothing is ok, so the stats checker rejects the run.
    assert_eq!(results["stats"]["ok-count"], 0, "{results:#}");
    assert_eq!(results["valid?"], false);
    assert_eq!(code, 1);
}
