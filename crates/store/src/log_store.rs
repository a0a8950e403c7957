//! Sled-backed Raft log, and opening of a master's data dir.
//!
//! # On-disk layout (one sled `Db` per data dir, [`SCHEMA_VERSION`] 1)
//!
//! | tree        | key                         | value                                        |
//! |-------------|-----------------------------|----------------------------------------------|
//! | `raft_log`  | log index, 8 bytes big-endian | MessagePack `Entry` (see [`crate::codec`]) |
//! | `raft_meta` | `schema_version`            | `u32` big-endian                             |
//! | `raft_meta` | `vote`                      | MessagePack `Vote`                           |
//! | `raft_meta` | `last_purged`               | MessagePack `LogId`                          |
//! | `raft_meta` | `committed`                 | MessagePack `LogId`                          |
//!
//! Big-endian keys sort numerically, so sled's ordered `range`/`last` work on log indexes.
//! Beside sled's own files (`conf`, `db`, `snap.*`) the directory holds `snapshot.bin` (the
//! state-machine snapshot, see [`crate::state_machine`]) and `watermark.bin` (the newest vote and
//! last log id known durable, see [`crate::watermark`]).
//!
//! # Durability and write ordering
//!
//! Every write of the log store goes to one sled `Db` (snapshots are a separate file),
//! issued in the order openraft calls us. sled's log is sequential and a flush syncs the
//! whole `Db`, so a flush makes every earlier write durable and no later write can become durable
//! before an earlier one. That gives openraft's "all write IO is serialized" rule for free:
//! - [`RaftLogStorage::save_vote`] flushes before it returns;
//! - [`RaftLogStorage::append`] inserts the entries in index order (readable when it returns),
//!   then hands openraft's callback to the group-commit [`crate::flusher::Flusher`], which reports
//!   them durable only after an fsync that started after they were written;
//! - `truncate_after` and `purge` are one atomic batch each, then flushed;
//! - `save_committed` is written without its own flush: it becomes durable with the next flush
//!   (next append / vote) or sled's background flusher (every 500 ms). A committed id that lags
//!   after a crash only means openraft re-applies less on restart and catches up on the next
//!   commit; one that is durable always refers to durable entries (they were written first).
//!
//! Nothing read from disk is trusted: [`open`] verifies the whole directory first
//! ([`crate::verify`]) and refuses a damaged one; later, a value that does not decode, a key of
//! the wrong size or an entry stored under another index is a [`StoreError::Corrupt`] naming the
//! data dir, the tree and the key, handed to openraft as an `io::Error` (never a panic).
//!
//! `truncate_after` first lowers the durable watermark (one fdatasync of a 512-byte file; rare:
//! only a follower replacing a deposed leader's uncommitted entries truncates), so the watermark
//! never claims an entry sled no longer holds.

use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::OptionalSend;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;
use crate::codec;
use crate::error::StoreError;
use crate::flusher::Flusher;
use crate::state_machine::StateMachineStore;
use crate::verify;
use crate::watermark::Watermark;

/// Version of the on-disk layout and encodings. Bump on any incompatible change (of this crate's
/// trees and keys, of openraft's serialized types, or of `taurus_core` types in snapshots).
pub const SCHEMA_VERSION: u32 = 1;

/// sled page cache per data dir (sled's default is 1 GiB; several masters may share a host).
pub const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

pub(crate) const TREE_LOG: &str = "raft_log";
pub(crate) const TREE_META: &str = "raft_meta";

const KEY_SCHEMA: &str = "schema_version";
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const KEY_COMMITTED: &str = "committed";

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Opens (or creates) the data dir of a master: its sled database, Raft log and state machine.
///
/// The state machine comes back holding the last persisted snapshot, so `applied_state()` reports
/// the snapshot's last log id; openraft re-applies the committed log after it when the `Raft` is
/// created.
///
/// Before anything is handed out the whole directory is verified ([`crate::verify`]): damaged
/// data is [`StoreError::Damaged`] (naming the path and the recovery procedure), never a panic
/// and never loaded.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = open_db(dir)?;
    let (watermark, durable) = Watermark::open(dir)?;
    let sm = StateMachineStore::load(dir).map_err(|e| verify::as_damage(dir, e))?;
    verify::verify(&db, dir, sm.last_applied().as_ref(), durable.as_ref())?;
    let log = LogStore::new(&db, dir, Arc::new(watermark))?;
    Ok((log, sm))
}

/// Opens the sled database in `dir` and checks its schema version: a fresh database gets
/// [`SCHEMA_VERSION`]; an existing one must carry exactly that version.
///
/// A directory sled cannot recover is [`StoreError::Damaged`], never a panic (sled panics on
/// some kinds of damage; that panic is caught). I/O errors and a held lock stay
/// [`StoreError::Open`].
///
/// sled holds an exclusive file lock on the directory until the last handle of its `Db` is
/// dropped. When a master restarts in-process, handles of the old instance may still be going
/// away on other tasks (a `Raft` shutting down, an in-flight flush), so a lock conflict is
/// retried for up to [`LOCK_WAIT`] before it is reported (another process holding the directory
/// then fails after that wait, with sled's "could not acquire lock" message).
pub fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    // Whether sled files were there before this open: sled recovers a damaged or emptied log
    // as an empty database without any error, which must not pass for a fresh one.
    let existed = ["conf", "db"].iter().any(|f| dir.join(f).exists());
    let config = sled::Config::new().path(dir).cache_capacity(CACHE_CAPACITY);
    let deadline = Instant::now() + LOCK_WAIT;
    let db = loop {
        match verify::catch_panic(|| config.open()) {
            Ok(Ok(db)) => break db,
            Ok(Err(source)) if is_lock_conflict(&source) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Err(source)) if verify::is_damage(&source) => {
                return Err(StoreError::damaged(
                    dir,
                    "",
                    format!(
                        "sled cannot recover its files (conf, db, snap.*): {}",
                        verify::sled_detail(&source)
                    ),
                ));
            }
            Ok(Err(source)) => {
                return Err(StoreError::Open {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
            Err(message) => {
                return Err(StoreError::damaged(
                    dir,
                    "",
                    format!("sled panicked while recovering its files (conf, db, snap.*): {message}"),
                ));
            }
        }
    };
    check_schema(&db, dir, existed).map_err(|e| verify::as_damage(dir, e))?;
    Ok(db)
}

/// How long [`open_db`] waits for another handle of the same directory to go away.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// sled reports a held directory lock as an `Io` error with this text (sled 0.34.7 config.rs).
fn is_lock_conflict(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Verifies (or, on a new empty database, writes) the schema version key. `existed`: sled files
/// were present before the database was opened.
fn check_schema(db: &sled::Db, dir: &Path, existed: bool) -> Result<(), StoreError> {
    let schema_err = |found: String| StoreError::Schema {
        dir: dir.to_path_buf(),
        found,
        expected: SCHEMA_VERSION,
    };
    let meta = db.open_tree(TREE_META)?;
    if let Some(v) = meta.get(KEY_SCHEMA)? {
        let found = <[u8; 4]>::try_from(v.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| schema_err(format!("a malformed schema version key ({} bytes)", v.len())))?;
        if found != SCHEMA_VERSION {
            return Err(schema_err(format!("schema version {found}")));
        }
        return Ok(());
    }
    let mut non_empty = Vec::new();
    for name in db.tree_names() {
        if !db.open_tree(&name)?.is_empty() {
            non_empty.push(String::from_utf8_lossy(&name).into_owned());
        }
    }
    if !non_empty.is_empty() {
        return Err(schema_err(format!(
            "data without a schema version (non-empty trees: {})",
            non_empty.join(", ")
        )));
    }
    if existed {
        return Err(StoreError::damaged(
            dir,
            "db",
            "sled recovered an empty database from existing files: the data is damaged or lost (or \
             a first start crashed before initializing it)",
        ));
    }
    meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// The Raft log store: the log, the vote, the purge point and the committed id.
///
/// Cheap to clone (sled handles are reference counted); every clone sees every write at once,
/// so it is its own [`RaftLogReader`].
#[derive(Clone)]
pub struct LogStore {
    flusher: Flusher,
    log: sled::Tree,
    meta: sled::Tree,
    dir: Arc<PathBuf>,
    /// What sled has been given to write; the flusher records it once durable.
    watermark: Arc<Watermark>,
}

impl LogStore {
    /// A log store on an already opened and verified database.
    pub(crate) fn new(db: &sled::Db, dir: &Path, watermark: Arc<Watermark>) -> Result<Self, StoreError> {
        Ok(Self {
            flusher: Flusher::start(db.clone(), Some(watermark.clone())).map_err(|source| {
                StoreError::Durability {
                    what: "cannot start the flusher thread",
                    dir: dir.to_path_buf(),
                    source,
                }
            })?,
            log: db.open_tree(TREE_LOG)?,
            meta: db.open_tree(TREE_META)?,
            dir: Arc::new(dir.to_path_buf()),
            watermark,
        })
    }

    /// The data dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(&v)
                .map(Some)
                .map_err(|e| StoreError::corrupt(&self.dir, TREE_META, key, e)),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.meta.insert(key, codec::encode(value)?)?;
        Ok(())
    }

    /// Decodes one `raft_log` record, checking that the entry is stored under its own index.
    fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
        let index = <[u8; 8]>::try_from(key).map(u64::from_be_bytes).map_err(|_| {
            StoreError::corrupt(
                &self.dir,
                TREE_LOG,
                format!("{key:02x?}"),
                "log key is not 8 bytes",
            )
        })?;
        let entry: Entry = codec::decode(value)
            .map_err(|e| StoreError::corrupt(&self.dir, TREE_LOG, format!("index {index}"), e))?;
        if entry.index() != index {
            return Err(StoreError::corrupt(
                &self.dir,
                TREE_LOG,
                format!("index {index}"),
                format!("holds the entry of index {}", entry.index()),
            ));
        }
        Ok(entry)
    }

    /// Every stored entry in `range`, in order; a hole inside what is stored is an error.
    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive end; `None` = to the end of the log.
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let lo = start.to_be_bytes();
        let iter = match end {
            Some(e) => self.log.range(lo..e.to_be_bytes()),
            None => self.log.range(lo..),
        };
        let mut out: Vec<Entry> = Vec::new();
        for item in iter {
            let (k, v) = item?;
            let entry = self.decode_entry(&k, &v)?;
            if let Some(prev) = out.last()
                && prev.index() + 1 != entry.index()
            {
                return Err(StoreError::corrupt(
                    &self.dir,
                    TREE_LOG,
                    format!("index {}", prev.index() + 1),
                    format!(
                        "missing: the log jumps from index {} to {}",
                        prev.index(),
                        entry.index()
                    ),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes every key of `raft_log` in `range` in one atomic batch.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(range).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flusher
            .flush()
            .await
            .map_err(|source| StoreError::Durability {
                what: "flushing the raft log failed",
                dir: self.dir.to_path_buf(),
                source,
            })?;
        Ok(())
    }

    /// Reads the persisted vote.
    pub fn vote(&self) -> Result<Option<Vote>, StoreError> {
        self.get_meta(KEY_VOTE)
    }

    /// Reads the persisted committed log id.
    pub fn committed(&self) -> Result<Option<LogId>, StoreError> {
        self.get_meta(KEY_COMMITTED)
    }

    /// Reads the first and last log ids present (purge point and last entry).
    pub fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = match self.log.last()? {
            Some((k, v)) => Some(self.decode_entry(&k, &v)?.log_id()),
            None => None,
        };
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.read_range(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.vote()?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(self.log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        self.watermark.wrote_vote(vote);
        self.flush().await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Durable with the next flush; see the module doc.
        match committed {
            Some(c) => self.put_meta(KEY_COMMITTED, &c)?,
            None => {
                self.meta.remove(KEY_COMMITTED).map_err(StoreError::from)?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.committed()?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Plain inserts in index order, not one `apply_batch`: sled 0.34's `apply_batch` takes its
        // global concurrency-control lock exclusively, and `flush` holds that lock shared for the
        // whole fsync, so a batch would stall RaftCore behind every in-progress flush. A crash
        // before the flush callback can leave only a prefix of these entries (sled recovers its
        // log in order), never a hole, and openraft treats unflushed entries as not durable.
        let mut last = None;
        for entry in entries {
            self.log
                .insert(entry.index().to_be_bytes(), codec::encode(&entry)?)
                .map_err(StoreError::from)?;
            last = Some(entry.log_id());
        }
        if let Some(last) = last {
            self.watermark.wrote_log(last);
        }
        // Entries are readable now; the flusher reports them durable after a flush that started
        // after this batch was applied (group commit: one fsync for every append queued).
        self.flusher.flush_log(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        tracing::debug!(?last_log_id, "truncating raft log after");
        // The durable watermark goes down first: it must never claim entries sled no longer has.
        self.watermark
            .lower_log(last_log_id)
            .map_err(|source| StoreError::Durability {
                what: "cannot lower the watermark before truncating the raft log",
                dir: self.dir.to_path_buf(),
                source,
            })?;
        match last_log_id.map(|l| l.index.checked_add(1)) {
            // Nothing can follow u64::MAX.
            Some(None) => return Ok(()),
            Some(Some(from)) => self.remove_range(from.to_be_bytes()..)?,
            None => self.remove_range(..)?,
        }
        self.flush().await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(%log_id, "purging raft log up to");
        // The purge point first: sled persists in write order, so the deletions below can never
        // be durable without it (no "hole" at the head of the log after a crash).
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        self.remove_range(..=log_id.index.to_be_bytes())?;
        self.flush().await?;
        Ok(())
    }
}
