//! # kv-tools
//!
//! The tools around the KV service. They are clients of it, built on
//! `kv-client`: where they need a server they run the `kv-server` binary,
//! so nothing here depends on the server's code.
//!
//! Read the modules in this order:
//!
//! 1. [`cli`] and [`local_cluster`]: `kvctl`, and running a cluster of
//!    kv-server processes on one machine.
//! 2. [`endpoint`]: `kvctl endpoint status` and `kvctl endpoint health`,
//!    every endpoint's view of the cluster side by side.
//! 3. [`snapshot`]: `kvctl snapshot save` and `status`, online backups.
//! 4. [`lease`]: `kvctl lease`, leases whose keys end with them.
//! 5. [`bench`](mod@bench): `kvctl bench`, a load generator for kv and etcd.

pub mod bench;
pub mod cli;
pub mod endpoint;
pub mod lease;
pub mod local_cluster;
pub mod rollback;
pub mod snapshot;
