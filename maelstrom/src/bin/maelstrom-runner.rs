//! `maelstrom-runner`: Maelstrom's `lin-kv` test, run locally.
//!
//! ```text
//! maelstrom-runner test -w lin-kv --bin target/debug/maelstrom-node --node-count 3 \
//!     --concurrency 2n --rate 100 --time-limit 20 --latency 10 --nemesis partition
//! ```
//!
//! Exit code 0 valid, 1 invalid, 2 unknown or a harness error. See
//! `maelstrom::runner` and `docs/maelstrom.md`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use maelstrom::runner::{self, TestOptions, EXIT_UNKNOWN};
use tracing_subscriber::EnvFilter;

/// A Maelstrom-compatible local runner for lin-kv nodes.
#[derive(Debug, Parser)]
#[command(name = "maelstrom-runner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a test, as `maelstrom test` does.
    Test(TestOptions),
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in a redirected log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let Command::Test(opts) = Cli::parse().command;
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(runner::run_test(&opts)));
    match outcome {
        Ok(outcome) => {
            let valid = &outcome.results["valid?"];
            println!("{}", outcome.dir.join("results.edn").display());
            match valid {
                serde_json::Value::Bool(true) => println!("Everything looks good! ヽ(‘ー`)ノ"),
                serde_json::Value::Bool(false) => println!("Analysis invalid! (ﾉಥ益ಥ）ﾉ ┻━┻"),
                _ => println!("Errors occurred during analysis, but no anomalies found. ಠ~ಠ"),
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("maelstrom-runner: {e:#}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}
