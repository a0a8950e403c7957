//! Commands: the payload of Raft log entries, and what applying them returns.
//!
//! Every command carries the proposing leader's clock reading (`now_ms`); apply never reads a
//! clock. Commands are validated again at apply, item by item, so a command proposed from stale
//! leader state is rejected cleanly rather than half-applied.

use serde::Deserialize;
use serde::Serialize;

use crate::acl::NewToken;
use crate::acl::Token;
use crate::acl::TokenId;
use crate::error::Rejection;
use crate::types::AgentId;
use crate::types::AgentInfo;
use crate::types::AgentState;
use crate::types::AttemptEnd;
use crate::types::LogIndex;
use crate::types::TaskId;
use crate::types::TaskSpec;
use crate::types::TaskState;
use crate::types::UnixMillis;

/// One client request inside a coalesced `SubmitTasks` entry. Applied atomically: either every
/// task of the request is accepted (created or found existing) or none is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub tasks: Vec<TaskSpec>,
    /// The client's idempotency key (at most [`crate::validate::MAX_REQUEST_ID_LEN`] bytes,
    /// opaque), the same on every retry of one logical request; empty means none. Every task the
    /// request creates remembers it ([`crate::types::Task::request_id`]), and an existing task
    /// created under the same non-empty key is answered `created: true`: the retry gets the
    /// answer the original got. Missing from entries written before keys existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// The proposing master's `max_queued_tasks`: the request is refused whole
    /// (`ResourceExhausted`) when the tasks it would create would take the number of tasks not
    /// yet finished beyond it. In the entry, so every replica decides alike whatever its own
    /// configuration. `None` (and entries written before the bound existed): no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<u64>,
    /// The principal submitting (its name), recorded as [`crate::types::Task::submitted_by`] on
    /// the tasks the request creates. Empty in entries written before principals existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub submitted_by: String,
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
        /// The principal cancelling, recorded as [`crate::types::Task::cancelled_by`].
        #[serde(default, skip_serializing_if = "String::is_empty")]
        by: String,
        /// True when the principal may cancel only the tasks it submitted (the `submit` role):
        /// apply refuses (`PermissionDenied`) a task whose `submitted_by` is not `by`. False
        /// (operators, admins, and entries written before roles existed): any task.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        only_own: bool,
    },
    /// An agent (re)registers. Its new epoch is this entry's log index; whatever the agent held
    /// under an older epoch is lost (new attempt, or failed when attempts are spent).
    RegisterAgent { agent: AgentInfo, now_ms: UnixMillis },
    /// Drain, undrain, or declare an agent down. `epoch: Some(e)` applies only if the agent's
    /// epoch is still `e` (the liveness tracker uses this so a re-registered agent is not
    /// declared down by a decision about its previous incarnation); `None` applies to any.
    SetAgentState {
        id: AgentId,
        epoch: Option<LogIndex>,
        state: AgentState,
        reason: String,
        now_ms: UnixMillis,
    },
    /// Drains agent `id` (as `SetAgentState` to `Draining`) and asks it to exit once drained:
    /// the agent learns it from heartbeat answers, lets running attempts go on until
    /// `now_ms + deadline_ms` (`None`: its own `drain_timeout`), kills what is left, reports,
    /// and exits. Asking again replaces the deadline; undraining cancels the request.
    RequestAgentExit {
        id: AgentId,
        deadline_ms: Option<u64>,
        reason: String,
        now_ms: UnixMillis,
    },
    /// One scheduling round's placements. Each placement's fencing token is this entry's index.
    /// Placements are checked one by one at apply; a stale one is skipped, never half-applied.
    Assign {
        placements: Vec<Placement>,
        now_ms: UnixMillis,
    },
    /// Agents' started/finished reports, coalesced.
    Report {
        reports: Vec<TaskReport>,
        now_ms: UnixMillis,
    },
    /// Time passes: due retries become runnable, tasks past their hard deadline end timed out.
    Tick { now_ms: UnixMillis },
    /// The first admin token. Refused once the ACL was ever bootstrapped.
    AclBootstrap { token: NewToken, now_ms: UnixMillis },
    /// A new token (carrying only the secret's SHA-256).
    CreateToken { token: NewToken, now_ms: UnixMillis },
    /// Removes a token; its id is never issued again.
    RevokeToken { id: TokenId, now_ms: UnixMillis },
    /// Forgets finished tasks, oldest first: those that finished before `finished_before_ms`,
    /// then more while over `keep_finished`; at most `max` of them in this entry. Unfinished
    /// tasks are never touched. Proposed by the leader so that memory, snapshots and disk stay
    /// bounded under a steady flood of work (`[limits] finished_retention`,
    /// `max_finished_tasks`).
    PurgeFinished {
        finished_before_ms: UnixMillis,
        keep_finished: u64,
        max: u32,
    },
}

/// Place a task on an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub task_id: TaskId,
    pub agent_id: AgentId,
    /// The agent's epoch the scheduler saw; the placement is skipped if it changed.
    pub agent_epoch: LogIndex,
    /// `None`: the task must be pending and runnable. `Some(token)`: move a task that is
    /// assigned (not started) under `token` to this agent (delay-guided relief).
    pub move_from: Option<LogIndex>,
}

/// What an agent says about one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: TaskId,
    pub agent_id: AgentId,
    /// The fencing token the attempt was assigned with.
    pub token: LogIndex,
    pub event: ReportEvent,
}

/// A started or finished report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportEvent {
    /// The agent claims the attempt and is about to spawn it. Agents spawn only after this is
    /// accepted, so an attempt moved or fenced before the claim never runs.
    Started,
    /// The attempt ended on the agent.
    Finished {
        /// One of `Succeeded`, `Failed`, `TimedOut`, `Killed`.
        end: AttemptEnd,
        exit_code: Option<i32>,
        error: String,
        stdout_tail: String,
        stderr_tail: String,
    },
}

/// The state machine's answer to one [`TaskReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportOutcome {
    Accepted,
    /// The same report was accepted before (a retry): nothing changed.
    Duplicate,
    /// The token is not the task's current one (moved, cancelled, agent declared down, ...):
    /// the agent must stop the attempt and forget it. The string says why.
    Stale(String),
    /// Malformed report.
    Invalid(Rejection),
}

/// The result of a [`Command::RegisterAgent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub id: AgentId,
    pub epoch: LogIndex,
    /// Tasks the previous incarnation held, now given new attempts or failed.
    pub lost: Vec<TaskId>,
}

/// The result of a [`Command::SetAgentState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStateChanged {
    pub id: AgentId,
    /// False when the agent was already in that state or the epoch did not match.
    pub changed: bool,
    pub state: AgentState,
    pub epoch: LogIndex,
    /// Tasks taken away from it (when it went down).
    pub lost: Vec<TaskId>,
}

/// The result of a [`Command::Tick`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticked {
    /// Delayed tasks that became runnable.
    pub released: Vec<TaskId>,
    /// Tasks that passed their hard deadline.
    pub expired: Vec<TaskId>,
}

/// The result of one task of a [`SubmitRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub id: TaskId,
    /// True when this request created the task: in this entry, or in an earlier one under the
    /// same non-empty `request_id` (a retry). False when the id already existed otherwise and
    /// the existing task was returned.
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
    Registered(Result<Registered, Rejection>),
    AgentState(Result<AgentStateChanged, Rejection>),
    /// One result per placement, in order.
    Assigned(Vec<Result<(), Rejection>>),
    /// One outcome per report, in order.
    Reported(Vec<ReportOutcome>),
    Ticked(Ticked),
    /// How many finished tasks a [`Command::PurgeFinished`] forgot.
    Purged(u64),
    /// The token `AclBootstrap` or `CreateToken` created.
    Token(Result<Token, Rejection>),
    /// The token `RevokeToken` removed.
    Revoked(Result<Token, Rejection>),
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
            Command::RegisterAgent { agent, now_ms } => {
                write!(f, "RegisterAgent({}, now_ms={now_ms})", agent.id)
            }
            Command::SetAgentState {
                id, state, now_ms, ..
            } => write!(f, "SetAgentState({id}, {state}, now_ms={now_ms})"),
            Command::RequestAgentExit {
                id,
                deadline_ms,
                now_ms,
                ..
            } => write!(
                f,
                "RequestAgentExit({id}, deadline_ms={deadline_ms:?}, now_ms={now_ms})"
            ),
            Command::Assign { placements, now_ms } => {
                write!(f, "Assign(placements={}, now_ms={now_ms})", placements.len())
            }
            Command::Report { reports, now_ms } => {
                write!(f, "Report(reports={}, now_ms={now_ms})", reports.len())
            }
            Command::Tick { now_ms } => write!(f, "Tick(now_ms={now_ms})"),
            Command::PurgeFinished {
                finished_before_ms,
                keep_finished,
                max,
            } => write!(
                f,
                "PurgeFinished(before_ms={finished_before_ms}, keep={keep_finished}, max={max})"
            ),
            Command::AclBootstrap { token, now_ms } => {
                write!(f, "AclBootstrap({}, now_ms={now_ms})", token.name)
            }
            Command::CreateToken { token, now_ms } => {
                write!(f, "CreateToken({}, {}, now_ms={now_ms})", token.name, token.role)
            }
            Command::RevokeToken { id, now_ms } => write!(f, "RevokeToken({id}, now_ms={now_ms})"),
        }
    }
}
