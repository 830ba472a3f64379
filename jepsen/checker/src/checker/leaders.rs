//! At most one leader per term, from node statuses polled during a run.
//!
//! # What is checked
//!
//! Raft's *Election Safety* (§5.2, Figure 3): at most one leader can be
//! elected in a given term. A candidate needs votes from a majority, each
//! voter grants one vote per term, and two majorities intersect, so two
//! leaders in one term mean a node voted twice: the hashicorp/raft bug where
//! term and vote were persisted in two writes, and a crash between them let a
//! restarted node vote again.
//!
//! The harness polls every node's status (`GET /v1/cluster/status`) during
//! the run and records each answer as a [`StatusSample`]. Two kinds of
//! sample name a leader of a term:
//!
//! * a *claim*: a node whose `role` is `leader` says it leads its `term`;
//! * a *recognition*: a node whose `leader` is `Some(l)` says `l` leads its
//!   `term`. openraft derives both fields from one committed vote, so the
//!   pair is a consistent snapshot, never a new term with an old leader.
//!
//! The history is invalid if one term has two different leaders by either
//! kind of evidence; the result lists, for each such term, every leader and
//! the samples that name it.
//!
//! # A caveat about openraft's default mode
//!
//! openraft's default leader id orders leaders as `(term, node_id)` and
//! allows several leaders to be elected, one after another, in one term: the
//! one with the higher node id wins (openraft's `docs/data/leader_id.md`).
//! `raft-core` configures openraft with the standard leader id instead, so
//! election safety holds in its standard form (one leader per term) and this
//! checker checks exactly that rule.
//!
//! Polling sees only moments, so a valid verdict means no violation was
//! *observed*, not that none happened between polls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Verdict;

/// One node's status, as polled during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSample {
    /// When it was taken: nanoseconds since the test started, as in the
    /// history.
    pub time: u64,
    /// The node that answered.
    pub node: u64,
    /// Its current term.
    pub term: u64,
    /// Its role: `leader`, `follower`, `candidate`, `learner`, `shutdown`.
    /// Compared case-insensitively.
    pub role: String,
    /// The leader it knows of in `term`, if any.
    #[serde(default)]
    pub leader: Option<u64>,
}

impl StatusSample {
    fn claims_leadership(&self) -> bool {
        self.role.eq_ignore_ascii_case("leader")
    }
}

/// The result of the leader check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadersResult {
    /// Invalid if some term had two leaders, else valid.
    pub verdict: Verdict,
    /// How many samples were examined.
    pub samples: usize,
    /// How many distinct terms had a known leader.
    pub terms_with_leader: usize,
    /// Every term with more than one leader, in term order.
    pub conflicts: Vec<TermConflict>,
}

/// A term in which more than one node was leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermConflict {
    /// The term.
    pub term: u64,
    /// Each leader of the term and the evidence for it, by node id.
    pub leaders: Vec<LeaderEvidence>,
}

/// Why the checker believes `node` led a term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderEvidence {
    /// The leader.
    pub node: u64,
    /// Time of the first sample in which it claimed the role itself, if any.
    pub first_claimed_at: Option<u64>,
    /// Nodes that named it as their leader in that term.
    pub recognized_by: Vec<u64>,
}

/// The evidence that `leader` led `term`, created empty on first sight.
fn evidence(
    terms: &mut BTreeMap<u64, BTreeMap<u64, LeaderEvidence>>,
    term: u64,
    leader: u64,
) -> &mut LeaderEvidence {
    terms.entry(term).or_default().entry(leader).or_insert_with(|| LeaderEvidence {
        node: leader,
        first_claimed_at: None,
        recognized_by: Vec::new(),
    })
}

/// Checks that no term had two leaders. Samples may come in any order.
pub fn check(samples: &[StatusSample]) -> LeadersResult {
    // term -> leader -> evidence
    let mut terms: BTreeMap<u64, BTreeMap<u64, LeaderEvidence>> = BTreeMap::new();
    for s in samples {
        if s.claims_leadership() {
            let e = evidence(&mut terms, s.term, s.node);
            e.first_claimed_at = Some(e.first_claimed_at.map_or(s.time, |t| t.min(s.time)));
        }
        if let Some(leader) = s.leader {
            let e = evidence(&mut terms, s.term, leader);
            if !e.recognized_by.contains(&s.node) {
                e.recognized_by.push(s.node);
            }
        }
    }
    let terms_with_leader = terms.len();
    let conflicts: Vec<TermConflict> = terms
        .into_iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| TermConflict {
            term,
            leaders: leaders
                .into_values()
                .map(|mut e| {
                    e.recognized_by.sort_unstable();
                    e
                })
                .collect(),
        })
        .collect();
    let verdict = if conflicts.is_empty() { Verdict::Valid } else { Verdict::Invalid };
    LeadersResult { verdict, samples: samples.len(), terms_with_leader, conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: u64, node: u64, term: u64, role: &str, leader: Option<u64>) -> StatusSample {
        StatusSample { time, node, term, role: role.into(), leader }
    }

    #[test]
    fn one_leader_per_term_across_elections_is_valid() {
        let samples = [
            sample(1, 1, 1, "leader", Some(1)),
            sample(2, 2, 1, "follower", Some(1)),
            sample(3, 2, 2, "candidate", None),
            sample(4, 2, 2, "Leader", Some(2)),
            sample(5, 3, 2, "follower", Some(2)),
            // A deposed leader still claiming its old term is not a conflict.
            sample(6, 1, 1, "leader", Some(1)),
        ];
        let result = check(&samples);
        assert_eq!(result.verdict, Verdict::Valid);
        assert_eq!(result.terms_with_leader, 2);
        assert!(result.conflicts.is_empty());
    }

    #[test]
    fn two_nodes_claiming_one_term_is_invalid() {
        let samples = [sample(10, 1, 3, "leader", Some(1)), sample(20, 2, 3, "leader", Some(2))];
        let result = check(&samples);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.conflicts.len(), 1);
        let c = &result.conflicts[0];
        assert_eq!(c.term, 3);
        let nodes: Vec<u64> = c.leaders.iter().map(|e| e.node).collect();
        assert_eq!(nodes, [1, 2]);
        assert_eq!(c.leaders[1].first_claimed_at, Some(20));
    }

    #[test]
    fn a_follower_recognizing_another_leader_in_the_term_is_invalid() {
        // Node 1 claims term 4; node 3 follows node 2 in term 4.
        let samples = [sample(1, 1, 4, "leader", Some(1)), sample(2, 3, 4, "follower", Some(2))];
        let result = check(&samples);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.conflicts[0].leaders[1].recognized_by, [3]);
        assert_eq!(result.conflicts[0].leaders[1].first_claimed_at, None);
    }

    #[test]
    fn sample_deserializes_without_leader() {
        let s: StatusSample =
            serde_json::from_str(r#"{"time":5,"node":2,"term":7,"role":"candidate"}"#).unwrap();
        assert_eq!(s.leader, None);
        assert_eq!(check(&[s]).verdict, Verdict::Valid);
    }
}
