//! One run, from start to end: [`run_load`] finds the leader where a
//! route needs it, prepares the [`Plan`] and the workers, prefills, then
//! lets the workers loop under a [`Schedule`] that says when the warm-up
//! ends and the measured phase stops, samples CPU time at the measured
//! phase's start and end, and merges the workers' tallies into a
//! [`Report`](super::Report).
//!
//! It promises that only operations that start inside the measured phase
//! are recorded, and that the instant server of `--target null` is stopped
//! when the run returns, whether it succeeded or not. CPU time is read from
//! `/proc/PID/stat`, so the CPU figures exist on Linux only.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kv_client::client::normalize_endpoint_for;

use super::instant::serve_instant;
use super::report::{report, thousands, Report, Tally};
use super::worker::{find_leader, http_client, workers, Plan, Protocol, Worker};
use super::{LoadConfig, Route, Stop, Target};

/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// `/proc/PID/stat` counts CPU time in clock ticks of 1/100 s (`USER_HZ`,
/// fixed at 100 in Linux's user-space ABI): 10 ms each.
const TICK_MS: u64 = 10;

/// When the measured phase starts and ends, and the counters the workers
/// and the progress bar share.
pub(super) struct Schedule {
    pub(super) measure_start: Instant,
    pub(super) deadline: Option<Instant>,
    pub(super) budget: Option<u64>,
    /// Measured operations claimed so far (for `Stop::Ops`).
    pub(super) claimed: AtomicU64,
    /// Measured operations finished, successful or not.
    pub(super) finished: AtomicU64,
    /// Measured operations that failed.
    pub(super) failed: AtomicU64,
}

/// Runs one load and returns what it measured. Needs a Tokio runtime with
/// timers and I/O; a multi-threaded one lets the generator use every core.
pub async fn run_load(cfg: &LoadConfig) -> anyhow::Result<Report> {
    let http = http_client(cfg.request_timeout, cfg.token.as_ref(), cfg.tls.as_ref())?;
    let mut instant_server = None;
    let (protocol, endpoints) = match cfg.target {
        Target::Null => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the instant server to 127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            instant_server = Some(tokio::spawn(serve_instant(listener, cfg.value_size)));
            (Protocol::Kv, vec![format!("http://{addr}")])
        }
        Target::Kv | Target::Etcd => {
            let endpoints = cfg
                .endpoints
                .iter()
                .map(|e| normalize_endpoint_for(e, cfg.tls.is_some()))
                .collect::<Result<Vec<_>, _>>()
                .context("bad --endpoints")?;
            if endpoints.is_empty() {
                bail!("no --endpoints given");
            }
            let protocol = if cfg.target == Target::Kv { Protocol::Kv } else { Protocol::Etcd };
            (protocol, endpoints)
        }
    };
    let result = run_against(cfg, &http, protocol, endpoints).await;
    if let Some(server) = instant_server {
        server.abort();
    }
    result
}

async fn run_against(
    cfg: &LoadConfig,
    http: &reqwest::Client,
    protocol: Protocol,
    endpoints: Vec<String>,
) -> anyhow::Result<Report> {
    let needs_leader = (cfg.writes_to == Route::Leader && (cfg.read_ratio < 1.0 || cfg.prefill))
        || (cfg.reads_to == Route::Leader && cfg.read_ratio > 0.0);
    let leader = if needs_leader && endpoints.len() > 1 {
        Some(find_leader(http, protocol, &endpoints).await?)
    } else {
        None
    };
    let route = |r: Route| match (r, &leader) {
        (Route::Leader, Some(l)) => vec![l.clone()],
        _ => endpoints.clone(),
    };
    let plan = Arc::new(Plan::new(cfg, protocol, route(cfg.writes_to), route(cfg.reads_to))?);
    let mut workers = workers(cfg, http, &plan)?;

    let bar = progress_bar(cfg);
    let prefill_errors = if cfg.prefill { prefill(cfg, &bar, &mut workers).await? } else { 0 };

    let measure_start = Instant::now() + cfg.warmup;
    let sched = Arc::new(Schedule {
        measure_start,
        deadline: match cfg.stop {
            Stop::After(d) => Some(measure_start + d),
            Stop::Ops(_) => None,
        },
        budget: match cfg.stop {
            Stop::Ops(n) => Some(n),
            Stop::After(_) => None,
        },
        claimed: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let stop_ticker = Arc::new(AtomicBool::new(false));
    let ticker = spawn_measure_ticker(cfg, &bar, &sched, &stop_ticker);
    let handles: Vec<_> =
        workers.into_iter().map(|w| tokio::spawn(w.run(cfg.read_ratio, cfg.keys, sched.clone()))).collect();
    // Sample CPU time as close to the start of the measured phase as we can.
    tokio::time::sleep_until(measure_start.into()).await;
    let cpu_start = Cpu::now(&cfg.server_pids);
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(h.await.context("a bench worker panicked")?);
    }
    let cpu_end = Cpu::now(&cfg.server_pids);
    stop_ticker.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();

    let elapsed = match (tally.last_end, sched.deadline) {
        (Some(end), _) => end.saturating_duration_since(measure_start),
        (None, Some(deadline)) => deadline - measure_start,
        (None, None) => Duration::ZERO,
    };
    Ok(report(cfg, &plan, tally, elapsed, (cpu_start, cpu_end), prefill_errors))
}

/// Writes every key once, `clients` at a time; returns the failed writes.
async fn prefill(cfg: &LoadConfig, bar: &ProgressBar, workers: &mut Vec<Worker>) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    bar.set_length(cfg.keys);
    let ticker = {
        let done = done.clone();
        spawn_ticker(bar.clone(), stop.clone(), move |bar| {
            bar.set_position(done.load(Ordering::Relaxed));
            bar.set_message("prefill");
        })
    };
    let step = workers.len() as u64;
    let handles: Vec<_> = workers
        .drain(..)
        .enumerate()
        .map(|(i, mut w)| {
            let (done, keys) = (done.clone(), cfg.keys);
            tokio::spawn(async move {
                let failed = w.prefill(i as u64, step, keys, &done).await;
                (w, failed)
            })
        })
        .collect();
    let mut failed = 0;
    for h in handles {
        let (w, f) = h.await.context("a prefill worker panicked")?;
        workers.push(w);
        failed += f;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    Ok(failed)
}

/// The progress bar: hidden unless asked for and stderr is a terminal.
fn progress_bar(cfg: &LoadConfig) -> ProgressBar {
    if !cfg.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("bench {}", cfg.target.name()));
    bar
}

/// Redraws `bar` every [`PROGRESS_TICK`] until `stop` is set.
fn spawn_ticker(
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    mut update: impl FnMut(&ProgressBar) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            update(&bar);
            tokio::time::sleep(PROGRESS_TICK).await;
        }
    })
}

/// Shows the warm-up, then the measured phase's progress and rate.
fn spawn_measure_ticker(
    cfg: &LoadConfig,
    bar: &ProgressBar,
    sched: &Arc<Schedule>,
    stop_ticker: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (sched, warmup, stop) = (sched.clone(), cfg.warmup, cfg.stop);
    match stop {
        Stop::After(d) => bar.set_length((warmup + d).as_millis() as u64),
        Stop::Ops(n) => bar.set_length(n),
    }
    spawn_ticker(bar.clone(), stop_ticker.clone(), move |bar| {
        let now = Instant::now();
        if now < sched.measure_start {
            let done = warmup.saturating_sub(sched.measure_start - now);
            if let Stop::After(_) = stop {
                bar.set_position(done.as_millis() as u64);
            }
            bar.set_message(format!("warm-up {:.1}/{:.1} s", done.as_secs_f64(), warmup.as_secs_f64()));
            return;
        }
        let elapsed = now - sched.measure_start;
        let finished = sched.finished.load(Ordering::Relaxed);
        let failed = sched.failed.load(Ordering::Relaxed);
        let rate = finished.saturating_sub(failed) as f64 / elapsed.as_secs_f64().max(1e-3);
        match stop {
            Stop::After(_) => bar.set_position((warmup + elapsed).as_millis() as u64),
            Stop::Ops(_) => bar.set_position(finished),
        }
        bar.set_message(format!(
            "{:.1} s, {} ops/s, {failed} errors",
            elapsed.as_secs_f64(),
            thousands(rate.round() as u64)
        ));
    })
}

/// CPU time used so far by this process and by the servers, where readable.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cpu {
    pub(super) generator: Option<Duration>,
    pub(super) servers: Option<Duration>,
}

impl Cpu {
    fn now(server_pids: &[u32]) -> Cpu {
        Cpu { generator: cpu_time("self"), servers: cpu_time_of(server_pids) }
    }
}

/// CPU time (user + system) that process `pid` ("self" for this one) has
/// used so far, from `/proc/PID/stat`; `None` where that cannot be read.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // after it, field 3 (the state) comes first, and utime and stime are
    // fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(TICK_MS * (utime + stime)))
}

/// The summed CPU time of several processes, if every one can be read.
fn cpu_time_of(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| cpu_time(&pid.to_string())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(cpu_time("self").is_some());
            assert!(cpu_time_of(&[std::process::id()]).is_some());
        }
        assert_eq!(cpu_time_of(&[]), None);
    }
}
