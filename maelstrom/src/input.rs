//! The input gate: checks every line from stdin before maelstrom-node sees
//! it.
//!
//! maelstrom-node 0.1.6 ends its `run()` loop, and with it the process, on
//! any line it cannot parse as a message, and on a second `init`. A line
//! that is not UTF-8 is worse: its read loop stops reading without ending,
//! and the node goes deaf. A Maelstrom node must survive all of that, so
//! the gate sits between stdin and maelstrom-node and passes on only lines
//! that maelstrom-node will accept:
//!
//! ```text
//! stdin ──▶ gate: UTF-8? parses as maelstrom-node's Message? a valid,
//!               first init? no longer than MAX_LINE_BYTES?
//!             │ yes                        │ no
//!             ▼                            ▼
//!       pipe ──▶ maelstrom-node run()    warning on stderr, line dropped
//! ```
//!
//! The gate parses each line with maelstrom-node's own types
//! ([`mnode::protocol::Message`], [`mnode::protocol::InitMessageBody`]),
//! so "the gate accepts it" and "maelstrom-node can parse it" are the same
//! test, not two parsers that might disagree.
//!
//! A dropped line gets no answer: without a parsable `src` and `msg_id`
//! there is nobody to answer. Maelstrom itself never sends such lines;
//! they come from people typing at the binary, or from a broken harness.

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// The longest line accepted (64 MiB). Longer lines are skipped without
/// being held in memory.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// How much of a rejected line is quoted in the warning.
const PREVIEW_BYTES: usize = 200;

/// Why a line was not passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The line is not UTF-8 text.
    #[error("not UTF-8")]
    NotUtf8,
    /// The line is longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes exceeds the limit of {MAX_LINE_BYTES}")]
    TooLong(usize),
    /// The line is not a `{src, dest, body}` message with a well-formed body.
    #[error("not a Maelstrom message: {0}")]
    NotAMessage(String),
    /// An `init` whose `node_id`/`node_ids` are not strings.
    #[error("malformed init: {0}")]
    BadInit(String),
    /// A second `init`: a node is initialized once.
    #[error("duplicate init")]
    DuplicateInit,
}

/// The gate's memory between lines: whether `init` has passed.
#[derive(Debug, Default)]
pub struct Gate {
    init_seen: bool,
}

impl Gate {
    /// A gate that has seen nothing.
    pub fn new() -> Self {
        Gate::default()
    }

    /// Checks one line (without its newline). `Ok(false)` for a blank line,
    /// which is skipped silently (maelstrom-node skips them too).
    pub fn check(&mut self, line: &[u8]) -> Result<bool, Rejected> {
        let text = std::str::from_utf8(line).map_err(|_| Rejected::NotUtf8)?;
        if text.trim().is_empty() {
            return Ok(false);
        }
        let msg: mnode::protocol::Message =
            serde_json::from_str(text).map_err(|e| Rejected::NotAMessage(e.to_string()))?;
        if msg.body.typ == "init" && msg.body.in_reply_to == 0 {
            // maelstrom-node reads the init body exactly like this.
            serde_json::from_value::<mnode::protocol::InitMessageBody>(Value::Object(msg.body.extra))
                .map_err(|e| Rejected::BadInit(e.to_string()))?;
            if self.init_seen {
                return Err(Rejected::DuplicateInit);
            }
            self.init_seen = true;
        }
        Ok(true)
    }
}

/// What the gate did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GateStats {
    /// Lines passed on.
    pub passed: u64,
    /// Lines dropped.
    pub rejected: u64,
}

/// Copies the lines of `input` that pass the [`Gate`] to `output`, until
/// `input` ends or `output` is closed. Never fails on content; returns an
/// I/O error only if reading `input` fails.
pub async fn run_gate<R, W>(mut input: R, mut output: W) -> std::io::Result<GateStats>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut gate = Gate::new();
    let mut stats = GateStats::default();
    let mut line = Vec::new();
    while let Some(len) = read_line_capped(&mut input, &mut line, MAX_LINE_BYTES).await? {
        let verdict = if len > MAX_LINE_BYTES { Err(Rejected::TooLong(len)) } else { gate.check(&line) };
        match verdict {
            Ok(false) => {}
            Ok(true) => {
                stats.passed += 1;
                line.push(b'\n');
                let written = async {
                    output.write_all(&line).await?;
                    output.flush().await
                };
                if written.await.is_err() {
                    // maelstrom-node stopped reading: the node is shutting down.
                    break;
                }
            }
            Err(reason) => {
                stats.rejected += 1;
                let preview = String::from_utf8_lossy(&line[..line.len().min(PREVIEW_BYTES)]).into_owned();
                tracing::warn!(%reason, line = %preview, "input line dropped");
            }
        }
    }
    Ok(stats)
}

/// Reads one line into `buf` (without the newline), keeping at most
/// `max + 1` bytes of it, and returns the line's full length, or `None` at
/// the end of input. A last line without a newline counts as a line.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (chunk, consumed, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        len += chunk.len();
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        input.consume(consumed);
        if done {
            return Ok(Some(len));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, BufReader};

    use super::*;

    #[test]
    fn gate_accepts_messages_and_rejects_what_would_stop_maelstrom_node() {
        let mut gate = Gate::new();
        let init =
            br#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0"]}}"#;
        assert_eq!(gate.check(init), Ok(true));
        assert_eq!(gate.check(init), Err(Rejected::DuplicateInit));
        assert_eq!(
            gate.check(br#"{"src":"c1","dest":"n0","body":{"type":"read","msg_id":2,"key":1}}"#),
            Ok(true)
        );
        assert_eq!(gate.check(b"   "), Ok(false));
        assert_eq!(gate.check(b"\xff\xfe"), Err(Rejected::NotUtf8));
        for bad in [
            &b"garbage"[..],
            b"{}",
            b"[1,2]",
            br#"{"src":"c1","dest":"n0"}"#,
            br#"{"src":"c1","dest":"n0","body":7}"#,
            br#"{"src":"c1","dest":"n0","body":{"type":"read","msg_id":-1}}"#,
            br#"{"src":1,"dest":"n0","body":{"type":"read"}}"#,
        ] {
            assert!(
                matches!(gate.check(bad), Err(Rejected::NotAMessage(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut fresh = Gate::new();
        let bad_init = br#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":5}}"#;
        assert!(matches!(fresh.check(bad_init), Err(Rejected::BadInit(_))));
    }

    #[tokio::test]
    async fn run_gate_passes_good_lines_in_order_and_drops_the_rest() {
        let input = concat!(
            r#"{"src":"c1","dest":"n0","body":{"type":"read","msg_id":1,"key":1}}"#,
            "\nnot json\n\n",
            r#"{"src":"c1","dest":"n0","body":{"type":"read","msg_id":2,"key":1}}"#,
        );
        let (mut rx, tx) = tokio::io::duplex(1 << 16);
        let stats = run_gate(BufReader::new(input.as_bytes()), tx).await.unwrap();
        assert_eq!(stats, GateStats { passed: 2, rejected: 1 });
        let mut out = String::new();
        rx.read_to_string(&mut out).await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(r#""msg_id":1"#) && lines[1].contains(r#""msg_id":2"#));
    }

    #[tokio::test]
    async fn overlong_line_is_skipped_without_being_kept() {
        let mut input = vec![b'x'; 1000];
        input.extend_from_slice(b"\nshort\n");
        let mut reader = BufReader::with_capacity(64, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut reader, &mut buf, 100).await.unwrap(), Some(1000));
        assert_eq!(buf.len(), 101);
        assert_eq!(read_line_capped(&mut reader, &mut buf, 100).await.unwrap(), Some(5));
        assert_eq!(buf, b"short");
        assert_eq!(read_line_capped(&mut reader, &mut buf, 100).await.unwrap(), None);
    }
}
