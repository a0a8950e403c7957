//! The state machine.

/// The state machine store.
#[derive(Clone)]
pub struct StateMachineStore;
