//! Starting and stopping a master, and the context every service shares.
//!
//! Start-up is a recipe: validate config → open the sled store → build the openraft node →
//! bind and serve every gRPC service on one port → form the cluster if this is its very first
//! start → wait for shutdown → stop serving, shut Raft down, flush.
//!
//! **Cluster formation happens once.** Only the master with the lowest id in `peers` may call
//! `initialize`, only while its own log is empty, and only when none of its reachable peers
//! reports an initialised state. A restarted master finds its log on disk and never initialises;
//! a master added later is not the lowest id and waits to be added as a learner.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::ReadPolicy;
use openraft::SnapshotPolicy;
use openraft::async_runtime::watch::WatchReceiver;
use taurus_protocol::internal;
use taurus_protocol::internal::raft_service_client::RaftServiceClient;
use taurus_protocol::internal::raft_service_server::RaftServiceServer;
use taurus_protocol::v1::acl_service_server::AclServiceServer;
use taurus_protocol::v1::agent_service_server::AgentServiceServer;
use taurus_protocol::v1::cluster_service_server::ClusterServiceServer;
use taurus_protocol::v1::task_service_server::TaskServiceServer;
use taurus_store::NodeId;
use taurus_store::Raft;
use taurus_store::StateMachineStore;
use taurus_store::network::Channels;
use taurus_store::network::MAX_MESSAGE_BYTES;
use taurus_store::network::NetworkFactory;
use taurus_store::network::RaftServer;
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::batcher::Batcher;
use crate::batcher::ReportBatcher;
use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::leader::LeaderDuties;
use crate::service::acl::AclApi;
use crate::service::agent::AgentApi;
use crate::service::cluster::ClusterApi;
use crate::service::task::TaskApi;

/// How long a follower waits to apply up to a leader's read index before giving up.
const READ_APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one peer query (formation check, status) may take.
const PEER_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// **Bug injection, never for production.** When set to exactly `1`, every read that asks for
/// linearizable consistency is answered from this master's local applied state, without a read
/// index and without checking leadership, on any master (see [`Node::read_barrier`]). It exists
/// so the failure-injection suite can prove that its linearizability and terminal-state checkers
/// catch stale reads (an isolated old leader keeps answering).
pub const UNSAFE_STALE_READS_ENV: &str = "TAURUS_UNSAFE_STALE_READS";

/// Whether a value of [`UNSAFE_STALE_READS_ENV`] (or [`UNSAFE_ACK_BEFORE_COMMIT_ENV`]) turns
/// the bug on: only exactly `"1"` does.
pub fn unsafe_switch_on(value: Option<&str>) -> bool {
    value == Some("1")
}

/// Bug injection, never to be set outside the failure-injection suite: with `1`, a master
/// answers `SubmitTasks` as soon as it has handed the request on (to its own Raft log or to the
/// leader), before anything is committed, as a broken "fast path" would. Submits then get lost
/// whenever the write does not commit (the receiver is not the leader, is partitioned, or dies),
/// which the suite's `lost` checker must report.
pub const UNSAFE_ACK_BEFORE_COMMIT_ENV: &str = "TAURUS_UNSAFE_ACK_BEFORE_COMMIT";

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub batcher: Batcher,
    /// Coalesces agents' started/finished reports.
    pub reports: ReportBatcher,
    /// Leader-only observations (liveness, load, start latency); empty on followers.
    pub duties: LeaderDuties,
    /// The agents' lease, told to them in heartbeat answers.
    pub lease_timeout: Duration,
    pub channels: Channels,
    /// `limits.max_queued_tasks` as put into each submit request (`None`: unbounded).
    pub queue_limit: Option<u64>,
    /// `limits.finished_retention` and `limits.max_finished_tasks` (leader duty: purge).
    pub finished_retention: Duration,
    pub max_finished_tasks: u64,
    /// Principals, roles and per-token rate limits (`[auth]`).
    pub auth: Arc<crate::auth::Authenticator>,
    /// Bug injection ([`UNSAFE_STALE_READS_ENV`]): linearizable reads skip the read barrier.
    pub unsafe_stale_reads: bool,
    /// Bug injection ([`UNSAFE_ACK_BEFORE_COMMIT_ENV`]): submits are answered before commit.
    pub unsafe_ack_before_commit: bool,
    /// Prometheus counters and histograms (`/metrics` on the HTTP port).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Monitoring history and thresholds (`crate::monitor`).
    pub monitor: crate::monitor::Monitor,
    /// Given when this master stops: long-lived response streams end (`crate::lifecycle`).
    pub stopping: crate::lifecycle::Stopping,
}

/// Where a write should be handled.
#[derive(Clone, Debug)]
pub enum Route {
    /// This node believes it leads: propose here (Raft still confirms it).
    Local,
    /// Another node leads: forward there.
    Forward(LeaderInfo),
    /// No leader is known (an election is under way).
    NoLeader,
}

/// The leader as this node currently sees it.
#[derive(Clone, Debug)]
pub struct LeaderInfo {
    pub id: NodeId,
    pub addr: String,
}

impl Node {
    /// A clone of the current Raft metrics (never hold the watch borrow across an await).
    pub fn metrics(&self) -> openraft::RaftMetrics<taurus_store::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Where a write arriving here should go, decided from one metrics snapshot.
    pub fn route(&self) -> Route {
        let m = self.metrics();
        match m.current_leader {
            Some(id) if id == self.id => Route::Local,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(n) => Route::Forward(LeaderInfo {
                    id,
                    addr: n.addr.clone(),
                }),
                None => Route::NoLeader,
            },
            None => Route::NoLeader,
        }
    }

    /// Makes a linearizable read possible: confirms the read index with the leader (itself or
    /// remote) and waits until the local state machine has applied it. Returns the applied index.
    /// With the bug injection [`UNSAFE_STALE_READS_ENV`] on, returns the local applied index at
    /// once instead.
    pub async fn read_barrier(&self) -> Result<u64, ReadError> {
        if self.unsafe_stale_reads {
            // UNSAFE bug injection: no read index, no leadership check; the answer may be stale.
            return Ok(self.sm.applied_index());
        }
        // One metrics snapshot decides, as for writes (`route`).
        let read_index = match self.route() {
            Route::Local => {
                // The leader's own log end bounds the read from below too: a leader restored
                // after a crash (same term) may restore a commit index older than writes it had
                // already acknowledged (the commit index is made durable lazily), and openraft's
                // read index would then miss them (see `leader_read_index`).
                let log_end = self.metrics().last_log_index.unwrap_or(0);
                match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    Ok(r) => taurus_store::network::leader_read_index(r.log_id().index, log_end),
                    Err(e) => return Err(ReadError::NoLeader(format!("leadership not confirmed: {e}"))),
                }
            }
            Route::NoLeader => return Err(ReadError::NoLeader("no leader elected yet".into())),
            Route::Forward(leader) => {
                let ch = self.channels.get(&leader.addr).map_err(ReadError::NoLeader)?;
                let mut client = RaftServiceClient::new(ch);
                let mut req = tonic::Request::new(internal::ReadIndexRequest {});
                req.set_timeout(READ_APPLY_TIMEOUT);
                match client.read_index(req).await {
                    Ok(r) => r.into_inner().read_index,
                    Err(s) => {
                        return Err(ReadError::NoLeader(format!(
                            "leader {} refused a read index: {}",
                            leader.id,
                            s.message()
                        )));
                    }
                }
            }
        };
        self.wait_applied(read_index).await
    }

    /// Waits until the local state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<u64, ReadError> {
        let mut rx = self.sm.subscribe();
        let wait = async {
            loop {
                let applied = *rx.borrow_and_update();
                if applied >= index {
                    return Ok(applied);
                }
                if rx.changed().await.is_err() {
                    return Err(ReadError::NoLeader("state machine closed".into()));
                }
            }
        };
        match tokio::time::timeout(READ_APPLY_TIMEOUT, wait).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Lagging {
                wanted: index,
                applied: self.sm.applied_index(),
            }),
        }
    }
}

/// Why a linearizable read could not be served here.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    NoLeader(String),
    #[error("this master has applied up to {applied} but the read needs {wanted}")]
    Lagging { wanted: u64, applied: u64 },
}

/// Builds the openraft configuration from ours.
fn raft_config(config: &MasterConfig) -> Result<openraft::Config, MasterError> {
    let r = &config.raft;
    let c = openraft::Config {
        cluster_name: "taurus".into(),
        heartbeat_interval: r.heartbeat_interval.as_millis() as u64,
        election_timeout_min: r.election_timeout_min.as_millis() as u64,
        election_timeout_max: r.election_timeout_max.as_millis() as u64,
        // Snapshots of a large state take seconds to ship and install.
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_every_entries),
        max_in_snapshot_log_to_keep: r.keep_log_entries,
        purge_batch_size: (r.snapshot_every_entries / 4).clamp(1, 1024),
        // Beyond this lag a follower gets a snapshot instead of the log.
        replication_lag_threshold: r.snapshot_every_entries.max(r.keep_log_entries) * 2,
        // A master that merely missed heartbeats (a CPU-starved or briefly partitioned one)
        // first asks whether it could win; it campaigns, and bumps the term, only if so. Without
        // this, its return would depose a healthy leader.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    c.validate()
        .map_err(|e| MasterError::Config(format!("raft: {e}")))
}

/// Runs a master until `shutdown` resolves, then stops it cleanly.
pub async fn run(config: MasterConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), MasterError> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    run_with_listener(config, listener, Channels::default(), shutdown).await
}

/// Like [`run`], on an already-bound listener (tests bind port 0 first) and with the given
/// peer channels (tests keep a clone to inject partitions). The HTTP port, if configured
/// (`http.listen`), is bound here.
pub async fn run_with_listener(
    config: MasterConfig,
    listener: TcpListener,
    channels: Channels,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MasterError> {
    config.validate()?;
    let http = match config.http.listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    run_with_listeners(config, listener, http, channels, shutdown).await
}

/// Like [`run_with_listener`], with the HTTP port's listener bound already too (`None`: no
/// HTTP port, whatever `http.listen` says).
pub async fn run_with_listeners(
    config: MasterConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    channels: Channels,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MasterError> {
    // Everything this master logs carries its id (see `crate::trace`).
    let span = tracing::info_span!("master", node = config.id);
    serve(config, listener, http, channels, shutdown)
        .instrument(span)
        .await
}

async fn serve(
    config: MasterConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    channels: Channels,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MasterError> {
    config.validate()?;
    // Mutual TLS, checked before anything is opened so that a bad file is one clear error:
    // serve only TLS, and dial peers (Raft, forwarding, read index) with our own certificate.
    let (server_tls, channels) = match &config.tls {
        Some(files) => {
            let server = files.server_config()?;
            let channels = if channels.is_tls() {
                channels
            } else {
                channels.with_tls(files.client_config()?)
            };
            (Some(server), channels)
        }
        None => (None, channels),
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        MasterError::Config(format!(
            "data_dir: cannot create {}: {e}",
            config.data_dir.display()
        ))
    })?;
    if config.exposure()? == crate::config::Exposure::Insecure {
        tracing::warn!(
            listen = %config.listen,
            tls = config.tls.is_some(),
            auth = config.auth.enabled,
            "INSECURE: listening on a non-loopback address without TLS and authentication \
             (--insecure); anyone who reaches this port can run commands on every agent"
        );
    }
    crate::clock::init_from_env();
    let unsafe_stale_reads = unsafe_switch_on(std::env::var(UNSAFE_STALE_READS_ENV).ok().as_deref());
    if unsafe_stale_reads {
        tracing::error!(
            env = UNSAFE_STALE_READS_ENV,
            "UNSAFE: linearizable reads disabled; reads may be stale"
        );
    }
    let unsafe_ack_before_commit =
        unsafe_switch_on(std::env::var(UNSAFE_ACK_BEFORE_COMMIT_ENV).ok().as_deref());
    if unsafe_ack_before_commit {
        tracing::error!(
            env = UNSAFE_ACK_BEFORE_COMMIT_ENV,
            "UNSAFE: submits acknowledged before commit; acknowledged tasks may be lost"
        );
    }
    let (log_store, sm) = taurus_store::log_store::open(&config.data_dir).inspect_err(|e| {
        if matches!(e, taurus_store::StoreError::Damaged { .. }) {
            tracing::error!(
                id = config.id,
                data_dir = %config.data_dir.display(),
                "refusing to start on a damaged data directory. Recovery: on a live master run \
                 `taurus cluster remove-master --id {id}`; delete {dir}; start this master with a \
                 NEW --id; then run `taurus cluster add-master --id <new id> --addr {addr}`",
                id = config.id,
                dir = config.data_dir.display(),
                addr = config.advertised(),
            );
        }
    })?;
    let network = NetworkFactory::new(config.id, channels.clone());
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config(&config)?),
        network,
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|e| MasterError::Raft(e.to_string()))?;
    let batcher = Batcher::start(raft.clone(), config.batch.max_tasks, config.batch.max_in_flight);
    let reports = ReportBatcher::start(raft.clone(), config.batch.max_tasks, config.batch.max_in_flight);
    let (stop_streams, stopping) = crate::lifecycle::Stopping::new();
    let node = Node {
        id: config.id,
        raft: raft.clone(),
        sm,
        batcher,
        reports,
        duties: LeaderDuties::default(),
        lease_timeout: config.scheduler.lease_timeout,
        channels,
        queue_limit: config.limits.queue_limit(),
        finished_retention: config.limits.finished_retention,
        max_finished_tasks: config.limits.max_finished_tasks,
        auth: Arc::new(crate::auth::Authenticator::new(
            config.auth.enabled,
            config.auth.default_submit_rate,
        )),
        unsafe_stale_reads,
        unsafe_ack_before_commit,
        metrics: Arc::new(crate::metrics::Metrics::new(&config.data_dir)),
        monitor: crate::monitor::Monitor::new(&config.monitor),
        stopping: stopping.clone(),
    };
    let addr = listener
        .local_addr()
        .map_err(|e| MasterError::Serve(e.to_string()))?;
    tracing::info!(id = config.id, %addr, data_dir = %config.data_dir.display(), "master starting");

    // Health and reflection (see `lifecycle`): every public service serving; the leader-only
    // name follows Raft's metrics.
    let health_reporter = tonic_health::server::HealthReporter::new();
    let health_service = crate::lifecycle::health_service(&health_reporter, stopping);
    crate::lifecycle::set_server_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let leadership = crate::lifecycle::watch_leadership(raft.clone(), config.id, health_reporter.clone());
    let (reflection_v1, reflection_v1alpha) = crate::lifecycle::reflection()?;
    let (stop_serving_tx, stop_serving_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder().trace_fn(crate::trace::rpc_span(config.id));
    if let Some(tls) = server_tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| MasterError::Serve(format!("TLS: {e}")))?;
    }
    let server = builder
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RaftServiceServer::new(
                RaftServer::new(config.id, raft.clone()).require_master_cert(config.tls.is_some()),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            TaskServiceServer::new(TaskApi::new(node.clone()))
                .max_decoding_message_size(config.limits.max_message_bytes),
        )
        .add_service(ClusterServiceServer::new(ClusterApi::new(node.clone())))
        .add_service(AclServiceServer::new(AclApi::new(node.clone())))
        .add_service(
            AgentServiceServer::new(AgentApi::new(node.clone()))
                .max_decoding_message_size(config.limits.max_message_bytes),
        )
        // Nagle off on accepted sockets too: the builder's `tcp_nodelay` only applies when tonic
        // binds the listener itself, and small replies would otherwise wait ~40ms for delayed ACKs.
        // The server stops only after the shutdown sequence below (health down, leadership
        // handed over), so peers can still reach this master's Raft service meanwhile.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_serving_rx.await;
            },
        );

    let formation = tokio::spawn(form_cluster_once(node.clone(), config.peers.clone()).in_current_span());
    let raft_metrics = tokio::spawn(crate::metrics::follow_raft(node.clone()));
    let sampler = tokio::spawn(crate::monitor::run(node.clone()));
    let (http_stop, http) = spawn_http(http, &node)?;
    let duties = tokio::spawn(tracing::Instrument::in_current_span(crate::leader::run(
        node.clone(),
        config.scheduler.clone(),
        Arc::from(config.scheduler.policy.build()),
    )));
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let served = tokio::select! {
        // The server failed on its own: nothing to hand over gracefully.
        served = &mut server => served,
        () = &mut shutdown => {
            // Load balancers first, then leadership, then stop serving.
            leadership.abort();
            let handover = async {
                health_reporter
                    .set_service_status(crate::lifecycle::LEADER_HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
                    .await;
                crate::lifecycle::set_server_health(&health_reporter, tonic_health::ServingStatus::NotServing).await;
                crate::lifecycle::hand_over_leadership(&node, crate::lifecycle::HANDOVER_TIMEOUT).await;
            };
            // The server must go on accepting connections during the hand-over: the new leader's
            // vote request and heartbeats may come on a connection not yet open.
            let ended_early = tokio::select! {
                served = &mut server => Some(served),
                () = handover => None,
            };
            match ended_early {
                Some(served) => served,
                None => {
                    // Streams that never end by themselves end now; the server waits for every
                    // open call, so that wait is bounded too: Raft must shut down before a
                    // SIGKILL comes.
                    stop_streams.stop();
                    let _ = stop_serving_tx.send(());
                    match tokio::time::timeout(crate::lifecycle::SERVER_STOP_TIMEOUT, &mut server).await {
                        Ok(served) => served,
                        Err(_) => {
                            tracing::warn!(
                                timeout = ?crate::lifecycle::SERVER_STOP_TIMEOUT,
                                "gRPC calls still open at shutdown; stopping without them"
                            );
                            Ok(())
                        }
                    }
                }
            }
        }
    };
    leadership.abort();
    formation.abort();
    raft_metrics.abort();
    sampler.abort();
    stop_http(http_stop, http).await;
    duties.abort();
    tracing::info!(id = config.id, "master stopping");
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    served.map_err(|e| MasterError::Serve(e.to_string()))
}

/// How long the HTTP port may take to finish its requests at shutdown.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(2);

type HttpTask = tokio::task::JoinHandle<Result<(), MasterError>>;

/// Starts serving the HTTP port, if there is one; the sender stops it.
fn spawn_http(
    listener: Option<TcpListener>,
    node: &Node,
) -> Result<(Option<tokio::sync::oneshot::Sender<()>>, Option<HttpTask>), MasterError> {
    let Some(listener) = listener else {
        return Ok((None, None));
    };
    let addr = listener
        .local_addr()
        .map_err(|e| MasterError::Serve(format!("http: {e}")))?;
    tracing::info!(id = node.id, http = %addr, "serving /metrics, /healthz and the status page");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::http::serve(listener, node.clone(), async {
        let _ = rx.await;
    }));
    Ok((Some(tx), Some(task)))
}

/// Stops the HTTP port (open connections get [`HTTP_STOP_TIMEOUT`] to finish).
async fn stop_http(stop: Option<tokio::sync::oneshot::Sender<()>>, task: Option<HttpTask>) {
    if let Some(stop) = stop {
        let _ = stop.send(());
    }
    if let Some(mut task) = task {
        match tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server"),
            Ok(_) => {}
            Err(_) => task.abort(),
        }
    }
}

/// Forms the cluster on its very first start (see the module docs for the rules).
async fn form_cluster_once(node: Node, peers: BTreeMap<NodeId, String>) {
    let Some(&lowest) = peers.keys().next() else {
        return;
    };
    if lowest != node.id {
        return;
    }
    match node.raft.is_initialized().await {
        Ok(false) => {}
        Ok(true) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot tell whether this master is initialised");
            return;
        }
    }
    for (&id, addr) in peers.iter().filter(|(id, _)| **id != node.id) {
        if let Some(info) = query_peer(&node.channels, id, addr).await
            && (info.term > 0 || info.last_log_index > 0)
        {
            tracing::error!(
                peer = id,
                term = info.term,
                "peer already belongs to a formed cluster; not initialising. A master whose data \
                 directory was lost must rejoin under a NEW id (taurus cluster add-master)"
            );
            return;
        }
    }
    let members: BTreeMap<NodeId, BasicNode> = peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    match node.raft.initialize(members).await {
        Ok(()) => tracing::info!(members = ?peers.keys().collect::<Vec<_>>(), "cluster formed"),
        Err(e) => tracing::warn!(error = %e, "cluster formation skipped"),
    }
}

/// Asks one peer for its own view; `None` when it does not answer in time.
pub async fn query_peer(channels: &Channels, id: NodeId, addr: &str) -> Option<internal::NodeInfoResponse> {
    let ch = channels.get(addr).ok()?;
    let mut client = RaftServiceClient::new(ch);
    let mut req = tonic::Request::new(internal::NodeInfoRequest {});
    req.set_timeout(PEER_QUERY_TIMEOUT);
    if let Ok(v) = id.to_string().parse() {
        req.metadata_mut().insert(taurus_store::network::TARGET_HEADER, v);
    }
    match tokio::time::timeout(PEER_QUERY_TIMEOUT, client.node_info(req)).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exactly_one_turns_stale_reads_on() {
        assert!(unsafe_switch_on(Some("1")));
        for off in [
            None,
            Some(""),
            Some("0"),
            Some("true"),
            Some("yes"),
            Some(" 1"),
            Some("1\n"),
            Some("01"),
        ] {
            assert!(!unsafe_switch_on(off), "{off:?}");
        }
    }
}
