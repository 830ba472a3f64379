//! `kvctl lease grant|keepalive|revoke|list|show`: leases, whose keys
//! (`kvctl put --lease ID`) are deleted when the lease expires or is
//! revoked.
//!
//! `keepalive` renews a lease every third of its TTL until it is stopped
//! (Ctrl-C) or the lease is found gone, like `etcdctl lease keep-alive`;
//! `--once` renews it once. `list` and `show` print what the leader sees:
//! how long it will wait before it expires each lease if nobody renews it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use kv_client::api::{LeaseDetailResponse, LeaseInfo, LeaseResponse};
use kv_client::client::{is_lease_not_found, Client};

use crate::cli::{parse_seconds, print_json, EXIT_NO};

/// `kvctl lease ...`.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (0.5 to 86400) and print its id.
    Grant {
        /// Time to live without a renewal, in seconds.
        #[arg(value_parser = parse_seconds)]
        ttl: f64,
    },
    /// Renew lease ID every third of its TTL until stopped (--once: once).
    /// Exits 1 when the lease is found gone.
    Keepalive {
        /// The lease.
        id: u64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Revoke lease ID now, deleting its keys.
    Revoke {
        /// The lease.
        id: u64,
    },
    /// Every lease: id, TTL, time left as the leader sees it, key count.
    List,
    /// One lease and its keys (exit 1 if it does not exist).
    Show {
        /// The lease.
        id: u64,
    },
}

impl LeaseCommand {
    /// Whether the command asks the cluster to change something.
    pub fn changes_state(&self) -> bool {
        match self {
            LeaseCommand::Grant { .. } | LeaseCommand::Keepalive { .. } | LeaseCommand::Revoke { .. } => true,
            LeaseCommand::List | LeaseCommand::Show { .. } => false,
        }
    }
}

/// Runs one lease command.
pub async fn run(command: LeaseCommand, client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        LeaseCommand::Grant { ttl } => {
            let r = client.lease_grant(Duration::from_secs_f64(ttl)).await.context("lease grant")?;
            if json {
                print_json(&r)?;
            } else {
                println!("lease {} granted with TTL {}{}", r.id, seconds(r.ttl_ms.unwrap_or(0)), notes(&r));
            }
        }
        LeaseCommand::Keepalive { id, once } => return keep_alive(client, id, once, json).await,
        LeaseCommand::Revoke { id } => match client.lease_revoke(id).await {
            Ok(r) if json => print_json(&r)?,
            Ok(r) => {
                println!("lease {id} revoked, {} keys deleted{}", r.keys_deleted.unwrap_or(0), notes(&r))
            }
            Err(e) if is_lease_not_found(&e) => return gone(id, &e),
            Err(e) => return Err(e).with_context(|| format!("lease revoke {id}")),
        },
        LeaseCommand::List => {
            let list = client.leases().await.context("lease list")?;
            if json {
                print_json(&list)?;
            } else {
                print!("{}", table(&list.leases));
            }
        }
        LeaseCommand::Show { id } => {
            match client.lease_info(id).await.with_context(|| format!("lease show {id}"))? {
                Some(detail) if json => print_json(&detail)?,
                Some(detail) => print!("{}", describe(&detail)),
                None => {
                    eprintln!("kvctl: lease {id} not found");
                    return Ok(ExitCode::from(EXIT_NO));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Renews until stopped or the lease is gone (exit 1), or once.
async fn keep_alive(client: &Client, id: u64, once: bool, json: bool) -> anyhow::Result<ExitCode> {
    loop {
        let r = match client.lease_keep_alive(id).await {
            Ok(r) => r,
            Err(e) if is_lease_not_found(&e) => return gone(id, &e),
            Err(e) => return Err(e).with_context(|| format!("lease keepalive {id}")),
        };
        let ttl_ms = r.ttl_ms.unwrap_or(0);
        if json {
            print_json(&r)?;
        } else {
            println!("lease {id} renewed, TTL {}{}", seconds(ttl_ms), notes(&r));
        }
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(ttl_ms / 3)).await;
    }
}

fn gone(id: u64, e: &kv_client::client::ClientError) -> anyhow::Result<ExitCode> {
    eprintln!("kvctl: lease {id} not found (it expired, was revoked, or never existed): {e}");
    Ok(ExitCode::from(EXIT_NO))
}

fn notes(r: &LeaseResponse) -> String {
    let retry = if r.duplicate { ", applied by an earlier attempt" } else { "" };
    format!(" (index {}, node {}{retry})", r.index, r.node)
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `ID  TTL  REMAINING  KEYS`, one line per lease.
pub fn table(leases: &[LeaseInfo]) -> String {
    let mut out = format!("{:<8} {:>10} {:>10} {:>6}\n", "ID", "TTL", "REMAINING", "KEYS");
    for l in leases {
        out.push_str(&format!(
            "{:<8} {:>10} {:>10} {:>6}\n",
            l.id,
            seconds(l.ttl_ms),
            seconds(l.remaining_ms),
            l.key_count
        ));
    }
    out
}

/// One lease and its keys, as `kvctl lease show` prints it.
pub fn describe(d: &LeaseDetailResponse) -> String {
    let l = &d.lease;
    let mut out = format!(
        "lease {}: TTL {}, {} left (as node {} judges it), renewed {} times, {} keys\n",
        l.id,
        seconds(l.ttl_ms),
        seconds(l.remaining_ms),
        d.node,
        l.renewals,
        l.key_count
    );
    for key in &d.keys {
        out.push_str(&format!("  {key}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_lease_with_seconds() {
        let info = LeaseInfo {
            id: 7,
            ttl_ms: 10_000,
            remaining_ms: 2_500,
            renewed_at_ms: 1,
            renewals: 3,
            key_count: 2,
        };
        let t = table(std::slice::from_ref(&info));
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(
            t.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("7 ") && l.contains("10.0 s") && l.contains("2.5 s")),
            "{t}"
        );
        let d = LeaseDetailResponse { lease: info, keys: vec!["a".into(), "b/c".into()], index: 9, node: 1 };
        let text = describe(&d);
        assert!(text.starts_with("lease 7: TTL 10.0 s, 2.5 s left"), "{text}");
        assert!(text.contains("\n  a\n  b/c\n"), "{text}");
    }
}
