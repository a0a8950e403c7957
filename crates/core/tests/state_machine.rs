//! `State::apply` for every command, and the queries (`get`, `list`, `runnable`, `count`).

mod common;

use std::collections::BTreeSet;

use common::*;
use taurus_core::Command;
use taurus_core::State;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::command::CancelOutcome;
use taurus_core::command::SubmitRequest;
use taurus_core::command::Submitted;
use taurus_core::error::RejectKind;
use taurus_core::validate::MAX_REQUEST_ID_LEN;

fn created(id: &str, state: TaskState, log_index: u64) -> Submitted {
    Submitted {
        id: id.to_string(),
        created: true,
        state,
        log_index,
    }
}

fn existing(id: &str, state: TaskState, log_index: u64) -> Submitted {
    Submitted {
        id: id.to_string(),
        created: false,
        state,
        log_index,
    }
}

/// Asserts a cycle rejection names one of `on_cycle` (request positions) and that task's id.
#[track_caller]
fn assert_cycle_rejection(r: taurus_core::Rejection, tasks: &[TaskSpec], on_cycle: &[usize]) {
    assert_eq!(r.kind, RejectKind::InvalidArgument, "{r:?}");
    let pos: usize = r
        .field
        .strip_prefix("tasks[")
        .and_then(|rest| rest.strip_suffix("].depends_on"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cycle rejection field {:?} is not tasks[i].depends_on", r.field));
    assert!(
        on_cycle.contains(&pos),
        "cycle rejection names tasks[{pos}], which is not on the cycle {on_cycle:?}"
    );
    assert!(
        r.message.contains(&format!("{:?}", tasks[pos].id)),
        "message should name the task: {r:?}"
    );
    assert!(r.message.contains("cycle"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// SubmitTasks

#[test]
fn submit_creates_a_pending_runnable_task() {
    let mut st = State::new();
    assert!(st.is_empty());
    let mut sp = spec_prio("a", 3);
    sp.name = "alpha".into();
    sp.labels.insert("team".into(), "infra".into());
    sp.env.insert("K".into(), "V".into());
    sp.timeout_ms = 5_000;
    sp.max_attempts = 3;

    let out = submit_one(&mut st, 5, vec![sp.clone()]).unwrap();
    assert_eq!(out, vec![created("a", TaskState::Pending, 5)]);

    let t = task(&st, "a");
    assert_eq!(t.spec, sp);
    assert_eq!(t.state, TaskState::Pending);
    assert!(t.attempts.is_empty());
    assert_eq!((t.created_index, t.log_index), (5, 5));
    assert_eq!((t.submitted_at_ms, t.updated_at_ms), (now_for(5), now_for(5)));
    assert_eq!(t.reason, "");
    assert_eq!((t.seq, t.unmet_deps), (0, 0));

    assert_eq!(runnable(&st), ["a"]);
    assert_eq!(st.len(), 1);
    assert!(!st.is_empty());
    assert_eq!(st.count(TaskState::Pending), 1);
    for s in TaskState::ALL.into_iter().filter(|s| *s != TaskState::Pending) {
        assert_eq!(st.count(s), 0, "{s}");
    }
    assert!(st.get("b").is_none());
}

#[test]
fn coalesced_requests_each_get_their_own_result_in_order() {
    let mut st = State::new();
    let results = submit(
        &mut st,
        3,
        vec![
            vec![spec("a"), spec("b")],
            vec![spec("c")],
            vec![spec("d"), spec("e"), spec("f")],
        ],
    );
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0],
        Ok(vec![
            created("a", TaskState::Pending, 3),
            created("b", TaskState::Pending, 3)
        ])
    );
    assert_eq!(results[1], Ok(vec![created("c", TaskState::Pending, 3)]));
    assert_eq!(
        results[2],
        Ok(vec![
            created("d", TaskState::Pending, 3),
            created("e", TaskState::Pending, 3),
            created("f", TaskState::Pending, 3),
        ])
    );
    // Sequence numbers follow the order of requests, then of tasks within a request.
    for (seq, id) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        assert_eq!(task(&st, id).seq, seq as u64, "{id}");
    }
    assert_eq!(st.len(), 6);
    assert_eq!(st.count(TaskState::Pending), 6);
}

#[test]
fn later_request_of_an_entry_sees_earlier_requests() {
    let mut st = State::new();
    let results = submit(
        &mut st,
        1,
        vec![vec![spec("a")], vec![spec_deps("b", &["a"])], vec![spec("a")]],
    );
    assert_eq!(results[0], Ok(vec![created("a", TaskState::Pending, 1)]));
    assert_eq!(results[1], Ok(vec![created("b", TaskState::Pending, 1)]));
    assert_eq!(results[2], Ok(vec![existing("a", TaskState::Pending, 1)]));
    assert_eq!(task(&st, "b").unmet_deps, 1);
    assert_eq!(st.len(), 2);
}

#[test]
fn rejected_middle_request_is_atomic_and_neighbours_apply() {
    let bad_middles: Vec<(Vec<TaskSpec>, &str)> = vec![
        // Static validation fails on the second task.
        (
            vec![
                spec("m1"),
                TaskSpec {
                    command: vec![],
                    ..spec("m2")
                },
                spec("m3"),
            ],
            "tasks[1].command",
        ),
        // Unknown dependency on the last task.
        (
            vec![spec("m1"), spec("m2"), spec_deps("m3", &["m1", "ghost"])],
            "tasks[2].depends_on[1]",
        ),
        // Repeated id.
        (vec![spec("m1"), spec("m2"), spec("m1")], "tasks[2].id"),
        // Bad max_attempts on the first task.
        (
            vec![
                TaskSpec {
                    max_attempts: 0,
                    ..spec("m1")
                },
                spec("m2"),
                spec("m3"),
            ],
            "tasks[0].max_attempts",
        ),
    ];
    for (middle, field) in bad_middles {
        let mut st = State::new();
        let results = submit(
            &mut st,
            7,
            vec![
                vec![spec("a1"), spec("a2")],
                middle,
                vec![spec("c1"), spec_deps("c2", &["a1"])],
            ],
        );
        assert_eq!(results.len(), 3);
        assert_eq!(
            results[0],
            Ok(vec![
                created("a1", TaskState::Pending, 7),
                created("a2", TaskState::Pending, 7)
            ])
        );
        assert_invalid(results[1].clone(), field);
        assert_eq!(
            results[2],
            Ok(vec![
                created("c1", TaskState::Pending, 7),
                created("c2", TaskState::Pending, 7)
            ])
        );
        for id in ["m1", "m2", "m3"] {
            assert!(
                st.get(id).is_none(),
                "{id} from the rejected request exists ({field})"
            );
        }
        assert_eq!(st.len(), 4);
        assert_eq!(st.count(TaskState::Pending), 4);
        assert_eq!(runnable(&st), ["a1", "a2", "c1"]);
        // The rejected request consumed no sequence numbers.
        assert_eq!(task(&st, "c1").seq, 2);
        assert_eq!(task(&st, "c2").seq, 3);
    }
}

#[test]
fn rejected_cyclic_middle_request_is_atomic() {
    let mut st = State::new();
    let middle = vec![spec("free"), spec_deps("x", &["y"]), spec_deps("y", &["x"])];
    let results = submit(&mut st, 2, vec![vec![spec("a")], middle.clone(), vec![spec("c")]]);
    assert!(results[0].is_ok());
    assert_cycle_rejection(results[1].clone().unwrap_err(), &middle, &[1, 2]);
    assert!(results[2].is_ok());
    assert!(st.get("free").is_none() && st.get("x").is_none() && st.get("y").is_none());
    assert_eq!(st.len(), 2);
}

#[test]
fn request_depending_on_a_rejected_request_is_rejected_too() {
    let mut st = State::new();
    let results = submit(
        &mut st,
        1,
        vec![
            vec![TaskSpec {
                command: vec![],
                ..spec("a")
            }],
            vec![spec_deps("b", &["a"])],
            vec![spec("c")],
        ],
    );
    assert_invalid(results[0].clone(), "tasks[0].command");
    assert_invalid(results[1].clone(), "tasks[0].depends_on[0]");
    assert_eq!(results[2], Ok(vec![created("c", TaskState::Pending, 1)]));
    assert_eq!(st.len(), 1);
}

#[test]
fn resubmission_is_idempotent_even_with_a_different_spec() {
    let mut st = State::new();
    let original = spec_prio("a", 1);
    submit_one(&mut st, 1, vec![original.clone()]).unwrap();

    let different = TaskSpec {
        priority: 99,
        command: vec!["/bin/false".into()],
        name: "other".into(),
        ..spec("a")
    };
    let out = submit_one(&mut st, 2, vec![different]).unwrap();
    assert_eq!(out, vec![existing("a", TaskState::Pending, 1)]);
    assert_eq!(st.len(), 1);
    let t = task(&st, "a");
    assert_eq!(t.spec, original, "the stored spec is never replaced");
    assert_eq!((t.created_index, t.log_index, t.seq), (1, 1, 0));
    assert_eq!(t.submitted_at_ms, now_for(1));

    // Inside a later batch that also creates tasks, one of which depends on the existing one.
    let out = submit_one(
        &mut st,
        3,
        vec![spec("b"), spec("a"), spec_deps("c", &["a", "b"])],
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            created("b", TaskState::Pending, 3),
            existing("a", TaskState::Pending, 1),
            created("c", TaskState::Pending, 3),
        ]
    );
    assert_eq!(st.len(), 3);
    assert_eq!(task(&st, "b").seq, 1, "resubmission consumed no sequence number");
    assert_eq!(task(&st, "c").seq, 2);
    assert_eq!(task(&st, "c").unmet_deps, 2);
    assert_eq!(st.count(TaskState::Pending), 3);
    assert_eq!(runnable(&st), ["a", "b"]);
}

#[test]
fn resubmission_returns_the_current_state_and_index() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec_deps("b", &["a"])]).unwrap();
    cancel(&mut st, 4, "a", "stop").unwrap();
    let out = submit_one(&mut st, 9, vec![spec("b"), spec("a")]).unwrap();
    assert_eq!(
        out,
        vec![
            existing("b", TaskState::Cancelled, 4),
            existing("a", TaskState::Cancelled, 4)
        ]
    );
    assert_eq!(task(&st, "a").log_index, 4);
    assert_eq!(st.len(), 2);
}

#[test]
fn resubmitted_spec_dependencies_are_ignored() {
    // `a` exists without dependencies. Resubmitting it as depending on a new `b` that depends on
    // `a` is not a cycle: the resubmitted spec is not used.
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a")]).unwrap();
    let out = submit_one(&mut st, 2, vec![spec_deps("a", &["b"]), spec_deps("b", &["a"])]).unwrap();
    assert_eq!(
        out,
        vec![
            existing("a", TaskState::Pending, 1),
            created("b", TaskState::Pending, 2)
        ]
    );
    assert!(task(&st, "a").spec.depends_on.is_empty());
    assert_eq!(task(&st, "a").unmet_deps, 0);
    assert_eq!(task(&st, "b").unmet_deps, 1);
    assert_eq!(runnable(&st), ["a"]);
}

#[test]
fn resubmission_still_passes_static_validation() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a")]).unwrap();
    assert_invalid(
        submit_one(
            &mut st,
            2,
            vec![TaskSpec {
                command: vec![],
                ..spec("a")
            }],
        ),
        "tasks[0].command",
    );
    assert_eq!(task(&st, "a").log_index, 1);
}

// ---------------------------------------------------------------------------------------------
// Idempotency keys (`SubmitRequest::request_id`)

#[test]
fn retried_request_with_the_same_key_is_told_created_and_creates_nothing() {
    let mut st = State::new();
    let tasks = vec![spec("a"), spec_deps("b", &["a"])];
    let first = submit_keyed(&mut st, 1, "req-1", tasks.clone()).unwrap();
    assert_eq!(
        first,
        vec![
            created("a", TaskState::Pending, 1),
            created("b", TaskState::Pending, 1)
        ]
    );
    assert_eq!(task(&st, "a").request_id, "req-1");
    assert_eq!(task(&st, "b").request_id, "req-1");

    // The client did not see the answer and retried: the same answer, no second task.
    let retry = submit_keyed(&mut st, 2, "req-1", tasks.clone()).unwrap();
    assert_eq!(retry, first);
    assert_eq!(st.len(), 2);
    assert_eq!((task(&st, "a").seq, task(&st, "b").seq), (0, 1));
    assert_eq!(task(&st, "a").log_index, 1, "a retry changes nothing");

    // The task moved on meanwhile: still created, with its current state and index.
    cancel(&mut st, 3, "a", "stop").unwrap();
    let late = submit_keyed(&mut st, 4, "req-1", tasks).unwrap();
    assert_eq!(
        late,
        vec![
            created("a", TaskState::Cancelled, 3),
            created("b", TaskState::Cancelled, 3)
        ]
    );
    assert_eq!(st.len(), 2);
    submit_one(&mut st, 5, vec![spec("c")]).unwrap();
    assert_eq!(task(&st, "c").seq, 2, "retries consumed no sequence number");
}

#[test]
fn resubmission_under_another_key_or_none_is_told_existing() {
    let mut st = State::new();
    submit_keyed(&mut st, 1, "req-1", vec![spec("a")]).unwrap();
    let other = submit_keyed(&mut st, 2, "req-2", vec![spec("a")]).unwrap();
    assert_eq!(other, vec![existing("a", TaskState::Pending, 1)]);
    let none = submit_one(&mut st, 3, vec![spec("a")]).unwrap();
    assert_eq!(none, vec![existing("a", TaskState::Pending, 1)]);

    // An empty key is no key: two keyless submits of one id are two requests.
    submit_one(&mut st, 4, vec![spec("b")]).unwrap();
    assert_eq!(task(&st, "b").request_id, "");
    let again = submit_one(&mut st, 5, vec![spec("b")]).unwrap();
    assert_eq!(again, vec![existing("b", TaskState::Pending, 4)]);
    // A keyed request does not claim a task created without a key.
    let keyed = submit_keyed(&mut st, 6, "req-3", vec![spec("b")]).unwrap();
    assert_eq!(keyed, vec![existing("b", TaskState::Pending, 4)]);
    assert_eq!(st.len(), 2);
}

#[test]
fn retry_is_answered_task_by_task_as_the_original_was() {
    // `x` existed before the keyed request, which therefore only created `y`: its retry must say
    // the same, not claim `x`.
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("x")]).unwrap();
    let tasks = vec![spec("x"), spec("y")];
    let first = submit_keyed(&mut st, 2, "req-1", tasks.clone()).unwrap();
    assert_eq!(
        first,
        vec![
            existing("x", TaskState::Pending, 1),
            created("y", TaskState::Pending, 2)
        ]
    );
    let retry = submit_keyed(&mut st, 3, "req-1", tasks).unwrap();
    assert_eq!(retry, first);
    assert_eq!(st.len(), 2);
}

#[test]
fn retry_coalesced_into_the_same_entry_as_its_original_is_told_created() {
    // Both attempts of one request can reach the leader's coalescer before either is proposed.
    let mut st = State::new();
    let request = SubmitRequest {
        tasks: vec![spec("a")],
        request_id: "req-1".into(),
        queue_limit: None,
        submitted_by: String::new(),
    };
    let results = submit_requests(&mut st, 7, vec![request.clone(), request]);
    assert_eq!(
        results,
        vec![
            Ok(vec![created("a", TaskState::Pending, 7)]),
            Ok(vec![created("a", TaskState::Pending, 7)])
        ]
    );
    assert_eq!(st.len(), 1);
}

#[test]
fn request_id_longer_than_64_bytes_is_rejected_and_creates_nothing() {
    let mut st = State::new();
    let too_long = "k".repeat(MAX_REQUEST_ID_LEN + 1);
    assert_invalid(submit_keyed(&mut st, 1, &too_long, vec![spec("a")]), "request_id");
    assert!(st.is_empty());
    // Opaque: any UTF-8 up to the limit in bytes.
    let longest = "é".repeat(MAX_REQUEST_ID_LEN / 2);
    let out = submit_keyed(&mut st, 2, &longest, vec![spec("a")]).unwrap();
    assert_eq!(out, vec![created("a", TaskState::Pending, 2)]);
    assert_eq!(task(&st, "a").request_id, longest);
}

// ---------------------------------------------------------------------------------------------
// Dependencies

#[test]
fn unknown_dependency_is_rejected() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("x")]).unwrap();
    let r = assert_invalid(
        submit_one(&mut st, 2, vec![spec("a"), spec_deps("b", &["a", "x", "zz"])]),
        "tasks[1].depends_on[2]",
    );
    assert!(r.message.contains("\"zz\""), "{r:?}");
    assert!(st.get("a").is_none() && st.get("b").is_none());
    assert_eq!(st.len(), 1);
}

#[test]
fn unknown_dependency_rejection_is_deterministic() {
    // Several tasks with unknown dependencies: the first in request order is always named, on
    // every replica and every run (each apply uses fresh hash seeds internally, so an order taken
    // from a hash map would show up here as flakiness).
    let tasks = vec![
        spec_deps("a", &["x"]),
        spec("ok"),
        spec_deps("b", &["ok", "y"]),
        spec_deps("c", &["z"]),
    ];
    for _ in 0..64 {
        assert_invalid(
            submit_one(&mut State::new(), 1, tasks.clone()),
            "tasks[0].depends_on[0]",
        );
    }
    let tasks = vec![
        spec("ok"),
        spec_deps("b", &["ok", "y"]),
        spec_deps("c", &["z"]),
        spec_deps("d", &["w"]),
    ];
    for _ in 0..64 {
        assert_invalid(
            submit_one(&mut State::new(), 1, tasks.clone()),
            "tasks[1].depends_on[1]",
        );
    }
}

#[test]
fn dependency_on_earlier_task_in_request() {
    let mut st = State::new();
    let out = submit_one(&mut st, 1, vec![spec("a"), spec_deps("b", &["a"])]).unwrap();
    assert_eq!(
        out,
        vec![
            created("a", TaskState::Pending, 1),
            created("b", TaskState::Pending, 1)
        ]
    );
    assert_eq!(task(&st, "b").unmet_deps, 1);
    assert_eq!(task(&st, "b").state, TaskState::Pending);
    assert_eq!(runnable(&st), ["a"]);
}

#[test]
fn dependency_on_later_task_in_request_is_inserted_topologically() {
    let mut st = State::new();
    let out = submit_one(
        &mut st,
        1,
        vec![
            spec_deps("c", &["b"]),
            spec_deps("b", &["a"]),
            spec("a"),
            spec("z"),
        ],
    )
    .unwrap();
    // Results stay in request order...
    assert_eq!(
        out,
        vec![
            created("c", TaskState::Pending, 1),
            created("b", TaskState::Pending, 1),
            created("a", TaskState::Pending, 1),
            created("z", TaskState::Pending, 1),
        ]
    );
    // ...while insertion (and so seq) follows the dependencies, ties by request position.
    assert_eq!(task(&st, "a").seq, 0);
    assert_eq!(task(&st, "b").seq, 1);
    assert_eq!(task(&st, "c").seq, 2);
    assert_eq!(task(&st, "z").seq, 3);
    assert_eq!(task(&st, "c").unmet_deps, 1);
    assert_eq!(task(&st, "b").unmet_deps, 1);
    assert_eq!(runnable(&st), ["a", "z"]);
}

#[test]
fn pending_dependencies_are_counted_and_block_running() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec("b")]).unwrap();
    submit_one(
        &mut st,
        2,
        vec![spec("c"), spec_deps("d", &["a", "b", "c"]), spec_prio("e", 1000)],
    )
    .unwrap();
    let d = task(&st, "d");
    assert_eq!((d.state, d.unmet_deps), (TaskState::Pending, 3));
    assert!(!runnable(&st).contains(&"d".to_string()));
    assert_eq!(runnable(&st), ["e", "a", "b", "c"]);
    assert_eq!(st.count(TaskState::Pending), 5);
    // A high priority does not make a blocked task runnable.
    submit_one(
        &mut st,
        3,
        vec![TaskSpec {
            priority: i32::MAX,
            ..spec_deps("f", &["d"])
        }],
    )
    .unwrap();
    assert_eq!(runnable(&st)[0], "e");
}

#[test]
fn two_cycle_is_rejected_naming_a_task_on_it() {
    let mut st = State::new();
    let tasks = vec![spec_deps("a", &["b"]), spec_deps("b", &["a"])];
    let r = submit_one(&mut st, 1, tasks.clone()).unwrap_err();
    assert_cycle_rejection(r, &tasks, &[0, 1]);
    assert!(st.is_empty());
}

#[test]
fn three_cycle_is_rejected_naming_a_task_on_it() {
    let mut st = State::new();
    let tasks = vec![
        spec("free"),
        spec_deps("a", &["c"]),
        spec_deps("b", &["a"]),
        spec_deps("c", &["b"]),
    ];
    let r = submit_one(&mut st, 1, tasks.clone()).unwrap_err();
    assert_cycle_rejection(r, &tasks, &[1, 2, 3]);
    assert!(st.is_empty());
}

#[test]
fn cycle_rejection_names_the_cycle_not_a_task_waiting_on_it() {
    // `x` (first in the request) depends on the cycle a -> b -> c -> a but is not part of it.
    let mut st = State::new();
    let tasks = vec![
        spec_deps("x", &["a"]),
        spec_deps("a", &["b"]),
        spec_deps("b", &["c"]),
        spec_deps("c", &["a"]),
        spec_deps("y", &["x"]),
    ];
    let r = submit_one(&mut st, 1, tasks.clone()).unwrap_err();
    assert_cycle_rejection(r, &tasks, &[1, 2, 3]);

    // Same with the tail behind a 2-cycle whose members also depend on existing tasks.
    submit_one(&mut st, 2, vec![spec("old")]).unwrap();
    let tasks = vec![
        spec_deps("tail", &["p", "old"]),
        spec_deps("p", &["old", "q"]),
        spec_deps("q", &["p"]),
    ];
    let r = submit_one(&mut st, 3, tasks.clone()).unwrap_err();
    assert_cycle_rejection(r, &tasks, &[1, 2]);
    assert_eq!(st.len(), 1);
}

#[test]
fn self_dependency_is_rejected_by_validation() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("x")]).unwrap();
    let r = assert_invalid(
        submit_one(&mut st, 2, vec![spec("b"), spec_deps("a", &["x", "a"])]),
        "tasks[1].depends_on[1]",
    );
    assert!(r.message.contains("itself"));
    // Even when the id already exists (validation comes first).
    assert_invalid(
        submit_one(&mut st, 3, vec![spec_deps("x", &["x"])]),
        "tasks[0].depends_on[0]",
    );
    assert_eq!(st.len(), 1);
}

#[test]
fn duplicate_dependency_is_rejected() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("x"), spec("y")]).unwrap();
    assert_invalid(
        submit_one(&mut st, 2, vec![spec_deps("a", &["x", "y", "x"])]),
        "tasks[0].depends_on[2]",
    );
    assert_eq!(st.len(), 2);
}

#[test]
fn cancelling_a_dependency_cancels_dependents_transitively() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec_deps("b", &["a"]), spec("e")]).unwrap();
    submit_one(
        &mut st,
        2,
        vec![
            spec_deps("c", &["b"]),
            spec_deps("d", &["c", "a"]),
            spec_deps("f", &["e"]),
        ],
    )
    .unwrap();
    assert_eq!(runnable(&st), ["a", "e"]);

    let out = cancel(&mut st, 10, "a", "operator said so").unwrap();
    assert_eq!(
        out,
        CancelOutcome {
            id: "a".into(),
            cancelled: true,
            state: TaskState::Cancelled,
            log_index: 10
        }
    );

    assert_eq!(task(&st, "a").reason, "operator said so");
    assert_eq!(task(&st, "b").reason, "dependency a was cancelled");
    assert_eq!(task(&st, "c").reason, "dependency b was cancelled");
    let d_reason = &task(&st, "d").reason;
    assert!(
        d_reason == "dependency a was cancelled" || d_reason == "dependency c was cancelled",
        "d's reason must name a cancelled dependency: {d_reason:?}"
    );
    for id in ["a", "b", "c", "d"] {
        let t = task(&st, id);
        assert_eq!(t.state, TaskState::Cancelled, "{id}");
        assert_eq!(t.log_index, 10, "{id}");
        assert_eq!(t.updated_at_ms, now_for(10), "{id}");
        assert!(t.created_index == 1 || t.created_index == 2, "{id}");
    }
    // The unrelated chain is untouched.
    assert_eq!(
        (task(&st, "e").state, task(&st, "e").log_index),
        (TaskState::Pending, 1)
    );
    assert_eq!(
        (
            task(&st, "f").state,
            task(&st, "f").unmet_deps,
            task(&st, "f").log_index
        ),
        (TaskState::Pending, 1, 2)
    );
    assert_eq!(runnable(&st), ["e"]);
    assert_eq!(st.count(TaskState::Cancelled), 4);
    assert_eq!(st.count(TaskState::Pending), 2);
}

#[test]
fn cancelling_a_middle_task_only_cancels_downstream() {
    let mut st = State::new();
    submit_one(
        &mut st,
        1,
        vec![spec("a"), spec_deps("b", &["a"]), spec_deps("c", &["b"])],
    )
    .unwrap();
    cancel(&mut st, 2, "b", "").unwrap();
    assert_eq!(task(&st, "a").state, TaskState::Pending);
    assert_eq!(task(&st, "a").log_index, 1);
    assert_eq!(task(&st, "b").reason, "cancelled by request");
    assert_eq!(task(&st, "c").state, TaskState::Cancelled);
    assert_eq!(task(&st, "c").reason, "dependency b was cancelled");
    assert_eq!(runnable(&st), ["a"]);
    // Cancelling the transitively cancelled task is a no-op.
    let out = cancel(&mut st, 3, "c", "again").unwrap();
    assert_eq!(
        out,
        CancelOutcome {
            id: "c".into(),
            cancelled: false,
            state: TaskState::Cancelled,
            log_index: 2
        }
    );
    assert_eq!(task(&st, "c").reason, "dependency b was cancelled");
}

#[test]
fn submitting_onto_a_cancelled_dependency_yields_a_cancelled_task() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec("p")]).unwrap();
    cancel(&mut st, 2, "a", "").unwrap();

    let out = submit_one(
        &mut st,
        3,
        vec![
            spec_deps("h", &["g"]),
            spec_deps("g", &["p", "a"]),
            spec_deps("k", &["p"]),
        ],
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            created("h", TaskState::Cancelled, 3),
            created("g", TaskState::Cancelled, 3),
            created("k", TaskState::Pending, 3),
        ]
    );
    let g = task(&st, "g");
    assert_eq!(g.reason, "dependency a was cancelled");
    assert_eq!((g.unmet_deps, g.created_index, g.log_index), (0, 3, 3));
    assert_eq!(task(&st, "h").reason, "dependency g was cancelled");
    assert_eq!(runnable(&st), ["p"]);
    assert_eq!(st.count(TaskState::Cancelled), 3);
    assert_eq!(st.count(TaskState::Pending), 2);

    // Cancelling p later still cancels k, and leaves the already cancelled g alone.
    cancel(&mut st, 4, "p", "").unwrap();
    assert_eq!(task(&st, "k").state, TaskState::Cancelled);
    assert_eq!(task(&st, "k").log_index, 4);
    assert_eq!(task(&st, "g").log_index, 3);
    assert_eq!(task(&st, "g").reason, "dependency a was cancelled");
    assert_eq!(runnable(&st).len(), 0);
}

// ---------------------------------------------------------------------------------------------
// CancelTask

#[test]
fn cancel_pending_task() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec("b")]).unwrap();
    let out = cancel(&mut st, 2, "a", "no longer needed").unwrap();
    assert_eq!(
        out,
        CancelOutcome {
            id: "a".into(),
            cancelled: true,
            state: TaskState::Cancelled,
            log_index: 2
        }
    );
    let t = task(&st, "a");
    assert_eq!(t.state, TaskState::Cancelled);
    assert_eq!(t.reason, "no longer needed");
    assert_eq!((t.created_index, t.log_index), (1, 2));
    assert_eq!((t.submitted_at_ms, t.updated_at_ms), (now_for(1), now_for(2)));
    assert_eq!(runnable(&st), ["b"]);
    assert_eq!(st.count(TaskState::Pending), 1);
    assert_eq!(st.count(TaskState::Cancelled), 1);
    assert_eq!(st.len(), 2);
}

#[test]
fn cancel_with_empty_reason_uses_the_default() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a")]).unwrap();
    cancel(&mut st, 2, "a", "").unwrap();
    assert_eq!(task(&st, "a").reason, "cancelled by request");
}

#[test]
fn cancel_of_a_blocked_task() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec_deps("b", &["a"])]).unwrap();
    let out = cancel(&mut st, 2, "b", "x").unwrap();
    assert!(out.cancelled);
    assert_eq!(task(&st, "b").state, TaskState::Cancelled);
    assert_eq!(task(&st, "a").state, TaskState::Pending);
    assert_eq!(runnable(&st), ["a"]);
    // Cancelling the dependency afterwards does not touch b again.
    cancel(&mut st, 3, "a", "y").unwrap();
    assert_eq!(
        (task(&st, "b").log_index, task(&st, "b").reason.as_str()),
        (2, "x")
    );
}

#[test]
fn cancel_of_a_terminal_task_changes_nothing() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a")]).unwrap();
    cancel(&mut st, 2, "a", "first").unwrap();
    let before = task(&st, "a").clone();
    let out = cancel(&mut st, 5, "a", "second").unwrap();
    assert_eq!(
        out,
        CancelOutcome {
            id: "a".into(),
            cancelled: false,
            state: TaskState::Cancelled,
            log_index: 2
        }
    );
    assert_eq!(task(&st, "a"), &before);
    assert_eq!(st.count(TaskState::Cancelled), 1);
}

#[test]
fn cancel_of_an_unknown_task_is_not_found() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a")]).unwrap();
    let r = assert_rejected(cancel(&mut st, 2, "b", ""), RejectKind::NotFound, "id");
    assert!(r.message.contains("\"b\""), "{r:?}");
    assert_eq!(task(&st, "a").log_index, 1);
    assert_eq!(st.len(), 1);
}

#[test]
fn cancel_with_oversized_reason_is_rejected_before_lookup() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a")]).unwrap();
    let reason = "r".repeat(taurus_core::validate::MAX_REASON_LEN + 1);
    assert_invalid(cancel(&mut st, 2, "a", &reason), "reason");
    assert_invalid(cancel(&mut st, 3, "missing", &reason), "reason");
    assert_eq!(task(&st, "a").state, TaskState::Pending);
    assert_eq!(runnable(&st), ["a"]);
}

#[test]
fn command_display_is_one_line() {
    let cmd = submit_cmd(vec![vec![spec("a"), spec("b")], vec![spec("c")]], 42);
    assert_eq!(cmd.to_string(), "SubmitTasks(requests=2, tasks=3, now_ms=42)");
    let cmd = Command::CancelTask {
        id: "a".into(),
        reason: "long\nreason".into(),
        now_ms: 7,
        by: String::new(),
        only_own: false,
    };
    assert_eq!(cmd.to_string(), "CancelTask(a, now_ms=7)");
}

// ---------------------------------------------------------------------------------------------
// runnable()

#[test]
fn runnable_order_is_priority_then_submission() {
    let mut st = State::new();
    submit_one(
        &mut st,
        1,
        vec![
            spec_prio("z", 0),
            spec_prio("b", 5),
            spec_prio("c", 0),
            spec_prio("d", -3),
            spec_prio("e", 5),
        ],
    )
    .unwrap();
    submit(
        &mut st,
        2,
        vec![
            vec![spec_prio("f", 5)],
            vec![spec_prio("a", 0)],
            vec![spec_prio("min", i32::MIN)],
        ],
    );
    submit_one(
        &mut st,
        3,
        vec![
            TaskSpec {
                priority: 100,
                ..spec_deps("blocked", &["z"])
            },
            spec_prio("max", i32::MAX),
        ],
    )
    .unwrap();
    assert_eq!(runnable(&st), ["max", "b", "e", "f", "z", "c", "a", "d", "min"]);

    cancel(&mut st, 4, "e", "").unwrap();
    cancel(&mut st, 5, "z", "").unwrap();
    assert_eq!(runnable(&st), ["max", "b", "f", "c", "a", "d", "min"]);
    assert_eq!(task(&st, "blocked").state, TaskState::Cancelled);
}

// ---------------------------------------------------------------------------------------------
// Log indexes

#[test]
fn log_index_tracks_the_last_change() {
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("a"), spec("b")]).unwrap();
    submit_one(&mut st, 2, vec![spec_deps("c", &["b"]), spec_deps("d", &["c"])]).unwrap();
    // Resubmissions and no-op cancels change nothing.
    submit_one(&mut st, 3, vec![spec("a"), spec("c")]).unwrap();
    assert_rejected(cancel(&mut st, 4, "nope", ""), RejectKind::NotFound, "id");
    let idx = |st: &State, id: &str| (task(st, id).created_index, task(st, id).log_index);
    assert_eq!(
        [idx(&st, "a"), idx(&st, "b"), idx(&st, "c"), idx(&st, "d")],
        [(1, 1), (1, 1), (2, 2), (2, 2)]
    );

    cancel(&mut st, 5, "c", "").unwrap();
    assert_eq!(
        [idx(&st, "a"), idx(&st, "b"), idx(&st, "c"), idx(&st, "d")],
        [(1, 1), (1, 1), (2, 5), (2, 5)]
    );
    cancel(&mut st, 6, "d", "").unwrap();
    cancel(&mut st, 7, "b", "").unwrap();
    assert_eq!(
        [idx(&st, "a"), idx(&st, "b"), idx(&st, "c"), idx(&st, "d")],
        [(1, 1), (1, 7), (2, 5), (2, 5)]
    );
}

#[test]
fn log_index_is_monotonic_and_names_the_changing_entry() {
    // A pseudo-random workload; after each entry every task either is unchanged, or was created
    // or changed by exactly this entry.
    let mut rng = Rng::new(0x5eed_0001);
    let mut st = State::new();
    let mut next_id = 0u64;
    for index in 1..=400u64 {
        let before = all_tasks(&st);
        let cmd = if rng.chance(60) || next_id == 0 {
            let n = 1 + rng.below(3);
            let tasks: Vec<TaskSpec> = (0..n)
                .map(|_| {
                    next_id += 1;
                    // Dependencies on earlier ids only (never itself), without repeats.
                    let deps: BTreeSet<String> = if next_id > 1 {
                        (0..rng.below(3))
                            .map(|_| format!("t{}", 1 + rng.below(next_id - 1)))
                            .collect()
                    } else {
                        BTreeSet::new()
                    };
                    TaskSpec {
                        depends_on: deps.into_iter().collect(),
                        ..spec(&format!("t{next_id}"))
                    }
                })
                .collect();
            submit_cmd(vec![tasks], now_for(index))
        } else {
            cancel_cmd(&format!("t{}", 1 + rng.below(next_id)), "", now_for(index))
        };
        st.apply(index, cmd);
        let after = all_tasks(&st);
        assert!(after.len() >= before.len());
        let mut old = before.iter().peekable();
        for t in &after {
            match old.peek() {
                Some(b) if b.spec.id == t.spec.id => {
                    let b = old.next().unwrap();
                    assert!(t.log_index >= b.log_index, "log_index went back on {}", t.spec.id);
                    assert_eq!(t.created_index, b.created_index);
                    assert_eq!(t.seq, b.seq);
                    if t != b {
                        assert_eq!(
                            t.log_index, index,
                            "{} changed at {index} but says {}",
                            t.spec.id, t.log_index
                        );
                        assert_eq!(t.updated_at_ms, now_for(index));
                    }
                }
                _ => {
                    assert_eq!(
                        (t.created_index, t.log_index),
                        (index, index),
                        "new task {}",
                        t.spec.id
                    );
                }
            }
        }
        assert!(old.next().is_none(), "a task disappeared at {index}");
    }
    assert!(
        st.count(TaskState::Cancelled) > 10 && st.count(TaskState::Pending) > 10,
        "workload too thin"
    );
}

// ---------------------------------------------------------------------------------------------
// list()

fn listing_fixture() -> State {
    let mut st = State::new();
    // Ids submitted out of id order.
    let ids: Vec<String> = (0..25).map(|i| format!("t{:02}", (i * 7) % 25)).collect();
    let tasks = ids.iter().map(|id| spec(id)).collect();
    submit_one(&mut st, 1, tasks).unwrap();
    for (k, id) in ["t03", "t04", "t11", "t20", "t24"].iter().enumerate() {
        cancel(&mut st, 2 + k as u64, id, "").unwrap();
    }
    st
}

#[test]
fn list_pages_return_every_task_once_in_id_order() {
    let st = listing_fixture();
    let expected: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    for limit in [1, 2, 3, 4, 5, 7, 24, 25, 26, 1000] {
        let got = list_all(&st, &[], limit);
        assert_eq!(ids(&got), expected, "limit {limit}");
    }
    // Exact page structure for limit 5: five full pages, the last without a cursor.
    let mut after = None;
    for page_no in 0..5 {
        let page = st.list(&[], after.as_deref(), 5);
        assert_eq!(page.tasks.len(), 5);
        assert_eq!(page.tasks[0].spec.id, format!("t{:02}", page_no * 5));
        after = page.next_after.clone();
        assert_eq!(after.is_some(), page_no < 4, "page {page_no}");
    }
    // Pages carry the same tasks as get().
    for t in st.list(&[], None, 100).tasks {
        assert_eq!(Some(t), st.get(&t.spec.id));
    }
}

#[test]
fn list_after_cursor_need_not_exist() {
    let st = listing_fixture();
    let page = st.list(&[], Some("t10a"), 3);
    assert_eq!(
        page.tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(),
        ["t11", "t12", "t13"]
    );
    assert_eq!(page.next_after.as_deref(), Some("t13"));
    let page = st.list(&[], Some("t24"), 3);
    assert!(page.tasks.is_empty() && page.next_after.is_none());
    let page = st.list(&[], Some("zzz"), 3);
    assert!(page.tasks.is_empty() && page.next_after.is_none());
    let page = st.list(&[], Some(""), 1);
    assert_eq!(page.tasks[0].spec.id, "t00");
    let page = st.list(&[], Some("t22"), 2);
    assert_eq!(page.tasks.len(), 2);
    assert_eq!(page.next_after, None, "no cursor when nothing follows");
}

#[test]
fn list_filters_by_state() {
    let st = listing_fixture();
    let cancelled = ["t03", "t04", "t11", "t20", "t24"];
    for limit in [1, 2, 100] {
        assert_eq!(
            ids(&list_all(&st, &[TaskState::Cancelled], limit)),
            cancelled,
            "limit {limit}"
        );
        let pending = list_all(&st, &[TaskState::Pending], limit);
        assert_eq!(pending.len(), 20);
        assert!(
            pending
                .iter()
                .all(|t| t.state == TaskState::Pending && !cancelled.contains(&t.spec.id.as_str()))
        );
        assert!(pending.windows(2).all(|w| w[0].spec.id < w[1].spec.id));
        // Several states merge in id order.
        let both = list_all(&st, &[TaskState::Cancelled, TaskState::Pending], limit);
        assert_eq!(ids(&both), ids(&list_all(&st, &[], limit)), "limit {limit}");
        let both = list_all(
            &st,
            &[TaskState::Succeeded, TaskState::Cancelled, TaskState::Running],
            limit,
        );
        assert_eq!(ids(&both), cancelled);
        // A repeated state does not repeat tasks.
        let twice = list_all(&st, &[TaskState::Cancelled, TaskState::Cancelled], limit);
        assert_eq!(ids(&twice), cancelled);
    }
    let none = st.list(&[TaskState::Succeeded, TaskState::Failed], None, 10);
    assert!(none.tasks.is_empty() && none.next_after.is_none());
    // Filter plus cursor.
    let page = st.list(&[TaskState::Cancelled, TaskState::Assigned], Some("t04"), 2);
    assert_eq!(
        page.tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(),
        ["t11", "t20"]
    );
    assert_eq!(page.next_after.as_deref(), Some("t20"));
    let page = st.list(&[TaskState::Cancelled], Some("t20"), 2);
    assert_eq!(
        page.tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(),
        ["t24"]
    );
    assert_eq!(page.next_after, None);
}

#[test]
fn list_limit_zero_behaves_as_one() {
    let st = listing_fixture();
    let page = st.list(&[], None, 0);
    assert_eq!(page.tasks.len(), 1);
    assert_eq!(page.tasks[0].spec.id, "t00");
    assert_eq!(page.next_after.as_deref(), Some("t00"));
    let page = st.list(&[TaskState::Cancelled], Some("t03"), 0);
    assert_eq!(page.tasks.len(), 1);
    assert_eq!(page.tasks[0].spec.id, "t04");
    assert_eq!(ids(&list_all(&st, &[], 0)).len(), 25);

    let mut single = State::new();
    submit_one(&mut single, 1, vec![spec("only")]).unwrap();
    let page = single.list(&[], None, 0);
    assert_eq!(page.tasks.len(), 1);
    assert!(page.next_after.is_none());
}

#[test]
fn list_with_huge_limit_returns_everything() {
    let st = listing_fixture();
    let page = st.list(&[], None, usize::MAX);
    assert_eq!(page.tasks.len(), 25);
    assert!(page.next_after.is_none());
    let page = st.list(&[TaskState::Cancelled, TaskState::Pending], None, usize::MAX);
    assert_eq!(page.tasks.len(), 25);
    assert!(page.next_after.is_none());
}

#[test]
fn list_of_empty_state() {
    let st = State::new();
    let page = st.list(&[], None, 10);
    assert!(page.tasks.is_empty() && page.next_after.is_none());
    assert_eq!(st.runnable().count(), 0);
    for s in TaskState::ALL {
        assert_eq!(st.count(s), 0);
    }
}

#[test]
fn task_state_names_round_trip() {
    for (i, s) in TaskState::ALL.into_iter().enumerate() {
        assert_eq!(s.index(), i);
        assert_eq!(TaskState::parse(s.as_str()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
    }
    assert_eq!(TaskState::parse("Pending"), None);
    let terminal: Vec<_> = TaskState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(
        terminal,
        [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::TimedOut
        ]
    );
}

fn bounded(tasks: Vec<TaskSpec>, request_id: &str, limit: u64) -> SubmitRequest {
    SubmitRequest {
        tasks,
        request_id: request_id.to_string(),
        queue_limit: Some(limit),
        submitted_by: String::new(),
    }
}

#[test]
fn queue_bound_refuses_whole_requests_and_keeps_what_was_accepted() {
    let mut st = State::new();
    // 3 of 4 slots used.
    let r = submit_requests(
        &mut st,
        1,
        vec![bounded(vec![spec("a"), spec("b"), spec("c")], "r1", 4)],
    );
    assert!(r[0].is_ok(), "{r:?}");
    // Two more would make 5 > 4: refused whole (neither d nor e exists), naming the limit.
    let r = submit_requests(&mut st, 2, vec![bounded(vec![spec("d"), spec("e")], "r2", 4)]);
    let rejection = r[0].clone().expect_err("over the bound");
    assert_eq!(rejection.kind, RejectKind::ResourceExhausted);
    assert_eq!(rejection.field, "tasks");
    assert!(rejection.message.contains("max_queued_tasks = 4"), "{rejection}");
    assert!(st.get("d").is_none() && st.get("e").is_none());
    // Exactly filling it is fine; resubmitting existing tasks counts nothing new.
    let r = submit_requests(&mut st, 3, vec![bounded(vec![spec("d")], "r3", 4)]);
    assert!(r[0].is_ok(), "{r:?}");
    let r = submit_requests(&mut st, 4, vec![bounded(vec![spec("a"), spec("d")], "r4", 4)]);
    assert!(
        r[0].is_ok(),
        "resubmission of existing tasks creates nothing: {r:?}"
    );
    assert_eq!(st.unfinished(), 4);
    // Accepted tasks are all there; a finished task frees its slot.
    for id in ["a", "b", "c", "d"] {
        assert_eq!(task(&st, id).state, TaskState::Pending, "{id}");
    }
    cancel(&mut st, 5, "a", "make room").expect("cancel");
    assert_eq!(st.unfinished(), 3);
    let r = submit_requests(&mut st, 6, vec![bounded(vec![spec("e")], "r5", 4)]);
    assert!(r[0].is_ok(), "{r:?}");
    // Within one entry, a refused request does not stop its neighbours.
    let r = submit_requests(
        &mut st,
        7,
        vec![
            bounded(vec![spec("f")], "r6", 4),
            bounded(vec![spec("g")], "r7", 10),
        ],
    );
    assert_eq!(
        r[0].clone().expect_err("full").kind,
        RejectKind::ResourceExhausted
    );
    assert!(
        r[1].is_ok(),
        "a request carrying a higher bound is judged by its own: {r:?}"
    );
}

fn purge(st: &mut State, index: u64, before_ms: u64, keep: u64, max: u32) -> u64 {
    match st.apply(
        index,
        Command::PurgeFinished {
            finished_before_ms: before_ms,
            keep_finished: keep,
            max,
        },
    ) {
        taurus_core::Response::Purged(n) => n,
        other => panic!("PurgeFinished answered {other:?}"),
    }
}

#[test]
fn purging_forgets_only_finished_tasks_oldest_first_and_survives_snapshots() {
    let mut st = State::new();
    let specs: Vec<TaskSpec> = (0..6).map(|i| spec(&format!("t{i}"))).collect();
    submit_one(&mut st, 1, specs).expect("submitted");
    // t0..t3 finish at increasing times (index 10..13); t4, t5 stay pending.
    for i in 0..4u64 {
        cancel(&mut st, 10 + i, &format!("t{i}"), "done").expect("cancel");
    }
    assert_eq!(st.finished_len(), 4);
    assert!(!st.purge_due(now_for(10), 10), "nothing finished before t0 did");
    assert!(
        st.purge_due(now_for(11), 10),
        "t0 finished before index 11's time"
    );
    // By age: t0 and t1 finished before index 12's time.
    assert_eq!(purge(&mut st, 20, now_for(12), 100, 1000), 2);
    assert!(st.get("t0").is_none() && st.get("t1").is_none());
    assert!(st.get("t2").is_some() && st.get("t3").is_some());
    // By count, bounded per entry: keep 0 but at most 1 per entry, oldest first.
    assert_eq!(purge(&mut st, 21, 0, 0, 1), 1);
    assert!(st.get("t2").is_none() && st.get("t3").is_some());
    // A snapshot round trip keeps the index: the next purge takes the same task on both.
    let mut restored = State::from_image(
        serde_json::from_value(serde_json::to_value(st.image()).expect("encode")).expect("decode"),
    )
    .expect("restores");
    assert_eq!(purge(&mut st, 22, 0, 0, 10), 1);
    assert_eq!(purge(&mut restored, 22, 0, 0, 10), 1);
    assert!(st.get("t3").is_none() && restored.get("t3").is_none());
    // Unfinished tasks are never purged, whatever the bounds.
    assert_eq!(purge(&mut st, 23, u64::MAX, 0, 1000), 0);
    assert_eq!(st.len(), 2);
    assert_eq!(st.unfinished(), 2);
    assert_eq!(st.count(TaskState::Cancelled), 0);
    // A purged id is unknown: a new task may not depend on it, and the id may be reused.
    assert_invalid(
        submit_one(&mut st, 24, vec![spec_deps("late", &["t0"])]),
        "tasks[0].depends_on[0]",
    );
    let r = submit_one(&mut st, 25, vec![spec("t0")]).expect("the id is free again");
    assert!(r[0].created);
}

#[test]
fn a_new_task_under_a_purged_id_does_not_inherit_the_old_ones_dependency() {
    // Found by fuzzing: t2 ended (cancelled) while its dependency t7 was still pending, so t7
    // still listed it as a dependent. Once t2 was purged and a new, independent t2 submitted,
    // t7's failure cascaded into the new t2, and a replica restored from a snapshot (which has
    // no such stale edge) disagreed.
    let mut st = State::new();
    submit_one(&mut st, 1, vec![spec("t7"), spec_deps("t2", &["t7"])]).expect("submitted");
    cancel(&mut st, 2, "t2", "not needed").expect("cancel");
    assert_eq!(purge(&mut st, 3, u64::MAX, 0, 10), 1, "t2 is forgotten");
    let fresh = submit_one(&mut st, 4, vec![spec("t2")]).expect("the id is free again");
    assert!(fresh[0].created);
    let mut restored = State::from_image(
        serde_json::from_value(serde_json::to_value(st.image()).expect("encode")).expect("decode"),
    )
    .expect("restores");
    cancel(&mut st, 5, "t7", "gone").expect("cancel");
    cancel(&mut restored, 5, "t7", "gone").expect("cancel");
    assert_eq!(task(&st, "t2").state, TaskState::Pending, "{:?}", task(&st, "t2"));
    assert_eq!(task(&st, "t2"), task(&restored, "t2"));
}
