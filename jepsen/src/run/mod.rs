//! `jepsen test`: one run, from starting the cluster to the verdict.
//!
//! 1. **Set up.** Start `nodes` `kv-server` processes on 127.0.0.1, each in
//!    its own data directory under the run's directory, with every Raft link
//!    behind the harness's proxy ([`crate::cluster`]), and wait for a leader.
//!    With `--tls`, first make the run's certificates, token and cluster
//!    secret ([`crate::tls`]): the nodes run with peer TLS, HTTPS and
//!    tokens, and every request of the harness carries them. The history's
//!    first event (`setup`, from the nemesis process, which the checkers
//!    skip) and the report's options say which.
//! 2. **Run.** For `time_limit`, the workers ([`workload`]) send operations
//!    and record each invocation and outcome in the history; in a register
//!    run, lease owners and readers ([`leases`]) work beside them on keys
//!    of their own; the nemesis ([`nemesis`]) injects faults on its
//!    schedule; the poller ([`poll`]) records every node's status (and,
//!    with leases, every answer that names a leader, in the history).
//! 3. **Final phase.** Stop the fault in force, heal every link, resume and
//!    restart every node (`final-heal` in the history), wait a quiet period,
//!    then read every key from every node (operations marked
//!    `"phase": "final"`) and wait until the nodes agree on their applied
//!    index and state digest. Then collect every node's rollback records
//!    (the log entries it removed because a new leader's log replaced
//!    them), each in full, for the set checker and `rollback.json`.
//! 4. **Check.** Judge the history (linearizability, set, session, watch,
//!    lease), the
//!    polled statuses (one leader per term), the final statuses
//!    (convergence) and the node logs (panics), and write the report
//!    ([`report`]).
//!
//! The seed fixes every random choice of the harness (operations, values,
//! fault kinds, shapes, victims and gaps); what it cannot fix is timing, so
//! two runs with one seed are alike, not identical.

pub mod client;
pub mod leases;
pub mod nemesis;
pub mod poll;
pub mod report;
pub mod watcher;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use jepsen_checker::checker::Verdict;
use jepsen_checker::history::{EventType, Function, Process, Recorder};
use kv_client::api::Durability;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use self::client::{Http, Session};
use self::nemesis::{Fault, LeaderView, Nemesis, Target};
use self::watcher::Watcher;
use self::workload::{Kind, Shared, Worker, WorkloadOptions};
use crate::cluster::{Cluster, ClusterSpec};
use crate::tls::Credentials;

/// The cluster's timing: long enough election timeouts that two cores
/// running five nodes, the clients and the checker do not cause elections
/// by mere slowness, so that the faults, not the machine, cause them.
pub const SERVER_TIMING: [&str; 4] = ["--heartbeat-ms", "150", "--election-timeout-ms", "1000-2000"];

/// The shortest pause: longer than the longest election timeout above.
pub const MIN_PAUSE: Duration = Duration::from_secs(3);

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The workload.
    pub workload: Kind,
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Faults the nemesis chooses from (none: a fault-free run).
    pub faults: Vec<Fault>,
    /// Whom `kill` and `lose-unsynced` choose from.
    pub kill_targets: Vec<Target>,
    /// How long the clients run.
    pub time_limit: Duration,
    /// Total client operations per second.
    pub rate: f64,
    /// Client workers.
    pub concurrency: usize,
    /// Watch workload: watchers following the writers' changes (besides
    /// the `concurrency` writers).
    pub watchers: usize,
    /// Register workload: lease owners, and as many lease readers,
    /// besides the `concurrency` register clients ([`leases`]); 0 for none.
    pub lease_clients: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Mean length of a fault and of the gap between faults.
    pub interval: Duration,
    /// The quiet period after the final heal, before the final reads.
    pub quiet: Duration,
    /// One client attempt's timeout.
    pub attempt_timeout: Duration,
    /// One operation's deadline, retries included.
    pub op_timeout: Duration,
    /// Register workload: workers per key.
    pub threads_per_key: usize,
    /// Register workload: operations per key before it rotates.
    pub ops_per_key: u64,
    /// The probability that a write's first answer is lost and the write
    /// retried (see [`client::write_with_retries`]).
    pub lose_responses: f64,
    /// Where runs are stored (`<store>/<workload>/<time>/`).
    pub store: PathBuf,
    /// The `kv-server` binary.
    pub server_bin: PathBuf,
    /// Extra `kv-server` arguments for every node (the negative controls'
    /// `--unsafe-*` flags, say).
    pub server_args: Vec<String>,
    /// Time the checkers may take.
    pub check_budget: Duration,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Run the cluster with peer TLS, HTTPS with client certificates and
    /// bearer tokens, and talk to it over HTTPS with a token
    /// ([`crate::tls`]).
    pub tls: bool,
    /// When the workload's puts are acknowledged. `leader` (acknowledged
    /// once in the leader's log, uncommitted) loses writes on failover by
    /// design, so only the set workload, whose checker can tell such a
    /// loss from a bug by the rollback records, accepts it.
    pub durability: Durability,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The overall verdict.
    pub verdict: Verdict,
    /// The run's directory.
    pub dir: PathBuf,
    /// The report, as written to `results.json`.
    pub results: serde_json::Value,
}

/// The `kv-server` binary next to `exe` (the `jepsen` binary or a test in
/// `deps/`), if it exists.
pub fn server_next_to(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    [dir.join("kv-server"), dir.parent()?.join("kv-server")].into_iter().find(|p| p.is_file())
}

/// Runs one test and writes its report. Errors are harness failures (a
/// node that never started, an unwritable store), not verdicts.
///
/// # Errors
/// If the cluster cannot be started or the report cannot be written.
pub async fn run(opts: TestOptions) -> anyhow::Result<RunOutcome> {
    if opts.nodes < 1 || opts.concurrency < 1 {
        bail!("need at least one node and one client");
    }
    if opts.durability == Durability::Leader && opts.workload != Kind::Set {
        // A leader-durable write is acknowledged before it is committed: a
        // linearizable read right after it may not see it, and a failover
        // may lose it. The register and session checkers would rightly call
        // that a violation; only the set checker knows to excuse it.
        bail!(
            "--durability leader needs --workload set: the {} workload's checker would report every \
             write acknowledged before it committed as a violation",
            opts.workload.name()
        );
    }
    if !opts.server_bin.is_file() {
        bail!(
            "{}: no kv-server binary there; build it with `cargo build --release -p kv-app` or pass --server-bin",
            opts.server_bin.display()
        );
    }
    let dir = jepsen_checker::store::run_dir(&opts.store, opts.workload.name())?;
    let mut rng = StdRng::seed_from_u64(opts.seed);

    let mut args: Vec<String> = SERVER_TIMING.iter().map(|s| s.to_string()).collect();
    // The session workload's consistent-prefix check replays the whole log,
    // so it keeps the log; the others snapshot often, so that catching up by
    // snapshot is exercised under faults too.
    let snapshot_every = if opts.workload == Kind::Session { "1000000000" } else { "500" };
    args.extend(["--snapshot-every".into(), snapshot_every.into()]);
    if opts.faults.contains(&Fault::LoseUnsynced) {
        args.push("--fault-lose-unsynced-writes".into());
    }
    if opts.workload == Kind::Watch {
        // Idle watches get a progress line this often, so that a watcher
        // tells a quiet node from one it cannot hear.
        args.extend(["--watch-progress-ms".into(), watcher::PROGRESS_MS.to_string()]);
    }
    args.extend(opts.server_args.iter().cloned());
    let election_timeout = election_timeout_ms(&args);
    let tls = if opts.tls {
        let made = Credentials::create(&opts.server_bin, &dir.join("tls"), opts.nodes)
            .context("making the run's certificates and tokens (--tls)")?;
        Some(made)
    } else {
        None
    };
    let spec = ClusterSpec {
        nodes: opts.nodes,
        dir: dir.join("nodes"),
        bin: opts.server_bin.clone(),
        extra_args: args,
        tls: tls.clone(),
    };
    let cluster = Cluster::start(spec).await.context("starting the cluster")?;
    let nodes = cluster.endpoints();
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));

    let http = Http::new(opts.attempt_timeout, tls.as_ref())?;
    let poll_http = Http::new(Duration::from_millis(500), tls.as_ref())?;
    wait_for_leader(&poll_http, &nodes, Duration::from_secs(60))
        .await
        .context("waiting for the first leader")?;

    let start = Instant::now();
    let rec = Recorder::new(start);
    // What the cluster runs with, first in the history, so that a history
    // read on its own says whether it was taken over TLS.
    // The election timeout is the lease check's bound (a lease nobody
    // renews expires within its TTL plus one election timeout).
    let setup = json!({
        "nodes": opts.nodes,
        "tls": tls.as_ref().map_or(Value::Bool(false), Credentials::describe),
        "election_timeout_ms": election_timeout,
    });
    rec.record(Process::Nemesis, EventType::Info, Function::Other("setup".into()), Value::Null, setup);
    let leader = Arc::new(LeaderView::default());
    let stop_poll = Arc::new(tokio::sync::Notify::new());
    let leases_on = opts.workload == Kind::Register && opts.lease_clients > 0;
    let poller = tokio::spawn(poll::poll(
        poll_http.clone(),
        nodes.clone(),
        rec.clone(),
        leader.clone(),
        stop_poll.clone(),
        leases_on,
    ));

    let wopts = WorkloadOptions {
        kind: opts.workload,
        concurrency: opts.concurrency,
        rate: opts.rate,
        op_timeout: opts.op_timeout,
        threads_per_key: opts.threads_per_key,
        ops_per_key: opts.ops_per_key,
        lose_responses: opts.lose_responses,
        durability: opts.durability,
    };
    let shared = Arc::new(Shared::new(http.clone(), nodes.clone(), rec.clone(), wopts));
    let stop = start + opts.time_limit;
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..opts.concurrency {
        let w = Worker {
            id,
            process: id as u64,
            session: Session { client_id: rng.gen(), seq: 0 },
            token: 0,
            rng: StdRng::seed_from_u64(rng.gen()),
        };
        workers.spawn(shared.clone().worker(w, stop));
    }
    let mut watchers = tokio::task::JoinSet::new();
    if opts.workload == Kind::Watch {
        for _ in 0..opts.watchers.max(1) {
            let w = Watcher::new(shared.new_process(), StdRng::seed_from_u64(rng.gen()));
            watchers.spawn(w.run(shared.clone(), stop));
        }
    }
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        http: http.clone(),
        nodes: nodes.clone(),
        rec: rec.clone(),
        leader: leader.clone(),
        rng: StdRng::seed_from_u64(rng.gen()),
        faults: opts.faults.clone(),
        kill_targets: opts.kill_targets.clone(),
        interval: opts.interval,
        min_pause: MIN_PAUSE,
    };
    // Seeded after everything else, so that a run with leases draws the
    // same operations and faults from its seed as one without.
    let mut lease_tasks = tokio::task::JoinSet::new();
    if leases_on {
        let board = Arc::new(leases::Board::default());
        for id in 0..opts.lease_clients {
            let owner = leases::Owner::new(id, &shared, StdRng::seed_from_u64(rng.gen()));
            lease_tasks.spawn(owner.run(shared.clone(), board.clone(), stop));
            let seed = StdRng::seed_from_u64(rng.gen());
            lease_tasks.spawn(leases::read(shared.clone(), board.clone(), seed, stop));
        }
    }
    let nemesis = tokio::spawn(nemesis.run(stop));
    let progress = report::Progress::start(opts.progress, opts.time_limit, rec.clone());

    while workers.join_next().await.is_some() {}
    while lease_tasks.join_next().await.is_some() {}
    let mut watchers: Vec<Watcher> = watchers.join_all().await;
    let (mut nemesis, active) = nemesis.await.context("the nemesis task failed")?;
    progress.phase("final phase: healing, quiet period, final reads");

    // The final phase.
    if let Some(active) = active {
        nemesis.stop(active).await;
    }
    nemesis.heal_all().await;
    tokio::time::sleep(opts.quiet).await;
    let _ = wait_for_leader(&poll_http, &nodes, Duration::from_secs(30)).await;
    shared.final_reads(Instant::now() + Duration::from_secs(30), &mut rng).await;
    if !watchers.is_empty() {
        // Every watcher catches up to the last change any node committed.
        let mut target = 0;
        for addr in &nodes {
            if let Ok(s) = poll_http.status(addr).await {
                target = target.max(s.committed_index);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for w in &mut watchers {
            w.catch_up(&shared, target, deadline).await;
        }
    }
    let finals = poll::converge(&poll_http, &nodes, Duration::from_secs(30)).await;
    let rollbacks = collect_rollbacks(&http, &nodes).await;
    stop_poll.notify_one();
    let samples = poller.await.context("the status poller failed")?;
    progress.finish();

    let events = rec.events();
    drop(nemesis);
    let mut cluster = Arc::try_unwrap(cluster)
        .map_err(|_| anyhow::anyhow!("the cluster is still shared after the run"))?
        .into_inner();
    cluster.reap();
    let exits = cluster.exits().to_vec();
    let logs = cluster.logs();
    // The session checker's consistent prefix needs the agreed log: read it
    // from a stopped node that applied everything.
    let final_log = if opts.workload == Kind::Session {
        let best = finals.iter().max_by_key(|f| f.applied_index).map(|f| (f.node, f.applied_index));
        let ids = cluster.ids();
        for id in ids {
            let _ = cluster.kill(id);
        }
        match best {
            Some((node, upto)) => {
                let data_dir = cluster.node(node)?.data_dir.clone();
                let unsafe_no_dedup = opts.server_args.iter().any(|a| a == "--unsafe-no-dedup");
                let replay = crate::replay::ReplayOptions { committed: Some(upto), unsafe_no_dedup };
                let log = crate::replay::final_log(&opts.server_bin, &data_dir, replay);
                Some(log.context("replaying the final log"))
            }
            None => Some(Err(anyhow::anyhow!("no node reported its status at the end"))),
        }
    } else {
        None
    };
    drop(cluster);

    let inputs = report::Inputs {
        opts: &opts,
        tls: tls.as_ref(),
        dir: &dir,
        events: &events,
        samples: &samples,
        finals: &finals,
        logs: &logs,
        exits: &exits,
        final_log,
        rollbacks: &rollbacks,
    };
    report::write(inputs)
}

/// The `--election-timeout-ms MIN-MAX` the nodes run with (the last one
/// given, as the server reads it), as `[MIN, MAX]`; `null` if absent or
/// unreadable.
pub fn election_timeout_ms(args: &[String]) -> Value {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--election-timeout-ms" {
            found = iter.next().map(String::as_str);
        } else if let Some(v) = arg.strip_prefix("--election-timeout-ms=") {
            found = Some(v);
        }
    }
    let range = found.and_then(|v| {
        let (min, max) = v.split_once('-')?;
        Some([min.trim().parse::<u64>().ok()?, max.trim().parse::<u64>().ok()?])
    });
    range.map_or(Value::Null, |r| json!(r))
}

/// Every node's rollback records, each in full, as `rollback.json` holds
/// them ([`jepsen_checker::rollback`]): for node `i + 1` at `nodes[i]`, its
/// records, or why they could not be read. A node that does not answer is
/// recorded with its error, never left out silently: a lost write its
/// records would have explained then stays unexplained.
async fn collect_rollbacks(http: &Http, nodes: &[String]) -> Value {
    let mut all = Vec::new();
    for (i, addr) in nodes.iter().enumerate() {
        let node = i as u64 + 1;
        let list = match retry(|| http.rollback_list(addr)).await {
            Ok(list) => list,
            Err(e) => {
                all.push(json!({"node": node, "records": [], "error": format!("listing: {}", e.error)}));
                continue;
            }
        };
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for summary in &list.records {
            match retry(|| http.rollback_show(addr, summary.id)).await {
                Ok(record) => records.push(record),
                Err(e) => errors.push(format!("record {}: {}", summary.id, e.error)),
            }
        }
        let mut entry = json!({"node": node, "records": records});
        if !errors.is_empty() {
            entry["error"] = json!(errors.join("; "));
        }
        all.push(entry);
    }
    json!({ "nodes": all })
}

/// A request tried up to three times, 200 ms apart: the nodes have just
/// converged, but one may still be busy.
async fn retry<T, F: std::future::Future<Output = Result<T, client::Failure>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, client::Failure> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(_) if tries < 3 => tokio::time::sleep(Duration::from_millis(200)).await,
            done => return done,
        }
    }
}

/// Waits until some node says it leads. The error names the last failed
/// answer: a cluster that never answers (a TLS setup that does not work,
/// say) says why.
async fn wait_for_leader(http: &Http, nodes: &[String], within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    let mut last_error = None;
    loop {
        for addr in nodes {
            match http.status(addr).await {
                Ok(s) if s.role == "leader" => return Ok(s.id),
                Ok(_) => {}
                Err(e) => last_error = Some(format!("{addr}: {}", e.error)),
            }
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => bail!("no leader within {within:?}; last failure {e}"),
                None => bail!("no leader within {within:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_election_timeout_is_read_from_the_server_arguments_last_one_winning() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(election_timeout_ms(&args(&SERVER_TIMING)), json!([1000, 2000]));
        let overridden = args(&["--election-timeout-ms", "1000-2000", "--election-timeout-ms=300-600"]);
        assert_eq!(election_timeout_ms(&overridden), json!([300, 600]));
        assert_eq!(election_timeout_ms(&args(&["--heartbeat-ms", "150"])), Value::Null);
        assert_eq!(election_timeout_ms(&args(&["--election-timeout-ms", "soon"])), Value::Null);
    }
}
