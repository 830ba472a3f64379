//! An append-only log file for Raft entries: segments of preallocated,
//! zero-filled space, one checksummed record after another.
//!
//! # Why a file of its own
//!
//! A log append has to be durable before it counts (§5.3), so every commit
//! round of a busy cluster pays one fsync per node, and the fsync is most
//! of a round's time. How much an fsync costs depends on how many pages it
//! has to write, and where. A redb commit of one small entry writes 9 or
//! 10 pages scattered over the file (the entry's leaf and the branches
//! above it, the table of tables, the freed-page tree, the header); an
//! append to this file writes the one or two pages the new records cover,
//! next to the previous append's. Measured on the benchmark machine
//! (`docs/benchmarks.md`), with three processes writing at once as a
//! 3-node cluster's nodes do: a commit of one 3 KB entry took 620 µs at the
//! median in redb and 147 µs here. The file grows in whole segments that
//! are zero-filled when they are created, so an append changes no file
//! size and no extent, and `fdatasync` has no metadata to write.
//!
//! # Layout
//!
//! A directory of segments named `<number>.wal`, the number in 16 hex
//! digits, counting up from 1. Each segment starts with a 32-byte header
//! and holds records from byte 32 on, each starting at a multiple of 8:
//!
//! ```text
//! segment header   0  magic "raftwal\0"       record   0  crc32 of bytes 4..24+len
//!                  8  format version (1)               4  len: payload bytes
//!                 12  zero                             8  kind: 1 entry, 2 truncation,
//!                                                         3 restart, 4 note
//!                 16  segment number                   9  flags (the caller's)
//!                 24  crc32 of bytes 0..24            10  zero
//!                 28  zero                            16  index
//!                                                     24  payload, then zeros to a multiple of 8
//! ```
//!
//! An *entry* record holds one log entry (the caller's encoding). A
//! *note* (kind 4) holds a few bytes of the caller's that the last note
//! replaces (the log store's commit index). A *restart* (kind 3) with
//! index `i` says that the log goes on at `i`, everything before purged. A
//! *truncation* record with index `i` removes every entry from `i` on:
//! the log never rewrites a byte it wrote, so a truncation is a record
//! too, and the entries it removes stay in their segment, dead, until the
//! segment is deleted. A purge deletes whole segments whose entries all
//! lie at or below the purged index (and never the segment being
//! appended to); it writes nothing, since the caller keeps the purged
//! index durably itself and ignores what lies at or below it.
//!
//! # What a crash can leave, and what opening does with it
//!
//! * **A torn tail.** Records written since the last `sync` may be lost
//!   in a power failure, whole or in part, in any order of pages. Opening
//!   reads records up to the first that is not whole (a bad checksum, a
//!   length past the end, an unknown kind): that is the end of the log.
//!   The bytes after it are unsynced leftovers, and opening zeroes them
//!   (and syncs) before anything is appended: otherwise an append that
//!   happens to end exactly where a leftover record starts would make that
//!   record, never acknowledged, part of the log at the next opening.
//! * **Only the last segment can have a torn tail.** Before a record goes
//!   into a new segment, the previous segment is synced. A bad record in
//!   any other segment is corruption, and opening refuses the directory
//!   ([`WalError::Corrupted`]) rather than drop acknowledged entries.
//! * **Segments that hold nothing.** A new segment is zero-filled, given
//!   its header, synced, and the directory synced, before the first record
//!   goes into it; to keep that out of an append's way, the next segment
//!   is made on a thread of its own once the active one is half full.
//!   Segments after the last one that holds a record are such spares, or
//!   were being made when the power failed (their header may be
//!   incomplete): opening removes them.
//!
//! # What the caller must do
//!
//! Call [`Wal::sync`] before counting anything appended or truncated as
//! durable. Appends must continue the log: the first entry's index is
//! free, every later one is the last index plus one, and a truncation
//! comes before an entry that replaces another.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::StorageBackend;

/// One open file of the log: redb's storage trait, so that the log runs on
/// a real file, on [`PowerLossBackend`](super::PowerLossBackend) (a kill
/// loses what was not synced) or on [`SimDisk`](super::SimDisk), as the
/// database does.
pub type WalFile = Arc<dyn StorageBackend>;

/// The directory a log lives in: a real one ([`FsDir`]) or a simulated one.
pub trait WalDir: Debug + Send + Sync + 'static {
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens the file `name`, creating it empty if it does not exist.
    fn open(&self, name: &str) -> io::Result<WalFile>;
    /// Removes the file `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the creations and removals so far durable.
    fn sync(&self) -> io::Result<()>;
    /// How errors name the file `name`.
    fn describe(&self, name: &str) -> String;
}

/// A log directory on the file system.
#[derive(Debug)]
pub struct FsDir {
    path: PathBuf,
    lose_unsynced_writes: bool,
}

impl FsDir {
    /// The directory `path`, created if missing. With
    /// `lose_unsynced_writes`, every file is opened through
    /// [`PowerLossBackend`](super::PowerLossBackend): a killed process
    /// loses what it had not synced, as a machine losing power would.
    pub fn new(path: &Path, lose_unsynced_writes: bool) -> io::Result<FsDir> {
        std::fs::create_dir_all(path)?;
        Ok(FsDir { path: path.to_path_buf(), lose_unsynced_writes })
    }
}

impl WalDir for FsDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<WalFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join(name))?;
        let file = redb::backends::FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        if self.lose_unsynced_writes {
            Ok(Arc::new(super::PowerLossBackend::new(file)?))
        } else {
            Ok(Arc::new(file))
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        std::fs::File::open(&self.path)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

/// Why the log could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file operation failed.
    #[error("{file}: {source}")]
    Io {
        /// The file (or directory) involved.
        file: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A segment holds something a crash cannot explain.
    #[error("{file}: the Raft log is corrupted at byte {offset}: {reason}")]
    Corrupted {
        /// The segment.
        file: String,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The caller broke the log's rules (an append that does not continue
    /// the log, say): a bug, reported instead of written.
    #[error("the Raft log refused a write: {0}")]
    Refused(String),
}

/// How a log is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// The largest size of a new segment, in bytes. The first is 1 MiB
    /// (or this, if smaller), and each next one twice its predecessor's
    /// size up to this. A record larger than that gets a segment of its
    /// own size.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    /// Segments of 64 MiB.
    fn default() -> Self {
        WalOptions { segment_bytes: 64 << 20 }
    }
}

/// A record read back: an entry's index, the flags it was appended with,
/// and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The entry's index.
    pub index: u64,
    /// The flags given to [`Wal::append`].
    pub flags: u8,
    /// The payload given to [`Wal::append`].
    pub payload: Vec<u8>,
}

const MAGIC: [u8; 8] = *b"raftwal\0";
const VERSION: u32 = 1;
const SEGMENT_HEADER: u64 = 32;
const RECORD_HEADER: u64 = 24;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_RESTART: u8 = 3;
const KIND_NOTE: u8 = 4;
const ZERO_CHUNK: u64 = 1 << 20;
const FIRST_SEGMENT: u64 = 1 << 20;
const SUFFIX: &str = ".wal";

/// Where an entry's record lies.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    /// The record's offset in its segment.
    offset: u64,
    len: u32,
    flags: u8,
}

struct Segment {
    file: WalFile,
    size: u64,
    /// The largest index of an entry record in the segment, dead or alive.
    max_index: Option<u64>,
}

/// An open log. Not shared: its owner serializes appends, truncations,
/// purges and syncs; [`Wal::locate`] and [`read_located`] let readers
/// read without holding the owner up.
pub struct Wal {
    dir: Arc<dyn WalDir>,
    options: WalOptions,
    segments: BTreeMap<u64, Segment>,
    /// The index of `locs[0]`, or where the next entry goes if `locs` is
    /// empty and `anchored`.
    first: u64,
    locs: VecDeque<Loc>,
    /// Whether the next entry's index is fixed (`first + locs.len()`);
    /// not for a log that never held an entry.
    anchored: bool,
    /// One past the highest index purged since opening (or restarted
    /// after, by a record): a truncation never goes below it.
    floor: u64,
    /// The payload of the last note record ([`Wal::write_note`]).
    note: Option<Vec<u8>>,
    /// The segment being appended to, and where its next record goes.
    active: u64,
    offset: u64,
    /// Whether the active segment was written since the last sync.
    dirty: bool,
    /// The next segment, being made ahead of need ([`Wal::prepare_next`]).
    spare: Option<std::thread::JoinHandle<Result<(u64, Segment), WalError>>>,
}

impl Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first", &self.first)
            .field("entries", &self.locs.len())
            .field("active", &self.active)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Drop for Wal {
    /// Closes every segment: a clean close, not a power failure (a
    /// [`PowerLossBackend`](super::PowerLossBackend) writes out what it
    /// buffered, as the kernel would).
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            // Left for the next opening, which removes it: it holds nothing.
            let _ = spare.join();
        }
        for (number, segment) in &self.segments {
            if let Err(e) = segment.file.close() {
                tracing::warn!(segment = %self.dir.describe(&segment_name(*number)), error = %e, "closing a Raft log segment");
            }
        }
    }
}

/// Records of one segment to be read with one read: see [`Wal::locate`].
#[derive(Clone)]
pub struct Located {
    file: WalFile,
    name: String,
    /// (index, record) in index order, contiguous in the file.
    records: Vec<(u64, Loc)>,
}

fn segment_name(number: u64) -> String {
    format!("{number:016x}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|&n| n > 0)
}

fn padded(len: u64) -> u64 {
    len.div_ceil(8) * 8
}

fn record_size(payload: usize) -> u64 {
    padded(RECORD_HEADER + payload as u64)
}

fn encode_record(out: &mut Vec<u8>, kind: u8, flags: u8, index: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[kind, flags, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + record_size(payload.len()) as usize, 0);
}

fn encode_segment_header(number: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0; SEGMENT_HEADER as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&number.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A record's header fields, if the bytes at `at` hold a whole record.
struct Parsed {
    kind: u8,
    flags: u8,
    index: u64,
    len: u32,
}

/// Reads the record at `at` of `data`: `Ok(None)` at a clean end (zeros),
/// `Err(reason)` where the bytes are not a whole record.
fn parse_record(data: &[u8], at: usize) -> Result<Option<Parsed>, String> {
    let Some(header) = data.get(at..at + RECORD_HEADER as usize) else {
        return Ok(None);
    };
    if header.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap_or_default());
    let (crc, len) = (u32_at(0), u32_at(4));
    let (kind, flags) = (header[8], header[9]);
    let index = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
    let end = at + RECORD_HEADER as usize + len as usize;
    if end > data.len() {
        return Err(format!("a record of {len} bytes runs past the segment's end"));
    }
    if crc32fast::hash(&data[at + 4..end]) != crc {
        return Err("a record's checksum does not match".into());
    }
    if !matches!(kind, KIND_ENTRY | KIND_TRUNCATE | KIND_RESTART | KIND_NOTE) {
        return Err(format!("a record of unknown kind {kind}"));
    }
    Ok(Some(Parsed { kind, flags, index, len }))
}

/// Creates segment `number` of `size` bytes in `dir`: zero-filled, with its
/// header, synced, and its directory synced, before any record goes in.
fn make_segment(dir: &Arc<dyn WalDir>, number: u64, size: u64) -> Result<Segment, WalError> {
    let name = segment_name(number);
    let io_err = |source| WalError::Io { file: dir.describe(&name), source };
    let file = dir.open(&name).map_err(io_err)?;
    let zeros = vec![0; size.min(ZERO_CHUNK) as usize];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(ZERO_CHUNK);
        file.write(at, &zeros[..n as usize]).map_err(io_err)?;
        at += n;
    }
    file.write(0, &encode_segment_header(number)).map_err(io_err)?;
    file.sync_data().map_err(io_err)?;
    dir.sync().map_err(|source| WalError::Io { file: dir.describe(""), source })?;
    Ok(Segment { file, size, max_index: None })
}

/// Zeroes whatever follows the last whole record (at `end`) of the last
/// segment, whose bytes are `data`, and syncs: the leftovers of writes a
/// crash interrupted. See the [module docs](self).
fn zero_tail(file: &WalFile, data: &[u8], end: u64) -> io::Result<()> {
    let tail = &data[end as usize..];
    let Some(last_nonzero) = tail.iter().rposition(|&b| b != 0) else { return Ok(()) };
    let dirty = last_nonzero as u64 + 1;
    tracing::warn!(at = end, bytes = dirty, "discarding the unsynced tail of the Raft log that a crash left");
    let zeros = vec![0; dirty.min(ZERO_CHUNK) as usize];
    let mut at = end;
    while at < end + dirty {
        let n = (end + dirty - at).min(ZERO_CHUNK);
        file.write(at, &zeros[..n as usize])?;
        at += n;
    }
    file.sync_data()
}

impl Wal {
    /// Opens the log in `dir`, or creates it there. See the
    /// [module docs](self) for what opening repairs and what it refuses.
    pub fn open(dir: Arc<dyn WalDir>, options: WalOptions) -> Result<Wal, WalError> {
        let io_err = |name: &str| {
            let file = dir.describe(name);
            move |source| WalError::Io { file, source }
        };
        let mut numbers: Vec<u64> =
            dir.list().map_err(io_err(""))?.iter().filter_map(|n| parse_segment_name(n)).collect();
        numbers.sort_unstable();
        let mut wal = Wal {
            dir: dir.clone(),
            options,
            segments: BTreeMap::new(),
            first: 0,
            locs: VecDeque::new(),
            anchored: false,
            floor: 0,
            note: None,
            active: 0,
            offset: SEGMENT_HEADER,
            dirty: false,
            spare: None,
        };
        // Segments after the last one that holds a record hold nothing: a
        // spare made ahead of need, or one whose creation a crash cut
        // short (its header may be incomplete). They go.
        let read = |number: u64| -> Result<(WalFile, Vec<u8>), WalError> {
            let name = segment_name(number);
            let file = dir.open(&name).map_err(io_err(&name))?;
            let size = file.len().map_err(io_err(&name))?;
            let mut data = vec![0; size as usize];
            file.read(0, &mut data).map_err(io_err(&name))?;
            Ok((file, data))
        };
        let mut last_data = None;
        for &number in numbers.iter().rev() {
            let (_, data) = read(number)?;
            if data.get(SEGMENT_HEADER as usize..).is_some_and(|rest| rest.iter().any(|&b| b != 0)) {
                last_data = Some(number);
                break;
            }
        }
        let unused: Vec<u64> = numbers.iter().copied().filter(|&n| last_data.is_none_or(|l| n > l)).collect();
        for &number in &unused {
            let name = segment_name(number);
            tracing::debug!(segment = %dir.describe(&name), "removing a Raft log segment that holds no record");
            dir.remove(&name).map_err(io_err(&name))?;
        }
        if !unused.is_empty() {
            dir.sync().map_err(io_err(""))?;
        }
        for &number in numbers.iter().filter(|&&n| last_data.is_some_and(|l| n <= l)) {
            let last = Some(number) == last_data;
            let name = segment_name(number);
            let (file, data) = read(number)?;
            let size = data.len() as u64;
            // A header checked only here: a segment that holds a record
            // was synced whole before its first record went in.
            if size < SEGMENT_HEADER || data[..SEGMENT_HEADER as usize] != encode_segment_header(number) {
                return Err(WalError::Corrupted {
                    file: dir.describe(&name),
                    offset: 0,
                    reason: "not a segment header of this log (bad magic, version, number or checksum)"
                        .into(),
                });
            }
            let (end, max_index) = wal.replay_segment(number, &name, &data, last)?;
            if last {
                zero_tail(&file, &data, end).map_err(io_err(&name))?;
                wal.active = number;
                wal.offset = end;
            }
            wal.segments.insert(number, Segment { file, size, max_index });
        }
        if wal.segments.is_empty() {
            wal.create_segment(1, 0)?;
        }
        Ok(wal)
    }

    /// Applies the records of one segment; returns where they end and the
    /// largest index of an entry record among them.
    fn replay_segment(
        &mut self,
        number: u64,
        name: &str,
        data: &[u8],
        last: bool,
    ) -> Result<(u64, Option<u64>), WalError> {
        let mut at = SEGMENT_HEADER as usize;
        let mut max_index = None;
        let dir = self.dir.clone();
        let corrupted = |offset: usize, reason: String| WalError::Corrupted {
            file: dir.describe(name),
            offset: offset as u64,
            reason,
        };
        loop {
            match parse_record(data, at) {
                Ok(None) => return Ok((at as u64, max_index)),
                Err(reason) if last => {
                    tracing::debug!(at, reason, "the Raft log ends at a record that is not whole");
                    return Ok((at as u64, max_index));
                }
                Err(reason) => {
                    return Err(corrupted(at, format!("{reason}, in a segment that was synced whole")))
                }
                Ok(Some(r)) => {
                    let result = match r.kind {
                        KIND_ENTRY => {
                            max_index = max_index.max(Some(r.index));
                            let loc = Loc { segment: number, offset: at as u64, len: r.len, flags: r.flags };
                            self.push(r.index, loc)
                        }
                        KIND_TRUNCATE => self.cut(r.index),
                        KIND_NOTE => {
                            let body = at + RECORD_HEADER as usize;
                            self.note = Some(data[body..body + r.len as usize].to_vec());
                            Ok(())
                        }
                        _ => {
                            self.restart(r.index);
                            Ok(())
                        }
                    };
                    result.map_err(|e| corrupted(at, e))?;
                    at += record_size(r.len as usize) as usize;
                }
            }
        }
    }

    /// The index the next entry must have, if fixed.
    pub fn next_index(&self) -> Option<u64> {
        self.anchored.then(|| self.first + self.locs.len() as u64)
    }

    /// The first and the last index held, if any.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        (!self.locs.is_empty()).then(|| (self.first, self.first + self.locs.len() as u64 - 1))
    }

    fn push(&mut self, index: u64, loc: Loc) -> Result<(), String> {
        match self.next_index() {
            Some(next) if next != index => {
                return Err(format!("entry {index} does not continue the log (the next index is {next})"))
            }
            Some(_) => {}
            None => {
                self.first = index;
                self.anchored = true;
            }
        }
        self.locs.push_back(loc);
        Ok(())
    }

    fn cut(&mut self, from: u64) -> Result<(), String> {
        if let Some(next) = self.next_index() {
            if from > next {
                return Err(format!("a truncation from {from} lies past the log's end (next index {next})"));
            }
        }
        if !self.anchored || from <= self.first {
            // Everything goes (or the segments holding what went before
            // were deleted). After a purge the log goes on at `from`,
            // which is past it; otherwise at whatever index comes next, as
            // a new log would.
            self.locs.clear();
            self.first = from;
            self.anchored = self.floor > 0;
        } else {
            self.locs.truncate((from - self.first) as usize);
        }
        Ok(())
    }

    /// Forgets every entry and makes `next` the next entry's index.
    fn restart(&mut self, next: u64) {
        self.locs.clear();
        self.first = next;
        self.anchored = true;
        self.floor = self.floor.max(next);
    }

    fn io_err(&self, name: &str) -> impl FnOnce(io::Error) -> WalError {
        let file = self.dir.describe(name);
        move |source| WalError::Io { file, source }
    }

    /// The size of a new segment `number` that must hold a record of
    /// `need` bytes: 1 MiB for the first, doubling up to the configured
    /// size, so that a node that writes little never zero-fills much.
    fn segment_size(&self, number: u64, need: u64) -> u64 {
        let growing = (FIRST_SEGMENT << (number - 1).min(16)).min(self.options.segment_bytes);
        growing.max(SEGMENT_HEADER + need).max(SEGMENT_HEADER + RECORD_HEADER)
    }

    /// Makes segment `number`, big enough for a record of `need` bytes,
    /// the active one: the spare made ahead if it is that segment and big
    /// enough, else a new one made now.
    fn create_segment(&mut self, number: u64, need: u64) -> Result<(), WalError> {
        let spare = match self.spare.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Ok((n, segment)))) if n == number && segment.size >= SEGMENT_HEADER + need => {
                Some(segment)
            }
            Some(Ok(Ok((n, segment)))) => {
                // Another number, or too small for this record: remade below.
                drop(segment);
                let spare = segment_name(n);
                self.dir.remove(&spare).map_err(self.io_err(&spare))?;
                None
            }
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "making a Raft log segment ahead of need failed; making it now");
                None
            }
            Some(Err(_)) => {
                tracing::error!("the thread making a Raft log segment ahead of need panicked; making it now");
                None
            }
            None => None,
        };
        let segment = match spare {
            Some(segment) => segment,
            None => make_segment(&self.dir, number, self.segment_size(number, need))?,
        };
        self.segments.insert(number, segment);
        self.active = number;
        self.offset = SEGMENT_HEADER;
        self.dirty = false;
        Ok(())
    }

    /// Once the active segment is half full, starts making the next one on
    /// a thread of its own, so that moving on to it does not wait for its
    /// zero-filling (up to 64 MiB). Not in deterministic mode
    /// ([`crate::deterministic`]), where segments are made when needed.
    fn prepare_next(&mut self) {
        if self.spare.is_some() || crate::deterministic::is_on() || self.offset < self.active_size() / 2 {
            return;
        }
        let number = self.active + 1;
        let (dir, size) = (self.dir.clone(), self.segment_size(number, 0));
        let made = std::thread::Builder::new()
            .name("raft-log-segment".into())
            .spawn(move || make_segment(&dir, number, size).map(|segment| (number, segment)));
        match made {
            Ok(thread) => self.spare = Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "could not start a thread to make a Raft log segment ahead of need")
            }
        }
    }

    fn active_size(&self) -> u64 {
        self.segments.get(&self.active).map_or(0, |s| s.size)
    }

    /// Makes room for a record of `size` bytes: if it does not fit in the
    /// active segment, syncs that segment and creates the next one.
    fn make_room(&mut self, size: u64) -> Result<(), WalError> {
        if self.offset + size <= self.active_size() {
            return Ok(());
        }
        self.sync()?;
        self.create_segment(self.active + 1, size)
    }

    /// Writes `bytes`, whole records that fit, at the active segment's end.
    fn write_at_end(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let name = segment_name(self.active);
        let segment =
            self.segments.get(&self.active).ok_or_else(|| WalError::Refused("no active segment".into()))?;
        segment.file.write(self.offset, bytes).map_err(self.io_err(&name))?;
        self.offset += bytes.len() as u64;
        self.dirty = true;
        self.prepare_next();
        Ok(())
    }

    /// Appends entries, `(index, flags, payload)` each, with one write per
    /// segment they go into. Durable only after [`Wal::sync`]; readable at
    /// once.
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, u8, &'a [u8])>,
    ) -> Result<(), WalError> {
        let mut batch = Vec::new();
        let mut locs = Vec::new();
        let mut next = self.next_index();
        for (index, flags, payload) in entries {
            if let Some(next) = next.filter(|&n| n != index) {
                return Err(WalError::Refused(format!(
                    "entry {index} does not continue the log (the next index is {next})"
                )));
            }
            let len = u32::try_from(payload.len())
                .map_err(|_| WalError::Refused(format!("entry {index} is larger than 4 GiB")))?;
            let size = record_size(payload.len());
            if self.offset + batch.len() as u64 + size > self.active_size() {
                self.flush_batch(&mut batch, &mut locs)?;
                self.make_room(size)?;
            }
            let offset = self.offset + batch.len() as u64;
            encode_record(&mut batch, KIND_ENTRY, flags, index, payload);
            locs.push((index, Loc { segment: self.active, offset, len, flags }));
            next = Some(index + 1);
        }
        self.flush_batch(&mut batch, &mut locs)
    }

    /// Writes the encoded records of `batch` and makes their entries,
    /// `locs`, readable.
    fn flush_batch(&mut self, batch: &mut Vec<u8>, locs: &mut Vec<(u64, Loc)>) -> Result<(), WalError> {
        self.write_at_end(batch)?;
        batch.clear();
        for (index, loc) in locs.drain(..) {
            if let Some(s) = self.segments.get_mut(&loc.segment) {
                s.max_index = s.max_index.max(Some(index));
            }
            self.push(index, loc).map_err(WalError::Refused)?;
        }
        Ok(())
    }

    /// Removes every entry from `from` on (none if `from` lies at or past
    /// the end). Durable only after [`Wal::sync`]; no longer readable at
    /// once. A `from` at or below an index purged since opening counts as
    /// the one after it: the log is then empty and goes on after the purge.
    pub fn truncate_from(&mut self, from: u64) -> Result<(), WalError> {
        // Never below a purge: the log goes on after it.
        let from = from.max(self.floor);
        // Nothing to remove, nothing to write: a truncation at or past the
        // end, or of a log that never held an entry.
        if self.next_index().is_none_or(|next| from >= next) {
            return Ok(());
        }
        let mut record = Vec::new();
        encode_record(&mut record, KIND_TRUNCATE, 0, from, &[]);
        self.make_room(record.len() as u64)?;
        self.write_at_end(&record)?;
        self.cut(from).map_err(WalError::Refused)
    }

    /// Writes a note: bytes of the caller's that [`Wal::note`] returns, also
    /// after reopening, until the next note replaces them. Durable only
    /// after [`Wal::sync`]; a note in a segment that a purge deleted is
    /// gone, unless a later one replaced it. (The log store keeps its
    /// commit index here, a hint that may be lost.)
    pub fn write_note(&mut self, note: &[u8]) -> Result<(), WalError> {
        let mut record = Vec::new();
        encode_record(&mut record, KIND_NOTE, 0, 0, note);
        self.make_room(record.len() as u64)?;
        self.write_at_end(&record)?;
        self.note = Some(note.to_vec());
        Ok(())
    }

    /// The last note written or found on opening.
    pub fn note(&self) -> Option<&[u8]> {
        self.note.as_deref()
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if !self.dirty {
            return Ok(());
        }
        let name = segment_name(self.active);
        if let Some(s) = self.segments.get(&self.active) {
            s.file.sync_data().map_err(self.io_err(&name))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// The active segment's file, if written since the last sync: for an
    /// owner that syncs it without holding the log, so that readers go on
    /// meanwhile, and then calls [`Wal::mark_synced`]. Nothing may be
    /// written in between.
    pub fn to_sync(&self) -> Option<(WalFile, String)> {
        let segment = self.segments.get(&self.active).filter(|_| self.dirty)?;
        Some((segment.file.clone(), self.dir.describe(&segment_name(self.active))))
    }

    /// Records that the file [`Wal::to_sync`] gave was synced.
    pub fn mark_synced(&mut self) {
        self.dirty = false;
    }

    /// Forgets every entry at or below `upto`, and deletes the segments
    /// that hold nothing else (never the active one). The caller keeps
    /// `upto` durably itself: after a crash, entries at or below it may
    /// still be read back from a segment not yet deleted.
    pub fn purge_through(&mut self, upto: u64) -> Result<(), WalError> {
        let next = upto.checked_add(1).ok_or_else(|| WalError::Refused("a purge through u64::MAX".into()))?;
        self.floor = self.floor.max(next);
        match self.next_index() {
            Some(n) if n > next => {
                if next > self.first {
                    self.locs.drain(..(next - self.first) as usize);
                    self.first = next;
                }
            }
            Some(n) if n == next => {
                self.locs.clear();
                self.first = next;
            }
            _ => {
                // The log ends before `upto` (a snapshot installed past
                // it), or never held an entry: it goes on at `upto + 1`,
                // which a record says, so that an opening after a crash
                // does not take the next entry for a gap.
                let mut record = Vec::new();
                encode_record(&mut record, KIND_RESTART, 0, next, &[]);
                self.make_room(record.len() as u64)?;
                self.write_at_end(&record)?;
                self.restart(next);
            }
        }
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(&n, s)| n != self.active && s.max_index.is_none_or(|m| m <= upto))
            .map(|(&n, _)| n)
            .collect();
        for number in &doomed {
            self.segments.remove(number);
            let name = segment_name(*number);
            self.dir.remove(&name).map_err(self.io_err(&name))?;
        }
        if !doomed.is_empty() {
            self.dir.sync().map_err(self.io_err(""))?;
        }
        Ok(())
    }

    /// Where the entries in `[start, end)` lie, grouped by segment, for
    /// [`read_located`]. Entries not held are left out.
    pub fn locate(&self, start: u64, end: u64) -> Vec<Located> {
        let mut out: Vec<Located> = Vec::new();
        let from = start.max(self.first);
        let to = end.min(self.first + self.locs.len() as u64);
        for index in from..to {
            let loc = self.locs[(index - self.first) as usize];
            match out.last_mut() {
                Some(group) if group.records.last().is_some_and(|(_, l)| l.segment == loc.segment) => {
                    group.records.push((index, loc))
                }
                _ => match self.segments.get(&loc.segment) {
                    Some(s) => out.push(Located {
                        file: s.file.clone(),
                        name: self.dir.describe(&segment_name(loc.segment)),
                        records: vec![(index, loc)],
                    }),
                    None => break,
                },
            }
        }
        out
    }

    /// The indexes in `[start, end)` of entries appended with any of the
    /// flags in `mask`, found without reading the file.
    pub fn flagged(&self, start: u64, end: u64, mask: u8) -> Vec<u64> {
        let from = start.max(self.first);
        let to = end.min(self.first + self.locs.len() as u64);
        (from..to).filter(|&i| self.locs[(i - self.first) as usize].flags & mask != 0).collect()
    }

    /// Reads the entries in `[start, end)` that the log holds.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Record>, WalError> {
        read_located(&self.locate(start, end))
    }
}

/// Reads what [`Wal::locate`] found: one read per segment, every record's
/// checksum checked again.
pub fn read_located(groups: &[Located]) -> Result<Vec<Record>, WalError> {
    let mut out = Vec::new();
    for group in groups {
        let (Some((_, first)), Some((_, last))) = (group.records.first(), group.records.last()) else {
            continue;
        };
        let end = last.offset + record_size(last.len as usize);
        let mut data = vec![0; (end - first.offset) as usize];
        group
            .file
            .read(first.offset, &mut data)
            .map_err(|source| WalError::Io { file: group.name.clone(), source })?;
        for (index, loc) in &group.records {
            let at = (loc.offset - first.offset) as usize;
            let corrupted =
                |reason: String| WalError::Corrupted { file: group.name.clone(), offset: loc.offset, reason };
            match parse_record(&data, at) {
                Ok(Some(r)) if r.kind == KIND_ENTRY && r.index == *index && r.len == loc.len => {
                    let body = at + RECORD_HEADER as usize;
                    out.push(Record {
                        index: *index,
                        flags: r.flags,
                        payload: data[body..body + r.len as usize].to_vec(),
                    });
                }
                Ok(_) => return Err(corrupted(format!("entry {index} is no longer where the log put it"))),
                Err(reason) => return Err(corrupted(reason)),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::storage::{SimDir, Survive};

    /// Small segments, so that a few entries cross several.
    const SMALL: WalOptions = WalOptions { segment_bytes: 256 };

    fn open(dir: &SimDir, options: WalOptions) -> Wal {
        Wal::open(Arc::new(dir.clone()), options).expect("the log opens")
    }

    fn payload(index: u64, salt: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (index as u8).wrapping_mul(31).wrapping_add(salt).wrapping_add(i as u8)).collect()
    }

    fn append(wal: &mut Wal, from: u64, count: u64, salt: u8, len: usize) {
        let payloads: Vec<(u64, Vec<u8>)> =
            (from..from + count).map(|i| (i, payload(i, salt, len))).collect();
        wal.append(payloads.iter().map(|(i, p)| (*i, salt, p.as_slice()))).unwrap();
    }

    fn all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
        wal.read(0, u64::MAX).unwrap().into_iter().map(|r| (r.index, r.payload)).collect()
    }

    fn segments(dir: &SimDir) -> Vec<String> {
        WalDir::list(dir).unwrap()
    }

    #[test]
    fn entries_cross_segments_and_come_back_after_reopening() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 1, 10, 7, 40);
        append(&mut wal, 11, 1, 7, 1000); // larger than a segment: one of its own
        append(&mut wal, 12, 3, 7, 0);
        wal.sync().unwrap();
        let before = all(&wal);
        assert_eq!(before.len(), 14);
        assert_eq!(wal.bounds(), Some((1, 14)));
        assert!(segments(&dir).len() > 3, "{:?}", segments(&dir));
        let records = wal.read(5, 7).unwrap();
        assert_eq!(records.iter().map(|r| (r.index, r.flags)).collect::<Vec<_>>(), vec![(5, 7), (6, 7)]);
        drop(wal);
        let wal = open(&dir, SMALL);
        assert_eq!(all(&wal), before);
        assert_eq!(wal.next_index(), Some(15));
    }

    #[test]
    fn a_truncation_removes_the_tail_now_and_after_reopening() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 1, 8, 1, 30);
        wal.truncate_from(5).unwrap();
        assert_eq!(wal.next_index(), Some(5));
        append(&mut wal, 5, 2, 2, 30);
        wal.sync().unwrap();
        let expect: Vec<_> =
            (1..5).map(|i| (i, payload(i, 1, 30))).chain((5..7).map(|i| (i, payload(i, 2, 30)))).collect();
        assert_eq!(all(&wal), expect);
        drop(wal);
        assert_eq!(all(&open(&dir, SMALL)), expect);
    }

    #[test]
    fn appends_must_continue_the_log() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 3, 2, 0, 8);
        for bad in [3, 6, 0] {
            let err = wal.append([(bad, 0, &[1u8][..])]).unwrap_err();
            assert!(matches!(err, WalError::Refused(_)), "{err}");
        }
        wal.truncate_from(7).unwrap(); // past the end: nothing to remove
        assert_eq!(wal.bounds(), Some((3, 4)));
        wal.truncate_from(3).unwrap(); // all of it: it goes on as a new log would
        assert_eq!((wal.bounds(), wal.next_index()), (None, None));
        append(&mut wal, 3, 3, 0, 8);
        wal.purge_through(3).unwrap();
        wal.truncate_from(0).unwrap(); // below the purge: all that is left
        assert_eq!((wal.bounds(), wal.next_index()), (None, Some(4)));
    }

    #[test]
    fn a_purge_deletes_whole_segments_behind_it_and_keeps_the_rest() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 1, 20, 0, 40);
        wal.sync().unwrap();
        let count = segments(&dir).len();
        wal.purge_through(12).unwrap();
        assert_eq!(wal.bounds(), Some((13, 20)));
        assert!(segments(&dir).len() < count);
        assert_eq!(all(&wal), (13..=20).map(|i| (i, payload(i, 0, 40))).collect::<Vec<_>>());
        drop(wal);
        // Reopened, the log may hold entries at or below 12 again (those
        // in a segment it kept), never fewer above.
        let wal = open(&dir, SMALL);
        let (first, last) = wal.bounds().unwrap();
        assert!(first <= 13 && last == 20);
        // Purging everything keeps the active segment and fixes the next index.
        let mut wal = wal;
        wal.purge_through(20).unwrap();
        assert_eq!((wal.bounds(), wal.next_index()), (None, Some(21)));
        append(&mut wal, 21, 1, 0, 4);
    }

    #[test]
    fn a_torn_tail_is_zeroed_so_that_a_leftover_record_never_comes_back() {
        // Entries 1 and 2 synced; 3 and 4 written, then a crash keeps 4's
        // bytes but not 3's (pages reach the disk in any order). Opening
        // ends the log at 3. Had it not zeroed 4's leftover bytes, a new
        // entry 3 of the same size would end exactly where that record
        // starts, and the next opening would find 4 again: an entry this
        // node never acknowledged, after one it did.
        let dir = SimDir::new();
        let mut wal = open(&dir, WalOptions::default());
        append(&mut wal, 1, 2, 0, 100);
        wal.sync().unwrap();
        let at = wal.offset;
        append(&mut wal, 3, 2, 0, 100);
        wal.sync().unwrap();
        drop(wal);
        let name = segment_name(1);
        let file = dir.file(&name).unwrap().backend();
        file.write(at, &[0xFF; 8]).unwrap(); // 3's header: not a whole record
        file.sync_data().unwrap();
        drop(file);
        let mut wal = open(&dir, WalOptions::default());
        assert_eq!(wal.bounds(), Some((1, 2)));
        append(&mut wal, 3, 1, 9, 100);
        wal.sync().unwrap();
        drop(wal);
        let wal = open(&dir, WalOptions::default());
        assert_eq!(all(&wal).iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all(&wal)[2].1, payload(3, 9, 100));
    }

    #[test]
    fn a_bad_record_in_a_segment_before_the_last_is_corruption() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 1, 10, 0, 40);
        wal.sync().unwrap();
        drop(wal);
        let file = dir.file(&segment_name(1)).unwrap().backend();
        let mut byte = [0u8];
        file.read(SEGMENT_HEADER + RECORD_HEADER, &mut byte).unwrap();
        file.write(SEGMENT_HEADER + RECORD_HEADER, &[byte[0] ^ 1]).unwrap();
        file.sync_data().unwrap();
        drop(file);
        let err = Wal::open(Arc::new(dir.clone()), SMALL).unwrap_err();
        assert!(matches!(err, WalError::Corrupted { offset: 32, .. }), "{err}");
        assert!(err.to_string().contains("0000000000000001.wal"), "{err}");
    }

    #[test]
    fn a_damaged_header_is_corruption_and_an_interrupted_creation_is_removed() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 1, 10, 0, 40);
        wal.sync().unwrap();
        drop(wal);
        // A last segment of zeros: its creation was cut short.
        let spare = segment_name(99);
        dir.file(&segment_name(1)).unwrap(); // exists
        WalDir::open(&dir, &spare).unwrap().set_len(4096).unwrap();
        let wal = open(&dir, SMALL);
        assert!(!segments(&dir).contains(&spare));
        assert_eq!(wal.bounds(), Some((1, 10)));
        drop(wal);
        // A first segment whose header is damaged.
        let file = dir.file(&segment_name(1)).unwrap().backend();
        file.write(0, b"RAFTWAL\0").unwrap();
        drop(file);
        let err = Wal::open(Arc::new(dir.clone()), SMALL).unwrap_err();
        assert!(matches!(err, WalError::Corrupted { offset: 0, .. }), "{err}");
    }

    #[test]
    fn the_next_segment_is_made_ahead_and_an_unused_one_is_removed_on_opening() {
        let options = WalOptions { segment_bytes: 4096 };
        let dir = SimDir::new();
        let mut wal = open(&dir, options);
        // Past half of the first segment: the second is made meanwhile.
        append(&mut wal, 1, 30, 0, 60);
        wal.sync().unwrap();
        assert!(wal.spare.is_some(), "a spare is being made");
        drop(wal); // waits for it
        assert_eq!(segments(&dir), [segment_name(1), segment_name(2)]);
        let mut wal = open(&dir, options);
        assert_eq!(segments(&dir), [segment_name(1)], "the spare held nothing");
        assert_eq!(wal.bounds(), Some((1, 30)));
        // Moving on to the spare: what goes there comes back.
        append(&mut wal, 31, 60, 0, 60);
        wal.sync().unwrap();
        drop(wal);
        let wal = open(&dir, options);
        assert_eq!(all(&wal), (1..=90).map(|i| (i, payload(i, 0, 60))).collect::<Vec<_>>());
    }

    #[test]
    fn the_last_note_comes_back_after_reopening() {
        let dir = SimDir::new();
        let mut wal = open(&dir, SMALL);
        assert_eq!(wal.note(), None);
        wal.write_note(b"first").unwrap();
        append(&mut wal, 1, 6, 0, 40);
        wal.write_note(b"second").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = open(&dir, SMALL);
        assert_eq!(wal.note(), Some(&b"second"[..]));
        assert_eq!(wal.bounds(), Some((1, 6)));
    }

    #[test]
    fn files_that_are_not_segments_are_left_alone() {
        let dir = SimDir::new();
        WalDir::open(&dir, "notes.txt").unwrap().write(0, b"hello").unwrap();
        WalDir::open(&dir, "1.wal").unwrap().write(0, b"x").unwrap();
        let mut wal = open(&dir, SMALL);
        append(&mut wal, 1, 1, 0, 1);
        assert!(segments(&dir).contains(&"notes.txt".to_string()));
    }

    #[test]
    fn a_real_directory_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir: Arc<dyn WalDir> = Arc::new(FsDir::new(&tmp.path().join("wal"), false).unwrap());
        let mut wal = Wal::open(dir.clone(), SMALL).unwrap();
        append(&mut wal, 1, 30, 3, 50);
        wal.truncate_from(25).unwrap();
        wal.sync().unwrap();
        wal.purge_through(10).unwrap();
        drop(wal);
        let wal = Wal::open(dir, SMALL).unwrap();
        let held = all(&wal);
        assert_eq!(held.last().map(|(i, _)| *i), Some(24));
        assert!(held.iter().all(|(i, p)| *p == payload(*i, 3, 50)));
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Step {
        Append { count: u64, len: usize },
        Truncate { back: u64 },
        Purge { keep: u64 },
        Sync,
        Crash(Survive),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (1..6u64, 0..120usize).prop_map(|(count, len)| Step::Append { count, len }),
            2 => (0..6u64).prop_map(|back| Step::Truncate { back }),
            1 => (0..8u64).prop_map(|keep| Step::Purge { keep }),
            3 => Just(Step::Sync),
            2 => prop_oneof![
                Just(Survive::Nothing),
                Just(Survive::Everything),
                any::<u64>().prop_map(Survive::Seeded)
            ]
            .prop_map(Step::Crash),
        ]
    }

    type Log = BTreeMap<u64, Vec<u8>>;

    fn above(log: &Log, purged: u64) -> Log {
        log.range(purged + 1..).map(|(i, p)| (*i, p.clone())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Against a model: after any power cut, the log holds what it held
        /// after some record written since the last sync (the power cut
        /// keeps a prefix of the records), never anything else; after a
        /// sync, exactly what it held then. Above the purged index, since
        /// the caller keeps that one durably.
        #[test]
        fn a_power_cut_keeps_a_prefix_of_the_records_since_the_last_sync(
            steps in proptest::collection::vec(step(), 1..40),
            segment_bytes in prop_oneof![Just(200u64), Just(1000u64), Just(1 << 20)],
        ) {
            let options = WalOptions { segment_bytes };
            let dir = SimDir::new();
            let mut wal = open(&dir, options);
            let mut current = Log::new();
            // What the log held after each record since the last sync.
            let mut candidates = vec![current.clone()];
            let mut purged = 0;
            let mut salt = 0u8;
            for step in steps {
                match step {
                    Step::Append { count, len } => {
                        salt = salt.wrapping_add(1);
                        let from = wal.next_index().unwrap_or(purged + 1);
                        for i in from..from + count {
                            let p = payload(i, salt, len + i as usize % 7);
                            wal.append([(i, salt, p.as_slice())]).unwrap();
                            current.insert(i, p);
                            candidates.push(current.clone());
                        }
                    }
                    Step::Truncate { back } => {
                        let next = wal.next_index().unwrap_or(purged + 1);
                        let from = next.saturating_sub(back).max(purged + 1).min(next);
                        wal.truncate_from(from).unwrap();
                        current.retain(|&i, _| i < from);
                        candidates.push(current.clone());
                    }
                    Step::Purge { keep } => {
                        if let Some((_, last)) = wal.bounds() {
                            let upto = last.saturating_sub(keep).max(purged);
                            wal.purge_through(upto).unwrap();
                            purged = upto;
                        }
                    }
                    Step::Sync => {
                        wal.sync().unwrap();
                        candidates = vec![current.clone()];
                    }
                    Step::Crash(survive) => {
                        dir.cut_power(survive);
                        drop(wal);
                        wal = open(&dir, options);
                        // As the log store does on opening: the purged index,
                        // kept durably elsewhere, says where the log goes on
                        // if the log itself ends before it.
                        if purged > 0 {
                            wal.purge_through(purged).unwrap();
                        }
                        let held: Log = wal.read(0, u64::MAX).unwrap().into_iter().map(|r| (r.index, r.payload)).collect();
                        let seen = above(&held, purged);
                        let matched = candidates.iter().position(|c| above(c, purged) == seen);
                        prop_assert!(matched.is_some(), "after {survive:?}: {:?} is none of {} candidates", seen.keys().collect::<Vec<_>>(), candidates.len());
                        if survive == Survive::Everything {
                            prop_assert_eq!(&above(&current, purged), &seen);
                        }
                        prop_assert!(held.keys().zip(held.keys().skip(1)).all(|(a, b)| a + 1 == *b), "a hole");
                        current = held;
                        candidates = vec![current.clone()];
                    }
                }
            }
        }
    }
}
