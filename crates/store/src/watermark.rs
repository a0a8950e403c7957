//! The durable high-water mark: a record, beside sled, of the newest vote and last log id that
//! sled is known to have made durable. It exists to detect a lost tail.
//!
//! sled 0.34 recovers its log by replaying it up to the first record that does not check out,
//! and silently drops everything after it. So a damaged or cut `db` file can come back as an
//! *older* database without any error: a vote this master cast, or log entries it acknowledged
//! as durable, are simply gone (measured; `docs/decisions.md` §13). Nothing inside sled can
//! notice, because the evidence is lost with the tail. This file keeps the evidence outside.
//!
//! # Costs nothing per batch
//!
//! The group-commit flusher ([`crate::flusher`]) captures the in-memory mark *before* each
//! `Db::flush` and, once that flush has returned, writes it here with one `pwrite` and **no
//! fsync**. The record is therefore only ever a claim about data sled has already fsynced; if
//! the `pwrite` itself is lost (power loss before the page cache is written back) the file keeps
//! an older, still true, claim. A stale mark weakens the check; it never makes it wrong.
//!
//! The one place the mark must go *down* is `truncate_after` (Raft replacing a conflicting
//! tail). There it is lowered and fsynced *before* sled removes anything, under a generation
//! counter so that a flush already in flight cannot write back the older, higher mark.
//! Truncation is rare (a follower that had uncommitted entries from a deposed leader).
//!
//! # File layout (`watermark.bin`)
//!
//! Two slots of [`SLOT_LEN`] bytes; writes alternate between them, so a torn write can damage
//! only the slot being written and the other still holds the previous mark. A slot is: magic
//! (8 bytes), sequence number (u64 BE), payload length (u32 BE), payload (MessagePack [`Mark`]),
//! zero padding, CRC-32 of everything before it (u32 BE, the slot's last 4 bytes). The valid slot
//! with the higher sequence number wins. A file with no valid slot is not an error (it may be
//! from a first write torn by a crash): the check is skipped with a warning.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use serde::Deserialize;
use serde::Serialize;

use crate::TypeConfig;
use crate::codec;
use crate::error::StoreError;

type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The file's name in the data directory.
pub const WATERMARK_FILE: &str = "watermark.bin";
/// Bytes per slot (a mark encodes to well under 200 bytes).
pub const SLOT_LEN: usize = 256;
const MAGIC: &[u8; 8] = b"TAURWM01";
/// Magic, sequence number and payload length.
const HEADER_LEN: usize = 8 + 8 + 4;

/// What sled is known to hold durably: its vote is at least `vote`, and its log reaches at least
/// `last_log` (and holds exactly that entry, unless it was purged into a snapshot since).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub vote: Option<Vote>,
    pub last_log: Option<LogId>,
}

/// The mark as this process writes it; shared by the log store (which raises it as it writes)
/// and the flusher (which records it after each flush).
pub struct Watermark {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// A failed record write is logged once, not once per flush.
    warned: AtomicBool,
}

struct Inner {
    file: File,
    /// Sequence number of the last slot written.
    seq: u64,
    /// Bumped whenever the mark goes down (truncation): a flush captured under an older
    /// generation must not record its mark afterwards.
    generation: u64,
    /// Everything in here has been written to sled (not necessarily flushed yet).
    mark: Mark,
}

/// A mark captured before a flush, to record once the flush has succeeded.
pub struct Captured {
    generation: u64,
    mark: Mark,
}

impl Watermark {
    /// Opens (or creates) the file in `dir`. Returns the handle and the durable mark found
    /// there: `Ok(None)` when there is none to check against (no file yet, or no valid slot,
    /// which is logged). The in-memory mark starts from that durable mark.
    pub fn open(dir: &Path) -> Result<(Watermark, Option<Mark>), StoreError> {
        let path = dir.join(WATERMARK_FILE);
        let existing = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Durability {
                    what: "cannot read the watermark file",
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        };
        let found = existing.as_deref().and_then(decode_file);
        if existing.is_some() && found.is_none() {
            tracing::warn!(
                path = %path.display(),
                "the watermark file has no valid record (torn first write, or damaged); a lost \
                 tail of the raft log cannot be detected on this start"
            );
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::Durability {
                what: "cannot open the watermark file",
                dir: dir.to_path_buf(),
                source,
            })?;
        let (seq, mark) = found.clone().unwrap_or_default();
        let watermark = Watermark {
            path,
            inner: Mutex::new(Inner {
                file,
                seq,
                generation: 0,
                mark,
            }),
            warned: AtomicBool::new(false),
        };
        Ok((watermark, found.map(|(_, m)| m)))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a vote just written to sled.
    pub fn wrote_vote(&self, vote: &Vote) {
        self.lock().mark.vote = Some(*vote);
    }

    /// Notes log entries just appended to sled, ending at `last`.
    pub fn wrote_log(&self, last: LogId) {
        self.lock().mark.last_log = Some(last);
    }

    /// Captures the mark before a flush: everything in it was written before the flush starts.
    pub fn capture(&self) -> Captured {
        let inner = self.lock();
        Captured {
            generation: inner.generation,
            mark: inner.mark.clone(),
        }
    }

    /// Records `captured` after the flush that followed it succeeded: one `pwrite`, no fsync.
    /// Skipped when the mark went down in between. A failure is logged (once) and otherwise
    /// ignored: the mark only ever helps detection, the data is already durable.
    pub fn record_flushed(&self, captured: Captured) {
        let mut inner = self.lock();
        if inner.generation != captured.generation {
            return;
        }
        if let Err(e) = inner.write(&captured.mark, false)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot update the watermark file");
        }
    }

    /// Lowers the mark's last log id to `last` (Raft truncates the log after it) and makes that
    /// durable before returning, so the truncation may then be written to sled.
    pub fn lower_log(&self, last: Option<LogId>) -> io::Result<()> {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.mark.last_log = last;
        let mark = inner.mark.clone();
        inner.write(&mark, true)
    }
}

impl Inner {
    /// Writes `mark` into the next slot; with `sync`, also fdatasyncs the file.
    fn write(&mut self, mark: &Mark, sync: bool) -> io::Result<()> {
        let seq = self.seq + 1;
        let slot = encode_slot(seq, mark).map_err(io::Error::other)?;
        self.file.write_all_at(&slot, (seq % 2) * SLOT_LEN as u64)?;
        if sync {
            self.file.sync_data()?;
        }
        self.seq = seq;
        Ok(())
    }
}

/// One slot's bytes.
pub fn encode_slot(seq: u64, mark: &Mark) -> Result<[u8; SLOT_LEN], StoreError> {
    let payload = codec::encode(mark)?;
    if HEADER_LEN + payload.len() + 4 > SLOT_LEN {
        return Err(StoreError::Snapshot(format!(
            "watermark record of {} bytes does not fit a slot",
            payload.len()
        )));
    }
    let mut slot = [0u8; SLOT_LEN];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&seq.to_be_bytes());
    slot[16..20].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    slot[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(&payload);
    let crc = crc32fast::hash(&slot[..SLOT_LEN - 4]);
    slot[SLOT_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
    Ok(slot)
}

/// One slot's sequence number and mark; `None` when it does not check out.
pub fn decode_slot(slot: &[u8]) -> Option<(u64, Mark)> {
    if slot.len() != SLOT_LEN || &slot[..8] != MAGIC {
        return None;
    }
    let (body, crc) = slot.split_at(SLOT_LEN - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return None;
    }
    let seq = u64::from_be_bytes(body[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(body[16..20].try_into().ok()?) as usize;
    let payload = body.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    let mark = codec::decode(payload).ok()?;
    Some((seq, mark))
}

/// The newest valid slot of a whole file.
pub fn decode_file(bytes: &[u8]) -> Option<(u64, Mark)> {
    bytes
        .chunks(SLOT_LEN)
        .take(2)
        .filter_map(decode_slot)
        .max_by_key(|(seq, _)| *seq)
}

#[cfg(test)]
mod tests {
    use openraft::alias::LeaderIdOf;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;

    fn mark(term: u64, index: u64) -> Mark {
        Mark {
            vote: Some(Vote::new_committed(term, 3)),
            last_log: Some(LogId::new(
                LeaderIdOf::<TypeConfig>::new_committed(term, 3),
                index,
            )),
        }
    }

    #[test]
    fn slots_round_trip_and_the_newest_valid_one_wins() {
        let big = Mark {
            vote: Some(Vote::new(u64::MAX, u64::MAX)),
            last_log: Some(LogId::new(
                LeaderIdOf::<TypeConfig>::new_committed(u64::MAX, u64::MAX),
                u64::MAX,
            )),
        };
        assert_eq!(
            decode_slot(&encode_slot(u64::MAX, &big).unwrap()),
            Some((u64::MAX, big))
        );

        let a = encode_slot(7, &mark(2, 10)).unwrap();
        let b = encode_slot(8, &mark(3, 12)).unwrap();
        let file = [b.as_slice(), a.as_slice()].concat();
        assert_eq!(decode_file(&file), Some((8, mark(3, 12))));

        // A bit flipped in the newer slot: the older one is still a true (lower) mark.
        let mut damaged = file.clone();
        damaged[40] ^= 0x04;
        assert_eq!(decode_file(&damaged), Some((7, mark(2, 10))));
        // Cut short, zeroed, empty: nothing to check against.
        assert_eq!(decode_file(&file[..SLOT_LEN - 1]), None);
        assert_eq!(decode_file(&[0u8; 2 * SLOT_LEN]), None);
        assert_eq!(decode_file(&[]), None);
    }

    #[test]
    fn writes_alternate_and_lowering_beats_a_flush_in_flight() {
        let dir = tempfile::TempDir::new().unwrap();
        let (wm, found) = Watermark::open(dir.path()).unwrap();
        assert_eq!(found, None);
        wm.wrote_vote(&Vote::new_committed(2, 3));
        wm.wrote_log(mark(2, 10).last_log.unwrap());
        wm.record_flushed(wm.capture());
        wm.wrote_log(mark(2, 11).last_log.unwrap());
        let in_flight = wm.capture();
        // Raft truncates after index 5 while that flush runs: its mark must not be recorded.
        let truncated = LogId::new(LeaderIdOf::<TypeConfig>::new_committed(2, 3), 5);
        wm.lower_log(Some(truncated)).unwrap();
        wm.record_flushed(in_flight);
        drop(wm);

        let (_wm, found) = Watermark::open(dir.path()).unwrap();
        assert_eq!(
            found,
            Some(Mark {
                vote: Some(Vote::new_committed(2, 3)),
                last_log: Some(truncated),
            })
        );
        let bytes = std::fs::read(dir.path().join(WATERMARK_FILE)).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT_LEN, "two slots, written alternately");
    }
}
