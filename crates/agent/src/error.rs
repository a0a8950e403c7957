//! The one error type of the agent crate.
//!
//! Most failures an agent meets are not errors of [`run`](crate::run): an unreachable master is
//! retried, a task that cannot start is reported as `failed`, a report that is not acknowledged
//! is sent again. What is left is what the agent cannot work around by itself:
//!
//! ```text
//! AgentError
//! ├── Config        bad configuration (names the key); fix the file or flags
//! ├── Io            the work directory cannot be created or used
//! └── Rejected      a master refused the registration for good (INVALID_ARGUMENT)
//! ```

use tonic::Code;

/// Everything the agent can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is not usable; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// A file-system operation the agent cannot run without failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A master refused a call in a way retrying cannot fix.
    #[error("{op} rejected by {master}: {code:?}: {message}")]
    Rejected {
        op: &'static str,
        master: String,
        code: Code,
        message: String,
    },
}

impl AgentError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether trying again later (same configuration) may succeed: only I/O failures may be
    /// transient (a full disk, a directory being remounted). A bad configuration stays bad, and a
    /// master that rejected the registration will reject it again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Config(_) => false,
            Self::Rejected { .. } => false,
        }
    }
}
