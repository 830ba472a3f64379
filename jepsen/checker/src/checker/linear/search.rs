//! The search over one key's operations (Wing and Gong, with Lowe's
//! memoisation), as the [module docs](super) describe it.
//!
//! [`Search::run`] walks the call and return entries of the `ok`
//! operations (and, at the first return entry, the unknown operations
//! invoked before it), lifting an operation out of its list when the model
//! lets it take effect and putting it back when the search backtracks. It
//! answers linearizable, not linearizable (with the deepest dead end as a
//! [`Failure`]) or, past the deadline, undecided: never a guess.

use std::time::Instant;

use super::model::{Step, ValueId};
use super::prepare::KeyOps;
use super::visited::{InfoSet, OkSet, OkUndo, Visited};
use super::Counterexample;
use crate::history::{Function, Op};
use crate::json::Json;

/// "No entry": the end of a list.
const NIL: usize = usize::MAX;

/// A doubly linked list over nodes `0..n`, with a head sentinel `n`, from
/// which nodes are unlinked and relinked in last-out-first-in order (Knuth's
/// dancing links): an unlinked node keeps its own pointers, so relinking it
/// is two stores.
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    fn new(n: usize) -> Self {
        // Node i is followed by i + 1 and the last node by NIL; the head
        // (node n) comes first.
        let mut next: Vec<usize> = (1..=n).collect();
        if let Some(last) = next.last_mut() {
            *last = NIL;
        }
        next.push(if n == 0 { NIL } else { 0 });
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { n } else { i - 1 }).collect();
        prev.push(NIL);
        List { next, prev }
    }

    fn head(&self) -> usize {
        self.next.len() - 1
    }

    fn first(&self) -> usize {
        self.next[self.head()]
    }

    fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}

/// A call or return entry of an `ok` operation.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Position in the history.
    pos: usize,
    /// Index into `KeyOps::ok`.
    op: usize,
    is_call: bool,
}

/// An operation placed in the linearization.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// Index into `KeyOps::ok`.
    Ok(usize),
    /// Index into `KeyOps::info`.
    Info(usize),
}

/// A stack frame: what was placed, and what to restore when it is undone.
struct Frame {
    pick: Pick,
    state_before: ValueId,
    /// The first return entry when an unknown operation was placed, to
    /// resume trying unknown operations after it.
    first_return: usize,
    /// A read placed because it could go at once: no alternative needs
    /// trying in its place, so backtracking goes straight past it.
    forced: bool,
    /// For an `ok` operation, how to undo its placement in the ok set.
    undo: OkUndo,
}

/// Where the walk is in the current configuration.
#[derive(Clone, Copy)]
enum Cursor {
    /// Looking for a read that can go now, from this entry on.
    Reads(usize),
    /// Trying the `ok` operations, from this entry on.
    Main(usize),
    /// Having reached the first return entry, trying the unknown operations
    /// invoked before it, from this node on.
    Info { node: usize, first_return: usize },
}

/// What came of trying to place an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Placed: a new configuration.
    Placed,
    /// The model does not allow it from the current value.
    Impossible,
    /// Allowed, but the configuration it leads to was explored already (or
    /// one with every option it has).
    Explored,
}

/// How one key's search ended.
pub(super) enum SearchEnd {
    Linearizable,
    NotLinearizable(Failure),
    /// Out of time.
    Undecided,
}

/// The deepest dead end, in the search's own indices.
pub(super) struct Failure {
    linearized: Vec<Pick>,
    blocking: usize,
    candidates: Vec<Pick>,
}

impl Failure {
    pub(super) fn into_counterexample(self, key: &KeyOps, ops: &[Op]) -> Counterexample {
        let op = |pick: &Pick| match *pick {
            Pick::Ok(k) => ops[key.ok[k].op].clone(),
            Pick::Info(i) => ops[key.info[i].op].clone(),
        };
        let linearized: Vec<Op> = self.linearized.iter().map(op).collect();
        // The search knows the value only up to `simplify`'s merging;
        // replaying the placed operations gives the real one, as written.
        let mut state = Json::null();
        for placed in &linearized {
            match placed.f {
                Function::Write => state = placed.value.clone(),
                Function::Cas => {
                    if let Some(to) = placed.value.elements().and_then(|e| e.into_iter().nth(1)) {
                        state = to;
                    }
                }
                _ => {}
            }
        }
        Counterexample {
            linearized,
            state,
            blocking: op(&Pick::Ok(self.blocking)),
            candidates: self.candidates.iter().map(op).collect(),
        }
    }
}

/// One key's search state.
pub(super) struct Search<'a> {
    key: &'a KeyOps,
    /// Call and return entries of the `ok` operations, in history order.
    entries: Vec<Entry>,
    /// Per `ok` operation, its call and return entries.
    call_entry: Vec<usize>,
    return_entry: Vec<usize>,
    /// The entries not yet lifted.
    main: List,
    /// The unknown operations not yet placed.
    info: List,
    /// A random 64-bit key per `ok` operation; the xor of the keys of the
    /// placed ones hashes the ok set in O(1) per step (Zobrist hashing).
    zobrist: Vec<u64>,
    /// The placed `ok` operations.
    ok_set: OkSet,
    /// The placed unknown operations.
    info_set: InfoSet,
    /// The register's value after the placed operations.
    state: ValueId,
    stack: Vec<Frame>,
    pub(super) visited: Visited,
}

impl<'a> Search<'a> {
    pub(super) fn new(key: &'a KeyOps, memory: usize) -> Self {
        let n = key.ok.len();
        let mut entries = Vec::with_capacity(2 * n);
        for (op, reg) in key.ok.iter().enumerate() {
            entries.push(Entry { pos: reg.call, op, is_call: true });
            entries.push(Entry { pos: reg.ret, op, is_call: false });
        }
        // Positions are distinct events, so there are no ties to order.
        entries.sort_by_key(|e| e.pos);
        let mut call_entry = vec![0; n];
        let mut return_entry = vec![0; n];
        for (index, entry) in entries.iter().enumerate() {
            if entry.is_call {
                call_entry[entry.op] = index;
            } else {
                return_entry[entry.op] = index;
            }
        }
        let mut seed = 0x5EED_u64;
        let zobrist = (0..n).map(|_| splitmix64(&mut seed)).collect();
        Search {
            key,
            main: List::new(entries.len()),
            info: List::new(key.info.len()),
            entries,
            call_entry,
            return_entry,
            zobrist,
            ok_set: OkSet::new(n),
            info_set: InfoSet::new(key.info.len()),
            state: key.initial,
            stack: Vec::new(),
            visited: Visited::new(memory),
        }
    }

    pub(super) fn run(&mut self, deadline: Option<Instant>) -> SearchEnd {
        self.visited.insert(self.state, &self.ok_set, &self.info_set);
        let mut best: Option<Failure> = None;
        let mut cursor = Cursor::Reads(self.main.first());
        let mut iterations: u64 = 0;
        loop {
            iterations += 1;
            // Reading the clock costs about as much as a step; do it rarely.
            if iterations % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return SearchEnd::Undecided;
            }
            match cursor {
                // A new configuration. A read that can go now goes now, and
                // nothing else is tried in its place.
                Cursor::Reads(e) if e != NIL && self.entries[e].is_call => {
                    let k = self.entries[e].op;
                    let placement = match self.key.ok[k].step {
                        Step::Read(_) => self.try_ok(k, true),
                        _ => Placement::Impossible,
                    };
                    cursor = match placement {
                        Placement::Placed => Cursor::Reads(self.main.first()),
                        Placement::Impossible => Cursor::Reads(self.main.next(e)),
                        // This configuration leads only where the search
                        // has already been, without success.
                        Placement::Explored => match self.backtrack() {
                            Some(resume) => resume,
                            None => return self.exhausted(best),
                        },
                    };
                }
                Cursor::Reads(_) => cursor = Cursor::Main(self.main.first()),
                Cursor::Main(NIL) => return SearchEnd::Linearizable,
                Cursor::Main(e) if self.entries[e].is_call => {
                    let k = self.entries[e].op;
                    cursor = match self.try_ok(k, false) {
                        Placement::Placed => Cursor::Reads(self.main.first()),
                        Placement::Impossible | Placement::Explored => Cursor::Main(self.main.next(e)),
                    };
                }
                // The first return entry: no ok operation can go next. Try
                // the unknown ones invoked before this point.
                Cursor::Main(e) => cursor = Cursor::Info { node: self.info.first(), first_return: e },
                Cursor::Info { node, first_return }
                    if node != NIL && self.key.info[node].call < self.entries[first_return].pos =>
                {
                    cursor = match self.try_info(node, first_return) {
                        Placement::Placed => Cursor::Reads(self.main.first()),
                        Placement::Impossible | Placement::Explored => {
                            Cursor::Info { node: self.info.next(node), first_return }
                        }
                    };
                }
                // A dead end: nothing can go next from here.
                Cursor::Info { first_return, .. } => {
                    if best.as_ref().is_none_or(|b| self.stack.len() > b.linearized.len()) {
                        best = Some(self.failure_at(first_return));
                    }
                    cursor = match self.backtrack() {
                        Some(resume) => resume,
                        None => return self.exhausted(best),
                    };
                }
            }
        }
    }

    /// Places `ok` operation `k` now if the model allows it and the
    /// configuration it leads to is new.
    fn try_ok(&mut self, k: usize, forced: bool) -> Placement {
        let Some(next) = self.key.ok[k].step.apply(self.state) else { return Placement::Impossible };
        let undo = self.ok_set.place(k, self.zobrist[k]);
        if !self.visited.insert(next, &self.ok_set, &self.info_set) {
            self.ok_set.unplace(k, self.zobrist[k], undo);
            return Placement::Explored;
        }
        self.stack.push(Frame {
            pick: Pick::Ok(k),
            state_before: self.state,
            first_return: NIL,
            forced,
            undo,
        });
        self.state = next;
        // Lift: unlink the call, then the return (undone in reverse order).
        self.main.unlink(self.call_entry[k]);
        self.main.unlink(self.return_entry[k]);
        Placement::Placed
    }

    /// Places unknown operation `i` now, likewise.
    fn try_info(&mut self, i: usize, first_return: usize) -> Placement {
        let Some(next) = self.key.info[i].step.apply(self.state) else { return Placement::Impossible };
        self.info_set.insert(i);
        if !self.visited.insert(next, &self.ok_set, &self.info_set) {
            self.info_set.remove(i);
            return Placement::Explored;
        }
        let undo = OkUndo { low: self.ok_set.low, end: self.ok_set.end };
        self.stack.push(Frame {
            pick: Pick::Info(i),
            state_before: self.state,
            first_return,
            forced: false,
            undo,
        });
        self.state = next;
        self.info.unlink(i);
        Placement::Placed
    }

    /// Undoes placements up to and including the last one that had
    /// alternatives, and says where to continue: with the alternative after
    /// it. `None` if nothing is left to undo: every order has failed.
    fn backtrack(&mut self) -> Option<Cursor> {
        loop {
            let frame = self.stack.pop()?;
            self.state = frame.state_before;
            let resume = match frame.pick {
                Pick::Ok(k) => {
                    // Unlift: relink the return, then the call.
                    self.main.relink(self.return_entry[k]);
                    self.main.relink(self.call_entry[k]);
                    self.ok_set.unplace(k, self.zobrist[k], frame.undo);
                    Cursor::Main(self.main.next(self.call_entry[k]))
                }
                Pick::Info(i) => {
                    self.info.relink(i);
                    self.info_set.remove(i);
                    Cursor::Info { node: self.info.next(i), first_return: frame.first_return }
                }
            };
            if !frame.forced {
                return Some(resume);
            }
        }
    }

    /// The answer once every order has failed: the deepest dead end seen
    /// is the counterexample. One is always recorded before the search can
    /// be exhausted; should that ever not hold, describe the root instead,
    /// or failing that answer `unknown`, which is never wrong.
    fn exhausted(&self, best: Option<Failure>) -> SearchEnd {
        if let Some(failure) = best {
            return SearchEnd::NotLinearizable(failure);
        }
        let mut first_return = self.main.first();
        while first_return != NIL && self.entries[first_return].is_call {
            first_return = self.main.next(first_return);
        }
        if first_return == NIL {
            return SearchEnd::Undecided;
        }
        SearchEnd::NotLinearizable(self.failure_at(first_return))
    }

    /// Describes the dead end at `first_return`: what is placed, and what
    /// could have gone next.
    fn failure_at(&self, first_return: usize) -> Failure {
        let mut candidates = Vec::new();
        let mut e = self.main.first();
        while e != NIL && e != first_return {
            candidates.push(Pick::Ok(self.entries[e].op));
            e = self.main.next(e);
        }
        let limit = self.entries[first_return].pos;
        let mut i = self.info.first();
        while i != NIL && self.key.info[i].call < limit {
            candidates.push(Pick::Info(i));
            i = self.info.next(i);
        }
        Failure {
            linearized: self.stack.iter().map(|f| f.pick).collect(),
            blocking: self.entries[first_return].op,
            candidates,
        }
    }
}

/// A fast, well-mixed pseudo-random sequence (Steele, Lea and Flood's
/// SplitMix64), for the Zobrist keys.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
