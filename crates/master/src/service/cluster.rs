//! `taurus.v1.ClusterService`: status, membership changes, leadership transfer.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::BasicNode;
use openraft::ChangeMembers;
use taurus_protocol::v1;
use taurus_protocol::v1::cluster_service_client::ClusterServiceClient;
use taurus_protocol::v1::cluster_service_server::ClusterService;
use taurus_store::NodeId;
use taurus_store::network::node_info;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::Attempt;
use super::forward_request;
use super::is_forwarded;
use super::on_leader;
use super::write_status;
use crate::node::Node;
use crate::node::query_peer;
use crate::write::WriteError;
use crate::write::classify_write_error;

/// How long a leadership transfer may take before we report it as not done.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new master may take to catch up as a learner before it is promoted.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a membership operation did not finish on this master.
enum Local {
    /// Raft refused before appending: another master leads (or will); `on_leader` re-routes.
    NotLeader,
    Failed(Status),
}

impl From<Status> for Local {
    fn from(s: Status) -> Self {
        Local::Failed(s)
    }
}

type LocalResult = Result<Response<v1::ClusterStatus>, Local>;

fn raft_error(
    e: openraft::error::RaftError<
        taurus_store::TypeConfig,
        openraft::error::ClientWriteError<taurus_store::TypeConfig>,
    >,
) -> Local {
    match classify_write_error(e) {
        WriteError::NotLeader { .. } => Local::NotLeader,
        other => Local::Failed(write_status(other)),
    }
}

impl From<LocalResult> for Attempt<Response<v1::ClusterStatus>> {
    fn from(r: LocalResult) -> Self {
        match r {
            Ok(resp) => Attempt::Done(Ok(resp)),
            Err(Local::NotLeader) => Attempt::NotLeader,
            Err(Local::Failed(s)) => Attempt::Done(Err(s)),
        }
    }
}

pub struct ClusterApi {
    node: Node,
}

impl ClusterApi {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    /// Proposes a membership change and answers with the resulting cluster status.
    async fn change_membership(&self, change: ChangeMembers<NodeId, BasicNode>) -> LocalResult {
        self.node
            .raft
            .change_membership(change, false)
            .await
            .map_err(raft_error)?;
        Ok(Response::new(self.status().await))
    }

    async fn add_local(&self, msg: &v1::AddMasterRequest) -> LocalResult {
        let m = self.node.metrics();
        if m.membership_config.membership().voter_ids().any(|v| v == msg.id) {
            return Err(Status::already_exists(format!("id: master {} is already a voter", msg.id)).into());
        }
        tracing::info!(id = msg.id, addr = %msg.addr, "adding master as learner");
        let add = self.node.raft.add_learner(
            msg.id,
            BasicNode {
                addr: msg.addr.clone(),
            },
            true,
        );
        match tokio::time::timeout(CATCH_UP_TIMEOUT, add).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "master {} did not catch up within {CATCH_UP_TIMEOUT:?}; it stays a learner",
                    msg.id
                ))
                .into());
            }
            Ok(Err(e)) => return Err(raft_error(e)),
            Ok(Ok(_)) => {}
        }
        tracing::info!(id = msg.id, "promoting master to voter");
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([msg.id])))
            .await
    }

    async fn remove_local(&self, msg: &v1::RemoveMasterRequest) -> LocalResult {
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_learner = membership.learner_ids().any(|l| l == msg.id);
        if !voters.contains(&msg.id) && !is_learner {
            return Err(Status::not_found(format!("id: master {} is not a member", msg.id)).into());
        }
        if voters.len() == 1 && voters.contains(&msg.id) {
            return Err(Status::failed_precondition("id: cannot remove the last voting master").into());
        }
        let change = if voters.contains(&msg.id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([msg.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([msg.id]))
        };
        tracing::info!(id = msg.id, "removing master");
        self.change_membership(change).await
    }

    async fn transfer_local(&self, msg: &v1::TransferLeaderRequest) -> LocalResult {
        let m = self.node.metrics();
        if !m.membership_config.membership().voter_ids().any(|v| v == msg.to) {
            return Err(
                Status::invalid_argument(format!("to: master {} is not a voting member", msg.to)).into(),
            );
        }
        if msg.to != self.node.id {
            self.node
                .raft
                .trigger()
                .transfer_leader(msg.to)
                .await
                .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
            self.node
                .raft
                .wait(Some(TRANSFER_TIMEOUT))
                .current_leader(msg.to, "leadership transfer")
                .await
                .map_err(|e| {
                    Status::deadline_exceeded(format!("transfer to {} not confirmed: {e}", msg.to))
                })?;
        }
        Ok(Response::new(self.status().await))
    }

    async fn status(&self) -> v1::ClusterStatus {
        cluster_status(&self.node).await
    }
}

/// The cluster as seen from `node`, each member asked for its own indexes (also the monitor's
/// samples and the status page).
pub async fn cluster_status(node: &Node) -> v1::ClusterStatus {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let nodes: Vec<(NodeId, String)> = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
    let queries = nodes.iter().map(|(id, addr)| {
        let node = node.clone();
        let (id, addr) = (*id, addr.clone());
        async move {
            if id == node.id {
                let m = node.metrics();
                return (id, addr, Ok(node_info(node.id, &m)));
            }
            match query_peer(&node.channels, id, &addr).await {
                Some(info) => (id, addr, Ok(info)),
                None => (id, addr, Err("did not answer within 500ms".to_string())),
            }
        }
    });
    let answers = futures::future::join_all(queries).await;
    let members = answers
        .into_iter()
        .map(|(id, addr, info)| match info {
            Ok(i) => v1::Member {
                id,
                addr,
                role: i.role,
                voter: voters.contains(&id),
                term: i.term,
                last_log_index: i.last_log_index,
                commit_index: i.commit_index,
                applied_index: i.applied_index,
                reachable: true,
                error: String::new(),
                snapshot_index: i.snapshot_index,
                purged_index: i.purged_index,
            },
            Err(error) => v1::Member {
                id,
                addr,
                role: "unreachable".into(),
                voter: voters.contains(&id),
                reachable: false,
                error,
                ..Default::default()
            },
        })
        .collect();
    v1::ClusterStatus {
        leader: m.current_leader.unwrap_or(0),
        term: m.current_term,
        members,
        served_by: node.id,
    }
}

/// Checks a `host:port` address, naming the field.
fn check_addr(addr: &str) -> Result<(), Status> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "addr: expected HOST:PORT, got {addr:?}"
        ))),
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    type SaveSnapshotStream = super::backup::SnapshotStream;

    async fn save_snapshot(
        &self,
        req: Request<v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        super::backup::save_snapshot(&self.node, req).await
    }

    async fn get_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        super::authorize(&self.node, &req, taurus_core::acl::Role::Read, "GetStatus").await?;
        Ok(Response::new(self.status().await))
    }

    async fn add_master(
        &self,
        req: Request<v1::AddMasterRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let caller = super::authorize(&self.node, &req, taurus_core::acl::Role::Admin, "AddMaster").await?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        if msg.id == 0 {
            return Err(Status::invalid_argument("id: must be at least 1"));
        }
        check_addr(&msg.addr)?;
        let msg = &msg;
        let forward = |ch| async move {
            ClusterServiceClient::new(ch)
                .add_master(forward_request(&self.node, caller, msg.clone()))
                .await
        };
        on_leader(
            &self.node,
            forwarded,
            || async { self.add_local(msg).await.into() },
            forward,
        )
        .await
    }

    async fn remove_master(
        &self,
        req: Request<v1::RemoveMasterRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let caller =
            super::authorize(&self.node, &req, taurus_core::acl::Role::Admin, "RemoveMaster").await?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        let msg = &msg;
        let forward = |ch| async move {
            ClusterServiceClient::new(ch)
                .remove_master(forward_request(&self.node, caller, *msg))
                .await
        };
        on_leader(
            &self.node,
            forwarded,
            || async { self.remove_local(msg).await.into() },
            forward,
        )
        .await
    }

    /// The leader's report (forwarded there once); this master's own when asked for `local`,
    /// or when no leader answers, so anomalies such as `no_leader` can still be seen.
    async fn get_monitoring(
        &self,
        req: Request<v1::MonitoringRequest>,
    ) -> Result<Response<v1::MonitoringReport>, Status> {
        let caller =
            super::authorize(&self.node, &req, taurus_core::acl::Role::Read, "GetMonitoring").await?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        let local = || async {
            crate::monitor::wire_report(&self.node)
                .await
                .map(Response::new)
                .map_err(|e| Status::internal(e.to_string()))
        };
        if msg.local {
            return local().await;
        }
        let forward = |ch| async move {
            ClusterServiceClient::new(ch)
                .get_monitoring(forward_request(&self.node, caller, msg))
                .await
        };
        let led = on_leader(
            &self.node,
            forwarded,
            || async { Attempt::Done(local().await) },
            forward,
        )
        .await;
        match led {
            Err(s) if s.code() == tonic::Code::Unavailable => local().await,
            other => other,
        }
    }

    async fn transfer_leader(
        &self,
        req: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let caller = super::authorize(
            &self.node,
            &req,
            taurus_core::acl::Role::Operator,
            "TransferLeader",
        )
        .await?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        let msg = &msg;
        let forward = |ch| async move {
            ClusterServiceClient::new(ch)
                .transfer_leader(forward_request(&self.node, caller, *msg))
                .await
        };
        on_leader(
            &self.node,
            forwarded,
            || async { self.transfer_local(msg).await.into() },
            forward,
        )
        .await
    }
}
