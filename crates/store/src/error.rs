//! Errors of the store crate.
//!
//! ```text
//! StoreError
//!  ├─ Open                  the sled database in the data dir cannot be opened (I/O, lock, not a dir)
//!  ├─ Damaged               start-up found the data dir damaged (sled corruption or panic, a
//!  │                        failed invariant, a bad snapshot, a lost tail): names the path and
//!  │                        the recovery procedure; the master refuses to start
//!  ├─ Sled                  a sled operation failed (I/O, or sled's own corruption report)
//!  ├─ Encode / Decode       MessagePack (de)serialization of a value
//!  ├─ Corrupt               a stored value is not what this build wrote (names dir, tree and key)
//!  ├─ Schema                the data dir was written by an incompatible version
//!  ├─ Snapshot              a snapshot is malformed or cannot be installed
//!  ├─ Backup                a backup file is malformed, damaged or cannot be restored here
//!  └─ Core                  the core crate refused data (e.g. an inconsistent snapshot image)
//! ```
//! `Corrupt`, `Decode` and `Snapshot` found while *opening* a data dir become `Damaged`
//! ([`crate::verify`]); later, at run time, they reach openraft as they are.
//!
//! openraft's storage traits speak `std::io::Error`; `From<StoreError> for io::Error` keeps the
//! whole message and picks an `ErrorKind` (`InvalidData` for anything found on disk or received
//! that does not decode).

use std::path::PathBuf;

/// What an operator does with a damaged data dir (part of [`StoreError::Damaged`]'s message).
///
/// Re-using the node id with an emptied or repaired directory is unsafe: the master may have
/// lost a vote it cast or log entries it acknowledged, and under its old id it could vote twice
/// in a term or help a leader without those entries win (docs/decisions.md §5 and §13).
pub const RECOVERY: &str = "Do not restart this master under its old id. To recover: \
     (1) on a live master run `taurus cluster remove-master --id <this master's id>`; \
     (2) delete this master's data directory; \
     (3) start this master under a NEW id; \
     (4) on a live master run `taurus cluster add-master --id <new id> --addr <this master's address>` \
     (see docs/decisions.md §13)";

/// The one error enum of this crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the sled database in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// The data dir failed the start-up verification ([`crate::verify`]); `path` is the damaged
    /// file (or the directory, when sled cannot say which of its files is at fault).
    #[error("the data directory {} is damaged: {}: {detail}. {RECOVERY}", dir.display(), path.display())]
    Damaged {
        dir: PathBuf,
        path: PathBuf,
        detail: String,
    },

    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    #[error("cannot encode value: {0}")]
    Encode(#[source] rmp_serde::encode::Error),

    #[error("cannot decode value: {0}")]
    Decode(#[source] rmp_serde::decode::Error),

    /// A stored value is not what this build writes there.
    #[error("corrupt data in {dir} (tree {tree:?}, key {key}): {reason}")]
    Corrupt {
        dir: PathBuf,
        tree: &'static str,
        key: String,
        reason: String,
    },

    /// The data dir was written by a build with another on-disk schema (or is not ours at all).
    #[error(
        "unsupported on-disk data in {dir}: {found} (this build reads schema version {expected}); \
         use a matching taurus build or migrate the data dir"
    )]
    Schema {
        dir: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("snapshot: {0}")]
    Snapshot(String),

    /// A backup file (`taurus cluster snapshot save`) is malformed or damaged, or cannot be
    /// restored where asked (`crate::backup`).
    #[error("backup: {0}")]
    Backup(String),

    /// Making writes durable failed, or the flusher could not run.
    #[error("{what} in {dir}: {source}")]
    Durability {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state machine: {0}")]
    Core(#[from] taurus_core::CoreError),
}

impl StoreError {
    /// A [`StoreError::Damaged`] for `file` (relative to `dir`; empty = the directory itself).
    pub(crate) fn damaged(dir: &std::path::Path, file: &str, detail: impl std::fmt::Display) -> Self {
        StoreError::Damaged {
            dir: dir.to_path_buf(),
            path: if file.is_empty() {
                dir.to_path_buf()
            } else {
                dir.join(file)
            },
            detail: detail.to_string(),
        }
    }

    /// A [`StoreError::Corrupt`] for `key` of `tree` in `dir`.
    pub(crate) fn corrupt(
        dir: &std::path::Path,
        tree: &'static str,
        key: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        StoreError::Corrupt {
            dir: dir.to_path_buf(),
            tree,
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        use std::io::ErrorKind;
        let kind = match &e {
            StoreError::Decode(_)
            | StoreError::Corrupt { .. }
            | StoreError::Damaged { .. }
            | StoreError::Snapshot(_)
            | StoreError::Backup(_)
            | StoreError::Core(_) => ErrorKind::InvalidData,
            StoreError::Schema { .. } => ErrorKind::Unsupported,
            StoreError::Sled(sled::Error::Io(io)) => io.kind(),
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_keeps_the_message() {
        let e = StoreError::corrupt(
            std::path::Path::new("/data/m1"),
            "raft_log",
            "index 7",
            "bad bytes",
        );
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
        let msg = io.to_string();
        assert!(
            msg.contains("/data/m1") && msg.contains("raft_log") && msg.contains("index 7"),
            "{msg}"
        );
    }

    #[test]
    fn damaged_names_the_path_and_the_recovery() {
        let e = StoreError::damaged(
            std::path::Path::new("/data/m1"),
            "snapshot.bin",
            "checksum mismatch",
        );
        let msg = e.to_string();
        for part in [
            "/data/m1/snapshot.bin",
            "checksum mismatch",
            "remove-master",
            "add-master",
            "NEW id",
            "delete",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
        let whole_dir = StoreError::damaged(std::path::Path::new("/data/m1"), "", "sled: corrupt");
        assert!(
            whole_dir.to_string().contains("/data/m1: sled: corrupt"),
            "{whole_dir}"
        );
    }
}
