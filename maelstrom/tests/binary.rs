//! End-to-end tests of the `maelstrom-node` binary, with this test playing
//! Maelstrom: it starts the binary once per node, writes client and init
//! messages to their stdin, and routes each line a node prints to the
//! destination node's stdin. This is the real path: maelstrom-node's
//! runtime, the input gate, the stdout writer.
//!
//! Every line any node prints is checked: it must be a JSON object with
//! exactly `src`, `dest` and `body`, from the node's own name. Every process
//! is killed when its test ends (also when it fails: `kill_on_drop`).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A line a node printed that Maelstrom would reject.
type Violations = Arc<Mutex<Vec<String>>>;

struct Cluster {
    children: Vec<Child>,
    stdins: HashMap<String, Arc<tokio::sync::Mutex<ChildStdin>>>,
    to_clients: mpsc::UnboundedReceiver<Value>,
    early: Vec<Value>,
    violations: Violations,
    next_msg_id: u64,
}

impl Cluster {
    /// Starts `n` node processes, not yet initialized.
    fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts `n` node processes with these command-line arguments.
    fn start_with(n: usize, args: &[&std::ffi::OsStr]) -> Cluster {
        let (client_tx, to_clients) = mpsc::unbounded_channel();
        let violations = Violations::default();
        let mut children = Vec::new();
        let mut stdins = HashMap::new();
        let mut stdouts = Vec::new();
        for i in 0..n {
            let name = format!("n{i}");
            let logs = if std::env::var_os("MAELSTROM_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            };
            let mut child = Command::new(env!("CARGO_BIN_EXE_maelstrom-node"))
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(logs)
                .kill_on_drop(true)
                .spawn()
                .expect("starting maelstrom-node");
            stdins.insert(name.clone(), Arc::new(tokio::sync::Mutex::new(child.stdin.take().unwrap())));
            stdouts.push((name, child.stdout.take().unwrap()));
            children.push(child);
        }
        for (name, stdout) in stdouts {
            let stdins = stdins.clone();
            let client_tx = client_tx.clone();
            let violations = violations.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(msg) = check_line(&name, &line, &violations) else { continue };
                    let dest = msg["dest"].as_str().unwrap_or("").to_string();
                    if let Some(stdin) = stdins.get(&dest) {
                        let mut stdin = stdin.lock().await;
                        let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
                    } else if dest.starts_with('c') {
                        let _ = client_tx.send(msg);
                    } else {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("{name} wrote to unknown node {dest}: {line}"));
                    }
                }
            });
        }
        Cluster { children, stdins, to_clients, early: Vec::new(), violations, next_msg_id: 1 }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.stdins.keys().cloned().collect();
        names.sort();
        names
    }

    /// Writes raw bytes (one or more lines) to a node's stdin.
    async fn write_raw(&self, node: &str, bytes: &[u8]) {
        let mut stdin = self.stdins[node].lock().await;
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Sends `body` from client `c1` to `node`; returns the msg_id used.
    async fn send(&mut self, node: &str, mut body: Value) -> u64 {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        body["msg_id"] = msg_id.into();
        let line = json!({"src": "c1", "dest": node, "body": body}).to_string() + "\n";
        self.write_raw(node, line.as_bytes()).await;
        msg_id
    }

    /// Waits for the reply to `msg_id`.
    async fn reply(&mut self, msg_id: u64) -> Value {
        if let Some(i) = self.early.iter().position(|m| m["body"]["in_reply_to"] == msg_id) {
            return self.early.remove(i);
        }
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.to_clients.recv())
                .await
                .unwrap_or_else(|_| panic!("no reply to msg_id {msg_id} within {REPLY_TIMEOUT:?}"))
                .expect("all nodes exited");
            if msg["body"]["in_reply_to"] == msg_id {
                return msg;
            }
            self.early.push(msg);
        }
    }

    async fn call(&mut self, node: &str, body: Value) -> Value {
        let id = self.send(node, body).await;
        let reply = self.reply(id).await;
        assert_eq!(reply["src"], node, "{reply}");
        reply["body"].clone()
    }

    async fn init_all(&mut self) {
        let names = self.names();
        for name in &names {
            let body = json!({"type": "init", "node_id": name, "node_ids": names});
            let reply = self.call(name, body).await;
            assert_eq!(reply["type"], "init_ok", "{reply}");
        }
    }

    /// Writes through `node` until a write succeeds (an election may still
    /// be under way).
    async fn write_until_ok(&mut self, node: &str, key: Value, value: Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.call(node, json!({"type": "write", "key": key, "value": value})).await;
            if reply["type"] == "write_ok" {
                return;
            }
            assert!([0, 11].contains(&reply["code"].as_u64().unwrap_or(99)), "{reply}");
            assert!(Instant::now() < deadline, "no successful write within 30 s: {reply}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Asserts that every process is still running and that no node printed
    /// an invalid line; then kills them all.
    async fn finish(mut self) {
        for child in &mut self.children {
            assert!(child.try_wait().unwrap().is_none(), "a node process exited");
        }
        let violations = self.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "invalid output: {violations:#?}");
        for child in &mut self.children {
            child.kill().await.unwrap();
        }
    }
}

/// Checks one line a node printed; returns it parsed if it is valid.
fn check_line(node: &str, line: &str, violations: &Violations) -> Option<Value> {
    let problem = match serde_json::from_str::<Value>(line) {
        Err(e) => Some(format!("not JSON ({e})")),
        Ok(msg) => {
            let mut keys: Vec<&String> = msg.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            keys.sort();
            if keys != ["body", "dest", "src"] {
                Some(format!("keys {keys:?}"))
            } else if msg["src"] != node {
                Some(format!("src is not {node}"))
            } else if !msg["body"]["type"].is_string() || !msg["dest"].is_string() {
                Some("no body.type or dest".to_string())
            } else {
                return Some(msg);
            }
        }
    };
    violations.lock().unwrap().push(format!("{node}: {} in {line:?}", problem.unwrap_or_default()));
    None
}

fn keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// A single node: what arrives before init, garbage of every kind, and a
/// second init neither stop the process nor produce an invalid line.
///
/// Regression: behind maelstrom-node 0.1.6 alone, the first unparsable line
/// ended `run()` and the process exited with status 1, and a non-UTF-8 line
/// stopped it reading stdin; the input gate now drops such lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_garbage_and_early_messages_then_serves() {
    let mut cluster = Cluster::start(1);

    let early = cluster.call("n0", json!({"type": "read", "key": 1})).await;
    assert_eq!(early["code"], 11, "{early}");
    assert_eq!(keys(&early), ["code", "in_reply_to", "text", "type"]);

    // Each of these would end (or stall) maelstrom-node's run() on its own.
    cluster.write_raw("n0", b"garbage\n\xff\xfe not utf-8\n{}\n[]\n").await;
    cluster.write_raw("n0", br#"{"src":"c1","dest":"n0","body":{"type":"read","msg_id":-1}}"#).await;
    cluster.write_raw("n0", b"\n").await;
    cluster
        .write_raw("n0", br#"{"src":"c1","dest":"n0","body":{"type":"init","msg_id":77,"node_id":5}}"#)
        .await;
    cluster.write_raw("n0", b"\n").await;

    cluster.init_all().await;
    // A second init is dropped by the gate: no answer, no crash.
    cluster.send("n0", json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]})).await;

    let unknown = cluster.call("n0", json!({"type": "echo", "echo": "hi"})).await;
    assert_eq!(unknown["code"], 10, "{unknown}");
    let malformed = cluster.call("n0", json!({"type": "cas", "key": 1})).await;
    assert_eq!(malformed["code"], 12, "{malformed}");

    cluster.write_until_ok("n0", json!(1), json!(42)).await;
    let read = cluster.call("n0", json!({"type": "read", "key": 1})).await;
    assert_eq!(read["value"], 42, "{read}");
    assert_eq!(keys(&read), ["in_reply_to", "type", "value"]);
    let missing = cluster.call("n0", json!({"type": "read", "key": 2})).await;
    assert_eq!(missing["code"], 20, "{missing}");
    cluster.finish().await;
}

/// Three processes: Raft RPCs and forwarded operations cross the test's
/// router as Maelstrom messages, and every node serves every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_replicate_and_forward() {
    let mut cluster = Cluster::start(3);
    cluster.init_all().await;

    cluster.write_until_ok("n1", json!(7), json!(1)).await;
    for node in cluster.names() {
        let read = cluster.call(&node, json!({"type": "read", "key": 7})).await;
        assert_eq!(read["value"], 1, "read at {node}: {read}");
    }
    let mismatch = cluster.call("n2", json!({"type": "cas", "key": 7, "from": 0, "to": 2})).await;
    assert_eq!(mismatch["code"], 22, "{mismatch}");
    let missing = cluster.call("n0", json!({"type": "cas", "key": 8, "from": 0, "to": 2})).await;
    assert_eq!(missing["code"], 20, "{missing}");
    let ok = cluster.call("n2", json!({"type": "cas", "key": 7, "from": 1, "to": 2})).await;
    assert_eq!(ok["type"], "cas_ok", "{ok}");
    assert_eq!(keys(&ok), ["in_reply_to", "type"]);
    let read = cluster.call("n1", json!({"type": "read", "key": 7})).await;
    assert_eq!(read["value"], 2, "{read}");
    cluster.finish().await;
}

/// `--data-dir`: each node keeps its own redb database under DIR/<name>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_puts_each_node_in_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(3, &["--data-dir".as_ref(), dir.path().as_os_str()]);
    cluster.init_all().await;
    cluster.write_until_ok("n2", json!("x"), json!([1, 2])).await;
    let read = cluster.call("n0", json!({"type": "read", "key": "x"})).await;
    assert_eq!(read["value"], json!([1, 2]), "{read}");
    for name in ["n0", "n1", "n2"] {
        let node_dir = dir.path().join(name);
        assert!(
            std::fs::read_dir(&node_dir).map(|d| d.count() > 0).unwrap_or(false),
            "{node_dir:?} is empty"
        );
    }
    cluster.finish().await;
}
