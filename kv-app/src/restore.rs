//! `kv-server restore` and `kv-server --force-new-cluster`: the two ways
//! back from losing a cluster.
//!
//! * [`restore`] makes the data directory of one node of a *new* cluster
//!   from a backup (`kvctl snapshot save`). Run it for every node of the new
//!   cluster with the same backup and the same members, then start them:
//!   they elect a leader and serve the backed-up state, client sessions
//!   included, from the backup's log position on.
//! * [`recovery::force_new_cluster`] turns the data directory of one survivor of a
//!   cluster that lost its majority for good into a cluster of one voter,
//!   keeping everything in its log; the operator then adds members again.
//!
//! Both rest on raft-core's [`raft_core::storage::recovery`], whose module
//! docs say when each is safe; `kv-server` calls `force_new_cluster` there
//! directly, and this module adds what a restore needs around `seed`: the
//! backup read and checked whole before anything is written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use kv_client::backup::{BackupError, BackupHeader, Reader};
use raft_core::storage::recovery::{self, RecoveryError};
use raft_core::types::log_id;
use raft_core::{Node, NodeId};

/// Why a restore did not happen. In every case the data directory was left
/// as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup file could not be opened.
    #[error("{path}: {error}")]
    Open {
        /// The backup file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The backup is damaged, truncated or not a backup.
    #[error("{path}: {error}")]
    Backup {
        /// The backup file.
        path: PathBuf,
        /// What is wrong with it.
        error: BackupError,
    },
    /// The backup is of another cluster than the one being made.
    #[error(
        "the backup is of cluster {found:?}, and this node is of cluster {expected:?}; \
         give --cluster-id {found} to restore it (every node of the new cluster needs the same)"
    )]
    WrongCluster {
        /// The cluster the backup was taken from.
        found: String,
        /// `--cluster-id`.
        expected: String,
    },
    /// The backup holds no applied entry: a cluster that never started.
    #[error("the backup holds nothing applied (index 0): there is nothing to restore")]
    Empty,
    /// Writing the data directory failed, or was refused.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// What [`restore`] made.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup's header.
    pub header: BackupHeader,
    /// The backup's SHA-256 checksum, in hex.
    pub checksum: String,
}

/// Makes `data_dir` the data directory of node `id` of a new cluster of
/// `members` (every one a voter), holding the state in the backup `from`,
/// whose cluster id must be `cluster_id`.
///
/// The whole backup is read and checked (its checksum, its order, its
/// length) before anything is written, and `data_dir` must not exist or be
/// empty; on any error it is left as it was.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    id: NodeId,
    members: &BTreeMap<NodeId, Node>,
    cluster_id: &str,
) -> Result<Restored, RestoreError> {
    // Refuse a used directory before reading a large backup.
    if std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(RecoveryError::NotEmpty(data_dir.to_path_buf()).into());
    }
    let backup_err = |error| RestoreError::Backup { path: from.to_path_buf(), error };
    let file = File::open(from).map_err(|error| RestoreError::Open { path: from.to_path_buf(), error })?;
    let mut reader = Reader::open(BufReader::new(file)).map_err(backup_err)?;
    let mut state = Vec::with_capacity(reader.header().entries.min(1 << 20) as usize);
    while let Some(entry) = reader.next_entry().map_err(backup_err)? {
        state.push(entry);
    }
    // Only now, with the checksum matched, is the header to be believed.
    let header = reader.header().clone();
    if header.cluster_id != cluster_id {
        return Err(RestoreError::WrongCluster { found: header.cluster_id, expected: cluster_id.into() });
    }
    if header.index == 0 {
        return Err(RestoreError::Empty);
    }
    let checksum = reader.checksum().unwrap_or_default().to_string();
    recovery::seed(data_dir, id, log_id(header.term, header.index), members, state)?;
    tracing::info!(
        node_id = id,
        path = %data_dir.display(),
        term = header.term,
        index = header.index,
        keys = header.keys,
        "restored from a backup"
    );
    Ok(Restored { header, checksum })
}
