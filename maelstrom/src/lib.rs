//! # maelstrom
//!
//! A node for [Maelstrom](https://github.com/jepsen-io/maelstrom)'s `lin-kv`
//! workload, built on `raft-core`: a linearizable key-value store whose
//! nodes replicate with Raft and talk to each other, and to Maelstrom's
//! clients, only through Maelstrom's simulated network (JSON lines on stdin
//! and stdout). Maelstrom then checks the history of operations it saw for
//! linearizability while it delays messages and partitions the network.
//!
//! Read the modules in this order:
//!
//! 1. [`protocol`]: the messages: lin-kv requests and replies, error codes
//!    and what each promises, and our node-to-node messages.
//! 2. [`ids`]: Maelstrom's `n0, n1, …` and Raft's node ids.
//! 3. [`lin_kv`]: the replicated state machine (write, compare-and-set).
//! 4. [`node`]: what a node does with each message: `init`, serving on the
//!    leader, forwarding from followers, error-code mapping.
//! 5. [`rpc`] and [`transport`]: requests between nodes with our own ids and
//!    timeouts, and the Raft RPCs carried over them.
//! 6. [`outbox`], [`input`] and [`server`]: the I/O around the node: one
//!    writer for stdout, a gate in front of stdin, and the maelstrom-node
//!    runtime between them, with how each of its defects is worked around.
//! 7. [`config`]: Raft timing chosen for Maelstrom's latencies.
//!
//! [`runner`] is separate from the node: a local, Maelstrom-compatible test
//! runner for any lin-kv binary (`maelstrom-runner`), so that the node is
//! tested without the JVM.
//!
//! The binary is `maelstrom-node`; `docs/maelstrom.md` says how to run it
//! under Maelstrom and what it does not do.
//!
//! maelstrom-node's library is also called `maelstrom`; this crate depends
//! on it under the name `mnode`.

pub mod config;
pub mod ids;
pub mod input;
pub mod lin_kv;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod rpc;
pub mod runner;
pub mod server;
pub mod transport;

pub use config::{NodeOptions, StorageChoice};
pub use node::{InitError, LinKvNode};
pub use server::{run, ServeError};
