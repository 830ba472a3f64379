//! `GET /v1/watch?prefix=P&from_index=N&prev=true`: the change stream, as
//! newline-delimited JSON over one HTTP response.
//!
//! Every node serves watches from its own [`ChangeLog`] (what it has
//! applied), so a follower serves them as well as the leader, and the
//! leader need not be asked. A watcher is a cursor into that history, not
//! a queue of its own: it reads whole log indexes from its cursor on
//! ([`ChangeLog::read`]), writes the changes under its prefix as lines, and
//! when it has caught up waits for the next publication. Hyper asks for
//! the next piece only when the connection can take it, so a watcher that
//! does not read costs its connection's buffers and nothing more.
//!
//! The stream's lines, all documented in `docs/api.md`:
//!
//! * a change ([`kv_client::api::WatchEvent`]), every one at or after
//!   `from_index` whose key starts with `prefix`, in log order, each once;
//!   the changes of one index always together, in one piece;
//! * `{"progress_index":N}`: at the start, and whenever nothing was sent
//!   for [`WatchConfig::progress_every`];
//! * an end line ([`kv_client::api::WatchEnd`]) naming the `resume_index`
//!   that continues the stream exactly, when the server ends it: the
//!   watcher fell more than [`WatchConfig::buffer_changes`] changes behind
//!   (`slow_watcher`), its place left the history (`compacted`: dropped by
//!   retention, or a snapshot install replaced this node's state), or the
//!   node stops (`shutting_down`).
//!
//! Reading a watch needs the `read` role, as reads do (`auth.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kv_client::api::{codes, WatchEnd, WatchEvent, WatchOp, WatchProgress};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::ApiError;
use super::metrics::Metrics;
use super::Ctx;
use crate::changes::{Change, ChangeKind, ChangeLog, Read, Retention};
use crate::command::MAX_KEY_BYTES;

/// The change stream's settings (`kv-server --watch-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// How much history the node keeps for watchers to start from.
    pub retention: Retention,
    /// A watcher with more changes than this waiting for it (published
    /// since it started and not yet sent) is cut off with `slow_watcher`.
    pub buffer_changes: usize,
    /// Send a progress line after this long without any line.
    pub progress_every: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            retention: Retention::default(),
            buffer_changes: 10_000,
            progress_every: Duration::from_secs(5),
        }
    }
}

/// At most about this many changes are read at a time, and a piece of the
/// response holds no more indexes once it has this many bytes: a watcher
/// catching up sends large pieces, other watchers get their turn between
/// them, and what the connection holds back for a reader that does not
/// read stays small (hyper buffers a few pieces, then stops asking).
const READ_CHANGES: usize = 256;
const PIECE_BYTES: usize = 64 << 10;

/// Query parameters of a watch, taken as text so that a bad one gets a
/// message naming it.
#[derive(Debug, Deserialize)]
pub struct WatchParams {
    prefix: Option<String>,
    from_index: Option<String>,
    prev: Option<String>,
}

/// A watch request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchRequest {
    prefix: String,
    from_index: Option<u64>,
    prev: bool,
}

fn parse(params: Result<Query<WatchParams>, QueryRejection>) -> Result<WatchRequest, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let prefix = params.prefix.unwrap_or_default();
    if prefix.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the prefix is {} bytes, longer than any key can be ({MAX_KEY_BYTES})",
            prefix.len()
        )));
    }
    let from_index = match params.from_index.as_deref() {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "from_index {s:?} is not a log index (a whole number from 1)"
                )))
            }
        },
    };
    let prev = match params.prev.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("prev {other:?} is not true or false"))),
    };
    Ok(WatchRequest { prefix, from_index, prev })
}

/// `GET /v1/watch`.
pub async fn watch(State(ctx): State<Ctx>, params: Result<Query<WatchParams>, QueryRejection>) -> Response {
    let request = match parse(params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let log = ctx.changes.clone();
    let (oldest, next) = log.bounds();
    let from = request.from_index.unwrap_or(next);
    // Fault injection (`--unsafe-watch-from-latest`): a watch asked to
    // start in the past starts at this node's latest index instead, so a
    // watcher that reconnects silently misses what happened meanwhile.
    let from = if ctx.config.faults.unsafe_watch_from_latest { from.max(next) } else { from };
    if from < oldest {
        return compacted(ctx.id, from, oldest);
    }
    tracing::debug!(node_id = ctx.id, prefix = %request.prefix, from, "watch started");
    ctx.metrics.watches.inc();
    let watcher = Watcher {
        woken: log.subscribe(),
        log,
        prefix: request.prefix,
        prev: request.prev,
        cursor: from,
        live_from: next,
        shutdown: ctx.shutdown.clone(),
        config: ctx.config.watch,
        node_id: ctx.id,
        metrics: Some(ctx.metrics.clone()),
        last_line: Instant::now(),
        started: false,
        ended: false,
    };
    let body = futures::stream::unfold(watcher, |mut w| async move {
        w.next_piece().await.map(|piece| (Ok::<_, std::convert::Infallible>(piece), w))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// 410: `from` is older than this node's history.
fn compacted(node_id: u64, from: u64, oldest: u64) -> Response {
    let body = WatchEnd {
        error: codes::COMPACTED.into(),
        message: format!(
            "node {node_id} keeps changes from index {oldest} on, and from_index {from} is older; \
             read the keys (the answer's index is I) and watch from I + 1, or ask another node"
        ),
        retryable: false,
        oldest_index: Some(oldest),
        resume_index: None,
    };
    (StatusCode::GONE, axum::Json(body)).into_response()
}

/// One open watch: a cursor into the node's change log.
struct Watcher {
    log: Arc<ChangeLog>,
    /// Wakes up when the change log publishes.
    woken: watch::Receiver<u64>,
    prefix: String,
    prev: bool,
    /// The next index to read: every change before it that matches has
    /// been sent (or was before `from_index`).
    cursor: u64,
    /// Changes published before this index had been published when the
    /// watch started: catching up on them is not falling behind.
    live_from: u64,
    shutdown: watch::Receiver<bool>,
    config: WatchConfig,
    node_id: u64,
    /// Counts open watches and their ends; `None` in unit tests.
    metrics: Option<Arc<Metrics>>,
    /// When the last line was sent, for progress lines.
    last_line: Instant,
    /// Whether the first progress line was sent.
    started: bool,
    /// Whether the end line was sent: the stream is over.
    ended: bool,
}

impl Watcher {
    /// The next piece of the response: some lines, or `None` at the end.
    async fn next_piece(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(self.progress());
        }
        loop {
            if *self.shutdown.borrow() {
                return Some(self.end(
                    codes::SHUTTING_DOWN,
                    format!("node {} is stopping", self.node_id),
                    None,
                ));
            }
            // Marked seen before reading: a publication after this wakes
            // the wait below.
            self.woken.borrow_and_update();
            let (indexes, next, backlog) = match self.log.read(self.cursor, READ_CHANGES, self.live_from) {
                Read::Changes { indexes, next, backlog } => (indexes, next, backlog),
                Read::Compacted { oldest } => {
                    let message = format!(
                        "node {} no longer holds the changes from index {} (its history starts at {oldest}: \
                         dropped by retention, or replaced by a snapshot); watch from {} on another node, \
                         or read the keys and watch from the read's index + 1",
                        self.node_id, self.cursor, self.cursor
                    );
                    return Some(self.end(codes::COMPACTED, message, Some(oldest)));
                }
            };
            if backlog > self.config.buffer_changes {
                let message = format!(
                    "{backlog} changes are waiting for this watcher, more than the {} allowed: it reads \
                     too slowly; watch again from resume_index",
                    self.config.buffer_changes
                );
                tracing::info!(
                    node_id = self.node_id,
                    index = self.cursor,
                    backlog,
                    "cut off a slow watcher"
                );
                return Some(self.end(codes::SLOW_WATCHER, message, None));
            }
            let mut piece = Vec::new();
            let mut cursor = next;
            for changes in &indexes {
                if piece.len() >= PIECE_BYTES {
                    cursor = changes.index;
                    break;
                }
                for change in changes.changes.iter().filter(|c| c.key.starts_with(&self.prefix)) {
                    write_line(&mut piece, &event(change, self.prev));
                }
            }
            self.cursor = cursor;
            if !piece.is_empty() {
                self.last_line = Instant::now();
                return Some(piece.into());
            }
            if !indexes.is_empty() {
                // Read past changes under other prefixes; read on.
                continue;
            }
            let progress_at = self.last_line + self.config.progress_every;
            let woke = tokio::select! {
                changed = self.woken.changed() => if changed.is_ok() { Woke::Published } else { Woke::Stopping },
                _ = tokio::time::sleep_until(progress_at) => Woke::Progress,
                _ = self.shutdown.wait_for(|stop| *stop) => Woke::Stopping,
            };
            match woke {
                Woke::Published => {}
                Woke::Progress => return Some(self.progress()),
                // The change log is gone, or the server stops.
                Woke::Stopping => {
                    return Some(self.end(
                        codes::SHUTTING_DOWN,
                        format!("node {} is stopping", self.node_id),
                        None,
                    ))
                }
            }
        }
    }

    /// A progress line: every change before the cursor has been sent (but
    /// no further than this node has applied).
    fn progress(&mut self) -> Bytes {
        self.last_line = Instant::now();
        let progress_index = self.cursor.min(self.log.next_index()).saturating_sub(1);
        let mut line = Vec::new();
        write_line(&mut line, &WatchProgress { progress_index });
        line.into()
    }

    /// The last line: why the stream ends, and where to resume.
    fn end(&mut self, code: &str, message: String, oldest_index: Option<u64>) -> Bytes {
        self.ended = true;
        if let Some(metrics) = &self.metrics {
            metrics.watch_ended(code);
        }
        let end = WatchEnd {
            error: code.into(),
            message,
            retryable: true,
            oldest_index,
            resume_index: Some(self.cursor),
        };
        let mut line = Vec::new();
        write_line(&mut line, &end);
        line.into()
    }
}

impl Drop for Watcher {
    /// The watch is over: ended by the server, or its connection closed.
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.watches.dec();
        }
    }
}

/// Why a caught-up watcher stopped waiting.
enum Woke {
    Published,
    Progress,
    Stopping,
}

/// The wire form of `change`.
fn event(change: &Change, prev: bool) -> WatchEvent {
    WatchEvent {
        index: change.index,
        op: match change.kind {
            ChangeKind::Put => WatchOp::Put,
            ChangeKind::Delete => WatchOp::Delete,
            ChangeKind::Expire => WatchOp::Expire,
        },
        key: change.key.clone(),
        value: change.value.clone(),
        prev_value: prev.then(|| change.prev.clone()),
    }
}

/// Appends `value` as one JSON line.
fn write_line(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    // Serializing these types to memory cannot fail: they are plain
    // structs of strings and numbers.
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use raft_core::StateEvent;

    use super::*;
    use crate::changes::ChangeLog;

    /// A watcher of `prefix` from `from` on `log`, and the sender that
    /// stops it.
    fn watcher(log: &Arc<ChangeLog>, prefix: &str, from: u64) -> (Watcher, watch::Sender<bool>) {
        let (stop, shutdown) = watch::channel(false);
        let w = Watcher {
            log: log.clone(),
            woken: log.subscribe(),
            prefix: prefix.into(),
            prev: false,
            cursor: from,
            live_from: log.next_index(),
            shutdown,
            config: WatchConfig {
                buffer_changes: 2,
                progress_every: Duration::from_millis(10),
                ..WatchConfig::default()
            },
            node_id: 1,
            metrics: None,
            last_line: Instant::now(),
            started: false,
            ended: false,
        };
        (w, stop)
    }

    /// Applies one batch that puts `keys` at `index`.
    fn apply(log: &ChangeLog, index: u64, keys: &[&str]) {
        for key in keys {
            let change = Change {
                index,
                kind: ChangeKind::Put,
                key: (*key).into(),
                value: Some(b"v".to_vec()),
                prev: None,
                lease: None,
            };
            log.stage(change);
        }
        log.on_state_event(StateEvent::Applied { applied: index });
    }

    async fn lines(w: &mut Watcher) -> Vec<serde_json::Value> {
        let piece = w.next_piece().await.expect("a piece");
        std::str::from_utf8(&piece).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_watch_starts_with_progress_sends_whole_indexes_under_its_prefix_and_reports_progress_when_idle(
    ) {
        let log = Arc::new(ChangeLog::new(Retention::default()));
        log.on_state_event(StateEvent::Loaded { applied: 0 });
        apply(&log, 1, &["a/1", "b/1", "a/2"]);
        let (mut w, _stop) = watcher(&log, "a/", 1);
        assert_eq!(lines(&mut w).await, vec![serde_json::json!({"progress_index": 0})]);
        let keys: Vec<_> =
            lines(&mut w).await.iter().map(|l| (l["index"].clone(), l["key"].clone())).collect();
        assert_eq!(keys, vec![(1.into(), "a/1".into()), (1.into(), "a/2".into())]);
        // Nothing more: after the idle time, a progress line.
        assert_eq!(lines(&mut w).await, vec![serde_json::json!({"progress_index": 1})]);
        // Changes under other prefixes only move the progress on.
        apply(&log, 2, &["b/2"]);
        apply(&log, 3, &["a/3"]);
        assert_eq!(lines(&mut w).await[0]["index"], 3);
    }

    #[tokio::test]
    async fn a_snapshot_install_that_skips_the_watchers_place_ends_the_watch_with_compacted() {
        let log = Arc::new(ChangeLog::new(Retention::default()));
        log.on_state_event(StateEvent::Loaded { applied: 0 });
        apply(&log, 1, &["k"]);
        let (mut w, _stop) = watcher(&log, "", 1);
        lines(&mut w).await; // progress
        lines(&mut w).await; // index 1
                             // This node falls behind and installs a snapshot through 40: it
                             // never saw 2 to 40.
        log.on_state_event(StateEvent::Installed { applied: 40 });
        let end = lines(&mut w).await.remove(0);
        assert_eq!(end["error"], codes::COMPACTED);
        assert_eq!((end["resume_index"].as_u64(), end["oldest_index"].as_u64()), (Some(2), Some(41)));
        assert!(w.next_piece().await.is_none(), "the end line is the last");
    }

    #[tokio::test]
    async fn a_watcher_more_than_its_buffer_behind_is_cut_off_but_catching_up_on_history_is_not_behind() {
        let log = Arc::new(ChangeLog::new(Retention::default()));
        log.on_state_event(StateEvent::Loaded { applied: 0 });
        for i in 1..=5 {
            apply(&log, i, &["old"]);
        }
        // Five changes of history, more than the buffer (2): not behind.
        let (mut w, _stop) = watcher(&log, "", 1);
        lines(&mut w).await;
        assert_eq!(lines(&mut w).await.len(), 5);
        // Three new changes pile up while it does not read: behind.
        for i in 6..=8 {
            apply(&log, i, &["new"]);
        }
        let end = lines(&mut w).await.remove(0);
        assert_eq!(
            (end["error"].as_str(), end["resume_index"].as_u64()),
            (Some(codes::SLOW_WATCHER), Some(6))
        );
    }

    #[tokio::test]
    async fn stopping_ends_a_waiting_watch() {
        let log = Arc::new(ChangeLog::new(Retention::default()));
        log.on_state_event(StateEvent::Loaded { applied: 3 });
        let (mut w, stop) = watcher(&log, "", 4);
        lines(&mut w).await;
        stop.send_replace(true);
        let end = lines(&mut w).await.remove(0);
        assert_eq!(
            (end["error"].as_str(), end["resume_index"].as_u64()),
            (Some(codes::SHUTTING_DOWN), Some(4))
        );
    }

    fn parse_query(q: &str) -> Result<WatchRequest, String> {
        let uri: axum::http::Uri = format!("/v1/watch?{q}").parse().unwrap();
        parse(Query::try_from_uri(&uri)).map_err(|e| e.body.message)
    }

    #[test]
    fn a_watch_request_is_checked_and_each_bad_parameter_named() {
        assert_eq!(
            parse_query("prefix=a%2Fb&from_index=12&prev=true"),
            Ok(WatchRequest { prefix: "a/b".into(), from_index: Some(12), prev: true })
        );
        assert_eq!(
            parse_query(""),
            Ok(WatchRequest { prefix: String::new(), from_index: None, prev: false })
        );
        for (query, named) in [
            ("from_index=0", "from_index"),
            ("from_index=-1", "from_index"),
            ("from_index=abc", "from_index"),
            ("from_index=", "from_index"),
            ("from_index=99999999999999999999999", "from_index"),
            ("prev=yes", "prev"),
            ("prev=", "prev"),
        ] {
            let message = parse_query(query).unwrap_err();
            assert!(message.contains(named), "{query}: {message}");
        }
        let long = format!("prefix={}", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(parse_query(&long).unwrap_err().contains("prefix"));
        assert!(parse_query("from_index=1&from_index=2").is_err(), "a parameter given twice");
    }
}
