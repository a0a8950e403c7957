//! Taurus core: the domain types, the replicated commands, and the state machine's apply logic.
//!
//! This crate is the deterministic heart of Taurus. It does no I/O, reads no clock and spawns
//! nothing: [`state::State::apply`] is a pure function of (state, log index, command), with time
//! passed in inside the command. Everything that touches disks, sockets or timers lives in the
//! `store` and `master` crates, which feed this one. That is what lets every master, replaying the
//! same Raft log, arrive at byte-for-byte the same state, and what lets us unit-test the
//! scheduler's rules without starting anything.

pub mod acl;
pub mod command;
pub mod error;
pub mod liveness;
pub mod monitor;
pub mod retry;
pub mod schedule;
pub mod state;
pub mod types;
pub mod validate;

pub use command::Command;
pub use command::Response;
pub use error::CoreError;
pub use error::Rejection;
pub use state::State;
pub use types::Task;
pub use types::TaskSpec;
pub use types::TaskState;
