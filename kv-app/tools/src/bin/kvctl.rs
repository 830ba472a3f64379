//! `kvctl`: the command-line client for a kv-server cluster, and a way to
//! run one locally (`kvctl cluster up`). Everything but argument parsing
//! and logging setup lives in [`kv_tools::cli`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = kv_tools::cli::Cli::parse();
    // Logs go to stderr, quiet unless RUST_LOG asks for more: stdout is for
    // answers.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in a redirected log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    kv_tools::cli::main(cli)
}
