//! What a run measured: each worker's [`Tally`] of counts, errors and
//! latency histograms, merged into one [`Report`], and the report's
//! printing for humans (`--json` prints the struct as it is).
//!
//! Latencies are kept in microseconds in HDR histograms with 3
//! significant digits that grow to whatever latency arrives: a 3-second
//! stall is recorded as 3 seconds, never clamped to a histogram's range.
//! Throughput is the successful operations divided by the time from the
//! measured phase's start until the last of them finished.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kv_client::api::{Consistency, Durability};
use serde::{Deserialize, Serialize};

use super::run::Cpu;
use super::worker::{Answer, Op, Plan};
use super::{LoadConfig, Pool, Target};

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The slowest operation.
    pub max: u64,
    /// The mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds (all zero if empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What a run measured, and under which settings. `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The system under load.
    pub target: Target,
    /// The endpoints writes went to.
    pub write_endpoints: Vec<String>,
    /// The endpoints reads went to.
    pub read_endpoints: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// The key space.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Fraction of reads asked for.
    pub read_ratio: f64,
    /// Read consistency (for etcd: linearizable, else serializable).
    pub consistency: Consistency,
    /// Write durability.
    pub durability: Durability,
    /// Connection pooling.
    pub pool: Pool,
    /// Seconds of unrecorded warm-up.
    pub warmup_s: f64,
    /// Seconds from the start of the measured phase until its last
    /// operation finished.
    pub elapsed_s: f64,
    /// Operations that succeeded (reads + writes).
    pub ops: u64,
    /// Reads that succeeded (including those of missing keys).
    pub reads: u64,
    /// Writes that succeeded.
    pub writes: u64,
    /// Reads that found no value.
    pub missing: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Failures by kind (`"503 no_leader"`, `"timeout"`, ...).
    pub error_kinds: BTreeMap<String, u64>,
    /// `ops / elapsed_s`.
    pub ops_per_sec: f64,
    /// Latency of every successful operation.
    pub latency_us: Latency,
    /// Latency of the reads, if there were any.
    pub read_latency_us: Option<Latency>,
    /// Latency of the writes, if there were any.
    pub write_latency_us: Option<Latency>,
    /// The generator's CPU time per operation (Linux only; with
    /// `--target null` it includes the instant server's).
    pub client_cpu_us_per_op: Option<f64>,
    /// The generator's CPU use, in cores.
    pub client_cpu_cores: Option<f64>,
    /// The `--server-pids`' CPU time per operation, summed.
    pub server_cpu_us_per_op: Option<f64>,
    /// The `--server-pids`' CPU use, in cores.
    pub server_cpu_cores: Option<f64>,
    /// Prefill writes that failed.
    pub prefill_errors: u64,
}

impl Report {
    /// The report for humans, several lines.
    pub fn human(&self) -> String {
        let consistency = match (self.target, self.consistency) {
            (_, Consistency::Linearizable) => "linearizable",
            (Target::Etcd, _) => "serializable",
            (_, Consistency::Session) => "session",
            (_, Consistency::Stale) => "stale",
        };
        let mut out = format!(
            "{}: {} clients, {:.1} s measured after {:.1} s warm-up; {} keys, {}-byte values, \
             {:.0}% reads ({consistency})\n",
            self.target.name(),
            self.clients,
            self.elapsed_s,
            self.warmup_s,
            thousands(self.keys),
            self.value_size,
            self.read_ratio * 100.0,
        );
        if self.read_ratio < 1.0 {
            out += &format!("writes to   {}\n", self.write_endpoints.join(", "));
        }
        if self.read_ratio > 0.0 {
            out += &format!("reads from  {}\n", self.read_endpoints.join(", "));
        }
        out += &format!(
            "ops         {} ({} writes, {} reads, {} of them missing), {} errors\n",
            thousands(self.ops),
            thousands(self.writes),
            thousands(self.reads),
            thousands(self.missing),
            thousands(self.errors)
        );
        out += &format!("throughput  {} ops/s\n", thousands(self.ops_per_sec.round() as u64));
        let line = |l: &Latency| {
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                micros(l.p50),
                micros(l.p90),
                micros(l.p99),
                micros(l.p999),
                micros(l.max)
            )
        };
        out += &format!("latency     {}\n", line(&self.latency_us));
        if let (Some(r), Some(w)) = (&self.read_latency_us, &self.write_latency_us) {
            out += &format!("  reads     {}\n  writes    {}\n", line(r), line(w));
        }
        let cpu = |per_op: Option<f64>, cores: Option<f64>| match (per_op, cores) {
            (Some(p), Some(c)) => Some(format!("{p:.0} µs/op ({c:.2} cores)")),
            _ => None,
        };
        let client = cpu(self.client_cpu_us_per_op, self.client_cpu_cores);
        let server = cpu(self.server_cpu_us_per_op, self.server_cpu_cores);
        match (client, server) {
            (Some(c), Some(s)) => out += &format!("cpu         generator {c}, servers {s}\n"),
            (Some(c), None) => out += &format!("cpu         generator {c}\n"),
            (None, Some(s)) => out += &format!("cpu         servers {s}\n"),
            (None, None) => {}
        }
        for (kind, n) in &self.error_kinds {
            out += &format!("error       {kind}: {}\n", thousands(*n));
        }
        if self.prefill_errors > 0 {
            out += &format!("prefill     {} writes failed\n", thousands(self.prefill_errors));
        }
        out
    }
}

/// `n` with thousands separators: `12,345`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in microseconds, for humans: `850 µs`, `1.25 ms`, `2.10 s`.
fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// One worker's measurements.
#[derive(Default)]
pub(super) struct Tally {
    reads: Option<Histogram<u64>>,
    writes: Option<Histogram<u64>>,
    read_count: u64,
    write_count: u64,
    missing: u64,
    errors: BTreeMap<String, u64>,
    pub(super) last_end: Option<Instant>,
}

/// A histogram of microseconds that grows to whatever latencies arrive.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("invariant: 3 significant digits is a valid precision")
}

/// Records `latency` in microseconds. `record` grows an auto-resizing
/// histogram; `saturating_record` would instead clamp to its current
/// range, which starts at about 2 ms.
pub(super) fn record(h: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
    if h.record(micros).is_err() {
        h.saturating_record(micros);
    }
}

impl Tally {
    pub(super) fn record(&mut self, op: Op, result: &Result<Answer, String>, latency: Duration) {
        match result {
            Ok(answer) => {
                let (count, h) = match op {
                    Op::Read => (&mut self.read_count, &mut self.reads),
                    Op::Write => (&mut self.write_count, &mut self.writes),
                };
                *count += 1;
                record(h.get_or_insert_with(histogram), latency);
                if *answer == Answer::Missing {
                    self.missing += 1;
                }
            }
            Err(kind) => *self.errors.entry(kind.clone()).or_default() += 1,
        }
    }

    pub(super) fn merge(&mut self, other: Tally) {
        for (mine, theirs) in [(&mut self.reads, other.reads), (&mut self.writes, other.writes)] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(histogram)
                    .add(theirs)
                    .expect("invariant: auto-resizing histograms accept any value");
            }
        }
        self.read_count += other.read_count;
        self.write_count += other.write_count;
        self.missing += other.missing;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.last_end = self.last_end.max(other.last_end);
    }
}

/// Puts the measurements together.
pub(super) fn report(
    cfg: &LoadConfig,
    plan: &Plan,
    tally: Tally,
    elapsed: Duration,
    (cpu_start, cpu_end): (Cpu, Cpu),
    prefill_errors: u64,
) -> Report {
    let elapsed_s = elapsed.as_secs_f64();
    let ops = tally.read_count + tally.write_count;
    let per_op = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if ops > 0 => Some(b.saturating_sub(a).as_secs_f64() * 1e6 / ops as f64),
        _ => None,
    };
    let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if elapsed_s > 0.0 => Some(b.saturating_sub(a).as_secs_f64() / elapsed_s),
        _ => None,
    };
    let mut all = histogram();
    for h in [&tally.reads, &tally.writes].into_iter().flatten() {
        all.add(h).expect("invariant: auto-resizing histograms accept any value");
    }
    Report {
        target: cfg.target,
        write_endpoints: plan.write_bases.clone(),
        read_endpoints: plan.read_bases.clone(),
        clients: cfg.clients,
        keys: cfg.keys,
        value_size: cfg.value_size,
        read_ratio: cfg.read_ratio,
        consistency: cfg.consistency,
        durability: cfg.durability,
        pool: cfg.pool,
        warmup_s: cfg.warmup.as_secs_f64(),
        elapsed_s,
        ops,
        reads: tally.read_count,
        writes: tally.write_count,
        missing: tally.missing,
        errors: tally.errors.values().sum(),
        error_kinds: tally.errors,
        ops_per_sec: if elapsed_s > 0.0 { ops as f64 / elapsed_s } else { 0.0 },
        latency_us: Latency::of(&all),
        read_latency_us: tally.reads.as_ref().map(Latency::of),
        write_latency_us: tally.writes.as_ref().map(Latency::of),
        client_cpu_us_per_op: per_op(cpu_start.generator, cpu_end.generator),
        client_cpu_cores: cores(cpu_start.generator, cpu_end.generator),
        server_cpu_us_per_op: per_op(cpu_start.servers, cpu_end.servers),
        server_cpu_cores: cores(cpu_start.servers, cpu_end.servers),
        prefill_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!((l.p50, l.p90, l.p99, l.p999, l.max), (500, 900, 990, 999, 1000));
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    // Regression: latencies were recorded with `saturating_record`, which
    // clamps to an auto-resizing histogram's current range instead of
    // growing it, so every latency over ~2 ms was lost and p50 read 2 µs.
    #[test]
    fn latencies_of_seconds_are_recorded_as_they_are() {
        let mut tally = Tally::default();
        for ms in [1, 50, 3_000] {
            tally.record(Op::Write, &Ok(Answer::Done), Duration::from_millis(ms));
        }
        let mut merged = Tally::default();
        merged.merge(tally);
        let l = Latency::of(merged.writes.as_ref().unwrap());
        assert_eq!(l.p50 / 1000, 50);
        assert!(l.max >= 3_000_000 && l.max < 3_010_000, "max {} µs", l.max);
    }

    #[test]
    fn tallies_merge_counts_histograms_and_errors() {
        let mut a = Tally::default();
        a.record(Op::Write, &Ok(Answer::Done), Duration::from_micros(100));
        a.record(Op::Read, &Err("503 no_leader".into()), Duration::from_micros(5));
        let mut b = Tally::default();
        b.record(Op::Read, &Ok(Answer::Missing), Duration::from_micros(300));
        b.record(Op::Read, &Err("503 no_leader".into()), Duration::from_micros(5));
        a.merge(b);
        assert_eq!((a.write_count, a.read_count, a.missing), (1, 1, 1));
        assert_eq!(a.errors["503 no_leader"], 2);
        assert_eq!(a.reads.unwrap().max(), 300);
        assert_eq!(a.writes.unwrap().len(), 1);
    }

    #[test]
    fn thousands_and_micros_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(1_250), "1.25 ms");
        assert_eq!(micros(2_100_000), "2.10 s");
    }
}
