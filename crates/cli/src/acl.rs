//! `taurus acl ...`: bootstrap, tokens and whoami.

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use taurus_client::v1;

use crate::Context;
use crate::args::AclCmd;
use crate::args::AclTokenCmd;
use crate::output::Table;
use crate::output::or_dash;
use crate::output::print_json;

pub async fn run(cmd: AclCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        AclCmd::Bootstrap {
            name,
            secret_file: None,
        } => print_secret(ctx, &client.acl_bootstrap(&name).await?)?,
        AclCmd::Bootstrap {
            name,
            secret_file: Some(file),
        } => bootstrap_into(&client, &name, &file).await?,
        AclCmd::Token(AclTokenCmd::Create {
            name,
            role,
            agent,
            ttl,
            rate,
        }) => {
            let created = client
                .create_token(v1::CreateTokenRequest {
                    name,
                    role,
                    agent: agent.unwrap_or_default(),
                    ttl_ms: ttl.map(|d| d.as_millis() as u64).unwrap_or(0),
                    rate_per_sec: rate.unwrap_or(0),
                })
                .await?;
            print_secret(ctx, &created)?;
        }
        AclCmd::Token(AclTokenCmd::List) => {
            let list = client.list_tokens(false).await?;
            let views: Vec<TokenView> = list.tokens.iter().map(TokenView::from).collect();
            if ctx.json {
                print_json(&views)?;
            } else {
                let mut t = Table::new(&[
                    "ID",
                    "NAME",
                    "ROLE",
                    "AGENT",
                    "CREATED BY",
                    "EXPIRES (UTC)",
                    "RATE/S",
                ]);
                for v in &views {
                    t.row(vec![
                        v.id.clone(),
                        v.name.clone(),
                        v.role.clone(),
                        or_dash(&v.agent).to_string(),
                        v.created_by.clone(),
                        v.expires_at_ms.map_or("-".into(), expiry),
                        v.rate_per_sec.map_or("-".into(), |r| r.to_string()),
                    ]);
                }
                t.print();
            }
        }
        AclCmd::Token(AclTokenCmd::Revoke { id }) => {
            let t = client.revoke_token(&id).await?;
            if ctx.json {
                print_json(&TokenView::from(&t))?;
            } else {
                println!("revoked {} ({})", t.id, t.name);
            }
        }
        AclCmd::Whoami => {
            let me = client.who_am_i().await?;
            if ctx.json {
                print_json(&WhoAmIView {
                    kind: me.kind,
                    name: me.name,
                    role: me.role,
                    token_id: me.token_id,
                    auth_enabled: me.auth_enabled,
                })?;
            } else if !me.auth_enabled {
                println!(
                    "authentication is disabled on this master: every caller is an admin ({})",
                    me.name
                );
            } else {
                println!(
                    "{} {} (role {}{})",
                    me.kind,
                    me.name,
                    me.role,
                    token_suffix(&me.token_id)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `acl bootstrap --secret-file FILE`: bootstraps unless FILE holds a secret already, and
/// writes the new secret there (mode 0600, through a temporary file renamed into place).
async fn bootstrap_into(client: &taurus_client::Client, name: &str, file: &Path) -> anyhow::Result<()> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => {
            println!(
                "{} holds a secret already: not bootstrapping again",
                file.display()
            );
            return Ok(());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("--secret-file {}: cannot read: {e}", file.display()),
    }
    let created = client.acl_bootstrap(name).await.map_err(|e| {
        if e.to_string().contains("already bootstrapped") {
            anyhow::anyhow!(
                "{e}; --secret-file {} is empty or missing, so the first admin token is elsewhere                  (or lost: see docs/security.md)",
                file.display()
            )
        } else {
            anyhow::Error::from(e)
        }
    })?;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written =
        write_private(&tmp, &format!("{}\n", created.secret)).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        // The cluster has its admin token now; print it so that it is not lost.
        eprintln!("error: cannot write {}: {e}", file.display());
        print_secret_plain(&created);
        anyhow::bail!("--secret-file {}: cannot write: {e}", file.display());
    }
    let id = created.token.as_ref().map(|t| t.id.as_str()).unwrap_or("?");
    println!(
        "bootstrapped access control: admin token {id} ({name}); its secret is in {}",
        file.display()
    );
    Ok(())
}

/// Writes a new file readable by its owner only (replacing an old one).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

fn print_secret_plain(s: &v1::TokenSecret) {
    println!("secret: {}", s.secret);
}

fn token_suffix(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!(", token {id}")
    }
}

/// Prints a new token and its secret (the only time the secret is shown).
fn print_secret(ctx: &Context, s: &v1::TokenSecret) -> anyhow::Result<()> {
    let token = s.token.as_ref().map(TokenView::from);
    if ctx.json {
        #[derive(Serialize)]
        struct Created<'a> {
            token: Option<TokenView>,
            secret: &'a str,
        }
        return print_json(&Created {
            token,
            secret: &s.secret,
        });
    }
    if let Some(t) = token {
        println!("token {} ({}, role {})", t.id, t.name, t.role);
    }
    println!("secret: {}", s.secret);
    eprintln!("Keep the secret now: it is not shown again. Use it with --token or TAURUS_TOKEN.");
    Ok(())
}

/// A token as the CLI prints it in JSON (never its secret or hash).
#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub agent: String,
    pub created_at_ms: u64,
    pub created_by: String,
    pub expires_at_ms: Option<u64>,
    pub rate_per_sec: Option<u32>,
}

impl From<&v1::TokenInfo> for TokenView {
    fn from(t: &v1::TokenInfo) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.clone(),
            agent: t.agent.clone(),
            created_at_ms: t.created_at_ms,
            created_by: t.created_by.clone(),
            expires_at_ms: (t.expires_at_ms > 0).then_some(t.expires_at_ms),
            rate_per_sec: (t.rate_per_sec > 0).then_some(t.rate_per_sec),
        }
    }
}

#[derive(Debug, Serialize)]
struct WhoAmIView {
    kind: String,
    name: String,
    role: String,
    token_id: String,
    auth_enabled: bool,
}

/// A token's expiry for people: RFC 3339 in UTC, to the second.
fn expiry(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}
