//! Committed writes per second and write latency of a 3-node cluster, at
//! several numbers of concurrent writers, in two set-ups:
//!
//! * `memory`: in-memory log, in-process transport, empty commands; the
//!   terms of openraft's own published benchmark, so it measures Raft
//!   itself (plus this crate's state machine transaction per batch).
//! * `tcp`: durable logs in redb (on-disk format 2; an fsync per append) in a temporary
//!   directory, and the TCP transport on loopback: what a real deployment on
//!   one machine pays.
//! * `tcp-file`: the same with each log in a file of its own
//!   (`StorageOptions::log_file`).
//!
//! Prints one table. Not a test: numbers depend on the machine.
//!
//! ```sh
//! cargo run --release -p raft-core --example bench -- --setup both --writers 1,16,64,256 --seconds 5
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use raft_core::network::local::LocalRouter;
use raft_core::{AppState, ApplyContext, Config, Node, RaftNode, StateError, StateMachine, Storage};

/// A state machine that does nothing: the cost measured is Raft's.
struct Noop;

impl StateMachine for Noop {
    type Command = ();
    type Response = ();

    fn apply(&self, _: &mut AppState<'_>, _: ApplyContext, _: ()) -> Result<(), StateError> {
        Ok(())
    }
}

#[derive(Parser)]
#[command(about = "Raft write throughput and latency on a 3-node cluster")]
struct Args {
    /// Which set-ups to measure, comma-separated: memory, tcp or both; or
    /// local-durable (durable logs, the in-process transport), to tell the
    /// network's share from the disk's; or tcp-file (tcp with the log in a
    /// file of its own, on-disk format 3).
    #[arg(long, default_value = "both")]
    setup: String,
    /// Numbers of concurrent writers, comma-separated.
    #[arg(long, default_value = "1,16,64,256", value_delimiter = ',')]
    writers: Vec<usize>,
    /// Measured seconds per row (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// After each set-up, print openraft's runtime statistics of the leader
    /// (how long its entries spent in each stage); needs `--features
    /// runtime-stats`.
    #[arg(long)]
    stats: bool,
    /// Batches being committed at once (group commit); default: Config's.
    #[arg(long)]
    max_inflight_batches: Option<usize>,
    /// Followers write every append through their log writer thread, never
    /// in place (`Config::follower_writes_in_place` off).
    #[arg(long)]
    follower_thread: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let setups: Vec<&str> = match args.setup.as_str() {
        "both" => vec!["memory", "tcp"],
        s => s.split(',').collect(),
    };
    println!(
        "{:<8} {:>8} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "setup", "writers", "writes/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs"
    );
    for setup in setups {
        let dir = tempfile::tempdir()?;
        let mut config = Config::new("bench");
        if let Some(k) = args.max_inflight_batches {
            config.max_inflight_batches = k;
        }
        config.follower_writes_in_place = !args.follower_thread;
        let nodes = start(setup, dir.path(), config).await?;
        let nodes = Arc::new(nodes);
        for &writers in &args.writers {
            let (rate, h) = run(nodes.clone(), writers, Duration::from_secs(args.seconds)).await;
            let q = |p: f64| h.value_at_quantile(p);
            println!(
                "{:<8} {:>8} {:>12.0} {:>10} {:>10} {:>10} {:>10}",
                setup,
                writers,
                rate,
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999)
            );
        }
        if args.stats {
            print_stats(&nodes).await;
        }
        let nodes = Arc::try_unwrap(nodes).ok().context("writers still running")?;
        for (_, n) in nodes {
            n.shutdown().await;
        }
    }
    Ok(())
}

async fn start(setup: &str, dir: &std::path::Path, config: Config) -> Result<BTreeMap<u64, RaftNode<Noop>>> {
    let router = LocalRouter::new();
    let mut nodes = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let node = match setup {
            "memory" => RaftNode::start_local(id, config.clone(), Storage::InMemory, Noop, &router).await?,
            "local-durable" => {
                let storage = Storage::Durable(dir.join(id.to_string()));
                RaftNode::start_local(id, config.clone(), storage, Noop, &router).await?
            }
            "tcp" | "tcp-file" => {
                let mut config = config.clone();
                config.storage.log_file = setup == "tcp-file";
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                RaftNode::open(id, config, &dir.join(id.to_string()), Noop, l).await?
            }
            other => {
                anyhow::bail!("unknown setup {other:?}: use memory, local-durable, tcp, tcp-file or both")
            }
        };
        let addr = node.raft_addr().map(|a| a.to_string()).unwrap_or_else(|| format!("n{id}"));
        members.insert(id, Node::new(addr, ""));
        nodes.insert(id, node);
    }
    nodes[&1].initialize(members).await?;
    nodes[&1].wait_for_leader(Duration::from_secs(10)).await.context("no leader")?;
    Ok(nodes)
}

/// Runs `writers` closed-loop writers against the leader; returns writes per
/// second and the latency histogram (µs) of the measured period.
async fn run(
    nodes: Arc<BTreeMap<u64, RaftNode<Noop>>>,
    writers: usize,
    measure: Duration,
) -> (f64, Histogram<u64>) {
    let leader = nodes[&1].wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    let warmup = Instant::now() + Duration::from_secs(1);
    let end = warmup + measure;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut count = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                if nodes[&leader].write(&()).await.is_ok() && t >= warmup {
                    h.record(t.elapsed().as_micros() as u64).ok();
                    count += 1;
                }
            }
            (count, h)
        }));
    }
    let mut total = 0;
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        let (c, th) = t.await.expect("writer");
        total += c;
        h.add(th).ok();
    }
    (total as f64 / measure.as_secs_f64(), h)
}

#[cfg(feature = "runtime-stats")]
async fn print_stats(nodes: &BTreeMap<u64, RaftNode<Noop>>) {
    for node in nodes.values().filter(|n| n.is_leader()) {
        match node.raft().runtime_stats().await {
            Ok(stats) => println!("leader {}:\n{}", node.id(), stats.display()),
            Err(e) => println!("leader {}: no statistics: {e}", node.id()),
        }
    }
}

#[cfg(not(feature = "runtime-stats"))]
async fn print_stats(_nodes: &BTreeMap<u64, RaftNode<Noop>>) {
    println!("(statistics need `--features runtime-stats`)");
}
