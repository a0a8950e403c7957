//! The leader's agent-liveness tracker (in memory, never replicated). Being written.
