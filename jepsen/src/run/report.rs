//! The report of a run: files in the run's directory, and a summary on the
//! terminal.
//!
//! | file | what |
//! |------|------|
//! | `history.jsonl` | the history, one event per line ([`jepsen_checker::history`]) |
//! | `statuses.jsonl` | every polled node status (for the leader checker) |
//! | `rollback.json` | every node's rollback records, in full, collected after the final reads ([`jepsen_checker::rollback`]); `jepsen check` reads it next to the history |
//! | `results.json` | the verdict, every checker's result, the statistics ([`jepsen_checker::stats`]) and the options |
//! | `latency.svg`, `rate.svg` | latency and throughput over time, faults shaded ([`jepsen_checker::plot`]) |
//! | `nodes/node-<i>/server.log` | each node's log |
//! | `nodes/node-<i>/raft.redb`, `nodes/node-<i>/wal/` | each node's data (database, log file), kept only if the verdict is not valid |
//!
//! Besides the history checkers, two verdicts come from the nodes
//! themselves: `logs` (a panic in any node's log) and `exits` (a node
//! process that ended without the harness killing it).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use jepsen_checker::checker::convergence::{self, FinalStatus};
use jepsen_checker::checker::leaders::{self, StatusSample};
use jepsen_checker::checker::session::FinalLog;
use jepsen_checker::checker::{logs, Verdict};
use jepsen_checker::history::{Event, EventType, Process, Recorder};
use jepsen_checker::rollback::{self, Rollbacks};
use serde_json::{json, Value};

use super::{RunOutcome, TestOptions};
use crate::tls::Credentials;

/// What the report is made from.
pub struct Inputs<'a> {
    /// The run's options.
    pub opts: &'a TestOptions,
    /// The run's credentials, for a `--tls` run.
    pub tls: Option<&'a Credentials>,
    /// The run's directory.
    pub dir: &'a Path,
    /// The history.
    pub events: &'a [Event],
    /// Every polled status.
    pub samples: &'a [StatusSample],
    /// Every node's status at the end.
    pub finals: &'a [FinalStatus],
    /// Every node's log.
    pub logs: &'a BTreeMap<u64, String>,
    /// Nodes whose process ended without the harness killing it.
    pub exits: &'a [(u64, String)],
    /// The agreed log, for the session workload.
    pub final_log: Option<anyhow::Result<FinalLog>>,
    /// Every node's rollback records, as `rollback.json` holds them.
    pub rollbacks: &'a Value,
}

/// Checks everything and writes the report; returns the verdict.
///
/// # Errors
/// If a file cannot be written, or the history cannot be judged at all.
pub fn write(inputs: Inputs<'_>) -> anyhow::Result<RunOutcome> {
    let Inputs { opts, tls, dir, events, samples, finals, logs, exits, final_log, rollbacks } = inputs;
    jepsen_checker::history::write_history(dir.join("history.jsonl"), events)
        .context("writing history.jsonl")?;
    write_lines(&dir.join("statuses.jsonl"), samples)?;
    let text = serde_json::to_string_pretty(rollbacks).context("serializing the rollback records")? + "\n";
    std::fs::write(dir.join(rollback::FILE_NAME), text).context("writing rollback.json")?;
    // Judged as `jepsen check` will read them back from the file.
    let rollbacks: Rollbacks =
        serde_json::from_value(rollbacks.clone()).context("reading the nodes' rollback records")?;

    let (final_log, log_error) = match final_log {
        Some(Ok(log)) => (Some(log), None),
        Some(Err(e)) => (None, Some(format!("{e:#}"))),
        None => (None, None),
    };
    let report = jepsen_checker::check::check_events_with(
        events,
        opts.check_budget,
        final_log.as_ref(),
        Some(&rollbacks),
    )
    .context("checking the history")?;
    let leaders = leaders::check(samples);
    let convergence = convergence::check(finals);
    let logs = logs::check(logs);
    // A node that exits on its own has crashed: a bug whatever the history.
    let exits_verdict = if exits.is_empty() { Verdict::Valid } else { Verdict::Invalid };
    let mut verdicts = vec![report.valid, leaders.verdict, convergence.verdict, logs.verdict, exits_verdict];
    if log_error.is_some() {
        // Consistent prefix could not be checked: not a pass.
        verdicts.push(Verdict::Unknown);
    }
    let verdict = Verdict::all(verdicts);
    let stats = jepsen_checker::stats::summarize(events).context("summarising the history")?;

    let mut checkers = serde_json::Map::new();
    checkers.insert("linearizability".into(), json!(report.linearizability));
    if let Some(set) = &report.set {
        checkers.insert("set".into(), json!(set));
    }
    if let Some(s) = &report.session {
        checkers.insert("session".into(), json!(s));
    }
    if let Some(w) = &report.watch {
        checkers.insert("watch".into(), json!(w));
    }
    if let Some(l) = &report.lease {
        checkers.insert("lease".into(), json!(l));
    }
    if let Some(e) = &log_error {
        checkers.insert("final_log".into(), json!({"verdict": "unknown", "error": e}));
    }
    checkers.insert("leaders".into(), json!(leaders));
    checkers.insert("convergence".into(), json!(convergence));
    checkers.insert("logs".into(), json!(logs));
    let exits: Vec<Value> =
        exits.iter().map(|(node, status)| json!({"node": node, "status": status})).collect();
    checkers.insert("exits".into(), json!({"verdict": exits_verdict, "exits": exits}));
    let results = json!({
        "valid": verdict,
        "workload": opts.workload,
        "options": options_json(opts, tls),
        "checkers": checkers,
        "stats": stats,
        "final_statuses": finals,
    });
    let text = serde_json::to_string_pretty(&results).context("serializing results")? + "\n";
    std::fs::write(dir.join("results.json"), text).context("writing results.json")?;

    let plot_opts = jepsen_checker::plot::PlotOptions { min_duration: opts.time_limit, ..Default::default() };
    for (file, e) in jepsen_checker::plot::write_plots(dir, events, &plot_opts) {
        tracing::warn!(file, error = %e, "cannot draw a plot");
    }
    if verdict == Verdict::Valid {
        remove_data(&dir.join("nodes"));
    }
    Ok(RunOutcome { verdict, dir: dir.to_path_buf(), results })
}

fn options_json(o: &TestOptions, tls: Option<&Credentials>) -> Value {
    json!({
        "tls": tls.map_or(Value::Bool(false), Credentials::describe),
        "workload": o.workload,
        "nodes": o.nodes,
        "nemesis": o.faults,
        "kill_targets": o.kill_targets,
        "time_limit_s": o.time_limit.as_secs_f64(),
        "rate": o.rate,
        "concurrency": o.concurrency,
        "lease_clients": o.lease_clients,
        "seed": o.seed,
        "interval_s": o.interval.as_secs_f64(),
        "quiet_s": o.quiet.as_secs_f64(),
        "attempt_timeout_s": o.attempt_timeout.as_secs_f64(),
        "op_timeout_s": o.op_timeout.as_secs_f64(),
        "threads_per_key": o.threads_per_key,
        "ops_per_key": o.ops_per_key,
        "lose_responses": o.lose_responses,
        "durability": o.durability.name(),
        "server_bin": o.server_bin,
        "server_args": o.server_args,
    })
}

fn write_lines<T: serde::Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))
}

/// Deletes the nodes' data files after a valid run, keeping their logs.
fn remove_data(nodes: &Path) {
    let Ok(dirs) = std::fs::read_dir(nodes) else { return };
    for node in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(node.path()) else { continue };
        for f in files.flatten() {
            if f.file_name() != "server.log" {
                let _ = if f.path().is_dir() {
                    std::fs::remove_dir_all(f.path())
                } else {
                    std::fs::remove_file(f.path())
                };
            }
        }
    }
}

/// The summary printed at the end of a run.
pub fn summary(outcome: &RunOutcome) -> String {
    let r = &outcome.results;
    let mut s = String::new();
    let line = |s: &mut String, text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line(&mut s, format!("run: {}", outcome.dir.display()));
    if r["options"]["tls"].is_object() {
        line(&mut s, "over TLS: peer TLS, HTTPS with client certificates, bearer token".into());
    }
    let o = &r["stats"]["outcomes"]["all"];
    line(&mut s, format!("operations: {} ok, {} fail, {} info", o["ok"], o["fail"], o["info"]));
    if let Some(by_f) = r["stats"]["outcomes"]["by_f"].as_object() {
        for (f, c) in by_f {
            line(&mut s, format!("  {f:<6} {} ok, {} fail, {} info", c["ok"], c["fail"], c["info"]));
        }
    }
    for phase in ["before", "during", "after", "final"] {
        let c = &r["stats"]["phases"][phase]["all"];
        if !c.is_null() {
            line(
                &mut s,
                format!("  phase {phase:<11} {} ok, {} fail, {} info", c["ok"], c["fail"], c["info"]),
            );
        }
    }
    if let Some(counts) = r["stats"]["fault_counts"].as_object() {
        let faults: Vec<String> = counts.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        line(
            &mut s,
            format!("faults: {}", if faults.is_empty() { "none".into() } else { faults.join(", ") }),
        );
    }
    if let Some(by_fault) = r["stats"]["fault_writes"].as_object() {
        for (fault, w) in by_fault {
            let c = &w["outcomes"]["all"];
            let longest = match w["longest_ok_ms"].as_f64() {
                Some(ms) => format!("; longest ok write {ms:.1} ms"),
                None => String::new(),
            };
            line(
                &mut s,
                format!(
                    "  writes during {fault} ×{}: {} ok, {} fail, {} info{longest}",
                    w["windows"], c["ok"], c["fail"], c["info"]
                ),
            );
        }
    }
    let rec = &r["stats"]["recovery"]["summary"];
    if rec["heals"].as_u64().unwrap_or(0) > 0 {
        line(
            &mut s,
            format!(
                "recovery after heals: {} of {} recovered, median {:.1} ms, max {:.1} ms",
                rec["recovered"],
                rec["heals"],
                rec["median_ms"].as_f64().unwrap_or(f64::NAN),
                rec["max_ms"].as_f64().unwrap_or(f64::NAN)
            ),
        );
    }
    if let Some(latency) = r["stats"]["latency"].as_object() {
        for (f, l) in latency.iter().filter(|(f, _)| ["write", "cas", "add"].contains(&f.as_str())) {
            let at = |q: &str| l[q].as_f64().unwrap_or(f64::NAN);
            line(
                &mut s,
                format!(
                    "latency of ok {f} ({}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    r["options"]["durability"].as_str().unwrap_or("majority"),
                    at("p50_ms"),
                    at("p99_ms"),
                    at("max_ms")
                ),
            );
        }
    }
    let split = &r["stats"]["split_brain"];
    if let Some(partitions) = split["partitions"].as_array() {
        let each: Vec<String> = partitions
            .iter()
            .map(|p| match p["window_ms"].as_f64() {
                Some(ms) => format!("{ms:.0} ms (cut off {}, {} acks)", p["cut_off"], p["acknowledged"]),
                None => format!("none (cut off {})", p["cut_off"]),
            })
            .collect();
        let max = split["max_ms"].as_f64().map_or("none".to_string(), |ms| format!("{ms:.1} ms"));
        line(
            &mut s,
            format!(
                "split-brain window (leader-durable acks by nodes cut off from the majority): max {max}, \
                 {} acks over {} partition(s){}{}",
                split["acknowledged"],
                partitions.len(),
                if each.is_empty() { "" } else { ": " },
                each.join(", ")
            ),
        );
    }
    if let Some(explanation) = r["checkers"]["set"]["lost_writes"]["explanation"].as_str() {
        line(&mut s, format!("lost writes: {explanation}"));
    }
    let watch = &r["checkers"]["watch"];
    if watch.is_object() {
        line(
            &mut s,
            format!(
                "watch: {} connections delivered {} events; {} acknowledged changes, {} reads and {} \
                 before-images checked through index {}; violations {}",
                watch["connections"],
                watch["events"],
                watch["acknowledged_checked"],
                watch["reads_checked"],
                watch["before_images_checked"],
                watch["covered_through"],
                watch["violation_counts"]
            ),
        );
    }
    let lease = &r["checkers"]["lease"];
    if lease.is_object() {
        line(
            &mut s,
            format!(
                "lease: {} leases, {} keepalives ok, {} keys; {} reads ({} while provably alive, {} of an \
                 absent key judged, {} sent past a proven deadline), {} refusals judged; bound {} ms; violations {}",
                lease["leases"],
                lease["keepalives_ok"],
                lease["keys"],
                lease["reads"],
                lease["reads_while_alive"],
                lease["absent_reads_judged"],
                lease["reads_past_deadline"],
                lease["refusals_judged"],
                lease["bound_ms"],
                lease["violation_counts"]
            ),
        );
    }
    if let Some(checkers) = r["checkers"].as_object() {
        for (name, c) in checkers {
            line(&mut s, format!("checker {name:<16} {}", c["verdict"].as_str().unwrap_or("?")));
        }
    }
    line(&mut s, format!("verdict: {}", r["valid"].as_str().unwrap_or("?")));
    s
}

/// A progress bar over the run's time limit, showing completed operations
/// and the fault in force. Hidden when disabled or not on a terminal.
pub struct Progress {
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts updating every 250 ms.
    pub fn start(enabled: bool, time_limit: Duration, rec: Recorder) -> Progress {
        let bar = if enabled { ProgressBar::new(time_limit.as_secs().max(1)) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let b = bar.clone();
        let task = enabled.then(|| {
            tokio::spawn(async move {
                let mut seen = 0;
                let (mut ok, mut other, mut fault) = (0u64, 0u64, String::from("none"));
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let events = rec.events_since(seen);
                    seen += events.len();
                    for e in &events {
                        match (&e.process, e.kind) {
                            (Process::Nemesis, _) => {
                                let f = e.f.as_str();
                                fault = match f.strip_prefix("start-") {
                                    Some(name) => name.to_string(),
                                    None if f.starts_with("stop-") => "none".into(),
                                    None => fault,
                                };
                            }
                            (_, EventType::Ok) => ok += 1,
                            (_, EventType::Fail | EventType::Info) => other += 1,
                            _ => {}
                        }
                    }
                    b.set_position(rec.elapsed_nanos() / 1_000_000_000);
                    b.set_message(format!("{ok} ok, {other} fail/info, fault: {fault}"));
                }
            })
        });
        Progress { bar, task }
    }

    /// Says what the run is doing after the time limit.
    pub fn phase(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    /// Stops the bar.
    pub fn finish(self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
