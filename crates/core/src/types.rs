//! Domain types shared by every part of Taurus: task specs, tasks, states and attempts.
//!
//! These types are what the replicated state machine stores and what snapshots carry, so they
//! derive `serde`. Their encoding is part of the on-disk format (see `SCHEMA_VERSION` in the
//! store crate): add fields with `#[serde(default)]`, never rename or remove one.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

/// A task id, chosen by the client (UUIDv7 by default). See [`crate::validate::MAX_ID_LEN`].
pub type TaskId = String;

/// A Raft log index. Every task remembers the index of the entry that last changed it.
pub type LogIndex = u64;

/// Wall-clock milliseconds since the Unix epoch, as read by the proposing leader.
/// The state machine never reads a clock: time arrives inside commands.
pub type UnixMillis = u64;

/// Resources a task needs (or an agent offers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Scratch disk in MiB.
    pub disk_mb: u64,
}

/// What a client submits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Client-chosen id; resubmitting an existing id returns the existing task.
    pub id: TaskId,
    /// Human-readable name (need not be unique).
    #[serde(default)]
    pub name: String,
    /// argv: program and arguments. Never empty.
    pub command: Vec<String>,
    /// Extra environment variables for the process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Resource demands used for placement.
    #[serde(default)]
    pub resources: Resources,
    /// Execution timeout in milliseconds; 0 means none.
    #[serde(default)]
    pub timeout_ms: u64,
    /// How many times the task may be started in all (>= 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Tasks that must succeed before this one may start.
    #[serde(default)]
    pub depends_on: Vec<TaskId>,
    /// Free-form labels (selectors, ownership, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// First retry delay in milliseconds; doubles per attempt (with jitter), capped at
    /// [`crate::validate::MAX_BACKOFF_MS`]. 0 retries at once.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Agent pool the task must run in; empty means any pool.
    #[serde(default)]
    pub pool: String,
    /// Agent labels the task requires (`key = value`, all must match).
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// Hard deadline in milliseconds after submission: a task not finished by then ends as
    /// `timed_out` whatever its attempts. 0 means none.
    #[serde(default)]
    pub deadline_ms: u64,
    /// W3C `traceparent` of the trace the task was submitted in (empty: none), so the agent's
    /// run of it joins that trace. Set by the master from the submit call's trace context when
    /// the client set none. Not serialized when empty: entries and snapshots of untraced tasks
    /// are unchanged, and older ones decode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_parent: String,
}

fn default_backoff_ms() -> u64 {
    1000
}

fn default_max_attempts() -> u32 {
    1
}

impl Default for TaskSpec {
    /// An empty spec with the same defaults deserialization applies (`max_attempts` 1).
    fn default() -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            priority: 0,
            resources: Resources::default(),
            timeout_ms: 0,
            max_attempts: default_max_attempts(),
            depends_on: Vec::new(),
            labels: BTreeMap::new(),
            backoff_ms: default_backoff_ms(),
            pool: String::new(),
            constraints: BTreeMap::new(),
            deadline_ms: 0,
            trace_parent: String::new(),
        }
    }
}

/// Lifecycle state of a task.
///
/// ```text
/// pending ──assign──▶ assigned ──start──▶ running ──▶ succeeded | failed | timed_out
///    │                    │                  │
///    └───────cancel───────┴──────────────────┴──▶ cancelled
/// ```
/// The last four are terminal: once reached, a task never changes state again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// The lower-case name used in JSON output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Parses [`TaskState::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Dense index, for per-state counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnd {
    /// The process exited 0 (reported by the agent).
    Succeeded,
    /// The process exited non-zero or could not be started (reported by the agent).
    Failed,
    /// The agent killed the process at the task's execution timeout.
    TimedOut,
    /// The agent killed the process for another reason (drain deadline, shutdown).
    Killed,
    /// The task was cancelled, or passed its hard deadline, while this attempt was current.
    Cancelled,
    /// The agent was declared down or re-registered while this attempt was current.
    Lost,
    /// The attempt was moved to another agent before it started.
    Moved,
}

impl AttemptEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Killed => "killed",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
            Self::Moved => "moved",
        }
    }
}

impl std::fmt::Display for AttemptEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One placement of a task on an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// Agent the attempt was placed on.
    pub agent_id: String,
    /// Fencing token: the log index of the `Assign` entry that created this attempt.
    pub fencing_token: LogIndex,
    pub assigned_at_ms: UnixMillis,
    #[serde(default)]
    pub started_at_ms: Option<UnixMillis>,
    #[serde(default)]
    pub finished_at_ms: Option<UnixMillis>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the attempt ended, when it did not end by itself.
    #[serde(default)]
    pub error: String,
    /// How the attempt ended; `None` while it is current.
    #[serde(default)]
    pub end: Option<AttemptEnd>,
    /// The last bytes of the process's stdout (at most [`crate::validate::MAX_OUTPUT_TAIL`]).
    #[serde(default)]
    pub stdout_tail: String,
    /// The last bytes of the process's stderr (at most [`crate::validate::MAX_OUTPUT_TAIL`]).
    #[serde(default)]
    pub stderr_tail: String,
}

impl Attempt {
    /// Whether this attempt used up one of the task's `max_attempts`: it started, or the agent
    /// reported an end (a spawn failure counts). Attempts moved or lost before starting do not.
    pub fn counts(&self) -> bool {
        self.started_at_ms.is_some()
            || matches!(
                self.end,
                Some(AttemptEnd::Succeeded | AttemptEnd::Failed | AttemptEnd::TimedOut | AttemptEnd::Killed)
            )
    }
}

/// A task as the state machine stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub spec: TaskSpec,
    pub state: TaskState,
    /// Every placement so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Log index of the entry that created the task.
    pub created_index: LogIndex,
    /// Log index of the entry that last changed the task (monotonic per task).
    pub log_index: LogIndex,
    pub submitted_at_ms: UnixMillis,
    pub updated_at_ms: UnixMillis,
    /// Why the task is in its state, when that needs saying (cancel reason, failed dependency, ...).
    #[serde(default)]
    pub reason: String,
    /// Submission order; breaks priority ties first-come first-served.
    pub seq: u64,
    /// Dependencies that have not succeeded yet.
    #[serde(default)]
    pub unmet_deps: u32,
    /// A pending task does not become runnable before this time (retry back-off). 0: no wait.
    #[serde(default)]
    pub not_before_ms: UnixMillis,
    /// When the task last became runnable (for priority ageing and queue-wait figures).
    #[serde(default)]
    pub queued_at_ms: UnixMillis,
    /// The `request_id` of the submit request that created the task (empty: none), so that a
    /// retry of that request is told `created: true`. Not serialized when empty: snapshots of
    /// tasks submitted without a key are unchanged, and older snapshots decode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// The principal that submitted the task (audit). Empty: submitted before principals
    /// existed. With authentication disabled every caller is `anonymous`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub submitted_by: String,
    /// The principal that cancelled the task, when a cancel request ended it (not set on
    /// dependents cancelled in cascade: their `reason` names the dependency).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cancelled_by: String,
}

impl Task {
    /// The current attempt: the last one, while the task is assigned or running.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        match self.state {
            TaskState::Assigned | TaskState::Running => self.attempts.last(),
            _ => None,
        }
    }

    /// The fencing token of the current attempt.
    pub fn current_token(&self) -> Option<LogIndex> {
        self.current_attempt().map(|a| a.fencing_token)
    }

    /// How many of `max_attempts` are used up (see [`Attempt::counts`]).
    pub fn attempts_used(&self) -> u32 {
        self.attempts.iter().filter(|a| a.counts()).count() as u32
    }

    /// The absolute hard deadline, if the spec has one.
    pub fn deadline_at_ms(&self) -> Option<UnixMillis> {
        (self.spec.deadline_ms > 0).then(|| self.submitted_at_ms.saturating_add(self.spec.deadline_ms))
    }
}

/// An agent id: same alphabet and length as a task id.
pub type AgentId = String;

/// Liveness and admission state of an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Takes new work.
    Alive,
    /// Keeps running what it has, takes nothing new.
    Draining,
    /// Declared dead by the leader (or deregistered); its tasks were given new attempts.
    Down,
}

impl AgentState {
    pub const ALL: [AgentState; 3] = [AgentState::Alive, AgentState::Draining, AgentState::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent declares when it registers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: AgentId,
    /// Where the agent runs (host name or address), for operators.
    #[serde(default)]
    pub address: String,
    /// Total resources it offers.
    pub resources: Resources,
    /// Most tasks it runs at once (>= 1).
    pub max_tasks: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pool it serves; empty is the default pool.
    #[serde(default)]
    pub pool: String,
}

/// An agent as the state machine stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub info: AgentInfo,
    pub state: AgentState,
    /// The log index of the `RegisterAgent` entry that created this incarnation. Heartbeats and
    /// assignments carry it; a stale epoch means "re-register and drop your old work".
    pub epoch: LogIndex,
    pub registered_at_ms: UnixMillis,
    pub updated_at_ms: UnixMillis,
    /// Sum of the demands of the tasks assigned to or running on it.
    pub used: Resources,
    /// Number of tasks assigned to or running on it.
    pub tasks: u32,
    /// Why it is in its state (drain reason, "no heartbeat for 10s", ...).
    #[serde(default)]
    pub reason: String,
    /// Set (with `Draining`) by [`crate::Command::RequestAgentExit`]: the agent is to finish
    /// what it runs and exit. Cleared by undraining; a new registration starts without it.
    /// Missing from snapshots taken before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<DrainExit>,
}

/// An agent asked to exit once drained (`taurus agent drain --exit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainExit {
    /// When it was asked (the proposing leader's clock).
    pub requested_at_ms: UnixMillis,
    /// Attempts still running then are killed (and reported) at this time; `None`: at the
    /// agent's own `drain_timeout`.
    #[serde(default)]
    pub deadline_at_ms: Option<UnixMillis>,
}

impl Agent {
    /// Whether a task demanding `need` fits in what is left (slots and every resource).
    pub fn fits(&self, need: &Resources) -> bool {
        self.tasks < self.info.max_tasks
            && self.used.cpu_millis.saturating_add(need.cpu_millis) <= self.info.resources.cpu_millis
            && self.used.memory_mb.saturating_add(need.memory_mb) <= self.info.resources.memory_mb
            && self.used.disk_mb.saturating_add(need.disk_mb) <= self.info.resources.disk_mb
    }
}
