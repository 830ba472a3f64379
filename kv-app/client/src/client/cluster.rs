//! The cluster operations: a node's status, the members, membership changes
//! (add a learner, promote it, remove a node), asking one node to take a
//! snapshot or start an election, and asking the leader to hand leadership
//! to another voter. Status and members are reads; the others carry no
//! session, so the retry loop resends them only when they certainly were not
//! carried out.

use reqwest::Method;
use serde::Serialize;

use super::leader::Target;
use super::retry::{decode, Call, Kind};
use super::{Client, ClientError};
use crate::api::{
    AddLearnerRequest, ChangeResponse, MembersResponse, RollbackDetail, RollbackList, StatusResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};

impl Client {
    /// The status of the node at `endpoint` (one attempt), or, with `None`,
    /// of the first endpoint that answers (each tried once, in order).
    pub async fn status(&self, endpoint: Option<&str>) -> Result<StatusResponse, ClientError> {
        let endpoints = match endpoint {
            Some(e) => vec![self.normalize(e)?],
            None => self.inner.endpoints.clone(),
        };
        let mut failures = Vec::new();
        for endpoint in &endpoints {
            let call = Call {
                method: Method::GET,
                path: "/v1/cluster/status".into(),
                query: Vec::new(),
                body: None,
                accept: &[],
                kind: Kind::Read,
                target: Target::Node(endpoint),
                once: true,
            };
            match self.execute(&call).await {
                Ok(reply) => return decode(&reply),
                Err(e) if endpoints.len() == 1 => return Err(e),
                Err(e) => failures.push(format!("{endpoint}: {e}")),
            }
        }
        Err(ClientError::Unavailable { reason: failures.join("; ") })
    }

    /// The rollback records that the node at `endpoint` keeps (one
    /// attempt; admin): what it removed from its log because a new
    /// leader's log replaced it.
    pub async fn rollback_list(&self, endpoint: &str) -> Result<RollbackList, ClientError> {
        self.read_node(endpoint, "/v1/cluster/rollback".into()).await
    }

    /// Rollback record `id` of the node at `endpoint`, with every write
    /// decoded (one attempt; admin).
    pub async fn rollback_show(&self, endpoint: &str, id: u64) -> Result<RollbackDetail, ClientError> {
        self.read_node(endpoint, format!("/v1/cluster/rollback/{id}")).await
    }

    /// One GET of `path` on the node at `endpoint`, decoded.
    async fn read_node<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        path: String,
    ) -> Result<T, ClientError> {
        let endpoint = self.normalize(endpoint)?;
        let call = Call {
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            accept: &[],
            kind: Kind::Read,
            target: Target::Node(&endpoint),
            once: true,
        };
        decode(&self.execute(&call).await?)
    }

    /// The members of the cluster and the leader, as some node sees them.
    pub async fn members(&self) -> Result<MembersResponse, ClientError> {
        let call = Call {
            method: Method::GET,
            path: "/v1/cluster/members".into(),
            query: Vec::new(),
            body: None,
            accept: &[],
            kind: Kind::Read,
            target: Target::Cluster,
            once: false,
        };
        decode(&self.execute(&call).await?)
    }

    /// Adds node `id` as a learner; returns once it has caught up with the
    /// log (which may take most of the deadline for a large log).
    pub async fn add_learner(
        &self,
        id: u64,
        raft_addr: &str,
        api_addr: &str,
    ) -> Result<ChangeResponse, ClientError> {
        let body = AddLearnerRequest { id, raft_addr: raft_addr.into(), api_addr: api_addr.into() };
        self.change(Method::POST, "/v1/cluster/learners".into(), Some(json(&body)?), Target::Cluster).await
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: u64) -> Result<ChangeResponse, ClientError> {
        self.change(Method::POST, format!("/v1/cluster/members/{id}/promote"), None, Target::Cluster).await
    }

    /// Removes node `id` from the cluster (voter or learner).
    pub async fn remove(&self, id: u64) -> Result<ChangeResponse, ClientError> {
        self.change(Method::DELETE, format!("/v1/cluster/members/{id}"), None, Target::Cluster).await
    }

    /// Asks the node at `endpoint` to take a snapshot now (one attempt).
    pub async fn snapshot(&self, endpoint: &str) -> Result<ChangeResponse, ClientError> {
        let endpoint = self.normalize(endpoint)?;
        self.change(Method::POST, "/v1/cluster/snapshot".into(), None, Target::Node(&endpoint)).await
    }

    /// Asks the node at `endpoint` to start an election now (one attempt).
    pub async fn campaign(&self, endpoint: &str) -> Result<ChangeResponse, ClientError> {
        let endpoint = self.normalize(endpoint)?;
        self.change(Method::POST, "/v1/cluster/campaign".into(), None, Target::Node(&endpoint)).await
    }

    /// Asks the leader to hand leadership to voter `to`, or with `None` to
    /// the voter that answers and holds the most of the log; returns once a
    /// new leader leads (within about an election timeout). Any node passes
    /// the request on to the leader.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<TransferLeaderResponse, ClientError> {
        let call = Call {
            method: Method::POST,
            path: "/v1/cluster/transfer-leader".into(),
            query: Vec::new(),
            body: Some(json(&TransferLeaderRequest { to })?),
            accept: &[],
            kind: Kind::Change,
            target: Target::Cluster,
            once: false,
        };
        decode(&self.execute(&call).await?)
    }

    async fn change(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        target: Target<'_>,
    ) -> Result<ChangeResponse, ClientError> {
        let once = matches!(target, Target::Node(_));
        let call =
            Call { method, path, query: Vec::new(), body, accept: &[], kind: Kind::Change, target, once };
        let reply = self.execute(&call).await?;
        let r: ChangeResponse = decode(&reply)?;
        self.observe(r.index);
        Ok(r)
    }
}

fn json(body: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError::InvalidArgument { reason: format!("cannot encode: {e}") })
}
