//! Judging a run and writing its files.
//!
//! The verdict combines, as Maelstrom's does:
//!
//! * **workload**: each key's history must be linearizable for a
//!   compare-and-set register starting at `null`, decided by
//!   [`jepsen::checker::linear`]; a search that runs out of time is
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
//! same data), `history.jsonl` (the [`jepsen::history`] format, which `jepsen
//! check` re-checks), `history.txt` (one line per event, for people),
//! `latency-raw.svg` and `rate.svg` (partitions shaded), and the node logs
//! in `node-logs/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jepsen::checker::linear::{self, LinearResult};
use jepsen::checker::Verdict;
use jepsen::history::{self, Event, EventType, Function, Op, Outcome, Process};
use plotters::prelude::*;
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
    let unknown: Vec<Value> =
        linear.keys.iter().filter(|k| k.verdict == Verdict::Unknown).map(|k| k.key.clone()).collect();
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
    let mut by_f: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for f in ["read", "write", "cas"] {
        by_f.insert(f.to_owned(), [0; 3]);
    }
    for op in ops {
        let slot = match op.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info => 2,
        };
        by_f.entry(op.f.as_str().to_owned()).or_default()[slot] += 1;
    }
    let table = |c: [u64; 3]| json!({"valid?": c[0] > 0, "count": c.iter().sum::<u64>(), "ok-count": c[0], "fail-count": c[1], "info-count": c[2]});
    let total = by_f.values().fold([0; 3], |acc, c| [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]]);
    let valid = by_f.values().all(|c| c[0] > 0);
    let mut out = match table(total) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    out.insert("valid?".into(), json!(valid));
    out.insert("by-f".into(), Value::Object(by_f.into_iter().map(|(f, c)| (f, table(c))).collect()));
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
            "{:>12.6} {:>8} {:<6} {:<16} {:>4} {}",
            e.time as f64 / 1e9,
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
    let plots = Plots::new(events, time_limit);
    if let Err(e) = plots.latency(&dir.join("latency-raw.svg")) {
        tracing::warn!(error = %e, "cannot draw latency-raw.svg");
    }
    if let Err(e) = plots.rate(&dir.join("rate.svg")) {
        tracing::warn!(error = %e, "cannot draw rate.svg");
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

/// What the plots show: each completed operation's (completion time,
/// latency), and the partition intervals.
struct Plots {
    /// (function, outcome, completion time s, latency ms)
    points: Vec<(Function, EventType, f64, f64)>,
    partitions: Vec<(f64, f64)>,
    end: f64,
}

impl Plots {
    fn new(events: &[Event], time_limit: Duration) -> Plots {
        let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
        let mut points = Vec::new();
        let mut partitions = Vec::new();
        let mut open: Option<f64> = None;
        let mut end = time_limit.as_secs_f64();
        for e in events {
            let t = e.time as f64 / 1e9;
            end = end.max(t);
            match e.process {
                Process::Nemesis => match e.f.as_str() {
                    "start-partition" => open = Some(t),
                    "stop-partition" => {
                        if let Some(s) = open.take() {
                            partitions.push((s, t));
                        }
                    }
                    _ => {}
                },
                Process::Client(p) if e.kind == EventType::Invoke => {
                    invoked.insert(p, e.time);
                }
                Process::Client(p) => {
                    if let Some(start) = invoked.remove(&p) {
                        points.push((e.f.clone(), e.kind, t, (e.time.saturating_sub(start)) as f64 / 1e6));
                    }
                }
            }
        }
        if let Some(s) = open {
            partitions.push((s, end));
        }
        Plots { points, partitions, end }
    }

    fn series() -> Vec<(Function, EventType, RGBColor, &'static str)> {
        vec![
            (Function::Read, EventType::Ok, RGBColor(0x1f, 0x77, 0xb4), "read ok"),
            (Function::Read, EventType::Fail, RGBColor(0x9e, 0xc6, 0xe8), "read fail"),
            (Function::Write, EventType::Ok, RGBColor(0x2c, 0xa0, 0x2c), "write ok"),
            (Function::Write, EventType::Fail, RGBColor(0x98, 0xdf, 0x8a), "write fail"),
            (Function::Write, EventType::Info, RGBColor(0xff, 0x7f, 0x0e), "write info"),
            (Function::Cas, EventType::Ok, RGBColor(0x94, 0x67, 0xbd), "cas ok"),
            (Function::Cas, EventType::Fail, RGBColor(0xc5, 0xb0, 0xd5), "cas fail"),
            (Function::Cas, EventType::Info, RGBColor(0xd6, 0x27, 0x28), "cas info"),
        ]
    }

    /// Every operation's latency over time, log scale, partitions shaded.
    fn latency(&self, path: &Path) -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let max = self.points.iter().map(|p| p.3).fold(1.0_f64, f64::max) * 1.5;
        let min = self.points.iter().map(|p| p.3).fold(max, f64::min).max(0.01) / 1.5;
        let mut chart = ChartBuilder::on(&root)
            .caption("latency (partitions shaded)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..self.end, (min..max).log_scale())
            .map_err(plot_error)?;
        chart.configure_mesh().x_desc("time (s)").y_desc("latency (ms)").draw().map_err(plot_error)?;
        chart
            .draw_series(self.partitions.iter().map(|&(a, b)| {
                Rectangle::new([(a, min), (b, max)], RGBColor(0xcc, 0xcc, 0xcc).mix(0.5).filled())
            }))
            .map_err(plot_error)?;
        for (f, kind, color, label) in Self::series() {
            let points: Vec<(f64, f64)> =
                self.points.iter().filter(|p| p.0 == f && p.1 == kind).map(|p| (p.2, p.3)).collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 2, color.filled())))
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x, y), 3, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
        Ok(())
    }

    /// Completed operations per second, by function and outcome.
    fn rate(&self, path: &Path) -> anyhow::Result<()> {
        let buckets = self.end.ceil().max(1.0) as usize;
        let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut lines = Vec::new();
        let mut max = 1.0_f64;
        for (f, kind, color, label) in Self::series() {
            let mut counts = vec![0u32; buckets + 1];
            let mut any = false;
            for p in self.points.iter().filter(|p| p.0 == f && p.1 == kind) {
                counts[(p.2.floor() as usize).min(buckets)] += 1;
                any = true;
            }
            if any {
                max = max.max(f64::from(*counts.iter().max().unwrap_or(&0)));
                lines.push((counts, color, label));
            }
        }
        let mut chart = ChartBuilder::on(&root)
            .caption("throughput (partitions shaded)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..self.end, 0.0..max * 1.1)
            .map_err(plot_error)?;
        chart.configure_mesh().x_desc("time (s)").y_desc("operations / s").draw().map_err(plot_error)?;
        chart
            .draw_series(self.partitions.iter().map(|&(a, b)| {
                Rectangle::new([(a, 0.0), (b, max * 1.1)], RGBColor(0xcc, 0xcc, 0xcc).mix(0.5).filled())
            }))
            .map_err(plot_error)?;
        for (counts, color, label) in lines {
            let points = counts.into_iter().enumerate().map(|(i, c)| (i as f64 + 0.5, f64::from(c)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

#[cfg(test)]
mod tests {
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
            process: 0,
            f,
            key: json!(0),
            value: Value::Null,
            outcome,
            invoke_time: 0,
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
}
