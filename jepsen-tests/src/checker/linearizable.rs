//! Per-task linearizability of submits, cancels and status reads (WGL).
//!
//! # Model
//! Each task is a register whose value is `absent` or a [`TaskState`]. Clients change it with
//! `submit` and `cancel`; the scheduler changes it on its own (assign, start, finish, requeue,
//! dependency cascade, deadline), and those steps are not in the history. So the model is
//! nondeterministic: between any two client operations, the task may take any number of
//! *internal* steps along an allowed successor relation ([`Lifecycle`]). Reads must then observe a
//! sequence of states that is reachable along that relation and consistent with real-time order.
//!
//! To keep the Wing & Gong search deterministic, the model state is the **set** of states the
//! task could be in (a bitmask of 8). Each operation first closes the set under internal steps,
//! then applies itself:
//! * `submit` answering `created = true`: needs `absent`, gives `pending`; `created = false`:
//!   needs an existing task, keeps it; unknown: either;
//! * `cancel` answering `cancelled = true`: needs a non-terminal state, gives `cancelled`;
//!   `cancelled = false`: needs the reported terminal state; unknown: both (or `absent`);
//! * `read` answering `s`: needs `s` reachable, gives exactly `s` (`null` = `absent`).
//!
//! Terminal states have no successors. `absent` has none either: only a submit creates a task.
//!
//! # Indeterminate and failed operations
//! `fail` ops had no effect and are dropped. `info` submits and cancels may take effect at any
//! time after their invoke, or never: they get a return at +∞, so the search may place them
//! anywhere after their invoke, including after everything else (which is "never"). `info`
//! reads tell nothing and are dropped.
//!
//! # Search (Wing & Gong with Lowe's memoisation)
//! Calls and returns are put in one list ordered by time (calls first on ties). The search
//! linearizes a call whose model step succeeds and whose (linearized set, model state) pair is
//! new, lifting it out of the list; meeting a return means the op of that return was not placed
//! in time, so it backtracks. Operations of different tasks are checked separately
//! (P-compositionality; a multi-task submit is projected on each task, which can only miss
//! anomalies, never invent them).
//!
//! The search is exponential in the worst case. `max_steps_per_task` and `time_limit` bound it;
//! when a bound is hit the task's result, and the verdict, is `Unknown` — never a pass.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Valid;
use super::Verdict;
use crate::history::Op;
use crate::history::OpValue;
use crate::history::Outcome;
use crate::history::TaskState;

/// Which internal (scheduler-driven) state changes the model allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifecycle {
    /// Taurus as built: a non-terminal task may move to any state, because an attempt that is
    /// lost or fails with retries left goes back to `pending` (`running → pending`). Terminal
    /// states are final. The order is then `absent < {pending, assigned, running} < terminal`.
    #[default]
    WithRetries,
    /// Forward only: `pending → assigned → running → terminal`, any non-terminal state may jump
    /// to a terminal one. Use when retries and requeues are disabled.
    Strict,
}

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct LinearizableChecker {
    pub lifecycle: Lifecycle,
    /// Search steps allowed per task before giving up with `Unknown`.
    pub max_steps_per_task: u64,
    /// Wall-clock budget for the whole check; `None` for no limit.
    pub time_limit: Option<Duration>,
}

impl Default for LinearizableChecker {
    fn default() -> Self {
        Self {
            lifecycle: Lifecycle::WithRetries,
            max_steps_per_task: 1_000_000,
            time_limit: None,
        }
    }
}

/// What an operation did to one task, as far as the model is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    SubmitCreated,
    SubmitExisting,
    SubmitUnknown,
    Cancelled,
    CancelNoop(Option<TaskState>),
    CancelUnknown,
    Read(Option<TaskState>),
}

/// One operation projected on one task.
#[derive(Clone, Copy, Debug)]
struct LinOp {
    step: Step,
    call: u64,
    /// `None`: returns at +∞ (`info`).
    ret: Option<u64>,
    line: usize,
}

/// Result of the search for one task.
#[derive(Debug, PartialEq, Eq)]
enum Search {
    Linearizable,
    /// Lines of the longest linearizable prefix found, in order.
    NotLinearizable(Vec<usize>),
    Unknown,
}

const ABSENT: u8 = 1;

fn bit(s: TaskState) -> u8 {
    1 << (1 + s.index())
}

const fn mask(states: &[TaskState]) -> u8 {
    let mut m = 0;
    let mut i = 0;
    while i < states.len() {
        m |= 1 << (1 + states[i] as usize);
        i += 1;
    }
    m
}

const NON_TERMINAL: u8 = mask(&[TaskState::Pending, TaskState::Assigned, TaskState::Running]);
const TERMINAL: u8 = mask(&[
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
    TaskState::TimedOut,
]);
const PRESENT: u8 = NON_TERMINAL | TERMINAL;

/// The model: reflexive-transitive closure of internal steps, per state bit.
struct Model {
    reach: [u8; 8],
}

impl Model {
    fn new(lifecycle: Lifecycle) -> Model {
        let mut reach = [0u8; 8];
        reach[0] = ABSENT;
        for s in TaskState::ALL {
            reach[1 + s.index()] = if s.is_terminal() {
                bit(s)
            } else {
                match (lifecycle, s) {
                    (Lifecycle::WithRetries, _) => PRESENT,
                    (Lifecycle::Strict, TaskState::Pending) => PRESENT,
                    (Lifecycle::Strict, TaskState::Assigned) => {
                        bit(TaskState::Assigned) | bit(TaskState::Running) | TERMINAL
                    }
                    (Lifecycle::Strict, _) => bit(TaskState::Running) | TERMINAL,
                }
            };
        }
        Model { reach }
    }

    fn closure(&self, s: u8) -> u8 {
        (0..8)
            .filter(|i| s & (1 << i) != 0)
            .fold(0, |acc, i| acc | self.reach[i])
    }

    /// Applies `step` to the set of possible states `s`; `None` if impossible.
    fn step(&self, s: u8, step: Step) -> Option<u8> {
        let c = self.closure(s);
        let next = match step {
            Step::SubmitCreated if c & ABSENT != 0 => bit(TaskState::Pending),
            Step::SubmitCreated => 0,
            Step::SubmitExisting => c & PRESENT,
            Step::SubmitUnknown => {
                (if c & ABSENT != 0 {
                    bit(TaskState::Pending)
                } else {
                    0
                }) | (c & PRESENT)
            }
            Step::Cancelled if c & NON_TERMINAL != 0 => bit(TaskState::Cancelled),
            Step::Cancelled => 0,
            Step::CancelNoop(Some(t)) if t.is_terminal() => c & bit(t),
            Step::CancelNoop(Some(_)) => 0,
            Step::CancelNoop(None) => c & TERMINAL,
            Step::CancelUnknown => {
                (c & (ABSENT | TERMINAL))
                    | if c & NON_TERMINAL != 0 {
                        bit(TaskState::Cancelled)
                    } else {
                        0
                    }
            }
            Step::Read(None) => c & ABSENT,
            Step::Read(Some(t)) => c & bit(t),
        };
        (next != 0).then_some(next)
    }
}

/// Projects the history on each task.
fn project(ops: &[Op]) -> BTreeMap<String, Vec<LinOp>> {
    let mut out: BTreeMap<String, Vec<LinOp>> = BTreeMap::new();
    for op in ops {
        let ok = match op.outcome {
            Outcome::Fail => continue,
            Outcome::Ok => true,
            Outcome::Info => false,
        };
        let mut add = |id: &str, step: Step| {
            out.entry(id.to_string()).or_default().push(LinOp {
                step,
                call: op.invoke_ns,
                ret: op.complete_ns,
                line: op.line,
            });
        };
        match (&op.invoke, op.result()) {
            (OpValue::Submit(req), resp) => {
                for t in &req.tasks {
                    let created = match resp {
                        OpValue::Submit(r) if ok => {
                            r.tasks.iter().find(|r| r.id == t.id).and_then(|r| r.created)
                        }
                        _ => None,
                    };
                    let step = match created {
                        Some(true) => Step::SubmitCreated,
                        Some(false) => Step::SubmitExisting,
                        None => Step::SubmitUnknown,
                    };
                    add(&t.id, step);
                }
            }
            (OpValue::Cancel(req), resp) => {
                let step = match resp {
                    OpValue::Cancel(r) if ok => match r.cancelled {
                        Some(true) => Step::Cancelled,
                        Some(false) => Step::CancelNoop(r.state),
                        None => Step::CancelUnknown,
                    },
                    _ => Step::CancelUnknown,
                };
                add(&req.id, step);
            }
            (OpValue::Read(_), OpValue::Read(resp)) if ok => {
                for (id, state) in &resp.states {
                    add(id, Step::Read(*state));
                }
            }
            _ => {}
        }
    }
    out
}

/// The search budget, shared by all tasks for the time limit.
struct Budget {
    max_steps: u64,
    deadline: Option<Instant>,
}

/// Wing & Gong's search with Lowe's cache, on one task's operations.
fn wgl(model: &Model, ops: &[LinOp], budget: &Budget) -> Search {
    let n = ops.len();
    let head = 2 * n;
    let tail = 2 * n + 1;
    // Entry 2i is op i's call, 2i+1 its return.
    let mut order: Vec<usize> = (0..2 * n).collect();
    let key = |e: usize| {
        let op = &ops[e / 2];
        let t = if e.is_multiple_of(2) {
            op.call
        } else {
            op.ret.unwrap_or(u64::MAX)
        };
        (t, e % 2, e / 2)
    };
    order.sort_by_key(|&e| key(e));
    let mut next = vec![tail; 2 * n + 2];
    let mut prev = vec![head; 2 * n + 2];
    let mut last = head;
    for &e in &order {
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    next[last] = tail;
    prev[tail] = last;

    let remove = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        next[prev[x]] = next[x];
        prev[next[x]] = prev[x];
    };
    let restore = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        next[prev[x]] = x;
        prev[next[x]] = x;
    };

    let words = n.div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u8)> = HashSet::new();
    let mut stack: Vec<(usize, u8)> = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut state = ABSENT;
    let mut steps: u64 = 0;
    let mut e = next[head];
    while e != tail {
        steps += 1;
        if steps > budget.max_steps
            || (steps.is_multiple_of(256) && budget.deadline.is_some_and(|d| Instant::now() >= d))
        {
            return Search::Unknown;
        }
        let i = e / 2;
        if e.is_multiple_of(2) {
            if let Some(s2) = model.step(state, ops[i].step) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), s2)) {
                    stack.push((e, state));
                    if stack.len() > best.len() {
                        best = stack.iter().map(|(c, _)| ops[c / 2].line).collect();
                    }
                    state = s2;
                    remove(&mut next, &mut prev, e);
                    remove(&mut next, &mut prev, e + 1);
                    e = next[head];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            e = next[e];
        } else {
            let Some((c, old)) = stack.pop() else {
                return Search::NotLinearizable(best);
            };
            let j = c / 2;
            state = old;
            linearized[j / 64] &= !(1 << (j % 64));
            restore(&mut next, &mut prev, c + 1);
            restore(&mut next, &mut prev, c);
            e = next[c];
        }
    }
    Search::Linearizable
}

impl Checker for LinearizableChecker {
    fn name(&self) -> &'static str {
        "linearizable-status"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let model = Model::new(self.lifecycle);
        let budget = Budget {
            max_steps: self.max_steps_per_task,
            deadline: self.time_limit.map(|d| Instant::now() + d),
        };
        let mut anomalies = Vec::new();
        let mut notes = Vec::new();
        let mut unknown = 0;
        let mut ops_count = 0;
        let per_task = project(input.ops);
        for (id, ops) in &per_task {
            ops_count += ops.len();
            match wgl(&model, ops, &budget) {
                Search::Linearizable => {}
                Search::NotLinearizable(prefix) => {
                    let lines: Vec<usize> = ops.iter().map(|o| o.line).collect();
                    anomalies.push(Anomaly::new(
                        AnomalyKind::NonLinearizable,
                        id,
                        format!(
                            "no linearization of the ops at lines {lines:?}; longest valid prefix: {prefix:?}"
                        ),
                    ));
                }
                Search::Unknown => {
                    unknown += 1;
                    notes.push(format!("task {id}: search bound exceeded ({} ops)", ops.len()));
                }
            }
        }
        let mut verdict = Verdict::from_anomalies(
            anomalies,
            super::stats([
                ("tasks", per_task.len()),
                ("ops", ops_count),
                ("unknown_tasks", unknown),
            ]),
        );
        if unknown > 0 {
            verdict.valid = verdict.valid.and(Valid::Unknown);
        }
        verdict.notes = notes;
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventType;
    use crate::testkit::*;

    use TaskState::*;

    fn check(run: &Run) -> Verdict {
        run.check(&LinearizableChecker::default())
    }

    #[test]
    fn plausible_history_passes() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .read_ok(2, "t1", Some(Pending), 5, 15) // concurrent with the submit
            .read_ok(3, "t1", Some(Running), 20, 30)
            .read_ok(2, "t1", Some(Pending), 31, 35) // a requeue (retry) in between
            .read_ok(3, "t1", Some(Succeeded), 40, 50)
            .ok(4, cancel("t1"), 60, cancel_ok("t1", false, Succeeded), 70)
            .read_ok(2, "t1", Some(Succeeded), 80, 90);
        let v = check(&run);
        assert_eq!(v.valid, Valid::True, "{v:?}");
        assert_eq!(v.stats["ops"], 7);
    }

    #[test]
    fn read_terminal_then_read_running_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .read_ok(2, "t1", Some(Succeeded), 20, 30)
            .read_ok(3, "t1", Some(Running), 40, 50);
        let v = check(&run);
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::NonLinearizable);
        assert_eq!(v.anomalies[0].task.as_deref(), Some("t1"));
    }

    #[test]
    fn the_same_reads_overlapping_in_time_pass() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .read_ok(2, "t1", Some(Succeeded), 20, 45)
            .read_ok(3, "t1", Some(Running), 40, 50);
        assert_eq!(check(&run).valid, Valid::True);
    }

    #[test]
    fn read_before_any_submit_completes_must_not_see_the_task() {
        let mut run = Run::new();
        run.read_ok(2, "t1", Some(Pending), 0, 5)
            .submit_ok(1, "t1", &[], true, 10, 20);
        assert_eq!(check(&run).valid, Valid::False);
    }

    #[test]
    fn info_submit_makes_an_otherwise_impossible_read_possible() {
        // Without the submit, reading `pending` is impossible; with an `info` submit it is
        // fine, and so is an earlier read that did not see the task (effect came later).
        let mut run = Run::new();
        run.read_ok(2, "t1", Some(Pending), 50, 60);
        assert_eq!(check(&run).valid, Valid::False);

        let mut run = Run::new();
        run.op(
            1,
            submit(&[("t1", &[])]),
            0,
            EventType::Info,
            submit(&[("t1", &[])]),
            Some(10),
        )
        .read_ok(2, "t1", None, 20, 30)
        .read_ok(2, "t1", Some(Pending), 50, 60);
        assert_eq!(check(&run).valid, Valid::True);

        // A `fail`ed submit had no effect: the read is impossible again.
        let mut run = Run::new();
        run.op(
            1,
            submit(&[("t1", &[])]),
            0,
            EventType::Fail,
            submit(&[("t1", &[])]),
            Some(10),
        )
        .read_ok(2, "t1", Some(Pending), 50, 60);
        assert_eq!(check(&run).valid, Valid::False);
    }

    #[test]
    fn info_cancel_may_take_effect_late_or_never() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .op(2, cancel("t1"), 20, EventType::Info, cancel("t1"), Some(30))
            .read_ok(3, "t1", Some(Running), 40, 50) // cancel not yet applied
            .read_ok(3, "t1", Some(Cancelled), 60, 70); // now it is
        assert_eq!(check(&run).valid, Valid::True);

        // An acknowledged cancel followed by a read of a non-terminal state is not possible.
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .ok(2, cancel("t1"), 20, cancel_ok("t1", true, Cancelled), 30)
            .read_ok(3, "t1", Some(Running), 40, 50);
        assert_eq!(check(&run).valid, Valid::False);
    }

    #[test]
    fn double_creation_is_not_linearizable() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .submit_ok(2, "t1", &[], true, 20, 30);
        assert_eq!(check(&run).valid, Valid::False);
    }

    #[test]
    fn strict_lifecycle_rejects_requeue_that_retries_allow() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 0, 10)
            .read_ok(2, "t1", Some(Running), 20, 30)
            .read_ok(2, "t1", Some(Pending), 40, 50);
        assert_eq!(check(&run).valid, Valid::True);
        let strict = LinearizableChecker {
            lifecycle: Lifecycle::Strict,
            ..LinearizableChecker::default()
        };
        assert_eq!(run.check(&strict).valid, Valid::False);
    }

    /// Many concurrent reads of states that force a long search.
    fn hard_run() -> Run {
        let mut run = Run::new();
        run.submit_ok(0, "t1", &[], true, 0, 1);
        // 14 fully concurrent reads alternating two non-terminal states, then one that no order
        // can satisfy: it sees `pending` after a read of `succeeded` completed.
        for p in 1..15u64 {
            let s = if p % 2 == 0 { Pending } else { Running };
            run.read_ok(p, "t1", Some(s), 10, 1000);
        }
        run.read_ok(20, "t1", Some(Succeeded), 10, 1000)
            .read_ok(21, "t1", Some(Pending), 2000, 2001);
        run
    }

    #[test]
    fn exceeding_the_search_bound_gives_unknown_not_a_pass() {
        let run = hard_run();
        let bounded = LinearizableChecker {
            max_steps_per_task: 50,
            ..LinearizableChecker::default()
        };
        let v = run.check(&bounded);
        assert_eq!(v.valid, Valid::Unknown, "{v:?}");
        assert!(v.anomalies.is_empty());
        assert_eq!(v.stats["unknown_tasks"], 1);
        assert!(v.notes[0].contains("search bound"));
        let timed = LinearizableChecker {
            time_limit: Some(Duration::ZERO),
            max_steps_per_task: u64::MAX,
            ..LinearizableChecker::default()
        };
        assert_eq!(run.check(&timed).valid, Valid::Unknown);
        // With the default bound the search finishes and finds the violation.
        assert_eq!(check(&run).valid, Valid::False);
    }

    // ----- randomized tests (deterministic seeds, no extra dependency) -----

    /// SplitMix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const STEPS: [Step; 12] = [
        Step::SubmitCreated,
        Step::SubmitExisting,
        Step::SubmitUnknown,
        Step::Cancelled,
        Step::CancelNoop(Some(Succeeded)),
        Step::CancelUnknown,
        Step::Read(None),
        Step::Read(Some(Pending)),
        Step::Read(Some(Running)),
        Step::Read(Some(Succeeded)),
        Step::Read(Some(Cancelled)),
        Step::Read(Some(Failed)),
    ];

    /// Exhaustive search over every order consistent with real time; unknown-return ops may
    /// also be left out (they never took effect).
    fn brute_force(model: &Model, ops: &[LinOp], done: &mut Vec<bool>, state: u8) -> bool {
        let remaining: Vec<usize> = (0..ops.len()).filter(|&i| !done[i]).collect();
        if remaining.iter().all(|&i| ops[i].ret.is_none()) {
            return true;
        }
        for &i in &remaining {
            let blocked = remaining
                .iter()
                .any(|&j| j != i && ops[j].ret.is_some_and(|r| r < ops[i].call));
            if blocked {
                continue;
            }
            if let Some(s2) = model.step(state, ops[i].step) {
                done[i] = true;
                let ok = brute_force(model, ops, done, s2);
                done[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn wgl_agrees_with_brute_force_on_random_small_histories() {
        let budget = Budget {
            max_steps: u64::MAX,
            deadline: None,
        };
        let mut rng = Rng(42);
        let (mut yes, mut no) = (0, 0);
        for lifecycle in [Lifecycle::WithRetries, Lifecycle::Strict] {
            let model = Model::new(lifecycle);
            for _ in 0..3000 {
                let n = 1 + rng.below(6) as usize;
                let ops: Vec<LinOp> = (0..n)
                    .map(|i| {
                        let call = rng.below(20);
                        let unknown = rng.below(6) == 0;
                        // `info` ops are only ever projected as the unknown submit or cancel.
                        let step = match (unknown, rng.below(2)) {
                            (true, 0) => Step::SubmitUnknown,
                            (true, _) => Step::CancelUnknown,
                            (false, _) => STEPS[rng.below(STEPS.len() as u64) as usize],
                        };
                        LinOp {
                            step,
                            call,
                            ret: (!unknown).then(|| call + rng.below(10)),
                            line: i + 1,
                        }
                    })
                    .collect();
                let expected = brute_force(&model, &ops, &mut vec![false; n], ABSENT);
                let got = wgl(&model, &ops, &budget);
                assert_eq!(got == Search::Linearizable, expected, "{ops:?}");
                if expected { yes += 1 } else { no += 1 }
            }
        }
        assert!(yes > 500 && no > 500, "{yes} linearizable / {no} not");
    }

    #[test]
    fn simulated_correct_register_is_always_linearizable() {
        // Processes run ops on a real register, each taking effect at a random instant within
        // its interval (or, for some `info` ops, at any later instant), with random internal
        // scheduler steps in between. Such a history must never be judged non-linearizable.
        let mut rng = Rng(7);
        for round in 0..300 {
            let mut events: Vec<(u64, u64, u64, Option<u64>)> = Vec::new(); // (effect, call, proc, ret)
            for p in 0..4u64 {
                let mut t = rng.below(5);
                for _ in 0..5 {
                    let call = t;
                    let ret = call + 1 + rng.below(30);
                    let effect = call + rng.below(ret - call + 1);
                    events.push((effect, call, p, Some(ret)));
                    t = ret + 1 + rng.below(5);
                }
            }
            events.sort();
            let mut state: Option<TaskState> = None;
            let mut run = Run::new();
            let mut recorded = Vec::new();
            for (_effect, call, p, ret) in events {
                // Internal steps before this op.
                if let Some(s) = state
                    && !s.is_terminal()
                    && rng.below(2) == 0
                {
                    state = Some(TaskState::ALL[rng.below(7) as usize]);
                }
                let pick = rng.below(4);
                let (req, resp) = match (pick, state) {
                    (0, None) => {
                        state = Some(Pending);
                        (submit(&[("t", &[])]), submit_created(&[("t", true)]))
                    }
                    (0, Some(_)) => (submit(&[("t", &[])]), submit_created(&[("t", false)])),
                    (1, Some(s)) if !s.is_terminal() => {
                        state = Some(Cancelled);
                        (cancel("t"), cancel_ok("t", true, Cancelled))
                    }
                    (1, Some(s)) => (cancel("t"), cancel_ok("t", false, s)),
                    _ => (read("t"), read_ok("t", state)),
                };
                recorded.push((call, ret, p, req, resp));
            }
            // Each process's ops, in its own order; some non-read ops become `info`, and the
            // process then continues under a new id.
            recorded.sort_by_key(|r| r.0);
            let mut next_id = 100;
            let mut alias: BTreeMap<u64, u64> = BTreeMap::new();
            let mut timeline: Vec<(u64, u64, EventType, OpValue)> = Vec::new();
            for (call, ret, p, req, resp) in recorded {
                let id = *alias.get(&p).unwrap_or(&p);
                timeline.push((call, id, EventType::Invoke, req.clone()));
                let is_read = matches!(req, OpValue::Read(_));
                if !is_read && rng.below(5) == 0 {
                    timeline.push((ret.unwrap(), id, EventType::Info, req));
                    alias.insert(p, next_id);
                    next_id += 1;
                } else {
                    timeline.push((ret.unwrap(), id, EventType::Ok, resp));
                }
            }
            // Invokes before completions at equal times, as the recorder would log them.
            timeline.sort_by_key(|(t, _, kind, _)| (*t, *kind != EventType::Invoke));
            for (t, id, kind, value) in timeline {
                run.history.push(id, kind, value, t);
            }
            let v = check(&run);
            assert_ne!(
                v.valid,
                Valid::False,
                "round {round}: {v:?}\n{}",
                run.history.to_jsonl().unwrap()
            );
        }
    }
}
