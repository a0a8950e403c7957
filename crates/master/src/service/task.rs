//! `taurus.v1.TaskService`.

use std::pin::Pin;

use futures::Stream;
use taurus_core::Command;
use taurus_core::Rejection;
use taurus_core::Response as CoreResponse;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::acl::Role;
use taurus_core::command::SubmitRequest;
use taurus_core::validate;
use taurus_protocol::convert::task_state_from_i32;
use taurus_protocol::v1;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use taurus_protocol::v1::task_service_server::TaskService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::Attempt;
use super::Caller;
use super::authorize;
use super::forward_request;
use super::is_forwarded;
use super::on_leader;
use super::read_status;
use super::rejection_status;
use super::write_status;
use crate::batcher::now_ms;
use crate::node::Node;
use crate::write::WriteError;

/// Most tasks in one `SubmitMany` call, all requests together.
const MAX_MANY_TASKS: usize = 100_000;

/// The reply to one accepted submit request.
fn submit_response(results: Vec<taurus_core::command::Submitted>, index: u64) -> v1::SubmitTasksResponse {
    v1::SubmitTasksResponse {
        results: results
            .into_iter()
            .map(|s| v1::SubmitResult {
                id: s.id,
                created: s.created,
                state: v1::TaskState::from(s.state) as i32,
                log_index: s.log_index,
            })
            .collect(),
        log_index: index,
    }
}

/// Converts and validates one wire request (ids already filled in). The state machine checks it
/// all again at apply; checking here answers bad input without a Raft round trip.
fn submit_request(
    msg: &v1::SubmitTasksRequest,
    queue_limit: Option<u64>,
    submitted_by: &str,
) -> Result<SubmitRequest, Rejection> {
    validate::validate_request_id(&msg.request_id)?;
    let tasks: Vec<TaskSpec> = msg.tasks.iter().cloned().map(TaskSpec::from).collect();
    validate::validate_request(&tasks)?;
    Ok(SubmitRequest {
        tasks,
        request_id: msg.request_id.clone(),
        queue_limit,
        submitted_by: submitted_by.to_string(),
    })
}

/// One request's outcome inside a `SubmitMany` reply.
fn outcome_of(result: Result<v1::SubmitTasksResponse, Status>) -> v1::SubmitOutcome {
    match result {
        Ok(response) => v1::SubmitOutcome {
            code: 0,
            message: String::new(),
            response: Some(response),
        },
        Err(status) => v1::SubmitOutcome {
            code: status.code() as i32,
            message: status.message().to_string(),
            response: None,
        },
    }
}

/// Default and largest page of `ListTasks`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub struct TaskApi {
    node: Node,
}

impl TaskApi {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    /// The injected bug [`crate::node::UNSAFE_ACK_BEFORE_COMMIT_ENV`]: hands the request on in
    /// the background and answers "created" at once, committed or not.
    fn ack_before_commit(
        &self,
        caller: Caller,
        msg: v1::SubmitTasksRequest,
        request: SubmitRequest,
    ) -> v1::SubmitTasksResponse {
        let answer = v1::SubmitTasksResponse {
            results: msg
                .tasks
                .iter()
                .map(|t| v1::SubmitResult {
                    id: t.id.clone(),
                    created: true,
                    state: v1::TaskState::Pending as i32,
                    log_index: 0,
                })
                .collect(),
            log_index: 0,
        };
        let node = self.node.clone();
        tokio::spawn(async move {
            match node.route() {
                crate::node::Route::Local => {
                    let _ = node.batcher.submit(request).await;
                }
                crate::node::Route::Forward(leader) => {
                    if let Ok(ch) = node.channels.get(&leader.addr) {
                        let _ = TaskServiceClient::new(ch)
                            .submit_tasks(forward_request(&node, &caller, msg))
                            .await;
                    }
                }
                crate::node::Route::NoLeader => {}
            }
        });
        answer
    }

    fn read_info(&self, applied: u64, stale: bool) -> v1::ReadInfo {
        v1::ReadInfo {
            served_by: self.node.id,
            applied_index: applied,
            stale,
        }
    }

    /// Confirms with the leader unless the caller accepted a stale read; returns the read info.
    /// A linearizable read checks the caller's token again once caught up, so a token revoked
    /// before the read began is refused on every replica.
    async fn prepare_read(&self, caller: &Caller, consistency: i32) -> Result<v1::ReadInfo, Status> {
        if consistency == v1::Consistency::Stale as i32 {
            return Ok(self.read_info(self.node.sm.applied_index(), true));
        }
        let applied = self.node.read_barrier().await.map_err(read_status)?;
        caller.recheck(&self.node)?;
        Ok(self.read_info(applied, false))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchTaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn submit_tasks(
        &self,
        req: Request<v1::SubmitTasksRequest>,
    ) -> Result<Response<v1::SubmitTasksResponse>, Status> {
        // Counted where the client called, not again where it was forwarded to.
        let _timer = self.node.metrics.submit_timer(!is_forwarded(&req));
        let caller = authorize(&self.node, &req, Role::Submit, "SubmitTasks").await?;
        let forwarded = is_forwarded(&req);
        let trace_parent = crate::trace::trace_parent_for_tasks(req.metadata());
        let mut msg = req.into_inner();
        if let Some(tp) = &trace_parent {
            crate::trace::stamp(msg.tasks.iter_mut(), tp);
        }
        // Ids make a retry never create a second task: the client library always sets them. A
        // bare gRPC caller that leaves one empty gets a fresh UUIDv7 (and loses retry-safety for
        // that task). `request_id` (kept as is, also when forwarded) makes a retry of a request
        // that did commit answer `created: true` like the original.
        for t in msg.tasks.iter_mut().filter(|t| t.id.is_empty()) {
            t.id = uuid::Uuid::now_v7().to_string();
        }
        let by = caller.principal.name().to_string();
        let request = submit_request(&msg, self.node.queue_limit, &by).map_err(rejection_status)?;
        if self.node.unsafe_ack_before_commit && !forwarded {
            return Ok(Response::new(self.ack_before_commit(caller, msg, request)));
        }
        let mut request = Some(request);
        let node = &self.node;
        let caller_ref = &caller;
        // The rate limit is charged on the master that proposes (once, whatever the retries).
        let mut charged = false;
        let tasks = msg.tasks.len() as u64;
        let local = || {
            let charge = if charged {
                Ok(())
            } else {
                charged = true;
                caller_ref.charge_submit(node, tasks)
            };
            // Built again (from the same message, key included) if the first try found no leader.
            let request = request.take().unwrap_or_else(|| SubmitRequest {
                tasks: msg.tasks.iter().cloned().map(TaskSpec::from).collect(),
                request_id: msg.request_id.clone(),
                queue_limit: node.queue_limit,
                submitted_by: by.clone(),
            });
            async move {
                if let Err(s) = charge {
                    return Attempt::Done(Err(s));
                }
                match node.batcher.submit(request).await {
                    Ok((Ok(results), index)) => {
                        Attempt::Done(Ok(Response::new(submit_response(results, index))))
                    }
                    Ok((Err(rejection), _)) => Attempt::Done(Err(rejection_status(rejection))),
                    // Refused before it was appended: safe to try again where the leader is.
                    Err(WriteError::NotLeader { .. }) => Attempt::NotLeader,
                    Err(e) => Attempt::Done(Err(write_status(e))),
                }
            }
        };
        let msg_ref = &msg;
        let forward = |ch| async move {
            TaskServiceClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .submit_tasks(forward_request(&self.node, caller_ref, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }

    async fn submit_many(
        &self,
        req: Request<v1::SubmitManyRequest>,
    ) -> Result<Response<v1::SubmitManyResponse>, Status> {
        // Counted where the client called, not again where it was forwarded to.
        let _timer = self.node.metrics.submit_timer(!is_forwarded(&req));
        let caller = authorize(&self.node, &req, Role::Submit, "SubmitMany").await?;
        let forwarded = is_forwarded(&req);
        let by = caller.principal.name().to_string();
        let trace_parent = crate::trace::trace_parent_for_tasks(req.metadata());
        let mut msg = req.into_inner();
        if let Some(tp) = &trace_parent {
            crate::trace::stamp(msg.requests.iter_mut().flat_map(|r| r.tasks.iter_mut()), tp);
        }
        if msg.requests.is_empty() {
            return Err(Status::invalid_argument(
                "requests: must contain at least one request",
            ));
        }
        let total: usize = msg.requests.iter().map(|r| r.tasks.len()).sum();
        if total > MAX_MANY_TASKS {
            return Err(Status::invalid_argument(format!(
                "requests: more than {MAX_MANY_TASKS} tasks in all"
            )));
        }
        for t in msg
            .requests
            .iter_mut()
            .flat_map(|r| r.tasks.iter_mut())
            .filter(|t| t.id.is_empty())
        {
            t.id = uuid::Uuid::now_v7().to_string();
        }
        // Invalid requests get their own error outcome; only valid ones are proposed.
        let mut template: Vec<v1::SubmitOutcome> = Vec::with_capacity(msg.requests.len());
        let mut valid: Vec<usize> = Vec::with_capacity(msg.requests.len());
        let mut requests: Vec<SubmitRequest> = Vec::with_capacity(msg.requests.len());
        for (i, r) in msg.requests.iter().enumerate() {
            match submit_request(r, self.node.queue_limit, &by) {
                Ok(request) => {
                    valid.push(i);
                    requests.push(request);
                    template.push(v1::SubmitOutcome::default());
                }
                Err(rejection) => template.push(outcome_of(Err(rejection_status(rejection)))),
            }
        }
        if valid.is_empty() {
            return Ok(Response::new(v1::SubmitManyResponse { outcomes: template }));
        }
        let tasks: u64 = requests.iter().map(|r| r.tasks.len() as u64).sum();
        let mut requests = Some(requests);
        let node = &self.node;
        let (valid_ref, template_ref, msg_ref) = (&valid, &template, &msg);
        let caller_ref = &caller;
        let by_ref = &by;
        let mut charged = false;
        let local = || {
            let charge = if charged {
                Ok(())
            } else {
                charged = true;
                caller_ref.charge_submit(node, tasks)
            };
            let requests = requests.take().unwrap_or_else(|| {
                valid_ref
                    .iter()
                    .map(|&i| SubmitRequest {
                        tasks: msg_ref.requests[i]
                            .tasks
                            .iter()
                            .cloned()
                            .map(TaskSpec::from)
                            .collect(),
                        request_id: msg_ref.requests[i].request_id.clone(),
                        queue_limit: node.queue_limit,
                        submitted_by: by_ref.clone(),
                    })
                    .collect()
            });
            async move {
                if let Err(s) = charge {
                    return Attempt::Done(Err(s));
                }
                match node.batcher.submit_many(requests).await {
                    Ok((results, index)) => {
                        let mut outcomes = template_ref.clone();
                        for (&i, result) in valid_ref.iter().zip(results) {
                            outcomes[i] = outcome_of(match result {
                                Ok(submitted) => Ok(submit_response(submitted, index)),
                                Err(rejection) => Err(rejection_status(rejection)),
                            });
                        }
                        Attempt::Done(Ok(Response::new(v1::SubmitManyResponse { outcomes })))
                    }
                    Err(WriteError::NotLeader { .. }) => Attempt::NotLeader,
                    Err(e) => Attempt::Done(Err(write_status(e))),
                }
            }
        };
        let forward = |ch| async move {
            TaskServiceClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .submit_many(forward_request(&self.node, caller_ref, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }

    async fn get_task(
        &self,
        req: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::GetTaskResponse>, Status> {
        let caller = authorize(&self.node, &req, Role::Read, "GetTask").await?;
        let msg = req.into_inner();
        validate::validate_id(&msg.id).map_err(rejection_status)?;
        let read = self.prepare_read(&caller, msg.consistency).await?;
        let task = self.node.sm.read(|s| s.get(&msg.id).map(v1::Task::from));
        match task {
            Some(task) => Ok(Response::new(v1::GetTaskResponse {
                task: Some(task),
                read: Some(read),
            })),
            None => Err(Status::not_found(format!("id: no task {:?}", msg.id))),
        }
    }

    async fn list_tasks(
        &self,
        req: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let caller = authorize(&self.node, &req, Role::Read, "ListTasks").await?;
        let msg = req.into_inner();
        let states = msg
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| task_state_from_i32(*s, &format!("states[{i}]")))
            .collect::<Result<Vec<TaskState>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let limit = match msg.page_size as usize {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!("page_size: at most {MAX_PAGE}")));
            }
            n => n,
        };
        let after = (!msg.page_token.is_empty()).then_some(msg.page_token.as_str());
        if let Some(a) = after {
            validate::validate_id(a)
                .map_err(|_| Status::invalid_argument("page_token: not a token we issued"))?;
        }
        let read = self.prepare_read(&caller, msg.consistency).await?;
        let (tasks, next, total) = self.node.sm.read(|s| {
            let page = s.list(&states, after, limit);
            let total = if states.is_empty() {
                s.len()
            } else {
                let mut uniq = states.clone();
                uniq.sort();
                uniq.dedup();
                uniq.iter().map(|st| s.count(*st)).sum()
            };
            (
                page.tasks.into_iter().map(v1::Task::from).collect::<Vec<_>>(),
                page.next_after,
                total,
            )
        });
        Ok(Response::new(v1::ListTasksResponse {
            tasks,
            next_page_token: next.unwrap_or_default(),
            read: Some(read),
            total: total as u64,
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::CancelTaskResponse>, Status> {
        let caller = authorize(&self.node, &req, Role::Submit, "CancelTask").await?;
        let caller = &caller;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        validate::validate_id(&msg.id).map_err(rejection_status)?;
        super::check_reason(&msg.reason)?;
        let node = &self.node;
        let local = || {
            let cmd = Command::CancelTask {
                id: msg.id.clone(),
                reason: msg.reason.clone(),
                now_ms: now_ms(),
                by: caller.principal.name().to_string(),
                only_own: !caller.principal.may_cancel_any(),
            };
            async move {
                match super::write_local(node, cmd).await {
                    Attempt::Done(Ok((data, _))) => Attempt::Done(match data {
                        CoreResponse::Cancel(Ok(c)) => Ok(Response::new(v1::CancelTaskResponse {
                            id: c.id,
                            cancelled: c.cancelled,
                            state: v1::TaskState::from(c.state) as i32,
                            log_index: c.log_index,
                        })),
                        CoreResponse::Cancel(Err(r)) => Err(rejection_status(r)),
                        other => Err(Status::internal(format!(
                            "unexpected state machine response {other:?}"
                        ))),
                    }),
                    Attempt::Done(Err(s)) => Attempt::Done(Err(s)),
                    Attempt::NotLeader => Attempt::NotLeader,
                }
            }
        };
        let msg_ref = &msg;
        let forward = |ch| async move {
            TaskServiceClient::new(ch)
                .cancel_task(forward_request(&self.node, caller, msg_ref.clone()))
                .await
        };
        on_leader(&self.node, forwarded, local, forward).await
    }

    type WatchTaskStream = WatchStream;

    async fn watch_task(&self, req: Request<v1::WatchTaskRequest>) -> Result<Response<WatchStream>, Status> {
        let caller = authorize(&self.node, &req, Role::Read, "WatchTask").await?;
        let id = req.into_inner().id;
        validate::validate_id(&id).map_err(rejection_status)?;
        // Subscribe before the barrier so no change between the two is missed.
        let mut applied = self.node.sm.subscribe();
        self.node.read_barrier().await.map_err(read_status)?;
        caller.recheck(&self.node)?;
        let first = self
            .node
            .sm
            .read(|s| s.get(&id).map(v1::Task::from))
            .ok_or_else(|| Status::not_found(format!("id: no task {id:?}")))?;
        let (tx, rx) = mpsc::channel(16);
        let sm = self.node.sm.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut last = first.log_index;
            let mut terminal = is_terminal(&first);
            if tx
                .send(Ok(v1::WatchTaskEvent { task: Some(first) }))
                .await
                .is_err()
            {
                return;
            }
            while !terminal {
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() {
                        let _ = tx.send(Err(Status::unavailable("master shutting down; watch again"))).await;
                        return;
                    },
                    // The caller went away (or the server is stopping): stop watching.
                    _ = tx.closed() => return,
                    () = node.stopping.wait() => {
                        let status = Status::unavailable("master stopping; watch again on another master");
                        let _ = tx.send_timeout(Err(status), crate::lifecycle::LAST_WORD_TIMEOUT).await;
                        return;
                    }
                }
                // A revoke (or expiry) of the caller's token ends the stream it opened.
                if let Err(status) = caller.recheck(&node) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let Some(task) = sm.read(|s| s.get(&id).map(v1::Task::from)) else {
                    continue;
                };
                if task.log_index <= last {
                    continue;
                }
                last = task.log_index;
                terminal = is_terminal(&task);
                if tx
                    .send(Ok(v1::WatchTaskEvent { task: Some(task) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn is_terminal(task: &v1::Task) -> bool {
    task_state_from_i32(task.state, "state")
        .map(TaskState::is_terminal)
        .unwrap_or(false)
}
