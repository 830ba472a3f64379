//! Exactly-once write sessions: the pool of `(client_id, seq)` pairs, and the
//! lease that holds one for the whole life of one write, from its first
//! attempt to its last, so that the writes of one session never overlap.
//! Why that matters is in "Exactly-once writes" in `mod.rs`.

use super::{lock, Client, Inner};

/// One exactly-once session: a client id and the next seq to use.
#[derive(Debug)]
pub(super) struct WriteSession {
    pub(super) client_id: u64,
    pub(super) next_seq: u64,
}

/// A session taken from the pool for one write; returned on drop, even when
/// the caller abandons the write half-way (the write is then indeterminate
/// and the session moves on to the next seq).
pub(super) struct SessionLease<'a> {
    client: &'a Inner,
    session: Option<WriteSession>,
    pub(super) client_id: u64,
    pub(super) seq: u64,
}

impl Drop for SessionLease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            lock(&self.client.sessions).push(session);
        }
    }
}

impl Client {
    /// Takes a session from the pool (or starts a new one) for one write.
    pub(super) fn lease(&self) -> SessionLease<'_> {
        let mut session = lock(&self.inner.sessions)
            .pop()
            .unwrap_or_else(|| WriteSession { client_id: rand::random::<u64>(), next_seq: 1 });
        let seq = session.next_seq;
        session.next_seq += 1;
        SessionLease { client: &self.inner, client_id: session.client_id, seq, session: Some(session) }
    }
}
