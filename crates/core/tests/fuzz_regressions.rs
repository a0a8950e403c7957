//! Regression tests for what fuzzing found in the state machine (`fuzz/`, target
//! `state_machine`; the reproducers are in `fuzz/corpus/state_machine/regression-*`).

use taurus_core::Command;
use taurus_core::State;
use taurus_core::TaskSpec;
use taurus_core::command::Placement;
use taurus_core::command::ReportEvent;
use taurus_core::command::SubmitRequest;
use taurus_core::command::TaskReport;
use taurus_core::types::AgentInfo;
use taurus_core::types::AttemptEnd;
use taurus_core::types::Resources;

const NOW: u64 = 1_700_000_000_000;

fn spec(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        command: vec!["/bin/true".into()],
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..TaskSpec::default()
    }
}

fn report(task: &str, token: u64, now_ms: u64, event: ReportEvent) -> Command {
    Command::Report {
        reports: vec![TaskReport {
            task_id: task.into(),
            agent_id: "a".into(),
            token,
            event,
        }],
        now_ms,
    }
}

/// One of two dependencies succeeding changes the dependent (`unmet_deps` 2 -> 1): the change
/// is stamped with the entry's index and time, as every change of a task is
/// (`Task::log_index`: "the entry that last changed the task"). It used to be stamped only when
/// the last dependency succeeded.
#[test]
fn a_dependency_succeeding_stamps_the_dependent_even_while_others_remain() {
    let mut st = State::new();
    st.apply(
        1,
        Command::RegisterAgent {
            agent: AgentInfo {
                id: "a".into(),
                resources: Resources {
                    cpu_millis: 1000,
                    memory_mb: 1024,
                    disk_mb: 10,
                },
                max_tasks: 2,
                ..AgentInfo::default()
            },
            now_ms: NOW,
        },
    );
    st.apply(
        2,
        Command::SubmitTasks {
            requests: vec![SubmitRequest {
                tasks: vec![spec("x", &[]), spec("y", &[]), spec("z", &["x", "y"])],
                ..SubmitRequest::default()
            }],
            now_ms: NOW + 2,
        },
    );
    assert_eq!(st.get("z").unwrap().unmet_deps, 2);
    st.apply(
        3,
        Command::Assign {
            placements: vec![Placement {
                task_id: "x".into(),
                agent_id: "a".into(),
                agent_epoch: 1,
                move_from: None,
            }],
            now_ms: NOW + 3,
        },
    );
    st.apply(4, report("x", 3, NOW + 4, ReportEvent::Started));
    st.apply(
        5,
        report(
            "x",
            3,
            NOW + 5,
            ReportEvent::Finished {
                end: AttemptEnd::Succeeded,
                exit_code: Some(0),
                error: String::new(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            },
        ),
    );
    let z = st.get("z").unwrap();
    assert_eq!(z.unmet_deps, 1, "y has not succeeded yet");
    assert_eq!(z.log_index, 5, "the entry that changed z");
    assert_eq!(z.updated_at_ms, NOW + 5, "that entry's time");
}
