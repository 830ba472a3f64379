//! Network partitions without root rights: the partition proxy on every
//! Raft link, from the `jepsen-net` crate (read its docs), which
//! `kvctl bench failover --stop isolate` shares with the harness.

pub use jepsen_net::*;
