//! The `jepsen` command line.
//!
//! Each subcommand ends in a [`Verdict`], and the exit code says which, so
//! scripts and CI can act on it without parsing the output:
//!
//! | exit code | meaning                                                 |
//! |-----------|---------------------------------------------------------|
//! | 0         | valid                                                   |
//! | 1         | invalid: a checker proved a violation                   |
//! | 2         | unknown (a checker ran out of time), or an error such as a malformed history |

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::checker::Verdict;

/// The exit code for a valid verdict.
pub const EXIT_VALID: u8 = 0;
/// The exit code for an invalid verdict.
pub const EXIT_INVALID: u8 = 1;
/// The exit code for an unknown verdict, and for any error.
pub const EXIT_UNKNOWN: u8 = 2;

/// A Jepsen-style harness for the KV service: records what clients see and
/// checks it.
#[derive(Debug, Parser)]
#[command(name = "jepsen", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-check a stored history file (JSON lines, one event per line, see
    /// docs/jepsen.md) and print the verdict as JSON on stdout. Exit code 0
    /// valid, 1 invalid, 2 unknown or error.
    Check(CheckArgs),
}

/// Arguments of `jepsen check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history file.
    pub path: PathBuf,
    /// Seconds the checkers may take in total (fractions allowed). When they
    /// run out the verdict is unknown, never valid.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    pub budget: Duration,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable number of seconds: {e}"))
}

/// The exit code for a verdict.
pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Valid => EXIT_VALID,
        Verdict::Invalid => EXIT_INVALID,
        Verdict::Unknown => EXIT_UNKNOWN,
    }
}

/// Runs a parsed command line and returns the process's exit code. Errors
/// are printed on stderr as one line and exit with [`EXIT_UNKNOWN`].
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(verdict) => ExitCode::from(exit_code(verdict)),
        Err(e) => {
            eprintln!("jepsen: {e:#}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Verdict> {
    match cli.command {
        Command::Check(args) => check(&args),
    }
}

/// `jepsen check`: prints the report as pretty JSON on stdout.
fn check(args: &CheckArgs) -> anyhow::Result<Verdict> {
    let report = crate::check::check_file(&args.path, args.budget)
        .with_context(|| format!("checking {}", args.path.display()))?;
    let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
    println!("{json}");
    Ok(report.valid)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn budget_accepts_fractions_and_rejects_nonsense() {
        let cli = Cli::try_parse_from(["jepsen", "check", "h.jsonl", "--budget", "0.5"]).unwrap();
        let Command::Check(args) = cli.command;
        assert_eq!(args.budget, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["jepsen", "check", "h.jsonl", "--budget", "-1"]).is_err());
        assert!(Cli::try_parse_from(["jepsen", "check", "h.jsonl", "--budget", "soon"]).is_err());
    }

    #[test]
    fn exit_codes_follow_the_verdict() {
        assert_eq!(exit_code(Verdict::Valid), 0);
        assert_eq!(exit_code(Verdict::Invalid), 1);
        assert_eq!(exit_code(Verdict::Unknown), 2);
    }
}
