//! Re-checking a stored history: what `jepsen check` does.
//!
//! A saved run is evidence only as long as the checkers that judged it are
//! trusted. After a checker changes, every stored history can be judged
//! again: [`check_file`] reads any history in the [`crate::history`] format
//! (not only one this harness wrote: a Maelstrom run converted to it, or one
//! written by hand), pairs its operations and runs every checker that
//! applies, and [`CheckReport`] is what `jepsen check` prints.
//!
//! Today that is the linearizability checker alone; each checker added later
//! gets its own field in [`CheckReport`], and [`CheckReport::valid`] combines
//! them all.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checker::linear::{self, LinearError, LinearResult};
use crate::checker::Verdict;
use crate::history::{self, Event, HistoryError};

/// The verdict on a whole history, and each checker's result.
///
/// Serialized as `{"valid": "valid"|"invalid"|"unknown", "linearizability": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Every checker's verdict combined: invalid if any checker found a
    /// violation, else unknown if any ran out of time, else valid.
    pub valid: Verdict,
    /// Linearizability of each key as a compare-and-set register.
    pub linearizability: LinearResult,
}

/// A history that cannot be judged at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The history could not be read, or breaks the rules of a history.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The linearizability checker cannot judge these operations.
    #[error(transparent)]
    Linear(#[from] LinearError),
}

/// Reads the history file at `path` and checks it; see [`check_events`].
///
/// # Errors
/// As [`check_events`], and [`HistoryError`]s from reading the file.
pub fn check_file(path: impl AsRef<Path>, budget: Duration) -> Result<CheckReport, CheckError> {
    let events = history::read_history(path)?;
    check_events(&events, budget)
}

/// Pairs the events into operations and runs every checker, within `budget`
/// for all of them together.
///
/// # Errors
/// [`CheckError::History`] if the history breaks the pairing rules,
/// [`CheckError::Linear`] if it holds operations the register checker does
/// not know. A history that is merely wrong is an `Ok` report with an
/// invalid verdict.
pub fn check_events(events: &[Event], budget: Duration) -> Result<CheckReport, CheckError> {
    let ops = history::pair(events)?;
    let linearizability = linear::check(&ops, budget)?;
    Ok(CheckReport { valid: linearizability.verdict, linearizability })
}
