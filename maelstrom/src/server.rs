//! The node on stdin and stdout, through maelstrom-node.
//!
//! [`run`] wires the parts together:
//!
//! ```text
//!  stdin ─▶ input gate ─▶ pipe ─▶ maelstrom-node Runtime::run_with
//!                                   │ parses each line, answers init_ok,
//!                                   │ spawns one task per message
//!                                   ▼
//!                              Handler::process ─▶ LinKvNode::init / handle
//!                                                        │
//!  stdout ◀─ Runtime::send_raw ◀─ writer task ◀─ Outbox ◀┘
//! ```
//!
//! # Working around maelstrom-node 0.1.6
//!
//! The crate handles the protocol's framing and `init`/`init_ok`, but has
//! defects that a node under Maelstrom must not inherit:
//!
//! * **An unparsable line, a non-UTF-8 line or a second `init` ends (or
//!   stalls) `run()`.** The [input gate](crate::input) passes on only lines
//!   that maelstrom-node accepts, parsed with maelstrom-node's own types.
//! * **A handler error that is not maelstrom-node's own `Error` ends
//!   `run()`.** `Handler::process` always returns `Ok(())`; the node
//!   answers errors itself, as protocol messages.
//! * **Its RPC table keeps the entry of an unanswered request forever.**
//!   We never use `Runtime::rpc`/`call`: requests between our nodes carry
//!   our own `rpc_id` and wait in our own table ([`crate::rpc`]), which
//!   removes every entry on answer, timeout or cancellation. For the same
//!   reason our messages never set `in_reply_to`: maelstrom-node would
//!   route such a message to its own table and never show it to us.
//! * **Every line is handled in its own task, so messages are not handled
//!   in arrival order.** Nothing here depends on order: Raft tolerates
//!   reordered RPCs (a stale AppendEntries is rejected or is a no-op, and
//!   never truncates a matching log, §5.3), each Maelstrom client has one
//!   operation outstanding, and a message that arrives while `init` is
//!   still running is answered as "not initialized" (11, or refused).
//! * **`Runtime::init` installs env_logger**, which panics if another
//!   `log` logger was installed first. We do not call it: [`run`] runs on
//!   the caller's tokio runtime, and the binary installs a `tracing`
//!   subscriber on stderr without the `log` bridge. maelstrom-node's own
//!   `log` records (a line per message received and sent) are therefore
//!   discarded; the node's `tracing` events say what matters.
//!
//! Replies are built by this crate ([`crate::protocol::Reply`],
//! [`crate::protocol::Envelope`]) and written with `Runtime::send_raw`, not
//! `Runtime::reply`: we decide every key of every body, and a node that is
//! not yet initialized (maelstrom-node then has no node id) still answers
//! from the right name.

use std::sync::Arc;

use mnode::protocol::{InitMessageBody, Message};
use serde_json::Value;
use tokio::io::BufReader;

use crate::config::NodeOptions;
use crate::input::run_gate;
use crate::node::LinKvNode;
use crate::outbox::Outbox;

/// Why the node stopped other than at the end of its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// maelstrom-node's `run()` failed (it can only fail writing to stdout
    /// once the gate is in front of it).
    #[error("maelstrom-node runtime: {0}")]
    Runtime(String),
    /// Reading stdin failed.
    #[error("reading stdin: {0}")]
    Stdin(#[from] std::io::Error),
}

/// The bridge from maelstrom-node's callback to [`LinKvNode`].
pub struct Handler {
    node: Arc<LinKvNode>,
}

impl Handler {
    /// A handler for `node`.
    pub fn new(node: Arc<LinKvNode>) -> Self {
        Handler { node }
    }
}

#[async_trait::async_trait]
impl mnode::Node for Handler {
    /// Never returns an error (see the module docs). For `init`,
    /// maelstrom-node sends `init_ok` after this returns.
    async fn process(&self, _runtime: mnode::Runtime, msg: Message) -> mnode::Result<()> {
        if msg.get_type() == "init" {
            // The gate has checked that this parses.
            let init: InitMessageBody =
                serde_json::from_value(Value::Object(msg.body.extra.clone())).unwrap_or_default();
            if let Err(e) = self.node.init(&init.node_id, &init.nodes).await {
                tracing::error!(error = %e, node = %init.node_id, "init failed; this node will answer 11");
            }
        } else {
            self.node.handle(msg).await;
        }
        Ok(())
    }
}

/// Runs a lin-kv node on stdin and stdout until stdin ends. Call it from
/// within a tokio runtime, with a `tracing` subscriber that writes to
/// stderr (stdout carries only protocol messages).
pub async fn run(options: NodeOptions) -> Result<(), ServeError> {
    let (outbox, mut outgoing) = Outbox::channel();
    let node = Arc::new(LinKvNode::new(options, outbox));
    let runtime = mnode::Runtime::new();
    let writer_runtime = runtime.clone();
    let runtime = runtime.with_handler(Arc::new(Handler::new(node.clone())));

    // The only writer of stdout besides maelstrom-node's init_ok.
    let writer = tokio::spawn(async move {
        while let Some(envelope) = outgoing.recv().await {
            if let Err(e) = writer_runtime.send_raw(&envelope.to_line()).await {
                tracing::error!(error = %e, "cannot write to stdout; no more messages will be sent");
                break;
            }
        }
    });

    let (gate_out, gate_in) = tokio::io::duplex(1 << 20);
    let gate = tokio::spawn(run_gate(BufReader::new(tokio::io::stdin()), gate_out));

    tracing::info!("waiting for init");
    let result = runtime.run_with(BufReader::new(gate_in)).await;
    tracing::info!("input ended; stopping");
    node.shutdown().await;
    writer.abort();
    // The gate has finished if the input ended; if maelstrom-node stopped
    // first (stdout failed), stop reading.
    gate.abort();
    match gate.await {
        Ok(Ok(stats)) => {
            tracing::info!(passed = stats.passed, rejected = stats.rejected, "input gate totals")
        }
        Ok(Err(e)) => return Err(ServeError::Stdin(e)),
        Err(_) => {}
    }
    result.map_err(|e| ServeError::Runtime(e.to_string()))
}
