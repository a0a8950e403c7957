//! The scheduling half of `State::apply`: agents (`RegisterAgent`, `SetAgentState`), placements
//! (`Assign`), agent reports (`Report`) with fencing, retries with back-off, hard deadlines
//! (`Tick`), the read accessors the leader uses, snapshots of all of it, and determinism.

mod common;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

use common::*;
use taurus_core::Command;
use taurus_core::Rejection;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::Task;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::command::AgentStateChanged;
use taurus_core::command::CancelOutcome;
use taurus_core::command::Placement;
use taurus_core::command::Registered;
use taurus_core::command::ReportEvent;
use taurus_core::command::ReportOutcome;
use taurus_core::command::TaskReport;
use taurus_core::command::Ticked;
use taurus_core::error::RejectKind;
use taurus_core::retry::retry_delay_ms;
use taurus_core::state::StateImage;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::AttemptEnd;
use taurus_core::types::Resources;
use taurus_core::validate::MAX_OUTPUT_TAIL;
use taurus_core::validate::MAX_REASON_LEN;

// ---------------------------------------------------------------------------------------------
// Harness ([`Sim`] from `common`)

impl Sim {
    fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    fn register(&mut self, agent: AgentInfo) -> Result<Registered, Rejection> {
        let now_ms = self.now;
        match self.apply(Command::RegisterAgent { agent, now_ms }) {
            Response::Registered(r) => r,
            other => panic!("RegisterAgent answered {other:?}"),
        }
    }

    /// Registers a roomy agent and returns its epoch.
    fn agent(&mut self, id: &str) -> u64 {
        self.register(agent_info(id, 4)).unwrap().epoch
    }

    fn set_state(
        &mut self,
        id: &str,
        epoch: Option<u64>,
        state: AgentState,
        reason: &str,
    ) -> Result<AgentStateChanged, Rejection> {
        let cmd = Command::SetAgentState {
            id: id.to_string(),
            epoch,
            state,
            reason: reason.to_string(),
            now_ms: self.now,
        };
        match self.apply(cmd) {
            Response::AgentState(r) => r,
            other => panic!("SetAgentState answered {other:?}"),
        }
    }

    fn assign(&mut self, placements: Vec<Placement>) -> Vec<Result<(), Rejection>> {
        let now_ms = self.now;
        match self.apply(Command::Assign { placements, now_ms }) {
            Response::Assigned(r) => r,
            other => panic!("Assign answered {other:?}"),
        }
    }

    /// Places `task` on `agent` (at the agent's current epoch) and returns the fencing token.
    #[track_caller]
    fn place(&mut self, task: &str, agent: &str) -> u64 {
        let epoch = self.st.agent(agent).expect("agent exists").epoch;
        let out = self.assign(vec![placement(task, agent, epoch)]);
        assert_eq!(out, vec![Ok(())], "placing {task} on {agent}");
        self.index
    }

    /// The one rejection of a single placement.
    #[track_caller]
    fn place_err(&mut self, p: Placement) -> Rejection {
        let mut out = self.assign(vec![p]);
        assert_eq!(out.len(), 1);
        out.pop().unwrap().expect_err("placement must be rejected")
    }

    fn report(&mut self, reports: Vec<TaskReport>) -> Vec<ReportOutcome> {
        let now_ms = self.now;
        match self.apply(Command::Report { reports, now_ms }) {
            Response::Reported(r) => r,
            other => panic!("Report answered {other:?}"),
        }
    }

    fn report_one(&mut self, r: TaskReport) -> ReportOutcome {
        let mut out = self.report(vec![r]);
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn start(&mut self, task: &str, agent: &str, token: u64) -> ReportOutcome {
        self.report_one(started(task, agent, token))
    }

    fn end(
        &mut self,
        task: &str,
        agent: &str,
        token: u64,
        end: AttemptEnd,
        exit: Option<i32>,
    ) -> ReportOutcome {
        self.report_one(finished(task, agent, token, end, exit))
    }

    /// Places, starts and ends one attempt; returns its token.
    #[track_caller]
    fn run(&mut self, task: &str, agent: &str, end: AttemptEnd, exit: Option<i32>) -> u64 {
        let token = self.place(task, agent);
        assert_eq!(self.start(task, agent, token), ReportOutcome::Accepted);
        assert_eq!(self.end(task, agent, token, end, exit), ReportOutcome::Accepted);
        token
    }

    fn tick(&mut self) -> Ticked {
        let now_ms = self.now;
        match self.apply(Command::Tick { now_ms }) {
            Response::Ticked(t) => t,
            other => panic!("Tick answered {other:?}"),
        }
    }

    fn cancel(&mut self, id: &str) -> CancelOutcome {
        match self.apply(cancel_cmd(id, "", self.now)) {
            Response::Cancel(r) => r.unwrap(),
            other => panic!("CancelTask answered {other:?}"),
        }
    }

    #[track_caller]
    fn task(&self, id: &str) -> &Task {
        task(&self.st, id)
    }

    fn agent_tasks(&self, agent: &str) -> Vec<(String, u64)> {
        self.st
            .agent_tasks(agent)
            .map(|(t, tok)| (t.clone(), tok))
            .collect()
    }
}

fn agent_info(id: &str, slots: u32) -> AgentInfo {
    AgentInfo {
        id: id.to_string(),
        address: format!("{id}.example:7000"),
        resources: Resources {
            cpu_millis: 8000,
            memory_mb: 16_384,
            disk_mb: 100_000,
        },
        max_tasks: slots,
        labels: BTreeMap::new(),
        pool: String::new(),
    }
}

fn placement(task: &str, agent: &str, epoch: u64) -> Placement {
    Placement {
        task_id: task.to_string(),
        agent_id: agent.to_string(),
        agent_epoch: epoch,
        move_from: None,
    }
}

fn started(task: &str, agent: &str, token: u64) -> TaskReport {
    TaskReport {
        task_id: task.to_string(),
        agent_id: agent.to_string(),
        token,
        event: ReportEvent::Started,
    }
}

fn finished(task: &str, agent: &str, token: u64, end: AttemptEnd, exit_code: Option<i32>) -> TaskReport {
    TaskReport {
        task_id: task.to_string(),
        agent_id: agent.to_string(),
        token,
        event: ReportEvent::Finished {
            end,
            exit_code,
            error: String::new(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        },
    }
}

fn retrying(id: &str, max_attempts: u32, backoff_ms: u64) -> TaskSpec {
    TaskSpec {
        max_attempts,
        backoff_ms,
        ..spec(id)
    }
}

#[track_caller]
fn assert_fp(r: &Rejection, field: &str) {
    assert_eq!(
        (r.kind, r.field.as_str()),
        (RejectKind::FailedPrecondition, field),
        "{r:?}"
    );
    assert!(!r.message.is_empty());
}

#[track_caller]
fn assert_stale(out: ReportOutcome) -> String {
    match out {
        ReportOutcome::Stale(why) => {
            assert!(!why.is_empty());
            why
        }
        other => panic!("expected Stale, got {other:?}"),
    }
}

/// An agent's assigned set (task, token) and its change marker.
type Held = (Vec<(String, u64)>, Option<u64>);

/// Every agent's assigned set with its change marker.
fn held_sets(st: &State) -> BTreeMap<String, Held> {
    st.agents()
        .map(|a| {
            let id = a.info.id.clone();
            let set = st.agent_tasks(&id).map(|(t, tok)| (t.clone(), tok)).collect();
            let marker = st.agent_tasks_changed_at(&id);
            (id, (set, marker))
        })
        .collect()
}

fn ids_of<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<String> {
    tasks.map(|t| t.spec.id.clone()).collect()
}

/// Checks every relation between tasks, agents and the derived indexes that must always hold.
#[track_caller]
fn check_invariants(st: &State) {
    let all = all_tasks(st);
    // Queues.
    let mut queue: Vec<&Task> = all
        .iter()
        .filter(|t| t.state == TaskState::Pending && t.unmet_deps == 0 && t.not_before_ms == 0)
        .collect();
    // Pool-major: each pool's queue is read on its own by the scheduler.
    queue.sort_by_key(|t| (t.spec.pool.clone(), Reverse(t.spec.priority), t.seq));
    assert_eq!(runnable(st), ids_of(queue.iter().copied()), "runnable");
    assert_eq!(ids_of(st.runnable_tasks()), runnable(st), "runnable_tasks");
    let pools: BTreeSet<String> = queue.iter().map(|t| t.spec.pool.clone()).collect();
    for pool in &pools {
        let in_pool: Vec<&Task> = queue.iter().copied().filter(|t| &t.spec.pool == pool).collect();
        assert_eq!(
            ids_of(st.runnable_in_pool(pool)),
            ids_of(in_pool.iter().copied()),
            "runnable_in_pool({pool:?})"
        );
    }
    queue.sort_by_key(|t| (t.spec.pool.clone(), t.seq));
    assert_eq!(
        ids_of(st.runnable_oldest()),
        ids_of(queue.iter().copied()),
        "runnable_oldest"
    );
    for pool in &pools {
        let in_pool: Vec<&Task> = queue.iter().copied().filter(|t| &t.spec.pool == pool).collect();
        assert_eq!(
            ids_of(st.runnable_oldest_in_pool(pool)),
            ids_of(in_pool.iter().copied()),
            "runnable_oldest_in_pool({pool:?})"
        );
    }
    assert_eq!(st.runnable_in_pool("no-such-pool").count(), 0);
    assert_eq!(st.runnable_len(), queue.len());
    let delayed: Vec<&Task> = all
        .iter()
        .filter(|t| t.state == TaskState::Pending && t.unmet_deps == 0 && t.not_before_ms > 0)
        .collect();
    assert_eq!(st.delayed_len(), delayed.len(), "delayed_len");
    let due = delayed
        .iter()
        .map(|t| t.not_before_ms)
        .chain(
            all.iter()
                .filter(|t| !t.state.is_terminal())
                .filter_map(|t| t.deadline_at_ms()),
        )
        .min();
    assert_eq!(st.next_due_ms(), due, "next_due_ms");

    // Attempts.
    for t in &all {
        let id = &t.spec.id;
        assert!(
            t.attempts_used() <= t.spec.max_attempts,
            "{id} used too many attempts"
        );
        for (i, a) in t.attempts.iter().enumerate() {
            assert_eq!(a.number as usize, i + 1, "{id} attempt numbering");
            let open_allowed =
                i + 1 == t.attempts.len() && matches!(t.state, TaskState::Assigned | TaskState::Running);
            assert_eq!(
                a.end.is_none(),
                open_allowed,
                "{id} attempt {} open/closed",
                a.number
            );
        }
        match t.state {
            TaskState::Assigned => assert!(t.attempts.last().unwrap().started_at_ms.is_none(), "{id}"),
            TaskState::Running => assert!(t.attempts.last().unwrap().started_at_ms.is_some(), "{id}"),
            _ => assert!(t.current_token().is_none()),
        }
        assert!(t.stdout_and_stderr_bounded(), "{id} output tails too long");
    }

    // Agents' books against the tasks they hold.
    let mut held_total = 0;
    for agent in st.agents() {
        let held: Vec<(String, u64)> = st
            .agent_tasks(&agent.info.id)
            .map(|(t, tok)| (t.clone(), tok))
            .collect();
        held_total += held.len();
        let mut used = Resources::default();
        for (tid, token) in &held {
            let t = st.get(tid).unwrap();
            assert_eq!(
                t.current_token(),
                Some(*token),
                "{tid} token on {}",
                agent.info.id
            );
            assert_eq!(t.current_attempt().unwrap().agent_id, agent.info.id, "{tid}");
            used.cpu_millis += t.spec.resources.cpu_millis;
            used.memory_mb += t.spec.resources.memory_mb;
            used.disk_mb += t.spec.resources.disk_mb;
        }
        assert_eq!(agent.used, used, "books of {}", agent.info.id);
        assert_eq!(agent.tasks as usize, held.len(), "slots of {}", agent.info.id);
        assert!(
            agent.tasks <= agent.info.max_tasks,
            "{} over its slots",
            agent.info.id
        );
        if agent.state == AgentState::Down {
            assert!(held.is_empty(), "down agent {} holds tasks", agent.info.id);
        }
    }
    let on_agents = all
        .iter()
        .filter(|t| matches!(t.state, TaskState::Assigned | TaskState::Running))
        .count();
    assert_eq!(
        held_total, on_agents,
        "every assigned or running task is on exactly one agent"
    );
    let by_state: usize = AgentState::ALL.iter().map(|s| st.agent_count(*s)).sum();
    assert_eq!(by_state, st.agents().count());
}

trait OutputBounded {
    fn stdout_and_stderr_bounded(&self) -> bool;
}

impl OutputBounded for Task {
    fn stdout_and_stderr_bounded(&self) -> bool {
        self.attempts
            .iter()
            .all(|a| a.stdout_tail.len() <= MAX_OUTPUT_TAIL && a.stderr_tail.len() <= MAX_OUTPUT_TAIL)
    }
}

fn image_json(st: &State) -> String {
    serde_json::to_string(&st.image()).unwrap()
}

fn round_trip(st: &State) -> State {
    let image: StateImage = serde_json::from_str(&image_json(st)).unwrap();
    State::from_image(image).unwrap()
}

/// Asserts two states answer every scheduling query identically.
#[track_caller]
fn assert_same(a: &State, b: &State) {
    assert_eq!(image_json(a), image_json(b));
    assert_eq!(all_tasks(a), all_tasks(b));
    assert_eq!(runnable(a), runnable(b));
    assert_eq!(ids_of(a.runnable_oldest()), ids_of(b.runnable_oldest()));
    assert_eq!(
        (a.runnable_len(), a.delayed_len()),
        (b.runnable_len(), b.delayed_len())
    );
    assert_eq!(a.next_due_ms(), b.next_due_ms());
    assert_eq!(a.agents().collect::<Vec<_>>(), b.agents().collect::<Vec<_>>());
    for agent in a.agents() {
        let id = &agent.info.id;
        assert_eq!(b.agent(id), Some(agent));
        assert_eq!(
            a.agent_tasks(id).collect::<Vec<_>>(),
            b.agent_tasks(id).collect::<Vec<_>>(),
            "agent_tasks({id})"
        );
    }
    for s in AgentState::ALL {
        assert_eq!(a.agent_count(s), b.agent_count(s));
    }
    for s in TaskState::ALL {
        assert_eq!(a.count(s), b.count(s));
    }
}

// ---------------------------------------------------------------------------------------------
// RegisterAgent

#[test]
fn register_creates_an_alive_agent_whose_epoch_is_the_index() {
    let mut sim = Sim::new();
    sim.index = 6;
    let mut info = agent_info("a1", 3);
    info.pool = "gpu".into();
    info.labels.insert("zone".into(), "eu-1".into());
    let reg = sim.register(info.clone()).unwrap();
    assert_eq!(
        reg,
        Registered {
            id: "a1".into(),
            epoch: 7,
            lost: vec![]
        }
    );
    let a = sim.st.agent("a1").unwrap();
    assert_eq!(a.info, info);
    assert_eq!((a.state, a.epoch, a.tasks), (AgentState::Alive, 7, 0));
    assert_eq!((a.registered_at_ms, a.updated_at_ms), (T0, T0));
    assert_eq!(a.used, Resources::default());
    assert!(sim.st.agent("a2").is_none());

    sim.agent("c0");
    sim.agent("b9");
    let order: Vec<&str> = sim.st.agents().map(|a| a.info.id.as_str()).collect();
    assert_eq!(order, ["a1", "b9", "c0"], "agents() is in id order");
    assert_eq!(sim.st.agent_count(AgentState::Alive), 3);
    assert_eq!(sim.st.agent_count(AgentState::Down), 0);
    assert_eq!(sim.st.agent_tasks("a1").count(), 0);
    assert_eq!(sim.st.agent_tasks("nobody").count(), 0);
}

#[test]
fn register_rejects_a_bad_declaration_and_changes_nothing() {
    let mut sim = Sim::new();
    let cases: Vec<(AgentInfo, &str)> = vec![
        (agent_info("", 1), "id"),
        (agent_info("a b", 1), "id"),
        (agent_info("a1", 0), "max_tasks"),
        (agent_info("a1", 100_001), "max_tasks"),
        (
            AgentInfo {
                pool: "p".repeat(129),
                ..agent_info("a1", 1)
            },
            "pool",
        ),
        (
            AgentInfo {
                address: "h".repeat(257),
                ..agent_info("a1", 1)
            },
            "address",
        ),
        (
            AgentInfo {
                labels: BTreeMap::from([(String::new(), "v".to_string())]),
                ..agent_info("a1", 1)
            },
            "labels[\"\"]",
        ),
    ];
    for (info, field) in cases {
        assert_invalid(sim.register(info), field);
    }
    assert_eq!(sim.st.agents().count(), 0);
}

#[test]
fn re_register_loses_what_the_old_incarnation_held() {
    let mut sim = Sim::new();
    sim.submit(vec![
        spec("unstarted"),
        retrying("retried", 3, 1000),
        spec("spent"),
        spec_deps("after-spent", &["spent"]),
        spec("elsewhere"),
    ]);
    let e1 = sim.agent("a1");
    sim.agent("a2");
    let t_unstarted = sim.place("unstarted", "a1");
    let t_retried = sim.place("retried", "a1");
    let t_spent = sim.place("spent", "a1");
    let t_else = sim.place("elsewhere", "a2");
    assert_eq!(sim.start("retried", "a1", t_retried), ReportOutcome::Accepted);
    assert_eq!(sim.start("spent", "a1", t_spent), ReportOutcome::Accepted);
    assert_eq!(sim.st.agent("a1").unwrap().tasks, 3);

    sim.advance(1_000);
    let reg = sim.register(agent_info("a1", 4)).unwrap();
    let now = sim.now;
    assert_eq!(reg.epoch, sim.index);
    assert!(reg.epoch > e1);
    assert_eq!(reg.lost, ["retried", "spent", "unstarted"], "in id order");
    let a1 = sim.st.agent("a1").unwrap();
    assert_eq!(
        (a1.state, a1.tasks, a1.used),
        (AgentState::Alive, 0, Resources::default())
    );
    assert_eq!(a1.registered_at_ms, now);
    assert!(sim.agent_tasks("a1").is_empty());
    assert_eq!(sim.agent_tasks("a2"), [("elsewhere".to_string(), t_else)]);

    // Never started: the lost attempt does not count, back in the queue at once.
    let t = sim.task("unstarted");
    assert_eq!(
        (t.state, t.attempts_used(), t.not_before_ms),
        (TaskState::Pending, 0, 0)
    );
    assert_eq!(t.queued_at_ms, now);
    let lost = &t.attempts[0];
    assert_eq!(lost.end, Some(AttemptEnd::Lost));
    assert_eq!(lost.error, "agent a1 re-registered");
    assert_eq!(lost.finished_at_ms, Some(now));
    assert_eq!((lost.fencing_token, lost.agent_id.as_str()), (t_unstarted, "a1"));
    assert_eq!(t.reason, "retrying after attempt 1: agent a1 re-registered");

    // Started: counts, so it waits out a back-off.
    let t = sim.task("retried");
    assert_eq!((t.state, t.attempts_used()), (TaskState::Pending, 1));
    assert_eq!(t.not_before_ms, now + retry_delay_ms("retried", 1, 1000));
    assert!((now + 500..=now + 1000).contains(&t.not_before_ms));

    // Started with its only attempt: failed, and so is its dependent.
    let t = sim.task("spent");
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.reason, "attempts exhausted: agent a1 re-registered");
    assert_eq!(t.log_index, sim.index);
    let d = sim.task("after-spent");
    assert_eq!(
        (d.state, d.reason.as_str()),
        (TaskState::Failed, "dependency spent failed")
    );

    assert_eq!(runnable(&sim.st), ["unstarted"]);
    assert_eq!(sim.st.delayed_len(), 1);
    assert_eq!(sim.st.next_due_ms(), Some(sim.task("retried").not_before_ms));
    check_invariants(&sim.st);
}

// ---------------------------------------------------------------------------------------------
// SetAgentState

#[test]
fn drain_and_undrain() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("a"), spec("b")]);
    let epoch = sim.agent("w");
    let token = sim.place("a", "w");

    let out = sim
        .set_state("w", None, AgentState::Draining, "maintenance")
        .unwrap();
    assert_eq!(
        out,
        AgentStateChanged {
            id: "w".into(),
            changed: true,
            state: AgentState::Draining,
            epoch,
            lost: vec![]
        }
    );
    let w = sim.st.agent("w").unwrap();
    assert_eq!(
        (w.state, w.reason.as_str(), w.updated_at_ms),
        (AgentState::Draining, "maintenance", T0)
    );
    // A draining agent keeps its work (and may report on it) but takes nothing new.
    assert_eq!(sim.agent_tasks("w"), [("a".to_string(), token)]);
    assert_fp(
        &sim.place_err(placement("b", "w", epoch)),
        "placements[0].agent_id",
    );
    assert_eq!(sim.start("a", "w", token), ReportOutcome::Accepted);
    assert_eq!(sim.st.agent_count(AgentState::Draining), 1);

    // Same state again: nothing changes.
    let again = sim
        .set_state("w", Some(epoch), AgentState::Draining, "x")
        .unwrap();
    assert!(!again.changed);
    assert_eq!(sim.st.agent("w").unwrap().reason, "maintenance");

    let back = sim.set_state("w", Some(epoch), AgentState::Alive, "").unwrap();
    assert!(back.changed);
    assert_eq!(back.state, AgentState::Alive);
    sim.place("b", "w");
    check_invariants(&sim.st);
}

#[test]
fn set_state_checks_agent_epoch_and_reason() {
    let mut sim = Sim::new();
    let old = sim.agent("w");
    let new = sim.agent("w");
    assert_rejected(
        sim.set_state("ghost", None, AgentState::Down, ""),
        RejectKind::NotFound,
        "id",
    );
    assert_invalid(
        sim.set_state("w", None, AgentState::Down, &"r".repeat(MAX_REASON_LEN + 1)),
        "reason",
    );
    // A decision about the previous incarnation is ignored.
    let out = sim
        .set_state("w", Some(old), AgentState::Down, "no heartbeat")
        .unwrap();
    assert_eq!(
        out,
        AgentStateChanged {
            id: "w".into(),
            changed: false,
            state: AgentState::Alive,
            epoch: new,
            lost: vec![]
        }
    );
    assert_eq!(sim.st.agent("w").unwrap().state, AgentState::Alive);
    assert!(
        sim.set_state("w", Some(new), AgentState::Down, "")
            .unwrap()
            .changed
    );
}

#[test]
fn down_loses_tasks_and_only_registering_brings_the_agent_back() {
    let mut sim = Sim::new();
    sim.submit(vec![
        retrying("fresh", 1, 0),
        retrying("runs", 2, 0),
        retrying("last", 1, 0),
        spec_deps("kid", &["last"]),
        spec_deps("grandkid", &["kid"]),
    ]);
    let epoch = sim.agent("w");
    sim.place("fresh", "w");
    let t_runs = sim.place("runs", "w");
    let t_last = sim.place("last", "w");
    sim.start("runs", "w", t_runs);
    sim.start("last", "w", t_last);
    sim.advance(50);

    let out = sim.set_state("w", Some(epoch), AgentState::Down, "").unwrap();
    assert!(out.changed);
    assert_eq!(out.lost, ["fresh", "last", "runs"]);
    let w = sim.st.agent("w").unwrap();
    assert_eq!(
        (w.state, w.tasks, w.reason.as_str()),
        (AgentState::Down, 0, "agent w down")
    );
    assert_eq!(w.used, Resources::default());
    assert!(sim.agent_tasks("w").is_empty());

    // Attempts left (back-off 0): runnable again at once.
    for id in ["fresh", "runs"] {
        let t = sim.task(id);
        assert_eq!(t.state, TaskState::Pending, "{id}");
        assert_eq!(t.attempts.last().unwrap().end, Some(AttemptEnd::Lost));
        assert_eq!(t.attempts.last().unwrap().error, "agent w down");
    }
    assert_eq!(sim.task("runs").attempts_used(), 1);
    assert_eq!(runnable(&sim.st), ["fresh", "runs"]);
    // Attempts spent: failed, dependents transitively.
    assert_eq!(sim.task("last").state, TaskState::Failed);
    assert_eq!(sim.task("last").reason, "attempts exhausted: agent w down");
    assert_eq!(sim.task("kid").reason, "dependency last failed");
    assert_eq!(sim.task("grandkid").reason, "dependency kid failed");

    // Fenced: the old tokens are stale now.
    assert_stale(sim.end("runs", "w", t_runs, AttemptEnd::Succeeded, Some(0)));
    // Down is sticky.
    assert_fp(
        &sim.set_state("w", None, AgentState::Alive, "").unwrap_err(),
        "state",
    );
    assert_fp(
        &sim.set_state("w", None, AgentState::Draining, "").unwrap_err(),
        "state",
    );
    assert!(!sim.set_state("w", None, AgentState::Down, "").unwrap().changed);
    assert_fp(
        &sim.place_err(placement("fresh", "w", epoch)),
        "placements[0].agent_id",
    );
    assert_eq!(sim.st.agent_count(AgentState::Down), 1);

    let reg = sim.register(agent_info("w", 2)).unwrap();
    assert!(reg.lost.is_empty());
    assert_eq!(sim.st.agent("w").unwrap().state, AgentState::Alive);
    sim.place("fresh", "w");
    check_invariants(&sim.st);
}

#[test]
fn down_with_a_custom_reason() {
    let mut sim = Sim::new();
    sim.submit(vec![retrying("t", 5, 1000)]);
    sim.agent("w");
    let token = sim.place("t", "w");
    sim.start("t", "w", token);
    sim.set_state("w", None, AgentState::Down, "no heartbeat for 10s")
        .unwrap();
    let t = sim.task("t");
    assert_eq!(t.attempts[0].error, "no heartbeat for 10s");
    assert_eq!(t.reason, "retrying after attempt 1: no heartbeat for 10s");
    assert_eq!(sim.st.agent("w").unwrap().reason, "no heartbeat for 10s");
}

// ---------------------------------------------------------------------------------------------
// Assign

#[test]
fn assign_creates_an_attempt_and_books_it() {
    let mut sim = Sim::new();
    let need = Resources {
        cpu_millis: 1500,
        memory_mb: 512,
        disk_mb: 10,
    };
    sim.submit(vec![TaskSpec {
        resources: need,
        ..spec_prio("t", 2)
    }]);
    sim.submit(vec![spec("u")]);
    sim.agent("w");
    sim.advance(25);
    let token = sim.place("t", "w");
    assert_eq!(token, sim.index);

    let t = sim.task("t");
    assert_eq!(t.state, TaskState::Assigned);
    assert_eq!((t.log_index, t.updated_at_ms), (token, T0 + 25));
    assert_eq!(t.current_token(), Some(token));
    let a = &t.attempts[0];
    assert_eq!((a.number, a.agent_id.as_str(), a.fencing_token), (1, "w", token));
    assert_eq!((a.assigned_at_ms, a.started_at_ms, a.end), (T0 + 25, None, None));
    assert_eq!(t.attempts_used(), 0, "an unstarted attempt does not count");

    let w = sim.st.agent("w").unwrap();
    assert_eq!((w.used, w.tasks), (need, 1));
    assert_eq!(sim.agent_tasks("w"), [("t".to_string(), token)]);
    assert_eq!(runnable(&sim.st), ["u"]);
    assert_eq!(ids_of(sim.st.runnable_oldest()), ["u"]);
    assert_eq!(sim.st.runnable_len(), 1);
    check_invariants(&sim.st);
}

#[test]
fn each_placement_stands_alone_and_names_its_field() {
    let mut sim = Sim::new();
    let mut gpu = spec("gpu-task");
    gpu.pool = "gpu".into();
    let mut zoned = spec("zoned");
    zoned.constraints.insert("zone".into(), "eu-1".into());
    let big = TaskSpec {
        resources: Resources {
            cpu_millis: 9000,
            ..Resources::default()
        },
        ..spec("big")
    };
    sim.submit(vec![
        spec("ok1"),
        spec("ok2"),
        spec("blocked-on"),
        spec_deps("blocked", &["blocked-on"]),
        gpu,
        zoned,
        big,
        spec("done"),
    ]);
    sim.cancel("done");
    let epoch = sim.agent("w");
    let mut cpu_info = agent_info("cpu", 4);
    cpu_info.pool = "cpu".into();
    cpu_info.labels.insert("zone".into(), "us-1".into());
    let cpu_epoch = sim.register(cpu_info).unwrap().epoch;
    let draining = sim.agent("drainer");
    sim.set_state("drainer", None, AgentState::Draining, "").unwrap();

    let p = |t: &str, a: &str, e: u64| placement(t, a, e);
    let out = sim.assign(vec![
        p("ok1", "w", epoch),               // 0: fine
        p("ghost", "w", epoch),             // 1: unknown task
        p("ok2", "nobody", epoch),          // 2: unknown agent
        p("ok2", "w", epoch),               // 3: repeated task (2 was rejected, still repeated)
        p("blocked", "w", epoch),           // 4: dependencies unmet
        p("gpu-task", "cpu", cpu_epoch),    // 5: pool
        p("zoned", "cpu", cpu_epoch),       // 6: constraint
        p("big", "w", epoch),               // 7: no cpu left
        p("done", "w", epoch),              // 8: terminal
        p("ok1", "w", epoch),               // 9: placed twice
        p("zoned", "w", epoch + 1000),      // 10: wrong epoch (repeated after 6 too)
        p("gpu-task", "drainer", draining), // 11: draining (repeated after 5 too)
    ]);
    assert_eq!(out.len(), 12);
    assert_eq!(out[0], Ok(()));
    let expect: [(usize, RejectKind, &str); 11] = [
        (1, RejectKind::NotFound, "placements[1].task_id"),
        (2, RejectKind::NotFound, "placements[2].agent_id"),
        (3, RejectKind::FailedPrecondition, "placements[3].task_id"),
        (4, RejectKind::FailedPrecondition, "placements[4].task_id"),
        (5, RejectKind::FailedPrecondition, "placements[5].agent_id"),
        (6, RejectKind::FailedPrecondition, "placements[6].agent_id"),
        (7, RejectKind::FailedPrecondition, "placements[7].agent_id"),
        (8, RejectKind::FailedPrecondition, "placements[8].task_id"),
        (9, RejectKind::FailedPrecondition, "placements[9].task_id"),
        (10, RejectKind::FailedPrecondition, "placements[10].task_id"),
        (11, RejectKind::FailedPrecondition, "placements[11].task_id"),
    ];
    for (i, kind, field) in expect {
        assert_rejected(out[i].clone(), kind, field);
    }
    assert!(out[5].as_ref().unwrap_err().message.contains("pool"));
    assert!(out[6].as_ref().unwrap_err().message.contains("zone=eu-1"));
    assert!(out[7].as_ref().unwrap_err().message.contains("no room"));
    assert_eq!(sim.agent_tasks("w").len(), 1, "only the first placement applied");

    // The same checks, one per command, where repetition does not mask them.
    assert_fp(
        &sim.place_err(p("zoned", "w", epoch + 1000)),
        "placements[0].agent_epoch",
    );
    assert_fp(
        &sim.place_err(p("gpu-task", "drainer", draining)),
        "placements[0].agent_id",
    );
    let r = sim.place_err(p("ok1", "w", epoch));
    assert_fp(&r, "placements[0].task_id");
    assert!(r.message.contains("assigned"), "{r:?}");
    // Matching pool and labels are accepted.
    let mut gpu_info = agent_info("g", 2);
    gpu_info.pool = "gpu".into();
    gpu_info.labels.insert("zone".into(), "eu-1".into());
    sim.register(gpu_info).unwrap();
    sim.place("gpu-task", "g");
    sim.place("zoned", "g");
    check_invariants(&sim.st);
}

#[test]
fn assign_respects_slots_and_every_resource() {
    let mut sim = Sim::new();
    let r = |cpu, mem, disk| Resources {
        cpu_millis: cpu,
        memory_mb: mem,
        disk_mb: disk,
    };
    sim.submit(vec![
        TaskSpec {
            resources: r(4000, 8000, 0),
            ..spec("half")
        },
        TaskSpec {
            resources: r(4000, 8385, 0),
            ..spec("too-much-memory")
        },
        TaskSpec {
            resources: r(0, 0, 100_001),
            ..spec("too-much-disk")
        },
        TaskSpec {
            resources: r(4000, 8384, 100_000),
            ..spec("exact-rest")
        },
        spec("no-slot"),
    ]);
    let epoch = sim.register(agent_info("w", 2)).unwrap().epoch;
    sim.place("half", "w");
    assert_fp(
        &sim.place_err(placement("too-much-memory", "w", epoch)),
        "placements[0].agent_id",
    );
    assert_fp(
        &sim.place_err(placement("too-much-disk", "w", epoch)),
        "placements[0].agent_id",
    );
    sim.place("exact-rest", "w");
    let w = sim.st.agent("w").unwrap();
    assert_eq!(w.used, w.info.resources, "exactly full");
    // Zero demands, but both slots are taken.
    let msg = sim.place_err(placement("no-slot", "w", epoch)).message;
    assert!(msg.contains("2/2 tasks"), "{msg}");
    check_invariants(&sim.st);
}

#[test]
fn assign_refuses_a_task_waiting_out_its_back_off() {
    let mut sim = Sim::new();
    sim.submit(vec![retrying("t", 2, 1000)]);
    let epoch = sim.agent("w");
    sim.run("t", "w", AttemptEnd::Failed, Some(1));
    let r = sim.place_err(placement("t", "w", epoch));
    assert_fp(&r, "placements[0].task_id");
    assert!(r.message.contains("back-off"), "{r:?}");
}

#[test]
fn move_from_reassigns_an_unstarted_attempt() {
    let mut sim = Sim::new();
    let need = Resources {
        cpu_millis: 1000,
        ..Resources::default()
    };
    sim.submit(vec![
        TaskSpec {
            resources: need,
            ..spec("t")
        },
        spec("s"),
    ]);
    let e1 = sim.agent("a1");
    let e2 = sim.agent("a2");
    let first = sim.place("t", "a1");
    let started = sim.place("s", "a1");
    sim.start("s", "a1", started);

    let mv = |task: &str, agent: &str, epoch: u64, from: u64| Placement {
        move_from: Some(from),
        ..placement(task, agent, epoch)
    };
    // Wrong token, started task, same agent, pending task: all refused.
    assert_fp(
        &sim.place_err(mv("t", "a2", e2, first + 1)),
        "placements[0].move_from",
    );
    assert_fp(
        &sim.place_err(mv("s", "a2", e2, started)),
        "placements[0].move_from",
    );
    assert_fp(&sim.place_err(mv("t", "a1", e1, first)), "placements[0].agent_id");
    sim.advance(7);
    let out = sim.assign(vec![mv("t", "a2", e2, first)]);
    assert_eq!(out, vec![Ok(())]);
    let second = sim.index;

    let t = sim.task("t");
    assert_eq!(t.state, TaskState::Assigned);
    assert_eq!(t.attempts.len(), 2);
    let old = &t.attempts[0];
    assert_eq!(
        (old.end, old.finished_at_ms),
        (Some(AttemptEnd::Moved), Some(T0 + 7))
    );
    assert_eq!(old.error, "moved to agent a2");
    let new = &t.attempts[1];
    assert_eq!(
        (new.number, new.agent_id.as_str(), new.fencing_token),
        (2, "a2", second)
    );
    assert_eq!(t.attempts_used(), 0, "moved attempts do not count");
    assert_eq!(sim.agent_tasks("a1"), [("s".to_string(), started)]);
    assert_eq!(sim.agent_tasks("a2"), [("t".to_string(), second)]);
    assert_eq!(sim.st.agent("a1").unwrap().used, Resources::default());
    assert_eq!(sim.st.agent("a2").unwrap().used, need);

    // The first agent's claim comes too late.
    let why = assert_stale(sim.start("t", "a1", first));
    assert!(why.contains(&second.to_string()), "{why}");
    assert_eq!(sim.start("t", "a2", second), ReportOutcome::Accepted);
    // A pending task has nothing to move.
    assert_fp(
        &sim.place_err(mv("t", "a1", e1, second)),
        "placements[0].move_from",
    );
    check_invariants(&sim.st);
}

// ---------------------------------------------------------------------------------------------
// Report: fencing, duplicates, outcomes

#[test]
fn started_then_succeeded() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("t"), spec_deps("kid", &["t"])]);
    sim.agent("w");
    let token = sim.place("t", "w");
    sim.advance(100);
    assert_eq!(sim.start("t", "w", token), ReportOutcome::Accepted);
    let t = sim.task("t");
    assert_eq!((t.state, t.log_index), (TaskState::Running, sim.index));
    assert_eq!(t.attempts[0].started_at_ms, Some(T0 + 100));
    assert_eq!(t.attempts_used(), 1);
    assert!(runnable(&sim.st).is_empty(), "kid waits for t");

    sim.advance(900);
    let out = sim.report_one(TaskReport {
        event: ReportEvent::Finished {
            end: AttemptEnd::Succeeded,
            exit_code: Some(0),
            error: String::new(),
            stdout_tail: "all good\n".into(),
            stderr_tail: String::new(),
        },
        ..started("t", "w", token)
    });
    assert_eq!(out, ReportOutcome::Accepted);
    let t = sim.task("t");
    assert_eq!((t.state, t.reason.as_str()), (TaskState::Succeeded, ""));
    let a = &t.attempts[0];
    assert_eq!(
        (a.end, a.exit_code, a.finished_at_ms),
        (Some(AttemptEnd::Succeeded), Some(0), Some(T0 + 1000))
    );
    assert_eq!(a.stdout_tail, "all good\n");
    assert!(sim.agent_tasks("w").is_empty());
    assert_eq!(sim.st.agent("w").unwrap().tasks, 0);
    // The dependent is released, queued as of now.
    assert_eq!(runnable(&sim.st), ["kid"]);
    assert_eq!(sim.task("kid").queued_at_ms, T0 + 1000);
    assert_eq!(sim.task("kid").log_index, sim.index);
    check_invariants(&sim.st);
}

#[test]
fn a_spawn_failure_may_be_reported_without_a_start() {
    let mut sim = Sim::new();
    sim.submit(vec![retrying("t", 2, 0)]);
    sim.agent("w");
    let token = sim.place("t", "w");
    let out = sim.report_one(TaskReport {
        event: ReportEvent::Finished {
            end: AttemptEnd::Failed,
            exit_code: None,
            error: "no such file: /bin/nope".into(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        },
        ..started("t", "w", token)
    });
    assert_eq!(out, ReportOutcome::Accepted);
    let t = sim.task("t");
    assert_eq!(
        t.attempts_used(),
        1,
        "a reported failure counts even without a start"
    );
    assert_eq!(t.reason, "retrying after attempt 1: no such file: /bin/nope");
    assert_eq!(runnable(&sim.st), ["t"], "back-off 0: runnable at once");
    assert_eq!(t.not_before_ms, 0);
}

#[test]
fn duplicates_are_recognised_and_change_nothing() {
    let mut sim = Sim::new();
    sim.submit(vec![retrying("t", 3, 0)]);
    sim.agent("w");
    let token = sim.place("t", "w");
    assert_eq!(sim.start("t", "w", token), ReportOutcome::Accepted);
    let before = sim.task("t").clone();
    assert_eq!(sim.start("t", "w", token), ReportOutcome::Duplicate);
    assert_eq!(
        sim.task("t"),
        &before,
        "a duplicate changes nothing, not even log_index"
    );

    assert_eq!(
        sim.end("t", "w", token, AttemptEnd::Failed, Some(2)),
        ReportOutcome::Accepted
    );
    let before = sim.task("t").clone();
    assert_eq!(
        sim.end("t", "w", token, AttemptEnd::Failed, Some(2)),
        ReportOutcome::Duplicate
    );
    assert_eq!(sim.task("t"), &before);
    // The same token with a different end is not a retry: stale. So is a late Started.
    assert_stale(sim.end("t", "w", token, AttemptEnd::Succeeded, Some(0)));
    assert_stale(sim.start("t", "w", token));

    // Duplicates of a finish are recognised after the task is terminal too.
    let token2 = sim.run("t", "w", AttemptEnd::Succeeded, Some(0));
    assert_eq!(
        sim.end("t", "w", token2, AttemptEnd::Succeeded, Some(0)),
        ReportOutcome::Duplicate
    );
    assert_eq!(
        sim.end("t", "w", token, AttemptEnd::Failed, Some(2)),
        ReportOutcome::Duplicate
    );
    // Both in one command: the first is accepted, the second is its duplicate.
    sim.submit(vec![spec("u")]);
    let token3 = sim.place("u", "w");
    let out = sim.report(vec![
        started("u", "w", token3),
        started("u", "w", token3),
        finished("u", "w", token3, AttemptEnd::Killed, None),
        finished("u", "w", token3, AttemptEnd::Killed, None),
    ]);
    assert_eq!(
        out,
        [
            ReportOutcome::Accepted,
            ReportOutcome::Duplicate,
            ReportOutcome::Accepted,
            ReportOutcome::Duplicate
        ]
    );
    assert_eq!(sim.task("u").state, TaskState::Failed);
    assert_eq!(sim.task("u").reason, "killed");
    check_invariants(&sim.st);
}

#[test]
fn reports_from_the_wrong_agent_or_token_are_stale() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("t"), spec("c")]);
    sim.agent("w");
    sim.agent("x");
    let token = sim.place("t", "w");
    let why = assert_stale(sim.start("t", "x", token));
    assert!(why.contains("belongs to agent w"), "{why}");
    assert_stale(sim.start("t", "w", token + 1));
    assert_stale(sim.end("t", "w", token - 1, AttemptEnd::Succeeded, Some(0)));
    assert_eq!(sim.task("t").state, TaskState::Assigned, "nothing changed");
    // A pending task has no current token at all.
    assert_stale(sim.start("c", "w", token));

    // Unknown task and malformed ends are invalid, naming the report.
    let out = sim.report(vec![
        started("t", "w", token),
        started("ghost", "w", token),
        finished("t", "w", token, AttemptEnd::Lost, None),
        finished("t", "w", token, AttemptEnd::Moved, None),
        finished("t", "w", token, AttemptEnd::Cancelled, None),
    ]);
    assert_eq!(out[0], ReportOutcome::Accepted);
    let invalid = |o: &ReportOutcome| match o {
        ReportOutcome::Invalid(r) => (r.kind, r.field.clone()),
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(
        invalid(&out[1]),
        (RejectKind::NotFound, "reports[1].task_id".to_string())
    );
    for (i, o) in out.iter().enumerate().skip(2) {
        assert_eq!(
            invalid(o),
            (RejectKind::InvalidArgument, format!("reports[{i}].event.end"))
        );
    }
    assert_eq!(sim.task("t").state, TaskState::Running);
}

#[test]
fn cancelled_running_task_is_fenced() {
    let mut sim = Sim::new();
    sim.submit(vec![
        TaskSpec {
            resources: Resources {
                cpu_millis: 500,
                ..Resources::default()
            },
            deadline_ms: 60_000,
            ..spec("t")
        },
        spec_deps("kid", &["t"]),
    ]);
    sim.agent("w");
    let token = sim.place("t", "w");
    sim.start("t", "w", token);
    assert_eq!(sim.st.next_due_ms(), Some(T0 + 60_000));
    sim.advance(40);
    let out = sim.cancel("t");
    assert!(out.cancelled);
    let t = sim.task("t");
    assert_eq!(
        (t.state, t.reason.as_str()),
        (TaskState::Cancelled, "cancelled by request")
    );
    let a = &t.attempts[0];
    assert_eq!(
        (a.end, a.finished_at_ms),
        (Some(AttemptEnd::Cancelled), Some(T0 + 40))
    );
    assert_eq!(a.error, "cancelled by request");
    assert!(
        sim.agent_tasks("w").is_empty(),
        "the agent learns from its assignment stream"
    );
    assert_eq!(sim.st.agent("w").unwrap().used, Resources::default());
    assert_eq!(sim.st.next_due_ms(), None, "a terminal task has no deadline left");
    assert_eq!(sim.task("kid").reason, "dependency t was cancelled");

    let why = assert_stale(sim.end("t", "w", token, AttemptEnd::Killed, None));
    assert!(why.contains("cancelled"), "{why}");
    assert_eq!(
        sim.task("t").state,
        TaskState::Cancelled,
        "terminal states never change"
    );
    check_invariants(&sim.st);
}

#[test]
fn cancel_of_an_assigned_task_releases_the_agent() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("t"), spec("u")]);
    let epoch = sim.register(agent_info("w", 1)).unwrap().epoch;
    let token = sim.place("t", "w");
    assert_fp(
        &sim.place_err(placement("u", "w", epoch)),
        "placements[0].agent_id",
    );
    sim.cancel("t");
    assert_eq!(sim.task("t").attempts[0].end, Some(AttemptEnd::Cancelled));
    assert_stale(sim.start("t", "w", token));
    sim.place("u", "w");
}

// ---------------------------------------------------------------------------------------------
// Retries, back-off, Tick

#[test]
fn failures_retry_after_a_growing_back_off_then_fail() {
    let mut sim = Sim::new();
    sim.submit(vec![retrying("t", 3, 1000), spec_deps("kid", &["t"])]);
    sim.agent("w");

    sim.run("t", "w", AttemptEnd::Failed, Some(3));
    let now = sim.now;
    let d1 = retry_delay_ms("t", 1, 1000);
    assert!((500..=1000).contains(&d1));
    let t = sim.task("t");
    assert_eq!((t.state, t.not_before_ms), (TaskState::Pending, now + d1));
    assert_eq!(t.reason, "retrying after attempt 1: exit code 3");
    assert_eq!((sim.st.runnable_len(), sim.st.delayed_len()), (0, 1));
    assert_eq!(sim.st.next_due_ms(), Some(now + d1));
    assert!(sim.agent_tasks("w").is_empty());

    // Not due yet: a tick does nothing.
    sim.advance(d1 - 1);
    assert_eq!(sim.tick(), Ticked::default());
    assert_eq!(sim.st.delayed_len(), 1);
    // Due: released into the queue, as of the tick.
    sim.advance(1);
    let released_at = sim.now;
    assert_eq!(
        sim.tick(),
        Ticked {
            released: vec!["t".into()],
            expired: vec![]
        }
    );
    let t = sim.task("t");
    assert_eq!(
        (t.not_before_ms, t.queued_at_ms, t.log_index),
        (0, released_at, sim.index)
    );
    assert_eq!(runnable(&sim.st), ["t"]);
    assert_eq!(sim.st.next_due_ms(), None);

    sim.run("t", "w", AttemptEnd::Failed, Some(3));
    let d2 = retry_delay_ms("t", 2, 1000);
    assert!((1000..=2000).contains(&d2), "the delay doubles");
    assert_eq!(sim.task("t").not_before_ms, sim.now + d2);
    sim.advance(d2);
    assert_eq!(sim.tick().released, ["t"]);

    sim.run("t", "w", AttemptEnd::Failed, Some(3));
    let t = sim.task("t");
    assert_eq!((t.state, t.reason.as_str()), (TaskState::Failed, "exit code 3"));
    assert_eq!(t.attempts_used(), 3);
    assert_eq!(sim.st.delayed_len(), 0);
    let kid = sim.task("kid");
    assert_eq!(
        (kid.state, kid.reason.as_str()),
        (TaskState::Failed, "dependency t failed")
    );
    check_invariants(&sim.st);
}

#[test]
fn tick_releases_in_due_order_and_only_what_is_due() {
    let mut sim = Sim::new();
    sim.submit(vec![
        retrying("a", 2, 3000),
        retrying("b", 2, 100),
        retrying("c", 2, 100_000),
    ]);
    sim.agent("w");
    for id in ["a", "b", "c"] {
        sim.run(id, "w", AttemptEnd::Failed, Some(1));
    }
    let due = |sim: &Sim, id: &str| sim.task(id).not_before_ms;
    assert!(due(&sim, "b") < due(&sim, "a") && due(&sim, "a") < due(&sim, "c"));
    assert_eq!(sim.st.next_due_ms(), Some(due(&sim, "b")));
    sim.now = due(&sim, "a");
    assert_eq!(sim.tick().released, ["b", "a"]);
    assert_eq!(sim.st.delayed_len(), 1);
    assert_eq!(sim.st.next_due_ms(), Some(due(&sim, "c")));
    // Both released at the same tick: priority, then submission order.
    assert_eq!(runnable(&sim.st), ["a", "b"]);
    assert_eq!(ids_of(sim.st.runnable_oldest()), ["a", "b"]);
    check_invariants(&sim.st);
}

#[test]
fn timed_out_attempts_retry_then_end_timed_out() {
    let mut sim = Sim::new();
    sim.submit(vec![
        TaskSpec {
            timeout_ms: 500,
            ..retrying("t", 2, 0)
        },
        spec_deps("kid", &["t"]),
    ]);
    sim.agent("w");
    sim.run("t", "w", AttemptEnd::TimedOut, None);
    let t = sim.task("t");
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.reason, "retrying after attempt 1: timed out after 500ms");
    assert_eq!(runnable(&sim.st), ["t"]);

    sim.run("t", "w", AttemptEnd::TimedOut, None);
    let t = sim.task("t");
    assert_eq!(
        (t.state, t.reason.as_str()),
        (TaskState::TimedOut, "timed out after 500ms")
    );
    assert_eq!(t.attempts[1].end, Some(AttemptEnd::TimedOut));
    let kid = sim.task("kid");
    assert_eq!(
        (kid.state, kid.reason.as_str()),
        (TaskState::Failed, "dependency t timed_out")
    );
    check_invariants(&sim.st);
}

#[test]
fn a_killed_attempt_counts_and_reports_why() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("t")]);
    sim.agent("w");
    let token = sim.place("t", "w");
    sim.start("t", "w", token);
    let out = sim.report_one(TaskReport {
        event: ReportEvent::Finished {
            end: AttemptEnd::Killed,
            exit_code: Some(137),
            error: "drain deadline".into(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        },
        ..started("t", "w", token)
    });
    assert_eq!(out, ReportOutcome::Accepted);
    let t = sim.task("t");
    assert_eq!(
        (t.state, t.reason.as_str()),
        (TaskState::Failed, "killed: drain deadline")
    );
}

#[test]
fn deadlines_expire_on_tick_whatever_the_state() {
    let mut sim = Sim::new();
    let with_deadline = |id: &str, ms: u64| TaskSpec {
        deadline_ms: ms,
        max_attempts: 5,
        ..spec(id)
    };
    sim.submit(vec![
        with_deadline("running", 1000),
        with_deadline("pending", 1000),
        TaskSpec {
            backoff_ms: 5000,
            ..with_deadline("delayed", 1000)
        },
        with_deadline("later", 5000),
        spec_deps("kid", &["running"]),
        spec("free"),
    ]);
    sim.agent("w");
    let token = sim.place("running", "w");
    sim.start("running", "w", token);
    sim.run("delayed", "w", AttemptEnd::Failed, Some(1));
    assert_eq!(sim.st.delayed_len(), 1);
    assert_eq!(
        sim.st.next_due_ms(),
        Some(T0 + 1000),
        "the deadline comes before the back-off ends"
    );

    sim.advance(999);
    let early = sim.tick();
    assert!(early.expired.is_empty());
    sim.advance(1);
    let out = sim.tick();
    assert_eq!(
        out.expired,
        ["delayed", "pending", "running"],
        "deadline, then id order"
    );
    assert!(out.released.is_empty(), "an expired task is not released");
    for id in ["running", "pending", "delayed"] {
        let t = sim.task(id);
        assert_eq!(t.state, TaskState::TimedOut, "{id}");
        assert_eq!(t.reason, "deadline of 1000ms passed", "{id}");
        assert_eq!(t.log_index, sim.index);
    }
    let a = &sim.task("running").attempts[0];
    assert_eq!(
        (a.end, a.finished_at_ms),
        (Some(AttemptEnd::Cancelled), Some(T0 + 1000))
    );
    assert_eq!(a.error, "deadline of 1000ms passed");
    assert_stale(sim.end("running", "w", token, AttemptEnd::Succeeded, Some(0)));
    assert!(sim.agent_tasks("w").is_empty());
    assert_eq!(sim.task("kid").reason, "dependency running timed_out");
    assert_eq!(sim.task("later").state, TaskState::Pending);
    assert_eq!(sim.st.delayed_len(), 0);
    assert_eq!(sim.st.next_due_ms(), Some(T0 + 5000));
    assert_eq!(runnable(&sim.st), ["later", "free"]);

    // A task that finishes in time leaves the deadline index.
    sim.run("later", "w", AttemptEnd::Succeeded, Some(0));
    assert_eq!(sim.st.next_due_ms(), None);
    sim.advance(10_000);
    assert_eq!(sim.tick(), Ticked::default());
    check_invariants(&sim.st);
}

#[test]
fn dependency_chain_is_released_only_by_success() {
    let mut sim = Sim::new();
    sim.submit(vec![
        retrying("a", 2, 0),
        spec_deps("b", &["a"]),
        spec_deps("c", &["b"]),
        spec_deps("d", &["a", "c"]),
    ]);
    sim.agent("w");
    assert_eq!(runnable(&sim.st), ["a"]);
    sim.run("a", "w", AttemptEnd::Failed, Some(1));
    assert_eq!(
        runnable(&sim.st),
        ["a"],
        "a failed attempt with attempts left releases nothing"
    );
    assert_eq!(sim.task("b").unmet_deps, 1);
    sim.advance(5);
    sim.run("a", "w", AttemptEnd::Succeeded, Some(0));
    assert_eq!(runnable(&sim.st), ["b"]);
    assert_eq!(sim.task("d").unmet_deps, 1);
    sim.run("b", "w", AttemptEnd::Succeeded, Some(0));
    assert_eq!(runnable(&sim.st), ["c"]);
    sim.run("c", "w", AttemptEnd::Succeeded, Some(0));
    assert_eq!(runnable(&sim.st), ["d"]);
    check_invariants(&sim.st);
}

#[test]
fn failure_propagates_to_every_dependent_with_its_reason() {
    let mut sim = Sim::new();
    sim.submit(vec![
        spec("root"),
        spec_deps("mid", &["root"]),
        spec_deps("leaf", &["mid"]),
        spec_deps("side", &["root"]),
    ]);
    sim.agent("w");
    sim.run("root", "w", AttemptEnd::Failed, Some(42));
    assert_eq!(sim.task("root").reason, "exit code 42");
    for (id, reason) in [
        ("mid", "dependency root failed"),
        ("leaf", "dependency mid failed"),
        ("side", "dependency root failed"),
    ] {
        let t = sim.task(id);
        assert_eq!((t.state, t.reason.as_str()), (TaskState::Failed, reason), "{id}");
    }
    // Submitting onto the failed task fails at once.
    sim.submit(vec![spec_deps("late", &["leaf"])]);
    assert_eq!(sim.task("late").state, TaskState::Failed);
    assert_eq!(sim.st.count(TaskState::Failed), 5);
    check_invariants(&sim.st);
}

#[test]
fn output_tails_keep_the_end_on_a_char_boundary() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("t")]);
    sim.agent("w");
    let token = sim.place("t", "w");
    // 4 + 18_000 + 7 bytes; the cut at len - MAX_OUTPUT_TAIL falls inside an 'é'.
    let stdout = format!("HEAD{}THE END", "é".repeat(9000));
    assert!(!stdout.is_char_boundary(stdout.len() - MAX_OUTPUT_TAIL));
    let stderr = "short".to_string();
    let error = format!("{}tail", "e".repeat(MAX_REASON_LEN));
    let out = sim.report_one(TaskReport {
        event: ReportEvent::Finished {
            end: AttemptEnd::Failed,
            exit_code: Some(1),
            error,
            stdout_tail: stdout.clone(),
            stderr_tail: stderr.clone(),
        },
        ..started("t", "w", token)
    });
    assert_eq!(out, ReportOutcome::Accepted);
    let a = &sim.task("t").attempts[0];
    assert_eq!(a.stdout_tail.len(), MAX_OUTPUT_TAIL - 1);
    assert!(a.stdout_tail.ends_with("THE END"));
    assert!(a.stdout_tail.starts_with('é'));
    assert!(stdout.ends_with(&a.stdout_tail));
    assert_eq!(a.stderr_tail, stderr);
    assert_eq!(a.error, "e".repeat(MAX_REASON_LEN), "errors keep their start");
    // Exactly at the limit: unchanged.
    sim.submit(vec![spec("u")]);
    let token = sim.place("u", "w");
    let exact = "x".repeat(MAX_OUTPUT_TAIL);
    sim.report_one(TaskReport {
        event: ReportEvent::Finished {
            end: AttemptEnd::Succeeded,
            exit_code: Some(0),
            error: String::new(),
            stdout_tail: exact.clone(),
            stderr_tail: String::new(),
        },
        ..started("u", "w", token)
    });
    assert_eq!(sim.task("u").attempts[0].stdout_tail, exact);
}

#[test]
fn runnable_accessors_follow_priority_and_age() {
    let mut sim = Sim::new();
    sim.submit(vec![spec_prio("old-low", -1), spec_prio("mid", 0)]);
    sim.submit(vec![spec_prio("new-high", 5), spec_prio("new-mid", 0)]);
    assert_eq!(
        ids_of(sim.st.runnable_tasks()),
        ["new-high", "mid", "new-mid", "old-low"]
    );
    assert_eq!(
        ids_of(sim.st.runnable_oldest()),
        ["old-low", "mid", "new-high", "new-mid"]
    );
    assert_eq!(sim.st.runnable_len(), 4);
    sim.agent("w");
    sim.place("mid", "w");
    assert_eq!(
        ids_of(sim.st.runnable_oldest()),
        ["old-low", "new-high", "new-mid"]
    );
    assert_eq!(
        ids_of(sim.st.runnable_tasks()),
        ["new-high", "new-mid", "old-low"]
    );
    sim.cancel("new-high");
    assert_eq!(ids_of(sim.st.runnable_oldest()), ["old-low", "new-mid"]);
    check_invariants(&sim.st);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// A state with agents in every state and tasks in every situation.
fn varied() -> Sim {
    let mut sim = Sim::new();
    let mut gpu = agent_info("gpu-1", 2);
    gpu.pool = "gpu".into();
    gpu.labels.insert("zone".into(), "eu-1".into());
    sim.register(gpu).unwrap();
    sim.agent("a1");
    sim.agent("a2");
    sim.agent("dead");
    sim.submit(vec![
        TaskSpec {
            resources: Resources {
                cpu_millis: 250,
                memory_mb: 64,
                disk_mb: 1,
            },
            ..spec("running")
        },
        spec_prio("assigned", 3),
        retrying("delayed", 3, 5000),
        TaskSpec {
            deadline_ms: 9_000,
            ..spec_prio("deadline", -2)
        },
        spec_deps("blocked", &["running"]),
        spec("done"),
        spec("queued"),
        spec_prio("queued-high", 7),
        TaskSpec {
            pool: "gpu".into(),
            ..spec("on-gpu")
        },
    ]);
    let t = sim.place("running", "a1");
    sim.start("running", "a1", t);
    sim.place("assigned", "a2");
    sim.place("on-gpu", "gpu-1");
    sim.run("done", "a1", AttemptEnd::Succeeded, Some(0));
    sim.advance(10);
    sim.run("delayed", "dead", AttemptEnd::Failed, Some(9));
    sim.set_state("dead", None, AgentState::Down, "gone").unwrap();
    sim.set_state("a2", None, AgentState::Draining, "upgrade")
        .unwrap();
    check_invariants(&sim.st);
    sim
}

#[test]
fn snapshot_round_trip_keeps_agents_and_every_index() {
    let sim = varied();
    let restored = round_trip(&sim.st);
    assert_same(&sim.st, &restored);
    check_invariants(&restored);
    assert_eq!(runnable(&restored), ["queued-high", "queued", "deadline"]);
    assert_eq!(
        ids_of(restored.runnable_oldest()),
        ["deadline", "queued", "queued-high"]
    );
    assert_eq!(restored.delayed_len(), 1);
    let back_off_ends = T0 + 10 + retry_delay_ms("delayed", 1, 5000);
    assert_eq!(restored.get("delayed").unwrap().not_before_ms, back_off_ends);
    assert_eq!(restored.next_due_ms(), Some(back_off_ends.min(T0 + 9_000)));
    assert_eq!(restored.agent_count(AgentState::Alive), 2);
    assert_eq!(restored.agent_count(AgentState::Draining), 1);
    assert_eq!(restored.agent_count(AgentState::Down), 1);
    assert_eq!(restored.agent_tasks("a1").count(), 1);
    assert_eq!(restored.agent("a1").unwrap().used.cpu_millis, 250);
}

#[test]
fn restored_state_continues_identically() {
    let mut sim = varied();
    let mut restored = round_trip(&sim.st);
    let running_token = sim.task("running").current_token().unwrap();
    let assigned_token = sim.task("assigned").current_token().unwrap();
    let a1 = sim.st.agent("a1").unwrap().epoch;
    let now = sim.now;
    let further = vec![
        Command::Report {
            reports: vec![
                finished("running", "a1", running_token, AttemptEnd::Succeeded, Some(0)),
                started("assigned", "a2", assigned_token),
                started("assigned", "a2", assigned_token),
            ],
            now_ms: now + 1,
        },
        Command::Assign {
            placements: vec![placement("blocked", "a1", a1), placement("queued-high", "a1", a1)],
            now_ms: now + 2,
        },
        Command::Tick { now_ms: now + 20_000 },
        Command::SetAgentState {
            id: "a2".into(),
            epoch: None,
            state: AgentState::Down,
            reason: String::new(),
            now_ms: now + 20_001,
        },
        Command::RegisterAgent {
            agent: agent_info("a1", 8),
            now_ms: now + 20_002,
        },
        cancel_cmd("queued", "", now + 20_003),
    ];
    for cmd in further {
        sim.index += 1;
        let a = sim.st.apply(sim.index, cmd.clone());
        let b = restored.apply(sim.index, cmd);
        assert_eq!(a, b, "responses differ at {}", sim.index);
        assert_same(&sim.st, &restored);
        check_invariants(&sim.st);
    }
    // The commands really did something.
    assert_eq!(sim.task("deadline").state, TaskState::TimedOut);
    assert_eq!(sim.task("assigned").attempts[0].end, Some(AttemptEnd::Lost));
    assert_eq!(sim.task("blocked").attempts[0].end, Some(AttemptEnd::Lost));
    assert_eq!(sim.st.delayed_len(), 0);
}

#[test]
fn snapshots_without_agents_still_load() {
    // Written before agents existed: no `agents` key.
    let json = r#"{"next_seq": 1, "tasks": [
        {"spec": {"id": "a", "command": ["/bin/true"]}, "state": "pending", "created_index": 1,
         "log_index": 1, "submitted_at_ms": 5, "updated_at_ms": 5, "seq": 0}]}"#;
    let st = State::from_image(serde_json::from_str(json).unwrap()).unwrap();
    assert_eq!(st.agents().count(), 0);
    assert_eq!(runnable(&st), ["a"]);
    assert_eq!(st.get("a").unwrap().spec.backoff_ms, 1000, "serde default");
    assert_eq!(
        st.get("a").unwrap().request_id,
        "",
        "written before request ids existed"
    );
    assert_eq!(st.next_due_ms(), None);
}

#[test]
fn request_ids_survive_a_snapshot_round_trip_and_keyless_tasks_encode_as_before() {
    let mut st = State::new();
    submit_keyed(&mut st, 1, "req-1", vec![spec("keyed")]).unwrap();
    submit_one(&mut st, 2, vec![spec("plain")]).unwrap();
    let json = image_json(&st);
    assert_eq!(
        json.matches("\"request_id\"").count(),
        1,
        "only the keyed task: {json}"
    );

    let mut restored = round_trip(&st);
    assert_same(&st, &restored);
    assert_eq!(restored.get("keyed").unwrap().request_id, "req-1");
    assert_eq!(restored.get("plain").unwrap().request_id, "");
    // A retry answered by the restored replica gets the answer the original would have.
    let retry = submit_keyed(&mut restored, 3, "req-1", vec![spec("keyed")]).unwrap();
    assert!(retry[0].created, "{retry:?}");
    let other = submit_keyed(&mut restored, 4, "req-2", vec![spec("keyed")]).unwrap();
    assert!(!other[0].created, "{other:?}");
}

#[test]
fn from_image_rejects_inconsistent_agents() {
    let sim = varied();
    let image = || -> StateImage { serde_json::from_str(&image_json(&sim.st)).unwrap() };
    let corrupt = |image: StateImage, what: &str| match State::from_image(image) {
        Err(taurus_core::CoreError::CorruptSnapshot(msg)) => assert!(msg.contains(what), "{msg}"),
        other => panic!("corrupt image accepted: {other:?}"),
    };

    let mut dup = image();
    let a = dup.agents[0].clone();
    dup.agents.push(a);
    corrupt(dup, "twice");

    let mut books = image();
    books.agents.iter_mut().find(|a| a.info.id == "a1").unwrap().tasks += 1;
    corrupt(books, "a1");

    let mut used = image();
    used.agents
        .iter_mut()
        .find(|a| a.info.id == "a2")
        .unwrap()
        .used
        .cpu_millis = 1;
    corrupt(used, "a2");

    let mut orphan = image();
    orphan.agents.retain(|a| a.info.id != "gpu-1");
    corrupt(orphan, "unknown agent gpu-1");

    let mut open = image();
    let t = open.tasks.iter_mut().find(|t| t.spec.id == "running").unwrap();
    t.attempts.last_mut().unwrap().end = Some(AttemptEnd::Failed);
    corrupt(open, "without a current attempt");
}

// ---------------------------------------------------------------------------------------------
// Determinism under a random scheduling workload

/// Generates a reproducible stream of scheduling commands against the state it is shown, as
/// a leader and its agents would (mostly sensible, with stale, repeated and malformed input).
struct Workload {
    rng: Rng,
    index: u64,
    now: u64,
    created: u64,
    past_reports: Vec<TaskReport>,
}

const AGENTS: [&str; 5] = ["w0", "w1", "w2", "w3", "w4"];

impl Workload {
    fn new(seed: u64) -> Self {
        Workload {
            rng: Rng::new(seed),
            index: 0,
            now: T0,
            created: 0,
            past_reports: Vec::new(),
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.rng.below(items.len() as u64) as usize])
    }

    fn next(&mut self, st: &State) -> (u64, Command) {
        self.index += 1;
        self.now += self.rng.below(300);
        let now_ms = self.now;
        let cmd = match self.rng.below(100) {
            0..=17 => submit_cmd(vec![self.specs()], now_ms),
            18..=22 => Command::RegisterAgent {
                agent: self.agent(),
                now_ms,
            },
            23..=27 => {
                let id = if self.rng.chance(10) {
                    "nobody".to_string()
                } else {
                    self.pick(&AGENTS).unwrap().to_string()
                };
                let current = st.agent(&id).map(|a| a.epoch).unwrap_or(0);
                let epoch = match self.rng.below(3) {
                    0 => None,
                    1 => Some(current),
                    _ => Some(current.saturating_sub(1)),
                };
                let state = AgentState::ALL[self.rng.below(3) as usize];
                Command::SetAgentState {
                    id,
                    epoch,
                    state,
                    reason: ["", "lost heartbeat"][self.rng.below(2) as usize].to_string(),
                    now_ms,
                }
            }
            28..=52 => Command::Assign {
                placements: self.placements(st),
                now_ms,
            },
            53..=84 => Command::Report {
                reports: self.reports(st),
                now_ms,
            },
            85..=93 => {
                if self.rng.chance(30) {
                    self.now += self.rng.below(20_000);
                }
                Command::Tick { now_ms: self.now }
            }
            _ => {
                let n = self.created.max(1);
                cancel_cmd(&format!("t{}", self.rng.below(n)), "", now_ms)
            }
        };
        (self.index, cmd)
    }

    fn specs(&mut self) -> Vec<TaskSpec> {
        (0..1 + self.rng.below(3))
            .map(|_| {
                let id = format!("t{}", self.created);
                self.created += 1;
                let mut s = TaskSpec {
                    priority: self.rng.below(5) as i32 - 2,
                    max_attempts: 1 + self.rng.below(3) as u32,
                    backoff_ms: [0, 50, 1000][self.rng.below(3) as usize],
                    deadline_ms: if self.rng.chance(20) {
                        1000 + self.rng.below(30_000)
                    } else {
                        0
                    },
                    resources: Resources {
                        cpu_millis: self.rng.below(3000) as u32,
                        memory_mb: self.rng.below(4096),
                        disk_mb: 0,
                    },
                    ..spec(&id)
                };
                if self.created > 1 && self.rng.chance(30) {
                    s.depends_on
                        .push(format!("t{}", self.rng.below(self.created - 1)));
                }
                if self.rng.chance(15) {
                    s.pool = "gpu".into();
                }
                if self.rng.chance(10) {
                    s.constraints.insert("zone".into(), "a".into());
                }
                s
            })
            .collect()
    }

    fn agent(&mut self) -> AgentInfo {
        let id = self.pick(&AGENTS).unwrap().to_string();
        let mut info = agent_info(&id, 1 + self.rng.below(4) as u32);
        info.resources.cpu_millis = 2000 + self.rng.below(6000) as u32;
        if self.rng.chance(30) {
            info.pool = "gpu".into();
        }
        if self.rng.chance(50) {
            info.labels
                .insert("zone".into(), ["a", "b"][self.rng.below(2) as usize].into());
        }
        if self.rng.chance(5) {
            info.max_tasks = 0;
        }
        info
    }

    fn placements(&mut self, st: &State) -> Vec<Placement> {
        let runnable: Vec<String> = st.runnable().take(8).cloned().collect();
        let agents: Vec<(String, u64)> = st.agents().map(|a| (a.info.id.clone(), a.epoch)).collect();
        let mut out = Vec::new();
        for _ in 0..self.rng.below(5) {
            let Some((agent, epoch)) = self.pick(&agents).cloned() else {
                break;
            };
            let epoch = if self.rng.chance(10) { epoch + 1 } else { epoch };
            let p = if self.rng.chance(15) {
                // Move something assigned somewhere else (or try to).
                let held: Vec<(String, u64)> = self
                    .pick(&agents)
                    .map(|(a, _)| st.agent_tasks(a).map(|(t, tok)| (t.clone(), tok)).collect())
                    .unwrap_or_default();
                let Some((task, token)) = self.pick(&held).cloned() else {
                    continue;
                };
                Placement {
                    move_from: Some(token),
                    ..placement(&task, &agent, epoch)
                }
            } else if self.rng.chance(10) {
                let n = self.created.max(1);
                placement(&format!("t{}", self.rng.below(n)), &agent, epoch)
            } else {
                let Some(task) = self.pick(&runnable).cloned() else {
                    continue;
                };
                placement(&task, &agent, epoch)
            };
            out.push(p);
        }
        out
    }

    fn reports(&mut self, st: &State) -> Vec<TaskReport> {
        let mut out = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            if self.rng.chance(15)
                && let Some(old) = self.pick(&self.past_reports.clone()).cloned()
            {
                out.push(old);
                continue;
            }
            let agent = self.pick(&AGENTS).unwrap().to_string();
            let held: Vec<(String, u64)> = st.agent_tasks(&agent).map(|(t, tok)| (t.clone(), tok)).collect();
            let Some((task, token)) = self.pick(&held).cloned() else {
                continue;
            };
            let running = st.get(&task).is_some_and(|t| t.state == TaskState::Running);
            let mut r = if !running && self.rng.chance(80) {
                started(&task, &agent, token)
            } else {
                let end = [
                    AttemptEnd::Succeeded,
                    AttemptEnd::Succeeded,
                    AttemptEnd::Failed,
                    AttemptEnd::TimedOut,
                    AttemptEnd::Killed,
                    AttemptEnd::Lost,
                ][self.rng.below(6) as usize];
                finished(&task, &agent, token, end, Some(self.rng.below(3) as i32))
            };
            if self.rng.chance(5) {
                r.agent_id = self.pick(&AGENTS).unwrap().to_string();
            }
            if self.rng.chance(5) {
                r.token = r.token.saturating_sub(1 + self.rng.below(20));
            }
            self.past_reports.push(r.clone());
            out.push(r);
        }
        out
    }
}

fn observe(counts: &mut BTreeMap<&'static str, usize>, resp: &Response) {
    let mut bump = |k: &'static str| *counts.entry(k).or_default() += 1;
    match resp {
        Response::Assigned(results) => {
            for r in results {
                bump(if r.is_ok() { "placed" } else { "placement rejected" });
            }
        }
        Response::Reported(outcomes) => {
            for o in outcomes {
                bump(match o {
                    ReportOutcome::Accepted => "accepted",
                    ReportOutcome::Duplicate => "duplicate",
                    ReportOutcome::Stale(_) => "stale",
                    ReportOutcome::Invalid(_) => "invalid",
                });
            }
        }
        Response::Ticked(t) => {
            for _ in &t.released {
                bump("released");
            }
            for _ in &t.expired {
                bump("expired");
            }
        }
        Response::Registered(r) => {
            for _ in r.iter().flat_map(|r| &r.lost) {
                bump("lost");
            }
        }
        Response::AgentState(r) => {
            for _ in r.iter().flat_map(|r| &r.lost) {
                bump("lost");
            }
        }
        _ => {}
    }
}

#[test]
fn same_scheduling_commands_give_identical_states() {
    for seed in [1u64, 2, 3] {
        // Generate the log against a scratch replica, then feed it to two fresh ones.
        let commands: Vec<(u64, Command)> = {
            let mut work = Workload::new(seed);
            let mut scratch = State::new();
            (0..600)
                .map(|_| {
                    let (index, cmd) = work.next(&scratch);
                    scratch.apply(index, cmd.clone());
                    (index, cmd)
                })
                .collect()
        };
        let mut a = State::new();
        let mut b = State::new();
        for (index, cmd) in &commands {
            let decoded: Command = serde_json::from_str(&serde_json::to_string(cmd).unwrap()).unwrap();
            assert_eq!(&decoded, cmd);
            let ra = a.apply(*index, cmd.clone());
            let rb = b.apply(*index, decoded);
            assert_eq!(ra, rb, "seed {seed}: responses differ at {index}");
        }
        assert_same(&a, &b);
    }
}

#[test]
fn random_scheduling_keeps_invariants_and_snapshots_continue_identically() {
    for seed in [7u64, 8, 9] {
        let mut work = Workload::new(seed);
        let mut live = State::new();
        let mut copies: Vec<(u64, State)> = Vec::new();
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for step in 1..=800u64 {
            if step % 100 == 0 {
                let copy = round_trip(&live);
                assert_same(&live, &copy);
                copies.push((step, copy));
            }
            let (index, cmd) = work.next(&live);
            let held_before = held_sets(&live);
            let expected = live.apply(index, cmd.clone());
            // Whatever changed an agent's assigned set moved its change marker to this entry,
            // so an assignment stream that skips unchanged agents never misses a change.
            for (agent, (set, _)) in held_sets(&live) {
                // A new agent starts with nothing assigned.
                let before = held_before
                    .get(&agent)
                    .map(|(s, _)| s.as_slice())
                    .unwrap_or_default();
                if before != set.as_slice() {
                    assert_eq!(
                        live.agent_tasks_changed_at(&agent),
                        Some(index),
                        "seed {seed}: {agent}'s tasks changed at {index} without the marker"
                    );
                }
            }
            observe(&mut counts, &expected);
            for (from, copy) in copies.iter_mut() {
                let got = copy.apply(index, cmd.clone());
                assert_eq!(
                    got, expected,
                    "seed {seed}: copy restored at {from} differs at {index}"
                );
            }
            check_invariants(&live);
        }
        for (_, copy) in &copies {
            assert_same(copy, &live);
        }
        // The workload exercised every path.
        for key in [
            "placed",
            "placement rejected",
            "accepted",
            "duplicate",
            "stale",
            "invalid",
            "released",
            "expired",
            "lost",
        ] {
            assert!(
                counts.get(key).copied().unwrap_or(0) > 0,
                "seed {seed}: no {key} ({counts:?})"
            );
        }
        for s in [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::TimedOut,
            TaskState::Cancelled,
        ] {
            assert!(live.count(s) > 0, "seed {seed}: no task {s}");
        }
    }
}

#[test]
fn change_markers_move_with_assignments_and_reset_on_restore() {
    let mut sim = Sim::new();
    sim.submit(vec![spec("t")]);
    sim.agent("w");
    sim.agent("idle");
    assert_eq!(
        sim.st.agent_tasks_changed_at("w"),
        None,
        "registering assigns nothing"
    );
    let token = sim.place("t", "w");
    assert_eq!(sim.st.agent_tasks_changed_at("w"), Some(token));
    assert_eq!(sim.st.agent_tasks_changed_at("idle"), None);
    // A restored state knows no history: every marker is absent until something changes, and
    // an installed snapshot marks every agent changed at its last index.
    let mut restored = round_trip(&sim.st);
    assert_eq!(restored.agent_tasks_changed_at("w"), None);
    restored.mark_agents_changed(token + 10);
    assert_eq!(restored.agent_tasks_changed_at("w"), Some(token + 10));
    assert_eq!(restored.agent_tasks_changed_at("idle"), Some(token + 10));
    assert_same(&restored, &sim.st);
}
