//! A replicated counter on a three-node cluster, in one process, over real
//! TCP on loopback and with durable logs in a temporary directory.
//!
//! It walks through the life of a Raft cluster and prints each step:
//! initialization and the first election, writes committed by a majority,
//! a follower refusing a write and naming the leader, the leader's
//! failure and the election of a new one, and a read that still sees every
//! acknowledged write.
//!
//! ```sh
//! cargo run --release -p raft-core --example counter
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use raft_core::{AppState, ApplyContext, Config, Node, RaftNode, StateError, StateMachine, WriteError};
use serde::{Deserialize, Serialize};

/// The commands of the counter.
#[derive(Debug, Serialize, Deserialize)]
enum CounterCommand {
    Add(i64),
}

/// The application: one integer under the key `count`.
struct Counter;

impl StateMachine for Counter {
    type Command = CounterCommand;
    type Response = i64;

    fn apply(
        &self,
        state: &mut AppState<'_>,
        _ctx: ApplyContext,
        cmd: CounterCommand,
    ) -> Result<i64, StateError> {
        let old = read_count(state.get(b"count")?);
        let CounterCommand::Add(n) = cmd;
        let new = old.wrapping_add(n);
        state.insert(b"count", &new.to_le_bytes())?;
        Ok(new)
    }
}

fn read_count(bytes: Option<Vec<u8>>) -> i64 {
    bytes.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map_or(0, i64::from_le_bytes)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error,openraft=off".into()))
        .init();
    let dir = tempfile::tempdir()?;
    let config = Config::new("counter-example");

    println!("Starting 3 nodes on 127.0.0.1 with data under {}", dir.path().display());
    let mut nodes = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let node = RaftNode::open(id, config.clone(), &dir.path().join(format!("n{id}")), Counter, listener)
            .await
            .with_context(|| format!("opening node {id}"))?;
        println!("  node {id}: Raft on {addr}");
        members.insert(id, Node::new(addr.to_string(), ""));
        nodes.insert(id, node);
    }

    println!("\nInitializing the cluster on node 1 with members {{1, 2, 3}}");
    nodes[&1].initialize(members).await?;
    let t = Instant::now();
    let leader = nodes[&1].wait_for_leader(Duration::from_secs(10)).await.context("no leader elected")?;
    let term = nodes[&leader].metrics().await.term;
    println!("  node {leader} was elected leader for term {term} after {:?}", t.elapsed());

    println!("\nWriting Add(1) ten times through the leader");
    for _ in 0..10 {
        let w = nodes[&leader].write(&CounterCommand::Add(1)).await?;
        println!("  count={} at log index {}", w.response, w.log_id.index);
    }

    let follower = *nodes.keys().find(|id| **id != leader).unwrap();
    println!("\nWriting through follower {follower}:");
    match nodes[&follower].write(&CounterCommand::Add(100)).await {
        Err(WriteError::NotLeader { leader: Some(hint) }) => {
            println!("  refused, not proposed: the leader is node {} (a client redirects there)", hint.id)
        }
        other => bail!("expected a redirect, got {other:?}"),
    }

    println!("\nReplication status on the leader (matched index per follower):");
    let m = nodes[&leader].metrics().await;
    for (id, matched) in &m.matched {
        println!("  node {id}: matched {matched:?}, leader's last index {}", m.last_log_index);
    }

    // `shutdown` would first hand leadership to a follower; stopping
    // without a handoff is what a crash looks like to the others.
    println!("\nStopping the leader, node {leader}, as a crash would (no handoff)");
    nodes.remove(&leader).unwrap().shutdown_without_handoff().await;
    let t = Instant::now();
    let survivor = *nodes.keys().next().unwrap();
    let new_leader = loop {
        if let Some(l) = nodes[&survivor].wait_for_leader(Duration::from_secs(10)).await {
            if l != leader {
                break l;
            }
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("no new leader within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = nodes[&new_leader].metrics().await;
    println!(
        "  followers missed heartbeats for an election timeout; node {new_leader} won term {} after {:?}",
        m.term,
        t.elapsed()
    );

    println!("\nA linearizable read on the new leader (ReadIndex):");
    let read_index = nodes[&new_leader].read_barrier().await?;
    let view = nodes[&new_leader].view()?;
    let count = read_count(view.get(b"count")?);
    println!("  count={count} (read index {read_index}): no acknowledged write was lost");
    if count != 10 {
        bail!("expected 10, read {count}");
    }

    let w = nodes[&new_leader].write(&CounterCommand::Add(5)).await?;
    println!("  and the new leader accepts writes: count={} at index {}", w.response, w.log_id.index);

    for (_, node) in nodes {
        node.shutdown().await;
    }
    println!("\nDone.");
    Ok(())
}
