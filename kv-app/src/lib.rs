//! # kv-app
//!
//! The reference replicated key-value service built on `raft-core`.
//!
//! Read the modules in this order:
//!
//! 1. [`command`]: the write commands in the Raft log (a logical log).
//! 2. [`state_machine`]: how a replica applies them, exactly once per
//!    client write, and how it reads its state.
//! 3. [`api`]: the HTTP API's wire types (described in `docs/api.md`).
//! 4. [`client`]: the client library: leader discovery, retries, exactly-once
//!    writes, and which errors leave a write's outcome unknown.
//! 5. [`cli`] and [`local_cluster`]: `kvctl`, and running a cluster of
//!    kv-server processes on one machine.
//! 6. [`bench`](mod@bench): `kvctl bench`, a load generator for kv and etcd.
//!
//! The design is explained in `docs/architecture/kv-app.md`.

pub mod bench;
pub mod cli;
pub mod command;
pub mod local_cluster;
pub mod server;
pub mod state_machine;

// The wire types and the client moved to kv-client; re-exported until their
// users move too.
pub use kv_client::{api, client};
