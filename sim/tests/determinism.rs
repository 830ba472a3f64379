//! A seed decides the whole run: the same seed gives the same history and
//! the same trace, byte for byte, twice in one process and in two
//! processes. If a change brings in a real thread, a real clock or an
//! unseeded random draw, these tests are where it shows.

use std::path::Path;
use std::process::Command;

use sim::nemesis::Fault;
use sim::run::{run_seed, SimOptions};
use sim::workload::Workload;

fn options(workload: Workload) -> SimOptions {
    let mut opts = SimOptions::new(5, 150);
    opts.workload = Some(workload);
    opts.faults = Fault::ALL.to_vec();
    opts.trace = true;
    opts
}

fn history_text(events: &[jepsen_checker::Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).expect("an event serializes"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_same_seed_gives_the_same_history_and_trace_twice_in_one_process() {
    for (seed, workload) in [(11, Workload::Register), (12, Workload::Set), (13, Workload::Session)] {
        let opts = options(workload);
        let a = run_seed(seed, &opts);
        let b = run_seed(seed, &opts);
        assert!(a.error.is_none(), "seed {seed}: {:?}", a.error);
        assert!(
            a.trace.len() > 1_000,
            "seed {seed}: the trace is too short to mean anything: {}",
            a.trace.len()
        );
        assert!(!a.faults.is_empty(), "seed {seed}: no fault was injected");
        assert_eq!(history_text(&a.history), history_text(&b.history), "seed {seed}: histories differ");
        let first_difference = a.trace.iter().zip(&b.trace).position(|(x, y)| x != y);
        assert_eq!(first_difference, None, "seed {seed}: traces differ at line {first_difference:?}");
        assert_eq!(a.trace.len(), b.trace.len(), "seed {seed}");
        assert_eq!(a.simulated, b.simulated, "seed {seed}");
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let opts = options(Workload::Register);
    let a = run_seed(21, &opts);
    let b = run_seed(22, &opts);
    assert_ne!(history_text(&a.history), history_text(&b.history));
}

fn replay_in_a_process(seed: u64, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args([
            "replay",
            "--seed",
            &seed.to_string(),
            "--nodes",
            "5",
            "--ops",
            "150",
            "--workload",
            "register",
        ])
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("sim runs");
    assert!(status.code().is_some_and(|c| c == 0 || c == 1), "sim replay failed to run: {status}");
}

#[test]
fn the_same_seed_gives_the_same_files_in_two_processes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    replay_in_a_process(31, &a);
    replay_in_a_process(31, &b);
    for file in ["history.jsonl", "trace.txt"] {
        let x = std::fs::read(a.join(file)).expect("the first run wrote it");
        let y = std::fs::read(b.join(file)).expect("the second run wrote it");
        assert!(x.len() > 10_000, "{file} is suspiciously small: {} bytes", x.len());
        assert!(x == y, "{file} differs between two processes");
    }
    // And the in-process run agrees with both.
    let mut opts = options(Workload::Register);
    opts.trace = true;
    let here = run_seed(31, &opts);
    let text = std::fs::read_to_string(a.join("trace.txt")).expect("trace");
    assert_eq!(text, here.trace.join("\n") + "\n", "the in-process trace differs from the processes'");
}
