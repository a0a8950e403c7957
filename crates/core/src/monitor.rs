//! Monitoring: utilisation, queue, execution efficiency and anomaly detection.
//!
//! Pure, like the rest of this crate: [`report`] is a function of (the applied [`State`], a
//! bounded [`History`] of periodic [`Sample`]s, leader-only [`Observations`], [`Thresholds`],
//! `now_ms`). The master takes a sample every few seconds (`taurus_master::monitor`), keeps the
//! last few minutes of them, and calls [`report`] when someone asks (`GetMonitoring`, the
//! status page, metrics), at most once per sample (it caches the result).
//!
//! # Figures
//!
//! - **Utilisation** of an agent is its *dominant share*: the largest of slots used / `max_tasks`
//!   and, for each resource the agent offers (CPU, memory, disk), used / offered. Of the cluster,
//!   the same over the sums of every agent that is not down. A down agent holds nothing.
//! - **Queue**: tasks per state; pending tasks split into runnable (dependencies met, back-off
//!   over), delayed (waiting out a retry back-off) and waiting for dependencies; runnable tasks
//!   per priority and per pool; and the queue's growth rate over the history.
//! - **Efficiency** over the most recently finished tasks whose last attempt ran: queue wait
//!   (from becoming runnable to starting) and run time (start to end), mean and percentiles,
//!   and the share of (wait + run) spent running.
//!
//! # Anomalies
//!
//! Each [`AnomalyKind`] documents when it fires and what it suggests. Conditions on utilisation,
//! lag and reachability must hold *persistently*: in every sample of a window, and only once the
//! history reaches back over the whole window (a master that just started reports none of them).
//! Tasks past their deadline or timeout are judged on the state alone; heartbeats only on the
//! leader (followers never hear them).

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::State;
use crate::types::Agent;
use crate::types::AgentId;
use crate::types::AgentState;
use crate::types::LogIndex;
use crate::types::TaskState;
use crate::types::UnixMillis;

/// At most this many anomalies about individual tasks of one kind; the rest are summed up in
/// one more anomaly ("and N more").
pub const MAX_TASK_ANOMALIES: usize = 10;

/// When anomalies fire. Durations in milliseconds, utilisation as a fraction (0.0 to 1.0).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Utilisation at or above this is "high".
    pub high_utilisation: f64,
    /// Utilisation at or below this is "low".
    pub low_utilisation: f64,
    /// How long utilisation must stay high or low before it is an anomaly.
    pub utilisation_for_ms: u64,
    /// An agent alive or draining not heard from for this long (leader only) has missed
    /// heartbeats (agents send one a second by default; the leader declares them down after
    /// `agent_ttl`).
    pub heartbeat_late_ms: u64,
    /// This many agent transitions (down, back up, re-registered under a new epoch) within
    /// `flap_window_ms` is flapping.
    pub flap_transitions: u32,
    pub flap_window_ms: u64,
    /// A task still not terminal this long past its hard deadline, or still running this long
    /// past its execution timeout, is stuck.
    pub stuck_grace_ms: u64,
    /// The queue (pending tasks) growing at least this many tasks per minute over
    /// `queue_window_ms`, while at least `queue_min_tasks` are pending, is an anomaly.
    pub queue_growth_per_min: f64,
    pub queue_window_ms: u64,
    pub queue_min_tasks: u64,
    /// A master that has applied this many entries fewer than the cluster has committed, for
    /// `lag_for_ms`, lags. A master unreachable (or no leader at all) for `lag_for_ms` is
    /// reported too.
    pub lag_entries: u64,
    pub lag_for_ms: u64,
    /// How many of the most recently finished tasks the efficiency figures cover.
    pub efficiency_tasks: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            high_utilisation: 0.9,
            low_utilisation: 0.1,
            utilisation_for_ms: 5 * 60_000,
            heartbeat_late_ms: 3_000,
            flap_transitions: 3,
            flap_window_ms: 10 * 60_000,
            stuck_grace_ms: 10_000,
            queue_growth_per_min: 10.0,
            queue_window_ms: 2 * 60_000,
            queue_min_tasks: 10,
            lag_entries: 1_000,
            lag_for_ms: 30_000,
            efficiency_tasks: 500,
        }
    }
}

/// One agent in a [`Sample`].
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSample {
    pub id: AgentId,
    pub epoch: LogIndex,
    pub state: AgentState,
    pub utilisation: f64,
}

/// One master in a [`Sample`], as the sampling master saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSample {
    pub id: u64,
    /// Whether it answered.
    pub reachable: bool,
    /// Entries it has applied fewer than the highest commit index any member reported (0 when
    /// unreachable).
    pub lag: u64,
}

/// What the master records every few seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at_ms: UnixMillis,
    /// Pending tasks (runnable, delayed, waiting for dependencies).
    pub pending: u64,
    pub runnable: u64,
    pub cluster_utilisation: f64,
    /// In id order ([`Sample::take`] makes them so, [`History::push`] sorts them if they are
    /// not): [`Sample::agent`] looks them up by binary search.
    pub agents: Vec<AgentSample>,
    /// Empty when the sampling master did not look (unknown, not "no members").
    pub members: Vec<MemberSample>,
    /// The leader as the sampling master saw it.
    pub leader: Option<u64>,
}

impl Sample {
    /// Samples `state` at `now_ms`; `members` and `leader` come from Raft (see [`MemberSample`]).
    pub fn take(
        state: &State,
        members: Vec<MemberSample>,
        leader: Option<u64>,
        now_ms: UnixMillis,
    ) -> Sample {
        // `State::agents` is in id order already.
        let agents = state
            .agents()
            .map(|a| AgentSample {
                id: a.info.id.clone(),
                epoch: a.epoch,
                state: a.state,
                utilisation: AgentUsage::of(a).utilisation,
            })
            .collect();
        Sample {
            at_ms: now_ms,
            pending: state.count(TaskState::Pending) as u64,
            runnable: state.runnable_len() as u64,
            cluster_utilisation: ClusterUsage::of(state).utilisation,
            agents,
            members,
            leader,
        }
    }

    /// The sample of agent `id`, if it was registered then (agents must be in id order).
    pub fn agent(&self, id: &str) -> Option<&AgentSample> {
        self.agents
            .binary_search_by(|a| a.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.agents[i])
    }
}

/// The last samples, oldest first, at most `capacity` of them. Samples are shared, so a clone
/// (a reader's copy) costs one reference count per sample.
#[derive(Clone, Debug)]
pub struct History {
    samples: VecDeque<Arc<Sample>>,
    capacity: usize,
}

impl History {
    /// An empty history keeping at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// Adds a sample, forgetting the oldest beyond the capacity. A sample older than the newest
    /// one (a clock stepped back) replaces the history: windows are judged on ordered samples.
    pub fn push(&mut self, mut sample: Sample) {
        if !sample.agents.is_sorted_by(|a, b| a.id <= b.id) {
            sample.agents.sort_by(|a, b| a.id.cmp(&b.id));
        }
        if self.samples.back().is_some_and(|b| b.at_ms > sample.at_ms) {
            self.samples.clear();
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Arc::new(sample));
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back().map(|s| &**s)
    }

    /// Every sample, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Sample> + '_ {
        self.samples.iter().map(|s| &**s)
    }

    /// Samples taken within `window_ms` before `now_ms` (inclusive), oldest first.
    pub fn within(&self, now_ms: UnixMillis, window_ms: u64) -> impl Iterator<Item = &Sample> + '_ {
        let from = now_ms.saturating_sub(window_ms);
        self.iter().filter(move |s| s.at_ms >= from)
    }

    /// Whether the history reaches back at least `window_ms` before `now_ms`, so that a
    /// condition seen in every sample of the window held for the whole window.
    pub fn covers(&self, now_ms: UnixMillis, window_ms: u64) -> bool {
        self.samples
            .front()
            .is_some_and(|s| s.at_ms <= now_ms.saturating_sub(window_ms))
    }

    /// Whether `pred` held in every sample of the window (and the history covers it, and the
    /// window holds at least one sample).
    fn sustained(&self, now_ms: UnixMillis, window_ms: u64, pred: impl Fn(&Sample) -> bool) -> bool {
        if !self.covers(now_ms, window_ms) {
            return false;
        }
        let mut any = false;
        for s in self.within(now_ms, window_ms) {
            if !pred(s) {
                return false;
            }
            any = true;
        }
        any
    }
}

/// Leader-only observations that are not in the replicated state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// Per agent, milliseconds since the leader last heard from it (or since it was elected,
    /// whichever is later). `None` when the reporting master does not lead: heartbeat checks
    /// are then skipped.
    pub heartbeat_silence_ms: Option<BTreeMap<AgentId, u64>>,
    /// Load each agent last reported in a heartbeat (leader only).
    pub load: BTreeMap<AgentId, f64>,
}

/// How used one agent is.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentUsage {
    pub id: AgentId,
    pub state: AgentState,
    pub pool: String,
    pub tasks: u32,
    pub max_tasks: u32,
    /// Each share in 0.0..=1.0 (0 for a resource the agent does not offer).
    pub slots: f64,
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    /// The largest of the shares above.
    pub utilisation: f64,
    /// Load the agent reported (leader only).
    pub load: Option<f64>,
    /// Milliseconds since its last heartbeat (leader only).
    pub heartbeat_silence_ms: Option<u64>,
}

fn share(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (used as f64 / total as f64).clamp(0.0, 1.0)
    }
}

impl AgentUsage {
    pub fn of(a: &Agent) -> AgentUsage {
        let offered = &a.info.resources;
        let (slots, cpu, memory, disk) = if a.state == AgentState::Down {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            (
                share(u64::from(a.tasks), u64::from(a.info.max_tasks)),
                share(u64::from(a.used.cpu_millis), u64::from(offered.cpu_millis)),
                share(a.used.memory_mb, offered.memory_mb),
                share(a.used.disk_mb, offered.disk_mb),
            )
        };
        AgentUsage {
            id: a.info.id.clone(),
            state: a.state,
            pool: a.info.pool.clone(),
            tasks: a.tasks,
            max_tasks: a.info.max_tasks,
            slots,
            cpu,
            memory,
            disk,
            utilisation: slots.max(cpu).max(memory).max(disk),
            load: None,
            heartbeat_silence_ms: None,
        }
    }
}

/// How used the whole cluster is: every agent that is not down.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterUsage {
    pub agents_alive: u32,
    pub agents_draining: u32,
    pub agents_down: u32,
    pub slots_used: u64,
    pub slots_total: u64,
    pub slots: f64,
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    /// The largest of the shares above.
    pub utilisation: f64,
}

impl ClusterUsage {
    pub fn of(state: &State) -> ClusterUsage {
        let mut c = ClusterUsage::default();
        let (mut cpu_used, mut cpu_total) = (0u64, 0u64);
        let (mut mem_used, mut mem_total) = (0u64, 0u64);
        let (mut disk_used, mut disk_total) = (0u64, 0u64);
        for a in state.agents() {
            match a.state {
                AgentState::Alive => c.agents_alive += 1,
                AgentState::Draining => c.agents_draining += 1,
                AgentState::Down => {
                    c.agents_down += 1;
                    continue;
                }
            }
            c.slots_used += u64::from(a.tasks);
            c.slots_total += u64::from(a.info.max_tasks);
            cpu_used += u64::from(a.used.cpu_millis);
            cpu_total += u64::from(a.info.resources.cpu_millis);
            mem_used = mem_used.saturating_add(a.used.memory_mb);
            mem_total = mem_total.saturating_add(a.info.resources.memory_mb);
            disk_used = disk_used.saturating_add(a.used.disk_mb);
            disk_total = disk_total.saturating_add(a.info.resources.disk_mb);
        }
        c.slots = share(c.slots_used, c.slots_total);
        c.cpu = share(cpu_used, cpu_total);
        c.memory = share(mem_used, mem_total);
        c.disk = share(disk_used, disk_total);
        c.utilisation = c.slots.max(c.cpu).max(c.memory).max(c.disk);
        c
    }
}

/// The task queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Tasks per state, every state listed (in lifecycle order).
    pub by_state: Vec<(TaskState, u64)>,
    /// Pending tasks whose dependencies are met and back-off is over: the scheduler's queue.
    pub runnable: u64,
    /// Pending tasks waiting out a retry back-off.
    pub delayed: u64,
    /// Pending tasks waiting for dependencies.
    pub waiting_deps: u64,
    /// Runnable tasks per priority, highest priority first.
    pub by_priority: Vec<(i32, u64)>,
    /// Runnable tasks per pool (`""`: any pool), in name order.
    pub by_pool: Vec<(String, u64)>,
    /// Growth of the pending count in tasks per minute over the queue window (least squares
    /// over the samples); `None` with fewer than two samples in the window.
    pub growth_per_min: Option<f64>,
}

/// Summary figures of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub mean_ms: f64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
}

impl Spread {
    /// Of `values` (sorted here); all zero when empty.
    pub fn of(mut values: Vec<u64>) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        values.sort_unstable();
        let n = values.len();
        let at = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Spread {
            mean_ms: values.iter().map(|v| *v as f64).sum::<f64>() / n as f64,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            max_ms: values[n - 1],
        }
    }
}

/// Execution efficiency over recently finished tasks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Efficiency {
    /// How many finished tasks the figures cover (those whose last attempt started).
    pub tasks: u64,
    /// From becoming runnable to the start of the last attempt.
    pub queue_wait: Spread,
    /// From the start to the end of the last attempt.
    pub run_time: Spread,
    /// Total run time / (total run time + total queue wait); `None` when nothing is covered.
    pub run_share: Option<f64>,
    /// Tasks that finished in the minute before `now` (among those covered).
    pub finished_last_minute: u64,
}

/// How serious an anomaly is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing (capacity that could be given back).
    Info,
    /// Needs attention soon.
    Warning,
    /// Something is broken now.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What kind of anomaly. The snake-case name ([`AnomalyKind::as_str`]) is the wire and metrics
/// label; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// An agent went down and came back, or re-registered, `flap_transitions` times within
    /// `flap_window`: an unstable machine or network. Suggests draining it and checking it.
    AgentFlapping,
    /// (Leader only.) An agent alive or draining not heard from for `heartbeat_late`: it will
    /// be declared down at `agent_ttl`. Suggests checking its host and network.
    HeartbeatMissing,
    /// An alive agent at or above `high_utilisation` for `utilisation_for`: suggests giving it
    /// more resources or slots, or adding agents to its pool.
    AgentOverloaded,
    /// An alive agent at or below `low_utilisation` for `utilisation_for` while the cluster as
    /// a whole was busier: work is not reaching it (pool, constraints). Suggests checking its
    /// pool and labels, or giving it up.
    AgentUnderused,
    /// The cluster at or above `high_utilisation` for `utilisation_for` with runnable tasks
    /// waiting: suggests adding agents.
    ClusterSaturated,
    /// The cluster at or below `low_utilisation` for `utilisation_for`: suggests removing
    /// agents (or lowering their resources).
    ClusterUnderused,
    /// A task still not terminal `stuck_grace` past its hard deadline: the leader's `Tick`
    /// should have ended it. Suggests checking that a leader is running its duties.
    TaskPastDeadline,
    /// A task still running `stuck_grace` past its execution timeout: its agent should have
    /// killed it. Suggests checking the agent (or cancelling the task).
    TaskPastTimeout,
    /// The pending count grew at least `queue_growth_per_min` over `queue_window` with at least
    /// `queue_min_tasks` pending: work arrives faster than it drains. Suggests adding agents.
    QueueGrowing,
    /// A master `lag_entries` or more behind the cluster's commit index for `lag_for`: slow
    /// disk or CPU, or a bad link. Suggests checking that master (or replacing it).
    MasterLagging,
    /// A member did not answer for `lag_for`: down or partitioned. The quorum margin is smaller.
    MasterUnreachable,
    /// No leader for `lag_for`: writes and scheduling have stopped. Suggests checking that a
    /// majority of masters is up and can reach each other.
    NoLeader,
    /// Runnable tasks of a pool that no alive agent serves (for the default pool: no alive
    /// agent at all), the oldest waiting longer than `stuck_grace`: they cannot start. Suggests
    /// starting agents in that pool (or checking the tasks' pool name).
    UnservedPool,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 13] = [
        AnomalyKind::AgentFlapping,
        AnomalyKind::HeartbeatMissing,
        AnomalyKind::AgentOverloaded,
        AnomalyKind::AgentUnderused,
        AnomalyKind::ClusterSaturated,
        AnomalyKind::ClusterUnderused,
        AnomalyKind::TaskPastDeadline,
        AnomalyKind::TaskPastTimeout,
        AnomalyKind::QueueGrowing,
        AnomalyKind::MasterLagging,
        AnomalyKind::MasterUnreachable,
        AnomalyKind::NoLeader,
        AnomalyKind::UnservedPool,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::AgentFlapping => "agent_flapping",
            AnomalyKind::HeartbeatMissing => "heartbeat_missing",
            AnomalyKind::AgentOverloaded => "agent_overloaded",
            AnomalyKind::AgentUnderused => "agent_underused",
            AnomalyKind::ClusterSaturated => "cluster_saturated",
            AnomalyKind::ClusterUnderused => "cluster_underused",
            AnomalyKind::TaskPastDeadline => "task_past_deadline",
            AnomalyKind::TaskPastTimeout => "task_past_timeout",
            AnomalyKind::QueueGrowing => "queue_growing",
            AnomalyKind::MasterLagging => "master_lagging",
            AnomalyKind::MasterUnreachable => "master_unreachable",
            AnomalyKind::NoLeader => "no_leader",
            AnomalyKind::UnservedPool => "unserved_pool",
        }
    }

    pub fn parse(s: &str) -> Option<AnomalyKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One thing that looks wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// What it is about: `agent/<id>`, `task/<id>`, `master/<id>`, `pool/<name>`, `cluster`,
    /// `queue`, `tasks` (the rest of a capped list).
    pub subject: String,
    pub severity: Severity,
    /// What was observed, with the figures.
    pub message: String,
    /// What an operator might do.
    pub suggestion: String,
}

/// Everything [`report`] computes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub at_ms: UnixMillis,
    pub agents: Vec<AgentUsage>,
    pub cluster: ClusterUsage,
    pub queue: QueueStats,
    pub efficiency: Efficiency,
    /// Most severe first, then by kind and subject.
    pub anomalies: Vec<Anomaly>,
    /// Samples in the history and how far back they reach.
    pub samples: u64,
    pub history_ms: u64,
}

/// Computes the monitoring report. See the module docs.
pub fn report(
    state: &State,
    history: &History,
    obs: &Observations,
    t: &Thresholds,
    now_ms: UnixMillis,
) -> Report {
    let mut agents: Vec<AgentUsage> = state.agents().map(AgentUsage::of).collect();
    for a in &mut agents {
        a.load = obs.load.get(&a.id).copied();
        a.heartbeat_silence_ms = obs
            .heartbeat_silence_ms
            .as_ref()
            .and_then(|m| m.get(&a.id).copied());
    }
    let cluster = ClusterUsage::of(state);
    let queue = queue_stats(state, history, t, now_ms);
    let efficiency = efficiency(state, t.efficiency_tasks, now_ms);

    let mut anomalies = Vec::new();
    agent_anomalies(state, history, obs, t, now_ms, &mut anomalies);
    cluster_anomalies(&cluster, history, t, now_ms, &mut anomalies);
    task_anomalies(state, t, now_ms, &mut anomalies);
    queue_anomalies(&queue, history, t, now_ms, &mut anomalies);
    pool_anomalies(state, &queue, t, now_ms, &mut anomalies);
    master_anomalies(history, t, now_ms, &mut anomalies);
    anomalies.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.kind.cmp(&b.kind))
            .then_with(|| a.subject.cmp(&b.subject))
    });

    Report {
        at_ms: now_ms,
        agents,
        cluster,
        queue,
        efficiency,
        anomalies,
        samples: history.len() as u64,
        history_ms: history
            .iter()
            .next()
            .map_or(0, |s| now_ms.saturating_sub(s.at_ms)),
    }
}

fn queue_stats(state: &State, history: &History, t: &Thresholds, now_ms: UnixMillis) -> QueueStats {
    let mut by_priority: BTreeMap<std::cmp::Reverse<i32>, u64> = BTreeMap::new();
    // Borrowed pool names: no allocation per runnable task (the backlog may be millions).
    let mut by_pool: BTreeMap<&str, u64> = BTreeMap::new();
    for (pool, priority) in state.runnable_pools_priorities() {
        *by_priority.entry(std::cmp::Reverse(priority)).or_default() += 1;
        *by_pool.entry(pool).or_default() += 1;
    }
    let runnable = state.runnable_len() as u64;
    let delayed = state.delayed_len() as u64;
    let pending = state.count(TaskState::Pending) as u64;
    QueueStats {
        by_state: TaskState::ALL
            .iter()
            .map(|s| (*s, state.count(*s) as u64))
            .collect(),
        runnable,
        delayed,
        waiting_deps: pending.saturating_sub(runnable + delayed),
        by_priority: by_priority.into_iter().map(|(p, n)| (p.0, n)).collect(),
        by_pool: by_pool
            .into_iter()
            .map(|(pool, n)| (pool.to_string(), n))
            .collect(),
        growth_per_min: slope_per_min(
            history
                .within(now_ms, t.queue_window_ms)
                .map(|s| (s.at_ms, s.pending)),
        ),
    }
}

/// Least-squares slope of `(at_ms, value)` in units per minute; `None` with fewer than two
/// distinct times.
fn slope_per_min(points: impl Iterator<Item = (UnixMillis, u64)>) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points.map(|(t, v)| (t as f64, v as f64)).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx * 60_000.0)
}

fn efficiency(state: &State, max_tasks: usize, now_ms: UnixMillis) -> Efficiency {
    let mut waits = Vec::new();
    let mut runs = Vec::new();
    let mut last_minute = 0;
    for task in state.recently_finished().take(max_tasks) {
        let Some(last) = task.attempts.last() else {
            continue;
        };
        let (Some(started), Some(finished)) = (last.started_at_ms, last.finished_at_ms) else {
            continue;
        };
        let became_runnable = if task.queued_at_ms > 0 {
            task.queued_at_ms
        } else {
            task.submitted_at_ms
        };
        waits.push(started.saturating_sub(became_runnable));
        runs.push(finished.saturating_sub(started));
        if finished.saturating_add(60_000) >= now_ms {
            last_minute += 1;
        }
    }
    let total_wait: u64 = waits.iter().sum();
    let total_run: u64 = runs.iter().sum();
    let tasks = runs.len() as u64;
    Efficiency {
        tasks,
        queue_wait: Spread::of(waits),
        run_time: Spread::of(runs),
        run_share: match total_run + total_wait {
            0 if tasks == 0 => None,
            0 => Some(1.0),
            sum => Some(total_run as f64 / sum as f64),
        },
        finished_last_minute: last_minute,
    }
}

fn pct(f: f64) -> String {
    format!("{:.0}%", f * 100.0)
}

fn secs(ms: u64) -> String {
    if ms >= 10_000 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn agent_anomalies(
    state: &State,
    history: &History,
    obs: &Observations,
    t: &Thresholds,
    now_ms: UnixMillis,
    out: &mut Vec<Anomaly>,
) {
    for agent in state.agents() {
        let id = &agent.info.id;
        let subject = format!("agent/{id}");

        // Flapping: transitions between consecutive samples within the window.
        let mut transitions = 0u32;
        let mut prev: Option<&AgentSample> = None;
        for s in history.within(now_ms, t.flap_window_ms) {
            let Some(cur) = s.agent(id) else {
                continue;
            };
            if let Some(p) = prev {
                let down_changed = (p.state == AgentState::Down) != (cur.state == AgentState::Down);
                if p.epoch != cur.epoch || down_changed {
                    transitions += 1;
                }
            }
            prev = Some(cur);
        }
        if t.flap_transitions > 0 && transitions >= t.flap_transitions {
            out.push(Anomaly {
                kind: AnomalyKind::AgentFlapping,
                subject: subject.clone(),
                severity: Severity::Warning,
                message: format!(
                    "{transitions} transitions (down, back up or re-registered) in the last {}",
                    secs(t.flap_window_ms)
                ),
                suggestion: "drain the agent and check its host, network and agent logs".into(),
            });
        }

        if agent.state == AgentState::Down {
            continue;
        }
        if let Some(silence) = obs
            .heartbeat_silence_ms
            .as_ref()
            .and_then(|m| m.get(id).copied())
            .filter(|s| *s >= t.heartbeat_late_ms)
        {
            out.push(Anomaly {
                kind: AnomalyKind::HeartbeatMissing,
                subject: subject.clone(),
                severity: Severity::Warning,
                message: format!("no heartbeat for {} (agent is {})", secs(silence), agent.state),
                suggestion: "check the agent's host and its network path to the masters; it is declared \
                             down once agent_ttl passes"
                    .into(),
            });
        }

        if agent.state != AgentState::Alive {
            continue;
        }
        let util_of = |s: &Sample| s.agent(id).map(|a| a.utilisation);
        let window = t.utilisation_for_ms;
        if history.sustained(now_ms, window, |s| {
            util_of(s).is_some_and(|u| u >= t.high_utilisation)
        }) {
            out.push(Anomaly {
                kind: AnomalyKind::AgentOverloaded,
                subject: subject.clone(),
                severity: Severity::Warning,
                message: format!(
                    "utilisation at or above {} for {} (now {})",
                    pct(t.high_utilisation),
                    secs(window),
                    pct(AgentUsage::of(agent).utilisation)
                ),
                suggestion: format!(
                    "give the agent more resources or slots (max_tasks), or add agents to pool {:?}",
                    agent.info.pool
                ),
            });
        }
        if history.sustained(now_ms, window, |s| {
            util_of(s).is_some_and(|u| u <= t.low_utilisation) && s.cluster_utilisation > t.low_utilisation
        }) {
            out.push(Anomaly {
                kind: AnomalyKind::AgentUnderused,
                subject,
                severity: Severity::Info,
                message: format!(
                    "utilisation at or below {} for {} while the cluster was busier",
                    pct(t.low_utilisation),
                    secs(window)
                ),
                suggestion: "check that its pool and labels match the queued work, or give the agent up"
                    .into(),
            });
        }
    }
}

fn cluster_anomalies(
    cluster: &ClusterUsage,
    history: &History,
    t: &Thresholds,
    now_ms: UnixMillis,
    out: &mut Vec<Anomaly>,
) {
    let window = t.utilisation_for_ms;
    if history.sustained(now_ms, window, |s| {
        s.cluster_utilisation >= t.high_utilisation && s.runnable > 0
    }) {
        out.push(Anomaly {
            kind: AnomalyKind::ClusterSaturated,
            subject: "cluster".into(),
            severity: Severity::Warning,
            message: format!(
                "utilisation at or above {} with runnable tasks waiting for {} (now {})",
                pct(t.high_utilisation),
                secs(window),
                pct(cluster.utilisation)
            ),
            suggestion: "add agents (or give the existing ones more resources)".into(),
        });
    }
    if cluster.agents_alive > 0
        && history.sustained(now_ms, window, |s| {
            s.cluster_utilisation <= t.low_utilisation
                && s.agents.iter().any(|a| a.state == AgentState::Alive)
        })
    {
        out.push(Anomaly {
            kind: AnomalyKind::ClusterUnderused,
            subject: "cluster".into(),
            severity: Severity::Info,
            message: format!(
                "utilisation at or below {} for {} with {} agents alive (now {})",
                pct(t.low_utilisation),
                secs(window),
                cluster.agents_alive,
                pct(cluster.utilisation)
            ),
            suggestion: "remove agents or lower their resources; the cluster is larger than its work".into(),
        });
    }
}

fn task_anomalies(state: &State, t: &Thresholds, now_ms: UnixMillis, out: &mut Vec<Anomaly>) {
    let limit = now_ms.saturating_sub(t.stuck_grace_ms);
    let past_deadline = state
        .by_deadline()
        .take_while(|(at, _)| *at < limit)
        .filter(|(_, task)| !task.state.is_terminal());
    push_capped(
        out,
        AnomalyKind::TaskPastDeadline,
        Severity::Critical,
        past_deadline,
        |(at, task)| {
            (
                format!("task/{}", task.spec.id),
                format!(
                    "still {} {} past its hard deadline",
                    task.state,
                    secs(now_ms.saturating_sub(at))
                ),
            )
        },
        "check that a leader is running its duties (its Tick ends such tasks); cancel the task if it persists",
    );

    // Walked, not collected: only the offenders matter, and only the first few are described.
    let past_timeout = state.tasks_in(TaskState::Running).filter_map(|task| {
        let attempt = task.current_attempt()?;
        let started = attempt.started_at_ms?;
        if task.spec.timeout_ms == 0 {
            return None;
        }
        let due = started.saturating_add(task.spec.timeout_ms);
        (due < limit).then_some((task, attempt, started, due))
    });
    push_capped(
        out,
        AnomalyKind::TaskPastTimeout,
        Severity::Warning,
        past_timeout,
        |(task, attempt, started, due)| {
            (
                format!("task/{}", task.spec.id),
                format!(
                    "running on agent {} for {}, {} past its timeout",
                    attempt.agent_id,
                    secs(now_ms.saturating_sub(started)),
                    secs(now_ms.saturating_sub(due))
                ),
            )
        },
        "check the agent (it should have killed the task at its timeout); cancel the task if it persists",
    );
}

/// One anomaly per item, at most [`MAX_TASK_ANOMALIES`], then one for the rest. `describe`
/// (subject, message) runs only for the items listed: the rest are merely counted.
fn push_capped<T>(
    out: &mut Vec<Anomaly>,
    kind: AnomalyKind,
    severity: Severity,
    items: impl Iterator<Item = T>,
    describe: impl Fn(T) -> (String, String),
    suggestion: &str,
) {
    let mut more = 0u64;
    for (i, item) in items.enumerate() {
        if i < MAX_TASK_ANOMALIES {
            let (subject, message) = describe(item);
            out.push(Anomaly {
                kind,
                subject,
                severity,
                message,
                suggestion: suggestion.to_string(),
            });
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(Anomaly {
            kind,
            subject: "tasks".into(),
            severity,
            message: format!("and {more} more tasks like the ones listed"),
            suggestion: suggestion.to_string(),
        });
    }
}

fn queue_anomalies(
    queue: &QueueStats,
    history: &History,
    t: &Thresholds,
    now_ms: UnixMillis,
    out: &mut Vec<Anomaly>,
) {
    let Some(growth) = queue.growth_per_min else {
        return;
    };
    let pending = queue
        .by_state
        .iter()
        .find(|(s, _)| *s == TaskState::Pending)
        .map_or(0, |(_, n)| *n);
    if history.covers(now_ms, t.queue_window_ms)
        && growth >= t.queue_growth_per_min
        && pending >= t.queue_min_tasks
    {
        out.push(Anomaly {
            kind: AnomalyKind::QueueGrowing,
            subject: "queue".into(),
            severity: Severity::Warning,
            message: format!(
                "pending tasks grew by {growth:.1} per minute over the last {} ({pending} pending, {} runnable)",
                secs(t.queue_window_ms),
                queue.runnable
            ),
            suggestion: "work arrives faster than it drains: add agents, or check that queued tasks' \
                         pools and constraints match some agent"
                .into(),
        });
    }
}

fn pool_anomalies(
    state: &State,
    queue: &QueueStats,
    t: &Thresholds,
    now_ms: UnixMillis,
    out: &mut Vec<Anomaly>,
) {
    let alive: Vec<&str> = state
        .agents()
        .filter(|a| a.state == AgentState::Alive)
        .map(|a| a.info.pool.as_str())
        .collect();
    for (pool, runnable) in &queue.by_pool {
        let served = if pool.is_empty() {
            !alive.is_empty()
        } else {
            alive.contains(&pool.as_str())
        };
        if served {
            continue;
        }
        let Some(oldest) = state.runnable_oldest_in_pool(pool).next() else {
            continue;
        };
        let since = if oldest.queued_at_ms > 0 {
            oldest.queued_at_ms
        } else {
            oldest.submitted_at_ms
        };
        let waited = now_ms.saturating_sub(since);
        if waited <= t.stuck_grace_ms {
            continue;
        }
        let (subject, whom) = if pool.is_empty() {
            ("pool/default".to_string(), "no agent is alive".to_string())
        } else {
            (
                format!("pool/{pool}"),
                format!("no alive agent serves pool {pool:?}"),
            )
        };
        out.push(Anomaly {
            kind: AnomalyKind::UnservedPool,
            subject,
            severity: Severity::Warning,
            message: format!(
                "{runnable} runnable tasks, the oldest waiting {}, but {whom}",
                secs(waited)
            ),
            suggestion: "start (or undrain) agents in that pool, or check the tasks' pool name".into(),
        });
    }
}

fn master_anomalies(history: &History, t: &Thresholds, now_ms: UnixMillis, out: &mut Vec<Anomaly>) {
    let Some(latest) = history.latest() else {
        return;
    };
    let window = t.lag_for_ms;
    if history.sustained(now_ms, window, |s| s.leader.is_none()) {
        out.push(Anomaly {
            kind: AnomalyKind::NoLeader,
            subject: "cluster".into(),
            severity: Severity::Critical,
            message: format!("no leader for {}", secs(window)),
            suggestion: "check that a majority of masters is running and can reach each other".into(),
        });
    }
    for m in &latest.members {
        let member = |s: &Sample| s.members.iter().find(|x| x.id == m.id).cloned();
        let subject = format!("master/{}", m.id);
        if history.sustained(now_ms, window, |s| member(s).is_some_and(|x| !x.reachable)) {
            out.push(Anomaly {
                kind: AnomalyKind::MasterUnreachable,
                subject: subject.clone(),
                severity: Severity::Warning,
                message: format!("did not answer for {}", secs(window)),
                suggestion: "check that the master runs and that the network reaches it; the cluster \
                             tolerates fewer failures meanwhile"
                    .into(),
            });
        }
        if history.sustained(now_ms, window, |s| {
            member(s).is_some_and(|x| x.reachable && x.lag >= t.lag_entries)
        }) {
            out.push(Anomaly {
                kind: AnomalyKind::MasterLagging,
                subject,
                severity: Severity::Warning,
                message: format!(
                    "{} entries behind the commit index (at least {} for {})",
                    m.lag,
                    t.lag_entries,
                    secs(window)
                ),
                suggestion: "check the master's disk, CPU and network; replace it if it does not catch up"
                    .into(),
            });
        }
    }
}
