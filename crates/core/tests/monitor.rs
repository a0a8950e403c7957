//! Monitoring (`taurus_core::monitor`): utilisation, queue and efficiency figures, and every
//! anomaly kind both firing and not firing. Pure: states are built with `State::apply`, histories
//! from samples taken of those states or written out by hand, time is passed in.

mod common;

use std::collections::BTreeMap;

use common::*;
use taurus_core::Command;
use taurus_core::Response;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::command::Placement;
use taurus_core::command::ReportEvent;
use taurus_core::command::ReportOutcome;
use taurus_core::command::TaskReport;
use taurus_core::monitor::AgentSample;
use taurus_core::monitor::AnomalyKind;
use taurus_core::monitor::History;
use taurus_core::monitor::MAX_TASK_ANOMALIES;
use taurus_core::monitor::MemberSample;
use taurus_core::monitor::Observations;
use taurus_core::monitor::Report;
use taurus_core::monitor::Sample;
use taurus_core::monitor::Severity;
use taurus_core::monitor::Spread;
use taurus_core::monitor::Thresholds;
use taurus_core::monitor::report;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::AttemptEnd;
use taurus_core::types::Resources;

const SEC: u64 = 1000;

// ---------------------------------------------------------------------------------------------
// Harness ([`Sim`] from `common`)

impl Sim {
    fn agent(&mut self, id: &str, slots: u32) {
        let cmd = Command::RegisterAgent {
            agent: agent_info(id, slots),
            now_ms: self.now,
        };
        match self.apply(cmd) {
            Response::Registered(r) => {
                r.expect("registered");
            }
            other => panic!("RegisterAgent answered {other:?}"),
        }
    }

    fn register_in_pool(&mut self, id: &str, pool: &str) {
        let cmd = Command::RegisterAgent {
            agent: AgentInfo {
                pool: pool.into(),
                ..agent_info(id, 1)
            },
            now_ms: self.now,
        };
        match self.apply(cmd) {
            Response::Registered(r) => {
                r.expect("registered");
            }
            other => panic!("RegisterAgent answered {other:?}"),
        }
    }

    fn set_state(&mut self, id: &str, state: AgentState) {
        let cmd = Command::SetAgentState {
            id: id.to_string(),
            epoch: None,
            state,
            reason: "test".into(),
            now_ms: self.now,
        };
        match self.apply(cmd) {
            Response::AgentState(r) => {
                r.expect("state set");
            }
            other => panic!("SetAgentState answered {other:?}"),
        }
    }

    /// Places `task` on `agent`; returns the fencing token.
    fn place(&mut self, task: &str, agent: &str) -> u64 {
        let epoch = self.st.agent(agent).expect("agent exists").epoch;
        let placements = vec![Placement {
            task_id: task.into(),
            agent_id: agent.into(),
            agent_epoch: epoch,
            move_from: None,
        }];
        match self.apply(Command::Assign {
            placements,
            now_ms: self.now,
        }) {
            Response::Assigned(r) => assert_eq!(r, vec![Ok(())], "placing {task} on {agent}"),
            other => panic!("Assign answered {other:?}"),
        }
        self.index
    }

    fn report(&mut self, task: &str, agent: &str, token: u64, event: ReportEvent) {
        let reports = vec![TaskReport {
            task_id: task.into(),
            agent_id: agent.into(),
            token,
            event,
        }];
        match self.apply(Command::Report {
            reports,
            now_ms: self.now,
        }) {
            Response::Reported(r) => assert_eq!(r, vec![ReportOutcome::Accepted]),
            other => panic!("Report answered {other:?}"),
        }
    }

    fn start(&mut self, task: &str, agent: &str) -> u64 {
        let token = self.place(task, agent);
        self.report(task, agent, token, ReportEvent::Started);
        token
    }

    fn finish(&mut self, task: &str, agent: &str, token: u64) {
        let event = ReportEvent::Finished {
            end: AttemptEnd::Succeeded,
            exit_code: Some(0),
            error: String::new(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        };
        self.report(task, agent, token, event);
    }

    fn tick(&mut self) {
        let now_ms = self.now;
        self.apply(Command::Tick { now_ms });
    }

    fn sample(&self) -> Sample {
        Sample::take(&self.st, Vec::new(), Some(1), self.now)
    }

    fn monitor(&self, history: &History, obs: &Observations, t: &Thresholds) -> Report {
        report(&self.st, history, obs, t, self.now)
    }
}

fn agent_info(id: &str, slots: u32) -> AgentInfo {
    AgentInfo {
        id: id.to_string(),
        address: String::new(),
        resources: Resources {
            cpu_millis: 4000,
            memory_mb: 8192,
            disk_mb: 0,
        },
        max_tasks: slots,
        labels: BTreeMap::new(),
        pool: String::new(),
    }
}

fn kinds(r: &Report) -> Vec<(AnomalyKind, String)> {
    r.anomalies.iter().map(|a| (a.kind, a.subject.clone())).collect()
}

fn has(r: &Report, kind: AnomalyKind, subject: &str) -> bool {
    r.anomalies.iter().any(|a| a.kind == kind && a.subject == subject)
}

fn count(r: &Report, kind: AnomalyKind) -> usize {
    r.anomalies.iter().filter(|a| a.kind == kind).count()
}

/// A hand-written sample: agents as `(id, epoch, state, utilisation)`.
fn sample(
    at_ms: u64,
    pending: u64,
    runnable: u64,
    cluster: f64,
    agents: &[(&str, u64, AgentState, f64)],
) -> Sample {
    Sample {
        at_ms,
        pending,
        runnable,
        cluster_utilisation: cluster,
        agents: agents
            .iter()
            .map(|(id, epoch, state, u)| AgentSample {
                id: id.to_string(),
                epoch: *epoch,
                state: *state,
                utilisation: *u,
            })
            .collect(),
        members: Vec::new(),
        leader: Some(1),
    }
}

/// `n + 1` samples every `step` ms ending at `end`, each made by `f(at)`.
fn history_of(end: u64, step: u64, n: u64, f: impl Fn(u64) -> Sample) -> History {
    let mut h = History::new(1000);
    for i in (0..=n).rev() {
        h.push(f(end - i * step));
    }
    h
}

fn short() -> Thresholds {
    Thresholds {
        utilisation_for_ms: 60 * SEC,
        queue_window_ms: 60 * SEC,
        lag_for_ms: 20 * SEC,
        flap_window_ms: 60 * SEC,
        ..Thresholds::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

#[test]
fn utilisation_is_the_dominant_share_and_down_agents_hold_nothing() {
    let mut sim = Sim::new();
    sim.agent("a", 4);
    sim.agent("b", 4);
    sim.agent("gone", 2);
    sim.set_state("gone", AgentState::Down);
    let heavy = TaskSpec {
        resources: Resources {
            cpu_millis: 3000,
            memory_mb: 1024,
            disk_mb: 0,
        },
        ..spec("heavy")
    };
    sim.submit(vec![heavy, spec("light")]);
    sim.place("heavy", "a");
    sim.place("light", "b");

    let r = sim.monitor(
        &History::new(10),
        &Observations::default(),
        &Thresholds::default(),
    );
    let a = r.agents.iter().find(|x| x.id == "a").expect("agent a");
    assert_eq!((a.slots, a.cpu, a.memory), (0.25, 0.75, 0.125));
    assert_eq!(a.utilisation, 0.75, "CPU dominates");
    let b = r.agents.iter().find(|x| x.id == "b").expect("agent b");
    assert_eq!(b.utilisation, 0.25, "one slot of four");
    let gone = r.agents.iter().find(|x| x.id == "gone").expect("agent gone");
    assert_eq!((gone.state, gone.utilisation), (AgentState::Down, 0.0));

    let c = &r.cluster;
    assert_eq!((c.agents_alive, c.agents_draining, c.agents_down), (2, 0, 1));
    assert_eq!(
        (c.slots_used, c.slots_total),
        (2, 8),
        "the down agent's slots do not count"
    );
    assert_eq!(c.cpu, 3000.0 / 8000.0);
    assert_eq!(c.utilisation, c.cpu);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));
}

#[test]
fn queue_counts_states_priorities_pools_and_dependency_waits() {
    let mut sim = Sim::new();
    sim.submit(vec![
        spec_prio("hi", 5),
        spec_prio("lo", -1),
        spec("mid"),
        TaskSpec {
            pool: "gpu".into(),
            ..spec("g")
        },
        spec_deps("child", &["hi"]),
    ]);
    let r = sim.monitor(
        &History::new(10),
        &Observations::default(),
        &Thresholds::default(),
    );
    let q = &r.queue;
    assert_eq!(q.by_state[0], (TaskState::Pending, 5));
    assert_eq!(q.by_state.len(), TaskState::ALL.len());
    assert_eq!((q.runnable, q.delayed, q.waiting_deps), (4, 0, 1));
    assert_eq!(q.by_priority, vec![(5, 1), (0, 2), (-1, 1)]);
    assert_eq!(q.by_pool, vec![(String::new(), 3), ("gpu".to_string(), 1)]);
    assert_eq!(q.growth_per_min, None, "no history");
}

#[test]
fn efficiency_compares_queue_wait_with_run_time() {
    let mut sim = Sim::new();
    sim.agent("a", 4);
    sim.submit(vec![spec("t1"), spec("t2")]);
    sim.now += 2 * SEC; // both wait 2 s
    let k1 = sim.start("t1", "a");
    sim.now += 2 * SEC; // t2 waits 4 s in all
    let k2 = sim.start("t2", "a");
    sim.now += 6 * SEC; // t1 ran 8 s, t2 6 s
    sim.finish("t1", "a", k1);
    sim.finish("t2", "a", k2);
    sim.submit(vec![spec("never-started")]);
    sim.apply(cancel_cmd("never-started", "", sim.now));

    let r = sim.monitor(
        &History::new(10),
        &Observations::default(),
        &Thresholds::default(),
    );
    let e = &r.efficiency;
    assert_eq!(e.tasks, 2, "the cancelled task never ran and is not counted");
    assert_eq!(e.queue_wait.mean_ms, 3000.0);
    assert_eq!((e.queue_wait.p50_ms, e.queue_wait.max_ms), (2000, 4000));
    assert_eq!(e.run_time.mean_ms, 7000.0);
    assert_eq!(e.run_share, Some(14.0 / 20.0));
    assert_eq!(e.finished_last_minute, 2);

    sim.now += 61 * SEC;
    let later = sim.monitor(
        &History::new(10),
        &Observations::default(),
        &Thresholds::default(),
    );
    assert_eq!(later.efficiency.finished_last_minute, 0);
    assert_eq!(later.efficiency.tasks, 2);
}

#[test]
fn spread_percentiles() {
    let s = Spread::of((1..=100).collect());
    assert_eq!((s.p50_ms, s.p95_ms, s.max_ms), (50, 95, 100));
    assert_eq!(s.mean_ms, 50.5);
    assert_eq!(Spread::of(vec![]), Spread::default());
    assert_eq!(Spread::of(vec![7]).p95_ms, 7);
}

#[test]
fn history_is_bounded_and_restarts_when_the_clock_steps_back() {
    let mut h = History::new(3);
    for i in 0..5 {
        h.push(sample(T0 + i * SEC, 0, 0, 0.0, &[]));
    }
    assert_eq!(h.len(), 3);
    assert_eq!(h.iter().next().map(|s| s.at_ms), Some(T0 + 2 * SEC));
    assert!(h.covers(T0 + 4 * SEC, 2 * SEC));
    assert!(!h.covers(T0 + 4 * SEC, 3 * SEC));
    h.push(sample(T0, 0, 0, 0.0, &[]));
    assert_eq!(h.len(), 1, "an older sample replaces the history");
}

// ---------------------------------------------------------------------------------------------
// Anomalies about agents

#[test]
fn flapping_agent_fires_at_the_threshold_within_the_window() {
    let t = short();
    let now = T0 + 100 * SEC;
    use AgentState::*;
    // a: up, down, up (new epoch), down: 3 transitions. b: one re-registration.
    let states = [(1, Alive), (1, Down), (7, Alive), (7, Down)];
    let h = history_of(now, 10 * SEC, 3, |at| {
        let i = ((at - (now - 30 * SEC)) / (10 * SEC)) as usize;
        let (epoch, st) = states[i];
        sample(
            at,
            0,
            0,
            0.0,
            &[
                ("a", epoch, st, 0.0),
                ("b", if i >= 2 { 9 } else { 2 }, Alive, 0.0),
            ],
        )
    });
    let mut sim = Sim::new();
    sim.now = now;
    sim.agent("a", 1);
    sim.agent("b", 1);
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert!(has(&r, AnomalyKind::AgentFlapping, "agent/a"), "{:?}", kinds(&r));
    assert!(
        !has(&r, AnomalyKind::AgentFlapping, "agent/b"),
        "one re-registration is not flapping"
    );

    // The same transitions, but older than the window: nothing.
    sim.now = now + 61 * SEC;
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::AgentFlapping), 0, "{:?}", kinds(&r));

    // Draining and undraining is not flapping.
    let drains = history_of(now, 10 * SEC, 5, |at| {
        let st = if (at / (10 * SEC)).is_multiple_of(2) {
            Alive
        } else {
            Draining
        };
        sample(at, 0, 0, 0.0, &[("a", 1, st, 0.0)])
    });
    sim.now = now;
    let r = sim.monitor(&drains, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::AgentFlapping), 0, "{:?}", kinds(&r));
}

#[test]
fn missing_heartbeats_fire_only_on_the_leader_past_the_threshold() {
    let t = Thresholds::default();
    let mut sim = Sim::new();
    sim.agent("quiet", 1);
    sim.agent("fine", 1);
    sim.agent("dead", 1);
    sim.set_state("dead", AgentState::Down);
    let obs = Observations {
        heartbeat_silence_ms: Some(BTreeMap::from([
            ("quiet".to_string(), t.heartbeat_late_ms),
            ("fine".to_string(), t.heartbeat_late_ms - 1),
            ("dead".to_string(), 60 * SEC),
        ])),
        load: BTreeMap::from([("fine".to_string(), 0.5)]),
    };
    let r = sim.monitor(&History::new(10), &obs, &t);
    assert_eq!(
        kinds(&r),
        vec![(AnomalyKind::HeartbeatMissing, "agent/quiet".to_string())],
        "a down agent is not expected to heartbeat"
    );
    let fine = r.agents.iter().find(|a| a.id == "fine").expect("agent fine");
    assert_eq!(
        (fine.load, fine.heartbeat_silence_ms),
        (Some(0.5), Some(t.heartbeat_late_ms - 1))
    );

    // A follower knows no heartbeats and judges none.
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));
}

#[test]
fn agent_overloaded_needs_high_utilisation_for_the_whole_window() {
    let t = short();
    let now = T0 + 1000 * SEC;
    let mut sim = Sim::new();
    sim.now = now;
    sim.agent("hot", 1);
    let high = |at| sample(at, 0, 0, 0.5, &[("hot", 1, AgentState::Alive, 0.95)]);

    let h = history_of(now, 5 * SEC, 12, high);
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert!(
        has(&r, AnomalyKind::AgentOverloaded, "agent/hot"),
        "{:?}",
        kinds(&r)
    );

    // One sample below the threshold inside the window: not persistent.
    let dip = history_of(now, 5 * SEC, 12, |at| {
        let u = if at == now - 20 * SEC { 0.5 } else { 0.95 };
        sample(at, 0, 0, 0.5, &[("hot", 1, AgentState::Alive, u)])
    });
    let r = sim.monitor(&dip, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::AgentOverloaded), 0, "{:?}", kinds(&r));

    // A history shorter than the window proves nothing yet.
    let young = history_of(now, 5 * SEC, 6, high);
    let r = sim.monitor(&young, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::AgentOverloaded), 0, "{:?}", kinds(&r));

    // A draining agent is on its way out: not reported as overloaded.
    sim.set_state("hot", AgentState::Draining);
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::AgentOverloaded), 0, "{:?}", kinds(&r));
}

#[test]
fn agents_of_a_sample_are_found_in_any_order_and_a_history_copy_shares_them() {
    let t = short();
    let now = T0 + 1000 * SEC;
    let mut sim = Sim::new();
    sim.now = now;
    for id in ["a", "hot", "z"] {
        sim.agent(id, 1);
    }
    // Written out of id order: the history sorts them, lookups are by binary search.
    let h = history_of(now, 5 * SEC, 12, |at| {
        sample(
            at,
            0,
            0,
            0.5,
            &[
                ("z", 1, AgentState::Alive, 0.5),
                ("hot", 1, AgentState::Alive, 0.95),
                ("a", 1, AgentState::Alive, 0.5),
            ],
        )
    });
    let latest = h.latest().expect("a sample");
    assert_eq!(latest.agent("hot").map(|a| a.utilisation), Some(0.95));
    assert_eq!(latest.agent("a").map(|a| a.utilisation), Some(0.5));
    assert!(latest.agent("nobody").is_none());
    let copy = h.clone();
    assert!(
        std::ptr::eq(copy.latest().expect("a sample"), latest),
        "a copy shares the samples"
    );
    let r = sim.monitor(&copy, &Observations::default(), &t);
    assert!(
        has(&r, AnomalyKind::AgentOverloaded, "agent/hot"),
        "{:?}",
        kinds(&r)
    );
    assert_eq!(count(&r, AnomalyKind::AgentOverloaded), 1, "{:?}", kinds(&r));
}

#[test]
fn agent_underused_only_while_the_cluster_is_busier() {
    let t = short();
    let now = T0 + 1000 * SEC;
    let mut sim = Sim::new();
    sim.now = now;
    sim.agent("idle", 1);
    sim.agent("busy", 1);
    let h = history_of(now, 5 * SEC, 12, |at| {
        sample(
            at,
            0,
            0,
            0.5,
            &[
                ("idle", 1, AgentState::Alive, 0.0),
                ("busy", 2, AgentState::Alive, 1.0),
            ],
        )
    });
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert!(
        has(&r, AnomalyKind::AgentUnderused, "agent/idle"),
        "{:?}",
        kinds(&r)
    );
    assert!(!has(&r, AnomalyKind::AgentUnderused, "agent/busy"));
    assert_eq!(
        r.anomalies
            .iter()
            .find(|a| a.kind == AnomalyKind::AgentUnderused)
            .map(|a| a.severity),
        Some(Severity::Info)
    );

    // Everyone idle: that is the cluster's anomaly, not this agent's.
    let all_idle = history_of(now, 5 * SEC, 12, |at| {
        sample(
            at,
            0,
            0,
            0.0,
            &[
                ("idle", 1, AgentState::Alive, 0.0),
                ("busy", 2, AgentState::Alive, 0.0),
            ],
        )
    });
    let r = sim.monitor(&all_idle, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::AgentUnderused), 0, "{:?}", kinds(&r));
    assert!(
        has(&r, AnomalyKind::ClusterUnderused, "cluster"),
        "{:?}",
        kinds(&r)
    );
}

// ---------------------------------------------------------------------------------------------
// Anomalies about the cluster as a whole

#[test]
fn cluster_saturated_needs_high_utilisation_and_waiting_work() {
    let t = short();
    let now = T0 + 1000 * SEC;
    let mut sim = Sim::new();
    sim.now = now;
    sim.agent("a", 1);
    let waiting = history_of(now, 5 * SEC, 12, |at| {
        sample(at, 8, 8, 0.95, &[("a", 1, AgentState::Alive, 0.95)])
    });
    let r = sim.monitor(&waiting, &Observations::default(), &t);
    assert!(
        has(&r, AnomalyKind::ClusterSaturated, "cluster"),
        "{:?}",
        kinds(&r)
    );

    // Just as busy, but nothing waits: well sized.
    let nothing_waits = history_of(now, 5 * SEC, 12, |at| {
        sample(at, 0, 0, 0.95, &[("a", 1, AgentState::Alive, 0.95)])
    });
    let r = sim.monitor(&nothing_waits, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::ClusterSaturated), 0, "{:?}", kinds(&r));
}

#[test]
fn cluster_underused_from_real_samples_of_an_idle_cluster() {
    let t = short();
    let mut sim = Sim::new();
    sim.agent("a", 4);
    sim.agent("b", 4);
    let mut h = History::new(100);
    for _ in 0..=12 {
        h.push(sim.sample());
        sim.now += 5 * SEC;
    }
    sim.now -= 5 * SEC;
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert_eq!(
        kinds(&r),
        vec![(AnomalyKind::ClusterUnderused, "cluster".to_string())],
        "agents idle alike are not reported one by one"
    );

    // Busy agents: nothing.
    sim.submit((0..6).map(|i| spec(&format!("t{i}"))).collect());
    for i in 0..6 {
        let agent = if i % 2 == 0 { "a" } else { "b" };
        sim.start(&format!("t{i}"), agent);
    }
    let mut busy = History::new(100);
    for _ in 0..=12 {
        busy.push(sim.sample());
        sim.now += 5 * SEC;
    }
    sim.now -= 5 * SEC;
    let r = sim.monitor(&busy, &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));
    assert_eq!(r.cluster.utilisation, 0.75);
}

// ---------------------------------------------------------------------------------------------
// Anomalies about tasks

#[test]
fn task_past_deadline_fires_after_the_grace_until_a_tick_ends_it() {
    let t = Thresholds::default();
    let mut sim = Sim::new();
    sim.agent("a", 1); // the pool is served; the tasks just were not placed
    sim.submit(vec![
        TaskSpec {
            deadline_ms: 5 * SEC,
            ..spec("late")
        },
        TaskSpec {
            deadline_ms: 60 * SEC,
            ..spec("fine")
        },
    ]);
    sim.now += 5 * SEC + t.stuck_grace_ms;
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "exactly at the grace: {:?}", kinds(&r));

    sim.now += 1;
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert_eq!(
        kinds(&r),
        vec![(AnomalyKind::TaskPastDeadline, "task/late".to_string())]
    );
    assert_eq!(r.anomalies[0].severity, Severity::Critical);
    assert!(
        r.anomalies[0].message.contains("pending"),
        "{}",
        r.anomalies[0].message
    );

    sim.tick();
    assert_eq!(sim.st.get("late").map(|t| t.state), Some(TaskState::TimedOut));
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));
}

#[test]
fn many_stuck_tasks_are_listed_up_to_a_cap_then_counted() {
    let t = Thresholds::default();
    let mut sim = Sim::new();
    let n = MAX_TASK_ANOMALIES + 3;
    sim.submit(
        (0..n)
            .map(|i| TaskSpec {
                deadline_ms: SEC,
                ..spec(&format!("t{i:02}"))
            })
            .collect(),
    );
    sim.now += SEC + t.stuck_grace_ms + 1;
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::TaskPastDeadline), MAX_TASK_ANOMALIES + 1);
    let rest = r
        .anomalies
        .iter()
        .find(|a| a.subject == "tasks")
        .expect("a summary of the rest");
    assert!(rest.message.contains("3 more"), "{}", rest.message);
}

#[test]
fn task_past_timeout_fires_for_running_tasks_only() {
    let t = Thresholds::default();
    let mut sim = Sim::new();
    sim.agent("a", 4);
    let timed = |id: &str| TaskSpec {
        timeout_ms: 10 * SEC,
        ..spec(id)
    };
    sim.submit(vec![
        timed("runs-long"),
        timed("assigned-only"),
        spec("no-timeout"),
        timed("waits"),
    ]);
    sim.start("runs-long", "a");
    sim.place("assigned-only", "a");
    sim.start("no-timeout", "a");

    sim.now += 10 * SEC + t.stuck_grace_ms;
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "within the grace: {:?}", kinds(&r));

    sim.now += 1;
    let r = sim.monitor(&History::new(10), &Observations::default(), &t);
    assert_eq!(
        kinds(&r),
        vec![(AnomalyKind::TaskPastTimeout, "task/runs-long".to_string())]
    );
    assert!(
        r.anomalies[0].message.contains("agent a"),
        "{}",
        r.anomalies[0].message
    );
}

// ---------------------------------------------------------------------------------------------
// The queue

#[test]
fn queue_growing_needs_a_steep_slope_a_full_window_and_enough_tasks() {
    let t = short();
    let now = T0 + 1000 * SEC;
    let mut sim = Sim::new();
    sim.now = now;
    // The report reads the current pending count from the state.
    sim.submit((0..40).map(|i| spec(&format!("q{i}"))).collect());

    // 60 s window, +5 tasks per 5 s sample: 60 tasks a minute.
    let growing = history_of(now, 5 * SEC, 12, |at| {
        let k = (at - (now - 60 * SEC)) / (5 * SEC);
        sample(at, k * 5, k * 5, 0.0, &[])
    });
    let r = sim.monitor(&growing, &Observations::default(), &t);
    let growth = r.queue.growth_per_min.expect("a slope");
    assert!((growth - 60.0).abs() < 1e-6, "{growth}");
    assert!(has(&r, AnomalyKind::QueueGrowing, "queue"), "{:?}", kinds(&r));

    // Flat (or draining): nothing.
    let flat = history_of(now, 5 * SEC, 12, |at| sample(at, 40, 40, 0.0, &[]));
    let r = sim.monitor(&flat, &Observations::default(), &t);
    assert_eq!(r.queue.growth_per_min, Some(0.0));
    assert_eq!(count(&r, AnomalyKind::QueueGrowing), 0);

    // Growing, but the history does not cover the window yet.
    let young = history_of(now, 5 * SEC, 6, |at| {
        sample(at, (at + 30 * SEC - now) * 2, 0, 0.0, &[])
    });
    let r = sim.monitor(&young, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::QueueGrowing), 0, "{:?}", kinds(&r));

    // Steep but tiny: below queue_min_tasks pending now.
    let mut small = Sim::new();
    small.now = now;
    small.submit(vec![spec("one")]);
    let r = small.monitor(&growing, &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::QueueGrowing), 0, "{:?}", kinds(&r));
}

// ---------------------------------------------------------------------------------------------
// Masters

fn with_members(at: u64, leader: Option<u64>, members: &[(u64, bool, u64)]) -> Sample {
    Sample {
        members: members
            .iter()
            .map(|(id, reachable, lag)| MemberSample {
                id: *id,
                reachable: *reachable,
                lag: *lag,
            })
            .collect(),
        leader,
        ..sample(at, 0, 0, 0.0, &[])
    }
}

#[test]
fn lagging_and_unreachable_masters_and_no_leader() {
    let t = short();
    let now = T0 + 1000 * SEC;
    let sim = Sim { now, ..Sim::new() };
    let h = history_of(now, 5 * SEC, 4, |at| {
        with_members(at, Some(1), &[(1, true, 0), (2, true, 5000), (3, false, 0)])
    });
    let r = sim.monitor(&h, &Observations::default(), &t);
    assert_eq!(
        kinds(&r),
        vec![
            (AnomalyKind::MasterLagging, "master/2".to_string()),
            (AnomalyKind::MasterUnreachable, "master/3".to_string()),
        ]
    );

    // Caught up in the latest sample / answered once within the window: nothing.
    let recovering = history_of(now, 5 * SEC, 4, |at| {
        let last = at == now;
        with_members(
            at,
            Some(1),
            &[
                (1, true, 0),
                (2, true, if last { 10 } else { 5000 }),
                (3, last, 0),
            ],
        )
    });
    let r = sim.monitor(&recovering, &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));

    // Not long enough yet.
    let young = history_of(now, 5 * SEC, 2, |at| {
        with_members(at, None, &[(1, true, 0), (2, true, 5000), (3, false, 0)])
    });
    let r = sim.monitor(&young, &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));

    // No leader for the whole window: critical, listed first.
    let leaderless = history_of(now, 5 * SEC, 4, |at| {
        with_members(at, None, &[(1, true, 0), (2, false, 0)])
    });
    let r = sim.monitor(&leaderless, &Observations::default(), &t);
    assert_eq!(r.anomalies[0].kind, AnomalyKind::NoLeader);
    assert_eq!(r.anomalies[0].severity, Severity::Critical);
    assert!(has(&r, AnomalyKind::MasterUnreachable, "master/2"));
}

#[test]
fn anomaly_kinds_have_stable_unique_names() {
    let mut names: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.as_str()).collect();
    for k in AnomalyKind::ALL {
        assert_eq!(AnomalyKind::parse(k.as_str()), Some(k));
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), AnomalyKind::ALL.len());
}

// ---------------------------------------------------------------------------------------------
// Pools

#[test]
fn unserved_pool_fires_when_no_alive_agent_can_take_waiting_work() {
    let t = Thresholds::default();
    let mut sim = Sim::new();
    sim.submit(vec![
        spec("any"),
        TaskSpec {
            pool: "gpu".into(),
            ..spec("g1")
        },
        TaskSpec {
            pool: "gpu".into(),
            ..spec("g2")
        },
    ]);
    sim.now += t.stuck_grace_ms;
    let r = sim.monitor(&History::new(1), &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "within the grace: {:?}", kinds(&r));

    sim.now += 1;
    let r = sim.monitor(&History::new(1), &Observations::default(), &t);
    assert_eq!(
        kinds(&r),
        vec![
            (AnomalyKind::UnservedPool, "pool/default".to_string()),
            (AnomalyKind::UnservedPool, "pool/gpu".to_string()),
        ]
    );
    let gpu = &r.anomalies[1];
    assert!(gpu.message.starts_with("2 runnable tasks"), "{}", gpu.message);

    // An agent in the default pool serves tasks of any pool, but not the gpu pool's.
    sim.agent("cpu-box", 1);
    let r = sim.monitor(&History::new(1), &Observations::default(), &t);
    assert_eq!(
        kinds(&r),
        vec![(AnomalyKind::UnservedPool, "pool/gpu".to_string())]
    );

    // A draining gpu agent takes nothing new: still unserved. Alive: served.
    sim.register_in_pool("gpu-box", "gpu");
    sim.set_state("gpu-box", AgentState::Draining);
    let r = sim.monitor(&History::new(1), &Observations::default(), &t);
    assert_eq!(count(&r, AnomalyKind::UnservedPool), 1, "{:?}", kinds(&r));
    sim.set_state("gpu-box", AgentState::Alive);
    let r = sim.monitor(&History::new(1), &Observations::default(), &t);
    assert!(r.anomalies.is_empty(), "{:?}", kinds(&r));
}
