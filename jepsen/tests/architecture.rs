//! The crate graph `docs/architecture/README.md` draws, enforced.
//!
//! Each rule below is one arrow the architecture forbids: the library knows
//! no application, two applications of one library stay apart, and the
//! harness sees the cluster only as a client does. The test reads the
//! workspace with `cargo metadata` and fails, naming the arrow, as soon as a
//! `Cargo.toml` adds a dependency the graph does not allow (of any kind:
//! normal, build or dev).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// For every crate of the workspace, the crates of ours it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    // The library knows no application.
    ("raft-core", &[]),
    // The history format and checkers judge any history: nothing of ours.
    ("jepsen-checker", &[]),
    // A client of the service needs neither its server nor the library.
    ("kv-client", &[]),
    // The service: the library, and the wire types it shares with clients.
    ("kv-app", &["raft-core", "kv-client"]),
    // kvctl, the load generator and the local-cluster launcher are clients;
    // `kvctl bench failover --stop isolate` cuts Raft links with the
    // harness's partition proxy.
    ("kv-tools", &["kv-client", "jepsen-net"]),
    // The partition proxy reads the Raft handshake off the wire, from its
    // documented layout: nothing of ours.
    ("jepsen-net", &[]),
    // The harness talks to the cluster as a client does.
    ("jepsen", &["kv-client", "jepsen-checker", "jepsen-net"]),
    // The other application of the library: no KV service, no harness.
    ("maelstrom", &["raft-core", "jepsen-checker"]),
    // The simulator runs the library with the service's state machine in
    // one process and judges with the checkers. Nothing depends on it.
    ("sim", &["raft-core", "kv-app", "jepsen-checker"]),
];

/// External crates that must not reach a crate, even indirectly: what each
/// boundary exists to keep out.
const KEPT_OUT: &[(&str, &[&str])] = &[
    ("kv-client", &["redb", "openraft", "axum"]),
    ("jepsen-checker", &["redb", "openraft", "axum", "reqwest"]),
    ("maelstrom", &["axum", "reqwest"]),
    ("jepsen", &["redb", "openraft", "axum"]),
    ("jepsen-net", &["redb", "openraft", "axum", "reqwest"]),
];

/// `cargo metadata` of the workspace, resolved for this machine's platform
/// (the crates every build here has already downloaded).
fn metadata() -> Value {
    let rustc = Command::new("rustc").arg("-vV").output().expect("running rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// The workspace's crates, each with the crates of ours it depends on.
fn our_arrows(meta: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let members: BTreeSet<&str> =
        meta["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let mut arrows = BTreeMap::new();
    for package in meta["packages"].as_array().unwrap() {
        if !members.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        let ours: BTreeSet<String> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["path"].is_string())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        arrows.insert(package["name"].as_str().unwrap().to_string(), ours);
    }
    arrows
}

/// The names of every package `name` depends on through normal and build
/// dependencies, directly or not (what its library and binaries link).
fn linked(meta: &Value, name: &str) -> BTreeSet<String> {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"] != "dev"))
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let root =
        names.iter().find(|(_, n)| **n == name).map(|(id, _)| *id).expect("the crate is in the workspace");
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for &dep in nodes.get(id).into_iter().flatten() {
            if seen.insert(dep) {
                todo.push(dep);
            }
        }
    }
    seen.into_iter().map(|id| names[id].to_string()).collect()
}

#[test]
fn every_dependency_between_our_crates_is_an_allowed_arrow() {
    let meta = metadata();
    let arrows = our_arrows(&meta);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    for (from, tos) in &arrows {
        let Some(ok) = allowed.get(from.as_str()) else {
            panic!("{from} is a new crate: add it, and the arrows it may have, to this test and to docs/architecture/README.md");
        };
        for to in tos {
            assert!(
                ok.contains(&to.as_str()),
                "{from} → {to} is not an allowed arrow (see docs/architecture/README.md)"
            );
        }
    }
    for (name, _) in ALLOWED {
        assert!(
            arrows.contains_key(*name),
            "{name} is no longer in the workspace: update this test and the docs"
        );
    }
}

#[test]
fn what_each_boundary_keeps_out_stays_out() {
    let meta = metadata();
    for (name, banned) in KEPT_OUT {
        let deps = linked(&meta, name);
        for b in *banned {
            assert!(!deps.contains(*b), "{name} links {b}, directly or through another crate");
        }
    }
    // The test can tell: the service links all three.
    let server = linked(&meta, "kv-app");
    assert!(["redb", "openraft", "axum"].iter().all(|b| server.contains(*b)), "{server:?}");
}
