//! `kvctl bench` end to end: about a second of load against the instant
//! server (through the binary, checking its `--json` report, and through
//! the library in both protocols, leader discovery included) and against a
//! real single-node kv-server, a local cluster of one. Each run must complete
//! operations with no errors and report sensible numbers. `kvctl bench
//! failover` runs one round on a cluster of three. Speed is not asserted:
//! that belongs in `docs/benchmarks.md`, not in a test.

use std::process::Command;
use std::time::Duration;

use kv_client::api::Consistency;
use kv_tools::bench::{self, LoadConfig, Report, Route, Stop, Target};
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
    for target in [Target::Kv, Target::Etcd] {
        // Two endpoints, so the leader is looked up (both are the leader).
        let mut cfg = LoadConfig::new(target, vec![addr.clone(), addr.clone()]);
        cfg.stop = Stop::Ops(500);
        cfg.read_ratio = 0.5;
        cfg.reads_to = Route::Leader;
        let r = bench::run_load(&cfg).await.unwrap();
        assert_sane(&r);
        assert_eq!(r.ops, 500, "{target:?}: an ops budget is exact");
        assert_eq!(r.write_endpoints, [format!("http://{addr}")], "{target:?}");
        assert_eq!(r.missing, 0, "{target:?}: the instant server's range answer has a value");
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
    let r = bench::run_load(&cfg).await.unwrap();
    assert_sane(&r);
    assert_eq!(r.prefill_errors, 0);
    assert!(r.reads > 0 && r.writes > 0, "{r:?}");
    assert_eq!(r.missing, 0, "every key was written by the prefill");
    let cpu = r.client_cpu_us_per_op;
    assert!(cfg!(not(target_os = "linux")) || cpu.is_some_and(|c| c > 0.0), "{cpu:?}");
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
    assert!(kv.p50_ms.is_some_and(|p| p > 0.0), "{report:?}");
    assert!(stderr.contains("kv round 1/1: leader node"), "{stderr}");
    // Every node it started (cluster.json has the latest pids) has stopped.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("kv/cluster.json")).unwrap()).unwrap();
    for n in file["nodes"].as_array().unwrap() {
        let pid = n["pid"].as_u64().unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("kv-server"), "node pid {pid} still running");
    }
}
