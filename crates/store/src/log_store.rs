//! Sled-backed Raft log.

/// The Raft log store.
#[derive(Clone)]
pub struct LogStore;
