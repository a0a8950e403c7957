//! Helpers shared by the taurus-core integration tests.
#![allow(dead_code)]

use taurus_core::Command;
use taurus_core::Rejection;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::Task;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::command::CancelOutcome;
use taurus_core::command::SubmitRequest;
use taurus_core::command::Submitted;
use taurus_core::error::RejectKind;

/// The time (ms since the epoch) tests start at.
pub const T0: u64 = 1_700_000_000_000;

/// A replica driven one command at a time: every command gets the next log index and the
/// current `now` (which only moves when a test says so). Each test file adds the commands it
/// drives in an `impl Sim` of its own.
pub struct Sim {
    pub st: State,
    pub index: u64,
    pub now: u64,
}

impl Sim {
    pub fn new() -> Self {
        Sim {
            st: State::new(),
            index: 0,
            now: T0,
        }
    }

    pub fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        self.st.apply(self.index, cmd)
    }

    /// Applies a SubmitTasks entry of one request, which must be accepted.
    pub fn submit(&mut self, tasks: Vec<TaskSpec>) {
        match self.apply(submit_cmd(vec![tasks], self.now)) {
            Response::Submit(mut results) => {
                results.pop().expect("one result").expect("submission accepted");
            }
            other => panic!("SubmitTasks answered {other:?}"),
        }
    }
}

/// A minimal valid spec.
pub fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        id: id.to_string(),
        command: vec!["/bin/true".to_string()],
        max_attempts: 1,
        ..TaskSpec::default()
    }
}

/// A minimal valid spec with dependencies.
pub fn spec_deps(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..spec(id)
    }
}

/// A minimal valid spec with a priority.
pub fn spec_prio(id: &str, priority: i32) -> TaskSpec {
    TaskSpec { priority, ..spec(id) }
}

pub fn now_for(index: u64) -> u64 {
    T0 + index * 10
}

/// A SubmitTasks command of requests without a `request_id`.
pub fn submit_cmd(requests: Vec<Vec<TaskSpec>>, now_ms: u64) -> Command {
    Command::SubmitTasks {
        requests: requests
            .into_iter()
            .map(|tasks| SubmitRequest {
                tasks,
                request_id: String::new(),
                queue_limit: None,
                submitted_by: String::new(),
            })
            .collect(),
        now_ms,
    }
}

pub fn cancel_cmd(id: &str, reason: &str, now_ms: u64) -> Command {
    Command::CancelTask {
        id: id.to_string(),
        reason: reason.to_string(),
        now_ms,
        by: String::new(),
        only_own: false,
    }
}

/// Applies a coalesced SubmitTasks entry at `index` and returns one result per request.
pub fn submit(
    state: &mut State,
    index: u64,
    requests: Vec<Vec<TaskSpec>>,
) -> Vec<Result<Vec<Submitted>, Rejection>> {
    match state.apply(index, submit_cmd(requests, now_for(index))) {
        Response::Submit(results) => results,
        other => panic!("SubmitTasks answered {other:?}"),
    }
}

/// Applies a SubmitTasks entry holding `requests` as they are (keys included).
pub fn submit_requests(
    state: &mut State,
    index: u64,
    requests: Vec<SubmitRequest>,
) -> Vec<Result<Vec<Submitted>, Rejection>> {
    let cmd = Command::SubmitTasks {
        requests,
        now_ms: now_for(index),
    };
    match state.apply(index, cmd) {
        Response::Submit(results) => results,
        other => panic!("SubmitTasks answered {other:?}"),
    }
}

/// Applies a SubmitTasks entry holding a single request with idempotency key `request_id`.
pub fn submit_keyed(
    state: &mut State,
    index: u64,
    request_id: &str,
    tasks: Vec<TaskSpec>,
) -> Result<Vec<Submitted>, Rejection> {
    let request = SubmitRequest {
        tasks,
        request_id: request_id.to_string(),
        queue_limit: None,
        submitted_by: String::new(),
    };
    let mut results = submit_requests(state, index, vec![request]);
    assert_eq!(results.len(), 1, "one result per request");
    results.pop().unwrap()
}

/// Applies a SubmitTasks entry holding a single request.
pub fn submit_one(state: &mut State, index: u64, tasks: Vec<TaskSpec>) -> Result<Vec<Submitted>, Rejection> {
    let mut results = submit(state, index, vec![tasks]);
    assert_eq!(results.len(), 1, "one result per request");
    results.pop().unwrap()
}

/// Applies a CancelTask entry.
pub fn cancel(state: &mut State, index: u64, id: &str, reason: &str) -> Result<CancelOutcome, Rejection> {
    match state.apply(index, cancel_cmd(id, reason, now_for(index))) {
        Response::Cancel(result) => result,
        other => panic!("CancelTask answered {other:?}"),
    }
}

/// Asserts a rejection's kind and field exactly.
#[track_caller]
pub fn assert_rejected<T: std::fmt::Debug>(
    result: Result<T, Rejection>,
    kind: RejectKind,
    field: &str,
) -> Rejection {
    match result {
        Ok(v) => panic!("expected {kind:?} on {field:?}, got Ok({v:?})"),
        Err(r) => {
            assert_eq!(r.kind, kind, "kind of {r:?}");
            assert_eq!(r.field, field, "field of {r:?}");
            assert!(!r.message.is_empty(), "rejection without message: {r:?}");
            r
        }
    }
}

#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Rejection>, field: &str) -> Rejection {
    assert_rejected(result, RejectKind::InvalidArgument, field)
}

/// Every task, collected by paging through `list` with a small page size.
pub fn all_tasks(state: &State) -> Vec<Task> {
    list_all(state, &[], 7)
}

/// Every task in `states` (all when empty), paging with `limit`.
pub fn list_all(state: &State, states: &[TaskState], limit: usize) -> Vec<Task> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.list(states, after.as_deref(), limit);
        assert!(page.tasks.len() <= limit.max(1), "page larger than limit");
        out.extend(page.tasks.iter().map(|t| (*t).clone()));
        match page.next_after {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    page.tasks.last().map(|t| &t.spec.id),
                    "cursor is the last id of the page"
                );
                after = Some(next);
            }
            None => break,
        }
    }
    out
}

pub fn runnable(state: &State) -> Vec<String> {
    state.runnable().cloned().collect()
}

pub fn ids(tasks: &[Task]) -> Vec<String> {
    tasks.iter().map(|t| t.spec.id.clone()).collect()
}

#[track_caller]
pub fn task<'a>(state: &'a State, id: &str) -> &'a Task {
    state.get(id).unwrap_or_else(|| panic!("task {id} missing"))
}

/// A tiny deterministic pseudo-random generator (SplitMix64), so tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
