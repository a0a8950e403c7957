//! Taurus client library: the one way Rust code (the `taurus` CLI included) talks to a cluster.
//!
//! A [`Client`] knows every master and keeps one lazily-connected gRPC channel per master. Each
//! call goes to the current master; when that master is unreachable, answers `UNAVAILABLE` or
//! does not answer within the per-attempt timeout, the call moves on to the next master and is
//! retried with exponential back-off and full jitter until the call's deadline. Errors that
//! retrying cannot fix (`INVALID_ARGUMENT`, `NOT_FOUND`, ...) come back at once as
//! [`ClientError::Rejected`]. A successful answer makes its master the current one, so a client
//! sticks to a master that works. Submissions are safe to retry: [`Client::submit`] gives every
//! task without an id a UUIDv7 and the request a random `request_id` before the first attempt,
//! and the server answers a resubmitted id with the existing task, so a retry never creates a
//! second task; because the retry carries the key of the attempt that created the tasks, it is
//! still told `created: true` for them. Watches resume on another master when their stream
//! breaks, and never report the same change twice.
//!
//! A `Client` must be created inside a Tokio runtime (its channels spawn their workers there).

mod address;
mod client;
mod coalesce;
mod error;
mod retry;
mod watch;

pub use address::normalize_address;
pub use address::normalize_address_for;
pub use client::Client;
pub use client::DEFAULT_ATTEMPT_TIMEOUT;
pub use client::DEFAULT_DEADLINE;
pub use client::TOKEN_ENV;
pub use client::fill_missing_ids;
pub use client::new_request_id;
pub use client::prepare_request;
pub use error::ClientError;
pub use retry::backoff_ceiling;
pub use retry::is_retryable;
pub use taurus_core::TaskState;
/// The generated `taurus.v1` message types the client takes and returns.
pub use taurus_protocol::v1;
