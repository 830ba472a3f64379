//! Property tests: a history's verdict depends on what it says, not on how
//! it is spelt.
//!
//! Each case is a small random register history (two keys, four processes,
//! values that include `null`, integers, an object and an array, every
//! outcome, processes that go on after an `info`, operations left open),
//! written out twice: once plainly (integer process ids, integers, members
//! in one order, `time` on every line) and once re-spelt: processes renamed
//! to other JSON scalars (strings, floats, `null`, `true`, `false`), every
//! number spelt another way on every line (`1`, `1.0`, `1e0`, `10e-1`,
//! `100e-2`), object members in another order. `jepsen check`'s verdict must
//! be the same for both, and must not change when every `time` is removed.
//!
//! The histories are small enough that many are invalid: a property that
//! held only because every case was valid would prove nothing, so
//! `generated_histories_are_both_valid_and_invalid` counts both.

use std::time::Duration;

use jepsen_checker::history::parse_history;
use jepsen_checker::{check_events, Verdict};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Far more than a history of a few operations needs.
const BUDGET: Duration = Duration::from_secs(30);

/// Processes, keys and values, as indexes into the tables below.
const PROCESSES: usize = 4;
const KEYS: u8 = 2;
const VALUES: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum F {
    Read,
    Write,
    Cas,
}

/// A value: `None` is absent from the line; `Some(v)` indexes `VALUES`.
#[derive(Debug, Clone, Copy)]
enum Arg {
    None,
    One(u8),
    Pair(u8, u8),
}

#[derive(Debug, Clone)]
struct Event {
    process: usize,
    kind: Kind,
    f: F,
    key: u8,
    value: Arg,
}

/// One random step: a process invokes if it has nothing open, and otherwise
/// completes what it has open. (slot, function, key, first value, second
/// value, outcome).
type Step = (usize, u8, u8, u8, u8, u8);

/// Turns steps into a history that obeys the pairing rules.
fn history(steps: &[Step]) -> Vec<Event> {
    let mut open: [Option<(F, u8, Arg)>; PROCESSES] = [None; PROCESSES];
    let mut events = Vec::new();
    for &(slot, f, key, a, b, outcome) in steps {
        let process = slot % PROCESSES;
        match open[process] {
            None => {
                let (f, value) = match f % 3 {
                    0 => (F::Read, Arg::None),
                    1 => (F::Write, Arg::One(a % VALUES)),
                    _ => (F::Cas, Arg::Pair(a % VALUES, b % VALUES)),
                };
                let key = key % KEYS;
                events.push(Event { process, kind: Kind::Invoke, f, key, value });
                open[process] = Some((f, key, value));
            }
            Some((f, key, value)) => {
                let kind = [Kind::Ok, Kind::Ok, Kind::Fail, Kind::Info][usize::from(outcome % 4)];
                // What an ok read returned is drawn at random: many reads
                // see what no linearization allows.
                let value = if f == F::Read && kind == Kind::Ok { Arg::One(b % VALUES) } else { value };
                events.push(Event { process, kind, f, key, value });
                // After an info the process is free again, and goes on
                // under the same id when a later step picks it.
                open[process] = None;
            }
        }
    }
    events
}

/// How a history is written out.
struct Spelling<'a> {
    /// Choices for each re-spelling, consumed in turn; empty: the plain
    /// spelling everywhere.
    tape: &'a [u8],
    at: usize,
    /// Which family of ids each process is renamed into; `None`: integers
    /// 0..4.
    rename: Option<[u8; PROCESSES]>,
    time: bool,
}

impl Spelling<'_> {
    fn choose(&mut self, n: u8) -> u8 {
        if self.tape.is_empty() {
            return 0;
        }
        let c = self.tape[self.at % self.tape.len()] % n;
        self.at += 1;
        c
    }

    /// An integer, spelt one of six ways (the first is the plain one).
    fn int(&mut self, n: i64) -> String {
        match self.choose(6) {
            0 => n.to_string(),
            1 => format!("{n}.0"),
            2 => format!("{n}e0"),
            3 => format!("{}e-1", n * 10),
            4 => format!("{n}.000"),
            _ => format!("{}e-2", n * 100),
        }
    }

    /// Process `p`'s id. The families are disjoint, and within one family
    /// the processes get different ids, so renaming keeps processes apart.
    fn process(&mut self, p: usize) -> String {
        let i = p as i64;
        match self.rename.map(|r| r[p] % 5) {
            None => i.to_string(),
            Some(0) => self.int(i + 100),
            Some(1) => format!("\"client-{p}\""),
            Some(2) => format!("{i}.5"),
            Some(3) => format!("\"{p}\""),
            Some(_) => ["null", "true", "false", "\"nemesis-like\""][p].to_owned(),
        }
    }

    fn key(&mut self, k: u8) -> String {
        match k {
            0 => self.int(0),
            _ => {
                let (id, list) = (self.int(1), self.int(7));
                self.object(&[("id", id), ("tags", format!("[{list},\"x\"]"))])
            }
        }
    }

    fn value(&mut self, v: u8) -> String {
        match v {
            0 => "null".to_owned(),
            1 => self.int(1),
            2 => self.int(2),
            3 => {
                let (a, b, c) = (self.int(1), self.int(2), self.int(3));
                self.object(&[("a", a), ("b", format!("[{b},{c}]")), ("c", "null".to_owned())])
            }
            _ => {
                let (a, c) = (self.int(1), self.int(2));
                let inner = self.object(&[("c", c), ("d", "\"s\"".to_owned())]);
                format!("[{a},{inner}]")
            }
        }
    }

    /// An object with its members in one of their orders (the plain
    /// spelling: as given).
    fn object(&mut self, members: &[(&str, String)]) -> String {
        let mut members: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let rotate = usize::from(self.choose(members.len() as u8));
        members.rotate_left(rotate);
        if self.choose(2) == 1 {
            members.reverse();
        }
        format!("{{{}}}", members.join(","))
    }

    fn arg(&mut self, arg: Arg) -> Option<String> {
        match arg {
            Arg::None => None,
            Arg::One(v) => Some(self.value(v)),
            Arg::Pair(a, b) => Some(format!("[{},{}]", self.value(a), self.value(b))),
        }
    }
}

/// The history as JSON lines.
fn write(events: &[Event], mut spelling: Spelling<'_>) -> String {
    let mut out = String::new();
    for (i, e) in events.iter().enumerate() {
        let kind = match e.kind {
            Kind::Invoke => "invoke",
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Info => "info",
        };
        let f = match e.f {
            F::Read => "read",
            F::Write => "write",
            F::Cas => "cas",
        };
        let process = spelling.process(e.process);
        let key = spelling.key(e.key);
        out.push_str(&format!(r#"{{"process":{process},"type":"{kind}","f":"{f}","key":{key}"#));
        if let Some(value) = spelling.arg(e.value) {
            out.push_str(&format!(r#","value":{value}"#));
        }
        if spelling.time {
            out.push_str(&format!(r#","time":{}"#, (i + 1) * 1000));
        }
        out.push_str("}\n");
    }
    out
}

fn plain(time: bool) -> Spelling<'static> {
    Spelling { tape: &[], at: 0, rename: None, time }
}

fn verdict(text: &str) -> Verdict {
    let events = parse_history(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    check_events(&events, BUDGET).unwrap_or_else(|e| panic!("{e}\n{text}")).valid
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0..PROCESSES, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
        1..18,
    )
}

proptest! {
    // Failures are reported with their minimal case; nothing is written
    // into the source tree.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn renamed_and_respelt_history_gets_the_same_verdict(
        steps in steps(),
        tape in prop::collection::vec(any::<u8>(), 1..64),
        rename in any::<[u8; PROCESSES]>(),
    ) {
        let events = history(&steps);
        let original = write(&events, plain(true));
        let respelt = write(&events, Spelling { tape: &tape, at: 0, rename: Some(rename), time: true });
        prop_assert_eq!(verdict(&original), verdict(&respelt), "plain:\n{}\nrespelt:\n{}", original, respelt);
    }

    #[test]
    fn removing_time_never_changes_the_verdict(
        steps in steps(),
        tape in prop::collection::vec(any::<u8>(), 1..64),
        rename in any::<[u8; PROCESSES]>(),
    ) {
        let events = history(&steps);
        let (timed, timeless) = (write(&events, plain(true)), write(&events, plain(false)));
        prop_assert_eq!(verdict(&timed), verdict(&timeless), "{}", timed);
        // And for a re-spelt history too.
        let spelt = |time| write(&events, Spelling { tape: &tape, at: 0, rename: Some(rename), time });
        prop_assert_eq!(verdict(&spelt(true)), verdict(&spelt(false)), "{}", spelt(true));
    }
}

#[test]
fn generated_histories_are_both_valid_and_invalid() {
    let mut runner = TestRunner::deterministic();
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..500 {
        let steps = steps().new_tree(&mut runner).expect("a strategy makes values").current();
        match verdict(&write(&history(&steps), plain(true))) {
            Verdict::Valid => valid += 1,
            Verdict::Invalid => invalid += 1,
            Verdict::Unknown => panic!("a tiny history must be decided"),
        }
    }
    assert!(valid >= 100 && invalid >= 100, "{valid} valid, {invalid} invalid");
}

#[test]
fn respelling_really_changes_the_text() {
    // The properties would hold trivially if the re-spelt history were the
    // plain one: check that every kind of re-spelling occurs.
    let steps: Vec<Step> = (0..16).map(|i| (i % PROCESSES, i as u8, i as u8, 3, 4, 1)).collect();
    let events = history(&steps);
    let tape: Vec<u8> = (0..64).collect();
    let respelt = write(&events, Spelling { tape: &tape, at: 0, rename: Some([1, 2, 4, 0]), time: false });
    let original = write(&events, plain(true));
    for spelt in ["\"client-0\"", "1.5", "false", "103", "e0", "e-1", ".000", "e-2"] {
        assert!(respelt.contains(spelt), "no {spelt} in\n{respelt}");
    }
    assert!(
        original.contains(r#"{"a":1,"b":[2,3],"c":null}"#)
            && !respelt.contains(r#"{"a":1,"b":[2,3],"c":null}"#)
    );
    assert!(!respelt.contains("time") && original.contains("time"));
}
