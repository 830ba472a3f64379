//! # kv-app
//!
//! The reference replicated key-value service built on `raft-core`: the
//! state machine and the server, `kv-server`.
//!
//! Read the modules in this order:
//!
//! 1. [`command`]: the write commands in the Raft log (a logical log).
//! 2. [`state_machine`]: how a replica applies them, exactly once per
//!    client write, and how it reads its state.
//! 3. [`changes`]: the change log the state machine records for watchers:
//!    each key's value after and before each command, kept for a while.
//! 4. [`server`]: one replica serving the HTTP API.
//! 5. [`inspect`]: `kv-server inspect`, what a stopped node's data directory
//!    holds and its committed log replayed, read offline.
//! 6. [`certs`]: `kv-server certs`, the CA and node certificates of peer
//!    TLS.
//! 7. [`tokens`]: `kv-server tokens`, the bearer tokens of the HTTP API
//!    and the cluster secret, and their files, which
//!    [`server::auth`] checks requests against.
//! 8. [`restore`]: `kv-server restore` and `--force-new-cluster`, the ways
//!    back from losing a cluster.
//! 9. [`config_file`]: `kv-server --config FILE` and the `KV_*` variables,
//!    the other two places a flag can be set.
//!
//! Two crates nested here hold the rest, and neither depends on this one:
//!
//! * `kv-client` (`kv-app/client/`): the HTTP API's wire types,
//!   [`kv_client::api`], which the server uses too, and the client library,
//!   [`kv_client::client`]: leader discovery, retries, exactly-once writes,
//!   and which errors leave a write's outcome unknown.
//! * `kv-tools` (`kv-app/tools/`): `kvctl`, running a cluster of kv-server
//!   processes on one machine, and `kvctl bench`, a load generator for kv
//!   and etcd.
//!
//! The design is explained in `docs/architecture/kv-app.md`.

pub mod certs;
pub mod changes;
pub mod command;
pub mod config_file;
pub mod inspect;
pub mod restore;
pub mod server;
pub mod state_machine;
pub mod tokens;
