//! The key operations: get, put, delete, compare-and-swap and list. Each
//! turns its typed arguments into one [`Call`] for the retry loop, and the
//! answer back into a typed result ([`Read`], [`CasOutcome`], [`Listing`]).
//! Writes lease an exactly-once session for their whole life; keys travel
//! percent-encoded as one path segment ([`encode_key`]).

use std::fmt::Write as _;

use reqwest::{Method, StatusCode};
use serde::Serialize;

use super::leader::Target;
use super::retry::{decode, Call, Kind, Reply};
use super::session::SessionLease;
use super::{Client, ClientError};
use crate::api::{
    codes, CasRequest, Consistency, DeleteRequest, Durability, ErrorBody, JsonValue, ListResponse,
    PutRequest, ReadResponse, WriteResponse,
};

/// A value read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The log index the read reflects (the serving node's applied index).
    pub index: u64,
    /// The node that served the read.
    pub node: u64,
    /// The highest index the serving node knew to be committed. For a
    /// `stale` read, `committed_index - index` is how far behind it was.
    pub committed_index: u64,
}

impl From<Read> for ReadResponse {
    /// Back to the wire form (what `kvctl --json` prints).
    fn from(r: Read) -> Self {
        ReadResponse {
            key: r.key,
            value: JsonValue::from_bytes(&r.value),
            index: r.index,
            node: r.node,
            committed_index: r.committed_index,
        }
    }
}

/// The outcome of a compare-and-swap. A mismatch is an outcome, not an
/// error: `succeeded` is false and `current` holds the value that did not
/// match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the expected value matched and the new value was stored.
    pub succeeded: bool,
    /// The value after the operation (`None`: the key does not exist).
    pub current: Option<Vec<u8>>,
    /// The log index of the operation.
    pub index: u64,
    /// The node that committed it.
    pub node: u64,
    /// True if this was the remembered outcome of an earlier attempt.
    pub duplicate: bool,
}

impl From<CasOutcome> for WriteResponse {
    /// Back to the wire form (what `kvctl --json` prints).
    fn from(c: CasOutcome) -> Self {
        WriteResponse {
            index: c.index,
            node: c.node,
            duplicate: c.duplicate,
            committed: true,
            created: None,
            existed: None,
            succeeded: Some(c.succeeded),
            current: c.current.as_deref().map(JsonValue::from_bytes),
        }
    }
}

/// One key and its value, from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

/// The keys under a prefix, in byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys and values.
    pub items: Vec<KeyValue>,
    /// True if more keys matched than the limit allowed.
    pub more: bool,
    /// See [`Read::index`].
    pub index: u64,
    /// See [`Read::node`].
    pub node: u64,
    /// See [`Read::committed_index`].
    pub committed_index: u64,
}

impl From<Listing> for ListResponse {
    /// Back to the wire form (what `kvctl --json` prints).
    fn from(l: Listing) -> Self {
        ListResponse {
            items: l
                .items
                .into_iter()
                .map(|kv| crate::api::ListItem { key: kv.key, value: JsonValue::from_bytes(&kv.value) })
                .collect(),
            more: l.more,
            index: l.index,
            node: l.node,
            committed_index: l.committed_index,
        }
    }
}

impl Client {
    /// Reads `key`, from the leader or whichever node the client can reach
    /// (a `session` or `stale` read may be served by any node). `Ok(None)`:
    /// the key does not exist. `consistency: None` uses the default.
    pub async fn get(
        &self,
        key: &str,
        consistency: impl Into<Option<Consistency>>,
    ) -> Result<Option<Read>, ClientError> {
        self.get_via(Target::Cluster, key, consistency.into()).await
    }

    /// Reads `key` from the node at `endpoint` and no other (for a `stale`
    /// read, that node's state; for a linearizable one, the node may still
    /// ask the leader). Retries transient failures on that node until the
    /// deadline.
    pub async fn get_from(
        &self,
        endpoint: &str,
        key: &str,
        consistency: impl Into<Option<Consistency>>,
    ) -> Result<Option<Read>, ClientError> {
        let endpoint = self.normalize(endpoint)?;
        self.get_via(Target::Node(&endpoint), key, consistency.into()).await
    }

    async fn get_via(
        &self,
        target: Target<'_>,
        key: &str,
        consistency: Option<Consistency>,
    ) -> Result<Option<Read>, ClientError> {
        let consistency = consistency.unwrap_or(self.inner.options.consistency);
        let call = Call {
            method: Method::GET,
            path: kv_path(key)?,
            query: self.read_query(consistency),
            body: None,
            accept: &[StatusCode::NOT_FOUND],
            kind: Kind::Read,
            target,
            once: false,
        };
        let reply = self.execute(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            let body: ErrorBody = decode(&reply)?;
            if body.error != codes::KEY_NOT_FOUND {
                return Err(ClientError::Server { status: reply.status.as_u16(), body });
            }
            if let Some(index) = body.index {
                self.observe(index);
            }
            return Ok(None);
        }
        let r: ReadResponse = decode(&reply)?;
        self.observe(r.index);
        Ok(Some(Read {
            value: value_bytes(&r.value, &reply.endpoint)?,
            key: r.key,
            index: r.index,
            node: r.node,
            committed_index: r.committed_index,
        }))
    }

    /// Stores `value` under `key`, exactly once. `durability: None` uses
    /// the default.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        durability: impl Into<Option<Durability>>,
    ) -> Result<WriteResponse, ClientError> {
        self.put_in_lease(key, value, None, durability.into()).await
    }

    /// A put, attaching the key to `lease` if given (`PUT ...?lease=ID`).
    pub(super) async fn put_in_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<u64>,
        durability: Option<Durability>,
    ) -> Result<WriteResponse, ClientError> {
        let path = kv_path(key)?;
        let session = self.lease();
        let body = PutRequest {
            value: JsonValue::from_bytes(value),
            client_id: Some(session.client_id),
            seq: Some(session.seq),
        };
        let mut call = self.write_call(Method::PUT, path, &body, durability, &session, &[]);
        call.query.extend(lease.map(|id| ("lease", id.to_string())));
        let reply = self.execute(&call).await?;
        self.write_response(&reply)
    }

    /// Removes `key`, exactly once. Succeeds whether or not the key existed
    /// (`existed` in the answer says which).
    pub async fn delete(
        &self,
        key: &str,
        durability: impl Into<Option<Durability>>,
    ) -> Result<WriteResponse, ClientError> {
        let path = kv_path(key)?;
        let lease = self.lease();
        let body = DeleteRequest { client_id: Some(lease.client_id), seq: Some(lease.seq) };
        let call = self.write_call(Method::DELETE, path, &body, durability.into(), &lease, &[]);
        let reply = self.execute(&call).await?;
        self.write_response(&reply)
    }

    /// Stores `new` under `key` if it currently holds `expected` (`None`:
    /// if the key does not exist), exactly once. A mismatch is a normal
    /// outcome (`succeeded: false`, with the current value), not an error.
    ///
    /// A CAS needs its applied result, so it cannot be acknowledged at
    /// `leader` durability: `durability: None` uses the client's default,
    /// or `majority` if that default is `leader`; asking for `leader`
    /// explicitly is refused by the server (400).
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        durability: impl Into<Option<Durability>>,
    ) -> Result<CasOutcome, ClientError> {
        let path = format!("/v1/cas/{}", encode_key(key)?);
        let lease = self.lease();
        let expected = expected.map(JsonValue::from_bytes);
        let body = CasRequest {
            expect_absent: expected.is_none(),
            expected: expected.as_ref().and_then(|e| e.value.clone()),
            expected_b64: expected.and_then(|e| e.value_b64),
            value: JsonValue::from_bytes(new),
            client_id: Some(lease.client_id),
            seq: Some(lease.seq),
        };
        let durability = durability.into().or(match self.inner.options.durability {
            Durability::Leader => Some(Durability::Majority),
            _ => None,
        });
        let call = self.write_call(
            Method::POST,
            path,
            &body,
            durability,
            &lease,
            &[StatusCode::PRECONDITION_FAILED],
        );
        let reply = self.execute(&call).await?;
        let w = self.write_response(&reply)?;
        let current = match &w.current {
            Some(v) => Some(value_bytes(v, &reply.endpoint)?),
            None => None,
        };
        Ok(CasOutcome {
            succeeded: reply.status.is_success() && w.succeeded != Some(false),
            current,
            index: w.index,
            node: w.node,
            duplicate: w.duplicate,
        })
    }

    /// Lists up to `limit` keys starting with `prefix` (all keys: `""`), in
    /// byte order, with the server's default limit if `None`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
        consistency: impl Into<Option<Consistency>>,
    ) -> Result<Listing, ClientError> {
        let consistency = consistency.into().unwrap_or(self.inner.options.consistency);
        let mut query = vec![("prefix", prefix.to_owned())];
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        query.extend(self.read_query(consistency));
        let call = Call {
            method: Method::GET,
            path: "/v1/kv".into(),
            query,
            body: None,
            accept: &[],
            kind: Kind::Read,
            target: Target::Cluster,
            once: false,
        };
        let reply = self.execute(&call).await?;
        let l: ListResponse = decode(&reply)?;
        self.observe(l.index);
        let items = l
            .items
            .into_iter()
            .map(|item| Ok(KeyValue { value: value_bytes(&item.value, &reply.endpoint)?, key: item.key }))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Listing { items, more: l.more, index: l.index, node: l.node, committed_index: l.committed_index })
    }

    pub(super) fn write_call<'a>(
        &self,
        method: Method,
        path: String,
        body: &impl Serialize,
        durability: Option<Durability>,
        lease: &SessionLease<'_>,
        accept: &'a [StatusCode],
    ) -> Call<'a> {
        let durability = durability.unwrap_or(self.inner.options.durability);
        Call {
            method,
            path,
            query: vec![("durability", durability.name().into())],
            // The request types are plain structs of strings and numbers:
            // serializing them cannot fail.
            body: Some(serde_json::to_vec(body).expect("invariant: request bodies serialize to JSON")),
            accept,
            kind: Kind::Write { client_id: lease.client_id, seq: lease.seq },
            target: Target::Cluster,
            once: false,
        }
    }

    pub(super) fn write_response(&self, reply: &Reply) -> Result<WriteResponse, ClientError> {
        let w: WriteResponse = decode(reply)?;
        self.observe(w.index);
        Ok(w)
    }

    fn read_query(&self, consistency: Consistency) -> Vec<(&'static str, String)> {
        let mut query = vec![("consistency", consistency_name(consistency).to_owned())];
        if consistency == Consistency::Session {
            query.push(("token", self.session_token().to_string()));
        }
        query
    }
}

/// Percent-encodes a key for use as one path segment: every byte of its
/// UTF-8 except the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`)
/// becomes `%XX`, so `/`, `?`, `#`, `%` and spaces survive the trip.
///
/// Refuses the empty key and the keys `.` and `..`: URL parsers remove
/// those as dot-segments (even when written `%2E`), so no path can carry them.
pub fn encode_key(key: &str) -> Result<String, ClientError> {
    if key.is_empty() {
        return Err(ClientError::InvalidArgument { reason: "the key must not be empty".into() });
    }
    if key == "." || key == ".." {
        return Err(ClientError::InvalidArgument {
            reason: format!("the key {key:?} cannot be sent in a URL path"),
        });
    }
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(out)
}

/// The path of a key: `/v1/kv/{encoded key}`.
pub fn kv_path(key: &str) -> Result<String, ClientError> {
    Ok(format!("/v1/kv/{}", encode_key(key)?))
}

fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Linearizable => "linearizable",
        Consistency::Session => "session",
        Consistency::Stale => "stale",
    }
}

fn value_bytes(value: &JsonValue, endpoint: &str) -> Result<Vec<u8>, ClientError> {
    value.to_bytes().map_err(|reason| ClientError::Decode { endpoint: endpoint.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encode_key_escapes_everything_but_unreserved() {
        assert_eq!(encode_key("AZaz09-._~").unwrap(), "AZaz09-._~");
        assert_eq!(encode_key("a/b c?d#e%f+g").unwrap(), "a%2Fb%20c%3Fd%23e%25f%2Bg");
        assert_eq!(encode_key("é").unwrap(), "%C3%A9");
        assert_eq!(kv_path("users/1").unwrap(), "/v1/kv/users%2F1");
    }

    #[test]
    fn encode_key_refuses_keys_no_path_can_carry() {
        for key in ["", ".", ".."] {
            let err = encode_key(key).unwrap_err();
            assert!(matches!(err, ClientError::InvalidArgument { .. }), "{key:?}: {err}");
            assert_eq!(err.took_effect(), Some(false));
        }
        // Dots inside a longer key are fine.
        assert_eq!(encode_key("...").unwrap(), "...");
    }

    #[test]
    fn encoded_keys_survive_url_parsing_unchanged() {
        // The URL parser normalizes paths (dot segments, `\`): an encoded key
        // must reach the server byte for byte.
        for key in ["a/../b", "./x", "x/.", "back\\slash", "%2F", "a b", "…/..", "~user"] {
            let path = kv_path(key).unwrap();
            let url = reqwest::Url::parse(&format!("http://127.0.0.1:1{path}")).unwrap();
            assert_eq!(url.path(), path, "key {key:?}");
        }
    }

    #[test]
    fn values_round_trip_through_their_json_form() {
        for bytes in [b"hello".as_slice(), b"", &[0xff, 0x00, 0x80], "ünï".as_bytes()] {
            let json = serde_json::to_string(&JsonValue::from_bytes(bytes)).unwrap();
            let back: JsonValue = serde_json::from_str(&json).unwrap();
            assert_eq!(value_bytes(&back, "e").unwrap(), bytes, "{json}");
        }
        let read = Read { key: "k".into(), value: vec![0xff], index: 4, node: 1, committed_index: 5 };
        let wire = serde_json::to_value(ReadResponse::from(read)).unwrap();
        assert_eq!(
            wire,
            json!({"key": "k", "value_b64": "/w==", "index": 4, "node": 1, "committed_index": 5})
        );
        let cas = CasOutcome { succeeded: false, current: None, index: 9, node: 2, duplicate: false };
        let wire = serde_json::to_value(WriteResponse::from(cas)).unwrap();
        assert_eq!(
            wire,
            json!({"index": 9, "node": 2, "duplicate": false, "committed": true, "succeeded": false})
        );
        let bad = JsonValue { value: None, value_b64: Some("not base64!".into()) };
        assert!(matches!(value_bytes(&bad, "e"), Err(ClientError::Decode { .. })));
    }
}
