//! How failures become HTTP responses: one [`ApiError`] type, turned into a
//! status code and an [`ErrorBody`] with a stable code.
//!
//! The most important bit of each error is `retryable`. For a write it is
//! true only when the write certainly did not take effect (it was never
//! proposed); a write whose outcome is unknown is `indeterminate` (504), and
//! a client may only retry it with the same client id and sequence number,
//! which the state machine deduplicates.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kv_client::api::{codes, ErrorBody, LeaderInfo};
use raft_core::{ChangeError, LeaderHint, ReadError, TransferError, WriteError};

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `code` and `message`; `retryable` follows from the status.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let retryable = status == StatusCode::SERVICE_UNAVAILABLE;
        ApiError {
            status,
            body: ErrorBody {
                error: code.into(),
                message: message.into(),
                retryable,
                leader: None,
                index: None,
            },
        }
    }

    /// 400 bad_request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    /// 413 too_large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, codes::TOO_LARGE, message)
    }

    /// 503 no_leader: nothing was done; retry (possibly elsewhere).
    pub fn no_leader(message: impl Into<String>, leader: Option<LeaderInfo>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, codes::NO_LEADER, message).with_leader(leader)
    }

    /// 504 indeterminate: a write's outcome is unknown.
    pub fn indeterminate(message: impl Into<String>, leader: Option<LeaderInfo>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, codes::INDETERMINATE, message).with_leader(leader)
    }

    /// 500 internal.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
    }

    /// Attaches the leader's whereabouts.
    pub fn with_leader(mut self, leader: Option<LeaderInfo>) -> Self {
        self.body.leader = leader;
        self
    }

    /// Attaches a log index.
    pub fn with_index(mut self, index: u64) -> Self {
        self.body.index = Some(index);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The leader as the API describes it.
pub fn leader_info(hint: Option<&LeaderHint>) -> Option<LeaderInfo> {
    hint.map(|h| LeaderInfo {
        id: h.id,
        api_addr: h.node.as_ref().map(|n| n.api_addr.clone()).filter(|a| !a.is_empty()),
    })
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match &e {
            WriteError::NotLeader { leader } => {
                ApiError::no_leader(e.to_string(), leader_info(leader.as_ref()))
            }
            WriteError::Indeterminate { leader, .. } => {
                ApiError::indeterminate(e.to_string(), leader_info(leader.as_ref()))
            }
            WriteError::ShuttingDown => ApiError::no_leader(e.to_string(), None),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match &e {
            ReadError::NotLeader { leader } => {
                ApiError::no_leader(e.to_string(), leader_info(leader.as_ref()))
            }
            ReadError::Storage(_) => ApiError::internal(e.to_string()),
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match &e {
            ChangeError::NotLeader { leader } => {
                ApiError::no_leader(e.to_string(), leader_info(leader.as_ref()))
            }
            // Refused before anything was proposed, and over once the
            // change in progress is: nodes joining at once retry.
            ChangeError::InProgress(_) => {
                let mut err = ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, e.to_string());
                err.body.retryable = true;
                err
            }
            ChangeError::Invalid(_) => ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, e.to_string()),
            ChangeError::Indeterminate(_) => ApiError::indeterminate(e.to_string(), None),
            ChangeError::ShuttingDown => ApiError::no_leader(e.to_string(), None),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> Self {
        let unavailable = |e: &TransferError| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, e.to_string())
        };
        match &e {
            TransferError::NotLeader { leader } => {
                ApiError::no_leader(e.to_string(), leader_info(leader.as_ref()))
            }
            TransferError::NotAVoter(_) => {
                ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, e.to_string())
            }
            // Nothing moved; later, or with another successor, it may work.
            TransferError::NoCandidate | TransferError::InProgress | TransferError::NotCaughtUp { .. } => {
                unavailable(&e)
            }
            TransferError::NotConfirmed { .. } => ApiError::indeterminate(e.to_string(), None),
            TransferError::ShuttingDown => ApiError::no_leader(e.to_string(), None),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<raft_core::StateError> for ApiError {
    fn from(e: raft_core::StateError) -> Self {
        ApiError::internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_refused_because_another_is_in_progress_is_worth_retrying_and_an_invalid_one_is_not() {
        let busy = ApiError::from(ChangeError::InProgress("a learner is catching up".into()));
        assert_eq!((busy.status, busy.body.retryable), (StatusCode::CONFLICT, true));
        let invalid = ApiError::from(ChangeError::Invalid("node 9 is not a learner".into()));
        assert_eq!((invalid.status, invalid.body.retryable), (StatusCode::CONFLICT, false));
    }
}
