//! Graceful lifecycle with real `taurus` processes: SIGTERM on the leader hands leadership over
//! without losing an acknowledged submit, and `taurus agent drain ID --exit` makes an agent
//! finish its running work (or kill it at the deadline), report, and exit 0 while new work
//! goes elsewhere. On a failure every log in the test directory is printed and it is kept.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Agents;
use common::Masters;
use common::eventually;
use taurus_client::Client;
use taurus_client::v1;

/// Bound of every wait for something that should happen within seconds.
const WAIT: Duration = Duration::from_secs(30);

/// Masters and agents of one test in one directory; fields drop in order (processes first).
struct Cluster {
    agents: Agents,
    masters: Masters,
    path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    async fn start(master_toml: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("taurus-lifecycle-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        let c = Cluster {
            agents: Agents::new(&path),
            masters: Masters::start_in(&path, master_toml),
            path,
            dir: Some(dir),
        };
        c.leader(None).await;
        c
    }

    fn client(&self) -> Client {
        Client::new(self.masters.addrs.clone())
            .expect("client")
            .with_deadline(Duration::from_secs(15))
    }

    /// Waits for a leader other than `not`, as seen through any master.
    async fn leader(&self, not: Option<u64>) -> u64 {
        let client = self.client();
        eventually("a leader", WAIT, async || match client.cluster_status().await {
            Ok(s) if s.leader != 0 && Some(s.leader) != not => Ok(s.leader),
            Ok(s) => Err(format!("leader {}", s.leader)),
            Err(e) => Err(e.to_string()),
        })
        .await
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|f| f.is_file());
        files.sort();
        for f in files {
            eprintln!(
                "\n--- {} (last 40 lines) ---\n{}",
                f.display(),
                common::log_tail(&f, 40)
            );
        }
        if let Some(dir) = self.dir.take() {
            eprintln!("test directory kept: {}", dir.keep().display());
        }
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

    let log = std::fs::read_to_string(c.path.join(format!("master-{leader}.log"))).unwrap_or_default();
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

    let client = c.client();
    client
        .submit(vec![task("long", "sleep 3", Some(("slot", "one")))])
        .await
        .expect("submit");
    c.wait_task("long", |t| state(t) == v1::TaskState::Running, "running")
        .await;

    let r = common::run(&[
        "--masters",
        &flag,
        "agent",
        "drain",
        "agent-1",
        "--exit",
        "--deadline",
        "60s",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("exits"), "{r:?}");

    // New work goes to the other agent while agent-1 drains.
    client
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
    let client = c.client();
    client
        .submit(vec![task("overlong", "sleep 120", None)])
        .await
        .expect("submit");
    c.wait_task("overlong", |t| state(t) == v1::TaskState::Running, "running")
        .await;

    let r = common::run(&[
        "--masters",
        &flag,
        "agent",
        "drain",
        "agent-1",
        "--exit",
        "--deadline",
        "1s",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let status = c.agents.wait_exit("agent-1", WAIT);
    assert!(status.success(), "agent-1 exits 0 after its deadline: {status}");
    let t = c
        .wait_task("overlong", |t| state(t) == v1::TaskState::Failed, "failed")
        .await;
    let attempt = t.attempts.last().expect("an attempt");
    assert_eq!(attempt.end, "killed", "{attempt:?}");
    assert!(attempt.error.contains("drain deadline"), "{attempt:?}");
}
