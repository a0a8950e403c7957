//! Commands: the payload of Raft log entries, and what applying them returns.
//!
//! Every command carries the proposing leader's clock reading (`now_ms`); apply never reads a
//! clock. Commands are validated again at apply, item by item, so a command proposed from stale
//! leader state is rejected cleanly rather than half-applied.

use serde::Deserialize;
use serde::Serialize;

use crate::error::Rejection;
use crate::types::LogIndex;
use crate::types::TaskId;
use crate::types::TaskSpec;
use crate::types::TaskState;
use crate::types::UnixMillis;

/// One client request inside a coalesced `SubmitTasks` entry. Applied atomically: either every
/// task of the request is accepted (created or found existing) or none is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub tasks: Vec<TaskSpec>,
}

/// A replicated command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Several clients' submissions coalesced into one log entry.
    SubmitTasks {
        requests: Vec<SubmitRequest>,
        now_ms: UnixMillis,
    },
    /// Cancel a task that is not yet terminal.
    CancelTask {
        id: TaskId,
        reason: String,
        now_ms: UnixMillis,
    },
}

/// The result of one task of a [`SubmitRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub id: TaskId,
    /// False when the id already existed and the existing task was returned.
    pub created: bool,
    pub state: TaskState,
    /// Log index of the task's last change.
    pub log_index: LogIndex,
}

/// The result of a [`Command::CancelTask`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOutcome {
    pub id: TaskId,
    /// False when the task was already terminal (its state is then unchanged).
    pub cancelled: bool,
    pub state: TaskState,
    pub log_index: LogIndex,
}

/// What applying a command returns to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    /// One result per [`SubmitRequest`], in order.
    Submit(Vec<Result<Vec<Submitted>, Rejection>>),
    Cancel(Result<CancelOutcome, Rejection>),
}

impl std::fmt::Display for Command {
    /// A one-line summary for logs (never the whole payload).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::SubmitTasks { requests, now_ms } => {
                let tasks: usize = requests.iter().map(|r| r.tasks.len()).sum();
                write!(
                    f,
                    "SubmitTasks(requests={}, tasks={tasks}, now_ms={now_ms})",
                    requests.len()
                )
            }
            Command::CancelTask { id, now_ms, .. } => write!(f, "CancelTask({id}, now_ms={now_ms})"),
        }
    }
}
