//! Tokens, bootstrap, audit fields and the cancel permission, applied without any I/O.

mod common;

use std::collections::BTreeMap;

use common::*;
use taurus_core::Command;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::acl::NewToken;
use taurus_core::acl::Role;
use taurus_core::acl::Token;
use taurus_core::command::Placement;
use taurus_core::command::ReportEvent;
use taurus_core::command::ReportOutcome;
use taurus_core::command::SubmitRequest;
use taurus_core::command::TaskReport;
use taurus_core::error::RejectKind;
use taurus_core::state::StateImage;
use taurus_core::types::AgentInfo;
use taurus_core::types::AttemptEnd;
use taurus_core::types::Resources;

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn new_token(name: &str, role: Role, n: u8) -> NewToken {
    NewToken {
        name: name.to_string(),
        role,
        agent: None,
        secret_sha256: hash(n),
        created_by: "admin".to_string(),
        expires_at_ms: None,
        rate_per_sec: None,
    }
}

fn token_of(r: Response) -> Result<Token, taurus_core::Rejection> {
    match r {
        Response::Token(t) | Response::Revoked(t) => t,
        other => panic!("expected a token response, got {other:?}"),
    }
}

fn bootstrap(st: &mut State, index: u64, n: u8) -> Result<Token, taurus_core::Rejection> {
    token_of(st.apply(
        index,
        Command::AclBootstrap {
            token: new_token("root", Role::Admin, n),
            now_ms: now_for(index),
        },
    ))
}

fn create(st: &mut State, index: u64, t: NewToken) -> Result<Token, taurus_core::Rejection> {
    token_of(st.apply(
        index,
        Command::CreateToken {
            token: t,
            now_ms: now_for(index),
        },
    ))
}

fn revoke(st: &mut State, index: u64, id: &str) -> Result<Token, taurus_core::Rejection> {
    token_of(st.apply(
        index,
        Command::RevokeToken {
            id: id.to_string(),
            now_ms: now_for(index),
        },
    ))
}

fn round_trip(st: &State) -> State {
    let json = serde_json::to_string(&st.image()).unwrap();
    let image: StateImage = serde_json::from_str(&json).unwrap();
    State::from_image(image).unwrap()
}

#[test]
fn bootstrap_happens_once_even_after_every_token_is_revoked() {
    let mut st = State::new();
    assert!(!st.acl().bootstrapped());
    let root = bootstrap(&mut st, 1, 1).unwrap();
    assert_eq!(root.id, "acl-1");
    assert_eq!(root.role, Role::Admin);
    assert_eq!(root.created_at_ms, now_for(1));
    assert!(st.acl().bootstrapped());
    assert_eq!(st.acl().by_hash(&hash(1)).map(|t| t.id.as_str()), Some("acl-1"));

    let again = bootstrap(&mut st, 2, 2).unwrap_err();
    assert_eq!(again.kind, RejectKind::FailedPrecondition);
    assert!(again.message.contains("already bootstrapped"), "{again}");
    assert!(
        st.acl().by_hash(&hash(2)).is_none(),
        "a refused bootstrap adds nothing"
    );

    revoke(&mut st, 3, "acl-1").unwrap();
    assert_eq!(st.acl().tokens().count(), 0);
    let after = bootstrap(&mut st, 4, 3).unwrap_err();
    assert_eq!(after.kind, RejectKind::FailedPrecondition);
    // The flag survives a snapshot.
    let restored = round_trip(&st);
    assert!(restored.acl().bootstrapped());
    assert!(bootstrap(&mut restored.clone(), 5, 4).is_err());
}

#[test]
fn bootstrap_must_make_an_admin_token() {
    let mut st = State::new();
    let r = token_of(st.apply(
        1,
        Command::AclBootstrap {
            token: new_token("root", Role::Read, 1),
            now_ms: 1,
        },
    ))
    .unwrap_err();
    assert_eq!((r.kind, r.field.as_str()), (RejectKind::InvalidArgument, "role"));
    assert!(!st.acl().bootstrapped());
}

#[test]
fn tokens_are_created_looked_up_by_hash_and_revoked_for_good() {
    let mut st = State::new();
    bootstrap(&mut st, 1, 1).unwrap();
    let ci = create(
        &mut st,
        2,
        NewToken {
            expires_at_ms: Some(99),
            rate_per_sec: Some(5),
            ..new_token("ci", Role::Submit, 2)
        },
    )
    .unwrap();
    assert_eq!(ci.id, "acl-2");
    assert_eq!(ci.created_by, "admin");
    assert_eq!((ci.expires_at_ms, ci.rate_per_sec), (Some(99), Some(5)));
    assert_eq!(st.acl().by_hash(&hash(2)), Some(&ci));

    // The same secret twice is refused (a second token could never be told apart).
    let dup = create(&mut st, 3, new_token("other", Role::Read, 2)).unwrap_err();
    assert_eq!(
        (dup.kind, dup.field.as_str()),
        (RejectKind::FailedPrecondition, "secret_sha256")
    );

    let revoked = revoke(&mut st, 4, "acl-2").unwrap();
    assert_eq!(revoked, ci);
    assert!(st.acl().by_hash(&hash(2)).is_none());
    assert!(st.acl().get("acl-2").is_none());
    let gone = revoke(&mut st, 5, "acl-2").unwrap_err();
    assert_eq!((gone.kind, gone.field.as_str()), (RejectKind::NotFound, "id"));

    // A revoked id is never issued again, not even after a snapshot.
    let mut restored = round_trip(&st);
    let next = create(&mut restored, 6, new_token("ci", Role::Submit, 2)).unwrap();
    assert_eq!(next.id, "acl-3");
    let next_here = create(&mut st, 6, new_token("ci", Role::Submit, 2)).unwrap();
    assert_eq!(next_here, next, "replicas agree");
}

#[test]
fn token_requests_are_checked_field_by_field() {
    let mut st = State::new();
    let cases: Vec<(NewToken, &str)> = vec![
        (new_token("", Role::Read, 1), "name"),
        (new_token(&"n".repeat(129), Role::Read, 1), "name"),
        (new_token("bad\nname", Role::Read, 1), "name"),
        (
            NewToken {
                secret_sha256: "ABC".into(),
                ..new_token("a", Role::Read, 1)
            },
            "secret_sha256",
        ),
        (
            NewToken {
                secret_sha256: hash(0xab).to_uppercase(),
                ..new_token("a", Role::Read, 1)
            },
            "secret_sha256",
        ),
        (new_token("a", Role::Agent, 1), "agent"),
        (
            NewToken {
                agent: Some("w1".into()),
                ..new_token("a", Role::Submit, 1)
            },
            "agent",
        ),
        (
            NewToken {
                agent: Some("not an id!".into()),
                ..new_token("a", Role::Agent, 1)
            },
            "agent",
        ),
        (
            NewToken {
                rate_per_sec: Some(0),
                ..new_token("a", Role::Submit, 1)
            },
            "rate_per_sec",
        ),
    ];
    for (i, (t, field)) in cases.into_iter().enumerate() {
        let r = create(&mut st, i as u64 + 1, t).unwrap_err();
        assert_eq!(
            (r.kind, r.field.as_str()),
            (RejectKind::InvalidArgument, field),
            "case {i}: {r}"
        );
    }
    assert_eq!(st.acl().tokens().count(), 0);
    let agent = create(
        &mut st,
        20,
        NewToken {
            agent: Some("w1".into()),
            ..new_token("w1-join", Role::Agent, 9)
        },
    )
    .unwrap();
    assert_eq!(agent.agent.as_deref(), Some("w1"));
}

#[test]
fn roles_are_ordered_and_agent_is_apart() {
    use Role::*;
    assert!(Admin.grants(Operator) && Operator.grants(Submit) && Submit.grants(Read));
    assert!(!Read.grants(Submit) && !Submit.grants(Operator) && !Operator.grants(Admin));
    assert!(Agent.grants(Agent));
    for r in [Read, Submit, Operator, Admin] {
        assert!(!Agent.grants(r), "agent grants {r}");
        assert!(!r.grants(Agent), "{r} grants agent");
        assert_eq!(r.as_str().parse::<Role>(), Ok(r));
    }
    assert!("root".parse::<Role>().is_err());
}

fn submit_as(st: &mut State, index: u64, who: &str, ids: &[&str]) {
    let r = st.apply(
        index,
        Command::SubmitTasks {
            requests: vec![SubmitRequest {
                tasks: ids.iter().map(|id| spec(id)).collect(),
                request_id: String::new(),
                queue_limit: None,
                submitted_by: who.to_string(),
            }],
            now_ms: now_for(index),
        },
    );
    match r {
        Response::Submit(v) => assert!(v[0].is_ok(), "{v:?}"),
        other => panic!("{other:?}"),
    }
}

fn cancel_as(st: &mut State, index: u64, who: &str, only_own: bool, id: &str) -> Response {
    st.apply(
        index,
        Command::CancelTask {
            id: id.to_string(),
            reason: String::new(),
            now_ms: now_for(index),
            by: who.to_string(),
            only_own,
        },
    )
}

#[test]
fn submitter_and_canceller_are_recorded() {
    let mut st = State::new();
    submit_as(&mut st, 1, "alice", &["a"]);
    assert_eq!(st.get("a").unwrap().submitted_by, "alice");
    assert_eq!(st.get("a").unwrap().cancelled_by, "");
    match cancel_as(&mut st, 2, "bob", false, "a") {
        Response::Cancel(Ok(c)) => assert!(c.cancelled),
        other => panic!("{other:?}"),
    }
    let a = st.get("a").unwrap();
    assert_eq!(
        (a.state, a.cancelled_by.as_str()),
        (taurus_core::TaskState::Cancelled, "bob")
    );
    // Both survive a snapshot.
    let restored = round_trip(&st);
    assert_eq!(restored.get("a"), st.get("a"));
}

#[test]
fn the_submit_role_cancels_only_its_own_tasks() {
    let mut st = State::new();
    submit_as(&mut st, 1, "alice", &["a"]);
    submit_as(&mut st, 2, "bob", &["b"]);
    // Bob may not cancel Alice's task: refused, and nothing changes.
    let before = st.get("a").cloned();
    match cancel_as(&mut st, 3, "bob", true, "a") {
        Response::Cancel(Err(r)) => {
            assert_eq!((r.kind, r.field.as_str()), (RejectKind::PermissionDenied, "id"));
            assert!(r.message.contains("alice"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.get("a").cloned(), before);
    // His own, yes.
    match cancel_as(&mut st, 4, "bob", true, "b") {
        Response::Cancel(Ok(c)) => assert!(c.cancelled),
        other => panic!("{other:?}"),
    }
    // An operator (only_own false) cancels anybody's.
    match cancel_as(&mut st, 5, "ops", false, "a") {
        Response::Cancel(Ok(c)) => assert!(c.cancelled),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.get("a").unwrap().cancelled_by, "ops");
    // Unknown task: still NOT_FOUND.
    match cancel_as(&mut st, 6, "bob", true, "ghost") {
        Response::Cancel(Err(r)) => assert_eq!(r.kind, RejectKind::NotFound),
        other => panic!("{other:?}"),
    }
}

fn agent_info(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.to_string(),
        address: String::new(),
        resources: Resources {
            cpu_millis: 4000,
            memory_mb: 4096,
            disk_mb: 4096,
        },
        max_tasks: 4,
        labels: BTreeMap::new(),
        pool: String::new(),
    }
}

#[test]
fn a_report_on_another_agents_task_changes_nothing() {
    let mut st = State::new();
    submit_as(&mut st, 1, "alice", &["t"]);
    let epoch_w = match st.apply(
        2,
        Command::RegisterAgent {
            agent: agent_info("w"),
            now_ms: now_for(2),
        },
    ) {
        Response::Registered(Ok(r)) => r.epoch,
        other => panic!("{other:?}"),
    };
    st.apply(
        3,
        Command::RegisterAgent {
            agent: agent_info("x"),
            now_ms: now_for(3),
        },
    );
    let assigned = st.apply(
        4,
        Command::Assign {
            placements: vec![Placement {
                task_id: "t".into(),
                agent_id: "w".into(),
                agent_epoch: epoch_w,
                move_from: None,
            }],
            now_ms: now_for(4),
        },
    );
    assert_eq!(assigned, Response::Assigned(vec![Ok(())]));
    let before = st.get("t").cloned();
    // Agent x, with w's token, claims to have finished w's attempt.
    let out = st.apply(
        5,
        Command::Report {
            reports: vec![TaskReport {
                task_id: "t".into(),
                agent_id: "x".into(),
                token: 4,
                event: ReportEvent::Finished {
                    end: AttemptEnd::Succeeded,
                    exit_code: Some(0),
                    error: String::new(),
                    stdout_tail: String::new(),
                    stderr_tail: String::new(),
                },
            }],
            now_ms: now_for(5),
        },
    );
    match out {
        Response::Reported(v) => assert!(
            matches!(&v[0], ReportOutcome::Stale(why) if why.contains("belongs to agent w")),
            "{v:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.get("t").cloned(), before, "the task is untouched");
}

#[test]
fn old_entries_without_principals_still_decode_and_cancel_anything() {
    // A CancelTask written before `by`/`only_own` existed.
    let old = r#"{"CancelTask":{"id":"a","reason":"","now_ms":5}}"#;
    let cmd: Command = serde_json::from_str(old).unwrap();
    let mut st = State::new();
    submit_as(&mut st, 1, "alice", &["a"]);
    match st.apply(2, cmd) {
        Response::Cancel(Ok(c)) => assert!(c.cancelled),
        other => panic!("{other:?}"),
    }
}
