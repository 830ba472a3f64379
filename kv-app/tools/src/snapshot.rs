//! `kvctl snapshot save FILE` and `kvctl snapshot status FILE`: an online
//! backup of a running cluster, and a check of one.
//!
//! `save` downloads `GET /v1/cluster/backup` (see `kv_client::backup` for
//! the format) into `FILE.part`, makes it durable, reads it back from disk
//! and checks it whole, and only then renames it to `FILE`: a `FILE` that
//! exists is complete and was intact when written. `status` reads a backup
//! and checks it the same way, so it is also how to check a backup that has
//! been stored for a while. `kvctl snapshot restore` (`kv-server restore`)
//! turns one into the data directories of a new cluster.

use std::fs::File;
use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kv_client::backup::{self, Verified};
use kv_client::client::Client;
use serde::Serialize;

/// What `save` and `status` print with `--json`.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its header and checksum, read back and checked.
    #[serde(flatten)]
    pub verified: Verified,
}

/// `kvctl snapshot save FILE`: a backup from `endpoint` (or the first
/// endpoint that answers) into `file`, which must not exist.
pub async fn save(
    client: &Client,
    endpoint: Option<&str>,
    file: &Path,
    quiet: bool,
) -> anyhow::Result<BackupReport> {
    if file.exists() {
        bail!("{} exists; remove it or choose another name (a backup never overwrites)", file.display());
    }
    let part = part_path(file);
    let result = download(client, endpoint, &part, quiet).await;
    let report = result.and_then(|bytes| {
        let verified = verify_file(&part)?;
        std::fs::rename(&part, file)
            .with_context(|| format!("renaming {} to {}", part.display(), file.display()))?;
        sync_parent(file)?;
        Ok(BackupReport { file: file.to_path_buf(), bytes, verified })
    });
    if report.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    report
}

/// `kvctl snapshot status FILE`: reads and checks a backup.
pub fn status(file: &Path) -> anyhow::Result<BackupReport> {
    let bytes = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?.len();
    Ok(BackupReport { file: file.to_path_buf(), bytes, verified: verify_file(file)? })
}

fn verify_file(path: &Path) -> anyhow::Result<Verified> {
    let f = File::open(path).with_context(|| format!("{}", path.display()))?;
    backup::verify(BufReader::new(f)).with_context(|| format!("{}", path.display()))
}

fn part_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

/// Streams the backup into `part` and makes it durable; returns its size.
async fn download(client: &Client, endpoint: Option<&str>, part: &Path, quiet: bool) -> anyhow::Result<u64> {
    let mut download = client.backup(endpoint).await.context("starting the backup")?;
    let source = download.endpoint().to_string();
    let mut out = File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let bar = progress_bar(download.len(), quiet);
    let mut written = 0u64;
    while let Some(piece) =
        download.next_piece().await.with_context(|| format!("receiving the backup from {source}"))?
    {
        out.write_all(&piece).with_context(|| format!("writing {}", part.display()))?;
        written += piece.len() as u64;
        bar.set_position(written);
    }
    bar.finish_and_clear();
    if let Some(len) = download.len() {
        if written != len {
            bail!("{source} sent {written} bytes of a {len}-byte backup");
        }
    }
    out.sync_all().with_context(|| format!("syncing {}", part.display()))?;
    Ok(written)
}

fn progress_bar(len: Option<u64>, quiet: bool) -> ProgressBar {
    let bar = match len {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::no_length(),
    };
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    // The template is a constant: it parses.
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// Makes a rename in `file`'s directory durable.
fn sync_parent(file: &Path) -> anyhow::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// The report as lines for a person.
pub fn describe(r: &BackupReport) -> String {
    let h = &r.verified.header;
    format!(
        "file:        {}\n\
         cluster:     {:?} (taken from node {}, kv-server {})\n\
         position:    index {}, term {}\n\
         contents:    {} keys, {} client sessions ({} entries, {} bytes of keys and values)\n\
         data digest: {} (a restored node reports it as state_digest)\n\
         created:     {} (by the clock of the node that took it)\n\
         size:        {} bytes\n\
         sha256:      {} (verified)",
        r.file.display(),
        h.cluster_id,
        h.node_id,
        h.server_version,
        h.index,
        h.term,
        h.keys,
        h.sessions,
        h.entries,
        r.verified.payload_bytes,
        h.digest,
        utc(h.created_at_ms),
        r.bytes,
        r.verified.checksum,
    )
}

/// `ms` since the Unix epoch as an RFC 3339 date in UTC.
pub fn utc(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms after the Unix epoch"))
}
