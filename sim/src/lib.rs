//! # sim
//!
//! Deterministic simulation of whole `raft-core` clusters. The real code
//! (openraft, raft-core's elections, proposer, read path and redb log
//! store, the KV state machine) runs in one thread on simulated time, over
//! a simulated network and simulated disks; one seed decides every message
//! delay and loss, every partition, crash and torn write, every client
//! operation and every election timeout. So thousands of fault schedules
//! run per minute, and a failing seed replays exactly, with a full trace.
//!
//! Read the modules in this order:
//!
//! 1. [`run`]: one seed, start to verdict, and why it is deterministic.
//! 2. [`net`]: the network between the nodes, message by message.
//! 3. [`cluster`]: the nodes on their simulated disks; what a crash is
//!    ([`disk`]: what the trace records of each disk).
//! 4. [`nemesis`]: the fault schedule.
//! 5. [`workload`]: the clients and the history they write.
//! 6. [`cli`]: `sim run` and `sim replay`.
//! 7. [`trace`]: the trace `sim replay` writes.
//!
//! `docs/simulation.md` explains what the simulator can and cannot find.

pub mod cli;
pub mod cluster;
pub mod disk;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod trace;
pub mod workload;

pub use run::{run_seed, SeedReport, SimOptions};
