//! # jepsen
//!
//! A Jepsen-style harness for the KV service: clients record what they asked
//! and what they were told, and checkers decide whether a correct system
//! could have told them that. It judges the system only from the outside,
//! as a client does.
//!
//! The history format, the checkers, the stats and the plots live in
//! [`jepsen_checker`], which the Maelstrom runner shares; read its tour
//! first. This crate runs the system under test and records the history:
//!
//! 1. [`cli`]: the `jepsen` command line and its exit codes; `jepsen check`
//!    is [`jepsen_checker::check`].
//! 2. [`net`]: the proxy on every Raft link, which cuts links per direction
//!    to make network partitions without root rights (the `jepsen-net`
//!    crate, which `kvctl bench failover` shares).
//! 3. [`cluster`]: real `kv-server` processes behind those proxies, which
//!    the harness can kill, restart, pause and resume.
//! 4. [`tls`]: `jepsen test --tls`: the certificates, token and cluster
//!    secret of a run with every security layer on, made with the server's
//!    own tools.
//! 5. [`run`]: `jepsen test`: the workloads, the nemesis, the final phase
//!    and the report of one run, kept where [`jepsen_checker::store`] says.
//! 6. [`replay`]: the final log the session checker's consistent-prefix
//!    check needs, asked of a stopped node with `kv-server inspect`.
//!
//! The format and how to read a counterexample are described in
//! `docs/jepsen.md`.

pub mod cli;
pub mod cluster;
pub mod net;
pub mod replay;
pub mod run;
pub mod tls;
