//! Static validation (`taurus_core::validate`) and how its rejections surface through `State::apply`,
//! with the exact offending field and kind.

mod common;

use std::collections::BTreeMap;

use common::*;
use taurus_core::Rejection;
use taurus_core::State;
use taurus_core::TaskSpec;
use taurus_core::error::RejectKind;
use taurus_core::types::AgentInfo;
use taurus_core::types::Resources;
use taurus_core::validate;
use taurus_core::validate::*;

/// Validates `spec` alone and returns the offending (relative) field.
#[track_caller]
fn spec_field(spec: &TaskSpec) -> String {
    match validate_spec(spec) {
        Ok(()) => panic!("spec {spec:?} unexpectedly valid"),
        Err(r) => {
            assert_eq!(r.kind, RejectKind::InvalidArgument, "{r:?}");
            assert!(!r.message.is_empty());
            r.field
        }
    }
}

/// Submits `spec` as the second task of a request (after a valid one) through apply and returns
/// the offending field, which must be prefixed `tasks[1].`; checks nothing was created.
#[track_caller]
fn apply_field(bad: TaskSpec) -> String {
    let mut state = State::new();
    let r = submit_one(&mut state, 1, vec![spec("ok"), bad]).expect_err("request must be rejected");
    assert_eq!(r.kind, RejectKind::InvalidArgument, "{r:?}");
    assert!(state.is_empty(), "a rejected request created tasks");
    r.field
}

fn s(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[test]
fn minimal_spec_is_valid() {
    validate_spec(&spec("a")).unwrap();
    validate_request(&[spec("a"), spec("b")]).unwrap();
}

#[test]
fn spec_at_every_limit_is_valid() {
    let spec = TaskSpec {
        id: s(MAX_ID_LEN, 'i'),
        name: s(MAX_NAME_LEN, 'n'),
        command: vec!["/bin/x".into(); MAX_ARGS],
        env: BTreeMap::from([("K".to_string(), s(MAX_ENV_BYTES - 1, 'v'))]),
        priority: i32::MIN,
        resources: Resources {
            cpu_millis: MAX_CPU_MILLIS,
            memory_mb: MAX_MB,
            disk_mb: MAX_MB,
        },
        timeout_ms: MAX_TIMEOUT_MS,
        max_attempts: MAX_ATTEMPTS,
        depends_on: (0..MAX_DEPENDENCIES).map(|i| format!("dep-{i}")).collect(),
        labels: (0..MAX_LABELS)
            .map(|i| (format!("{i:0>256}"), s(MAX_LABEL_LEN, 'v')))
            .collect(),
        backoff_ms: MAX_BACKOFF_MS,
        pool: s(MAX_POOL_LEN, 'p'),
        constraints: (0..MAX_LABELS)
            .map(|i| (format!("{i:0>256}"), s(MAX_LABEL_LEN, 'c')))
            .collect(),
        deadline_ms: MAX_DEADLINE_MS,
        trace_parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    };
    validate_spec(&spec).unwrap();
    // Exactly MAX_COMMAND_BYTES of argv is fine too.
    let argv = TaskSpec {
        command: vec![s(MAX_COMMAND_BYTES, 'a')],
        ..common::spec("a")
    };
    validate_spec(&argv).unwrap();
    // Every allowed id character.
    validate_id("AZaz09._:-").unwrap();
}

#[test]
fn id_rules() {
    let r = validate_id("").unwrap_err();
    assert_eq!((r.kind, r.field.as_str()), (RejectKind::InvalidArgument, "id"));
    assert_eq!(validate_id(&s(MAX_ID_LEN + 1, 'a')).unwrap_err().field, "id");
    validate_id(&s(MAX_ID_LEN, 'a')).unwrap();
    for bad in ["a b", "a/b", "é", "a\0", "x,y", "tab\t"] {
        let r = validate_id(bad).unwrap_err();
        assert_eq!(r.field, "id", "{bad:?}");
        assert_eq!(r.kind, RejectKind::InvalidArgument);
    }
    assert_eq!(spec_field(&spec("")), "id");
    assert_eq!(spec_field(&spec("has space")), "id");
    assert_eq!(apply_field(spec("")), "tasks[1].id");
    assert_eq!(apply_field(spec(&s(MAX_ID_LEN + 1, 'x'))), "tasks[1].id");
}

#[test]
fn name_too_long() {
    let spec = TaskSpec {
        name: s(MAX_NAME_LEN + 1, 'n'),
        ..spec("a")
    };
    assert_eq!(spec_field(&spec), "name");
    assert_eq!(apply_field(spec), "tasks[1].name");
}

#[test]
fn command_rules() {
    let empty = TaskSpec {
        command: vec![],
        ..spec("a")
    };
    assert_eq!(spec_field(&empty), "command");
    assert_eq!(apply_field(empty), "tasks[1].command");

    let empty_program = TaskSpec {
        command: vec![String::new(), "arg".into()],
        ..spec("a")
    };
    assert_eq!(spec_field(&empty_program), "command[0]");
    assert_eq!(apply_field(empty_program), "tasks[1].command[0]");

    let too_many = TaskSpec {
        command: vec!["x".into(); MAX_ARGS + 1],
        ..spec("a")
    };
    assert_eq!(spec_field(&too_many), "command");

    let too_big = TaskSpec {
        command: vec!["x".into(), s(MAX_COMMAND_BYTES, 'a')],
        ..spec("a")
    };
    assert_eq!(spec_field(&too_big), "command");

    let nul = TaskSpec {
        command: vec!["x".into(), "y".into(), "a\0b".into()],
        ..spec("a")
    };
    assert_eq!(spec_field(&nul), "command[2]");
    assert_eq!(apply_field(nul), "tasks[1].command[2]");
}

#[test]
fn env_rules() {
    let with_env = |k: &str, v: &str| TaskSpec {
        env: BTreeMap::from([(k.to_string(), v.to_string())]),
        ..spec("a")
    };
    assert_eq!(spec_field(&with_env("", "v")), "env[\"\"]");
    assert_eq!(spec_field(&with_env("A=B", "v")), "env[\"A=B\"]");
    assert_eq!(spec_field(&with_env("K\0", "v")), "env[\"K\\0\"]");
    assert_eq!(spec_field(&with_env("K", "v\0")), "env[\"K\"]");
    assert_eq!(apply_field(with_env("A=B", "v")), "tasks[1].env[\"A=B\"]");
    validate_spec(&with_env("PATH", "/usr/bin:/bin")).unwrap();
    // Values may contain '='.
    validate_spec(&with_env("OPTS", "a=b")).unwrap();

    let big = TaskSpec {
        env: BTreeMap::from([
            ("A".to_string(), s(MAX_ENV_BYTES / 2, 'a')),
            ("B".to_string(), s(MAX_ENV_BYTES / 2, 'b')),
        ]),
        ..spec("a")
    };
    assert_eq!(spec_field(&big), "env");
    assert_eq!(apply_field(big), "tasks[1].env");
}

#[test]
fn max_attempts_bounds() {
    for bad in [0, MAX_ATTEMPTS + 1, u32::MAX] {
        let spec = TaskSpec {
            max_attempts: bad,
            ..spec("a")
        };
        assert_eq!(spec_field(&spec), "max_attempts", "{bad}");
        assert_eq!(apply_field(spec), "tasks[1].max_attempts");
    }
    for ok in [1, MAX_ATTEMPTS] {
        validate_spec(&TaskSpec {
            max_attempts: ok,
            ..spec("a")
        })
        .unwrap();
    }
}

#[test]
fn timeout_bound() {
    let spec = TaskSpec {
        timeout_ms: MAX_TIMEOUT_MS + 1,
        ..spec("a")
    };
    assert_eq!(spec_field(&spec), "timeout");
    assert_eq!(apply_field(spec), "tasks[1].timeout");
    validate_spec(&TaskSpec {
        timeout_ms: 0,
        ..common::spec("a")
    })
    .unwrap();
}

#[test]
fn resource_bounds() {
    let res = |cpu_millis, memory_mb, disk_mb| TaskSpec {
        resources: Resources {
            cpu_millis,
            memory_mb,
            disk_mb,
        },
        ..spec("a")
    };
    assert_eq!(spec_field(&res(MAX_CPU_MILLIS + 1, 0, 0)), "resources.cpu_millis");
    assert_eq!(
        apply_field(res(MAX_CPU_MILLIS + 1, 0, 0)),
        "tasks[1].resources.cpu_millis"
    );
    assert_eq!(spec_field(&res(0, MAX_MB + 1, 0)), "resources.memory_mb");
    assert_eq!(spec_field(&res(0, 0, MAX_MB + 1)), "resources.disk_mb");
    assert_eq!(apply_field(res(0, 0, u64::MAX)), "tasks[1].resources.disk_mb");
}

#[test]
fn dependency_rules() {
    let too_many = TaskSpec {
        depends_on: (0..=MAX_DEPENDENCIES).map(|i| format!("d{i}")).collect(),
        ..spec("a")
    };
    assert_eq!(spec_field(&too_many), "depends_on");
    assert_eq!(apply_field(too_many), "tasks[1].depends_on");

    // A malformed dependency id names the element, not `depends_on[2].id`.
    let bad_id = spec_deps("a", &["x", "y", "bad id"]);
    assert_eq!(spec_field(&bad_id), "depends_on[2]");
    assert_eq!(spec_field(&spec_deps("a", &[""])), "depends_on[0]");
    let mut state = State::new();
    let r = submit_one(&mut state, 1, vec![spec_deps("a", &["x", "y", "bad/id"])]);
    assert_invalid(r, "tasks[0].depends_on[2]");

    let self_dep = spec_deps("a", &["x", "a"]);
    assert_eq!(spec_field(&self_dep), "depends_on[1]");
    let r = validate_spec(&self_dep).unwrap_err();
    assert!(r.message.contains("itself"), "{r:?}");
    assert_eq!(apply_field(spec_deps("a", &["a"])), "tasks[1].depends_on[0]");

    let dup = spec_deps("a", &["x", "y", "x"]);
    assert_eq!(spec_field(&dup), "depends_on[2]");
    assert!(validate_spec(&dup).unwrap_err().message.contains("duplicate"));
    assert_eq!(
        apply_field(spec_deps("a", &["ok", "ok"])),
        "tasks[1].depends_on[1]"
    );
}

#[test]
fn label_rules() {
    let too_many = TaskSpec {
        labels: (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect(),
        ..spec("a")
    };
    assert_eq!(spec_field(&too_many), "labels");
    assert_eq!(apply_field(too_many), "tasks[1].labels");

    let label = |k: String, v: String| TaskSpec {
        labels: BTreeMap::from([(k, v)]),
        ..spec("a")
    };
    assert_eq!(spec_field(&label(String::new(), "v".into())), "labels[\"\"]");
    let long_key = s(MAX_LABEL_LEN + 1, 'k');
    assert_eq!(
        spec_field(&label(long_key.clone(), "v".into())),
        format!("labels[{long_key:?}]")
    );
    assert_eq!(
        spec_field(&label("team".into(), s(MAX_LABEL_LEN + 1, 'v'))),
        "labels[\"team\"]"
    );
    assert_eq!(
        apply_field(label("team".into(), s(MAX_LABEL_LEN + 1, 'v'))),
        "tasks[1].labels[\"team\"]"
    );
    validate_spec(&label("team".into(), String::new())).unwrap();
}

#[test]
fn trace_parent_rules() {
    let with = |tp: &str| TaskSpec {
        trace_parent: tp.to_string(),
        ..spec("a")
    };
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    validate_spec(&with(good)).unwrap();
    validate_spec(&with("")).unwrap();
    for bad in [
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    ] {
        assert_eq!(spec_field(&with(bad)), "trace_parent", "{bad:?}");
    }
    assert_eq!(apply_field(with("nope")), "tasks[1].trace_parent");
}

#[test]
fn scheduling_field_rules() {
    let with = |f: &dyn Fn(&mut TaskSpec)| {
        let mut sp = spec("a");
        f(&mut sp);
        sp
    };
    assert_eq!(
        spec_field(&with(&|sp| sp.backoff_ms = MAX_BACKOFF_MS + 1)),
        "backoff_ms"
    );
    validate_spec(&with(&|sp| sp.backoff_ms = 0)).unwrap();
    assert_eq!(
        spec_field(&with(&|sp| sp.pool = s(MAX_POOL_LEN + 1, 'p'))),
        "pool"
    );
    assert_eq!(
        spec_field(&with(&|sp| sp.deadline_ms = MAX_DEADLINE_MS + 1)),
        "deadline_ms"
    );
    assert_eq!(
        apply_field(with(&|sp| sp.deadline_ms = u64::MAX)),
        "tasks[1].deadline_ms"
    );

    let too_many = with(&|sp| {
        sp.constraints = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect()
    });
    assert_eq!(spec_field(&too_many), "constraints");
    assert_eq!(apply_field(too_many), "tasks[1].constraints");
    let constraint =
        |k: String, v: String| with(&|sp| sp.constraints = BTreeMap::from([(k.clone(), v.clone())]));
    assert_eq!(
        spec_field(&constraint(String::new(), "v".into())),
        "constraints[\"\"]"
    );
    assert_eq!(
        spec_field(&constraint("zone".into(), s(MAX_LABEL_LEN + 1, 'v'))),
        "constraints[\"zone\"]"
    );
    validate_spec(&constraint("zone".into(), String::new())).unwrap();
}

#[test]
fn agent_rules() {
    let good = AgentInfo {
        id: "agent-1".into(),
        address: s(MAX_ADDRESS_LEN, 'h'),
        resources: Resources::default(),
        max_tasks: MAX_AGENT_TASKS,
        labels: (0..MAX_LABELS)
            .map(|i| (format!("{i:0>256}"), s(MAX_LABEL_LEN, 'v')))
            .collect(),
        pool: s(MAX_POOL_LEN, 'p'),
    };
    validate_agent(&good).unwrap();
    validate_agent(&AgentInfo {
        max_tasks: 1,
        ..good.clone()
    })
    .unwrap();
    let field = |bad: AgentInfo| {
        let r = validate_agent(&bad).expect_err("agent must be rejected");
        assert_eq!(r.kind, RejectKind::InvalidArgument, "{r:?}");
        assert!(!r.message.is_empty());
        r.field
    };
    assert_eq!(
        field(AgentInfo {
            id: String::new(),
            ..good.clone()
        }),
        "id"
    );
    assert_eq!(
        field(AgentInfo {
            id: "a b".into(),
            ..good.clone()
        }),
        "id"
    );
    assert_eq!(
        field(AgentInfo {
            id: s(MAX_ID_LEN + 1, 'a'),
            ..good.clone()
        }),
        "id"
    );
    assert_eq!(
        field(AgentInfo {
            max_tasks: 0,
            ..good.clone()
        }),
        "max_tasks"
    );
    assert_eq!(
        field(AgentInfo {
            max_tasks: MAX_AGENT_TASKS + 1,
            ..good.clone()
        }),
        "max_tasks"
    );
    assert_eq!(
        field(AgentInfo {
            labels: (0..=MAX_LABELS)
                .map(|i| (format!("k{i}"), String::new()))
                .collect(),
            ..good.clone()
        }),
        "labels"
    );
    assert_eq!(
        field(AgentInfo {
            labels: BTreeMap::from([(String::new(), "v".to_string())]),
            ..good.clone()
        }),
        "labels[\"\"]"
    );
    assert_eq!(
        field(AgentInfo {
            pool: s(MAX_POOL_LEN + 1, 'p'),
            ..good.clone()
        }),
        "pool"
    );
    assert_eq!(
        field(AgentInfo {
            address: s(MAX_ADDRESS_LEN + 1, 'h'),
            ..good
        }),
        "address"
    );
}

#[test]
fn first_failing_check_is_reported() {
    // Several problems at once: the id is checked first, then the command, then max_attempts.
    let spec = TaskSpec {
        id: String::new(),
        command: vec![],
        max_attempts: 0,
        ..TaskSpec::default()
    };
    assert_eq!(spec_field(&spec), "id");
    let spec = TaskSpec {
        command: vec![],
        max_attempts: 0,
        ..common::spec("a")
    };
    assert_eq!(spec_field(&spec), "command");
    let spec = TaskSpec {
        max_attempts: 0,
        timeout_ms: u64::MAX,
        ..common::spec("a")
    };
    assert_eq!(spec_field(&spec), "max_attempts");
}

#[test]
fn request_size_limits() {
    let r = validate_request(&[]).unwrap_err();
    assert_eq!((r.kind, r.field.as_str()), (RejectKind::InvalidArgument, "tasks"));

    let mut state = State::new();
    assert_invalid(submit_one(&mut state, 1, vec![]), "tasks");

    let oversized: Vec<TaskSpec> = (0..=MAX_BATCH).map(|i| spec(&format!("t{i}"))).collect();
    assert_eq!(validate_request(&oversized).unwrap_err().field, "tasks");
    assert_invalid(submit_one(&mut state, 2, oversized), "tasks");
    assert!(state.is_empty());

    let full: Vec<TaskSpec> = (0..MAX_BATCH).map(|i| spec(&format!("t{i}"))).collect();
    validate_request(&full).unwrap();
    let out = submit_one(&mut state, 3, full).unwrap();
    assert_eq!(out.len(), MAX_BATCH);
    assert_eq!(state.len(), MAX_BATCH);
}

#[test]
fn repeated_id_in_request() {
    let tasks = [spec("a"), spec("b"), spec("a")];
    let r = validate_request(&tasks).unwrap_err();
    assert_eq!(r.field, "tasks[2].id");
    assert!(r.message.contains("tasks[0]"), "{r:?}");

    let mut state = State::new();
    let r = assert_invalid(submit_one(&mut state, 1, tasks.to_vec()), "tasks[2].id");
    assert!(r.message.contains("tasks[0]"));
    assert!(state.is_empty());
}

#[test]
fn bad_spec_is_named_by_position() {
    let tasks = [
        spec("a"),
        TaskSpec {
            command: vec![],
            ..spec("b")
        },
        spec("c"),
    ];
    assert_eq!(validate_request(&tasks).unwrap_err().field, "tasks[1].command");
    // A bad spec is reported before a later repeated id.
    let tasks = [
        spec("a"),
        spec("a"),
        TaskSpec {
            max_attempts: 0,
            ..spec("c")
        },
    ];
    assert_eq!(validate_request(&tasks).unwrap_err().field, "tasks[1].id");
    let tasks = [
        spec("a"),
        TaskSpec {
            max_attempts: 0,
            ..spec("b")
        },
        spec("a"),
    ];
    assert_eq!(
        validate_request(&tasks).unwrap_err().field,
        "tasks[1].max_attempts"
    );
}

#[test]
fn cancel_argument_rules() {
    let mut state = State::new();
    submit_one(&mut state, 1, vec![spec("a")]).unwrap();

    assert_invalid(cancel(&mut state, 2, "", "why"), "id");
    assert_invalid(cancel(&mut state, 3, "bad id", "why"), "id");
    assert_invalid(cancel(&mut state, 4, &s(MAX_ID_LEN + 1, 'a'), "why"), "id");
    assert_rejected(cancel(&mut state, 5, "nope", "why"), RejectKind::NotFound, "id");

    let r = assert_invalid(cancel(&mut state, 6, "a", &s(MAX_REASON_LEN + 1, 'r')), "reason");
    assert!(r.message.contains(&MAX_REASON_LEN.to_string()));
    let t = task(&state, "a");
    assert_eq!(
        (t.state, t.log_index),
        (taurus_core::TaskState::Pending, 1),
        "rejected cancels change nothing"
    );

    let long_ok = s(MAX_REASON_LEN, 'r');
    let out = cancel(&mut state, 7, "a", &long_ok).unwrap();
    assert!(out.cancelled);
    assert_eq!(task(&state, "a").reason, long_ok);
}

#[test]
fn rejection_display_and_within() {
    let r = Rejection::invalid("command", "must not be empty");
    assert_eq!(r.to_string(), "command: must not be empty");
    let r = r.within("tasks[3]");
    assert_eq!(r.field, "tasks[3].command");
    assert_eq!(r.kind, RejectKind::InvalidArgument);
    assert_eq!(Rejection::invalid("", "x").within("tasks").field, "tasks");
    let nf = Rejection::not_found("id", "no task");
    assert_eq!(nf.kind, RejectKind::NotFound);
    let fp = Rejection::failed_precondition("state", "a down agent must register again");
    assert_eq!(fp.kind, RejectKind::FailedPrecondition);
    assert_eq!(fp.to_string(), "state: a down agent must register again");
    let e: taurus_core::CoreError = nf.clone().into();
    assert_eq!(e.to_string(), "rejected: id: no task");
}

#[test]
fn limits_are_what_the_docs_say() {
    // These constants are shared by every replica; changing one changes what the log accepts.
    assert_eq!(validate::MAX_TIMEOUT_MS, 604_800_000);
    assert_eq!(validate::MAX_CPU_MILLIS, 1_024_000);
    assert_eq!(validate::MAX_MB, 1 << 30);
    assert_eq!(validate::MAX_BATCH, 10_000);
    assert_eq!(validate::MAX_BACKOFF_MS, 3_600_000);
    assert_eq!(validate::MAX_DEADLINE_MS, 2_592_000_000);
    assert_eq!(validate::MAX_OUTPUT_TAIL, 16 * 1024);
    assert_eq!(validate::MAX_ADDRESS_LEN, 256);
    assert_eq!(validate::MAX_REQUEST_ID_LEN, 64);
}

#[test]
fn request_id_rules() {
    assert_eq!(validate_request_id(""), Ok(()), "empty: no key");
    assert_eq!(validate_request_id(&s(MAX_REQUEST_ID_LEN, 'k')), Ok(()));
    assert_eq!(validate_request_id("any opaque text: ✓ / = +"), Ok(()));
    let r = validate_request_id(&s(MAX_REQUEST_ID_LEN + 1, 'k')).unwrap_err();
    assert_eq!(
        (r.kind, r.field.as_str()),
        (RejectKind::InvalidArgument, "request_id")
    );
    assert!(r.message.contains("64 bytes"), "{r:?}");
}
