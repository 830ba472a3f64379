//! `kvctl bench`: a closed-loop load generator for the KV service, which can
//! drive etcd too, so that both systems are measured by the same code;
//! `kvctl bench failover`, which measures how long writes stop when a
//! leader stops or is cut off, on both (see `failover.rs`); and `kvctl
//! bench elections`, which counts the elections a short election timeout
//! starts with no failure to call for them (see `elections.rs`).
//!
//! # How it measures
//!
//! `--clients N` workers each run a closed loop with one request in flight:
//! pick an operation (a read with probability `--read-ratio`, else a write)
//! and a key drawn uniformly from `--keys`, send the request, wait for the
//! whole answer, repeat. A run has up to three phases:
//!
//! 1. prefill (`--prefill`, not measured): every key is written once, so
//!    that reads find values;
//! 2. warm-up (`--warmup` seconds, not recorded): connections are opened and
//!    the servers reach a steady state;
//! 3. the measured phase: `--duration` seconds, or `--ops` operations.
//!
//! * **Latency** runs from just before a request is sent until the last byte
//!   of its answer has arrived. Each worker records it in microseconds in its
//!   own HDR histogram (3 significant digits); they are merged at the end.
//! * **Throughput** is the number of operations that started in the
//!   measured phase and succeeded, divided by the time from the start of
//!   that phase until the last of them finished.
//! * **CPU per operation**: the generator's own CPU time (and, with
//!   `--server-pids`, the servers'), read from `/proc/PID/stat` at the
//!   start and the end of the measured phase, divided by the operations.
//!
//! A closed loop under-reports latency when the server stalls: a stalled
//! worker sends nothing, so the requests a real client would have queued
//! meanwhile never happen ("coordinated omission"). The percentiles are
//! those of the service time at the throughput reached, not of an open
//! arrival rate. etcd's own `benchmark` tool measures the same way.
//!
//! # Targets
//!
//! | `--target` | write | linearizable read | session / stale read |
//! |---|---|---|---|
//! | `kv` | `PUT /v1/kv/{key}?durability=…` `{"value": …}` | `GET /v1/kv/{key}?consistency=linearizable` | `GET …?consistency=session&token=T` (T: the highest index this worker has seen), or `stale` |
//! | `etcd` | `POST /v3/kv/put` `{"key": b64, "value": b64}` | `POST /v3/kv/range` `{"key": b64, "serializable": false}` | the same with `"serializable": true` |
//! | `null` | the `kv` protocol against an [instant server](instant_router) started in this process | | |
//!
//! etcd's reads are either linearizable or serializable (any member's local
//! state, without a session guarantee), so `session` and `stale` both map to
//! serializable. etcd acknowledges a put once it is committed on a majority;
//! `--durability all` is refused for it.
//!
//! `--writes-to` and `--reads-to` choose where requests go: `leader` (found
//! once, before the run: kv's `GET /v1/cluster/status`, etcd's
//! `POST /v3/maintenance/status`) or `spread` (worker i uses endpoint
//! i mod n; kv followers forward writes to the leader over HTTP, etcd
//! followers forward proposals over Raft).
//!
//! # Is the generator the bottleneck?
//!
//! `--target null` runs the generator against a server that answers every
//! request at once with a prepared body; `kvctl instant-server` serves the
//! same answers from a separate process (both protocols), which can be
//! pinned to another core with `taskset`. The throughput reached there is
//! the generator's ceiling on this machine.
//!
//! `--pool` chooses how workers reach the servers. `connection` (the
//! default) gives each worker a bare HTTP/1.1 connection per endpoint,
//! driven by the worker's own task (`conn.rs`): the lightest, as wrk's
//! workers are. `shared` sends through one reqwest client, whose pool all
//! workers share, as an application would; `per-client` gives each worker a
//! reqwest client of its own.
//!
//! Shortcuts a production tool would not take: the leader is found once,
//! so a leader change during a run shows up as errors (or as forwarded
//! writes on kv); every write carries the same value; and kv writes do not
//! use exactly-once sessions (`client_id`/`seq`), as etcd's puts have none
//! either.
//!
//! # The code, in reading order
//!
//! 1. This file: the command line ([`BenchArgs`]) and the load it
//!    describes ([`LoadConfig`]).
//! 2. `run.rs`: one run from start to end ([`run_load`]): finding the
//!    leader, prefill, warm-up, the measured phase, the progress bar and
//!    the CPU samples.
//! 3. `worker.rs`: the closed-loop workers and the two protocols they
//!    speak, kv's HTTP API and etcd's JSON gateway; `conn.rs`: a worker's
//!    own connection (`--pool connection`).
//! 4. `report.rs`: the latency histograms, and the [`Report`] they and
//!    the counters end up in, for humans or as JSON.
//! 5. `instant.rs`: the [instant server](instant_router) that measures
//!    the generator's own cost.
//! 6. `cluster.rs`: the 3-node clusters the next two start themselves,
//!    kv's with [`crate::local_cluster`] and etcd's with `etcd_cluster.rs`
//!    ([`EtcdCluster`]), optionally with every Raft link behind a proxy
//!    that can cut it ([`jepsen_net`]).
//! 7. `failover.rs`: `kvctl bench failover`, a different measurement: how
//!    long writes stop when a leader stops or is cut off
//!    ([`run_failover`]), and how long a cut-off leader goes on accepting
//!    requests.
//! 8. `elections.rs`: `kvctl bench elections`, the other side of the
//!    election timeout trade-off: elections started under load while
//!    followers pause briefly, though nothing failed ([`run_elections`]).
//! 9. `plot.rs`: the SVG plots of those two: cumulative distributions of
//!    failover times, and the trade-off.
//! 10. `watch.rs`: `kvctl bench watch`: how long a change takes to reach
//!     1, 100 or 1,000 watchers on one node, and the node's memory with
//!     them ([`run_watch`]).

mod cluster;
mod conn;
mod elections;
mod etcd_cluster;
mod failover;
mod instant;
mod plot;
mod report;
mod run;
mod watch;
mod worker;

use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use kv_client::api::{Consistency, Durability};
use kv_client::client::BearerToken;
use kv_client::tls::ClientTls;
use serde::{Deserialize, Serialize};

pub use cluster::{ClusterArgs, System};
pub use elections::{
    run_elections, ElectionsArgs, ElectionsReport, ElectionsResult, PauseWho, PAUSE_FRACTION,
};
pub use etcd_cluster::EtcdCluster;
pub use failover::{
    run_failover, FailoverArgs, FailoverReport, OldLeaderRound, Percentiles, StopWith, SystemResult,
};
pub use instant::{instant_router, serve_instant};
pub use report::{Latency, Report};
pub use run::run_load;
pub use watch::{run_watch, Prober, WatchArgs, WatchOn, WatchReport, WatchRow};
pub use worker::ERROR_PAUSE;

/// The measured phase's length when neither `--duration` nor `--ops` is
/// given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The system under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A kv-server cluster, through its HTTP API.
    Kv,
    /// An etcd cluster, through its JSON gateway (`/v3/kv/...`).
    Etcd,
    /// An instant server started in this process (the kv protocol).
    Null,
}

impl Target {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Kv => "kv",
            Target::Etcd => "etcd",
            Target::Null => "null",
        }
    }
}

/// Where a kind of request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// To the leader, found before the run.
    Leader,
    /// Worker i to endpoint i mod n.
    Spread,
}

/// How workers share HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// One HTTP client, whose keep-alive pool all workers share.
    Shared,
    /// One HTTP client (and so one connection per endpoint) per worker.
    PerClient,
    /// One bare HTTP/1.1 connection per worker and endpoint, driven by the
    /// worker's own task (hyper's low-level client, no pool): lighter per
    /// request than reqwest, as wrk is.
    Connection,
}

/// `kvctl bench`'s own options. The endpoints, `--consistency`,
/// `--durability`, `--timeout` (per request here), `--json` and the TLS
/// options (`--cacert`, `--cert`, `--key`) are kvctl's global options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to load: kv (a kv-server cluster), etcd (its JSON gateway at
    /// --endpoints), or null (an instant server in this process: the
    /// generator's own ceiling).
    #[arg(long, value_enum, default_value_t = Target::Kv)]
    pub target: Target,
    /// Concurrent clients, each a closed loop with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Measured seconds, after the warm-up [default: 10 unless --ops].
    #[arg(long, value_parser = parse_positive_seconds, conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Measure this many operations instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds_or_zero)]
    pub warmup: f64,
    /// Keys are drawn uniformly from this many.
    #[arg(long, default_value_t = 65_536)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of operations that are reads, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Where writes go: the leader, or spread over the endpoints (kv
    /// followers forward them).
    #[arg(long, value_enum, default_value_t = Route::Leader)]
    pub writes_to: Route,
    /// Where reads go: the leader, or spread over the endpoints.
    #[arg(long, value_enum, default_value_t = Route::Spread)]
    pub reads_to: Route,
    /// Write every key once before the warm-up (not measured), so that
    /// reads find values.
    #[arg(long)]
    pub prefill: bool,
    /// How clients reach the servers: each on a bare HTTP/1.1 connection of
    /// its own (the lightest), through one reqwest pool shared by all, or
    /// one reqwest client per bench client.
    #[arg(long, value_enum, default_value_t = Pool::Connection)]
    pub pool: Pool,
    /// Async runtime threads [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Processes whose CPU time to measure over the measured phase
    /// (Linux), reported as server CPU per operation.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Seed for the keys and the read/write mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio from 0 to 1")),
    }
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations.
    Ops(u64),
}

/// Everything a run needs. [`BenchArgs::config`] builds one from the
/// command line; tests build one with [`LoadConfig::new`].
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The system under load.
    pub target: Target,
    /// Its HTTP endpoints (ignored for [`Target::Null`]).
    pub endpoints: Vec<String>,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// When the measured phase ends.
    pub stop: Stop,
    /// Unrecorded load before measuring.
    pub warmup: Duration,
    /// The key space.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// Read consistency.
    pub consistency: Consistency,
    /// Write durability (kv only).
    pub durability: Durability,
    /// Where writes go.
    pub writes_to: Route,
    /// Where reads go.
    pub reads_to: Route,
    /// Write every key once before the warm-up.
    pub prefill: bool,
    /// Connection pooling.
    pub pool: Pool,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Processes whose CPU time to report.
    pub server_pids: Vec<u32>,
    /// Random seed.
    pub seed: u64,
    /// Draw a progress bar on stderr (only ever when it is a terminal).
    pub progress: bool,
    /// HTTPS: what the generator trusts and presents (kvctl's `--cacert`,
    /// `--cert`, `--key`); endpoints without a scheme become `https://`.
    pub tls: Option<ClientTls>,
    /// The bearer token sent with every request (kvctl's `--token`), for a
    /// cluster with `--token-file`.
    pub token: Option<BearerToken>,
}

impl LoadConfig {
    /// A write-only load of 16 clients for one second, no warm-up, default
    /// key space and value size.
    pub fn new(target: Target, endpoints: Vec<String>) -> Self {
        LoadConfig {
            target,
            endpoints,
            clients: 16,
            stop: Stop::After(Duration::from_secs(1)),
            warmup: Duration::ZERO,
            keys: 65_536,
            value_size: 256,
            read_ratio: 0.0,
            consistency: Consistency::Linearizable,
            durability: Durability::Majority,
            writes_to: Route::Leader,
            reads_to: Route::Spread,
            prefill: false,
            pool: Pool::Connection,
            request_timeout: Duration::from_secs(30),
            server_pids: Vec::new(),
            seed: 1,
            progress: false,
            tls: None,
            token: None,
        }
    }
}

impl BenchArgs {
    /// The run these options, with kvctl's global ones, describe.
    pub fn config(
        &self,
        endpoints: &[String],
        consistency: Consistency,
        durability: Durability,
        request_timeout: Duration,
    ) -> anyhow::Result<LoadConfig> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.ops == Some(0) {
            bail!("--ops must be at least 1");
        }
        if self.target == Target::Etcd && durability != Durability::Majority {
            bail!(
                "etcd acknowledges a put once a majority has it; --durability all and leader are for kv only"
            );
        }
        let stop = match (self.ops, self.duration) {
            (Some(n), _) => Stop::Ops(n),
            (None, Some(s)) => Stop::After(Duration::from_secs_f64(s)),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        Ok(LoadConfig {
            target: self.target,
            endpoints: endpoints.to_vec(),
            clients: self.clients,
            stop,
            warmup: Duration::from_secs_f64(self.warmup),
            keys: self.keys,
            value_size: self.value_size,
            read_ratio: self.read_ratio,
            consistency,
            durability,
            writes_to: self.writes_to,
            reads_to: self.reads_to,
            prefill: self.prefill,
            pool: self.pool,
            request_timeout,
            server_pids: self.server_pids.clone(),
            seed: self.seed,
            progress: true,
            tls: None,
            token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        <Wrap as clap::Parser>::try_parse_from(argv).unwrap().bench
    }

    #[test]
    fn options_become_a_config() {
        let timeout = Duration::from_secs(5);
        let endpoints = ["a:1".to_owned()];
        let c = args(&[]).config(&endpoints, Consistency::Session, Durability::All, timeout).unwrap();
        assert_eq!(c.stop, Stop::After(DEFAULT_DURATION));
        assert_eq!((c.clients, c.keys, c.value_size), (16, 65_536, 256));
        let c = args(&["--ops", "100", "--warmup", "0"])
            .config(&endpoints, Consistency::Stale, Durability::Majority, timeout)
            .unwrap();
        assert_eq!((c.stop, c.warmup), (Stop::Ops(100), Duration::ZERO));
        let etcd = args(&["--target", "etcd"]);
        assert!(etcd.config(&endpoints, Consistency::Linearizable, Durability::All, timeout).is_err());
        let none = args(&["--clients", "0"]);
        assert!(none.config(&endpoints, Consistency::Linearizable, Durability::Majority, timeout).is_err());
    }
}
