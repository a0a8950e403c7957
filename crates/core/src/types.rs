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

/// One placement of a task on an agent (filled in by the scheduler, issue 3).
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
}
