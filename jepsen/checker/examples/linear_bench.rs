//! How long the linearizability checker takes on simulated register
//! histories of a few sizes.
//!
//! ```sh
//! cargo run --release -p jepsen-checker --example linear_bench
//! ```
//!
//! Each history is linearizable by construction (see `jepsen_checker::sim`),
//! so the `as simulated` column must say `valid`. The `one read corrupted`
//! column checks the same history after one late `ok` read was changed to
//! return a value nobody wrote, which must be `invalid`: refuting a history
//! means exhausting every order, which can cost more than finding one.
//!
//! `clients/key` is the average number of clients working on one key at a
//! time: it, more than the total size, decides how hard the search is. The
//! row with 20,000 operations, 20 keys and 10 clients is the size the
//! harness must check "in seconds". `values` is `unique` when every write
//! writes a new value (the harness's workloads), or the number of distinct
//! values drawn from (histories from other tools often reuse a handful, which
//! leaves reads unable to tell writes apart).

use std::time::{Duration, Instant};

use jepsen_checker::checker::linear;
use jepsen_checker::history::{pair, Function, Op, Outcome};
use jepsen_checker::sim::{simulate_register, RegisterSim};

/// Per check; a check that runs out prints `unknown`.
const BUDGET: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let cases = [
        // ops, keys, clients, info rate, distinct values
        (1_000, 1, 10, 0.05, None),
        (20_000, 20, 10, 0.05, None),
        (20_000, 20, 200, 0.05, None),
        (20_000, 20, 200, 0.20, None),
        (100_000, 100, 1_000, 0.05, None),
        (10_000, 1, 10, 0.05, None),
        (10_000, 1, 20, 0.05, None),
        (10_000, 1, 30, 0.05, None),
        (20_000, 1, 5, 0.05, Some(5)),
        (20_000, 1, 10, 0.05, Some(5)),
    ];
    println!(
        "{:>8} {:>5} {:>8} {:>11} {:>5} {:>6} {:>9} | {:>22} | {:>22}",
        "ops",
        "keys",
        "clients",
        "clients/key",
        "info",
        "values",
        "generate",
        "as simulated",
        "one read corrupted"
    );
    for (ops, keys, concurrency, info_rate, distinct_values) in cases {
        let sim = RegisterSim {
            ops,
            keys,
            concurrency,
            info_rate,
            distinct_values,
            seed: 42,
            ..RegisterSim::default()
        };
        let started = Instant::now();
        let mut history = pair(&simulate_register(&sim))?;
        let generated = started.elapsed();

        let valid = run(&history)?;
        // The last ok read in the first 90% of the history.
        let late = history.len() * 9 / 10;
        if let Some(read) =
            history[..late].iter_mut().rev().find(|op| op.f == Function::Read && op.outcome == Outcome::Ok)
        {
            read.value = serde_json::json!("never written").into();
        }
        let corrupted = run(&history)?;
        let values = distinct_values.map_or_else(|| "unique".to_owned(), |n| n.to_string());
        println!(
            "{:>8} {:>5} {:>8} {:>11} {:>5.2} {values:>6} {:>7.0}ms | {valid:>22} | {corrupted:>22}",
            ops,
            keys,
            concurrency,
            concurrency / keys,
            info_rate,
            generated.as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

/// Checks and describes the result as "verdict time".
fn run(history: &[Op]) -> anyhow::Result<String> {
    let started = Instant::now();
    let result = linear::check(history, BUDGET)?;
    let elapsed = started.elapsed();
    let verdict = serde_json::to_value(result.verdict)?;
    Ok(format!("{} {:>8.0}ms", verdict.as_str().unwrap_or("?"), elapsed.as_secs_f64() * 1e3))
}
