//! `maelstrom-node`: a lin-kv node on raft-core, for Maelstrom.
//!
//! Maelstrom starts one process per node and speaks to it on stdin and
//! stdout; this binary logs to stderr only. Run it under Maelstrom with
//!
//! ```text
//! maelstrom test -w lin-kv --bin target/release/maelstrom-node --node-count 3 \
//!     --concurrency 2n --rate 100 --time-limit 60 --nemesis partition
//! ```
//!
//! Flags are optional (Maelstrom passes none; wrap the binary in a script to
//! set them). See `docs/maelstrom.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use maelstrom::config::{self, NodeOptions, StorageChoice};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(version, about = "A Maelstrom lin-kv node: a linearizable key-value store on Raft (raft-core)")]
struct Args {
    /// Keep each node's Raft log and state durably (redb) in DIR/NODE, for
    /// example DIR/n0. Default: in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Leader heartbeat interval in ms; also the deadline of one
    /// AppendEntries and of a read's quorum round. Keep it above the
    /// network's round trip.
    #[arg(long, default_value_t = config::HEARTBEAT_INTERVAL.as_millis() as u64)]
    heartbeat_ms: u64,
    /// Election timeout range in ms, as MIN-MAX.
    #[arg(long, default_value_t = format!("{}-{}", config::ELECTION_TIMEOUT_MIN.as_millis(), config::ELECTION_TIMEOUT_MAX.as_millis()))]
    election_timeout_ms: String,
    /// How long the leader waits for a write to commit or a read barrier, in ms.
    #[arg(long, default_value_t = config::REQUEST_TIMEOUT.as_millis() as u64)]
    request_timeout_ms: u64,
    /// How long a follower waits for the leader's answer to a forwarded
    /// operation, in ms.
    #[arg(long, default_value_t = config::FORWARD_TIMEOUT.as_millis() as u64)]
    forward_timeout_ms: u64,
}

impl Args {
    fn options(&self) -> Result<NodeOptions> {
        let (min, max) = self
            .election_timeout_ms
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
            .with_context(|| {
                format!("--election-timeout-ms {:?}: expected MIN-MAX", self.election_timeout_ms)
            })?;
        let mut options = NodeOptions::default();
        if let Some(dir) = &self.data_dir {
            options.storage = StorageChoice::Durable(dir.clone());
        }
        options.raft.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        options.raft.election_timeout_min = Duration::from_millis(min);
        options.raft.election_timeout_max = Duration::from_millis(max);
        options.raft.request_timeout = Duration::from_millis(self.request_timeout_ms);
        options.forward_timeout = Duration::from_millis(self.forward_timeout_ms);
        if let Err(e) = options.raft.to_openraft() {
            bail!("invalid Raft timing: {e}");
        }
        Ok(options)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `info`, and `warn` for
/// openraft, whose `info` is a line per vote and state change). Installed with
/// `set_global_default`, not `init()`: `init()` would also install the
/// `tracing-log` bridge as the process's `log` logger, and maelstrom-node's
/// `Runtime::init` panics if a `log` logger is already set. (We do not call
/// `Runtime::init`; this keeps the binary safe if someone does.)
fn install_tracing() -> Result<()> {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,openraft::core::heartbeat=error")),
        )
        .finish();
    tracing::subscriber::set_global_default(subscriber).context("installing the tracing subscriber")
}

fn main() -> Result<()> {
    let args = Args::parse();
    install_tracing()?;
    let options = args.options()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let result = runtime.block_on(maelstrom::run(options));
    // stdin is read on a blocking thread that only returns at end of input;
    // do not wait for it if we stop for another reason.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.context("maelstrom node")
}
