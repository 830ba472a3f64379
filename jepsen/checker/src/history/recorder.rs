//! Recording a live history: the [`Recorder`] that a running test's client
//! tasks and nemesis append to, which keeps the events in real-time order.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};

use super::event::{Event, EventType, Function, Process};

/// Records a live history: the one place a running test appends events.
///
/// The file format promises that lines are in real-time order, and the
/// checkers take that order, not the `time` field, as real time. So an
/// event's time is read *while the lock is held*, and the event is appended
/// before the lock is released: of two events recorded concurrently, the one
/// appended first also has the earlier (or equal) time, and an operation
/// that completed before another was invoked precedes it in the history.
///
/// A `Recorder` is cheap to clone; every clone appends to the same history,
/// so each client task and the nemesis hold their own.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Time zero of the test: event times are nanoseconds since then.
    start: Instant,
    /// The events, in the order they were appended.
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// An empty history whose times count from `start`.
    pub fn new(start: Instant) -> Recorder {
        Recorder { start, events: Arc::default() }
    }

    /// Nanoseconds since `start`, the clock event times are read from
    /// (saturating at `u64::MAX`, some 584 years).
    pub fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends an event with no extra fields, stamped with the current time.
    pub fn record(&self, process: Process, kind: EventType, f: Function, key: Value, value: Value) {
        self.record_with(process, kind, f, key, value, Map::new());
    }

    /// Appends an event with extra fields (`node`, `error`, `phase`, ...),
    /// stamped with the current time.
    pub fn record_with(
        &self,
        process: Process,
        kind: EventType,
        f: Function,
        key: Value,
        value: Value,
        extra: Map<String, Value>,
    ) {
        // A panic elsewhere while holding the lock cannot leave the vector
        // half-written (a push either happened or not), so a poisoned lock
        // is still safe to use.
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut event = Event::new(process, kind, f, key, value, self.elapsed_nanos());
        event.extra = extra;
        events.push(event);
    }

    /// A copy of the events recorded after the first `n`.
    pub fn events_since(&self, n: usize) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.get(n..).map(<[Event]>::to_vec).unwrap_or_default()
    }

    /// A copy of the events recorded so far, in real-time order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn recorder_appends_in_order_with_nondecreasing_times_and_extras() {
        let recorder = Recorder::new(Instant::now());
        let clone = recorder.clone();
        recorder.record(Process::Client(0.into()), EventType::Invoke, Function::Write, json!("x"), json!(1));
        let mut extra = Map::new();
        extra.insert("node".into(), json!("n1"));
        clone.record_with(
            Process::Client(0.into()),
            EventType::Ok,
            Function::Write,
            json!("x"),
            json!(1),
            extra,
        );
        let events = recorder.events();
        assert_eq!(events.len(), 2, "clones share one history");
        assert_eq!((events[0].kind, events[1].kind), (EventType::Invoke, EventType::Ok));
        let (t0, t1) = (events[0].time.unwrap(), events[1].time.unwrap());
        assert!(t0 <= t1);
        assert!(t1 <= recorder.elapsed_nanos());
        assert!(events[0].extra.is_empty());
        assert_eq!(events[1].extra.get("node"), Some(&json!("n1")));
    }
}
