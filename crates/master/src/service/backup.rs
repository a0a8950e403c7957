//! `ClusterService.SaveSnapshot`: a backup of the whole state, streamed to the caller.
//!
//! Any master serves it, after a linearizable read barrier, from its own applied state: the
//! state is captured in O(1) (persistent collections) at one applied log id, encoded on a
//! thread of its own at low CPU priority in the Raft snapshot encoding, framed with a header and a SHA-256
//! (`taurus_store::backup`), and streamed in chunks of [`CHUNK_BYTES`]. One backup is encoded
//! and sent at a time per process, so concurrent requests do not each hold a copy of a large
//! state: a request that arrives meanwhile is refused (`RESOURCE_EXHAUSTED`), not queued. A
//! caller that takes no chunk for [`SEND_TIMEOUT`] loses its backup, and the next one can start.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use taurus_core::acl::Role;
use taurus_protocol::v1;
use tokio::sync::Semaphore;
use tokio::sync::SemaphorePermit;
use tokio::sync::TryAcquireError;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::authorize;
use super::read_status;
use crate::node::Node;

/// Size of one chunk of the stream (well under every client's 4 MiB message limit).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks encoded ahead of a slow reader.
const CHUNKS_AHEAD: usize = 4;
/// How long the caller may leave one chunk untaken before its backup is abandoned (and the
/// encoded state it holds freed).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One backup being encoded and sent at a time (per process): each holds the encoded state.
static SAVING: Semaphore = Semaphore::const_new(1);

pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<v1::SnapshotChunk, Status>> + Send>>;

/// Takes the one backup slot of this process, or refuses at once when a backup is under way.
fn take_slot() -> Result<SemaphorePermit<'static>, Status> {
    SAVING.try_acquire().map_err(|e| match e {
        TryAcquireError::NoPermits => {
            Status::resource_exhausted("a backup is already in progress on this master")
        }
        TryAcquireError::Closed => Status::unavailable("master shutting down"),
    })
}

/// Serves `SaveSnapshot` on `node` (operator role).
pub async fn save_snapshot(
    node: &Node,
    req: Request<v1::SaveSnapshotRequest>,
) -> Result<Response<SnapshotStream>, Status> {
    let caller = authorize(node, &req, Role::Operator, "SaveSnapshot").await?;
    let permit = take_slot()?;
    node.read_barrier().await.map_err(read_status)?;
    caller.recheck(node)?;
    let (last, membership, state) = node.sm.capture_applied();
    let Some(last) = last else {
        return Err(Status::failed_precondition(
            "this master has applied nothing yet: there is nothing to back up",
        ));
    };
    let members = membership
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let term = node.metrics().current_term;
    let (taken_by, created_at_ms) = (node.id, crate::clock::now_ms());
    let (encoded_tx, encoded_rx) = oneshot::channel();
    // A thread of its own at lower CPU priority, like snapshot building: encoding a large state
    // takes seconds of CPU that Raft heartbeats must not wait behind.
    std::thread::Builder::new()
        .name("taurus-backup".into())
        .spawn(move || {
            taurus_store::state_machine::lower_thread_priority();
            let encoded =
                taurus_store::backup::encode_backup(&state, last, term, members, taken_by, created_at_ms);
            let _ = encoded_tx.send(encoded);
        })
        .map_err(|e| Status::internal(format!("cannot start the backup thread: {e}")))?;
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let stopping = node.stopping.clone();
    tokio::spawn(async move {
        // The slot is held until the encoded state is sent or abandoned.
        let _permit = permit;
        tokio::select! {
            () = send_backup(&tx, encoded_rx, last.index) => {}
            () = stopping.wait() => {
                tracing::warn!(index = last.index, "backup abandoned: this master is stopping");
                let status =
                    Status::unavailable("master stopping; save the backup from another master");
                let _ = tx.send_timeout(Err(status), crate::lifecycle::LAST_WORD_TIMEOUT).await;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

type Encoded = Result<taurus_store::backup::EncodedBackup, taurus_store::StoreError>;

/// Waits for the backup thread's encoding of the state at `index`, then sends it to `tx` in
/// chunks (or the reason there is none).
async fn send_backup(
    tx: &mpsc::Sender<Result<v1::SnapshotChunk, Status>>,
    encoded: oneshot::Receiver<Encoded>,
    index: u64,
) {
    let backup = match encoded.await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot encode a backup");
            let status = Status::internal(format!("cannot encode the backup: {e}"));
            let _ = tx.send_timeout(Err(status), SEND_TIMEOUT).await;
            return;
        }
        Err(_) => {
            tracing::error!("the backup thread ended without a backup");
            let status = Status::internal("the backup thread ended without a backup");
            let _ = tx.send_timeout(Err(status), SEND_TIMEOUT).await;
            return;
        }
    };
    tracing::info!(
        index,
        bytes = backup.len(),
        sha256 = %backup.sha256(),
        tasks = backup.header.counts.tasks,
        "sending a backup"
    );
    let mut first = Some((backup.len(), index, backup.sha256()));
    let chunks = backup.chunks(CHUNK_BYTES).map(|piece| {
        let mut chunk = v1::SnapshotChunk {
            data: piece.to_vec(),
            ..Default::default()
        };
        if let Some((total, index, sha256)) = first.take() {
            chunk.total_bytes = total;
            chunk.last_log_index = index;
            chunk.sha256 = sha256;
        }
        chunk
    });
    match send_all(tx, chunks, SEND_TIMEOUT).await {
        Ok(()) => {}
        Err(Abandoned::Gone) => tracing::warn!(index, "backup abandoned: the caller went away"),
        Err(Abandoned::Stalled) => tracing::warn!(
            index,
            timeout = ?SEND_TIMEOUT,
            "backup abandoned: the caller took no chunk in time"
        ),
    }
}

/// Why a backup stopped before its last chunk.
#[derive(Debug, PartialEq)]
enum Abandoned {
    /// The caller closed the stream.
    Gone,
    /// The caller left a chunk untaken for the whole timeout.
    Stalled,
}

/// Sends every chunk in order, each within `limit` (the channel is bounded: a reader that stops
/// reading makes the send wait).
async fn send_all(
    tx: &mpsc::Sender<Result<v1::SnapshotChunk, Status>>,
    chunks: impl Iterator<Item = v1::SnapshotChunk>,
    limit: Duration,
) -> Result<(), Abandoned> {
    for chunk in chunks {
        match tx.send_timeout(Ok(chunk), limit).await {
            Ok(()) => {}
            Err(SendTimeoutError::Closed(_)) => return Err(Abandoned::Gone),
            Err(SendTimeoutError::Timeout(_)) => return Err(Abandoned::Stalled),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_backup_is_refused_while_one_is_in_progress() {
        let first = take_slot().expect("the slot is free");
        let refused = take_slot().expect_err("one backup at a time");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("already in progress"), "{refused:?}");
        drop(first);
        drop(take_slot().expect("free again once the first ends"));
    }

    fn chunks(n: usize) -> impl Iterator<Item = v1::SnapshotChunk> {
        (0..n).map(|i| v1::SnapshotChunk {
            data: vec![i as u8; 8],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_caller_that_stops_reading_is_abandoned_after_the_timeout() {
        let (tx, mut rx) = mpsc::channel(1);
        let limit = Duration::from_millis(50);
        let sent = tokio::time::timeout(Duration::from_secs(10), send_all(&tx, chunks(3), limit))
            .await
            .expect("send_all gives up by itself");
        assert_eq!(sent, Err(Abandoned::Stalled));
        let taken = rx.recv().await.expect("the first chunk").expect("a chunk");
        assert_eq!(taken.data, vec![0u8; 8]);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_ends_the_backup_and_a_reader_gets_it_all() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        assert_eq!(send_all(&tx, chunks(3), SEND_TIMEOUT).await, Err(Abandoned::Gone));

        let (tx, mut rx) = mpsc::channel::<Result<v1::SnapshotChunk, Status>>(1);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(c)) = rx.recv().await {
                got.push(c.data[0]);
            }
            got
        });
        assert_eq!(send_all(&tx, chunks(5), SEND_TIMEOUT).await, Ok(()));
        drop(tx);
        assert_eq!(reader.await.expect("reader"), vec![0, 1, 2, 3, 4]);
    }
}
