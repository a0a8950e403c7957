//! `taurus cluster anomalies` and the monitoring summary of `taurus cluster status`.
//!
//! Both read `ClusterService.GetMonitoring`: the leader's report (any master forwards), or with
//! `--local` the called master's own. Exit status of `anomalies`: 0 whatever is found; with
//! `--fail-on SEVERITY`, 1 when an anomaly at or above that severity is present; 2 on errors.

use std::process::ExitCode;

use serde::Serialize;
use taurus_client::v1;

use crate::Context;
use crate::output::Table;
use crate::output::duration_ms;
use crate::output::print_json;
use crate::output::state_name;

/// Exit status of `anomalies --fail-on` when a matching anomaly is present.
pub const EXIT_ANOMALIES: u8 = 1;

/// `taurus cluster anomalies`.
pub async fn anomalies(ctx: &Context, fail_on: Option<&str>, local: bool) -> anyhow::Result<ExitCode> {
    let report = ctx.client()?.monitoring(local).await?;
    let view = MonitoringView::from(&report);
    if ctx.json {
        print_json(&view.anomalies)?;
    } else {
        print_anomalies(&view);
    }
    let threshold = fail_on.map(severity_rank);
    let failing = threshold.is_some_and(|t| view.anomalies.iter().any(|a| severity_rank(&a.severity) >= t));
    Ok(if failing {
        ExitCode::from(EXIT_ANOMALIES)
    } else {
        ExitCode::SUCCESS
    })
}

/// 0 info, 1 warning, 2 critical (an unknown severity counts as critical).
fn severity_rank(s: &str) -> u8 {
    match s {
        "info" => 0,
        "warning" => 1,
        _ => 2,
    }
}

fn print_anomalies(v: &MonitoringView) {
    let whose = if v.leader_view {
        format!("leader's view, master {}", v.served_by)
    } else {
        format!(
            "master {}'s own view; heartbeat checks run on the leader only",
            v.served_by
        )
    };
    if v.anomalies.is_empty() {
        println!("no anomalies ({whose})");
        return;
    }
    println!("{} anomalies ({whose})", v.anomalies.len());
    let mut table = Table::new(&["SEVERITY", "KIND", "SUBJECT", "OBSERVED", "SUGGESTION"]);
    for a in &v.anomalies {
        table.row(vec![
            a.severity.clone(),
            a.kind.clone(),
            a.subject.clone(),
            a.message.clone(),
            a.suggestion.clone(),
        ]);
    }
    table.print();
}

fn pct(f: f64) -> String {
    format!("{:.0}%", f * 100.0)
}

/// The lines `taurus cluster status` prints under the members.
pub fn print_summary(v: &MonitoringView) {
    let c = &v.cluster;
    println!();
    println!(
        "utilisation: {} (slots {}/{}, cpu {}, memory {}, disk {})   agents: {} alive, {} draining, {} down",
        pct(c.utilisation),
        c.slots_used,
        c.slots_total,
        pct(c.cpu),
        pct(c.memory),
        pct(c.disk),
        c.agents_alive,
        c.agents_draining,
        c.agents_down,
    );
    let q = &v.queue;
    let n = |s: &str| q.by_state.get(s).copied().unwrap_or(0);
    let growth = q
        .growth_per_min
        .map_or(String::new(), |g| format!("; growth {g:+.1}/min"));
    println!(
        "queue: {} pending ({} runnable, {} in back-off, {} waiting on dependencies), {} assigned, {} running{growth}",
        n("pending"),
        q.runnable,
        q.delayed,
        q.waiting_deps,
        n("assigned"),
        n("running"),
    );
    let e = &v.efficiency;
    if e.tasks > 0 {
        println!(
            "efficiency (last {} finished): queue wait p50 {} p95 {}, run time p50 {} p95 {}{}",
            e.tasks,
            duration_ms(e.queue_wait.p50_ms),
            duration_ms(e.queue_wait.p95_ms),
            duration_ms(e.run_time.p50_ms),
            duration_ms(e.run_time.p95_ms),
            e.run_share
                .map_or(String::new(), |s| format!("; {} of the time running", pct(s))),
        );
    }
    if v.anomalies.is_empty() {
        println!("anomalies: none");
    } else {
        let mut by: Vec<String> = Vec::new();
        for sev in ["critical", "warning", "info"] {
            let k = v.anomalies.iter().filter(|a| a.severity == sev).count();
            if k > 0 {
                by.push(format!("{k} {sev}"));
            }
        }
        println!(
            "anomalies: {} ({}); see `taurus cluster anomalies`",
            v.anomalies.len(),
            by.join(", ")
        );
    }
}

/// A monitoring report as the CLI prints it in JSON.
#[derive(Debug, Serialize)]
pub struct MonitoringView {
    pub at_ms: u64,
    pub served_by: u64,
    /// Computed by the leader (heartbeat checks included).
    pub leader_view: bool,
    pub cluster: ClusterUsageView,
    pub agents: Vec<AgentUsageView>,
    pub queue: QueueView,
    pub efficiency: EfficiencyView,
    pub anomalies: Vec<AnomalyView>,
    pub samples: u64,
    pub history_ms: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ClusterUsageView {
    pub utilisation: f64,
    pub slots: f64,
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    pub slots_used: u64,
    pub slots_total: u64,
    pub agents_alive: u32,
    pub agents_draining: u32,
    pub agents_down: u32,
}

#[derive(Debug, Serialize)]
pub struct AgentUsageView {
    pub id: String,
    pub state: String,
    pub pool: String,
    pub tasks: u32,
    pub max_tasks: u32,
    pub utilisation: f64,
    pub slots: f64,
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    pub load: Option<f64>,
    pub heartbeat_silence_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct QueueView {
    /// Tasks per state name.
    pub by_state: std::collections::BTreeMap<String, u64>,
    pub runnable: u64,
    pub delayed: u64,
    pub waiting_deps: u64,
    /// Runnable tasks per priority, highest first.
    pub by_priority: Vec<(i32, u64)>,
    /// Runnable tasks per pool (`""`: any pool).
    pub by_pool: Vec<(String, u64)>,
    pub growth_per_min: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct SpreadView {
    pub mean_ms: f64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct EfficiencyView {
    pub tasks: u64,
    pub queue_wait: SpreadView,
    pub run_time: SpreadView,
    pub run_share: Option<f64>,
    pub finished_last_minute: u64,
}

#[derive(Debug, Serialize)]
pub struct AnomalyView {
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub message: String,
    pub suggestion: String,
}

fn spread(s: Option<&v1::Spread>) -> SpreadView {
    s.map_or_else(SpreadView::default, |s| SpreadView {
        mean_ms: s.mean_ms,
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
        max_ms: s.max_ms,
    })
}

fn agent_state(state: i32) -> String {
    match v1::AgentState::try_from(state) {
        Ok(v1::AgentState::Alive) => "alive".into(),
        Ok(v1::AgentState::Draining) => "draining".into(),
        Ok(v1::AgentState::Down) => "down".into(),
        _ => format!("unknown({state})"),
    }
}

impl From<&v1::MonitoringReport> for MonitoringView {
    fn from(r: &v1::MonitoringReport) -> Self {
        let cluster = r
            .cluster
            .as_ref()
            .map_or_else(ClusterUsageView::default, |c| ClusterUsageView {
                utilisation: c.utilisation,
                slots: c.slots,
                cpu: c.cpu,
                memory: c.memory,
                disk: c.disk,
                slots_used: c.slots_used,
                slots_total: c.slots_total,
                agents_alive: c.agents_alive,
                agents_draining: c.agents_draining,
                agents_down: c.agents_down,
            });
        let queue = r.queue.as_ref().map_or_else(QueueView::default, |q| QueueView {
            by_state: q
                .by_state
                .iter()
                .map(|c| (state_name(c.state), c.count))
                .collect(),
            runnable: q.runnable,
            delayed: q.delayed,
            waiting_deps: q.waiting_deps,
            by_priority: q.by_priority.iter().map(|p| (p.priority, p.count)).collect(),
            by_pool: q.by_pool.iter().map(|p| (p.pool.clone(), p.count)).collect(),
            growth_per_min: q.growth_per_min,
        });
        let efficiency = r
            .efficiency
            .as_ref()
            .map_or_else(EfficiencyView::default, |e| EfficiencyView {
                tasks: e.tasks,
                queue_wait: spread(e.queue_wait.as_ref()),
                run_time: spread(e.run_time.as_ref()),
                run_share: e.run_share,
                finished_last_minute: e.finished_last_minute,
            });
        MonitoringView {
            at_ms: r.at_ms,
            served_by: r.served_by,
            leader_view: r.leader_view,
            cluster,
            agents: r
                .agents
                .iter()
                .map(|a| AgentUsageView {
                    id: a.id.clone(),
                    state: agent_state(a.state),
                    pool: a.pool.clone(),
                    tasks: a.tasks,
                    max_tasks: a.max_tasks,
                    utilisation: a.utilisation,
                    slots: a.slots,
                    cpu: a.cpu,
                    memory: a.memory,
                    disk: a.disk,
                    load: a.load,
                    heartbeat_silence_ms: a.heartbeat_silence_ms,
                })
                .collect(),
            queue,
            efficiency,
            anomalies: r
                .anomalies
                .iter()
                .map(|a| AnomalyView {
                    kind: a.kind.clone(),
                    subject: a.subject.clone(),
                    severity: a.severity.clone(),
                    message: a.message.clone(),
                    suggestion: a.suggestion.clone(),
                })
                .collect(),
            samples: r.samples,
            history_ms: r.history_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_rank_and_json_names_fields() {
        assert!(severity_rank("critical") > severity_rank("warning"));
        assert!(severity_rank("warning") > severity_rank("info"));
        let r = v1::MonitoringReport {
            served_by: 2,
            leader_view: true,
            queue: Some(v1::QueueStats {
                by_state: vec![v1::StateCount {
                    state: v1::TaskState::Pending as i32,
                    count: 4,
                }],
                ..Default::default()
            }),
            anomalies: vec![v1::Anomaly {
                kind: "queue_growing".into(),
                subject: "queue".into(),
                severity: "warning".into(),
                message: "m".into(),
                suggestion: "s".into(),
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(MonitoringView::from(&r)).expect("serializes");
        assert_eq!(json["queue"]["by_state"]["pending"], 4);
        assert_eq!(json["anomalies"][0]["kind"], "queue_growing");
        assert_eq!(json["cluster"]["utilisation"], 0.0, "absent sections are zeros");
        assert!(json["queue"]["growth_per_min"].is_null());
    }
}
