//! `kvctl`: the command-line client for a kv-server cluster, and a way to
//! run one locally (`kvctl cluster up`). Everything but argument parsing
//! and logging setup lives in [`kv_tools::cli`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

/// The exit status of a process killed by SIGPIPE, as shells report it.
const EXIT_BROKEN_PIPE: i32 = 128 + 13;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
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

/// `kvctl ... | head` closes kvctl's stdout early. Rust ignores SIGPIPE, so
/// the next `println!` panics with "Broken pipe"; a command-line tool
/// should instead stop quietly, as one killed by SIGPIPE does.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info)
    }));
}
