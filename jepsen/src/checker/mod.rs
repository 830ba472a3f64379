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
//! * [`session`]: read-your-writes, monotonic reads and consistent prefix per
//!   client session, and the lag of stale reads.
//! * [`leaders`]: at most one leader per term, from polled node statuses.
//! * [`convergence`]: every node ends at the same applied index and state.
//! * [`logs`]: panics and fatal errors in node logs.
//!
//! The first three judge a history (the session checker optionally with the
//! final log); the last three judge what the harness polled or collected
//! from the nodes, so `jepsen check` on a history file alone runs only the
//! first three (see [`crate::check`]).

pub mod convergence;
pub mod leaders;
pub mod linear;
pub mod logs;
pub mod session;
pub mod set;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// A text form of a JSON value in which equal values are equal strings:
/// object members sorted by name at every level. Checkers use it to put
/// values in hash maps (`serde_json::Value` does not implement `Hash`).
pub(crate) fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                let mut members: Vec<_> = members.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (name, item)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(name.clone()).to_string());
                    out.push(':');
                    write(item, out);
                }
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
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
    fn canonical_json_ignores_member_order_but_not_number_kind() {
        use serde_json::json;
        assert_eq!(
            canonical_json(&json!({"b": [1, {"d": 2, "c": 3}], "a": null})),
            canonical_json(&json!({"a": null, "b": [1, {"c": 3, "d": 2}]}))
        );
        assert_ne!(canonical_json(&json!(1)), canonical_json(&json!(1.0)));
        assert_ne!(canonical_json(&json!(1)), canonical_json(&json!("1")));
    }

    #[test]
    fn verdict_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Verdict::Unknown).unwrap(), "\"unknown\"");
        assert_eq!(serde_json::from_str::<Verdict>("\"invalid\"").unwrap(), Verdict::Invalid);
    }
}
