//! Coalescing of concurrent submits into one RPC.
//!
//! Every [`Client::submit`] hands its request to one background task per client (shared by all
//! clones). The task takes the first waiting request, drains whatever else is already queued (up
//! to [`MAX_TASKS`] tasks) and sends them all as one `SubmitMany` call, with up to
//! [`MAX_IN_FLIGHT`] such calls outstanding; a lone request goes out at once as a plain
//! `SubmitTasks` (no linger, no added latency). Each request keeps its own atomicity and gets
//! exactly the result it would have got alone. Under load, 128 concurrent submitters cost a
//! handful of RPCs instead of 128: per-RPC overhead, not the cluster, is what limits one-task
//! submits on small machines (see `docs/performance.md`).
//!
//! The task holds only a weak reference to the client, so it ends when the last clone is dropped.

use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

use taurus_protocol::v1;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tonic::Code;

use crate::client::Client;
use crate::client::Inner;
use crate::error::ClientError;

/// Most tasks in one coalesced call.
pub const MAX_TASKS: usize = 4096;
/// Most coalesced calls outstanding at once per client.
pub const MAX_IN_FLIGHT: usize = 8;

pub(crate) type Reply = Result<v1::SubmitTasksResponse, ClientError>;

pub(crate) struct Pending {
    pub request: v1::SubmitTasksRequest,
    pub deadline: Duration,
    pub attempt_timeout: Duration,
    pub reply: oneshot::Sender<Reply>,
}

/// Starts the coalescing task for `inner`; returns where to send requests.
pub(crate) fn start(inner: Weak<Inner>) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(16 * 1024);
    tokio::spawn(run(inner, rx));
    tx
}

async fn run(inner: Weak<Inner>, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Take a slot first: whatever arrives while we wait joins this call.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut count = first.request.tasks.len();
        let mut batch = vec![first];
        while count < MAX_TASKS {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.request.tasks.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let client = Client::from_parts(inner, batch[0].deadline, batch[0].attempt_timeout);
        tokio::spawn(async move {
            send(client, batch).await;
            drop(permit);
        });
    }
}

async fn send(client: Client, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let _ = p.reply.send(client.submit_direct(&p.request).await);
        }
        return;
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push(p.reply);
        requests.push(p.request);
    }
    let request = v1::SubmitManyRequest { requests };
    let result = client
        .call("submit", |ch| {
            let req = request.clone();
            async move {
                TaskServiceClient::new(ch)
                    .max_decoding_message_size(64 << 20)
                    .submit_many(req)
                    .await
            }
        })
        .await;
    match result {
        Ok(resp) if resp.outcomes.len() == replies.len() => {
            let master = client.current_master().to_string();
            for ((reply, outcome), req) in replies.into_iter().zip(resp.outcomes).zip(&request.requests) {
                let _ = reply.send(outcome_to_reply(outcome, req, &master));
            }
        }
        Ok(resp) => {
            let err = ClientError::invalid_response(
                "submit",
                format!("{} outcomes for {} requests", resp.outcomes.len(), replies.len()),
            );
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// What one request of a coalesced call returns: what `SubmitTasks` would have returned.
fn outcome_to_reply(outcome: v1::SubmitOutcome, request: &v1::SubmitTasksRequest, master: &str) -> Reply {
    if outcome.code != Code::Ok as i32 {
        return Err(ClientError::Rejected {
            op: "submit",
            master: master.to_string(),
            code: Code::from_i32(outcome.code),
            message: outcome.message,
        });
    }
    match outcome.response {
        Some(r) if r.results.len() == request.tasks.len() => Ok(r),
        Some(r) => Err(ClientError::invalid_response(
            "submit",
            format!("{} results for {} tasks", r.results.len(), request.tasks.len()),
        )),
        None => Err(ClientError::invalid_response(
            "submit",
            "an OK outcome without a response",
        )),
    }
}
