//! `StateMachine::on_state_event`: the store tells the application what
//! became of the applied state, in order with `apply`: loaded at open,
//! extended by a batch, a batch abandoned, replaced by a snapshot. An
//! application that stages side outputs in `apply` (kv-app's change
//! stream) relies on exactly this sequence to publish only what the applied
//! state holds.

use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use raft_core::codec;
use raft_core::storage::{Db, StateMachineStore};
use raft_core::types::{log_id, Batch, Entry, EntryPayload};
use raft_core::{AppState, ApplyContext, StateError, StateEvent, StateMachine};

/// What the application saw, in order: `Apply(index, value)` for each
/// command, and each state event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Apply(u64, String),
    Event(StateEvent),
}

/// Stores each command's value under "v" and records what it sees; the
/// value "corrupt" makes `apply` fail, as a damaged state would.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl StateMachine for Recorder {
    type Command = String;
    type Response = ();

    fn apply(&self, state: &mut AppState<'_>, ctx: ApplyContext, cmd: String) -> Result<(), StateError> {
        self.0.lock().unwrap().push(Seen::Apply(ctx.index(), cmd.clone()));
        if cmd == "corrupt" {
            return Err(StateError::corrupt("the test asked for it"));
        }
        state.insert(b"v", cmd.as_bytes())
    }

    fn on_state_event(&self, event: StateEvent) {
        self.0.lock().unwrap().push(Seen::Event(event));
    }
}

fn commands(index: u64, values: &[&str]) -> Entry {
    let batch = Batch::new(values.iter().map(|v| codec::encode(&v.to_string()).into()).collect());
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(batch) }
}

fn value(sm: &StateMachineStore) -> Option<Vec<u8>> {
    sm.view().unwrap().get(b"v").unwrap()
}

#[test]
fn a_batch_is_announced_once_after_all_its_commands_and_blank_entries_move_applied_on() {
    let app = Recorder::default();
    let sm = StateMachineStore::open(Db::in_memory(), app.clone()).unwrap();
    assert_eq!(app.take(), vec![Seen::Event(StateEvent::Loaded { applied: 0 })]);

    sm.apply_blocking(vec![commands(1, &["a", "b"]), commands(2, &["c"])]).unwrap();
    assert_eq!(
        app.take(),
        vec![
            Seen::Apply(1, "a".into()),
            Seen::Apply(1, "b".into()),
            Seen::Apply(2, "c".into()),
            Seen::Event(StateEvent::Applied { applied: 2 }),
        ]
    );
    sm.apply_blocking(vec![Entry { log_id: log_id(1, 3), payload: EntryPayload::Blank }]).unwrap();
    assert_eq!(app.take(), vec![Seen::Event(StateEvent::Applied { applied: 3 })]);
}

#[test]
fn a_failed_batch_is_abandoned_and_leaves_the_state_as_it_was() {
    let app = Recorder::default();
    let sm = StateMachineStore::open(Db::in_memory(), app.clone()).unwrap();
    sm.apply_blocking(vec![commands(1, &["kept"])]).unwrap();
    app.take();

    let failed = sm.apply_blocking(vec![commands(2, &["lost"]), commands(3, &["corrupt"])]);
    assert!(failed.is_err());
    assert_eq!(
        app.take(),
        vec![
            Seen::Apply(2, "lost".into()),
            Seen::Apply(3, "corrupt".into()),
            Seen::Event(StateEvent::Abandoned),
        ]
    );
    assert_eq!(value(&sm), Some(b"kept".to_vec()), "nothing of the abandoned batch is visible");
    assert_eq!(sm.view().unwrap().applied_index(), 1);
}

#[tokio::test]
async fn installing_a_snapshot_and_reopening_say_where_the_state_now_stands() {
    let leader_app = Recorder::default();
    let mut leader = StateMachineStore::open(Db::in_memory(), leader_app).unwrap();
    leader.apply_blocking((1..=5).map(|i| commands(i, &["x"])).collect()).unwrap();
    leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let snapshot = leader.get_current_snapshot().await.unwrap().unwrap();

    let app = Recorder::default();
    let mut follower = StateMachineStore::open(Db::in_memory(), app.clone()).unwrap();
    follower.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(
        app.take(),
        vec![
            Seen::Event(StateEvent::Loaded { applied: 0 }),
            Seen::Event(StateEvent::Installed { applied: 5 })
        ]
    );

    // A restart loads the last checkpoint (here: written by a shutdown).
    let dir = tempfile::tempdir().unwrap();
    {
        let sm = StateMachineStore::open(Db::open(dir.path()).unwrap(), Recorder::default()).unwrap();
        sm.apply_blocking((1..=7).map(|i| commands(i, &["y"])).collect()).unwrap();
        sm.checkpoint().unwrap();
        sm.apply_blocking(vec![commands(8, &["z"])]).unwrap();
    }
    let app = Recorder::default();
    let _sm = StateMachineStore::open(Db::open(dir.path()).unwrap(), app.clone()).unwrap();
    assert_eq!(app.take(), vec![Seen::Event(StateEvent::Loaded { applied: 7 })]);
}
