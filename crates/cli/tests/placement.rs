//! Placement rules with real masters and agents: pools, label constraints, drain and undrain
//! through the CLI, and that work nobody can run never blocks work somebody can.

mod common;

use std::time::Duration;

use common::Agents;
use common::Masters;
use common::eventually;
use taurus_client::Client;
use taurus_client::v1;

const WAIT: Duration = Duration::from_secs(30);

fn task(command: &[&str]) -> v1::TaskSpec {
    v1::TaskSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Submits one task and returns its id.
async fn submit(client: &Client, spec: v1::TaskSpec) -> String {
    let r = client.submit(vec![spec]).await.expect("submit");
    r.results[0].id.clone()
}

async fn get(client: &Client, id: &str) -> v1::Task {
    client
        .get_task(id, false)
        .await
        .expect("get task")
        .task
        .expect("a task")
}

/// Waits for a task to succeed and returns the agent of its last attempt.
async fn ran_on(client: &Client, id: &str) -> String {
    let t = eventually(&format!("task {id} succeeded"), WAIT, async || {
        let t = get(client, id).await;
        if t.state == v1::TaskState::Succeeded as i32 {
            Ok(t)
        } else {
            Err(format!("state {} reason {:?}", t.state, t.reason))
        }
    })
    .await;
    t.attempts.last().map(|a| a.agent_id.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_constraints_and_drain_decide_where_tasks_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut masters = Masters::start_in(dir.path(), common::FAST_SCHEDULER_TOML);
    masters.wait_for_leader();
    let flag = masters.flag();
    let mut agents = Agents::new(dir.path());
    agents.start("agent-a", &flag, &["--label", "zone=a"]);
    agents.start("agent-b", &flag, &["--label", "zone=b"]);
    agents.start("agent-gpu", &flag, &["--pool", "gpu"]);
    let client = Client::new(masters.addrs.clone())
        .expect("client")
        .with_deadline(Duration::from_secs(15));
    eventually("three agents alive", WAIT, async || {
        let list = client.list_agents(false).await.map_err(|e| e.to_string())?;
        let alive = list
            .agents
            .iter()
            .filter(|a| a.state == v1::AgentState::Alive as i32)
            .count();
        if alive == 3 {
            Ok(())
        } else {
            Err(format!("{alive} alive"))
        }
    })
    .await;

    // Work for a pool no agent serves, queued first and at a higher priority, must not hide
    // the work behind it (more of it than the scheduler's window of the queue).
    let mut blocked = Vec::new();
    for _ in 0..3 {
        let mut batch: Vec<v1::TaskSpec> = (0..100)
            .map(|_| v1::TaskSpec {
                pool: "nobody-serves-this".into(),
                priority: 100,
                ..task(&["true"])
            })
            .collect();
        taurus_client::fill_missing_ids(&mut batch);
        blocked.extend(batch.iter().map(|t| t.id.clone()));
        client.submit(batch).await.expect("submit the unservable batch");
    }

    // Constraints pick the agent; a pool task goes only to the pool's agent, and a task
    // without a pool may go anywhere (but never to the gpu agent when it has a constraint
    // the gpu agent does not carry).
    let on_b = submit(
        &client,
        v1::TaskSpec {
            constraints: [("zone".to_string(), "b".to_string())].into(),
            ..task(&["taurus:noop"])
        },
    )
    .await;
    let on_a = submit(
        &client,
        v1::TaskSpec {
            constraints: [("zone".to_string(), "a".to_string())].into(),
            ..task(&["taurus:noop"])
        },
    )
    .await;
    let on_gpu = submit(
        &client,
        v1::TaskSpec {
            pool: "gpu".into(),
            ..task(&["taurus:noop"])
        },
    )
    .await;
    assert_eq!(ran_on(&client, &on_b).await, "agent-b");
    assert_eq!(ran_on(&client, &on_a).await, "agent-a");
    assert_eq!(ran_on(&client, &on_gpu).await, "agent-gpu");

    // Drain agent-b with the CLI: it takes no new work.
    let r = common::run(&[
        "--masters",
        &flag,
        "agent",
        "drain",
        "agent-b",
        "--reason",
        "maintenance",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let r = common::run(&["--masters", &flag, "--json", "agent", "show", "agent-b"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("draining"), "{}", r.stdout);
    assert!(r.stdout.contains("maintenance"), "{}", r.stdout);
    let waits_for_b = submit(
        &client,
        v1::TaskSpec {
            constraints: [("zone".to_string(), "b".to_string())].into(),
            ..task(&["taurus:noop"])
        },
    )
    .await;
    // A task submitted after it that agent-a can run finishes while the zone=b task waits:
    // the scheduler had its chance and kept it pending.
    let after = submit(
        &client,
        v1::TaskSpec {
            constraints: [("zone".to_string(), "a".to_string())].into(),
            ..task(&["taurus:noop"])
        },
    )
    .await;
    assert_eq!(ran_on(&client, &after).await, "agent-a");
    let t = get(&client, &waits_for_b).await;
    assert_eq!(t.state, v1::TaskState::Pending as i32, "{t:?}");
    assert!(t.attempts.is_empty(), "{t:?}");

    // Undrain: the waiting task runs on agent-b.
    let r = common::run(&["--masters", &flag, "agent", "undrain", "agent-b"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(ran_on(&client, &waits_for_b).await, "agent-b");

    // The unservable tasks are all still pending, untouched.
    for id in blocked.iter().step_by(37) {
        let t = get(&client, id).await;
        assert_eq!(t.state, v1::TaskState::Pending as i32, "{t:?}");
        assert!(t.attempts.is_empty());
    }

    // Output comes back through `task logs`, with and without --follow.
    let echo = submit(
        &client,
        v1::TaskSpec {
            constraints: [("zone".to_string(), "a".to_string())].into(),
            ..task(&["sh", "-c", "echo out-line; echo err-line >&2"])
        },
    )
    .await;
    ran_on(&client, &echo).await;
    let r = common::run(&["--masters", &flag, "task", "logs", &echo]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout.contains("out-line") && r.stdout.contains("err-line"),
        "{r:?}"
    );
    let r = common::run(&["--masters", &flag, "task", "logs", &echo, "--stderr-only"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout.trim(), "err-line", "{r:?}");
    let r = common::run(&["--masters", &flag, "task", "logs", &echo, "--follow"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("out-line"), "{r:?}");

    // Bad input to the agent commands: one clear line and a non-zero exit.
    let r = common::run(&["--masters", &flag, "agent", "drain", "no such agent"]);
    common::assert_one_error_line(&r, "id");
    let r = common::run(&["--masters", &flag, "agent", "show", "nobody"]);
    common::assert_one_error_line(&r, "nobody");
    drop(agents);
    drop(masters);
}
