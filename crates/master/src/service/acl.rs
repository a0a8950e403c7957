//! `taurus.v1.AclService`: bootstrap, tokens, and "who am I".
//!
//! Secrets are generated here, on the master that proposes the command (the leader; a follower
//! forwards the request, not a secret), and only their SHA-256 enters the Raft log. The secret
//! is in the reply and nowhere else.

use taurus_core::Command;
use taurus_core::Response as CoreResponse;
use taurus_core::acl::NewToken;
use taurus_core::acl::Role;
use taurus_core::validate;
use taurus_protocol::v1;
use taurus_protocol::v1::acl_service_client::AclServiceClient;
use taurus_protocol::v1::acl_service_server::AclService;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::Attempt;
use super::Caller;
use super::authenticate;
use super::authorize;
use super::forward_request;
use super::is_forwarded;
use super::on_leader;
use super::read_status;
use super::rejection_status;
use super::write_local;
use crate::auth::Principal;
use crate::auth::new_secret;
use crate::auth::secret_hash;
use crate::clock::now_ms;
use crate::node::Node;

/// Name of the bootstrap token when the request names none, and its `created_by`.
const BOOTSTRAP: &str = "bootstrap";

pub struct AclApi {
    node: Node,
}

impl AclApi {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    /// Proposes a token-creating command built by `cmd` from a fresh secret's hash; returns the
    /// secret with the token.
    async fn create(
        &self,
        caller: &Caller,
        forwarded: bool,
        cmd: impl Fn(String) -> Command,
        forward: impl AsyncFnOnce(tonic::transport::Channel, &Caller) -> Result<Response<v1::TokenSecret>, Status>,
    ) -> Result<Response<v1::TokenSecret>, Status> {
        let node = &self.node;
        let cmd = &cmd;
        let local = || async move {
            let secret = new_secret();
            match write_local(node, cmd(secret_hash(&secret))).await {
                Attempt::Done(Ok((CoreResponse::Token(Ok(t)), index))) => {
                    tracing::info!(token = %t.id, name = %t.name, role = %t.role, by = %t.created_by, "token created");
                    Attempt::Done(Ok(Response::new(v1::TokenSecret {
                        token: Some((&t).into()),
                        secret,
                        log_index: index,
                    })))
                }
                Attempt::Done(Ok((CoreResponse::Token(Err(r)), _))) => {
                    Attempt::Done(Err(rejection_status(r)))
                }
                Attempt::Done(Ok((other, _))) => Attempt::Done(Err(Status::internal(format!(
                    "unexpected state machine response {other:?}"
                )))),
                Attempt::Done(Err(s)) => Attempt::Done(Err(s)),
                Attempt::NotLeader => Attempt::NotLeader,
            }
        };
        on_leader(node, forwarded, local, |ch| forward(ch, caller)).await
    }
}

/// Parses the `CreateToken` request into a token (without its hash, filled in later).
fn new_token(msg: &v1::CreateTokenRequest, created_by: &str, now: u64) -> Result<NewToken, Status> {
    let role: Role = msg
        .role
        .parse()
        .map_err(|e: String| Status::invalid_argument(format!("role: {e}")))?;
    let token = NewToken {
        name: msg.name.clone(),
        role,
        agent: (!msg.agent.is_empty()).then(|| msg.agent.clone()),
        secret_sha256: "0".repeat(64),
        created_by: created_by.to_string(),
        expires_at_ms: (msg.ttl_ms > 0).then(|| now.saturating_add(msg.ttl_ms)),
        rate_per_sec: (msg.rate_per_sec > 0).then_some(msg.rate_per_sec),
    };
    taurus_core::acl::validate_new_token(&token).map_err(rejection_status)?;
    Ok(token)
}

fn principal_kind(p: &Principal) -> &'static str {
    match p {
        Principal::Master(_) => "master",
        Principal::Agent { .. } => "agent",
        Principal::User { .. } => "user",
        Principal::Anonymous => "anonymous",
    }
}

#[tonic::async_trait]
impl AclService for AclApi {
    async fn bootstrap(
        &self,
        req: Request<v1::AclBootstrapRequest>,
    ) -> Result<Response<v1::TokenSecret>, Status> {
        // No credentials needed: this is how the first credential comes to exist. Apply refuses
        // it once the ACL was ever bootstrapped, identically on every replica.
        let forwarded = is_forwarded(&req);
        let caller = Caller {
            principal: Principal::Anonymous,
            authorization: None,
        };
        let msg = req.into_inner();
        let name = if msg.name.is_empty() {
            BOOTSTRAP.to_string()
        } else {
            msg.name.clone()
        };
        if self.node.sm.read(|s| s.acl().bootstrapped()) {
            return Err(Status::failed_precondition(
                "acl: the ACL is already bootstrapped; ask an admin for a token",
            ));
        }
        let cmd = |hash: String| Command::AclBootstrap {
            token: NewToken {
                name: name.clone(),
                role: Role::Admin,
                agent: None,
                secret_sha256: hash,
                created_by: BOOTSTRAP.to_string(),
                expires_at_ms: None,
                rate_per_sec: None,
            },
            now_ms: now_ms(),
        };
        let node = &self.node;
        let msg_ref = &msg;
        self.create(&caller, forwarded, cmd, async move |ch, caller| {
            AclServiceClient::new(ch)
                .bootstrap(forward_request(node, caller, msg_ref.clone()))
                .await
        })
        .await
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::TokenSecret>, Status> {
        let caller = authorize(&self.node, &req, Role::Admin, "CreateToken").await?;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        // Checked here so that bad input is refused wherever it arrives (apply checks again).
        let base = new_token(&msg, caller.principal.name(), now_ms())?;
        let cmd = |hash: String| Command::CreateToken {
            token: NewToken {
                secret_sha256: hash,
                ..base.clone()
            },
            now_ms: now_ms(),
        };
        let node = &self.node;
        let msg_ref = &msg;
        self.create(&caller, forwarded, cmd, async move |ch, caller| {
            AclServiceClient::new(ch)
                .create_token(forward_request(node, caller, msg_ref.clone()))
                .await
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let caller = authorize(&self.node, &req, Role::Admin, "ListTokens").await?;
        let msg = req.into_inner();
        let stale = msg.consistency == v1::Consistency::Stale as i32;
        let applied = if stale {
            self.node.sm.applied_index()
        } else {
            let applied = self.node.read_barrier().await.map_err(read_status)?;
            caller.recheck(&self.node)?;
            applied
        };
        let tokens = self
            .node
            .sm
            .read(|s| s.acl().tokens().map(v1::TokenInfo::from).collect());
        Ok(Response::new(v1::ListTokensResponse {
            tokens,
            read: Some(v1::ReadInfo {
                served_by: self.node.id,
                applied_index: applied,
                stale,
            }),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::TokenInfo>, Status> {
        let caller = authorize(&self.node, &req, Role::Admin, "RevokeToken").await?;
        let forwarded = is_forwarded(&req);
        let msg = req.into_inner();
        if msg.id.is_empty() || msg.id.len() > validate::MAX_ID_LEN {
            return Err(Status::invalid_argument("id: a token id such as acl-3"));
        }
        let node = &self.node;
        let msg_ref = &msg;
        let local = || async move {
            let cmd = Command::RevokeToken {
                id: msg_ref.id.clone(),
                now_ms: now_ms(),
            };
            match write_local(node, cmd).await {
                Attempt::Done(Ok((CoreResponse::Revoked(Ok(t)), _))) => {
                    tracing::info!(token = %t.id, name = %t.name, "token revoked");
                    Attempt::Done(Ok(Response::new(v1::TokenInfo::from(&t))))
                }
                Attempt::Done(Ok((CoreResponse::Revoked(Err(r)), _))) => {
                    Attempt::Done(Err(rejection_status(r)))
                }
                Attempt::Done(Ok((other, _))) => Attempt::Done(Err(Status::internal(format!(
                    "unexpected state machine response {other:?}"
                )))),
                Attempt::Done(Err(s)) => Attempt::Done(Err(s)),
                Attempt::NotLeader => Attempt::NotLeader,
            }
        };
        let caller_ref = &caller;
        let forward = |ch| async move {
            AclServiceClient::new(ch)
                .revoke_token(forward_request(node, caller_ref, msg_ref.clone()))
                .await
        };
        on_leader(node, forwarded, local, forward).await
    }

    async fn who_am_i(
        &self,
        req: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let caller = authenticate(&self.node, &req).await?;
        let p = &caller.principal;
        Ok(Response::new(v1::WhoAmIResponse {
            kind: principal_kind(p).to_string(),
            name: p.name().to_string(),
            role: p.role().to_string(),
            token_id: p.token_id().unwrap_or_default().to_string(),
            auth_enabled: self.node.auth.enabled(),
        }))
    }
}
