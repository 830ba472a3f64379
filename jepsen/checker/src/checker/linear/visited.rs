//! The configurations the search has already reached (Lowe's memoisation).
//!
//! A configuration is which `ok` operations are placed ([`OkSet`]), which
//! unknown operations are placed ([`InfoSet`]), and the register's value.
//! The search's future depends on nothing else, so [`Visited::insert`]
//! refuses a configuration reached before, and one with the same `ok` set
//! and value as one reached before and at least its unknown operations
//! placed (leaving an optional operation out only leaves more ways open).
//! Memory is bounded ([`VISITED_MEMORY_LIMIT`] per key): past it the table
//! is forgotten, which only prunes less and never changes a verdict.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::ValueId;

/// Which `ok` operations are placed, indexed in call order.
///
/// Early operations are all placed long before the search reaches the end
/// of the history, so the set is nearly always a prefix plus a few recent
/// operations, and it is remembered as that: `low` (every index below it is
/// placed) and the words from `low` to the highest placed index. A visited
/// configuration then costs a few words instead of one bit per operation
/// in the key's history.
pub(super) struct OkSet {
    words: Vec<u64>,
    len: usize,
    /// The first unplaced index (`len` if all are placed).
    pub(super) low: usize,
    /// One past the highest placed index (0 if none is).
    pub(super) end: usize,
    /// The xor of the Zobrist keys of the placed operations: a hash of the
    /// set, updated in O(1) per step.
    hash: u64,
}

/// What [`OkSet::place`] changed besides the bit, to undo it exactly.
#[derive(Debug, Clone, Copy)]
pub(super) struct OkUndo {
    pub(super) low: usize,
    pub(super) end: usize,
}

impl OkSet {
    pub(super) fn new(len: usize) -> Self {
        OkSet { words: vec![0; len.div_ceil(64)], len, low: 0, end: 0, hash: 0 }
    }

    pub(super) fn place(&mut self, k: usize, zobrist: u64) -> OkUndo {
        let undo = OkUndo { low: self.low, end: self.end };
        self.words[k / 64] |= 1 << (k % 64);
        self.hash ^= zobrist;
        self.end = self.end.max(k + 1);
        if k == self.low {
            self.low = self.first_unplaced_from(k + 1);
        }
        undo
    }

    /// Undoes [`OkSet::place`]; placements are undone last-in-first-out.
    pub(super) fn unplace(&mut self, k: usize, zobrist: u64, undo: OkUndo) {
        self.words[k / 64] &= !(1 << (k % 64));
        self.hash ^= zobrist;
        self.low = undo.low;
        self.end = undo.end;
    }

    fn first_unplaced_from(&self, from: usize) -> usize {
        let mut w = from / 64;
        let Some(&word) = self.words.get(w) else { return self.len };
        let mut free = !word & (u64::MAX << (from % 64));
        loop {
            if free != 0 {
                return (w * 64 + free.trailing_zeros() as usize).min(self.len);
            }
            w += 1;
            match self.words.get(w) {
                Some(&word) => free = !word,
                None => return self.len,
            }
        }
    }

    /// The words that, with `low`, identify the set.
    fn window(&self) -> &[u64] {
        if self.end <= self.low {
            return &[];
        }
        &self.words[self.low / 64..self.end.div_ceil(64)]
    }
}

/// Which unknown operations are placed: usually none or a handful, so a
/// visited configuration stores only the non-zero words.
pub(super) struct InfoSet {
    words: Vec<u64>,
    placed: usize,
}

impl InfoSet {
    pub(super) fn new(len: usize) -> Self {
        InfoSet { words: vec![0; len.div_ceil(64)], placed: 0 }
    }

    pub(super) fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.placed += 1;
    }

    pub(super) fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.placed -= 1;
    }

    /// (word index, word) for every non-zero word.
    fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let words = if self.placed == 0 { &[][..] } else { &self.words[..] };
        words.iter().copied().enumerate().filter(|&(_, w)| w != 0)
    }

    /// Whether every placed operation in `pairs` (as stored by
    /// [`Visited`]) is placed here too.
    fn contains_all(&self, pairs: &[u64]) -> bool {
        pairs.chunks_exact(2).all(|pair| {
            let (index, bits) = (pair[0] as usize, pair[1]);
            self.words.get(index).is_some_and(|&w| w & bits == bits)
        })
    }
}

/// A `Hasher` that passes a `u64` through: the cache keys are already
/// uniformly random (Zobrist hashes), so hashing them again is wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How much memory the visited configurations of one key may hold, in
/// bytes. A hard key can reach tens of millions of configurations; past
/// this, the search forgets them all and carries on. Forgetting is safe (it
/// only prunes less), and the time budget still bounds the search, so the
/// verdict keeps its meaning; the machine keeps its memory.
pub(super) const VISITED_MEMORY_LIMIT: usize = 512 << 20;

/// Roughly what one hash-table slot costs: key, value, control byte, and
/// the spare capacity of a table that doubles as it grows.
const TABLE_BYTES_PER_ENTRY: usize = 32;

/// The configurations already reached: (ok set, unknown set, value).
pub(super) struct Visited {
    /// Hash of (ok set, value) -> offset in `arena` of the latest entry with
    /// that hash; entries with the same hash are chained through `arena`.
    heads: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
    /// Entries, one after another: the offset of the next entry in the chain
    /// (`u64::MAX` ends it), the value, `low`, the window's length, the
    /// number of (index, word) pairs of the unknown set, the window, then
    /// the pairs.
    arena: Vec<u64>,
    /// Configurations recorded so far, forgotten ones included.
    pub(super) recorded: usize,
    /// Bytes the table may hold before it is emptied.
    limit: usize,
}

impl Visited {
    pub(super) fn new(limit: usize) -> Self {
        Visited { heads: HashMap::default(), arena: Vec::new(), recorded: 0, limit }
    }

    /// Records a configuration and returns true, or returns false if it
    /// needs no exploring: one with the same ok set and value and a subset
    /// of its unknown operations was reached before (an exact repeat is the
    /// plain case of that).
    pub(super) fn insert(&mut self, state: ValueId, ok: &OkSet, info: &InfoSet) -> bool {
        const END: u64 = u64::MAX;
        let state = state as u64;
        let key = ok.hash ^ state.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let window = ok.window();
        let mut at = self.heads.get(&key).map_or(END, |&offset| offset as u64);
        while at != END {
            let entry = &self.arena[at as usize..];
            let (next, stored_state, low) = (entry[0], entry[1], entry[2] as usize);
            let (window_len, pairs) = (entry[3] as usize, entry[4] as usize);
            let stored_window = &entry[5..5 + window_len];
            let stored_pairs = &entry[5 + window_len..5 + window_len + 2 * pairs];
            if stored_state == state
                && low == ok.low
                && stored_window == window
                && info.contains_all(stored_pairs)
            {
                return false;
            }
            at = next;
        }

        let bytes = self.arena.len() * 8 + self.heads.len() * TABLE_BYTES_PER_ENTRY;
        if bytes > self.limit {
            tracing::warn!(
                configurations = self.heads.len(),
                "forgetting visited configurations to bound memory"
            );
            self.heads = HashMap::default();
            self.arena = Vec::new();
        }
        let offset = self.arena.len();
        let next = self.heads.insert(key, offset).map_or(END, |previous| previous as u64);
        let pairs: Vec<(usize, u64)> = info.nonzero().collect();
        self.arena.extend([next, state, ok.low as u64, window.len() as u64, pairs.len() as u64]);
        self.arena.extend_from_slice(window);
        for (index, word) in pairs {
            self.arena.extend([index as u64, word]);
        }
        self.recorded += 1;
        true
    }
}
