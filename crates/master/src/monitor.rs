//! The monitor: periodic samples of this master's view of the cluster, and reports on demand.
//!
//! Every master (leader or not) runs [`run`]: every `monitor.sample_interval` it records a
//! [`Sample`] of its applied state (agents' utilisation, the queue) and of the Raft members
//! (each asked for its indexes, as `GetStatus` does) into a bounded [`History`] covering
//! `monitor.history`. [`report`] hands that history, the applied state and, on the leader, the
//! heartbeat observations of [`crate::leader::LeaderDuties`] to the pure
//! [`taurus_core::monitor::report`]. `GetMonitoring`, `taurus cluster anomalies`, the status
//! page and `/metrics` all read that report.
//!
//! Readers are many (every scrape, every status page view: unauthenticated, refreshed every
//! 2 s per open tab) and a report walks the queue, so a report is computed at most once per
//! sample: it is cached until the next sample is recorded or one `sample_interval` passes
//! (whichever is first), and concurrent readers of a stale one wait for a single computation.
//! The status page's members come from the status taken with the latest sample, not from
//! asking every member per view. Anomalies therefore show up to one sample interval late.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;
use taurus_core::monitor::AnomalyKind;
use taurus_core::monitor::History;
use taurus_core::monitor::MemberSample;
use taurus_core::monitor::Report;
use taurus_core::monitor::Sample;
use taurus_core::monitor::Thresholds;
use taurus_protocol::v1;

use crate::config::humantime_serde_compat;
use crate::error::MasterError;
use crate::node::Node;

/// Most samples a history keeps, whatever `history / sample_interval` says.
pub const MAX_SAMPLES: usize = 10_000;

/// `[monitor]`: how often to sample, how much to keep, and when anomalies fire (the anomaly
/// kinds are documented in `taurus_core::monitor::AnomalyKind` and `docs/operations.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How often each master samples agents, queue and members.
    #[serde(with = "humantime_serde_compat")]
    pub sample_interval: Duration,
    /// How much history each master keeps (bounded to [`MAX_SAMPLES`] samples). Windows longer
    /// than this never fill, so their anomalies never fire.
    #[serde(with = "humantime_serde_compat")]
    pub history: Duration,
    /// Utilisation (dominant share, 0.0-1.0) at or above which an agent or the cluster is busy.
    pub high_utilisation: f64,
    /// Utilisation at or below which an agent or the cluster is idle.
    pub low_utilisation: f64,
    /// How long utilisation must stay high or low to be an anomaly.
    #[serde(with = "humantime_serde_compat")]
    pub utilisation_for: Duration,
    /// Silence after which the leader reports an agent's heartbeats missing.
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_late: Duration,
    /// Transitions (down, back up, re-registered) within `flap_window` that make an agent
    /// flapping.
    pub flap_transitions: u32,
    #[serde(with = "humantime_serde_compat")]
    pub flap_window: Duration,
    /// How long past its hard deadline (or its execution timeout, while running) a task may
    /// stay before it is reported stuck.
    #[serde(with = "humantime_serde_compat")]
    pub stuck_grace: Duration,
    /// Growth of the pending count, in tasks per minute over `queue_window`, that is an anomaly
    /// while at least `queue_min_tasks` are pending.
    pub queue_growth_per_min: f64,
    #[serde(with = "humantime_serde_compat")]
    pub queue_window: Duration,
    pub queue_min_tasks: u64,
    /// Entries a master may be behind the cluster's commit index; lagging (or unreachable, or
    /// no leader) for `lag_for` is an anomaly.
    pub lag_entries: u64,
    #[serde(with = "humantime_serde_compat")]
    pub lag_for: Duration,
    /// How many recently finished tasks the efficiency figures cover.
    pub efficiency_tasks: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        let t = Thresholds::default();
        let d = Duration::from_millis;
        Self {
            sample_interval: Duration::from_secs(5),
            history: Duration::from_secs(15 * 60),
            high_utilisation: t.high_utilisation,
            low_utilisation: t.low_utilisation,
            utilisation_for: d(t.utilisation_for_ms),
            heartbeat_late: d(t.heartbeat_late_ms),
            flap_transitions: t.flap_transitions,
            flap_window: d(t.flap_window_ms),
            stuck_grace: d(t.stuck_grace_ms),
            queue_growth_per_min: t.queue_growth_per_min,
            queue_window: d(t.queue_window_ms),
            queue_min_tasks: t.queue_min_tasks,
            lag_entries: t.lag_entries,
            lag_for: d(t.lag_for_ms),
            efficiency_tasks: t.efficiency_tasks,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MonitorConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), MasterError> {
        let bad = |key: &str, why: &str| Err(MasterError::Config(format!("monitor.{key}: {why}")));
        if self.sample_interval < Duration::from_millis(100) {
            return bad("sample_interval", "must be at least 100ms");
        }
        if self.history < self.sample_interval {
            return bad("history", "must be at least monitor.sample_interval");
        }
        for (key, v) in [
            ("high_utilisation", self.high_utilisation),
            ("low_utilisation", self.low_utilisation),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(key, "must be between 0.0 and 1.0");
            }
        }
        if self.low_utilisation >= self.high_utilisation {
            return bad("low_utilisation", "must be below monitor.high_utilisation");
        }
        if !self.queue_growth_per_min.is_finite() || self.queue_growth_per_min <= 0.0 {
            return bad("queue_growth_per_min", "must be a positive number");
        }
        if self.flap_transitions == 0 {
            return bad("flap_transitions", "must be at least 1");
        }
        if self.efficiency_tasks == 0 {
            return bad("efficiency_tasks", "must be at least 1");
        }
        Ok(())
    }

    /// The thresholds for [`taurus_core::monitor::report`].
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            high_utilisation: self.high_utilisation,
            low_utilisation: self.low_utilisation,
            utilisation_for_ms: ms(self.utilisation_for),
            heartbeat_late_ms: ms(self.heartbeat_late),
            flap_transitions: self.flap_transitions,
            flap_window_ms: ms(self.flap_window),
            stuck_grace_ms: ms(self.stuck_grace),
            queue_growth_per_min: self.queue_growth_per_min,
            queue_window_ms: ms(self.queue_window),
            queue_min_tasks: self.queue_min_tasks,
            lag_entries: self.lag_entries,
            lag_for_ms: ms(self.lag_for),
            efficiency_tasks: self.efficiency_tasks,
        }
    }

    /// Samples the history holds: enough to cover `history`, one more for the boundary.
    pub fn capacity(&self) -> usize {
        let n = self.history.as_millis() / self.sample_interval.as_millis().max(1) + 1;
        usize::try_from(n).unwrap_or(MAX_SAMPLES).min(MAX_SAMPLES)
    }
}

/// This master's history and thresholds, and what readers reuse: the latest report and the
/// latest cluster status. Cheap to clone, shared by the sampler and readers.
#[derive(Clone, Debug)]
pub struct Monitor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The history, and how many samples were ever recorded (a report's generation).
    history: Mutex<(History, u64)>,
    /// The latest report, reused until the next sample or for at most `interval`.
    cached: Mutex<Option<Cached>>,
    /// Held while a report is computed, so that readers arriving meanwhile wait for that one
    /// and reuse it instead of computing the same report side by side.
    computing: Mutex<()>,
    /// The cluster status taken with the latest sample (every member asked once).
    status: Mutex<Option<v1::ClusterStatus>>,
    thresholds: Thresholds,
    interval: Duration,
}

/// A report as this master computed it (shared: readers never copy it).
#[derive(Clone, Debug)]
pub struct Computed {
    pub report: Arc<Report>,
    /// Computed while this master led: heartbeat checks included.
    pub leader_view: bool,
}

#[derive(Debug)]
struct Cached {
    computed: Computed,
    at: Instant,
    generation: u64,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Monitor {
    pub fn new(config: &MonitorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                history: Mutex::new((History::new(config.capacity()), 0)),
                cached: Mutex::new(None),
                computing: Mutex::new(()),
                status: Mutex::new(None),
                thresholds: config.thresholds(),
                interval: config.sample_interval,
            }),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.inner.thresholds
    }

    pub fn record(&self, sample: Sample) {
        let mut h = locked(&self.inner.history);
        h.0.push(sample);
        h.1 += 1;
    }

    /// A copy of the history (samples are shared: one reference count each; the lock is never
    /// held while a report is computed).
    pub fn history(&self) -> History {
        locked(&self.inner.history).0.clone()
    }

    fn history_and_generation(&self) -> (History, u64) {
        let h = locked(&self.inner.history);
        (h.0.clone(), h.1)
    }

    /// The cached report, if it is still current: no sample recorded since it was computed,
    /// computed less than one sample interval ago, and made in this master's current role.
    pub fn cached(&self, leading: bool) -> Option<Computed> {
        let generation = locked(&self.inner.history).1;
        let cached = locked(&self.inner.cached);
        cached
            .as_ref()
            .filter(|c| {
                c.generation == generation
                    && c.computed.leader_view == leading
                    && c.at.elapsed() < self.inner.interval
            })
            .map(|c| c.computed.clone())
    }

    fn store(&self, computed: Computed, generation: u64, at: Instant) {
        *locked(&self.inner.cached) = Some(Cached {
            computed,
            at,
            generation,
        });
    }

    /// The cluster status taken with the latest sample, if any yet.
    pub fn last_status(&self) -> Option<v1::ClusterStatus> {
        locked(&self.inner.status).clone()
    }

    fn record_status(&self, status: v1::ClusterStatus) {
        *locked(&self.inner.status) = Some(status);
    }
}

/// Each member's lag behind the highest commit index any member reported.
pub fn member_samples(status: &v1::ClusterStatus) -> Vec<MemberSample> {
    let committed = status
        .members
        .iter()
        .filter(|m| m.reachable)
        .map(|m| m.commit_index)
        .max()
        .unwrap_or(0);
    status
        .members
        .iter()
        .map(|m| MemberSample {
            id: m.id,
            reachable: m.reachable,
            lag: if m.reachable {
                committed.saturating_sub(m.applied_index)
            } else {
                0
            },
        })
        .collect()
}

/// Takes one sample now, with the cluster status it was taken from.
pub async fn sample(node: &Node) -> (Sample, v1::ClusterStatus) {
    let status = crate::service::cluster::cluster_status(node).await;
    let members = member_samples(&status);
    let leader = (status.leader != 0).then_some(status.leader);
    let now = crate::clock::now_ms();
    let sample = node.sm.read(|s| Sample::take(s, members, leader, now));
    (sample, status)
}

/// Samples forever (every master runs this; the caller aborts it at shutdown).
pub async fn run(node: Node) {
    let mut tick = tokio::time::interval(node.monitor.inner.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (sample, status) = sample(&node).await;
        node.monitor.record_status(status);
        node.monitor.record(sample);
    }
}

/// The cluster as this master sees it, for the status page: the members as asked with the
/// latest sample (at most one sample interval old; asked now only before the first sample),
/// with the leader, the term and this master's own row as they are now (local, no network).
pub async fn cluster_status(node: &Node) -> v1::ClusterStatus {
    let mut status = match node.monitor.last_status() {
        Some(s) => s,
        None => {
            let s = crate::service::cluster::cluster_status(node).await;
            node.monitor.record_status(s.clone());
            return s;
        }
    };
    let m = node.metrics();
    status.leader = m.current_leader.unwrap_or(0);
    status.term = m.current_term;
    if let Some(me) = status.members.iter_mut().find(|x| x.id == node.id) {
        let i = taurus_store::network::node_info(node.id, &m);
        me.role = i.role;
        me.term = i.term;
        me.last_log_index = i.last_log_index;
        me.commit_index = i.commit_index;
        me.applied_index = i.applied_index;
        me.snapshot_index = i.snapshot_index;
        me.purged_index = i.purged_index;
        me.reachable = true;
        me.error.clear();
    }
    status
}

/// The report as this master sees it: the cached one while current (see
/// [`Monitor::cached`]), else computed now (it walks the queue: call it from a blocking
/// thread). Concurrent callers compute it once.
pub fn report(node: &Node) -> Computed {
    let monitor = &node.monitor;
    if let Some(c) = monitor.cached(node.duties.leading()) {
        return c;
    }
    let _one_at_a_time = locked(&monitor.inner.computing);
    // Someone else may have computed it while this caller waited.
    if let Some(c) = monitor.cached(node.duties.leading()) {
        return c;
    }
    let (history, generation) = monitor.history_and_generation();
    let state = node.sm.read(|s| s.clone());
    let observations = node
        .duties
        .observations(state.agents().map(|a| a.info.id.as_str()));
    let leader_view = observations.is_some();
    let observations = observations.unwrap_or_default();
    let now = crate::clock::now_ms();
    let r = taurus_core::monitor::report(&state, &history, &observations, monitor.thresholds(), now);
    let computed = Computed {
        report: Arc::new(r),
        leader_view,
    };
    monitor.store(computed.clone(), generation, Instant::now());
    computed
}

/// [`report`], in its wire form: the cached report straight away, else computed on a
/// blocking thread.
pub async fn wire_report(node: &Node) -> Result<v1::MonitoringReport, MasterError> {
    let computed = match node.monitor.cached(node.duties.leading()) {
        Some(c) => c,
        None => {
            let node = node.clone();
            tokio::task::spawn_blocking(move || report(&node))
                .await
                .map_err(|e| MasterError::Serve(format!("monitoring report: {e}")))?
        }
    };
    let mut wire = v1::MonitoringReport::from(&*computed.report);
    wire.served_by = node.id;
    wire.leader_view = computed.leader_view;
    Ok(wire)
}

/// The monitoring gauges of `/metrics` (called from `crate::metrics::collect`, on a blocking
/// thread): `taurus_anomalies{kind}` (current anomalies per kind, every kind listed),
/// `taurus_cluster_utilisation{resource}` and `taurus_agent_utilisation{agent}` (dominant
/// shares, 0 to 1).
pub fn collect_metrics(node: &Node, s: &mut crate::metrics::Scrape) {
    let computed = report(node);
    let r = &*computed.report;
    s.gauges(
        "taurus_anomalies",
        "Anomalies this master currently reports, by kind (heartbeat checks on the leader only)",
        "kind",
        AnomalyKind::ALL.map(|k| {
            (
                k.as_str(),
                r.anomalies.iter().filter(|a| a.kind == k).count() as f64,
            )
        }),
    );
    let c = &r.cluster;
    s.gauges(
        "taurus_cluster_utilisation",
        "Share of the capacity of agents not down that their tasks demand, by resource; dominant: the largest",
        "resource",
        [
            ("dominant", c.utilisation),
            ("slots", c.slots),
            ("cpu", c.cpu),
            ("memory", c.memory),
            ("disk", c.disk),
        ],
    );
    s.gauges(
        "taurus_agent_utilisation",
        "An agent's dominant share: the largest of slots, CPU, memory and disk used over offered",
        "agent",
        r.agents.iter().map(|a| (a.id.clone(), a.utilisation)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_cover_the_longest_window() {
        let c = MonitorConfig::default();
        c.validate().expect("defaults are valid");
        let t = c.thresholds();
        let longest = [
            t.utilisation_for_ms,
            t.flap_window_ms,
            t.queue_window_ms,
            t.lag_for_ms,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        assert!(
            ms(c.history) > longest,
            "the default history must cover every default window"
        );
        assert_eq!(c.capacity(), 181);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: [(&str, MonitorConfig); 5] = [
            (
                "monitor.sample_interval",
                MonitorConfig {
                    sample_interval: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "monitor.history",
                MonitorConfig {
                    history: Duration::from_secs(1),
                    ..Default::default()
                },
            ),
            (
                "monitor.high_utilisation",
                MonitorConfig {
                    high_utilisation: 1.5,
                    ..Default::default()
                },
            ),
            (
                "monitor.low_utilisation",
                MonitorConfig {
                    low_utilisation: 0.95,
                    ..Default::default()
                },
            ),
            (
                "monitor.queue_growth_per_min",
                MonitorConfig {
                    queue_growth_per_min: f64::NAN,
                    ..Default::default()
                },
            ),
        ];
        for (key, c) in cases {
            let err = c.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn parses_from_toml_with_durations() {
        let c: MonitorConfig = toml::from_str(
            "sample_interval = \"1s\"\nhistory = \"2m\"\nutilisation_for = \"30s\"\nlag_entries = 50",
        )
        .expect("parses");
        assert_eq!(c.capacity(), 121);
        assert_eq!(c.thresholds().utilisation_for_ms, 30_000);
        assert_eq!(c.thresholds().lag_entries, 50);
        assert!(toml::from_str::<MonitorConfig>("sample_every = \"1s\"").is_err());
    }

    #[test]
    fn a_cached_report_lasts_until_the_next_sample_an_interval_or_a_change_of_role() {
        let config = MonitorConfig {
            sample_interval: Duration::from_secs(60),
            ..MonitorConfig::default()
        };
        let m = Monitor::new(&config);
        assert!(m.cached(false).is_none(), "nothing computed yet");
        let computed = |leader_view| Computed {
            report: Arc::new(Report {
                at_ms: 7,
                ..Report::default()
            }),
            leader_view,
        };
        let (_, generation) = m.history_and_generation();
        m.store(computed(false), generation, Instant::now());
        let hit = m.cached(false).expect("current");
        assert_eq!(hit.report.at_ms, 7);
        assert!(
            m.cached(true).is_none(),
            "a follower's report is not served once leading"
        );

        m.record(Sample {
            at_ms: 1,
            pending: 0,
            runnable: 0,
            cluster_utilisation: 0.0,
            agents: Vec::new(),
            members: Vec::new(),
            leader: None,
        });
        assert!(m.cached(false).is_none(), "a new sample makes it stale");

        let (_, generation) = m.history_and_generation();
        let long_ago = Instant::now().checked_sub(Duration::from_secs(61));
        if let Some(at) = long_ago {
            m.store(computed(false), generation, at);
            assert!(m.cached(false).is_none(), "older than one interval: stale");
        }
    }

    #[test]
    fn lag_is_measured_against_the_highest_commit_index() {
        let member = |id, reachable, commit_index, applied_index| v1::Member {
            id,
            reachable,
            commit_index,
            applied_index,
            ..Default::default()
        };
        let status = v1::ClusterStatus {
            members: vec![
                member(1, true, 100, 100),
                member(2, true, 40, 30),
                member(3, false, 0, 0),
            ],
            ..Default::default()
        };
        let lags: Vec<(u64, bool, u64)> = member_samples(&status)
            .into_iter()
            .map(|m| (m.id, m.reachable, m.lag))
            .collect();
        assert_eq!(lags, vec![(1, true, 0), (2, true, 70), (3, false, 0)]);
    }
}
