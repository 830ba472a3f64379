//! The node's data directory: a redb database, its tables and its format
//! version, and the log file's directory.
//!
//! # On-disk layout
//!
//! `<data-dir>/raft.redb` holds everything but the log, which is a file of
//! its own in `<data-dir>/wal/` ([`super::wal`]; on-disk format 3). A
//! directory created before format 3 keeps the log in the `log` table
//! below (format 2), and is opened as it is. The log's writer writes the
//! log and `meta`; a checkpoint or a snapshot install writes `sm` and
//! `app`, each in a transaction of its own:
//!
//! | table     | key          | value                                          |
//! |-----------|--------------|------------------------------------------------|
//! | `meta`    | `"format"`   | format version (u32), written at creation      |
//! |           | `"vote"`     | the current term and vote                      |
//! |           | `"committed"`| a committed log id, written with log appends (format 3: with votes and purges; the log file's note records carry it) |
//! |           | `"purged"`   | the last purged log id                         |
//! | `log`     | index (u64)  | one encoded log entry (format 2; empty in 3)   |
//! | `sm`      | `"applied"`  | the log id the checkpointed state reflects     |
//! |           | `"membership"`| the membership as of that log id              |
//! |           | `"snapshot_meta"` | the current snapshot's metadata           |
//! | `app`     | bytes        | the application state at the last checkpoint (see [`super::state_machine`]) |
//!
//! Every value is encoded with [`crate::codec`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::fault::PowerLossBackend;
use super::options::StorageOptions;
use super::wal::{FsDir, Wal, WalDir, WalError, WalOptions};
use crate::codec;

/// The file name of the database inside a data directory.
pub const DB_FILE: &str = "raft.redb";

/// The on-disk format this build writes and understands. Bump it when a
/// table or an encoded type changes shape, and teach [`Db::open`] to upgrade
/// (or, as so far, refuse the old format with [`OpenError::UnknownFormat`]).
///
/// * 1: log ids and votes in openraft's default leader-id form, (term, node id).
/// * 2: standard Raft's form (openraft 0.9's `single-term-leader`, 0.10's
///   standard leader id, the same bytes): a log id carries the bare term, a
///   vote the term and the candidate voted for. Version 1 files would
///   decode into nonsense, so they are refused.
pub const FORMAT_VERSION: u32 = 2;

/// The on-disk format of a directory whose Raft log is a file of its own
/// ([`super::wal`], in `<data-dir>/wal/`) rather than the `log` table: the
/// other tables as in [`FORMAT_VERSION`]. A new directory gets it when
/// opened with [`StorageOptions::log_file`]; a build that knows only
/// format 2 refuses it instead of reading an empty log.
pub const FORMAT_LOG_FILE: u32 = 3;

/// The directory, inside a data directory, of a format-3 log.
pub const WAL_DIR: &str = "wal";

/// redb's page cache. Its default, 1 GiB, would let the process grow with
/// the file; the state machine keeps its own copy of the state in memory,
/// so the cache needs to hold little more than the log's tail, which
/// replication reads back soon after it is written.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the redb database at `path` on a [`PowerLossBackend`],
/// so that a killed process loses every write it had not fsynced.
fn open_power_loss(path: &Path) -> Result<Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    builder().create_with_backend(PowerLossBackend::new(redb::backends::FileBackend::new(file)?)?)
}

/// The path that errors about a database on a storage backend name
/// ([`Db::on_backend`]): a backend has no path of its own.
pub const BACKEND_PATH: &str = "(storage backend)";

/// Warns that `options` inject storage faults into the database at `at`,
/// if they do: such a node may lose acknowledged writes.
fn warn_if_faulty(at: &dyn std::fmt::Display, options: StorageOptions) {
    if options.injects_faults() {
        tracing::warn!(
            path = %at,
            lose_unsynced_writes = options.lose_unsynced_writes,
            unsafe_no_fsync = options.unsafe_no_fsync,
            "storage fault injection enabled: this node may lose acknowledged writes"
        );
    }
}

/// Runs `open`, the opening of the database at `path`, turning a panic in
/// it into [`OpenError::Corrupted`]: redb validates what it reads, but a
/// corrupted page deep in the file might still trip an assertion.
fn open_guarded(path: &Path, open: impl FnOnce() -> Result<Db, OpenError>) -> Result<Db, OpenError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        Err(OpenError::Corrupted {
            path: path.to_path_buf(),
            reason: format!("redb panicked while opening the database: {}", panic_message(&panic)),
        })
    })
}

/// The length of the magic number that opens every redb database.
const REDB_MAGIC_LEN: usize = 9;

/// Whether storage of `len` bytes, whose first bytes `read` fills, holds a
/// database whose creation was interrupted: not empty, but no magic number,
/// only zeros where it goes. redb creates a database by growing the
/// storage, writing and syncing a header without the magic number, and only
/// then writing and syncing the magic number, so that a crash in between
/// is recognisable; it then refuses such storage as "not a redb database".
fn creation_interrupted(
    len: u64,
    read: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    let mut head = [0; REDB_MAGIC_LEN];
    let head = &mut head[..len.min(REDB_MAGIC_LEN as u64) as usize];
    read(head)?;
    Ok(head.iter().all(|&b| b == 0))
}

/// A redb builder with this crate's settings.
pub(crate) fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("sm");

/// Why a data directory could not be opened. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory or file could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file exists but is not a redb database, or redb found it
    /// corrupted beyond repair.
    #[error("{path}: not a readable raft-core database (corrupted or not a redb file): {reason}")]
    Corrupted {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },
    /// The database was written by a build with another on-disk format.
    #[error("{path}: on-disk format version {found}, this build understands only {FORMAT_VERSION} and {FORMAT_LOG_FILE}")]
    UnknownFormat {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
    },
    /// The file is a redb database, but not one this crate created.
    #[error("{path}: a redb database without a raft-core format version; refusing to use it")]
    ForeignDatabase {
        /// The database file.
        path: PathBuf,
    },
    /// Another process has the database open.
    #[error("{path}: the database is already open in another process")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// A database whose log is a file of its own was opened without a
    /// directory for that file ([`Db::on_backend`] instead of
    /// [`Db::on_backends`]).
    #[error("{path}: the Raft log of this database is a file of its own, and no directory for it was given")]
    NoLogDirectory {
        /// The database.
        path: PathBuf,
    },
}

/// A shared handle on the node's database.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DbFile>,
    path: Option<PathBuf>,
    options: StorageOptions,
    /// [`FORMAT_VERSION`] or [`FORMAT_LOG_FILE`].
    format: u32,
    /// Where the log's file lives, in format 3.
    log_dir: Option<Arc<dyn WalDir>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("format", &self.format)
            .finish()
    }
}

impl Db {
    /// Opens (or creates) the database in `dir`, checking its format version,
    /// with safe storage ([`StorageOptions::default`]).
    ///
    /// Never panics on a bad file: redb's own checks are wrapped so that a
    /// corrupted file gives [`OpenError::Corrupted`].
    pub fn open(dir: &Path) -> Result<Db, OpenError> {
        Self::open_with(dir, StorageOptions::default())
    }

    /// Like [`Db::open`], with storage faults injected as `options` says
    /// (see [`super::fault`]): for crash tests and negative controls only.
    pub fn open_with(dir: &Path, options: StorageOptions) -> Result<Db, OpenError> {
        warn_if_faulty(&dir.display(), options);
        open_guarded(&dir.join(DB_FILE), || Self::open_inner(dir, options))
    }

    fn open_inner(dir: &Path, options: StorageOptions) -> Result<Db, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        // An empty file holds no database yet: a crash right after creating
        // it, before redb's first durable commit, leaves one behind.
        let existed = path.metadata().is_ok_and(|m| m.len() > 0);
        let opened = if options.lose_unsynced_writes {
            open_power_loss(&path)
        } else if existed {
            builder().open(&path)
        } else {
            builder().create(&path)
        };
        let log_dir = || -> Result<Arc<dyn WalDir>, OpenError> {
            let at = dir.join(WAL_DIR);
            let made = FsDir::new(&at, options.lose_unsynced_writes);
            Ok(Arc::new(made.map_err(|source| OpenError::Io { path: at, source })?))
        };
        Self::checked(opened, existed, Some(path), options, Some(&log_dir))
    }

    /// Opens (or creates) a database on any redb storage backend: a
    /// simulated disk ([`super::SimDisk`]) or one of redb's own. An empty
    /// backend becomes a new database; a non-empty one is recovered (redb
    /// repairs it if it was not closed cleanly) and must hold this crate's
    /// format, exactly as a file opened by [`Db::open`] must.
    ///
    /// One difference from a file: a backend whose first bytes are zero
    /// holds a database whose creation a power failure interrupted (redb
    /// writes its magic number last, once the rest of the new database is
    /// durable), with nothing ever committed to it. It is emptied and
    /// created anew, where [`Db::open`] would report the file
    /// [`OpenError::Corrupted`]. (A file is left alone: another process
    /// could be creating it at that moment, and only redb's lock, taken
    /// later, would tell.)
    ///
    /// Never panics on bad bytes: a backend redb cannot read, or on which
    /// it panics, gives [`OpenError::Corrupted`]; a failing backend call
    /// gives [`OpenError::Io`]. Errors name the path
    /// [`BACKEND_PATH`], since a backend has none, and so does
    /// [`Db::path`] (`None`).
    ///
    /// Of `options`, `unsafe_no_fsync` applies as on a file;
    /// `lose_unsynced_writes` opens files through
    /// [`PowerLossBackend`] and means nothing
    /// here: a backend decides itself what a power failure keeps.
    pub fn on_backend(backend: impl redb::StorageBackend, options: StorageOptions) -> Result<Db, OpenError> {
        Self::on_backends_inner(backend, None, options)
    }

    /// Like [`Db::on_backend`], with a directory for the log's own file
    /// ([`StorageOptions::log_file`], format 3): a simulated one
    /// ([`super::SimDir`]) beside a [`super::SimDisk`], say.
    pub fn on_backends(
        backend: impl redb::StorageBackend,
        log_dir: Arc<dyn WalDir>,
        options: StorageOptions,
    ) -> Result<Db, OpenError> {
        Self::on_backends_inner(backend, Some(log_dir), options)
    }

    fn on_backends_inner(
        backend: impl redb::StorageBackend,
        log_dir: Option<Arc<dyn WalDir>>,
        options: StorageOptions,
    ) -> Result<Db, OpenError> {
        warn_if_faulty(&BACKEND_PATH, options);
        let path = Path::new(BACKEND_PATH);
        open_guarded(path, || {
            let io = |source| OpenError::Io { path: path.to_path_buf(), source };
            let len = backend.len().map_err(io)?;
            let interrupted = creation_interrupted(len, |head| backend.read(0, head)).map_err(io)?;
            if interrupted {
                tracing::warn!(
                    len,
                    "the storage holds a database whose creation was interrupted (no redb magic \
                     number): creating it anew"
                );
                backend.set_len(0).map_err(io)?;
            }
            let existed = len > 0 && !interrupted;
            let given = |dir: &Arc<dyn WalDir>| {
                let dir = dir.clone();
                move || -> Result<Arc<dyn WalDir>, OpenError> { Ok(dir.clone()) }
            };
            let log_dir = log_dir.as_ref().map(given);
            let log_dir = log_dir.as_ref().map(|f| f as &dyn Fn() -> Result<Arc<dyn WalDir>, OpenError>);
            Self::checked(builder().create_with_backend(backend), existed, None, options, log_dir)
        })
    }

    /// Turns redb's answer to opening the database at `path` (`None`: on a
    /// backend) into a [`Db`] whose format version was checked, or written
    /// if the database is new (`existed` false).
    ///
    /// `log_dir` gives the directory of a format-3 log; `None` where there
    /// is none (in memory).
    fn checked(
        opened: Result<Database, redb::DatabaseError>,
        existed: bool,
        path: Option<PathBuf>,
        options: StorageOptions,
        log_dir: Option<&dyn Fn() -> Result<Arc<dyn WalDir>, OpenError>>,
    ) -> Result<Db, OpenError> {
        let named = path.clone().unwrap_or_else(|| PathBuf::from(BACKEND_PATH));
        let corrupted = |reason: String| OpenError::Corrupted { path: named.clone(), reason };
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::Locked { path: named }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(source))) => {
                // redb reports a file that is not a database (bad magic
                // number, short header) as an I/O error of kind InvalidData.
                if source.kind() == std::io::ErrorKind::InvalidData {
                    return Err(corrupted(source.to_string()));
                }
                return Err(OpenError::Io { path: named, source });
            }
            Err(e) => return Err(corrupted(e.to_string())),
        };
        let mut db =
            Db { inner: Arc::new(DbFile::new(db, path.clone())), path, options, format: 0, log_dir: None };
        let new_format = if options.log_file && log_dir.is_some() { FORMAT_LOG_FILE } else { FORMAT_VERSION };
        db.format = db.check_format(existed, &named, new_format).map_err(|e| match e {
            FormatCheck::Redb(reason) => corrupted(reason),
            FormatCheck::Open(e) => e,
        })?;
        if db.format == FORMAT_LOG_FILE {
            let Some(log_dir) = log_dir else { return Err(OpenError::NoLogDirectory { path: named }) };
            db.log_dir = Some(log_dir()?);
        }
        Ok(db)
    }

    /// A database that lives in memory only: for tests and for nodes that
    /// need no durability (a Maelstrom node, say).
    pub fn in_memory() -> Db {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap_or_else(|e| panic!("invariant: an in-memory redb always opens ({e})"));
        let db = Db {
            inner: Arc::new(DbFile::new(db, None)),
            path: None,
            options: StorageOptions::default(),
            format: FORMAT_VERSION,
            log_dir: None,
        };
        db.check_format(false, Path::new(""), FORMAT_VERSION)
            .unwrap_or_else(|_| panic!("invariant: a new in-memory database takes a format version"));
        db
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The storage options it was opened with.
    pub fn options(&self) -> StorageOptions {
        self.options
    }

    /// Its on-disk format: [`FORMAT_VERSION`], or [`FORMAT_LOG_FILE`] if
    /// the log is a file of its own.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// The log of a format-3 directory, opened and caught up with the
    /// purged log id; `None` in format 2. The purged log id is kept in the
    /// database, written before the log's segments go: entries at or below
    /// it that the file still holds are forgotten, and a file that ends
    /// before it goes on after it.
    pub(crate) fn open_log_file(&self) -> Result<Option<Wal>, DbError> {
        let Some(dir) = &self.log_dir else { return Ok(None) };
        let mut wal = Wal::open(dir.clone(), WalOptions::default())?;
        let purged: Option<crate::types::LogId> = self.guarded(|| {
            let tx = self.inner.begin_read()?;
            get_value(&tx.open_table(META)?, "purged")
        })?;
        if let Some(purged) = purged {
            wal.purge_through(purged.index)?;
        }
        Ok(Some(wal))
    }

    /// Runs `f`, which reads or writes the database, turning a panic inside
    /// redb into [`DbError::Panicked`].
    ///
    /// redb checks what it reads, but a file damaged in the right place can
    /// still open and then trip an assertion deep in a B-tree read (slice
    /// bounds, a page header that points nowhere). A node restarting on
    /// such a directory must report a corrupted file, not crash; every read
    /// and write transaction of this crate runs inside this guard.
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> Result<T, DbError>) -> Result<T, DbError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            Err(DbError::Panicked {
                path: self.path.clone().unwrap_or_default(),
                message: panic_message(&panic),
            })
        })
    }

    /// Checks the format version, or writes `new_format` into a new
    /// database; returns the format. Errors name `path`.
    fn check_format(&self, existed: bool, path: &Path, new_format: u32) -> Result<u32, FormatCheck> {
        let path = || path.to_path_buf();
        let found: Option<u32> = {
            let tx = self.inner.begin_read().map_err(FormatCheck::redb)?;
            match tx.open_table(META) {
                Ok(t) => match t.get("format").map_err(FormatCheck::redb)? {
                    Some(v) => Some(codec::decode(v.value()).map_err(|e| FormatCheck::Redb(e.to_string()))?),
                    None => None,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(FormatCheck::redb(e)),
            }
        };
        match found {
            Some(found @ (FORMAT_VERSION | FORMAT_LOG_FILE)) => Ok(found),
            Some(found) => Err(FormatCheck::Open(OpenError::UnknownFormat { path: path(), found })),
            None if existed && self.has_any_table()? => {
                Err(FormatCheck::Open(OpenError::ForeignDatabase { path: path() }))
            }
            None => {
                let tx = self.inner.begin_write().map_err(FormatCheck::redb)?;
                {
                    let mut meta = tx.open_table(META).map_err(FormatCheck::redb)?;
                    meta.insert("format", codec::encode(&new_format).as_slice())
                        .map_err(FormatCheck::redb)?;
                    // Create the other tables so readers never meet a
                    // missing table.
                    tx.open_table(LOG).map_err(FormatCheck::redb)?;
                    tx.open_table(SM).map_err(FormatCheck::redb)?;
                    tx.open_table(crate::app::APP_TABLE).map_err(FormatCheck::redb)?;
                }
                tx.commit().map_err(FormatCheck::redb)?;
                Ok(new_format)
            }
        }
    }

    fn has_any_table(&self) -> Result<bool, FormatCheck> {
        let tx = self.inner.begin_read().map_err(FormatCheck::redb)?;
        let any = tx.list_tables().map_err(FormatCheck::redb)?.next().is_some();
        Ok(any)
    }
}

/// The open redb database. Deref to [`Database`]; closing it (the last
/// [`Db`] handle dropped) cannot panic the process: redb's `Drop` commits
/// once more and, on some corrupted files, panics there; that panic is
/// caught and logged.
pub(crate) struct DbFile {
    db: Option<Database>,
    path: Option<PathBuf>,
}

impl DbFile {
    fn new(db: Database, path: Option<PathBuf>) -> Self {
        DbFile { db: Some(db), path }
    }
}

impl std::ops::Deref for DbFile {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.db.as_ref().unwrap_or_else(|| unreachable!("invariant: the database is present until drop"))
    }
}

impl Drop for DbFile {
    fn drop(&mut self) {
        let Some(db) = self.db.take() else { return };
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db))) {
            tracing::error!(
                path = %self.path.as_deref().unwrap_or(Path::new("(in memory)")).display(),
                panic = %panic_message(&panic),
                "closing the database panicked inside redb: the file is probably corrupted"
            );
        }
    }
}

/// The text of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}

enum FormatCheck {
    Redb(String),
    Open(OpenError),
}

impl FormatCheck {
    fn redb(e: impl Into<redb::Error>) -> Self {
        FormatCheck::Redb(e.into().to_string())
    }
}

/// Reads and decodes one value from a `&str`-keyed table.
pub(crate) fn get_value<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, DbError> {
    match table.get(key)? {
        Some(v) => Ok(Some(codec::decode(v.value())?)),
        None => Ok(None),
    }
}

/// Encodes and writes one value into a `&str`-keyed table.
pub(crate) fn put_value<T: Serialize>(
    table: &mut redb::Table<&'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> Result<(), DbError> {
    table.insert(key, codec::encode(value).as_slice())?;
    Ok(())
}

/// Any failure below the storage traits: redb, or a value that does not
/// decode (which means the file was corrupted or written by another build).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// redb failed.
    #[error(transparent)]
    Redb(#[from] redb::Error),
    /// A stored value does not decode.
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    /// The application's storage failed during apply.
    #[error(transparent)]
    App(#[from] crate::app::StateError),
    /// The log's own file failed (format 3).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// redb panicked reading or writing the file (see `Db::guarded`).
    #[error("{path}: redb failed on the data file ({message}); the file is probably corrupted")]
    Panicked {
        /// The database file (empty in memory).
        path: PathBuf,
        /// The panic's message.
        message: String,
    },
}

macro_rules! redb_into_db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self { DbError::Redb(e.into()) }
        }
    )*};
}
redb_into_db_error!(redb::StorageError, redb::TableError, redb::TransactionError, redb::CommitError);

impl Db {
    /// Makes every earlier commit durable (one empty durable transaction).
    pub fn flush(&self) -> Result<(), DbError> {
        self.guarded(|| {
            let mut tx = self.inner.begin_write()?;
            tx.set_durability(Durability::Immediate).map_err(redb::Error::from)?;
            tx.commit()?;
            Ok(())
        })
    }
}
