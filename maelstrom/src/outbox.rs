//! Where this node's outgoing messages go.
//!
//! Everything the node sends (replies to clients, Raft RPCs, forwarded
//! operations) is handed to an [`Outbox`] as an [`Envelope`]. One task
//! drains it and writes each envelope as one line: to stdout through
//! maelstrom-node in the real binary ([`crate::server`]), or into a test's
//! in-memory router. Having a single writer keeps every line whole and
//! keeps the protocol logic free of I/O, so it can be tested in-process.
//!
//! The channel is bounded: if the writer falls behind (stdout is a pipe
//! that Maelstrom drains), senders wait rather than let memory grow.

use tokio::sync::mpsc;

use crate::protocol::Envelope;

/// How many envelopes may wait for the writer before senders wait too.
pub const OUTBOX_CAPACITY: usize = 4096;

/// The writer has stopped (stdout is closed, or the test ended): nothing
/// more can be sent. The message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outbox is closed")]
pub struct OutboxClosed;

/// The sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Envelope>,
}

impl Outbox {
    /// An outbox and the receiver its writer drains.
    pub fn channel() -> (Outbox, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        (Outbox { tx }, rx)
    }

    /// Queues one message for sending.
    pub async fn send(&self, envelope: Envelope) -> Result<(), OutboxClosed> {
        self.tx.send(envelope).await.map_err(|_| OutboxClosed)
    }
}
