//! `kvctl endpoint status` and `kvctl endpoint health`: every endpoint's own
//! view of the cluster, asked at once and shown side by side, as etcd's
//! `etcdctl endpoint status -w table` and `etcdctl endpoint health` show it.
//!
//! `kvctl status` shows what one node says. These ask every endpoint of
//! `--endpoints` concurrently, each within `--timeout`, so that a node that
//! is down, far behind, or following another leader shows up as a row of its
//! own instead of hiding behind the first node that answers.
//!
//! Both read `GET /v1/cluster/status` (so, on a cluster run with
//! `--token-file`, they need a token with the `read` role), and neither
//! changes anything.

use std::time::{Duration, Instant};

use kv_client::api::StatusResponse;
use kv_client::client::Client;
use serde::Serialize;

use crate::cli::refusal_hint;

/// What one endpoint said, or why it said nothing.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The endpoint, as given in `--endpoints`.
    pub endpoint: String,
    /// From sending the request to the answer (or the error).
    pub took: Duration,
    /// The node's status, or the error, as one line.
    pub status: Result<StatusResponse, String>,
}

/// Asks every endpoint for its status at once (one attempt each, no retry:
/// a retry would hide the failure these commands exist to show), each
/// giving up after `timeout`. The answers come in the order of `endpoints`.
pub async fn ask_all(client: &Client, endpoints: &[String], timeout: Duration) -> Vec<Answer> {
    futures::future::join_all(endpoints.iter().map(|endpoint| ask(client, endpoint, timeout))).await
}

async fn ask(client: &Client, endpoint: &str, timeout: Duration) -> Answer {
    let started = Instant::now();
    let status = within(timeout, client.status(Some(endpoint))).await;
    Answer { endpoint: endpoint.to_owned(), took: started.elapsed(), status }
}

/// The answer of `request`, or the error as one line, with a hint for a
/// refusal (no or a wrong token), or "no answer" after `timeout`.
pub async fn within<T>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<T, kv_client::client::ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => {
            let e = anyhow::Error::new(e);
            Err(format!("{e}{}", refusal_hint(&e)))
        }
        Err(_) => Err(format!("no answer within {:.1} s (--timeout)", timeout.as_secs_f64())),
    }
}

/// How many answers are errors.
pub fn failures(answers: &[Answer]) -> usize {
    answers.iter().filter(|a| a.status.is_err()).count()
}

/// One row of `kvctl endpoint status`: what one endpoint said. An endpoint
/// that did not answer has `error` set and every other field but `endpoint`
/// empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// The endpoint, as given in `--endpoints`.
    pub endpoint: String,
    /// The node's id.
    pub id: Option<u64>,
    /// leader, follower, candidate, learner or shutdown.
    pub role: Option<String>,
    /// The node's current term.
    pub term: Option<u64>,
    /// The leader the node knows of (`None` in a row without error: it
    /// knows of none).
    pub leader: Option<u64>,
    /// The last index the node applied.
    pub applied_index: Option<u64>,
    /// The highest index the node knows to be committed.
    pub committed_index: Option<u64>,
    /// The entries of the leader's log this node has not applied yet: the
    /// leader's last log index minus this node's applied index, from the
    /// answers of the same round (see [`status_rows`]). `None` when no
    /// endpoint that answered leads.
    pub lag: Option<u64>,
    /// The size of the node's database file, in bytes.
    pub db_size_bytes: Option<u64>,
    /// The node's kv-server version.
    pub version: Option<String>,
    /// Why the endpoint gave no status.
    pub error: Option<String>,
}

/// The rows of `kvctl endpoint status`, one per answer, in order.
///
/// The lag of each row is measured against the leader's answer: of the
/// nodes that answered as leader, the one of the highest term (an old
/// leader cut off from the others may still think it leads, in an older
/// term). The answers are taken at slightly different moments, so a lag is
/// approximate, and a node that applied entries after the leader answered
/// shows 0, never less.
pub fn status_rows(answers: &[Answer]) -> Vec<StatusRow> {
    let leader = answers
        .iter()
        .filter_map(|a| a.status.as_ref().ok())
        .filter(|s| s.role == "leader")
        .max_by_key(|s| s.term);
    answers
        .iter()
        .map(|a| match &a.status {
            Ok(s) => StatusRow {
                endpoint: a.endpoint.clone(),
                id: Some(s.id),
                role: Some(s.role.clone()),
                term: Some(s.term),
                leader: s.leader,
                applied_index: Some(s.applied_index),
                committed_index: Some(s.committed_index),
                lag: leader.map(|l| l.last_log_index.saturating_sub(s.applied_index)),
                db_size_bytes: s.db_size_bytes,
                version: s.version.clone(),
                error: None,
            },
            Err(e) => {
                StatusRow { endpoint: a.endpoint.clone(), error: Some(e.clone()), ..StatusRow::default() }
            }
        })
        .collect()
}

/// The rows as a table for a terminal: a header, then one line per row,
/// columns aligned. Empty cells stay empty; a node that answered but knows
/// no leader shows `none` as its leader.
pub fn status_table(rows: &[StatusRow]) -> String {
    let header = [
        "ENDPOINT",
        "ID",
        "ROLE",
        "TERM",
        "LEADER",
        "APPLIED",
        "COMMITTED",
        "LAG",
        "DB SIZE",
        "VERSION",
        "ERROR",
    ];
    let number = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut lines = vec![header.map(str::to_owned).to_vec()];
    for row in rows {
        let leader = match (&row.error, row.leader) {
            (Some(_), _) => String::new(),
            (None, None) => "none".to_owned(),
            (None, Some(l)) => l.to_string(),
        };
        lines.push(vec![
            row.endpoint.clone(),
            number(row.id),
            row.role.clone().unwrap_or_default(),
            number(row.term),
            leader,
            number(row.applied_index),
            number(row.committed_index),
            number(row.lag),
            row.db_size_bytes.map(human_bytes).unwrap_or_default(),
            row.version.clone().unwrap_or_default(),
            row.error.clone().unwrap_or_default(),
        ]);
    }
    align(&lines)
}

/// Cells padded to their column's widest, two spaces apart; trailing
/// spaces trimmed.
fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// A byte count for humans, in powers of 1024: `512 B`, `1.5 KiB`,
/// `64.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision is not the point here: the f64 rounding of a file size is
    // far below the one decimal shown.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The verdict of `kvctl endpoint health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// Every endpoint answered, each knows a leader, and all name the same.
    pub healthy: bool,
    /// The leader they all name, when healthy.
    pub leader: Option<u64>,
    /// Why the cluster is or is not healthy, in one line.
    pub summary: String,
    /// How many endpoints did not answer.
    pub unreachable: usize,
    /// One entry per endpoint, in the order of `--endpoints`.
    pub endpoints: Vec<EndpointHealth>,
}

/// One endpoint's part of [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointHealth {
    /// The endpoint, as given in `--endpoints`.
    pub endpoint: String,
    /// It answered, and knows a leader.
    pub healthy: bool,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// How long it took to answer (or to fail), in milliseconds.
    pub took_ms: f64,
    /// Why it is not healthy: its error, or "no leader known".
    pub error: Option<String>,
}

impl EndpointHealth {
    /// `127.0.0.1:8080 is healthy: leader 2, took 3.1 ms`, or what is wrong.
    pub fn line(&self) -> String {
        match (&self.error, self.leader) {
            (None, Some(leader)) => {
                format!("{} is healthy: leader {leader}, took {:.1} ms", self.endpoint, self.took_ms)
            }
            (error, _) => format!(
                "{} is unhealthy: {}, took {:.1} ms",
                self.endpoint,
                error.as_deref().unwrap_or("no leader known"),
                self.took_ms
            ),
        }
    }
}

/// Judges the answers: healthy when every endpoint answered and all name
/// one leader.
pub fn health(answers: &[Answer]) -> HealthReport {
    let endpoints: Vec<EndpointHealth> = answers
        .iter()
        .map(|a| {
            let took_ms = (a.took.as_secs_f64() * 1e6).round() / 1e3;
            let (leader, error) = match &a.status {
                Ok(s) => (s.leader, s.leader.is_none().then(|| "no leader known".to_owned())),
                Err(e) => (None, Some(e.clone())),
            };
            EndpointHealth { endpoint: a.endpoint.clone(), healthy: error.is_none(), leader, took_ms, error }
        })
        .collect();
    let total = endpoints.len();
    let unreachable = failures(answers);
    let leaderless = endpoints.iter().filter(|e| !e.healthy).count() - unreachable;
    let mut named: Vec<(u64, Vec<&str>)> = Vec::new();
    for e in &endpoints {
        if let Some(leader) = e.leader {
            match named.iter_mut().find(|(l, _)| *l == leader) {
                Some((_, by)) => by.push(&e.endpoint),
                None => named.push((leader, vec![&e.endpoint])),
            }
        }
    }
    let (healthy, leader, summary) = match named.as_slice() {
        _ if unreachable > 0 => {
            (false, None, format!("unhealthy: {unreachable} of {total} endpoints did not answer"))
        }
        _ if leaderless > 0 => {
            (false, None, format!("unhealthy: {leaderless} of {total} endpoints know no leader"))
        }
        [(leader, _)] if total == 1 => {
            (true, Some(*leader), format!("healthy: the endpoint names leader {leader}"))
        }
        [(leader, _)] => {
            (true, Some(*leader), format!("healthy: all {total} endpoints name leader {leader}"))
        }
        several => {
            let who: Vec<String> =
                several.iter().map(|(l, by)| format!("{l} (by {})", by.join(", "))).collect();
            (false, None, format!("unhealthy: the endpoints name different leaders: {}", who.join("; ")))
        }
    };
    HealthReport { healthy, leader, summary, unreachable, endpoints }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        id: u64,
        role: &str,
        term: u64,
        leader: Option<u64>,
        last: u64,
        applied: u64,
    ) -> StatusResponse {
        StatusResponse {
            id,
            role: role.into(),
            term,
            leader,
            last_log_index: last,
            committed_index: applied,
            applied_index: applied,
            checkpointed_index: 0,
            snapshot_index: None,
            purged_index: None,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
            followers: Vec::new(),
            state_digest: String::new(),
            version: Some("0.1.0".into()),
            db_size_bytes: Some(1536),
        }
    }

    fn answer(endpoint: &str, status: Result<StatusResponse, &str>) -> Answer {
        Answer {
            endpoint: endpoint.into(),
            took: Duration::from_micros(3100),
            status: status.map_err(str::to_owned),
        }
    }

    #[test]
    fn status_table_aligns_columns_and_leaves_an_unreachable_row_blank() {
        let answers = [
            answer("127.0.0.1:8080", Ok(status(1, "leader", 3, Some(1), 120, 118))),
            answer("127.0.0.1:8081", Ok(status(2, "follower", 3, Some(1), 119, 100))),
            answer("127.0.0.1:8082", Err("unavailable: connection refused")),
        ];
        let table = status_table(&status_rows(&answers));
        let expected = "\
ENDPOINT        ID  ROLE      TERM  LEADER  APPLIED  COMMITTED  LAG  DB SIZE  VERSION  ERROR
127.0.0.1:8080  1   leader    3     1       118      118        2    1.5 KiB  0.1.0
127.0.0.1:8081  2   follower  3     1       100      100        20   1.5 KiB  0.1.0
127.0.0.1:8082                                                                         unavailable: connection refused
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn lag_is_measured_against_the_leader_of_the_highest_term() {
        let answers = [
            // A deposed leader that has not heard of term 5 yet.
            answer("a", Ok(status(1, "leader", 4, Some(1), 50, 50))),
            answer("b", Ok(status(2, "leader", 5, Some(2), 80, 79))),
            answer("c", Ok(status(3, "follower", 5, None, 80, 90))),
        ];
        let lags: Vec<Option<u64>> = status_rows(&answers).iter().map(|r| r.lag).collect();
        assert_eq!(lags, [Some(30), Some(1), Some(0)]);
        let table = status_table(&status_rows(&answers));
        assert!(table.lines().nth(3).unwrap().contains(" none "), "a node without leader says so:\n{table}");
        // With no leader among the answers there is nothing to measure against.
        let rows = status_rows(&answers[2..]);
        assert_eq!(rows[0].lag, None);
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(3 << 30 | 1 << 29), "3.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn health_needs_every_endpoint_to_answer_and_one_leader() {
        let ok = |e: &str, leader| answer(e, Ok(status(1, "follower", 2, leader, 9, 9)));
        let report = health(&[ok("a", Some(2)), ok("b", Some(2))]);
        assert_eq!((report.healthy, report.leader), (true, Some(2)));
        assert_eq!(report.endpoints[0].line(), "a is healthy: leader 2, took 3.1 ms");
        assert_eq!(health(&[ok("a", Some(2))]).summary, "healthy: the endpoint names leader 2");

        let report = health(&[ok("a", Some(2)), ok("b", Some(3))]);
        assert_eq!((report.healthy, report.unreachable), (false, 0));
        assert_eq!(report.summary, "unhealthy: the endpoints name different leaders: 2 (by a); 3 (by b)");

        let report = health(&[ok("a", Some(2)), ok("b", None)]);
        assert_eq!((report.healthy, report.unreachable), (false, 0), "{}", report.summary);
        assert_eq!(report.endpoints[1].line(), "b is unhealthy: no leader known, took 3.1 ms");

        let report = health(&[ok("a", Some(2)), answer("b", Err("refused"))]);
        assert_eq!((report.healthy, report.unreachable), (false, 1));
        assert_eq!(report.summary, "unhealthy: 1 of 2 endpoints did not answer");
        assert_eq!(report.endpoints[1].line(), "b is unhealthy: refused, took 3.1 ms");
    }
}
