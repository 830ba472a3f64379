//! `kvctl rollback list` and `kvctl rollback show`: the writes that nodes
//! removed from their logs because a new leader's log replaced them.
//!
//! Each node keeps its own records, so `list` asks every endpoint at once.
//! A write marked acknowledged was answered at `leader` durability and is
//! lost unless an operator writes it again; the others were never
//! acknowledged to anyone (their clients saw an error or a timeout, and
//! retry under the same session if they still can).

use std::process::ExitCode;
use std::time::Duration;

use kv_client::api::{JsonValue, RollbackDetail, RollbackList};
use kv_client::client::Client;

use crate::cli::{print_json, EXIT_ERROR};
use crate::endpoint::within;
use crate::snapshot::utc;

/// Asks every endpoint for its records and prints one line per record (or,
/// with `json`, an array of every node's list). Exits 2 if any endpoint
/// did not answer.
pub async fn list(
    client: &Client,
    endpoints: &[String],
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let answers = futures::future::join_all(endpoints.iter().map(|e| ask(client, e, timeout))).await;
    let lists: Vec<&RollbackList> = answers.iter().filter_map(|(_, a)| a.as_ref().ok()).collect();
    if json {
        print_json(&lists)?;
    } else {
        print!("{}", table(&lists));
    }
    let mut failed = 0;
    for (endpoint, answer) in &answers {
        if let Err(e) = answer {
            eprintln!("kvctl: rollback list: {endpoint}: {e}");
            failed += 1;
        }
    }
    Ok(if failed > 0 { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS })
}

async fn ask(client: &Client, endpoint: &str, timeout: Duration) -> (String, Result<RollbackList, String>) {
    (endpoint.to_owned(), within(timeout, client.rollback_list(endpoint)).await)
}

/// The records of every node, one line each.
pub fn table(lists: &[&RollbackList]) -> String {
    let mut out = format!(
        "{:<5} {:<4} {:<24} {:>5} {:>15} {:>7} {:>7} {:>6}  {}\n",
        "NODE", "ID", "AT (UTC)", "TERM", "INDEXES", "ENTRIES", "WRITES", "ACKED", "HOW"
    );
    let mut any = false;
    for list in lists {
        for r in &list.records {
            any = true;
            out.push_str(&format!(
                "{:<5} {:<4} {:<24} {:>5} {:>15} {:>7} {:>7} {:>6}  {}\n",
                list.node,
                r.id,
                utc(r.at_unix_ms),
                r.term,
                format!("{}-{}", r.first_index, r.last_index),
                r.entries,
                r.writes,
                r.acknowledged_writes,
                r.snapshot_through.map_or("truncated".to_string(), |i| format!("snapshot through {i}"))
            ));
        }
    }
    if !any {
        out.push_str("(no node has removed anything from its log)\n");
    }
    out
}

/// One record, a line per write.
pub fn describe(r: &RollbackDetail) -> String {
    let n = r.entries.len();
    let mut out = format!(
        "node {} record {}: removed at {} in term {}, {n} {}\n",
        r.node,
        r.id,
        utc(r.at_unix_ms),
        r.term,
        if n == 1 { "entry" } else { "entries" }
    );
    if let Some(i) = r.snapshot_through {
        out.push_str(&format!(
            "  purged when the node installed a snapshot through index {i}: these writes may be in it \
             (check before writing them again) or lost\n"
        ));
    }
    for e in &r.entries {
        let acked = if e.acknowledged { ", ACKNOWLEDGED at leader durability" } else { "" };
        out.push_str(&format!("  index {} term {}: {}{acked}\n", e.index, e.term, e.kind));
        for w in &e.writes {
            let session = match (w.client_id, w.seq) {
                (Some(c), Some(s)) => format!(" (client {c} seq {s})"),
                _ => String::new(),
            };
            let line = match w.op.as_str() {
                "put" => format!("put {:?} = {}", w.key, value(w.value.as_ref())),
                "delete" => format!("delete {:?}", w.key),
                "cas" => format!(
                    "cas {:?}: {} -> {}",
                    w.key,
                    w.expected.as_ref().map_or("(absent)".into(), |v| value(Some(v))),
                    value(w.value.as_ref())
                ),
                other => format!("{other}: {}", w.error.as_deref().unwrap_or("")),
            };
            out.push_str(&format!("    {line}{session}\n"));
        }
    }
    out
}

fn value(v: Option<&JsonValue>) -> String {
    match v {
        Some(JsonValue { value: Some(s), .. }) => format!("{s:?}"),
        Some(JsonValue { value_b64: Some(b), .. }) => format!("base64:{b}"),
        _ => "(none)".into(),
    }
}
