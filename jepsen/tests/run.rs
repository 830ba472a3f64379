//! Whole runs of `jepsen test` on real clusters: the short run CI relies on
//! must be valid, and each negative control, a server deliberately broken
//! in one way, must be caught.
//!
//! A checker that only ever says "valid" proves nothing. The negative
//! controls show that these runs *can* fail, each for the reason it was
//! built to find:
//!
//! * `--unsafe-local-reads`: linearizable reads served from local state,
//!   so a follower or a deposed leader answers with an old value (the
//!   linearizability checker);
//! * `--unsafe-no-dedup` with client retries after timeouts: a retried
//!   compare-and-set applies twice, or reports a mismatch for a change that
//!   did happen (the linearizability checker);
//! * `--unsafe-no-fsync` with the lose-unsynced-writes crash of every node:
//!   acknowledged elements vanish (the set checker);
//! * `--unsafe-watch-from-latest`: a resumed watch skips changes (the watch
//!   checker);
//! * `--unsafe-lease-expire-early`: the leader ends leases at half their
//!   TTL, so leased keys vanish while their owner renews in time (the lease
//!   check);
//! * `--unsafe-lease-never-expire`: the leader never expires a lease, so
//!   keys outlive their leases (the lease check's *outlived* rule).
//!
//! One more run does the same with `--tls`: every security layer of the
//! server on, and the harness as an authenticated HTTPS client. Two runs
//! stop nodes gracefully (SIGTERM): one node at a time, the leader among
//! them, must be as valid as any fault; a rolling restart of every node
//! must cost the clients not a single write.
//!
//! One run acknowledges writes at leader durability, which may lose them
//! by design: every lost one must be in some node's rollback record.
//!
//! The runs are serialised: several clusters at once on a two-core machine
//! would mostly measure the machine.

use std::time::Duration;

use jepsen::run::nemesis::{Fault, Target};
use jepsen::run::workload::Kind;
use jepsen::run::{run, RunOutcome, TestOptions};
use jepsen_checker::Verdict;
use kv_client::api::Durability;
use serde_json::Value;

mod common;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(store: &std::path::Path, workload: Kind, faults: &[Fault], secs: u64) -> TestOptions {
    TestOptions {
        workload,
        nodes: 3,
        faults: faults.to_vec(),
        kill_targets: Target::ALL.to_vec(),
        time_limit: Duration::from_secs(secs),
        rate: 100.0,
        concurrency: 6,
        watchers: 3,
        lease_clients: 0,
        seed: 42,
        interval: Duration::from_secs(4),
        quiet: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(1),
        op_timeout: Duration::from_secs(4),
        threads_per_key: 2,
        ops_per_key: 100,
        lose_responses: 0.0,
        store: store.to_path_buf(),
        server_bin: common::kv_server(),
        server_args: Vec::new(),
        check_budget: Duration::from_secs(60),
        progress: false,
        tls: false,
        durability: Durability::Majority,
    }
}

async fn run_one(opts: TestOptions) -> RunOutcome {
    let _one = ONE_AT_A_TIME.lock().await;
    run(opts).await.expect("the harness itself works")
}

/// The summary, and for an unexpected verdict the evidence: every key the
/// linearizability checker found invalid, with its counterexample, and the
/// run's directory kept under `target/tmp/jepsen-failures/`.
fn explain(outcome: &RunOutcome) -> String {
    let mut text = jepsen::run::report::summary(outcome);
    let invalid: Vec<&Value> = outcome.results["checkers"]["linearizability"]["keys"]
        .as_array()
        .map(|keys| keys.iter().filter(|k| k["verdict"] == "invalid").collect())
        .unwrap_or_default();
    for key in invalid.iter().take(3) {
        text.push_str(&format!("invalid key: {key}\n"));
    }
    let linearizability = &outcome.results["checkers"]["linearizability"]["verdict"];
    if !linearizability.is_null() && linearizability != "valid" {
        text.push_str(&format!("linearizability: {linearizability}\n"));
    }
    for checker in ["set", "session", "lease", "leaders", "convergence", "exits", "logs", "final_log"] {
        let result = &outcome.results["checkers"][checker];
        if !result.is_null() && result["verdict"] != "valid" {
            text.push_str(&format!("{checker}: {result}\n"));
        }
    }
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("jepsen-failures");
    if std::fs::create_dir_all(&keep).is_ok() {
        let name = outcome.dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let kept = keep.join(name);
        if copy_dir(&outcome.dir, &kept).is_ok() {
            text.push_str(&format!("run kept in {}\n", kept.display()));
        }
    }
    text
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The run's summary; panics with the evidence unless the run is valid.
fn valid_summary(outcome: &RunOutcome, what: &str) -> String {
    if outcome.verdict != Verdict::Valid {
        panic!("the {what} is not valid:\n{}", explain(outcome));
    }
    jepsen::run::report::summary(outcome)
}

fn verdict_of(outcome: &RunOutcome, checker: &str) -> String {
    outcome.results["checkers"][checker]["verdict"].as_str().unwrap_or("absent").to_string()
}

fn faults_started(outcome: &RunOutcome) -> Value {
    outcome.results["stats"]["fault_counts"].clone()
}

/// How many times the fault `name` (`partition`, `kill`, ...) started.
fn fault_count(outcome: &RunOutcome, name: &str) -> u64 {
    faults_started(outcome)[name].as_u64().unwrap_or(0)
}

/// How many operations of function `f` (`write`, `cas`, `add`, ...) were
/// acknowledged (ended `ok`) over the whole run.
fn acknowledged(outcome: &RunOutcome, f: &str) -> u64 {
    outcome.results["stats"]["outcomes"]["by_f"][f]["ok"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_with_partitions_and_kills_is_valid_and_writes_a_report() {
    let store = tempfile::tempdir().unwrap();
    let outcome = run_one(options(store.path(), Kind::Register, &[Fault::Partition, Fault::Kill], 25)).await;
    let summary = valid_summary(&outcome, "short run");
    // A valid run proves something only if the faults happened and
    // writes were acknowledged through them.
    for fault in ["partition", "kill"] {
        assert!(fault_count(&outcome, fault) >= 1, "no {fault} started: {summary}");
    }
    let writes = acknowledged(&outcome, "write") + acknowledged(&outcome, "cas");
    assert!(writes > 0, "no write or compare-and-set was acknowledged: {summary}");
    for file in ["history.jsonl", "results.json", "statuses.jsonl", "latency.svg", "rate.svg"] {
        let len = std::fs::metadata(outcome.dir.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} is missing or empty");
    }
    assert!(outcome.dir.join("nodes/node-1/server.log").is_file());
    assert!(!outcome.dir.join("nodes/node-1/raft.redb").exists(), "a valid run keeps only the logs");
    // The stored history re-checks to the same verdict.
    let again =
        jepsen_checker::check_file(outcome.dir.join("history.jsonl"), Duration::from_secs(60)).unwrap();
    assert_eq!(again.valid, Verdict::Valid);
    let ok = outcome.results["stats"]["phases"]["final"]["all"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 3, "every node answered the final reads: {summary}");
}

/// The session workload's consistent-prefix check needs the agreed log,
/// which the harness gets from `kv-server inspect --writes` on a stopped
/// node: if that failed, the check would silently not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_run_checks_consistent_prefix_against_the_log_kv_server_replays() {
    let store = tempfile::tempdir().unwrap();
    let outcome = run_one(options(store.path(), Kind::Session, &[Fault::Kill], 12)).await;
    valid_summary(&outcome, "session run");
    let session = &outcome.results["checkers"]["session"];
    assert_eq!(session["consistent_prefix_checked"], true, "{session}");
    assert_eq!(verdict_of(&outcome, "final_log"), "absent", "the final log was read: {}", explain(&outcome));
}

/// Watchers on random nodes follow every change through kills and
/// partitions, and the harness's watch checker judges what they saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_run_with_kills_and_partitions_delivers_every_change_once() {
    let store = tempfile::tempdir().unwrap();
    let outcome = run_one(options(store.path(), Kind::Watch, &[Fault::Kill, Fault::Partition], 15)).await;
    let summary = valid_summary(&outcome, "watch run");
    let watch = &outcome.results["checkers"]["watch"];
    assert_eq!(watch["verdict"], "valid", "{summary}");
    // Something was shown: changes delivered and checked against the
    // writers' acknowledgements, across reconnections.
    assert!(watch["acknowledged_checked"].as_u64() > Some(10), "{watch}");
    assert!(watch["connections"].as_u64() > Some(3), "{watch}");
    assert!(fault_count(&outcome, "kill") + fault_count(&outcome, "partition") >= 1, "{summary}");
}

/// The negative control: nodes that start a resumed watch at their latest
/// index instead of the one asked for lose the changes a reconnecting
/// watcher missed, and the watch checker must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_watch_from_latest_is_caught_by_the_watch_checker() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Watch, &[Fault::Kill, Fault::Partition], 15);
    opts.interval = Duration::from_secs(3);
    opts.server_args = vec!["--unsafe-watch-from-latest".into()];
    let outcome = run_one(opts).await;
    let summary = jepsen::run::report::summary(&outcome);
    assert_eq!(outcome.verdict, Verdict::Invalid, "{summary}");
    assert_eq!(verdict_of(&outcome, "watch"), "invalid", "{summary}");
    assert!(
        outcome.results["checkers"]["watch"]["violation_counts"]["missing"].as_u64() > Some(0),
        "{summary}"
    );
}

/// Lease owners and readers beside the register clients, through kills
/// and partitions: no key vanishes while its lease is provably alive, none
/// outlives a deadline the history proves, and the register keys are
/// judged as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_run_with_leases_under_kills_and_partitions_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Register, &[Fault::Kill, Fault::Partition], 15);
    opts.interval = Duration::from_secs(3);
    opts.lease_clients = 2;
    let outcome = run_one(opts).await;
    let summary = valid_summary(&outcome, "register run with leases");
    assert_eq!(verdict_of(&outcome, "lease"), "valid", "{summary}");
    assert!(fault_count(&outcome, "kill") + fault_count(&outcome, "partition") >= 1, "{summary}");
    // Something was shown: leases renewed, reads judged on both sides of
    // their leases' ends.
    let lease = &outcome.results["checkers"]["lease"];
    assert!(lease["leases"].as_u64() >= Some(4), "{lease}");
    assert!(lease["keepalives_ok"].as_u64() >= Some(5), "{lease}");
    assert!(lease["reads_while_alive"].as_u64() >= Some(20), "{lease}");
    assert!(lease["absent_reads_judged"].as_u64() >= Some(1), "{lease}");
    assert_eq!(lease["bound_ms"], 2000, "the bound is the longest election timeout: {lease}");
    assert!(summary.contains("lease: "), "{summary}");
    let writes = acknowledged(&outcome, "write") + acknowledged(&outcome, "cas");
    assert!(writes > 0, "no register write was acknowledged: {summary}");

    // The history holds what the check needs, and re-checks the same.
    let history = outcome.dir.join("history.jsonl");
    let text = std::fs::read_to_string(&history).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["value"]["election_timeout_ms"], serde_json::json!([1000, 2000]));
    assert!(events.iter().any(|e| e["f"] == "leader-seen" && e["value"]["sent"].is_u64()));
    assert!(events
        .iter()
        .filter(|e| e["f"].as_str().is_some_and(|f| f.starts_with("start-")))
        .all(|e| e["value"]["began"].is_u64()));
    let again = jepsen_checker::check_file(&history, Duration::from_secs(60)).unwrap();
    assert_eq!(again.valid, Verdict::Valid);
    assert_eq!(again.lease.map(|l| l.reads), lease["reads"].as_u64().map(|n| n as usize));
}

/// A 12 s register run with leases on nodes started with `flag`, under
/// `faults` (a fault every 1.5 to 4.5 s): it must be invalid for the lease
/// check while the registers stay valid (the lease check, not the register
/// checker, caught it). Returns the lease check's violation counts and the
/// run's summary.
async fn lease_control(flag: &str, faults: &[Fault]) -> (Value, String) {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Register, faults, 12);
    opts.interval = Duration::from_secs(3);
    opts.lease_clients = 2;
    opts.server_args = vec![flag.into()];
    let outcome = run_one(opts).await;
    let summary = jepsen::run::report::summary(&outcome);
    assert_eq!(outcome.verdict, Verdict::Invalid, "{summary}");
    assert_eq!(verdict_of(&outcome, "lease"), "invalid", "{summary}");
    assert_eq!(verdict_of(&outcome, "linearizability"), "valid", "{summary}");
    (outcome.results["checkers"]["lease"]["violation_counts"].clone(), summary)
}

/// The negative control: a leader that ends leases at half their TTL.
/// Owners renew every 0.2 to 0.7 TTLs, so keys vanish, and keepalives find
/// their lease gone, while a keepalive sent less than a TTL before was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_lease_expire_early_is_caught_by_the_lease_check() {
    let (counts, summary) = lease_control("--unsafe-lease-expire-early", &[Fault::Partition]).await;
    let early = counts["vanished while renewed"].as_u64().unwrap_or(0)
        + counts["refused while alive"].as_u64().unwrap_or(0);
    assert!(early > 0, "{summary}");
}

/// The second lease control: a leader that never expires a lease. Keys
/// stay after their owners stop renewing, and where the history proves one
/// undisturbed leader past a lease's TTL plus the longest election timeout,
/// a read that still finds the key is `outlived`. A run without faults
/// proves such stretches throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_lease_never_expire_is_caught_as_outlived() {
    let (counts, summary) = lease_control("--unsafe-lease-never-expire", &[]).await;
    assert!(counts["outlived"].as_u64() > Some(0), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_local_reads_is_caught_by_the_linearizability_checker() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Register, &[Fault::Partition], 20);
    opts.interval = Duration::from_secs(3);
    opts.server_args = vec!["--unsafe-local-reads".into()];
    let outcome = run_one(opts).await;
    let summary = jepsen::run::report::summary(&outcome);
    assert_eq!(outcome.verdict, Verdict::Invalid, "{summary}");
    assert_eq!(verdict_of(&outcome, "linearizability"), "invalid", "{summary}");
    assert!(outcome.dir.join("nodes/node-1/raft.redb").exists(), "an invalid run keeps the data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_no_dedup_is_caught_when_clients_retry_after_timeouts() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Register, &[Fault::Kill, Fault::Pause], 20);
    opts.interval = Duration::from_secs(3);
    // Half the writes lose their first answer and are retried, as after a
    // timeout: each retry of an applied compare-and-set applies again, or
    // reports a mismatch for a change that did happen.
    opts.lose_responses = 0.5;
    opts.server_args = vec!["--unsafe-no-dedup".into()];
    let outcome = run_one(opts).await;
    let summary = jepsen::run::report::summary(&outcome);
    assert_eq!(outcome.verdict, Verdict::Invalid, "{summary}");
    assert_eq!(verdict_of(&outcome, "linearizability"), "invalid", "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_ack_before_fsync_loses_acknowledged_elements_in_a_crash() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Set, &[Fault::LoseUnsynced], 20);
    opts.interval = Duration::from_secs(3);
    opts.kill_targets = vec![Target::All];
    opts.server_args = vec!["--unsafe-no-fsync".into()];
    let outcome = run_one(opts).await;
    let summary = jepsen::run::report::summary(&outcome);
    assert_eq!(outcome.verdict, Verdict::Invalid, "{summary}");
    assert_eq!(verdict_of(&outcome, "set"), "invalid", "{summary}");
    let lost: u64 = outcome.results["checkers"]["set"]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["lost"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(lost > 0, "acknowledged elements were lost: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_every_node_with_unsynced_writes_lost_loses_nothing_acknowledged() {
    // The control's twin without the bug: the same crashes, and the log
    // fsyncs before acknowledging, so every acknowledged element survives.
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Set, &[Fault::LoseUnsynced], 20);
    opts.interval = Duration::from_secs(3);
    opts.kill_targets = vec![Target::All];
    let outcome = run_one(opts).await;
    let summary = valid_summary(&outcome, "crash run");
    assert!(fault_count(&outcome, "lose-unsynced") >= 1, "no crash losing unsynced writes: {summary}");
    // "Nothing acknowledged was lost" means something only if elements
    // were acknowledged before a crash: those invoked before the first one.
    assert!(acknowledged(&outcome, "add") > 0, "no element was acknowledged: {summary}");
    let before = outcome.results["stats"]["phases"]["before"]["by_f"]["add"]["ok"].as_u64().unwrap_or(0);
    assert!(before > 0, "no element was acknowledged before the first crash: {summary}");
}

/// `--tls`: the same harness against a cluster with every security layer
/// on (peer TLS through the partition proxies, HTTPS with client
/// certificates, bearer tokens and the cluster secret), under a partition
/// and a membership change, whose node rejoins over HTTPS with the cluster
/// secret. The run must be valid, and the nodes must really have run
/// with TLS: a run that silently fell back to plaintext would prove
/// nothing about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_run_with_a_partition_and_a_membership_change_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Register, &[Fault::Partition, Fault::Membership], 15);
    opts.interval = Duration::from_secs(3);
    opts.tls = true;
    let outcome = run_one(opts).await;
    let summary = valid_summary(&outcome, "TLS run");
    assert!(summary.contains("over TLS"), "{summary}");
    for fault in ["partition", "membership"] {
        assert!(fault_count(&outcome, fault) >= 1, "no {fault} started: {summary}");
    }
    let writes = acknowledged(&outcome, "write") + acknowledged(&outcome, "cas");
    assert!(writes > 0, "no write or compare-and-set was acknowledged: {summary}");
    assert_eq!(outcome.results["options"]["tls"]["client_cert_auth"], true, "{summary}");

    // The history says so on its first line, and re-checks to the same
    // verdict.
    let history = outcome.dir.join("history.jsonl");
    let first = std::fs::read_to_string(&history).unwrap().lines().next().unwrap().to_string();
    let setup: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(setup["f"], "setup", "{first}");
    assert_eq!(setup["value"]["tls"]["peer_tls"], true, "{first}");
    let again = jepsen_checker::check_file(&history, Duration::from_secs(60)).unwrap();
    assert_eq!(again.valid, Verdict::Valid);

    // Each node says what it ran with; the node the membership fault
    // re-added says it joined.
    let mut joined = 0;
    for id in 1..=3 {
        let log = std::fs::read_to_string(outcome.dir.join(format!("nodes/node-{id}/server.log"))).unwrap();
        for line in ["peer TLS on", "HTTPS on", "auth on: loaded 1 tokens"] {
            assert!(log.contains(line), "node {id}'s log does not say {line:?}");
        }
        joined += usize::from(log.contains("joined: promoting to voter done"));
    }
    assert!(joined >= 1, "no re-added node joined: {summary}");
}

/// A rolling restart under a closed-loop write load: every node is stopped
/// with SIGTERM and started again in turn, the leader last, while the
/// clients add elements. The graceful stops must cost the clients nothing:
/// every add invoked during the restart is acknowledged (none failed, none
/// unknown after the client's retries within its deadline), and the set
/// checker finds none lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_write_and_loses_none() {
    let store = tempfile::tempdir().unwrap();
    // Gaps of 2 to 6 s: one restart, perhaps two, in 10 s.
    let outcome = run_one(options(store.path(), Kind::Set, &[Fault::RollingRestart], 10)).await;
    let summary = valid_summary(&outcome, "rolling-restart run");
    assert_eq!(verdict_of(&outcome, "set"), "valid", "{summary}");
    assert!(fault_count(&outcome, "rolling-restart") >= 1, "no rolling restart: {summary}");
    let writes = &outcome.results["stats"]["fault_writes"]["rolling-restart"]["outcomes"]["all"];
    assert!(writes["ok"].as_u64() > Some(0), "no add during the restart: {summary}");
    assert_eq!((writes["fail"].as_u64(), writes["info"].as_u64()), (Some(0), Some(0)), "{summary}");
    assert!(summary.contains("writes during rolling-restart"), "{summary}");

    // The first restart took every node, the leader last.
    let history = std::fs::read_to_string(outcome.dir.join("history.jsonl")).unwrap();
    let nemesis: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["process"] == "nemesis")
        .collect();
    let first: Vec<&Value> = nemesis
        .iter()
        .skip_while(|e| e["f"] != "start-rolling-restart")
        .take_while(|e| e["f"] != "stop-rolling-restart")
        .filter(|e| e["f"] == "restarted-node")
        .map(|e| &e["value"])
        .collect();
    let mut nodes: Vec<u64> = first.iter().map(|v| v["node"].as_u64().unwrap()).collect();
    let leader_flags: Vec<bool> = first.iter().map(|v| v["was_leader"] == true).collect();
    assert_eq!(leader_flags, [false, false, true], "followers first, the leader last: {first:?}");
    assert!(first.iter().all(|v| v["stop"]["exited"] == true), "each stopped on SIGTERM: {first:?}");
    nodes.sort();
    assert_eq!(nodes, [1, 2, 3], "{first:?}");
}

/// `--nemesis restart`: graceful stops (SIGTERM) of the leader or of
/// another node, each started again after the fault's span. Linearizable
/// registers through them must stay valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_run_with_graceful_stops_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Register, &[Fault::Restart], 12);
    opts.interval = Duration::from_secs(3);
    let outcome = run_one(opts).await;
    let summary = valid_summary(&outcome, "restart run");
    assert!(fault_count(&outcome, "restart") >= 1, "no restart: {summary}");
    let writes = acknowledged(&outcome, "write") + acknowledged(&outcome, "cas");
    assert!(writes > 0, "no write or compare-and-set was acknowledged: {summary}");
    for fault in outcome.results["stats"]["faults"].as_array().unwrap() {
        let stop = &fault["start_value"]["stop"];
        assert_eq!(stop["exited"], true, "stopped on SIGTERM, not killed: {fault}");
        assert!(
            ["leader", "other", "any"].contains(&fault["start_value"]["target"].as_str().unwrap()),
            "{fault}"
        );
    }
}

/// `--durability leader`: adds acknowledged once in the leader's log,
/// under kills and partitions. A short run may or may not lose any; what it
/// must show is that each lost add is explained by a rollback record (the
/// run is valid only then), that the history says how each add was written
/// and answered, and that the report measures the split-brain window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_durable_set_run_matches_every_lost_write_to_a_rollback_record() {
    let store = tempfile::tempdir().unwrap();
    let mut opts = options(store.path(), Kind::Set, &[Fault::Kill, Fault::Partition], 8);
    opts.interval = Duration::from_secs(2);
    opts.durability = Durability::Leader;
    let outcome = run_one(opts).await;
    let summary = valid_summary(&outcome, "leader-durable set run");
    assert_eq!(outcome.results["options"]["durability"], "leader", "{summary}");
    assert!(acknowledged(&outcome, "add") > 0, "no add was acknowledged: {summary}");

    let lost = &outcome.results["checkers"]["set"]["lost_writes"];
    assert!(lost.is_object(), "the set checker reports the lost writes: {summary}");
    assert_eq!(lost["by_design"], lost["lost"], "every lost write is matched: {lost}");
    assert_eq!(lost["records_given"], true, "{lost}");
    assert!(summary.contains("lost writes: "), "{summary}");
    let split = &outcome.results["stats"]["split_brain"];
    assert!(split["partitions"].is_array(), "{summary}");
    assert!(summary.contains("split-brain window"), "{summary}");

    // Each add says what it asked for and what it was told.
    let history = std::fs::read_to_string(outcome.dir.join("history.jsonl")).unwrap();
    let events: Vec<Value> = history.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let adds = |kind: &'static str| events.iter().filter(move |e| e["f"] == "add" && e["type"] == kind);
    assert!(
        adds("invoke").all(|e| e["durability"] == "leader" && e["seq"].is_u64() && e["kv_key"].is_string())
    );
    assert!(adds("ok").all(|e| e["committed"] == false && e["node"].is_u64()), "acknowledged uncommitted");

    // The records are kept, and the stored run re-checks to the same
    // verdict with them.
    let records: Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("rollback.json")).unwrap()).unwrap();
    assert_eq!(records["nodes"].as_array().map(Vec::len), Some(3), "{records}");
    let again =
        jepsen_checker::check_file(outcome.dir.join("history.jsonl"), Duration::from_secs(60)).unwrap();
    assert_eq!(again.valid, Verdict::Valid);
}
