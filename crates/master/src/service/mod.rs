//! gRPC handlers. This is the only place where errors become `tonic::Status`.
//!
//! Writes reach the leader: a follower forwards the request itself (marked with
//! `x-taurus-forwarded` so it is forwarded at most once) and relays the leader's answer, so a
//! caller never sees "not leader". It only sees `UNAVAILABLE` while no leader exists, which the
//! client library retries against other replicas.

pub mod acl;
pub mod agent;
pub mod backup;
pub mod cluster;
pub mod task;

use std::future::Future;
use std::time::Duration;
use std::time::Instant;
use taurus_core::Rejection;
use taurus_core::error::RejectKind;

use tonic::Request;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::auth::AuthError;
use crate::auth::Credentials;
use crate::auth::Principal;
use crate::node::Node;
use crate::node::ReadError;
use crate::node::Route;
use crate::write::WriteError;

/// Marks a request a follower forwarded to the leader; the value is the follower's id.
pub const FORWARDED_HEADER: &str = "x-taurus-forwarded";

/// A deterministic rejection from validation or apply.
pub fn rejection_status(r: Rejection) -> Status {
    let msg = format!("{}: {}", r.field, r.message);
    match r.kind {
        RejectKind::InvalidArgument => Status::invalid_argument(msg),
        RejectKind::NotFound => Status::not_found(msg),
        RejectKind::FailedPrecondition => Status::failed_precondition(msg),
        RejectKind::ResourceExhausted => Status::resource_exhausted(msg),
        RejectKind::PermissionDenied => Status::permission_denied(msg),
    }
}

pub fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::NotLeader { .. } | WriteError::Unknown | WriteError::ShuttingDown => {
            Status::unavailable(e.to_string())
        }
        WriteError::Membership(m) => Status::failed_precondition(m),
        WriteError::Internal(m) => Status::internal(m),
    }
}

pub fn read_status(e: ReadError) -> Status {
    Status::unavailable(format!("linearizable read not possible right now: {e}"))
}

/// A free-text reason (cancel, drain) within its limit, or `INVALID_ARGUMENT` naming `reason`.
pub fn check_reason(reason: &str) -> Result<(), Status> {
    if reason.len() > taurus_core::validate::MAX_REASON_LEN {
        return Err(Status::invalid_argument(format!(
            "reason: longer than {} bytes (limit max_reason_len)",
            taurus_core::validate::MAX_REASON_LEN
        )));
    }
    Ok(())
}

pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

/// How long a write waits on this master for leadership to settle (an election in progress, a
/// just-elected leader not yet accepting proposals) before the caller gets `UNAVAILABLE`.
pub const LEADER_SETTLE: Duration = Duration::from_secs(1);
const SETTLE_POLL: Duration = Duration::from_millis(20);

/// One try of a write on this master.
pub enum Attempt<T> {
    Done(Result<T, Status>),
    /// Raft refused it before appending: this master does not lead (any more, or yet).
    NotLeader,
}

/// Runs a write where it belongs: `local` when this master leads, `forward` (once) when another
/// does. While leadership is unsettled it waits up to [`LEADER_SETTLE`], re-deciding each time.
pub async fn on_leader<T, L, LF, F, FF>(
    node: &Node,
    forwarded: bool,
    mut local: L,
    forward: F,
) -> Result<T, Status>
where
    L: FnMut() -> LF,
    LF: Future<Output = Attempt<T>>,
    F: FnOnce(Channel) -> FF,
    FF: Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + LEADER_SETTLE;
    let mut forward = Some(forward);
    loop {
        match node.route() {
            Route::Local => match local().await {
                Attempt::Done(r) => return r,
                Attempt::NotLeader => {}
            },
            Route::Forward(leader) if !forwarded => {
                if let (Some(fwd), Ok(ch)) = (forward.take(), node.channels.get(&leader.addr)) {
                    return fwd(ch).await;
                }
            }
            Route::Forward(_) | Route::NoLeader => {}
        }
        if Instant::now() >= deadline {
            return Err(Status::unavailable(format!(
                "master {} has no usable leader within {LEADER_SETTLE:?} (election in progress?); retry",
                node.id
            )));
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Wraps `msg` for forwarding from `node` to the leader, with the caller's own
/// `authorization` header, so that the leader authenticates the original caller again (it has
/// applied every committed revoke). A caller without a token (an agent known by its certificate)
/// reaches the leader as this master, which the leader trusts: this master checked it.
pub fn forward_request<T>(node: &Node, caller: &Caller, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(v) = node.id.to_string().parse() {
        req.metadata_mut().insert(FORWARDED_HEADER, v);
    }
    if let Some(v) = &caller.authorization {
        req.metadata_mut().insert(AUTHORIZATION_HEADER, v.clone());
    }
    // A traced call stays traced on the leader (`crate::trace`).
    if let Some(v) = taurus_protocol::trace::of(&tracing::Span::current()).and_then(|tp| tp.parse().ok()) {
        req.metadata_mut()
            .insert(taurus_protocol::trace::TRACEPARENT_HEADER, v);
    }
    req
}

/// The metadata key of bearer tokens.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// An authentication or authorisation refusal.
pub fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::PermissionDenied(m) => Status::permission_denied(m),
        AuthError::RateLimited(m) => Status::resource_exhausted(m),
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    /// The caller's `authorization` header, copied onto forwarded requests.
    authorization: Option<AsciiMetadataValue>,
}

impl Caller {
    /// Requires a user role for `what` (an RPC name).
    pub fn require(&self, need: taurus_core::acl::Role, what: &str) -> Result<(), Status> {
        self.principal.require(need, what).map_err(auth_status)
    }

    /// Requires the right to act as agent `agent_id` for `what`.
    pub fn require_agent(&self, agent_id: &str, what: &str) -> Result<(), Status> {
        self.principal.require_agent(agent_id, what).map_err(auth_status)
    }

    /// After a read barrier: the caller's token must still exist (not revoked) and not have
    /// expired in the state just caught up with the leader, so a revoke acknowledged before the
    /// request began is honoured on every replica.
    pub fn recheck(&self, node: &Node) -> Result<(), Status> {
        let now = crate::clock::now_ms();
        node.sm
            .read(|s| node.auth.recheck(s, &self.principal, now))
            .map_err(auth_status)
    }

    /// Charges `tasks` submissions to the caller's token bucket on this master.
    pub fn charge_submit(&self, node: &Node, tasks: u64) -> Result<(), Status> {
        node.sm
            .read(|s| node.auth.charge_submit(s, &self.principal, tasks))
            .map_err(auth_status)
    }
}

/// Reads the credentials `req` carries.
fn credentials<T>(req: &Request<T>) -> Result<(Credentials, Option<AsciiMetadataValue>), Status> {
    let authorization = req.metadata().get(AUTHORIZATION_HEADER).cloned();
    let bearer = match &authorization {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| Status::unauthenticated("authorization: not printable ASCII"))?;
            Some(crate::auth::parse_bearer(text).map_err(auth_status)?)
        }
        None => None,
    };
    let cert = taurus_protocol::identity::peer_identity(req);
    Ok((Credentials { bearer, cert }, authorization))
}

/// Who sent `req`. A token this master does not know may be newer than its applied state (just
/// created through the leader): a follower then catches up with the leader (read barrier) and
/// looks again before refusing.
pub async fn authenticate<T>(node: &Node, req: &Request<T>) -> Result<Caller, Status> {
    let (creds, authorization) = credentials(req)?;
    if !node.auth.enabled() {
        return Ok(Caller {
            principal: Principal::Anonymous,
            authorization,
        });
    }
    let judge = || {
        let now = crate::clock::now_ms();
        node.sm.read(|s| node.auth.authenticate(s, &creds, now))
    };
    let principal = match judge() {
        Ok(p) => p,
        Err(AuthError::Unauthenticated(_))
            if creds.bearer.is_some() && !matches!(node.route(), Route::Local) =>
        {
            node.read_barrier().await.map_err(read_status)?;
            judge().map_err(auth_status)?
        }
        Err(e) => return Err(auth_status(e)),
    };
    Ok(Caller {
        principal,
        authorization,
    })
}

/// [`authenticate`], then [`Caller::require`].
pub async fn authorize<T>(
    node: &Node,
    req: &Request<T>,
    need: taurus_core::acl::Role,
    what: &str,
) -> Result<Caller, Status> {
    let caller = authenticate(node, req).await?;
    caller.require(need, what)?;
    Ok(caller)
}

/// Proposes `cmd` on this master (the leader), for handlers that do not coalesce.
pub async fn write_local(node: &Node, cmd: taurus_core::Command) -> Attempt<(taurus_core::Response, u64)> {
    match node.raft.client_write(cmd).await {
        Ok(resp) => Attempt::Done(Ok((resp.data, resp.log_id.index))),
        Err(e) => match crate::write::classify_write_error(e) {
            WriteError::NotLeader { .. } => Attempt::NotLeader,
            other => Attempt::Done(Err(write_status(other))),
        },
    }
}
