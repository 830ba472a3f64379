//! The negative controls: each a known bug switched on, each of which the
//! simulator must catch within a few dozen seeds. A simulator that says
//! "valid" is only worth something if it says "invalid" when it should.

use jepsen_checker::Verdict;
use sim::cli::why;
use sim::cluster::NodeOptions;
use sim::run::{run_seed, SimOptions};
use sim::workload::Workload;

/// The first seed (from 0, at most `limit`) whose run is invalid, with why.
fn first_caught(opts: &SimOptions, limit: u64) -> Option<(u64, String)> {
    (0..limit).find_map(|seed| {
        let r = run_seed(seed, opts);
        assert!(
            r.valid != Verdict::Unknown || r.error.is_none(),
            "seed {seed} could not be judged: {}",
            why(&r)
        );
        (r.valid == Verdict::Invalid).then(|| (seed, why(&r)))
    })
}

fn control(workload: Option<Workload>, setup: impl FnOnce(&mut SimOptions)) -> SimOptions {
    let mut opts = SimOptions::new(5, 200);
    opts.workload = workload;
    setup(&mut opts);
    opts
}

#[test]
fn reads_served_locally_are_caught() {
    let opts = control(Some(Workload::Register), |o| o.unsafe_local_reads = true);
    let caught = first_caught(&opts, 20);
    assert!(caught.is_some(), "20 seeds with local reads all passed");
}

#[test]
fn retries_applied_twice_are_caught() {
    let opts = control(Some(Workload::Register), |o| {
        o.node_options = NodeOptions { unsafe_no_dedup: true, ..NodeOptions::default() }
    });
    let caught = first_caught(&opts, 20);
    assert!(caught.is_some(), "20 seeds without deduplication all passed");
}

#[test]
fn appends_acknowledged_before_fsync_are_caught() {
    let opts =
        control(None, |o| o.node_options = NodeOptions { unsafe_no_fsync: true, ..NodeOptions::default() });
    let caught = first_caught(&opts, 40);
    assert!(caught.is_some(), "40 seeds without fsync all passed");
}

#[test]
fn a_flush_callback_before_the_durable_commit_is_caught() {
    let opts = control(None, |o| {
        o.node_options = NodeOptions { unsafe_flush_before_commit: true, ..NodeOptions::default() }
    });
    let caught = first_caught(&opts, 40);
    assert!(caught.is_some(), "40 seeds with the flush callback before the commit all passed");
}
