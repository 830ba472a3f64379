//! Checkers: each one reads a history and says whether it could have come
//! from a correct system.
//!
//! A checker has three answers, never two. *Valid*: the checker proved that
//! some correct execution explains everything the clients saw. *Invalid*:
//! it proved that none does, and shows why. *Unknown*: it ran out of time
//! before it could prove either. Deciding linearizability is NP-complete, so
//! a search may not finish; an unfinished search is never reported as a pass,
//! because a harness that turns "I could not tell" into "valid" hides exactly
//! the histories that are hardest to explain.
//!
//! Checkers:
//!
//! * [`linear`]: linearizability of a compare-and-set register per key.
//! * [`set`]: the set workload: acknowledged elements kept exactly once.
//! * [`watch`]: the watch workload: every committed change delivered once,
//!   in log order, with its before-image, to every watcher.
//! * [`lease`]: the lease activity beside the register workload: no key
//!   outlives its lease's deadline, none vanishes while its lease is
//!   provably alive.
//! * [`session`]: read-your-writes, monotonic reads and consistent prefix per
//!   client session, and the lag of stale reads.
//! * [`leaders`]: at most one leader per term, from polled node statuses.
//! * [`convergence`]: every node ends at the same applied index and state.
//! * [`logs`]: panics and fatal errors in node logs.
//!
//! The first five judge a history (the session checker optionally with the
//! final log); the last three judge what the harness polled or collected
//! from the nodes, so `jepsen check` on a history file alone runs only the
//! first five (see [`crate::check`]).

pub mod convergence;
pub mod leaders;
pub mod lease;
pub mod linear;
pub mod logs;
pub mod session;
pub mod set;
pub mod watch;

use serde::{Deserialize, Serialize};

/// A checker's answer. Serialized in lowercase: `"valid"`, `"invalid"`,
/// `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Proven correct: a legal execution explains the history.
    Valid,
    /// Proven incorrect: no legal execution explains the history.
    Invalid,
    /// Not decided: the checker ran out of its time budget. Never a pass.
    Unknown,
}

impl Verdict {
    /// Combines two verdicts on parts of one history (two keys, two
    /// checkers): one invalid part makes the whole invalid, whatever the
    /// others say; otherwise one undecided part leaves the whole undecided.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            (Verdict::Valid, Verdict::Valid) => Verdict::Valid,
        }
    }

    /// Combines any number of verdicts with [`Verdict::and`]; no parts at
    /// all is valid.
    pub fn all(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts.into_iter().fold(Verdict::Valid, Verdict::and)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_dominates_unknown_dominates_valid() {
        assert_eq!(Verdict::all([]), Verdict::Valid);
        assert_eq!(Verdict::all([Verdict::Valid, Verdict::Valid]), Verdict::Valid);
        assert_eq!(Verdict::all([Verdict::Valid, Verdict::Unknown]), Verdict::Unknown);
        assert_eq!(Verdict::all([Verdict::Unknown, Verdict::Invalid, Verdict::Valid]), Verdict::Invalid);
    }

    #[test]
    fn verdict_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Verdict::Unknown).unwrap(), "\"unknown\"");
        assert_eq!(serde_json::from_str::<Verdict>("\"invalid\"").unwrap(), Verdict::Invalid);
    }
}
