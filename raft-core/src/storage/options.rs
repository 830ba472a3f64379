//! How a data directory is opened: the safe default every real node uses,
//! the two faults a test may switch on (see [`super::fault`] for what each
//! one breaks and why a test wants it), and where a new directory keeps
//! its log.

/// How a data directory is opened. The default is the safe storage every
/// real node must use; `lose_unsynced_writes` and `unsafe_no_fsync` each
/// break a durability guarantee on purpose (see [`super::fault`]), and
/// `log_file` chooses the on-disk format of a new directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// Open the database through [`PowerLossBackend`](super::PowerLossBackend), so that a killed
    /// process loses every write it had not fsynced, as a machine that loses
    /// power would. Correct code loses nothing it acknowledged this way.
    pub lose_unsynced_writes: bool,
    /// Acknowledge log appends before they are fsynced (commit them with
    /// [`redb::Durability::None`]). **Breaks Raft's safety**: an entry a
    /// majority acknowledged can vanish when those nodes crash.
    pub unsafe_no_fsync: bool,
    /// Keep the Raft log of a *new* directory in a file of its own
    /// ([`super::wal`], on-disk format 3; the default) rather than in the
    /// database's `log` table (format 2): an fsync then writes only the
    /// pages an append covers. Not a fault, and no effect on a directory
    /// that exists: its format decides.
    pub log_file: bool,
}

impl Default for StorageOptions {
    /// Safe storage, with the log in a file of its own.
    fn default() -> Self {
        StorageOptions { lose_unsynced_writes: false, unsafe_no_fsync: false, log_file: true }
    }
}

impl StorageOptions {
    /// Whether any fault is enabled.
    pub fn injects_faults(&self) -> bool {
        self.lose_unsynced_writes || self.unsafe_no_fsync
    }
}
