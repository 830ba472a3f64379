//! A simulated disk: what "the power failed" means inside a deterministic
//! simulation.
//!
//! A deterministic simulator ([`crate::deterministic`]) runs every node of a
//! cluster in one process, and a crash of a node must lose what a real
//! machine's crash loses, no more and no less. [`SimDisk`] is that machine's
//! disk: the bytes of one redb database, in memory, held by an [`Arc`] so
//! that they outlive the [`redb::Database`] that writes them. A node opens
//! its database with [`Db::on_backend`](super::Db::on_backend)`(disk.backend(), ..)`;
//! after a crash the simulator cuts the power ([`SimDisk::cut_power`]) and
//! "restarts" the node by opening a new database on the same disk.
//!
//! ```
//! use raft_core::storage::{Db, SimDisk, StorageOptions, Survive};
//!
//! # fn main() -> Result<(), raft_core::storage::OpenError> {
//! let disk = SimDisk::new();
//! let db = Db::on_backend(disk.backend(), StorageOptions::default())?;
//! // ... the node runs on `db` (`Storage::Opened(db)`), until its machine
//! // loses power. What of its unsynced writes survives is the seed's choice.
//! disk.cut_power(Survive::Seeded(42));
//! drop(db); // fenced: closing it cannot write any more
//! let db = Db::on_backend(disk.backend(), StorageOptions::default())?; // the restart
//!
//! // Or let the power fail in the middle of whatever the node does next:
//! // during the fourth call from now that changes the disk.
//! disk.crash_after(3, Survive::Nothing);
//! # drop(db);
//! # Ok(())
//! # }
//! ```
//!
//! # What it models
//!
//! A disk under an operating system's page cache, as
//! [`PowerLossBackend`](super::PowerLossBackend) does for a real file
//! (they share the page buffer; see [`super::fault`]):
//!
//! * **two layers**: the *durable image* (what is on the platter) and the
//!   pages written since the last `sync_data` (the page cache). Reads see
//!   the page cache over the image; `sync_data` moves the page cache to the
//!   image, at a cost of the pages written since the last sync, never of
//!   the whole image.
//! * **a process crash** is not a power failure: the page cache lives on.
//!   A new incarnation ([`SimDisk::backend`]) opened without a power cut
//!   sees every write, synced or not, as a restarted process would.
//! * **a power failure** ([`SimDisk::cut_power`]) decides, by a
//!   [`Survive`] policy, what of the page cache had reached the platter:
//!   nothing, everything, or a seeded part of it with one page torn. The
//!   rest is gone.
//! * **crash points inside a transaction**: [`SimDisk::crash_after`] arms
//!   the disk to lose power *during* the n-th call that changes it. In a
//!   simulation the log writer runs a whole redb transaction in one poll of
//!   one task, so a crash scheduled between tasks could only ever land
//!   between transactions, where nothing unsynced is at stake; only the
//!   disk can choose a moment between a transaction's page writes and its
//!   fsyncs.
//! * **fencing**: opening a new incarnation, or cutting the power, fences
//!   every older incarnation: each of its calls fails with an I/O error from
//!   then on. A node the simulator declared dead can never write again,
//!   even if one of its tasks is still running.
//!
//! # What it does not model
//!
//! * **Time.** Every call returns at once; an fsync takes no simulated
//!   time. A simulator that wants slow disks adds delays above this seam.
//! * **Units other than 4 KiB pages and 512-byte sectors.** The page cache
//!   holds each page's latest content; a power cut keeps or drops whole
//!   pages, plus at most one torn page: a prefix of its new sectors over
//!   the old ones, since a disk writes one sector atomically. (Tearing
//!   inside a sector would split redb's 9-byte magic number, which no disk
//!   does, and turn a crash while creating a database into a false report
//!   of corruption.) An older version of a page (written back, then
//!   changed again) never reappears.
//! * **Reordering while powered.** Unsynced writes reach the image in an
//!   arbitrary order only at a power cut; while the power is on, reads
//!   always see the latest write.
//! * **Failing writes, bit rot, lying fsyncs.** A call fails only because
//!   the power is gone, and a completed `sync_data` is durable.
//! * **File locks.** redb's locks are for other processes; a simulated
//!   node has none, and redb runs without them (its single-writer mode).
//!
//! # Determinism
//!
//! The disk draws no randomness of its own: what survives a power cut
//! depends only on the writes and the seed in [`Survive::Seeded`], and
//! every walk over the pages goes in page order. The same calls and the
//! same seed give a byte-equal image ([`SimDisk::durable_image`]).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::StorageBackend;

use super::fault::{PageBuffer, Platter, PAGE};

/// The unit a disk writes atomically, in bytes: a torn page is torn at a
/// multiple of it.
pub const SECTOR: u64 = 512;

/// What of the writes since the last `sync_data` reaches the durable image
/// when the power fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survive {
    /// None of them: the image is as of the last completed `sync_data`. The
    /// strictest case for code that fsyncs before it acknowledges.
    Nothing,
    /// All of them, as if the kernel had written the page cache back just
    /// before the power failed (the new length included).
    Everything,
    /// A part chosen by this seed: whether the new length survives, a
    /// subset of the written pages (each page kept with a probability that
    /// is itself drawn per power cut, from "none" to "all"), and possibly
    /// one page torn: its first sectors new, the rest old, cut at a seeded
    /// [`SECTOR`] boundary.
    Seeded(u64),
}

/// What a simulated disk has done so far, for a simulator's summary. Counts
/// cover every incarnation; calls that failed (fenced or crashed) are not
/// counted as writes or syncs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimDiskStats {
    /// Completed `write` calls.
    pub writes: u64,
    /// Bytes those calls wrote.
    pub bytes_written: u64,
    /// Completed `set_len` calls.
    pub set_lens: u64,
    /// Completed `sync_data` calls.
    pub syncs: u64,
    /// Power failures, cut by [`SimDisk::cut_power`] or by an armed crash.
    pub power_cuts: u64,
    /// Unsynced pages that reached the durable image at a power cut (whole
    /// or torn).
    pub pages_kept: u64,
    /// Unsynced pages lost at a power cut.
    pub pages_lost: u64,
    /// Pages torn at a power cut: a prefix of their new bytes survived.
    pub torn_writes: u64,
}

/// A simulated disk holding one database. Cloning gives another handle on
/// the same disk. See the [module docs](self).
#[derive(Clone, Default)]
pub struct SimDisk {
    disk: Arc<Mutex<Disk>>,
}

/// Everything behind a [`SimDisk`]'s lock.
#[derive(Default)]
struct Disk {
    /// The durable image: what survives a power failure.
    image: Image,
    /// What was written since the last sync, over `image`.
    cache: PageBuffer,
    /// The incarnation allowed to use the disk; older ones are fenced.
    incarnation: u64,
    /// An armed crash: changing calls still allowed, and what survives.
    armed: Option<(u64, Survive)>,
    /// Whether the crash armed last has fired.
    fired: bool,
    stats: SimDiskStats,
}

/// The durable image: a byte vector as a [`Platter`].
#[derive(Default)]
struct Image(Vec<u8>);

impl Platter for Image {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn read(&self, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(dst.len())?))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the image"))?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| too_big())?;
        self.0.resize(len, 0);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| too_big())?;
        let end = start.checked_add(data.len()).ok_or_else(too_big)?;
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[start..end].copy_from_slice(data);
        Ok(())
    }
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "a simulated disk holds at most usize::MAX bytes")
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power failure: this incarnation of the disk is dead")
}

impl Disk {
    /// The power fails: `survive` decides what of the page cache reaches
    /// the image, the rest is dropped, and every incarnation is fenced.
    fn cut(&mut self, survive: Survive) {
        let dirty = self.cache.dirty_pages() as u64;
        let Disk { image, cache, stats, .. } = self;
        let kept_before = stats.pages_kept;
        let applied = match survive {
            Survive::Nothing => {
                *cache = PageBuffer::new(image.0.len() as u64);
                Ok(())
            }
            Survive::Everything => cache.apply_some(image, true, |_| {
                stats.pages_kept += 1;
                PAGE as usize
            }),
            Survive::Seeded(seed) => {
                // Every draw in a fixed order, so the seed alone decides.
                let mut rng = StdRng::seed_from_u64(seed);
                let keep_in_4 = rng.gen_range(0..=4u32);
                let with_len = rng.gen_bool(0.5);
                let torn = (dirty > 0 && rng.gen_bool(0.5)).then(|| rng.gen_range(0..dirty));
                let mut i = 0;
                cache.apply_some(image, with_len, |_| {
                    let this = i;
                    i += 1;
                    if Some(this) == torn {
                        stats.pages_kept += 1;
                        stats.torn_writes += 1;
                        rng.gen_range(1..PAGE / SECTOR) as usize * SECTOR as usize
                    } else if rng.gen_ratio(keep_in_4, 4) {
                        stats.pages_kept += 1;
                        PAGE as usize
                    } else {
                        0
                    }
                })
            }
        };
        // The image is a vector: only a length beyond usize fails, and
        // `cache` never grows past what `write` and `set_len` accepted.
        if let Err(e) = applied {
            unreachable!("invariant: applying a page cache to a memory image cannot fail ({e})");
        }
        stats.pages_lost += dirty - (stats.pages_kept - kept_before);
        stats.power_cuts += 1;
        self.incarnation += 1;
    }
}

impl SimDisk {
    /// An empty disk: a database opened on it is new.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the disk. A panic while the lock was held is a bug in this
    /// module (nothing under the lock calls out); the state is still used,
    /// as every change under the lock is complete before anything can fail.
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A backend for a new incarnation of the node, to open with
    /// [`Db::on_backend`](super::Db::on_backend). It sees the disk as the
    /// last incarnation left it (its unsynced writes included, unless the
    /// power was cut since), and fences every older incarnation.
    pub fn backend(&self) -> SimBackend {
        let mut disk = self.lock();
        disk.incarnation += 1;
        SimBackend { disk: self.clone(), incarnation: disk.incarnation }
    }

    /// Cuts the power now: `survive` decides what of the writes since the
    /// last sync reaches the durable image, the rest is lost, and the
    /// running incarnation is fenced (its calls fail from now on). Disarms
    /// an armed crash that has not fired.
    pub fn cut_power(&self, survive: Survive) {
        let mut disk = self.lock();
        disk.armed = None;
        disk.cut(survive);
    }

    /// Arms a crash: the next `ops` calls that change the disk (`write`,
    /// `set_len`, `sync_data`) succeed, and the power fails *during* the one
    /// after (so `crash_after(0, ..)` kills the very next call). That call
    /// returns an I/O error without taking effect, `survive` decides what
    /// of the earlier unsynced writes survives, and the incarnation is
    /// fenced, as by [`SimDisk::cut_power`]. Replaces a crash armed before;
    /// [`SimDisk::crash_fired`] tells whether it has fired.
    pub fn crash_after(&self, ops: u64, survive: Survive) {
        let mut disk = self.lock();
        disk.armed = Some((ops, survive));
        disk.fired = false;
    }

    /// Disarms a crash that has not fired yet.
    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    /// Whether the crash armed last by [`SimDisk::crash_after`] has fired:
    /// the node on this disk lost its power and is dead.
    pub fn crash_fired(&self) -> bool {
        self.lock().fired
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// A copy of the durable image: what would survive a power cut that
    /// keeps [`Survive::Nothing`]. For comparing two runs byte for byte.
    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().image.0.clone()
    }

    /// How many pages were written since the last sync: what a power cut
    /// now could lose (besides a change of length).
    pub fn unsynced_pages(&self) -> usize {
        self.lock().cache.dirty_pages()
    }
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let disk = self.lock();
        f.debug_struct("SimDisk")
            .field("durable_len", &disk.image.0.len())
            .field("len", &disk.cache.len())
            .field("unsynced_pages", &disk.cache.dirty_pages())
            .field("incarnation", &disk.incarnation)
            .field("armed", &disk.armed)
            .finish()
    }
}

/// One incarnation's view of a [`SimDisk`]: the redb storage backend a
/// node's database runs on. Fenced (every call fails) once a newer
/// incarnation opened or the power was cut.
#[derive(Debug)]
pub struct SimBackend {
    disk: SimDisk,
    incarnation: u64,
}

impl SimBackend {
    /// Locks the disk for a call of this incarnation, or fails if it is
    /// fenced.
    fn lock(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = self.disk.lock();
        if disk.incarnation != self.incarnation {
            return Err(power_lost());
        }
        Ok(disk)
    }

    /// Locks the disk for a call that changes it: fails if fenced, and
    /// fires an armed crash that has counted down to this call.
    fn lock_to_change(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let mut disk = self.lock()?;
        match disk.armed {
            Some((0, survive)) => {
                disk.armed = None;
                disk.fired = true;
                disk.cut(survive);
                Err(power_lost())
            }
            Some((ops, survive)) => {
                disk.armed = Some((ops - 1, survive));
                Ok(disk)
            }
            None => Ok(disk),
        }
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock()?.cache.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let disk = self.lock()?;
        disk.cache.read(&disk.image, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        usize::try_from(len).map_err(|_| too_big())?;
        let mut disk = self.lock_to_change()?;
        disk.cache.set_len(len);
        disk.stats.set_lens += 1;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.lock_to_change()?;
        let Disk { image, cache, stats, .. } = &mut *disk;
        cache.apply(image)?;
        stats.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        offset
            .checked_add(data.len() as u64)
            .and_then(|end| usize::try_from(end).ok())
            .ok_or_else(too_big)?;
        let mut disk = self.lock_to_change()?;
        let Disk { image, cache, stats, .. } = &mut *disk;
        cache.write(image, offset, data)?;
        stats.writes += 1;
        stats.bytes_written += data.len() as u64;
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        // A clean close keeps the page cache: the writes are the kernel's
        // now, lost only if the power fails before a sync.
        Ok(())
    }

    // No lock methods: see "What it does not model". redb's defaults report
    // them unsupported, and redb then runs as the single writer it is here.
}

/// A simulated directory: files that are [`SimDisk`]s, and names that a
/// power cut can take away. For a log that lives in several files
/// ([`super::wal`]).
///
/// A file created or removed is so at once for the running process, and
/// durably only after [`WalDir::sync`](super::wal::WalDir::sync), as on a
/// real file system, where a directory entry needs the directory fsynced.
/// [`SimDir::cut_power`] cuts the power of every file (each decides by
/// `survive` what of its unsynced writes it keeps; a seed is varied per
/// file, in name order), then brings the names back to the last synced
/// directory: a file created since is gone, a file removed since is back.
#[derive(Clone, Default)]
pub struct SimDir {
    dir: Arc<Mutex<DirState>>,
}

#[derive(Default)]
struct DirState {
    /// The names as the running process sees them.
    live: std::collections::BTreeMap<String, SimDisk>,
    /// The names as of the last sync.
    durable: std::collections::BTreeMap<String, SimDisk>,
}

impl SimDir {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power: see the [type's docs](SimDir). Every file's running
    /// incarnation is fenced.
    pub fn cut_power(&self, survive: Survive) {
        let mut dir = self.lock();
        for (i, disk) in dir.durable.values().enumerate() {
            let survive = match survive {
                Survive::Seeded(seed) => Survive::Seeded(seed.wrapping_add(i as u64)),
                other => other,
            };
            disk.cut_power(survive);
        }
        for (name, disk) in &dir.live {
            if !dir.durable.contains_key(name) {
                disk.cut_power(Survive::Nothing);
            }
        }
        dir.live = dir.durable.clone();
    }

    /// The file `name`, as the running process sees the directory.
    pub fn file(&self, name: &str) -> Option<SimDisk> {
        self.lock().live.get(name).cloned()
    }
}

impl std::fmt::Debug for SimDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.lock();
        f.debug_struct("SimDir").field("files", &dir.live.keys().collect::<Vec<_>>()).finish()
    }
}

impl super::wal::WalDir for SimDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().live.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<super::wal::WalFile> {
        let disk = self.lock().live.entry(name.to_string()).or_default().clone();
        Ok(Arc::new(disk.backend()))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match self.lock().live.remove(name) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))),
        }
    }

    fn sync(&self) -> io::Result<()> {
        let mut dir = self.lock();
        dir.durable = dir.live.clone();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("(simulated directory)/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Durability, ReadableDatabase, TableDefinition};

    fn read(b: &SimBackend, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        b.read(offset, &mut out).unwrap();
        out
    }

    #[test]
    fn synced_writes_survive_a_power_cut_and_unsynced_ones_do_not() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, b"synced").unwrap();
        b.sync_data().unwrap();
        b.write(0, b"lost!!").unwrap();
        b.write(3 * PAGE, b"lost too").unwrap();
        assert_eq!(read(&b, 0, 6), b"lost!!", "the process reads its own writes");
        assert_eq!(disk.unsynced_pages(), 2);

        disk.cut_power(Survive::Nothing);
        let b = disk.backend();
        assert_eq!(b.len().unwrap(), 6, "the growth was never synced");
        assert_eq!(read(&b, 0, 6), b"synced");
        assert_eq!(disk.stats().pages_lost, 2);
    }

    #[test]
    fn a_restart_without_power_cut_keeps_the_page_cache_and_fences_the_old_incarnation() {
        let disk = SimDisk::new();
        let old = disk.backend();
        old.write(0, b"unsynced").unwrap();
        old.close().unwrap();
        let new = disk.backend();
        assert_eq!(read(&new, 0, 8), b"unsynced");
        assert!(old.write(0, b"zombie").is_err(), "an older incarnation cannot write");
        assert!(old.read(0, &mut [0; 4]).is_err());
        assert_eq!(read(&new, 0, 8), b"unsynced");
        assert_eq!(disk.durable_image(), b"", "still nothing durable");
    }

    #[test]
    fn a_power_cut_fences_the_running_incarnation() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, b"x").unwrap();
        disk.cut_power(Survive::Everything);
        assert!(b.write(0, b"y").is_err());
        assert!(b.sync_data().is_err());
        assert!(b.len().is_err());
        assert_eq!(disk.durable_image(), b"x", "Everything kept the write");
    }

    #[test]
    fn an_armed_crash_fails_the_chosen_call_and_everything_after() {
        let disk = SimDisk::new();
        let b = disk.backend();
        disk.crash_after(2, Survive::Nothing);
        b.write(0, b"one").unwrap();
        b.sync_data().unwrap();
        assert!(!disk.crash_fired());
        assert!(b.write(0, b"two").is_err(), "the third changing call dies");
        assert!(disk.crash_fired());
        assert!(b.write(0, b"three").is_err(), "and the incarnation stays dead");
        let b = disk.backend();
        assert_eq!(read(&b, 0, 3), b"one");
        let stats = disk.stats();
        assert_eq!((stats.writes, stats.syncs, stats.power_cuts), (1, 1, 1));
        // Fired once; a later cut does not fire it again.
        b.write(0, b"fine").unwrap();
        assert!(disk.crash_fired());
    }

    #[test]
    fn a_crash_armed_at_zero_kills_the_next_call_and_a_disarmed_one_never_fires() {
        let disk = SimDisk::new();
        let b = disk.backend();
        disk.crash_after(0, Survive::Nothing);
        assert!(b.set_len(10).is_err());
        let b = disk.backend();
        disk.crash_after(0, Survive::Nothing);
        disk.disarm();
        b.set_len(10).unwrap();
        assert!(!disk.crash_fired());
    }

    /// Writes 8 pages of `0xAA` and syncs, then overwrites them with `0xBB`
    /// and grows the disk, unsynced; cuts the power keeping `survive`.
    fn cut_with_unsynced_pages(survive: Survive) -> SimDisk {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, &[0xAA; 8 * PAGE as usize]).unwrap();
        b.sync_data().unwrap();
        b.write(0, &[0xBB; 10 * PAGE as usize]).unwrap();
        disk.cut_power(survive);
        disk
    }

    #[test]
    fn seeded_survival_is_a_function_of_the_seed() {
        for seed in 0..20 {
            let a = cut_with_unsynced_pages(Survive::Seeded(seed));
            let b = cut_with_unsynced_pages(Survive::Seeded(seed));
            assert_eq!(a.durable_image(), b.durable_image(), "seed {seed}");
            assert_eq!(a.stats(), b.stats(), "seed {seed}");
        }
    }

    #[test]
    fn seeded_survival_keeps_old_or_new_pages_and_tears_at_most_one() {
        let mut images = std::collections::BTreeSet::new();
        let mut torn = 0;
        for seed in 0..200 {
            let disk = cut_with_unsynced_pages(Survive::Seeded(seed));
            let image = disk.durable_image();
            assert!(image.len() == 8 * PAGE as usize || image.len() == 10 * PAGE as usize, "seed {seed}");
            let stats = disk.stats();
            assert_eq!(stats.pages_kept + stats.pages_lost, 10, "seed {seed}: {stats:?}");
            assert!(stats.torn_writes <= 1);
            torn += stats.torn_writes;
            // Each page is old bytes, new bytes, or (the torn one) new
            // bytes then old ones; pages only the unsynced growth held
            // read zeros where not kept.
            let mut mixed = 0;
            for (i, page) in image.chunks(PAGE as usize).enumerate() {
                let old = if i < 8 { 0xAA } else { 0 };
                let new_len = page.iter().take_while(|&&x| x == 0xBB).count();
                assert!(page[new_len..].iter().all(|&x| x == old), "seed {seed} page {i}");
                if new_len > 0 && new_len < page.len() {
                    assert_eq!(new_len % SECTOR as usize, 0, "seed {seed}: torn inside a sector");
                    mixed += 1;
                }
            }
            assert!(mixed <= 1, "seed {seed}: {mixed} torn pages");
            images.insert(image);
        }
        assert!(torn > 10, "tears happen: {torn} in 200 cuts");
        assert!(images.len() > 50, "seeds choose different images: {}", images.len());
    }

    #[test]
    fn shrinking_then_growing_survives_as_zeros_or_not_at_all() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, &[0xAA; 2 * PAGE as usize]).unwrap();
        b.sync_data().unwrap();
        b.set_len(100).unwrap();
        b.set_len(2 * PAGE).unwrap();
        disk.cut_power(Survive::Everything);
        let mut want = vec![0; 2 * PAGE as usize];
        want[..100].fill(0xAA);
        assert_eq!(disk.durable_image(), want);
    }

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn insert(db: &redb::Database, key: u64, durability: Durability) {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(durability).unwrap();
        tx.open_table(T).unwrap().insert(key, key).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn redb_keeps_what_it_committed_durably_and_loses_the_rest() {
        let disk = SimDisk::new();
        let db = redb::Database::builder().create_with_backend(disk.backend()).unwrap();
        insert(&db, 1, Durability::Immediate);
        insert(&db, 2, Durability::None);
        disk.cut_power(Survive::Nothing);
        // The dead incarnation's database can no longer write, not even
        // when it is dropped.
        let commit = db.begin_write().map(|tx| tx.commit());
        assert!(!matches!(commit, Ok(Ok(()))), "a fenced database committed: {commit:?}");
        drop(db);

        let db = redb::Database::builder().create_with_backend(disk.backend()).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        assert_eq!(t.get(1).unwrap().map(|v| v.value()), Some(1));
        assert!(t.get(2).unwrap().is_none(), "a commit without fsync is lost");
    }
}
