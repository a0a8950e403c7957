//! The reporter: one task that sends every STARTED and FINISHED report, batched, until a master
//! acknowledges it.
//!
//! Reports queue in order. As soon as one is queued the reporter sends everything queued (up to
//! `report_batch_max` reports and [`MAX_REPORT_BATCH_BYTES`]) in one `ReportTaskStatus` call,
//! with no lingering; reports queued meanwhile go in the next call. One call is in flight at a
//! time, so reports reach the masters in the order they were queued (a FINISHED never overtakes
//! its STARTED). A call that fails or times out is sent again, to the next master, after a
//! jittered back-off; a retry of a report that was applied comes back `duplicate`. Nothing is
//! dropped while the agent lives, except a report a master rejects as `invalid`, which no retry
//! can fix. Each acknowledged report's outcome goes back to the runtime.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;
use taurus_protocol::v1;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::MAX_REPORT_BATCH_BYTES;
use crate::masters::Masters;
use crate::masters::backoff;

/// A master's verdict on one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Applied now.
    Accepted,
    /// Applied before (this was a retry).
    Duplicate,
    /// The token is not current: drop the attempt.
    Stale,
    /// Malformed, or rejected as a whole by the master; dropped.
    Invalid,
    /// An outcome this agent does not know (a newer master); treated as `invalid`.
    Unknown(String),
}

impl Verdict {
    fn parse(s: &str) -> Self {
        match s {
            "accepted" => Self::Accepted,
            "duplicate" => Self::Duplicate,
            "stale" => Self::Stale,
            "invalid" => Self::Invalid,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// Whether the master holds the report (now or before).
    pub fn is_applied(&self) -> bool {
        matches!(self, Self::Accepted | Self::Duplicate)
    }
}

/// The answer to one report.
#[derive(Clone, Debug)]
pub(crate) struct Acked {
    pub task_id: String,
    pub token: u64,
    pub kind: v1::ReportKind,
    pub verdict: Verdict,
    pub message: String,
}

#[derive(Clone, Debug)]
pub(crate) struct ReporterSettings {
    pub agent_id: String,
    pub batch_max: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// The handle on the reporter task.
pub(crate) struct Reporter {
    tx: Option<mpsc::UnboundedSender<v1::TaskStatusReport>>,
    join: JoinHandle<()>,
    unacked: Arc<AtomicUsize>,
}

impl Reporter {
    /// Starts the reporter. `on_acked` gets the verdicts of each acknowledged batch, in order.
    pub fn start<F>(masters: Arc<Masters>, settings: ReporterSettings, on_acked: F) -> Self
    where
        F: Fn(Vec<Acked>) + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let unacked = Arc::new(AtomicUsize::new(0));
        let reporter = send_loop(masters, settings, rx, unacked.clone(), on_acked);
        let join = tokio::spawn(reporter.in_current_span());
        Self {
            tx: Some(tx),
            join,
            unacked,
        }
    }

    /// Queues a report.
    pub fn send(&self, report: v1::TaskStatusReport) {
        if let Some(tx) = &self.tx {
            self.unacked.fetch_add(1, Ordering::SeqCst);
            if tx.send(report).is_err() {
                self.unacked.fetch_sub(1, Ordering::SeqCst);
                tracing::error!("the reporter has stopped; a report is lost");
            }
        }
    }

    /// Reports queued and not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.unacked.load(Ordering::SeqCst)
    }

    /// Takes no more reports and waits up to `timeout` for the queued ones to be acknowledged.
    /// Returns how many were given up.
    pub async fn flush(mut self, timeout: Duration) -> usize {
        self.tx = None;
        if tokio::time::timeout(timeout, &mut self.join).await.is_err() {
            self.join.abort();
        }
        self.unacked()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.join.abort();
    }
}

async fn send_loop<F>(
    masters: Arc<Masters>,
    settings: ReporterSettings,
    mut rx: mpsc::UnboundedReceiver<v1::TaskStatusReport>,
    unacked: Arc<AtomicUsize>,
    on_acked: F,
) where
    F: Fn(Vec<Acked>) + Send + 'static,
{
    let mut queue: VecDeque<v1::TaskStatusReport> = VecDeque::new();
    let mut open = true;
    let mut retry = 0u32;
    // Lowered while a batch the master rejects as a whole is split to isolate the culprit;
    // back to `batch_max` once the culprit is dropped.
    let mut limit = settings.batch_max;
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(r) => queue.push_back(r),
                None => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(r) => queue.push_back(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }

        let n = batch_len(&queue, limit);
        let request = v1::ReportTaskStatusRequest {
            agent_id: settings.agent_id.clone(),
            reports: queue.iter().take(n).cloned().collect(),
        };
        let answer = masters
            .call("report task status", |mut c| async move {
                c.report_task_status(request).await
            })
            .await;
        let acked = match answer {
            Ok(response) if response.results.len() == n => {
                let acked: Vec<Acked> = queue
                    .drain(..n)
                    .zip(response.results)
                    .map(|(report, result)| acked(report, Verdict::parse(&result.outcome), result.message))
                    .collect();
                acked
            }
            Ok(response) => {
                tracing::warn!(
                    sent = n,
                    results = response.results.len(),
                    "a master answered a report batch with the wrong number of results; sending it again"
                );
                sleep_backoff(&mut retry, &settings).await;
                continue;
            }
            Err(e) if e.is_rejection() && n > 1 => {
                tracing::warn!(error = %e, reports = n, "report batch rejected as a whole; splitting it");
                limit = (n / 2).max(1);
                continue;
            }
            Err(e) if e.is_rejection() => {
                tracing::error!(error = %e, "a master rejected a report; dropping it");
                limit = settings.batch_max;
                let report = queue
                    .pop_front()
                    .map(|r| acked(r, Verdict::Invalid, e.message.clone()));
                report.into_iter().collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, reports = queue.len(), "reports not acknowledged; will retry");
                sleep_backoff(&mut retry, &settings).await;
                continue;
            }
        };
        retry = 0;
        unacked.fetch_sub(acked.len(), Ordering::SeqCst);
        on_acked(acked);
    }
}

fn acked(report: v1::TaskStatusReport, verdict: Verdict, message: String) -> Acked {
    Acked {
        kind: report.kind(),
        task_id: report.task_id,
        token: report.fencing_token,
        verdict,
        message,
    }
}

/// How many reports from the front of `queue` go in the next call: at most `limit`, and at
/// most [`MAX_REPORT_BATCH_BYTES`] encoded, but always at least one.
fn batch_len(queue: &VecDeque<v1::TaskStatusReport>, limit: usize) -> usize {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for r in queue.iter().take(limit.max(1)) {
        // The field tag and length prefix of a repeated message: at most 1 + 5 bytes.
        let len = r.encoded_len() + 6;
        if n > 0 && bytes + len > MAX_REPORT_BATCH_BYTES {
            break;
        }
        bytes += len;
        n += 1;
    }
    n
}

async fn sleep_backoff(retry: &mut u32, settings: &ReporterSettings) {
    tokio::time::sleep(backoff(*retry, settings.backoff_min, settings.backoff_max)).await;
    *retry = retry.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tail: usize) -> v1::TaskStatusReport {
        v1::TaskStatusReport {
            task_id: "t".into(),
            fencing_token: 1,
            kind: v1::ReportKind::Finished as i32,
            stdout_tail: "x".repeat(tail),
            ..Default::default()
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes_but_never_empty() {
        let q: VecDeque<_> = (0..10).map(|_| report(10)).collect();
        assert_eq!(batch_len(&q, 1000), 10);
        assert_eq!(batch_len(&q, 3), 3);
        assert_eq!(batch_len(&q, 0), 1);
        let big: VecDeque<_> = (0..400).map(|_| report(16 * 1024)).collect();
        let n = batch_len(&big, 1000);
        assert!(n > 100 && n < 128, "{n}");
        let huge: VecDeque<_> = (0..2).map(|_| report(3 * 1024 * 1024)).collect();
        assert_eq!(batch_len(&huge, 1000), 1);
    }

    #[test]
    fn verdicts_parse() {
        assert!(Verdict::parse("accepted").is_applied());
        assert!(Verdict::parse("duplicate").is_applied());
        assert_eq!(Verdict::parse("stale"), Verdict::Stale);
        assert_eq!(Verdict::parse("invalid"), Verdict::Invalid);
        assert_eq!(Verdict::parse("maybe"), Verdict::Unknown("maybe".into()));
    }
}
