//! `GET /v1/cluster/rollback` and `GET /v1/cluster/rollback/{id}`: the
//! rollback records this node keeps (admin only).
//!
//! A record holds the log entries this node removed because a new leader's
//! log replaced them (`raft_core::storage::rollback`). Under `majority` and
//! `all` durability no client was told such an entry's writes were done;
//! under `leader` durability some may have been, and this is where an
//! operator finds them, to write them again or to let them go. Records are
//! per node: only the node that removed the entries has them, so
//! `kvctl rollback list` asks every member.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kv_client::api::{
    codes, JsonValue, RollbackDetail, RollbackList, RollbackSummary, RolledBackEntry, RolledBackWrite,
};
use raft_core::codec;
use raft_core::storage::rollback::{RollbackRecord, RolledBackPayload};

use super::error::ApiError;
use super::Ctx;
use crate::command::{KvCommand, WriteOp};

/// `GET /v1/cluster/rollback`: a summary of every record, oldest first.
pub async fn list(State(ctx): State<Ctx>) -> Response {
    match ctx.node.rollback_records().await {
        Ok(records) => Json(RollbackList { node: ctx.id, records: records.iter().map(summary).collect() })
            .into_response(),
        Err(e) => ApiError::internal(format!("reading the rollback records: {e}")).into_response(),
    }
}

/// `GET /v1/cluster/rollback/{id}`: one record, every write decoded.
pub async fn show(
    State(ctx): State<Ctx>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return ApiError::bad_request("the record id must be a number").into_response();
    };
    match ctx.node.rollback_record(id).await {
        Ok(Some(r)) => Json(detail(ctx.id, &r)).into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_RECORD,
            format!("node {} keeps no rollback record {id}", ctx.id),
        )
        .into_response(),
        Err(e) => ApiError::internal(format!("reading rollback record {id}: {e}")).into_response(),
    }
}

fn summary(r: &RollbackRecord) -> RollbackSummary {
    let writes = |acknowledged_only: bool| {
        r.entries
            .iter()
            .filter(|e| !acknowledged_only || e.leader_durable)
            .map(|e| match &e.payload {
                RolledBackPayload::Commands(c) => c.len(),
                _ => 0,
            })
            .sum()
    };
    RollbackSummary {
        id: r.id,
        at_unix_ms: r.at_unix_ms,
        term: r.term,
        snapshot_through: r.snapshot_through,
        first_index: r.entries.first().map_or(0, |e| e.index),
        last_index: r.entries.last().map_or(0, |e| e.index),
        entries: r.entries.len(),
        writes: writes(false),
        acknowledged_writes: writes(true),
    }
}

/// The record with every command decoded as the state machine would.
pub fn detail(node: u64, r: &RollbackRecord) -> RollbackDetail {
    let entries = r
        .entries
        .iter()
        .map(|e| {
            let (kind, writes) = match &e.payload {
                RolledBackPayload::Blank => ("blank", Vec::new()),
                RolledBackPayload::Membership(_) => ("membership", Vec::new()),
                RolledBackPayload::Commands(c) => ("writes", c.iter().map(|b| write(b)).collect()),
            };
            RolledBackEntry {
                term: e.term,
                index: e.index,
                kind: kind.into(),
                acknowledged: e.leader_durable,
                writes,
            }
        })
        .collect();
    RollbackDetail {
        node,
        id: r.id,
        at_unix_ms: r.at_unix_ms,
        term: r.term,
        snapshot_through: r.snapshot_through,
        entries,
    }
}

fn write(bytes: &[u8]) -> RolledBackWrite {
    let mut w = RolledBackWrite {
        op: String::new(),
        key: String::new(),
        value: None,
        expected: None,
        lease: None,
        ttl_ms: None,
        leases: Vec::new(),
        client_id: None,
        seq: None,
        proposed_at_ms: 0,
        error: None,
    };
    let cmd = match codec::decode::<KvCommand>(bytes) {
        Ok(cmd) => cmd,
        Err(e) => {
            w.op = "undecodable".into();
            w.error = Some(e.to_string());
            return w;
        }
    };
    w.client_id = cmd.session.map(|s| s.client_id);
    w.seq = cmd.session.map(|s| s.seq);
    w.proposed_at_ms = cmd.proposed_at_ms;
    w.op = cmd.op.name().into();
    match cmd.op {
        WriteOp::Put { key, value } => (w.key, w.value) = (key, Some(JsonValue::from_bytes(&value))),
        WriteOp::Delete { key } => w.key = key,
        WriteOp::Cas { key, expected, value } => {
            w.key = key;
            w.value = Some(JsonValue::from_bytes(&value));
            w.expected = expected.map(|x| JsonValue::from_bytes(&x));
        }
        WriteOp::PutWithLease { key, value, lease } => {
            (w.key, w.value, w.lease) = (key, Some(JsonValue::from_bytes(&value)), Some(lease));
        }
        WriteOp::LeaseGrant { ttl_ms } => w.ttl_ms = Some(ttl_ms),
        WriteOp::LeaseKeepAlive { id } | WriteOp::LeaseRevoke { id } => w.lease = Some(id),
        WriteOp::ExpireLeases { leases } => w.leases = leases.iter().map(|l| l.id).collect(),
    }
    w
}
