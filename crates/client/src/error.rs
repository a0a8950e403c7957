//! The one error type of the client library.

use std::time::Duration;

use tonic::Code;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// `Client::new` was given no address.
    #[error("no master address given")]
    NoMasters,
    /// A master address could not be used.
    #[error("invalid master address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
    /// The TLS files could not be used (the message names the file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The bearer token cannot be sent (not printable ASCII).
    #[error("token: {0}")]
    InvalidToken(String),
    /// A master answered with an error that retrying cannot fix.
    #[error("{op}: {}", describe(*code, message))]
    Rejected {
        op: &'static str,
        master: String,
        code: Code,
        message: String,
    },
    /// No master gave a usable answer before the deadline. `code` is the last gRPC status code
    /// seen (`None` when the last attempt timed out).
    #[error("{op}: no master could serve the request ({attempts} attempts in {}); last error from {master}: {last}", secs(*deadline))]
    Unavailable {
        op: &'static str,
        deadline: Duration,
        attempts: u32,
        master: String,
        code: Option<Code>,
        last: String,
    },
    /// A master answered with something the protocol does not allow.
    #[error("{op}: invalid response from the server: {message}")]
    InvalidResponse { op: &'static str, message: String },
}

impl ClientError {
    /// The gRPC status code behind this error, when there is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rejected { code, .. } => Some(*code),
            Self::Unavailable { code, .. } => *code,
            _ => None,
        }
    }

    /// True when the server said the task (or member) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    pub(crate) fn invalid_response(op: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidResponse {
            op,
            message: message.into(),
        }
    }
}

/// A lower-case name for a gRPC code, as in the gRPC spec (`not found`, `invalid argument`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `code: message` on one line.
pub(crate) fn describe(code: Code, message: &str) -> String {
    let message = one_line(message);
    if message.is_empty() {
        code_name(code).to_string()
    } else {
        format!("{}: {message}", code_name(code))
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_on_one_line_with_code_and_message() {
        let e = ClientError::Rejected {
            op: "get task",
            master: "http://a:1".into(),
            code: Code::NotFound,
            message: "task \"x\"\nnot found".into(),
        };
        assert_eq!(e.to_string(), "get task: not found: task \"x\" not found");
        assert!(e.is_not_found());
        let e = ClientError::Unavailable {
            op: "submit",
            deadline: Duration::from_secs(1),
            attempts: 3,
            master: "http://a:1".into(),
            code: Some(Code::Unavailable),
            last: "unavailable: tcp connect error".into(),
        };
        assert_eq!(
            e.to_string(),
            "submit: no master could serve the request (3 attempts in 1.0s); last error from http://a:1: \
             unavailable: tcp connect error"
        );
        assert_eq!(e.code(), Some(Code::Unavailable));
    }
}
