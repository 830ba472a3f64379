//! The wire format of the TCP transport: a handshake, then length-prefixed
//! frames.
//!
//! # Connection lifecycle
//!
//! ```text
//! client                                   server
//!   | -- "RCORE" | version u16 | Handshake --> |  magic, version, cluster id
//!   | <------------- HandshakeAck ------------ |  and `to` are checked
//!   | -- RequestFrame { id: 1, .. } ---------> |
//!   | <------------ ResponseFrame { id: 1 } -- |
//!   | -- RequestFrame { id: 2, .. } ---------> |  one request in flight at a
//!   | <------------ ResponseFrame { id: 2 } -- |  time, answered in order
//! ```
//!
//! # Frames
//!
//! Every message after the fixed preamble is one *frame*:
//!
//! ```text
//! +----------------------+---------------------------------+
//! | length: u32 big-end. | payload: `length` bytes, bincode |
//! +----------------------+---------------------------------+
//! ```
//!
//! The payload is encoded with [`crate::codec`], the same encoding the log
//! uses on disk. The reader checks `length` against a maximum *before* it
//! reads or allocates the payload, so a corrupted or hostile prefix costs
//! four bytes of reading, not gigabytes of memory. Even a legitimate length
//! is read into a buffer that grows only as bytes actually arrive, so a
//! peer that announces 64 MiB and then sends nothing holds on to nothing.
//!
//! # The handshake
//!
//! The first bytes on every connection are the magic `b"RCORE"` and the
//! protocol version (u16 big-endian), outside any frame, so that a server
//! can tell "not our protocol at all" (an HTTP client, a port scanner) and
//! "our protocol, another version" apart without decoding anything. Then
//! comes a [`Handshake`] frame naming the cluster and both nodes. The
//! server answers with a [`HandshakeAck`]. Checking the cluster id stops a
//! node of one cluster from voting in another (a misconfigured address is
//! enough to cause that); checking `to` stops a node from answering RPCs
//! meant for a node that used to live at the same address.
//!
//! This handshake alone guards against mistakes, not against attackers. With
//! peer TLS configured, a server answers the handshake with
//! [`HandshakeAck::StartTls`] instead, the peers run a mutual TLS handshake
//! on the same connection, and the real acknowledgement and every frame
//! after it travel inside TLS, where the claims of the plaintext handshake
//! are checked against the certificates (see [`crate::network::tls`]):
//!
//! ```text
//! client                                   server
//!   | -- "RCORE" | version u16 | Handshake --> |  plaintext, as without TLS
//!   | <------------ HandshakeAck::StartTls --- |
//!   | <========== TLS handshake ============> |  both present certificates
//!   | <------------- HandshakeAck ------------ |  inside TLS from here on
//!   | -- RequestFrame { id: 1, .. } ---------> |
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::rpc::{RpcRequest, RpcResponse};
use crate::codec::{self, DecodeError};
use crate::types::NodeId;

/// The first bytes on every connection: "this is a raft-core peer".
pub const MAGIC: [u8; 5] = *b"RCORE";

/// The version of this wire format. A server refuses any other version:
/// frames of another version may not decode, or worse, decode to something
/// else.
///
/// * 1: openraft 0.9's RPCs (chunked InstallSnapshot).
/// * 2: openraft 0.10's: AppendEntries answers may be partial, pre-vote and
///   leadership transfer exist, snapshots travel as [`super::rpc::SnapshotChunk`]s.
pub const PROTOCOL_VERSION: u16 = 2;

/// The largest handshake or handshake acknowledgement, in bytes (4 KiB).
/// Both are a few short fields; the limit is small because the handshake is
/// read before the peer is known to be one of ours.
pub const HANDSHAKE_MAX_BYTES: u32 = 4 * 1024;

/// Bytes in a frame's length prefix.
const LEN_BYTES: usize = 4;

/// Buffer the payload of a frame in steps of at most this many bytes
/// (64 KiB), so memory follows the bytes that actually arrived rather than
/// the length the peer announced.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a frame could not be read or written. Every variant except
/// [`FrameError::Closed`] leaves the connection in an unknown state: the
/// only safe thing to do with it is to close it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The socket failed, or the peer closed it in the middle of a frame
    /// (`UnexpectedEof`).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection cleanly, between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// A frame's length exceeds the limit: returned by the reader on the
    /// announced length (before reading the payload), and by the writer
    /// instead of sending an oversized frame.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's payload length in bytes.
        len: u64,
        /// The limit in bytes.
        max: u32,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The connection does not start with [`MAGIC`]: the peer does not speak
    /// this protocol at all.
    #[error("bad magic {got:02x?}: the peer is not a raft-core node")]
    BadMagic {
        /// The first bytes received.
        got: [u8; MAGIC.len()],
    },
    /// The peer speaks another version of this protocol.
    #[error("unsupported protocol version {got} (this node speaks {supported})")]
    UnsupportedVersion {
        /// The version the peer announced.
        got: u16,
        /// [`PROTOCOL_VERSION`].
        supported: u16,
    },
}

/// What a client says about itself before sending any RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The protocol version the client speaks; [`PROTOCOL_VERSION`] when
    /// built with [`Handshake::new`].
    pub version: u16,
    /// The cluster the client belongs to. Must equal the server's.
    pub cluster_id: String,
    /// The client's node id, for the server's logs.
    pub from: NodeId,
    /// The node the client means to reach. Must equal the server's id.
    pub to: NodeId,
}

impl Handshake {
    /// A handshake for the current protocol version.
    pub fn new(cluster_id: impl Into<String>, from: NodeId, to: NodeId) -> Self {
        Handshake { version: PROTOCOL_VERSION, cluster_id: cluster_id.into(), from, to }
    }
}

/// The part of [`Handshake`] that travels in a frame (the version travels in
/// the fixed preamble, ahead of it).
#[derive(Serialize, Deserialize)]
struct HandshakeBody {
    cluster_id: String,
    from: NodeId,
    to: NodeId,
}

/// The server's answer to a [`Handshake`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeAck {
    /// The server accepts the connection; RPCs may follow.
    Ok,
    /// The server refuses the connection and closes it.
    Refused {
        /// Why, in words meant for an operator reading the client's log.
        reason: String,
    },
    /// The server requires mutual TLS (see [`crate::network::tls`]): the
    /// client starts a TLS handshake on the same connection, and the real
    /// acknowledgement ([`HandshakeAck::Ok`] or [`HandshakeAck::Refused`])
    /// follows inside TLS. Only a server with peer TLS sends it, so a
    /// cluster without TLS never sees this variant, and its wire is the
    /// same as before it existed.
    StartTls,
}

/// Identifies a request on its connection; the response carries the same
/// id. Ids increase by one per request on a connection.
pub type RequestId = u64;

/// One Raft RPC, as sent by a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RequestFrame {
    /// Matches the response to this request.
    pub id: RequestId,
    /// The RPC itself.
    pub rpc: RpcRequest,
}

/// A [`RequestFrame`] that borrows its RPC, for encoding one without
/// copying the request. Encodes to the same bytes.
#[derive(Debug, Serialize)]
pub struct RequestFrameRef<'a> {
    /// Matches the response to this request.
    pub id: RequestId,
    /// The RPC itself.
    pub rpc: &'a RpcRequest,
}

/// The answer to one [`RequestFrame`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: RequestId,
    /// What the server's Raft returned.
    pub rpc: RpcResponse,
}

/// Encodes `value` as a complete frame (length prefix and payload), or
/// returns [`FrameError::TooLarge`] if the payload would exceed `max` bytes.
///
/// Encoding separately from writing lets a sender look at the size first:
/// the TCP client turns an oversized AppendEntries into a smaller one
/// instead of sending it.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let payload = codec::encode(value);
    let len = payload.len();
    if len > max as usize {
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    // `len <= max <= u32::MAX`, so the cast is exact.
    let mut frame = Vec::with_capacity(LEN_BYTES + len);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Writes bytes produced by [`encode_frame`] and flushes them.
///
/// The frame goes out in one `write_all`, so that with `TCP_NODELAY` a small
/// request leaves in one segment instead of a prefix segment and a payload
/// segment.
pub async fn write_encoded<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
}

/// Encodes `value` and writes it as one frame. Nothing is written if the
/// payload would exceed `max` bytes.
pub async fn write_frame<W, T>(w: &mut W, value: &T, max: u32) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let frame = encode_frame(value, max)?;
    write_encoded(w, &frame).await
}

/// Reads one frame and decodes its payload.
///
/// Returns [`FrameError::Closed`] if the peer closed the connection before
/// the first byte of the frame (with or without TLS's close_notify), and [`FrameError::TooLarge`] without reading
/// the payload if the announced length exceeds `max`.
pub async fn read_frame<R, T>(r: &mut R, max: u32) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; LEN_BYTES];
    let n = match r.read(&mut prefix).await {
        Ok(n) => n,
        // Over TLS, a peer that closed without a close_notify alert (a
        // killed process, a dropped connection) reads as an unexpected
        // end. Before a frame's first byte nothing was cut short: it is a
        // close like a plain TCP stream's end.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Err(FrameError::Closed);
    }
    r.read_exact(&mut prefix[n..]).await?;
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(FrameError::TooLarge { len: u64::from(len), max });
    }

    let len = len as usize;
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    let read = r.take(len as u64).read_to_end(&mut payload).await?;
    if read < len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(codec::decode(&payload)?)
}

/// Writes the connection preamble ([`MAGIC`], `hs.version`) and the
/// handshake frame, in one write.
pub async fn write_handshake<W: AsyncWrite + Unpin>(w: &mut W, hs: &Handshake) -> Result<(), FrameError> {
    let body = HandshakeBody { cluster_id: hs.cluster_id.clone(), from: hs.from, to: hs.to };
    let frame = encode_frame(&body, HANDSHAKE_MAX_BYTES)?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + 2 + frame.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&hs.version.to_be_bytes());
    bytes.extend_from_slice(&frame);
    write_encoded(w, &bytes).await
}

/// Reads the connection preamble and the handshake frame.
///
/// Fails with [`FrameError::BadMagic`] or
/// [`FrameError::UnsupportedVersion`] before reading the handshake frame,
/// whose layout belongs to the version.
pub async fn read_handshake<R: AsyncRead + Unpin>(r: &mut R) -> Result<Handshake, FrameError> {
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic).await?;
    if magic != MAGIC {
        return Err(FrameError::BadMagic { got: magic });
    }
    let version = r.read_u16().await?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
    }
    let body: HandshakeBody = read_frame(r, HANDSHAKE_MAX_BYTES).await?;
    Ok(Handshake { version, cluster_id: body.cluster_id, from: body.from, to: body.to })
}

#[cfg(test)]
mod tests {
    use super::*;

    use openraft::raft::{AppendEntriesRequest, VoteResponse};

    use crate::types::{log_id, Batch, Entry, EntryPayload, Vote};

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(Batch::one(vec![7; bytes])) }
    }

    #[tokio::test]
    async fn request_and_response_frames_round_trip() {
        let req = RequestFrame {
            id: 42,
            rpc: RpcRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(3, 1),
                prev_log_id: Some(log_id(2, 9)),
                leader_commit: None,
                entries: vec![entry(10, 5), entry(11, 0)],
            }),
        };
        let resp = ResponseFrame {
            id: 42,
            rpc: RpcResponse::Vote(Ok(VoteResponse::new(Vote::new(3, 2), None, true))),
        };

        let mut wire = Vec::new();
        write_frame(&mut wire, &req, 1024).await.unwrap();
        write_frame(&mut wire, &resp, 1024).await.unwrap();
        assert_eq!(u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize + 4, {
            encode_frame(&req, 1024).unwrap().len()
        });
        // The borrowing form, which the TCP client sends, is the same bytes.
        let by_ref = RequestFrameRef { id: req.id, rpc: &req.rpc };
        assert_eq!(encode_frame(&by_ref, 1024).unwrap(), encode_frame(&req, 1024).unwrap());

        let mut r = &wire[..];
        let got_req: RequestFrame = read_frame(&mut r, 1024).await.unwrap();
        let got_resp: ResponseFrame = read_frame(&mut r, 1024).await.unwrap();
        assert_eq!(got_req.id, 42);
        match got_req.rpc {
            RpcRequest::AppendEntries(a) => assert_eq!(a.entries, vec![entry(10, 5), entry(11, 0)]),
            other => panic!("decoded the wrong request kind: {other:?}"),
        }
        assert_eq!(got_resp.id, 42);
        assert!(matches!(got_resp.rpc, RpcResponse::Vote(Ok(v)) if v.vote_granted));
        // A clean end of stream between frames is `Closed`, not an I/O error.
        assert!(matches!(read_frame::<_, ResponseFrame>(&mut r, 1024).await, Err(FrameError::Closed)));
    }

    /// Reads its bytes, then fails as tokio-rustls does when the peer
    /// closed without sending close_notify.
    struct CutOff<'a>(&'a [u8]);

    impl tokio::io::AsyncRead for CutOff<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0.is_empty() {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                );
                return std::task::Poll::Ready(Err(e));
            }
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_tls_end_without_close_notify_between_frames_is_closed_and_inside_one_is_an_error() {
        let resp = ResponseFrame {
            id: 7,
            rpc: RpcResponse::Vote(Ok(VoteResponse::new(Vote::new(1, 1), None, true))),
        };
        let wire = encode_frame(&resp, 1024).unwrap();
        let mut r = CutOff(&wire);
        assert_eq!(read_frame::<_, ResponseFrame>(&mut r, 1024).await.unwrap().id, 7);
        assert!(matches!(read_frame::<_, ResponseFrame>(&mut r, 1024).await, Err(FrameError::Closed)));
        for cut in [1, LEN_BYTES, wire.len() - 1] {
            let got = read_frame::<_, ResponseFrame>(&mut CutOff(&wire[..cut]), 1024).await;
            assert!(matches!(got, Err(FrameError::Io(_))), "cut after {cut} bytes: {got:?}");
        }
    }

    #[tokio::test]
    async fn oversized_length_is_rejected_before_reading_the_payload() {
        // The prefix claims 1 GiB; no payload follows. A reader that tried to
        // read the payload would report EOF instead of `TooLarge`.
        let wire = (1u32 << 30).to_be_bytes();
        let err = read_frame::<_, ResponseFrame>(&mut &wire[..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: 1024 } if len == 1 << 30));
    }

    #[tokio::test]
    async fn oversized_value_is_not_written() {
        let mut wire = Vec::new();
        let err = write_frame(&mut wire, &vec![0u8; 100], 10).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 10, .. }));
        assert!(wire.is_empty());
    }

    #[tokio::test]
    async fn truncated_payload_is_an_io_error() {
        let mut wire = encode_frame(&String::from("hello"), 1024).unwrap();
        wire.pop();
        let err = read_frame::<_, String>(&mut &wire[..], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
    }

    #[tokio::test]
    async fn handshake_round_trips_and_checks_magic_and_version() {
        let hs = Handshake::new("c1", 1, 2);
        let mut wire = Vec::new();
        write_handshake(&mut wire, &hs).await.unwrap();
        assert_eq!(&wire[..5], b"RCORE");
        assert_eq!(read_handshake(&mut &wire[..]).await.unwrap(), hs);

        let mut other_version = wire.clone();
        other_version[5..7].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
        assert!(matches!(
            read_handshake(&mut &other_version[..]).await,
            Err(FrameError::UnsupportedVersion { .. })
        ));

        let http = b"GET / HTTP/1.1\r\n\r\n";
        assert!(matches!(read_handshake(&mut &http[..]).await, Err(FrameError::BadMagic { .. })));
    }
}
