//! Requests to other nodes that await an answer: our own request ids, and a
//! table of pending requests that cannot leak.
//!
//! A Maelstrom network may drop any message (during a partition, every
//! message between the two sides is lost), so a request may never be
//! answered. Each request therefore has a deadline, and its entry in the
//! table lives exactly as long as the [`PendingCall`] that waits for it:
//!
//! ```text
//!   start() ── entry inserted ──▶ send request ──▶ wait(timeout)
//!                                                    │
//!         answer arrives: complete() removes it ◀────┤
//!         deadline passes: PendingCall dropped ◀─────┤
//!         caller gives up (openraft drops the RPC    │
//!         future at its own deadline): dropped ◀─────┘
//! ```
//!
//! Removal on drop is what makes the table leak-proof: however the waiting
//! future ends (answer, timeout, or being cancelled by its caller), the
//! entry goes with it. An answer that arrives later finds no entry and is
//! discarded. This is the fix for maelstrom-node 0.1.6's own RPC table,
//! which keeps the entry of an unanswered request forever.
//!
//! Ids come from one counter per node, so they are unique among the
//! requests a node sends. An answer completes a request only if it comes
//! from the node the request was sent to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::protocol::PeerMessage;

/// Why a [`PendingCall`] ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No answer within the timeout. The request may or may not have been
    /// received and acted upon.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

struct Entry {
    peer: String,
    reply: oneshot::Sender<PeerMessage>,
}

/// The table of requests this node is waiting on. Shared by the Raft
/// transport and client forwarding.
pub struct Calls {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Entry>>,
}

impl Calls {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Calls { next_id: AtomicU64::new(1), pending: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // No code panics while holding the lock, so a poisoned lock still
        // holds a consistent map.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request to `peer` under a fresh id. Send the request
    /// with [`PendingCall::id`], then [`PendingCall::wait`] for the answer.
    pub fn start(self: &Arc<Self>, peer: &str) -> PendingCall {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.lock().insert(id, Entry { peer: peer.to_string(), reply });
        PendingCall { id, rx, calls: self.clone() }
    }

    /// Delivers the answer `reply` to request `id`, if `from` is the node
    /// it was sent to and someone still waits. Returns whether it did.
    pub fn complete(&self, from: &str, id: u64, reply: PeerMessage) -> bool {
        let entry = {
            let mut pending = self.lock();
            match pending.get(&id) {
                Some(e) if e.peer == from => pending.remove(&id),
                _ => None,
            }
        };
        match entry {
            Some(e) => e.reply.send(reply).is_ok(),
            None => false,
        }
    }

    /// How many requests are waiting for an answer.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request awaiting its answer. Dropping it removes its entry from the
/// table (see the [module docs](self)).
pub struct PendingCall {
    id: u64,
    rx: oneshot::Receiver<PeerMessage>,
    calls: Arc<Calls>,
}

impl PendingCall {
    /// The request id to put in the request.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits up to `timeout` for the answer.
    pub async fn wait(mut self, timeout: Duration) -> Result<PeerMessage, CallError> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // The sender is only dropped by removing the entry, which only
            // `complete` (having sent) and our own drop do: treat as timeout.
            Ok(Err(_)) | Err(_) => Err(CallError::Timeout(timeout)),
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u64) -> PeerMessage {
        PeerMessage::RaftRpcRefused { rpc_id: id, reason: "test".into() }
    }

    #[tokio::test]
    async fn answer_completes_the_call_and_removes_the_entry() {
        let calls = Calls::new();
        let call = calls.start("n1");
        let id = call.id();
        assert_eq!(calls.len(), 1);
        assert!(calls.complete("n1", id, reply(id)));
        assert_eq!(call.wait(Duration::from_secs(5)).await, Ok(reply(id)));
        assert!(calls.is_empty());
        assert!(!calls.complete("n1", id, reply(id)), "a second answer finds nobody");
    }

    #[tokio::test]
    async fn answer_from_another_node_is_ignored() {
        let calls = Calls::new();
        let call = calls.start("n1");
        assert!(!calls.complete("n2", call.id(), reply(call.id())));
        assert_eq!(calls.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_removes_the_entry() {
        let calls = Calls::new();
        let call = calls.start("n1");
        let id = call.id();
        assert_eq!(
            call.wait(Duration::from_millis(100)).await,
            Err(CallError::Timeout(Duration::from_millis(100)))
        );
        assert!(calls.is_empty());
        assert!(!calls.complete("n1", id, reply(id)), "a late answer is discarded");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_wait_removes_the_entry() {
        // openraft drops an RPC's future when its own deadline passes; the
        // entry must not outlive it.
        let calls = Calls::new();
        let call = calls.start("n1");
        let waiting = tokio::spawn(call.wait(Duration::from_secs(3600)));
        tokio::task::yield_now().await;
        assert_eq!(calls.len(), 1);
        waiting.abort();
        let _ = waiting.await;
        assert!(calls.is_empty());
    }

    #[test]
    fn ids_are_unique() {
        let calls = Calls::new();
        let a = calls.start("n1");
        let b = calls.start("n1");
        assert_ne!(a.id(), b.id());
    }
}
