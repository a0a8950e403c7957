//! `taurus bench submit`: concurrent SubmitTasks load with pre-built requests.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use serde::Serialize;
use taurus_client::Client;
use taurus_client::v1;

use crate::Context;
use crate::args::BenchCmd;
use crate::args::BenchSubmitArgs;
use crate::output::print_json;

/// A submitter gives up (and so does the benchmark) after this many failed RPCs in a row.
const MAX_CONSECUTIVE_ERRORS: u32 = 5;

pub async fn run(cmd: BenchCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Submit(args) => submit(args, ctx).await,
    }
}

/// Every request of the run, built before the clock starts: ids are fixed up front, so a
/// request that fails is sent again unchanged and never doubles a task.
pub fn build_requests(tasks: u64, batch: u32) -> Vec<v1::SubmitTasksRequest> {
    let template = v1::TaskSpec {
        command: vec!["true".to_string()],
        ..Default::default()
    };
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
        requests.push(v1::SubmitTasksRequest { tasks: specs });
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
    let progress = if ctx.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(args.tasks), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} tasks  {per_sec}  eta {eta}")
            .context("progress bar template")?;
        bar.set_style(style);
        bar
    };

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

#[cfg(test)]
mod tests {
    use super::*;

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
