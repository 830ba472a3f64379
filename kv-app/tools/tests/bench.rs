//! `kvctl bench` end to end: about a second of load against the instant
//! server (through the binary, checking its `--json` report, and through
//! the library in both protocols, leader discovery included) and against a
//! real single-node kv-server, a local cluster of one. Each run must complete
//! operations with no errors and report sensible numbers. `kvctl bench
//! failover` runs one round on a cluster of three, with SIGTERM and with the
//! leader cut off (`--stop isolate`, drawing its plot), and `kvctl bench
//! elections` runs a few seconds at one timeout. Speed is not asserted:
//! that belongs in `docs/benchmarks.md`, not in a test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kv_client::api::Consistency;
use kv_tools::bench::{self, LoadConfig, Pool, Report, Route, Stop, Target};
use kv_tools::local_cluster::{ClusterConfig, LocalCluster};

mod common;

/// Checks what every successful run must satisfy.
fn assert_sane(r: &Report) {
    assert!(r.ops > 0, "no operation completed: {r:?}");
    assert_eq!(r.errors, 0, "errors: {:?}", r.error_kinds);
    assert_eq!(r.ops, r.reads + r.writes);
    assert!(r.ops_per_sec > 0.0 && r.elapsed_s > 0.0, "{r:?}");
    let l = r.latency_us;
    assert!(l.p50 >= 1 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
}

#[test]
fn kvctl_bench_against_the_instant_server_prints_a_json_report() {
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["bench", "--target", "null", "--clients", "8", "--duration", "1", "--warmup", "0.2"])
        .args(["--read-ratio", "0.5", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let report: Report = serde_json::from_str(stdout.trim()).expect("one JSON report on stdout");
    assert_sane(&report);
    assert_eq!((report.target, report.clients), (Target::Null, 8));
    assert!(report.reads > 0 && report.writes > 0, "a 50% mix has both: {report:?}");
    assert!(report.read_latency_us.is_some() && report.write_latency_us.is_some());
    // The run honours --warmup and --duration whatever the machine's
    // speed: it cannot end before 0.2 s of warm-up and 1 s of load, and
    // its measured phase starts after the warm-up, so it is shorter than
    // the whole command less the warm-up. (Neither bound can be broken by a
    // slow machine; how fast it runs is not asserted.)
    let wall = started.elapsed().as_secs_f64();
    assert!((report.warmup_s - 0.2).abs() < 1e-9, "{report:?}");
    assert!(wall >= 1.2, "the command ended after {wall} s, before warm-up and duration were over");
    assert!(
        report.elapsed_s <= wall - report.warmup_s,
        "measured {} s of a {wall} s command",
        report.elapsed_s
    );
    let rate = report.ops as f64 / report.elapsed_s;
    assert!((report.ops_per_sec - rate).abs() <= 1e-6 * rate, "ops_per_sec is ops / elapsed_s: {report:?}");
    assert_eq!(report.missing, 0, "the instant server always has the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_find_the_leader_and_complete_an_ops_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(bench::serve_instant(listener, 64));
    for (target, pool) in [Target::Kv, Target::Etcd]
        .into_iter()
        .flat_map(|t| [Pool::Shared, Pool::PerClient, Pool::Connection].map(|p| (t, p)))
    {
        // Two endpoints, so the leader is looked up (both are the leader).
        let mut cfg = LoadConfig::new(target, vec![addr.clone(), addr.clone()]);
        cfg.stop = Stop::Ops(500);
        cfg.read_ratio = 0.5;
        cfg.reads_to = Route::Leader;
        cfg.pool = pool;
        let r = bench::run_load(&cfg).await.unwrap();
        assert_sane(&r);
        assert_eq!(r.ops, 500, "{target:?} {pool:?}: an ops budget is exact");
        assert_eq!(r.write_endpoints, [format!("http://{addr}")], "{target:?}");
        assert_eq!(r.missing, 0, "{target:?} {pool:?}: the instant server's range answer has a value");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_load_on_a_real_kv_server_completes_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::up(ClusterConfig::new(1, dir.path(), common::kv_server())).await.unwrap();
    assert_eq!(cluster.leader(), 1);

    let mut cfg = LoadConfig::new(Target::Kv, cluster.endpoints());
    cfg.clients = 8;
    cfg.keys = 64;
    cfg.prefill = true;
    cfg.read_ratio = 0.5;
    cfg.consistency = Consistency::Session;
    cfg.warmup = Duration::from_millis(200);
    for pool in [Pool::Shared, Pool::Connection] {
        cfg.pool = pool;
        let r = bench::run_load(&cfg).await.unwrap();
        assert_sane(&r);
        assert_eq!(r.prefill_errors, 0);
        assert!(r.reads > 0 && r.writes > 0, "{pool:?}: {r:?}");
        assert_eq!(r.missing, 0, "{pool:?}: every key was written by the prefill");
        let cpu = r.client_cpu_us_per_op;
        assert!(cfg!(not(target_os = "linux")) || cpu.is_some_and(|c| c > 0.0), "{cpu:?}");
    }
    drop(cluster);
}

/// `kvctl bench failover` starts its own 3-node cluster, stops the leader
/// (once here, with SIGTERM), restarts it, and reports the round. How long
/// the round took is not asserted.
#[test]
fn kvctl_bench_failover_measures_a_round_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["bench", "failover", "--rounds", "1", "--json", "--bin"])
        .arg(common::kv_server())
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let report: bench::FailoverReport =
        serde_json::from_str(stdout.trim()).expect("one JSON report on stdout");
    let [kv] = &report.systems[..] else { panic!("one system measured: {report:?}") };
    assert_eq!((kv.target, kv.failed_rounds, kv.samples_ms.len()), (bench::System::Kv, 0, 1), "{report:?}");
    assert!(kv.first_write.p50_ms.is_some_and(|p| p > 0.0), "{report:?}");
    assert!(kv.old_leader.is_empty(), "only --stop isolate probes the old leader: {report:?}");
    assert!(stderr.contains("kv round 1/1: leader node"), "{stderr}");
    assert_stopped(&dir.path().join("kv"));
}

/// Every node a run started in `dir` (cluster.json has the latest pids)
/// has stopped.
fn assert_stopped(dir: &Path) {
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap();
    for n in file["nodes"].as_array().unwrap() {
        let pid = n["pid"].as_u64().unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("kv-server"), "node pid {pid} still running");
    }
}

/// Runs `kvctl ARGS --json` and returns its report; a run whose rounds
/// saw no put in time (exit 2) counts too, since a busy machine may cause
/// that, and its report is still whole.
fn kvctl_json<T: serde::de::DeserializeOwned>(args: &[&str], dir: &Path) -> (T, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(args)
        .args(["--json", "--bin"])
        .arg(common::kv_server())
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}: {stdout}{stderr}", out.status);
    (serde_json::from_str(stdout.trim()).expect("one JSON report on stdout"), stderr)
}

/// Whether `path` holds an SVG document.
fn is_svg(path: &Path) -> bool {
    let svg = std::fs::read_to_string(path).unwrap_or_default();
    svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>")
}

/// `--stop isolate` cuts the leader's Raft links through the proxies,
/// heals them, and reports the majority side's first write, the time
/// without a leader and what the old leader did; `--plot` draws the CDF.
/// Which numbers come out is not asserted, only that they are there.
#[test]
fn kvctl_bench_failover_isolate_reports_both_sides_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("cdf.svg");
    let args = ["bench", "failover", "--stop", "isolate", "--rounds", "1", "--heartbeat-ms", "50"];
    let more = ["--election-timeout-ms", "300", "--isolate-ms", "2000", "--plot", plot.to_str().unwrap()];
    let (report, stderr): (bench::FailoverReport, _) =
        kvctl_json(&[&args[..], &more[..]].concat(), &dir.path().join("run"));
    assert_eq!(report.stop, bench::StopWith::Isolate);
    let [kv] = &report.systems[..] else { panic!("one system measured: {report:?}") };
    assert_eq!((kv.election_timeout_ms, kv.isolate_ms), (Some(300), Some(2000)), "{report:?}");
    assert_eq!(kv.samples_ms.len() as u32 + kv.failed_rounds, 1, "{report:?}");
    assert!(kv.samples_ms.iter().chain(&kv.leaderless_samples_ms).all(|&ms| ms > 0.0), "{report:?}");
    let [old] = &kv.old_leader[..] else { panic!("one round of the old leader: {report:?}") };
    for v in [old.last_write_ok_ms, old.first_write_refusal_ms, old.last_read_ok_ms, old.stepped_down_ms] {
        assert!(v.is_none_or(|ms| (0.0..=2000.0).contains(&ms)), "answers before the heal only: {old:?}");
    }
    assert!(stderr.contains("kv T=300 round 1/1: leader node"), "{stderr}");
    assert!(is_svg(&plot), "{}", std::fs::read_to_string(&plot).unwrap_or_default());
    assert_stopped(&dir.path().join("run/kv-300"));
}

/// `kvctl bench elections` runs a load with follower pauses and counts
/// elections; with failover times from a report it plots the trade-off.
#[test]
fn kvctl_bench_elections_counts_elections_and_plots_the_tradeoff() {
    let dir = tempfile::tempdir().unwrap();
    // A failover report as `kvctl bench failover --json` writes it, for the
    // plot's other axis.
    let failover = dir.path().join("failover.json");
    let kv = |t: u64, p50_ms: f64| {
        serde_json::json!({"target": "kv", "election_timeout_ms": t, "samples_ms": [p50_ms], "failed_rounds": 0,
            "p50_ms": p50_ms, "p90_ms": p50_ms, "min_ms": p50_ms, "max_ms": p50_ms})
    };
    let report = serde_json::json!({"stop": "kill", "rounds": 1, "probe_interval_ms": 10, "cpus": 2,
        "load_average": null, "heartbeat_ms": 50, "systems": [kv(300, 420.0), kv(1000, 1500.0)]});
    std::fs::write(&failover, report.to_string()).unwrap();
    let plot = dir.path().join("tradeoff.svg");
    let args =
        ["bench", "elections", "--heartbeat-ms", "50", "--election-timeout-ms", "300", "--duration", "3"];
    let more = ["--clients", "4", "--pause-every-ms", "400", "--failover-json", failover.to_str().unwrap()];
    let (report, _): (bench::ElectionsReport, _) = kvctl_json(
        &[&args[..], &more[..], &["--plot", plot.to_str().unwrap()]].concat(),
        &dir.path().join("run"),
    );
    let [r] = &report.results[..] else { panic!("one system and timeout: {report:?}") };
    assert_eq!((r.target, r.election_timeout_ms), (bench::System::Kv, 300), "{report:?}");
    assert!(r.seconds >= 3.0 && r.pauses >= 1 && r.writes_per_sec > 0.0, "{report:?}");
    assert!(r.mean_pause_ms >= 75.0 && r.mean_pause_ms <= 225.0, "a pause is 25-75% of T: {report:?}");
    assert!(r.elections >= r.leaders_elected, "a won election started a term: {report:?}");
    assert_eq!(r.failover_p50_ms, Some(420.0), "matched by system and timeout: {report:?}");
    assert!(is_svg(&plot), "{}", std::fs::read_to_string(&plot).unwrap_or_default());
    assert_stopped(&dir.path().join("run/kv-300"));
}

/// `kvctl bench watch` opens the watches on a follower of a fresh cluster,
/// puts at a fixed rate through the leader, and finds every put's event at
/// every watcher, with both probers. The latencies are not asserted.
#[test]
fn kvctl_bench_watch_delivers_every_put_to_every_watcher_with_both_probers() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "watch", "--watchers", "1,3", "--rate", "20", "--seconds", "1", "--drain", "3"];
    let (report, stderr): (bench::WatchReport, _) = kvctl_json(&args, &dir.path().join("run"));
    let rows: Vec<_> = report.rows.iter().map(|r| (r.prober, r.watchers)).collect();
    use bench::Prober::{Json, Scan};
    assert_eq!(rows, [(Json, 1), (Json, 3), (Scan, 1), (Scan, 3)], "{stderr}");
    for r in &report.rows {
        assert_eq!((r.puts + r.failed_puts, r.failed_puts), (20, 0), "{r:?}");
        assert_eq!((r.deliveries, r.missed), (r.puts * r.watchers as u64, 0), "{r:?}");
        assert!(r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms, "{r:?}");
        // The CPU time is read in 10 ms ticks: a second of light load may
        // show none.
        assert!(
            r.rss_watching_mib > 0.0 && r.generator_cpu_us.is_finite() && r.generator_cpu_us >= 0.0,
            "{r:?}"
        );
    }
    assert_stopped(&dir.path().join("run/kv"));
}
