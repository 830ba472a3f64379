//! One seed, start to verdict.
//!
//! [`run_seed`] builds a current-thread tokio runtime whose clock is paused
//! and whose random generator is seeded, turns on raft-core's
//! [deterministic mode](raft_core::deterministic) on the same thread, and
//! runs a whole test on it:
//!
//! 1. start the cluster on empty simulated disks;
//! 2. run the clients and the nemesis together until the clients have
//!    invoked every operation, while a poller samples each node's term and
//!    role every 20 ms (for the one-leader-per-term check);
//! 3. heal everything, restart every node that is down, and wait a quiet
//!    period (simulated, so it costs nothing);
//! 4. the final reads from every node, then each node's applied index and
//!    state digest (for the convergence check);
//! 5. judge the history with the same checkers as `jepsen check`, plus the
//!    leader and convergence checkers on what was polled.
//!
//! With the clock paused, tokio advances time only when every task is
//! waiting, straight to the next timer: an idle second costs nothing, and
//! the run takes as long as its messages, disk writes and state machine
//! applies take to compute. Every random choice comes from the seed: the
//! network's and the disks' faults, the nemesis's schedule, the clients'
//! operations, raft-core's and openraft's election timeouts, and tokio's
//! own choices among ready tasks. So a seed always produces the same run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jepsen_checker::check::{check_events_with, CheckReport};
use jepsen_checker::checker::convergence::{self, ConvergenceResult, FinalStatus};
use jepsen_checker::checker::leaders::{self, LeadersResult, StatusSample};
use jepsen_checker::history::Event;
use jepsen_checker::Verdict;
use serde::Serialize;

use crate::cluster::{Cluster, NodeOptions};
use crate::nemesis::{self, Fault, FaultCounts};
use crate::net::{NetFaults, NetStats, SimNet};
use crate::trace::Trace;
use crate::workload::{ClientOptions, Clients, History, Workload};

/// What one simulated test does.
#[derive(Debug, Clone, Serialize)]
pub struct SimOptions {
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Client operations (the final reads come on top).
    pub ops: u64,
    /// The workload; `None`: register, set and session in turn by seed.
    pub workload: Option<Workload>,
    /// The fault kinds the nemesis draws from.
    pub faults: Vec<Fault>,
    /// The negative controls' switches on the nodes.
    pub node_options: NodeOptions,
    /// Negative control: linearizable reads served locally.
    pub unsafe_local_reads: bool,
    /// Record the full trace.
    pub trace: bool,
}

impl SimOptions {
    /// `nodes` nodes, `ops` operations, every fault, no controls.
    pub fn new(nodes: u64, ops: u64) -> SimOptions {
        SimOptions {
            nodes,
            ops,
            workload: None,
            faults: Fault::ALL.to_vec(),
            node_options: NodeOptions::default(),
            unsafe_local_reads: false,
            trace: false,
        }
    }
}

/// Everything one seed produced.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The workload it ran.
    pub workload: Workload,
    /// Every check combined; invalid if the run itself failed (`error`).
    pub valid: Verdict,
    /// The history checkers' report, as `jepsen check` gives it.
    pub check: Option<CheckReport>,
    /// One leader per term, from the sampled roles.
    pub leaders: Option<LeadersResult>,
    /// The nodes' final states agree.
    pub convergence: Option<ConvergenceResult>,
    /// Why the run could not finish or be judged (a node that would not
    /// restart on its disk, a history the checkers cannot read).
    pub error: Option<String>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// What the network did.
    pub net: NetStats,
    /// What the disks did, summed over the nodes.
    pub disk: DiskTotals,
    /// Operations that completed ok, failed and stayed unknown.
    pub outcomes: [u64; 3],
    /// The history.
    #[serde(skip)]
    pub history: Vec<Event>,
    /// The trace (empty unless asked for).
    #[serde(skip)]
    pub trace: Vec<String>,
}

/// What the simulated disks did, summed over the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiskTotals {
    /// Page writes.
    pub writes: u64,
    /// Syncs (fsyncs).
    pub syncs: u64,
    /// Power cuts (crashes, and power lost inside a write).
    pub power_cuts: u64,
    /// Unsynced pages lost at power cuts.
    pub pages_lost: u64,
    /// Unsynced pages that reached the disk anyway.
    pub pages_kept: u64,
    /// Pages torn at a power cut.
    pub torn_writes: u64,
}

impl DiskTotals {
    fn add(&mut self, s: &raft_core::storage::SimDiskStats) {
        self.writes += s.writes;
        self.syncs += s.syncs;
        self.power_cuts += s.power_cuts;
        self.pages_lost += s.pages_lost;
        self.pages_kept += s.pages_kept;
        self.torn_writes += s.torn_writes;
    }
}

/// How long one write of a node's log writer takes: an SSD's fsync to a
/// cloud volume's.
/// Long enough that a leader's own write overlaps its replication, and
/// that crashes land while writes are in progress.
pub const STORAGE_LATENCY: (Duration, Duration) = (Duration::from_micros(200), Duration::from_millis(8));

/// The longest a run may take in simulated time before it is given up as
/// stuck (a few hundred seconds is a long run).
pub const MAX_SIMULATED: Duration = Duration::from_secs(3_600);

/// A value derived from the seed for one purpose, so that each part of the
/// simulation draws from its own stream.
pub fn derive(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Why a simulation cannot run in this build.
pub fn unsupported() -> Option<&'static str> {
    if cfg!(tokio_unstable) {
        None
    } else {
        Some(
            "this build lacks `--cfg tokio_unstable`, which the simulator needs to seed tokio's own \
             random choices: build inside the workspace (its .cargo/config.toml sets it), and if you \
             set RUSTFLAGS, include --cfg tokio_unstable in it",
        )
    }
}

/// Builds the seeded, paused, current-thread runtime of one run.
fn runtime(seed: u64) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    #[cfg(not(tokio_unstable))]
    let _ = seed;
    builder.build()
}

/// Runs seed `seed` and judges it. See the [module docs](self).
pub fn run_seed(seed: u64, opts: &SimOptions) -> SeedReport {
    let workload = opts.workload.unwrap_or_else(|| Workload::for_seed(seed));
    let mut report = SeedReport {
        seed,
        workload,
        valid: Verdict::Invalid,
        check: None,
        leaders: None,
        convergence: None,
        error: None,
        simulated: Duration::ZERO,
        faults: FaultCounts::new(),
        net: NetStats::default(),
        disk: DiskTotals::default(),
        outcomes: [0; 3],
        history: Vec::new(),
        trace: Vec::new(),
    };
    if let Some(why) = unsupported() {
        report.error = Some(why.to_string());
        return report;
    }
    let rt = match runtime(derive(seed, 1)) {
        Ok(rt) => rt,
        Err(e) => {
            report.error = Some(format!("cannot build a runtime: {e}"));
            return report;
        }
    };
    let knobs = Knobs {
        storage_latency: Some(STORAGE_LATENCY),
        unsafe_flush_before_commit: opts.node_options.unsafe_flush_before_commit,
    };
    let _deterministic = raft_core::deterministic::enter_with(derive(seed, 2), knobs);
    watch_panics();
    let _ = PANICKED.try_with(|p| p.borrow_mut().take());
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            // Simulated time: free while idle, so only a run that can never
            // end gets here (a task waiting for what never comes).
            let limit = MAX_SIMULATED;
            tokio::time::timeout(limit, simulate(seed, opts, workload, &mut report)).await.is_ok()
        })
    }));
    match finished {
        Ok(true) => {}
        Ok(false) => {
            report.valid = Verdict::Unknown;
            report.error = Some(format!("the run did not end within {MAX_SIMULATED:?} of simulated time"));
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a task panicked");
            report.valid = Verdict::Invalid;
            report.error = Some(format!("panic: {what}"));
        }
    }
    // Dropping the runtime drops every task still parked (stopped nodes'
    // leftovers), inside deterministic mode.
    drop(rt);
    if let Some(what) = PANICKED.try_with(|p| p.borrow_mut().take()).ok().flatten() {
        report.valid = Verdict::Invalid;
        let earlier = report.error.take().map(|e| format!("; {e}")).unwrap_or_default();
        report.error = Some(format!("a task panicked: {what}{earlier}"));
    }
    report
}

thread_local! {
    /// The first panic on this thread since the run began, if any.
    static PANICKED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Makes every panic on a simulation's thread fail its seed. tokio catches
/// a panic in a spawned task and ends only that task (a node's core, its
/// log writer), and the rest of the run might not notice; so a panic hook,
/// installed once for the process, notes each panic in a thread-local that
/// [`run_seed`] reads after the run, and then does what the previous hook
/// did (print it).
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANICKED.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    p.get_or_insert_with(|| info.to_string().replace('\n', " "));
                }
            });
            previous(info);
        }));
    });
}

async fn simulate(seed: u64, opts: &SimOptions, workload: Workload, report: &mut SeedReport) {
    let started = tokio::time::Instant::now();
    let trace = if opts.trace { Trace::on() } else { Trace::off() };
    let net = SimNet::new(derive(seed, 3), NetFaults::healthy(), trace.clone());
    let history = History::new(trace.clone());
    let cluster = match Cluster::start(opts.nodes, net.clone(), opts.node_options, trace.clone()).await {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(format!("the cluster did not start: {e:#}"));
            return;
        }
    };
    // Let the first election happen before the clients start.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let polled = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_roles(cluster.clone(), history.clone(), samples.clone(), polled.clone()));

    let mut client_opts = ClientOptions::new(workload, opts.ops);
    client_opts.unsafe_local_reads = opts.unsafe_local_reads;
    let clients = Clients::new(cluster.clone(), history.clone(), client_opts);
    let nemesis = tokio::spawn(nemesis::run(
        cluster.clone(),
        history.clone(),
        opts.faults.clone(),
        derive(seed, 4),
        done.clone(),
    ));
    clients.run(derive(seed, 5)).await;
    done.store(true, Ordering::Relaxed);
    report.faults = nemesis.await.unwrap_or_default();

    // Healed (the nemesis does that when it stops): a quiet period for
    // the cluster to settle, then the final reads.
    tokio::time::sleep(Duration::from_secs(10)).await;
    clients.final_reads(derive(seed, 6)).await;
    polled.store(true, Ordering::Relaxed);
    let _ = poller.await;

    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    for id in cluster.ids() {
        match cluster.node(id) {
            Some(node) => {
                let digest = node.view().map_err(|e| e.to_string()).and_then(|v| {
                    kv_app::state_machine::digest(&v)
                        .map(|d| (v.applied_index(), d))
                        .map_err(|e| e.to_string())
                });
                match digest {
                    Ok((applied_index, state_digest)) => {
                        statuses.push(FinalStatus { node: id, applied_index, state_digest })
                    }
                    Err(e) => errors.push(format!("node {id}: no final state: {e}")),
                }
            }
            None => errors.push(format!("node {id} is down at the end")),
        }
    }
    for e in history.events() {
        if e.f.as_str() == "restart-failed" {
            errors.push(format!("a node did not restart: {}", e.value));
        }
    }
    for disk in cluster.ids().iter().filter_map(|&id| cluster.disk(id)) {
        report.disk.add(&disk.stats());
    }
    cluster.stop_all().await;
    report.simulated = started.elapsed();
    report.net = net.stats();
    report.history = history.events();
    report.trace = trace.lines();

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let leaders = leaders::check(&samples);
    let convergence = convergence::check(&statuses);
    let check = check_events_with(&report.history, Duration::from_secs(30), None, None);
    let mut verdicts = vec![leaders.verdict, convergence.verdict];
    match check {
        Ok(c) => {
            verdicts.push(c.valid);
            report.check = Some(c);
        }
        Err(e) => errors.push(format!("the history cannot be checked: {e}")),
    }
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
        verdicts.push(Verdict::Invalid);
    }
    report.valid = Verdict::all(verdicts);
    report.leaders = Some(leaders);
    report.convergence = Some(convergence);
    report.outcomes = outcomes(&report.history);
}

/// Samples every live node's term, role and leader every 20 ms (recording
/// only changes) until `done`.
async fn poll_roles(
    cluster: Arc<Cluster>,
    history: History,
    samples: Arc<Mutex<Vec<StatusSample>>>,
    done: Arc<AtomicBool>,
) {
    let mut last: BTreeMap<u64, (u64, String, Option<u64>)> = BTreeMap::new();
    loop {
        let time = history.elapsed_nanos();
        for id in cluster.ids() {
            let Some(node) = cluster.node(id) else { continue };
            let m = node.raft().metrics().borrow_watched().clone();
            let role = match m.state {
                openraft_state::Leader => "leader",
                openraft_state::Candidate => "candidate",
                openraft_state::Learner => "learner",
                openraft_state::Shutdown => continue,
                openraft_state::Follower => "follower",
            };
            let now = (m.current_term, role.to_string(), m.current_leader);
            // Only changes: a sample per node per poll would be most of the
            // run's memory, and says nothing new.
            if last.get(&id) != Some(&now) {
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(StatusSample {
                    time,
                    node: id,
                    term: now.0,
                    role: now.1.clone(),
                    leader: now.2,
                });
                last.insert(id, now);
            }
        }
        if done.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

use raft_core::deterministic::Knobs;
use raft_core::openraft::async_runtime::WatchReceiver as _;
use raft_core::openraft::ServerState as openraft_state;

/// Client operations by outcome: ok, fail, info.
fn outcomes(events: &[Event]) -> [u64; 3] {
    use jepsen_checker::history::{EventType, Process};
    let mut counts = [0; 3];
    for e in events.iter().filter(|e| matches!(e.process, Process::Client(_))) {
        match e.kind {
            EventType::Ok => counts[0] += 1,
            EventType::Fail => counts[1] += 1,
            EventType::Info => counts[2] += 1,
            EventType::Invoke => {}
        }
    }
    counts
}
