//! The replicated state machine: every task, and the indexes the scheduler needs.
//!
//! [`State::apply`] is a deterministic function of (state, log index, command). It never reads a
//! clock, never does I/O, never panics on input: anything a command gets wrong comes back as a
//! [`Rejection`] inside the [`Response`], identically on every replica.
//!
//! Every collection is a persistent (structurally shared) `imbl` map or set, so cloning a
//! `State` is O(1): snapshots clone it under a brief lock and encode it elsewhere, instead of
//! stalling apply (and, on 2 cores, the whole runtime) while a large state is serialized.
//!
//! Indexes kept beside the task map (all derived, rebuilt from the tasks on snapshot load):
//! - `runnable`: pending tasks whose dependencies have all succeeded, ordered by priority
//!   (highest first) then submission order. This is the scheduler's queue.
//! - `dependents`: reverse dependency edges of tasks that are not terminal yet.
//! - `by_state`: ids per state, for listing with a state filter without scanning everything.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;

use imbl::OrdMap;
use imbl::OrdSet;
use std::ops::Bound;

use serde::Deserialize;
use serde::Serialize;

use crate::command::CancelOutcome;
use crate::command::Command;
use crate::command::Response;
use crate::command::SubmitRequest;
use crate::command::Submitted;
use crate::error::CoreError;
use crate::error::Rejection;
use crate::types::LogIndex;
use crate::types::Task;
use crate::types::TaskId;
use crate::types::TaskSpec;
use crate::types::TaskState;
use crate::types::UnixMillis;
use crate::validate;

/// Key of the runnable queue: priority descending, then first come first served.
type RunnableKey = (Reverse<i32>, u64, TaskId);

/// The whole replicated state of a Taurus cluster (tasks; agents arrive with the scheduler).
#[derive(Clone, Debug, Default)]
pub struct State {
    tasks: OrdMap<TaskId, Task>,
    runnable: OrdSet<RunnableKey>,
    dependents: imbl::HashMap<TaskId, Vec<TaskId>>,
    by_state: [OrdSet<TaskId>; 7],
    next_seq: u64,
}

/// What a snapshot holds: the tasks and the counters. Indexes are rebuilt on load.
#[derive(Serialize)]
pub struct StateImageRef<'a> {
    pub next_seq: u64,
    pub tasks: Vec<&'a Task>,
}

/// The owned form of [`StateImageRef`], for loading a snapshot.
#[derive(Debug, Deserialize)]
pub struct StateImage {
    pub next_seq: u64,
    pub tasks: Vec<Task>,
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
        match cmd {
            // Each request of a coalesced batch succeeds or fails on its own.
            Command::SubmitTasks { requests, now_ms } => Response::Submit(
                requests
                    .into_iter()
                    .map(|req| self.submit_request(index, now_ms, req))
                    .collect(),
            ),
            Command::CancelTask { id, reason, now_ms } => {
                Response::Cancel(self.cancel(index, now_ms, &id, reason))
            }
            // TODO(issue 3): being written.
            _ => Response::None,
        }
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

    /// Runnable task ids, highest priority first, then in submission order.
    pub fn runnable(&self) -> impl Iterator<Item = &TaskId> + '_ {
        self.runnable.iter().map(|(_, _, id)| id)
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
        }
    }

    /// Rebuilds a state, indexes included, from a snapshot image.
    pub fn from_image(image: StateImage) -> Result<Self, CoreError> {
        let mut state = State {
            next_seq: image.next_seq,
            ..State::default()
        };
        for task in image.tasks {
            if task.seq >= state.next_seq {
                return Err(CoreError::CorruptSnapshot(format!(
                    "task {} has seq {} >= next_seq {}",
                    task.spec.id, task.seq, state.next_seq
                )));
            }
            if state.tasks.contains_key(&task.spec.id) {
                return Err(CoreError::CorruptSnapshot(format!(
                    "task {} appears twice",
                    task.spec.id
                )));
            }
            state.by_state[task.state.index()].insert(task.spec.id.clone());
            if task.state == TaskState::Pending && task.unmet_deps == 0 {
                state.runnable.insert(runnable_key(&task));
            }
            if !task.state.is_terminal() && task.unmet_deps > 0 {
                for dep in &task.spec.depends_on {
                    state
                        .dependents
                        .entry(dep.clone())
                        .or_default()
                        .push(task.spec.id.clone());
                }
            }
            state.tasks.insert(task.spec.id.clone(), task);
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
        validate::validate_request(&req.tasks)?;
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
        let order = topological_order(&req.tasks, &new)?;
        // Everything checked: from here on nothing can fail, so the request is atomic.
        let mut out: Vec<Option<Submitted>> = vec![None; req.tasks.len()];
        let mut specs: Vec<Option<TaskSpec>> = req.tasks.into_iter().map(Some).collect();
        for i in order {
            let Some(spec) = specs[i].take() else { continue };
            out[i] = Some(self.insert_new(index, now_ms, spec));
        }
        for (i, spec) in specs.into_iter().enumerate() {
            if let Some(spec) = spec {
                // Existing id: return the existing task, never create a second.
                if let Some(t) = self.tasks.get(&spec.id) {
                    out[i] = Some(Submitted {
                        id: spec.id,
                        created: false,
                        state: t.state,
                        log_index: t.log_index,
                    });
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Inserts a new task whose dependencies all exist already.
    fn insert_new(&mut self, index: LogIndex, now_ms: UnixMillis, spec: TaskSpec) -> Submitted {
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
            spec,
        };
        self.next_seq += 1;
        if task.state == TaskState::Pending {
            if task.unmet_deps == 0 {
                self.runnable.insert(runnable_key(&task));
            } else {
                for dep in &task.spec.depends_on {
                    if self.tasks.get(dep).is_some_and(|d| !d.state.is_terminal()) {
                        self.dependents.entry(dep.clone()).or_default().push(id.clone());
                    }
                }
            }
        }
        self.by_state[task.state.index()].insert(id.clone());
        self.tasks.insert(id.clone(), task);
        Submitted {
            id,
            created: true,
            state,
            log_index: index,
        }
    }

    fn cancel(
        &mut self,
        index: LogIndex,
        now_ms: UnixMillis,
        id: &str,
        reason: String,
    ) -> Result<CancelOutcome, Rejection> {
        validate::validate_id(id)?;
        if reason.len() > validate::MAX_REASON_LEN {
            return Err(Rejection::invalid(
                "reason",
                format!("longer than {} bytes", validate::MAX_REASON_LEN),
            ));
        }
        let Some(task) = self.tasks.get(id) else {
            return Err(Rejection::not_found("id", format!("no task {id:?}")));
        };
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
        self.finish(index, now_ms, id, TaskState::Cancelled, reason);
        Ok(CancelOutcome {
            id: id.to_string(),
            cancelled: true,
            state: TaskState::Cancelled,
            log_index: index,
        })
    }

    /// Moves a non-terminal task to a terminal state and settles its dependents: released when it
    /// succeeded, cancelled or failed (transitively) otherwise, with the reason naming it.
    fn finish(&mut self, index: LogIndex, now_ms: UnixMillis, id: &str, outcome: TaskState, reason: String) {
        debug_assert!(outcome.is_terminal());
        let mut work = vec![(id.to_string(), outcome, reason)];
        while let Some((id, outcome, reason)) = work.pop() {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            if task.state.is_terminal() {
                continue;
            }
            let old = task.state;
            if old == TaskState::Pending && task.unmet_deps == 0 {
                self.runnable.remove(&runnable_key(task));
            }
            task.state = outcome;
            task.reason = reason;
            task.log_index = index;
            task.updated_at_ms = now_ms;
            self.by_state[old.index()].remove(&id);
            self.by_state[outcome.index()].insert(id.clone());
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
        task.unmet_deps -= 1;
        if task.unmet_deps == 0 {
            task.log_index = index;
            task.updated_at_ms = now_ms;
            self.runnable.insert(runnable_key(task));
        }
    }
}

fn runnable_key(task: &Task) -> RunnableKey {
    (Reverse(task.spec.priority), task.seq, task.spec.id.clone())
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
