//! `taurus-jepsen`: runs a Taurus cluster on real test hosts under faults, records a history,
//! checks it, and writes a report.
//!
//! ```text
//! taurus-jepsen --time-limit 60s --seed 1 --masters 5 --agents 3 \
//!     --nemesis partition,kill,pause [--concurrency 2] [--taurus target/debug/taurus]
//! ```
//!
//! Every master and agent is a real `taurus` process in its own network namespace with its own
//! address on a bridge ([`taurus_jepsen::net`]; needs root), with real sled directories.
//! Results go to `jepsen-tests/results/<timestamp>-<pid>/` (or `--results-dir`):
//! `history.jsonl`, `executions/<agent>.log`, `report.txt`, `report.html`, `latency.svg`, `rate.svg`
//! and every node's log; the sled directories are removed at the end unless `--keep-data`.
//!
//! Exit codes: 0 every checker valid; 1 a checker found an anomaly; 2 a checker could not decide
//! (`unknown`, e.g. the linearizability search bound ran out: not a pass); 3 the harness itself
//! failed (a host could not be made, the cluster did not start, Ctrl-C, ...). Every process,
//! namespace and data directory is removed on every path, including Ctrl-C and SIGTERM; what a
//! SIGKILLed run leaves behind is removed by the next run.

mod cluster;
mod nemesis;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use clap::Parser;
use taurus_client::Client;
use taurus_jepsen::checker;
use taurus_jepsen::checker::CheckInput;
use taurus_jepsen::checker::CompletionOutcome;
use taurus_jepsen::checker::FinalAttempt;
use taurus_jepsen::checker::FinalTask;
use taurus_jepsen::checker::Valid;
use taurus_jepsen::checker::Verdict;
use taurus_jepsen::execlog;
use taurus_jepsen::history::EventType;
use taurus_jepsen::recorder::Recorder;
use taurus_jepsen::report;
use taurus_jepsen::report::NEMESIS_PROCESS;
use taurus_jepsen::workload;

use crate::cluster::Cluster;
use crate::nemesis::Ctx;
use crate::nemesis::Shared;
use crate::nemesis::lock;

#[derive(Parser, Debug)]
#[command(
    name = "taurus-jepsen",
    about = "Failure-injection run of a Taurus cluster on network-namespace hosts (needs root)"
)]
struct Args {
    /// How long the workload runs (e.g. 60s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    time_limit: Duration,
    /// Seed of the workload and nemesis choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Masters (3 or 5 make sense; at least 3 for the partition and membership faults).
    #[arg(long, default_value_t = 3)]
    masters: usize,
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Comma-separated faults (`all`, `partition` = every master partition, `none`, or names:
    /// partition-one, partition-leader, partition-halves, partition-bridge, partition-ring,
    /// partition-one-way, kill, kill-leader, kill-all, pause, pause-leader, pause-agent,
    /// partition-agent, kill-agent, clock, member, corrupt).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    nemesis: Vec<String>,
    /// Faults active at once (2 or more makes them overlap).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Path of the `taurus` binary (default: next to this binary, then the workspace's
    /// target/debug/taurus or target/release/taurus, else built with cargo).
    #[arg(long)]
    taurus: Option<PathBuf>,
    /// Where results go (default: jepsen-tests/results/<timestamp>-<pid>).
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Keep the masters' sled directories and the agents' work directories after the run.
    #[arg(long)]
    keep_data: bool,
    /// Run the cluster secured: mutual TLS on every channel (a CA and certificates made for
    /// the run in <results>/tls) and authentication on (the harness bootstraps the ACL and
    /// uses the admin token; agents authenticate with their certificates).
    #[arg(long)]
    secure: bool,
    /// Longest wait after healing for every task to become terminal.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    quiet_limit: Duration,
    /// Deliberately break a guarantee, to prove the checkers catch it (README, "Bug-injection
    /// proof"). The run must then fail.
    #[arg(long, value_enum)]
    inject_bug: Option<InjectBug>,
    /// Every task runs this long (e.g. 8s) and logs progress lines, instead of 0.1 s or 0.5 s.
    #[arg(long, value_parser = parse_duration)]
    task_duration: Option<Duration>,
    /// How long each partition holds (default: random, 2 to 4 s for masters, 1.5 to 5 s for
    /// agents; longer than the masters' agent_ttl of 3.5 s makes the leader reassign work).
    #[arg(long, value_parser = parse_duration)]
    partition_hold: Option<Duration>,
    /// Clients never cancel (so stranded tasks are rerun, as the no-fence proof needs).
    #[arg(long)]
    no_cancel: bool,
    /// Attempts each agent runs at once (its `--max-tasks`).
    #[arg(long, default_value_t = 8)]
    agent_max_tasks: u32,
}

/// A bug `--inject-bug` can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InjectBug {
    /// Agents do not self-fence when their lease expires (nor do their task supervisors):
    /// `TAURUS_AGENT_UNSAFE_NO_FENCE=1`.
    NoFence,
    /// Masters answer linearizable reads from their local state without a read index:
    /// `TAURUS_UNSAFE_STALE_READS=1`.
    StaleRead,
    /// Masters answer submits before the write is committed:
    /// `TAURUS_UNSAFE_ACK_BEFORE_COMMIT=1`.
    AckBeforeCommit,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
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
    // Run from a fresh clone with `cargo run -p taurus-jepsen`: build the binary it tests.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building the taurus binary (cargo build -p taurus-cli)...");
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "taurus-cli"])
        .current_dir(&ws)
        .status()
        .context("running cargo build -p taurus-cli")?;
    let built = ws.join("target/debug/taurus");
    if status.success() && built.is_file() {
        return Ok(built);
    }
    bail!(
        "no taurus binary found (looked at {}) and `cargo build -p taurus-cli` failed; pass --taurus PATH",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Waits until a leader is known and every agent is registered and alive.
async fn wait_ready(client: &Client, agents: usize, cluster: &Shared<Cluster>) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < give_up {
        if let Some((name, status, tail)) = lock(cluster).crashed().into_iter().next() {
            bail!("{name} exited by itself ({status}) while starting:\n{tail}");
        }
        match client.cluster_status().await {
            Ok(s) if s.leader != 0 => match client.list_agents(false).await {
                Ok(l)
                    if l.agents
                        .iter()
                        .filter(|a| a.state == taurus_client::v1::AgentState::Alive as i32)
                        .count()
                        >= agents =>
                {
                    return Ok(());
                }
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

/// Everything a run produced, for the text and HTML reports.
struct RunSummary {
    header: String,
    lines: String,
}

async fn run(args: Args, dir: PathBuf) -> anyhow::Result<Valid> {
    let faults = nemesis::parse_faults(&args.nemesis)?;
    let taurus = find_taurus(args.taurus.clone())?;
    anyhow::ensure!(args.agents >= 1, "need at least one agent");
    anyhow::ensure!(
        args.masters >= 3 || faults.is_empty(),
        "faults need at least 3 masters (a minority must be able to fail)"
    );
    println!("results: {}", dir.display());
    let (master_env, agent_env) = match args.inject_bug {
        None => (Vec::new(), Vec::new()),
        Some(InjectBug::NoFence) => {
            println!("INJECTED BUG: no-fence (agents run with TAURUS_AGENT_UNSAFE_NO_FENCE=1)");
            (
                Vec::new(),
                vec![("TAURUS_AGENT_UNSAFE_NO_FENCE".to_string(), "1".to_string())],
            )
        }
        Some(InjectBug::AckBeforeCommit) => {
            println!("INJECTED BUG: ack-before-commit (masters run with TAURUS_UNSAFE_ACK_BEFORE_COMMIT=1)");
            (
                vec![("TAURUS_UNSAFE_ACK_BEFORE_COMMIT".to_string(), "1".to_string())],
                Vec::new(),
            )
        }
        Some(InjectBug::StaleRead) => {
            println!("INJECTED BUG: stale-read (masters run with TAURUS_UNSAFE_STALE_READS=1)");
            (
                vec![("TAURUS_UNSAFE_STALE_READS".to_string(), "1".to_string())],
                Vec::new(),
            )
        }
    };
    let setup = cluster::Setup {
        taurus,
        masters: args.masters,
        agents: args.agents,
        master_env,
        agent_env,
        agent_max_tasks: args.agent_max_tasks,
        keep_data: args.keep_data,
        secure: args.secure,
    };
    let cluster = Arc::new(Mutex::new(Cluster::start(setup, &dir)?));
    {
        let c = lock(&cluster);
        println!(
            "network: slot {} (10.213.{}.0/24, namespaces {}; harness at {})",
            c.net.slot(),
            c.net.slot(),
            c.net.namespaces().join(" "),
            c.net.gateway
        );
    }
    run_on(&args, &dir, &faults, &cluster).await
}

async fn run_on(
    args: &Args,
    dir: &Path,
    faults: &[nemesis::Fault],
    cluster: &Shared<Cluster>,
) -> anyhow::Result<Valid> {
    Cluster::bootstrap(cluster).await?;
    if args.secure {
        println!(
            "security: mutual TLS on every channel and authentication on (certificates in {}; \
             the harness uses a bootstrapped admin token, agents their certificates)",
            dir.join("tls").display()
        );
    }
    let addrs = lock(cluster).master_addrs();
    let admin = lock(cluster)
        .client(addrs.clone())?
        .with_deadline(Duration::from_secs(5));
    wait_ready(&admin, args.agents, cluster).await?;

    let rec = Arc::new(Recorder::new());
    // One execution log per agent, written by the tasks themselves: executions/<agent>.log.
    let exec_log = dir.join("executions");
    std::fs::create_dir_all(&exec_log)?;
    let stop_at = Instant::now() + args.time_limit;
    let ctx = Arc::new(Ctx::new(
        cluster.clone(),
        admin.clone(),
        rec.clone(),
        faults,
        args.seed,
        args.partition_hold,
    ));
    let nem = tokio::spawn(nemesis::run(ctx.clone(), args.concurrency, args.seed, stop_at));
    // Read here: a guard in the call below would hold the cluster for the whole workload.
    let security = lock(cluster).security.clone();
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
            security,
        },
        rec.clone(),
    )
    .await;
    // Let the faults in progress finish (each is bounded), so every window is closed.
    if tokio::time::timeout(Duration::from_secs(90), nem).await.is_err() {
        bail!("a nemesis did not finish within 90 s of the end of the workload");
    }

    // Nodes that died although nobody killed them: a crash is a bug.
    let crashes = lock(cluster).crashed();
    ctx.event(EventType::Invoke, "heal", serde_json::json!({}));
    lock(cluster).heal_all()?;
    // Masters replaced mid-fault whose add-master did not go through: add them now.
    let pending: Vec<(usize, u64, String)> = {
        let c = lock(cluster);
        c.masters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.removed)
            .map(|(i, m)| (i, m.id, m.addr.clone()))
            .collect()
    };
    for (i, id, addr) in pending {
        nemesis::add_back(&ctx, i, id, &addr, Duration::from_secs(40)).await?;
    }
    ctx.event(EventType::Info, "heal", serde_json::json!({}));
    wait_ready(&admin, args.agents, cluster).await?;
    // A retry or deadline stamped by a leader whose clock ran ahead comes due that much later in
    // real time: a liveness cost of clock skew, not a lost task. The quiet period covers it.
    let clock_ahead = Duration::from_millis(*nemesis::lock(&ctx.max_clock_ahead_ms));
    let final_tasks = final_snapshot(&admin, &outcome.submitted, args.quiet_limit + clock_ahead).await?;
    // Let tasks that ran at the very end finish their log lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rec.write_jsonl(&dir.join("history.jsonl"))?;

    let history = rec.history();
    let ops = history.ops()?;
    let mut lines = Vec::new();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&exec_log)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in &logs {
        let name = log
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(log)?;
        lines.extend(execlog::parse_execution_log(&text, &name)?);
    }
    let executions = execlog::merge_executions(lines);
    let input = CheckInput {
        ops: &ops,
        executions: &executions,
        final_tasks: &final_tasks,
    };
    let checkers = checker::all_checkers();
    let refs: Vec<&dyn checker::Checker> = checkers.iter().map(|c| c.as_ref()).collect();
    let (mut valid, verdicts) = checker::check_all(&refs, &input);
    let mut verdicts: Vec<(String, Verdict)> =
        verdicts.into_iter().map(|(n, v)| (n.to_string(), v)).collect();

    // Two more verdicts from the harness's own observations.
    let crash_verdict = node_verdict(
        "no-crash",
        crashes
            .iter()
            .map(|(n, s, tail)| format!("{n} exited by itself ({s}): {}", last_lines(tail, 3)))
            .collect(),
        "nodes crashed",
    );
    let damage = lock(&ctx.damage).clone();
    let damage_verdict = node_verdict(
        "damaged-start",
        damage
            .iter()
            .filter(|d| d.outcome == "panicked" || (d.outcome == "refused" && !d.clear))
            .map(|d| {
                format!(
                    "{} after {}: {} without a clear error: {}",
                    d.node, d.detail, d.outcome, d.message
                )
            })
            .collect(),
        "damaged restarts",
    );
    for v in [crash_verdict, damage_verdict] {
        valid = match (valid, v.1.valid) {
            (Valid::False, _) | (_, Valid::False) => Valid::False,
            (Valid::Unknown, _) | (_, Valid::Unknown) => Valid::Unknown,
            _ => Valid::True,
        };
        verdicts.push(v);
    }

    let nemesis_ops = ops.iter().filter(|o| o.process == NEMESIS_PROCESS).count();
    let injected = lock(&ctx.injected).clone();
    let summary = summarize(
        args,
        &ops,
        nemesis_ops,
        &outcome,
        &final_tasks,
        executions.len(),
        &injected,
        &damage,
        &verdicts,
    )?;
    print!("{}{}", summary.header, summary.lines);
    std::fs::write(
        dir.join("report.txt"),
        format!("{}{}", summary.header, summary.lines),
    )?;
    report::write_report(dir, &summary.header, &verdicts, &ops)?;
    Ok(valid)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn node_verdict(name: &str, problems: Vec<String>, what: &str) -> (String, Verdict) {
    let mut stats = BTreeMap::new();
    stats.insert(what.to_string(), problems.len() as u64);
    let anomalies = problems
        .into_iter()
        .map(|detail| checker::Anomaly {
            kind: checker::AnomalyKind::NodeFailure,
            task: None,
            detail,
        })
        .collect();
    (name.to_string(), Verdict::from_anomalies(anomalies, stats))
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &Args,
    ops: &[taurus_jepsen::history::Op],
    nemesis_ops: usize,
    outcome: &workload::WorkloadOutcome,
    final_tasks: &BTreeMap<String, FinalTask>,
    executions: usize,
    injected: &BTreeMap<&'static str, u64>,
    damage: &[nemesis::DamageOutcome],
    verdicts: &[(String, Verdict)],
) -> anyhow::Result<RunSummary> {
    let mut header = String::new();
    writeln!(
        header,
        "seed {} time-limit {:?} masters {} agents {} clients {} nemesis {} concurrency {} inject-bug {:?} task-duration {:?} partition-hold {:?}",
        args.seed,
        args.time_limit,
        args.masters,
        args.agents,
        args.clients,
        args.nemesis.join(","),
        args.concurrency,
        args.inject_bug,
        args.task_duration,
        args.partition_hold,
    )?;
    writeln!(
        header,
        "ops {} ({:?}), nemesis ops {nemesis_ops}, tasks submitted {}, in final snapshot {}, executions {}",
        ops.len() - nemesis_ops,
        outcome.counts,
        outcome.submitted.len(),
        final_tasks.len(),
        executions
    )?;
    writeln!(
        header,
        "faults injected {}: {}",
        injected.values().sum::<u64>(),
        injected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for d in damage {
        writeln!(
            header,
            "damaged {}: {} -> {} {}",
            d.node, d.detail, d.outcome, d.message
        )?;
    }
    for op in ops
        .iter()
        .filter(|o| o.process == NEMESIS_PROCESS && o.f() == "nemesis-error")
    {
        if let taurus_jepsen::history::OpValue::Other { value, .. } = &op.invoke {
            writeln!(header, "nemesis error: {value}")?;
        }
    }
    let mut lines = String::new();
    for (name, v) in verdicts {
        let word = match v.valid {
            Valid::True => "valid",
            Valid::False => "INVALID",
            Valid::Unknown => "UNKNOWN",
        };
        writeln!(lines, "{name}: {word} {:?}", v.stats)?;
        for a in v.anomalies.iter().take(10) {
            writeln!(lines, "    {:?} {:?}: {}", a.kind, a.task, a.detail)?;
        }
        for n in &v.notes {
            writeln!(lines, "    note: {n}")?;
        }
    }
    Ok(RunSummary { header, lines })
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
    // A second run in the same folder would append to the first one's execution logs and mix
    // two histories: refuse rather than report anomalies that never happened.
    for leftover in ["history.jsonl", "executions"] {
        if dir.join(leftover).exists() {
            bail!(
                "{} already holds a run ({leftover}); give another --results-dir",
                dir.display()
            );
        }
    }
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
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return Err(anyhow::anyhow!("cannot handle SIGTERM: {e}")),
        };
        tokio::select! {
            r = run(args, dir) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT); everything started was removed")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated (SIGTERM); everything started was removed")),
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
