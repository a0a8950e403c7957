//! Raft transport over tonic.
//!
//! Client side: [`NetworkFactory`] hands openraft one [`PeerClient`] per target, all sharing one
//! lazily-connected, multiplexed tonic `Channel` per peer address (so a reconnect storm never
//! opens a socket per RPC). Every RPC is bounded by the deadline openraft passes in
//! (`RPCOption::soft_ttl`); a connection failure is reported as `Unreachable` (openraft backs
//! off) and any other transport failure as `Network` (openraft retries).
//!
//! Server side: [`RaftServer`] implements the internal `RaftService`, decoding each message and
//! handing it to the local `Raft`. Every request carries the id of the node it was meant for in
//! `x-taurus-target`; a node refuses a message addressed to another id, so a wrong peer address
//! can never make a node replicate to itself (openraft FAQ, troubleshooting 05).
//!
//! openraft messages travel as MessagePack (see [`crate::codec`]): the internal schema never
//! changes when openraft's types do.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use openraft::BasicNode;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::ReadPolicy;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RPCTypes;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use taurus_protocol::internal;
use taurus_protocol::internal::raft_service_client::RaftServiceClient;
use taurus_protocol::internal::raft_service_server::RaftService;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

use crate::NodeId;
use crate::Raft;
use crate::TypeConfig;
use crate::codec;

/// Metadata key naming the node a request is meant for.
pub const TARGET_HEADER: &str = "x-taurus-target";
/// Largest internal message: snapshots chunks and big append batches must fit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// How long establishing a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds a lazily-connecting channel to `addr` (`host:port` or `http://host:port`).
pub fn channel_to(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(tune(Endpoint::from_shared(uri)?).connect_lazy())
}

/// Like [`channel_to`], and over mutual TLS when `tls` is given: `https://host:port`, the peer's
/// certificate must be signed by the CA of `tls` and name `host`; ours is the identity of `tls`.
pub fn secure_channel_to(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, String> {
    let endpoint = taurus_protocol::tls::endpoint(addr, tls).map_err(|e| e.to_string())?;
    Ok(tune(endpoint).connect_lazy())
}

/// Timeouts and keep-alives of every peer channel.
fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
}

/// A cache of one channel per peer address, shared by every client openraft creates and by
/// request forwarding.
///
/// It is also the fault-injection point of the in-process cluster tests: [`Channels::block`]
/// makes every message from this node to an address fail as unreachable (Raft traffic, forwarded
/// writes and read-index requests alike) until [`Channels::heal`]. Blocking both directions
/// between two groups of nodes is a network partition. Production code never calls it; the
/// cost when nothing is blocked is one relaxed atomic load per message.
///
/// `Channels::default()` dials plain HTTP/2; [`Channels::with_tls`] dials every peer over
/// mutual TLS.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    blocked: Arc<Mutex<HashSet<String>>>,
    any_blocked: Arc<AtomicBool>,
    /// Client side of mutual TLS (CA and this node's identity); `None` dials plain HTTP/2.
    tls: Option<ClientTlsConfig>,
}

impl Channels {
    /// These channels over mutual TLS with `tls` (see [`secure_channel_to`]). The result shares
    /// fault injection with `self` but not its cache of channels.
    pub fn with_tls(&self, tls: ClientTlsConfig) -> Self {
        Self {
            inner: Arc::default(),
            blocked: self.blocked.clone(),
            any_blocked: self.any_blocked.clone(),
            tls: Some(tls),
        }
    }

    /// Whether peers are dialled over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Fault injection: messages from this node to `addr` fail until [`Channels::heal`].
    pub fn block(&self, addr: &str) {
        if let Ok(mut b) = self.blocked.lock() {
            b.insert(addr.to_string());
            self.any_blocked.store(true, Ordering::Release);
        }
    }

    /// Ends every [`Channels::block`].
    pub fn heal(&self) {
        if let Ok(mut b) = self.blocked.lock() {
            b.clear();
            self.any_blocked.store(false, Ordering::Release);
        }
    }

    /// True when fault injection cuts this node off from `addr`.
    pub fn is_blocked(&self, addr: &str) -> bool {
        self.any_blocked.load(Ordering::Acquire)
            && self.blocked.lock().map(|b| b.contains(addr)).unwrap_or(false)
    }

    /// The channel to `addr`, created on first use; an error while fault injection cuts
    /// this node off from `addr`.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        if self.is_blocked(addr) {
            return Err(format!("{addr} is unreachable (partitioned by fault injection)"));
        }
        self.channel(addr)
    }

    /// The channel to `addr`, ignoring fault injection (callers check per message).
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self
            .inner
            .lock()
            .map_err(|_| "channel cache poisoned".to_string())?;
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = secure_channel_to(addr, self.tls.as_ref()).map_err(|e| format!("bad peer address: {e}"))?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// Creates [`PeerClient`]s for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    self_id: NodeId,
    channels: Channels,
}

impl NetworkFactory {
    pub fn new(self_id: NodeId, channels: Channels) -> Self {
        Self { self_id, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        // Partitions are checked per message, not here: a client made during a partition must
        // work again once it heals.
        let client = self.channels.channel(&node.addr).map(|ch| {
            RaftServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        PeerClient {
            self_id: self.self_id,
            target,
            addr: node.addr.clone(),
            client,
            channels: self.channels.clone(),
        }
    }
}

/// openraft's handle on one peer.
pub struct PeerClient {
    self_id: NodeId,
    target: NodeId,
    addr: String,
    /// `Err` when the peer's address is malformed: every RPC then reports it unreachable.
    client: Result<RaftServiceClient<Channel>, String>,
    channels: Channels,
}

/// How a tonic failure is reported to openraft.
fn rpc_error(status: &Status) -> RPCError<TypeConfig> {
    match status.code() {
        // Connection refused / reset / no route: back off before retrying.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(status)),
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl PeerClient {
    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(timeout);
        if let Ok(v) = self.target.to_string().parse() {
            req.metadata_mut().insert(TARGET_HEADER, v);
        }
        req
    }

    /// One unary call: encode, send within `timeout`, decode.
    async fn unary<Req, Resp, F, Fut>(
        &mut self,
        action: RPCTypes,
        req: &Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, Request<internal::RaftMessage>) -> Fut,
        Fut: Future<Output = Result<Response<internal::RaftMessage>, Status>>,
    {
        if self.channels.is_blocked(&self.addr) {
            return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "{} partitioned",
                self.addr
            ))));
        }
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::from_string(e))),
        };
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = self.request(internal::RaftMessage { data }, timeout);
        let reply = match tokio::time::timeout(timeout, call(client, request)).await {
            Err(_elapsed) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.self_id,
                    target: self.target,
                    timeout,
                }));
            }
            Ok(Err(status)) => return Err(rpc_error(&status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        codec::decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(
            RPCTypes::AppendEntries,
            &rpc,
            option.soft_ttl(),
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(RPCTypes::Vote, &rpc, option.soft_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(RPCTypes::Vote, &rpc, option.soft_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(
            RPCTypes::TransferLeader,
            &req,
            option.soft_ttl(),
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        if self.channels.is_blocked(&self.addr) {
            return Err(StreamingError::Unreachable(Unreachable::from_string(format!(
                "{} partitioned",
                self.addr
            ))));
        }
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(StreamingError::Unreachable(Unreachable::from_string(e))),
        };
        let head = codec::encode(&(&vote, &snapshot.meta)).map_err(|e| NetworkError::new(&e))?;
        let mut chunks = vec![internal::SnapshotChunk { data: head }];
        chunks.extend(
            snapshot
                .snapshot
                .chunks(SNAPSHOT_CHUNK_BYTES)
                .map(|c| internal::SnapshotChunk { data: c.to_vec() }),
        );
        tracing::info!(target = self.target, addr = %self.addr, bytes = snapshot.snapshot.len(), "sending snapshot");
        let timeout = option.hard_ttl();
        let request = self.request(futures::stream::iter(chunks), timeout);
        let send = async move { client.install_snapshot(request).await };
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(timeout, send) => r,
        };
        let reply = match reply {
            Err(_elapsed) => {
                return Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.self_id,
                    target: self.target,
                    timeout,
                }));
            }
            Ok(Err(status)) => return Err(rpc_error(&status).into()),
            Ok(Ok(r)) => r.into_inner(),
        };
        Ok(codec::decode(&reply.data).map_err(|e| NetworkError::new(&e))?)
    }
}

/// Serves the internal Raft service for one node.
///
/// Who may call it: with TLS on ([`RaftServer::require_master_cert`]), only holders of a
/// certificate with `OU=master` (client and agent certificates get `PERMISSION_DENIED`). And
/// once this node knows a membership, a `Vote`, `PreVote` or `TransferLeader` whose sender (the
/// node id in the message's vote) is neither a voter nor a learner of it is refused, so a node
/// that is not a member can never win or disrupt an election. `AppendEntries` and
/// `InstallSnapshot` are not checked against the membership: their sender's vote was granted by
/// a majority of members (who grant votes only to members), and refusing them would strand a
/// replica that lags behind a membership change naming a new leader it has not heard of.
/// Without TLS the service is unauthenticated: run it only on loopback or with `--insecure`.
#[derive(Clone)]
pub struct RaftServer {
    id: NodeId,
    raft: Raft,
    require_master_cert: bool,
}

/// Why a Raft RPC is refused before it reaches openraft, or `None` when it may proceed.
/// `peer`: the identity of the caller's certificate (`None` without one); `sender`: the node id
/// the message claims to come from (`None` when the RPC does not name one); `members`: this
/// node's voters and learners (`None` until it knows a membership).
pub fn raft_refusal(
    require_master_cert: bool,
    peer: Option<&taurus_protocol::identity::CertIdentity>,
    sender: Option<NodeId>,
    members: Option<&std::collections::BTreeSet<NodeId>>,
) -> Option<Status> {
    use taurus_protocol::identity::CertRole;
    if require_master_cert {
        match peer {
            Some(p) if p.role == CertRole::Master => {}
            Some(p) => {
                return Some(Status::permission_denied(format!(
                    "raft traffic needs a master certificate (OU=master); {:?} presented OU={}",
                    p.name,
                    match p.role {
                        CertRole::Agent => "agent",
                        _ => "client",
                    }
                )));
            }
            None => {
                return Some(Status::unauthenticated(
                    "raft traffic needs a master certificate (OU=master); none presented",
                ));
            }
        }
    }
    if let (Some(sender), Some(members)) = (sender, members)
        && !members.is_empty()
        && !members.contains(&sender)
    {
        return Some(Status::permission_denied(format!(
            "node {sender} is not a member of this cluster (members: {members:?})"
        )));
    }
    None
}

impl RaftServer {
    pub fn new(id: NodeId, raft: Raft) -> Self {
        Self {
            id,
            raft,
            require_master_cert: false,
        }
    }

    /// Accept Raft calls only from peers with a master certificate (set when TLS is on).
    pub fn require_master_cert(mut self, on: bool) -> Self {
        self.require_master_cert = on;
        self
    }

    /// This node's voters and learners, `None` while it has no membership.
    fn members(&self) -> Option<std::collections::BTreeSet<NodeId>> {
        let m = self.raft.metrics().borrow_watched().clone();
        let ids: std::collections::BTreeSet<NodeId> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        (!ids.is_empty()).then_some(ids)
    }

    /// Refuses a caller that may not use the Raft service (see the type's docs).
    fn authorize<T>(&self, req: &Request<T>, sender: Option<NodeId>) -> Result<(), Status> {
        let peer = taurus_protocol::identity::peer_identity(req);
        if self.require_master_cert && peer.is_none() && taurus_protocol::identity::has_peer_cert(req) {
            return Err(Status::permission_denied(
                "raft traffic needs a master certificate (OU=master, CN=<name>)",
            ));
        }
        let members = if sender.is_some() { self.members() } else { None };
        match raft_refusal(self.require_master_cert, peer.as_ref(), sender, members.as_ref()) {
            Some(status) => {
                tracing::warn!(node = self.id, ?sender, error = %status.message(), "raft call refused");
                Err(status)
            }
            None => Ok(()),
        }
    }

    /// Refuses a request meant for another node.
    fn check_target<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(v) = req.metadata().get(TARGET_HEADER) else {
            return Ok(());
        };
        let target: Option<NodeId> = v.to_str().ok().and_then(|s| s.parse().ok());
        match target {
            Some(t) if t == self.id => Ok(()),
            _ => Err(Status::failed_precondition(format!(
                "message for node {v:?} reached node {}: check the peer addresses",
                self.id
            ))),
        }
    }
}

impl RaftServer {
    /// The shape of every unary Raft RPC: check the target, decode, hand to Raft, encode.
    async fn serve<Req, Resp, E, Fut>(
        &self,
        req: Request<internal::RaftMessage>,
        sender: impl FnOnce(&Req) -> Option<NodeId>,
        call: impl FnOnce(Raft, Req) -> Fut,
    ) -> Result<Response<internal::RaftMessage>, Status>
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.check_target(&req)?;
        let rpc: Req = decode_msg(req.get_ref())?;
        self.authorize(&req, sender(&rpc))?;
        let resp = call(self.raft.clone(), rpc).await.map_err(fatal)?;
        encode_msg(&resp)
    }
}

fn decode_msg<T: DeserializeOwned>(msg: &internal::RaftMessage) -> Result<T, Status> {
    codec::decode(&msg.data).map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode_msg<T: Serialize>(v: &T) -> Result<Response<internal::RaftMessage>, Status> {
    let data = codec::encode(v).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(internal::RaftMessage { data }))
}

/// openraft's fatal errors mean this node's Raft core has stopped.
fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        req: Request<internal::RaftMessage>,
    ) -> Result<Response<internal::RaftMessage>, Status> {
        self.serve(
            req,
            |_: &AppendEntriesRequest<TypeConfig>| None,
            |raft, rpc: AppendEntriesRequest<TypeConfig>| async move { raft.append_entries(rpc).await },
        )
        .await
    }

    async fn vote(
        &self,
        req: Request<internal::RaftMessage>,
    ) -> Result<Response<internal::RaftMessage>, Status> {
        self.serve(
            req,
            vote_sender,
            |raft, rpc: VoteRequest<TypeConfig>| async move { raft.vote(rpc).await },
        )
        .await
    }

    async fn pre_vote(
        &self,
        req: Request<internal::RaftMessage>,
    ) -> Result<Response<internal::RaftMessage>, Status> {
        self.serve(
            req,
            vote_sender,
            |raft, rpc: VoteRequest<TypeConfig>| async move { raft.pre_vote(rpc).await },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        req: Request<internal::RaftMessage>,
    ) -> Result<Response<internal::RaftMessage>, Status> {
        self.serve(
            req,
            |rpc: &TransferLeaderRequest<TypeConfig>| Some(rpc.from_leader().leader_id().node_id),
            |raft, rpc: TransferLeaderRequest<TypeConfig>| async move { raft.handle_transfer_leader(rpc).await },
        )
        .await
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<internal::SnapshotChunk>>,
    ) -> Result<Response<internal::RaftMessage>, Status> {
        self.check_target(&req)?;
        self.authorize(&req, None)?;
        let mut stream = req.into_inner();
        let head = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("snapshot stream ended before its header"))??;
        let (vote, meta): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>) = codec::decode(&head.data)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?.data);
        }
        tracing::info!(bytes = data.len(), last = ?meta.last_log_id, "installing snapshot from leader");
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(fatal)?;
        encode_msg(&resp)
    }

    async fn read_index(
        &self,
        req: Request<internal::ReadIndexRequest>,
    ) -> Result<Response<internal::ReadIndexResponse>, Status> {
        self.authorize(&req, None)?;
        let log_end = self.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(Response::new(internal::ReadIndexResponse {
                read_index: leader_read_index(read.log_id().index, log_end),
                leader: self.id,
            })),
            Err(e) => Err(Status::unavailable(format!(
                "node {} cannot serve a read index: {e}",
                self.id
            ))),
        }
    }

    async fn node_info(
        &self,
        req: Request<internal::NodeInfoRequest>,
    ) -> Result<Response<internal::NodeInfoResponse>, Status> {
        self.authorize(&req, None)?;
        let m = self.raft.metrics().borrow_watched().clone();
        Ok(Response::new(node_info(self.id, &m)))
    }
}

/// The index a linearizable read must wait for, on a leader that has just confirmed its
/// leadership: openraft's read index, or the end of the leader's log when that is further.
///
/// openraft's read index is `max(commit index, first entry of the leader's term)`. A leader that
/// crashed and restarted within its term (openraft restores its leadership) restores its commit
/// index from disk, where it is made durable lazily (with the next log flush), so it can be older
/// than writes the leader had already acknowledged; those writes are in its log (a leader
/// acknowledges only what it has flushed), so waiting for the log end covers them. The cost: a
/// read waits for entries appended before it to commit (it fails with "lagging" if they never
/// do, when the leader loses its term).
pub fn leader_read_index(read_index: u64, log_end: u64) -> u64 {
    read_index.max(log_end)
}

/// The candidate a (pre-)vote request comes from.
fn vote_sender(rpc: &VoteRequest<TypeConfig>) -> Option<NodeId> {
    Some(rpc.vote.leader_id().node_id)
}

/// A node's own view, as reported by `NodeInfo` and in cluster status.
pub fn node_info(id: NodeId, m: &openraft::RaftMetrics<TypeConfig>) -> internal::NodeInfoResponse {
    internal::NodeInfoResponse {
        id,
        role: role_name(m.state).to_string(),
        term: m.current_term,
        leader: m.current_leader.unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        commit_index: m.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0),
        applied_index: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.as_ref().map(|l| l.index).unwrap_or(0),
    }
}

/// The lower-case role name used in cluster status.
pub fn role_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    }
}
