//! Prometheus metrics of a master, served as `/metrics` on its HTTP port (see `http`).
//!
//! Two kinds, kept apart so that neither costs the hot path anything it does not need:
//!
//! - **Events** ([`Metrics`]): counters and histograms updated where things happen (a submit
//!   answered, a scheduling round, a placement, an accepted start, a heartbeat, a leader change).
//!   Updates are relaxed atomic adds: no lock, no allocation per task; per-task latencies of
//!   one Raft entry are recorded as one batch ([`Histogram::observe_many`]).
//! - **State** ([`collect`]): gauges computed at scrape time from a clone of the applied state
//!   (O(1), `imbl`) and from Raft's own metrics: tasks by state, queue depth, agents and their
//!   use, Raft term, leader, indexes and log size. Nothing is kept up to date between scrapes.
//!
//! Adding a family of scrape-time gauges is one call on [`Scrape`] in a `collect_*` function
//! called from [`collect`]. Naming follows Prometheus conventions: a `taurus_` prefix, base
//! units (`_seconds`, `_bytes`, cores), `_total` only on counters (the OpenMetrics encoder adds
//! it: counters are registered without it), and no unbounded labels (no task ids; agent ids are
//! bounded by the agent registry).

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::encoding::MetricEncoder;
use prometheus_client::encoding::NoLabelSet;
use prometheus_client::encoding::text::encode_eof;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use taurus_core::State;
use taurus_core::types::AgentState;
use taurus_core::types::TaskState;

use crate::node::Node;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds (seconds) of request and task latencies: 1 ms to 1 h.
const LATENCY_BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
];

/// Bucket bounds (seconds) of scheduling rounds: 100 µs to 10 s.
const ROUND_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Most buckets a [`Histogram`] may have (its bounds plus `+Inf`); [`Histogram::observe_many`]
/// counts a batch on the stack in an array this long.
const MAX_BUCKETS: usize = 32;

/// The event metrics of one master (see the module docs). Shared as `Arc<Metrics>` on
/// [`Node`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Where this master's sled database and snapshot live (for `taurus_store_size_bytes`).
    data_dir: PathBuf,
    /// From receiving a `SubmitTasks`/`SubmitMany` call from a client to answering it.
    pub submit_duration: Histogram,
    /// From a task's submission to its first assignment (observed by the leader).
    pub schedule_latency: Histogram,
    /// From a task's submission to the accepted start of its first attempt (by the leader).
    pub start_latency: Histogram,
    /// One round of the leader's scheduling loop.
    pub round_duration: Histogram,
    /// Placements the leader proposed that were applied.
    pub tasks_placed: Counter,
    /// Leader changes this master saw.
    pub leader_changes: Counter,
    /// Heartbeats this master recorded as leader.
    pub heartbeats: Counter,
    /// Agents this master, as leader, declared down after `agent_ttl` without a heartbeat.
    pub heartbeat_timeouts: Counter,
}

impl Metrics {
    /// Fresh metrics of a master whose data lives in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let m = Self {
            registry: Registry::default(),
            data_dir: data_dir.to_path_buf(),
            submit_duration: Histogram::new(&LATENCY_BUCKETS),
            schedule_latency: Histogram::new(&LATENCY_BUCKETS),
            start_latency: Histogram::new(&LATENCY_BUCKETS),
            round_duration: Histogram::new(&ROUND_BUCKETS),
            tasks_placed: Counter::default(),
            leader_changes: Counter::default(),
            heartbeats: Counter::default(),
            heartbeat_timeouts: Counter::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "taurus_submit_duration_seconds",
            "Time from receiving a SubmitTasks or SubmitMany call from a client to answering it \
             (calls forwarded by another master are counted there)",
            m.submit_duration.clone(),
        );
        registry.register(
            "taurus_schedule_latency_seconds",
            "Time from a task's submission to its first assignment to an agent (leader only)",
            m.schedule_latency.clone(),
        );
        registry.register(
            "taurus_start_latency_seconds",
            "Time from a task's submission to the accepted start of its first attempt (leader only)",
            m.start_latency.clone(),
        );
        registry.register(
            "taurus_scheduling_round_duration_seconds",
            "Duration of one round of the leader's scheduling loop, proposals included",
            m.round_duration.clone(),
        );
        registry.register(
            "taurus_tasks_placed",
            "Placements this master proposed as leader that were applied",
            m.tasks_placed.clone(),
        );
        registry.register(
            "taurus_raft_leader_changes",
            "Times this master saw a new leader (a new term with a known leader)",
            m.leader_changes.clone(),
        );
        registry.register(
            "taurus_agent_heartbeats",
            "Agent heartbeats this master recorded as leader",
            m.heartbeats.clone(),
        );
        registry.register(
            "taurus_agent_heartbeat_timeouts",
            "Agents this master, as leader, declared down after agent_ttl without a heartbeat",
            m.heartbeat_timeouts.clone(),
        );
        // process_cpu_seconds_total, process_resident_memory_bytes, ... of this master.
        registry.register_collector(Box::new(taurus_procfs::ProcessCollector));
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Times a submit call until the returned guard is dropped (`counted: false`: not at all).
    pub fn submit_timer(&self, counted: bool) -> Timer<'_> {
        Timer {
            histogram: counted.then_some(&self.submit_duration),
            started: Instant::now(),
        }
    }
}

/// Observes the time from its creation to its drop (see [`Metrics::submit_timer`]).
#[must_use = "the time is observed when the timer is dropped"]
pub struct Timer<'a> {
    histogram: Option<&'a Histogram>,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.histogram {
            h.observe_duration(self.started.elapsed());
        }
    }
}

/// Counts leader changes as Raft reports them, until Raft shuts down.
pub async fn follow_raft(node: Node) {
    use openraft::async_runtime::watch::WatchReceiver;
    let mut rx = node.raft.metrics();
    let mut last: Option<(u64, u64)> = None;
    loop {
        let seen = {
            let m = rx.borrow_watched();
            m.current_leader.map(|l| (m.current_term, l))
        };
        if seen.is_some() && seen != last {
            node.metrics.leader_changes.inc();
            last = seen;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The whole exposition (OpenMetrics text): event metrics, then the state gauges. Reads a few
/// files (the data directory's sizes): call it from a blocking thread.
pub fn render(node: &Node) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    encode_registry(&mut out, &node.metrics.registry)?;
    let mut scrape = Scrape::default();
    collect(node, &mut scrape);
    scrape.encode(&mut out)?;
    encode_eof(&mut out)?;
    Ok(out)
}

/// Every scrape-time gauge family. A new family is one more call here.
pub fn collect(node: &Node, s: &mut Scrape) {
    let state: State = node.sm.read(|st| st.clone());
    collect_raft(node, s);
    collect_tasks(&state, s);
    collect_agents(&state, s);
    collect_store(&node.metrics.data_dir, s);
    crate::monitor::collect_metrics(node, s);
}

fn collect_raft(node: &Node, s: &mut Scrape) {
    let m = node.metrics();
    s.gauge("taurus_raft_id", "This master's id", node.id as f64);
    s.gauge("taurus_raft_term", "Current Raft term", m.current_term as f64);
    s.gauge(
        "taurus_raft_is_leader",
        "1 when this master is the Raft leader, else 0",
        f64::from(u8::from(m.state == ServerState::Leader)),
    );
    s.gauge(
        "taurus_raft_leader_id",
        "Id of the leader this master knows of (0: none)",
        m.current_leader.unwrap_or(0) as f64,
    );
    s.gauge(
        "taurus_raft_last_log_index",
        "Index of the last entry in this master's log",
        m.last_log_index.unwrap_or(0) as f64,
    );
    s.gauge(
        "taurus_raft_commit_index",
        "Index of the last entry this master knows to be committed",
        m.local_committed.as_ref().map_or(0, |l| l.index) as f64,
    );
    s.gauge(
        "taurus_raft_applied_index",
        "Index of the last entry applied to this master's state",
        m.last_applied.as_ref().map_or(0, |l| l.index) as f64,
    );
    s.gauge(
        "taurus_raft_snapshot_index",
        "Index of the last entry in this master's latest snapshot (0: none)",
        m.snapshot.as_ref().map_or(0, |l| l.index) as f64,
    );
    // Entries purged are inclusive of `purged`; with none purged the log starts at 0.
    let first = m.purged.as_ref().map_or(0, |p| p.index + 1);
    let entries = m
        .last_log_index
        .map_or(0, |last| (last + 1).saturating_sub(first));
    s.gauge(
        "taurus_raft_log_entries",
        "Entries in this master's Raft log (not yet purged behind a snapshot)",
        entries as f64,
    );
    let membership = m.membership_config.membership();
    let voters = membership.voter_ids().count();
    let learners = membership.learner_ids().count();
    s.gauges(
        "taurus_raft_members",
        "Masters in the Raft membership this master knows, by role",
        "role",
        [("voter", voters as f64), ("learner", learners as f64)],
    );
}

/// A priority's band in `taurus_queue_tasks` (priorities are any `i32`: decades keep the label
/// set small and fixed).
pub fn priority_band(p: i32) -> &'static str {
    match p {
        i32::MIN..=-1000 => "<=-1000",
        -999..=-100 => "-999..-100",
        -99..=-10 => "-99..-10",
        -9..=-1 => "-9..-1",
        0 => "0",
        1..=9 => "1..9",
        10..=99 => "10..99",
        100..=999 => "100..999",
        1000..=i32::MAX => ">=1000",
    }
}

/// Every band [`priority_band`] returns, lowest first.
const PRIORITY_BANDS: [&str; 9] = [
    "<=-1000",
    "-999..-100",
    "-99..-10",
    "-9..-1",
    "0",
    "1..9",
    "10..99",
    "100..999",
    ">=1000",
];

fn collect_tasks(state: &State, s: &mut Scrape) {
    s.gauges(
        "taurus_tasks",
        "Tasks by state (finished ones until they are purged)",
        "state",
        TaskState::ALL.map(|st| (st.as_str(), state.count(st) as f64)),
    );
    let mut bands = [0u64; PRIORITY_BANDS.len()];
    for p in state.runnable_priorities() {
        let band = priority_band(p);
        if let Some(i) = PRIORITY_BANDS.iter().position(|b| *b == band) {
            bands[i] += 1;
        }
    }
    s.gauges(
        "taurus_queue_tasks",
        "Runnable tasks waiting to be placed, by priority band",
        "priority",
        PRIORITY_BANDS.iter().zip(bands).map(|(b, n)| (*b, n as f64)),
    );
    s.gauge(
        "taurus_tasks_delayed",
        "Pending tasks waiting out a retry back-off",
        state.delayed_len() as f64,
    );
}

fn collect_agents(state: &State, s: &mut Scrape) {
    s.gauges(
        "taurus_agents",
        "Registered agents by state",
        "state",
        AgentState::ALL.map(|st| (st.as_str(), state.agent_count(st) as f64)),
    );
    const MIB: f64 = 1024.0 * 1024.0;
    type Of = fn(&taurus_core::types::Agent) -> f64;
    let per_agent: [(&'static str, &'static str, Of); 8] = [
        (
            "taurus_agent_slots",
            "Most tasks an agent runs at once (max_tasks)",
            |a| f64::from(a.info.max_tasks),
        ),
        (
            "taurus_agent_slots_used",
            "Tasks assigned to or running on an agent",
            |a| f64::from(a.tasks),
        ),
        ("taurus_agent_cpu_cores", "CPU an agent offers, in cores", |a| {
            f64::from(a.info.resources.cpu_millis) / 1000.0
        }),
        (
            "taurus_agent_cpu_used_cores",
            "CPU the tasks assigned to or running on an agent demand, in cores",
            |a| f64::from(a.used.cpu_millis) / 1000.0,
        ),
        ("taurus_agent_memory_bytes", "Memory an agent offers", |a| {
            a.info.resources.memory_mb as f64 * MIB
        }),
        (
            "taurus_agent_memory_used_bytes",
            "Memory the tasks assigned to or running on an agent demand",
            |a| a.used.memory_mb as f64 * MIB,
        ),
        ("taurus_agent_disk_bytes", "Disk an agent offers", |a| {
            a.info.resources.disk_mb as f64 * MIB
        }),
        (
            "taurus_agent_disk_used_bytes",
            "Disk the tasks assigned to or running on an agent demand",
            |a| a.used.disk_mb as f64 * MIB,
        ),
    ];
    for (name, help, of) in per_agent {
        s.gauges(
            name,
            help,
            "agent",
            state.agents().map(|a| (a.info.id.clone(), of(a))),
        );
    }
}

fn collect_store(data_dir: &Path, s: &mut Scrape) {
    s.gauge(
        "taurus_store_size_bytes",
        "Bytes of files in this master's data directory (sled log and snapshot)",
        dir_size(data_dir) as f64,
    );
    let snapshot = std::fs::metadata(data_dir.join(taurus_store::state_machine::SNAPSHOT_FILE));
    s.gauge(
        "taurus_raft_snapshot_size_bytes",
        "Bytes of this master's latest snapshot file (0: none yet)",
        snapshot.map_or(0, |m| m.len()) as f64,
    );
}

/// Total size of the files under `dir` (0 when it cannot be read). sled keeps a handful of
/// files, so this is a few `stat`s.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Gauges gathered for one scrape (see [`collect`]).
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<GaugeFamily>,
}

#[derive(Debug)]
struct GaugeFamily {
    name: &'static str,
    help: &'static str,
    series: Series,
}

#[derive(Debug)]
enum Series {
    /// One unlabelled value.
    One(f64),
    /// One value per value of the label.
    Labelled(&'static str, Vec<(String, f64)>),
}

impl Scrape {
    /// One unlabelled gauge.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.families.push(GaugeFamily {
            name,
            help,
            series: Series::One(value),
        });
    }

    /// A family of gauges with one label (`label="value"` per series).
    pub fn gauges<V: Into<String>>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        series: impl IntoIterator<Item = (V, f64)>,
    ) {
        self.families.push(GaugeFamily {
            name,
            help,
            series: Series::Labelled(label, series.into_iter().map(|(v, x)| (v.into(), x)).collect()),
        });
    }

    fn encode(self, out: &mut String) -> fmt::Result {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        encode_registry(out, &registry)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for f in &self.families {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, MetricType::Gauge)?;
            match &f.series {
                Series::One(value) => ConstGauge::new(*value).encode(metric)?,
                Series::Labelled(label, series) => {
                    for (value, x) in series {
                        let labels = [(*label, value.as_str())];
                        let e = metric.encode_family(&labels)?;
                        ConstGauge::new(*x).encode(e)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A histogram updated with relaxed atomic adds only (prometheus-client's own takes a lock per
/// observation). Cheap to clone: clones share the counts.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, ascending; `+Inf` is implied after the last.
    bounds: Vec<f64>,
    /// One count per bound, plus `+Inf`: observations in that bucket only (not cumulative).
    counts: Vec<AtomicU64>,
    /// Sum of observations in microunits (µs for seconds), so that it can be an integer add.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with these ascending bucket bounds (at most `MAX_BUCKETS - 1`).
    pub fn new(bounds: &[f64]) -> Self {
        let bounds: Vec<f64> = bounds.iter().copied().take(MAX_BUCKETS - 1).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                counts,
                sum_micros: AtomicU64::new(0),
            }),
        }
    }

    fn bucket(&self, v: f64) -> usize {
        self.inner.bounds.partition_point(|b| *b < v)
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        let i = self.bucket(v);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_micros.fetch_add(micros(v), Ordering::Relaxed);
    }

    /// Records one duration, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Records many values with one atomic add per bucket touched.
    pub fn observe_many(&self, values: impl IntoIterator<Item = f64>) {
        let mut counts = [0u64; MAX_BUCKETS];
        let mut sum = 0u64;
        for v in values {
            counts[self.bucket(v)] += 1;
            sum = sum.saturating_add(micros(v));
        }
        for (i, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            self.inner.counts[i].fetch_add(*n, Ordering::Relaxed);
        }
        if sum > 0 {
            self.inner.sum_micros.fetch_add(sum, Ordering::Relaxed);
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// `v` in millionths, saturating (negative and NaN values count as 0).
fn micros(v: f64) -> u64 {
    (v * 1e6).max(0.0) as u64
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let inner = &self.inner;
        let mut count = 0u64;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(&inner.counts)
            .map(|(b, c)| {
                let n = c.load(Ordering::Relaxed);
                count += n;
                (b, n)
            })
            .collect();
        let sum = inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The `(series, value)` samples of an exposition, comments skipped: for tests and tools that
/// want a value without a full parser (see [`sample`]).
pub fn samples(exposition: &str) -> impl Iterator<Item = (&str, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name, value.parse().ok()?))
        })
}

/// The value of the sample written exactly `series` (name and labels, as exposed) in
/// `exposition`, if any.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    samples(exposition).find(|(s, _)| *s == series).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_exclusive_above_and_cumulative_when_encoded() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.1);
        h.observe_many([0.5, 2.0, 3.0]);
        assert_eq!(h.count(), 5);
        let mut registry = Registry::default();
        registry.register("x_seconds", "test", h.clone());
        let mut out = String::new();
        encode_registry(&mut out, &registry).expect("encodes");
        assert_eq!(sample(&out, "x_seconds_count"), Some(5.0), "{out}");
        assert_eq!(sample(&out, "x_seconds_bucket{le=\"0.1\"}"), Some(2.0), "{out}");
        assert_eq!(sample(&out, "x_seconds_bucket{le=\"1.0\"}"), Some(3.0), "{out}");
        assert_eq!(sample(&out, "x_seconds_bucket{le=\"+Inf\"}"), Some(5.0), "{out}");
        let sum = sample(&out, "x_seconds_sum").expect("sum");
        assert!((sum - 5.65).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn priority_bands_cover_every_priority_and_are_listed() {
        for p in [
            i32::MIN,
            -1000,
            -999,
            -100,
            -11,
            -10,
            -1,
            0,
            1,
            9,
            10,
            999,
            1000,
            i32::MAX,
        ] {
            assert!(PRIORITY_BANDS.contains(&priority_band(p)), "{p}");
        }
        assert_eq!(priority_band(5), "1..9");
        assert_eq!(priority_band(-5), "-9..-1");
    }

    #[test]
    fn scrape_gauges_encode_with_help_type_and_labels() {
        let mut s = Scrape::default();
        s.gauge("taurus_a", "A", 2.0);
        s.gauges("taurus_b", "B", "state", [("x", 1.0), ("y", 0.0)]);
        s.gauges("taurus_c", "C", "agent", Vec::<(String, f64)>::new());
        let mut out = String::new();
        s.encode(&mut out).expect("encodes");
        assert!(
            out.contains("# HELP taurus_a A\n# TYPE taurus_a gauge\n"),
            "{out}"
        );
        assert_eq!(sample(&out, "taurus_a"), Some(2.0));
        assert_eq!(sample(&out, "taurus_b{state=\"x\"}"), Some(1.0), "{out}");
        assert_eq!(sample(&out, "taurus_b{state=\"y\"}"), Some(0.0), "{out}");
        assert!(out.contains("# TYPE taurus_c gauge"), "{out}");
    }
}
