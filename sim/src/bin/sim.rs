//! `sim`: deterministic simulation of whole clusters. See `sim --help` and
//! `docs/simulation.md`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The nodes' own log lines, on stderr, only when asked for: they cost
    // more than the simulation itself.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            // Real time would only mislead: the trace has simulated time.
            .without_time()
            .init();
    }
    sim::cli::main(sim::cli::Cli::parse())
}
