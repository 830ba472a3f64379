//! What the workloads' clients do next, and how their keys and values are
//! named: the part of a workload that does not depend on how a client
//! reaches the system. The harness (real clusters over HTTP) and the
//! simulator (simulated clusters in one process) both draw their
//! operations from a [`Generator`], so that their histories have the same
//! shape for the same checkers.
//!
//! * **register** ([`Kind::Register`]): independent keys, each a register
//!   that a group of clients reads, writes and compare-and-sets. Written
//!   values are unique (a run-wide counter), so a read can only be
//!   explained by the one write that wrote its value, and a CAS expects the
//!   last value its group saw. After `ops_per_key` operations a group moves
//!   on to a fresh key, so each key's history stays small enough for the
//!   linearizability search. Reads are linearizable.
//! * **set** ([`Kind::Set`]): each `add` writes a unique element as its own
//!   key; a few operations read the whole set back. Sets rotate every
//!   `set_size` elements to keep each listing small. A set's first element
//!   is always added, so that every set read has an add beside it: a set
//!   with reads and no adds would be judged as a register (the simulator
//!   found that once, a read of a set whose elements were all still to come).
//! * **session** ([`Kind::Session`]): writes to a few keys, `session` reads
//!   and `stale` reads, all on the client's own node.
//! * **watch** ([`Kind::Watch`]): puts of unique values to a few keys under
//!   [`WATCH_PREFIX`], some deletes, and linearizable reads now and then.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rand::Rng;
use serde_json::{json, Value};

/// The prefix the watch workload's keys share (and its watchers follow).
pub const WATCH_PREFIX: &str = "w/";

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Linearizable registers: read, write, compare-and-set.
    Register,
    /// A grow-only set: unique adds, whole-set reads.
    Set,
    /// Session and stale reads through followers.
    Session,
    /// Writes and deletes under a prefix that watchers follow.
    Watch,
}

/// The sizes of a workload.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The workload.
    pub kind: Kind,
    /// Register: clients sharing one key.
    pub clients_per_key: usize,
    /// Register: operations on a key before its group moves on.
    pub ops_per_key: u64,
    /// Set: elements per set before adds move to a new set.
    pub set_size: u64,
    /// Set: the fraction of operations that read a whole set.
    pub set_read_ratio: f64,
    /// Session: keys written and read.
    pub session_keys: u64,
    /// Watch: keys changed, all under [`WATCH_PREFIX`].
    pub watch_keys: u64,
}

/// One operation as chosen. Keys are numbers: [`Generator::kv_key`] names
/// them in the store, [`Generator::hkey`] in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read a key at a consistency (`linearizable`, `session`, `stale`).
    Read {
        /// The key.
        key: u64,
        /// The consistency asked for.
        consistency: &'static str,
    },
    /// Write a fresh value.
    Write {
        /// The key.
        key: u64,
        /// The value, never written before.
        value: u64,
    },
    /// Compare-and-set from the last value the group saw to a fresh one.
    Cas {
        /// The key.
        key: u64,
        /// The value expected.
        from: u64,
        /// The value to set, never written before.
        to: u64,
    },
    /// Add an element to a set.
    Add {
        /// The set.
        set: u64,
        /// The element, never added before.
        element: u64,
    },
    /// Delete a key (watch workload).
    Delete {
        /// The key.
        key: u64,
    },
    /// Read a whole set.
    ReadSet {
        /// The set.
        set: u64,
    },
}

/// A register group: the key it works on and the last value it saw.
#[derive(Debug, Clone, Default)]
struct Group {
    key: u64,
    ops: u64,
    last: Option<u64>,
}

/// The state every client of a run shares: the register groups, the
/// run-wide counters, the keys used so far.
#[derive(Debug)]
pub struct Generator {
    shape: Shape,
    groups: Mutex<Vec<Group>>,
    next_key: AtomicU64,
    next_value: AtomicU64,
    used_keys: Mutex<BTreeSet<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Generator {
    /// A generator for `clients` clients, numbered from 0.
    pub fn new(shape: Shape, clients: usize) -> Generator {
        let groups = clients.div_ceil(shape.clients_per_key.max(1)) as u64;
        Generator {
            shape,
            groups: Mutex::new((0..groups).map(|key| Group { key, ..Group::default() }).collect()),
            next_key: AtomicU64::new(groups),
            next_value: AtomicU64::new(1),
            used_keys: Mutex::new(BTreeSet::new()),
        }
    }

    /// The workload's sizes.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// A value no other write of the run uses.
    pub fn fresh_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// The keys (registers) or sets used so far, for the final reads.
    pub fn used_keys(&self) -> Vec<u64> {
        lock(&self.used_keys).iter().copied().collect()
    }

    fn use_key(&self, key: u64) {
        lock(&self.used_keys).insert(key);
    }

    /// The next operation of client `client`, from its own `rng`.
    pub fn choose(&self, client: usize, rng: &mut impl Rng) -> Op {
        let s = self.shape;
        let roll: f64 = rng.gen();
        match s.kind {
            Kind::Register => {
                let mut groups = lock(&self.groups);
                let g = &mut groups[client / s.clients_per_key.max(1)];
                if g.ops >= s.ops_per_key {
                    *g = Group { key: self.next_key.fetch_add(1, Ordering::Relaxed), ..Group::default() };
                }
                g.ops += 1;
                let key = g.key;
                self.use_key(key);
                match (roll, g.last) {
                    (r, _) if r < 0.5 => Op::Read { key, consistency: "linearizable" },
                    (r, Some(from)) if r >= 0.75 => Op::Cas { key, from, to: self.fresh_value() },
                    _ => Op::Write { key, value: self.fresh_value() },
                }
            }
            Kind::Set => {
                let element = self.fresh_value();
                let set = element / s.set_size.max(1);
                self.use_key(set);
                // Values start at 1, so set 0's first element is 1.
                let first = element % s.set_size.max(1) == 0 || element == 1;
                if roll < s.set_read_ratio && !first {
                    Op::ReadSet { set }
                } else {
                    Op::Add { set, element }
                }
            }
            Kind::Session => {
                let key = rng.gen_range(0..s.session_keys.max(1));
                self.use_key(key);
                match roll {
                    r if r < 0.5 => Op::Read { key, consistency: "session" },
                    r if r < 0.7 => Op::Read { key, consistency: "stale" },
                    _ => Op::Write { key, value: self.fresh_value() },
                }
            }
            Kind::Watch => {
                let key = rng.gen_range(0..s.watch_keys.max(1));
                self.use_key(key);
                match roll {
                    r if r < 0.1 => Op::Read { key, consistency: "linearizable" },
                    r if r < 0.2 => Op::Delete { key },
                    _ => Op::Write { key, value: self.fresh_value() },
                }
            }
        }
    }

    /// The final read of `key` (a register, or a whole set), which every
    /// node answers once the faults are healed.
    pub fn final_read(&self, key: u64) -> Op {
        match self.shape.kind {
            Kind::Set => Op::ReadSet { set: key },
            _ => Op::Read { key, consistency: "linearizable" },
        }
    }

    /// Remembers what client `client`'s register group learnt from a
    /// completed operation on `key`: the value it holds now, if known.
    pub fn learn(&self, client: usize, key: u64, value: Option<u64>) {
        if self.shape.kind != Kind::Register {
            return;
        }
        let mut groups = lock(&self.groups);
        let g = &mut groups[client / self.shape.clients_per_key.max(1)];
        if g.key == key {
            g.last = value;
        }
    }

    /// The key's name in the KV store (a set's is the prefix its elements'
    /// keys share).
    pub fn kv_key(&self, key: u64) -> String {
        match self.shape.kind {
            Kind::Register => format!("r/{key}"),
            Kind::Set => format!("set/{key}/"),
            Kind::Session => format!("s/{key}"),
            Kind::Watch => format!("{WATCH_PREFIX}{key}"),
        }
    }

    /// The key's name in the history: the register and set workloads'
    /// keys are numbers, as in Jepsen and Maelstrom; the session
    /// workload's are the store's keys, which its final log names, and so
    /// are the watch workload's, which the watchers' events name.
    pub fn hkey(&self, key: u64) -> Value {
        match self.shape.kind {
            Kind::Session | Kind::Watch => Value::String(self.kv_key(key)),
            _ => json!(key),
        }
    }

    /// A value's form in the history: numbers, except in the session
    /// workload, whose final log holds the stored strings.
    pub fn hvalue(&self, text: &str) -> Value {
        match self.shape.kind {
            Kind::Session => Value::String(text.to_string()),
            _ => parse_value(text),
        }
    }
}

/// A value as the workloads write it (a decimal number), or the raw text
/// if something else was read: the checker then reports it as never
/// written.
pub fn parse_value(text: &str) -> Value {
    text.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn shape(kind: Kind) -> Shape {
        Shape {
            kind,
            clients_per_key: 2,
            ops_per_key: 10,
            set_size: 50,
            set_read_ratio: 1.0,
            session_keys: 4,
            watch_keys: 4,
        }
    }

    #[test]
    fn every_set_read_follows_an_add_to_that_set() {
        // Every roll may read (ratio 1.0); the first element of each set
        // must still be added.
        let g = Generator::new(shape(Kind::Set), 1);
        let mut rng = StdRng::seed_from_u64(1);
        let mut added = BTreeSet::new();
        let mut reads = 0;
        for _ in 0..500 {
            match g.choose(0, &mut rng) {
                Op::Add { set, .. } => {
                    added.insert(set);
                }
                Op::ReadSet { set } => {
                    reads += 1;
                    assert!(added.contains(&set), "a read of set {set}, which has no add");
                }
                other => panic!("not a set operation: {other:?}"),
            }
        }
        assert!(reads > 400);
    }

    #[test]
    fn a_register_group_moves_to_a_fresh_key_and_casts_from_what_it_learnt() {
        let g = Generator::new(shape(Kind::Register), 4);
        let mut rng = StdRng::seed_from_u64(2);
        let mut keys = BTreeSet::new();
        let mut cas_from = Vec::new();
        for i in 0..40 {
            let op = g.choose(0, &mut rng);
            match op {
                Op::Read { key, .. } | Op::Write { key, .. } => {
                    keys.insert(key);
                    g.learn(0, key, Some(1_000 + i));
                }
                Op::Cas { key, from, .. } => {
                    keys.insert(key);
                    cas_from.push(from);
                    g.learn(0, key, Some(1_000 + i));
                }
                other => panic!("not a register operation: {other:?}"),
            }
        }
        // Two groups (0 and 1) start on keys 0 and 1; group 0 then takes
        // keys 2, 3, 4 after every ten operations.
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec![0, 2, 3, 4]);
        assert!(!cas_from.is_empty() && cas_from.iter().all(|&f| f >= 1_000));
    }

    #[test]
    fn keys_and_values_are_named_per_workload() {
        let register = Generator::new(shape(Kind::Register), 1);
        assert_eq!(
            (register.kv_key(3), register.hkey(3), register.hvalue("7")),
            ("r/3".into(), json!(3), json!(7))
        );
        let session = Generator::new(shape(Kind::Session), 1);
        assert_eq!(
            (session.kv_key(3), session.hkey(3), session.hvalue("7")),
            ("s/3".into(), json!("s/3"), json!("7"))
        );
        assert_eq!(Generator::new(shape(Kind::Set), 1).kv_key(3), "set/3/");
        assert_eq!(Generator::new(shape(Kind::Watch), 1).hkey(3), json!("w/3"));
        assert_eq!(parse_value("x"), json!("x"));
    }
}
