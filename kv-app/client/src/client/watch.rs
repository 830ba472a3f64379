//! A resumable watch: `GET /v1/watch` as a stream of events that survives
//! broken connections, stopping nodes and slow-watcher cut-offs, by
//! watching again (from another endpoint when one fails) from exactly
//! where it was.
//!
//! # Where the stream is
//!
//! The watch keeps its *position*: the index of the last event it
//! delivered, how many events of that index it delivered, and whether that
//! index is known to be complete. The changes of one log index can be
//! several (commands proposed together share an entry), and a connection
//! can break after some of them arrived and before the rest did. So:
//!
//! * once the index is known complete (a later event, a progress line or
//!   the server's `resume_index` passed it), the next connection asks for
//!   the index after it;
//! * otherwise it asks for that index again and drops as many of its
//!   events as were already delivered. Every node produces the changes of
//!   an index from the same log entry, by the same deterministic `apply`,
//!   in the same order, so the ones dropped are exactly the ones seen.
//!
//! That is how every change is delivered once, in log order, whichever
//! node serves each stretch of the stream.
//!
//! # Errors
//!
//! A node that refuses the `from_index` with `410 compacted` may be alone
//! in having dropped that history (nodes restart and compact at different
//! times), so the other endpoints are asked first; when every endpoint
//! refuses it, [`Watch::next`] returns [`ClientError::Compacted`]. What to
//! do then is in `docs/watch.md`. Refusals that every node would repeat
//! (400, 401, 403, TLS) are returned at once; everything else is retried
//! until [`ClientOptions::deadline`](super::ClientOptions::deadline) passes
//! without a connection, then [`ClientError::Unavailable`].

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use super::retry::{refusal, transport_error, Reply};
use super::{Client, ClientError};
use crate::api::{codes, WatchEnd, WatchEvent, WatchLine};

/// How a watch starts and behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// The first index to deliver changes from; `None`: from the serving
    /// node's next index (changes from now on).
    pub from_index: Option<u64>,
    /// Deliver each change's value before it ([`WatchEvent::prev_value`]).
    pub prev: bool,
    /// A connection on which no line arrives for this long is taken for
    /// dead and replaced. Servers send a progress line after
    /// `--watch-progress-ms` (5 s by default) without one, so the default,
    /// 30 s, is several of those.
    pub idle_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { from_index: None, prev: false, idle_timeout: Duration::from_secs(30) }
    }
}

/// Where the stream is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// The last index whose events were (or began to be) delivered; or,
    /// when `complete`, the last index passed.
    index: u64,
    /// How many events of `index` were delivered.
    delivered: usize,
    /// Whether every event of `index` has been delivered.
    complete: bool,
}

impl Position {
    /// The `from_index` that continues the stream, and how many of its
    /// events the server will send again.
    fn resume(&self) -> (u64, usize) {
        if self.complete {
            (self.index + 1, 0)
        } else {
            (self.index, self.delivered)
        }
    }

    /// Everything up to `index` has been delivered.
    fn passed(&mut self, index: u64) {
        if index > self.index || (index == self.index && !self.complete) {
            *self = Position { index, delivered: 0, complete: true };
        }
    }
}

/// One open `GET /v1/watch` response.
struct Connection {
    endpoint: String,
    response: reqwest::Response,
    /// Bytes received after the last newline.
    partial: Vec<u8>,
    /// Events of the resumed index still to drop as already delivered.
    duplicates: usize,
}

/// A change stream that resumes itself. Made by [`Client::watch`]; read
/// with [`Watch::next`].
pub struct Watch {
    client: Client,
    prefix: String,
    options: WatchOptions,
    position: Position,
    connection: Option<Connection>,
    /// The endpoint to try first on the next connection.
    next_endpoint: usize,
    /// Events received and not yet returned.
    ready: VecDeque<WatchEvent>,
    reconnects: u64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("position", &self.position)
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

/// Why a connection ended, and what to do next.
enum Ended {
    /// Try the next endpoint.
    Reconnect(String),
    /// The serving node no longer has the history; try the others.
    Compacted { oldest: u64, message: String },
}

impl Client {
    /// Watches the keys starting with `prefix` (all keys: `""`). Returns
    /// once a node has accepted the watch, so that a bad request or a
    /// `from_index` no node still holds is reported here.
    pub async fn watch(&self, prefix: &str, options: WatchOptions) -> Result<Watch, ClientError> {
        let position = match options.from_index {
            Some(0) => {
                return Err(ClientError::InvalidArgument { reason: "from_index starts at 1".into() });
            }
            Some(from) => Position { index: from - 1, delivered: 0, complete: true },
            // Set by the first line, a progress line: see `connect`.
            None => Position { index: 0, delivered: 0, complete: false },
        };
        let mut watch = Watch {
            client: self.clone(),
            prefix: prefix.to_owned(),
            position,
            options,
            connection: None,
            next_endpoint: 0,
            ready: VecDeque::new(),
            reconnects: 0,
        };
        watch.connect().await?;
        Ok(watch)
    }
}

impl Watch {
    /// The next change, waiting for one as long as it takes; reconnecting,
    /// without losing or repeating a change, when the connection breaks.
    /// After an error the watch may be called again: it tries again from
    /// the same position.
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if self.connection.is_none() {
                self.connect().await?;
                self.reconnects += 1;
            }
            if let Err(ended) = self.receive().await {
                self.connection = None;
                self.next_endpoint += 1;
                match ended {
                    Ended::Reconnect(reason) => tracing::debug!(%reason, "watch connection ended; resuming"),
                    Ended::Compacted { oldest, message } => {
                        tracing::debug!(oldest, %message, "a node dropped the watch's history; trying others");
                    }
                }
            }
        }
    }

    /// The `from_index` the next connection would ask for: the index after
    /// the last change delivered (or the last progress line) once that
    /// index is known complete, that is once a later change or a progress
    /// line passed it; until then that index itself, whose changes already
    /// delivered the watch drops when they come again.
    pub fn resume_index(&self) -> u64 {
        self.position.resume().0
    }

    /// The endpoint the watch is connected to, if it is.
    pub fn endpoint(&self) -> Option<&str> {
        self.connection.as_ref().map(|c| c.endpoint.as_str())
    }

    /// How many times the watch connected again after its first connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Opens a connection at the current position, trying the endpoints in
    /// turn from `next_endpoint`, until one accepts, one refuses in a way
    /// every node would, every one says `410 compacted`, or the deadline
    /// passes.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let options = self.client.options().clone();
        let endpoints = self.client.endpoints().to_vec();
        let deadline = Instant::now() + options.deadline;
        let mut backoff = options.initial_backoff;
        let mut last_failure = String::from("no attempt was made before the deadline");
        loop {
            // One round: every endpoint once.
            let mut compacted: Option<(u64, String)> = None;
            let mut all_compacted = true;
            for _ in 0..endpoints.len() {
                let endpoint = endpoints[self.next_endpoint % endpoints.len()].clone();
                match self.open(&endpoint, options.request_timeout).await {
                    Ok(()) => return Ok(()),
                    Err(Refused::Everywhere(e)) => return Err(e),
                    Err(Refused::Compacted { oldest, message }) => {
                        let smallest = compacted.as_ref().map_or(oldest, |(o, _)| oldest.min(*o));
                        compacted = Some((smallest, message));
                    }
                    Err(Refused::Here(reason)) => {
                        all_compacted = false;
                        last_failure = reason;
                    }
                }
                self.next_endpoint += 1;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Some((oldest_index, message)) = compacted {
                if all_compacted || remaining.is_zero() {
                    return Err(ClientError::Compacted { oldest_index, message });
                }
            }
            if remaining.is_zero() {
                return Err(ClientError::Unavailable { reason: last_failure });
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }

    /// One attempt to open the watch at `endpoint`. Without a position
    /// yet (a watch from now), waits for the first line, a progress line,
    /// which gives one.
    async fn open(&mut self, endpoint: &str, timeout: Duration) -> Result<(), Refused> {
        let (from_index, duplicates) = self.position.resume();
        let mut query = vec![("prefix", self.prefix.clone())];
        let started = self.position.complete || self.position.delivered > 0;
        if started {
            query.push(("from_index", from_index.to_string()));
        }
        if self.options.prev {
            query.push(("prev", "true".to_owned()));
        }
        let request = self.client.inner.http.get(format!("{endpoint}/v1/watch")).query(&query);
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                return Err(match transport_error(endpoint, &e) {
                    e @ ClientError::Tls { .. } => Refused::Everywhere(e),
                    e => Refused::Here(e.to_string()),
                })
            }
            Err(_) => return Err(Refused::Here(format!("{endpoint}: no answer within {timeout:?}"))),
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            if status == StatusCode::GONE {
                if let Ok(end) = serde_json::from_slice::<WatchEnd>(&body) {
                    if let Some(oldest) = end.oldest_index {
                        return Err(Refused::Compacted { oldest, message: end.message });
                    }
                }
            }
            return Err(match refusal(Reply { status, body, endpoint: endpoint.to_owned() }) {
                // Every node would say the same.
                e @ ClientError::Server { status: 400 | 401 | 403, .. } => Refused::Everywhere(e),
                e => Refused::Here(e.to_string()),
            });
        }
        self.connection =
            Some(Connection { endpoint: endpoint.to_owned(), response, partial: Vec::new(), duplicates });
        if !started {
            // The position is where the node starts: its first line.
            while !self.position.complete {
                if let Err(ended) = self.receive().await {
                    self.connection = None;
                    return Err(match ended {
                        Ended::Reconnect(reason) => Refused::Here(reason),
                        Ended::Compacted { oldest, message } => Refused::Compacted { oldest, message },
                    });
                }
            }
        }
        Ok(())
    }

    /// Receives what arrives next on the connection (waiting up to the idle
    /// timeout), and takes in every complete line of it.
    async fn receive(&mut self) -> Result<(), Ended> {
        let idle = self.options.idle_timeout;
        let Some(connection) = self.connection.as_mut() else {
            return Err(Ended::Reconnect("not connected".into()));
        };
        let endpoint = connection.endpoint.clone();
        let piece = match tokio::time::timeout(idle, connection.response.chunk()).await {
            Ok(Ok(Some(piece))) => piece,
            Ok(Ok(None)) => return Err(Ended::Reconnect(format!("{endpoint} ended the watch"))),
            Ok(Err(e)) => return Err(Ended::Reconnect(transport_error(&endpoint, &e).to_string())),
            Err(_) => return Err(Ended::Reconnect(format!("{endpoint}: nothing for {idle:?}"))),
        };
        connection.partial.extend_from_slice(&piece);
        let Some(last_newline) = connection.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = connection.partial.split_off(last_newline + 1);
        let lines = std::mem::replace(&mut connection.partial, rest);
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line = WatchLine::parse(line)
                .map_err(|e| Ended::Reconnect(format!("{endpoint} sent a line that does not parse: {e}")))?;
            self.take(line, &endpoint)?;
        }
        Ok(())
    }

    /// Takes in one line: queues a new event, drops one already delivered,
    /// moves the position on.
    fn take(&mut self, line: WatchLine, endpoint: &str) -> Result<(), Ended> {
        match line {
            WatchLine::Event(event) => {
                let p = &mut self.position;
                let connection = self.connection.as_mut();
                if let Some(c) = connection.filter(|c| c.duplicates > 0 && event.index == p.index) {
                    c.duplicates -= 1;
                    return Ok(());
                }
                if event.index > p.index {
                    *p = Position { index: event.index, delivered: 1, complete: false };
                } else if event.index == p.index && !p.complete {
                    p.delivered += 1;
                } else {
                    return Err(Ended::Reconnect(format!(
                        "{endpoint} sent a change at index {} after the stream had passed index {}",
                        event.index, p.index
                    )));
                }
                self.ready.push_back(event);
            }
            WatchLine::Progress(progress) => {
                let index = progress.progress_index;
                if self.position.complete || self.position.delivered > 0 {
                    self.position.passed(index);
                } else {
                    // A watch from now: the first line says where "now" is.
                    self.position = Position { index, delivered: 0, complete: true };
                }
            }
            WatchLine::End(end) => {
                if let Some(resume) = end.resume_index.filter(|r| *r > 0) {
                    self.position.passed(resume - 1);
                }
                return Err(match (end.error.as_str(), end.oldest_index) {
                    (codes::COMPACTED, Some(oldest)) => Ended::Compacted { oldest, message: end.message },
                    _ => Ended::Reconnect(format!(
                        "{endpoint} ended the watch: {}: {}",
                        end.error, end.message
                    )),
                });
            }
        }
        Ok(())
    }
}

/// Why a connection could not be opened.
enum Refused {
    /// This node could not serve it; another may.
    Here(String),
    /// This node no longer holds the history from the position.
    Compacted { oldest: u64, message: String },
    /// Every node would refuse it the same way (a bad request, a token
    /// refused, TLS).
    Everywhere(ClientError),
}
