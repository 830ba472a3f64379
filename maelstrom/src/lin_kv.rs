//! The lin-kv state machine: a map from JSON keys to JSON values, replicated
//! by Raft, with `write` and compare-and-set.
//!
//! Maelstrom's `lin-kv` workload asks for a linearizable key-value store
//! with three operations (`read`, `write`, `cas`). Only the two that change
//! state go through the Raft log, as [`LinKvCommand`]s; reads are served by
//! the leader after a read barrier (see [`crate::node`]) and never enter
//! the log.
//!
//! # Keys and values are JSON
//!
//! Maelstrom sends integers in practice, but the protocol allows any JSON,
//! and two spellings of one JSON value (`1` and `1.0`, or an object's
//! members in another order) are one value. Two texts say so:
//!
//! * the *identity* of a value ([`identity`]): equal exactly when the values
//!   are equal as JSON values, numbers by value and objects by their
//!   members (the same comparison `jepsen-checker` makes, whose canonical
//!   text it is). A key is stored under its identity, so `1` and `1.0` name
//!   one key, and `cas` compares the identities of `from` and of the
//!   current value;
//! * the *written* form of a value ([`canonical_json`]): object members
//!   sorted, no whitespace, numbers as the client wrote them. Values are
//!   stored this way, so a read returns what was written.
//!
//! # Determinism
//!
//! [`LinKv::apply`] depends on the stored map and the command only, as
//! every replica must compute the same response at the same log index (see
//! [`raft_core::app`]). A `cas` that does not match, or that names a
//! missing key, is a *successful* application that changes nothing and
//! answers [`LinKvResponse::Mismatch`] or [`LinKvResponse::NotFound`]:
//! every replica reaches the same verdict, so no replica may treat it as an
//! error.

use raft_core::{AppState, AppView, ApplyContext, StateError, StateMachine};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A state-changing lin-kv operation, as stored in the Raft log. Keys and
/// `from` are identities ([`identity`]); values to store are written forms
/// ([`canonical_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinKvCommand {
    /// Set `key` to `value`, creating the key if it is missing.
    Write {
        /// The key's identity.
        key: String,
        /// The new value, written form.
        value: String,
    },
    /// Set `key` to `to` if its current value is `from`.
    Cas {
        /// The key's identity.
        key: String,
        /// The identity of the value the key must hold now.
        from: String,
        /// The value to set, written form.
        to: String,
    },
}

/// What applying a [`LinKvCommand`] produced. Identical on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinKvResponse {
    /// The write or compare-and-set took effect.
    Ok,
    /// A `cas` named a key that does not exist; nothing changed
    /// (Maelstrom error 20).
    NotFound,
    /// A `cas` found another value than `from`; nothing changed
    /// (Maelstrom error 22).
    Mismatch {
        /// The value the key holds, written form.
        current: String,
    },
}

/// The lin-kv application. Stateless itself: the map lives in the state
/// that `raft-core` keeps, each value under its key's identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinKv;

impl StateMachine for LinKv {
    type Command = LinKvCommand;
    type Response = LinKvResponse;

    fn apply(
        &self,
        state: &mut AppState<'_>,
        _ctx: ApplyContext,
        command: LinKvCommand,
    ) -> Result<LinKvResponse, StateError> {
        match command {
            LinKvCommand::Write { key, value } => {
                state.insert(key.as_bytes(), value.as_bytes())?;
                Ok(LinKvResponse::Ok)
            }
            LinKvCommand::Cas { key, from, to } => match state.get(key.as_bytes())? {
                None => Ok(LinKvResponse::NotFound),
                Some(current) => {
                    let value: Value = serde_json::from_slice(&current).map_err(|e| {
                        StateError::corrupt(format!("stored value of key {key} is not JSON: {e}"))
                    })?;
                    if identity(&value) == from {
                        state.insert(key.as_bytes(), to.as_bytes())?;
                        Ok(LinKvResponse::Ok)
                    } else {
                        // Stored values were written from `String`s, so they
                        // are UTF-8 (and JSON, checked above).
                        Ok(LinKvResponse::Mismatch {
                            current: String::from_utf8_lossy(&current).into_owned(),
                        })
                    }
                }
            },
        }
    }
}

/// Reads the key whose identity is `key` from a view of the applied state:
/// the value as written, or `None` if the key does not exist.
pub fn read(view: &AppView, key: &str) -> Result<Option<Value>, StateError> {
    match view.get(key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::corrupt(format!("stored value of key {key} is not JSON: {e}"))),
    }
}

/// The identity of a JSON value: the same text for two values exactly when
/// they are equal as JSON values (`1`, `1.0` and `1e0` are one number;
/// object members compare by name, in any order). Compared, never shown.
pub fn identity(value: &Value) -> String {
    jepsen_checker::Json::from(value.clone()).canonical()
}

/// The written form of a JSON value: object keys sorted at every level, no
/// insignificant whitespace, numbers as written.
pub fn canonical_json(value: &Value) -> String {
    let mut value = value.clone();
    // A no-op unless serde_json's `preserve_order` feature is on somewhere
    // in the build, which would otherwise keep the client's key order.
    value.sort_all_objects();
    value.to_string()
}

#[cfg(test)]
mod tests {
    use raft_core::{Config, RaftNode, Storage};
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let a: Value = serde_json::from_str(r#"{ "b": [1, {"y": 2, "x": 1}], "a": null }"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"x":1,"y":2}]}"#);
        assert_eq!(canonical_json(&json!(7)), "7");
        assert_eq!(canonical_json(&json!(1.0)), "1.0", "a value reads back as written");
    }

    #[test]
    fn identities_are_equal_exactly_for_equal_json_values() {
        let parse = |s: &str| identity(&serde_json::from_str::<Value>(s).unwrap());
        assert_eq!(parse("1"), parse("1.0"));
        assert_eq!(parse("100"), parse("1e2"));
        assert_eq!(parse(r#"{"a":1,"b":[2.0]}"#), parse(r#"{"b":[2],"a":1.0}"#));
        assert_ne!(parse("1"), parse("2"));
        assert_ne!(parse("1"), parse(r#""1""#));
        assert_ne!(parse("[1,2]"), parse("[2,1]"));
    }

    /// Applies commands through a real single-node Raft: the state machine
    /// is only reachable through `raft-core`'s storage.
    #[tokio::test]
    async fn write_and_cas_semantics() {
        let node = RaftNode::start_local(
            1,
            Config::new("lin-kv-test"),
            Storage::InMemory,
            LinKv,
            &raft_core::network::local::LocalRouter::new(),
        )
        .await
        .unwrap();
        node.initialize([(1, raft_core::Node::new("n0", ""))].into()).await.unwrap();
        node.wait_for_leader(std::time::Duration::from_secs(10)).await.unwrap();

        let k = identity(&json!(1));
        let v = |n: i64| canonical_json(&json!(n));
        let cas = |from: i64, to: i64| LinKvCommand::Cas {
            key: k.clone(),
            from: identity(&json!(from)),
            to: v(to),
        };
        let apply = |cmd: LinKvCommand| {
            let node = &node;
            async move { node.write(&cmd).await.unwrap().response }
        };

        assert_eq!(apply(cas(0, 1)).await, LinKvResponse::NotFound);
        assert_eq!(apply(LinKvCommand::Write { key: k.clone(), value: v(3) }).await, LinKvResponse::Ok);
        assert_eq!(apply(cas(2, 4)).await, LinKvResponse::Mismatch { current: v(3) });
        assert_eq!(apply(cas(3, 4)).await, LinKvResponse::Ok);

        node.read_barrier().await.unwrap();
        let view = node.view().unwrap();
        assert_eq!(read(&view, &k).unwrap(), Some(json!(4)));
        assert_eq!(read(&view, &identity(&json!(2))).unwrap(), None);
        // `1.0` names the key `1`, and `from: 4.0` matches the value 4.
        assert_eq!(read(&view, &identity(&json!(1.0))).unwrap(), Some(json!(4)));
        let respelt = LinKvCommand::Cas { key: identity(&json!(1.0)), from: identity(&json!(4.0)), to: v(5) };
        assert_eq!(apply(respelt).await, LinKvResponse::Ok);
        node.shutdown().await;
    }
}
