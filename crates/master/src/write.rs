//! How a failed Raft write is reported to the caller.

use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use taurus_store::NodeId;
use taurus_store::TypeConfig;

/// Why a proposal did not produce a result.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    /// Rejected before it was appended: safe to send to the leader instead.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Appended, then possibly discarded by a leader change: the outcome is unknown, so the
    /// caller must retry with the same task ids (idempotent).
    #[error("leader changed while the write was in flight; outcome unknown, retry with the same ids")]
    Unknown,
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("master is shutting down")]
    ShuttingDown,
    #[error("internal: {0}")]
    Internal(String),
}

pub fn classify_write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            WriteError::NotLeader { leader: f.leader_id }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(m)) => {
            WriteError::Membership(m.to_string())
        }
        RaftError::APIError(other) => {
            tracing::warn!(error = %other, "write outcome unknown");
            WriteError::Unknown
        }
        RaftError::Fatal(f) => WriteError::Internal(format!("raft stopped: {f}")),
    }
}
