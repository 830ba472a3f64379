//! Synthetic histories from a simulated register, for testing and
//! benchmarking checkers without a cluster.
//!
//! A checker is only as good as the evidence that it accepts what it should
//! and rejects what it should. [`simulate_register`] produces large
//! histories that are linearizable *by construction*: one in-memory register
//! per key, and client processes whose operations overlap at random. Each
//! operation takes effect at one instant (its *linearization point*) chosen
//! inside its invocation–completion interval, and what a read returns is the
//! register's value at that instant. So the order of linearization points
//! is a linearization, and a correct checker must say valid. Corrupt one
//! read and it must say invalid.
//!
//! Faults are simulated the way a real test sees them:
//!
//! * `fail`: the operation never takes effect;
//! * `info`: it takes effect inside its interval, or later (after the
//!   client gave up), or never; the client then continues as a new process;
//! * when the test ends, some operations in flight get no completion at all.
//!
//! The simulation is a discrete-event loop over a priority queue of
//! (time, sequence number, action), deterministic for a given seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::history::{Event, EventType, Function, Process};

/// The shape of a simulated register test.
#[derive(Debug, Clone)]
pub struct RegisterSim {
    /// Operations to invoke in total.
    pub ops: usize,
    /// Independent keys; each operation picks one at random.
    pub keys: usize,
    /// Client workers running at once. Each has one operation in flight at
    /// a time, so about `concurrency / keys` operations overlap on a key.
    pub concurrency: usize,
    /// Fraction of operations that fail (never take effect), 0.0 to 1.0.
    pub fail_rate: f64,
    /// Fraction of operations whose outcome is unknown (`info`).
    pub info_rate: f64,
    /// The random seed: the same seed gives the same history.
    pub seed: u64,
    /// `None`: every write and cas writes a value never written before, as
    /// the harness's workloads do. `Some(n)`: values are drawn from `0..n`,
    /// so the same value is written many times and reads cannot tell the
    /// writes apart, which is what makes histories from other tools (a
    /// handful of values on one key) hard for a checker.
    pub distinct_values: Option<u64>,
}

impl Default for RegisterSim {
    fn default() -> Self {
        RegisterSim {
            ops: 1_000,
            keys: 5,
            concurrency: 5,
            fail_rate: 0.05,
            info_rate: 0.05,
            seed: 0,
            distinct_values: None,
        }
    }
}

/// Nanoseconds per millisecond.
const MS: u64 = 1_000_000;

/// What a planned operation will be reported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Ok,
    Fail,
    Info,
}

/// An invoked operation of the simulation.
struct InFlight {
    process: u64,
    f: Function,
    key: usize,
    value: Value,
    plan: Plan,
    /// For a read: the value seen at its linearization point. For a cas:
    /// whether it found `from`.
    read: Option<Value>,
    cas_applied: bool,
}

/// Scheduled actions; ties in time are broken by a sequence number, so an
/// action scheduled earlier runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Invoke { worker: usize },
    Apply { op: usize },
    Complete { op: usize, worker: usize },
}

/// Runs the simulation and returns its history, in real-time order.
pub fn simulate_register(sim: &RegisterSim) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(sim.seed);
    let keys = sim.keys.max(1);
    let mut registers = vec![Value::Null; keys];
    let mut ops: Vec<InFlight> = Vec::new();
    let mut events = Vec::new();
    let mut queue: BinaryHeap<Reverse<(u64, u64, Action)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |queue: &mut BinaryHeap<_>, at: u64, action: Action| {
        seq += 1;
        queue.push(Reverse((at, seq, action)));
    };

    let mut process_of: Vec<u64> = (0..sim.concurrency as u64).collect();
    let mut next_process = sim.concurrency as u64;
    let mut next_value = 0u64;
    let mut new_value = |rng: &mut StdRng| match sim.distinct_values {
        Some(n) => rng.gen_range(0..n.max(1)),
        None => {
            next_value += 1;
            next_value
        }
    };
    let mut invoked = 0usize;
    let nemesis_every = (sim.ops / 8).max(1);
    for worker in 0..sim.concurrency {
        schedule(&mut queue, rng.gen_range(0..MS), Action::Invoke { worker });
    }

    while let Some(Reverse((now, _, action))) = queue.pop() {
        match action {
            Action::Invoke { worker } => {
                if invoked == sim.ops {
                    continue;
                }
                invoked += 1;
                if invoked % nemesis_every == 0 {
                    let f =
                        if (invoked / nemesis_every) % 2 == 1 { "start-partition" } else { "stop-partition" };
                    events.push(Event::new(
                        Process::Nemesis,
                        EventType::Info,
                        Function::Other(f.into()),
                        Value::Null,
                        json!("majority"),
                        now,
                    ));
                }
                let key = rng.gen_range(0..keys);
                let roll: f64 = rng.gen();
                let (f, value) = if roll < 0.5 {
                    (Function::Read, Value::Null)
                } else if roll < 0.8 {
                    (Function::Write, json!(new_value(&mut rng)))
                } else {
                    // Usually the current value, so that some cas succeed
                    // and some find that another write got there first.
                    (Function::Cas, json!([registers[key].clone(), new_value(&mut rng)]))
                };
                let roll: f64 = rng.gen();
                let plan = if roll < sim.fail_rate {
                    Plan::Fail
                } else if roll < sim.fail_rate + sim.info_rate {
                    Plan::Info
                } else {
                    Plan::Ok
                };
                let complete_at = now + rng.gen_range(MS / 10..=5 * MS);
                let apply_at = match plan {
                    Plan::Ok => Some(rng.gen_range(now..=complete_at)),
                    Plan::Fail => None,
                    Plan::Info => match rng.gen_range(0..3) {
                        0 => Some(rng.gen_range(now..=complete_at)),
                        1 => Some(complete_at + rng.gen_range(0..=20 * MS)),
                        _ => None,
                    },
                };
                let op = ops.len();
                events.push(Event::new(
                    Process::Client(process_of[worker].into()),
                    EventType::Invoke,
                    f.clone(),
                    json!(key),
                    value.clone(),
                    now,
                ));
                ops.push(InFlight {
                    process: process_of[worker],
                    f,
                    key,
                    value,
                    plan,
                    read: None,
                    cas_applied: false,
                });
                // Scheduled before the completion, so at equal times the
                // operation takes effect before it completes.
                if let Some(at) = apply_at {
                    schedule(&mut queue, at, Action::Apply { op });
                }
                schedule(&mut queue, complete_at, Action::Complete { op, worker });
            }
            Action::Apply { op } => {
                let op = &mut ops[op];
                let register = &mut registers[op.key];
                match op.f {
                    Function::Read => op.read = Some(register.clone()),
                    Function::Write => *register = op.value.clone(),
                    _ => {
                        if op.value[0] == *register {
                            *register = op.value[1].clone();
                            op.cas_applied = true;
                        }
                    }
                }
            }
            Action::Complete { op, worker } => {
                // The test is over: some operations in flight are never
                // heard of again (their invocations count as info).
                if invoked == sim.ops && rng.gen_range(0..4) == 0 {
                    continue;
                }
                let op = &ops[op];
                let (kind, value) = match (op.plan, &op.f) {
                    (Plan::Ok, Function::Read) => (
                        EventType::Ok,
                        op.read.clone().expect("invariant: an ok read is applied before it completes"),
                    ),
                    (Plan::Ok, Function::Cas) if !op.cas_applied => (EventType::Fail, op.value.clone()),
                    (Plan::Ok, _) => (EventType::Ok, op.value.clone()),
                    (Plan::Fail, _) => (EventType::Fail, op.value.clone()),
                    (Plan::Info, _) => (EventType::Info, op.value.clone()),
                };
                let mut event = Event::new(
                    Process::Client(op.process.into()),
                    kind,
                    op.f.clone(),
                    json!(op.key),
                    value,
                    now,
                );
                event.extra.insert("node".into(), json!(format!("n{}", worker % 3 + 1)));
                events.push(event);
                if kind == EventType::Info {
                    process_of[worker] = next_process;
                    next_process += 1;
                }
                schedule(&mut queue, now + rng.gen_range(0..MS), Action::Invoke { worker });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{pair, Outcome};

    #[test]
    fn simulation_is_deterministic_for_a_seed() {
        let sim = RegisterSim { ops: 300, seed: 7, ..RegisterSim::default() };
        assert_eq!(simulate_register(&sim), simulate_register(&sim));
        let other = RegisterSim { seed: 8, ..sim.clone() };
        assert_ne!(simulate_register(&sim), simulate_register(&other));
    }

    #[test]
    fn simulated_history_pairs_and_has_every_outcome() {
        let sim = RegisterSim { ops: 2_000, keys: 3, concurrency: 6, ..RegisterSim::default() };
        let events = simulate_register(&sim);
        assert!(events.iter().any(|e| e.process == Process::Nemesis));
        let ops = pair(&events).expect("a simulated history obeys the history rules");
        assert_eq!(ops.len(), 2_000);
        for outcome in [Outcome::Ok, Outcome::Fail, Outcome::Info] {
            assert!(ops.iter().any(|op| op.outcome == outcome), "no {outcome:?} operation");
        }
        assert!(ops.iter().any(|op| op.complete_index.is_none()), "no operation left without completion");
        let cas_failed = ops.iter().filter(|op| op.f == Function::Cas && op.outcome == Outcome::Fail).count();
        let cas_ok = ops.iter().filter(|op| op.f == Function::Cas && op.outcome == Outcome::Ok).count();
        assert!(cas_failed > 0 && cas_ok > 0, "cas ok {cas_ok}, failed {cas_failed}");
    }

    #[test]
    fn distinct_values_draws_every_written_value_from_the_range() {
        let sim = RegisterSim { ops: 2_000, keys: 1, distinct_values: Some(3), ..RegisterSim::default() };
        let ops = pair(&simulate_register(&sim)).unwrap();
        let written: std::collections::BTreeSet<u64> = ops
            .iter()
            .filter_map(|op| match op.f {
                Function::Write => op.value.as_u64(),
                Function::Cas => op.value[1].as_u64(),
                _ => None,
            })
            .collect();
        assert_eq!(written.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }
}
