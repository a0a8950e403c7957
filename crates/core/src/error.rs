//! Errors of the core crate.
//!
//! ```text
//! CoreError
//!  └─ Rejected(Rejection)   a command or spec the state machine refuses, deterministically
//! ```
//! A [`Rejection`] is data, not a failure of the node: every replica rejects the same command the
//! same way, so it travels inside [`crate::command::Response`] and becomes a gRPC status only at
//! the service boundary.

use serde::Deserialize;
use serde::Serialize;

/// Why a rejection happened; maps to one gRPC code at the service boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectKind {
    /// The input is malformed or refers to something that does not exist (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The named task or agent does not exist (`NOT_FOUND`).
    NotFound,
    /// The state does not allow it right now (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// A configured bound is reached, e.g. the queue is full (`RESOURCE_EXHAUSTED`); the same
    /// input may succeed later.
    ResourceExhausted,
    /// The caller is known but may not do this (`PERMISSION_DENIED`), e.g. a `submit` token
    /// cancelling a task somebody else submitted.
    PermissionDenied,
}

/// A deterministic refusal, naming the offending field (e.g. `tasks[2].depends_on[0]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Rejection {
    pub kind: RejectKind,
    pub field: String,
    pub message: String,
}

impl Rejection {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::InvalidArgument,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::NotFound,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn failed_precondition(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::FailedPrecondition,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn resource_exhausted(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::ResourceExhausted,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn permission_denied(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::PermissionDenied,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same rejection with its field prefixed, e.g. `command` -> `tasks[3].command`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// The one error enum of this crate.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(String),
}
