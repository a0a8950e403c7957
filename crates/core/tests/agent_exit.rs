//! `RequestAgentExit`: an agent drained and asked to exit once drained (`taurus agent drain
//! --exit`). The request lives in the replicated agent record, so every replica (and every
//! leader after a change) tells the agent the same thing.

use std::collections::BTreeMap;

use taurus_core::Command;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::command::AgentStateChanged;
use taurus_core::error::RejectKind;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::DrainExit;
use taurus_core::types::Resources;
use taurus_core::validate::MAX_EXIT_DEADLINE_MS;

const T0: u64 = 1_700_000_000_000;

fn info(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.to_string(),
        address: String::new(),
        resources: Resources {
            cpu_millis: 1000,
            memory_mb: 1024,
            disk_mb: 1024,
        },
        max_tasks: 2,
        labels: BTreeMap::new(),
        pool: String::new(),
    }
}

fn register(s: &mut State, index: u64, id: &str) {
    match s.apply(
        index,
        Command::RegisterAgent {
            agent: info(id),
            now_ms: T0,
        },
    ) {
        Response::Registered(Ok(_)) => {}
        other => panic!("register answered {other:?}"),
    }
}

fn exit(
    s: &mut State,
    index: u64,
    id: &str,
    deadline_ms: Option<u64>,
    now_ms: u64,
) -> Result<AgentStateChanged, taurus_core::Rejection> {
    match s.apply(
        index,
        Command::RequestAgentExit {
            id: id.to_string(),
            deadline_ms,
            reason: String::new(),
            now_ms,
        },
    ) {
        Response::AgentState(r) => r,
        other => panic!("RequestAgentExit answered {other:?}"),
    }
}

fn set_state(s: &mut State, index: u64, id: &str, to: AgentState) -> Response {
    s.apply(
        index,
        Command::SetAgentState {
            id: id.to_string(),
            epoch: None,
            state: to,
            reason: String::new(),
            now_ms: T0 + index,
        },
    )
}

#[test]
fn exit_drains_and_records_the_deadline() {
    let mut s = State::new();
    register(&mut s, 1, "a1");
    let r = exit(&mut s, 2, "a1", Some(60_000), T0 + 5).expect("accepted");
    assert!(r.changed);
    assert_eq!(r.state, AgentState::Draining);
    let a = s.agent("a1").expect("agent");
    assert_eq!(a.state, AgentState::Draining);
    assert_eq!(
        a.exit,
        Some(DrainExit {
            requested_at_ms: T0 + 5,
            deadline_at_ms: Some(T0 + 5 + 60_000),
        })
    );
    assert_eq!(a.reason, "asked to exit once drained");

    // A retry with the same deadline changes nothing; a new deadline replaces it.
    let again = exit(&mut s, 3, "a1", Some(60_000), T0 + 5).expect("accepted");
    assert!(!again.changed);
    let later = exit(&mut s, 4, "a1", None, T0 + 9).expect("accepted");
    assert!(later.changed);
    assert_eq!(
        s.agent("a1").and_then(|a| a.exit).and_then(|e| e.deadline_at_ms),
        None
    );
}

#[test]
fn an_already_drained_agent_can_be_asked_to_exit() {
    let mut s = State::new();
    register(&mut s, 1, "a1");
    assert!(matches!(
        set_state(&mut s, 2, "a1", AgentState::Draining),
        Response::AgentState(Ok(_))
    ));
    let r = exit(&mut s, 3, "a1", Some(1_000), T0).expect("accepted");
    assert!(r.changed, "draining before, but not asked to exit");
    assert!(s.agent("a1").is_some_and(|a| a.exit.is_some()));
}

#[test]
fn undrain_and_reregistration_clear_the_request() {
    let mut s = State::new();
    register(&mut s, 1, "a1");
    exit(&mut s, 2, "a1", None, T0).expect("accepted");
    assert!(matches!(
        set_state(&mut s, 3, "a1", AgentState::Alive),
        Response::AgentState(Ok(_))
    ));
    let a = s.agent("a1").expect("agent");
    assert_eq!((a.state, a.exit), (AgentState::Alive, None));

    exit(&mut s, 4, "a1", None, T0).expect("accepted");
    register(&mut s, 5, "a1");
    let a = s.agent("a1").expect("agent");
    assert_eq!((a.state, a.exit), (AgentState::Alive, None), "a new incarnation");
}

#[test]
fn bad_requests_are_rejected_naming_the_field() {
    let mut s = State::new();
    let unknown = exit(&mut s, 1, "nobody", None, T0).expect_err("unknown agent");
    assert_eq!(
        (unknown.kind, unknown.field.as_str()),
        (RejectKind::NotFound, "id")
    );

    register(&mut s, 2, "a1");
    let long = exit(&mut s, 3, "a1", Some(MAX_EXIT_DEADLINE_MS + 1), T0).expect_err("too long");
    assert_eq!(
        (long.kind, long.field.as_str()),
        (RejectKind::InvalidArgument, "deadline_ms")
    );
    assert!(long.message.contains("max_exit_deadline"), "{}", long.message);
    assert_eq!(
        s.agent("a1").map(|a| a.state),
        Some(AgentState::Alive),
        "nothing changed"
    );

    assert!(matches!(
        set_state(&mut s, 4, "a1", AgentState::Down),
        Response::AgentState(Ok(_))
    ));
    let down = exit(&mut s, 5, "a1", None, T0).expect_err("down agent");
    assert_eq!(down.kind, RejectKind::FailedPrecondition);
}

#[test]
fn the_request_survives_a_snapshot_and_old_records_decode() {
    let mut s = State::new();
    register(&mut s, 1, "a1");
    exit(&mut s, 2, "a1", Some(5_000), T0).expect("accepted");
    let json = serde_json::to_value(s.agent("a1").expect("agent")).expect("encode");
    assert!(json.get("exit").is_some(), "{json}");
    let back: taurus_core::types::Agent = serde_json::from_value(json.clone()).expect("decode");
    assert_eq!(Some(&back), s.agent("a1"));

    // A record written before the field existed decodes without it.
    let mut old = json;
    old.as_object_mut().expect("object").remove("exit");
    let back: taurus_core::types::Agent = serde_json::from_value(old).expect("decode old");
    assert_eq!(back.exit, None);
}
