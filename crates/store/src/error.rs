//! Errors of the store crate.
//!
//! ```text
//! StoreError
//!  ├─ Open / OpenPanicked   the sled database in the data dir cannot be opened
//!  ├─ Sled                  a sled operation failed (I/O, or sled's own corruption report)
//!  ├─ Encode / Decode       MessagePack (de)serialization of a value
//!  ├─ Corrupt               a stored value is not what this build wrote (names dir, tree and key)
//!  ├─ Schema                the data dir was written by an incompatible version
//!  ├─ Snapshot              a snapshot is malformed or cannot be installed
//!  └─ Core                  the core crate refused data (e.g. an inconsistent snapshot image)
//! ```
//! openraft's storage traits speak `std::io::Error`; `From<StoreError> for io::Error` keeps the
//! whole message and picks an `ErrorKind` (`InvalidData` for anything found on disk or received
//! that does not decode).

use std::path::PathBuf;

/// The one error enum of this crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the sled database in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// sled panicked while recovering the data dir (it does so on some kinds of damage).
    #[error(
        "cannot open the sled database in {dir}: sled panicked while recovering it ({message}); \
         the directory is damaged: move it away and re-add this master under a NEW node id"
    )]
    OpenPanicked { dir: PathBuf, message: String },

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
            | StoreError::Snapshot(_)
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
}
