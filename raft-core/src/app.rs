//! The interface an application implements to be replicated.
//!
//! Raft replicates a log of commands; every node applies the committed
//! commands in log order to its copy of the application's state. If the
//! application's `apply` is deterministic, every copy goes through the same
//! sequence of states, so every replica holds a prefix of one history. That
//! is the whole trick of a replicated state machine (Raft paper §2).
//!
//! An application supplies three things:
//!
//! * a **command** type: what a client asks the cluster to do (the log holds
//!   these commands, not their effects: statement-based replication, made
//!   safe by a deterministic `apply`, below);
//! * a **response** type: what applying one command returns to the client;
//! * [`StateMachine::apply`], which turns (state, command) into (state',
//!   response).
//!
//! The state itself is a sorted map from byte keys to byte values, kept by
//! this crate in memory, checkpointed into the same redb database as the
//! log, and reached through [`AppState`] (writes, during apply) and
//! [`AppView`] (reads). Because this crate owns the state, it also does the
//! rest for you: each checkpoint records the state together with the log
//! position it reflects (so a restart reloads it and re-applies only the
//! entries after it: nothing applied is lost, nothing is applied twice),
//! snapshots are checkpoints, and the log is purged behind them. The whole
//! state must fit in memory; see [`crate::storage::state_machine`].
//!
//! # Determinism
//!
//! `apply` runs on every replica, at different times, possibly years apart
//! when a new node replays the log. It must depend on nothing but the state
//! and the command: no clock, no random numbers, no local configuration, no
//! iteration over a `HashMap`. Anything time-like that a command needs (an
//! expiry, a timestamp) must be chosen by the leader *before* proposing and
//! carried inside the command, or derived from [`ApplyContext`]. A database
//! that replicates SQL statements goes wrong on `now()` for exactly this
//! reason; replicating commands is safe only under this rule.
//!
//! # Side outputs
//!
//! `apply` works on a copy of the state that becomes the applied state only
//! when its whole batch has applied, and a restart or a snapshot install
//! replaces the state without any `apply`. An application that produces
//! something besides the state (a stream of the changes it made, say) is
//! told about each of these through [`StateMachine::on_state_event`], so
//! that it publishes what a batch produced only once the batch is the
//! applied state, and knows when the history it saw has a gap.
//!
//! # Example: a replicated counter
//!
//! ```
//! use raft_core::app::{AppState, ApplyContext, StateError, StateMachine};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum CounterCommand { Add(i64), Reset }
//!
//! struct Counter;
//!
//! impl StateMachine for Counter {
//!     type Command = CounterCommand;
//!     type Response = i64; // the value after the command
//!
//!     fn apply(&self, state: &mut AppState<'_>, _ctx: ApplyContext, cmd: CounterCommand)
//!         -> Result<i64, StateError>
//!     {
//!         let old = match state.get(b"count")? {
//!             Some(bytes) => i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])),
//!             None => 0,
//!         };
//!         let new = match cmd { CounterCommand::Add(n) => old.wrapping_add(n), CounterCommand::Reset => 0 };
//!         state.insert(b"count", &new.to_le_bytes())?;
//!         Ok(new)
//!     }
//! }
//! ```
//!
//! A complete program that runs this counter on a three-node cluster is
//! `raft-core/examples/counter.rs`.

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use redb::TableDefinition;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::LogId;

/// One entry of the application state: key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The table that holds the application's state.
pub(crate) const APP_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("app");

/// A replicated application. See the [module docs](self).
pub trait StateMachine: Send + Sync + 'static {
    /// What clients ask for. Encoded into the log when proposed.
    type Command: Serialize + DeserializeOwned + Send + Sync + fmt::Debug + 'static;
    /// What applying a command returns. Sent back to the proposing client.
    type Response: Serialize + DeserializeOwned + Send + Sync + fmt::Debug + 'static;

    /// Applies one committed command to the state.
    ///
    /// Called on every replica, once per committed command, in log order,
    /// on a copy of the state that becomes the applied state, together with
    /// `ctx.log_id` as the applied position, only when the whole batch has
    /// applied. It must be quick (it works on memory; a large batch runs on
    /// a blocking thread). If it returns an error, the batch is abandoned
    /// and the node stops: an error here means the stored state is corrupt,
    /// not that the command was invalid. An invalid command must instead
    /// produce a response that says so, and change nothing, identically on
    /// every replica.
    fn apply(
        &self,
        state: &mut AppState<'_>,
        ctx: ApplyContext,
        command: Self::Command,
    ) -> Result<Self::Response, StateError>;

    /// Told what became of the applied state: loaded, extended by a batch,
    /// a batch abandoned, or replaced by a snapshot. See [`StateEvent`].
    ///
    /// For side outputs of `apply` that must not be seen before the state
    /// they describe is, such as a change stream: `apply` may stage what it
    /// wants to publish, and this publishes it on
    /// [`StateEvent::Applied`] or drops it on [`StateEvent::Abandoned`].
    ///
    /// Called on every replica, in order with `apply` (never concurrently
    /// with it or with another call of this), while the store holds the
    /// lock of the applied state: it must be quick and must not block or
    /// call back into the node. Readers can already see the state the
    /// event describes when it is called. The default does nothing.
    fn on_state_event(&self, event: StateEvent) {
        let _ = event;
    }
}

/// What became of the applied state, told to
/// [`StateMachine::on_state_event`]. Each variant carries `applied`: the
/// index of the last log entry the state now reflects (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateEvent {
    /// The store opened and loaded the last checkpoint. The entries after
    /// `applied` will be applied (again) from the log, so a command that
    /// was applied before a restart may be applied once more, to the same
    /// state with the same result.
    Loaded {
        /// The checkpoint's index.
        applied: u64,
    },
    /// Every command `apply` was given since the previous event is now part
    /// of the applied state (possibly none: a batch of blank or membership
    /// entries still moves `applied` on).
    Applied {
        /// The index of the batch's last entry.
        applied: u64,
    },
    /// `apply` failed, and the commands it was given since the previous
    /// event were thrown away: the state is as it was before them. The
    /// node stops applying after this.
    Abandoned,
    /// A snapshot from the leader replaced the whole state. The entries
    /// between the previous state and `applied` were never applied here.
    Installed {
        /// The snapshot's last index.
        applied: u64,
    },
}

/// An application with its command and response types erased: it takes a
/// command as the bytes the log holds and returns its response as bytes.
///
/// The storage and openraft's `Raft` handle work with this, so that neither
/// is generic over the application: [`crate::types::Raft`] is one type for
/// every embedder, and only [`crate::RaftNode`] knows the command type.
pub(crate) trait EncodedStateMachine: Send + Sync + 'static {
    /// Decodes `command`, applies it, and encodes the result. A command that
    /// does not decode changes nothing and gets an error response: every
    /// replica runs the same decoder on the same bytes, so every replica
    /// gives the same answer.
    fn apply_encoded(
        &self,
        state: &mut AppState<'_>,
        ctx: ApplyContext,
        command: &[u8],
    ) -> Result<Vec<u8>, StateError>;

    /// [`StateMachine::on_state_event`].
    fn state_event(&self, event: StateEvent);
}

impl<A: StateMachine> EncodedStateMachine for A {
    fn apply_encoded(
        &self,
        state: &mut AppState<'_>,
        ctx: ApplyContext,
        command: &[u8],
    ) -> Result<Vec<u8>, StateError> {
        let result: Result<A::Response, String> = match crate::codec::decode::<A::Command>(command) {
            Ok(c) => Ok(self.apply(state, ctx, c)?),
            Err(e) => Err(e.to_string()),
        };
        Ok(crate::codec::encode(&result))
    }

    fn state_event(&self, event: StateEvent) {
        self.on_state_event(event);
    }
}

/// Where in the log the command being applied sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// The entry's log id. Identical on every replica, so it may be used to
    /// make deterministic decisions (for example to expire client sessions
    /// after a number of entries).
    pub log_id: LogId,
}

impl ApplyContext {
    /// The entry's log index.
    pub fn index(&self) -> u64 {
        self.log_id.index
    }
}

/// Local storage failed, or holds something that cannot be right, while
/// reading or writing the application state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// redb failed.
    #[error("state machine storage: {0}")]
    Storage(#[from] redb::Error),
    /// A stored record does not decode: the file was corrupted, or written
    /// by an incompatible build.
    #[error("state machine data is corrupt: {0}")]
    Corrupt(String),
}

impl StateError {
    /// A stored record is not what it must be.
    pub fn corrupt(what: impl Into<String>) -> Self {
        StateError::Corrupt(what.into())
    }
}

impl From<crate::codec::DecodeError> for StateError {
    fn from(e: crate::codec::DecodeError) -> Self {
        StateError::Corrupt(e.to_string())
    }
}

impl From<redb::StorageError> for StateError {
    fn from(e: redb::StorageError) -> Self {
        StateError::Storage(e.into())
    }
}

impl From<redb::TableError> for StateError {
    fn from(e: redb::TableError) -> Self {
        StateError::Storage(e.into())
    }
}

impl From<redb::TransactionError> for StateError {
    fn from(e: redb::TransactionError) -> Self {
        StateError::Storage(e.into())
    }
}

/// A key or a value of the application state: shared, so that copying the
/// state (for a read view, or a snapshot) copies pointers, not bytes.
pub(crate) type Bytes = Arc<[u8]>;

/// The application state: a persistent ordered map, whose clones share
/// structure and cost O(1).
pub(crate) type StateMap = imbl::OrdMap<Key, Bytes>;

/// How many bytes a [`Key`] holds in place.
const INLINE_KEY: usize = 22;

/// A key of the application state, ordered as its bytes are.
///
/// A key of up to 22 bytes is held in place, inside the map's node; a
/// longer one behind a shared pointer, as values are. Why: each applied
/// batch copies every map node it changes (the previous state stays
/// readable through the views taken of it), and finding a key compares it
/// with a few keys of each node on the way down. Keys held in place are
/// copied with the node's memory and compared without following a pointer
/// to another part of the heap; shared ones cost a reference count's
/// increment on every copy, and a decrement when the copy is dropped.
#[derive(Clone)]
pub(crate) enum Key {
    /// Bytes `..len` of `bytes`.
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY],
    },
    Shared(Bytes),
}

impl Key {
    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Shared(bytes) => bytes,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Key {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            // At most INLINE_KEY (22): fits in a u8.
            Key::Inline { len: key.len() as u8, bytes }
        } else {
            Key::Shared(key.into())
        }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// Write access to the application state, valid during one `apply` batch.
///
/// The batch works on its own copy of the state; the store publishes it
/// only if every command of the batch applied, so an error leaves the
/// state as it was.
pub struct AppState<'t> {
    pub(crate) data: &'t mut StateMap,
}

impl AppState<'_> {
    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.data.get(key).map(|v| v.to_vec()))
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.data.insert(key.into(), value.into());
        Ok(())
    }

    /// Stores `value` under `key` and returns the value it replaced: what
    /// [`AppState::get`] then [`AppState::insert`] would do, finding the
    /// key once.
    pub fn replace(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.data.insert(key.into(), value.into()).map(|v| v.to_vec()))
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool, StateError> {
        Ok(self.data.remove(key).is_some())
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order,
    /// starting at the first key `>= start` (pass `prefix` to start at the
    /// beginning).
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StateError> {
        Ok(scan_prefix(self.data, prefix, start, limit))
    }
}

/// The applied state as of one log position, shared by every read view
/// taken while it was the newest.
pub(crate) struct Published {
    pub(crate) data: StateMap,
    pub(crate) applied: Option<LogId>,
}

/// A consistent read-only view of the application state, and the log
/// position it reflects. Taking one costs O(1), and it never changes:
/// entries applied afterwards do not show through it.
pub struct AppView {
    pub(crate) state: Arc<Published>,
}

impl AppView {
    /// The last log entry whose effect this view includes. Every key read
    /// through this view reflects exactly the entries up to this one: the
    /// view is a consistent prefix of the replicated history.
    pub fn applied(&self) -> Option<LogId> {
        self.state.applied
    }

    /// The index of [`AppView::applied`], or 0 before anything was applied.
    pub fn applied_index(&self) -> u64 {
        self.state.applied.map_or(0, |l| l.index)
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.state.data.get(key).map(|v| v.to_vec()))
    }

    /// See [`AppState::scan_prefix`].
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StateError> {
        Ok(scan_prefix(&self.state.data, prefix, start, limit))
    }

    /// Visits every entry in key order (used for digests and snapshots).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), StateError> {
        for (k, v) in self.state.data.iter() {
            f(k, v);
        }
        Ok(())
    }
}

fn scan_prefix(data: &StateMap, prefix: &[u8], start: &[u8], limit: usize) -> Vec<KeyValue> {
    let start = if start < prefix { prefix } else { start };
    data.range::<_, [u8]>((Bound::Included(start), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Byte strings around the length where keys stop being held in place.
    fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..=2 * INLINE_KEY)
    }

    #[test]
    fn replace_returns_the_value_it_replaced() {
        let mut data = StateMap::new();
        let mut state = AppState { data: &mut data };
        assert_eq!(state.replace(b"k", b"1").unwrap(), None);
        assert_eq!(state.replace(b"k", b"2").unwrap(), Some(b"1".to_vec()));
        assert_eq!(state.get(b"k").unwrap(), Some(b"2".to_vec()));
        let long = [7u8; 2 * INLINE_KEY];
        assert_eq!(state.replace(&long, b"x").unwrap(), None);
        assert_eq!(state.replace(&long, b"y").unwrap(), Some(b"x".to_vec()));
        assert!(state.remove(&long).unwrap());
        assert_eq!(state.get(&long).unwrap(), None);
    }

    proptest! {
        /// A key compares, hashes and reads back as its bytes do, whether
        /// it is held in place or shared.
        #[test]
        fn keys_order_as_their_bytes(a in key_bytes(), b in key_bytes()) {
            let (ka, kb) = (Key::from(&a[..]), Key::from(&b[..]));
            prop_assert_eq!(&ka[..], &a[..]);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(matches!(ka, Key::Inline { .. }), a.len() <= INLINE_KEY);
        }

        /// The map finds, ranges over and removes keys by their bytes.
        #[test]
        fn the_state_map_finds_keys_by_their_bytes(keys in prop::collection::btree_set(key_bytes(), 0..40)) {
            let mut map = StateMap::new();
            for k in &keys {
                map.insert(Key::from(&k[..]), Bytes::from(&k[..]));
            }
            for k in &keys {
                prop_assert_eq!(map.get(&k[..]).map(|v| &v[..]), Some(&k[..]));
            }
            let in_order: Vec<&[u8]> = map.keys().map(|k| &k[..]).collect();
            let expected: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            prop_assert_eq!(in_order, expected);
            for k in &keys {
                prop_assert!(map.remove(&k[..]).is_some());
            }
            prop_assert!(map.is_empty());
        }
    }
}
