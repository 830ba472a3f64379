//! The partition nemesis, with Maelstrom's shapes and schedule.
//!
//! `--nemesis partition` alternates *start* and *stop*, each after a gap
//! drawn uniformly from (0, 2 × `--nemesis-interval`), so faults come and
//! go at irregular times around the interval. Each start picks one shape,
//! uniformly, and a fresh random assignment of nodes:
//!
//! * **one**: one node is cut off from all the others;
//! * **minority-third**: a third of the nodes (at least one, fewer than
//!   half) are cut off from the rest;
//! * **majority**: the nodes are split into two halves, the larger one a
//!   majority;
//! * **majorities-ring**: the nodes sit on a ring and each hears only the
//!   majority of nodes nearest to it, so every node sees a majority but no
//!   two see the same one (with 3 nodes each hears one neighbour).
//!
//! A cut is total in both directions between the groups, except in the
//! ring, where each node's view is its own. Clients are never cut off. The
//! test can end while a partition is in force; it is not healed first.

use std::collections::HashSet;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use super::net::Grudge;

/// The partition shapes, chosen uniformly at each start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One node isolated.
    One,
    /// A third of the nodes isolated.
    MinorityThird,
    /// A random split into a majority and a minority.
    Majority,
    /// Every node sees a different majority.
    MajoritiesRing,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 4] = [Shape::One, Shape::MinorityThird, Shape::Majority, Shape::MajoritiesRing];

    /// The name recorded in the history.
    pub fn name(self) -> &'static str {
        match self {
            Shape::One => "one",
            Shape::MinorityThird => "minority-third",
            Shape::Majority => "majority",
            Shape::MajoritiesRing => "majorities-ring",
        }
    }
}

/// A gap before the next nemesis event: uniform in (0, 2 × interval).
pub fn gap(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(rng.gen_range(0.0..2.0))
}

/// Draws a shape and builds its grudge over `nodes`. Returns the grudge
/// and a description for the history.
pub fn partition(nodes: &[String], rng: &mut impl Rng) -> (Grudge, Value) {
    let shape = *Shape::ALL.choose(rng).expect("Shape::ALL is not empty");
    let grudge = grudge(shape, nodes, rng);
    let mut view: Vec<(String, Vec<String>)> = grudge
        .iter()
        .map(|(dest, srcs)| {
            let mut srcs: Vec<String> = srcs.iter().cloned().collect();
            srcs.sort();
            (dest.clone(), srcs)
        })
        .collect();
    view.sort();
    let drops: serde_json::Map<String, Value> = view.into_iter().map(|(d, s)| (d, json!(s))).collect();
    (grudge, json!({"shape": shape.name(), "drops": drops}))
}

/// Builds the grudge for one shape over shuffled nodes.
pub fn grudge(shape: Shape, nodes: &[String], rng: &mut impl Rng) -> Grudge {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let n = shuffled.len();
    match shape {
        Shape::One => cut(&shuffled[..1.min(n)], &shuffled[1.min(n)..]),
        Shape::MinorityThird => {
            // Strictly fewer than a third when possible, but never nobody.
            let size = (n.saturating_sub(1) / 3).max(1).min(n);
            cut(&shuffled[..size], &shuffled[size..])
        }
        Shape::Majority => {
            let half = n / 2;
            cut(&shuffled[..half], &shuffled[half..])
        }
        Shape::MajoritiesRing => {
            // Each node hears the `majority` nodes centred on it around the ring.
            let majority = n / 2 + 1;
            let before = (majority - 1) / 2;
            let mut grudge = Grudge::new();
            for (i, dest) in shuffled.iter().enumerate() {
                let hears: HashSet<&String> =
                    (0..majority).map(|k| &shuffled[(i + n - before + k) % n]).collect();
                let drops: HashSet<String> =
                    shuffled.iter().filter(|src| !hears.contains(src)).cloned().collect();
                if !drops.is_empty() {
                    grudge.insert(dest.clone(), drops);
                }
            }
            grudge
        }
    }
}

/// A complete cut between two groups, both directions.
fn cut(a: &[String], b: &[String]) -> Grudge {
    let mut grudge = Grudge::new();
    for (side, other) in [(a, b), (b, a)] {
        if other.is_empty() {
            continue;
        }
        for dest in side {
            grudge.insert(dest.clone(), other.iter().cloned().collect());
        }
    }
    grudge
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    /// Who each node hears, itself included.
    fn hears(grudge: &Grudge, nodes: &[String], dest: &String) -> usize {
        nodes.iter().filter(|src| !grudge.get(dest).is_some_and(|d| d.contains(*src))).count()
    }

    #[test]
    fn shapes_cut_the_expected_groups() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [3, 5, 7] {
            let ns = nodes(n);
            let one = grudge(Shape::One, &ns, &mut rng);
            let mut sizes: Vec<usize> = ns.iter().map(|d| hears(&one, &ns, d)).collect();
            sizes.sort();
            assert_eq!(sizes[0], 1, "n={n}: one node hears only itself");
            assert!(sizes[1..].iter().all(|&s| s == n - 1));

            let third = grudge(Shape::MinorityThird, &ns, &mut rng);
            let isolated = ns.iter().filter(|d| hears(&third, &ns, d) < n / 2 + 1).count();
            assert!(isolated >= 1 && isolated < n.div_ceil(2), "n={n}: {isolated} isolated");

            let majority = grudge(Shape::Majority, &ns, &mut rng);
            let in_majority = ns.iter().filter(|d| hears(&majority, &ns, d) > n / 2).count();
            assert_eq!(in_majority, n - n / 2);

            let ring = grudge(Shape::MajoritiesRing, &ns, &mut rng);
            let views: HashSet<Vec<bool>> = ns
                .iter()
                .map(|d| ns.iter().map(|s| !ring.get(d).is_some_and(|g| g.contains(s))).collect())
                .collect();
            assert_eq!(views.len(), n, "n={n}: every node sees its own majority");
            assert!(ns.iter().all(|d| hears(&ring, &ns, d) == n / 2 + 1));
        }
    }
}
