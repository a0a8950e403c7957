//! Graceful lifecycle with real `taurus` processes: SIGTERM on the leader hands leadership over
//! without losing an acknowledged submit, and `taurus agent drain ID --exit` makes an agent
//! finish its running work (or kill it at the deadline), report, and exit 0 while new work
//! goes elsewhere. On a failure every log in the test directory is printed and it is kept.

mod common;

use std::time::Duration;

use common::Agents;
use common::Masters;
use common::TestDir;
use common::eventually;
use taurus_client::Client;
use taurus_client::v1;

/// Bound of every wait for something that should happen within seconds.
const WAIT: Duration = Duration::from_secs(30);

/// Masters and agents of one test in one directory; fields drop in order (processes first,
/// then the directory, which shows its logs and is kept on a failure).
struct Cluster {
    agents: Agents,
    masters: Masters,
    dir: TestDir,
}

impl Cluster {
    async fn start(master_toml: &str) -> Cluster {
        let dir = TestDir::new("taurus-lifecycle-");
        let c = Cluster {
            agents: Agents::new(dir.path()),
            masters: Masters::start_in(dir.path(), master_toml),
            dir,
        };
        c.leader(None).await;
        c
    }

    fn client(&self) -> Client {
        self.masters.client()
    }

    /// Waits for a leader other than `not`, as seen through any master.
    async fn leader(&self, not: Option<u64>) -> u64 {
        common::wait_leader(&self.client(), not, WAIT).await
    }

    async fn wait_agent_state(&self, id: &str, want: v1::AgentState) {
        let client = self.client();
        eventually(&format!("agent {id} {want:?}"), WAIT, async || {
            let a = client.get_agent(id, false).await.map_err(|e| e.to_string())?;
            (a.state == want as i32)
                .then_some(())
                .ok_or(format!("state {}", a.state))
        })
        .await
    }

    async fn wait_task(&self, id: &str, ok: impl Fn(&v1::Task) -> bool, what: &str) -> v1::Task {
        let client = self.client();
        eventually(&format!("task {id} {what}"), WAIT, async || {
            let t = client
                .get_task(id, false)
                .await
                .map_err(|e| e.to_string())?
                .task
                .ok_or("no task")?;
            if ok(&t) { Ok(t) } else { Err(format!("{t:?}")) }
        })
        .await
    }

    /// Submits `spec` and waits until it runs.
    async fn submit_running(&self, spec: v1::TaskSpec) {
        let id = spec.id.clone();
        self.client().submit(vec![spec]).await.expect("submit");
        self.wait_task(&id, |t| state(t) == v1::TaskState::Running, "running")
            .await;
    }

    /// `taurus agent drain ID --exit --deadline DEADLINE`, which must succeed.
    fn drain_exit(&self, id: &str, deadline: &str) -> common::Run {
        let flag = self.masters.flag();
        let r = common::run(&[
            "--masters",
            &flag,
            "agent",
            "drain",
            id,
            "--exit",
            "--deadline",
            deadline,
        ]);
        assert_eq!(r.code, Some(0), "{r:?}");
        r
    }
}

fn task(id: &str, script: &str, constraint: Option<(&str, &str)>) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.to_string(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        max_attempts: 1,
        constraints: constraint
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn state(t: &v1::Task) -> v1::TaskState {
    v1::TaskState::try_from(t.state).unwrap_or(v1::TaskState::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_and_loses_no_acknowledged_submit() {
    let mut c = Cluster::start("").await;
    let leader = c.leader(None).await;

    // Submits go on while the leader stops; every acknowledged one must survive.
    let client = c.client();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0.. {
            if stop_rx.try_recv().is_ok() {
                break;
            }
            let id = format!("w{i:04}");
            if client.submit(vec![task(&id, "true", None)]).await.is_ok() {
                acked.push(id);
            }
        }
        acked
    });
    // Let some submits through first.
    let probe = c.client();
    eventually("a first submit acknowledged", WAIT, async || {
        probe
            .get_task("w0000", true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    c.masters.signal(leader, libc::SIGTERM);
    let status = c.masters.wait_exit(leader, WAIT);
    assert!(status.success(), "the leader exits cleanly: {status}");
    let new_leader = c.leader(Some(leader)).await;
    let _ = stop_tx.send(());
    let acked = writer.await.expect("writer");
    assert!(!acked.is_empty());

    let log = std::fs::read_to_string(c.dir.path().join(format!("master-{leader}.log"))).unwrap_or_default();
    assert!(
        log.contains("leadership handed over"),
        "master {leader} handed leadership over (new leader {new_leader}) before exiting"
    );
    // Every acknowledged submit is there (linearizable reads through the survivors).
    let client = c.client();
    for id in &acked {
        client
            .get_task(id, false)
            .await
            .unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    client
        .submit(vec![task("after", "true", None)])
        .await
        .expect("the cluster takes writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_exit_lets_running_work_finish_sends_new_work_elsewhere_and_exits() {
    let mut c = Cluster::start(common::FAST_SCHEDULER_TOML).await;
    let flag = c.masters.flag();
    c.agents.start("agent-1", &flag, &["--label", "slot=one"]);
    c.agents.start("agent-2", &flag, &["--label", "slot=two"]);
    c.wait_agent_state("agent-1", v1::AgentState::Alive).await;
    c.wait_agent_state("agent-2", v1::AgentState::Alive).await;

    c.submit_running(task("long", "sleep 3", Some(("slot", "one"))))
        .await;

    let r = c.drain_exit("agent-1", "60s");
    assert!(r.stdout.contains("exits"), "{r:?}");

    // New work goes to the other agent while agent-1 drains.
    c.client()
        .submit(vec![task("new", "true", None)])
        .await
        .expect("submit during the drain");
    let new = c
        .wait_task("new", |t| state(t) == v1::TaskState::Succeeded, "succeeded")
        .await;
    assert_eq!(new.attempts.last().map(|a| a.agent_id.as_str()), Some("agent-2"));

    let status = c.agents.wait_exit("agent-1", WAIT);
    assert!(status.success(), "agent-1 exits 0 once drained: {status}");
    let long = c
        .wait_task("long", |t| state(t) == v1::TaskState::Succeeded, "succeeded")
        .await;
    assert_eq!(long.attempts.len(), 1, "{long:?}");
    assert_eq!(long.attempts[0].agent_id, "agent-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_exit_kills_what_outlives_the_deadline_and_says_why() {
    let mut c = Cluster::start(common::FAST_SCHEDULER_TOML).await;
    let flag = c.masters.flag();
    c.agents.start("agent-1", &flag, &[]);
    c.wait_agent_state("agent-1", v1::AgentState::Alive).await;
    c.submit_running(task("overlong", "sleep 120", None)).await;

    c.drain_exit("agent-1", "1s");
    let status = c.agents.wait_exit("agent-1", WAIT);
    assert!(status.success(), "agent-1 exits 0 after its deadline: {status}");
    let t = c
        .wait_task("overlong", |t| state(t) == v1::TaskState::Failed, "failed")
        .await;
    let attempt = t.attempts.last().expect("an attempt");
    assert_eq!(attempt.end, "killed", "{attempt:?}");
    assert!(attempt.error.contains("drain deadline"), "{attempt:?}");
}
