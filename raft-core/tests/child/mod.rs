// Shared by the crash tests: runs one `#[ignore]`d test of this same test
// binary as a child process, collects what it prints, and kills it with
// SIGKILL. A kill gives the child no chance to flush or close anything,
// which is the point.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Child {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Child {
    /// Starts the ignored test `name` of the running test binary, with the
    /// environment variables `env` (the child does nothing without them).
    pub fn spawn(name: &str, env: &[(&str, &Path)]) -> Child {
        let exe = std::env::current_exe().unwrap();
        let mut process = Command::new(exe)
            .args(["--ignored", "--exact", name, "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_string()).is_err() {
                    break;
                }
            }
        });
        Child { process, lines }
    }

    /// The next line the child prints, or `None` if it prints none within
    /// `timeout` (or exited).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Kills the child with SIGKILL, waits for it, and returns the lines it
    /// printed that were not read yet.
    pub fn kill(mut self) -> Vec<String> {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        self.lines.iter().collect()
    }
}
