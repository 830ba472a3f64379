//! Judging a run and writing its files.
//!
//! The verdict combines, as Maelstrom's does:
//!
//! * **workload**: each key's history must be linearizable for a
//!   compare-and-set register starting at `null`, decided by
//!   [`jepsen_checker::checker::linear`]; a search that runs out of time is
//!   `:unknown`, never a pass;
//! * **stats**: every operation type (`read`, `write`, `cas`) must have at
//!   least one `ok`, or the test proved nothing about it.
//!
//! `:availability` (the fraction of operations that were `ok`), `:net`
//! (message counts and `:msgs-per-op`, node-to-node messages per client
//! operation) and `:protocol` (lines nodes wrote that broke the protocol)
//! are reported but do not change the verdict.
//!
//! Files under the run's directory: `results.edn` and `results.json` (the
//! same data), `history.jsonl` (the [`jepsen_checker::history`] format, which `jepsen
//! check` re-checks), `history.txt` (one line per event, for people),
//! `latency-raw.svg` and `rate.svg` (drawn by [`jepsen_checker::plot`], partitions
//! shaded), and the node logs in `node-logs/`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jepsen_checker::checker::linear::{self, LinearResult};
use jepsen_checker::checker::Verdict;
use jepsen_checker::history::{self, Event, EventType, Op, Outcome};
use jepsen_checker::plot::{self, PlotOptions};
use jepsen_checker::stats::{outcome_counts, Counts};
use jepsen_checker::Json;
use serde_json::{json, Map, Value};

use super::net::NetStats;
use super::nodes::Violation;

/// What the run produced, for [`judge`].
pub struct RunData {
    /// The history.
    pub events: Vec<Event>,
    /// Message counts.
    pub net: NetStats,
    /// Protocol violations.
    pub violations: Vec<Violation>,
    /// The settings, as recorded under `:workload`.
    pub settings: Value,
    /// How long the linearizability search may take.
    pub check_budget: Duration,
}

/// Checks the run; returns the overall verdict and the results document.
///
/// # Errors
/// If the history breaks the pairing rules or holds operations the checker
/// cannot judge: a harness bug, reported as an error.
pub fn judge(run: &RunData) -> anyhow::Result<(Verdict, Value)> {
    let ops = history::pair(&run.events).context("pairing the history")?;
    let started = Instant::now();
    let linear = linear::check(&ops, run.check_budget).context("checking linearizability")?;
    let check_secs = started.elapsed().as_secs_f64();

    let (stats_valid, stats) = stats(&ops);
    let ok = ops.iter().filter(|op| op.outcome == Outcome::Ok).count();
    let ok_fraction = if ops.is_empty() { 0.0 } else { ok as f64 / ops.len() as f64 };
    let stats_verdict = if stats_valid { Verdict::Valid } else { Verdict::Invalid };
    let verdict = linear.verdict.and(stats_verdict);

    let servers = run.net.servers.send_count;
    let msgs_per_op = if ops.is_empty() { 0.0 } else { servers as f64 / ops.len() as f64 };
    let results = json!({
        "valid?": verdict_value(verdict),
        "workload": workload_results(&linear, &run.settings, check_secs),
        "stats": stats,
        "availability": {"valid?": true, "ok-fraction": ok_fraction},
        "net": {
            "valid?": true,
            "all": counts(run.net.all),
            "clients": counts(run.net.clients),
            "servers": counts(run.net.servers),
            "dropped-by-partitions": run.net.dropped,
            "msgs-per-op": msgs_per_op,
        },
        "protocol": {
            "violations": run.violations.iter().map(|v| json!({"node": v.node, "reason": v.reason, "line": v.line})).collect::<Vec<_>>(),
        },
    });
    Ok((verdict, results))
}

fn counts(c: super::net::Counts) -> Value {
    json!({"send-count": c.send_count, "recv-count": c.recv_count, "msg-count": c.send_count})
}

/// `true`, `false`, or the keyword `:unknown` (a string in JSON).
fn verdict_value(v: Verdict) -> Value {
    match v {
        Verdict::Valid => json!(true),
        Verdict::Invalid => json!(false),
        Verdict::Unknown => json!("unknown"),
    }
}

fn workload_results(linear: &LinearResult, settings: &Value, check_secs: f64) -> Value {
    let bad: Vec<Value> = linear
        .keys
        .iter()
        .filter(|k| k.verdict == Verdict::Invalid)
        .map(|k| serde_json::to_value(k).unwrap_or(Value::Null))
        .collect();
    let unknown: Vec<&Json> =
        linear.keys.iter().filter(|k| k.verdict == Verdict::Unknown).map(|k| &k.key).collect();
    json!({
        "valid?": verdict_value(linear.verdict),
        "key-count": linear.keys.len(),
        "invalid-keys": bad,
        "unknown-keys": unknown,
        "check-seconds": check_secs,
        "settings": settings,
    })
}

/// Jepsen's stats checker: counts by function and outcome; valid if every
/// function has at least one `ok`.
fn stats(ops: &[Op]) -> (bool, Value) {
    let mut counts = outcome_counts(ops);
    // A function the workload never managed to run is a failure too.
    for f in ["read", "write", "cas"] {
        counts.by_f.entry(f.to_owned()).or_default();
    }
    let table = |c: &Counts| json!({"valid?": c.ok > 0, "count": c.total(), "ok-count": c.ok, "fail-count": c.fail, "info-count": c.info});
    let valid = counts.by_f.values().all(|c| c.ok > 0);
    let mut out = match table(&counts.all) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    out.insert("valid?".into(), json!(valid));
    out.insert("by-f".into(), counts.by_f.iter().map(|(f, c)| (f.clone(), table(c))).collect());
    (valid, Value::Object(out))
}

/// Renders JSON as EDN: object keys become keywords, `null` is `nil`, and
/// the string `"unknown"` under `valid?` is the keyword `:unknown`.
pub fn to_edn(value: &Value) -> String {
    let mut out = String::new();
    edn(value, &mut out, false, 0);
    out.push('\n');
    out
}

fn edn(value: &Value, out: &mut String, keyword_strings: bool, depth: usize) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) if keyword_strings => {
            out.push(':');
            out.push_str(s);
        }
        // JSON string escapes are valid EDN string escapes for what we write.
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                edn(item, out, false, depth + 1);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    // One top-level entry per line, as Maelstrom prints it.
                    out.push_str(if depth == 0 { "\n " } else { ", " });
                }
                if k.chars().all(|c| c.is_alphanumeric() || "-_?!*+.".contains(c)) && !k.is_empty() {
                    let _ = write!(out, ":{k} ");
                } else {
                    let _ = write!(out, "{} ", Value::String(k.clone()));
                }
                edn(v, out, k == "valid?" && v.is_string(), depth + 1);
            }
            out.push('}');
        }
    }
}

/// Writes `history.jsonl` and `history.txt` into `dir`. Called before the
/// check, so the history is on disk even if checking fails.
///
/// # Errors
/// If a file cannot be written.
pub fn write_history(dir: &Path, events: &[Event]) -> anyhow::Result<()> {
    history::write_history(dir.join("history.jsonl"), events).context("writing history.jsonl")?;
    let mut text = String::new();
    for e in events {
        let _ = write!(
            text,
            "{:>12} {:>8} {:<6} {:<16} {:>4} {}",
            // A history the runner recorded always has times; `-` if not.
            e.time.map_or_else(|| "-".to_owned(), |t| format!("{:.6}", t as f64 / 1e9)),
            e.process.to_string(),
            type_name(e.kind),
            e.f.as_str(),
            e.key,
            e.value
        );
        for (k, v) in &e.extra {
            let _ = write!(text, " {k}={v}");
        }
        text.push('\n');
    }
    std::fs::write(dir.join("history.txt"), text).context("writing history.txt")
}

/// Writes the results (`results.edn`, `results.json`) and the plots into
/// `dir`. A plot that cannot be drawn is logged and skipped.
///
/// # Errors
/// If a results file cannot be written.
pub fn write_results(
    dir: &Path,
    events: &[Event],
    results: &Value,
    time_limit: Duration,
) -> anyhow::Result<()> {
    std::fs::write(dir.join("results.edn"), to_edn(results)).context("writing results.edn")?;
    let json = serde_json::to_string_pretty(results).context("serializing results")?;
    std::fs::write(dir.join("results.json"), json + "\n").context("writing results.json")?;
    // Maelstrom's name for the latency plot, so its users find it.
    let options = PlotOptions {
        latency_file: "latency-raw.svg".to_owned(),
        min_duration: time_limit,
        ..PlotOptions::default()
    };
    for (file, e) in plot::write_plots(dir, events, &options) {
        tracing::warn!(error = %e, "cannot draw {file}");
    }
    Ok(())
}

fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

#[cfg(test)]
mod tests {
    use jepsen_checker::history::Function;

    use super::*;

    #[test]
    fn edn_uses_keywords_and_unknown_keyword() {
        let edn =
            to_edn(&json!({"valid?": "unknown", "net": {"msgs-per-op": 1.5, "x": null}, "v": ["a", true]}));
        assert!(edn.contains(":valid? :unknown"), "{edn}");
        assert!(edn.contains(":net {:msgs-per-op 1.5"), "{edn}");
        assert!(edn.contains(":x nil"), "{edn}");
        assert!(edn.contains(":v [\"a\" true]"), "{edn}");
    }

    #[test]
    fn stats_require_an_ok_per_function() {
        let op = |f: Function, outcome: Outcome| Op {
            process: 0.into(),
            f,
            key: json!(0).into(),
            value: Json::null(),
            outcome,
            invoke_time: Some(0),
            complete_time: Some(1),
            invoke_index: 0,
            complete_index: Some(1),
        };
        let all = [
            op(Function::Read, Outcome::Ok),
            op(Function::Write, Outcome::Ok),
            op(Function::Cas, Outcome::Ok),
        ];
        assert!(stats(&all).0);
        let no_cas_ok = [
            op(Function::Read, Outcome::Ok),
            op(Function::Write, Outcome::Ok),
            op(Function::Cas, Outcome::Fail),
        ];
        let (valid, table) = stats(&no_cas_ok);
        assert!(!valid);
        assert_eq!(table["by-f"]["cas"]["fail-count"], 1);
    }

    /// The runner judges with `jepsen_checker::history`'s reader and the same
    /// linearizability checker as `jepsen check`, so a history in any
    /// well-formed spelling is judged: string process ids, a process going
    /// on after an `info`, no `time`, numbers spelt as floats.
    #[test]
    fn judge_reads_histories_in_any_well_formed_spelling() {
        let history = |seen: &str| {
            format!(
                r#"{{"process":"c1","type":"invoke","f":"write","key":0,"value":1}}
{{"process":"c1","type":"info","f":"write","key":0,"value":1}}
{{"process":"c1","type":"invoke","f":"write","key":0.0,"value":2e0}}
{{"process":"c1","type":"ok","f":"write","key":0,"value":2.0}}
{{"process":"c2","type":"invoke","f":"cas","key":0,"value":[2,3]}}
{{"process":"c2","type":"ok","f":"cas","key":0,"value":[2,3]}}
{{"process":"c2","type":"invoke","f":"read","key":0}}
{{"process":"c2","type":"ok","f":"read","key":0,"value":{seen}}}"#
            )
        };
        let judged = |text: &str| {
            let events = history::parse_history(text).unwrap();
            let data = RunData {
                events,
                net: NetStats::default(),
                violations: Vec::new(),
                settings: json!({}),
                check_budget: Duration::from_secs(10),
            };
            judge(&data).unwrap()
        };
        // The pending write of 1 may land after the cas: 3 or 1.
        for seen in ["3.0", "1"] {
            let (verdict, results) = judged(&history(seen));
            assert_eq!(verdict, Verdict::Valid, "{seen}: {results}");
            assert_eq!(results["workload"]["valid?"], true);
        }
        // 2 was overwritten by the cas before the read began.
        let (verdict, results) = judged(&history("2"));
        assert_eq!(verdict, Verdict::Invalid);
        assert_eq!(results["workload"]["invalid-keys"][0]["key"], 0);
    }
}
