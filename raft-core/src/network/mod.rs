//! The transport: how Raft RPCs travel between nodes.
//!
//! openraft does not ship a network. It asks for a
//! [`RaftNetworkFactory`](openraft::RaftNetworkFactory) that creates one
//! [`RaftNetwork`](openraft::RaftNetwork) client per peer, and leaves it to
//! the application to deliver the three Raft RPCs (AppendEntries, Vote,
//! InstallSnapshot) to the peer's `Raft` handle and bring back the answer.
//!
//! Read the submodules in this order:
//!
//! 1. [`frame`]: the wire format: a handshake, then length-prefixed bincode
//!    frames, with a size limit checked before anything is allocated.
//! 2. [`tcp`]: the TCP server that feeds peers' requests to the local Raft,
//!    and the client openraft uses to reach peers, with its mapping of
//!    failures onto openraft's error kinds.
//! 3. [`local`]: an in-process transport for tests, which calls peers' Raft
//!    handles directly.

pub mod frame;
pub mod local;
pub mod tcp;

pub use tcp::{TcpConnection, TcpNetwork, TcpServer, TransportError};

/// openraft's wait before retrying an unreachable peer: `min` after the first
/// failure, doubling up to `max`. openraft drops it after the next success.
pub fn doubling_backoff(min: std::time::Duration, max: std::time::Duration) -> openraft::network::Backoff {
    openraft::network::Backoff::new(std::iter::successors(Some(min), move |d| Some((*d * 2).min(max))))
}
