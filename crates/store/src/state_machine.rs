//! The Raft state machine: [`taurus_core::State`] in memory, snapshots in sled.
//!
//! # Persistence model (deliberate)
//!
//! openraft's "transient state machine, durable snapshot, saved committed id" model:
//!
//! - The state lives in memory behind one `std::sync::RwLock` together with the last applied log
//!   id and the last applied membership. `apply()` updates all three under one write lock per
//!   batch, so a reader never sees a state that disagrees with its applied id. The lock is never
//!   held across an `.await`.
//! - Durability comes from snapshots, stored in the sled tree `snapshot` under the keys `meta`
//!   (MessagePack `SnapshotMeta`) and `data` (the snapshot bytes below). Both keys are written in
//!   one atomic sled batch and flushed before `build_snapshot` / `install_snapshot` return, so a
//!   half-written snapshot never survives a crash and an older snapshot is never written over a
//!   newer one.
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

pub(crate) const TREE_SNAPSHOT: &str = "snapshot";
const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";

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
    db: sled::Db,
    snapshots: sled::Tree,
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

/// Decodes snapshot bytes into a state.
fn decode_image(data: &[u8]) -> Result<State, StoreError> {
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
    pub fn load(db: &sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let snapshots = db.open_tree(TREE_SNAPSHOT)?;
        let mut applied = Applied::default();
        if let Some(snap) = read_snapshot(&snapshots, dir)? {
            let state = decode_image(&snap.snapshot)
                .map_err(|e| StoreError::corrupt(dir, TREE_SNAPSHOT, KEY_DATA, e))?;
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
                db: db.clone(),
                snapshots,
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
        read_snapshot(&self.inner.snapshots, &self.inner.dir)
    }

    /// Writes a snapshot (meta and data in one atomic batch). Unless `force`, a snapshot older
    /// than the stored one is not written. Returns whether it was written. Does not flush.
    fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8], force: bool) -> Result<bool, StoreError> {
        let meta_bytes = codec::encode(meta)?;
        let _guard = self
            .inner
            .snapshot_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !force
            && let Some(stored) = read_meta(&self.inner.snapshots, &self.inner.dir)?
            && stored.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.insert(KEY_META, meta_bytes);
        batch.insert(KEY_DATA, data);
        self.inner.snapshots.apply_batch(batch)?;
        Ok(true)
    }

    /// Serializes the current state and its meta under one read lock (a consistent view).
    fn capture(&self) -> Result<(SnapshotMeta, Vec<u8>), io::Error> {
        let applied = self.inner.applied.read().map_err(|_| poisoned())?;
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        let data = codec::encode(&SnapshotImageRef {
            schema: SCHEMA_VERSION,
            state: applied.state.image(),
        })?;
        Ok((meta, data))
    }
}

fn read_meta(tree: &sled::Tree, dir: &Path) -> Result<Option<SnapshotMeta>, StoreError> {
    match tree.get(KEY_META)? {
        None => Ok(None),
        Some(v) => codec::decode(&v)
            .map(Some)
            .map_err(|e| StoreError::corrupt(dir, TREE_SNAPSHOT, KEY_META, e)),
    }
}

fn read_snapshot(tree: &sled::Tree, dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    let meta = read_meta(tree, dir)?;
    let data = tree.get(KEY_DATA)?;
    match (meta, data) {
        (None, None) => Ok(None),
        (Some(meta), Some(data)) => Ok(Some(Snapshot {
            meta,
            snapshot: data.to_vec(),
        })),
        (Some(_), None) => Err(StoreError::corrupt(
            dir,
            TREE_SNAPSHOT,
            KEY_DATA,
            "missing while meta exists",
        )),
        (None, Some(_)) => Err(StoreError::corrupt(
            dir,
            TREE_SNAPSHOT,
            KEY_META,
            "missing while data exists",
        )),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = self.capture()?;
        let written = self.persist_snapshot(&meta, &data, false)?;
        flush_blocking(&self.inner.db).await?;
        tracing::info!(last = ?meta.last_log_id, bytes = data.len(), written, "built snapshot");
        Ok(Snapshot { meta, snapshot: data })
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
        let state = decode_image(&snapshot)?;
        self.persist_snapshot(meta, &snapshot, true)?;
        flush_blocking(&self.inner.db).await?;
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

/// A synchronous sled flush on a blocking thread (never sled's own I/O pool: see
/// `crate::flusher` for the deadlock that causes).
async fn flush_blocking(db: &sled::Db) -> Result<(), StoreError> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(r) => r.map(|_| ()).map_err(StoreError::from),
        Err(e) => Err(StoreError::Snapshot(format!("flush task failed: {e}"))),
    }
}
