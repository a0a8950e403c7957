//! Back-pressure and input bounds at the service boundary: every static input limit is refused
//! with `INVALID_ARGUMENT` naming the limit, an oversized message is refused before it is read,
//! the queue bound refuses whole submissions with `RESOURCE_EXHAUSTED` while everything
//! accepted stays, and finished tasks are forgotten after their retention. One real master on a
//! random loopback port with a real sled directory.

use std::time::Duration;

use taurus_core::validate;
use taurus_master::config::Limits;
use taurus_protocol::v1;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use tonic::Code;
use tonic::transport::Channel;

mod common;

use common::Cluster;
use common::WAIT;

const QUEUE: u64 = 40;
const MESSAGE: usize = 256 * 1024;

/// A one-master cluster and a client of it.
struct Master {
    client: TaskServiceClient<Channel>,
    _cluster: Cluster,
}

/// One master that forms a one-member cluster, with small limits; returns once it has a leader
/// that accepts writes (a probe submit commits).
async fn start() -> Master {
    start_with(Limits {
        max_queued_tasks: QUEUE,
        max_message_bytes: MESSAGE,
        ..Limits::default()
    })
    .await
}

async fn start_with(limits: Limits) -> Master {
    let cluster = Cluster::builder()
        .configure(move |c| c.limits = limits.clone())
        .start(1)
        .await;
    let mut master = Master {
        client: cluster.tasks(1),
        _cluster: cluster,
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match master.client.submit_tasks(request(vec![spec("probe")])).await {
            Ok(_) => break,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the master never accepted a write within {WAIT:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    master
}

fn spec(id: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.into(),
        command: vec!["true".into()],
        ..Default::default()
    }
}

fn request(tasks: Vec<v1::TaskSpec>) -> v1::SubmitTasksRequest {
    v1::SubmitTasksRequest {
        tasks,
        ..Default::default()
    }
}

async fn count(c: &mut TaskServiceClient<Channel>) -> u64 {
    c.list_tasks(v1::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner()
        .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_limit_is_refused_with_invalid_argument_naming_it() {
    let mut m = start().await;
    let with = |f: &dyn Fn(&mut v1::TaskSpec)| {
        let mut s = spec("t");
        f(&mut s);
        vec![s]
    };
    let big = |n: usize| "x".repeat(n);
    let cases: Vec<(&str, Vec<v1::TaskSpec>)> = vec![
        ("max_id_len", vec![spec(&big(validate::MAX_ID_LEN + 1))]),
        (
            "max_name_len",
            with(&|s| s.name = big(validate::MAX_NAME_LEN + 1)),
        ),
        (
            "max_args",
            with(&|s| s.command = vec!["a".into(); validate::MAX_ARGS + 1]),
        ),
        (
            "max_command_bytes",
            with(&|s| s.command = vec![big(validate::MAX_COMMAND_BYTES + 1)]),
        ),
        (
            "max_env_bytes",
            with(&|s| {
                s.env.insert("K".into(), big(validate::MAX_ENV_BYTES));
            }),
        ),
        (
            "max_labels",
            with(&|s| {
                for i in 0..=validate::MAX_LABELS {
                    s.labels.insert(format!("k{i}"), "v".into());
                }
            }),
        ),
        (
            "max_label_len",
            with(&|s| {
                s.labels.insert("k".into(), big(validate::MAX_LABEL_LEN + 1));
            }),
        ),
        (
            "max_dependencies",
            with(&|s| {
                s.depends_on = (0..=validate::MAX_DEPENDENCIES)
                    .map(|i| format!("d{i}"))
                    .collect();
            }),
        ),
        (
            "max_attempts",
            with(&|s| s.max_attempts = validate::MAX_ATTEMPTS + 1),
        ),
        (
            "max_pool_len",
            with(&|s| s.pool = big(validate::MAX_POOL_LEN + 1)),
        ),
        (
            "max_batch",
            (0..=validate::MAX_BATCH)
                .map(|i| spec(&format!("b{i}")))
                .collect(),
        ),
    ];
    for (limit, tasks) in cases {
        let err = m.client.submit_tasks(request(tasks)).await.expect_err(limit);
        assert_eq!(err.code(), Code::InvalidArgument, "{limit}: {err:?}");
        assert!(
            err.message().contains(&format!("(limit {limit})")),
            "{limit}: message {:?} should name the limit",
            err.message()
        );
    }
    let err = m
        .client
        .submit_tasks(v1::SubmitTasksRequest {
            tasks: vec![spec("k")],
            request_id: big(validate::MAX_REQUEST_ID_LEN + 1),
        })
        .await
        .expect_err("request_id");
    assert!(err.code() == Code::InvalidArgument && err.message().contains("max_request_id_len"));
    let err = m
        .client
        .cancel_task(v1::CancelTaskRequest {
            id: "probe".into(),
            reason: big(validate::MAX_REASON_LEN + 1),
        })
        .await
        .expect_err("reason");
    assert!(err.code() == Code::InvalidArgument && err.message().contains("max_reason_len"));
    assert_eq!(count(&mut m.client).await, 1, "only the probe exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused_before_it_is_read() {
    let mut m = start().await;
    // Each spec is valid on its own; together they are over the 256 KiB message limit.
    let tasks: Vec<v1::TaskSpec> = (0..8)
        .map(|i| {
            let mut s = spec(&format!("m{i}"));
            s.command = vec!["echo".into(), "y".repeat(60 * 1024)];
            s
        })
        .collect();
    let err = m
        .client
        .submit_tasks(request(tasks))
        .await
        .expect_err("too large");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{err:?}");
    assert_eq!(count(&mut m.client).await, 1, "nothing of it was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_bound_refuses_whole_submissions_and_loses_nothing_accepted() {
    let mut m = start().await;
    // No agent: every task stays pending. The probe holds one slot.
    let mut accepted = vec!["probe".to_string()];
    for batch in 0..3 {
        let tasks: Vec<v1::TaskSpec> = (0..13).map(|i| spec(&format!("q{batch}-{i}"))).collect();
        accepted.extend(tasks.iter().map(|t| t.id.clone()));
        m.client
            .submit_tasks(request(tasks))
            .await
            .expect("within the bound");
    }
    assert_eq!(accepted.len() as u64, QUEUE, "the queue is now exactly full");
    let refused: Vec<v1::TaskSpec> = vec![spec("over-1"), spec("over-2")];
    let err = m
        .client
        .submit_tasks(request(refused.clone()))
        .await
        .expect_err("the queue is full");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_queued_tasks"), "{err:?}");
    // SubmitMany answers the same per request.
    let many = m
        .client
        .submit_many(v1::SubmitManyRequest {
            requests: vec![request(vec![spec("over-3")])],
        })
        .await
        .expect("submit many answers per request")
        .into_inner();
    assert_eq!(many.outcomes[0].code, Code::ResourceExhausted as i32, "{many:?}");
    // Everything accepted is still there, nothing refused was created.
    assert_eq!(count(&mut m.client).await, QUEUE);
    for id in &accepted {
        let t = m
            .client
            .get_task(v1::GetTaskRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("accepted task {id} lost: {e}"));
        assert!(t.into_inner().task.is_some(), "{id}");
    }
    for id in ["over-1", "over-2", "over-3"] {
        let err = m
            .client
            .get_task(v1::GetTaskRequest {
                id: id.into(),
                ..Default::default()
            })
            .await
            .expect_err("refused tasks do not exist");
        assert_eq!(err.code(), Code::NotFound, "{id}");
    }
    // A finished task frees its slot: the refused request now goes through as it was.
    m.client
        .cancel_task(v1::CancelTaskRequest {
            id: "q0-0".into(),
            reason: "make room".into(),
        })
        .await
        .expect("cancel");
    m.client
        .cancel_task(v1::CancelTaskRequest {
            id: "q0-1".into(),
            reason: "make room".into(),
        })
        .await
        .expect("cancel");
    m.client.submit_tasks(request(refused)).await.expect("room again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_forgotten_after_their_retention_and_unfinished_ones_never() {
    let mut m = start_with(Limits {
        finished_retention: Duration::from_millis(200),
        max_finished_tasks: 1_000,
        ..Limits::default()
    })
    .await;
    let tasks: Vec<v1::TaskSpec> = (0..6).map(|i| spec(&format!("r{i}"))).collect();
    m.client.submit_tasks(request(tasks)).await.expect("submitted");
    for i in 0..3 {
        m.client
            .cancel_task(v1::CancelTaskRequest {
                id: format!("r{i}"),
                reason: "finished".into(),
            })
            .await
            .expect("cancel");
    }
    // The leader forgets them once 200 ms have passed (polled: the event is their absence).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut gone = 0;
        for i in 0..3 {
            let r = m
                .client
                .get_task(v1::GetTaskRequest {
                    id: format!("r{i}"),
                    ..Default::default()
                })
                .await;
            if r.as_ref().err().is_some_and(|e| e.code() == Code::NotFound) {
                gone += 1;
            }
        }
        if gone == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "finished tasks still kept {WAIT:?} after a 200 ms retention"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The unfinished ones (and the probe, also unfinished) are all still there.
    for i in 3..6 {
        let t = m
            .client
            .get_task(v1::GetTaskRequest {
                id: format!("r{i}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("unfinished task r{i} lost: {e}"));
        assert!(t.into_inner().task.is_some());
    }
    assert_eq!(count(&mut m.client).await, 4);
}
