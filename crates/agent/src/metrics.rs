//! Prometheus metrics of an agent, served as `/metrics` on its HTTP port (see `http`).
//!
//! - **Events**, updated by the runtime with atomic adds: attempts started, attempts ended by
//!   outcome, their run time, self-fencing.
//! - **Now**, read at scrape time: slots, the agent process's own resource use (from
//!   `/proc/self`, through `taurus_procfs`), and the resource use of the
//!   processes of the attempts running now (their process groups, from `/proc`).
//!
//! Names follow Prometheus conventions: `taurus_agent_` for the agent's own metrics, the
//! standard `process_*` names for the process, base units, and `_total` on counters only (the
//! OpenMetrics encoder adds it: counters are registered without it).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use taurus_procfs::ProcStat;
use taurus_procfs::ProcessCollector;
use taurus_procfs::clock_ticks;
use taurus_procfs::page_size;
use taurus_procfs::put;

use crate::exec::End;
use crate::exec::Executor;
use crate::exec::Outcome;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds (seconds) of attempt run times: 10 ms to 1 day.
const RUN_BUCKETS: [f64; 17] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0,
];

/// How an attempt ended, as counted in `taurus_agent_attempts_finished_total{outcome}`: the
/// report's `end`, or `lease_expired` when its supervisor killed it at the lease deadline (not
/// reported).
const OUTCOMES: [&str; 5] = ["succeeded", "failed", "timed_out", "killed", "lease_expired"];

type OutcomeLabel = [(&'static str, &'static str); 1];

/// The metrics of one agent; shared by the runtime and the HTTP port.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Attempts whose process started.
    pub started: Counter,
    /// Attempts whose process is running now.
    pub running: Gauge,
    /// Attempts held (claimed, running, or ended but not yet reported).
    pub slots_used: Gauge,
    finished: Finished,
    /// prometheus-client's histogram takes an uncontended lock per observation: one per ended
    /// attempt, far from the agent's hot paths.
    run_duration: Histogram,
    /// Times the agent fenced itself or was told to register again (every attempt killed).
    pub fenced: Counter,
    /// The current registration's epoch (0 while registering).
    pub epoch: Gauge,
}

impl Metrics {
    /// Metrics of an agent that runs at most `max_tasks` attempts at once; `executor` tells
    /// which process groups are running at scrape time.
    pub fn new(max_tasks: u32, executor: Arc<Executor>) -> Self {
        let mut registry = Registry::default();
        let started = Counter::default();
        let running = Gauge::default();
        let slots_used = Gauge::default();
        let finished_family = Family::<OutcomeLabel, Counter>::default();
        // Every series exists from the start, so that rates work from the first attempt; each
        // is looked up here once, not per attempt.
        let finished = Finished::resolve(&finished_family);
        let run_duration = Histogram::new(RUN_BUCKETS);
        let fenced = Counter::default();
        let epoch = Gauge::default();
        registry.register(
            "taurus_agent_attempts_started",
            "Attempts whose process this agent started",
            started.clone(),
        );
        registry.register(
            "taurus_agent_attempts_finished",
            "Attempts whose process ended, by outcome (lease_expired: killed by its supervisor at \
             the lease deadline)",
            finished_family,
        );
        registry.register(
            "taurus_agent_attempt_duration_seconds",
            "Run time of attempts, from process start to end",
            run_duration.clone(),
        );
        registry.register(
            "taurus_agent_attempts_running",
            "Attempts whose process is running now",
            running.clone(),
        );
        registry.register(
            "taurus_agent_slots_used",
            "Attempts held: claimed, running, or ended and not yet reported",
            slots_used.clone(),
        );
        registry.register(
            "taurus_agent_slots",
            "Most attempts this agent runs at once (max_tasks)",
            ConstGauge::new(i64::from(max_tasks)),
        );
        registry.register(
            "taurus_agent_fenced",
            "Times this agent killed every attempt and registered again (lease expired, or told \
             its epoch is stale)",
            fenced.clone(),
        );
        registry.register(
            "taurus_agent_epoch",
            "Epoch of the current registration (0 while registering)",
            epoch.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(TasksCollector { executor }));
        Self {
            registry,
            started,
            running,
            slots_used,
            finished,
            run_duration,
            fenced,
            epoch,
        }
    }

    /// An attempt's process ended after `ran`.
    pub fn attempt_ended(&self, outcome: &Outcome, ran: Duration) {
        self.ended(outcome.end, outcome.lease_expired(), ran);
    }

    fn ended(&self, end: End, lease_expired: bool, ran: Duration) {
        self.finished.of(end, lease_expired).inc();
        self.run_duration.observe(ran.as_secs_f64());
    }

    /// The whole exposition (OpenMetrics text). Reads `/proc`: call it from a blocking thread.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The series of `taurus_agent_attempts_finished_total`, one per outcome ([`OUTCOMES`]),
/// resolved from the family once: counting an attempt is one atomic add.
#[derive(Debug)]
struct Finished {
    succeeded: Counter,
    failed: Counter,
    timed_out: Counter,
    killed: Counter,
    lease_expired: Counter,
}

impl Finished {
    fn resolve(family: &Family<OutcomeLabel, Counter>) -> Self {
        let get = |outcome: &'static str| family.get_or_create(&[("outcome", outcome)]).clone();
        let [succeeded, failed, timed_out, killed, lease_expired] = OUTCOMES.map(get);
        Self {
            succeeded,
            failed,
            timed_out,
            killed,
            lease_expired,
        }
    }

    /// The counter of an attempt that ended with `end` (`lease_expired`: killed by its
    /// supervisor at the lease deadline, whatever `end` says).
    fn of(&self, end: End, lease_expired: bool) -> &Counter {
        if lease_expired {
            return &self.lease_expired;
        }
        match end {
            End::Succeeded => &self.succeeded,
            End::Failed => &self.failed,
            End::TimedOut => &self.timed_out,
            End::Killed => &self.killed,
        }
    }
}

/// Resource use of the processes of the attempts running now: every process in their process
/// groups, found with one pass over `/proc`.
#[derive(Debug)]
struct TasksCollector {
    executor: Arc<Executor>,
}

impl Collector for TasksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let groups: HashSet<i32> = self.executor.running_groups().into_iter().collect();
        let use_ = tasks_use(Path::new("/proc"), &groups);
        put(
            &mut encoder,
            "taurus_agent_task_processes",
            "Processes in the process groups of the attempts running now (supervisors included)",
            ConstGauge::new(use_.processes as f64),
        )?;
        put(
            &mut encoder,
            "taurus_agent_task_resident_memory_bytes",
            "Resident memory of the processes of the attempts running now",
            ConstGauge::new(use_.rss_pages.saturating_mul(page_size()) as f64),
        )?;
        put(
            &mut encoder,
            "taurus_agent_task_cpu_seconds",
            "CPU time used so far by the processes of the attempts running now (falls when they \
             end; exited children of a task are not included)",
            ConstGauge::new(use_.cpu_ticks as f64 / clock_ticks()),
        )
    }
}

/// What the processes of some process groups use.
#[derive(Debug, Default, PartialEq)]
struct TasksUse {
    processes: u64,
    rss_pages: u64,
    cpu_ticks: u64,
}

fn tasks_use(proc_dir: &Path, groups: &HashSet<i32>) -> TasksUse {
    let mut total = TasksUse::default();
    if groups.is_empty() {
        return total;
    }
    let Ok(entries) = std::fs::read_dir(proc_dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // A process may end between the listing and the read: skip it.
        let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|t| ProcStat::parse(&t))
        else {
            continue;
        };
        if groups.contains(&stat.pgrp) && stat.state != 'Z' {
            total.processes += 1;
            total.rss_pages = total.rss_pages.saturating_add(stat.rss_pages);
            total.cpu_ticks = total.cpu_ticks.saturating_add(stat.cpu_ticks());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_attempts_are_counted_by_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let executor = Arc::new(Executor::new(dir.path(), 1024, Duration::from_secs(1)).expect("executor"));
        let m = Metrics::new(4, executor);
        for end in [
            End::Succeeded,
            End::Succeeded,
            End::Failed,
            End::TimedOut,
            End::Killed,
        ] {
            m.ended(end, false, Duration::from_millis(20));
        }
        m.ended(End::Killed, true, Duration::from_secs(2));
        let text = m.render().expect("renders");
        let finished = |outcome: &str| {
            let series = format!("taurus_agent_attempts_finished_total{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        };
        assert_eq!(finished("succeeded"), 2.0);
        assert_eq!(finished("failed"), 1.0);
        assert_eq!(finished("timed_out"), 1.0);
        assert_eq!(finished("killed"), 1.0, "the lease-expired kill is counted apart");
        assert_eq!(finished("lease_expired"), 1.0);
        assert!(
            text.contains("taurus_agent_attempt_duration_seconds_count 6\n"),
            "{text}"
        );
    }

    #[test]
    fn this_process_is_found_by_its_group() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        let me = ProcStat::parse(&stat).expect("parses");
        let used = tasks_use(Path::new("/proc"), &HashSet::from([me.pgrp]));
        assert!(used.processes >= 1, "{used:?}");
        assert!(used.rss_pages > 0, "{used:?}");
        assert_eq!(
            tasks_use(Path::new("/proc"), &HashSet::new()),
            TasksUse::default()
        );
    }
}
