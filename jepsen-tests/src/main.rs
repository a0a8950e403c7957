//! `taurus-jepsen`: runs a loopback Taurus cluster under faults, records a history, checks it.
//!
//! ```text
//! taurus-jepsen --time-limit 20s --seed 1 --masters 3 --agents 2 \
//!     --nemesis kill,pause,partition-agent [--taurus target/debug/taurus]
//! ```
//!
//! Masters and agents are real `taurus` processes on 127.0.0.1 (agents reach the masters
//! through cuttable TCP proxies). Results go to `jepsen-tests/results/<timestamp>/` (or
//! `--results-dir`): `history.jsonl`, `executions.log`, `report.txt` and every node's log.
//!
//! Exit codes: 0 every checker valid; 1 a checker found an anomaly; 2 a checker could not decide
//! (`unknown`, e.g. the linearizability search bound ran out: not a pass); 3 the harness itself
//! failed (cluster did not start, Ctrl-C, ...). Every process started is killed and reaped on
//! every path (drop guards), including Ctrl-C.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitCode;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use clap::Parser;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use taurus_client::Client;
use taurus_jepsen::checker;
use taurus_jepsen::checker::CheckInput;
use taurus_jepsen::checker::CompletionOutcome;
use taurus_jepsen::checker::FinalAttempt;
use taurus_jepsen::checker::FinalTask;
use taurus_jepsen::checker::Valid;
use taurus_jepsen::execlog;
use taurus_jepsen::history::EventType;
use taurus_jepsen::history::OpValue;
use taurus_jepsen::proxy::TcpProxy;
use taurus_jepsen::recorder::Recorder;
use taurus_jepsen::workload;

const SCHEDULER_TOML: &str = concat!(
    "[scheduler]\n",
    "agent_ttl = \"3500ms\"\n",
    "lease_timeout = \"1500ms\"\n",
    "interval = \"50ms\"\n",
);

const AGENT_TOML: &str = concat!(
    "heartbeat_interval = \"300ms\"\n",
    "lease_timeout = \"1500ms\"\n",
    "masters_agent_ttl = \"3500ms\"\n",
    "rpc_timeout = \"1s\"\n",
    "connect_timeout = \"500ms\"\n",
    "max_tasks = 8\n",
);

/// Process id of the nemesis in the history.
const NEMESIS: u64 = 1_000_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "taurus-jepsen",
    about = "Failure-injection run of a loopback Taurus cluster"
)]
struct Args {
    /// How long the workload runs (e.g. 20s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    time_limit: Duration,
    /// Seed of the workload and nemesis choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    masters: usize,
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Comma-separated faults: kill, pause, partition-agent (empty: none).
    #[arg(long, default_value = "kill,pause,partition-agent", value_delimiter = ',')]
    nemesis: Vec<String>,
    /// Path of the `taurus` binary (default: next to this binary, then the workspace's
    /// target/debug/taurus or target/release/taurus).
    #[arg(long)]
    taurus: Option<PathBuf>,
    /// Where results go (default: jepsen-tests/results/<timestamp>).
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Longest wait after healing for every task to become terminal.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    quiet_limit: Duration,
    /// Deliberately break a guarantee, to prove the checkers catch it (README, "Bug-injection
    /// proof"). `no-fence`: agents run with `TAURUS_AGENT_UNSAFE_NO_FENCE=1` (no self-fencing
    /// on lease expiry); the run must then fail.
    #[arg(long, value_enum)]
    inject_bug: Option<InjectBug>,
    /// Every task runs this long (e.g. 8s) and logs progress lines, instead of 0.1 s or 0.5 s.
    #[arg(long, value_parser = parse_duration)]
    task_duration: Option<Duration>,
    /// How long a `partition-agent` fault holds (default: random, 1.5 to 3 s, under the
    /// masters' agent_ttl of 3.5 s; longer makes the leader reassign the agent's tasks).
    #[arg(long, value_parser = parse_duration)]
    partition_hold: Option<Duration>,
    /// Clients never cancel (so stranded tasks are rerun, as the bug-injection proof needs).
    #[arg(long)]
    no_cancel: bool,
    /// Attempts each agent runs at once (its `--max-tasks`).
    #[arg(long, default_value_t = 8)]
    agent_max_tasks: u32,
}

/// A bug `--inject-bug` can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InjectBug {
    /// Agents do not self-fence when their lease expires (nor do their task supervisors).
    NoFence,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {s:?} (use ms, s or m)")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Pause,
    PartitionAgent,
}

fn parse_faults(names: &[String]) -> anyhow::Result<Vec<Fault>> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        out.push(match n {
            "kill" => Fault::Kill,
            "pause" => Fault::Pause,
            "partition-agent" => Fault::PartitionAgent,
            other => bail!("unknown nemesis {other:?} (known: kill, pause, partition-agent)"),
        });
    }
    Ok(out)
}

fn find_taurus(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p);
        }
        bail!("--taurus {}: no such file", p.display());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("taurus"));
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(ws.join("target/debug/taurus"));
    candidates.push(ws.join("target/release/taurus"));
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no taurus binary found (looked at {}); build it with `cargo build -p taurus-cli` or pass --taurus PATH",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// One `taurus` process; SIGKILLed and reaped on drop.
struct Node {
    name: String,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    fn signal(&mut self, sig: i32) -> anyhow::Result<()> {
        let Some(c) = &self.child else {
            bail!("{} is not running", self.name);
        };
        let pid = i32::try_from(c.id())?;
        // SAFETY: kill(2) of our own child, not reaped yet (we hold its Child).
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The cluster: masters, agents and the agents' proxies. Dropping it kills everything.
struct Cluster {
    taurus: PathBuf,
    dir: PathBuf,
    /// Extra environment of every agent (the injected bug).
    agent_env: Vec<(String, String)>,
    agent_max_tasks: u32,
    master_addrs: Vec<String>,
    masters: Vec<Node>,
    agents: Vec<Node>,
    /// proxies[a][m]: agent a's way to master m.
    proxies: Vec<Vec<TcpProxy>>,
}

impl Cluster {
    fn start(
        taurus: PathBuf,
        dir: &Path,
        n_masters: usize,
        n_agents: usize,
        agent_env: Vec<(String, String)>,
        agent_max_tasks: u32,
    ) -> anyhow::Result<Cluster> {
        let master_addrs = free_ports(n_masters)?
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        std::fs::write(dir.join("master.toml"), SCHEDULER_TOML)?;
        std::fs::write(dir.join("agent.toml"), AGENT_TOML)?;
        let mut c = Cluster {
            taurus,
            dir: dir.to_path_buf(),
            agent_env,
            agent_max_tasks,
            master_addrs,
            masters: Vec::new(),
            agents: Vec::new(),
            proxies: Vec::new(),
        };
        for i in 0..n_masters {
            let child = c.spawn_master(i)?;
            c.masters.push(Node {
                name: format!("m{}", i + 1),
                child: Some(child),
                paused: false,
            });
        }
        for a in 0..n_agents {
            let proxies = c
                .master_addrs
                .iter()
                .map(|m| TcpProxy::start(m))
                .collect::<Result<Vec<_>, _>>()?;
            let via: Vec<String> = proxies.iter().map(|p| p.addr.clone()).collect();
            c.proxies.push(proxies);
            let name = format!("a{}", a + 1);
            let child = c.spawn_agent(&name, &via.join(","))?;
            c.agents.push(Node {
                name,
                child: Some(child),
                paused: false,
            });
        }
        Ok(c)
    }

    fn command(&self, log: &str) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))?;
        let mut cmd = Command::new(&self.taurus);
        for (key, _) in std::env::vars() {
            if key.starts_with("TAURUS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(cmd)
    }

    fn spawn_master(&self, i: usize) -> anyhow::Result<Child> {
        let peers = self
            .master_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let id = i + 1;
        let mut cmd = self.command(&format!("m{id}.log"))?;
        cmd.args(["master", "start", "--id", &id.to_string()])
            .args(["--listen", &self.master_addrs[i]])
            .args(["--peers", &peers])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{id}")))
            .arg("--config")
            .arg(self.dir.join("master.toml"));
        cmd.spawn().context("starting a master")
    }

    fn spawn_agent(&self, name: &str, masters: &str) -> anyhow::Result<Child> {
        let mut cmd = self.command(&format!("{name}.log"))?;
        cmd.args(["--masters", masters, "agent", "start", "--id", name])
            .arg("--work-dir")
            .arg(self.dir.join(name))
            .arg("--config")
            .arg(self.dir.join("agent.toml"))
            .args([
                "--heartbeat-interval",
                "300ms",
                "--lease-timeout",
                "1500ms",
                "--max-tasks",
            ])
            .arg(self.agent_max_tasks.to_string());
        cmd.envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        cmd.spawn().context("starting an agent")
    }

    fn restart_master(&mut self, i: usize) -> anyhow::Result<()> {
        let child = self.spawn_master(i)?;
        self.masters[i].child = Some(child);
        Ok(())
    }

    /// Resumes every paused node, heals every proxy, restarts every dead master.
    fn heal_all(&mut self) -> anyhow::Result<()> {
        for n in self.masters.iter_mut().chain(self.agents.iter_mut()) {
            if n.paused {
                let _ = n.signal(libc::SIGCONT);
                n.paused = false;
            }
        }
        for p in self.proxies.iter().flatten() {
            p.heal();
        }
        for i in 0..self.masters.len() {
            if self.masters[i].child.is_none() {
                self.restart_master(i)?;
            }
        }
        Ok(())
    }

    /// An error naming the first node that exited by itself.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for n in self.masters.iter_mut().chain(self.agents.iter_mut()) {
            if let Some(c) = &mut n.child
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("{} exited by itself ({status}); see {}.log", n.name, n.name);
            }
        }
        Ok(())
    }
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nemesis_event(rec: &Recorder, kind: EventType, f: &str, value: serde_json::Value) {
    rec.record(
        NEMESIS,
        kind,
        OpValue::Other {
            f: f.to_string(),
            value,
        },
    );
}

/// Injects the faults of `faults` in turn every few seconds until `stop_at`, each undone
/// before the next.
async fn nemesis(
    cluster: Shared<Cluster>,
    admin: Client,
    rec: Arc<Recorder>,
    faults: Vec<Fault>,
    seed: u64,
    stop_at: Instant,
    partition_hold: Option<Duration>,
) {
    if faults.is_empty() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
    // Round-robin from a seeded start, so a short run sees every enabled fault.
    let mut round = rng.random_range(0..faults.len());
    loop {
        let gap = Duration::from_millis(rng.random_range(500..1500));
        tokio::time::sleep(gap).await;
        if Instant::now() + Duration::from_secs(1) >= stop_at {
            return;
        }
        let fault = faults[round % faults.len()];
        round += 1;
        let hold = Duration::from_millis(rng.random_range(1500..3000));
        match fault {
            Fault::Kill => {
                let i = rng.random_range(0..lock(&cluster).masters.len());
                let node = format!("m{}", i + 1);
                let v = serde_json::json!({"node": node});
                nemesis_event(&rec, EventType::Invoke, "kill", v.clone());
                lock(&cluster).masters[i].kill();
                nemesis_event(&rec, EventType::Info, "kill", v.clone());
                tokio::time::sleep(hold).await;
                nemesis_event(&rec, EventType::Invoke, "restart", v.clone());
                let r = lock(&cluster).restart_master(i);
                let mut done = v;
                if let Err(e) = r {
                    done["error"] = serde_json::Value::String(e.to_string());
                }
                nemesis_event(&rec, EventType::Info, "restart", done);
            }
            Fault::Pause => {
                let (n_m, n_a) = {
                    let c = lock(&cluster);
                    (c.masters.len(), c.agents.len())
                };
                let k = rng.random_range(0..n_m + n_a);
                let v = {
                    let mut c = lock(&cluster);
                    let node = if k < n_m {
                        &mut c.masters[k]
                    } else {
                        &mut c.agents[k - n_m]
                    };
                    let v = serde_json::json!({"node": node.name});
                    nemesis_event(&rec, EventType::Invoke, "pause", v.clone());
                    if node.signal(libc::SIGSTOP).is_ok() {
                        node.paused = true;
                    }
                    nemesis_event(&rec, EventType::Info, "pause", v.clone());
                    v
                };
                tokio::time::sleep(hold).await;
                let mut c = lock(&cluster);
                let node = if k < n_m {
                    &mut c.masters[k]
                } else {
                    &mut c.agents[k - n_m]
                };
                nemesis_event(&rec, EventType::Invoke, "resume", v.clone());
                if node.paused {
                    let _ = node.signal(libc::SIGCONT);
                    node.paused = false;
                }
                nemesis_event(&rec, EventType::Info, "resume", v);
            }
            Fault::PartitionAgent => {
                let hold = partition_hold.unwrap_or(hold);
                // The agent holding the most tasks (a seeded random one when that cannot be
                // read): cutting off an idle agent tests little.
                let n = lock(&cluster).agents.len();
                let fallback = rng.random_range(0..n);
                let a = busiest_agent(&admin, n).await.unwrap_or(fallback);
                let v = serde_json::json!({"node": format!("a{}", a + 1)});
                nemesis_event(&rec, EventType::Invoke, "partition-agent", v.clone());
                for p in &lock(&cluster).proxies[a] {
                    p.cut();
                }
                nemesis_event(&rec, EventType::Info, "partition-agent", v.clone());
                tokio::time::sleep(hold).await;
                nemesis_event(&rec, EventType::Invoke, "heal-agent", v.clone());
                for p in &lock(&cluster).proxies[a] {
                    p.heal();
                }
                nemesis_event(&rec, EventType::Info, "heal-agent", v);
            }
        }
    }
}

/// Index of the agent (`a1` is 0) with the most tasks assigned or running, by a stale read
/// (any master's view will do); `None` when no master answers or no agent holds anything.
async fn busiest_agent(admin: &Client, agents: usize) -> Option<usize> {
    let list = admin.list_agents(true).await.ok()?;
    list.agents
        .iter()
        .filter(|a| a.tasks > 0)
        .filter_map(|a| {
            let i: usize = a.id.strip_prefix('a')?.parse().ok()?;
            (1..=agents)
                .contains(&i)
                .then_some((a.tasks, std::cmp::Reverse(i), i - 1))
        })
        .max()
        .map(|(_, _, i)| i)
}

/// Waits until a leader is known and every agent is registered.
async fn wait_ready(client: &Client, agents: usize, cluster: &Shared<Cluster>) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < give_up {
        lock(cluster).check_running()?;
        match client.cluster_status().await {
            Ok(s) if s.leader != 0 => match client.list_agents(false).await {
                Ok(l) if l.agents.len() >= agents => return Ok(()),
                Ok(l) => last = format!("{} of {agents} agents registered", l.agents.len()),
                Err(e) => last = e.to_string(),
            },
            Ok(_) => last = "no leader yet".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("cluster not ready within 30 s: {last}")
}

fn final_task(t: &taurus_client::v1::Task) -> FinalTask {
    FinalTask {
        state: workload::task_state(t.state),
        attempts: t
            .attempts
            .iter()
            .map(|a| FinalAttempt {
                number: a.number,
                token: a.fencing_token,
                agent: a.agent_id.clone(),
                accepted: match a.end.as_str() {
                    "succeeded" => Some(CompletionOutcome::Succeeded),
                    "failed" => Some(CompletionOutcome::Failed),
                    "timed_out" => Some(CompletionOutcome::TimedOut),
                    _ => None,
                },
            })
            .collect(),
    }
}

/// Reads every id until all found tasks are terminal (or `limit` passes): the final snapshot.
async fn final_snapshot(
    client: &Client,
    ids: &[String],
    limit: Duration,
) -> anyhow::Result<BTreeMap<String, FinalTask>> {
    let give_up = Instant::now() + limit;
    loop {
        let mut out = BTreeMap::new();
        let mut all_terminal = true;
        let mut read_error = None;
        for id in ids {
            match client.get_task(id, false).await {
                Ok(r) => {
                    if let Some(t) = &r.task {
                        let f = final_task(t);
                        all_terminal &= f.state.is_some_and(|s| s.is_terminal());
                        out.insert(id.clone(), f);
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    read_error = Some(format!("{id}: {e}"));
                    break;
                }
            }
        }
        if read_error.is_none() && (all_terminal || Instant::now() >= give_up) {
            return Ok(out);
        }
        if Instant::now() >= give_up {
            bail!("final snapshot: {}", read_error.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(args: Args, dir: PathBuf) -> anyhow::Result<Valid> {
    let faults = parse_faults(&args.nemesis)?;
    let taurus = find_taurus(args.taurus.clone())?;
    anyhow::ensure!(
        args.masters >= 1 && args.agents >= 1,
        "need at least one master and one agent"
    );
    println!("results: {}", dir.display());
    let agent_env = match args.inject_bug {
        None => Vec::new(),
        Some(InjectBug::NoFence) => {
            println!("INJECTED BUG: no-fence (agents run with TAURUS_AGENT_UNSAFE_NO_FENCE=1)");
            vec![("TAURUS_AGENT_UNSAFE_NO_FENCE".to_string(), "1".to_string())]
        }
    };
    let cluster = Arc::new(Mutex::new(Cluster::start(
        taurus,
        &dir,
        args.masters,
        args.agents,
        agent_env,
        args.agent_max_tasks,
    )?));
    let addrs = lock(&cluster).master_addrs.clone();
    let admin = Client::new(addrs.clone())?.with_deadline(Duration::from_secs(5));
    wait_ready(&admin, args.agents, &cluster).await?;

    let rec = Arc::new(Recorder::new());
    let exec_log = dir.join("executions.log");
    std::fs::write(&exec_log, "")?;
    let stop_at = Instant::now() + args.time_limit;
    let nem = tokio::spawn(nemesis(
        cluster.clone(),
        admin.clone(),
        rec.clone(),
        faults,
        args.seed,
        stop_at,
        args.partition_hold,
    ));
    let outcome = workload::run(
        workload::WorkloadConfig {
            masters: addrs,
            clients: args.clients,
            time_limit: args.time_limit,
            seed: args.seed,
            exec_log: exec_log.clone(),
            deadline: Duration::from_secs(2),
            task_duration: args.task_duration,
            cancels: !args.no_cancel,
        },
        rec.clone(),
    )
    .await;
    nem.abort();
    let _ = nem.await;

    nemesis_event(&rec, EventType::Invoke, "heal", serde_json::json!({}));
    lock(&cluster).heal_all()?;
    nemesis_event(&rec, EventType::Info, "heal", serde_json::json!({}));
    wait_ready(&admin, args.agents, &cluster).await?;
    let final_tasks = final_snapshot(&admin, &outcome.submitted, args.quiet_limit).await?;
    // Let tasks that ran at the very end finish their log lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rec.write_jsonl(&dir.join("history.jsonl"))?;

    let history = rec.history();
    let ops = history.ops()?;
    let log_text = std::fs::read_to_string(&exec_log)?;
    let executions = execlog::merge_executions(execlog::parse_execution_log(&log_text, "executions.log")?);
    let input = CheckInput {
        ops: &ops,
        executions: &executions,
        final_tasks: &final_tasks,
    };
    let checkers = checker::all_checkers();
    let refs: Vec<&dyn checker::Checker> = checkers.iter().map(|c| c.as_ref()).collect();
    let (valid, verdicts) = checker::check_all(&refs, &input);

    let mut report = String::new();
    let nemesis_ops = ops.iter().filter(|o| o.process == NEMESIS).count();
    writeln!(
        report,
        "seed {} time-limit {:?} masters {} agents {} nemesis {} inject-bug {:?} task-duration {:?} partition-hold {:?}",
        args.seed,
        args.time_limit,
        args.masters,
        args.agents,
        args.nemesis.join(","),
        args.inject_bug,
        args.task_duration,
        args.partition_hold,
    )?;
    writeln!(
        report,
        "ops {} ({:?}), nemesis ops {nemesis_ops}, tasks submitted {}, in final snapshot {}, executions {}",
        ops.len() - nemesis_ops,
        outcome.counts,
        outcome.submitted.len(),
        final_tasks.len(),
        executions.len()
    )?;
    for (name, v) in &verdicts {
        let word = match v.valid {
            Valid::True => "valid",
            Valid::False => "INVALID",
            Valid::Unknown => "UNKNOWN",
        };
        writeln!(report, "{name}: {word} {:?}", v.stats)?;
        for a in v.anomalies.iter().take(10) {
            writeln!(report, "    {:?} {:?}: {}", a.kind, a.task, a.detail)?;
        }
        for n in &v.notes {
            writeln!(report, "    note: {n}")?;
        }
    }
    print!("{report}");
    std::fs::write(dir.join("report.txt"), &report)?;
    Ok(valid)
}

fn results_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d,
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("results")
                .join(format!("{}-{}", now.as_secs(), std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(std::path::absolute(&dir)?)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = match results_dir(args.results_dir.clone()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(3);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(args, dir) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Dropping the runtime drops every task, and with them the cluster (its drop kills and
    // reaps every process) before the exit code is returned.
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(Valid::True) => {
            println!("verdict: valid");
            ExitCode::SUCCESS
        }
        Ok(Valid::False) => {
            println!("verdict: INVALID (anomalies found, see report.txt)");
            ExitCode::from(1)
        }
        Ok(Valid::Unknown) => {
            println!("verdict: UNKNOWN (a checker could not decide; this is not a pass)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}
