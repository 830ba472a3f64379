//! Downloading a backup: `GET /v1/cluster/backup`, whose answer is a
//! stream in the format of [`crate::backup`], read piece by piece so that
//! a large backup never sits in memory whole.

use std::time::Duration;

use reqwest::Method;

use super::retry::{refusal, transport_error, Reply};
use super::{Client, ClientError};

/// A backup being received. The caller reads its pieces with
/// [`BackupDownload::next_piece`] and checks them with
/// [`crate::backup::Reader`] or [`crate::backup::verify`]: the transfer
/// itself proves nothing about the bytes.
pub struct BackupDownload {
    endpoint: String,
    response: reqwest::Response,
    idle_timeout: Duration,
}

impl BackupDownload {
    /// The node sending it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The backup's size in bytes, which the server says before it starts.
    pub fn len(&self) -> Option<u64> {
        // The header itself: reqwest's `content_length` reports the size
        // hint of its body wrapper, which is not always the header's.
        self.response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// Whether the server announced an empty body (never a valid backup).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The next piece, or `None` at the end. Fails if the connection breaks
    /// or no byte arrives for the client's request timeout.
    pub async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        match tokio::time::timeout(self.idle_timeout, self.response.chunk()).await {
            Ok(Ok(piece)) => Ok(piece.map(|b| b.to_vec())),
            Ok(Err(e)) => Err(transport_error(&self.endpoint, &e)),
            Err(_) => Err(ClientError::Unavailable {
                reason: format!(
                    "{}: no data for {:?} while receiving the backup",
                    self.endpoint, self.idle_timeout
                ),
            }),
        }
    }
}

impl Client {
    /// Starts downloading a backup from the node at `endpoint`, or with
    /// `None` from the first endpoint that answers (each tried once, in
    /// order). The node takes it at a linearizable point: every write
    /// acknowledged before this call is in it. Needs an `admin` token on a
    /// cluster with tokens.
    pub async fn backup(&self, endpoint: Option<&str>) -> Result<BackupDownload, ClientError> {
        let endpoints = match endpoint {
            Some(e) => vec![self.normalize(e)?],
            None => self.inner.endpoints.clone(),
        };
        let timeout = self.inner.options.request_timeout;
        let mut failures = Vec::new();
        for endpoint in &endpoints {
            let request = self.inner.http.request(Method::GET, format!("{endpoint}/v1/cluster/backup"));
            let error = match tokio::time::timeout(timeout, request.send()).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    return Ok(BackupDownload {
                        endpoint: endpoint.clone(),
                        response,
                        idle_timeout: timeout,
                    });
                }
                Ok(Ok(response)) => {
                    let status = response.status();
                    let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    refusal(Reply { status, body, endpoint: endpoint.clone() })
                }
                Ok(Err(e)) => transport_error(endpoint, &e),
                Err(_) => {
                    ClientError::Unavailable { reason: format!("{endpoint}: no answer within {timeout:?}") }
                }
            };
            if endpoints.len() == 1 {
                return Err(error);
            }
            match error {
                // Every node would say the same.
                e @ (ClientError::Tls { .. } | ClientError::Server { status: 401 | 403, .. }) => {
                    return Err(e)
                }
                e => failures.push(format!("{endpoint}: {e}")),
            }
        }
        Err(ClientError::Unavailable { reason: failures.join("; ") })
    }
}
