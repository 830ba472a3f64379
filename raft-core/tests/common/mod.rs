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

/// Writes `cmd` through whichever node leads (`leader` finds it), retrying
/// while leadership moves, until acknowledged or `wait` passes. Returns the
/// write's log index. `Register` writes are idempotent (same key, same
/// value), so retrying an indeterminate one is safe.
#[allow(dead_code)] // not every test file writes through a leader
pub async fn write_through_leader<F, Fut>(
    nodes: &std::collections::BTreeMap<raft_core::NodeId, raft_core::RaftNode<Register>>,
    leader: F,
    cmd: &Set,
    wait: std::time::Duration,
) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = raft_core::NodeId>,
{
    use raft_core::WriteError;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match nodes[&leader().await].write(cmd).await {
            Ok(w) => return w.log_id.index,
            Err(WriteError::NotLeader { .. } | WriteError::Indeterminate { .. }) => {}
            Err(e) => panic!("write {}: {e}", cmd.key),
        }
        assert!(std::time::Instant::now() < deadline, "write {} not acknowledged within {wait:?}", cmd.key);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
