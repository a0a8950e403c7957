//! The replicated state machine: every task and agent, and the indexes the scheduler needs.
//!
//! [`State::apply`] is a deterministic function of (state, log index, command). It never reads a
//! clock, never does I/O, never panics on input: anything a command gets wrong comes back as a
//! [`Rejection`] inside the [`Response`], identically on every replica.
//!
//! Every collection is a persistent (structurally shared) `imbl` map or set, so cloning a
//! `State` is O(1): snapshots clone it under a brief lock and encode it elsewhere, instead of
//! stalling apply (and, on 2 cores, the whole runtime) while a large state is serialized.
//!
//! Indexes kept beside the task and agent maps (all derived, rebuilt from the tasks on snapshot
//! load):
//! - `runnable`: pending tasks whose dependencies have all succeeded and whose back-off has
//!   passed, ordered by priority (highest first) then submission order. This is the scheduler's
//!   queue.
//! - `runnable_by_seq`: the same tasks, oldest submission first, so the scheduler can look at the
//!   longest waiters (priority ageing) without walking the whole queue.
//! - `delayed`: pending tasks whose dependencies have succeeded but that wait out a retry
//!   back-off, by `not_before_ms`. [`Command::Tick`] moves the due ones to `runnable`.
//! - `deadlines`: tasks that are not terminal and have a hard deadline, by
//!   [`Task::deadline_at_ms`]. [`Command::Tick`] ends the passed ones as timed out.
//! - `dependents`: reverse dependency edges of tasks that are not terminal yet.
//! - `by_state`: ids per state, for listing with a state filter without scanning everything.
//! - `by_agent`: per agent, the tasks assigned to or running on it with their fencing tokens:
//!   what the agent should be running now.
//!
//! A snapshot carries no clock reading, so which queue a pending task is in must follow from the
//! task alone. It does: a task becomes runnable only inside a command that carries `now`, and at
//! that moment its `not_before_ms` is reset to 0. A pending task with no unmet dependency is
//! therefore in `runnable` when `not_before_ms == 0` and in `delayed` otherwise.
//!
//! # Attempts and agents
//! ```text
//!  pending ──Assign──▶ assigned ──Started──▶ running ──Finished──▶ succeeded
//!   ▲   ▲                 │  │                  │
//!   │   └──── lost ───────┘  └─ Assign move ─┐  ├── failed / timed out / killed: retry when
//!   │   (agent down or re-registered)        │  │   attempts are left (after a back-off),
//!   │                                        ▼  │   otherwise failed / timed_out
//!   └─────────── retry ◀─────────────────────── ┘
//! ```
//! An attempt ends in exactly one of these ways: the agent reports its end (`Report` Finished),
//! the state machine takes it away (agent down or re-registered: `Lost`; moved before it started:
//! `Moved`), or the task ends under it (cancel, hard deadline: `Cancelled`). Each way takes the
//! task off its agent's books (`Agent::used`, `Agent::tasks`, `by_agent`) exactly once, so an
//! agent's books always equal the sum over the tasks it holds; a down agent holds nothing.
//!
//! Fencing: every attempt's token is the log index of the `Assign` entry that created it. A
//! report is accepted only for the task's current token from the agent it was given to; a retry
//! of a report already accepted is answered `Duplicate`, anything else `Stale`, which tells the
//! agent to stop and forget the attempt.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;
use std::ops::Bound;

use imbl::OrdMap;
use imbl::OrdSet;
use serde::Deserialize;
use serde::Serialize;

use crate::acl;
use crate::acl::Acl;
use crate::acl::AclImage;
use crate::command::AgentStateChanged;
use crate::command::CancelOutcome;
use crate::command::Command;
use crate::command::Placement;
use crate::command::Registered;
use crate::command::ReportEvent;
use crate::command::ReportOutcome;
use crate::command::Response;
use crate::command::SubmitRequest;
use crate::command::Submitted;
use crate::command::TaskReport;
use crate::command::Ticked;
use crate::error::CoreError;
use crate::error::Rejection;
use crate::retry;
use crate::types::Agent;
use crate::types::AgentId;
use crate::types::AgentInfo;
use crate::types::AgentState;
use crate::types::Attempt;
use crate::types::AttemptEnd;
use crate::types::DrainExit;
use crate::types::LogIndex;
use crate::types::Resources;
use crate::types::Task;
use crate::types::TaskId;
use crate::types::TaskSpec;
use crate::types::TaskState;
use crate::types::UnixMillis;
use crate::validate;

/// Key of the runnable queue: pool, then priority descending, then first come first served.
/// Pool-major, so the scheduler reads the queue of each pool an agent serves separately: work
/// for a pool no agent serves never hides work for the others (no head-of-line blocking).
type RunnableKey = (String, Reverse<i32>, u64, TaskId);

/// The whole replicated state of a Taurus cluster: tasks, agents and their indexes.
#[derive(Clone, Debug, Default)]
pub struct State {
    tasks: OrdMap<TaskId, Task>,
    /// Pending, dependencies met, back-off passed: priority order.
    runnable: OrdSet<RunnableKey>,
    /// The same tasks as `runnable`, `(pool, seq, id)`: oldest first within each pool.
    runnable_by_seq: OrdSet<(String, u64, TaskId)>,
    /// Pending, dependencies met, waiting for `not_before_ms`: `(not_before_ms, id)`.
    delayed: OrdSet<(UnixMillis, TaskId)>,
    /// Not terminal, with a hard deadline: `(deadline_at_ms, id)`.
    deadlines: OrdSet<(UnixMillis, TaskId)>,
    dependents: imbl::HashMap<TaskId, Vec<TaskId>>,
    by_state: [OrdSet<TaskId>; 7],
    /// Finished (terminal) tasks by `(updated_at_ms, id)`, oldest first: what
    /// [`Command::PurgeFinished`] forgets. A terminal task's `updated_at_ms` never changes, so
    /// the key rebuilt from a snapshot equals the one apply inserted.
    finished: OrdSet<(UnixMillis, TaskId)>,
    agents: OrdMap<AgentId, Agent>,
    /// Tasks assigned to or running on each agent, with their fencing tokens. Agents holding
    /// nothing have no entry.
    by_agent: OrdMap<AgentId, OrdMap<TaskId, LogIndex>>,
    /// Per agent, the log index of the last entry that changed its `by_agent` set (absent:
    /// not changed since this state was built). Derived and not in snapshots: it only lets an
    /// assignment stream skip re-reading a set that did not change.
    held_changed: imbl::HashMap<AgentId, LogIndex>,
    /// The index of the entry being applied (for `held_changed`).
    applying: LogIndex,
    next_seq: u64,
    /// Tokens and the bootstrap flag.
    acl: Acl,
}

/// What a snapshot holds: the tasks, the agents and the counters. Indexes are rebuilt on load.
#[derive(Serialize)]
pub struct StateImageRef<'a> {
    pub next_seq: u64,
    pub tasks: Vec<&'a Task>,
    pub agents: Vec<&'a Agent>,
    /// Left out while empty, so snapshots of clusters without an ACL are unchanged.
    #[serde(skip_serializing_if = "AclImage::is_empty")]
    pub acl: AclImage,
}

/// The owned form of [`StateImageRef`], for loading a snapshot.
#[derive(Debug, Deserialize)]
pub struct StateImage {
    pub next_seq: u64,
    pub tasks: Vec<Task>,
    /// Missing from snapshots taken before agents existed.
    #[serde(default)]
    pub agents: Vec<Agent>,
    /// Missing from snapshots taken before tokens existed (or with none).
    #[serde(default)]
    pub acl: AclImage,
}

/// Why [`State::prepare_restore`] declared an agent down (and its attempts lost).
pub const RESTORE_REASON: &str = "the cluster was restored from a backup; the agent must register again";

/// What [`State::prepare_restore`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Agents declared down, in id order.
    pub agents_down: Vec<AgentId>,
    /// Tasks whose attempt was lost and that will run again, in id order.
    pub requeued: Vec<TaskId>,
    /// Tasks whose attempt was lost with no attempt left: failed, in id order.
    pub failed: Vec<TaskId>,
}

/// One page of [`State::list`].
#[derive(Debug)]
pub struct Page<'a> {
    pub tasks: Vec<&'a Task>,
    /// The id to pass as `after` for the next page, if there is one.
    pub next_after: Option<TaskId>,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one command committed at log `index`. Deterministic; never panics on input.
    pub fn apply(&mut self, index: LogIndex, cmd: Command) -> Response {
        self.applying = index;
        match cmd {
            // Each request of a coalesced batch succeeds or fails on its own.
            Command::SubmitTasks { requests, now_ms } => Response::Submit(
                requests
                    .into_iter()
                    .map(|req| self.submit_request(index, now_ms, req))
                    .collect(),
            ),
            Command::CancelTask {
                id,
                reason,
                now_ms,
                by,
                only_own,
            } => Response::Cancel(self.cancel(index, now_ms, &id, reason, by, only_own)),
            // A new incarnation: the previous one's work is lost.
            Command::RegisterAgent { agent, now_ms } => {
                Response::Registered(self.register_agent(index, now_ms, agent))
            }
            // Drain, undrain, or declare down (which loses the agent's work).
            Command::SetAgentState {
                id,
                epoch,
                state,
                reason,
                now_ms,
            } => Response::AgentState(self.set_agent_state(index, now_ms, &id, epoch, state, reason)),
            // Drain, and ask the agent to exit once drained.
            Command::RequestAgentExit {
                id,
                deadline_ms,
                reason,
                now_ms,
            } => Response::AgentState(self.request_agent_exit(index, now_ms, &id, deadline_ms, reason)),
            // Each placement is checked and applied on its own, in order.
            Command::Assign { placements, now_ms } => {
                Response::Assigned(self.assign(index, now_ms, placements))
            }
            // Each report is answered on its own, in order.
            Command::Report { reports, now_ms } => Response::Reported(
                reports
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| self.report(index, now_ms, i, r))
                    .collect(),
            ),
            // Deadlines first, so a task both due and expired ends rather than being released.
            Command::Tick { now_ms } => Response::Ticked(self.tick(index, now_ms)),
            // Oldest finished tasks first; never an unfinished one.
            Command::PurgeFinished {
                finished_before_ms,
                keep_finished,
                max,
            } => Response::Purged(self.purge_finished(finished_before_ms, keep_finished, max)),
            Command::AclBootstrap { token, now_ms } => Response::Token(self.acl.bootstrap(now_ms, token)),
            Command::CreateToken { token, now_ms } => Response::Token(self.acl.create(now_ms, token)),
            Command::RevokeToken { id, .. } => Response::Revoked(self.acl.revoke(&id)),
        }
    }

    /// Tasks not yet in a terminal state (pending, assigned or running): what
    /// [`SubmitRequest::queue_limit`] bounds.
    pub fn unfinished(&self) -> usize {
        [TaskState::Pending, TaskState::Assigned, TaskState::Running]
            .iter()
            .map(|s| self.by_state[s.index()].len())
            .sum()
    }

    /// The token table.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// Looks a task up.
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// Number of tasks known (in every state).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Number of tasks in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.by_state[state.index()].len()
    }

    /// Runnable task ids: pool by pool (in name order; the default pool `""` first), and in each
    /// pool highest priority first, then in submission order.
    pub fn runnable(&self) -> impl Iterator<Item = &TaskId> + '_ {
        self.runnable.iter().map(|(_, _, _, id)| id)
    }

    /// Runnable tasks in [`State::runnable`] order.
    pub fn runnable_tasks(&self) -> impl Iterator<Item = &Task> + '_ {
        self.runnable
            .iter()
            .filter_map(|(_, _, _, id)| self.tasks.get(id))
    }

    /// Runnable tasks pool by pool, oldest submission first in each (for priority ageing).
    pub fn runnable_oldest(&self) -> impl Iterator<Item = &Task> + '_ {
        self.runnable_by_seq
            .iter()
            .filter_map(|(_, _, id)| self.tasks.get(id))
    }

    /// Runnable tasks of one pool (`""`: tasks that run in any pool), highest priority first,
    /// then in submission order.
    pub fn runnable_in_pool<'a>(&'a self, pool: &str) -> impl Iterator<Item = &'a Task> + 'a {
        let from: RunnableKey = (pool.to_string(), Reverse(i32::MAX), 0, String::new());
        let pool = pool.to_string();
        self.runnable
            .range(from..)
            .take_while(move |(p, _, _, _)| *p == pool)
            .filter_map(|(_, _, _, id)| self.tasks.get(id))
    }

    /// Runnable tasks of one pool, oldest submission first.
    pub fn runnable_oldest_in_pool<'a>(&'a self, pool: &str) -> impl Iterator<Item = &'a Task> + 'a {
        let from = (pool.to_string(), 0u64, String::new());
        let pool = pool.to_string();
        self.runnable_by_seq
            .range(from..)
            .take_while(move |(p, _, _)| *p == pool)
            .filter_map(|(_, _, id)| self.tasks.get(id))
    }

    /// Number of runnable tasks.
    pub fn runnable_len(&self) -> usize {
        self.runnable.len()
    }

    /// The priority of every runnable task, in [`State::runnable`] order, without looking the
    /// tasks up (for monitoring: queue depth by priority).
    pub fn runnable_priorities(&self) -> impl Iterator<Item = i32> + '_ {
        self.runnable.iter().map(|(_, Reverse(p), _, _)| *p)
    }

    /// The pool and priority of every runnable task, in [`State::runnable`] order (pool by
    /// pool), without looking the tasks up (for monitoring: the queue by pool and priority).
    pub fn runnable_pools_priorities(&self) -> impl Iterator<Item = (&str, i32)> + '_ {
        self.runnable
            .iter()
            .map(|(pool, Reverse(p), _, _)| (pool.as_str(), *p))
    }

    /// Tasks in `state`, in id order, without collecting them (for monitoring).
    pub fn tasks_in(&self, state: TaskState) -> impl Iterator<Item = &Task> + '_ {
        self.by_state[state.index()]
            .iter()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Number of pending tasks waiting out a back-off.
    pub fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// When the next [`Command::Tick`] has something to do: the earliest of the first delayed
    /// task's `not_before_ms` and the first hard deadline. The leader proposes a tick once this is
    /// at or before its clock.
    pub fn next_due_ms(&self) -> Option<UnixMillis> {
        let delayed = self.delayed.get_min().map(|(at, _)| *at);
        let deadline = self.deadlines.get_min().map(|(at, _)| *at);
        delayed.into_iter().chain(deadline).min()
    }

    /// Looks an agent up.
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Every agent (in every state), in id order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> + '_ {
        self.agents.values()
    }

    /// Number of agents in `state`.
    pub fn agent_count(&self, state: AgentState) -> usize {
        self.agents.values().filter(|a| a.state == state).count()
    }

    /// Marks every agent's assigned set as changed at `index`: called when this state replaces
    /// another wholesale (an installed snapshot whose last entry is `index`), so readers that
    /// compare [`State::agent_tasks_changed_at`] read every set again.
    pub fn mark_agents_changed(&mut self, index: LogIndex) {
        let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for id in ids {
            self.held_changed.insert(id, index);
        }
    }

    /// Prepares a state read from a backup to seed a new cluster (`taurus master restore`):
    /// every agent that is not down already is declared down, exactly as the leader's
    /// `SetAgentState down` would do it at log `index` and time `now_ms`. Their assigned and
    /// running attempts end `Lost`, and each such task is retried (pending again, a new attempt
    /// later: at-least-once) or, with its attempts spent, fails. Agents must register again;
    /// finished tasks, pending tasks, tokens and counters are untouched.
    ///
    /// Deterministic: every master restored from the same backup, with the same `index` and
    /// `now_ms` (both taken from the backup's header), ends in the same state.
    pub fn prepare_restore(&mut self, index: LogIndex, now_ms: UnixMillis) -> Restored {
        let ids: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.state != AgentState::Down)
            .map(|a| a.info.id.clone())
            .collect();
        let mut lost = Vec::new();
        for id in &ids {
            self.applying = index;
            let reason = RESTORE_REASON.to_string();
            if let Ok(changed) = self.set_agent_state(index, now_ms, id, None, AgentState::Down, reason) {
                lost.extend(changed.lost);
            }
        }
        lost.sort();
        let (requeued, failed) = lost
            .into_iter()
            .partition(|id| self.tasks.get(id).is_some_and(|t| !t.state.is_terminal()));
        Restored {
            agents_down: ids,
            requeued,
            failed,
        }
    }

    /// The log index of the last entry that changed what agent `id` should run, or `None` when
    /// it has not changed since this state was built (started, or restored from a snapshot).
    /// Any change to [`State::agent_tasks`] of `id` changes this value.
    pub fn agent_tasks_changed_at(&self, id: &str) -> Option<LogIndex> {
        self.held_changed.get(id).copied()
    }

    /// What agent `id` should be running now: its assigned and running tasks, in id order, each
    /// with the fencing token of its current attempt.
    pub fn agent_tasks<'a>(&'a self, id: &str) -> impl Iterator<Item = (&'a TaskId, LogIndex)> + use<'a> {
        self.by_agent
            .get(id)
            .into_iter()
            .flat_map(|held| held.iter().map(|(task, token)| (task, *token)))
    }

    /// Tasks in id order, strictly after `after`, optionally only those in `states`, at most
    /// `limit` of them (at least 1).
    pub fn list(&self, states: &[TaskState], after: Option<&str>, limit: usize) -> Page<'_> {
        let limit = limit.max(1);
        // One more than the page, to learn whether another page follows (saturating: usize::MAX
        // means "everything").
        let probe = limit.saturating_add(1);
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut ids: Vec<&TaskId> = if states.is_empty() {
            self.tasks
                .range::<_, str>((lower, Bound::Unbounded))
                .map(|(id, _)| id)
                .take(probe)
                .collect()
        } else {
            let wanted: BTreeSet<TaskState> = states.iter().copied().collect();
            let mut merged: Vec<&TaskId> = wanted
                .iter()
                .flat_map(|s| {
                    self.by_state[s.index()]
                        .range::<_, str>((lower, Bound::Unbounded))
                        .take(probe)
                })
                .collect();
            merged.sort_unstable();
            merged.truncate(probe);
            merged
        };
        let next_after = if ids.len() > limit {
            ids.truncate(limit);
            ids.last().map(|id| (*id).clone())
        } else {
            None
        };
        let tasks = ids.into_iter().filter_map(|id| self.tasks.get(id)).collect();
        Page { tasks, next_after }
    }

    /// A serializable view of the state, for snapshots.
    pub fn image(&self) -> StateImageRef<'_> {
        StateImageRef {
            next_seq: self.next_seq,
            tasks: self.tasks.values().collect(),
            agents: self.agents.values().collect(),
            acl: self.acl.image(),
        }
    }

    /// Rebuilds a state, indexes included, from a snapshot image. Checks what it can cheaply:
    /// no task or agent twice, sequence numbers below `next_seq`, every assigned or running task
    /// on a known agent, and every agent's books matching the tasks it holds.
    pub fn from_image(image: StateImage) -> Result<Self, CoreError> {
        let mut state = State {
            next_seq: image.next_seq,
            acl: Acl::from_image(image.acl).map_err(CoreError::CorruptSnapshot)?,
            ..State::default()
        };
        for agent in image.agents {
            if state.agents.contains_key(&agent.info.id) {
                return Err(CoreError::CorruptSnapshot(format!(
                    "agent {} appears twice",
                    agent.info.id
                )));
            }
            state.agents.insert(agent.info.id.clone(), agent);
        }
        // What the tasks say each agent holds, checked against the agents' own books below.
        let mut books: BTreeMap<AgentId, (Resources, u32)> = BTreeMap::new();
        for task in image.tasks {
            let id = task.spec.id.clone();
            if task.seq >= state.next_seq {
                return Err(CoreError::CorruptSnapshot(format!(
                    "task {id} has seq {} >= next_seq {}",
                    task.seq, state.next_seq
                )));
            }
            if state.tasks.contains_key(&id) {
                return Err(CoreError::CorruptSnapshot(format!("task {id} appears twice")));
            }
            state.by_state[task.state.index()].insert(id.clone());
            if task.state.is_terminal() {
                state.finished.insert((task.updated_at_ms, id.clone()));
            }
            match task.state {
                TaskState::Pending if task.unmet_deps == 0 => {
                    // See the module docs: `not_before_ms` is 0 exactly when the task is runnable.
                    if task.not_before_ms == 0 {
                        state.runnable.insert(runnable_key(&task));
                        state
                            .runnable_by_seq
                            .insert((task.spec.pool.clone(), task.seq, id.clone()));
                    } else {
                        state.delayed.insert((task.not_before_ms, id.clone()));
                    }
                }
                TaskState::Assigned | TaskState::Running => {
                    let Some(attempt) = task.attempts.last().filter(|a| a.end.is_none()) else {
                        return Err(CoreError::CorruptSnapshot(format!(
                            "task {id} is {} without a current attempt",
                            task.state
                        )));
                    };
                    if !state.agents.contains_key(&attempt.agent_id) {
                        return Err(CoreError::CorruptSnapshot(format!(
                            "task {id} is on unknown agent {}",
                            attempt.agent_id
                        )));
                    }
                    state
                        .by_agent
                        .entry(attempt.agent_id.clone())
                        .or_default()
                        .insert(id.clone(), attempt.fencing_token);
                    let book = books.entry(attempt.agent_id.clone()).or_default();
                    book.0 = plus(book.0, &task.spec.resources);
                    book.1 = book.1.saturating_add(1);
                }
                _ => {}
            }
            if !task.state.is_terminal() {
                if let Some(at) = task.deadline_at_ms() {
                    state.deadlines.insert((at, id.clone()));
                }
                if task.unmet_deps > 0 {
                    for dep in &task.spec.depends_on {
                        state.dependents.entry(dep.clone()).or_default().push(id.clone());
                    }
                }
            }
            state.tasks.insert(id, task);
        }
        for agent in state.agents.values() {
            let (used, tasks) = books.get(&agent.info.id).copied().unwrap_or_default();
            if agent.used != used || agent.tasks != tasks {
                return Err(CoreError::CorruptSnapshot(format!(
                    "agent {} books {} tasks using {:?}, but holds {tasks} using {used:?}",
                    agent.info.id, agent.tasks, agent.used
                )));
            }
        }
        // Edges to dependencies that have already succeeded were released when they succeeded.
        state
            .dependents
            .retain(|dep, _| state.tasks.get(dep).is_some_and(|t| !t.state.is_terminal()));
        // Apply registers dependents in creation (seq) order, and a cancellation cascade walks
        // them in that order, which decides the reason a task reached by two paths gets. Restore
        // that order (tasks were read in id order) so a restored replica stays identical.
        let tasks = &state.tasks;
        for (_, list) in state.dependents.iter_mut() {
            list.sort_by_key(|id| tasks.get(id).map(|t| t.seq));
        }
        Ok(state)
    }

    fn submit_request(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        req: SubmitRequest,
    ) -> Result<Vec<Submitted>, Rejection> {
        validate::validate_request_id(&req.request_id)?;
        validate::validate_request(&req.tasks)?;
        if req.submitted_by.len() > acl::MAX_TOKEN_NAME_LEN {
            return Err(Rejection::invalid(
                "submitted_by",
                format!("longer than {} bytes", acl::MAX_TOKEN_NAME_LEN),
            ));
        }
        // Which tasks of the request are new (position in the request by id).
        let new: HashMap<&str, usize> = req
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, s)| !self.tasks.contains_key(&s.id))
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        // In request order (not `new`'s hash order), so every replica names the same field.
        for (i, spec) in req
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, s)| new.contains_key(s.id.as_str()))
        {
            for (j, dep) in spec.depends_on.iter().enumerate() {
                if !self.tasks.contains_key(dep) && !new.contains_key(dep.as_str()) {
                    return Err(Rejection::invalid(
                        format!("tasks[{i}].depends_on[{j}]"),
                        format!("unknown task {dep:?}"),
                    ));
                }
            }
        }
        if let Some(limit) = req.queue_limit {
            let unfinished = self.unfinished() as u64;
            if unfinished.saturating_add(new.len() as u64) > limit {
                return Err(Rejection::resource_exhausted(
                    "tasks",
                    format!(
                        "queue full: {unfinished} tasks not yet finished and {} new in this \
                         request exceed max_queued_tasks = {limit}; retry after tasks finish",
                        new.len()
                    ),
                ));
            }
        }
        let order = topological_order(&req.tasks, &new)?;
        // Everything checked: from here on nothing can fail, so the request is atomic.
        let mut out: Vec<Option<Submitted>> = vec![None; req.tasks.len()];
        let mut specs: Vec<Option<TaskSpec>> = req.tasks.into_iter().map(Some).collect();
        for i in order {
            let Some(spec) = specs[i].take() else { continue };
            out[i] = Some(self.insert_new(index, now_ms, spec, &req.request_id, &req.submitted_by));
        }
        for (i, spec) in specs.into_iter().enumerate() {
            if let Some(spec) = spec {
                // Existing id: return the existing task, never create a second. When that task
                // was created under this request's key, this is a retry of the request that
                // created it, and it gets the answer the original got.
                if let Some(t) = self.tasks.get(&spec.id) {
                    out[i] = Some(Submitted {
                        id: spec.id,
                        created: !req.request_id.is_empty() && t.request_id == req.request_id,
                        state: t.state,
                        log_index: t.log_index,
                    });
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Inserts a new task whose dependencies all exist already, created by the request with
    /// key `request_id` from principal `submitted_by`.
    fn insert_new(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        spec: TaskSpec,
        request_id: &str,
        submitted_by: &str,
    ) -> Submitted {
        let mut state = TaskState::Pending;
        let mut reason = String::new();
        let mut unmet = 0u32;
        for dep in &spec.depends_on {
            // Dependencies exist: checked by the caller, and inserted first in topological order.
            let Some(d) = self.tasks.get(dep) else { continue };
            match d.state {
                TaskState::Succeeded => {}
                TaskState::Cancelled => {
                    state = TaskState::Cancelled;
                    reason = format!("dependency {dep} was cancelled");
                    break;
                }
                TaskState::Failed | TaskState::TimedOut => {
                    state = TaskState::Failed;
                    reason = format!("dependency {dep} {}", d.state);
                    break;
                }
                TaskState::Pending | TaskState::Assigned | TaskState::Running => unmet += 1,
            }
        }
        let id = spec.id.clone();
        let task = Task {
            state,
            attempts: Vec::new(),
            created_index: index,
            log_index: index,
            submitted_at_ms: now_ms,
            updated_at_ms: now_ms,
            reason,
            seq: self.next_seq,
            unmet_deps: if state == TaskState::Pending { unmet } else { 0 },
            not_before_ms: 0,
            queued_at_ms: now_ms,
            request_id: request_id.to_string(),
            submitted_by: submitted_by.to_string(),
            cancelled_by: String::new(),
            spec,
        };
        self.next_seq += 1;
        if task.state == TaskState::Pending {
            if task.unmet_deps > 0 {
                for dep in &task.spec.depends_on {
                    if self.tasks.get(dep).is_some_and(|d| !d.state.is_terminal()) {
                        self.dependents.entry(dep.clone()).or_default().push(id.clone());
                    }
                }
            }
            if let Some(at) = task.deadline_at_ms() {
                self.deadlines.insert((at, id.clone()));
            }
        }
        self.by_state[task.state.index()].insert(id.clone());
        if task.state.is_terminal() {
            self.finished.insert((task.updated_at_ms, id.clone()));
        }
        self.tasks.insert(id.clone(), task);
        self.enqueue(&id, now_ms);
        Submitted {
            id,
            created: true,
            state,
            log_index: index,
        }
    }

    /// Cancels task `id` for principal `by`; with `only_own`, only a task `by` submitted.
    fn cancel(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        id: &str,
        reason: String,
        by: String,
        only_own: bool,
    ) -> Result<CancelOutcome, Rejection> {
        validate::validate_id(id)?;
        if reason.len() > validate::MAX_REASON_LEN {
            return Err(Rejection::invalid(
                "reason",
                format!(
                    "longer than {} bytes (limit max_reason_len)",
                    validate::MAX_REASON_LEN
                ),
            ));
        }
        if by.len() > acl::MAX_TOKEN_NAME_LEN {
            return Err(Rejection::invalid(
                "by",
                format!("longer than {} bytes", acl::MAX_TOKEN_NAME_LEN),
            ));
        }
        let Some(task) = self.tasks.get(id) else {
            return Err(Rejection::not_found("id", format!("no task {id:?}")));
        };
        // Checked before the terminal case, so the answer never tells a stranger more than
        // that the task exists.
        if only_own && task.submitted_by != by {
            return Err(Rejection::permission_denied(
                "id",
                format!(
                    "{by:?} may cancel only the tasks it submitted (the operator role cancels any); \
                     task {id} was submitted by {:?}",
                    task.submitted_by
                ),
            ));
        }
        if task.state.is_terminal() {
            return Ok(CancelOutcome {
                id: id.to_string(),
                cancelled: false,
                state: task.state,
                log_index: task.log_index,
            });
        }
        let reason = if reason.is_empty() {
            "cancelled by request".to_string()
        } else {
            reason
        };
        // An assigned or running attempt ends `Cancelled` in `finish`; its agent learns it from
        // its assignment stream (the task disappears from what it should run).
        self.finish(index, now_ms, id, TaskState::Cancelled, reason);
        if let Some(task) = self.tasks.get_mut(id) {
            task.cancelled_by = by;
        }
        Ok(CancelOutcome {
            id: id.to_string(),
            cancelled: true,
            state: TaskState::Cancelled,
            log_index: index,
        })
    }

    /// Moves a non-terminal task to a terminal state and settles its dependents: released when it
    /// succeeded, cancelled or failed (transitively) otherwise, with the reason naming it.
    ///
    /// Every terminal transition goes through here, so this is where a task leaves the queues
    /// and the deadline index, and where an attempt still open (cancel, hard deadline) ends
    /// `Cancelled` and comes off its agent's books.
    fn finish(&mut self, index: LogIndex, now_ms: UnixMillis, id: &str, outcome: TaskState, reason: String) {
        debug_assert!(outcome.is_terminal());
        let mut work = vec![(id.to_string(), outcome, reason)];
        while let Some((id, outcome, reason)) = work.pop() {
            if self.tasks.get(&id).is_none_or(|t| t.state.is_terminal()) {
                continue;
            }
            self.end_attempt(now_ms, &id, AttemptEnd::Cancelled, &reason);
            self.unqueue(&id);
            self.set_state(index, now_ms, &id, outcome);
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.reason = reason;
            if let Some(at) = task.deadline_at_ms() {
                self.deadlines.remove(&(at, id.clone()));
            }
            let Some(dependents) = self.dependents.remove(&id) else {
                continue;
            };
            for dep_id in dependents {
                match outcome {
                    TaskState::Succeeded => self.release(index, now_ms, &dep_id),
                    TaskState::Cancelled => work.push((
                        dep_id,
                        TaskState::Cancelled,
                        format!("dependency {id} was cancelled"),
                    )),
                    _ => work.push((dep_id, TaskState::Failed, format!("dependency {id} {outcome}"))),
                }
            }
        }
    }

    /// One dependency of `id` succeeded: count it, and queue the task once none is left.
    fn release(&mut self, index: LogIndex, now_ms: UnixMillis, id: &str) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if task.state != TaskState::Pending || task.unmet_deps == 0 {
            return;
        }
        // A change of the task like any other: stamped, even while dependencies remain
        // (found by fuzzing: `unmet_deps` changed without `log_index`).
        task.unmet_deps -= 1;
        task.log_index = index;
        task.updated_at_ms = now_ms;
        if task.unmet_deps == 0 {
            self.enqueue(id, now_ms);
        }
    }

    /// Registers an agent, or a new incarnation of one: epoch = `index`, alive, empty books.
    /// Whatever the previous incarnation held is lost (new attempt, or failed when spent).
    fn register_agent(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        info: AgentInfo,
    ) -> Result<Registered, Rejection> {
        validate::validate_agent(&info)?;
        let id = info.id.clone();
        let lost = if self.agents.contains_key(&id) {
            self.lose_all(index, now_ms, &id, &format!("agent {id} re-registered"))
        } else {
            Vec::new()
        };
        self.agents.insert(
            id.clone(),
            Agent {
                info,
                state: AgentState::Alive,
                epoch: index,
                registered_at_ms: now_ms,
                updated_at_ms: now_ms,
                used: Resources::default(),
                tasks: 0,
                reason: String::new(),
                exit: None,
            },
        );
        Ok(Registered {
            id,
            epoch: index,
            lost,
        })
    }

    /// Drains, undrains or declares an agent down. A down agent's tasks are lost; it comes back
    /// only by registering again (with a new epoch).
    fn set_agent_state(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        id: &str,
        epoch: Option<LogIndex>,
        to: AgentState,
        reason: String,
    ) -> Result<AgentStateChanged, Rejection> {
        if reason.len() > validate::MAX_REASON_LEN {
            return Err(Rejection::invalid(
                "reason",
                format!(
                    "longer than {} bytes (limit max_reason_len)",
                    validate::MAX_REASON_LEN
                ),
            ));
        }
        let Some(agent) = self.agents.get(id) else {
            return Err(Rejection::not_found("id", format!("no agent {id:?}")));
        };
        let unchanged = AgentStateChanged {
            id: id.to_string(),
            changed: false,
            state: agent.state,
            epoch: agent.epoch,
            lost: Vec::new(),
        };
        // A decision about an earlier incarnation, or nothing to do.
        if epoch.is_some_and(|e| e != agent.epoch) || agent.state == to {
            return Ok(unchanged);
        }
        if agent.state == AgentState::Down {
            return Err(Rejection::failed_precondition(
                "state",
                format!("agent {id} is down: a down agent must register again"),
            ));
        }
        let epoch = agent.epoch;
        let reason = match (to, reason.is_empty()) {
            (AgentState::Down, true) => format!("agent {id} down"),
            _ => reason,
        };
        let lost = if to == AgentState::Down {
            self.lose_all(index, now_ms, id, &reason)
        } else {
            Vec::new()
        };
        if let Some(agent) = self.agents.get_mut(id) {
            agent.state = to;
            agent.reason = reason;
            agent.updated_at_ms = now_ms;
            // Undraining cancels an exit request (if the agent has not acted on it yet).
            if to == AgentState::Alive {
                agent.exit = None;
            }
        }
        Ok(AgentStateChanged {
            id: id.to_string(),
            changed: true,
            state: to,
            epoch,
            lost,
        })
    }

    /// Drains agent `id` and records that it is to exit once drained (see
    /// [`Command::RequestAgentExit`]). Asking again with another deadline replaces it.
    fn request_agent_exit(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        id: &str,
        deadline_ms: Option<u64>,
        reason: String,
    ) -> Result<AgentStateChanged, Rejection> {
        if deadline_ms.is_some_and(|d| d > validate::MAX_EXIT_DEADLINE_MS) {
            return Err(Rejection::invalid(
                "deadline_ms",
                format!(
                    "longer than {} ms (limit max_exit_deadline)",
                    validate::MAX_EXIT_DEADLINE_MS
                ),
            ));
        }
        let reason = if reason.is_empty() {
            "asked to exit once drained".to_string()
        } else {
            reason
        };
        let drained = self.set_agent_state(index, now_ms, id, None, AgentState::Draining, reason.clone())?;
        let Some(agent) = self.agents.get_mut(id) else {
            return Err(Rejection::not_found("id", format!("no agent {id:?}")));
        };
        let exit = DrainExit {
            requested_at_ms: now_ms,
            deadline_at_ms: deadline_ms.map(|d| now_ms.saturating_add(d)),
        };
        // The same deadline asked again changes nothing (a retried request).
        let changed = drained.changed || agent.exit.is_none_or(|e| e.deadline_at_ms != exit.deadline_at_ms);
        if changed {
            agent.exit = Some(exit);
            agent.reason = reason;
            agent.updated_at_ms = now_ms;
        }
        Ok(AgentStateChanged { changed, ..drained })
    }

    /// Takes every task away from agent `agent_id` (see `lose`) and empties its books.
    /// Returns the tasks, in id order.
    fn lose_all(&mut self, index: LogIndex, now_ms: UnixMillis, agent_id: &str, error: &str) -> Vec<TaskId> {
        let held: Vec<TaskId> = self
            .by_agent
            .get(agent_id)
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        for id in &held {
            self.lose(index, now_ms, id, error);
        }
        // `lose` took each task off the books already; this only makes sure nothing is left.
        self.by_agent.remove(agent_id);
        self.held_changed.insert(agent_id.to_string(), index);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used = Resources::default();
            agent.tasks = 0;
        }
        held
    }

    /// The current attempt of `id` is taken away from its agent (down, re-registered): it ends
    /// `Lost` with `error`, and the task gets another attempt (at once if the lost one never
    /// started, after a back-off otherwise) or fails when its attempts are spent.
    fn lose(&mut self, index: LogIndex, now_ms: UnixMillis, id: &str, error: &str) {
        if self.end_attempt(now_ms, id, AttemptEnd::Lost, error) {
            let exhausted = format!("attempts exhausted: {error}");
            self.retry_or_fail(index, now_ms, id, error, TaskState::Failed, exhausted);
        }
    }

    /// The current attempt of `id` has just ended (and is off its agent's books) without
    /// succeeding, because `why`. Retries the task when attempts are left: pending again, with
    /// `not_before_ms` = now + [`retry::retry_delay_ms`] if the attempt counted, now otherwise.
    /// Otherwise ends the task as `fail_as` with `fail_reason` (dependents follow).
    fn retry_or_fail(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        id: &str,
        why: &str,
        fail_as: TaskState,
        fail_reason: String,
    ) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let used = task.attempts_used();
        if used >= task.spec.max_attempts {
            self.finish(index, now_ms, id, fail_as, fail_reason);
            return;
        }
        let (number, counted) = task
            .attempts
            .last()
            .map_or((0, false), |a| (a.number, a.counts()));
        let delay = if counted {
            retry::retry_delay_ms(id, used, task.spec.backoff_ms)
        } else {
            0
        };
        task.not_before_ms = now_ms.saturating_add(delay);
        task.reason = format!("retrying after attempt {number}: {why}");
        self.set_state(index, now_ms, id, TaskState::Pending);
        self.enqueue(id, now_ms);
    }

    /// Applies one scheduling round's placements, each on its own. The fencing token of every
    /// placement is `index`.
    fn assign(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        placements: Vec<Placement>,
    ) -> Vec<Result<(), Rejection>> {
        let mut seen: HashSet<TaskId> = HashSet::with_capacity(placements.len());
        let mut out = Vec::with_capacity(placements.len());
        for (i, p) in placements.into_iter().enumerate() {
            let repeated = !seen.insert(p.task_id.clone());
            out.push(
                self.place(index, now_ms, p, repeated)
                    .map_err(|e| e.within(&format!("placements[{i}]"))),
            );
        }
        out
    }

    /// One placement: every check first, then the change (so a rejection changes nothing).
    fn place(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        p: Placement,
        repeated: bool,
    ) -> Result<(), Rejection> {
        let Some(task) = self.tasks.get(&p.task_id) else {
            return Err(Rejection::not_found(
                "task_id",
                format!("no task {:?}", p.task_id),
            ));
        };
        if repeated {
            return Err(Rejection::failed_precondition(
                "task_id",
                format!("task {} is placed more than once in this command", p.task_id),
            ));
        }
        let Some(agent) = self.agents.get(&p.agent_id) else {
            return Err(Rejection::not_found(
                "agent_id",
                format!("no agent {:?}", p.agent_id),
            ));
        };
        if agent.state != AgentState::Alive {
            return Err(Rejection::failed_precondition(
                "agent_id",
                format!("agent {} is {}: it takes no new work", p.agent_id, agent.state),
            ));
        }
        if agent.epoch != p.agent_epoch {
            return Err(Rejection::failed_precondition(
                "agent_epoch",
                format!(
                    "agent {} is at epoch {}, not {} (it registered again)",
                    p.agent_id, agent.epoch, p.agent_epoch
                ),
            ));
        }
        match p.move_from {
            None => {
                if task.state != TaskState::Pending {
                    return Err(Rejection::failed_precondition(
                        "task_id",
                        format!("task {} is {}, not pending", p.task_id, task.state),
                    ));
                }
                if task.unmet_deps > 0 {
                    return Err(Rejection::failed_precondition(
                        "task_id",
                        format!("task {} waits for {} dependencies", p.task_id, task.unmet_deps),
                    ));
                }
                if task.not_before_ms > 0 {
                    return Err(Rejection::failed_precondition(
                        "task_id",
                        format!(
                            "task {} waits out a back-off until {}",
                            p.task_id, task.not_before_ms
                        ),
                    ));
                }
            }
            Some(token) => match task.current_attempt() {
                Some(a) if task.state == TaskState::Assigned && a.fencing_token == token => {
                    if a.agent_id == p.agent_id {
                        return Err(Rejection::failed_precondition(
                            "agent_id",
                            format!("task {} is already assigned to agent {}", p.task_id, p.agent_id),
                        ));
                    }
                }
                _ => {
                    return Err(Rejection::failed_precondition(
                        "move_from",
                        format!(
                            "task {} is not assigned and unstarted under token {token} (it is {}, token {})",
                            p.task_id,
                            task.state,
                            task.current_token().map_or("none".to_string(), |t| t.to_string())
                        ),
                    ));
                }
            },
        }
        if !task.spec.pool.is_empty() && task.spec.pool != agent.info.pool {
            return Err(Rejection::failed_precondition(
                "agent_id",
                format!(
                    "agent {} serves pool {:?}, the task needs pool {:?}",
                    p.agent_id, agent.info.pool, task.spec.pool
                ),
            ));
        }
        if let Some((k, v)) = task
            .spec
            .constraints
            .iter()
            .find(|(k, v)| agent.info.labels.get(*k) != Some(*v))
        {
            return Err(Rejection::failed_precondition(
                "agent_id",
                format!("agent {} lacks the label {k}={v} the task requires", p.agent_id),
            ));
        }
        if !agent.fits(&task.spec.resources) {
            return Err(Rejection::failed_precondition(
                "agent_id",
                format!(
                    "agent {} has no room: {}/{} tasks, using {:?} of {:?}, the task needs {:?}",
                    p.agent_id,
                    agent.tasks,
                    agent.info.max_tasks,
                    agent.used,
                    agent.info.resources,
                    task.spec.resources
                ),
            ));
        }
        // Every check passed: from here on nothing fails.
        let need = task.spec.resources;
        let number = u32::try_from(task.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if p.move_from.is_some() {
            let why = format!("moved to agent {}", p.agent_id);
            self.end_attempt(now_ms, &p.task_id, AttemptEnd::Moved, &why);
        } else {
            self.unqueue(&p.task_id);
        }
        let Some(task) = self.tasks.get_mut(&p.task_id) else {
            return Ok(());
        };
        task.attempts.push(Attempt {
            number,
            agent_id: p.agent_id.clone(),
            fencing_token: index,
            assigned_at_ms: now_ms,
            ..Attempt::default()
        });
        task.reason.clear();
        self.set_state(index, now_ms, &p.task_id, TaskState::Assigned);
        self.by_agent
            .entry(p.agent_id.clone())
            .or_default()
            .insert(p.task_id, index);
        self.held_changed.insert(p.agent_id.clone(), index);
        if let Some(agent) = self.agents.get_mut(&p.agent_id) {
            agent.used = plus(agent.used, &need);
            agent.tasks = agent.tasks.saturating_add(1);
        }
        Ok(())
    }

    /// Answers one agent report (the `i`-th of its command).
    fn report(&mut self, index: LogIndex, now_ms: UnixMillis, i: usize, r: TaskReport) -> ReportOutcome {
        if let ReportEvent::Finished { end, .. } = &r.event
            && !reported_by_agents(*end)
        {
            return ReportOutcome::Invalid(Rejection::invalid(
                format!("reports[{i}].event.end"),
                format!("{end} is not an end an agent reports (succeeded, failed, timed_out, killed)"),
            ));
        }
        let Some(task) = self.tasks.get(&r.task_id) else {
            return ReportOutcome::Invalid(Rejection::not_found(
                format!("reports[{i}].task_id"),
                format!("no task {:?}", r.task_id),
            ));
        };
        // A retry of a report accepted before changes nothing.
        let same = |a: &Attempt| a.fencing_token == r.token && a.agent_id == r.agent_id;
        let duplicate = match &r.event {
            ReportEvent::Started => task
                .current_attempt()
                .is_some_and(|a| same(a) && a.started_at_ms.is_some()),
            ReportEvent::Finished { end, .. } => task.attempts.iter().any(|a| same(a) && a.end == Some(*end)),
        };
        if duplicate {
            return ReportOutcome::Duplicate;
        }
        if let Some(why) = stale(task, &r) {
            return ReportOutcome::Stale(why);
        }
        let id = r.task_id;
        match r.event {
            // The agent claims the attempt; it spawns the process only after this is accepted.
            ReportEvent::Started => {
                if let Some(attempt) = self.tasks.get_mut(&id).and_then(|t| t.attempts.last_mut()) {
                    attempt.started_at_ms = Some(now_ms);
                }
                self.set_state(index, now_ms, &id, TaskState::Running);
            }
            ReportEvent::Finished {
                end,
                exit_code,
                error,
                stdout_tail,
                stderr_tail,
            } => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return ReportOutcome::Accepted;
                };
                let need = task.spec.resources;
                let timeout_ms = task.spec.timeout_ms;
                let Some(attempt) = task.attempts.last_mut() else {
                    return ReportOutcome::Accepted;
                };
                attempt.end = Some(end);
                attempt.exit_code = exit_code;
                attempt.error = keep_head(error, validate::MAX_REASON_LEN);
                attempt.stdout_tail = keep_tail(stdout_tail, validate::MAX_OUTPUT_TAIL);
                attempt.stderr_tail = keep_tail(stderr_tail, validate::MAX_OUTPUT_TAIL);
                attempt.finished_at_ms = Some(now_ms);
                let agent_id = attempt.agent_id.clone();
                let why = describe_end(attempt, timeout_ms);
                self.release_agent(&agent_id, &id, &need);
                match end {
                    AttemptEnd::Succeeded => {
                        self.finish(index, now_ms, &id, TaskState::Succeeded, String::new())
                    }
                    AttemptEnd::TimedOut => {
                        self.retry_or_fail(index, now_ms, &id, &why, TaskState::TimedOut, why.clone())
                    }
                    _ => self.retry_or_fail(index, now_ms, &id, &why, TaskState::Failed, why.clone()),
                }
            }
        }
        ReportOutcome::Accepted
    }

    /// Time passes: tasks past their hard deadline end timed out (dependents follow), then
    /// delayed tasks whose back-off has passed become runnable.
    fn tick(&mut self, index: LogIndex, now_ms: UnixMillis) -> Ticked {
        let mut out = Ticked::default();
        let passed: Vec<TaskId> = self
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, id)| id.clone())
            .collect();
        for id in passed {
            // A task failed by an earlier expiry's cascade is terminal already.
            let Some(task) = self.tasks.get(&id).filter(|t| !t.state.is_terminal()) else {
                continue;
            };
            let reason = format!("deadline of {}ms passed", task.spec.deadline_ms);
            self.finish(index, now_ms, &id, TaskState::TimedOut, reason);
            out.expired.push(id);
        }
        let due: Vec<(UnixMillis, TaskId)> = self
            .delayed
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .cloned()
            .collect();
        for key in due {
            self.delayed.remove(&key);
            let id = key.1;
            if let Some(task) = self.tasks.get_mut(&id) {
                task.log_index = index;
                task.updated_at_ms = now_ms;
            }
            self.enqueue(&id, now_ms);
            out.released.push(id);
        }
        out
    }

    /// Ends the open current attempt of `id` (if it has one) as `end`, because `error`, and
    /// takes the task off its agent's books. Returns whether there was such an attempt.
    fn end_attempt(&mut self, now_ms: UnixMillis, id: &str, end: AttemptEnd, error: &str) -> bool {
        let Some(task) = self.tasks.get_mut(id) else {
            return false;
        };
        if !matches!(task.state, TaskState::Assigned | TaskState::Running) {
            return false;
        }
        let need = task.spec.resources;
        let Some(attempt) = task.attempts.last_mut().filter(|a| a.end.is_none()) else {
            return false;
        };
        attempt.end = Some(end);
        attempt.error = error.to_string();
        attempt.finished_at_ms = Some(now_ms);
        let agent_id = attempt.agent_id.clone();
        self.release_agent(&agent_id, id, &need);
        true
    }

    /// Takes task `id` off agent `agent_id`'s books: its `by_agent` entry, one slot and `need`.
    /// Does nothing if the agent does not hold the task, so it can never count a task twice.
    fn release_agent(&mut self, agent_id: &str, id: &str, need: &Resources) {
        let Some(held) = self.by_agent.get_mut(agent_id) else {
            return;
        };
        if held.remove(id).is_none() {
            return;
        }
        if held.is_empty() {
            self.by_agent.remove(agent_id);
        }
        self.held_changed.insert(agent_id.to_string(), self.applying);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used = minus(agent.used, need);
            agent.tasks = agent.tasks.saturating_sub(1);
        }
    }

    /// Puts a pending task with no unmet dependency (and in no queue) where it belongs: in
    /// `delayed` while `now_ms` is before its `not_before_ms`, otherwise in `runnable`, with
    /// `not_before_ms` reset to 0 and `queued_at_ms` = `now_ms`.
    fn enqueue(&mut self, id: &str, now_ms: UnixMillis) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if task.state != TaskState::Pending || task.unmet_deps > 0 {
            return;
        }
        if task.not_before_ms > now_ms {
            self.delayed.insert((task.not_before_ms, id.to_string()));
        } else {
            task.not_before_ms = 0;
            task.queued_at_ms = now_ms;
            self.runnable.insert(runnable_key(task));
            self.runnable_by_seq
                .insert((task.spec.pool.clone(), task.seq, id.to_string()));
        }
    }

    /// Takes a task out of `runnable`, `runnable_by_seq` and `delayed` (whichever it is in).
    fn unqueue(&mut self, id: &str) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        self.runnable.remove(&runnable_key(task));
        self.runnable_by_seq
            .remove(&(task.spec.pool.clone(), task.seq, id.to_string()));
        self.delayed.remove(&(task.not_before_ms, id.to_string()));
    }

    /// Sets a task's state (keeping `by_state` in step) and stamps the change.
    fn set_state(&mut self, index: LogIndex, now_ms: UnixMillis, id: &str, to: TaskState) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let from = task.state;
        task.state = to;
        task.log_index = index;
        task.updated_at_ms = now_ms;
        if from != to {
            self.by_state[from.index()].remove(id);
            self.by_state[to.index()].insert(id.to_string());
            if to.is_terminal() && !from.is_terminal() {
                self.finished.insert((now_ms, id.to_string()));
            }
        }
    }

    /// Forgets finished tasks, oldest first (see [`Command::PurgeFinished`]). Returns how many.
    fn purge_finished(&mut self, finished_before_ms: UnixMillis, keep_finished: u64, max: u32) -> u64 {
        let mut purged = 0u64;
        while purged < u64::from(max) {
            let Some((at, id)) = self.finished.get_min().cloned() else {
                break;
            };
            if at >= finished_before_ms && self.finished.len() as u64 <= keep_finished {
                break;
            }
            self.finished.remove(&(at, id.clone()));
            if let Some(task) = self.tasks.remove(&id) {
                self.by_state[task.state.index()].remove(&id);
                // A task that ended before its dependencies may still be listed as their
                // dependent; once its id is free again, a new task of that id must not inherit
                // the edge (found by fuzzing: the new task failed with an old dependency).
                for dep in &task.spec.depends_on {
                    if let Some(list) = self.dependents.get_mut(dep) {
                        list.retain(|d| *d != id);
                        if list.is_empty() {
                            self.dependents.remove(dep);
                        }
                    }
                }
                self.dependents.remove(&id);
            }
            purged += 1;
        }
        purged
    }

    /// Whether a [`Command::PurgeFinished`] with these bounds would forget anything: a cheap
    /// check for the leader before it proposes one.
    pub fn purge_due(&self, finished_before_ms: UnixMillis, keep_finished: u64) -> bool {
        self.finished
            .get_min()
            .is_some_and(|(at, _)| *at < finished_before_ms || self.finished.len() as u64 > keep_finished)
    }

    /// How many finished tasks are kept.
    pub fn finished_len(&self) -> usize {
        self.finished.len()
    }

    /// Finished tasks, the most recently finished first (for monitoring).
    pub fn recently_finished(&self) -> impl Iterator<Item = &Task> + '_ {
        self.finished
            .iter()
            .rev()
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    /// Tasks not yet terminal that have a hard deadline, earliest deadline first, with it.
    pub fn by_deadline(&self) -> impl Iterator<Item = (UnixMillis, &Task)> + '_ {
        self.deadlines
            .iter()
            .filter_map(|(at, id)| self.tasks.get(id).map(|t| (*at, t)))
    }
}

fn runnable_key(task: &Task) -> RunnableKey {
    (
        task.spec.pool.clone(),
        Reverse(task.spec.priority),
        task.seq,
        task.spec.id.clone(),
    )
}

/// `a + b`, per resource, saturating.
fn plus(a: Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.saturating_add(b.cpu_millis),
        memory_mb: a.memory_mb.saturating_add(b.memory_mb),
        disk_mb: a.disk_mb.saturating_add(b.disk_mb),
    }
}

/// `a - b`, per resource, saturating.
fn minus(a: Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.saturating_sub(b.cpu_millis),
        memory_mb: a.memory_mb.saturating_sub(b.memory_mb),
        disk_mb: a.disk_mb.saturating_sub(b.disk_mb),
    }
}

/// The ends an agent may report; the others are decided by the state machine.
fn reported_by_agents(end: AttemptEnd) -> bool {
    matches!(
        end,
        AttemptEnd::Succeeded | AttemptEnd::Failed | AttemptEnd::TimedOut | AttemptEnd::Killed
    )
}

/// Why a report about `task` is not for its current attempt, if it is not.
fn stale(task: &Task, r: &TaskReport) -> Option<String> {
    if task.state.is_terminal() {
        return Some(format!("task {} is {}", task.spec.id, task.state));
    }
    let Some(current) = task.current_attempt() else {
        return Some(format!(
            "token {} is not current: task {} is pending a new attempt",
            r.token, task.spec.id
        ));
    };
    if current.fencing_token != r.token {
        return Some(format!(
            "token {} is not current: task {} is at token {}",
            r.token, task.spec.id, current.fencing_token
        ));
    }
    if current.agent_id != r.agent_id {
        return Some(format!(
            "token {} of task {} belongs to agent {}, not {}",
            r.token, task.spec.id, current.agent_id, r.agent_id
        ));
    }
    None
}

/// A short account of how an agent-reported attempt went wrong: `exit code 3`, `timed out
/// after 500ms`, or the agent's error.
fn describe_end(attempt: &Attempt, timeout_ms: u64) -> String {
    let error = attempt.error.as_str();
    match (attempt.end, attempt.exit_code) {
        (Some(AttemptEnd::TimedOut), _) if timeout_ms > 0 => format!("timed out after {timeout_ms}ms"),
        (Some(AttemptEnd::TimedOut), _) => "timed out".to_string(),
        (Some(AttemptEnd::Killed), _) if error.is_empty() => "killed".to_string(),
        (Some(AttemptEnd::Killed), _) => format!("killed: {error}"),
        (_, Some(code)) if error.is_empty() => format!("exit code {code}"),
        (_, Some(code)) => format!("exit code {code}: {error}"),
        (_, None) if error.is_empty() => "failed".to_string(),
        (_, None) => error.to_string(),
    }
}

/// At most `max` bytes of `s`: its start, cut on a char boundary.
fn keep_head(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// At most `max` bytes of `s`: its end, cut on a char boundary (the tail of a process's output
/// is what says why it failed).
fn keep_tail(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s.split_off(start)
}

/// Orders the new tasks of a request so that every task comes after its new dependencies
/// (Kahn's algorithm, ties broken by request position for determinism). A cycle is a rejection
/// naming one task on it.
fn topological_order(tasks: &[TaskSpec], new: &HashMap<&str, usize>) -> Result<Vec<usize>, Rejection> {
    let mut indegree: BTreeMap<usize, usize> = new.values().map(|&i| (i, 0)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in new.values() {
        for dep in &tasks[i].depends_on {
            if let Some(&d) = new.get(dep.as_str()) {
                *indegree.entry(i).or_default() += 1;
                children.entry(d).or_default().push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = indegree
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| *i)
        .collect();
    let mut order = Vec::with_capacity(new.len());
    let mut done = HashSet::with_capacity(new.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        done.insert(i);
        for &c in children.get(&i).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = indegree.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(c);
                }
            }
        }
    }
    if order.len() < new.len() {
        // Every task left over waits on a left-over new dependency; following those edges from
        // the first one must come back to a task seen before, which lies on a cycle.
        let mut at = indegree
            .keys()
            .copied()
            .find(|i| !done.contains(i))
            .unwrap_or_default();
        let mut walk: Vec<usize> = Vec::new();
        let mut step_of: HashMap<usize, usize> = HashMap::new();
        while let std::collections::hash_map::Entry::Vacant(e) = step_of.entry(at) {
            e.insert(walk.len());
            walk.push(at);
            at = tasks[at]
                .depends_on
                .iter()
                .filter_map(|d| new.get(d.as_str()).copied())
                .find(|d| !done.contains(d))
                .unwrap_or(at);
        }
        // Name the cycle's first task in request order.
        let stuck = walk[step_of[&at]..].iter().copied().min().unwrap_or(at);
        return Err(Rejection::invalid(
            format!("tasks[{stuck}].depends_on"),
            format!("dependency cycle through task {:?}", tasks[stuck].id),
        ));
    }
    Ok(order)
}
