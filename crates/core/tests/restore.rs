//! `State::prepare_restore`: what a state read from a backup becomes before it seeds a new
//! cluster. Finished and pending tasks, tokens and counters are kept as they were; every agent is
//! declared down, so attempts in flight end `Lost` and their tasks run again (or fail with no
//! attempt left), exactly as if the leader had declared the agents down.

mod common;

use std::collections::BTreeMap;

use common::*;
use taurus_core::Command;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::acl::NewToken;
use taurus_core::acl::Role;
use taurus_core::command::Placement;
use taurus_core::command::ReportEvent;
use taurus_core::command::TaskReport;
use taurus_core::state::RESTORE_REASON;
use taurus_core::state::Restored;
use taurus_core::state::StateImage;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::AttemptEnd;
use taurus_core::types::Resources;

/// Applies commands at consecutive indexes, as one replica would.
struct Replica {
    st: State,
    index: u64,
}

impl Replica {
    fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        self.st.apply(self.index, cmd)
    }

    fn now(&self) -> u64 {
        T0 + self.index * 10
    }

    fn submit(&mut self, tasks: Vec<TaskSpec>) {
        let now = self.now();
        match self.apply(submit_cmd(vec![tasks], now)) {
            Response::Submit(r) => assert!(r[0].is_ok(), "{r:?}"),
            other => panic!("{other:?}"),
        }
    }

    fn register(&mut self, id: &str) -> u64 {
        let agent = AgentInfo {
            id: id.to_string(),
            address: format!("{id}:1"),
            resources: Resources {
                cpu_millis: 4000,
                memory_mb: 1024,
                disk_mb: 1024,
            },
            max_tasks: 4,
            labels: BTreeMap::new(),
            pool: String::new(),
        };
        let now_ms = self.now();
        match self.apply(Command::RegisterAgent { agent, now_ms }) {
            Response::Registered(Ok(r)) => r.epoch,
            other => panic!("{other:?}"),
        }
    }

    /// Places `task` on `agent`; returns the fencing token.
    fn place(&mut self, task: &str, agent: &str, epoch: u64) -> u64 {
        let now_ms = self.now();
        let placements = vec![Placement {
            task_id: task.into(),
            agent_id: agent.into(),
            agent_epoch: epoch,
            move_from: None,
        }];
        match self.apply(Command::Assign { placements, now_ms }) {
            Response::Assigned(r) => assert_eq!(r, vec![Ok(())]),
            other => panic!("{other:?}"),
        }
        self.index
    }

    fn report(&mut self, task: &str, agent: &str, token: u64, event: ReportEvent) {
        let now_ms = self.now();
        let reports = vec![TaskReport {
            task_id: task.into(),
            agent_id: agent.into(),
            token,
            event,
        }];
        match self.apply(Command::Report { reports, now_ms }) {
            Response::Reported(r) => assert_eq!(format!("{r:?}"), "[Accepted]"),
            other => panic!("{other:?}"),
        }
    }
}

fn finished(end: AttemptEnd) -> ReportEvent {
    ReportEvent::Finished {
        end,
        exit_code: Some(0),
        error: String::new(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}

fn retrying(id: &str, max_attempts: u32) -> TaskSpec {
    TaskSpec {
        max_attempts,
        ..spec(id)
    }
}

/// A state as a backup would catch it: one task done, one running (2 attempts allowed), one
/// running with its only attempt, one assigned but not started, one pending, one waiting on the
/// running task, one cancelled; two agents (one drained) and a token.
fn busy() -> Replica {
    let mut r = Replica {
        st: State::new(),
        index: 0,
    };
    let now_ms = r.now();
    let token = NewToken {
        name: "ops".into(),
        role: Role::Admin,
        agent: None,
        secret_sha256: "ab".repeat(32),
        created_by: "test".into(),
        expires_at_ms: None,
        rate_per_sec: None,
    };
    assert!(matches!(
        r.apply(Command::AclBootstrap { token, now_ms }),
        Response::Token(Ok(_))
    ));
    r.submit(vec![
        spec("done"),
        retrying("running", 2),
        spec("running-last"),
        retrying("assigned", 3),
        spec("pending"),
        spec_deps("after-running", &["running"]),
        spec("cancelled"),
    ]);
    let e1 = r.register("a1");
    let e2 = r.register("a2");
    let t = r.place("done", "a1", e1);
    r.report("done", "a1", t, ReportEvent::Started);
    r.report("done", "a1", t, finished(AttemptEnd::Succeeded));
    let t = r.place("running", "a1", e1);
    r.report("running", "a1", t, ReportEvent::Started);
    let t = r.place("running-last", "a2", e2);
    r.report("running-last", "a2", t, ReportEvent::Started);
    r.place("assigned", "a2", e2);
    let now_ms = r.now();
    assert!(matches!(
        r.apply(Command::SetAgentState {
            id: "a2".into(),
            epoch: None,
            state: AgentState::Draining,
            reason: String::new(),
            now_ms,
        }),
        Response::AgentState(Ok(_))
    ));
    let now_ms = r.now();
    assert!(matches!(
        r.apply(cancel_cmd("cancelled", "no", now_ms)),
        Response::Cancel(Ok(_))
    ));
    r
}

/// What a backup carries: the snapshot image, read back.
fn through_backup(st: &State) -> State {
    let image: StateImage = serde_json::from_str(&serde_json::to_string(&st.image()).unwrap()).unwrap();
    State::from_image(image).unwrap()
}

#[test]
fn in_flight_attempts_are_lost_and_run_again_everything_else_is_kept() {
    let r = busy();
    let before = through_backup(&r.st);
    let mut st = through_backup(&r.st);
    let (index, now) = (r.index, T0 + 999_999);
    let out = st.prepare_restore(index, now);
    assert_eq!(
        out,
        Restored {
            agents_down: vec!["a1".into(), "a2".into()],
            requeued: vec!["assigned".into(), "running".into()],
            failed: vec!["running-last".into()],
        }
    );
    // Untouched: finished, pending and cancelled tasks, dependencies, tokens, counters.
    for id in ["done", "pending", "after-running", "cancelled"] {
        assert_eq!(st.get(id), before.get(id), "{id}");
    }
    assert_eq!(st.get("done").unwrap().state, TaskState::Succeeded);
    assert_eq!(st.get("after-running").unwrap().state, TaskState::Pending);
    assert_eq!(
        serde_json::to_string(&st.acl().image()).unwrap(),
        serde_json::to_string(&before.acl().image()).unwrap()
    );
    // Lost and requeued (a new attempt later), or failed with its only attempt spent.
    for id in ["running", "assigned", "running-last"] {
        let t = st.get(id).unwrap();
        let last = t.attempts.last().unwrap();
        assert_eq!(last.end, Some(AttemptEnd::Lost), "{id}");
        assert_eq!(last.error, RESTORE_REASON, "{id}");
        assert_eq!(last.finished_at_ms, Some(now), "{id}");
        assert_eq!(t.log_index, index, "{id}");
    }
    assert_eq!(st.get("running").unwrap().state, TaskState::Pending);
    assert_eq!(st.get("assigned").unwrap().state, TaskState::Pending);
    assert_eq!(st.get("running-last").unwrap().state, TaskState::Failed);
    // The unstarted attempt did not count: runnable at once. The started one waits a back-off.
    assert!(runnable(&st).contains(&"assigned".to_string()));
    assert!(runnable(&st).contains(&"pending".to_string()));
    assert!(!runnable(&st).contains(&"running".to_string()));
    assert!(st.next_due_ms().is_some_and(|due| due >= now));
    // No agent holds anything; each must register again.
    for a in st.agents() {
        assert_eq!(a.state, AgentState::Down, "{}", a.info.id);
        assert_eq!(a.tasks, 0);
        assert_eq!(st.agent_tasks(&a.info.id).count(), 0);
    }
    // The prepared state is itself a valid snapshot (it is what the restored masters load).
    let reloaded = through_backup(&st);
    assert_eq!(
        serde_json::to_string(&reloaded.image()).unwrap(),
        serde_json::to_string(&st.image()).unwrap()
    );
}

#[test]
fn restored_state_keeps_scheduling_with_tokens_above_the_backup() {
    let r = busy();
    let mut st = through_backup(&r.st);
    st.prepare_restore(r.index, r.now());
    let mut r = Replica { st, index: r.index };
    let backup_index = r.index;
    // The same agent id registers again (a new incarnation) and gets the lost task back.
    let epoch = r.register("a1");
    assert!(epoch > backup_index);
    let token = r.place("assigned", "a1", epoch);
    assert!(
        token > backup_index,
        "new fencing tokens exceed every token in the backup"
    );
    r.report("assigned", "a1", token, ReportEvent::Started);
    r.report("assigned", "a1", token, finished(AttemptEnd::Succeeded));
    let t = r.st.get("assigned").unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.attempts.len(), 2);
}

#[test]
fn the_same_backup_prepares_the_same_state_everywhere() {
    let r = busy();
    let prepared: Vec<String> = (0..3)
        .map(|_| {
            let mut st = through_backup(&r.st);
            st.prepare_restore(r.index, r.now());
            serde_json::to_string(&st.image()).unwrap()
        })
        .collect();
    assert_eq!(prepared[0], prepared[1]);
    assert_eq!(prepared[1], prepared[2]);
}

#[test]
fn a_quiet_state_is_unchanged_and_preparing_twice_changes_nothing_more() {
    let mut r = Replica {
        st: State::new(),
        index: 0,
    };
    r.submit(vec![spec("p1"), spec("p2")]);
    let before = serde_json::to_string(&r.st.image()).unwrap();
    let mut st = through_backup(&r.st);
    assert_eq!(st.prepare_restore(r.index, r.now()), Restored::default());
    assert_eq!(serde_json::to_string(&st.image()).unwrap(), before);

    let busy = busy();
    let mut st = through_backup(&busy.st);
    st.prepare_restore(busy.index, busy.now());
    let once = serde_json::to_string(&st.image()).unwrap();
    assert_eq!(st.prepare_restore(busy.index, busy.now()), Restored::default());
    assert_eq!(serde_json::to_string(&st.image()).unwrap(), once);
}
