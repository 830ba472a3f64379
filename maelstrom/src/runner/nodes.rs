//! The node processes: spawning them, `init`, and checking every line they
//! write against the protocol.
//!
//! Each node is the `--bin` binary run without arguments, with stdin and
//! stdout carrying newline-delimited JSON messages and stderr going to
//! `node-logs/<id>.log`. Like Maelstrom, the runner trusts nothing a node
//! writes: a line must be a JSON object with exactly `src`, `dest` and
//! `body` (an `id` is tolerated), `dest` must be a node or a client that
//! exists, and `body` must be an object with a string `type`. The first
//! line that breaks a rule is reported as a [`Violation`], and everything
//! the node writes after it is ignored, as Maelstrom ignores such a node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use super::net::{Message, Net};

/// How long a node has to answer `init`, as in Maelstrom.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A line a node wrote that breaks the protocol.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The node.
    pub node: String,
    /// What is wrong.
    pub reason: String,
    /// The line, cut to 500 characters.
    pub line: String,
}

/// The running nodes.
pub struct Nodes {
    /// Node names, `n0..n{N-1}`.
    pub ids: Vec<String>,
    children: Vec<Child>,
    stdouts: Vec<ChildStdout>,
    /// Protocol violations seen so far.
    pub violations: Arc<Mutex<Vec<Violation>>>,
}

impl Nodes {
    /// Spawns `count` copies of `bin`, each with its stderr in
    /// `log_dir/<id>.log`. Returns the nodes and each node's stdin channel,
    /// for [`Net::start`].
    ///
    /// # Errors
    /// If the binary cannot be started or a log file cannot be created.
    pub fn spawn(
        bin: &Path,
        count: usize,
        log_dir: &Path,
    ) -> anyhow::Result<(Nodes, HashMap<String, mpsc::UnboundedSender<String>>)> {
        let mut nodes =
            Nodes { ids: Vec::new(), children: Vec::new(), stdouts: Vec::new(), violations: Arc::default() };
        let mut stdins = HashMap::new();
        for i in 0..count {
            let id = format!("n{i}");
            let log_path: PathBuf = log_dir.join(format!("{id}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating node log {}", log_path.display()))?;
            let mut child = Command::new(bin)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {} as {id}", bin.display()))?;
            let stdout = child.stdout.take().context("child stdout is piped")?;
            let mut stdin = child.stdin.take().context("child stdin is piped")?;
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(mut line) = rx.recv().await {
                    line.push('\n');
                    // A node that exited stops reading; nothing to do.
                    if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                }
            });
            stdins.insert(id.clone(), tx);
            nodes.ids.push(id);
            nodes.children.push(child);
            nodes.stdouts.push(stdout);
        }
        Ok((nodes, stdins))
    }

    /// Starts one reader task per node that checks each line and puts valid
    /// messages on the network.
    pub fn start_readers(&mut self, net: &Net) {
        for (id, stdout) in self.ids.iter().zip(self.stdouts.drain(..)) {
            tokio::spawn(read_node(id.clone(), stdout, net.clone(), self.violations.clone()));
        }
    }

    /// Sends `init` to every node from clients `c0..c{N-1}` and waits for
    /// each `init_ok`, at most [`INIT_TIMEOUT`] in all.
    ///
    /// # Errors
    /// Names the nodes that did not answer `init_ok` in time.
    pub async fn init(&self, net: &Net) -> anyhow::Result<()> {
        let mut waiting = Vec::new();
        for (i, id) in self.ids.iter().enumerate() {
            let client = format!("c{i}");
            let rx = net.join(&client);
            let body = json!({"type": "init", "msg_id": 1, "node_id": id, "node_ids": self.ids});
            net.send(Message { src: client.clone(), dest: id.clone(), body });
            waiting.push((id.clone(), client, rx));
        }
        let deadline = tokio::time::Instant::now() + INIT_TIMEOUT;
        let mut missing = Vec::new();
        for (id, client, mut rx) in waiting {
            let answered = loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) if m.body["type"] == "init_ok" && m.body["in_reply_to"] == 1 => break true,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break false,
                }
            };
            net.leave(&client);
            if !answered {
                missing.push(id);
            }
        }
        anyhow::ensure!(missing.is_empty(), "no init_ok within {INIT_TIMEOUT:?} from {}", missing.join(", "));
        Ok(())
    }

    /// Kills every node and waits for it to exit.
    pub async fn kill(&mut self) {
        for child in &mut self.children {
            // Already exited is fine.
            let _ = child.kill().await;
        }
    }
}

async fn read_node(id: String, stdout: ChildStdout, net: Net, violations: Arc<Mutex<Vec<Violation>>>) {
    let mut lines = BufReader::new(stdout).split(b'\n');
    let mut ignored = false;
    while let Ok(Some(bytes)) = lines.next_segment().await {
        if ignored {
            continue;
        }
        match check_line(&bytes, &net) {
            Ok(msg) => net.send(msg),
            Err(reason) => {
                let line: String = String::from_utf8_lossy(&bytes).chars().take(500).collect();
                tracing::warn!(node_id = %id, %reason, %line, "protocol violation; ignoring the node from now on");
                violations.lock().unwrap_or_else(|e| e.into_inner()).push(Violation {
                    node: id.clone(),
                    reason,
                    line,
                });
                ignored = true;
            }
        }
    }
}

/// Checks one line a node wrote; see the module docs for the rules.
fn check_line(bytes: &[u8], net: &Net) -> Result<Message, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let msg = check_message(value)?;
    if !net.is_known(&msg.dest) {
        return Err(format!("unknown dest {:?}", msg.dest));
    }
    Ok(msg)
}

/// The shape rules, without the destination check.
fn check_message(value: Value) -> Result<Message, String> {
    let Value::Object(fields) = value else { return Err("not a JSON object".into()) };
    if let Some(extra) = fields.keys().find(|k| !matches!(k.as_str(), "src" | "dest" | "body" | "id")) {
        return Err(format!("unexpected key {extra:?}"));
    }
    let src = fields.get("src").and_then(Value::as_str).ok_or("missing or non-string src")?;
    let dest = fields.get("dest").and_then(Value::as_str).ok_or("missing or non-string dest")?;
    let body = fields.get("body").ok_or("missing body")?;
    if !body.is_object() {
        return Err("body is not an object".into());
    }
    if !body.get("type").is_some_and(Value::is_string) {
        return Err("body has no string type".into());
    }
    Ok(Message { src: src.to_owned(), dest: dest.to_owned(), body: body.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shape_rules() {
        let ok = check_message(json!({"src": "n0", "dest": "c1", "body": {"type": "read_ok", "value": 1}}));
        assert_eq!(ok.unwrap().dest, "c1");
        assert!(check_message(json!({"id": 3, "src": "n0", "dest": "c1", "body": {"type": "x"}})).is_ok());
        for bad in [
            json!([1]),
            json!({"src": "n0", "dest": "c1", "body": {"type": "x"}, "extra": 1}),
            json!({"dest": "c1", "body": {"type": "x"}}),
            json!({"src": "n0", "dest": "c1", "body": 3}),
            json!({"src": "n0", "dest": "c1", "body": {"value": 1}}),
            json!({"src": "n0", "dest": 7, "body": {"type": "x"}}),
        ] {
            assert!(check_message(bad.clone()).is_err(), "{bad} accepted");
        }
    }
}
