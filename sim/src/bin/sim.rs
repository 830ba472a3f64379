//! `sim`: deterministic simulation of whole clusters. See `sim --help` and
//! `docs/simulation.md`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sim::cli::main(sim::cli::Cli::parse())
}
