//! The final log, for the session checker's consistent-prefix check, asked
//! of the service: `kv-server inspect --writes` on a stopped node's data
//! directory.
//!
//! The session checker ([`jepsen_checker::checker::session`]) asks of every read
//! whether the value it returned is the value its key held after *some
//! prefix* of the agreed log: exactly the prefix up to the index the read
//! says it reflects. To answer, it needs, for each key, the value after
//! every entry that touched it: a [`FinalLog`]. The log is not exposed over
//! HTTP, so after the run, when every node has been stopped, the harness
//! runs the server binary's offline inspection on the node that applied the
//! most, which replays the committed log with the service's own state
//! machine and prints one JSON line per (entry, key):
//! `{"index": 7, "key": "k", "value": "v"}` (`null`: deleted). The harness
//! thereby depends on a command of the service, never on its storage
//! format.
//!
//! How far the log is committed: the node saves its commit index without
//! an fsync of its own, so after a kill it may lag. The harness read every
//! node's applied index from its status before stopping it, and an applied
//! entry is committed by definition: it passes that as
//! [`ReplayOptions::committed`], and the inspection replays up to the
//! larger of the two (or fails, if the log ends before).
//!
//! Keys and values in the KV service are byte strings; the harness uses
//! UTF-8 for both, and a value that is not UTF-8 is an error rather than a
//! guess.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use jepsen_checker::checker::session::{FinalLog, LogWrite};

/// How to replay a data directory's log.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// An index the caller knows to be committed (such as the applied index
    /// the node reported before it was stopped).
    pub committed: Option<u64>,
    /// The nodes ran with `kv-server --unsafe-no-dedup`: retried writes
    /// applied again, and must replay the same way.
    pub unsafe_no_dedup: bool,
}

/// The committed writes of the stopped node whose data directory is
/// `data_dir`, as `server_bin inspect --writes` replays them.
///
/// # Errors
/// If the inspection fails (its error is passed on: no database there, the
/// node still running, a log purged behind a snapshot, committed entries
/// missing), or prints something that is not a write with a UTF-8 value.
pub fn final_log(server_bin: &Path, data_dir: &Path, options: ReplayOptions) -> anyhow::Result<FinalLog> {
    let mut cmd = Command::new(server_bin);
    kv_client::server_env::clear(&mut cmd).arg("inspect").arg("--writes").arg("--data-dir").arg(data_dir);
    if let Some(committed) = options.committed {
        cmd.args(["--committed", &committed.to_string()]);
    }
    if options.unsafe_no_dedup {
        cmd.arg("--unsafe-no-dedup");
    }
    let out = cmd.output().with_context(|| format!("running {} inspect", server_bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} inspect failed ({}): {}",
            server_bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text =
        String::from_utf8(out.stdout).context("kv-server inspect printed something that is not UTF-8")?;
    parse_writes(&text)
}

/// One line of `kv-server inspect --writes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteLine {
    index: u64,
    key: String,
    value: Option<String>,
    #[serde(default)]
    value_b64: Option<String>,
    /// Set on a key that a lease's end deleted (the command's name), with
    /// `lease`. The checkers need only the value after the entry, so both
    /// are read and not used.
    #[serde(default, rename = "deleted_by")]
    _deleted_by: Option<String>,
    #[serde(default, rename = "lease")]
    _lease: Option<u64>,
}

/// The writes in the lines `kv-server inspect --writes` printed.
fn parse_writes(text: &str) -> anyhow::Result<FinalLog> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let w: WriteLine = serde_json::from_str(line)
            .with_context(|| format!("line {} of kv-server inspect --writes: {line:?}", n + 1))?;
        if w.value_b64.is_some() {
            bail!("the value of {:?} after entry {} is not UTF-8", w.key, w.index);
        }
        entries.push(LogWrite {
            index: w.index,
            key: Value::String(w.key),
            value: w.value.map_or(Value::Null, Value::String),
        });
    }
    Ok(FinalLog { entries })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lines_become_writes_with_null_for_a_delete() {
        let log = parse_writes(
            "{\"index\":3,\"key\":\"a\",\"value\":\"1\"}\n{\"index\":5,\"key\":\"a\",\"value\":null}\n",
        )
        .unwrap();
        let w = |index, value| LogWrite { index, key: json!("a"), value };
        assert_eq!(log.entries, vec![w(3, json!("1")), w(5, Value::Null)]);
        assert!(parse_writes("").unwrap().entries.is_empty());
        // A key deleted because its lease was revoked is a deletion too.
        let log = parse_writes(
            "{\"index\":9,\"key\":\"a\",\"value\":null,\"deleted_by\":\"lease_revoke\",\"lease\":3}\n",
        )
        .unwrap();
        assert_eq!(log.entries, vec![w(9, Value::Null)]);
    }

    #[test]
    fn a_value_that_is_not_utf8_or_a_line_that_is_not_a_write_is_an_error() {
        let err =
            parse_writes("{\"index\":3,\"key\":\"b\",\"value\":null,\"value_b64\":\"/wA=\"}").unwrap_err();
        assert!(err.to_string().contains("is not UTF-8"), "{err}");
        let err = parse_writes("{\"index\":3,\"key\":\"b\",\"value\":\"x\"}\nnot json").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_writes("{\"index\":3,\"key\":\"b\",\"value\":\"x\",\"other\":1}").is_err());
    }

    #[test]
    fn a_failed_inspection_is_an_error_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        // `sh inspect …` fails: there is no script named "inspect".
        let err =
            final_log(Path::new("/bin/sh"), dir.path(), ReplayOptions::default()).unwrap_err().to_string();
        assert!(err.contains("inspect failed") && err.contains("No such file"), "{err}");
        let missing = dir.path().join("no-such-kv-server");
        let err = final_log(&missing, dir.path(), ReplayOptions::default()).unwrap_err().to_string();
        assert!(err.contains("running") && err.contains("no-such-kv-server"), "{err}");
    }
}
