//! What load balancers and operators see of a master's life: gRPC health, server reflection,
//! and handing leadership over before a leader stops.
//!
//! # Health (`grpc.health.v1.Health`)
//!
//! - `""` (the whole server) and every public service (`taurus.v1.TaskService`,
//!   `taurus.v1.AgentService`, `taurus.v1.ClusterService`, `taurus.v1.AclService`) are
//!   `SERVING` while the master serves, and `NOT_SERVING` from the moment shutdown begins.
//! - [`LEADER_HEALTH_SERVICE`] (`taurus.v1.Leader`) is `SERVING` only on the master that
//!   currently leads (as its Raft metrics say), `NOT_SERVING` on every other one, and follows
//!   every leadership change. A load balancer that wants to send writes straight to the leader
//!   checks this name; any master accepts (and forwards) writes anyway.
//!
//! Health and reflection need no token: load balancers and `grpcurl` call them without one.
//! With TLS on they are served over the same mutual-TLS port as everything else.
//!
//! # Shutdown of a leader
//!
//! When shutdown begins, health goes `NOT_SERVING` first. Then, if this master leads, it asks
//! the most up-to-date voting peer to take over ([`hand_over_leadership`]) and waits (bounded
//! by [`HANDOVER_TIMEOUT`]) until another master leads, while still serving Raft traffic. The
//! cluster thus gets a new leader in about one round trip, not after an election timeout.
//!
//! # Long-lived streams at shutdown
//!
//! Stopping the gRPC server waits for every open call to end, and some never end by
//! themselves: `Health.Watch` (load balancers), `WatchTask`, `WatchAssignments`, a
//! `SaveSnapshot` being sent. Once the hand-over is done, [`StopStreams::stop`] tells each of
//! them to end ([`Stopping`], on [`Node`]): a `Health.Watch` ends after delivering the
//! `NOT_SERVING` it may still owe, the others end with `UNAVAILABLE` so that callers go to
//! another master. The wait for the server is bounded anyway ([`SERVER_STOP_TIMEOUT`]), so a
//! call that does not end cannot keep Raft from shutting down cleanly.

use std::pin::Pin;

use std::time::Duration;

use futures::Stream;
use futures::StreamExt as _;
use openraft::async_runtime::watch::WatchReceiver;
use taurus_protocol::v1::acl_service_server::AclServiceServer;
use taurus_protocol::v1::agent_service_server::AgentServiceServer;
use taurus_protocol::v1::cluster_service_server::ClusterServiceServer;
use taurus_protocol::v1::task_service_server::TaskServiceServer;
use taurus_store::NodeId;
use taurus_store::Raft;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::HealthCheckResponse;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tonic_health::server::HealthService;

use crate::error::MasterError;
use crate::node::Node;
use crate::service::acl::AclApi;
use crate::service::agent::AgentApi;
use crate::service::cluster::ClusterApi;
use crate::service::task::TaskApi;

/// The health service name that is `SERVING` only on the current leader.
pub const LEADER_HEALTH_SERVICE: &str = "taurus.v1.Leader";

/// How long a stopping leader waits for another master to take over before it stops anyway
/// (the others then elect a leader after their election timeout).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping master waits for its open gRPC calls to end before it stops Raft anyway
/// (see the module docs).
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stream that is told to end waits for its caller to take the final
/// `UNAVAILABLE` before it ends without it.
pub const LAST_WORD_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells long-lived response streams that this master is stopping (see the module docs).
/// Cheap to clone; every clone sees the one [`StopStreams`].
#[derive(Clone, Debug)]
pub struct Stopping {
    rx: tokio::sync::watch::Receiver<bool>,
}

/// The sending side of [`Stopping`], held by the code that stops the master.
#[derive(Debug)]
pub struct StopStreams {
    tx: tokio::sync::watch::Sender<bool>,
}

impl Stopping {
    /// A new signal, not given yet.
    pub fn new() -> (StopStreams, Stopping) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (StopStreams { tx }, Stopping { rx })
    }

    /// Resolves once the signal is given (or its [`StopStreams`] is gone: the master stopped).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// `stream`, ended once the signal is given. An item that is ready by then (such as the
    /// `NOT_SERVING` a health watcher is owed) is still delivered first.
    pub fn until_stopped<S>(&self, stream: S) -> impl Stream<Item = S::Item> + Send + 'static
    where
        S: Stream + Send + Unpin + 'static,
        S::Item: Send,
    {
        futures::stream::unfold((stream, self.clone()), |(mut stream, stopping)| async move {
            tokio::select! {
                biased;
                item = stream.next() => item.map(|item| (item, (stream, stopping))),
                () = stopping.wait() => None,
            }
        })
    }
}

impl StopStreams {
    /// Gives the signal: every stream watching [`Stopping`] ends.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

/// `grpc.health.v1.Health`, answered from `reporter`'s statuses, whose `Watch` streams end
/// when `stopping` is given (a load balancer's watch would otherwise hold the server open).
pub fn health_service(reporter: &HealthReporter, stopping: Stopping) -> HealthServer<StoppableHealth> {
    HealthServer::new(StoppableHealth {
        inner: HealthService::from_health_reporter(reporter.clone()),
        stopping,
    })
}

/// See [`health_service`].
pub struct StoppableHealth {
    inner: HealthService,
    stopping: Stopping,
}

type HealthWatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for StoppableHealth {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(req).await
    }

    type WatchStream = HealthWatchStream;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthWatchStream>, Status> {
        let statuses = self.inner.watch(req).await?.into_inner();
        Ok(Response::new(Box::pin(self.stopping.until_stopped(statuses))))
    }
}

/// The public services whose health follows the server's.
pub const PUBLIC_SERVICES: [&str; 4] = [
    <TaskServiceServer<TaskApi> as NamedService>::NAME,
    <AgentServiceServer<AgentApi> as NamedService>::NAME,
    <ClusterServiceServer<ClusterApi> as NamedService>::NAME,
    <AclServiceServer<AclApi> as NamedService>::NAME,
];

/// Sets `""` and every public service to `status`.
pub async fn set_server_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in PUBLIC_SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps [`LEADER_HEALTH_SERVICE`] in step with this master's Raft metrics until aborted (or
/// Raft stops).
pub fn watch_leadership(raft: Raft, id: NodeId, reporter: HealthReporter) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut last: Option<bool> = None;
        loop {
            let leads = metrics.borrow_watched().current_leader == Some(id);
            if last != Some(leads) {
                let status = if leads {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status(LEADER_HEALTH_SERVICE, status).await;
                last = Some(leads);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Server reflection (v1 and v1alpha) over every public service and the health service. The
/// internal `RaftService` is not advertised.
#[allow(clippy::type_complexity)]
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    MasterError,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(taurus_protocol::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in PUBLIC_SERVICES {
            b = b.with_service_name(name);
        }
        b
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| MasterError::Serve(format!("reflection: {e}")))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| MasterError::Serve(format!("reflection: {e}")))?;
    Ok((v1, v1alpha))
}

/// The voting peer to hand leadership to: the one whose replicated log reaches furthest
/// (ties: the lowest id). `None` when this master does not lead or has no voting peer.
pub fn handover_target(m: &openraft::RaftMetrics<taurus_store::TypeConfig>, me: NodeId) -> Option<NodeId> {
    if m.current_leader != Some(me) {
        return None;
    }
    let replication = m.replication.as_ref()?;
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me)
        .max_by_key(|v| {
            let matched = replication.get(v).cloned().flatten().map(|l| l.index);
            // `max_by_key` keeps the last maximum: negate the id so ties go to the lowest.
            (matched, std::cmp::Reverse(*v))
        })
}

/// If this master leads, asks the most up-to-date voting peer to take over and waits up to
/// `timeout` for another master to lead. Logs what happened; never fails the shutdown.
pub async fn hand_over_leadership(node: &Node, timeout: Duration) {
    let m = node.metrics();
    let Some(to) = handover_target(&m, node.id) else {
        return;
    };
    let term = m.current_term;
    tracing::info!(
        id = node.id,
        to,
        term,
        "shutting down as leader: handing leadership over"
    );
    if let Err(e) = node.raft.trigger().transfer_leader(to).await {
        tracing::warn!(error = %e, "leadership hand-over not started");
        return;
    }
    let me = node.id;
    let waited = node
        .raft
        .wait(Some(timeout))
        .metrics(
            move |m| m.current_leader.is_some_and(|l| l != me),
            "another master leads",
        )
        .await;
    match waited {
        Ok(m) => tracing::info!(
            id = node.id,
            leader = ?m.current_leader,
            term = m.current_term,
            "leadership handed over"
        ),
        Err(e) => tracing::warn!(
            id = node.id,
            to,
            error = %e,
            "no other master took over in time; stopping anyway (an election follows)"
        ),
    }
}
