//! Storage fault injection, for crash tests and for the Jepsen harness's
//! negative controls. Nothing here is for a node that holds real data.
//!
//! This module depends on nothing else in [`super`]: the options that
//! switch faults on live in [`super::options`], and [`super::db`] opens a
//! database on [`PowerLossBackend`] when they say so.
//!
//! # What a crash loses
//!
//! A write that a process has handed to the operating system but not yet
//! fsynced sits in the kernel's page cache. If the *process* dies (SIGKILL,
//! a panic, an out-of-memory kill) the kernel still writes it out later, so
//! nothing is lost. If the *machine* dies (power failure, kernel panic), the
//! page cache dies with it and every unsynced write is gone, possibly only
//! some of them. Storage code is correct only if it survives the second
//! kind: that is why Raft's log fsyncs before an entry counts towards a
//! commit (§5.3), and why [`super::log_store`] commits with
//! [`redb::Durability::Immediate`].
//!
//! On one machine a test cannot pull the plug, but it can kill a process.
//! [`PowerLossBackend`] makes the two equivalent: it is a redb
//! [`StorageBackend`] that keeps every write, and every change of the file's
//! length, in the process's own memory until redb calls `sync_data`, and only
//! then applies them to the file and fsyncs. A SIGKILL then loses exactly
//! what a power failure would: everything written since the last fsync.
//!
//! redb itself already keeps a [`redb::Durability::None`] commit in its own
//! memory until the next durable commit, so such commits are lost on any
//! kill, with or without this backend. What the backend adds is that bytes
//! redb *did* write to the file (pages evicted from its write buffer, the
//! file growing) also vanish unless an fsync followed them: a kill can no
//! longer hide a missing fsync behind the page cache.
//!
//! # The "ack before fsync" bug
//!
//! [`StorageOptions::unsafe_no_fsync`](super::StorageOptions::unsafe_no_fsync) makes the log store acknowledge
//! appended entries after a commit with [`redb::Durability::None`], before
//! anything reaches the disk, like etcd's `--unsafe-no-fsync`. A leader then
//! counts its own and its followers' acknowledgements towards commits that
//! no disk holds; kill a majority and acknowledged writes are gone. The
//! Jepsen harness runs it as a negative control: its checkers must report
//! the lost writes. Votes, truncations and purges stay durable, so this is
//! the one bug and not several at once.
//!
//! # Shortcuts
//!
//! * The backend buffers whole 4 KiB pages, and all of them until the next
//!   sync: its memory grows with the bytes written between fsyncs. Fine for
//!   a test; a node that never syncs would grow without bound.
//! * A real power failure may also tear a write or persist unsynced writes
//!   out of order. This backend always loses all of them, or, if the kill
//!   lands inside `sync_data`, a prefix of the page writes. The simulated
//!   disk, [`super::SimDisk`], can keep a seeded part of them and tear one
//!   (it shares this backend's page buffer).
//! * A clean close (the database dropped) is not a power failure: the
//!   buffered bytes are written to the file then, as the kernel would.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The granularity of the write buffer, in bytes: redb's own page size, so
/// that one redb page write touches one buffered page when aligned.
pub(crate) const PAGE: u64 = 4096;

/// A redb storage backend on a file that keeps every write since the last
/// `sync_data` in memory only. See the [module docs](self).
///
/// Reads see the buffered writes over the file's contents, so the process
/// running on it cannot tell the difference until it dies.
pub struct PowerLossBackend {
    file: FileBackend,
    unsynced: Mutex<PageBuffer>,
}

impl PowerLossBackend {
    /// A backend on `file`, whose current contents count as synced.
    pub fn new(file: FileBackend) -> io::Result<Self> {
        let len = file.len()?;
        Ok(PowerLossBackend { file, unsynced: Mutex::new(PageBuffer::new(len)) })
    }

    fn state(&self) -> io::Result<MutexGuard<'_, PageBuffer>> {
        // A panic while the lock was held may have left a half-updated
        // buffer; refuse to go on rather than hand redb inconsistent bytes.
        self.unsynced.lock().map_err(|_| io::Error::other("power-loss backend poisoned by an earlier panic"))
    }
}

/// What lies under a [`PageBuffer`]: the storage that outlives a power
/// failure (a file, or [`super::SimDisk`]'s durable image).
pub(crate) trait Platter {
    /// The platter's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `dst` with the bytes at `offset`, all of which lie below `len`.
    fn read(&self, offset: u64, dst: &mut [u8]) -> io::Result<()>;
    /// Cuts or grows the platter to `len`; grown bytes read as zeros.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Writes `data` at `offset`, below `len`.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
}

impl Platter for &FileBackend {
    fn len(&self) -> io::Result<u64> {
        StorageBackend::len(*self)
    }

    fn read(&self, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        StorageBackend::read(*self, offset, dst)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        StorageBackend::set_len(*self, len)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        StorageBackend::write(*self, offset, data)
    }
}

/// The writes and length changes since the last sync, kept over a
/// [`Platter`] as an operating system's page cache keeps them over a disk:
/// the storage as the process sees it is the platter with these pages laid
/// on top. Applying the buffer is what an fsync does.
///
/// Cost: a write costs the pages it touches (the first write to a page also
/// reads that page from the platter); applying costs the buffered pages,
/// never the whole platter.
#[derive(Default)]
pub(crate) struct PageBuffer {
    /// Pages written since the last sync: page number → the page's whole
    /// logical content (zero beyond `len`). A `BTreeMap`, so that
    /// everything that walks the pages does so in one order, the pages'.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The storage's length as the process sees it.
    len: u64,
    /// Bytes of the platter below this offset are still the storage's
    /// content (where no buffered page covers them); bytes at or above it
    /// were cut off by a `set_len` since the last sync and read as zero.
    /// Never above `len` or the platter's length.
    platter_valid: u64,
}

impl PageBuffer {
    /// An empty buffer over a platter of `len` bytes.
    pub(crate) fn new(len: u64) -> Self {
        PageBuffer { pages: BTreeMap::new(), len, platter_valid: len }
    }

    /// The storage's length as the process sees it.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// How many pages were written since the last sync.
    pub(crate) fn dirty_pages(&self) -> usize {
        self.pages.len()
    }

    /// Reads `out.len()` bytes at `offset`, as the process sees them.
    pub(crate) fn read(&self, platter: &impl Platter, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if offset.checked_add(out.len() as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the storage"));
        }
        for_each_page(offset, out.len(), |page, in_page, range| {
            let dst = &mut out[range];
            match self.pages.get(&page) {
                Some(bytes) => {
                    dst.copy_from_slice(&bytes[in_page..in_page + dst.len()]);
                    Ok(())
                }
                None => read_platter(platter, self.platter_valid, page * PAGE + in_page as u64, dst),
            }
        })
    }

    /// Changes the length as the process sees it.
    pub(crate) fn set_len(&mut self, len: u64) {
        if len < self.len {
            // Forget pages wholly past the end, zero the tail of the one
            // the end falls in, and stop trusting the platter beyond it: if
            // the storage grows again, that range must read as zeros.
            self.pages.split_off(&len.div_ceil(PAGE));
            if let Some(page) = self.pages.get_mut(&(len / PAGE)) {
                page[(len % PAGE) as usize..].fill(0);
            }
            self.platter_valid = self.platter_valid.min(len);
        }
        self.len = len;
    }

    /// Buffers a write of `data` at `offset`.
    pub(crate) fn write(&mut self, platter: &impl Platter, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past u64::MAX"))?;
        // Like a file: writing past the end extends it.
        self.len = self.len.max(end);
        let PageBuffer { pages, platter_valid, .. } = self;
        for_each_page(offset, data.len(), |page, in_page, range| {
            let bytes = match pages.entry(page) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut bytes = vec![0; PAGE as usize].into_boxed_slice();
                    read_platter(platter, *platter_valid, page * PAGE, &mut bytes)?;
                    e.insert(bytes)
                }
            };
            bytes[in_page..in_page + range.len()].copy_from_slice(&data[range]);
            Ok(())
        })
    }

    /// Writes everything buffered to the platter (the caller then fsyncs,
    /// if it models an fsync). Afterwards the platter is the storage and the
    /// buffer is empty.
    pub(crate) fn apply(&mut self, platter: &mut impl Platter) -> io::Result<()> {
        self.apply_some(platter, true, |_| PAGE as usize)
    }

    /// Writes part of the buffer to the platter, as a power failure in the
    /// middle of the kernel's write-back leaves it: the new length only if
    /// `with_len`, and of each buffered page (in page order) the first
    /// `keep(page)` bytes, 0 for none, [`PAGE`] or more for all of it. Pages
    /// that start past the platter's resulting length are not offered to
    /// `keep`, and no byte past it is written. Afterwards the
    /// buffer is empty and the storage is whatever the platter holds.
    pub(crate) fn apply_some(
        &mut self,
        platter: &mut impl Platter,
        with_len: bool,
        mut keep: impl FnMut(u64) -> usize,
    ) -> io::Result<()> {
        let len = if with_len {
            // Cut what a `set_len` removed, then grow to the new length:
            // the grown part reads as zeros, as `set_len` promises.
            if platter.len()? != self.platter_valid {
                platter.set_len(self.platter_valid)?;
            }
            if self.len != self.platter_valid {
                platter.set_len(self.len)?;
            }
            self.len
        } else {
            platter.len()?
        };
        for (&page, bytes) in &self.pages {
            let start = page * PAGE;
            if start >= len {
                break;
            }
            let n = keep(page).min((len - start).min(PAGE) as usize);
            if n > 0 {
                platter.write(start, &bytes[..n])?;
            }
        }
        *self = PageBuffer::new(len);
        Ok(())
    }
}

/// Fills `dst` with the platter's bytes at `pos`, or zeros at and after
/// `platter_valid`.
fn read_platter(platter: &impl Platter, platter_valid: u64, pos: u64, dst: &mut [u8]) -> io::Result<()> {
    let from_platter = platter_valid.saturating_sub(pos).min(dst.len() as u64) as usize;
    let (head, tail) = dst.split_at_mut(from_platter);
    if !head.is_empty() {
        platter.read(pos, head)?;
    }
    tail.fill(0);
    Ok(())
}

/// Calls `f(page, offset in page, range in the buffer)` for each page that
/// the byte range `[offset, offset + len)` touches, in order.
fn for_each_page(
    offset: u64,
    len: usize,
    mut f: impl FnMut(u64, usize, std::ops::Range<usize>) -> io::Result<()>,
) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let pos = offset + done as u64;
        let in_page = (pos % PAGE) as usize;
        let n = (PAGE as usize - in_page).min(len - done);
        f(pos / PAGE, in_page, done..done + n)?;
        done += n;
    }
    Ok(())
}

impl StorageBackend for PowerLossBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.state()?.read(&&self.file, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state()?.set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.state()?.apply(&mut &self.file)?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.state()?.write(&&self.file, offset, data)
    }

    fn close(&self) -> io::Result<()> {
        // A clean close: hand the bytes to the file as the kernel would
        // after the process exits; no fsync, because no power fails here.
        self.state()?.apply(&mut &self.file)?;
        self.file.close()
    }

    // Locks guard the file against a second process opening it; they are
    // the file's own, untouched by the fault.

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

impl std::fmt::Debug for PowerLossBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("PowerLossBackend");
        if let Ok(state) = self.unsynced.lock() {
            d.field("len", &state.len).field("unsynced_pages", &state.pages.len());
        }
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend on a new file in a temporary directory, and the file's path.
    fn backend() -> (tempfile::TempDir, std::path::PathBuf, PowerLossBackend) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let backend = PowerLossBackend::new(FileBackend::new(file).unwrap()).unwrap();
        (dir, path, backend)
    }

    fn read(b: &PowerLossBackend, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        b.read(offset, &mut out).unwrap();
        out
    }

    #[test]
    fn writes_reach_the_file_only_at_sync() {
        let (_dir, path, b) = backend();
        b.set_len(3 * PAGE).unwrap();
        // Straddles a page boundary.
        b.write(PAGE - 2, b"hello").unwrap();
        assert_eq!(read(&b, PAGE - 2, 5), b"hello", "the process reads its own writes");
        assert_eq!(std::fs::read(&path).unwrap(), b"", "nothing on disk before sync");

        b.sync_data().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len() as u64, 3 * PAGE);
        assert_eq!(&on_disk[PAGE as usize - 2..PAGE as usize + 3], b"hello");
        assert!(on_disk[..PAGE as usize - 2].iter().all(|&x| x == 0));
    }

    #[test]
    fn dropping_without_sync_loses_the_writes_as_a_kill_would() {
        let (_dir, path, b) = backend();
        b.write(0, b"synced").unwrap();
        b.sync_data().unwrap();
        b.write(0, b"lost!!").unwrap();
        b.write(100, b"lost too").unwrap();
        drop(b); // no close(): what a SIGKILL leaves behind
        assert_eq!(std::fs::read(&path).unwrap(), b"synced");
    }

    #[test]
    fn shrinking_then_growing_reads_zeros_and_sync_applies_it() {
        let (_dir, path, b) = backend();
        b.write(0, &[0xAA; 2 * PAGE as usize]).unwrap();
        b.sync_data().unwrap();
        b.write(PAGE / 2, &[0xBB; 4]).unwrap(); // buffered page that the cut crosses

        b.set_len(100).unwrap();
        b.set_len(2 * PAGE).unwrap();
        let mut want = vec![0; 2 * PAGE as usize];
        want[..100].fill(0xAA);
        assert_eq!(read(&b, 0, want.len()), want, "the cut-off range reads as zeros");
        assert_eq!(std::fs::read(&path).unwrap(), vec![0xAA; 2 * PAGE as usize], "the file is untouched");

        b.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn a_clean_close_keeps_the_writes() {
        let (_dir, path, b) = backend();
        b.write(0, b"kept").unwrap();
        b.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }

    #[test]
    fn reading_past_the_end_is_an_error() {
        let (_dir, _path, b) = backend();
        b.write(0, b"abc").unwrap();
        let mut out = [0; 4];
        assert_eq!(b.read(0, &mut out).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
