//! Retry policy: which failures are worth another master, and how long to wait before it.

use std::time::Duration;

use rand::Rng;
use tonic::Code;
use tonic::Status;

/// First back-off ceiling.
pub const BACKOFF_START: Duration = Duration::from_millis(25);
/// Largest back-off ceiling.
pub const BACKOFF_CAP: Duration = Duration::from_millis(250);

/// The ceiling of the back-off before retry number `retry` (0-based): 25 ms doubling up to 250 ms
/// (an election takes about half a second; a longer ceiling only overshoots it).
pub fn backoff_ceiling(retry: u32) -> Duration {
    let factor = 1u32 << retry.min(16);
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_CAP)
}

/// A back-off with full jitter: uniformly random between zero and [`backoff_ceiling`].
pub fn jittered_backoff(retry: u32) -> Duration {
    let ceiling = backoff_ceiling(retry);
    let nanos = rand::rng().random_range(0..=ceiling.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

/// Whether a failed call may succeed on another master (or later): `UNAVAILABLE`, and transport
/// failures such as a refused or reset connection, which tonic may report as `UNKNOWN` with the
/// transport error as source. Everything the server decided (`INVALID_ARGUMENT`, `NOT_FOUND`,
/// `FAILED_PRECONDITION`, ...) is final.
pub fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => caused_by_transport(status),
        _ => false,
    }
}

fn caused_by_transport(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    // A stream cut by a dying server arrives as an h2 error whose type tonic does not expose.
    let m = status.message();
    status.code() == Code::Unknown
        && [
            "transport error",
            "connection reset",
            "broken pipe",
            "connection refused",
            "h2 protocol error",
        ]
        .iter()
        .any(|needle| m.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_25ms_and_stops_at_250ms() {
        assert_eq!(backoff_ceiling(0), Duration::from_millis(25));
        assert_eq!(backoff_ceiling(1), Duration::from_millis(50));
        assert_eq!(backoff_ceiling(3), Duration::from_millis(200));
        assert_eq!(backoff_ceiling(4), BACKOFF_CAP);
        assert_eq!(backoff_ceiling(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn jittered_backoff_stays_within_its_ceiling() {
        for retry in 0..40 {
            for _ in 0..50 {
                assert!(jittered_backoff(retry) <= backoff_ceiling(retry));
            }
        }
    }

    #[test]
    fn unavailable_and_transport_failures_are_retried() {
        assert!(is_retryable(&Status::unavailable("no leader")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let status = Status::from_error(Box::new(io));
        assert_eq!(status.code(), Code::Unknown);
        assert!(is_retryable(&status));
        assert!(is_retryable(&Status::unknown("transport error")));
    }

    #[test]
    fn server_decisions_are_not_retried() {
        for s in [
            Status::invalid_argument("bad"),
            Status::not_found("no such task"),
            Status::failed_precondition("nope"),
            Status::already_exists("x"),
            Status::permission_denied("x"),
            Status::unknown("something odd"),
            Status::internal("bug"),
            Status::deadline_exceeded("slow"),
        ] {
            assert!(!is_retryable(&s), "{s:?}");
        }
    }
}
