//! # raft-core
//!
//! Raft leader election and log replication for your own service, built on
//! [openraft](https://docs.rs/openraft/0.10.0-alpha.37), with a durable log in
//! [redb](https://docs.rs/redb) and a TCP transport.
//!
//! Read the modules in this order:
//!
//! 1. [`app`]: what an application implements: a command type, a response
//!    type and a deterministic `apply`.
//! 2. [`types`]: node ids, node addresses, log ids, the openraft type
//!    configuration and its aliases.
//! 3. [`storage`]: the durable log and the applied state on redb, and an
//!    in-memory log for tests.
//! 4. [`network`]: the TCP transport between nodes, and an in-process one
//!    for tests.
//! 5. [`node`]: [`RaftNode`], the handle an embedder holds: open, initialize,
//!    write, read barrier, membership changes, metrics, shutdown.
//!    Writes go through the [`proposer`], which commits concurrent commands
//!    together (group commit); linearizable reads go through
//!    [`read_index`], which confirms leadership once for many concurrent
//!    reads; a leader that stops hands its office to a caught-up voter
//!    first ([`handoff`]).
//! 6. [`config`] and [`error`]: the knobs with their defaults, and what each
//!    call can fail with.
//! 7. [`codec`]: the one binary encoding used on disk and on the wire.
//! 8. [`deterministic`] and [`rt`]: what a simulator switches on to run a
//!    whole cluster on one thread under one seed (seeded randomness, no
//!    threads), and the async runtime that lets openraft's random draws
//!    follow that seed.
//!
//! The design is explained in `docs/architecture/raft-core.md`.

pub mod app;
pub mod codec;
pub mod config;
pub mod deterministic;
pub mod election;
pub mod error;
pub mod handoff;
pub mod network;
pub mod node;
pub mod proposer;
pub mod read_index;
pub mod rt;
pub mod storage;
pub mod types;

pub use app::{AppState, AppView, ApplyContext, StateError, StateEvent, StateMachine};
pub use config::Config;
pub use error::{ChangeError, LeaderHint, ReadError, StartError, TransferError, WriteError};
pub use node::{NodeMetrics, RaftNode, Role, Storage, TermWatch, Written};
pub use storage::SnapshotData;
pub use types::{LogId, Node, NodeId};

/// openraft itself, for embedders who need what this crate does not wrap.
pub use openraft;
