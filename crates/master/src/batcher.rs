//! Write coalescing: concurrent writes of one kind become one Raft entry and one sled flush.
//!
//! Every submit (and every batch of agent reports) on the leader hands its items to a
//! [`Coalescer`] and awaits a reply. The coalescer's loop takes the first waiting group, then
//! drains whatever else is already queued (up to `max_items` items), and proposes the lot as one
//! command with one clock reading. Up to `max_in_flight` such entries may be in Raft at once, so
//! the next batch is gathered while the previous one replicates: under load batches grow by
//! themselves, and a lone request is proposed at once without waiting for company (no linger).
//!
//! Two kinds are coalesced: submissions ([`SubmitKind`], one item per client request, weighed by
//! its task count) and agents' started/finished reports ([`ReportKind`]).

use std::marker::PhantomData;
use std::sync::Arc;

use taurus_core::Command;
use taurus_core::Rejection;
use taurus_core::Response;
use taurus_core::command::ReportOutcome;
use taurus_core::command::SubmitRequest;
use taurus_core::command::Submitted;
use taurus_core::command::TaskReport;
use taurus_store::Raft;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::write::WriteError;
use crate::write::classify_write_error;

/// A kind of write that can be coalesced: how items become one command, and how the command's
/// response splits back into one result per item.
pub trait Kind: Send + 'static {
    type Item: Send + 'static;
    type Result: Send + 'static;
    /// How much an item counts against `max_items` (a request counts its tasks).
    fn weight(item: &Self::Item) -> usize;
    fn command(items: Vec<Self::Item>, now_ms: u64) -> Command;
    /// One result per item, in order; `None` when the response is of the wrong shape.
    fn split(response: Response) -> Option<Vec<Self::Result>>;
}

/// Submissions: one item per client request (atomic on its own, with its idempotency key).
pub struct SubmitKind;

impl Kind for SubmitKind {
    type Item = SubmitRequest;
    type Result = Result<Vec<Submitted>, Rejection>;

    fn weight(item: &Self::Item) -> usize {
        item.tasks.len()
    }

    fn command(items: Vec<Self::Item>, now_ms: u64) -> Command {
        Command::SubmitTasks {
            requests: items,
            now_ms,
        }
    }

    fn split(response: Response) -> Option<Vec<Self::Result>> {
        match response {
            Response::Submit(results) => Some(results),
            _ => None,
        }
    }
}

/// Agents' started/finished reports.
pub struct ReportKind;

impl Kind for ReportKind {
    type Item = TaskReport;
    type Result = ReportOutcome;

    fn weight(_: &Self::Item) -> usize {
        1
    }

    fn command(items: Vec<Self::Item>, now_ms: u64) -> Command {
        Command::Report {
            reports: items,
            now_ms,
        }
    }

    fn split(response: Response) -> Option<Vec<Self::Result>> {
        match response {
            Response::Reported(results) => Some(results),
            _ => None,
        }
    }
}

/// What a group of items gets back: one result per item, and the entry's index. A group always
/// travels in one Raft entry, so either all of it was appended or none.
pub type GroupReply<R> = Result<(Vec<R>, u64), WriteError>;

struct Pending<K: Kind> {
    items: Vec<K::Item>,
    reply: oneshot::Sender<GroupReply<K::Result>>,
}

/// Handle to a coalescing loop; cheap to clone.
pub struct Coalescer<K: Kind> {
    tx: mpsc::Sender<Pending<K>>,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Clone for Coalescer<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            _kind: PhantomData,
        }
    }
}

/// Coalesces submissions.
pub type Batcher = Coalescer<SubmitKind>;
/// Coalesces agent reports.
pub type ReportBatcher = Coalescer<ReportKind>;

impl<K: Kind> Coalescer<K> {
    /// Starts the loop on the current runtime. It ends when every handle is dropped.
    pub fn start(raft: Raft, max_items: usize, max_in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(tracing::Instrument::in_current_span(run::<K>(
            raft,
            rx,
            max_items,
            Arc::new(Semaphore::new(max_in_flight)),
        )));
        Self {
            tx,
            _kind: PhantomData,
        }
    }

    /// Proposes `items` in one entry, coalesced with whatever else is waiting.
    pub async fn propose_group(&self, items: Vec<K::Item>) -> GroupReply<K::Result> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { items, reply })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        rx.await.map_err(|_| WriteError::ShuttingDown)?
    }
}

impl Coalescer<SubmitKind> {
    /// Proposes `request` as one atomic request; returns its result and the entry's index.
    pub async fn submit(
        &self,
        request: SubmitRequest,
    ) -> Result<(Result<Vec<Submitted>, Rejection>, u64), WriteError> {
        let (mut results, index) = self.propose_group(vec![request]).await?;
        match results.pop() {
            Some(r) if results.is_empty() => Ok((r, index)),
            _ => Err(WriteError::Internal("one result expected".into())),
        }
    }

    /// Proposes several independent requests (each atomic on its own) in the same entry.
    pub async fn submit_many(
        &self,
        requests: Vec<SubmitRequest>,
    ) -> GroupReply<Result<Vec<Submitted>, Rejection>> {
        self.propose_group(requests).await
    }
}

/// Milliseconds since the Unix epoch (the leader's clock, carried inside the command); see
/// [`crate::clock`] for the test offset (`TAURUS_CLOCK_OFFSET_FILE`).
pub use crate::clock::now_ms;

async fn run<K: Kind>(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending<K>>,
    max_items: usize,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = rx.recv().await {
        // Wait for an in-flight slot *before* draining, so that everything arriving meanwhile
        // joins this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut count = first.items.iter().map(K::weight).sum::<usize>();
        let mut batch = vec![first];
        while count < max_items {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.items.iter().map(K::weight).sum::<usize>();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            propose::<K>(&raft, batch).await;
            drop(permit);
        }));
    }
}

async fn propose<K: Kind>(raft: &Raft, batch: Vec<Pending<K>>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push((p.reply, p.items.len()));
        items.extend(p.items);
    }
    let expected = items.len();
    match raft.client_write(K::command(items, now_ms())).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            match K::split(resp.data) {
                Some(results) if results.len() == expected => {
                    let mut results = results.into_iter();
                    for (reply, n) in replies {
                        let _ = reply.send(Ok((results.by_ref().take(n).collect(), index)));
                    }
                }
                _ => {
                    tracing::error!("state machine answered a coalesced write with the wrong response");
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
