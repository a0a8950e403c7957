//! Backups of a cluster's whole state, and seeding a new master's data dir from one.
//!
//! A backup (`taurus cluster snapshot save FILE`) is the applied state of one master, taken
//! after a linearizable read barrier, in the same encoding as the Raft snapshot
//! (`state_machine.rs`: MessagePack of `{schema, state}`), framed with a header and a checksum:
//!
//! ```text
//! magic "TAURBAK1" (8 bytes) | header length (u32 BE) | header (MessagePack BackupHeader)
//!   | data (header.data_bytes bytes: the snapshot encoding of the state)
//!   | SHA-256 of everything before it (32 bytes)
//! ```
//!
//! The checksum covers the header too, so a damaged or cut file is refused before anything is
//! decoded. A backup holds every task, agent and token (token *hashes*, never secrets) and is as
//! sensitive as a master's data directory.
//!
//! # Restore: offline seeding
//!
//! [`seed_data_dir`] (`taurus master restore`) writes a backup into a new, empty data dir as the
//! master's installed snapshot: last log id = the backup's, membership = the NEW cluster's
//! peers, and a vote whose term is above every term in the backup. Every master of the new
//! cluster is seeded from the same file, so all of them start with the same state at the same
//! log id and the same membership: a formed cluster that elects a leader and continues the log
//! [`RESTORE_INDEX_GAP`] past the backup's index (fencing tokens and agent epochs, which are log
//! indexes, stay above every one the old cluster issued, before or after the backup). Before it is written the state goes through
//! [`taurus_core::State::prepare_restore`] (agents down, attempts in flight lost and retried),
//! with the backup's own index and time, so the result is the same on every master.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use openraft::BasicNode;
use openraft::Membership;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::StoredMembershipOf;
use openraft::alias::VoteOf;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use sha2::Digest;
use sha2::Sha256;
use taurus_core::State;
use taurus_core::TaskState;
use taurus_core::state::Restored;

use crate::NodeId;
use crate::TypeConfig;
use crate::codec;
use crate::error::StoreError;
use crate::log_store::SCHEMA_VERSION;
use crate::state_machine::decode_image;
use crate::state_machine::encode_image;

type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"TAURBAK1";
/// Version of the backup framing (the header's `format`); the data carries its own schema.
pub const BACKUP_FORMAT: u32 = 1;
/// Largest header accepted (it holds a few numbers and the membership).
const MAX_HEADER_BYTES: u32 = 1 << 20;
const DIGEST_BYTES: usize = 32;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// [`BACKUP_FORMAT`] of the writer.
    pub format: u32,
    /// The data's schema version ([`SCHEMA_VERSION`] of the writer).
    pub schema: u32,
    /// The last log entry applied to the state (index and the term of its leader).
    pub last_log_id: LogId,
    /// The serving master's current term when the backup was taken.
    pub term: u64,
    /// The cluster's masters when the backup was taken (id to address).
    pub members: BTreeMap<NodeId, String>,
    /// The master that served the backup.
    pub taken_by: NodeId,
    /// When the backup was taken (the serving master's clock, Unix milliseconds).
    pub created_at_ms: u64,
    /// Length of the data section.
    pub data_bytes: u64,
    /// What the state holds.
    pub counts: BackupCounts,
}

/// Sizes of the backed-up state, for `inspect` and the save summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCounts {
    pub tasks: u64,
    /// Tasks per state name (`pending`, `running`, ...), states with none left out.
    pub tasks_by_state: BTreeMap<String, u64>,
    pub agents: u64,
    pub tokens: u64,
}

impl BackupCounts {
    pub fn of(state: &State) -> Self {
        let tasks_by_state = TaskState::ALL
            .iter()
            .map(|s| (s.to_string(), state.count(*s) as u64))
            .filter(|(_, n)| *n > 0)
            .collect();
        BackupCounts {
            tasks: state.len() as u64,
            tasks_by_state,
            agents: state.agents().count() as u64,
            tokens: state.acl().tokens().count() as u64,
        }
    }
}

/// A backup ready to be sent: the framing and the data, kept apart so the data is never copied.
pub struct EncodedBackup {
    pub header: BackupHeader,
    prefix: Vec<u8>,
    data: Vec<u8>,
    digest: [u8; DIGEST_BYTES],
}

impl EncodedBackup {
    /// Size of the whole file.
    pub fn len(&self) -> u64 {
        (self.prefix.len() + self.data.len() + DIGEST_BYTES) as u64
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The file's checksum, hex.
    pub fn sha256(&self) -> String {
        hex(&self.digest)
    }

    /// The whole file in order, in pieces of at most `max` bytes (at least 1).
    pub fn chunks(&self, max: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let max = max.max(1);
        self.prefix
            .chunks(max)
            .chain(self.data.chunks(max))
            .chain(std::iter::once(&self.digest[..]))
    }
}

/// Encodes a backup of `state`, whose last applied entry is `last_log_id`. CPU-bound (seconds
/// for a large state): call it on a blocking thread.
pub fn encode_backup(
    state: &State,
    last_log_id: LogId,
    term: u64,
    members: BTreeMap<NodeId, String>,
    taken_by: NodeId,
    created_at_ms: u64,
) -> Result<EncodedBackup, StoreError> {
    let data = encode_image(state)?;
    let header = BackupHeader {
        format: BACKUP_FORMAT,
        schema: SCHEMA_VERSION,
        last_log_id,
        term,
        members,
        taken_by,
        created_at_ms,
        data_bytes: data.len() as u64,
        counts: BackupCounts::of(state),
    };
    let header_bytes = codec::encode(&header)?;
    let header_len = u32::try_from(header_bytes.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER_BYTES)
        .ok_or_else(|| StoreError::Backup("header too large".into()))?;
    let mut prefix = Vec::with_capacity(12 + header_bytes.len());
    prefix.extend_from_slice(BACKUP_MAGIC);
    prefix.extend_from_slice(&header_len.to_be_bytes());
    prefix.extend_from_slice(&header_bytes);
    let mut hasher = Sha256::new();
    hasher.update(&prefix);
    hasher.update(&data);
    Ok(EncodedBackup {
        header,
        prefix,
        data,
        digest: hasher.finalize().into(),
    })
}

/// What [`verify_stream`] found in a sound backup.
#[derive(Clone, Debug)]
pub struct Verified {
    pub header: BackupHeader,
    /// The checksum (hex), as stored and recomputed.
    pub sha256: String,
    /// Size of the whole file.
    pub bytes: u64,
}

fn bad(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backup(detail.to_string())
}

/// Reads exactly `buf.len()` bytes, naming `what` when the file ends first.
fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), StoreError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(format!("the file ends inside the {what} (cut short?)")),
        _ => bad(format!("cannot read the {what}: {e}")),
    })
}

/// Checks a whole backup read from `r` in one pass with constant memory: magic, header, length,
/// checksum, and that nothing follows. The data is not decoded (see [`load_backup`]).
pub fn verify_stream(mut r: impl Read) -> Result<Verified, StoreError> {
    let mut hasher = Sha256::new();
    let mut fixed = [0u8; 12];
    read_exact(&mut r, &mut fixed, "header")?;
    if &fixed[..8] != BACKUP_MAGIC {
        return Err(bad("not a Taurus backup file (bad magic)"));
    }
    hasher.update(fixed);
    let header_len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {header_len} is implausible (damaged file?)"
        )));
    }
    let mut header_bytes = vec![0u8; header_len as usize];
    read_exact(&mut r, &mut header_bytes, "header")?;
    hasher.update(&header_bytes);
    let mut remaining = decode_header(&header_bytes)?.data_bytes;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        read_exact(&mut r, &mut buf[..n], "data")?;
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut stored = [0u8; DIGEST_BYTES];
    read_exact(&mut r, &mut stored, "checksum")?;
    let computed: [u8; DIGEST_BYTES] = hasher.finalize().into();
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch: the file says sha256 {} but its contents hash to {} (damaged)",
            hex(&stored),
            hex(&computed)
        )));
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(bad("unexpected bytes after the checksum")),
        Err(e) => return Err(bad(format!("cannot read past the checksum: {e}"))),
    }
    let header = decode_header(&header_bytes)?;
    Ok(Verified {
        bytes: 12 + u64::from(header_len) + header.data_bytes + DIGEST_BYTES as u64,
        header,
        sha256: hex(&stored),
    })
}

fn decode_header(bytes: &[u8]) -> Result<BackupHeader, StoreError> {
    let header: BackupHeader =
        codec::decode(bytes).map_err(|e| bad(format!("the header does not decode: {e}")))?;
    if header.format != BACKUP_FORMAT {
        return Err(bad(format!(
            "backup format {} is not supported (this build reads format {BACKUP_FORMAT})",
            header.format
        )));
    }
    if header.schema != SCHEMA_VERSION {
        return Err(bad(format!(
            "the backup holds schema version {}, this build reads {SCHEMA_VERSION}",
            header.schema
        )));
    }
    Ok(header)
}

/// A verified backup with its state decoded.
#[derive(Debug)]
pub struct Backup {
    pub header: BackupHeader,
    pub sha256: String,
    pub bytes: u64,
    pub state: State,
}

/// Verifies the backup in `bytes` (see [`verify_stream`]) and decodes its state.
pub fn decode_backup(bytes: &[u8]) -> Result<Backup, StoreError> {
    let verified = verify_stream(bytes)?;
    // verify_stream accounted for every byte: magic, length, header, data, checksum.
    let data_bytes = verified.header.data_bytes;
    let start = verified.bytes - DIGEST_BYTES as u64 - data_bytes;
    let data = usize::try_from(start)
        .ok()
        .zip(usize::try_from(data_bytes).ok())
        .and_then(|(s, n)| bytes.get(s..s.checked_add(n)?))
        .ok_or_else(|| bad("data section out of range"))?;
    let state = decode_image(data).map_err(|e| bad(format!("the state does not load: {e}")))?;
    Ok(Backup {
        header: verified.header,
        sha256: verified.sha256,
        bytes: verified.bytes,
        state,
    })
}

/// Reads, verifies and decodes the backup file at `path` (memory: the file plus its state).
pub fn load_backup(path: &Path) -> Result<Backup, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    decode_backup(&bytes).map_err(|e| match e {
        StoreError::Backup(m) => bad(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// How far past the backup's last log index a restored cluster's log starts. Fencing tokens and
/// agent epochs are log indexes: starting this far on keeps every new one above any the old
/// cluster may have issued after the backup was taken (to agents that may still be running),
/// not only above those in the backup. Far below 2^53, so indexes stay exact in JSON.
pub const RESTORE_INDEX_GAP: u64 = 1 << 32;

/// What [`seed_data_dir`] wrote.
#[derive(Debug)]
pub struct Seeded {
    /// The log id the master starts from: the backup's, [`RESTORE_INDEX_GAP`] further on.
    pub last_log_id: LogId,
    /// The term of the vote written; the new cluster's first election is above it.
    pub vote_term: u64,
    /// What `State::prepare_restore` changed.
    pub restored: Restored,
}

/// Writes `backup` into the new, empty data dir `dir` of master `id` of a cluster made of
/// `peers`, as that master's installed snapshot (see the module docs). Refuses a directory that
/// holds anything, and an `id` missing from `peers`.
pub async fn seed_data_dir(
    dir: &Path,
    backup: &Backup,
    id: NodeId,
    peers: &BTreeMap<NodeId, String>,
) -> Result<Seeded, StoreError> {
    if !peers.contains_key(&id) {
        return Err(bad(format!(
            "id: master {id} is not among the peers {:?}",
            peers.keys()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(bad(format!(
                    "data_dir: {} is not empty; restore only into a new, empty directory (move \
                     the old one away first)",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| bad(format!("data_dir: cannot create {}: {e}", dir.display())))?;
        }
        Err(e) => return Err(bad(format!("data_dir: cannot read {}: {e}", dir.display()))),
    }
    let header = &backup.header;
    let index = header
        .last_log_id
        .index
        .checked_add(RESTORE_INDEX_GAP)
        .ok_or_else(|| bad("the backup's log index is too large to restore past"))?;
    let last_log_id = LogId::new(header.last_log_id.leader_id, index);
    let mut state = backup.state.clone();
    let restored = state.prepare_restore(index, header.created_at_ms);
    let data = tokio::task::spawn_blocking(move || encode_image(&state))
        .await
        .map_err(|e| bad(format!("encoding task failed: {e}")))??;
    let members: BTreeMap<NodeId, BasicNode> = peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(last_log_id),
        last_membership: StoredMembershipOf::<TypeConfig>::new(Some(last_log_id), Membership::from(members)),
    };
    // Above every term in the backup: the new cluster's leaders never reuse one.
    let vote_term = header.term.max(last_log_id.leader_id.term) + 1;
    let (mut log, mut sm) = crate::log_store::open(dir)?;
    sm.install_snapshot(&meta, data)
        .await
        .map_err(|e| bad(format!("cannot install the snapshot in {}: {e}", dir.display())))?;
    log.save_committed(Some(last_log_id))
        .await
        .map_err(|e| bad(format!("cannot save the committed id in {}: {e}", dir.display())))?;
    // Flushes the committed id with it.
    log.save_vote(&Vote::new(vote_term, id))
        .await
        .map_err(|e| bad(format!("cannot save the vote in {}: {e}", dir.display())))?;
    Ok(Seeded {
        last_log_id,
        vote_term,
        restored,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderIdExt;
    use taurus_core::Command;
    use taurus_core::TaskSpec;
    use taurus_core::command::SubmitRequest;

    use super::*;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            openraft::alias::LeaderIdOf::<TypeConfig>::new_committed(term, node),
            index,
        )
    }

    fn state() -> State {
        let mut st = State::new();
        st.apply(
            1,
            Command::SubmitTasks {
                requests: vec![SubmitRequest {
                    request_id: "r1".into(),
                    queue_limit: None,
                    submitted_by: String::new(),
                    tasks: (0..50)
                        .map(|i| TaskSpec {
                            id: format!("t-{i}"),
                            command: vec!["true".into()],
                            max_attempts: 1,
                            ..TaskSpec::default()
                        })
                        .collect(),
                }],
                now_ms: 1_700_000_000_000,
            },
        );
        st
    }

    fn file(b: &EncodedBackup, chunk: usize) -> Vec<u8> {
        b.chunks(chunk).flatten().copied().collect()
    }

    fn encoded() -> EncodedBackup {
        let members = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        encode_backup(&state(), log_id(3, 1, 41), 4, members, 1, 1_700_000_000_123).unwrap()
    }

    #[test]
    fn round_trips_in_any_chunking() {
        let b = encoded();
        let whole = file(&b, usize::MAX);
        assert_eq!(whole.len() as u64, b.len());
        assert_eq!(file(&b, 7), whole);
        let v = verify_stream(&whole[..]).unwrap();
        assert_eq!((v.bytes, &v.sha256), (b.len(), &b.sha256()));
        assert_eq!(v.header, b.header);
        assert_eq!(v.header.counts.tasks, 50);
        assert_eq!(v.header.counts.tasks_by_state.get("pending"), Some(&50));
        let back = decode_backup(&whole).unwrap();
        assert_eq!(back.state.len(), 50);
        assert_eq!(back.header.last_log_id.index, 41);
        assert_eq!(
            codec::encode(&back.state.image()).unwrap(),
            codec::encode(&state().image()).unwrap()
        );
    }

    #[test]
    fn any_damage_is_refused() {
        let whole = file(&encoded(), usize::MAX);
        for at in [0, 9, 20, whole.len() / 2, whole.len() - 1] {
            let mut bad = whole.clone();
            bad[at] ^= 0x01;
            let err = decode_backup(&bad).unwrap_err().to_string();
            assert!(err.starts_with("backup: "), "byte {at}: {err}");
        }
        for cut in [0, 5, 12, whole.len() / 2, whole.len() - 1] {
            let err = decode_backup(&whole[..cut]).unwrap_err().to_string();
            assert!(
                err.contains("ends inside") || err.contains("magic"),
                "cut at {cut}: {err}"
            );
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(
            decode_backup(&longer)
                .unwrap_err()
                .to_string()
                .contains("after the checksum")
        );
    }
}
