//! Leases: grant, renew, revoke and list them, put a key that lives as
//! long as a lease, and [`LeaseKeeper`], which renews a lease in the
//! background until it is dropped.
//!
//! Grant, keepalive and revoke are writes with a session like any other,
//! so a retried attempt applies once. They need their applied outcome, so
//! they are never sent at `leader` durability (a client whose default is
//! `leader` sends them at `majority`, as it does a CAS).
//!
//! A lease the cluster does not know (never granted, expired, revoked)
//! is a [`ClientError::Server`] with status 404 and code
//! [`codes::LEASE_NOT_FOUND`]; [`is_lease_not_found`] tells it.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::leader::Target;
use super::retry::{decode, Call, Kind};
use super::{Client, ClientError};
use crate::api::{
    codes, Durability, ErrorBody, LeaseDetailResponse, LeaseGrantRequest, LeaseListResponse, LeaseRequest,
    LeaseResponse, WriteResponse,
};

/// Whether `e` says the lease does not exist (404 `lease_not_found`).
pub fn is_lease_not_found(e: &ClientError) -> bool {
    e.code() == Some(codes::LEASE_NOT_FOUND)
}

impl Client {
    /// Grants a lease of `ttl` (500 ms to a day, rounded down to whole ms)
    /// and returns its id in the answer.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseResponse, ClientError> {
        let session = self.lease();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let body = LeaseGrantRequest { ttl_ms, client_id: Some(session.client_id), seq: Some(session.seq) };
        let call =
            self.write_call(Method::POST, "/v1/leases".into(), &body, self.lease_durability(), &session, &[]);
        self.lease_answer(&self.execute(&call).await?)
    }

    /// Renews lease `id`: its TTL starts again now.
    pub async fn lease_keep_alive(&self, id: u64) -> Result<LeaseResponse, ClientError> {
        self.lease_id_write(Method::POST, format!("/v1/leases/{id}/keepalive")).await
    }

    /// Revokes lease `id` and deletes its keys (`keys_deleted` in the
    /// answer says how many).
    pub async fn lease_revoke(&self, id: u64) -> Result<LeaseResponse, ClientError> {
        self.lease_id_write(Method::DELETE, format!("/v1/leases/{id}")).await
    }

    /// Every lease, with how long the leader gives each (`remaining_ms`).
    /// Served by the leader only (other nodes forward it there).
    pub async fn leases(&self) -> Result<LeaseListResponse, ClientError> {
        let reply = self.execute(&lease_read("/v1/leases".into(), &[])).await?;
        let list: LeaseListResponse = decode(&reply)?;
        self.observe(list.index);
        Ok(list)
    }

    /// Lease `id` with its keys; `Ok(None)` if it does not exist.
    pub async fn lease_info(&self, id: u64) -> Result<Option<LeaseDetailResponse>, ClientError> {
        let reply = self.execute(&lease_read(format!("/v1/leases/{id}"), &[StatusCode::NOT_FOUND])).await?;
        if reply.status == StatusCode::NOT_FOUND {
            let body: ErrorBody = decode(&reply)?;
            if body.error != codes::LEASE_NOT_FOUND {
                return Err(ClientError::Server { status: reply.status.as_u16(), body });
            }
            return Ok(None);
        }
        let detail: LeaseDetailResponse = decode(&reply)?;
        self.observe(detail.index);
        Ok(Some(detail))
    }

    /// Stores `value` under `key`, attached to lease `lease`: the key is
    /// deleted when the lease ends. Exactly once. Refused with 404
    /// `lease_not_found` if the lease does not exist (nothing written).
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: u64,
        durability: impl Into<Option<Durability>>,
    ) -> Result<WriteResponse, ClientError> {
        let durability = durability.into().or(self.lease_durability());
        self.put_in_lease(key, value, Some(lease), durability).await
    }

    /// Renews lease `id` every third of `ttl` in a background task, until
    /// the returned keeper is dropped or the lease is found gone. Needs a
    /// Tokio runtime.
    pub fn keep_lease_alive(&self, id: u64, ttl: Duration) -> LeaseKeeper {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let client = self.clone();
        let every = (ttl / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match client.lease_keep_alive(id).await {
                    Ok(_) => {}
                    Err(e) if is_lease_not_found(&e) => {
                        let _ = tx.send(Some(e.to_string()));
                        return;
                    }
                    // The cluster may be between leaders: the lease is not
                    // lost yet (a new leader gives it a full TTL), so keep
                    // trying on schedule.
                    Err(e) => tracing::debug!(lease = id, error = %e, "lease keepalive failed; trying again"),
                }
            }
        });
        LeaseKeeper { id, lost: rx, task }
    }

    /// The durability of a lease write: the client's default, or `majority`
    /// if that default is `leader`.
    fn lease_durability(&self) -> Option<Durability> {
        match self.inner.options.durability {
            Durability::Leader => Some(Durability::Majority),
            _ => None,
        }
    }

    async fn lease_id_write(&self, method: Method, path: String) -> Result<LeaseResponse, ClientError> {
        let session = self.lease();
        let body = LeaseRequest { client_id: Some(session.client_id), seq: Some(session.seq) };
        let call = self.write_call(method, path, &body, self.lease_durability(), &session, &[]);
        self.lease_answer(&self.execute(&call).await?)
    }

    fn lease_answer(&self, reply: &super::retry::Reply) -> Result<LeaseResponse, ClientError> {
        let r: LeaseResponse = decode(reply)?;
        self.observe(r.index);
        Ok(r)
    }
}

fn lease_read(path: String, accept: &[StatusCode]) -> Call<'_> {
    Call {
        method: Method::GET,
        path,
        query: Vec::new(),
        body: None,
        accept,
        kind: Kind::Read,
        target: Target::Cluster,
        once: false,
    }
}

/// Keeps a lease alive from a background task (see
/// [`Client::keep_lease_alive`]). Dropping it stops the renewals; the
/// lease then expires after its TTL, unless revoked first.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: u64,
    lost: tokio::sync::watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// The lease kept alive.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `Some(why)` once a keepalive found the lease gone (it expired or
    /// was revoked); the keeper has stopped then.
    pub fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Waits until the lease is found gone, and says why. Waits forever
    /// while the renewals succeed.
    pub async fn wait_lost(&mut self) -> String {
        loop {
            if let Some(why) = self.lost.borrow_and_update().clone() {
                return why;
            }
            if self.lost.changed().await.is_err() {
                // The task ended without saying why: it was stopped.
                return "the keeper stopped".into();
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
