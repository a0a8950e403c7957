//! Retry back-off. Being written.
