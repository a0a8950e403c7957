//! [`Client`]: one lazily-connected channel per master, and the retry loop every call goes through.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use taurus_core::TaskState;
use taurus_protocol::tls::TlsFiles;
use taurus_protocol::v1;
use taurus_protocol::v1::acl_service_client::AclServiceClient;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use taurus_protocol::v1::cluster_service_client::ClusterServiceClient;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

use crate::address::normalize_address_for;
use crate::error::ClientError;
use crate::error::describe;
use crate::retry::is_retryable;
use crate::retry::jittered_backoff;

/// Default overall deadline of one call, retries included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Default limit on one attempt against one master before trying the next one.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A handle on a Taurus cluster. Cheap to clone: clones share the channels and the notion of
/// which master is current.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    deadline: Duration,
    attempt_timeout: Duration,
}

pub(crate) struct Inner {
    masters: Vec<Master>,
    /// Index of the master calls start with: the last one that answered.
    current: AtomicUsize,
    /// Where `submit` queues requests for coalescing; the task starts on first use.
    coalescer: OnceLock<mpsc::Sender<crate::coalesce::Pending>>,
    /// Whether masters are dialled over mutual TLS.
    tls: bool,
    /// `authorization: Bearer <secret>`, sent on every call when set ([`Client::with_token`],
    /// or `TAURUS_TOKEN` in the environment).
    token: std::sync::RwLock<Option<AsciiMetadataValue>>,
    /// W3C `traceparent` sent on every call when set ([`Client::with_trace_parent`]).
    trace_parent: std::sync::RwLock<Option<AsciiMetadataValue>>,
}

/// The environment variable a token is read from by default.
pub const TOKEN_ENV: &str = "TAURUS_TOKEN";

/// The channel every call goes through: a master's channel plus the bearer token.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// Adds the client's bearer token and trace context (if any) to each request.
#[derive(Clone)]
pub struct TokenInterceptor {
    token: Option<AsciiMetadataValue>,
    trace_parent: Option<AsciiMetadataValue>,
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.token {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.trace_parent {
            req.metadata_mut()
                .insert(taurus_protocol::trace::TRACEPARENT_HEADER, v.clone());
        }
        Ok(req)
    }
}

/// The `authorization` value for a secret, or why it cannot be one.
fn bearer_value(secret: &str) -> Result<AsciiMetadataValue, ClientError> {
    format!("Bearer {}", secret.trim())
        .parse()
        .map_err(|_| ClientError::InvalidToken("the token must be printable ASCII".to_string()))
}

struct Master {
    /// Normalised `http://host:port`, or `https://host:port` with TLS.
    uri: String,
    channel: Channel,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("masters", &self.masters())
            .field("current", &self.current_master())
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

/// Gives every task without an id a fresh UUIDv7; ids already given are kept.
pub fn fill_missing_ids(tasks: &mut [v1::TaskSpec]) {
    for t in tasks.iter_mut().filter(|t| t.id.is_empty()) {
        t.id = uuid::Uuid::now_v7().to_string();
    }
}

/// A fresh idempotency key for one logical submit request: 16 random bytes as 32 lower-case hex
/// characters (well within the server's 64-byte limit).
pub fn new_request_id() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 16] = rand::random();
    let mut key = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// Makes `request` ready to be sent, and sent again on every retry, unchanged: tasks without an
/// id get a UUIDv7 ([`fill_missing_ids`]) and a request without a `request_id` gets a fresh one
/// ([`new_request_id`]). What the caller already set is kept.
pub fn prepare_request(request: &mut v1::SubmitTasksRequest) {
    fill_missing_ids(&mut request.tasks);
    if request.request_id.is_empty() {
        request.request_id = new_request_id();
    }
}

impl Client {
    /// A client for these masters (`host:port` or `http://host:port`). Connects lazily: an
    /// unreachable master is only noticed by a call. Must be called inside a Tokio runtime.
    pub fn new(masters: Vec<String>) -> Result<Self, ClientError> {
        Self::build(masters, None)
    }

    /// A client for these masters over mutual TLS: it trusts only the CA of `files`, presents
    /// the certificate and key of `files`, and checks that each master's certificate names the
    /// host it dials. Files that cannot be used are an error now, naming the file.
    pub fn with_tls(masters: Vec<String>, files: &TlsFiles) -> Result<Self, ClientError> {
        let tls = files
            .client_config()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Self::build(masters, Some(tls))
    }

    /// [`Client::with_tls`] with TLS settings built already (see
    /// `taurus_protocol::tls::TlsFiles::client_config`); the server name is set per master.
    pub fn with_tls_config(masters: Vec<String>, tls: ClientTlsConfig) -> Result<Self, ClientError> {
        Self::build(masters, Some(tls))
    }

    fn build(masters: Vec<String>, tls: Option<ClientTlsConfig>) -> Result<Self, ClientError> {
        if masters.is_empty() {
            return Err(ClientError::NoMasters);
        }
        let mut built = Vec::with_capacity(masters.len());
        for addr in masters {
            let invalid = |reason: String| ClientError::InvalidAddress {
                addr: addr.clone(),
                reason,
            };
            let uri = normalize_address_for(&addr, tls.is_some()).map_err(invalid)?;
            let endpoint = taurus_protocol::tls::endpoint(&uri, tls.as_ref())
                .map_err(|e| invalid(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            built.push(Master {
                uri,
                channel: endpoint.connect_lazy(),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                masters: built,
                current: AtomicUsize::new(0),
                coalescer: OnceLock::new(),
                tls: tls.is_some(),
                token: std::sync::RwLock::new(
                    std::env::var(TOKEN_ENV)
                        .ok()
                        .filter(|t| !t.trim().is_empty())
                        .and_then(|t| bearer_value(&t).ok()),
                ),
                trace_parent: std::sync::RwLock::new(None),
            }),
            deadline: DEFAULT_DEADLINE,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        })
    }

    pub(crate) fn from_parts(inner: Arc<Inner>, deadline: Duration, attempt_timeout: Duration) -> Self {
        Self {
            inner,
            deadline,
            attempt_timeout,
        }
    }

    /// Sends `secret` as the bearer token (`authorization: Bearer <secret>`) on every call of
    /// this client and its clones (replacing `TAURUS_TOKEN`); an empty secret sends none.
    pub fn with_token(self, secret: &str) -> Result<Self, ClientError> {
        let value = if secret.trim().is_empty() {
            None
        } else {
            Some(bearer_value(secret)?)
        };
        if let Ok(mut t) = self.inner.token.write() {
            *t = value;
        }
        Ok(self)
    }

    /// Sends `traceparent` (W3C trace context) on every call of this client and its clones, so
    /// the masters' spans, and the runs of tasks submitted through it, join the caller's trace;
    /// an empty or invalid value sends none.
    pub fn with_trace_parent(self, traceparent: &str) -> Self {
        let value = taurus_core::validate::is_trace_parent(traceparent)
            .then(|| traceparent.parse().ok())
            .flatten();
        if let Ok(mut t) = self.inner.trace_parent.write() {
            *t = value;
        }
        self
    }

    /// A master's channel with this client's token and trace context attached.
    pub(crate) fn authed(&self, channel: Channel) -> AuthChannel {
        let token = self.inner.token.read().ok().and_then(|t| t.clone());
        let trace_parent = self.inner.trace_parent.read().ok().and_then(|t| t.clone());
        InterceptedService::new(channel, TokenInterceptor { token, trace_parent })
    }

    /// Sets the overall deadline of each call, retries included (default 10 s).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets how long one attempt may take before the call moves to the next master (default
    /// 3 s, never more than what is left of the deadline).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The overall deadline of each call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The normalised addresses of all masters, in the order given.
    pub fn masters(&self) -> Vec<&str> {
        self.inner.masters.iter().map(|m| m.uri.as_str()).collect()
    }

    /// The master the next call starts with.
    pub fn current_master(&self) -> &str {
        &self.inner.masters[self.current_index()].uri
    }

    fn current_index(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.masters.len()
    }

    /// Makes `idx` current (after it answered).
    fn stick(&self, idx: usize) {
        self.inner.current.store(idx, Ordering::Relaxed);
    }

    /// Moves past master `idx` (after it failed) and returns the next one to try. When another
    /// call already moved on, the shared current master is left alone.
    pub(crate) fn rotate(&self, idx: usize) -> usize {
        let next = (idx + 1) % self.inner.masters.len();
        let _ = self
            .inner
            .current
            .compare_exchange(idx, next, Ordering::Relaxed, Ordering::Relaxed);
        next
    }

    /// Runs `attempt` against the current master and then the others, with back-off, until it
    /// succeeds, fails in a way retrying cannot fix, or the deadline passes. Returns the answer
    /// and the index of the master that gave it.
    pub(crate) async fn call_at<T, F, Fut>(
        &self,
        op: &'static str,
        attempt_timeout: Duration,
        mut attempt: F,
    ) -> Result<(T, usize), ClientError>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.deadline;
        let mut idx = self.current_index();
        let mut attempts = 0u32;
        loop {
            let master = &self.inner.masters[idx];
            let budget = attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
            attempts += 1;
            let (code, last) =
                match tokio::time::timeout(budget, attempt(self.authed(master.channel.clone()))).await {
                    Ok(Ok(response)) => {
                        self.stick(idx);
                        return Ok((response.into_inner(), idx));
                    }
                    Ok(Err(status)) if is_retryable(&status) => {
                        (Some(status.code()), describe(status.code(), status.message()))
                    }
                    Ok(Err(status)) => {
                        return Err(ClientError::Rejected {
                            op,
                            master: master.uri.clone(),
                            code: status.code(),
                            message: status.message().to_string(),
                        });
                    }
                    Err(_) => (None, format!("no answer within {} ms", budget.as_millis())),
                };
            tracing::debug!(op, master = %master.uri, attempts, error = %last, "attempt failed");
            let give_up = || ClientError::Unavailable {
                op,
                deadline: self.deadline,
                attempts,
                master: master.uri.clone(),
                code,
                last: last.clone(),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(give_up());
            }
            tokio::time::sleep(jittered_backoff(attempts - 1).min(remaining)).await;
            if Instant::now() >= deadline {
                return Err(give_up());
            }
            idx = self.rotate(idx);
        }
    }

    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        Ok(self.call_at(op, self.attempt_timeout, attempt).await?.0)
    }

    /// Asks the cluster who leads and makes the leader the current master, so that writes skip
    /// the forwarding hop. Returns the leader's id, or `None` while there is none (or when the
    /// leader is not among this client's masters).
    pub async fn prefer_leader(&self) -> Result<Option<u64>, ClientError> {
        let (status, idx) = self
            .call_at("cluster status", self.attempt_timeout, |ch| async move {
                ClusterServiceClient::new(ch)
                    .get_status(v1::ClusterStatusRequest {})
                    .await
            })
            .await?;
        if status.leader == 0 {
            return Ok(None);
        }
        if status.served_by == status.leader {
            self.stick(idx);
            return Ok(Some(status.leader));
        }
        let leader_uri = status
            .members
            .iter()
            .find(|m| m.id == status.leader)
            .and_then(|m| normalize_address_for(&m.addr, self.inner.tls).ok());
        match leader_uri.and_then(|uri| self.inner.masters.iter().position(|m| m.uri == uri)) {
            Some(i) => {
                self.stick(i);
                Ok(Some(status.leader))
            }
            None => Ok(None),
        }
    }

    /// Submits tasks as one atomic batch. Before the first attempt, tasks without an id get a
    /// UUIDv7 and the request a random `request_id`; every retry carries the same ids and key, so
    /// a retried submit never creates a second task, and a retry of an attempt that did commit
    /// still reports `created: true` for the tasks this call created. Results come in request
    /// order.
    pub async fn submit(&self, tasks: Vec<v1::TaskSpec>) -> Result<v1::SubmitTasksResponse, ClientError> {
        let mut request = v1::SubmitTasksRequest {
            tasks,
            request_id: String::new(),
        };
        prepare_request(&mut request);
        self.submit_request(&request).await
    }

    /// Like [`Client::submit`] for a request built in advance (as the benchmark does); the
    /// request stays with the caller, so it can be sent again. Ids should already be filled in
    /// ([`fill_missing_ids`]); a task without one gets a fresh UUIDv7 that the caller never sees.
    /// A request without a `request_id` gets a fresh one for this call (and all its retries); a
    /// caller that sends the same logical request again after an error should set one itself
    /// ([`prepare_request`]), so the server recognises the repeat.
    ///
    /// Concurrent submits through clones of one client are coalesced into shared RPCs
    /// (`crate::coalesce`); each keeps its own atomicity, key and result.
    pub async fn submit_request(
        &self,
        request: &v1::SubmitTasksRequest,
    ) -> Result<v1::SubmitTasksResponse, ClientError> {
        let mut request = request.clone();
        prepare_request(&mut request);
        let tx = self
            .inner
            .coalescer
            .get_or_init(|| crate::coalesce::start(Arc::downgrade(&self.inner)));
        let (reply, rx) = oneshot::channel();
        let pending = crate::coalesce::Pending {
            request,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            reply,
        };
        if let Err(mpsc::error::SendError(p)) = tx.send(pending).await {
            // The coalescer is gone (cannot happen while this client lives); send it directly.
            return self.submit_direct(&p.request).await;
        }
        rx.await
            .map_err(|_| ClientError::invalid_response("submit", "the submit coalescer stopped"))?
    }

    /// Sends one `SubmitTasks` RPC for exactly this request, without coalescing (with retries
    /// across masters). Ids should be filled in; missing ids and a missing `request_id` are
    /// filled in once, before the first attempt ([`prepare_request`]).
    pub async fn submit_direct(
        &self,
        request: &v1::SubmitTasksRequest,
    ) -> Result<v1::SubmitTasksResponse, ClientError> {
        let filled;
        let request = if request.request_id.is_empty() || request.tasks.iter().any(|t| t.id.is_empty()) {
            let mut r = request.clone();
            prepare_request(&mut r);
            filled = r;
            &filled
        } else {
            request
        };
        let response = self
            .call("submit", |ch| {
                let req = request.clone();
                async move { TaskServiceClient::new(ch).submit_tasks(req).await }
            })
            .await?;
        if response.results.len() != request.tasks.len() {
            return Err(ClientError::invalid_response(
                "submit",
                format!(
                    "{} results for {} tasks",
                    response.results.len(),
                    request.tasks.len()
                ),
            ));
        }
        Ok(response)
    }

    /// Reads one task: linearizable, or whatever the serving master has applied when `stale`.
    pub async fn get_task(&self, id: &str, stale: bool) -> Result<v1::GetTaskResponse, ClientError> {
        let req = v1::GetTaskRequest {
            id: id.to_string(),
            consistency: consistency(stale),
        };
        let response = self
            .call("get task", |ch| {
                let req = req.clone();
                async move { TaskServiceClient::new(ch).get_task(req).await }
            })
            .await?;
        if response.task.is_none() {
            return Err(ClientError::invalid_response("get task", "no task in the answer"));
        }
        Ok(response)
    }

    /// One page of tasks in id order, filtered by state (empty = all). `page_size` 0 means the
    /// server's default; `page_token` is empty for the first page.
    pub async fn list_tasks(
        &self,
        states: &[TaskState],
        page_size: u32,
        page_token: &str,
        stale: bool,
    ) -> Result<v1::ListTasksResponse, ClientError> {
        let req = v1::ListTasksRequest {
            states: states.iter().map(|s| v1::TaskState::from(*s) as i32).collect(),
            page_size,
            page_token: page_token.to_string(),
            consistency: consistency(stale),
        };
        self.call("list tasks", |ch| {
            let req = req.clone();
            async move { TaskServiceClient::new(ch).list_tasks(req).await }
        })
        .await
    }

    /// Cancels a task. Cancelling a terminal task changes nothing (`cancelled = false`).
    pub async fn cancel_task(&self, id: &str, reason: &str) -> Result<v1::CancelTaskResponse, ClientError> {
        let req = v1::CancelTaskRequest {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        self.call("cancel task", |ch| {
            let req = req.clone();
            async move { TaskServiceClient::new(ch).cancel_task(req).await }
        })
        .await
    }

    /// Opens a watch stream on one master (with the usual retries); used by `watch_task`.
    pub(crate) async fn open_watch(
        &self,
        id: &str,
    ) -> Result<(tonic::Streaming<v1::WatchTaskEvent>, usize), ClientError> {
        let req = v1::WatchTaskRequest { id: id.to_string() };
        self.call_at("watch task", self.attempt_timeout, |ch| {
            let req = req.clone();
            async move { TaskServiceClient::new(ch).watch_task(req).await }
        })
        .await
    }

    /// Membership and leader of the cluster, as seen by the serving master.
    pub async fn cluster_status(&self) -> Result<v1::ClusterStatus, ClientError> {
        self.call("cluster status", |ch| async move {
            ClusterServiceClient::new(ch)
                .get_status(v1::ClusterStatusRequest {})
                .await
        })
        .await
    }

    /// Utilisation, queue, execution efficiency and anomalies, as the leader sees them (the
    /// serving master forwards); `local`: as the serving master itself sees them.
    pub async fn monitoring(&self, local: bool) -> Result<v1::MonitoringReport, ClientError> {
        self.call("monitoring", |ch| async move {
            ClusterServiceClient::new(ch)
                .get_monitoring(v1::MonitoringRequest { local })
                .await
        })
        .await
    }

    /// Adds a master (learner first, voter once caught up). Waits up to the whole deadline on
    /// one master, since catching up takes time.
    pub async fn add_master(&self, id: u64, addr: &str) -> Result<v1::ClusterStatus, ClientError> {
        let req = v1::AddMasterRequest {
            id,
            addr: addr.to_string(),
        };
        let (status, _) = self
            .call_at("add master", self.deadline, |ch| {
                let req = req.clone();
                async move { ClusterServiceClient::new(ch).add_master(req).await }
            })
            .await?;
        Ok(status)
    }

    /// Removes a master from the cluster.
    pub async fn remove_master(&self, id: u64) -> Result<v1::ClusterStatus, ClientError> {
        let (status, _) = self
            .call_at("remove master", self.deadline, |ch| async move {
                ClusterServiceClient::new(ch)
                    .remove_master(v1::RemoveMasterRequest { id })
                    .await
            })
            .await?;
        Ok(status)
    }

    /// Asks the leader to hand leadership to master `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<v1::ClusterStatus, ClientError> {
        let (status, _) = self
            .call_at("transfer leader", self.deadline, |ch| async move {
                ClusterServiceClient::new(ch)
                    .transfer_leader(v1::TransferLeaderRequest { to })
                    .await
            })
            .await?;
        Ok(status)
    }

    /// Opens a backup stream (`SaveSnapshot`) on one master, with the usual retries until it
    /// answers; returns the stream of the backup file's bytes and that master's address. The
    /// read barrier before the backup may take a while: the whole deadline is one attempt's.
    pub async fn save_snapshot(&self) -> Result<(tonic::Streaming<v1::SnapshotChunk>, String), ClientError> {
        let (stream, idx) = self
            .call_at("save snapshot", self.deadline, |ch| async move {
                ClusterServiceClient::new(ch)
                    .save_snapshot(v1::SaveSnapshotRequest {})
                    .await
            })
            .await?;
        Ok((stream, self.inner.masters[idx].uri.clone()))
    }
}

impl Client {
    /// Every registered agent (down ones included), in id order.
    pub async fn list_agents(&self, stale: bool) -> Result<v1::ListAgentsResponse, ClientError> {
        let req = v1::ListAgentsRequest {
            consistency: consistency(stale),
        };
        self.call("list agents", |ch| async move {
            AgentServiceClient::new(ch).list_agents(req).await
        })
        .await
    }

    /// One agent, with the ids of the tasks assigned to or running on it.
    pub async fn get_agent(&self, id: &str, stale: bool) -> Result<v1::AgentInfo, ClientError> {
        let req = v1::GetAgentRequest {
            id: id.to_string(),
            consistency: consistency(stale),
        };
        let response = self
            .call("get agent", |ch| {
                let req = req.clone();
                async move { AgentServiceClient::new(ch).get_agent(req).await }
            })
            .await?;
        response
            .agent
            .ok_or_else(|| ClientError::invalid_response("get agent", "no agent in the answer"))
    }

    /// Drains (`drain = true`: no new work) or undrains an agent.
    pub async fn set_agent_drain(
        &self,
        id: &str,
        drain: bool,
        reason: &str,
    ) -> Result<v1::AgentInfo, ClientError> {
        let req = v1::SetAgentDrainRequest {
            id: id.to_string(),
            drain,
            reason: reason.to_string(),
            ..Default::default()
        };
        self.call(if drain { "drain agent" } else { "undrain agent" }, |ch| {
            let req = req.clone();
            async move { AgentServiceClient::new(ch).set_agent_drain(req).await }
        })
        .await
    }

    /// Drains an agent and asks it to exit once drained: it takes no new work, lets running
    /// attempts go on for `deadline` (`None`: its own `drain_timeout`), kills and reports what
    /// is left, and exits.
    pub async fn drain_agent_and_exit(
        &self,
        id: &str,
        deadline: Option<std::time::Duration>,
        reason: &str,
    ) -> Result<v1::AgentInfo, ClientError> {
        let req = v1::SetAgentDrainRequest {
            id: id.to_string(),
            drain: true,
            reason: reason.to_string(),
            exit: true,
            deadline_ms: deadline.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        self.call("drain agent and exit", |ch| {
            let req = req.clone();
            async move { AgentServiceClient::new(ch).set_agent_drain(req).await }
        })
        .await
    }
}

fn consistency(stale: bool) -> i32 {
    if stale {
        v1::Consistency::Stale as i32
    } else {
        v1::Consistency::Linearizable as i32
    }
}

/// Access control (`AclService`).
impl Client {
    /// Creates the first admin token of the cluster (allowed without credentials, once). The
    /// answer holds the secret; it is never shown again.
    pub async fn acl_bootstrap(&self, name: &str) -> Result<v1::TokenSecret, ClientError> {
        let req = v1::AclBootstrapRequest {
            name: name.to_string(),
        };
        self.call("acl bootstrap", |ch| {
            let req = req.clone();
            async move { AclServiceClient::new(ch).bootstrap(req).await }
        })
        .await
    }

    /// Creates a token (admin only); the answer holds the secret, shown once.
    pub async fn create_token(&self, req: v1::CreateTokenRequest) -> Result<v1::TokenSecret, ClientError> {
        self.call("create token", |ch| {
            let req = req.clone();
            async move { AclServiceClient::new(ch).create_token(req).await }
        })
        .await
    }

    /// Every token (admin only), without secrets.
    pub async fn list_tokens(&self, stale: bool) -> Result<v1::ListTokensResponse, ClientError> {
        let req = v1::ListTokensRequest {
            consistency: consistency(stale),
        };
        self.call("list tokens", |ch| async move {
            AclServiceClient::new(ch).list_tokens(req).await
        })
        .await
    }

    /// Revokes a token (admin only); it stops working on every master once this returns.
    pub async fn revoke_token(&self, id: &str) -> Result<v1::TokenInfo, ClientError> {
        let req = v1::RevokeTokenRequest { id: id.to_string() };
        self.call("revoke token", |ch| {
            let req = req.clone();
            async move { AclServiceClient::new(ch).revoke_token(req).await }
        })
        .await
    }

    /// Who the masters take this client for.
    pub async fn who_am_i(&self) -> Result<v1::WhoAmIResponse, ClientError> {
        self.call("whoami", |ch| async move {
            AclServiceClient::new(ch).who_am_i(v1::WhoAmIRequest {}).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_ids_keeps_given_ids_and_fills_only_empty_ones_with_uuid_v7() {
        let mut tasks = vec![
            v1::TaskSpec {
                id: "mine".into(),
                ..Default::default()
            },
            v1::TaskSpec::default(),
            v1::TaskSpec::default(),
        ];
        fill_missing_ids(&mut tasks);
        assert_eq!(tasks[0].id, "mine");
        for t in &tasks[1..] {
            let id = uuid::Uuid::parse_str(&t.id).unwrap();
            assert_eq!(id.get_version_num(), 7);
        }
        assert_ne!(tasks[1].id, tasks[2].id);
        let before: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        fill_missing_ids(&mut tasks);
        let after: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        assert_eq!(before, after, "a second fill (a retry) must not change any id");
    }

    #[test]
    fn prepared_requests_get_one_random_key_that_a_second_preparation_keeps() {
        let mut request = v1::SubmitTasksRequest {
            tasks: vec![v1::TaskSpec::default()],
            request_id: String::new(),
        };
        prepare_request(&mut request);
        let key = request.request_id.clone();
        assert_eq!(key.len(), 32, "{key}");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{key}"
        );
        assert!(!request.tasks[0].id.is_empty());
        let prepared = request.clone();
        prepare_request(&mut request);
        assert_eq!(request, prepared, "preparing again (a retry) changes nothing");

        let mut other = v1::SubmitTasksRequest::default();
        prepare_request(&mut other);
        assert_ne!(other.request_id, key, "every logical request gets its own key");
        let mut mine = v1::SubmitTasksRequest {
            request_id: "caller-chosen".into(),
            ..Default::default()
        };
        prepare_request(&mut mine);
        assert_eq!(mine.request_id, "caller-chosen");
    }

    #[tokio::test]
    async fn new_rejects_bad_addresses_naming_them_and_accepts_both_forms() {
        assert!(matches!(Client::new(vec![]), Err(ClientError::NoMasters)));
        let err = Client::new(vec!["127.0.0.1:7101".into(), "nohost".into()]).unwrap_err();
        assert!(err.to_string().contains("\"nohost\""), "{err}");
        let c = Client::new(vec!["127.0.0.1:7101".into(), "http://127.0.0.1:7102".into()]).unwrap();
        assert_eq!(c.masters(), ["http://127.0.0.1:7101", "http://127.0.0.1:7102"]);
        assert_eq!(c.current_master(), "http://127.0.0.1:7101");
        assert_eq!(c.deadline(), DEFAULT_DEADLINE);
        assert_eq!(
            c.clone().with_deadline(Duration::from_secs(2)).deadline(),
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn rotation_moves_the_shared_current_master_once() {
        let c = Client::new(vec![
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
        ])
        .unwrap();
        let other = c.clone();
        assert_eq!(c.rotate(0), 1);
        assert_eq!(other.current_master(), "http://127.0.0.1:2");
        // A second caller that also saw master 0 fail does not skip master 1.
        assert_eq!(other.rotate(0), 1);
        assert_eq!(c.current_master(), "http://127.0.0.1:2");
        assert_eq!(c.rotate(2), 0);
        assert_eq!(c.current_master(), "http://127.0.0.1:2");
    }

    #[tokio::test]
    async fn unreachable_masters_give_up_at_the_deadline_with_the_last_error() {
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let c = Client::new(ports.iter().map(|p| format!("127.0.0.1:{p}")).collect())
            .unwrap()
            .with_deadline(Duration::from_millis(500));
        let started = Instant::now();
        let err = c.get_task("x", false).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        match &err {
            ClientError::Unavailable { attempts, code, .. } => {
                assert!(*attempts >= 2, "{err}");
                assert_eq!(*code, Some(tonic::Code::Unavailable), "{err}");
            }
            other => panic!("unexpected {other}"),
        }
    }
}
