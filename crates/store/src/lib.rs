//! Taurus Raft storage and transport: the openraft type configuration, the sled-backed log store
//! and state machine, and the Raft network over tonic.
//!
//! One sled database per master holds everything durable: the Raft log (big-endian index keys),
//! the vote, the committed log id, the latest state-machine snapshot, and a schema version key.
//! The state machine itself ([`taurus_core::State`]) lives in memory and is rebuilt on start from
//! the latest snapshot plus the committed log tail, which openraft re-applies (the "transient
//! state machine, durable snapshot, saved committed index" model; see `docs/decisions.md`).
//! Nothing here knows about tasks beyond handing commands to `taurus_core::State::apply`.

pub mod backup;
pub mod codec;
pub mod error;
pub mod flusher;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod verify;
pub mod watermark;

pub use error::StoreError;
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

/// A master's id in the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Types openraft is instantiated with: our commands in, our responses out.
    pub TypeConfig:
        D = taurus_core::Command,
        R = taurus_core::Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// The Raft node type used throughout Taurus.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
