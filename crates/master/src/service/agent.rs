//! `taurus.v1.AgentService`: registration, heartbeats, the assignment feed and reports.
//!
//! - `RegisterAgent`, `Heartbeat`, `ReportTaskStatus` and `SetAgentDrain` run on the leader;
//!   a follower forwards them (once). A heartbeat is answered only by a leader that has
//!   confirmed its leadership (openraft's lease), so an acknowledged heartbeat really renews the
//!   agent's lease with the master that will judge it.
//! - `WatchAssignments` is served from this master's own applied state: an agent connected to a
//!   follower keeps receiving work through a leader change. The stream sends the agent's whole
//!   assigned set first, then what is new and what to stop after every applied entry.

use std::collections::HashMap;
use std::pin::Pin;

use futures::Stream;
use openraft::ReadPolicy;
use taurus_core::Command;
use taurus_core::Response as CoreResponse;
use taurus_core::State;
use taurus_core::acl::Role;
use taurus_core::command::ReportEvent;
use taurus_core::command::ReportOutcome;
use taurus_core::types::AgentState;
use taurus_core::validate;
use taurus_protocol::convert;
use taurus_protocol::v1;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use taurus_protocol::v1::agent_service_server::AgentService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::Attempt;
use super::Caller;
use super::authenticate;
use super::authorize;
use super::forward_request;
use super::is_forwarded;
use super::on_leader;
use super::read_status;
use super::rejection_status;
use super::write_local;
use crate::auth::Principal;
use crate::batcher::now_ms;
use crate::node::Node;
use crate::write::WriteError;

/// Most reports in one `ReportTaskStatus` call.
const MAX_REPORTS: usize = 10_000;

pub struct AgentApi {
    node: Node,
}

impl AgentApi {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    async fn prepare_read(&self, caller: &Caller, consistency: i32) -> Result<v1::ReadInfo, Status> {
        if consistency == v1::Consistency::Stale as i32 {
            return Ok(v1::ReadInfo {
                served_by: self.node.id,
                applied_index: self.node.sm.applied_index(),
                stale: true,
            });
        }
        let applied = self.node.read_barrier().await.map_err(read_status)?;
        caller.recheck(&self.node)?;
        Ok(v1::ReadInfo {
            served_by: self.node.id,
            applied_index: applied,
            stale: false,
        })
    }
}

fn unexpected(other: CoreResponse) -> Status {
    Status::internal(format!("unexpected state machine response {other:?}"))
}

fn agent_client(ch: tonic::transport::Channel) -> AgentServiceClient<tonic::transport::Channel> {
    AgentServiceClient::new(ch).max_decoding_message_size(64 << 20)
}

/// Whether `agent` at `epoch` is the current, not-down incarnation.
fn epoch_current(state: &State, agent: &str, epoch: u64) -> bool {
    state
        .agent(agent)
        .is_some_and(|a| a.epoch == epoch && a.state != AgentState::Down)
}

/// `PERMISSION_DENIED` when one of `reports` names an attempt this master knows was placed on
/// another agent than `agent` (the reporter): an agent may report only on its own tasks.
fn not_its_attempt(
    state: &State,
    agent: &str,
    reports: &[taurus_core::command::TaskReport],
) -> Result<(), Status> {
    for (i, r) in reports.iter().enumerate() {
        let owner = state.get(&r.task_id).and_then(|t| {
            t.attempts
                .iter()
                .find(|a| a.fencing_token == r.token)
                .map(|a| a.agent_id.as_str())
        });
        if let Some(owner) = owner
            && owner != agent
        {
            return Err(Status::permission_denied(format!(
                "reports[{i}]: attempt {} of task {} was placed on agent {owner:?}, not on {agent:?}; \
                 an agent reports only on its own tasks",
                r.token, r.task_id
            )));
        }
    }
    Ok(())
}

/// Whether the attempt `(task, token)` is still what `agent` should run.
fn attempt_current(state: &State, agent: &str, task: &str, token: u64) -> bool {
    state.get(task).is_some_and(|t| {
        t.current_attempt()
            .is_some_and(|a| a.fencing_token == token && a.agent_id == agent)
    })
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<v1::AssignmentBatch, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register_agent(
        &self,
        req: Request<v1::RegisterAgentRequest>,
    ) -> Result<Response<v1::RegisterAgentResponse>, Status> {
        let caller = authenticate(&self.node, &req).await?;
        caller.require_agent(&req.get_ref().id, "RegisterAgent")?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        let info = convert::agent_info_from_register(msg.clone());
        validate::validate_agent(&info).map_err(rejection_status)?;
        let node = &self.node;
        let local = || {
            let cmd = Command::RegisterAgent {
                agent: info.clone(),
                now_ms: now_ms(),
            };
            async move {
                match write_local(node, cmd).await {
                    Attempt::Done(Ok((CoreResponse::Registered(Ok(r)), index))) => {
                        node.duties.heartbeat(&r.id, r.epoch, None);
                        tracing::info!(agent = %r.id, epoch = r.epoch, lost = r.lost.len(), "agent registered");
                        Attempt::Done(Ok(Response::new(v1::RegisterAgentResponse {
                            epoch: r.epoch,
                            lost: r.lost,
                            log_index: index,
                        })))
                    }
                    Attempt::Done(Ok((CoreResponse::Registered(Err(r)), _))) => {
                        Attempt::Done(Err(rejection_status(r)))
                    }
                    Attempt::Done(Ok((other, _))) => Attempt::Done(Err(unexpected(other))),
                    Attempt::Done(Err(s)) => Attempt::Done(Err(s)),
                    Attempt::NotLeader => Attempt::NotLeader,
                }
            }
        };
        let msg_ref = &msg;
        let forward = |ch| async move {
            agent_client(ch)
                .register_agent(forward_request(&self.node, caller, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let caller = authenticate(&self.node, &req).await?;
        caller.require_agent(&req.get_ref().agent_id, "Heartbeat")?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        validate::validate_id(&msg.agent_id).map_err(|r| rejection_status(r.within("agent_id")))?;
        if msg.running.len() > validate::MAX_AGENT_TASKS as usize {
            return Err(Status::invalid_argument(format!(
                "running: more than {} attempts",
                validate::MAX_AGENT_TASKS
            )));
        }
        let node = &self.node;
        let msg_ref = &msg;
        let local = || async move {
            // Only a leader sure of its leadership may renew a lease.
            if node
                .raft
                .ensure_linearizable(ReadPolicy::LeaseRead)
                .await
                .is_err()
            {
                return Attempt::NotLeader;
            }
            let (current, stop, exit) = node.sm.read(|s| {
                let current = epoch_current(s, &msg_ref.agent_id, msg_ref.epoch);
                let exit = s
                    .agent(&msg_ref.agent_id)
                    .and_then(|a| a.exit)
                    .filter(|_| current);
                let stop: Vec<v1::RunningAttempt> = msg_ref
                    .running
                    .iter()
                    .filter(|r| {
                        !current || !attempt_current(s, &msg_ref.agent_id, &r.task_id, r.fencing_token)
                    })
                    .cloned()
                    .collect();
                (current, stop, exit)
            });
            if current {
                let load = (msg_ref.load.is_finite() && msg_ref.load > 0.0).then_some(msg_ref.load);
                node.duties.heartbeat(&msg_ref.agent_id, msg_ref.epoch, load);
                node.metrics.heartbeats.inc();
            }
            Attempt::Done(Ok(Response::new(v1::HeartbeatResponse {
                reregister: !current,
                stop,
                leader: node.id,
                lease_ms: node.lease_timeout.as_millis() as u64,
                exit: exit.is_some(),
                // What is left of the deadline by this leader's clock (0: passed already).
                exit_deadline_ms: exit
                    .and_then(|e| e.deadline_at_ms)
                    .map(|at| at.saturating_sub(now_ms())),
            })))
        };
        let forward = |ch| async move {
            agent_client(ch)
                .heartbeat(forward_request(&self.node, caller, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        req: Request<v1::WatchAssignmentsRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        let caller = authenticate(&self.node, &req).await?;
        caller.require_agent(&req.get_ref().agent_id, "WatchAssignments")?;
        let msg = req.into_inner();
        validate::validate_id(&msg.agent_id).map_err(|r| rejection_status(r.within("agent_id")))?;
        let (tx, rx) = mpsc::channel(64);
        let sm = self.node.sm.clone();
        let node = self.node.clone();
        let mut applied = sm.subscribe();
        tokio::spawn(async move {
            // What this stream has told the agent to run: task -> token.
            let mut sent: HashMap<String, u64> = HashMap::new();
            let mut first = true;
            // The change marker of the agent's set when this stream last read it: entries that
            // did not touch this agent cost one lookup, not a walk of its whole set.
            let mut read_at: Option<Option<u64>> = None;
            loop {
                // A revoke (or expiry) of the join token ends the stream it opened: the agent
                // gets no more work under it.
                if let Err(status) = caller.recheck(&node) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let applied_index = sm.applied_index();
                let batch = sm.read(|s| {
                    if !epoch_current(s, &msg.agent_id, msg.epoch) {
                        return v1::AssignmentBatch {
                            reregister: true,
                            applied_index,
                            ..Default::default()
                        };
                    }
                    let marker = s.agent_tasks_changed_at(&msg.agent_id);
                    if read_at == Some(marker) {
                        return v1::AssignmentBatch {
                            applied_index,
                            ..Default::default()
                        };
                    }
                    read_at = Some(marker);
                    let mut assign = Vec::new();
                    let mut live: HashMap<&str, u64> = HashMap::new();
                    for (id, token) in s.agent_tasks(&msg.agent_id) {
                        live.insert(id.as_str(), token);
                        if sent.get(id.as_str()) == Some(&token) {
                            continue;
                        }
                        let Some(t) = s.get(id) else { continue };
                        let Some(a) = t.current_attempt() else { continue };
                        assign.push(v1::Assignment {
                            spec: Some((&t.spec).into()),
                            attempt: a.number,
                            fencing_token: token,
                        });
                    }
                    let stop: Vec<v1::RunningAttempt> = sent
                        .iter()
                        .filter(|(id, token)| live.get(id.as_str()) != Some(token))
                        .map(|(id, token)| v1::RunningAttempt {
                            task_id: id.clone(),
                            fencing_token: *token,
                        })
                        .collect();
                    v1::AssignmentBatch {
                        assign,
                        stop,
                        applied_index,
                        reregister: false,
                    }
                });
                for s in &batch.stop {
                    sent.remove(&s.task_id);
                }
                for a in &batch.assign {
                    if let Some(spec) = &a.spec {
                        sent.insert(spec.id.clone(), a.fencing_token);
                    }
                }
                let reregister = batch.reregister;
                if first || reregister || !batch.assign.is_empty() || !batch.stop.is_empty() {
                    first = false;
                    if tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
                if reregister {
                    return;
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() {
                        let _ = tx.send(Err(Status::unavailable("master shutting down; watch another"))).await;
                        return;
                    },
                    _ = tx.closed() => return,
                    () = node.stopping.wait() => {
                        let status = Status::unavailable("master stopping; watch another master");
                        let _ = tx.send_timeout(Err(status), crate::lifecycle::LAST_WORD_TIMEOUT).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_task_status(
        &self,
        req: Request<v1::ReportTaskStatusRequest>,
    ) -> Result<Response<v1::ReportTaskStatusResponse>, Status> {
        let caller = authenticate(&self.node, &req).await?;
        caller.require_agent(&req.get_ref().agent_id, "ReportTaskStatus")?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        validate::validate_id(&msg.agent_id).map_err(|r| rejection_status(r.within("agent_id")))?;
        if msg.reports.is_empty() || msg.reports.len() > MAX_REPORTS {
            return Err(Status::invalid_argument(format!(
                "reports: between 1 and {MAX_REPORTS} reports"
            )));
        }
        let reports = msg
            .reports
            .iter()
            .enumerate()
            .map(|(i, r)| convert::task_report(&msg.agent_id, r.clone(), &format!("reports[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // An authenticated agent reports only on attempts placed on it. Apply would answer
        // `Stale` anyway (the attempt names its agent); refusing here makes the attempt visible.
        if let Principal::Agent { name, .. } = &caller.principal {
            self.node.sm.read(|s| not_its_attempt(s, name, &reports))?;
        }
        let node = &self.node;
        let msg_ref = &msg;
        let reports_ref = &reports;
        let local = || async move {
            match node.reports.propose_group(reports_ref.clone()).await {
                Ok((outcomes, index)) => {
                    let now = now_ms();
                    // Observed start latency feeds the delay-guided policy (and, from
                    // submission, for first attempts, the metrics).
                    node.sm.read(|s| {
                        for (r, o) in reports_ref.iter().zip(&outcomes) {
                            if matches!(r.event, ReportEvent::Started)
                                && *o == ReportOutcome::Accepted
                                && let Some(t) = s.get(&r.task_id)
                                && let Some(a) = t.attempts.last()
                            {
                                node.duties
                                    .started(&r.agent_id, now.saturating_sub(a.assigned_at_ms));
                                if a.number == 1 {
                                    let latency = now.saturating_sub(t.submitted_at_ms);
                                    node.metrics.start_latency.observe(latency as f64 / 1000.0);
                                }
                            }
                        }
                    });
                    let results = reports_ref
                        .iter()
                        .zip(outcomes)
                        .map(|(r, o)| convert::report_result(r.task_id.clone(), o))
                        .collect();
                    Attempt::Done(Ok(Response::new(v1::ReportTaskStatusResponse {
                        results,
                        log_index: index,
                    })))
                }
                Err(WriteError::NotLeader { .. }) => Attempt::NotLeader,
                Err(e) => Attempt::Done(Err(super::write_status(e))),
            }
        };
        let forward = |ch| async move {
            agent_client(ch)
                .report_task_status(forward_request(&self.node, caller, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }

    async fn list_agents(
        &self,
        req: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        let caller = authorize(&self.node, &req, Role::Read, "ListAgents").await?;
        let read = self.prepare_read(&caller, req.into_inner().consistency).await?;
        let agents = self
            .node
            .sm
            .read(|s| s.agents().map(v1::AgentInfo::from).collect());
        Ok(Response::new(v1::ListAgentsResponse {
            agents,
            read: Some(read),
        }))
    }

    async fn get_agent(
        &self,
        req: Request<v1::GetAgentRequest>,
    ) -> Result<Response<v1::GetAgentResponse>, Status> {
        let caller = authorize(&self.node, &req, Role::Read, "GetAgent").await?;
        let msg = req.into_inner();
        validate::validate_id(&msg.id).map_err(rejection_status)?;
        let read = self.prepare_read(&caller, msg.consistency).await?;
        let agent = self.node.sm.read(|s| {
            s.agent(&msg.id).map(|a| {
                let mut info = v1::AgentInfo::from(a);
                info.task_ids = s.agent_tasks(&msg.id).map(|(id, _)| id.clone()).collect();
                info
            })
        });
        match agent {
            Some(agent) => Ok(Response::new(v1::GetAgentResponse {
                agent: Some(agent),
                read: Some(read),
            })),
            None => Err(Status::not_found(format!("id: no agent {:?}", msg.id))),
        }
    }

    async fn set_agent_drain(
        &self,
        req: Request<v1::SetAgentDrainRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        let caller = authenticate(&self.node, &req).await?;
        {
            let msg = req.get_ref();
            match &caller.principal {
                // An agent that is shutting down drains itself (and only that).
                Principal::Agent { .. } if msg.drain && !msg.exit => {
                    caller.require_agent(&msg.id, "SetAgentDrain")?
                }
                _ => caller.require(Role::Operator, "SetAgentDrain")?,
            }
        }
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        validate::validate_id(&msg.id).map_err(rejection_status)?;
        super::check_reason(&msg.reason)?;
        if msg.exit && !msg.drain {
            return Err(Status::invalid_argument(
                "exit: only with drain (an undrained agent keeps working)",
            ));
        }
        if msg.deadline_ms.is_some() && !msg.exit {
            return Err(Status::invalid_argument("deadline_ms: only with exit"));
        }
        if msg
            .deadline_ms
            .is_some_and(|d| d > validate::MAX_EXIT_DEADLINE_MS)
        {
            return Err(Status::invalid_argument(format!(
                "deadline_ms: longer than {} ms (limit max_exit_deadline)",
                validate::MAX_EXIT_DEADLINE_MS
            )));
        }
        let node = &self.node;
        let msg_ref = &msg;
        let local = || {
            let cmd = if msg_ref.exit {
                Command::RequestAgentExit {
                    id: msg_ref.id.clone(),
                    deadline_ms: msg_ref.deadline_ms,
                    reason: msg_ref.reason.clone(),
                    now_ms: now_ms(),
                }
            } else {
                Command::SetAgentState {
                    id: msg_ref.id.clone(),
                    epoch: None,
                    state: if msg_ref.drain {
                        AgentState::Draining
                    } else {
                        AgentState::Alive
                    },
                    reason: if msg_ref.reason.is_empty() && msg_ref.drain {
                        "drained by request".to_string()
                    } else {
                        msg_ref.reason.clone()
                    },
                    now_ms: now_ms(),
                }
            };
            async move {
                match write_local(node, cmd).await {
                    Attempt::Done(Ok((CoreResponse::AgentState(Ok(_)), _))) => {
                        let info = node.sm.read(|s| s.agent(&msg_ref.id).map(v1::AgentInfo::from));
                        Attempt::Done(
                            info.map(Response::new)
                                .ok_or_else(|| Status::not_found(format!("id: no agent {:?}", msg_ref.id))),
                        )
                    }
                    Attempt::Done(Ok((CoreResponse::AgentState(Err(r)), _))) => {
                        Attempt::Done(Err(rejection_status(r)))
                    }
                    Attempt::Done(Ok((other, _))) => Attempt::Done(Err(unexpected(other))),
                    Attempt::Done(Err(s)) => Attempt::Done(Err(s)),
                    Attempt::NotLeader => Attempt::NotLeader,
                }
            }
        };
        let forward = |ch| async move {
            agent_client(ch)
                .set_agent_drain(forward_request(&self.node, caller, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }
}
