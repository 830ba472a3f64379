//! Node names: Maelstrom's `n0, n1, …` and Raft's numeric node ids.
//!
//! Maelstrom names the nodes of a test `n0` to `n{N-1}` (`--node-count N`)
//! and its clients `c0, c1, …`. Raft (openraft) identifies nodes by a
//! number. The mapping is fixed and needs no table:
//!
//! ```text
//! Maelstrom name   n0   n1   n2   …   nK
//! Raft node id      1    2    3   …   K+1
//! ```
//!
//! Raft ids start at 1, not 0, as they do for `kv-server`: id 0 then never
//! names a node, which makes an uninitialized id easy to spot in a log. The
//! mapping is a bijection: `n01` and `n+1` are rejected rather than read as
//! `n1`, so that two spellings never name one node.
//!
//! The Maelstrom name also travels in the membership that Raft replicates:
//! each member's [`raft_core::Node::raft_addr`] is its Maelstrom name, and the
//! transport sends a peer's RPCs to that name (see [`crate::transport`]).

use raft_core::NodeId;

/// A name that is not `n` followed by a decimal number without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Maelstrom node name (expected n0, n1, ...)")]
pub struct BadNodeName(pub String);

/// The Raft node id of the Maelstrom node `name` (`n0` → 1).
pub fn raft_id(name: &str) -> Result<NodeId, BadNodeName> {
    let bad = || BadNodeName(name.to_string());
    let digits = name.strip_prefix('n').ok_or_else(bad)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return Err(bad());
    }
    let index: u64 = digits.parse().map_err(|_| bad())?;
    index.checked_add(1).ok_or_else(bad)
}

/// The Maelstrom name of the Raft node `id` (1 → `n0`). Id 0 names no node;
/// it is rendered as `n?` so that a log line still reads sensibly.
pub fn node_name(id: NodeId) -> String {
    match id.checked_sub(1) {
        Some(index) => format!("n{index}"),
        None => "n?".to_string(),
    }
}

/// Whether `name` is a Maelstrom client (`c0`, `c1`, …) rather than a node.
pub fn is_client(name: &str) -> bool {
    name.starts_with('c')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_ids_starting_at_one_and_back() {
        for (name, id) in [("n0", 1), ("n1", 2), ("n9", 10), ("n10", 11), ("n123", 124)] {
            assert_eq!(raft_id(name), Ok(id), "{name}");
            assert_eq!(node_name(id), name);
        }
    }

    #[test]
    fn other_spellings_are_rejected() {
        for name in ["", "n", "0", "c0", "n01", "n+1", "n-1", "n 1", "N1", "n1x", "n99999999999999999999999"]
        {
            assert!(raft_id(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn clients_start_with_c() {
        assert!(is_client("c12"));
        assert!(!is_client("n0"));
    }
}
