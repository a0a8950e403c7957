//! Scheduling policies: pure functions from a view of the cluster to placements.
//!
//! The leader builds a [`View`] from its applied state (plus what only the leader knows, such as
//! observed start latency and reported load), asks the configured [`Policy`] for placements, and
//! proposes them as one `Assign` command. A policy never does I/O and never reads a clock: `now`
//! is in the view. Every policy shares the same rules, implemented once here:
//! - a task only goes to an agent that is `alive`, in the task's pool (empty pool: any), whose
//!   labels include every one of the task's constraints, and that has room (a free slot and the
//!   cpu, memory and disk the task demands): [`eligible`];
//! - tasks are considered in order of *aged* priority ([`aged_priority`]), so low-priority work
//!   waiting long enough overtakes newer high-priority work and nothing starves;
//! - capacity used by one placement is subtracted before the next ([`AgentView::take`]).
//!
//! What differs between policies is which eligible agent a task goes to, and whether the policy
//! moves not-yet-started work (only `delay-guided` does).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::command::Placement;
use crate::types::AgentId;
use crate::types::LogIndex;
use crate::types::Resources;
use crate::types::TaskId;
use crate::types::UnixMillis;

/// One runnable (or movable) task the policy may place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: TaskId,
    pub priority: i32,
    /// Submission order: breaks ties first come first served.
    pub seq: u64,
    /// When it became runnable.
    pub queued_at_ms: UnixMillis,
    pub resources: Resources,
    pub pool: String,
    pub constraints: BTreeMap<String, String>,
}

/// A task assigned to an agent but not started yet: the only kind of work that may be moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unstarted {
    pub task: Candidate,
    pub token: LogIndex,
}

/// One agent as the policy sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentView {
    pub id: AgentId,
    pub epoch: LogIndex,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    /// Declared capacity.
    pub total: Resources,
    pub max_tasks: u32,
    /// Demands of the tasks assigned to or running on it (from the replicated state).
    pub used: Resources,
    pub tasks: u32,
    /// Only alive agents take new work; draining ones are in the view so that their load counts.
    pub alive: bool,
    /// Average load in [0, ∞) the agent reported in heartbeats (1.0 = at its declared limits);
    /// `None` before the first report. Leader-only knowledge.
    pub load: Option<f64>,
    /// Observed assigned-to-started latency, moving average, in milliseconds. Leader-only.
    pub start_latency_ms: Option<f64>,
    /// Tasks assigned to it and not started, oldest first (filled by the leader only for agents
    /// whose `load` exceeds 1.0, the only ones a policy may relieve).
    pub unstarted: Vec<Unstarted>,
}

impl AgentView {
    /// Whether `task` may go here: alive, pool, constraints, free slot and resources.
    pub fn eligible(&self, task: &Candidate) -> bool {
        self.alive
            && (task.pool.is_empty() || task.pool == self.pool)
            && task
                .constraints
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
            && self.fits(&task.resources)
    }

    /// A free slot and enough of every resource.
    pub fn fits(&self, need: &Resources) -> bool {
        self.tasks < self.max_tasks
            && self.used.cpu_millis.saturating_add(need.cpu_millis) <= self.total.cpu_millis
            && self.used.memory_mb.saturating_add(need.memory_mb) <= self.total.memory_mb
            && self.used.disk_mb.saturating_add(need.disk_mb) <= self.total.disk_mb
    }

    /// Books `need` on this agent (after a placement in the same round).
    pub fn take(&mut self, need: &Resources) {
        self.tasks = self.tasks.saturating_add(1);
        self.used.cpu_millis = self.used.cpu_millis.saturating_add(need.cpu_millis);
        self.used.memory_mb = self.used.memory_mb.saturating_add(need.memory_mb);
        self.used.disk_mb = self.used.disk_mb.saturating_add(need.disk_mb);
    }

    /// Releases `need` (a task moved away in the same round).
    pub fn give_back(&mut self, need: &Resources) {
        self.tasks = self.tasks.saturating_sub(1);
        self.used.cpu_millis = self.used.cpu_millis.saturating_sub(need.cpu_millis);
        self.used.memory_mb = self.used.memory_mb.saturating_sub(need.memory_mb);
        self.used.disk_mb = self.used.disk_mb.saturating_sub(need.disk_mb);
    }

    /// Share of capacity in use, in [0, 1]: the largest of slots, cpu, memory and disk (a
    /// dimension the agent does not offer counts as unused).
    pub fn utilisation(&self) -> f64 {
        fn share(used: u64, total: u64) -> f64 {
            if total == 0 {
                0.0
            } else {
                used as f64 / total as f64
            }
        }
        share(self.tasks as u64, self.max_tasks as u64)
            .max(share(self.used.cpu_millis as u64, self.total.cpu_millis as u64))
            .max(share(self.used.memory_mb, self.total.memory_mb))
            .max(share(self.used.disk_mb, self.total.disk_mb))
    }
}

/// Everything a policy decides from.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub now_ms: UnixMillis,
    /// Runnable tasks (a bounded window of the queue: the highest-priority and the oldest).
    pub candidates: Vec<Candidate>,
    /// Agents in id order.
    pub agents: Vec<AgentView>,
    /// Priority ageing: one priority point per this many milliseconds of waiting; 0 disables.
    pub ageing_ms_per_point: u64,
    /// Most placements to return this round.
    pub max_placements: usize,
}

/// A scheduling policy: a pure function of the view.
pub trait Policy: Send + Sync {
    /// The name used in configuration (`greedy`, `delay-guided`, `binpack`, `spread`).
    fn name(&self) -> &'static str;
    /// Placements for this round, at most `view.max_placements`, each task at most once.
    fn place(&self, view: &View) -> Vec<Placement>;
}

/// The policies Taurus ships, by configuration name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    #[default]
    Greedy,
    DelayGuided,
    Binpack,
    Spread,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Greedy,
        PolicyKind::DelayGuided,
        PolicyKind::Binpack,
        PolicyKind::Spread,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greedy => "greedy",
            Self::DelayGuided => "delay-guided",
            Self::Binpack => "binpack",
            Self::Spread => "spread",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The policy object.
    pub fn build(self) -> Box<dyn Policy> {
        todo_policies::build(self)
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Priority after ageing: `priority + waited / ageing_ms_per_point` (saturating).
pub fn aged_priority(c: &Candidate, now_ms: UnixMillis, ageing_ms_per_point: u64) -> i64 {
    let bonus = if ageing_ms_per_point == 0 {
        0
    } else {
        (now_ms.saturating_sub(c.queued_at_ms) / ageing_ms_per_point).min(i32::MAX as u64) as i64
    };
    c.priority as i64 + bonus
}

/// Candidate indexes in the order every policy considers them: aged priority descending, then
/// submission order.
pub fn consideration_order(view: &View) -> Vec<usize> {
    let mut order: Vec<usize> = (0..view.candidates.len()).collect();
    order.sort_by_key(|&i| {
        let c = &view.candidates[i];
        (
            std::cmp::Reverse(aged_priority(c, view.now_ms, view.ageing_ms_per_point)),
            c.seq,
        )
    });
    order
}

mod todo_policies {
    use super::*;

    pub fn build(_kind: PolicyKind) -> Box<dyn Policy> {
        unimplemented!("policies are being written")
    }
}
