//! What happened during a run, in numbers: the statistics the harness puts
//! in `results.json` next to the checkers' verdicts.
//!
//! A verdict says whether the history is correct; these numbers say what the
//! test actually exercised and how the system behaved while it did. A run
//! whose nemesis never started a fault, or whose writes all failed during
//! every partition, may be valid and still prove little. Everything here is
//! a pure function of the history's events:
//!
//! * [`outcome_counts`]: how many operations ended `ok`, `fail` or `info`,
//!   per function and overall.
//! * [`fault_intervals`]: the nemesis's faults as intervals. The nemesis
//!   records `start-<name>` and, later, `stop-<name>` (for `partition`,
//!   `kill`, `pause`, `lose-unsynced`, `membership`, or any other name); a
//!   fault is open from its start to the next stop of the same name, and a
//!   fault never stopped stays open to the end of the history. Faults of
//!   different names may overlap or nest.
//! * [`phase_counts`]: the same counts split by *phase*, which asks how the
//!   system served clients before the first fault, while faults were open,
//!   and after they healed. An operation's phase is decided by where its
//!   invocation stands in the history:
//!   - `final` if the invocation carries the extra field `"phase": "final"`
//!     (the harness's reads after healing everything, which must succeed);
//!     this wins over the others;
//!   - `before` if it precedes the first fault's start;
//!   - `during` if at least one fault is open;
//!   - `after` otherwise: between faults, or after the last one healed.
//! * [`fault_counts`]: which faults actually happened, and how often.
//! * [`recovery`]: after each heal (a `stop-<name>`), how long until the
//!   system accepted a write again, measured to the first `ok` completion of
//!   a `write`, `cas` or `add` *invoked after* the heal. An operation invoked
//!   earlier may have been waiting out the fault and say nothing about the
//!   healed system. The search ends at the next `start-*` (a new fault
//!   begins, and what follows is no longer recovery from the old one) or at
//!   the end of the history; with no such write, recovery is `None`.
//! * [`latencies`]: latency percentiles of the `ok` operations per
//!   function, from an HDR histogram (3 significant digits).
//! * [`fault_writes`]: per fault, the writes (`write`, `cas`, `add`)
//!   invoked while it was open: how they ended, and the longest one that
//!   ended `ok`. This is what a client writing through the fault saw: for a
//!   graceful fault such as a rolling restart, the promise is no failed and
//!   no unknown write, and a bounded longest wait. (A `cas` whose expected
//!   value did not match is a `fail` too; the set workload's adds have no
//!   such outcome.)
//!
//! * [`split_brain`]: for a history with writes acknowledged at `leader`
//!   durability, how long a node cut off from the majority by a partition
//!   kept acknowledging them (see below).
//!
//! [`summarize`] computes all of them into one [`Stats`], the `stats` object
//! of `results.json`.
//!
//! # The split-brain window
//!
//! A leader acknowledges a `leader`-durable write once the write is in its
//! own log, without asking anyone; so a leader that a partition has cut
//! off from the majority goes on acknowledging writes, which the majority's
//! new leader will never have, until it notices it has lost its quorum. The
//! window measures how long that lasts, per partition:
//!
//! * The nodes **cut off** by a partition are listed in its start event's
//!   value, `"cut_off": [..]`: the harness puts there every node that can
//!   exchange messages directly with fewer than a majority of the nodes,
//!   itself included (a node in a minority group; none in a majorities
//!   ring or a bridge, where every node hears a majority). A partition
//!   without the field cuts off no one.
//! * The writes counted are the `ok` operations acknowledged at leader
//!   durability (the invocation asked for `"durability": "leader"` and the
//!   completion says `"committed": false`) whose completion names a cut-off
//!   node as `"node"` and lies after the partition's start event and before
//!   its stop event (or the end of the history).
//! * The **window** is the time from the partition's start event to the
//!   last such completion; `None` if there was none. The node acknowledged
//!   the write before the client recorded the answer, so this is an upper
//!   bound, by one answer's trip, on how long the node kept acknowledging.
//!
//! A leader that refuses new proposals once no quorum has acknowledged it
//! for its lease keeps the window at most about one lease (in this
//! workspace `raft_core::election::lease`) plus one answer's trip.
//!
//! # Order and time
//!
//! As in the checkers, *before* and *after* mean positions in the history
//! (its lines are in real-time order, see [`crate::history`]); durations
//! are differences of the events' `time` fields. Times are nanoseconds since
//! the test started (`*_ns`), as in the history file, so an interval can be
//! found there; durations are milliseconds (`*_ms`).
//!
//! `time` is optional in a history. Where an event has none, what needs it
//! is left out, never guessed: its `*_ns` is `None`, a recovery whose stop
//! or write has no time has no `recovery_ms` (it still counts as
//! recovered), and an operation without both times is left out of the
//! latencies. Counts, phases and the fault timeline's order depend only on
//! positions, so they are the same with or without times.

use std::collections::{BTreeMap, BTreeSet};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::checker::set;
use crate::history::{self, Event, EventType, HistoryError, Op, Outcome, Process};

/// Functions whose `ok` shows that the system accepts writes again, for
/// [`recovery`].
const WRITE_FUNCTIONS: [&str; 3] = ["write", "cas", "add"];

/// The largest latency the histogram tells apart: one hour, in nanoseconds.
/// A longer one (a client stuck for the whole run) is counted as one hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// Significant decimal digits the latency histogram keeps: a percentile is
/// exact to 0.1 %, plenty for a latency.
const LATENCY_DIGITS: u8 = 3;

/// How many operations ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// The operation happened.
    pub ok: u64,
    /// The operation certainly did not happen.
    pub fail: u64,
    /// Unknown, including invocations that never completed.
    pub info: u64,
}

impl Counts {
    /// Counts one more operation with this outcome.
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info => self.info += 1,
        }
    }

    /// All operations counted.
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// Outcome counts over a set of operations, overall and per function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Every operation.
    pub all: Counts,
    /// Per function (`read`, `write`, ...), by name.
    pub by_f: BTreeMap<String, Counts>,
}

impl OutcomeCounts {
    /// Counts one operation.
    pub fn add(&mut self, op: &Op) {
        self.all.add(op.outcome);
        self.by_f.entry(op.f.as_str().to_owned()).or_default().add(op.outcome);
    }
}

/// Counts the operations' outcomes, overall and per function.
pub fn outcome_counts<'a>(ops: impl IntoIterator<Item = &'a Op>) -> OutcomeCounts {
    let mut counts = OutcomeCounts::default();
    for op in ops {
        counts.add(op);
    }
    counts
}

/// Which part of the run an operation belongs to; see the [module
/// docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Invoked before any fault started.
    Before,
    /// Invoked while at least one fault was open.
    During,
    /// Invoked with no fault open, after the first one started.
    After,
    /// One of the harness's final reads (`"phase": "final"` on the
    /// invocation).
    Final,
}

/// Outcome counts per [`Phase`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhaseCounts {
    /// Before the first fault.
    pub before: OutcomeCounts,
    /// While a fault was open.
    pub during: OutcomeCounts,
    /// Between faults and after the last.
    pub after: OutcomeCounts,
    /// The final reads.
    #[serde(rename = "final")]
    pub final_reads: OutcomeCounts,
}

/// One fault, from the nemesis's `start-<name>` to its `stop-<name>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultInterval {
    /// The fault: what follows `start-` (`partition`, `kill`, ...).
    pub name: String,
    /// The start event's position in the history.
    pub start_index: usize,
    /// The start event's time, or `None` if it has none.
    pub start_ns: Option<u64>,
    /// The start event's `value` (the harness records the fault's shape,
    /// the nodes it hit, and who led at that moment).
    pub start_value: Value,
    /// The stop event's position, or `None` if the fault never stopped.
    pub stop_index: Option<usize>,
    /// The stop event's time, or `None` if the fault never stopped or its
    /// stop event has no time.
    pub stop_ns: Option<u64>,
    /// The stop event's `value`, or `None` if the fault never stopped.
    pub stop_value: Option<Value>,
}

impl FaultInterval {
    /// Whether the fault was open at position `index` of the history: from
    /// its start event up to, not including, its stop event.
    pub fn contains(&self, index: usize) -> bool {
        index >= self.start_index && self.stop_index.is_none_or(|stop| index < stop)
    }
}

/// A nemesis event that starts or stops a fault.
enum Edge<'a> {
    Start(&'a str),
    Stop(&'a str),
}

/// Reads `start-<name>` and `stop-<name>` off a nemesis event.
fn edge(event: &Event) -> Option<Edge<'_>> {
    if event.process != Process::Nemesis {
        return None;
    }
    let f = event.f.as_str();
    let edge = if let Some(name) = f.strip_prefix("start-") {
        Edge::Start(name)
    } else {
        Edge::Stop(f.strip_prefix("stop-")?)
    };
    let (Edge::Start(name) | Edge::Stop(name)) = edge;
    (!name.is_empty()).then_some(edge)
}

/// The faults in the history, in the order they started. A fault is open
/// from a `start-<name>` to the next `stop-<name>`; a second start of a
/// fault that is already open belongs to the same interval (the first
/// start's value is kept), and a stop of a fault that is not open is
/// ignored. A fault still open at the end has no stop.
pub fn fault_intervals(events: &[Event]) -> Vec<FaultInterval> {
    let mut intervals: Vec<FaultInterval> = Vec::new();
    // Fault name -> its open interval's position in `intervals`.
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        match edge(event) {
            Some(Edge::Start(name)) if !open.contains_key(name) => {
                open.insert(name, intervals.len());
                intervals.push(FaultInterval {
                    name: name.to_owned(),
                    start_index: index,
                    start_ns: event.time,
                    start_value: event.value.value().clone(),
                    stop_index: None,
                    stop_ns: None,
                    stop_value: None,
                });
            }
            Some(Edge::Stop(name)) => {
                if let Some(i) = open.remove(name) {
                    let interval = &mut intervals[i];
                    interval.stop_index = Some(index);
                    interval.stop_ns = event.time;
                    interval.stop_value = Some(event.value.value().clone());
                }
            }
            Some(Edge::Start(_)) | None => {}
        }
    }
    intervals
}

/// How many times each fault started (intervals, not repeated starts of an
/// open fault). A fault the nemesis never started is absent.
pub fn fault_counts(intervals: &[FaultInterval]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for interval in intervals {
        *counts.entry(interval.name.clone()).or_default() += 1;
    }
    counts
}

/// The extra field that marks an invocation's phase, set by the harness.
pub const PHASE_FIELD: &str = "phase";

/// The value of [`PHASE_FIELD`] on the harness's final reads.
pub const FINAL_PHASE: &str = "final";

/// Whether an event is a client's invocation of one of the harness's final
/// reads: it carries `"phase": "final"`.
pub fn is_final(event: &Event) -> bool {
    event.kind == EventType::Invoke
        && matches!(event.process, Process::Client(_))
        && event.extra.get(PHASE_FIELD).and_then(Value::as_str) == Some(FINAL_PHASE)
}

/// The phase of an operation; `intervals` must come from the same history
/// (see [`fault_intervals`]).
pub fn phase(events: &[Event], intervals: &[FaultInterval], op: &Op) -> Phase {
    let index = op.invoke_index;
    if events.get(index).is_some_and(is_final) {
        Phase::Final
    } else if intervals.iter().any(|i| i.contains(index)) {
        Phase::During
    } else if intervals.first().is_none_or(|first| index < first.start_index) {
        Phase::Before
    } else {
        Phase::After
    }
}

/// Outcome counts per phase of the operations `ops`, paired from `events`.
pub fn phase_counts(events: &[Event], ops: &[Op]) -> PhaseCounts {
    let intervals = fault_intervals(events);
    let mut counts = PhaseCounts::default();
    for op in ops {
        let slot = match phase(events, &intervals, op) {
            Phase::Before => &mut counts.before,
            Phase::During => &mut counts.during,
            Phase::After => &mut counts.after,
            Phase::Final => &mut counts.final_reads,
        };
        slot.add(op);
    }
    counts
}

/// Recovery after one heal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heal {
    /// The fault that stopped.
    pub fault: String,
    /// The stop event's position in the history.
    pub stop_index: usize,
    /// The stop event's time, or `None` if it has none.
    pub stop_ns: Option<u64>,
    /// From the stop to the first `ok` write invoked after it; `None` if
    /// there was none before the next fault started or the history ended,
    /// or if the stop or that write's completion has no time.
    pub recovery_ms: Option<f64>,
}

/// The recoveries summed up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoverySummary {
    /// Stop events.
    pub heals: u64,
    /// Stop events followed by an `ok` write in time (before the next fault
    /// started or the history ended).
    pub recovered: u64,
    /// The slowest recovery; `None` if none recovered, or none whose
    /// duration the history's times tell.
    pub max_ms: Option<f64>,
    /// The median recovery (the mean of the middle two for an even count),
    /// over the recoveries whose duration is known; `None` if there are none.
    pub median_ms: Option<f64>,
}

/// Recovery after every heal, and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// One per stop event, in history order.
    pub heals: Vec<Heal>,
    /// Over all of them.
    pub summary: RecoverySummary,
}

/// How long the system took to accept a write after each heal; see the
/// [module docs](self). `ops` must be paired from `events`.
pub fn recovery(events: &[Event], ops: &[Op]) -> Recovery {
    let starts: Vec<usize> =
        (0..events.len()).filter(|&i| matches!(edge(&events[i]), Some(Edge::Start(_)))).collect();
    let mut heals: Vec<Heal> = Vec::new();
    let mut recovered_heals = 0;
    for interval in fault_intervals(events) {
        let Some(stop) = interval.stop_index else { continue };
        let stop_ns = interval.stop_ns;
        let window_end = starts.iter().copied().find(|&start| start > stop).unwrap_or(usize::MAX);
        let first_write = ops
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && WRITE_FUNCTIONS.contains(&op.f.as_str()))
            .filter(|op| op.invoke_index > stop)
            .filter_map(|op| Some((op.complete_index?, op.complete_time)))
            .filter(|&(index, _)| index < window_end)
            .min_by_key(|&(index, _)| index);
        recovered_heals += u64::from(first_write.is_some());
        let recovery_ms = match (first_write, stop_ns) {
            (Some((_, Some(done))), Some(stop_ns)) => Some(ms(done.saturating_sub(stop_ns))),
            _ => None,
        };
        heals.push(Heal { fault: interval.name, stop_index: stop, stop_ns, recovery_ms });
    }
    heals.sort_by_key(|heal| heal.stop_index);

    let mut recovered: Vec<f64> = heals.iter().filter_map(|h| h.recovery_ms).collect();
    recovered.sort_by(f64::total_cmp);
    let median_ms = match recovered.len() {
        0 => None,
        n if n % 2 == 1 => Some(recovered[n / 2]),
        n => Some((recovered[n / 2 - 1] + recovered[n / 2]) / 2.0),
    };
    let summary = RecoverySummary {
        heals: heals.len() as u64,
        recovered: recovered_heals,
        max_ms: recovered.last().copied(),
        median_ms,
    };
    Recovery { heals, summary }
}

/// Latency percentiles of one function's `ok` operations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// How many `ok` operations were measured.
    pub count: u64,
    /// The median.
    pub p50_ms: f64,
    /// The 90th percentile.
    pub p90_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

/// Latency percentiles per function over the `ok` operations (from
/// invocation to completion). A function with no `ok` operation is absent:
/// a failed or unknown operation's latency is mostly the client's timeout,
/// and would say nothing about the system.
pub fn latencies(ops: &[Op]) -> BTreeMap<String, Latency> {
    let mut histograms: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        // Without both times there is no latency to measure.
        let (Some(invoked), Some(done)) = (op.invoke_time, op.complete_time) else { continue };
        let histogram = histograms.entry(op.f.as_str()).or_insert_with(|| {
            Histogram::new_with_bounds(1, MAX_LATENCY_NS, LATENCY_DIGITS)
                .expect("constant histogram bounds: 1 <= low, 2 * low <= high, digits <= 5")
        });
        histogram.saturating_record(done.saturating_sub(invoked));
    }
    histograms
        .into_iter()
        .map(|(f, h)| {
            let at = |q: f64| ms(h.value_at_quantile(q));
            let latency = Latency {
                count: h.len(),
                p50_ms: at(0.50),
                p90_ms: at(0.90),
                p99_ms: at(0.99),
                max_ms: ms(h.max()),
            };
            (f.to_owned(), latency)
        })
        .collect()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The writes invoked while one kind of fault was open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultWrites {
    /// How many times the fault started.
    pub windows: u64,
    /// The writes (`write`, `cas`, `add`) invoked while it was open, by
    /// outcome; an invocation never completed counts as `info`.
    pub outcomes: OutcomeCounts,
    /// The longest of them that ended `ok`, from invocation to completion;
    /// `None` if none ended `ok`, or none has both times.
    pub longest_ok_ms: Option<f64>,
}

/// Per fault name, the writes invoked while a fault of that name was open
/// (see the [module docs](self)); every fault in `intervals` has an entry,
/// with no writes if none was invoked. A write invoked while two faults
/// were open counts for both. `intervals` and `ops` must come from the
/// same history.
pub fn fault_writes(intervals: &[FaultInterval], ops: &[Op]) -> BTreeMap<String, FaultWrites> {
    let mut by_fault: BTreeMap<String, FaultWrites> = BTreeMap::new();
    for (name, count) in fault_counts(intervals) {
        let writes = FaultWrites { windows: count, outcomes: OutcomeCounts::default(), longest_ok_ms: None };
        by_fault.insert(name, writes);
    }
    for op in ops.iter().filter(|op| WRITE_FUNCTIONS.contains(&op.f.as_str())) {
        let open: BTreeSet<&str> =
            intervals.iter().filter(|i| i.contains(op.invoke_index)).map(|i| i.name.as_str()).collect();
        for name in open {
            let Some(writes) = by_fault.get_mut(name) else { continue };
            writes.outcomes.add(op);
            if let (Outcome::Ok, Some(invoked), Some(done)) = (op.outcome, op.invoke_time, op.complete_time) {
                let took = ms(done.saturating_sub(invoked));
                writes.longest_ok_ms = Some(writes.longest_ok_ms.map_or(took, |longest| longest.max(took)));
            }
        }
    }
    by_fault
}

/// One partition's split-brain window (see the [module
/// docs](self#the-split-brain-window)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionWindow {
    /// The partition's start event's position in the history.
    pub start_index: usize,
    /// Its time, if it has one.
    pub start_ns: Option<u64>,
    /// The stop event's time, if it stopped and has one.
    pub stop_ns: Option<u64>,
    /// The nodes the partition cut off from the majority.
    pub cut_off: Vec<u64>,
    /// The leader when it began, as the start event says.
    pub leader: Value,
    /// Leader-durable writes acknowledged by a cut-off node while it was
    /// open.
    pub acknowledged: u64,
    /// From the start to the last of those completions, if any, and if
    /// both have a time.
    pub window_ms: Option<f64>,
}

/// The split-brain window of every partition, and the longest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitBrain {
    /// Every partition, in the order they started.
    pub partitions: Vec<PartitionWindow>,
    /// The longest window; `None` if no cut-off node acknowledged a write.
    pub max_ms: Option<f64>,
    /// Leader-durable writes acknowledged by cut-off nodes, over every
    /// partition.
    pub acknowledged: u64,
}

/// The split-brain window of every partition (see the [module
/// docs](self#the-split-brain-window)); `None` if the history has no write
/// acknowledged at leader durability, so that other histories' stats are
/// as they were. `intervals` and `ops` must come from `events`.
pub fn split_brain(events: &[Event], intervals: &[FaultInterval], ops: &[Op]) -> Option<SplitBrain> {
    let leader_durable: Vec<&Op> = ops.iter().filter(|op| set::leader_durable(op, events)).collect();
    if leader_durable.is_empty() {
        return None;
    }
    // Each with the node that acknowledged it.
    let acks: Vec<(&Op, u64)> = leader_durable
        .into_iter()
        .filter_map(|op| Some((op, op.field(events, set::fields::NODE)?.as_u64()?)))
        .collect();
    let partitions: Vec<PartitionWindow> = intervals
        .iter()
        .filter(|i| i.name == "partition")
        .map(|interval| {
            let cut_off: Vec<u64> = interval.start_value["cut_off"]
                .as_array()
                .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let during = acks.iter().filter(|(op, node)| {
                cut_off.contains(node)
                    && op.complete_index.is_some_and(|c| c > interval.start_index && interval.contains(c))
            });
            let (mut acknowledged, mut last) = (0, None::<u64>);
            for (op, _) in during {
                acknowledged += 1;
                if let Some(t) = op.complete_time {
                    last = Some(last.map_or(t, |l| l.max(t)));
                }
            }
            let window_ms = match (interval.start_ns, last) {
                (Some(start), Some(last)) => Some(ms(last.saturating_sub(start))),
                _ => None,
            };
            PartitionWindow {
                start_index: interval.start_index,
                start_ns: interval.start_ns,
                stop_ns: interval.stop_ns,
                cut_off,
                leader: interval.start_value["leader"].clone(),
                acknowledged,
                window_ms,
            }
        })
        .collect();
    let max_ms = partitions.iter().filter_map(|p| p.window_ms).reduce(f64::max);
    let acknowledged = partitions.iter().map(|p| p.acknowledged).sum();
    Some(SplitBrain { partitions, max_ms, acknowledged })
}

/// Everything above, the `stats` object of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Outcomes over the whole run.
    pub outcomes: OutcomeCounts,
    /// Outcomes per phase.
    pub phases: PhaseCounts,
    /// The fault timeline.
    pub faults: Vec<FaultInterval>,
    /// Faults that happened, with how often each started.
    pub fault_counts: BTreeMap<String, u64>,
    /// Recovery after each heal.
    pub recovery: Recovery,
    /// Latency percentiles of `ok` operations per function.
    pub latency: BTreeMap<String, Latency>,
    /// Per fault, the writes invoked while it was open.
    pub fault_writes: BTreeMap<String, FaultWrites>,
    /// The split-brain window of each partition, for a history with
    /// leader-durable writes; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_brain: Option<SplitBrain>,
}

/// Computes every statistic of a history.
///
/// # Errors
/// As [`history::pair`]: the history breaks the pairing rules.
pub fn summarize(events: &[Event]) -> Result<Stats, HistoryError> {
    let ops = history::pair(events)?;
    let faults = fault_intervals(events);
    Ok(Stats {
        outcomes: outcome_counts(&ops),
        phases: phase_counts(events, &ops),
        fault_counts: fault_counts(&faults),
        fault_writes: fault_writes(&faults, &ops),
        split_brain: split_brain(events, &faults, &ops),
        faults,
        recovery: recovery(events, &ops),
        latency: latencies(&ops),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::parse_history;

    /// A history built line by line: `c(process, type, f, time)` for a
    /// client event, `n(f, value, time)` for a nemesis event.
    fn events(lines: &[String]) -> Vec<Event> {
        parse_history(&lines.join("\n")).expect("test history parses")
    }

    fn c(process: u64, kind: &str, f: &str, time_ms: u64) -> String {
        format!(
            r#"{{"process":{process},"type":"{kind}","f":"{f}","key":"x","value":1,"time":{}}}"#,
            time_ms * 1_000_000
        )
    }

    fn n(f: &str, value: Value, time_ms: u64) -> String {
        format!(
            r#"{{"process":"nemesis","type":"info","f":"{f}","value":{value},"time":{}}}"#,
            time_ms * 1_000_000
        )
    }

    #[test]
    fn outcome_counts_per_function_and_overall() {
        let h = events(&[
            c(0, "invoke", "read", 1),
            c(1, "invoke", "write", 2),
            c(0, "ok", "read", 3),
            c(1, "info", "write", 4),
            c(2, "invoke", "cas", 5),
            c(2, "fail", "cas", 6),
            c(0, "invoke", "read", 7),
        ]);
        let counts = outcome_counts(&history::pair(&h).unwrap());
        assert_eq!(counts.all, Counts { ok: 1, fail: 1, info: 2 });
        assert_eq!(counts.by_f["read"], Counts { ok: 1, fail: 0, info: 1 }, "never completed is info");
        assert_eq!(counts.by_f["write"], Counts { ok: 0, fail: 0, info: 1 });
        assert_eq!(counts.by_f["cas"], Counts { ok: 0, fail: 1, info: 0 });
        assert_eq!(counts.all.total(), 4);
    }

    #[test]
    fn overlapping_nested_and_unclosed_faults_become_intervals() {
        let h = events(&[
            n("start-partition", json!({"shape": "one"}), 1),
            n("start-kill", json!(["n1"]), 2),
            // A second start of an open fault belongs to the same interval.
            n("start-kill", json!(["n2"]), 3),
            n("stop-partition", json!(null), 4),
            n("stop-kill", json!("restarted"), 5),
            n("start-pause", json!(["n3"]), 6),
            n("start-membership", json!("remove n2"), 7),
            n("stop-membership", json!("add n2"), 8),
            // Stop of a fault that is not open: ignored.
            n("stop-lose-unsynced", json!(null), 9),
            n("start-lose-unsynced", json!(["n1"]), 10),
        ]);
        let intervals = fault_intervals(&h);
        let summary: Vec<(&str, u64, Option<u64>)> = intervals
            .iter()
            .map(|i| (i.name.as_str(), i.start_ns.unwrap() / 1_000_000, i.stop_ns.map(|t| t / 1_000_000)))
            .collect();
        assert_eq!(
            summary,
            [
                ("partition", 1, Some(4)),
                ("kill", 2, Some(5)),
                ("pause", 6, None),
                ("membership", 7, Some(8)),
                ("lose-unsynced", 10, None),
            ]
        );
        assert_eq!(intervals[0].start_value, json!({"shape": "one"}));
        assert_eq!(intervals[0].stop_value, Some(json!(null)));
        assert_eq!(intervals[1].start_value, json!(["n1"]), "the first start's value is kept");
        assert_eq!(intervals[1].stop_value, Some(json!("restarted")));
        assert_eq!((intervals[2].stop_index, intervals[2].stop_value.clone()), (None, None));

        let counts = fault_counts(&intervals);
        assert_eq!(counts.len(), 5);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }

    #[test]
    fn fault_counts_count_each_start_of_a_closed_fault() {
        let h = events(&[
            n("start-partition", json!(null), 1),
            n("stop-partition", json!(null), 2),
            n("start-partition", json!(null), 3),
            n("stop-partition", json!(null), 4),
            n("start-kill", json!(null), 5),
            // Not faults: no `start-`/`stop-` prefix, or no name.
            n("kill", json!(null), 6),
            n("start-", json!(null), 7),
        ]);
        let counts = fault_counts(&fault_intervals(&h));
        assert_eq!(counts, BTreeMap::from([("kill".to_owned(), 1), ("partition".to_owned(), 2)]));
    }

    #[test]
    fn phases_follow_the_invocation_and_final_wins() {
        let mut lines = vec![
            c(0, "invoke", "write", 1), // before
            n("start-partition", json!(null), 2),
            c(0, "ok", "write", 3),
            c(0, "invoke", "read", 4), // during
            c(0, "ok", "read", 5),
            n("start-kill", json!(null), 6),
            n("stop-partition", json!(null), 7),
            c(1, "invoke", "cas", 8), // during: kill is still open
            n("stop-kill", json!(null), 9),
            c(1, "fail", "cas", 10),
            c(0, "invoke", "write", 11), // after
            c(0, "info", "write", 12),
            n("start-pause", json!(null), 13),
        ];
        // A final read, invoked while pause is still open (never stopped).
        lines.push(
            r#"{"process":2,"type":"invoke","f":"read","key":"x","time":14000000,"phase":"final"}"#
                .to_owned(),
        );
        lines.push(c(2, "ok", "read", 15));
        let h = events(&lines);
        let counts = phase_counts(&h, &history::pair(&h).unwrap());
        assert_eq!(counts.before.all, Counts { ok: 1, fail: 0, info: 0 });
        assert_eq!(counts.before.by_f.keys().collect::<Vec<_>>(), ["write"]);
        assert_eq!(counts.during.all, Counts { ok: 1, fail: 1, info: 0 });
        assert_eq!(counts.during.by_f["cas"].fail, 1);
        assert_eq!(counts.after.all, Counts { ok: 0, fail: 0, info: 1 });
        assert_eq!(counts.final_reads.all, Counts { ok: 1, fail: 0, info: 0 });
        assert!(is_final(&h[13]));
        assert!(!is_final(&h[14]));

        let json = serde_json::to_value(&counts).unwrap();
        assert_eq!(json["final"]["by_f"]["read"]["ok"], 1);
    }

    #[test]
    fn without_faults_everything_is_before() {
        let h = events(&[c(0, "invoke", "read", 1), c(0, "ok", "read", 2)]);
        let counts = phase_counts(&h, &history::pair(&h).unwrap());
        assert_eq!(counts.before.all.ok, 1);
        assert_eq!(counts.during.all.total() + counts.after.all.total(), 0);
    }

    #[test]
    fn recovery_counts_only_writes_invoked_after_the_heal() {
        let h = events(&[
            n("start-partition", json!(null), 0),
            c(0, "invoke", "write", 10), // invoked during the fault: does not count
            n("stop-partition", json!(null), 100),
            c(1, "invoke", "read", 110), // a read: does not count
            c(1, "ok", "read", 120),
            c(2, "invoke", "cas", 130),
            c(0, "ok", "write", 140),
            c(2, "ok", "cas", 150), // recovery: 150 - 100 = 50 ms
            n("start-kill", json!(null), 200),
            c(3, "invoke", "add", 210),
            n("stop-kill", json!(null), 300),
            c(3, "ok", "add", 330), // invoked before the heal: does not count
            c(4, "invoke", "write", 340),
            c(4, "fail", "write", 350),
            n("start-pause", json!(null), 400),
            c(5, "invoke", "write", 410),
            n("stop-pause", json!(null), 500),
            c(6, "invoke", "add", 510),
            c(6, "ok", "add", 530), // recovery: 30 ms
            n("start-partition", json!(null), 600),
            n("stop-partition", json!(null), 700),
            c(7, "invoke", "write", 710),
            c(7, "ok", "write", 800), // recovery: 100 ms
        ]);
        let recovery = recovery(&h, &history::pair(&h).unwrap());
        let got: Vec<(&str, u64, Option<f64>)> = recovery
            .heals
            .iter()
            .map(|r| (r.fault.as_str(), r.stop_ns.unwrap() / 1_000_000, r.recovery_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("partition", 100, Some(50.0)),
                ("kill", 300, None),
                ("pause", 500, Some(30.0)),
                ("partition", 700, Some(100.0)),
            ]
        );
        assert_eq!(
            recovery.summary,
            RecoverySummary { heals: 4, recovered: 3, max_ms: Some(100.0), median_ms: Some(50.0) }
        );
    }

    #[test]
    fn history_without_times_keeps_counts_and_order_and_leaves_out_durations() {
        let timed = events(&[
            n("start-partition", json!(null), 0),
            c(0, "invoke", "write", 10),
            c(0, "info", "write", 20),
            n("stop-partition", json!(null), 100),
            c(0, "invoke", "write", 110),
            c(0, "ok", "write", 150),
            c(1, "invoke", "read", 160),
            c(1, "ok", "read", 170),
        ]);
        let timeless: Vec<Event> = timed
            .iter()
            .cloned()
            .map(|mut e| {
                e.time = None;
                e
            })
            .collect();
        let (with, without) = (summarize(&timed).unwrap(), summarize(&timeless).unwrap());
        // What depends on positions only is the same.
        assert_eq!(without.outcomes, with.outcomes);
        assert_eq!(without.phases, with.phases);
        assert_eq!(without.fault_counts, with.fault_counts);
        assert_eq!(without.recovery.summary.recovered, 1);
        // What needs times is left out.
        assert_eq!((without.faults[0].start_ns, without.faults[0].stop_ns), (None, None));
        assert_eq!(without.recovery.heals[0].recovery_ms, None);
        assert_eq!((without.recovery.summary.max_ms, without.recovery.summary.median_ms), (None, None));
        assert!(without.latency.is_empty());
        assert_eq!(with.recovery.heals[0].recovery_ms, Some(50.0));
        assert_eq!(with.latency["write"].count, 1);
    }

    #[test]
    fn recovery_window_closes_at_the_next_start() {
        let h = events(&[
            n("start-partition", json!(null), 0),
            n("stop-partition", json!(null), 100),
            c(0, "invoke", "write", 110),
            n("start-partition", json!(null), 120),
            c(0, "ok", "write", 130), // completed after the next fault began
        ]);
        let recovery = recovery(&h, &history::pair(&h).unwrap());
        assert_eq!(recovery.heals.len(), 1);
        assert_eq!(recovery.heals[0].recovery_ms, None);
        assert_eq!(recovery.summary.recovered, 0);
        assert_eq!((recovery.summary.max_ms, recovery.summary.median_ms), (None, None));
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let h = events(&[
            n("start-kill", json!(null), 0),
            n("stop-kill", json!(null), 100),
            c(0, "invoke", "write", 100),
            c(0, "ok", "write", 110),
            n("start-kill", json!(null), 200),
            n("stop-kill", json!(null), 300),
            c(1, "invoke", "write", 300),
            c(1, "ok", "write", 330),
        ]);
        let summary = recovery(&h, &history::pair(&h).unwrap()).summary;
        assert_eq!((summary.max_ms, summary.median_ms), (Some(30.0), Some(20.0)));
    }

    #[test]
    fn latency_percentiles_per_function_over_ok_operations() {
        let mut lines = Vec::new();
        // Reads taking 1, 2, ..., 100 ms; one slow failed read is ignored.
        for i in 0..100u64 {
            lines.push(c(i, "invoke", "read", 1000 * i));
            lines.push(c(i, "ok", "read", 1000 * i + i + 1));
        }
        lines.push(c(100, "invoke", "read", 200_000));
        lines.push(c(100, "fail", "read", 205_000));
        lines.push(c(101, "invoke", "write", 300_000));
        lines.push(c(101, "ok", "write", 300_007));
        let h = events(&lines);
        let latency = latencies(&history::pair(&h).unwrap());
        let read = &latency["read"];
        assert_eq!(read.count, 100);
        // The histogram keeps 3 significant digits.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(near(read.p50_ms, 50.0), "{read:?}");
        assert!(near(read.p90_ms, 90.0), "{read:?}");
        assert!(near(read.p99_ms, 99.0), "{read:?}");
        assert!(near(read.max_ms, 100.0), "{read:?}");
        assert!(near(latency["write"].max_ms, 7.0));
        assert!(!latency.contains_key("cas"));
    }

    #[test]
    fn writes_invoked_during_a_fault_are_counted_with_the_longest_ok() {
        let h = events(&[
            c(0, "invoke", "add", 0), // before the fault: not counted
            n("start-rolling-restart", json!(null), 10),
            c(0, "ok", "add", 20),
            c(1, "invoke", "add", 30),
            c(2, "invoke", "read", 35), // a read: not counted
            c(2, "fail", "read", 36),
            c(3, "invoke", "write", 40),
            c(1, "ok", "add", 75), // 45 ms
            c(3, "info", "write", 90),
            c(4, "invoke", "cas", 100),
            n("stop-rolling-restart", json!(null), 110),
            c(4, "fail", "cas", 120),   // invoked during the fault: counted
            c(5, "invoke", "add", 130), // after it
            c(5, "ok", "add", 330),
            n("start-rolling-restart", json!(null), 400),
            c(6, "invoke", "add", 410),
            c(6, "ok", "add", 420), // 10 ms
            n("stop-rolling-restart", json!(null), 430),
            n("start-partition", json!(null), 500),
            n("stop-partition", json!(null), 600),
        ]);
        let writes = fault_writes(&fault_intervals(&h), &history::pair(&h).unwrap());
        let rolling = &writes["rolling-restart"];
        assert_eq!(rolling.windows, 2);
        assert_eq!(rolling.outcomes.all, Counts { ok: 2, fail: 1, info: 1 });
        assert_eq!(rolling.outcomes.by_f.keys().collect::<Vec<_>>(), ["add", "cas", "write"]);
        assert_eq!(rolling.longest_ok_ms, Some(45.0));
        let partition = &writes["partition"];
        assert_eq!(
            (partition.windows, partition.outcomes.all.total(), partition.longest_ok_ms),
            (1, 0, None)
        );
    }

    /// An add by `process` acknowledged by `node` at leader durability
    /// (uncommitted) between `from_ms` and `to_ms`.
    fn leader_add(process: u64, node: u64, from_ms: u64, to_ms: u64) -> [String; 2] {
        [
            format!(
                r#"{{"process":{process},"type":"invoke","f":"add","key":0,"value":{process},"time":{},"durability":"leader"}}"#,
                from_ms * 1_000_000
            ),
            format!(
                r#"{{"process":{process},"type":"ok","f":"add","key":0,"value":{process},"time":{},"node":{node},"committed":false}}"#,
                to_ms * 1_000_000
            ),
        ]
    }

    #[test]
    fn split_brain_window_runs_from_the_partition_to_the_last_ack_by_a_cut_off_node() {
        let mut lines = vec![n("start-partition", json!({"cut_off": [1], "leader": 1}), 100)];
        lines.extend(leader_add(0, 1, 110, 150)); // by the cut-off node
        lines.extend(leader_add(1, 1, 300, 420)); // by it again: the last
        lines.extend(leader_add(2, 2, 400, 900)); // by the majority's leader
        lines.push(n("stop-partition", json!({}), 1000));
        lines.extend(leader_add(3, 1, 1100, 1200)); // after the heal
        lines.push(n("start-partition", json!({"cut_off": [], "leader": 2}), 2000));
        lines.extend(leader_add(4, 2, 2100, 2200));
        let h = events(&lines);
        let ops = history::pair(&h).unwrap();
        let sb = split_brain(&h, &fault_intervals(&h), &ops).unwrap();
        assert_eq!(sb.partitions.len(), 2);
        let first = &sb.partitions[0];
        assert_eq!((first.cut_off.clone(), first.acknowledged, first.window_ms), (vec![1], 2, Some(320.0)));
        assert_eq!(first.leader, json!(1));
        assert_eq!((sb.partitions[1].acknowledged, sb.partitions[1].window_ms), (0, None));
        assert_eq!((sb.max_ms, sb.acknowledged), (Some(320.0), 2));
    }

    #[test]
    fn split_brain_is_left_out_without_leader_durable_writes() {
        let h = events(&[
            n("start-partition", json!({"cut_off": [1]}), 1),
            c(0, "invoke", "write", 2),
            c(0, "ok", "write", 3),
        ]);
        assert!(split_brain(&h, &fault_intervals(&h), &history::pair(&h).unwrap()).is_none());
        let json = serde_json::to_value(summarize(&h).unwrap()).unwrap();
        assert!(json.get("split_brain").is_none(), "{json}");
    }

    #[test]
    fn summarize_serializes_to_the_documented_shape() {
        let h = events(&[
            c(0, "invoke", "write", 1),
            c(0, "ok", "write", 2),
            n("start-partition", json!({"shape": "majority"}), 3),
        ]);
        let json = serde_json::to_value(summarize(&h).unwrap()).unwrap();
        assert_eq!(json["outcomes"]["all"], json!({"ok": 1, "fail": 0, "info": 0}));
        assert_eq!(json["phases"]["before"]["by_f"]["write"]["ok"], 1);
        assert_eq!(json["faults"][0]["name"], "partition");
        assert_eq!(json["faults"][0]["start_value"]["shape"], "majority");
        assert_eq!(json["faults"][0]["stop_ns"], Value::Null);
        assert_eq!(json["fault_counts"], json!({"partition": 1}));
        assert_eq!(json["recovery"]["summary"]["heals"], 0);
        assert_eq!(json["latency"]["write"]["count"], 1);
        assert!(json["latency"]["write"]["p99_ms"].is_f64());
        assert_eq!(json["fault_writes"]["partition"]["windows"], 1);
        assert_eq!(json["fault_writes"]["partition"]["longest_ok_ms"], Value::Null);
    }
}
