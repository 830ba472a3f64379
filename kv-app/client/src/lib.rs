//! # kv-client
//!
//! The client side of the reference KV service: what a program needs to talk
//! to a kv-server cluster, and nothing of the server.
//!
//! 1. [`api`]: the HTTP API's wire types (described in `docs/api.md`),
//!    shared with the server so that the two cannot drift apart.
//! 2. [`client`]: the client library: leader discovery, retries, exactly-once
//!    writes, and which errors leave a write's outcome unknown.
//! 3. [`tls`]: HTTPS: the CA a client trusts and the certificate it
//!    presents, and the one way to build a reqwest client in this workspace.
//! 4. [`ports`]: a port on 127.0.0.1 for a kv-server that is restarted on it,
//!    for local clusters and test harnesses.
//! 5. [`backup`]: the backup file format, which the server writes and
//!    clients keep and check.
//! 6. [`server_env`]: keeping the `KV_*` variables of a user's shell away
//!    from the kv-server processes such a program starts.
//! 7. [`rolling`]: a rolling restart's order (followers first, the leader
//!    last) and when a restarted node is back, for whoever restarts the
//!    nodes.

pub mod api;
pub mod backup;
pub mod client;
pub mod ports;
pub mod rolling;
pub mod server_env;
pub mod tls;
