//! `kvctl watch` against one `kv-server` process: it prints each change
//! under the prefix as a JSON line as it happens, with `--prev` the value
//! before; a `--from-index` older than the history the server keeps
//! (`--watch-history-changes`) exits 2 and says how to start over.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    kv_client::ports::bind_restartable_port().unwrap().local_addr().unwrap().to_string()
}

fn kvctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvctl")).args(["--endpoints", endpoint]).args(args).output().unwrap()
}

#[test]
fn kvctl_watch_prints_changes_as_json_lines_and_exits_2_when_the_history_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (http, raft) = (free_addr(), free_addr());
    let server = Command::new(common::kv_server())
        .args(["--data-dir", dir.path().to_str().unwrap(), "--http-addr", &http, "--raft-addr", &raft])
        .args(["--watch-history-changes", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Killed(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kvctl(&http, &["put", "k/0", "zero"]).status.success() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let watcher = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--endpoints", &http, "watch", "k/", "--prev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watcher = Killed(watcher);
    let mut lines = BufReader::new(watcher.0.stdout.take().unwrap()).lines();
    // The watch starts from now: writes until one shows up, so that the
    // watch is surely open before the ones that count.
    let mut ready = false;
    for i in 0.. {
        assert!(kvctl(&http, &["put", "k/ready", &i.to_string()]).status.success());
        let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["key"] == "k/ready" {
            ready = true;
            break;
        }
    }
    assert!(ready);
    assert!(kvctl(&http, &["put", "other", "x"]).status.success());
    assert!(kvctl(&http, &["put", "k/0", "one"]).status.success());
    assert!(kvctl(&http, &["del", "k/0"]).status.success());
    let mut next = || serde_json::from_str::<serde_json::Value>(&lines.next().unwrap().unwrap()).unwrap();
    let put = next();
    assert_eq!(
        (&put["op"], &put["key"], &put["value"], &put["prev_value"]),
        (&"put".into(), &"k/0".into(), &"one".into(), &"zero".into())
    );
    let delete = next();
    assert_eq!(
        (&delete["op"], &delete["value"], &delete["prev_value"]),
        (&"delete".into(), &serde_json::Value::Null, &"one".into())
    );
    assert!(delete["index"].as_u64() > put["index"].as_u64());

    // Three changes are kept: index 1's is long gone.
    let out = kvctl(&http, &["watch", "k/", "--from-index", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("oldest index kept") && stderr.contains("--from-index I+1"), "{stderr}");
    let out = kvctl(&http, &["watch", "k/", "--from-index", "0"]);
    assert_eq!(out.status.code(), Some(2), "from index 0 is refused by the argument parser");
}
