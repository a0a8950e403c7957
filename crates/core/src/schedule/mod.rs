//! Scheduling policies: pure functions from a view of the cluster to placements.
//!
//! The leader builds a [`View`] from its applied state (plus what only the leader knows, such as
//! observed start latency and reported load), asks the configured [`Policy`] for placements, and
//! proposes them as one `Assign` command. A policy never does I/O and never reads a clock: `now`
//! is in the view. Every policy shares the same rules, implemented once here:
//! - a task only goes to an agent that is `alive`, in the task's pool (empty pool: any), whose
//!   labels include every one of the task's constraints, and that has room (a free slot and the
//!   cpu, memory and disk the task demands): [`AgentView::eligible`];
//! - tasks are considered in order of *aged* priority ([`aged_priority`]), so low-priority work
//!   waiting long enough overtakes newer high-priority work and nothing starves;
//! - capacity used by one placement is subtracted before the next ([`AgentView::take`]);
//! - at most `max_placements` placements per round, each task at most once;
//! - a task that fits nowhere is skipped, not waited for: the next (perhaps smaller) task may
//!   still fit, so one huge high-priority task never blocks the queue (ageing keeps raising its
//!   priority, and it is placed as soon as some agent has room for it);
//! - agents are compared in id order, so equal choices break by id and the same view always
//!   gives the same placements. A round stops early once no alive agent has a free slot.
//!
//! What differs between policies is which eligible agent a task goes to, and whether the policy
//! moves not-yet-started work (only `delay-guided` does):
//!
//! | policy | a task goes to |
//! |---|---|
//! | [`Greedy`] (default) | the first agent with room, in id order from a round-robin cursor |
//! | [`DelayGuided`] | the least loaded, weighted by start latency; relieves overloaded agents |
//! | [`Binpack`] | the agent that is fullest after placing it (best fit) |
//! | [`Spread`] | the agent that is emptiest after placing it |
//!
//! Each policy costs O(candidates × agents) per round at worst, plus one sort of the candidates
//! (and, for `delay-guided`, O(unstarted × agents) for relief).

mod binpack;
mod delay_guided;
mod greedy;
mod spread;

use std::collections::BTreeMap;
use std::collections::HashSet;

use serde::Deserialize;
use serde::Serialize;

use crate::command::Placement;
use crate::types::AgentId;
use crate::types::LogIndex;
use crate::types::Resources;
use crate::types::TaskId;
use crate::types::UnixMillis;

pub use binpack::Binpack;
pub use delay_guided::DelayGuided;
pub use delay_guided::REFERENCE_LATENCY_MS;
pub use greedy::Greedy;
pub use spread::Spread;

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
        share_in_use(self.tasks as u64, &self.used, self.max_tasks, &self.total)
    }

    /// [`utilisation`](Self::utilisation) as it would be after [`take`](Self::take)`(need)`,
    /// without copying the agent.
    pub fn utilisation_with(&self, need: &Resources) -> f64 {
        let used = Resources {
            cpu_millis: self.used.cpu_millis.saturating_add(need.cpu_millis),
            memory_mb: self.used.memory_mb.saturating_add(need.memory_mb),
            disk_mb: self.used.disk_mb.saturating_add(need.disk_mb),
        };
        share_in_use(
            self.tasks.saturating_add(1) as u64,
            &used,
            self.max_tasks,
            &self.total,
        )
    }
}

/// The largest share in use of slots, cpu, memory and disk (a dimension not offered: unused).
fn share_in_use(tasks: u64, used: &Resources, max_tasks: u32, total: &Resources) -> f64 {
    fn share(used: u64, total: u64) -> f64 {
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64
        }
    }
    share(tasks, max_tasks as u64)
        .max(share(used.cpu_millis as u64, total.cpu_millis as u64))
        .max(share(used.memory_mb, total.memory_mb))
        .max(share(used.disk_mb, total.disk_mb))
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
        match self {
            Self::Greedy => Box::new(Greedy),
            Self::DelayGuided => Box::new(DelayGuided),
            Self::Binpack => Box::new(Binpack),
            Self::Spread => Box::new(Spread),
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Priority after ageing: `priority + waited / ageing_ms_per_point` (saturating).
pub fn aged_priority(c: &Candidate, now_ms: UnixMillis, ageing_ms_per_point: u64) -> i64 {
    // Division by zero (ageing disabled) gives no bonus.
    let bonus = now_ms
        .saturating_sub(c.queued_at_ms)
        .checked_div(ageing_ms_per_point)
        .map_or(0, |points| points.min(i32::MAX as u64) as i64);
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

/// One scheduling round in progress: the agents as booked so far, the placements made and the
/// tasks already placed. Every policy runs its choices through this, so the shared rules
/// (eligibility, booking, the placement budget, each task at most once) live in one place.
struct Round<'v> {
    view: &'v View,
    /// A copy of the view's agents, sorted by id, with this round's placements booked.
    agents: Vec<AgentView>,
    /// `agents[i]` is a copy of `view.agents[view_index[i]]`.
    view_index: Vec<usize>,
    /// Tasks placed (or moved) this round.
    placed: HashSet<&'v str>,
    out: Vec<Placement>,
}

impl<'v> Round<'v> {
    fn new(view: &'v View) -> Self {
        // The view promises id order; sorting (stable, O(agents log agents)) makes every tie
        // break by id even if a caller forgets.
        let mut view_index: Vec<usize> = (0..view.agents.len()).collect();
        view_index.sort_by(|&a, &b| view.agents[a].id.cmp(&view.agents[b].id));
        Self {
            view,
            agents: view_index.iter().map(|&i| view.agents[i].clone()).collect(),
            view_index,
            placed: HashSet::new(),
            out: Vec::new(),
        }
    }

    /// Whether the placement budget allows another placement.
    fn budget_left(&self) -> bool {
        self.out.len() < self.view.max_placements
    }

    /// Whether any alive agent still has a free slot. When none has, no candidate can be placed
    /// and the round stops early instead of scanning the rest of the window.
    fn any_free_slot(&self) -> bool {
        self.agents.iter().any(|a| a.alive && a.tasks < a.max_tasks)
    }

    /// Whether `task` was already placed or moved this round.
    fn done(&self, task: &Candidate) -> bool {
        self.placed.contains(task.id.as_str())
    }

    /// Books `task` on agent `to` and records the placement; `from` is the agent index and
    /// fencing token of a move (the source gets the task's demands back).
    fn assign(&mut self, task: &'v Candidate, to: usize, from: Option<(usize, LogIndex)>) {
        debug_assert!(self.agents[to].eligible(task), "policy chose an ineligible agent");
        debug_assert!(self.budget_left() && !self.done(task));
        if let Some((source, _)) = from {
            self.agents[source].give_back(&task.resources);
        }
        let agent = &mut self.agents[to];
        agent.take(&task.resources);
        self.out.push(Placement {
            task_id: task.id.clone(),
            agent_id: agent.id.clone(),
            agent_epoch: agent.epoch,
            move_from: from.map(|(_, token)| token),
        });
        self.placed.insert(task.id.as_str());
    }

    /// The shared placement loop: candidates in [`consideration_order`], each offered to
    /// `choose` with the agents as booked so far. `choose` returns the index of an eligible
    /// agent, or `None` to skip the task (it fits nowhere; a later, smaller task may still fit).
    fn place_candidates(&mut self, mut choose: impl FnMut(&Candidate, &[AgentView]) -> Option<usize>) {
        let view = self.view;
        for i in consideration_order(view) {
            if !self.budget_left() || !self.any_free_slot() {
                break;
            }
            let task = &view.candidates[i];
            if self.done(task) {
                continue;
            }
            if let Some(to) = choose(task, &self.agents) {
                self.assign(task, to, None);
            }
        }
    }

    fn into_placements(self) -> Vec<Placement> {
        self.out
    }
}

/// The eligible agent for `task` with the smallest key; on equal keys the first (lowest id) wins.
fn min_eligible_by<K: Ord>(
    agents: &[AgentView],
    task: &Candidate,
    key: impl Fn(&AgentView) -> K,
) -> Option<usize> {
    agents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.eligible(task))
        // `min_by_key` returns the first of equal minima, i.e. the lowest id.
        .min_by_key(|(_, a)| key(a))
        .map(|(i, _)| i)
}

/// An `f64` (a utilisation or a score) ordered totally, for use in sort and min keys.
#[derive(Clone, Copy, Debug)]
struct Score(f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
