//! `GET /v1/cluster/backup`: a consistent copy of the applied state,
//! streamed in the format of [`kv_client::backup`].
//!
//! The copy is taken at a linearizable point, as a linearizable read is
//! (on the leader a quorum confirms its leadership; a follower asks the
//! leader for its read index and waits until it has applied that far), so
//! every write acknowledged before the request arrived is in it. It is a
//! read view of the applied state ([`raft_core::AppView`]): taking one
//! costs O(1) and nothing applied later shows through it, so the node goes
//! on applying and serving while the view is encoded and sent, on a
//! blocking thread, a piece at a time, as fast as the client reads. Any
//! node can serve a backup; a follower keeps the load off the leader.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use kv_client::api::Consistency;
use kv_client::backup::{self, BackupHeader, Encoder};
use raft_core::AppView;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::Ctx;
use crate::state_machine;

/// Bytes encoded before a piece is handed to the connection.
const PIECE_BYTES: usize = 256 << 10;
/// Pieces encoded ahead of the connection.
const PIECES_AHEAD: usize = 4;

/// `GET /v1/cluster/backup`.
pub async fn backup(State(ctx): State<Ctx>) -> Response {
    let view = match super::kv::prepare_read(&ctx, Consistency::Linearizable, None).await {
        Ok(v) => v,
        Err(rejected) => return rejected,
    };
    let cluster_id = ctx.config.raft.cluster_id.clone();
    let summarized = tokio::task::spawn_blocking(move || summarize(view, cluster_id, ctx.id)).await;
    let (view, header, payload_bytes) = match summarized {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return ApiError::internal(format!("summarizing the backup: {e}")).into_response(),
    };
    let len = backup::encoded_len(&header, payload_bytes);
    tracing::info!(
        term = header.term,
        index = header.index,
        entries = header.entries,
        bytes = len,
        "streaming a backup"
    );
    let (tx, rx) = mpsc::channel(PIECES_AHEAD);
    tokio::task::spawn_blocking(move || encode(&view, &header, &tx));
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// The header of a backup of `view`, and the bytes its keys and values add
/// up to (so that the response can say its length before it starts).
fn summarize(
    view: AppView,
    cluster_id: String,
    node_id: u64,
) -> Result<(AppView, BackupHeader, u64), ApiError> {
    let applied = view.applied();
    let (mut entries, mut payload) = (0u64, 0u64);
    view.for_each(|k, v| {
        entries += 1;
        payload += (k.len() + v.len()) as u64;
    })?;
    let header = BackupHeader {
        cluster_id,
        node_id,
        term: applied.map_or(0, |l| l.leader_id.term),
        index: applied.map_or(0, |l| l.index),
        entries,
        keys: state_machine::key_count(&view)? as u64,
        sessions: state_machine::session_count(&view)? as u64,
        digest: state_machine::digest(&view)?,
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok((view, header, payload))
}

/// Encodes `view` into pieces and sends them, waiting while the client is
/// behind. Stops early if the client goes away.
fn encode(view: &AppView, header: &BackupHeader, tx: &mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let mut encoder = Encoder::new(header);
    let mut gone = false;
    let walked = view.for_each(|k, v| {
        if gone {
            return;
        }
        encoder.entry(k, v);
        if encoder.buffered() >= PIECE_BYTES {
            gone = tx.blocking_send(Ok(encoder.take().into())).is_err();
        }
    });
    if gone {
        tracing::info!("the backup's client went away before the end");
        return;
    }
    let last = match walked {
        Ok(()) => {
            let mut last = encoder.take();
            encoder.finish().map(|end| {
                last.extend(end);
                last
            })
        }
        Err(e) => Err(backup::BackupError::Corrupt(e.to_string())),
    };
    let piece = last.map(Bytes::from).map_err(|e| {
        // Cut the response short: the client sees a truncated backup,
        // which no reader accepts.
        tracing::error!(error = %e, "a backup failed while streaming");
        std::io::Error::other(e.to_string())
    });
    let _ = tx.blocking_send(piece);
}
