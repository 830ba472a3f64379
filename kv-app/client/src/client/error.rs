//! The client's one error type, [`ClientError`], and how to classify it:
//! whether calling again may succeed, and whether the operation took effect.
//! A write whose outcome is unknown is *indeterminate*, never failed: it may
//! still take effect.

use crate::api::{codes, ErrorBody};

/// Everything that can go wrong in a client call. Classify with
/// [`ClientError::is_retryable`] and [`ClientError::outcome_known`] (or
/// [`ClientError::took_effect`]) rather than by matching on variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a definite error: a bad request, a value too
    /// large, an unknown node, a membership conflict, or an internal error.
    /// `body.retryable` says whether sending the same request again may
    /// succeed. Retryable errors (503) are only returned by single-attempt
    /// calls; others retry them until the deadline.
    #[error("server answered {status} {}: {}", body.error, body.message)]
    Server {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// A write's (or membership change's) outcome is unknown: an attempt
    /// timed out, its connection broke after the request was sent, or the
    /// server answered 504 `indeterminate`, and no later attempt settled it
    /// before the deadline. The write may or may not have taken effect, and
    /// may still take effect later. Never treat this as a failure.
    #[error("outcome unknown (the write may or may not take effect): {reason}")]
    Indeterminate {
        /// What happened, attempt by attempt.
        reason: String,
    },
    /// Nothing could be done before the deadline, and nothing was done: no
    /// endpoint could be reached, or every answer was 503 (no leader, or a
    /// read that could not be served). A write certainly did not take effect.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// The last failure.
        reason: String,
    },
    /// A `durability=all` write committed (it will not be lost, and it took
    /// effect) but not every voter confirmed it in time: a voter is down or
    /// behind.
    #[error("committed at index {index:?} but not confirmed by every voter: {message}")]
    NotFullyReplicated {
        /// The log index of the write, if the server said.
        index: Option<u64>,
        /// The server's explanation.
        message: String,
    },
    /// The server refused the write because it has already applied a later
    /// write of this session. This client never sends a new write of a
    /// session before the previous one has finished, so this means the
    /// server lost track of the session (it expired: see `SESSION_TTL_MS` in
    /// kv-app's `command` module) or another client uses the same
    /// id. The write was not applied now; whether an earlier attempt of it
    /// was applied is no longer remembered.
    #[error("write (client {client_id}, seq {seq}) superseded by a later write of the session: {message}")]
    StaleSequence {
        /// The session's client id.
        client_id: u64,
        /// The write's sequence number.
        seq: u64,
        /// The server's explanation.
        message: String,
    },
    /// The server's answer could not be understood (not the JSON of the
    /// expected type, or a value that is not valid base64).
    #[error("could not decode the answer from {endpoint}: {reason}")]
    Decode {
        /// Who answered.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// An endpoint address could not be used: not `host:port`,
    /// `http://host:port` or `https://host:port`, or `https://` without
    /// [`ClientOptions::tls`](super::ClientOptions::tls).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The address as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS with `endpoint` failed, so nothing was sent or carried out: the
    /// server's certificate is not signed by the CA the client trusts,
    /// names another host, or has expired; or the server wants a client
    /// certificate and got none, or one it does not trust. `reason` says
    /// which ([`crate::tls::describe`]). Retrying does not help; the
    /// certificates or the client's TLS options must change.
    #[error("TLS with {endpoint} failed: {reason}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// What went wrong, and what to change.
        reason: String,
    },
    /// An argument cannot be sent (an empty key, say); nothing was sent.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// A watch asked for changes older than any endpoint still keeps
    /// (`410 compacted` from every one). Read the keys (the answer's
    /// `index` is I) and watch again from I + 1; see `docs/watch.md`.
    #[error("the change history from there is gone; the oldest index kept is {oldest_index}: {message}")]
    Compacted {
        /// The smallest index an endpoint can still watch from.
        oldest_index: u64,
        /// The server's explanation.
        message: String,
    },
}

impl ClientError {
    /// Whether calling the same method again may succeed and is safe. True
    /// for [`ClientError::Unavailable`] and retryable server errors; false
    /// for an indeterminate write, since calling the method again sends a
    /// *new* write (with a new seq) that may apply in addition to the first.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unavailable { .. } => true,
            ClientError::Server { body, .. } => body.retryable,
            ClientError::Indeterminate { .. }
            | ClientError::NotFullyReplicated { .. }
            | ClientError::StaleSequence { .. }
            | ClientError::Decode { .. }
            | ClientError::InvalidEndpoint { .. }
            | ClientError::Tls { .. }
            | ClientError::InvalidArgument { .. }
            | ClientError::Compacted { .. } => false,
        }
    }

    /// Whether it is known if the operation took effect. False for
    /// [`ClientError::Indeterminate`], a stale sequence, a 500 and an answer
    /// that could not be decoded; true otherwise. See
    /// [`ClientError::took_effect`] for which way.
    pub fn outcome_known(&self) -> bool {
        self.took_effect().is_some()
    }

    /// `Some(false)`: the operation certainly did not take effect.
    /// `Some(true)`: it certainly did ([`ClientError::NotFullyReplicated`]).
    /// `None`: unknown; it may take effect, now or later.
    pub fn took_effect(&self) -> Option<bool> {
        match self {
            ClientError::Unavailable { .. }
            | ClientError::InvalidEndpoint { .. }
            | ClientError::Tls { .. }
            | ClientError::InvalidArgument { .. }
            | ClientError::Compacted { .. } => Some(false),
            // 4xx: the server looked at the request and refused it. 503: it
            // did not carry it out. 500 and anything else: unknown.
            ClientError::Server { status, .. } => {
                ((400..500).contains(status) || *status == 503).then_some(false)
            }
            ClientError::NotFullyReplicated { .. } => Some(true),
            ClientError::Indeterminate { .. }
            | ClientError::StaleSequence { .. }
            | ClientError::Decode { .. } => None,
        }
    }

    /// The server's error code, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { body, .. } => Some(&body.error),
            ClientError::NotFullyReplicated { .. } => Some(codes::NOT_FULLY_REPLICATED),
            ClientError::StaleSequence { .. } => Some(codes::STALE_SEQUENCE),
            ClientError::Compacted { .. } => Some(codes::COMPACTED),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(code: &str, retryable: bool) -> ErrorBody {
        ErrorBody { error: code.into(), message: "m".into(), retryable, leader: None, index: None }
    }

    #[test]
    fn errors_say_whether_the_write_took_effect() {
        let cases: Vec<(ClientError, bool, Option<bool>)> = vec![
            (ClientError::Indeterminate { reason: "timeout".into() }, false, None),
            (ClientError::Unavailable { reason: "refused".into() }, true, Some(false)),
            (
                ClientError::Server { status: 400, body: error_body(codes::BAD_REQUEST, false) },
                false,
                Some(false),
            ),
            (
                ClientError::Server { status: 409, body: error_body(codes::CONFLICT, false) },
                false,
                Some(false),
            ),
            (
                ClientError::Server { status: 503, body: error_body(codes::NO_LEADER, true) },
                true,
                Some(false),
            ),
            (ClientError::Server { status: 500, body: error_body(codes::INTERNAL, false) }, false, None),
            (ClientError::NotFullyReplicated { index: Some(3), message: "m".into() }, false, Some(true)),
            (ClientError::StaleSequence { client_id: 1, seq: 2, message: "m".into() }, false, None),
            (ClientError::Decode { endpoint: "e".into(), reason: "r".into() }, false, None),
            (ClientError::Tls { endpoint: "e".into(), reason: "unknown CA".into() }, false, Some(false)),
            (ClientError::Compacted { oldest_index: 9, message: "m".into() }, false, Some(false)),
        ];
        for (error, retryable, took_effect) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
            assert_eq!(error.took_effect(), took_effect, "{error}");
            assert_eq!(error.outcome_known(), took_effect.is_some(), "{error}");
        }
    }
}
