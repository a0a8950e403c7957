//! Conversions between generated protobuf types and `taurus-core` domain types.

use taurus_core::command::ReportEvent;
use taurus_core::command::ReportOutcome;
use taurus_core::command::TaskReport;
use taurus_core::types::Agent;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::Attempt;
use taurus_core::types::AttemptEnd;
use taurus_core::types::Resources;
use taurus_core::types::Task;
use taurus_core::types::TaskSpec;
use taurus_core::types::TaskState;

use crate::ProtocolError;
use crate::v1;

impl From<v1::Resources> for Resources {
    fn from(r: v1::Resources) -> Self {
        Resources {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }
}

impl From<Resources> for v1::Resources {
    fn from(r: Resources) -> Self {
        v1::Resources {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
        }
    }
}

impl From<v1::TaskSpec> for TaskSpec {
    /// `max_attempts = 0` means the default, 1. Everything else is validated by the core.
    fn from(s: v1::TaskSpec) -> Self {
        TaskSpec {
            id: s.id,
            name: s.name,
            command: s.command,
            env: s.env.into_iter().collect(),
            priority: s.priority,
            resources: s.resources.map(Into::into).unwrap_or_default(),
            timeout_ms: s.timeout_ms,
            max_attempts: if s.max_attempts == 0 { 1 } else { s.max_attempts },
            depends_on: s.depends_on,
            labels: s.labels.into_iter().collect(),
            backoff_ms: s.backoff_ms.unwrap_or(TaskSpec::default().backoff_ms),
            pool: s.pool,
            constraints: s.constraints.into_iter().collect(),
            deadline_ms: s.deadline_ms,
            trace_parent: s.trace_parent,
        }
    }
}

impl From<&TaskSpec> for v1::TaskSpec {
    fn from(s: &TaskSpec) -> Self {
        v1::TaskSpec {
            id: s.id.clone(),
            name: s.name.clone(),
            command: s.command.clone(),
            env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            priority: s.priority,
            resources: Some(s.resources.into()),
            timeout_ms: s.timeout_ms,
            max_attempts: s.max_attempts,
            depends_on: s.depends_on.clone(),
            labels: s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            backoff_ms: Some(s.backoff_ms),
            pool: s.pool.clone(),
            constraints: s
                .constraints
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deadline_ms: s.deadline_ms,
            trace_parent: s.trace_parent.clone(),
        }
    }
}

impl From<TaskState> for v1::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => v1::TaskState::Pending,
            TaskState::Assigned => v1::TaskState::Assigned,
            TaskState::Running => v1::TaskState::Running,
            TaskState::Succeeded => v1::TaskState::Succeeded,
            TaskState::Failed => v1::TaskState::Failed,
            TaskState::Cancelled => v1::TaskState::Cancelled,
            TaskState::TimedOut => v1::TaskState::TimedOut,
        }
    }
}

/// Converts a wire state (an `i32` in prost messages) to the domain state; `field` names the
/// field for the error.
pub fn task_state_from_i32(value: i32, field: &str) -> Result<TaskState, ProtocolError> {
    match v1::TaskState::try_from(value) {
        Ok(v1::TaskState::Pending) => Ok(TaskState::Pending),
        Ok(v1::TaskState::Assigned) => Ok(TaskState::Assigned),
        Ok(v1::TaskState::Running) => Ok(TaskState::Running),
        Ok(v1::TaskState::Succeeded) => Ok(TaskState::Succeeded),
        Ok(v1::TaskState::Failed) => Ok(TaskState::Failed),
        Ok(v1::TaskState::Cancelled) => Ok(TaskState::Cancelled),
        Ok(v1::TaskState::TimedOut) => Ok(TaskState::TimedOut),
        Ok(v1::TaskState::Unspecified) | Err(_) => Err(ProtocolError::invalid(
            field,
            format!("unknown task state {value}"),
        )),
    }
}

impl From<&Attempt> for v1::Attempt {
    fn from(a: &Attempt) -> Self {
        v1::Attempt {
            number: a.number,
            agent_id: a.agent_id.clone(),
            fencing_token: a.fencing_token,
            assigned_at_ms: a.assigned_at_ms,
            started_at_ms: a.started_at_ms,
            finished_at_ms: a.finished_at_ms,
            exit_code: a.exit_code,
            error: a.error.clone(),
            end: a.end.map(|e| e.as_str().to_string()).unwrap_or_default(),
            stdout_tail: a.stdout_tail.clone(),
            stderr_tail: a.stderr_tail.clone(),
        }
    }
}

impl From<&Task> for v1::Task {
    fn from(t: &Task) -> Self {
        v1::Task {
            spec: Some((&t.spec).into()),
            state: v1::TaskState::from(t.state) as i32,
            attempts: t.attempts.iter().map(Into::into).collect(),
            created_index: t.created_index,
            log_index: t.log_index,
            submitted_at_ms: t.submitted_at_ms,
            updated_at_ms: t.updated_at_ms,
            reason: t.reason.clone(),
            unmet_dependencies: t.unmet_deps,
            not_before_ms: t.not_before_ms,
            queued_at_ms: t.queued_at_ms,
            submitted_by: t.submitted_by.clone(),
            cancelled_by: t.cancelled_by.clone(),
        }
    }
}

impl From<AgentState> for v1::AgentState {
    fn from(s: AgentState) -> Self {
        match s {
            AgentState::Alive => v1::AgentState::Alive,
            AgentState::Draining => v1::AgentState::Draining,
            AgentState::Down => v1::AgentState::Down,
        }
    }
}

/// The agent's registration as the state machine takes it. `max_tasks = 0` means 1.
pub fn agent_info_from_register(r: v1::RegisterAgentRequest) -> AgentInfo {
    AgentInfo {
        id: r.id,
        address: r.address,
        resources: r.resources.map(Into::into).unwrap_or_default(),
        max_tasks: r.max_tasks.max(1),
        labels: r.labels.into_iter().collect(),
        pool: r.pool,
    }
}

/// An agent record on the wire; `task_ids` is filled by the caller when wanted.
impl From<&Agent> for v1::AgentInfo {
    fn from(a: &Agent) -> Self {
        v1::AgentInfo {
            id: a.info.id.clone(),
            address: a.info.address.clone(),
            resources: Some(a.info.resources.into()),
            max_tasks: a.info.max_tasks,
            labels: a
                .info
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pool: a.info.pool.clone(),
            state: v1::AgentState::from(a.state) as i32,
            epoch: a.epoch,
            registered_at_ms: a.registered_at_ms,
            updated_at_ms: a.updated_at_ms,
            used: Some(a.used.into()),
            tasks: a.tasks,
            reason: a.reason.clone(),
            task_ids: Vec::new(),
            exit_requested: a.exit.is_some(),
            exit_deadline_at_ms: a.exit.and_then(|e| e.deadline_at_ms),
        }
    }
}

/// Parses an attempt end as agents report it (`succeeded | failed | timed_out | killed`).
pub fn reported_end(s: &str, field: &str) -> Result<AttemptEnd, ProtocolError> {
    match s {
        "succeeded" => Ok(AttemptEnd::Succeeded),
        "failed" => Ok(AttemptEnd::Failed),
        "timed_out" => Ok(AttemptEnd::TimedOut),
        "killed" => Ok(AttemptEnd::Killed),
        other => Err(ProtocolError::invalid(
            field,
            format!("{other:?} is not one of succeeded, failed, timed_out, killed"),
        )),
    }
}

/// One wire report as the state machine takes it; `field` prefixes error fields.
pub fn task_report(
    agent_id: &str,
    r: v1::TaskStatusReport,
    field: &str,
) -> Result<TaskReport, ProtocolError> {
    let event = match v1::ReportKind::try_from(r.kind) {
        Ok(v1::ReportKind::Started) => ReportEvent::Started,
        Ok(v1::ReportKind::Finished) => ReportEvent::Finished {
            end: reported_end(&r.end, &format!("{field}.end"))?,
            exit_code: r.exit_code,
            error: r.error,
            stdout_tail: r.stdout_tail,
            stderr_tail: r.stderr_tail,
        },
        Ok(v1::ReportKind::Unspecified) | Err(_) => {
            return Err(ProtocolError::invalid(
                format!("{field}.kind"),
                format!("unknown report kind {}", r.kind),
            ));
        }
    };
    Ok(TaskReport {
        task_id: r.task_id,
        agent_id: agent_id.to_string(),
        token: r.fencing_token,
        event,
    })
}

/// The wire form of a report outcome.
pub fn report_result(task_id: String, outcome: ReportOutcome) -> v1::ReportResult {
    let (outcome, message) = match outcome {
        ReportOutcome::Accepted => ("accepted", String::new()),
        ReportOutcome::Duplicate => ("duplicate", String::new()),
        ReportOutcome::Stale(why) => ("stale", why),
        ReportOutcome::Invalid(r) => ("invalid", r.to_string()),
    };
    v1::ReportResult {
        task_id,
        outcome: outcome.to_string(),
        message,
    }
}

impl From<&taurus_core::acl::Token> for v1::TokenInfo {
    /// Never carries the secret's hash.
    fn from(t: &taurus_core::acl::Token) -> Self {
        v1::TokenInfo {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.to_string(),
            agent: t.agent.clone().unwrap_or_default(),
            created_at_ms: t.created_at_ms,
            created_by: t.created_by.clone(),
            expires_at_ms: t.expires_at_ms.unwrap_or(0),
            rate_per_sec: t.rate_per_sec.unwrap_or(0),
        }
    }
}

/// A monitoring report on the wire; `served_by` and `leader_view` are the caller's to set.
impl From<&taurus_core::monitor::Report> for v1::MonitoringReport {
    fn from(r: &taurus_core::monitor::Report) -> Self {
        use taurus_core::monitor;
        let spread = |s: &monitor::Spread| v1::Spread {
            mean_ms: s.mean_ms,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            max_ms: s.max_ms,
        };
        let c = &r.cluster;
        let q = &r.queue;
        let e = &r.efficiency;
        v1::MonitoringReport {
            at_ms: r.at_ms,
            served_by: 0,
            leader_view: false,
            agents: r
                .agents
                .iter()
                .map(|a| v1::AgentUsage {
                    id: a.id.clone(),
                    state: v1::AgentState::from(a.state) as i32,
                    pool: a.pool.clone(),
                    tasks: a.tasks,
                    max_tasks: a.max_tasks,
                    slots: a.slots,
                    cpu: a.cpu,
                    memory: a.memory,
                    disk: a.disk,
                    utilisation: a.utilisation,
                    load: a.load,
                    heartbeat_silence_ms: a.heartbeat_silence_ms,
                })
                .collect(),
            cluster: Some(v1::ClusterUsage {
                agents_alive: c.agents_alive,
                agents_draining: c.agents_draining,
                agents_down: c.agents_down,
                slots_used: c.slots_used,
                slots_total: c.slots_total,
                slots: c.slots,
                cpu: c.cpu,
                memory: c.memory,
                disk: c.disk,
                utilisation: c.utilisation,
            }),
            queue: Some(v1::QueueStats {
                by_state: q
                    .by_state
                    .iter()
                    .map(|(s, n)| v1::StateCount {
                        state: v1::TaskState::from(*s) as i32,
                        count: *n,
                    })
                    .collect(),
                runnable: q.runnable,
                delayed: q.delayed,
                waiting_deps: q.waiting_deps,
                by_priority: q
                    .by_priority
                    .iter()
                    .map(|(p, n)| v1::PriorityCount {
                        priority: *p,
                        count: *n,
                    })
                    .collect(),
                by_pool: q
                    .by_pool
                    .iter()
                    .map(|(p, n)| v1::PoolCount {
                        pool: p.clone(),
                        count: *n,
                    })
                    .collect(),
                growth_per_min: q.growth_per_min,
            }),
            efficiency: Some(v1::Efficiency {
                tasks: e.tasks,
                queue_wait: Some(spread(&e.queue_wait)),
                run_time: Some(spread(&e.run_time)),
                run_share: e.run_share,
                finished_last_minute: e.finished_last_minute,
            }),
            anomalies: r
                .anomalies
                .iter()
                .map(|a| v1::Anomaly {
                    kind: a.kind.as_str().to_string(),
                    subject: a.subject.clone(),
                    severity: a.severity.as_str().to_string(),
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
    fn every_state_round_trips_through_the_wire_enum() {
        for s in TaskState::ALL {
            let wire = v1::TaskState::from(s) as i32;
            assert_eq!(task_state_from_i32(wire, "state"), Ok(s));
        }
    }

    #[test]
    fn unspecified_and_unknown_states_are_rejected_naming_the_field() {
        assert_eq!(
            task_state_from_i32(0, "states[0]").unwrap_err().field(),
            "states[0]"
        );
        assert!(task_state_from_i32(99, "states[1]").is_err());
    }

    #[test]
    fn zero_max_attempts_means_one_and_missing_resources_mean_none() {
        let spec: TaskSpec = v1::TaskSpec {
            id: "a".into(),
            command: vec!["true".into()],
            ..Default::default()
        }
        .into();
        assert_eq!(spec.max_attempts, 1);
        assert_eq!(spec.resources, Resources::default());
        let back = v1::TaskSpec::from(&spec);
        assert_eq!(TaskSpec::from(back), spec);
    }
}
