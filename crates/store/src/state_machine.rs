//! The Raft state machine: [`taurus_core::State`] in memory, snapshots in a file beside sled.
//!
//! # Persistence model (deliberate)
//!
//! openraft's "transient state machine, durable snapshot, saved committed id" model:
//!
//! - The state lives in memory behind one `std::sync::RwLock` together with the last applied log
//!   id and the last applied membership. `apply()` updates all three under one write lock per
//!   batch, so a reader never sees a state that disagrees with its applied id. The lock is never
//!   held across an `.await`.
//! - Durability comes from snapshots, stored in the file `snapshot.bin` in the data directory
//!   (meta and data, length-framed). It is written to a temporary file, fsynced, renamed over the
//!   old one and the directory fsynced before `build_snapshot` / `install_snapshot` return, so a
//!   half-written snapshot never survives a crash (a torn file is detected by its lengths) and an
//!   older snapshot is never written over a newer one. The file ends with a CRC-32 of its
//!   contents, so a damaged file (a flipped bit in the middle of the state) is refused on start
//!   rather than loaded as a subtly different state. Not in sled: a large value written to sled
//!   takes its global lock and stalls every Raft log write behind it (`docs/decisions.md` §7).
//! - Between snapshots, the Raft log plus the persisted committed log id carry the state: on
//!   start, [`crate::log_store::open`] loads the last snapshot into memory, and when the `Raft` is
//!   created openraft re-applies the committed log after the snapshot
//!   (`StorageHelper::get_initial_state`: install the snapshot if it is ahead of `applied_state()`,
//!   then re-apply `(applied, committed]` without responders).
//!
//! Apply is deterministic (`State::apply` reads no clock and does no I/O), so replaying the same
//! log yields the same state on every master.
//!
//! # Snapshot bytes
//!
//! `SnapshotData = Vec<u8>`: MessagePack of `{ schema: SCHEMA_VERSION, state: State::image() }`.
//! A snapshot from a build with another schema version, or bytes that do not decode, or an image
//! `State::from_image` rejects, is an error (never a panic).

use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::RwLock;

use futures::Stream;
use futures::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::state::StateImage;
use taurus_core::state::StateImageRef;
use tokio::sync::watch;

use crate::TypeConfig;
use crate::codec;
use crate::error::StoreError;
use crate::log_store::SCHEMA_VERSION;

type LogId = LogIdOf<TypeConfig>;
type StoredMembership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, Vec<u8>>;

/// The state machine store. Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    applied: RwLock<Applied>,
    /// The applied log index, published after every applied batch and snapshot install.
    applied_tx: watch::Sender<u64>,
    /// Serializes snapshot writes so an older snapshot never replaces a newer one.
    snapshot_write: Mutex<()>,
}

/// Everything `apply` changes, changed together.
#[derive(Default)]
struct Applied {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Snapshot bytes, as written.
#[derive(Serialize)]
struct SnapshotImageRef<'a> {
    schema: u32,
    state: StateImageRef<'a>,
}

/// Snapshot bytes, as read.
#[derive(Deserialize)]
struct SnapshotImage {
    schema: u32,
    state: StateImage,
}

fn index_of(log_id: Option<&LogId>) -> u64 {
    log_id.map_or(0, |l| l.index)
}

fn poisoned() -> io::Error {
    io::Error::other("state machine lock poisoned: an earlier apply panicked; restart the master")
}

/// Encodes a state as snapshot bytes (what `build_snapshot` writes; also a backup's data).
pub(crate) fn encode_image(state: &State) -> Result<Vec<u8>, StoreError> {
    codec::encode(&SnapshotImageRef {
        schema: SCHEMA_VERSION,
        state: state.image(),
    })
}

/// Decodes snapshot bytes into a state.
pub(crate) fn decode_image(data: &[u8]) -> Result<State, StoreError> {
    let image: SnapshotImage =
        codec::decode(data).map_err(|e| StoreError::Snapshot(format!("undecodable snapshot data: {e}")))?;
    if image.schema != SCHEMA_VERSION {
        return Err(StoreError::Snapshot(format!(
            "snapshot has schema version {}, this build reads {SCHEMA_VERSION}",
            image.schema
        )));
    }
    Ok(State::from_image(image.state)?)
}

impl StateMachineStore {
    /// Opens the state machine on an already opened (and schema-checked) database, loading the
    /// last persisted snapshot (if any) into memory.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let mut applied = Applied::default();
        if let Some(snap) = read_snapshot_file(dir, true)? {
            let state = decode_image(&snap.snapshot)
                .map_err(|e| StoreError::corrupt(dir, SNAPSHOT_FILE, "data", e))?;
            tracing::info!(dir = %dir.display(), last = ?snap.meta.last_log_id, tasks = state.len(), "loaded snapshot");
            applied = Applied {
                state,
                last_applied: snap.meta.last_log_id,
                membership: snap.meta.last_membership,
            };
        }
        let (applied_tx, _) = watch::channel(index_of(applied.last_applied.as_ref()));
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                applied: RwLock::new(applied),
                applied_tx,
                snapshot_write: Mutex::new(()),
            }),
        })
    }

    /// Runs `f` on the current state (under a read lock: keep it short, never block in it).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        // A poisoned lock means an apply panicked mid-batch; reads still see the last state
        // (State::apply never panics on input, so this is not expected to happen).
        let applied = self.inner.applied.read().unwrap_or_else(PoisonError::into_inner);
        f(&applied.state)
    }

    /// The index of the last applied log entry; 0 when nothing has been applied.
    pub fn applied_index(&self) -> u64 {
        let applied = self.inner.applied.read().unwrap_or_else(PoisonError::into_inner);
        index_of(applied.last_applied.as_ref())
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_applied
    }

    /// A receiver of the applied index, updated after every applied batch and installed snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    /// The persisted snapshot, if any.
    pub fn current_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        read_snapshot_file(&self.inner.dir, true)
    }

    /// Writes a snapshot file crash-safely (temporary file, fsync, rename, fsync of the
    /// directory). Unless `force`, a snapshot older than the stored one is not written. Returns
    /// whether it was written. Blocking: call from a blocking thread.
    fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8], force: bool) -> Result<bool, StoreError> {
        let meta_bytes = codec::encode(meta)?;
        let _guard = self
            .inner
            .snapshot_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !force
            && let Some(stored) = read_snapshot_file(&self.inner.dir, false)?
            && stored.meta.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        write_snapshot_file(&self.inner.dir, &meta_bytes, data)?;
        Ok(true)
    }

    /// The last applied log id, the applied membership and an O(1) clone of the state, all of
    /// one moment (for a backup: `crate::backup`).
    pub fn capture_applied(&self) -> (Option<LogId>, StoredMembership, State) {
        let applied = self.inner.applied.read().unwrap_or_else(PoisonError::into_inner);
        (
            applied.last_applied,
            applied.membership.clone(),
            applied.state.clone(),
        )
    }

    /// A consistent view for a snapshot: the meta and an O(1) clone of the state (persistent
    /// collections), taken under the read lock and released at once.
    fn capture(&self) -> Result<(SnapshotMeta, State), io::Error> {
        let applied = self.inner.applied.read().map_err(|_| poisoned())?;
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        Ok((meta, applied.state.clone()))
    }
}

/// The snapshot file's name in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Files written before checksums (still read; never written).
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"TAURSNP1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"TAURSNP2";

/// Layout: magic (8 bytes), meta length (u32 BE), meta (MessagePack `SnapshotMeta`), data length
/// (u64 BE), data, CRC-32 of everything before it (u32 BE). The lengths must account for the
/// whole file and the checksum must match: a torn or damaged file is detected, never loaded
/// (version 1 files, without the checksum, only have the length check).
fn write_snapshot_file(dir: &Path, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let durability = |what: &'static str| {
        let dir = dir.to_path_buf();
        move |source| StoreError::Durability { what, dir, source }
    };
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let meta_len =
        u32::try_from(meta.len()).map_err(|_| StoreError::Snapshot("snapshot meta too large".into()))?;
    let data_len = (data.len() as u64).to_be_bytes();
    let mut crc = crc32fast::Hasher::new();
    let parts: [&[u8]; 5] = [SNAPSHOT_MAGIC, &meta_len.to_be_bytes(), meta, &data_len, data];
    let mut f = std::fs::File::create(&tmp).map_err(durability("cannot create the snapshot file"))?;
    let mut w = std::io::BufWriter::new(&mut f);
    parts
        .iter()
        .try_for_each(|part| {
            crc.update(part);
            w.write_all(part)
        })
        .and_then(|_| w.write_all(&crc.clone().finalize().to_be_bytes()))
        .and_then(|_| w.flush())
        .map_err(durability("cannot write the snapshot file"))?;
    drop(w);
    f.sync_all()
        .map_err(durability("cannot sync the snapshot file"))?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(durability("cannot install the snapshot file"))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(durability("cannot sync the data directory"))?;
    Ok(())
}

/// Reads the snapshot file: `None` when there is none. With `with_data = false` only the meta
/// is returned (the data is left empty).
fn read_snapshot_file(dir: &Path, with_data: bool) -> Result<Option<Snapshot>, StoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Durability {
                what: "cannot read the snapshot file",
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |key: &str, reason: &str| StoreError::corrupt(dir, SNAPSHOT_FILE, key, reason.to_string());
    let body = match bytes.get(..8) {
        Some(m) if m == SNAPSHOT_MAGIC => {
            let Some(split) = bytes.len().checked_sub(4) else {
                return Err(corrupt("header", "too short"));
            };
            let (body, crc) = bytes.split_at(split);
            if crc32fast::hash(body).to_be_bytes() != crc {
                return Err(corrupt(
                    "checksum",
                    "checksum mismatch: the file is damaged or was cut short (torn write?)",
                ));
            }
            body
        }
        Some(m) if m == SNAPSHOT_MAGIC_V1 => &bytes[..],
        _ => {
            return Err(corrupt(
                "header",
                "not a Taurus snapshot file (bad magic or too short)",
            ));
        }
    };
    if body.len() < 12 {
        return Err(corrupt("header", "truncated header"));
    }
    let meta_len = u32::from_be_bytes([body[8], body[9], body[10], body[11]]) as usize;
    let meta_end = 12usize
        .checked_add(meta_len)
        .filter(|e| e.checked_add(8).is_some_and(|end| end <= body.len()))
        .ok_or_else(|| corrupt("header", "truncated meta"))?;
    let meta: SnapshotMeta =
        codec::decode(&body[12..meta_end]).map_err(|e| StoreError::corrupt(dir, SNAPSHOT_FILE, "meta", e))?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&body[meta_end..meta_end + 8]);
    let data_start = meta_end + 8;
    if u64::from_be_bytes(len) != (body.len() - data_start) as u64 {
        return Err(corrupt("data", "length does not match the file (torn write?)"));
    }
    let snapshot = if with_data {
        body[data_start..].to_vec()
    } else {
        Vec::new()
    };
    Ok(Some(Snapshot { meta, snapshot }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, state) = self.capture()?;
        // Encoding a large state takes seconds of CPU. Do it, and the file write, on a thread of
        // its own at lower CPU priority: neither apply nor the async runtime nor the Raft
        // heartbeats may wait for it, or a busy 2-core machine elects a new leader mid-snapshot.
        let this = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("taurus-snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                let work = || -> Result<(Snapshot, bool), io::Error> {
                    let data = encode_image(&state)?;
                    let written = this.persist_snapshot(&meta, &data, false)?;
                    Ok((Snapshot { meta, snapshot: data }, written))
                };
                let _ = tx.send(work());
            })?;
        let (snapshot, written) = rx
            .await
            .map_err(|_| io::Error::other("the snapshot thread ended without a result"))??;
        tracing::info!(last = ?snapshot.meta.last_log_id, bytes = snapshot.snapshot.len(), written, "built snapshot");
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.inner.applied.read().map_err(|_| poisoned())?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Gather the batch first: the lock must not be held across an await.
        let mut batch = Vec::new();
        let mut stream_err = None;
        while let Some(item) = entries.next().await {
            match item {
                Ok(x) => batch.push(x),
                Err(e) => {
                    stream_err = Some(e);
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let mut replies = Vec::with_capacity(batch.len());
            let applied_index = {
                let mut applied = self.inner.applied.write().map_err(|_| poisoned())?;
                let applied = &mut *applied;
                for (entry, responder) in batch {
                    let log_id = entry.log_id;
                    let resp = match entry.payload {
                        EntryPayload::Blank => Response::None,
                        EntryPayload::Normal(cmd) => applied.state.apply(log_id.index, cmd),
                        EntryPayload::Membership(m) => {
                            applied.membership = StoredMembership::new(Some(log_id), m);
                            Response::None
                        }
                    };
                    applied.last_applied = Some(log_id);
                    if let Some(r) = responder {
                        replies.push((r, resp));
                    }
                }
                index_of(applied.last_applied.as_ref())
            };
            self.inner.applied_tx.send_replace(applied_index);
            for (responder, resp) in replies {
                responder.send(resp);
            }
        }
        match stream_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        // Decoding, writing and syncing a large snapshot happen on a blocking thread.
        let this = self.clone();
        let meta_owned = meta.clone();
        let (state, snapshot) =
            tokio::task::spawn_blocking(move || -> Result<(State, Vec<u8>), io::Error> {
                let mut state = decode_image(&snapshot)?;
                // Assignment streams skip agents whose set did not change; after a wholesale
                // replacement every set may have.
                state.mark_agents_changed(index_of(meta_owned.last_log_id.as_ref()));
                this.persist_snapshot(&meta_owned, &snapshot, true)?;
                Ok((state, snapshot))
            })
            .await
            .map_err(|e| io::Error::other(format!("snapshot install task failed: {e}")))??;
        let applied_index = {
            let mut applied = self.inner.applied.write().map_err(|_| poisoned())?;
            *applied = Applied {
                state,
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            index_of(applied.last_applied.as_ref())
        };
        self.inner.applied_tx.send_replace(applied_index);
        tracing::info!(last = ?meta.last_log_id, bytes = snapshot.len(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current_snapshot()?)
    }
}

/// Lowers the calling thread's CPU priority (nice +10) so snapshot work yields to Raft (also
/// used for encoding backups). Only for threads of their own, never pooled ones. Best effort:
/// a failure only means the thread keeps its normal priority.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority only read their integer arguments; on Linux PRIO_PROCESS
    // with a thread id changes that thread's nice value alone.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0 {
            tracing::debug!("could not lower the snapshot thread's priority");
        }
    }
}
