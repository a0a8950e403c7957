//! `taurus bench submit`: concurrent SubmitTasks load with pre-built requests.
//! `taurus bench e2e`: the same load of no-op tasks, run to completion by the cluster's agents.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use anyhow::bail;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use serde::Serialize;
use taurus_client::Client;
use taurus_client::TaskState;
use taurus_client::v1;
use taurus_protocol::convert::task_state_from_i32;

use crate::Context;
use crate::args::BenchCmd;
use crate::args::BenchE2eArgs;
use crate::args::BenchSubmitArgs;
use crate::output::print_json;

/// A submitter gives up (and so does the benchmark) after this many failed RPCs in a row.
const MAX_CONSECUTIVE_ERRORS: u32 = 5;
/// The command of `bench e2e` tasks: a built-in no-op that agents complete without forking.
pub const NOOP_COMMAND: &str = "taurus:noop";
/// How often `bench e2e` counts the terminal tasks while it waits.
const COMPLETION_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often `bench e2e` fetches again the tasks of the run that were not terminal yet.
const STRAGGLER_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Most `GetTask` calls in flight while `bench e2e` fetches its tasks.
const MAX_FETCHES_IN_FLIGHT: usize = 256;
/// The terminal states: their count tells `bench e2e` how many tasks have finished.
const TERMINAL_STATES: [TaskState; 4] = [
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
    TaskState::TimedOut,
];

pub async fn run(cmd: BenchCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Submit(args) => submit(args, ctx).await,
        BenchCmd::E2e(args) => e2e(args, ctx).await,
    }
}

/// The pool of `bench submit` tasks. No agent serves it (unless someone starts one with
/// `--pool taurus-bench-unscheduled`), so the benchmark measures durable submission alone and
/// the tasks stay pending instead of making the agents fork 300,000 processes.
pub const SUBMIT_BENCH_POOL: &str = "taurus-bench-unscheduled";

/// Every request of the run, built before the clock starts: ids and each request's
/// `request_id` are fixed up front, so a request that fails is sent again unchanged, never
/// doubles a task, and is recognised as the same request. Every request carries a key, as every
/// request of the client library does, so the benchmark measures what clients get.
pub fn build_requests(tasks: u64, batch: u32) -> Vec<v1::SubmitTasksRequest> {
    let template = v1::TaskSpec {
        command: vec!["true".to_string()],
        pool: SUBMIT_BENCH_POOL.to_string(),
        ..Default::default()
    };
    build_requests_from(&template, tasks, batch)
}

/// Like [`build_requests`], each task a copy of `template` with a fresh UUIDv7 id, each request
/// with a fresh `request_id`.
pub fn build_requests_from(template: &v1::TaskSpec, tasks: u64, batch: u32) -> Vec<v1::SubmitTasksRequest> {
    let batch = u64::from(batch);
    let mut requests = Vec::with_capacity(tasks.div_ceil(batch) as usize);
    let mut left = tasks;
    while left > 0 {
        let n = left.min(batch);
        left -= n;
        let specs = (0..n)
            .map(|_| v1::TaskSpec {
                id: uuid::Uuid::now_v7().to_string(),
                ..template.clone()
            })
            .collect();
        requests.push(v1::SubmitTasksRequest {
            tasks: specs,
            request_id: taurus_client::new_request_id(),
        });
    }
    requests.reverse(); // workers pop from the end: submit in id order
    requests
}

#[derive(Default)]
struct WorkerReport {
    rpcs: u64,
    acknowledged: u64,
    errors: u64,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct BenchReport {
    tasks: u64,
    acknowledged: u64,
    concurrency: u32,
    batch: u32,
    /// Whether the client library coalesced concurrent requests into shared RPCs.
    coalesce: bool,
    /// Submit requests acknowledged (one per worker call; RPCs on the wire when not coalescing).
    rpcs: u64,
    errors: u64,
    elapsed_s: f64,
    tasks_per_s: f64,
    rpcs_per_s: f64,
    latency_ms: Latency,
    leader: Option<u64>,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("cannot create a latency histogram")
}

async fn submit(args: BenchSubmitArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    // One RPC may legitimately queue behind many others: let it use the whole deadline on one
    // master instead of hopping to another one under load.
    let client = ctx.client()?.with_attempt_timeout(ctx.timeout);
    let leader = client.prefer_leader().await?;
    if leader.is_none() && !ctx.json {
        eprintln!("warning: no leader right now (or not among --masters); submitting anyway");
    }
    let requests = build_requests(args.tasks, args.batch);
    let queue = Arc::new(Mutex::new(requests));
    let abort = Arc::new(AtomicBool::new(false));
    let progress = progress_bar(ctx, args.tasks, "tasks")?;

    let started = Instant::now();
    let coalesce = !args.no_coalesce;
    let mut workers = Vec::with_capacity(args.concurrency as usize);
    for _ in 0..args.concurrency {
        let (client, queue, abort, progress) =
            (client.clone(), queue.clone(), abort.clone(), progress.clone());
        let mut histogram = new_histogram()?;
        workers.push(tokio::spawn(async move {
            let report = worker(client, queue, abort, progress, coalesce, &mut histogram).await;
            (report, histogram)
        }));
    }
    let mut total = WorkerReport::default();
    let mut latencies = new_histogram()?;
    for w in workers {
        let (r, h) = w.await.context("a benchmark worker panicked")?;
        total.rpcs += r.rpcs;
        total.acknowledged += r.acknowledged;
        total.errors += r.errors;
        if r.last_error.is_some() {
            total.last_error = r.last_error;
        }
        latencies.add(&h).context("merging latency histograms")?;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let per_s = |n: u64| n as f64 / elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let report = BenchReport {
        tasks: args.tasks,
        acknowledged: total.acknowledged,
        concurrency: args.concurrency,
        batch: args.batch,
        coalesce: !args.no_coalesce,
        rpcs: total.rpcs,
        errors: total.errors,
        elapsed_s: elapsed.as_secs_f64(),
        tasks_per_s: per_s(total.acknowledged),
        rpcs_per_s: per_s(total.rpcs),
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: latencies.max() as f64 / 1000.0,
        },
        leader,
        last_error: total.last_error.clone(),
    };
    if ctx.json {
        print_json(&report)?;
    } else {
        print_report(&report, elapsed);
    }
    if abort.load(Ordering::Relaxed) {
        anyhow::bail!(
            "benchmark stopped after {} failed requests; last error: {}",
            report.errors,
            report.last_error.as_deref().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn worker(
    client: Client,
    queue: Arc<Mutex<Vec<v1::SubmitTasksRequest>>>,
    abort: Arc<AtomicBool>,
    progress: ProgressBar,
    coalesce: bool,
    histogram: &mut Histogram<u64>,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    let mut consecutive_errors = 0;
    while !abort.load(Ordering::Relaxed) {
        let Some(request) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            break;
        };
        let sent = Instant::now();
        let result = if coalesce {
            client.submit_request(&request).await
        } else {
            client.submit_direct(&request).await
        };
        match result {
            Ok(response) => {
                let micros = sent.elapsed().as_micros().max(1) as u64;
                histogram.saturating_record(micros);
                report.rpcs += 1;
                report.acknowledged += response.results.len() as u64;
                progress.inc(response.results.len() as u64);
                consecutive_errors = 0;
            }
            Err(e) => {
                report.errors += 1;
                report.last_error = Some(e.to_string());
                queue.lock().unwrap_or_else(|e| e.into_inner()).push(request);
                consecutive_errors += 1;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    abort.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    report
}

/// A progress bar on stderr, hidden for JSON output or when stderr is not a terminal.
fn progress_bar(ctx: &Context, len: u64, what: &str) -> anyhow::Result<ProgressBar> {
    if ctx.json || !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}");
    let style = ProgressStyle::with_template(&template).context("progress bar template")?;
    bar.set_style(style);
    Ok(bar)
}

fn print_report(r: &BenchReport, elapsed: Duration) {
    let leader = r.leader.map_or("unknown".to_string(), |l| format!("master {l}"));
    println!(
        "submitted {} of {} tasks in {:.2}s (concurrency {}, batch {}, {}, leader {leader})",
        r.acknowledged,
        r.tasks,
        elapsed.as_secs_f64(),
        r.concurrency,
        r.batch,
        if r.coalesce {
            "coalesced"
        } else {
            "one RPC per request"
        }
    );
    println!(
        "throughput: {:.0} tasks/s, {:.0} requests/s",
        r.tasks_per_s, r.rpcs_per_s
    );
    let l = &r.latency_ms;
    println!(
        "latency per request: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.p50, l.p90, l.p99, l.max
    );
    println!("errors: {}", r.errors);
    if let Some(e) = &r.last_error {
        println!("last error: {e}");
    }
}

#[derive(Serialize)]
struct E2eReport {
    tasks: u64,
    agents_alive: usize,
    agents_registered: usize,
    concurrency: u32,
    batch: u32,
    priority: i32,
    leader: Option<u64>,
    /// First submit to the last acknowledgement.
    submit_s: f64,
    /// First submit to the last completion (seen by polling every 20 ms).
    wall_s: f64,
    /// `tasks / wall_s`.
    completed_per_s: f64,
    succeeded: u64,
    /// Tasks that ended in any other terminal state.
    failed: u64,
    /// Attempts made, over all tasks.
    attempts: u64,
    /// Submit requests that failed and were sent again.
    submit_errors: u64,
    /// Submitted to first assigned (`attempts[0].assigned_at_ms - submitted_at_ms`); `null`
    /// when no task was assigned.
    queue_latency_ms: Option<Latency>,
    /// Submitted to the first accepted start (`started_at_ms - submitted_at_ms`); `null` when
    /// no task started.
    submit_to_start_ms: Option<Latency>,
    /// Tasks the latency figures cover.
    started: u64,
}

/// A histogram of milliseconds, 1 ms .. 1 day, 3 significant digits (0 is recorded too).
fn new_ms_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 86_400_000, 3).context("cannot create a latency histogram")
}

/// p50/p90/p99/max of a histogram of milliseconds; `None` when it is empty.
fn latency_ms(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let q = |q: f64| h.value_at_quantile(q) as f64;
    Some(Latency {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: h.max() as f64,
    })
}

/// How many tasks are terminal: `total` of a one-task page filtered by the terminal states.
/// A stale read from the serving master (the leader after `prefer_leader`): it can only
/// under-count, which makes the wait longer, never shorter.
async fn terminal_count(client: &Client, stale: bool) -> anyhow::Result<u64> {
    Ok(client.list_tasks(&TERMINAL_STATES, 1, "", stale).await?.total)
}

fn is_terminal(task: &v1::Task) -> bool {
    task_state_from_i32(task.state, "state").is_ok_and(|s| s.is_terminal())
}

/// Reads one task, stale first (cheap) and linearizable when that fails (a master that has
/// not applied the submission yet answers NOT_FOUND).
async fn fetch_task(client: &Client, id: &str) -> anyhow::Result<v1::Task> {
    let response = match client.get_task(id, true).await {
        Ok(r) => r,
        Err(_) => client.get_task(id, false).await?,
    };
    response
        .task
        .with_context(|| format!("get task {id}: no task in the answer"))
}

/// Waits until every one of `ids` is terminal and returns them, fetching the stragglers again
/// every [`STRAGGLER_POLL_INTERVAL`] until `deadline`; `true` when some had to be waited for.
async fn fetch_terminal(
    client: &Client,
    mut ids: Vec<String>,
    deadline: Instant,
    timeout_total: Duration,
) -> anyhow::Result<(Vec<v1::Task>, bool)> {
    let total = ids.len();
    let mut done = Vec::with_capacity(total);
    let mut waited = false;
    loop {
        let fetched: Vec<(String, anyhow::Result<v1::Task>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let task = fetch_task(client, &id).await;
                (id, task)
            })
            .buffer_unordered(MAX_FETCHES_IN_FLIGHT)
            .collect()
            .await;
        let mut waiting = Vec::new();
        for (id, task) in fetched {
            let task = task.with_context(|| format!("fetching task {id} of the run"))?;
            if is_terminal(&task) {
                done.push(task);
            } else {
                waiting.push((id, crate::output::state_name(task.state)));
            }
        }
        let Some((first, state)) = waiting.first() else {
            return Ok((done, waited));
        };
        if Instant::now() >= deadline {
            bail!(
                "bench e2e: {} of {total} tasks were not terminal after --timeout-total {} \
                 (e.g. {first}, {state}); the count of terminal tasks included tasks of other \
                 clients",
                waiting.len(),
                humantime::format_duration(timeout_total)
            );
        }
        ids = waiting.into_iter().map(|(id, _)| id).collect();
        waited = true;
        tokio::time::sleep(STRAGGLER_POLL_INTERVAL).await;
    }
}

async fn e2e(args: BenchE2eArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?.with_attempt_timeout(ctx.timeout);
    let leader = client.prefer_leader().await?;
    let agents = client.list_agents(false).await?.agents;
    let alive = agents
        .iter()
        .filter(|a| a.state == v1::AgentState::Alive as i32)
        .count();
    if alive == 0 {
        bail!(
            "bench e2e: no agent is alive ({} registered, none alive): start one with \
             `taurus agent start`, and check `taurus agent list`",
            agents.len()
        );
    }
    if !ctx.json {
        let leader = leader.map_or("unknown".to_string(), |l| format!("master {l}"));
        println!(
            "agents alive: {alive} (of {} registered); leader: {leader}",
            agents.len()
        );
    }

    // 1. Build every request and read the count of terminal tasks before the clock starts.
    let template = v1::TaskSpec {
        name: "bench-e2e".to_string(),
        command: vec![NOOP_COMMAND.to_string()],
        priority: args.priority,
        ..Default::default()
    };
    let requests = build_requests_from(&template, args.tasks, args.batch);
    let ids: Vec<String> = requests
        .iter()
        .flat_map(|r| r.tasks.iter().map(|t| t.id.clone()))
        .collect();
    let baseline = terminal_count(&client, false)
        .await
        .context("counting the terminal tasks before the run")?;

    // 2. Submit, C requests in flight, through the coalescing client.
    let started = Instant::now();
    let deadline = started + args.timeout_total;
    let timed_out = |what: String, hint: &str| {
        anyhow::anyhow!(
            "bench e2e: {what} within --timeout-total {}{hint}",
            humantime::format_duration(args.timeout_total)
        )
    };
    let queue = Arc::new(Mutex::new(requests));
    let abort = Arc::new(AtomicBool::new(false));
    let progress = progress_bar(ctx, args.tasks, "submitted")?;
    let mut workers = Vec::with_capacity(args.concurrency as usize);
    for _ in 0..args.concurrency {
        let (client, queue, abort, progress) =
            (client.clone(), queue.clone(), abort.clone(), progress.clone());
        let mut histogram = new_histogram()?;
        workers.push(tokio::spawn(async move {
            worker(client, queue, abort, progress, true, &mut histogram).await
        }));
    }
    let mut submitted = WorkerReport::default();
    for w in workers {
        let joined = tokio::time::timeout_at(deadline.into(), w).await;
        let Ok(r) = joined else {
            abort.store(true, Ordering::Relaxed);
            progress.finish_and_clear();
            let acked = progress.position();
            return Err(timed_out(
                format!("only {acked} of {} tasks were submitted", args.tasks),
                "",
            ));
        };
        let r = r.context("a benchmark worker panicked")?;
        submitted.acknowledged += r.acknowledged;
        submitted.errors += r.errors;
        if r.last_error.is_some() {
            submitted.last_error = r.last_error;
        }
    }
    let submit_elapsed = started.elapsed();
    progress.finish_and_clear();
    if abort.load(Ordering::Relaxed) {
        bail!(
            "bench e2e: submitting stopped after {} failed requests; last error: {}",
            submitted.errors,
            submitted.last_error.as_deref().unwrap_or("?")
        );
    }

    // 3. Wait until the count of terminal tasks has grown by N.
    let progress = progress_bar(ctx, args.tasks, "completed")?;
    let target = baseline.saturating_add(args.tasks);
    let mut last_error: Option<String> = None;
    let mut done = 0;
    loop {
        match terminal_count(&client, true).await {
            Ok(n) => {
                done = n.saturating_sub(baseline).min(args.tasks);
                progress.set_position(done);
                if n >= target {
                    break;
                }
            }
            Err(e) => last_error = Some(format!("{e:#}")),
        }
        if Instant::now() >= deadline {
            progress.finish_and_clear();
            let hint = match &last_error {
                Some(e) => format!("; last error: {e}"),
                None => "; are the agents running them? see `taurus agent list` and \
                         `taurus task list --state pending`"
                    .to_string(),
            };
            return Err(timed_out(
                format!("only {done} of {} tasks finished", args.tasks),
                &hint,
            ));
        }
        tokio::time::sleep(COMPLETION_POLL_INTERVAL).await;
    }
    let mut completed = started.elapsed();
    progress.finish_and_clear();

    // 4. Fetch every task of the run. Tasks of other clients that finished meanwhile may have
    //    been counted too: if some of ours are not terminal yet, wait for them.
    let (tasks, waited) = fetch_terminal(&client, ids, deadline, args.timeout_total).await?;
    if waited {
        // Some were not terminal yet: the run ended later than the count said.
        completed = started.elapsed();
    }

    let mut queue_hist = new_ms_histogram()?;
    let mut start_hist = new_ms_histogram()?;
    let (mut succeeded, mut failed, mut attempts, mut started_tasks) = (0u64, 0u64, 0u64, 0u64);
    for t in &tasks {
        if task_state_from_i32(t.state, "state") == Ok(TaskState::Succeeded) {
            succeeded += 1;
        } else {
            failed += 1;
        }
        attempts += t.attempts.len() as u64;
        if let Some(first) = t.attempts.first() {
            queue_hist.saturating_record(first.assigned_at_ms.saturating_sub(t.submitted_at_ms));
        }
        if let Some(at) = t.attempts.iter().find_map(|a| a.started_at_ms) {
            start_hist.saturating_record(at.saturating_sub(t.submitted_at_ms));
            started_tasks += 1;
        }
    }
    let wall = completed.as_secs_f64().max(1e-9);
    let report = E2eReport {
        tasks: args.tasks,
        agents_alive: alive,
        agents_registered: agents.len(),
        concurrency: args.concurrency,
        batch: args.batch,
        priority: args.priority,
        leader,
        submit_s: submit_elapsed.as_secs_f64(),
        wall_s: completed.as_secs_f64(),
        completed_per_s: args.tasks as f64 / wall,
        succeeded,
        failed,
        attempts,
        submit_errors: submitted.errors,
        queue_latency_ms: latency_ms(&queue_hist),
        submit_to_start_ms: latency_ms(&start_hist),
        started: started_tasks,
    };
    if ctx.json {
        print_json(&report)?;
    } else {
        print_e2e_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_e2e_report(r: &E2eReport) {
    println!(
        "ran {} no-op tasks in {:.2}s wall (all submitted after {:.2}s; concurrency {}, batch {}, priority {})",
        r.tasks, r.wall_s, r.submit_s, r.concurrency, r.batch, r.priority
    );
    println!(
        "throughput: {:.0} completed tasks/s (first submit to last completion)",
        r.completed_per_s
    );
    let line = |name: &str, l: &Option<Latency>| match l {
        Some(l) => println!(
            "{name}: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.p50, l.p90, l.p99, l.max
        ),
        None => println!("{name}: - (no task got that far)"),
    };
    line("submit-to-start", &r.submit_to_start_ms);
    line("queue latency (submit-to-assign)", &r.queue_latency_ms);
    println!(
        "succeeded: {}, failed: {}, attempts: {}, submit errors: {}",
        r.succeeded, r.failed, r.attempts, r.submit_errors
    );
    if r.failed > 0 {
        println!(
            "note: {} tasks did not succeed; see `taurus task list --state failed,timed_out,cancelled`",
            r.failed
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2e_requests_carry_the_template() {
        let template = v1::TaskSpec {
            command: vec![NOOP_COMMAND.to_string()],
            priority: 7,
            ..Default::default()
        };
        let requests = build_requests_from(&template, 5, 2);
        assert_eq!(requests.iter().map(|r| r.tasks.len()).sum::<usize>(), 5);
        assert!(
            requests
                .iter()
                .flat_map(|r| &r.tasks)
                .all(|t| t.command == [NOOP_COMMAND] && t.priority == 7 && !t.id.is_empty())
        );
    }

    #[test]
    fn latencies_of_an_empty_histogram_are_absent() {
        let mut h = new_ms_histogram().unwrap();
        assert!(latency_ms(&h).is_none());
        for v in [0, 5, 10, 1000] {
            h.record(v).unwrap();
        }
        let l = latency_ms(&h).unwrap();
        assert_eq!(l.max, 1000.0);
        assert!(l.p50 <= 10.0, "{}", l.p50);
    }

    #[test]
    fn requests_cover_every_task_once_with_distinct_ids() {
        let requests = build_requests(10, 4);
        let sizes: Vec<usize> = requests.iter().rev().map(|r| r.tasks.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let mut ids: Vec<&str> = requests
            .iter()
            .flat_map(|r| r.tasks.iter().map(|t| t.id.as_str()))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10);
        assert!(
            requests
                .iter()
                .all(|r| r.tasks.iter().all(|t| t.command == ["true"]))
        );
    }
}
