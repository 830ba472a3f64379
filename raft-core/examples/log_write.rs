//! What one durable log write costs: a redb commit of one entry (the log of
//! on-disk format 2) against an append and `fdatasync` to the log file
//! (`storage::wal`, format 3), with several processes writing at once, as a
//! cluster's nodes on one machine do.
//!
//! ```sh
//! cargo run --release -p raft-core --example log_write -- --writers 3 --bytes 400,3000
//! ```
//!
//! Each writer is a child process (this program again) with a directory of
//! its own; they all start together, write `--count` entries each, one
//! durable write per entry, and print their latency percentiles. Not a
//! test: numbers depend on the machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use raft_core::storage::wal::{FsDir, Wal, WalOptions};
use redb::{Database, Durability, TableDefinition};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

#[derive(Parser)]
#[command(about = "Durable log writes: redb commit against the log file")]
struct Args {
    /// Processes writing at once.
    #[arg(long, default_value_t = 3)]
    writers: usize,
    /// Entry sizes to measure, comma-separated.
    #[arg(long, default_value = "400,3000", value_delimiter = ',')]
    bytes: Vec<usize>,
    /// Entries each writer writes per measurement.
    #[arg(long, default_value_t = 2000)]
    count: u64,
    /// Internal: run as one writer (`redb` or `file`) in this directory.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(kind), Some(dir)) = (&args.child, &args.dir) {
        return child(kind, dir, args.bytes[0], args.count);
    }
    println!("{:<6} {:>7} {:>8} {:>8} {:>8} {:>8}", "log", "bytes", "writer", "p50 µs", "p90 µs", "p99 µs");
    let exe = std::env::current_exe()?;
    for &bytes in &args.bytes {
        for kind in ["redb", "file"] {
            let tmp = tempfile::tempdir()?;
            let children: Vec<_> = (0..args.writers)
                .map(|w| {
                    std::process::Command::new(&exe)
                        .args([
                            "--child",
                            kind,
                            "--bytes",
                            &bytes.to_string(),
                            "--count",
                            &args.count.to_string(),
                        ])
                        .arg("--dir")
                        .arg(tmp.path().join(w.to_string()))
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                })
                .collect::<Result<_, _>>()?;
            for (w, c) in children.into_iter().enumerate() {
                let out = c.wait_with_output()?;
                let line = String::from_utf8_lossy(&out.stdout);
                println!("{:<6} {:>7} {:>8} {}", kind, bytes, w, line.trim_end());
            }
        }
    }
    Ok(())
}

/// One writer: `count` entries of `bytes` bytes, one durable write each,
/// after 20,000 entries already written (a log with some depth).
fn child(kind: &str, dir: &Path, bytes: usize, count: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let payload = vec![7u8; bytes];
    let mut h = Histogram::<u64>::new(3)?;
    const BEFORE: u64 = 20_000;
    match kind {
        "redb" => {
            let db = Database::builder().create(dir.join("raft.redb"))?;
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(LOG)?;
                for i in 0..BEFORE {
                    t.insert(i, payload.as_slice())?;
                }
            }
            tx.commit()?;
            for i in BEFORE..BEFORE + count {
                let start = Instant::now();
                let mut tx = db.begin_write()?;
                tx.set_durability(Durability::Immediate)?;
                tx.open_table(LOG)?.insert(i, payload.as_slice())?;
                tx.commit()?;
                h.record(start.elapsed().as_micros() as u64)?;
            }
        }
        "file" => {
            let fs_dir = Arc::new(FsDir::new(&dir.join("wal"), false)?);
            let options = WalOptions { segment_bytes: 64 << 20 };
            let mut wal = Wal::open(fs_dir, options).context("opening the log file")?;
            wal.append((0..BEFORE).map(|i| (i, 0, payload.as_slice())))?;
            wal.sync()?;
            for i in BEFORE..BEFORE + count {
                let start = Instant::now();
                wal.append([(i, 0, payload.as_slice())])?;
                wal.sync()?;
                h.record(start.elapsed().as_micros() as u64)?;
            }
        }
        other => anyhow::bail!("unknown log {other:?}"),
    }
    println!(
        "{:>8} {:>8} {:>8}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99)
    );
    Ok(())
}
