//! Leader-only duties: agent liveness and the scheduling loop.
//!
//! This is derived state, never replicated, rebuilt from scratch at every election:
//! - **liveness** ([`taurus_core::liveness::Liveness`]): heartbeats are not in the log. The leader
//!   remembers when it last heard from each agent; on election every agent's clock starts afresh
//!   (a grace period), and only after `agent_ttl` of silence does it propose
//!   `SetAgentState down` (carrying the epoch it judged, so a re-registered agent is safe).
//! - **observations** the policies use: each agent's reported load and its observed
//!   assigned-to-started latency (a moving average).
//! - **the scheduling loop**: woken by every applied entry (new runnable work, freed capacity,
//!   new agents) and by a timer. Each round it proposes what is due, in this order: `down` for
//!   silent agents, `Tick` when a retry or a deadline falls due, and one `Assign` with the
//!   policy's placements. It waits for each proposal to commit before the next round, so a round
//!   always sees the previous round's effect (no double placement to be rejected).
//!
//! Every decision is made from a clone of the applied state (O(1), `imbl`), never under a lock
//! held across an await.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;
use taurus_core::Command;
use taurus_core::State;
use taurus_core::liveness::Liveness;
use taurus_core::schedule::AgentView;
use taurus_core::schedule::Candidate;
use taurus_core::schedule::Policy;
use taurus_core::schedule::Unstarted;
use taurus_core::schedule::View;
use taurus_core::types::AgentState;
use taurus_core::types::Task;
use taurus_core::types::TaskState;

use tracing::Instrument as _;

use crate::batcher::now_ms;
use crate::config::SchedulerTuning;
use crate::node::Node;

/// Milliseconds on a monotonic clock (process-local), for liveness.
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Weight of a new sample in the start-latency moving average.
const LATENCY_ALPHA: f64 = 0.2;

/// What the leader observes about agents during one term.
struct Observed {
    liveness: Liveness,
    loads: HashMap<String, f64>,
    start_latency_ms: HashMap<String, f64>,
}

/// Shared between the loop and the agent service handlers on this master.
#[derive(Clone, Default)]
pub struct LeaderDuties {
    observed: Arc<Mutex<Option<Observed>>>,
}

impl LeaderDuties {
    fn with<T>(&self, f: impl FnOnce(&mut Observed) -> T) -> Option<T> {
        let mut g = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_mut().map(f)
    }

    /// A heartbeat (or registration) this master answered as leader.
    pub fn heartbeat(&self, agent: &str, epoch: u64, load: Option<f64>) {
        let now = mono_ms();
        self.with(|o| {
            o.liveness.heartbeat(agent, epoch, now);
            if let Some(l) = load.filter(|l| l.is_finite() && *l >= 0.0) {
                o.loads.insert(agent.to_string(), l);
            }
        });
    }

    /// Whether this master currently runs the leader duties (its monitoring reports then
    /// include heartbeat checks).
    pub fn leading(&self) -> bool {
        self.with(|_| ()).is_some()
    }

    /// For monitoring, while this master leads: per agent in `agents`, milliseconds since it
    /// was last heard from in this term (or since the election, if later or never heard), and
    /// the loads agents reported. `None` on a follower.
    pub fn observations<'a>(
        &self,
        agents: impl IntoIterator<Item = &'a str>,
    ) -> Option<taurus_core::monitor::Observations> {
        let now = mono_ms();
        self.with(|o| {
            let elected = o.liveness.elected_at_ms().unwrap_or(now);
            let silence = agents
                .into_iter()
                .map(|id| {
                    let heard = o.liveness.last_seen(id).map_or(elected, |at| at.max(elected));
                    (id.to_string(), now.saturating_sub(heard))
                })
                .collect();
            taurus_core::monitor::Observations {
                heartbeat_silence_ms: Some(silence),
                load: o.loads.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            }
        })
    }

    /// An accepted start: `latency_ms` from assignment to the agent's claim.
    pub fn started(&self, agent: &str, latency_ms: u64) {
        self.with(|o| {
            let e = o
                .start_latency_ms
                .entry(agent.to_string())
                .or_insert(latency_ms as f64);
            *e = (1.0 - LATENCY_ALPHA) * *e + LATENCY_ALPHA * latency_ms as f64;
        });
    }
}

/// Runs forever on every master: whenever this master leads, runs the duties for that term.
pub async fn run(node: Node, tuning: SchedulerTuning, policy: Arc<dyn Policy>) {
    let mut metrics = node.raft.metrics();
    // Raft can report this master leading while refusing its proposals (just elected and cut
    // off from every peer, or stepping down): then the duties are retried with back-off, never
    // in a spin (the failure-injection suite found a loop of 270,000 restarts a second).
    let mut retry: Option<(u64, Duration)> = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader == Some(node.id) {
            let first = retry.is_none_or(|(t, _)| t != term);
            if first {
                tracing::info!(term, policy = policy.name(), "leader duties start");
            }
            {
                let mut g = node
                    .duties
                    .observed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let mut liveness = Liveness::new(tuning.agent_ttl.as_millis() as u64);
                liveness.on_elected(mono_ms());
                *g = Some(Observed {
                    liveness,
                    loads: HashMap::new(),
                    start_latency_ms: HashMap::new(),
                });
            }
            run_term(&node, &tuning, policy.as_ref(), term)
                .instrument(tracing::info_span!("leader", term))
                .await;
            *node
                .duties
                .observed
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            if still_leads(&node, term) {
                let wait = match retry {
                    Some((t, w)) if t == term => (w * 2).min(MAX_DUTY_RETRY),
                    _ => tuning.interval,
                };
                tracing::debug!(term, ?wait, "leader duties refused by raft; retrying");
                retry = Some((term, wait));
                tokio::time::sleep(wait).await;
                continue;
            }
            tracing::info!(term, "leader duties stop");
        }
        retry = None;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Longest wait between two tries of the duties while Raft refuses them (see [`run`]).
const MAX_DUTY_RETRY: Duration = Duration::from_secs(1);

fn still_leads(node: &Node, term: u64) -> bool {
    let m = node.metrics();
    m.current_leader == Some(node.id) && m.current_term == term
}

/// Why a round stopped early.
enum Stop {
    LostLeadership,
}

async fn run_term(node: &Node, tuning: &SchedulerTuning, policy: &dyn Policy, term: u64) {
    let mut applied = node.sm.subscribe();
    let mut metrics = node.raft.metrics();
    // A due time for which a tick changed nothing: not ticked again (see `round`).
    let mut idle_due: Option<u64> = None;
    loop {
        if !still_leads(node, term) {
            return;
        }
        let started = Instant::now();
        let outcome = round(node, tuning, policy, &mut idle_due).await;
        node.metrics.round_duration.observe_duration(started.elapsed());
        match outcome {
            Ok(true) => continue,
            Ok(false) => {}
            Err(Stop::LostLeadership) => return,
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(tuning.interval) => {}
        }
    }
}

/// Proposes `cmd`; `Err` when this master cannot write any more.
async fn propose(node: &Node, cmd: Command) -> Result<taurus_core::Response, Stop> {
    match node.raft.client_write(cmd).await {
        Ok(r) => Ok(r.data),
        Err(e) => {
            tracing::debug!(error = %e, "leader duty proposal failed");
            Err(Stop::LostLeadership)
        }
    }
}

/// Most finished tasks one `PurgeFinished` entry forgets.
const PURGE_PER_ENTRY: u32 = 10_000;

/// One round; `Ok(true)` when it proposed something (run another at once).
async fn round(
    node: &Node,
    tuning: &SchedulerTuning,
    policy: &dyn Policy,
    idle_due: &mut Option<u64>,
) -> Result<bool, Stop> {
    let state: State = node.sm.read(|s| s.clone());
    let mut proposed = false;

    // 1. Silent agents go down.
    let live_agents: Vec<(String, u64, bool)> = state
        .agents()
        .map(|a| (a.info.id.clone(), a.epoch, a.state != AgentState::Down))
        .collect();
    let expired = node
        .duties
        .with(|o| {
            o.liveness.expired(
                live_agents.iter().map(|(id, e, l)| (id.as_str(), *e, *l)),
                mono_ms(),
            )
        })
        .unwrap_or_default();
    for (id, epoch) in expired {
        tracing::warn!(agent = %id, epoch, ttl = ?tuning.agent_ttl, "agent silent past agent_ttl: declaring it down");
        propose(
            node,
            Command::SetAgentState {
                id: id.clone(),
                epoch: Some(epoch),
                state: AgentState::Down,
                reason: format!(
                    "no heartbeat for {}",
                    humantime::format_duration(tuning.agent_ttl)
                ),
                now_ms: now_ms(),
            },
        )
        .await?;
        node.duties.with(|o| o.liveness.forget(&id));
        node.metrics.heartbeat_timeouts.inc();
        proposed = true;
    }
    if proposed {
        return Ok(true);
    }

    // 2. Retries falling due, deadlines passing.
    let now = now_ms();
    let due = state.next_due_ms();
    if let Some(due) = due.filter(|d| *d <= now && Some(*d) != *idle_due) {
        let changed = match propose(node, Command::Tick { now_ms: now }).await? {
            taurus_core::Response::Ticked(t) => !t.released.is_empty() || !t.expired.is_empty(),
            _ => false,
        };
        if changed {
            return Ok(true);
        }
        *idle_due = Some(due);
        // A tick that changed nothing would change nothing again: go on to placements, and
        // never spin on ticks.
    }

    // 3. Finished tasks past their retention (or over the count) are forgotten, a bounded
    //    number per entry so one purge never stalls apply.
    let before = now.saturating_sub(node.finished_retention.as_millis() as u64);
    if state.purge_due(before, node.max_finished_tasks) {
        let purged = match propose(
            node,
            Command::PurgeFinished {
                finished_before_ms: before,
                keep_finished: node.max_finished_tasks,
                max: PURGE_PER_ENTRY,
            },
        )
        .await?
        {
            taurus_core::Response::Purged(n) => n,
            _ => 0,
        };
        tracing::debug!(purged, "finished tasks forgotten");
        if purged > 0 {
            return Ok(true);
        }
    }

    // 4. Placements.
    let Some(view) = build_view(&state, node, tuning, now) else {
        return Ok(false);
    };
    let placements = policy.place(&view);
    if placements.is_empty() {
        return Ok(false);
    }
    let n = placements.len();
    // Submission times of the tasks placed for the first time, for the schedule latency.
    let first_placed: Vec<Option<u64>> = placements
        .iter()
        .map(|p| {
            let t = state.get(&p.task_id)?;
            (p.move_from.is_none() && t.attempts.is_empty()).then_some(t.submitted_at_ms)
        })
        .collect();
    let traced = assign_spans(&state, &placements);
    match propose(
        node,
        Command::Assign {
            placements,
            now_ms: now,
        },
    )
    .await?
    {
        taurus_core::Response::Assigned(results) => {
            for (i, span) in traced {
                if let Some(Err(rejection)) = results.get(i) {
                    span.in_scope(|| tracing::debug!(%rejection, "placement rejected"));
                }
            }
            let rejected = results.iter().filter(|r| r.is_err()).count();
            node.metrics.tasks_placed.inc_by((n - rejected) as u64);
            node.metrics.schedule_latency.observe_many(
                results
                    .iter()
                    .zip(&first_placed)
                    .filter_map(|(r, at)| r.as_ref().ok().and(*at))
                    .map(|at| now.saturating_sub(at) as f64 / 1000.0),
            );
            if rejected > 0 {
                tracing::debug!(placed = n - rejected, rejected, "assign round");
            }
            // Everything rejected means the view was wrong in a way another round will not fix
            // before something else changes: wait for an event.
            Ok(rejected < n)
        }
        _ => Ok(false),
    }
}

/// One `assign` span per placement of a traced task, a child of the task's `trace_parent`, open
/// while the `Assign` entry commits (see `crate::trace`). Empty, without looking at any task,
/// when this process exports no traces.
fn assign_spans(
    state: &State,
    placements: &[taurus_core::command::Placement],
) -> Vec<(usize, tracing::Span)> {
    if !taurus_protocol::trace::exporting() {
        return Vec::new();
    }
    placements
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let task = state.get(&p.task_id)?;
            if task.spec.trace_parent.is_empty() {
                return None;
            }
            let span = tracing::info_span!(
                "assign",
                task = %p.task_id,
                attempt = task.attempts.len() + 1,
                agent = %p.agent_id,
                otel.kind = "internal"
            );
            taurus_protocol::trace::set_parent(&span, &task.spec.trace_parent);
            Some((i, span))
        })
        .collect()
}

/// The policy's view, or `None` when nothing could be placed (no runnable work or no room).
fn build_view(state: &State, node: &Node, tuning: &SchedulerTuning, now: u64) -> Option<View> {
    if state.runnable_len() == 0 {
        return None;
    }
    let (loads, latency) = node
        .duties
        .with(|o| (o.loads.clone(), o.start_latency_ms.clone()))
        .unwrap_or_default();
    // Free slots of alive agents, per pool they serve.
    let mut free_by_pool: HashMap<&str, usize> = HashMap::new();
    let mut free_slots: usize = 0;
    let mut any_overloaded = false;
    let agents: Vec<AgentView> = state
        .agents()
        .filter(|a| a.state != AgentState::Down)
        .map(|a| {
            let alive = a.state == AgentState::Alive;
            if alive {
                let free = a.info.max_tasks.saturating_sub(a.tasks) as usize;
                free_slots += free;
                *free_by_pool.entry(a.info.pool.as_str()).or_default() += free;
            }
            let load = loads.get(&a.info.id).copied();
            let unstarted = if load.is_some_and(|l| l > 1.0) {
                any_overloaded = true;
                state
                    .agent_tasks(&a.info.id)
                    .filter_map(|(id, token)| {
                        let t = state.get(id)?;
                        (t.state == TaskState::Assigned).then(|| Unstarted {
                            task: candidate(t),
                            token,
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            AgentView {
                id: a.info.id.clone(),
                epoch: a.epoch,
                pool: a.info.pool.clone(),
                labels: a.info.labels.clone(),
                total: a.info.resources,
                max_tasks: a.info.max_tasks,
                used: a.used,
                tasks: a.tasks,
                alive,
                load,
                start_latency_ms: latency.get(&a.info.id).copied(),
                unstarted,
            }
        })
        .collect();
    if free_slots == 0 && !any_overloaded {
        return None;
    }
    // A bounded window of each queue that could use the free slots: the pools with room, and
    // the tasks that run in any pool (`""`). In each, the highest priorities and (for ageing) the
    // oldest; twice the free slots, so tasks that fit nowhere (constraints, size) do not hide
    // the rest. Queues of pools no agent serves are never read.
    let mut pools: Vec<(&str, usize)> = free_by_pool.into_iter().filter(|(p, _)| !p.is_empty()).collect();
    pools.sort_unstable();
    pools.push(("", free_slots));
    let mut seen: HashSet<&str> = HashSet::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (pool, free) in pools {
        let window = tuning.max_placements.min(free.saturating_mul(2) + 16);
        for t in state.runnable_in_pool(pool).take(window) {
            if seen.insert(&t.spec.id) {
                candidates.push(candidate(t));
            }
        }
        if !tuning.ageing_per_point.is_zero() {
            for t in state.runnable_oldest_in_pool(pool).take(window) {
                if seen.insert(&t.spec.id) {
                    candidates.push(candidate(t));
                }
            }
        }
    }
    if candidates.is_empty() && !any_overloaded {
        return None;
    }
    Some(View {
        now_ms: now,
        candidates,
        agents,
        ageing_ms_per_point: tuning.ageing_per_point.as_millis() as u64,
        max_placements: tuning.max_placements,
    })
}

fn candidate(t: &Task) -> Candidate {
    Candidate {
        id: t.spec.id.clone(),
        priority: t.spec.priority,
        seq: t.seq,
        queued_at_ms: t.queued_at_ms,
        resources: t.spec.resources,
        pool: t.spec.pool.clone(),
        constraints: t.spec.constraints.clone(),
    }
}
