//! Scheduling end to end: real `taurus` masters and agents, and tasks that are real processes.
//!
//! Every test starts its own cluster in a temporary directory: 3 masters with
//! [`common::FAST_SCHEDULER_TOML`] (agent_ttl 3.5 s, lease 1.5 s) and agents with the matching
//! short lease. The tasks are observed from outside the scheduler: their scripts append lines
//! `KIND NANOS TASK ATTEMPT PID` (wall clock of this machine, attempt from the `TAURUS_ATTEMPT`
//! the agent sets) to an observation file and write their pids to files, so a test can tell
//! when each execution ran, which attempt it was, and whether its process is gone, without
//! trusting what the scheduler says about it. On a failure the tail of every log and
//! observation file is printed and the directory is kept.

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use common::Agents;
use common::Masters;
use common::TestDir;
use common::eventually;
use common::pid_alive;
use taurus_client::Client;
use taurus_client::v1;
use taurus_jepsen::proxy::TcpProxy;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;

/// Bound of every wait for something that should happen within seconds.
const WAIT: Duration = Duration::from_secs(30);
/// Bound of the wait for a killed process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// Masters, agents and proxies of one test, in one directory. Fields drop in order: the
/// processes are killed before the directory is removed (or, on a failure, shown and kept).
struct Cluster {
    agents: Agents,
    masters: Masters,
    proxies: Vec<TcpProxy>,
    dir: TestDir,
}

impl Cluster {
    /// Three masters with a leader, no agents yet.
    async fn masters_only() -> Cluster {
        let dir = TestDir::new("taurus-scheduling-");
        let c = Cluster {
            agents: Agents::new(dir.path()),
            masters: Masters::start_in(dir.path(), common::FAST_SCHEDULER_TOML),
            proxies: Vec::new(),
            dir,
        };
        c.wait_leader(None).await;
        c
    }

    /// Three masters and agents `agent-1` .. `agent-N`, each connected to every master, alive.
    async fn start(agents: usize) -> Cluster {
        let mut c = Self::masters_only().await;
        let ids: Vec<String> = (1..=agents).map(|i| format!("agent-{i}")).collect();
        let flag = c.masters.flag();
        for id in &ids {
            c.agents.start(id, &flag, &[]);
        }
        c.wait_agents_alive(&ids).await;
        c
    }

    /// A client of every master.
    fn client(&self) -> Client {
        self.masters.client()
    }

    /// A client of master `id` alone.
    fn client_of(&self, id: u64) -> Client {
        Client::new(vec![self.masters.addr(id).to_string()])
            .expect("client")
            .with_deadline(Duration::from_secs(5))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits for a leader (other than `not`) and returns its id.
    async fn wait_leader(&self, not: Option<u64>) -> u64 {
        common::wait_leader(&self.client(), not, WAIT).await
    }

    /// Waits until every agent in `ids` is registered and alive (linearizable read).
    async fn wait_agents_alive(&self, ids: &[String]) -> BTreeMap<String, v1::AgentInfo> {
        let client = self.client();
        eventually("the agents alive", WAIT, async || {
            let list = client.list_agents(false).await.map_err(|e| e.to_string())?;
            let alive: BTreeMap<String, v1::AgentInfo> = list
                .agents
                .into_iter()
                .filter(|a| a.state == v1::AgentState::Alive as i32)
                .map(|a| (a.id.clone(), a))
                .collect();
            if ids.iter().all(|id| alive.contains_key(id)) {
                Ok(alive)
            } else {
                Err(format!("alive: {:?}", alive.keys().collect::<Vec<_>>()))
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks and what they are seen to do
// ---------------------------------------------------------------------------------------------

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// A task running `sh -c SCRIPT`, with `OBS` (the observation file) and `DIR` (the test
/// directory) in its environment.
fn sh_task(c: &Cluster, id: &str, script: &str) -> v1::TaskSpec {
    let mut spec = v1::TaskSpec {
        id: id.to_string(),
        command: vec!["sh".into(), "-c".into(), script.to_string()],
        ..Default::default()
    };
    let obs = c.file("tasks.obs");
    spec.env.insert("OBS".into(), obs.display().to_string());
    spec.env.insert("DIR".into(), c.dir.path().display().to_string());
    spec
}

/// A shell line appending `KIND NANOS TASK ATTEMPT PID` to the observation file.
fn obs(kind: &str) -> String {
    format!(r#"echo "{kind} $(date +%s%N) $TAURUS_TASK_ID $TAURUS_ATTEMPT $$" >> "$OBS""#)
}

fn state(t: &v1::Task) -> v1::TaskState {
    v1::TaskState::try_from(t.state).unwrap_or(v1::TaskState::Unspecified)
}

fn is_terminal(s: v1::TaskState) -> bool {
    matches!(
        s,
        v1::TaskState::Succeeded | v1::TaskState::Failed | v1::TaskState::Cancelled | v1::TaskState::TimedOut
    )
}

/// One task, read linearizably.
async fn get(client: &Client, id: &str) -> Result<v1::Task, String> {
    let r = client.get_task(id, false).await.map_err(|e| e.to_string())?;
    r.task.ok_or_else(|| "no task in the answer".to_string())
}

async fn wait_terminal(client: &Client, id: &str) -> v1::Task {
    match tokio::time::timeout(WAIT, client.wait_task(id)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => panic!("waiting for task {id}: {e}"),
        Err(_) => panic!("task {id} not terminal within {WAIT:?}"),
    }
}

/// Every task, in id order.
async fn all_tasks(client: &Client, stale: bool) -> Result<BTreeMap<String, v1::Task>, String> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(&[], 1000, &token, stale)
            .await
            .map_err(|e| e.to_string())?;
        for t in page.tasks {
            let id = t.spec.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            out.insert(id, t);
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// The pid in `path`, once the task has written it.
async fn read_pid(path: &Path) -> u32 {
    eventually(&format!("a pid in {}", path.display()), WAIT, async || {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        text.trim().parse::<u32>().map_err(|e| format!("{text:?}: {e}"))
    })
    .await
}

/// Waits until process `pid` is gone; returns when that was seen (ns, wall clock).
async fn wait_gone(pid: u32, what: &str) -> u64 {
    eventually(&format!("{what} (pid {pid}) gone"), KILL_WAIT, async || {
        if pid_alive(pid) {
            Err("still running".to_string())
        } else {
            Ok(now_ns())
        }
    })
    .await
}

/// One line of an observation file.
#[derive(Clone, Debug)]
struct ObsLine {
    kind: String,
    ns: u64,
    task: String,
    attempt: u32,
    pid: u32,
}

fn read_obs(path: &Path) -> Vec<ObsLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_obs(&text, path)
}

/// The lines of observation file `path`, whose text is `text`.
fn parse_obs(text: &str, path: &Path) -> Vec<ObsLine> {
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parsed = (f.len() == 5).then(|| {
                Some(ObsLine {
                    kind: f[0].to_string(),
                    ns: f[1].parse().ok()?,
                    task: f[2].to_string(),
                    attempt: f[3].parse().ok()?,
                    pid: f[4].parse().ok()?,
                })
            });
            parsed
                .flatten()
                .unwrap_or_else(|| panic!("bad observation line {line:?} in {}", path.display()))
        })
        .collect()
}

/// One run of a task's script, as its lines show it: the process `pid` running attempt
/// `attempt` of `task`, first seen at `start` and last at `last`; `ended` when it wrote its
/// end line, i.e. was not killed.
#[derive(Clone, Debug)]
struct Execution {
    task: String,
    attempt: u32,
    pid: u32,
    start: u64,
    last: u64,
    ended: bool,
}

/// The executions in `lines`, ordered by start. Every script writes its start line first.
fn executions(lines: &[ObsLine]) -> Vec<Execution> {
    let mut by_run: BTreeMap<(String, u32, u32), Execution> = BTreeMap::new();
    for l in lines {
        let key = (l.task.clone(), l.attempt, l.pid);
        match by_run.get_mut(&key) {
            None => {
                assert_eq!(
                    l.kind, "start",
                    "the first line of an execution is its start: {l:?}"
                );
                by_run.insert(
                    key,
                    Execution {
                        task: l.task.clone(),
                        attempt: l.attempt,
                        pid: l.pid,
                        start: l.ns,
                        last: l.ns,
                        ended: false,
                    },
                );
            }
            Some(e) => {
                assert_ne!(l.kind, "start", "an execution starts once: {l:?}");
                e.last = e.last.max(l.ns);
                e.ended |= l.kind == "end";
            }
        }
    }
    let mut out: Vec<Execution> = by_run.into_values().collect();
    out.sort_by_key(|e| e.start);
    out
}

/// Asserts that no two executions of one task overlap in time.
///
/// An execution's interval is `[start, last]`, from its first to its last line. For one that
/// wrote its end line that is its whole life (the end line is its last act). One without an
/// end line was killed at an unknown moment after its last line, so `[start, last]` is only
/// what is certain about it: an execution that was meant to be killed but went on running
/// would keep writing lines (the scripts that can be killed write one every 50-100 ms) and be
/// caught, but one killed a moment after its last line, after the next execution started, is
/// not. Tests that kill executions on purpose check the kill itself (the pid is gone) before
/// the next start.
fn assert_no_overlap(execs: &[Execution]) {
    let mut by_task: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
    for e in execs {
        by_task.entry(&e.task).or_default().push(e);
    }
    for (task, mut runs) in by_task {
        runs.sort_by_key(|e| e.start);
        for pair in runs.windows(2) {
            // Sorted by start: if each ends before the next starts, all are disjoint.
            assert!(
                pair[0].last < pair[1].start,
                "task {task}: two executions overlap in time:\n  {:?}\n  {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Results, from every master
// ---------------------------------------------------------------------------------------------

/// Tasks run on the agents; their results (state, exit code, output, agent, timestamps) are
/// the same on every master, read linearizably from each master alone right after one client
/// saw the task end. A failing command ends `failed` with its exit code; with max_attempts 3
/// it runs 3 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_the_same_on_every_master_and_failures_are_retried() {
    let started = Instant::now();
    let c = Cluster::start(2).await;
    let client = c.client();
    let t0 = now_ms();

    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut t = sh_task(
            &c,
            &format!("ok-{i}"),
            r#"echo "$GREETING $TAURUS_TASK_ID $TAURUS_ATTEMPT $TAURUS_FENCING_TOKEN"; pwd"#,
        );
        t.env.insert("GREETING".into(), format!("hello-{i}"));
        tasks.push(t);
    }
    tasks.push(sh_task(&c, "fails", "echo out; echo err >&2; exit 3"));
    let attempts_file = c.file("retried.attempts");
    let mut retried = sh_task(
        &c,
        "retried",
        r#"echo "$TAURUS_ATTEMPT" >> "$DIR/retried.attempts"
echo "attempt $TAURUS_ATTEMPT fails" >&2
exit 7"#,
    );
    retried.max_attempts = 3;
    retried.backoff_ms = Some(100);
    tasks.push(retried);
    tasks.push(v1::TaskSpec {
        id: "noop".into(),
        command: vec!["taurus:noop".into()],
        ..Default::default()
    });
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    client.submit(tasks).await.expect("submit");

    let mut results = BTreeMap::new();
    for id in &ids {
        let waited = wait_terminal(&client, id).await;
        // The client saw the end; a linearizable read on any master must see it too, at once.
        let mut seen = Vec::new();
        for m in 1..=3u64 {
            let r = c
                .client_of(m)
                .get_task(id, false)
                .await
                .unwrap_or_else(|e| panic!("read {id} on master {m}: {e}"));
            let read = r.read.expect("read info");
            assert_eq!(read.served_by, m, "{read:?}");
            assert!(!read.stale, "a default read is linearizable: {read:?}");
            seen.push(r.task.expect("task"));
        }
        for (i, t) in seen.iter().enumerate() {
            assert_eq!(
                t,
                &waited,
                "master {} disagrees with what the client saw end",
                i + 1
            );
        }
        results.insert(id.clone(), waited);
    }
    let now = now_ms();

    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let id = format!("ok-{i}");
        let t = &results[&id];
        assert_eq!(state(t), v1::TaskState::Succeeded, "{t:?}");
        assert_eq!(t.attempts.len(), 1, "{t:?}");
        let a = &t.attempts[0];
        assert_eq!(
            (a.number, a.end.as_str(), a.exit_code),
            (1, "succeeded", Some(0)),
            "{a:?}"
        );
        assert!(a.agent_id == "agent-1" || a.agent_id == "agent-2", "{a:?}");
        *placed.entry(a.agent_id.clone()).or_default() += 1;
        // What the process itself printed: its environment and its working directory, which
        // is under the work directory of the agent the attempt names.
        let lines: Vec<&str> = a.stdout_tail.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(format!("hello-{i} {id} 1 {}", a.fencing_token).as_str()),
            "{a:?}"
        );
        let cwd_suffix = format!("/{}/tasks/{id}-{}", a.agent_id, a.fencing_token);
        assert!(
            lines.get(1).is_some_and(|l| l.ends_with(&cwd_suffix)),
            "expected a working directory ending {cwd_suffix}: {a:?}"
        );
        assert_eq!(a.stderr_tail, "", "{a:?}");
        let (started_at, finished_at) = (
            a.started_at_ms.expect("started_at"),
            a.finished_at_ms.expect("finished_at"),
        );
        assert!(
            t0 <= t.submitted_at_ms
                && t.submitted_at_ms <= a.assigned_at_ms
                && a.assigned_at_ms <= started_at
                && started_at <= finished_at
                && finished_at <= now,
            "timestamps out of order (test ran {t0}..{now}): {t:?}"
        );
    }
    eprintln!("ok tasks per agent: {placed:?}");

    let t = &results["fails"];
    assert_eq!(state(t), v1::TaskState::Failed, "{t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    let a = &t.attempts[0];
    assert_eq!((a.end.as_str(), a.exit_code), ("failed", Some(3)), "{a:?}");
    assert_eq!(
        (a.stdout_tail.as_str(), a.stderr_tail.as_str()),
        ("out\n", "err\n"),
        "{a:?}"
    );

    let t = &results["retried"];
    assert_eq!(state(t), v1::TaskState::Failed, "{t:?}");
    assert_eq!(t.attempts.len(), 3, "{t:?}");
    for (i, a) in t.attempts.iter().enumerate() {
        assert_eq!(a.number, i as u32 + 1, "{t:?}");
        assert_eq!((a.end.as_str(), a.exit_code), ("failed", Some(7)), "{a:?}");
        assert_eq!(a.stderr_tail, format!("attempt {} fails\n", i + 1), "{a:?}");
    }
    assert!(
        t.attempts
            .windows(2)
            .all(|w| w[0].fencing_token < w[1].fencing_token),
        "each attempt has a newer fencing token: {t:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&attempts_file).expect("the retried task ran"),
        "1\n2\n3\n",
        "the command itself ran exactly 3 times"
    );

    let t = &results["noop"];
    assert_eq!(state(t), v1::TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts[0].exit_code, Some(0), "{t:?}");

    // Nothing is left on the agents' books.
    let agents = client.list_agents(false).await.expect("list agents").agents;
    assert_eq!(agents.len(), 2, "{agents:?}");
    for a in &agents {
        assert_eq!(a.state, v1::AgentState::Alive as i32, "{a:?}");
        assert_eq!(
            a.tasks, 0,
            "a finished task still counts against its agent: {a:?}"
        );
    }
    eprintln!("results test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 2. An agent killed mid-task
// ---------------------------------------------------------------------------------------------

/// SIGKILL of the agent running a task: its process dies with it, the task runs again on the
/// other agent once the leader declares the dead one down (first attempt `lost`), and a late
/// FINISHED report for the first attempt, sent in the dead agent's name, is rejected `stale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_task_reruns_elsewhere_and_its_late_report_is_stale() {
    let started = Instant::now();
    let mut c = Cluster::start(2).await;
    let client = c.client();
    // Attempt 1 sleeps (as the shell's own process; see the tests below for background
    // processes); attempt 2 finishes after 2 s. The pid file is written after the start line, so a test
    // that has read it knows the start line is there.
    let script = format!(
        r#"{start}
echo $$ > "$DIR/victim.pid-$TAURUS_ATTEMPT"
if [ "$TAURUS_ATTEMPT" = 1 ]; then exec sleep 20; fi
sleep 2
{end}"#,
        start = obs("start"),
        end = obs("end"),
    );
    let mut task = sh_task(&c, "victim", &script);
    task.max_attempts = 2;
    task.backoff_ms = Some(0);
    client.submit(vec![task]).await.expect("submit");

    let first = eventually("the task running", WAIT, async || {
        let t = get(&client, "victim").await?;
        match t.attempts.first() {
            Some(a) if state(&t) == v1::TaskState::Running && a.started_at_ms.is_some() => Ok(a.clone()),
            _ => Err(format!("{t:?}")),
        }
    })
    .await;
    let pid1 = read_pid(&c.file("victim.pid-1")).await;
    assert!(pid_alive(pid1), "attempt 1 runs");
    let victim_agent = first.agent_id.clone();
    let other_agent = if victim_agent == "agent-1" {
        "agent-2"
    } else {
        "agent-1"
    };

    let killed_at = now_ns();
    c.agents.kill(&victim_agent);
    let gone_at = wait_gone(pid1, "attempt 1 after its agent was SIGKILLed").await;

    let second = eventually("attempt 2 started", WAIT, async || {
        let t = get(&client, "victim").await?;
        match t.attempts.get(1) {
            Some(a) if a.started_at_ms.is_some() => Ok(t.clone()),
            _ => Err(format!("{t:?}")),
        }
    })
    .await;
    let lost = &second.attempts[0];
    assert_eq!(lost.agent_id, victim_agent, "{second:?}");
    assert_eq!(lost.end, "lost", "{second:?}");
    let a2 = &second.attempts[1];
    assert_eq!(
        a2.agent_id, other_agent,
        "the task runs again on the other agent: {second:?}"
    );
    assert!(a2.fencing_token > first.fencing_token, "{second:?}");

    // The dead agent's late report of attempt 1, through every master (followers forward it).
    for m in 1..=3u64 {
        let mut agent_api = AgentServiceClient::connect(format!("http://{}", c.masters.addr(m)))
            .await
            .expect("connect to a master");
        let answer = agent_api
            .report_task_status(v1::ReportTaskStatusRequest {
                agent_id: victim_agent.clone(),
                reports: vec![v1::TaskStatusReport {
                    task_id: "victim".into(),
                    fencing_token: first.fencing_token,
                    kind: v1::ReportKind::Finished as i32,
                    end: "succeeded".into(),
                    exit_code: Some(0),
                    stdout_tail: "late".into(),
                    ..Default::default()
                }],
            })
            .await
            .expect("report answered")
            .into_inner();
        assert_eq!(answer.results.len(), 1, "{answer:?}");
        assert_eq!(
            answer.results[0].outcome, "stale",
            "via master {m}, a report of the lost attempt: {answer:?}"
        );
    }

    let done = wait_terminal(&client, "victim").await;
    assert_eq!(state(&done), v1::TaskState::Succeeded, "{done:?}");
    assert_eq!(done.attempts.len(), 2, "{done:?}");
    assert_eq!(
        done.attempts[0].end, "lost",
        "the stale report changed nothing: {done:?}"
    );
    assert_eq!(done.attempts[0].stdout_tail, "", "{done:?}");
    assert_eq!(done.attempts[1].end, "succeeded", "{done:?}");

    let execs = executions(&read_obs(&c.file("tasks.obs")));
    assert_eq!(execs.len(), 2, "{execs:?}");
    assert_eq!((execs[0].attempt, execs[0].ended), (1, false), "{execs:?}");
    assert_eq!((execs[1].attempt, execs[1].ended), (2, true), "{execs:?}");
    assert!(
        gone_at < execs[1].start,
        "attempt 1's process was still there when attempt 2 started: {execs:?}"
    );
    assert_no_overlap(&execs);
    eprintln!(
        "agent {victim_agent} SIGKILLed: its task's process gone after {:?}, attempt 2 started on \
         {other_agent} after {:?} (agent_ttl 3.5 s); test took {:?}",
        Duration::from_nanos(gone_at - killed_at),
        Duration::from_nanos(execs[1].start.saturating_sub(killed_at)),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. An agent cut off from every master
// ---------------------------------------------------------------------------------------------

/// An agent partitioned from all masters kills its task when its lease runs out, before the
/// leader declares it down and gives the task to another agent, so the two executions never
/// overlap. After the partition heals the agent registers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_kills_its_task_before_it_runs_elsewhere() {
    let started = Instant::now();
    let mut c = Cluster::masters_only().await;
    c.proxies = c
        .masters
        .addrs
        .iter()
        .map(|a| TcpProxy::start(a).expect("start a proxy"))
        .collect();
    let via_proxies = c
        .proxies
        .iter()
        .map(|p| p.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    // agent-1 alone first, so the task lands on it.
    c.agents.start("agent-1", &via_proxies, &[]);
    c.wait_agents_alive(&["agent-1".into()]).await;
    let client = c.client();
    // Attempt 1 would run 30 s, writing a line every 100 ms; attempt 2 runs 0.5 s.
    let script = format!(
        r#"{start}
echo $$ > "$DIR/cut.pid-$TAURUS_ATTEMPT"
if [ "$TAURUS_ATTEMPT" = 1 ]; then n=300; else n=5; fi
i=0
while [ $i -lt $n ]; do sleep 0.1; {tick}; i=$((i+1)); done
{end}"#,
        start = obs("start"),
        tick = obs("tick"),
        end = obs("end"),
    );
    let mut task = sh_task(&c, "cut", &script);
    task.max_attempts = 2;
    task.backoff_ms = Some(0);
    client.submit(vec![task]).await.expect("submit");
    eventually("the task running on agent-1", WAIT, async || {
        let t = get(&client, "cut").await?;
        match t.attempts.first() {
            Some(a) if state(&t) == v1::TaskState::Running && a.agent_id == "agent-1" => Ok(()),
            _ => Err(format!("{t:?}")),
        }
    })
    .await;
    let pid1 = read_pid(&c.file("cut.pid-1")).await;
    assert!(pid_alive(pid1), "attempt 1 runs");

    let flag = c.masters.flag();
    c.agents.start("agent-2", &flag, &[]);
    let epoch_before = c.wait_agents_alive(&["agent-1".into(), "agent-2".into()]).await["agent-1"].epoch;

    let cut_at = now_ns();
    for p in &c.proxies {
        p.cut();
    }
    let gone_at = wait_gone(pid1, "attempt 1 on the partitioned agent").await;

    let done = wait_terminal(&client, "cut").await;
    assert_eq!(state(&done), v1::TaskState::Succeeded, "{done:?}");
    assert_eq!(done.attempts.len(), 2, "{done:?}");
    let (a1, a2) = (&done.attempts[0], &done.attempts[1]);
    assert_eq!(
        (a1.agent_id.as_str(), a1.end.as_str()),
        ("agent-1", "lost"),
        "{done:?}"
    );
    assert_eq!(
        (a2.agent_id.as_str(), a2.end.as_str()),
        ("agent-2", "succeeded"),
        "{done:?}"
    );
    let gone_ms = gone_at.div_ceil(1_000_000);
    assert!(
        gone_ms <= a2.assigned_at_ms,
        "the partitioned agent's process was seen gone at {gone_ms} ms, after the leader gave \
         the task to agent-2 at {} ms: {done:?}",
        a2.assigned_at_ms
    );

    let execs = executions(&read_obs(&c.file("tasks.obs")));
    assert_eq!(execs.len(), 2, "{execs:?}");
    let (e1, e2) = (&execs[0], &execs[1]);
    assert_eq!((e1.attempt, e1.pid, e1.ended), (1, pid1, false), "{execs:?}");
    assert_eq!((e2.attempt, e2.ended), (2, true), "{execs:?}");
    assert!(
        gone_at < e2.start,
        "attempt 1 still existed when attempt 2 started: {execs:?}"
    );
    assert_no_overlap(&execs);
    eprintln!(
        "after the cut: attempt 1's last line after {:?}, its process seen gone after {:?}, attempt 2 \
         assigned after {:?} and started after {:?} (lease 1.5 s, agent_ttl 3.5 s)",
        Duration::from_nanos(e1.last.saturating_sub(cut_at)),
        Duration::from_nanos(gone_at - cut_at),
        Duration::from_millis(a2.assigned_at_ms.saturating_sub(cut_at / 1_000_000)),
        Duration::from_nanos(e2.start.saturating_sub(cut_at)),
    );

    // Healed, the agent comes back as a new incarnation.
    for p in &c.proxies {
        p.heal();
    }
    let info = eventually("agent-1 registered again", WAIT, async || {
        let a = client
            .get_agent("agent-1", false)
            .await
            .map_err(|e| e.to_string())?;
        if a.state == v1::AgentState::Alive as i32 && a.epoch > epoch_before {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    assert_eq!(info.tasks, 0, "{info:?}");
    eprintln!("partition test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3b and 3c. A task's background processes, when its agent is SIGKILLed or paused
// ---------------------------------------------------------------------------------------------

/// The script of the two tests below, for task `name`: attempt 1 starts a background subshell
/// that writes a tick line every 50 ms (with the shell's pid, `$$`, so its lines belong to
/// attempt 1's execution), writes the pids of the shell and of the subshell to
/// `DIR/NAME.pid-1` and `DIR/NAME.writer-1` (the latter first), and waits; attempt 2 runs
/// 0.5 s.
fn background_writer_script(name: &str) -> String {
    format!(
        r#"{start}
if [ "$TAURUS_ATTEMPT" = 1 ]; then
  ( while true; do {tick}; sleep 0.05; done ) &
  echo $! > "$DIR/{name}.writer-1"
  echo $$ > "$DIR/{name}.pid-1"
  wait
fi
sleep 0.5
{end}"#,
        start = obs("start"),
        tick = obs("tick"),
        end = obs("end"),
    )
}

/// Attempt 1's lines in the observation file, once it has written a few ticks; with the pids
/// of its shell and of its background writer.
async fn background_writer_running(c: &Cluster, name: &str) -> (u32, u32) {
    let writer = read_pid(&c.file(&format!("{name}.writer-1"))).await;
    let shell = read_pid(&c.file(&format!("{name}.pid-1"))).await;
    let obs_file = c.file("tasks.obs");
    eventually("a few ticks of attempt 1", WAIT, async || {
        let ticks = read_complete_obs(&obs_file)
            .iter()
            .filter(|l| l.task == name && l.attempt == 1 && l.kind == "tick")
            .count();
        if ticks >= 3 {
            Ok(())
        } else {
            Err(format!("{ticks} ticks"))
        }
    })
    .await;
    assert!(pid_alive(shell) && pid_alive(writer), "attempt 1 runs");
    (shell, writer)
}

/// The complete lines of an observation file that tasks may be appending to.
fn read_complete_obs(path: &Path) -> Vec<ObsLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_obs(&text[..text.rfind('\n').map_or(0, |i| i + 1)], path)
}

/// How many lines attempt 1 of `task` has written.
fn attempt_1_lines(path: &Path, task: &str) -> usize {
    read_complete_obs(path)
        .iter()
        .filter(|l| l.task == task && l.attempt == 1)
        .count()
}

/// The first two attempts of `task`, once the second has started; asserts the first was
/// `lost` on `agent` and the second runs on another agent.
async fn wait_rerun(client: &Client, task: &str, agent: &str) -> v1::Task {
    let t = eventually("attempt 2 started", WAIT, async || {
        let t = get(client, task).await?;
        match t.attempts.get(1) {
            Some(a) if a.started_at_ms.is_some() => Ok(t.clone()),
            _ => Err(format!("{t:?}")),
        }
    })
    .await;
    assert_eq!(
        (t.attempts[0].agent_id.as_str(), t.attempts[0].end.as_str()),
        (agent, "lost"),
        "{t:?}"
    );
    assert_ne!(t.attempts[1].agent_id, agent, "{t:?}");
    t
}

/// SIGKILL of the agent running a task whose shell left a background process: that process
/// dies with the agent, within a second (not when the agent restarts, which it never does
/// here), so it never overlaps the attempt the other agent runs after `agent_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_background_processes_die_with_it() {
    let started = Instant::now();
    let mut c = Cluster::start(2).await;
    let client = c.client();
    let mut task = sh_task(&c, "bg", &background_writer_script("bg"));
    task.max_attempts = 2;
    task.backoff_ms = Some(0);
    client.submit(vec![task]).await.expect("submit");
    let (shell, writer) = background_writer_running(&c, "bg").await;
    let victim = get(&client, "bg").await.expect("read").attempts[0]
        .agent_id
        .clone();

    let killed_at = now_ns();
    c.agents.kill(&victim);
    let writer_gone = eventually(
        &format!("the background writer (pid {writer}) gone within 1 s of its agent's SIGKILL"),
        Duration::from_secs(1),
        async || {
            if pid_alive(writer) {
                Err("still running".into())
            } else {
                Ok(now_ns())
            }
        },
    )
    .await;
    let shell_gone = wait_gone(shell, "attempt 1's shell").await;
    let obs_file = c.file("tasks.obs");
    let lines = attempt_1_lines(&obs_file, "bg");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        attempt_1_lines(&obs_file, "bg"),
        lines,
        "attempt 1 still writes after its processes were seen gone"
    );

    let rerun = wait_rerun(&client, "bg", &victim).await;
    let done = wait_terminal(&client, "bg").await;
    assert_eq!(state(&done), v1::TaskState::Succeeded, "{done:?}");
    let execs = executions(&read_obs(&obs_file));
    assert_eq!(execs.len(), 2, "{execs:?}");
    let (e1, e2) = (&execs[0], &execs[1]);
    assert_eq!((e1.attempt, e1.pid, e1.ended), (1, shell, false), "{execs:?}");
    assert_eq!((e2.attempt, e2.ended), (2, true), "{execs:?}");
    assert!(
        writer_gone.max(shell_gone) < e2.start,
        "attempt 1 still existed when attempt 2 started: {execs:?}"
    );
    assert_no_overlap(&execs);
    eprintln!(
        "agent {victim} SIGKILLed: background writer gone after {:?}, attempt 1's last line after {:?}, \
         attempt 2 assigned after {:?} (agent_ttl 3.5 s); test took {:?}",
        Duration::from_nanos(writer_gone - killed_at),
        Duration::from_nanos(e1.last.saturating_sub(killed_at)),
        Duration::from_millis(
            rerun.attempts[1]
                .assigned_at_ms
                .saturating_sub(killed_at / 1_000_000)
        ),
        started.elapsed()
    );
}

/// SIGSTOP of the agent running a task: the agent cannot fence itself, but its task (the shell
/// and its background writer) is killed when its lease runs out (1.5 s after the last
/// acknowledged heartbeat was sent), before the leader declares the agent down (3.5 s after it
/// received that heartbeat) and reruns the task on the other agent, so the runs never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agents_task_is_killed_when_its_lease_runs_out() {
    let started = Instant::now();
    let mut c = Cluster::start(2).await;
    let client = c.client();
    let mut task = sh_task(&c, "paused", &background_writer_script("paused"));
    task.max_attempts = 2;
    task.backoff_ms = Some(0);
    client.submit(vec![task]).await.expect("submit");
    let (shell, writer) = background_writer_running(&c, "paused").await;
    let victim = get(&client, "paused").await.expect("read").attempts[0]
        .agent_id
        .clone();

    let stopped_at = now_ns();
    c.agents.signal(&victim, libc::SIGSTOP);
    // The lease ends at most 1.5 s after the pause (counted from the send time of a heartbeat
    // acknowledged before it); give the kill 1 s more, still well before agent_ttl (3.5 s).
    let limit = Duration::from_millis(2500);
    let gone_at = eventually(
        "the paused agent's task gone by the end of its lease",
        limit,
        async || {
            if pid_alive(writer) || pid_alive(shell) {
                Err(format!(
                    "writer alive: {}, shell alive: {}",
                    pid_alive(writer),
                    pid_alive(shell)
                ))
            } else {
                Ok(now_ns())
            }
        },
    )
    .await;
    let obs_file = c.file("tasks.obs");
    let lines = attempt_1_lines(&obs_file, "paused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        attempt_1_lines(&obs_file, "paused"),
        lines,
        "attempt 1 still writes after its processes were seen gone"
    );

    let rerun = wait_rerun(&client, "paused", &victim).await;
    let a2 = &rerun.attempts[1];
    let gone_ms = gone_at.div_ceil(1_000_000);
    assert!(
        gone_ms <= a2.assigned_at_ms,
        "the paused agent's task was seen gone at {gone_ms} ms, after the leader gave it to {} \
         at {} ms: {rerun:?}",
        a2.agent_id,
        a2.assigned_at_ms
    );
    let done = wait_terminal(&client, "paused").await;
    assert_eq!(state(&done), v1::TaskState::Succeeded, "{done:?}");
    let execs = executions(&read_obs(&obs_file));
    assert_eq!(execs.len(), 2, "{execs:?}");
    let (e1, e2) = (&execs[0], &execs[1]);
    assert_eq!((e1.attempt, e1.pid, e1.ended), (1, shell, false), "{execs:?}");
    assert_eq!((e2.attempt, e2.ended), (2, true), "{execs:?}");
    assert!(
        gone_at < e2.start,
        "attempt 1 still existed when attempt 2 started: {execs:?}"
    );
    assert_no_overlap(&execs);

    // The paused agent wakes up (it must fence itself and never report attempt 1), then goes.
    c.agents.signal(&victim, libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.agents.kill(&victim);
    let after = get(&client, "paused").await.expect("read");
    assert_eq!(after.attempts.len(), 2, "{after:?}");
    assert_eq!(after.attempts[0].end, "lost", "{after:?}");
    eprintln!(
        "agent {victim} paused: its task gone after {:?}, attempt 1's last line after {:?}, attempt 2 \
         assigned after {:?} (lease 1.5 s, agent_ttl 3.5 s); test took {:?}",
        Duration::from_nanos(gone_at - stopped_at),
        Duration::from_nanos(e1.last.saturating_sub(stopped_at)),
        Duration::from_millis(a2.assigned_at_ms.saturating_sub(stopped_at / 1_000_000)),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The leader killed with 200 tasks in flight
// ---------------------------------------------------------------------------------------------

/// SIGKILL of the leader while 200 tasks run and wait: every task still ends `succeeded`, is
/// found on the surviving masters, never ran twice at once (observation file), and the
/// restarted master catches up with all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_with_200_tasks_in_flight_loses_none_and_runs_none_twice_at_once() {
    const TASKS: usize = 200;
    let started = Instant::now();
    let mut c = Cluster::start(2).await;
    let client = c.client();
    // 100-300 ms each, a line every 50 ms.
    let script = format!(
        r#"{start}
i=0
while [ $i -lt $TICKS ]; do sleep 0.05; {tick}; i=$((i+1)); done
{end}"#,
        start = obs("start"),
        tick = obs("tick"),
        end = obs("end"),
    );
    let ids: Vec<String> = (0..TASKS).map(|i| format!("load-{i:03}")).collect();
    let specs: Vec<v1::TaskSpec> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut t = sh_task(&c, id, &script);
            t.env.insert("TICKS".into(), (2 + i % 5).to_string());
            t.max_attempts = 3;
            t.backoff_ms = Some(100);
            t
        })
        .collect();
    client.submit(specs).await.expect("submit");

    // Kill the leader once some tasks are done, most running or queued.
    let obs_file = c.file("tasks.obs");
    // Counts complete end lines only: the tasks append while this reads.
    let ended = || {
        let text = std::fs::read_to_string(&obs_file).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete.lines().filter(|l| l.starts_with("end ")).count()
    };
    eventually("30 tasks done", WAIT, async || {
        let n = ended();
        if n >= 30 { Ok(()) } else { Err(format!("{n} done")) }
    })
    .await;
    let leader = c.client().cluster_status().await.expect("status").leader;
    assert_ne!(leader, 0, "a leader");
    let killed_at = Instant::now();
    c.masters.kill(leader);
    let ended_at_kill = ended();
    assert!(
        ended_at_kill < TASKS / 2,
        "the tasks ran too fast for the kill to land among them ({ended_at_kill} done)"
    );
    let survivors: Vec<u64> = (1..=3).filter(|m| *m != leader).collect();
    let surviving = Client::new(survivors.iter().map(|m| c.masters.addr(*m).to_string()).collect())
        .expect("client")
        .with_deadline(Duration::from_secs(15));
    let new_leader = c.wait_leader(Some(leader)).await;

    let tasks = eventually("every task terminal", Duration::from_secs(90), async || {
        let all = all_tasks(&surviving, false).await?;
        let open = all.values().filter(|t| !is_terminal(state(t))).count();
        if all.len() >= TASKS && open == 0 {
            Ok(all)
        } else {
            Err(format!("{} tasks listed, {open} not terminal", all.len()))
        }
    })
    .await;
    let all_done = killed_at.elapsed();
    let listed: BTreeSet<&String> = tasks.keys().collect();
    let expected: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        listed, expected,
        "the surviving masters list exactly the submitted tasks"
    );
    let not_succeeded: Vec<&v1::Task> = tasks
        .values()
        .filter(|t| state(t) != v1::TaskState::Succeeded)
        .collect();
    assert!(
        not_succeeded.is_empty(),
        "tasks that did not succeed: {not_succeeded:#?}"
    );

    // What the processes did, against what the scheduler says.
    let execs = executions(&read_obs(&obs_file));
    let mut runs: BTreeMap<(&str, u32), &Execution> = BTreeMap::new();
    for e in &execs {
        let t = tasks
            .get(&e.task)
            .unwrap_or_else(|| panic!("an execution of an unknown task: {e:?}"));
        assert!(
            (1..=t.attempts.len() as u32).contains(&e.attempt),
            "an execution of an attempt the scheduler never made: {e:?}\n{t:?}"
        );
        if let Some(other) = runs.insert((&e.task, e.attempt), e) {
            panic!(
                "attempt {} of {} ran twice:\n  {other:?}\n  {e:?}",
                e.attempt, e.task
            );
        }
        let end = t.attempts[e.attempt as usize - 1].end.as_str();
        assert!(
            e.ended || end != "succeeded",
            "attempt ended succeeded but its process never wrote its end line: {e:?}\n{t:?}"
        );
    }
    for (id, t) in &tasks {
        let last = t.attempts.last().expect("a succeeded task has an attempt");
        assert!(
            runs.get(&(id.as_str(), last.number)).is_some_and(|e| e.ended),
            "the succeeded attempt of {id} has no complete execution: {t:?}"
        );
    }
    assert_no_overlap(&execs);
    let retried = tasks.values().filter(|t| t.attempts.len() > 1).count();
    let killed = execs.iter().filter(|e| !e.ended).count();

    // The killed master comes back from its data directory and catches up.
    c.masters.restart(leader);
    let back = c.client_of(leader);
    let caught_up = eventually(
        "the restarted master caught up",
        Duration::from_secs(60),
        async || {
            let all = all_tasks(&back, true).await?;
            let succeeded = all
                .values()
                .filter(|t| state(t) == v1::TaskState::Succeeded)
                .count();
            if all.len() == TASKS && succeeded == TASKS {
                Ok(all)
            } else {
                Err(format!("{} tasks, {succeeded} succeeded", all.len()))
            }
        },
    )
    .await;
    assert_eq!(caught_up, tasks, "the restarted master's copy differs");
    get(&back, "load-000")
        .await
        .expect("a linearizable read on the restarted master");
    eprintln!(
        "killed leader {leader} with {ended_at_kill}/{TASKS} tasks done; new leader {new_leader}; \
         all terminal {all_done:?} after the kill; {retried} tasks needed more than one attempt, \
         {killed} executions were killed; test took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. Cancel and timeout kill the process
// ---------------------------------------------------------------------------------------------

/// Cancelling a running task kills its process and ends the task and its attempt `cancelled`.
/// A task running past its timeout is killed, retried, and ends `timed_out` with every
/// attempt `timed_out` and every process gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_kill_the_process() {
    let started = Instant::now();
    let c = Cluster::start(2).await;
    let client = c.client();
    let cancelled = sh_task(
        &c,
        "cancelled",
        r#"echo $$ > "$DIR/cancelled.pid"; exec sleep 60"#,
    );
    let mut timed_out = sh_task(
        &c,
        "timed-out",
        r#"echo $$ >> "$DIR/timed-out.pids"; exec sleep 30"#,
    );
    timed_out.timeout_ms = 1000;
    timed_out.max_attempts = 2;
    timed_out.backoff_ms = Some(0);
    client.submit(vec![cancelled, timed_out]).await.expect("submit");

    // Cancel.
    let pid = read_pid(&c.file("cancelled.pid")).await;
    eventually("the task running", WAIT, async || {
        let t = get(&client, "cancelled").await?;
        if state(&t) == v1::TaskState::Running {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    })
    .await;
    assert!(pid_alive(pid), "the task's process runs");
    let asked = Instant::now();
    let answer = client
        .cancel_task("cancelled", "test cancel")
        .await
        .expect("cancel");
    assert!(answer.cancelled, "{answer:?}");
    assert_eq!(answer.state, v1::TaskState::Cancelled as i32, "{answer:?}");
    wait_gone(pid, "the cancelled task's process").await;
    let kill_took = asked.elapsed();
    let t = get(&client, "cancelled").await.expect("read");
    assert_eq!(state(&t), v1::TaskState::Cancelled, "{t:?}");
    assert!(t.reason.contains("test cancel"), "{t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert_eq!(t.attempts[0].end, "cancelled", "{t:?}");

    // Timeout.
    let t = wait_terminal(&client, "timed-out").await;
    assert_eq!(state(&t), v1::TaskState::TimedOut, "{t:?}");
    assert_eq!(t.attempts.len(), 2, "{t:?}");
    for a in &t.attempts {
        assert_eq!(a.end, "timed_out", "{t:?}");
        assert!(a.error.contains("timed out"), "{a:?}");
        let ran = a.finished_at_ms.expect("finished") - a.started_at_ms.expect("started");
        assert!(ran >= 1000, "killed before its timeout ({ran} ms): {a:?}");
    }
    let pids: Vec<u32> = std::fs::read_to_string(c.file("timed-out.pids"))
        .expect("pids")
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "the command ran once per attempt: {pids:?}");
    for pid in pids {
        wait_gone(pid, "a timed-out process").await;
    }
    eprintln!(
        "cancel: process gone {kill_took:?} after the cancel was asked; test took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Dependencies
// ---------------------------------------------------------------------------------------------

/// A chain a→b→c and a diamond d→{e,f}→g run in dependency order (each dependent starts after
/// each of its dependencies ended, by the processes' own clocks); a dependency that fails
/// (`false`) fails its dependents, transitively, without running them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_run_in_order_and_a_failure_fails_the_dependents() {
    let started = Instant::now();
    let c = Cluster::start(2).await;
    let client = c.client();
    let script = format!("{}; sleep 0.3; {}", obs("start"), obs("end"));
    let edges: [(&str, &[&str]); 10] = [
        ("a", &[]),
        ("b", &["a"]),
        ("c", &["b"]),
        ("d", &[]),
        ("e", &["d"]),
        ("f", &["d"]),
        ("g", &["e", "f"]),
        ("x", &[]),
        ("y", &["x"]),
        ("z", &["y"]),
    ];
    let deps: BTreeMap<&str, &[&str]> = edges.iter().copied().collect();
    let mut specs: BTreeMap<&str, v1::TaskSpec> = BTreeMap::new();
    for (id, after) in edges {
        let mut t = sh_task(&c, id, &script);
        if id == "x" {
            t.command = vec!["false".into()];
        }
        t.depends_on = after.iter().map(|d| d.to_string()).collect();
        specs.insert(id, t);
    }
    // Dependents before their dependencies in the batch: the order within a batch is free.
    let order = ["g", "c", "z", "e", "a", "y", "f", "b", "x", "d"];
    let batch: Vec<v1::TaskSpec> = order.iter().map(|id| specs[id].clone()).collect();
    client.submit(batch).await.expect("submit");

    let mut done = BTreeMap::new();
    for id in order {
        done.insert(id, wait_terminal(&client, id).await);
    }
    let execs = executions(&read_obs(&c.file("tasks.obs")));
    let run_of = |id: &str| -> &Execution {
        let runs: Vec<&Execution> = execs.iter().filter(|e| e.task == id).collect();
        assert_eq!(runs.len(), 1, "{id} ran once: {execs:?}");
        assert!(runs[0].ended, "{runs:?}");
        runs[0]
    };
    for id in ["a", "b", "c", "d", "e", "f", "g"] {
        let t = &done[id];
        assert_eq!(state(t), v1::TaskState::Succeeded, "{t:?}");
        for dep in deps[id] {
            assert!(
                run_of(dep).last < run_of(id).start,
                "{id} started before its dependency {dep} ended: {execs:?}"
            );
            let dep_finished = done[dep].attempts[0].finished_at_ms.expect("finished");
            assert!(
                dep_finished <= t.attempts[0].assigned_at_ms,
                "{id} was assigned before {dep} finished: {t:?}\n{:?}",
                done[dep]
            );
        }
    }
    let x = &done["x"];
    assert_eq!(state(x), v1::TaskState::Failed, "{x:?}");
    assert_eq!(x.attempts[0].exit_code, Some(1), "{x:?}");
    for (id, dep) in [("y", "x"), ("z", "y")] {
        let t = &done[id];
        assert_eq!(state(t), v1::TaskState::Failed, "{t:?}");
        assert!(t.attempts.is_empty(), "{id} never started: {t:?}");
        assert!(
            t.reason.contains(&format!("dependency {dep}")),
            "the reason names the dependency {dep}: {t:?}"
        );
        assert!(!execs.iter().any(|e| e.task == id), "{id} ran: {execs:?}");
    }
    eprintln!("dependencies test took {:?}", started.elapsed());
}
