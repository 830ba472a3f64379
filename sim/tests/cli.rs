//! `sim run` as a user runs it: the summary, the replay command of a
//! failing seed, and the exit codes (0 valid, 1 invalid, 2 unusable).

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim")).args(args).output().expect("sim runs")
}

#[test]
fn valid_seeds_exit_0_with_a_summary() {
    let out = sim(&["run", "--seeds", "0..2", "--nodes", "3", "--ops", "60", "--jobs", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("seeds run: 2"), "{stdout}");
    assert!(stdout.contains("simulated s per real s"), "{stdout}");
    assert!(stdout.contains("verdict:   Valid"), "{stdout}");
}

#[test]
fn an_invalid_seed_exits_1_and_prints_its_replay_command() {
    let args = [
        "run",
        "--seeds",
        "0..1",
        "--nodes",
        "3",
        "--ops",
        "200",
        "--workload",
        "register",
        "--unsafe-local-reads",
    ];
    let out = sim(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED seed 0"), "{stdout}");
    assert!(
        stdout.contains("sim replay --seed 0 --nodes 3 --ops 200 --workload register")
            && stdout.contains("--unsafe-local-reads"),
        "{stdout}"
    );
}

#[test]
fn a_seed_range_with_no_seed_is_refused_with_exit_2() {
    let out = sim(&["run", "--seeds", "5..5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no seed"));
}
