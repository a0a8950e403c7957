//! Start-up verification of a data dir: a damaged directory is refused with one clear error
//! ([`StoreError::Damaged`]: the path, what is wrong, the recovery procedure), never loaded and
//! never a panic.
//!
//! What [`verify`] checks, after sled has opened the directory and the snapshot file has been
//! loaded (its checksum and decoding are checked by [`crate::state_machine`]):
//!
//! 1. **Every tree is read in full.** sled checks a CRC on every page it reads from disk, so a
//!    flipped bit in live data becomes an error here instead of a surprise at run time.
//! 2. **The Raft log is well formed above the purge point:** 8-byte keys, each value an entry
//!    stored under its own index, indexes contiguous (no hole) from the purge point (or the
//!    snapshot) to the last entry, log ids increasing.
//! 3. **The vote is not older than the log:** no entry has a term above the stored vote's (a
//!    node saves the vote of a term before it accepts entries of that term).
//! 4. **The snapshot covers the purged log:** entries are purged only once a snapshot holds
//!    them, so a purge point beyond the snapshot means state is missing.
//! 5. **The committed id is in reach:** it names an entry this node holds (or one inside the
//!    snapshot or the purged prefix).
//! 6. **Nothing durable was lost** ([`crate::watermark`]): the vote is at least the last vote
//!    recorded as durable, and the log reaches at least the last log id recorded as durable
//!    (holding exactly that entry).
//!
//! What it cannot see is listed in `docs/decisions.md` §13 (in short: a tail lost before its
//! watermark record reached the disk, and damage to values that still pass sled's CRC).

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Once;
use std::time::Instant;

use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use serde::Deserialize;

use crate::TypeConfig;
use crate::codec;
use crate::error::StoreError;
use crate::log_store::KEY_COMMITTED;
use crate::log_store::KEY_LAST_PURGED;
use crate::log_store::KEY_VOTE;
use crate::log_store::TREE_LOG;
use crate::log_store::TREE_META;
use crate::state_machine::SNAPSHOT_FILE;
use crate::watermark::Mark;

type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// sled's log file, where the trees' pages live.
const SLED_DB_FILE: &str = "db";

/// The part of a stored entry the check needs; the payload is skipped, not decoded.
#[derive(Deserialize)]
struct EntryHead {
    log_id: LogId,
}

/// What a verified data dir holds (for the start-up log line).
#[derive(Debug, Default)]
pub struct Summary {
    pub entries: u64,
    pub records: u64,
    pub bytes: u64,
    pub last_log: Option<LogId>,
}

/// Checks the opened database `db` of `dir` against the loaded snapshot's last log id
/// (`applied`) and the durable watermark (`mark`, if there is one). Any failure, including a
/// panic inside sled, is a [`StoreError::Damaged`].
pub fn verify(
    db: &sled::Db,
    dir: &Path,
    applied: Option<&LogId>,
    mark: Option<&Mark>,
) -> Result<Summary, StoreError> {
    let started = Instant::now();
    let summary = match catch_panic(|| check(db, dir, applied, mark)) {
        Ok(r) => r?,
        Err(message) => {
            return Err(StoreError::damaged(
                dir,
                SLED_DB_FILE,
                format!("sled panicked while reading it back: {message}"),
            ));
        }
    };
    tracing::info!(
        dir = %dir.display(),
        entries = summary.entries,
        records = summary.records,
        bytes = summary.bytes,
        last_log = ?summary.last_log,
        elapsed = ?started.elapsed(),
        "data directory verified"
    );
    Ok(summary)
}

fn check(
    db: &sled::Db,
    dir: &Path,
    applied: Option<&LogId>,
    mark: Option<&Mark>,
) -> Result<Summary, StoreError> {
    let in_db = |detail: String| StoreError::damaged(dir, SLED_DB_FILE, detail);
    let read_err =
        |what: &str, e: sled::Error| in_db(format!("sled cannot read {what}: {}", sled_detail(&e)));
    let mut summary = Summary::default();

    // 1. Every tree but the log, in full (the log is read below).
    for name in db.tree_names() {
        let label = String::from_utf8_lossy(&name).into_owned();
        if label == TREE_LOG {
            continue;
        }
        let tree = db
            .open_tree(&name)
            .map_err(|e| read_err(&format!("tree {label:?}"), e))?;
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| read_err(&format!("tree {label:?}"), e))?;
            summary.records += 1;
            summary.bytes += (k.len() + v.len()) as u64;
        }
    }
    let meta = db
        .open_tree(TREE_META)
        .map_err(|e| read_err("the raft meta tree", e))?;
    let get = |key: &str| -> Result<Option<sled::IVec>, StoreError> {
        meta.get(key)
            .map_err(|e| read_err(&format!("raft_meta key {key:?}"), e))
    };
    let vote: Option<Vote> = decode_meta(&get(KEY_VOTE)?, KEY_VOTE).map_err(in_db)?;
    let purged: Option<LogId> = decode_meta(&get(KEY_LAST_PURGED)?, KEY_LAST_PURGED).map_err(in_db)?;
    let committed: Option<LogId> = decode_meta(&get(KEY_COMMITTED)?, KEY_COMMITTED).map_err(in_db)?;

    // 2. The log: entries at or below the purge point are leftovers of a purge interrupted by a
    // crash (the purge point is written first) and only need to be readable.
    let log = db
        .open_tree(TREE_LOG)
        .map_err(|e| read_err("the raft log tree", e))?;
    let base = purged.as_ref().map(|p| p.index);
    let mut first: Option<u64> = None;
    let mut last: Option<LogId> = None;
    for item in log.iter() {
        let (k, v) = item.map_err(|e| read_err("the raft log", e))?;
        summary.records += 1;
        summary.bytes += (k.len() + v.len()) as u64;
        let index = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| in_db(format!("raft log key {:02x?} is not 8 bytes", k.as_ref())))?;
        let head: EntryHead =
            codec::decode(&v).map_err(|e| in_db(format!("raft log entry {index} does not decode: {e}")))?;
        if head.log_id.index != index {
            return Err(in_db(format!(
                "raft log index {index} holds the entry of index {}",
                head.log_id.index
            )));
        }
        summary.entries += 1;
        if base.is_some_and(|b| index <= b) {
            continue;
        }
        match &last {
            None => first = Some(index),
            Some(prev) if prev.index + 1 != index => {
                return Err(in_db(format!(
                    "raft log entries {}..{} are missing (the log jumps from {} to {index})",
                    prev.index + 1,
                    index,
                    prev.index
                )));
            }
            Some(prev) if head.log_id.leader_id < prev.leader_id => {
                return Err(in_db(format!(
                    "raft log ids go backwards at index {index}: {} after {}",
                    head.log_id, prev
                )));
            }
            Some(_) => {}
        }
        last = Some(head.log_id);
    }
    if let Some(first) = first {
        // Right after the purge point, or right after an installed snapshot whose purge did not
        // become durable before a crash.
        let after_purge = base.map_or(0, |b| b + 1);
        let after_snapshot = applied.map(|a| a.index + 1);
        if first != after_purge && Some(first) != after_snapshot {
            return Err(in_db(format!(
                "the raft log starts at index {first}, but must start at {after_purge}{}: \
                 entries before it are missing",
                after_snapshot.map_or(String::new(), |s| format!(" or {s}"))
            )));
        }
    }
    summary.last_log = last.or(purged);

    // 3. The vote is at least as new as the log.
    let vote_term = vote.map_or(0, |v| v.leader_id().term);
    if let Some(l) = &last
        && l.leader_id.term > vote_term
    {
        return Err(in_db(format!(
            "the stored vote ({}) is older than the last log entry ({l}): the vote was lost",
            vote.map_or("none".to_string(), |v| v.to_string())
        )));
    }

    // 4. The snapshot covers everything purged.
    if let Some(p) = &purged
        && applied.is_none_or(|a| a < p)
    {
        return Err(StoreError::damaged(
            dir,
            SNAPSHOT_FILE,
            format!(
                "the raft log is purged up to {p} but the snapshot covers only {}: the state in \
                 between is lost (snapshot file missing or older than the log)",
                applied.map_or("nothing".to_string(), |a| a.to_string())
            ),
        ));
    }

    // 5. The committed id names an entry this node has. (Entries inside the snapshot are not
    // compared: after a snapshot install the old, conflicting tail may still be on disk until
    // openraft's purge or truncation of it is durable.)
    let floor = base.max(applied.map(|a| a.index));
    let reach = [last.as_ref(), purged.as_ref(), applied]
        .into_iter()
        .flatten()
        .max();
    if let Some(c) = &committed {
        if reach.is_none_or(|r| r.index < c.index) {
            return Err(in_db(format!(
                "the committed log id {c} is beyond the end of the log ({}): entries were lost",
                reach.map_or("empty".to_string(), |r| r.to_string())
            )));
        }
        check_entry_is(&log, c, floor, "committed log id").map_err(&in_db)?;
    }

    // 6. Nothing recorded as durable is missing.
    if let Some(m) = mark {
        if let Some(v) = &m.vote
            && !vote.is_some_and(|stored| stored >= *v)
        {
            return Err(in_db(format!(
                "the stored vote ({}) is older than the vote recorded as durable in {} ({v}): \
                 sled lost writes it had fsynced (a cut or damaged db file)",
                vote.map_or("none".to_string(), |v| v.to_string()),
                crate::watermark::WATERMARK_FILE
            )));
        }
        if let Some(l) = &m.last_log {
            if reach.is_none_or(|r| r < l) {
                return Err(in_db(format!(
                    "the raft log ends at {} but {} records {l} as durable: sled lost the tail \
                     of its log, entries it had fsynced (a cut or damaged db file)",
                    reach.map_or("nothing".to_string(), |r| r.to_string()),
                    crate::watermark::WATERMARK_FILE
                )));
            }
            if last.as_ref().is_some_and(|last| l.index <= last.index) {
                check_entry_is(&log, l, floor, "watermark").map_err(&in_db)?;
            }
        }
    }
    Ok(summary)
}

/// Checks that the log holds exactly `want` at its index, unless that index is at or below
/// `floor` (purged, or inside the snapshot) or past the end of the log; the error is the detail
/// of a damage report.
fn check_entry_is(log: &sled::Tree, want: &LogId, floor: Option<u64>, what: &str) -> Result<(), String> {
    if floor.is_some_and(|f| want.index <= f) {
        return Ok(());
    }
    let stored = log.get(want.index.to_be_bytes()).map_err(|e| {
        format!(
            "sled cannot read raft log entry {}: {}",
            want.index,
            sled_detail(&e)
        )
    })?;
    let Some(v) = stored else {
        return Ok(());
    };
    let head: EntryHead =
        codec::decode(&v).map_err(|e| format!("raft log entry {} does not decode: {e}", want.index))?;
    if head.log_id != *want {
        return Err(format!(
            "the {what} is {want} but the raft log holds {} at that index",
            head.log_id
        ));
    }
    Ok(())
}

fn decode_meta<T: serde::de::DeserializeOwned>(
    value: &Option<sled::IVec>,
    key: &str,
) -> Result<Option<T>, String> {
    match value {
        None => Ok(None),
        Some(v) => codec::decode(v)
            .map(Some)
            .map_err(|e| format!("raft_meta key {key:?} does not decode: {e}")),
    }
}

/// A sled error without sled's empty backtrace noise.
pub fn sled_detail(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { at: Some(at), .. } => {
            format!("corrupted data (checksum mismatch) at {at:?}")
        }
        sled::Error::Corruption { at: None, .. } => "corrupted data (checksum mismatch)".to_string(),
        sled::Error::Unsupported(why) => {
            format!("sled's conf file is unreadable (damaged, or not written by this sled version): {why}")
        }
        other => other.to_string(),
    }
}

/// Whether a sled error means damaged files, rather than I/O trouble or a held lock. sled
/// answers `Unsupported` when its `conf` file does not parse (the jepsen suite's bit flips in
/// `conf` found this): every Taurus directory is written by one sled version, so that is damage.
pub fn is_damage(e: &sled::Error) -> bool {
    matches!(
        e,
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) | sled::Error::Unsupported(_)
    )
}

/// Maps an error found while loading a data dir to [`StoreError::Damaged`] when it is about
/// damaged content; other errors (I/O, a foreign schema) are returned as they are.
pub fn as_damage(dir: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt {
            tree, key, reason, ..
        } => {
            let file = if tree == SNAPSHOT_FILE {
                SNAPSHOT_FILE
            } else {
                SLED_DB_FILE
            };
            StoreError::damaged(dir, file, format!("{tree} {key}: {reason}"))
        }
        StoreError::Sled(e) if is_damage(&e) => StoreError::damaged(dir, SLED_DB_FILE, sled_detail(&e)),
        StoreError::Decode(e) => {
            StoreError::damaged(dir, SLED_DB_FILE, format!("a stored value does not decode: {e}"))
        }
        other => other,
    }
}

thread_local! {
    /// Set while [`catch_panic`] runs on this thread.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(message)`: sled 0.34 panics on some kinds of damage
/// (measured: "tried to serialize Uninitialized" while recovering a cut log).
///
/// The process's panic hook (the CLI's prints "internal error (a bug in taurus)") is not run for
/// a panic caught here, on this thread: it is reported as the error it is. The first call wraps
/// the hook installed at that time; panics on other threads, or outside `f`, still reach it.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static WRAP_HOOK: Once = Once::new();
    WRAP_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = CATCHING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;

    use super::*;

    /// The only test of this crate's unit tests that panics or touches the panic hook (the hook is
    /// process-wide).
    #[test]
    fn a_caught_panic_is_an_error_and_skips_the_hook() {
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            SEEN.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        assert_eq!(
            catch_panic(|| -> u32 { panic!("boom {}", 7) }),
            Err("boom 7".to_string())
        );
        assert_eq!(
            catch_panic(|| -> u32 { std::panic::panic_any(5u8) }),
            Err("unknown panic".to_string())
        );
        assert_eq!(SEEN.load(Ordering::SeqCst), 0, "the hook saw a caught panic");
        assert_eq!(catch_panic(|| 7), Ok(7));
        // Outside `catch_panic` the hook runs as before.
        let outside = std::thread::spawn(|| panic!("not caught here")).join();
        assert!(outside.is_err());
        assert_eq!(SEEN.load(Ordering::SeqCst), 1);
    }
}
