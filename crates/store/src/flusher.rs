//! Group commit: one thread per store makes sled durable, one fsync for many waiters.
//!
//! sled 0.34's `flush_async` runs each flush on sled's small I/O thread pool. Issuing one per
//! Raft append under load exhausted that pool and deadlocked the whole database (flushes waiting
//! for buffers that only a pool thread could seal, `apply_batch` waiting for the flushes; seen at
//! ~200 appends/s of concurrent load). Instead, every writer hands the flusher a waiter *after*
//! its write is applied; the flusher takes every waiter queued so far, runs one synchronous
//! `Db::flush` (which fsyncs every earlier write of the database), then completes them all. At
//! most one flush is ever in flight, and a burst of appends costs one fsync.
//!
//! After each successful flush the flusher also records the [`Watermark`] it captured just
//! before it: one `pwrite` into a small file, no second fsync (see [`crate::watermark`]).

use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::IOFlushed;
use tokio::sync::oneshot;

use crate::TypeConfig;
use crate::watermark::Watermark;

enum Waiter {
    /// openraft's "these log entries are durable" callback.
    Log(IOFlushed<TypeConfig>),
    /// An async caller awaiting durability of its own writes.
    Notify(oneshot::Sender<Result<(), String>>),
}

/// Handle to the flusher thread; cheap to clone. The thread ends when every handle is gone.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Waiter>,
}

impl Flusher {
    /// Starts the flusher thread for `db`, recording `watermark` (if any) after each flush.
    pub fn start(db: sled::Db, watermark: Option<Arc<Watermark>>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("taurus-flush".into())
            .spawn(move || run(db, watermark, rx))?;
        Ok(Self { tx })
    }

    /// Completes `callback` once every write issued before this call is on disk.
    pub fn flush_log(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(Waiter::Log(cb))) = self.tx.send(Waiter::Log(callback)) {
            cb.io_completed(Err(io::Error::other("log flusher stopped")));
        }
    }

    /// Returns once every write issued before this call is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Waiter::Notify(tx))
            .map_err(|_| io::Error::other("log flusher stopped"))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(format!("flushing sled failed: {e}"))),
            Err(_) => Err(io::Error::other("log flusher stopped")),
        }
    }
}

fn run(db: sled::Db, watermark: Option<Arc<Watermark>>, rx: mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        // Everything queued now was written before this flush starts: one fsync covers it all.
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        // Captured before the flush: the mark then only names writes this flush makes durable.
        let captured = watermark.as_ref().map(|w| w.capture());
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = waiters.len(), "flushing sled failed");
        }
        for w in waiters {
            match w {
                Waiter::Log(cb) => cb.io_completed(result.clone().map_err(io::Error::other)),
                Waiter::Notify(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
        // After the waiters: the record is not on anyone's commit path.
        if let (Ok(()), Some(w), Some(c)) = (&result, &watermark, captured) {
            w.record_flushed(c);
        }
    }
}
