//! Access control in the replicated state: roles and the token table.
//!
//! A token is a bearer secret a client (or an agent, as a join token) sends on every call. The
//! state machine never sees a secret: the master that receives `CreateToken` or `AclBootstrap`
//! generates 32 random bytes, hands the secret to the caller once, and proposes only its
//! SHA-256 (lower-case hex). Plain SHA-256, without salt or stretching, is the right hash here:
//! the secrets are 256 bits of CSPRNG output, not human-chosen passwords, so there is no
//! dictionary to attack and a fast hash lets every request be checked with one lookup.
//!
//! Token ids are assigned by apply from a counter that only grows (`acl-1`, `acl-2`, ...), so a
//! revoked id is never issued again, on every replica alike.
//!
//! Expiry is not decided here (apply reads no clock): a token carries `expires_at_ms`, and the
//! master that authenticates a request compares it with its own clock.

use std::fmt;
use std::str::FromStr;

use imbl::OrdMap;
use serde::Deserialize;
use serde::Serialize;

use crate::error::Rejection;
use crate::types::UnixMillis;
use crate::validate;

/// A token id, assigned by apply.
pub type TokenId = String;

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME_LEN: usize = 128;
/// Most tokens the table holds; `CreateToken` beyond it is refused.
pub const MAX_TOKENS: usize = 100_000;

/// What a principal may do. `Read < Submit < Operator < Admin` are ordered (each includes the
/// ones below); `Agent` is separate and only allows the agent RPCs for its bound agent name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Get, list and watch tasks; cluster status; list and get agents.
    Read,
    /// Read, plus submit, and cancel the tasks this principal submitted.
    Submit,
    /// Submit, plus cancel any task, drain and undrain agents, transfer leadership.
    Operator,
    /// Everything: add and remove masters, manage tokens.
    Admin,
    /// An agent's join token: register, heartbeat, watch and report as the bound agent only.
    Agent,
}

impl Role {
    /// Every role, for help texts.
    pub const ALL: [Role; 5] = [Role::Read, Role::Submit, Role::Operator, Role::Admin, Role::Agent];

    /// Whether this role grants what `need` grants. `Agent` grants only `Agent`, and no user
    /// role grants `Agent` (an admin acts for agents through its own checks, not through this).
    pub fn grants(self, need: Role) -> bool {
        match (self, need) {
            (Role::Agent, Role::Agent) => true,
            (Role::Agent, _) | (_, Role::Agent) => false,
            (have, need) => have >= need,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: one of read, submit, operator, admin, agent"))
    }
}

/// One token of the table. Holds the SHA-256 of the secret, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: TokenId,
    /// Who or what the token is for (a person, a CI job); the principal name tasks record.
    pub name: String,
    pub role: Role,
    /// For [`Role::Agent`]: the only agent id the token may act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// SHA-256 of the secret, 64 lower-case hex characters.
    pub secret_sha256: String,
    pub created_at_ms: UnixMillis,
    /// The principal that created it (`bootstrap` for the first admin token).
    pub created_by: String,
    /// After this time the token no longer authenticates. `None`: never expires.
    #[serde(default)]
    pub expires_at_ms: Option<UnixMillis>,
    /// Submissions allowed per second (tasks), overriding the masters' default. `None`: default.
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
}

/// What `CreateToken` and `AclBootstrap` ask for; the id and creation time come from apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub agent: Option<String>,
    pub secret_sha256: String,
    pub created_by: String,
    #[serde(default)]
    pub expires_at_ms: Option<UnixMillis>,
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
}

/// The token table and the bootstrap flag. Part of [`crate::State`]; `by_hash` is derived.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    tokens: OrdMap<TokenId, Token>,
    /// Secret hash -> token id.
    by_hash: OrdMap<String, TokenId>,
    /// Set by the first `AclBootstrap`, never cleared (not even when every token is revoked).
    bootstrapped: bool,
    /// The number in the last id issued.
    last_id: u64,
}

/// What a snapshot holds of the ACL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AclImage {
    #[serde(default)]
    pub bootstrapped: bool,
    #[serde(default)]
    pub last_id: u64,
    #[serde(default)]
    pub tokens: Vec<Token>,
}

impl AclImage {
    /// True for a cluster that never had an ACL: nothing to put in a snapshot.
    pub fn is_empty(&self) -> bool {
        !self.bootstrapped && self.last_id == 0 && self.tokens.is_empty()
    }
}

impl Acl {
    /// Whether `AclBootstrap` has ever been applied.
    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// The token whose secret hashes to `secret_sha256` (hex), if it exists (not revoked).
    pub fn by_hash(&self, secret_sha256: &str) -> Option<&Token> {
        self.by_hash.get(secret_sha256).and_then(|id| self.tokens.get(id))
    }

    pub fn get(&self, id: &str) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// Every token, in id order.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> + '_ {
        self.tokens.values()
    }

    pub fn image(&self) -> AclImage {
        AclImage {
            bootstrapped: self.bootstrapped,
            last_id: self.last_id,
            tokens: self.tokens.values().cloned().collect(),
        }
    }

    /// Rebuilds the table and its hash index from a snapshot image.
    pub fn from_image(image: AclImage) -> Result<Self, String> {
        let mut acl = Acl {
            bootstrapped: image.bootstrapped,
            last_id: image.last_id,
            ..Acl::default()
        };
        for t in image.tokens {
            if acl.tokens.contains_key(&t.id) {
                return Err(format!("token {} appears twice", t.id));
            }
            if acl.by_hash.contains_key(&t.secret_sha256) {
                return Err(format!("token {} repeats another token's secret hash", t.id));
            }
            acl.by_hash.insert(t.secret_sha256.clone(), t.id.clone());
            acl.tokens.insert(t.id.clone(), t);
        }
        Ok(acl)
    }

    /// `AclBootstrap`: the first admin token, once in the cluster's life.
    pub fn bootstrap(&mut self, now_ms: UnixMillis, new: NewToken) -> Result<Token, Rejection> {
        if self.bootstrapped {
            return Err(Rejection::failed_precondition(
                "acl",
                "the ACL is already bootstrapped; ask an admin for a token",
            ));
        }
        if new.role != Role::Admin {
            return Err(Rejection::invalid(
                "role",
                "the bootstrap token must have the admin role",
            ));
        }
        let token = self.create(now_ms, new)?;
        self.bootstrapped = true;
        Ok(token)
    }

    /// `CreateToken`: checks the request and adds the token under the next id.
    pub fn create(&mut self, now_ms: UnixMillis, new: NewToken) -> Result<Token, Rejection> {
        validate_new_token(&new)?;
        if self.by_hash.contains_key(&new.secret_sha256) {
            return Err(Rejection::failed_precondition(
                "secret_sha256",
                "a token with this secret already exists",
            ));
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(Rejection::resource_exhausted(
                "tokens",
                format!("the ACL holds {MAX_TOKENS} tokens; revoke some first"),
            ));
        }
        self.last_id += 1;
        let token = Token {
            id: format!("acl-{}", self.last_id),
            name: new.name,
            role: new.role,
            agent: new.agent,
            secret_sha256: new.secret_sha256,
            created_at_ms: now_ms,
            created_by: new.created_by,
            expires_at_ms: new.expires_at_ms,
            rate_per_sec: new.rate_per_sec,
        };
        self.by_hash.insert(token.secret_sha256.clone(), token.id.clone());
        self.tokens.insert(token.id.clone(), token.clone());
        Ok(token)
    }

    /// `RevokeToken`: removes the token; its id is never issued again.
    pub fn revoke(&mut self, id: &str) -> Result<Token, Rejection> {
        let Some(token) = self.tokens.remove(id) else {
            return Err(Rejection::not_found("id", format!("no token {id:?}")));
        };
        self.by_hash.remove(&token.secret_sha256);
        Ok(token)
    }
}

/// Whether `s` is 64 lower-case hex characters (a SHA-256 as the masters write it).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Static checks of a token request, naming the field.
pub fn validate_new_token(new: &NewToken) -> Result<(), Rejection> {
    if new.name.is_empty() || new.name.len() > MAX_TOKEN_NAME_LEN {
        return Err(Rejection::invalid(
            "name",
            format!("must be 1 to {MAX_TOKEN_NAME_LEN} bytes"),
        ));
    }
    if new.name.chars().any(char::is_control) {
        return Err(Rejection::invalid("name", "must not contain control characters"));
    }
    if !is_sha256_hex(&new.secret_sha256) {
        return Err(Rejection::invalid(
            "secret_sha256",
            "must be 64 lower-case hex characters",
        ));
    }
    match (&new.role, &new.agent) {
        (Role::Agent, Some(agent)) => {
            validate::validate_id(agent).map_err(|r| Rejection::invalid("agent", r.message))?;
        }
        (Role::Agent, None) => {
            return Err(Rejection::invalid("agent", "an agent token must name its agent"));
        }
        (_, Some(_)) => {
            return Err(Rejection::invalid("agent", "only agent tokens name an agent"));
        }
        (_, None) => {}
    }
    if new.rate_per_sec == Some(0) {
        return Err(Rejection::invalid(
            "rate_per_sec",
            "must be at least 1 (omit it for the default)",
        ));
    }
    if new.created_by.len() > MAX_TOKEN_NAME_LEN {
        return Err(Rejection::invalid(
            "created_by",
            format!("longer than {MAX_TOKEN_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}
