//! `jepsen`: the command line of the Jepsen-style harness. Everything but
//! argument parsing and logging setup lives in [`jepsen::cli`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = jepsen::cli::Cli::parse();
    // Logs go to stderr, quiet unless RUST_LOG asks for more: stdout is for
    // the verdict.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in a redirected log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    jepsen::cli::main(cli)
}
