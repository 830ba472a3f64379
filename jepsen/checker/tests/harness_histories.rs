//! Histories this harness and the Maelstrom runner wrote before `jepsen
//! check` learnt to read other tools' histories (issue 13) must be judged
//! exactly as before: same verdicts, same counterexamples, same numbers.
//!
//! The reader changed underneath them (process ids, values and `time` are
//! now read more generally), so this is the guard that nothing this
//! workspace wrote is read differently. `fixtures/harness/README.md` says how
//! each history and its report were made, with the binaries from before the
//! change.

use std::path::PathBuf;
use std::time::Duration;

use jepsen_checker::check_events;
use jepsen_checker::history::parse_history;
use serde_json::Value;

/// Generous: each history is checked in milliseconds.
const BUDGET: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/harness").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// `history` with one edit on a 1-based line, as the README lists.
fn edited(history: &str, line: usize, from: &str, to: &str) -> String {
    let mut lines: Vec<String> = history.lines().map(str::to_owned).collect();
    let target = &mut lines[line - 1];
    assert_eq!(target.matches(from).count(), 1, "the edit matches once on line {line}: {target}");
    *target = target.replacen(from, to, 1);
    lines.join("\n")
}

/// Checks `history` and compares the whole report with the stored one.
fn assert_same_report(what: &str, history: &str, report: &str) {
    let events = parse_history(history).unwrap_or_else(|e| panic!("{what}: {e}"));
    let now = check_events(&events, BUDGET).unwrap_or_else(|e| panic!("{what}: {e}"));
    let now = serde_json::to_value(&now).expect("a report serializes");
    let before: Value = serde_json::from_str(&read(report)).expect("a stored report is JSON");
    assert_eq!(now, before, "{what}: the report changed");
}

#[test]
fn valid_harness_histories_keep_their_reports() {
    for name in ["register", "set", "session", "lin-kv"] {
        let report = format!("{name}.report.json");
        assert_same_report(name, &read(&format!("{name}.jsonl")), &report);
        let before: Value = serde_json::from_str(&read(&report)).unwrap();
        assert_eq!(before["valid"], "valid", "{name} was valid before");
    }
}

#[test]
fn invalid_twins_of_harness_histories_keep_their_reports_and_counterexamples() {
    let cases = [
        ("register-stale", "register.jsonl", 317, r#""value":77"#, r#""value":987654321"#),
        ("lin-kv-stale", "lin-kv.jsonl", 254, r#""value":0"#, r#""value":987654321"#),
        ("set-lost", "set.jsonl", 461, r#""value":[1,10,"#, r#""value":[10,"#),
    ];
    for (name, base, line, from, to) in cases {
        let report = format!("{name}.report.json");
        assert_same_report(name, &edited(&read(base), line, from, to), &report);
        let before: Value = serde_json::from_str(&read(&report)).unwrap();
        assert_eq!(before["valid"], "invalid", "{name} was invalid before");
    }
}

#[test]
fn harness_histories_keep_their_verdicts_without_time() {
    // The fixtures again, with every `time` removed: the verdicts, which
    // depend only on the order of the lines, must not move.
    let strip = |text: &str| -> String {
        text.lines()
            .map(|line| {
                let mut event: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
                event.remove("time");
                Value::Object(event).to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for name in ["register", "set", "session", "lin-kv"] {
        let history = read(&format!("{name}.jsonl"));
        let with = check_events(&parse_history(&history).unwrap(), BUDGET).unwrap();
        let without = check_events(&parse_history(&strip(&history)).unwrap(), BUDGET).unwrap();
        assert_eq!(without.valid, with.valid, "{name}");
    }
    let stale = edited(&read("register.jsonl"), 317, r#""value":77"#, r#""value":987654321"#);
    let without = check_events(&parse_history(&strip(&stale)).unwrap(), BUDGET).unwrap();
    assert_eq!(without.valid, jepsen_checker::Verdict::Invalid);
}
