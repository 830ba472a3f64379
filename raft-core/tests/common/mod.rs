// Shared by the integration tests: a tiny deterministic application.
//
// `Register` stores one value per key and answers each write with the
// previous value, so tests can tell exactly which writes were applied.

use raft_core::{AppState, ApplyContext, StateError, StateMachine};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub key: String,
    pub value: String,
}

pub struct Register;

impl StateMachine for Register {
    type Command = Set;
    type Response = Option<String>;

    fn apply(
        &self,
        state: &mut AppState<'_>,
        _ctx: ApplyContext,
        cmd: Set,
    ) -> Result<Option<String>, StateError> {
        let old = state.get(cmd.key.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned());
        state.insert(cmd.key.as_bytes(), cmd.value.as_bytes())?;
        Ok(old)
    }
}

/// Applies `entries` through openraft's `RaftStateMachine::apply`, as the
/// core does: a stream of entries, nobody waiting for the responses.
#[allow(dead_code)] // not every test file applies entries
pub async fn apply(sm: &mut raft_core::storage::StateMachineStore, entries: Vec<raft_core::types::Entry>) {
    use openraft::storage::RaftStateMachine;
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
}
