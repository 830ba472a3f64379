//! Convergence: at the end of a run, every node holds the same state.
//!
//! # What is checked
//!
//! Raft's *State Machine Safety* (§5.4.3): if a node has applied an entry at
//! some index, no other node ever applies a different entry there. After the
//! final phase (heal every fault, restart every node, wait a quiet period)
//! all nodes have caught up, so each must report the same applied index and
//! the same digest of its state machine. A node that lost acknowledged
//! entries, applied one twice, or kept entries a new leader truncated
//! (etcd's resurrected entries after a restart) shows a different digest.
//!
//! The input is one [`FinalStatus`] per node, polled after the quiet period
//! (kv-app's `GET /v1/cluster/status` answers both fields). The check is
//! invalid if the nodes form more than one group of equal
//! `(applied_index, state_digest)`; the result lists the groups, largest
//! first, so the odd node out is easy to see. Two nodes at the same index
//! with different digests have diverged; two nodes at different indexes may
//! only have been slow, which after the quiet period is still a failure to
//! converge. No status at all is `unknown`: nothing was compared.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Verdict;

/// One node's state after the final quiet period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalStatus {
    /// The node.
    pub node: u64,
    /// The index of the last log entry it applied.
    pub applied_index: u64,
    /// A digest of its state machine's data, equal on equal data.
    pub state_digest: String,
}

/// The result of the convergence check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvergenceResult {
    /// Valid if every node is in one group, invalid if there are several,
    /// unknown if no node reported.
    pub verdict: Verdict,
    /// Nodes grouped by equal applied index and digest, largest group first
    /// (ties by applied index, highest first).
    pub groups: Vec<ConvergenceGroup>,
}

/// Nodes that agree on applied index and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergenceGroup {
    /// Their applied index.
    pub applied_index: u64,
    /// Their state digest.
    pub state_digest: String,
    /// The nodes, in id order.
    pub nodes: Vec<u64>,
}

/// Checks that every node reached the same applied index and digest.
pub fn check(statuses: &[FinalStatus]) -> ConvergenceResult {
    let mut groups: BTreeMap<(u64, &str), Vec<u64>> = BTreeMap::new();
    for s in statuses {
        groups.entry((s.applied_index, s.state_digest.as_str())).or_default().push(s.node);
    }
    let mut groups: Vec<ConvergenceGroup> = groups
        .into_iter()
        .map(|((applied_index, digest), mut nodes)| {
            nodes.sort_unstable();
            ConvergenceGroup { applied_index, state_digest: digest.to_owned(), nodes }
        })
        .collect();
    groups.sort_by(|a, b| b.nodes.len().cmp(&a.nodes.len()).then(b.applied_index.cmp(&a.applied_index)));
    let verdict = match groups.len() {
        0 => Verdict::Unknown,
        1 => Verdict::Valid,
        _ => Verdict::Invalid,
    };
    ConvergenceResult { verdict, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: u64, applied_index: u64, digest: &str) -> FinalStatus {
        FinalStatus { node, applied_index, state_digest: digest.into() }
    }

    #[test]
    fn nodes_with_equal_index_and_digest_converged() {
        let result = check(&[status(1, 40, "ab"), status(2, 40, "ab"), status(3, 40, "ab")]);
        assert_eq!(result.verdict, Verdict::Valid);
        assert_eq!(result.groups.len(), 1);
        assert_eq!(result.groups[0].nodes, [1, 2, 3]);
    }

    #[test]
    fn same_index_different_digest_is_invalid_and_grouped() {
        let result = check(&[status(3, 40, "ff"), status(1, 40, "ab"), status(2, 40, "ab")]);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.groups[0].nodes, [1, 2]);
        assert_eq!(result.groups[1].nodes, [3]);
        assert_eq!(result.groups[1].state_digest, "ff");
    }

    #[test]
    fn a_node_behind_after_the_quiet_period_is_invalid() {
        let result = check(&[status(1, 40, "ab"), status(2, 38, "ab")]);
        assert_eq!(result.verdict, Verdict::Invalid);
        // Equal sizes: the higher applied index comes first.
        assert_eq!(result.groups[0].applied_index, 40);
    }

    #[test]
    fn no_status_is_unknown_never_valid() {
        assert_eq!(check(&[]).verdict, Verdict::Unknown);
    }
}
