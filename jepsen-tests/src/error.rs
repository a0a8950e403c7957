//! Errors of the jepsen crate.
//!
//! ```text
//! Error
//!  ├─ Parse     a line of a history or execution log is not what the format says
//!  ├─ Pairing   the events of a history do not pair up into operations (see history::History::ops)
//!  ├─ Encode    an event could not be serialised (should not happen for well-formed values)
//!  └─ Net       a test host (network namespace, bridge, iptables rule) could not be set up
//! ```
//! Every variant that comes from input names its source and line number, so a broken run can be
//! fixed by looking at one line. Anomalies found by checkers are *not* errors: they are data,
//! reported in a [`crate::checker::Verdict`].

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line could not be decoded.
    #[error("{source_name}:{line}: {message}")]
    Parse {
        /// What was being parsed (`history`, an execution-log file name, ...).
        source_name: String,
        /// 1-based line number.
        line: usize,
        message: String,
    },
    /// Events are individually valid but do not pair into operations.
    #[error("history:{line}: {message}")]
    Pairing {
        /// 1-based line number of the offending event.
        line: usize,
        message: String,
    },
    /// Serialising an event failed.
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// Setting up or changing the test hosts' network failed (the message names the command).
    #[error("test network: {0}")]
    Net(String),
}

impl Error {
    pub(crate) fn parse(source_name: &str, line: usize, message: impl Into<String>) -> Self {
        Self::Parse {
            source_name: source_name.to_string(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn pairing(line: usize, message: impl Into<String>) -> Self {
        Self::Pairing {
            line,
            message: message.into(),
        }
    }
}
