//! The lease check: no key outlives its lease's expiry by more than the
//! documented bound, and none disappears while its lease is provably
//! alive.
//!
//! # The activity
//!
//! Beside the register workload's clients, *owners* grant leases with a
//! short TTL, attach keys of their own (never a register key) and renew
//! the lease for a while; then they either revoke it or stop renewing and
//! let it expire. *Readers* read the attached keys, linearizably, all the
//! time. In the history (every operation's `lease` field is the lease id;
//! on a grant's completion, the id granted):
//!
//! ```text
//! {"process":20,"type":"invoke","f":"lease-grant","value":{"ttl_ms":1000}}
//! {"process":20,"type":"ok","f":"lease-grant","value":{"ttl_ms":1000},"lease":7}
//! {"process":20,"type":"invoke","f":"lease-put","key":"lease/20/1","value":31,"lease":7}
//! {"process":20,"type":"ok","f":"lease-put","key":"lease/20/1","value":31,"lease":7}
//! {"process":20,"type":"invoke","f":"lease-keepalive","lease":7}
//! {"process":20,"type":"ok","f":"lease-keepalive","lease":7}
//! {"process":21,"type":"invoke","f":"lease-read","key":"lease/20/1"}
//! {"process":21,"type":"ok","f":"lease-read","key":"lease/20/1","value":31}
//! {"process":20,"type":"invoke","f":"lease-revoke","lease":7}
//! {"process":20,"type":"ok","f":"lease-revoke","lease":7}
//! ```
//!
//! A keepalive or put refused because the lease does not exist is a
//! `fail` with `"error": "lease_not_found"`. An `ok` read's value `null`
//! means the key was absent.
//!
//! # What the client can know
//!
//! The server's expiry runs on the leader's clocks and is replicated as a
//! command; the client sees none of it. What it does see are its own
//! instants, on the machine's monotonic clock, which the nodes share (they
//! run on the same machine): when it sent each request (the invocation's
//! `time`, `s`) and when it learnt the answer (the completion's `time`,
//! `a`). An `ok` operation took effect at some instant in `[s, a]`. The
//! rules below use nothing else, plus, for the last rule, the leaders the
//! harness saw and the faults it injected.
//!
//! Two facts about the server carry the rules. An expiry names the
//! renewal count it judged, and is a no-op if the lease was renewed since;
//! and a leader judges a renewal expired only once a full TTL has passed,
//! by its monotonic clock, since *it* first saw that renewal. That leader
//! cannot have seen a renewal before the renewal applied, and the renewal
//! applied after it was sent. So:
//!
//! > **Lemma.** If a renewal (a grant or a keepalive) sent at `s` was
//! > acknowledged `ok`, the lease ends (its keys deleted) no earlier than
//! > `s + ttl`, unless revoked. A revoke sent at `s'` ends it no earlier
//! > than `s'`.
//!
//! A leader change cannot break the lemma: a new leader gives every lease a
//! full TTL from its own start, which only ends it later; an old leader's
//! expiry carries an old renewal count and is a no-op; a paused leader that
//! wakes up to a stale judgment can at most propose such a no-op. The
//! lemma needs no acknowledgement before the read, only an `ok` one at any
//! point: the renewal took effect at some instant, and the lease could not
//! end before that instant's TTL ran out.
//!
//! A lease is therefore **provably alive** before
//! `alive_until = min(max over ok renewals (s + ttl), min over revokes not
//! certainly failed (s'))`, and a key attached by an `ok` put acknowledged at
//! `a_put` is provably present at every instant in `[a_put, alive_until)`.
//!
//! # The rules
//!
//! * **vanished while renewed**: an `ok` read that found a key absent, sent
//!   at or after its put was acknowledged (`s ≥ a_put`) and answered before
//!   `alive_until` (`a < alive_until`). The read took effect at an instant
//!   in `[s, a]`, inside the window where the key provably existed. A read
//!   answered exactly at `alive_until` is not judged.
//! * **refused while alive**: a keepalive or put answered `lease_not_found`
//!   before `alive_until` (`a < alive_until`): the lease was gone at some
//!   instant before `a`, inside the window where it provably existed.
//! * **outlived**: an `ok` read that found a key present, sent after the
//!   lease's deadline. The documented bound is that a lease nobody renews
//!   expires within its TTL plus one election timeout *while one leader
//!   leads*; a new leader starts the TTL again. So the deadline exists only
//!   where the history proves a steady leader:
//!   * the lease's renewals are settled: no keepalive's outcome is unknown
//!     (`info` or never completed: it may still apply, however late), and
//!     `L` is the last acknowledgement of an `ok` renewal (the last one
//!     applied by then);
//!   * the harness saw one node as leader of one term (`leader-seen`
//!     nemesis events, each with the status request's `sent` instant and
//!     the answer's instant as its `time`) in an answer received at `p1`
//!     and in one sent at or after `D = max(p1, L) + ttl + bound`. A node
//!     leads a term without a gap: it leaves leadership only for a higher
//!     term, and cannot lead the same term again, except by restarting,
//!     which needs a fault;
//!   * no fault was in force at any instant of `[p1, D]`: a fault runs
//!     from its start event's `began` (or, lacking it, from the nemesis
//!     event before it) to its stop event; any other nemesis event
//!     (`fault-failed`, `restarted-node`, `final-heal`) counts as a fault
//!     from its own `began` (or the nemesis event before it) to itself;
//!   * the read was sent after `D` (`s > D`).
//!
//!   Then that leader, undisturbed and leading since before `p1`, saw the
//!   last renewal by `max(p1, L)`, judged the lease expired a TTL later,
//!   and committed the expiry within the bound: `bound` is the run's
//!   longest election timeout (the `setup` event's `election_timeout_ms`),
//!   which covers the server's two expiry checks (each a quarter of the
//!   shortest timeout) and the commit, as the server's own documentation
//!   of the bound assumes. A linearizable read sent after the commit must
//!   see the key gone. Without `election_timeout_ms` in the history no
//!   read is judged by this rule. What the rule takes on trust, as the
//!   bound itself does, is timing on an undisturbed cluster: that such a
//!   leader commits within the bound's slack (two seconds less two
//!   expiry checks, on the harness's timing), and that a status answer
//!   saying "leader" is not older than that. A machine that stalls a
//!   node for seconds with no fault injected breaks both, and would be
//!   reported here; the first two rules assume nothing of the kind.
//!
//! Reads of keys whose put was not acknowledged (`info`, `fail`) are not
//! judged: whether and when they were attached is unknown. Every key must
//! be put once, and an `ok` read of a present key must return the value
//! put (**wrong value** otherwise); a lease id granted twice is **reused
//! id**.
//!
//! The verdict is **invalid** with any violation, **unknown** if the
//! history has lease operations but no read could be judged by any rule
//! (nothing was shown), **valid** otherwise. Two negative controls show
//! that it can fail: a server whose leader ends a lease at half its TTL
//! (`kv-server --unsafe-lease-expire-early`), whose readers find keys gone,
//! and whose owners find their leases gone, while a keepalive sent less
//! than a TTL ago was acknowledged; and one whose leader never expires a
//! lease (`--unsafe-lease-never-expire`), whose readers find keys past
//! their deadline (**outlived**).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Verdict;
use crate::history::{Event, Op, Outcome, Process};
use crate::json::Json;

/// Every lease function's name starts with this.
pub const PREFIX: &str = "lease-";
/// Grant a lease: the invocation's value is `{"ttl_ms": T}`, an `ok`
/// completion's `lease` field the id.
pub const GRANT: &str = "lease-grant";
/// Renew lease `lease`.
pub const KEEPALIVE: &str = "lease-keepalive";
/// Revoke lease `lease`.
pub const REVOKE: &str = "lease-revoke";
/// Put `value` under `key`, attached to lease `lease`.
pub const PUT: &str = "lease-put";
/// Read `key` linearizably; an `ok` value `null` means absent.
pub const READ: &str = "lease-read";
/// The nemesis event of one status answer that said "leader": value
/// `{"node", "term", "sent"}`, time when the answer arrived.
pub const LEADER_SEEN: &str = "leader-seen";
/// The error a refusal for a lease that does not exist carries.
pub const LEASE_NOT_FOUND: &str = "lease_not_found";

/// How many violations the result lists in full; the counts cover all.
const LISTED: usize = 50;

const NANOS_PER_MS: u64 = 1_000_000;

/// Whether `op` belongs to the lease activity.
pub fn is_lease(op: &Op) -> bool {
    op.f.as_str().starts_with(PREFIX)
}

/// The result of the lease check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseResult {
    /// Invalid, unknown or valid, as the [module docs](self) say.
    pub verdict: Verdict,
    /// Leases granted (`ok` grants).
    pub leases: usize,
    /// Keepalives acknowledged `ok`.
    pub keepalives_ok: usize,
    /// Keys attached by an `ok` put.
    pub keys: usize,
    /// `ok` reads of attached keys.
    pub reads: usize,
    /// Reads that found a key absent and were judged by *vanished while
    /// renewed* (sent after the put was acknowledged).
    pub absent_reads_judged: usize,
    /// Of all reads, those answered while their lease was provably alive:
    /// each had to find its key.
    pub reads_while_alive: usize,
    /// `lease_not_found` refusals judged by *refused while alive*.
    pub refusals_judged: usize,
    /// Reads sent after a deadline the history proves, judged by
    /// *outlived*: each had to find its key gone.
    pub reads_past_deadline: usize,
    /// Reads of a lease whose deadline the history could have proved
    /// (settled renewals, a bound known), whenever they were sent.
    pub reads_of_settled_leases: usize,
    /// The bound added to the TTL, in ms (the run's longest election
    /// timeout); `None`: not in the history, *outlived* not judged.
    pub bound_ms: Option<u64>,
    /// Violations by kind.
    pub violation_counts: BTreeMap<String, usize>,
    /// The first violations, in the order found.
    pub violations: Vec<Violation>,
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// Its kind: `outlived`, `vanished while renewed`, `refused while
    /// alive`, `wrong value`, `reused id`.
    pub kind: String,
    /// The lease.
    pub lease: u64,
    /// The key, for a read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The process of the offending operation.
    pub process: Json,
    /// What was wrong, in words, with the instants that prove it.
    pub detail: String,
}

/// A history the lease check cannot judge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A lease operation lacks a field the rules need.
    #[error("{f} invoked at event {index}: {problem}")]
    Malformed {
        /// The function.
        f: String,
        /// The invocation's position.
        index: usize,
        /// What is missing.
        problem: String,
    },
    /// One key was put twice: the rules assume a key is attached once.
    #[error("lease-puts invoked at events {first} and {second} both put {key:?}: each key must be put once")]
    KeyPutTwice {
        /// The key.
        key: String,
        /// The first put's invocation position.
        first: usize,
        /// The second's.
        second: usize,
    },
}

/// What the history says about one lease.
#[derive(Debug, Default)]
struct LeaseFacts {
    ttl_ns: u64,
    /// `(sent, acknowledged)` of every `ok` renewal, the grant included.
    renewals: Vec<(u64, u64)>,
    /// Some keepalive's outcome is unknown.
    unsettled: bool,
    /// The earliest send of a revoke that may have applied.
    first_revoke: Option<u64>,
}

impl LeaseFacts {
    /// The instant before which the lease provably exists (the lemma).
    fn alive_until(&self) -> Option<u64> {
        let renewed = self.renewals.iter().map(|&(s, _)| s.saturating_add(self.ttl_ns)).max()?;
        Some(self.first_revoke.map_or(renewed, |r| r.min(renewed)))
    }

    /// The last acknowledgement of a renewal, if every renewal is settled.
    fn settled_last_ack(&self) -> Option<u64> {
        if self.unsettled {
            return None;
        }
        self.renewals.iter().map(|&(_, a)| a).max()
    }
}

/// A key attached by an `ok` put.
struct Attached {
    lease: u64,
    value: Json,
    acked: u64,
}

/// One node's leadership of one term, as the harness saw it.
#[derive(Default)]
struct Leadership {
    /// When each answer that said "leader" arrived, ascending.
    received: Vec<u64>,
    /// The latest instant a request was sent whose answer said "leader".
    last_sent: u64,
}

struct Findings {
    counts: BTreeMap<String, usize>,
    listed: Vec<Violation>,
}

impl Findings {
    fn add(&mut self, kind: &str, lease: u64, key: Option<&str>, op: &Op, detail: String) {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        if self.listed.len() < LISTED {
            self.listed.push(Violation {
                kind: kind.to_owned(),
                lease,
                key: key.map(str::to_owned),
                process: op.process.as_json().clone(),
                detail,
            });
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / NANOS_PER_MS as f64)
}

/// Checks the lease activity: every lease operation in `ops`, with the
/// nemesis events of `events` (the history `ops` were paired from) for the
/// leaders seen, the faults and the bound.
///
/// # Errors
/// A [`LeaseError`] for a history the check cannot judge. A history that
/// breaks a rule is an `Ok` result with [`Verdict::Invalid`].
pub fn check(ops: &[Op], events: &[Event]) -> Result<LeaseResult, LeaseError> {
    let mut found = Findings { counts: BTreeMap::new(), listed: Vec::new() };
    let mut sorted: Vec<&Op> = ops.iter().filter(|op| is_lease(op)).collect();
    sorted.sort_by_key(|op| op.invoke_index);

    let leases = lease_facts(&sorted, events, &mut found)?;
    let keys = attached(&sorted, events)?;
    let nemesis = Nemesis::read(events);

    let mut result = LeaseResult {
        verdict: Verdict::Valid,
        leases: leases.len(),
        keepalives_ok: sorted
            .iter()
            .filter(|op| op.f.as_str() == KEEPALIVE && op.outcome == Outcome::Ok)
            .count(),
        keys: keys.len(),
        reads: 0,
        absent_reads_judged: 0,
        reads_while_alive: 0,
        refusals_judged: 0,
        reads_past_deadline: 0,
        reads_of_settled_leases: 0,
        bound_ms: nemesis.bound_ms,
        violation_counts: BTreeMap::new(),
        violations: Vec::new(),
    };

    for op in &sorted {
        let (Some(s), Some(a)) = (op.invoke_time, op.complete_time) else { continue };
        match op.f.as_str() {
            KEEPALIVE | PUT
                if op.outcome == Outcome::Fail && error_of(op, events) == Some(LEASE_NOT_FOUND) =>
            {
                let Some(id) = lease_of(op, events) else { continue };
                let Some(alive_until) = leases.get(&id).and_then(LeaseFacts::alive_until) else { continue };
                result.refusals_judged += 1;
                if a < alive_until {
                    found.add(
                        "refused while alive",
                        id,
                        op.key.as_str(),
                        op,
                        format!(
                            "{} answered lease_not_found at {}, but the lease provably existed until {}",
                            op.f,
                            ms(a),
                            ms(alive_until)
                        ),
                    );
                }
            }
            READ if op.outcome == Outcome::Ok => {
                let Some(key) = op.key.as_str() else { continue };
                let Some(k) = keys.get(key) else { continue };
                let Some(facts) = leases.get(&k.lease) else { continue };
                result.reads += 1;
                let alive_until = facts.alive_until().unwrap_or(0);
                let alive = s >= k.acked && a < alive_until;
                result.reads_while_alive += usize::from(alive);
                // Pairing keeps an operation's invocation value except for
                // `read`s: a `lease-read`'s value read is its completion's.
                let value = op.complete_index.and_then(|i| events.get(i)).map_or(&op.value, |e| &e.value);
                let present = !value.is_null();
                if present && *value != k.value {
                    found.add(
                        "wrong value",
                        k.lease,
                        Some(key),
                        op,
                        format!("read {value}, but the key was put with {}", k.value),
                    );
                }
                if !present && s >= k.acked {
                    result.absent_reads_judged += 1;
                    if alive {
                        found.add(
                            "vanished while renewed",
                            k.lease,
                            Some(key),
                            op,
                            format!(
                                "read from {} to {} found the key absent; it was put by {} and its lease \
                                 provably existed until {}",
                                ms(s),
                                ms(a),
                                ms(k.acked),
                                ms(alive_until)
                            ),
                        );
                    }
                }
                let (Some(last), Some(bound_ms)) = (facts.settled_last_ack(), nemesis.bound_ms) else {
                    continue;
                };
                result.reads_of_settled_leases += 1;
                let budget = facts.ttl_ns.saturating_add(bound_ms.saturating_mul(NANOS_PER_MS));
                let Some((p1, deadline)) = nemesis.proven_deadline(last, budget, s) else { continue };
                result.reads_past_deadline += 1;
                if present {
                    found.add(
                        "outlived",
                        k.lease,
                        Some(key),
                        op,
                        format!(
                            "read sent at {} found the key; its last renewal was acknowledged at {}, one \
                             leader led undisturbed from {} past the deadline {} (+ ttl {} + bound {} ms)",
                            ms(s),
                            ms(last),
                            ms(p1),
                            ms(deadline),
                            ms(facts.ttl_ns),
                            bound_ms
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    result.verdict = if !found.counts.is_empty() {
        Verdict::Invalid
    } else if result.absent_reads_judged + result.reads_while_alive + result.reads_past_deadline == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    result.violation_counts = found.counts;
    result.violations = found.listed;
    Ok(result)
}

/// The `error` field of an operation's completion, if a string.
fn error_of<'a>(op: &Op, events: &'a [Event]) -> Option<&'a str> {
    op.field(events, "error").and_then(Value::as_str)
}

/// The operation's `lease` field.
fn lease_of(op: &Op, events: &[Event]) -> Option<u64> {
    op.field(events, "lease").and_then(Value::as_u64)
}

fn malformed(op: &Op, problem: &str) -> LeaseError {
    LeaseError::Malformed { f: op.f.to_string(), index: op.invoke_index, problem: problem.to_owned() }
}

/// Every granted lease, its renewals and revokes.
fn lease_facts(
    ops: &[&Op],
    events: &[Event],
    found: &mut Findings,
) -> Result<HashMap<u64, LeaseFacts>, LeaseError> {
    let mut leases: HashMap<u64, LeaseFacts> = HashMap::new();
    for op in ops.iter().filter(|op| op.f.as_str() == GRANT && op.outcome == Outcome::Ok) {
        let ttl_ms = op.value.get("ttl_ms").and_then(Value::as_u64);
        let (Some(id), Some(ttl_ms)) = (lease_of(op, events), ttl_ms) else {
            return Err(malformed(
                op,
                "an ok grant needs {\"ttl_ms\": T} as its value and the id as `lease`",
            ));
        };
        if leases.contains_key(&id) {
            found.add("reused id", id, None, op, format!("lease {id} was granted twice"));
            continue;
        }
        let mut facts = LeaseFacts { ttl_ns: ttl_ms.saturating_mul(NANOS_PER_MS), ..LeaseFacts::default() };
        if let (Some(s), Some(a)) = (op.invoke_time, op.complete_time) {
            facts.renewals.push((s, a));
        }
        leases.insert(id, facts);
    }
    for op in ops.iter().filter(|op| matches!(op.f.as_str(), KEEPALIVE | REVOKE)) {
        let Some(id) = lease_of(op, events) else {
            return Err(malformed(op, "a keepalive or revoke needs the lease id as `lease`"));
        };
        let Some(facts) = leases.get_mut(&id) else { continue };
        match (op.f.as_str(), op.outcome) {
            (KEEPALIVE, Outcome::Ok) => match (op.invoke_time, op.complete_time) {
                (Some(s), Some(a)) => facts.renewals.push((s, a)),
                // Applied at an unknown instant: the deadline is unknown.
                _ => facts.unsettled = true,
            },
            (KEEPALIVE, Outcome::Info) => facts.unsettled = true,
            (REVOKE, Outcome::Ok | Outcome::Info) => {
                // Without a time, it may have applied at any instant.
                let s = op.invoke_time.unwrap_or(0);
                facts.first_revoke = Some(facts.first_revoke.map_or(s, |r| r.min(s)));
            }
            _ => {}
        }
    }
    Ok(leases)
}

/// Every key attached by an `ok` put.
fn attached(ops: &[&Op], events: &[Event]) -> Result<HashMap<String, Attached>, LeaseError> {
    let mut keys: HashMap<String, (usize, Option<Attached>)> = HashMap::new();
    for op in ops.iter().filter(|op| op.f.as_str() == PUT) {
        let (Some(key), Some(lease)) = (op.key.as_str(), lease_of(op, events)) else {
            return Err(malformed(op, "a lease-put needs a string key and the lease id as `lease`"));
        };
        if let Some((first, _)) = keys.get(key) {
            return Err(LeaseError::KeyPutTwice {
                key: key.to_owned(),
                first: *first,
                second: op.invoke_index,
            });
        }
        let attached = match (op.outcome, op.complete_time) {
            (Outcome::Ok, Some(acked)) => Some(Attached { lease, value: op.value.clone(), acked }),
            _ => None,
        };
        keys.insert(key.to_owned(), (op.invoke_index, attached));
    }
    Ok(keys.into_iter().filter_map(|(k, (_, a))| a.map(|a| (k, a))).collect())
}

/// What the nemesis events say: the bound, the leaders seen, the faults.
struct Nemesis {
    bound_ms: Option<u64>,
    leaderships: Vec<Leadership>,
    /// `[from, to]` of every fault, in nanoseconds.
    faults: Vec<(u64, u64)>,
}

impl Nemesis {
    fn read(events: &[Event]) -> Nemesis {
        let mut bound_ms = None;
        let mut by_term: BTreeMap<(u64, u64), Leadership> = BTreeMap::new();
        let mut faults = Vec::new();
        // The open fault: its name and when it began.
        let mut open: Option<(String, u64)> = None;
        let mut previous = 0;
        for e in events.iter().filter(|e| e.process == Process::Nemesis) {
            let f = e.f.as_str();
            let time = e.time.unwrap_or(previous);
            match f {
                "setup" => {
                    bound_ms = match e.value.get("election_timeout_ms") {
                        Some(Value::Array(range)) => range.iter().filter_map(Value::as_u64).max(),
                        Some(v) => v.as_u64(),
                        None => None,
                    };
                }
                LEADER_SEEN => {
                    let node = e.value.get("node").and_then(Value::as_u64);
                    let term = e.value.get("term").and_then(Value::as_u64);
                    let sent = e.value.get("sent").and_then(Value::as_u64);
                    if let (Some(node), Some(term), Some(sent), Some(received)) = (node, term, sent, e.time) {
                        let l = by_term.entry((node, term)).or_default();
                        l.received.push(received);
                        l.last_sent = l.last_sent.max(sent);
                    }
                    // Not a fault, and not a nemesis action: `previous`
                    // stays the last action's time.
                    continue;
                }
                _ => {
                    let began = e.value.get("began").and_then(Value::as_u64).unwrap_or(previous).min(time);
                    if let Some(name) = f.strip_prefix("start-") {
                        if let Some((_, from)) = open.take() {
                            // A start with the last fault still open: the
                            // open one lasts at least until now.
                            faults.push((from, time));
                        }
                        open = Some((name.to_owned(), began));
                    } else if let Some(name) = f.strip_prefix("stop-") {
                        match open.take() {
                            Some((open_name, from)) if open_name == name => faults.push((from, time)),
                            Some(other) => {
                                faults.push((other.1, time));
                                faults.push((previous, time));
                            }
                            None => faults.push((previous, time)),
                        }
                    } else {
                        faults.push((began, time));
                    }
                }
            }
            previous = time;
        }
        if let Some((_, from)) = open {
            faults.push((from, u64::MAX));
        }
        let mut leaderships: Vec<Leadership> = by_term.into_values().collect();
        for l in &mut leaderships {
            l.received.sort_unstable();
        }
        Nemesis { bound_ms, leaderships, faults }
    }

    /// Whether a fault was in force at some instant of `[from, to]`.
    fn disturbed(&self, from: u64, to: u64) -> bool {
        self.faults.iter().any(|&(a, b)| a <= to && from <= b)
    }

    /// For a lease whose last renewal was acknowledged at `last` and whose
    /// key was found by a read sent at `sent`: a `(p1, deadline)` such that
    /// one leader, seen at `p1` and again in an answer requested at or
    /// after `deadline = max(p1, last) + budget`, led with no fault in force
    /// over `[p1, deadline]`, and `deadline < sent`. `None` if the history
    /// proves no such deadline.
    fn proven_deadline(&self, last: u64, budget: u64, sent: u64) -> Option<(u64, u64)> {
        for l in &self.leaderships {
            for &p1 in &l.received {
                let deadline = p1.max(last).saturating_add(budget);
                if deadline >= sent {
                    break;
                }
                if l.last_sent >= deadline && !self.disturbed(p1, deadline) {
                    return Some((p1, deadline));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{pair, parse_history};

    /// Milliseconds as the history's nanoseconds.
    const MS: u64 = NANOS_PER_MS;

    fn run(text: &str) -> LeaseResult {
        let events = parse_history(text).expect("test history parses");
        let ops = pair(&events).expect("test history pairs");
        check(&ops, &events).expect("checkable")
    }

    fn kinds(r: &LeaseResult) -> Vec<&str> {
        r.violation_counts.keys().map(String::as_str).collect()
    }

    /// A line of the history, with `t` in milliseconds.
    fn line(process: &str, kind: &str, f: &str, rest: &str, t: u64) -> String {
        let rest = if rest.is_empty() { String::new() } else { format!(",{rest}") };
        format!(r#"{{"process":{process},"type":"{kind}","f":"{f}"{rest},"time":{}}}"#, t * MS)
    }

    /// Lease 7 (ttl 1000 ms) granted at [0, 10], key "k" put at [20, 30],
    /// a keepalive at [`ka`, `ka` + 10], a read by process 3 finding the
    /// key at [600, 650] (so that something is always judged); then the
    /// given lines.
    fn history(ka: u64, more: &[String]) -> String {
        let mut lines = vec![
            line("1", "invoke", GRANT, r#""value":{"ttl_ms":1000}"#, 0),
            line("1", "ok", GRANT, r#""value":{"ttl_ms":1000},"lease":7"#, 10),
            line("1", "invoke", PUT, r#""key":"k","value":5,"lease":7"#, 20),
            line("1", "ok", PUT, r#""key":"k","value":5,"lease":7"#, 30),
            line("1", "invoke", KEEPALIVE, r#""lease":7"#, ka),
            line("1", "ok", KEEPALIVE, r#""lease":7"#, ka + 10),
            line("3", "invoke", READ, r#""key":"k""#, 600),
            line("3", "ok", READ, r#""key":"k","value":5"#, 650),
        ];
        lines.extend(more.iter().cloned());
        lines.sort_by_key(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["time"].as_u64().unwrap()
        });
        lines.join("\n")
    }

    /// A read by process 2 from `s` to `a` (ms) finding `value`.
    fn read(s: u64, a: u64, value: &str) -> [String; 2] {
        [
            line("2", "invoke", READ, r#""key":"k""#, s),
            line("2", "ok", READ, &format!(r#""key":"k","value":{value}"#), a),
        ]
    }

    /// The setup event (bound 2000 ms) and one leader, seen every 100 ms
    /// from `from` to `to` (each answer 1 ms after its request).
    fn steady_leader(from: u64, to: u64) -> Vec<String> {
        let mut lines =
            vec![line(r#""nemesis""#, "info", "setup", r#""value":{"election_timeout_ms":[1000,2000]}"#, 0)];
        let mut t = from;
        while t <= to {
            let value = format!(r#""value":{{"node":1,"term":3,"sent":{}}}"#, (t - 1) * MS);
            lines.push(line(r#""nemesis""#, "info", LEADER_SEEN, &value, t));
            t += 100;
        }
        lines
    }

    #[test]
    fn reads_inside_the_lease_that_find_the_key_are_valid() {
        let r = run(&history(500, &read(700, 800, "5")));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!((r.leases, r.keepalives_ok, r.keys, r.reads, r.reads_while_alive), (1, 1, 1, 2, 2));
    }

    #[test]
    fn a_key_absent_before_the_last_keepalive_send_plus_ttl_vanished() {
        // The keepalive sent at 500 ms keeps the lease until 1500 ms.
        let r = run(&history(500, &read(1400, 1499, "null")));
        assert_eq!(kinds(&r), ["vanished while renewed"], "{r:?}");
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.violations[0].key.as_deref(), Some("k"));
    }

    #[test]
    fn a_read_answered_at_or_after_the_send_plus_ttl_may_find_the_key_gone() {
        // At exactly 1500 ms the lease may have ended: not judged as alive.
        let r = run(&history(500, &read(1400, 1500, "null")));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!((r.absent_reads_judged, r.reads_while_alive), (1, 1));
        // The keepalive's acknowledgement does not count, its send does:
        // acknowledged at 510 ms, the lease is owed only until 1500 ms.
        let r = run(&history(500, &read(1505, 1509, "null")));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
    }

    #[test]
    fn a_keepalive_acknowledged_after_the_read_still_proves_the_lease_alive() {
        // The grant and the first keepalive (sent at 50 ms) owe the lease
        // until 1050 ms only. The keepalive sent at 1050 ms may have been
        // applied after the read, but it found the lease, so the lease
        // existed during the read.
        let mut more = read(1100, 1200, "null").to_vec();
        assert_eq!(run(&history(50, &more)).verdict, Verdict::Valid);
        more.extend([
            line("1", "invoke", KEEPALIVE, r#""lease":7"#, 1050),
            line("1", "ok", KEEPALIVE, r#""lease":7"#, 1300),
        ]);
        assert_eq!(kinds(&run(&history(50, &more))), ["vanished while renewed"]);
    }

    #[test]
    fn a_read_sent_before_the_put_was_acknowledged_is_not_judged() {
        let r = run(&history(500, &read(25, 40, "null")));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!((r.reads, r.absent_reads_judged), (2, 0));
    }

    #[test]
    fn a_revoke_ends_the_window_at_its_send() {
        let revoke =
            [line("1", "invoke", REVOKE, r#""lease":7"#, 800), line("1", "ok", REVOKE, r#""lease":7"#, 810)];
        let mut more = revoke.to_vec();
        more.extend(read(805, 820, "null"));
        let r = run(&history(500, &more));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        // One answered before the revoke was sent must still see the key.
        let mut more = revoke.to_vec();
        more.extend(read(700, 799, "null"));
        assert_eq!(kinds(&run(&history(500, &more))), ["vanished while renewed"]);
        // A revoke that certainly failed ends nothing.
        let failed = [
            line("1", "invoke", REVOKE, r#""lease":7"#, 800),
            line("1", "fail", REVOKE, r#""lease":7"#, 810),
        ];
        let mut more = failed.to_vec();
        more.extend(read(805, 820, "null"));
        assert_eq!(kinds(&run(&history(500, &more))), ["vanished while renewed"]);
    }

    #[test]
    fn a_keepalive_refused_while_the_lease_is_owed_is_caught() {
        let refused = |s: u64, a: u64| {
            [
                line("1", "invoke", KEEPALIVE, r#""lease":7"#, s),
                line("1", "fail", KEEPALIVE, r#""lease":7,"error":"lease_not_found""#, a),
            ]
        };
        let r = run(&history(500, &refused(1200, 1499)));
        assert_eq!(kinds(&r), ["refused while alive"], "{r:?}");
        let r = run(&history(500, &refused(1200, 1500)));
        assert_eq!((r.verdict, r.refusals_judged), (Verdict::Valid, 1), "{r:?}");
        // A put refused the same way is caught the same way.
        let put = [
            line("1", "invoke", PUT, r#""key":"k2","value":6,"lease":7"#, 1200),
            line("1", "fail", PUT, r#""key":"k2","value":6,"lease":7,"error":"lease_not_found""#, 1300),
        ];
        assert_eq!(kinds(&run(&history(500, &put))), ["refused while alive"]);
    }

    #[test]
    fn no_judged_read_is_unknown() {
        let text = [
            line("1", "invoke", GRANT, r#""value":{"ttl_ms":1000}"#, 0),
            line("1", "ok", GRANT, r#""value":{"ttl_ms":1000},"lease":7"#, 10),
        ]
        .join("\n");
        assert_eq!(run(&text).verdict, Verdict::Unknown);
    }

    #[test]
    fn a_key_found_after_a_proven_deadline_outlived_its_lease() {
        // Last renewal acknowledged at 510 ms; a leader seen undisturbed
        // from 100 ms: deadline 510 + 1000 + 2000 = 3510 ms.
        let mut more = steady_leader(100, 4000);
        more.extend(read(3520, 3530, "5"));
        let r = run(&history(500, &more));
        assert_eq!(kinds(&r), ["outlived"], "{r:?}");
        assert_eq!(r.reads_past_deadline, 1);
        // Sent exactly at the deadline: not judged.
        let mut more = steady_leader(100, 4000);
        more.extend(read(3510, 3530, "5"));
        let r = run(&history(500, &more));
        assert_eq!((r.verdict, r.reads_of_settled_leases), (Verdict::Valid, 2), "{r:?}");
    }

    #[test]
    fn outlived_needs_the_leader_seen_past_the_deadline() {
        // The last answer that said "leader" was requested at 3399 ms.
        let mut more = steady_leader(100, 3400);
        more.extend(read(3600, 3610, "5"));
        let r = run(&history(500, &more));
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(r.reads_past_deadline, 0);
    }

    #[test]
    fn a_leader_first_seen_late_moves_the_deadline() {
        // First seen at 1000 ms: the deadline is 1000 + 3000 = 4000 ms.
        let mut more = steady_leader(1000, 5000);
        more.extend(read(3600, 3610, "5"));
        assert_eq!(run(&history(500, &more)).verdict, Verdict::Valid);
        let mut more = steady_leader(1000, 5000);
        more.extend(read(4100, 4110, "5"));
        assert_eq!(kinds(&run(&history(500, &more))), ["outlived"]);
    }

    #[test]
    fn a_fault_inside_the_window_suspends_the_outlived_rule() {
        for fault in [
            // A fault that began at 2000 ms, recorded at 2001 ms.
            vec![
                line(r#""nemesis""#, "info", "start-pause", r#""value":{"began":2000000000}"#, 2001),
                line(r#""nemesis""#, "info", "stop-pause", r#""value":{}"#, 2500),
            ],
            // Without `began`, it runs from the nemesis event before it.
            vec![
                line(r#""nemesis""#, "info", "stop-kill", r#""value":{}"#, 50),
                line(r#""nemesis""#, "info", "start-partition", r#""value":{}"#, 3600),
            ],
            // A fault still in force at the end of the history.
            vec![line(r#""nemesis""#, "info", "start-kill", r#""value":{"began":3400000000}"#, 3401)],
            vec![line(r#""nemesis""#, "info", "fault-failed", r#""value":{}"#, 1000)],
        ] {
            let mut more = steady_leader(100, 5000);
            more.extend(fault.iter().cloned());
            more.extend(read(3700, 3710, "5"));
            let r = run(&history(500, &more));
            assert_eq!(r.verdict, Verdict::Valid, "{fault:?}: {r:?}");
        }
        // A fault that ended before the leader was seen does not.
        let mut more = steady_leader(100, 5000);
        more.extend([
            line(r#""nemesis""#, "info", "start-kill", r#""value":{"began":10000000}"#, 11),
            line(r#""nemesis""#, "info", "stop-kill", r#""value":{}"#, 99),
        ]);
        more.extend(read(3700, 3710, "5"));
        assert_eq!(kinds(&run(&history(500, &more))), ["outlived"]);
        // Nor does a final heal that began after the deadline; one that
        // does not say when it began runs from the event before it.
        let healed = |value: &str| {
            let mut more = steady_leader(100, 5000);
            more.push(line(r#""nemesis""#, "info", "final-heal", value, 4600));
            more.extend(read(3700, 3710, "5"));
            run(&history(500, &more))
        };
        assert_eq!(kinds(&healed(r#""value":{"began":4500000000}"#)), ["outlived"]);
        assert_eq!(healed(r#""value":null"#).verdict, Verdict::Valid);
    }

    #[test]
    fn an_unsettled_keepalive_or_a_missing_bound_suspends_the_outlived_rule() {
        let mut more = steady_leader(100, 5000);
        more.extend([
            line("1", "invoke", KEEPALIVE, r#""lease":7"#, 600),
            line("1", "info", KEEPALIVE, r#""lease":7"#, 700),
        ]);
        more.extend(read(3700, 3710, "5"));
        let r = run(&history(500, &more));
        assert_eq!((r.verdict, r.reads_of_settled_leases), (Verdict::Valid, 0), "{r:?}");

        let mut more: Vec<String> = steady_leader(100, 5000).into_iter().skip(1).collect();
        more.extend(read(3700, 3710, "5"));
        let r = run(&history(500, &more));
        assert_eq!((r.verdict, r.bound_ms), (Verdict::Valid, None), "{r:?}");
    }

    #[test]
    fn two_leaderships_each_too_short_prove_nothing() {
        // Node 1 leads term 3 until 2000 ms, node 2 term 4 from 2100 ms:
        // the new leader gives the lease a full TTL from its start.
        let mut more = steady_leader(100, 2000);
        let mut t = 2100;
        while t <= 5500 {
            let value = format!(r#""value":{{"node":2,"term":4,"sent":{}}}"#, (t - 1) * MS);
            more.push(line(r#""nemesis""#, "info", LEADER_SEEN, &value, t));
            t += 100;
        }
        more.extend(read(3700, 3710, "5"));
        assert_eq!(run(&history(500, &more)).verdict, Verdict::Valid);
        more.extend(read(5200, 5210, "5"));
        // 2100 + 3000 = 5100, and node 2 was seen past it.
        assert_eq!(kinds(&run(&history(500, &more))), ["outlived"]);
    }

    #[test]
    fn wrong_values_and_reused_ids_are_caught() {
        assert_eq!(kinds(&run(&history(500, &read(700, 800, "6")))), ["wrong value"]);
        let again = [
            line("4", "invoke", GRANT, r#""value":{"ttl_ms":1000}"#, 40),
            line("4", "ok", GRANT, r#""value":{"ttl_ms":1000},"lease":7"#, 50),
        ];
        assert_eq!(kinds(&run(&history(500, &again))), ["reused id"]);
    }

    #[test]
    fn malformed_lease_operations_are_errors() {
        let check_text = |text: &str| {
            let events = parse_history(text).unwrap();
            check(&pair(&events).unwrap(), &events)
        };
        let no_ttl =
            [line("1", "invoke", GRANT, "", 0), line("1", "ok", GRANT, r#""lease":7"#, 10)].join("\n");
        assert!(matches!(check_text(&no_ttl), Err(LeaseError::Malformed { .. })));
        let no_lease = [line("1", "invoke", KEEPALIVE, "", 0), line("1", "ok", KEEPALIVE, "", 10)].join("\n");
        assert!(matches!(check_text(&no_lease), Err(LeaseError::Malformed { .. })));
        let twice = [
            line("1", "invoke", PUT, r#""key":"k","value":1,"lease":7"#, 0),
            line("1", "ok", PUT, r#""key":"k","value":1,"lease":7"#, 10),
            line("1", "invoke", PUT, r#""key":"k","value":2,"lease":7"#, 20),
        ]
        .join("\n");
        assert!(matches!(check_text(&twice), Err(LeaseError::KeyPutTwice { .. })));
    }
}
