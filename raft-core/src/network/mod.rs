//! The transport: how Raft RPCs travel between nodes.
//!
//! openraft does not ship a network. It asks for a factory of clients, one
//! per peer, that deliver its RPCs to the peer's Raft and bring back the
//! answer. raft-core splits that job in two: a [`transport::Link`] only
//! carries an [`rpc::RpcRequest`] to a peer and brings back its
//! [`rpc::RpcResponse`]; [`transport::Network`] does the Raft-specific
//! rest (which failure is which, oversized requests, snapshots in pieces)
//! once, for every transport.
//!
//! Read the submodules in this order:
//!
//! 1. [`rpc`]: the messages, and [`rpc::Inbox`], which answers them with
//!    the local Raft.
//! 2. [`transport`]: what a transport implements, and the adaptor that
//!    gives any transport to openraft.
//! 3. [`frame`]: the TCP wire format: a handshake, then length-prefixed
//!    bincode frames, with a size limit checked before anything is
//!    allocated.
//! 4. [`tcp`]: the TCP server that feeds peers' requests to the local
//!    Raft, and the client links.
//! 5. [`tls`]: optional mutual TLS between peers, with the node's identity
//!    in its certificate.
//! 6. [`local`]: an in-process transport for tests, which hands requests to
//!    peers' inboxes directly.

pub mod frame;
pub mod local;
pub mod rpc;
pub mod tcp;
pub mod tls;
pub mod transport;

pub use rpc::{Inbox, RpcRequest, RpcResponse};
pub use tcp::{TcpLink, TcpServer, TcpTransport, TransportError};
pub use tls::{PeerTls, TlsError};
pub use transport::{doubling_backoff, Link, LinkError, Network, Transport};
