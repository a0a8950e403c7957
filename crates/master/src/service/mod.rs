//! gRPC handlers. This is the only place where errors become `tonic::Status`.
//!
//! Writes reach the leader: a follower forwards the request itself (marked with
//! `x-taurus-forwarded` so it is forwarded at most once) and relays the leader's answer, so a
//! caller never sees "not leader". It only sees `UNAVAILABLE` while no leader exists, which the
//! client library retries against other replicas.

pub mod cluster;
pub mod task;

use taurus_core::Rejection;
use taurus_core::error::RejectKind;
use tonic::Request;
use tonic::Status;
use tonic::transport::Channel;

use crate::node::LeaderInfo;
use crate::node::Node;
use crate::node::ReadError;
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

pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

/// Where a write this node cannot take should go: the leader's channel, or `UNAVAILABLE`.
pub fn leader_channel(node: &Node, already_forwarded: bool) -> Result<(LeaderInfo, Channel), Status> {
    if already_forwarded {
        return Err(Status::unavailable(format!(
            "master {} is no longer the leader; retry",
            node.id
        )));
    }
    let leader = node
        .leader()
        .ok_or_else(|| Status::unavailable("no leader elected yet; retry"))?;
    if leader.id == node.id {
        return Err(Status::unavailable("leadership is changing; retry"));
    }
    let ch = node.channels.get(&leader.addr).map_err(Status::unavailable)?;
    Ok((leader, ch))
}

/// Wraps `msg` for forwarding from `node` to the leader.
pub fn forward_request<T>(node: &Node, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(v) = node.id.to_string().parse() {
        req.metadata_mut().insert(FORWARDED_HEADER, v);
    }
    req
}
