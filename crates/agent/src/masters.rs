//! The masters as the agent sees them: one lazily-connected channel each, a shared notion of
//! which one is current, one-attempt calls with a timeout, and back-off with jitter.
//!
//! Every master serves the agent API (followers forward to the leader), so the agent sticks to
//! the master that last answered and moves to the next one when a call fails. Retrying is up to
//! the caller: registration retries forever, heartbeats once per period, reports until
//! acknowledged.

use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

use crate::error::AgentError;

/// The channel of every agent RPC: a master's channel plus the join token.
pub(crate) type AgentChannel = tonic::service::interceptor::InterceptedService<Channel, JoinToken>;

/// Adds the join token to each request.
#[derive(Clone, Default)]
pub(crate) struct JoinToken(Option<tonic::metadata::AsciiMetadataValue>);

impl JoinToken {
    /// The `authorization` value for `token` (none when absent or blank); an error when the
    /// token cannot be a header value (never echoed: it is a secret).
    fn new(token: Option<&str>) -> Result<Self, AgentError> {
        let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self(None));
        };
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| AgentError::Config("token: not a valid token (printable ASCII only)".into()))?;
        Ok(Self(Some(value)))
    }
}

impl tonic::service::Interceptor for JoinToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Largest message the agent accepts: an assignment batch carries whole task specs (each up to
/// 64 KiB of command and 64 KiB of environment), so tonic's 4 MiB default is too small.
const MAX_DECODING_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

pub(crate) struct Masters {
    list: Vec<Master>,
    /// Index of the master calls go to: the last one that answered.
    current: AtomicUsize,
    rpc_timeout: Duration,
    /// `authorization: Bearer <join token>`, sent on every call.
    token: JoinToken,
}

struct Master {
    uri: String,
    channel: Channel,
}

/// A call that got no usable answer.
#[derive(Clone, Debug)]
pub(crate) struct RpcError {
    pub master: String,
    /// `None` when the call timed out.
    pub code: Option<Code>,
    pub message: String,
}

impl RpcError {
    fn from_status(master: &str, status: &Status) -> Self {
        Self {
            master: master.to_string(),
            code: Some(status.code()),
            message: status.message().split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// Whether the master rejected the request itself (retrying the same request anywhere will
    /// not help): `INVALID_ARGUMENT`. Everything else — unavailable, no leader, timeouts,
    /// transport failures, and codes a master being upgraded may not know — is worth retrying.
    pub fn is_rejection(&self) -> bool {
        self.code == Some(Code::InvalidArgument)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}: {:?}: {}", self.master, code, self.message),
            None => write!(f, "{}: {}", self.master, self.message),
        }
    }
}

impl Masters {
    /// Channels to `uris` (normalised `http://host:port`, or `https://host:port` with `tls`:
    /// then each master's certificate must name the host dialled), connected on first use. The
    /// first master is picked at random, so that agents spread over the masters. Needs a Tokio
    /// runtime.
    pub fn new(
        uris: &[String],
        tls: Option<&ClientTlsConfig>,
        token: Option<&str>,
        connect_timeout: Duration,
        rpc_timeout: Duration,
    ) -> Result<Self, AgentError> {
        if uris.is_empty() {
            return Err(AgentError::Config(
                "masters: at least one master address is needed".into(),
            ));
        }
        let mut list = Vec::with_capacity(uris.len());
        for uri in uris {
            let endpoint = taurus_protocol::tls::endpoint(uri, tls)
                .map_err(|e| AgentError::Config(format!("masters: {e}")))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            list.push(Master {
                uri: uri.clone(),
                channel: endpoint.connect_lazy(),
            });
        }
        let start = rand::rng().random_range(0..list.len());
        Ok(Self {
            list,
            current: AtomicUsize::new(start),
            rpc_timeout,
            token: JoinToken::new(token)?,
        })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    /// The master calls go to now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.list.len()
    }

    pub fn uri(&self, idx: usize) -> &str {
        &self.list[idx % self.list.len()].uri
    }

    /// A client on master `idx`, sending the join token (if any) on every call.
    pub fn client(&self, idx: usize) -> AgentServiceClient<AgentChannel> {
        AgentServiceClient::with_interceptor(
            self.list[idx % self.list.len()].channel.clone(),
            self.token.clone(),
        )
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
    }

    /// Moves past master `idx` after it failed. Leaves the current master alone when another
    /// caller already moved on.
    pub fn rotate(&self, idx: usize) {
        let next = (idx + 1) % self.list.len();
        let _ = self
            .current
            .compare_exchange(idx, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One attempt on the current master, bounded by the RPC timeout. A failure moves the
    /// agent to the next master.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RpcError>
    where
        F: FnOnce(AgentServiceClient<AgentChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let idx = self.current();
        let result = match tokio::time::timeout(self.rpc_timeout, f(self.client(idx))).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => RpcError::from_status(self.uri(idx), &status),
            Err(_) => RpcError {
                master: self.uri(idx).to_string(),
                code: None,
                message: format!("no answer within {} ms", self.rpc_timeout.as_millis()),
            },
        };
        tracing::debug!(op, error = %result, "call failed; moving to the next master");
        self.rotate(idx);
        Err(result)
    }
}

/// Back-off before retry number `retry` (0-based): uniformly random up to a ceiling that starts
/// at `min` and doubles up to `max` (full jitter, so that agents do not retry in lockstep).
pub(crate) fn backoff(retry: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min.saturating_mul(1u32 << retry.min(20)).min(max).max(min);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_a_doubling_capped_ceiling() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(100));
        for retry in [0u32, 1, 2, 3, 4, 10, u32::MAX] {
            let ceiling = (min * 2u32.pow(retry.min(20))).min(max);
            for _ in 0..100 {
                assert!(backoff(retry, min, max) <= ceiling, "retry {retry}");
            }
        }
    }

    #[tokio::test]
    async fn masters_rotate_on_failure_and_start_anywhere() {
        let uris: Vec<String> = (1..=3).map(|p| format!("http://127.0.0.1:{p}")).collect();
        let m = Masters::new(
            &uris,
            None,
            None,
            Duration::from_millis(100),
            Duration::from_millis(200),
        )
        .expect("valid");
        let first = m.current();
        m.rotate(first);
        assert_eq!(m.current(), (first + 1) % 3);
        m.rotate(first); // someone else already moved on: no change
        assert_eq!(m.current(), (first + 1) % 3);
        assert!(Masters::new(&[], None, None, Duration::from_secs(1), Duration::from_secs(1)).is_err());
        assert!(
            Masters::new(
                &uris,
                None,
                Some("bad\ntoken"),
                Duration::from_secs(1),
                Duration::from_secs(1)
            )
            .is_err(),
            "a token that cannot be a header is a configuration error"
        );
    }
}
