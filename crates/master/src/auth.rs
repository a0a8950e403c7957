//! Who is calling, and what they may do: principals, resolved per request at the service
//! boundary, and the per-token submission rate limit.
//!
//! Credentials, in this order:
//! 1. a bearer token (`authorization: Bearer <secret>`): looked up by its SHA-256 in the
//!    replicated token table; an agent token makes an [`Principal::Agent`], any other a
//!    [`Principal::User`]. Checked first so that a request a follower forwards (over the
//!    follower's master certificate) with the caller's token copied is judged as the caller.
//! 2. a peer certificate (TLS only), subject `CN=<name>, OU=<role>`: `OU=master` makes a
//!    [`Principal::Master`] (fully trusted: masters forward requests for others), `OU=agent` an
//!    [`Principal::Agent`] named by the CN. A `client` certificate alone grants nothing.
//!
//! With authentication disabled (`[auth] enabled = false`, the default for loopback) every
//! caller is [`Principal::Anonymous`], allowed everything, as before authentication existed.
//!
//! Nothing here builds a `tonic::Status`: [`AuthError`] becomes one in `service`.

use std::collections::HashMap;
use std::hash::Hash;
use std::hash::Hasher;
use std::sync::Mutex;
use std::time::Instant;

use sha2::Digest;
use sha2::Sha256;
use taurus_core::State;
use taurus_core::acl::Role;
use taurus_core::acl::Token;
use taurus_protocol::identity::CertIdentity;
use taurus_protocol::identity::CertRole;

/// Prefix of every secret, so a leaked one is recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "tau_";
/// The principal name recorded when authentication is disabled.
pub const ANONYMOUS: &str = "anonymous";

/// A caller, as the masters see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Another master (certificate `OU=master`); the name is its certificate's CN.
    Master(String),
    /// An agent: certificate `OU=agent` (no token id) or an agent-role join token.
    Agent { name: String, token_id: Option<String> },
    /// A token holder.
    User {
        token_id: String,
        name: String,
        role: Role,
    },
    /// Authentication is disabled: an admin.
    Anonymous,
}

/// Why a request may not proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing, unknown, expired or revoked credentials (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// A known principal without the needed role (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// The token's submission rate is exceeded (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    RateLimited(String),
}

impl Principal {
    /// The name recorded in audit fields (`submitted_by`, `cancelled_by`, `created_by`).
    pub fn name(&self) -> &str {
        match self {
            Principal::Master(n) => n,
            Principal::Agent { name, .. } => name,
            Principal::User { name, .. } => name,
            Principal::Anonymous => ANONYMOUS,
        }
    }

    /// The token the principal authenticated with, if any.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Principal::Agent { token_id, .. } => token_id.as_deref(),
            Principal::User { token_id, .. } => Some(token_id),
            Principal::Master(_) | Principal::Anonymous => None,
        }
    }

    /// A short description for error messages: `token acl-3 ("ci", role submit)`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Master(n) => format!("master {n:?}"),
            Principal::Agent {
                name,
                token_id: Some(t),
            } => format!("agent {name:?} (token {t})"),
            Principal::Agent { name, token_id: None } => format!("agent {name:?} (certificate)"),
            Principal::User { token_id, name, role } => {
                format!("token {token_id} ({name:?}, role {role})")
            }
            Principal::Anonymous => ANONYMOUS.to_string(),
        }
    }

    /// The role the principal holds: masters and anonymous callers count as admin.
    pub fn role(&self) -> Role {
        match self {
            Principal::Master(_) | Principal::Anonymous => Role::Admin,
            Principal::Agent { .. } => Role::Agent,
            Principal::User { role, .. } => *role,
        }
    }

    /// Requires a user role (`read`, `submit`, `operator` or `admin`) for `what`.
    pub fn require(&self, need: Role, what: &str) -> Result<(), AuthError> {
        if self.role().grants(need) {
            return Ok(());
        }
        Err(AuthError::PermissionDenied(format!(
            "{what} needs the {need} role; {} has {}",
            self.describe(),
            self.role()
        )))
    }

    /// Requires the right to act as agent `agent_id`: that agent itself, a master (which
    /// checked the agent before forwarding), or an admin.
    pub fn require_agent(&self, agent_id: &str, what: &str) -> Result<(), AuthError> {
        match self {
            Principal::Agent { name, .. } if name == agent_id => Ok(()),
            Principal::Agent { name, .. } => Err(AuthError::PermissionDenied(format!(
                "{what}: {} may act only as agent {name:?}, not {agent_id:?}",
                self.describe()
            ))),
            Principal::Master(_) | Principal::Anonymous => Ok(()),
            Principal::User { role, .. } if *role == Role::Admin => Ok(()),
            Principal::User { .. } => Err(AuthError::PermissionDenied(format!(
                "{what} needs agent {agent_id:?}'s certificate or join token (or the admin role); {} has {}",
                self.describe(),
                self.role()
            ))),
        }
    }

    /// Whether the principal may cancel tasks others submitted (operator and above).
    pub fn may_cancel_any(&self) -> bool {
        self.role().grants(Role::Operator)
    }
}

/// SHA-256 of a secret, lower-case hex: what the token table stores and is searched by.
/// Plain SHA-256 is right for these secrets: they are 256 random bits, not passwords, so
/// there is no dictionary to defend against and every request costs one fast hash.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A fresh secret: [`SECRET_PREFIX`] and 32 bytes from the OS-seeded CSPRNG, in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The credentials one request carries.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The bearer secret, if an `authorization` header was sent.
    pub bearer: Option<String>,
    /// The identity of the peer certificate, if the connection is TLS with one.
    pub cert: Option<CertIdentity>,
}

/// Reads a bearer secret from an `authorization` header value.
pub fn parse_bearer(value: &str) -> Result<String, AuthError> {
    let secret = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            AuthError::Unauthenticated("authorization: expected `Bearer <token secret>`".to_string())
        })?;
    Ok(secret.to_string())
}

/// Resolves principals and enforces rate limits; one per master.
#[derive(Debug)]
pub struct Authenticator {
    enabled: bool,
    default_submit_rate: Option<u32>,
    limiter: RateLimiter,
}

impl Authenticator {
    pub fn new(enabled: bool, default_submit_rate: Option<u32>) -> Self {
        Self {
            enabled,
            default_submit_rate,
            limiter: RateLimiter::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who `creds` belong to, judged against `state` (this master's applied state) at
    /// `now_ms` (token expiry).
    pub fn authenticate(
        &self,
        state: &State,
        creds: &Credentials,
        now_ms: u64,
    ) -> Result<Principal, AuthError> {
        if !self.enabled {
            return Ok(Principal::Anonymous);
        }
        let not_bootstrapped = || {
            AuthError::Unauthenticated(
                "the cluster's ACL is not bootstrapped yet: run `taurus acl bootstrap` to create \
                 the first admin token, then send it (TAURUS_TOKEN)"
                    .to_string(),
            )
        };
        if let Some(secret) = &creds.bearer {
            if !state.acl().bootstrapped() {
                return Err(not_bootstrapped());
            }
            let token = state.acl().by_hash(&secret_hash(secret)).ok_or_else(|| {
                AuthError::Unauthenticated("token unknown or revoked: ask an admin for a token".to_string())
            })?;
            return principal_of(token, now_ms);
        }
        match &creds.cert {
            Some(c) if c.role == CertRole::Master => Ok(Principal::Master(c.name.clone())),
            Some(_) if !state.acl().bootstrapped() => Err(not_bootstrapped()),
            Some(c) if c.role == CertRole::Agent => Ok(Principal::Agent {
                name: c.name.clone(),
                token_id: None,
            }),
            Some(c) => Err(AuthError::Unauthenticated(format!(
                "client certificate {:?} carries no rights on its own: send a bearer token \
                 (TAURUS_TOKEN, --token)",
                c.name
            ))),
            None if !state.acl().bootstrapped() => Err(not_bootstrapped()),
            None => Err(AuthError::Unauthenticated(
                "no credentials: send a bearer token (`authorization: Bearer <secret>`; \
                 TAURUS_TOKEN or --token for the CLI)"
                    .to_string(),
            )),
        }
    }

    /// Checks that the token `principal` authenticated with still exists and has not expired in
    /// `state` (after a read barrier, so a revoke acknowledged before the request began is seen).
    pub fn recheck(&self, state: &State, principal: &Principal, now_ms: u64) -> Result<(), AuthError> {
        let Some(id) = principal.token_id() else {
            return Ok(());
        };
        match state.acl().get(id) {
            Some(token) => principal_of(token, now_ms).map(|_| ()),
            None => Err(AuthError::Unauthenticated(format!("token {id} was revoked"))),
        }
    }

    /// Takes `tasks` submissions from the principal's token bucket, or refuses naming the
    /// limit. Principals without a token (masters, certificate agents, anonymous) and tokens
    /// without a rate (no token override and no default) are not limited.
    pub fn charge_submit(&self, state: &State, principal: &Principal, tasks: u64) -> Result<(), AuthError> {
        let Some(id) = principal.token_id() else {
            return Ok(());
        };
        let rate = state
            .acl()
            .get(id)
            .and_then(|t| t.rate_per_sec)
            .or(self.default_submit_rate);
        let Some(rate) = rate else {
            return Ok(());
        };
        if self.limiter.take(id, rate, tasks, Instant::now()) {
            return Ok(());
        }
        Err(AuthError::RateLimited(format!(
            "submission rate limit of token {id}: {rate} tasks/s on this master \
             (token rate_per_sec, or [auth] default_submit_rate); retry later"
        )))
    }
}

/// The principal a token makes, unless it has expired.
fn principal_of(token: &Token, now_ms: u64) -> Result<Principal, AuthError> {
    if token.expires_at_ms.is_some_and(|at| now_ms >= at) {
        return Err(AuthError::Unauthenticated(format!(
            "token {} ({:?}) has expired: ask an admin for a new one",
            token.id, token.name
        )));
    }
    Ok(match (token.role, &token.agent) {
        (Role::Agent, Some(agent)) => Principal::Agent {
            name: agent.clone(),
            token_id: Some(token.id.clone()),
        },
        (role, _) => Principal::User {
            token_id: token.id.clone(),
            name: token.name.clone(),
            role,
        },
    })
}

/// Number of independently locked shards of the bucket table: concurrent submitters with
/// different tokens rarely contend, and no lock is held for more than a few arithmetic steps.
const SHARDS: usize = 16;

/// Token buckets, one per token id, in [`SHARDS`] independently locked maps.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// A bucket holding up to one second of the rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May go below zero: a request larger than the whole bucket is let through when the bucket
    /// is full, and the debt is paid back before anything else passes.
    level: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes `n` from the bucket of `key` refilled at `rate` per second, at time `now`; false
    /// (and nothing taken) when the bucket does not allow it.
    pub fn take(&self, key: &str, rate: u32, n: u64, now: Instant) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % self.shards.len()];
        let Ok(mut map) = shard.lock() else {
            // A poisoned shard (a panic while holding it) must not stop submissions for good.
            return true;
        };
        let cap = f64::from(rate.max(1));
        let b = map
            .entry(key.to_string())
            .or_insert(Bucket { level: cap, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.level = (b.level + elapsed * cap).min(cap);
        b.at = now;
        let n = n as f64;
        if b.level >= n || b.level >= cap {
            b.level -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_are_per_key() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert!(l.take("a", 10, 10, t0));
        assert!(!l.take("a", 10, 1, t0), "empty");
        assert!(l.take("b", 10, 10, t0), "another token has its own bucket");
        assert!(l.take("a", 10, 5, t0 + ms(500)));
        assert!(!l.take("a", 10, 1, t0 + ms(500)));
        // A full bucket lets one oversized request through, then makes it pay.
        assert!(l.take("c", 2, 50, t0));
        assert!(!l.take("c", 2, 1, t0 + ms(10_000)));
        assert!(l.take("c", 2, 1, t0 + ms(25_000)));
    }

    #[test]
    fn secrets_are_fresh_and_hash_to_64_hex() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        let h = secret_hash(&a);
        assert!(taurus_core::acl::is_sha256_hex(&h), "{h}");
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_values() {
        assert_eq!(parse_bearer("Bearer tau_x"), Ok("tau_x".to_string()));
        assert!(parse_bearer("Basic abc").is_err());
        assert!(parse_bearer("Bearer ").is_err());
    }

    #[test]
    fn roles_and_agents() {
        let user = |role| Principal::User {
            token_id: "acl-1".into(),
            name: "u".into(),
            role,
        };
        assert!(user(Role::Read).require(Role::Submit, "SubmitTasks").is_err());
        assert!(user(Role::Operator).require(Role::Submit, "SubmitTasks").is_ok());
        let agent = Principal::Agent {
            name: "w1".into(),
            token_id: None,
        };
        assert!(agent.require_agent("w1", "RegisterAgent").is_ok());
        assert!(matches!(
            agent.require_agent("w2", "RegisterAgent"),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(agent.require(Role::Read, "ListTasks").is_err());
        assert!(user(Role::Operator).require_agent("w1", "Heartbeat").is_err());
        assert!(user(Role::Admin).require_agent("w1", "Heartbeat").is_ok());
        assert!(
            Principal::Master("m2".into())
                .require_agent("w1", "Heartbeat")
                .is_ok()
        );
        assert!(!user(Role::Submit).may_cancel_any() && user(Role::Operator).may_cancel_any());
    }
}
