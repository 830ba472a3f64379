//! Finding the leader: which endpoint each attempt goes to. The client sends
//! to the leader as last hinted, or else to the last endpoint that answered,
//! and moves on to the next endpoint when one fails ("Finding the leader" in
//! `mod.rs`). Endpoints and hints are normalized to one form,
//! `scheme://host:port`, so that a hint compares equal to the endpoint it
//! names.

use super::{lock, Client, ClientError};

/// Where to send the next request that may go to any node.
#[derive(Debug, Default)]
pub(super) struct Routing {
    /// The leader, as last hinted, or the last endpoint that answered.
    pub(super) preferred: Option<String>,
    /// The endpoint to try next when there is no preferred one.
    cursor: usize,
}

/// Who may answer a call.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'a> {
    /// Any node, preferably the leader: the client routes and fails over.
    Cluster,
    /// This node only (a normalized base URL).
    Node(&'a str),
}

impl Client {
    /// The endpoint for the next attempt.
    pub(super) fn pick(&self, target: Target<'_>) -> String {
        match target {
            Target::Node(endpoint) => endpoint.to_owned(),
            Target::Cluster => {
                let routing = lock(&self.inner.routing);
                routing.preferred.clone().unwrap_or_else(|| {
                    self.inner.endpoints[routing.cursor % self.inner.endpoints.len()].clone()
                })
            }
        }
    }

    /// Moves away from an endpoint that failed, towards the leader if one was
    /// hinted. Returns true if the next attempt goes to a newly hinted leader.
    pub(super) fn note_failure(
        &self,
        target: Target<'_>,
        endpoint: &str,
        leader_hint: Option<String>,
    ) -> bool {
        if matches!(target, Target::Node(_)) {
            return false;
        }
        let mut routing = lock(&self.inner.routing);
        if let Some(hint) = leader_hint.filter(|h| h != endpoint) {
            routing.preferred = Some(hint);
            return true;
        }
        if routing.preferred.as_deref() == Some(endpoint) {
            routing.preferred = None;
        }
        let n = self.inner.endpoints.len();
        routing.cursor = match self.inner.endpoints.iter().position(|e| e == endpoint) {
            Some(i) => (i + 1) % n,
            None => (routing.cursor + 1) % n,
        };
        false
    }
}

/// Turns an address into a base URL `http://host:port`, as
/// [`normalize_endpoint_for`] does without TLS.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    normalize_endpoint_for(endpoint, false)
}

/// Turns an address into a base URL `scheme://host:port`.
///
/// Accepts `host:port`, which becomes `https://host:port` if `https` is set
/// and `http://host:port` if not, and `http://host:port` and
/// `https://host:port` as they are (a trailing `/` is fine); refuses other
/// schemes and addresses with a path.
pub fn normalize_endpoint_for(endpoint: &str, https: bool) -> Result<String, ClientError> {
    let invalid =
        |reason: &str| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.into() };
    let trimmed = endpoint.trim();
    let scheme = if https { "https" } else { "http" };
    let with_scheme =
        if trimmed.contains("://") { trimmed.to_owned() } else { format!("{scheme}://{trimmed}") };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("only http:// and https:// are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("give host:port only, without a path"));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalize_to_http_base_urls() {
        for (given, want) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            (" localhost:9 ", "http://localhost:9"),
            ("[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(normalize_endpoint(given).unwrap(), want, "{given:?}");
        }
        for (given, want) in [
            ("127.0.0.1:8080", "https://127.0.0.1:8080"),
            ("https://localhost:8080/", "https://localhost:8080"),
            // A scheme given explicitly wins.
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(normalize_endpoint_for(given, true).unwrap(), want, "{given:?}");
        }
        assert_eq!(normalize_endpoint("https://h:1").unwrap(), "https://h:1");
        for bad in ["127.0.0.1:8080/v1", "http://", "", "ftp://x:1"] {
            assert!(
                matches!(normalize_endpoint(bad), Err(ClientError::InvalidEndpoint { .. })),
                "{bad:?} should be refused"
            );
        }
        assert!(Client::new(vec![]).is_err());
        // HTTPS without a CA to trust cannot work; say so up front.
        let err = Client::new(vec!["https://127.0.0.1:1".into()]).unwrap_err();
        assert!(err.to_string().contains("--cacert"), "{err}");
    }
}
