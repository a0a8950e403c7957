//! Write coalescing: concurrent submissions become one Raft entry and one sled flush.
//!
//! Every `SubmitTasks` call on the leader hands its tasks to the [`Batcher`] and awaits a reply.
//! The batcher's loop takes the first waiting request, then drains whatever else is already
//! queued (up to `max_tasks` tasks), and proposes the lot as one `Command::SubmitTasks` with one
//! clock reading. Up to `max_in_flight` such entries may be in Raft at once, so the next batch is
//! gathered while the previous one replicates: under load batches grow by themselves, and a
//! lone request is proposed at once without waiting for company (no linger).

use std::sync::Arc;
use std::time::SystemTime;

use taurus_core::Command;
use taurus_core::Rejection;
use taurus_core::Response;
use taurus_core::TaskSpec;
use taurus_core::command::SubmitRequest;
use taurus_core::command::Submitted;
use taurus_store::Raft;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::write::WriteError;
use crate::write::classify_write_error;

/// What one submitter gets back: its own result, and the index of the entry that carried it.
pub type SubmitReply = Result<(Result<Vec<Submitted>, Rejection>, u64), WriteError>;

/// What a group of requests gets back: one result per request, and the entry's index. A group
/// always travels in one Raft entry, so either all of it was appended or none.
pub type ManyReply = Result<(Vec<Result<Vec<Submitted>, Rejection>>, u64), WriteError>;

struct Pending {
    requests: Vec<Vec<TaskSpec>>,
    reply: oneshot::Sender<ManyReply>,
}

/// Handle to the batching loop; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the loop on the current runtime. It ends when every handle is dropped.
    pub fn start(raft: Raft, max_tasks: usize, max_in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(raft, rx, max_tasks, Arc::new(Semaphore::new(max_in_flight))));
        Self { tx }
    }

    /// Proposes `tasks` as one atomic request, coalesced with whatever else is waiting.
    pub async fn submit(&self, tasks: Vec<TaskSpec>) -> SubmitReply {
        let (mut results, index) = self.submit_many(vec![tasks]).await?;
        match results.pop() {
            Some(r) if results.is_empty() => Ok((r, index)),
            _ => Err(WriteError::Internal("one result expected".into())),
        }
    }

    /// Proposes several independent requests (each atomic on its own) in the same entry.
    pub async fn submit_many(&self, requests: Vec<Vec<TaskSpec>>) -> ManyReply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { requests, reply })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        rx.await.map_err(|_| WriteError::ShuttingDown)?
    }
}

/// Milliseconds since the Unix epoch (the leader's clock, carried inside the command).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_tasks: usize, slots: Arc<Semaphore>) {
    while let Some(first) = rx.recv().await {
        // Wait for an in-flight slot *before* draining, so that everything arriving meanwhile
        // joins this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut count = first.requests.iter().map(Vec::len).sum::<usize>();
        let mut batch = vec![first];
        while count < max_tasks {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.requests.iter().map(Vec::len).sum::<usize>();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn propose(raft: &Raft, batch: Vec<Pending>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push((p.reply, p.requests.len()));
        requests.extend(p.requests.into_iter().map(|tasks| SubmitRequest { tasks }));
    }
    let expected = requests.len();
    let cmd = Command::SubmitTasks {
        requests,
        now_ms: now_ms(),
    };
    match raft.client_write(cmd).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            match resp.data {
                Response::Submit(results) if results.len() == expected => {
                    let mut results = results.into_iter();
                    for (reply, n) in replies {
                        let _ = reply.send(Ok((results.by_ref().take(n).collect(), index)));
                    }
                }
                other => {
                    tracing::error!(?other, "state machine answered a submit with the wrong response");
                    for (reply, _) in replies {
                        let _ = reply.send(Err(WriteError::Internal(
                            "unexpected state machine response".into(),
                        )));
                    }
                }
            }
        }
        Err(e) => {
            let err = classify_write_error(e);
            for (reply, _) in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
