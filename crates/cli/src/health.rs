//! `taurus health`: asks one master's gRPC health service (`grpc.health.v1.Health/Check`)
//! whether it is serving, for container health checks, load balancers and scripts.
//!
//! Images without a shell (the `FROM scratch` image of `deploy/docker/`) cannot run
//! `grpc_health_probe` or `curl`, so the CLI does it. It dials exactly one address, once: a
//! health check is about that master, not the cluster, so there is no failover and no retry.
//! The connection uses the same `--ca`/`--cert`/`--key` (mutual TLS) and `--token` as every
//! other command, and `--timeout` bounds the whole check.
//!
//! With `--http HOST:PORT` it asks the plain-HTTP port of a master or an agent instead
//! (`GET /healthz`), the only health endpoint an agent has.
//!
//! Exit status: 0 when the answer is `SERVING` (or HTTP 200), 1 when the process answers
//! anything else, 2 when it cannot be asked (unreachable, TLS refused, timeout, bad flags).

use std::process::ExitCode;

use anyhow::Context as _;
use anyhow::bail;
use tonic::metadata::MetadataValue;
use tonic::transport::ClientTlsConfig;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Context;
use crate::args::HealthArgs;

/// Exit status when the master answers, but not `SERVING`.
const EXIT_NOT_SERVING: u8 = 1;

pub async fn run(args: HealthArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    if let Some(http) = &args.http {
        return run_http(http, ctx).await;
    }
    let addr = match &args.addr {
        Some(a) => a.clone(),
        None => ctx
            .masters
            .iter()
            .map(|m| m.trim())
            .find(|m| !m.is_empty())
            .context("no address: give --addr HOST:PORT (or --masters)")?
            .to_string(),
    };
    let what = service_label(&args.service);
    let status = tokio::time::timeout(ctx.timeout, check(&addr, &args.service, ctx))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "master at {addr}: no health answer within {} (--timeout)",
                humantime::format_duration(ctx.timeout)
            )
        })??;
    let name = status.as_str_name();
    if status == ServingStatus::Serving {
        if ctx.json {
            println!(
                "{}",
                serde_json::json!({ "addr": addr, "service": args.service, "status": name })
            );
        } else {
            println!("{addr}: {what} is {name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({ "addr": addr, "service": args.service, "status": name })
        );
    }
    eprintln!("error: master at {addr}: {what} is {name}, not SERVING");
    Ok(ExitCode::from(EXIT_NOT_SERVING))
}

/// `--http HOST:PORT`: `GET /healthz` must answer `200`.
async fn run_http(addr: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let authority = taurus_protocol::tls::authority(addr);
    if authority.is_empty() || !authority.contains(':') {
        bail!("--http {addr:?}: expected HOST:PORT");
    }
    let status_line = tokio::time::timeout(ctx.timeout, get_healthz(authority))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "http://{authority}/healthz: no answer within {} (--timeout)",
                humantime::format_duration(ctx.timeout)
            )
        })??;
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({ "http": authority, "status": status_line })
        );
    }
    if code == "200" {
        if !ctx.json {
            println!("http://{authority}/healthz: {status_line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: http://{authority}/healthz answered {status_line:?}, not 200");
    Ok(ExitCode::from(EXIT_NOT_SERVING))
}

/// The status line of `GET /healthz` on `authority` (HTTP/1.0: the server closes after it).
async fn get_healthz(authority: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("http://{authority}/healthz: cannot connect"))?;
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("http://{authority}/healthz: cannot send the request"))?;
    // The status line is all we need; 1 KiB holds it with room to spare.
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        let n = stream
            .read(&mut buf[len..])
            .await
            .with_context(|| format!("http://{authority}/healthz: cannot read the answer"))?;
        if n == 0 || buf[..len + n].contains(&b'\n') {
            len += n;
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    match head.lines().next().map(str::trim) {
        Some(line) if line.starts_with("HTTP/") => Ok(line.to_string()),
        _ => bail!(
            "http://{authority}/healthz: not an HTTP answer: {:?}",
            head.trim()
        ),
    }
}

/// How a service name reads in messages: the empty name is the server as a whole.
fn service_label(service: &str) -> String {
    if service.is_empty() {
        "the server (service \"\")".to_string()
    } else {
        format!("service {service:?}")
    }
}

/// One `Check` call to `addr`.
async fn check(addr: &str, service: &str, ctx: &Context) -> anyhow::Result<ServingStatus> {
    let tls = tls_config(ctx)?;
    let uri = taurus_client::normalize_address_for(addr, tls.is_some())
        .map_err(|e| anyhow::anyhow!("--addr {addr:?}: {e}"))?;
    let endpoint = taurus_protocol::tls::endpoint(&uri, tls.as_ref())
        .map_err(|e| anyhow::anyhow!("--addr {addr:?}: {e}"))?;
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "master at {addr}: cannot connect: {}",
            taurus_protocol::tls::error_chain(&e)
        )
    })?;
    let bearer = match ctx.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(
            MetadataValue::try_from(format!("Bearer {t}"))
                .context("--token: not usable in a request header (control characters?)")?,
        ),
        None => None,
    };
    let mut client = HealthClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(b) = &bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    });
    let answer = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await;
    match answer {
        Ok(r) => Ok(ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown)),
        // The standard answer for a service the server does not know.
        Err(s) if s.code() == tonic::Code::NotFound => Ok(ServingStatus::ServiceUnknown),
        Err(s) => bail!(
            "master at {addr}: health check failed: {} ({:?})",
            s.message(),
            s.code()
        ),
    }
}

/// The client TLS settings of `--ca`/`--cert`/`--key`, when given (all three or none).
fn tls_config(ctx: &Context) -> anyhow::Result<Option<ClientTlsConfig>> {
    let Some(files) = &ctx.tls else {
        return Ok(None);
    };
    if let Some(key) = files.missing_key() {
        let flag = match key {
            "ca_file" => "--ca (TAURUS_CA)",
            "cert_file" => "--cert (TAURUS_CERT)",
            _ => "--key (TAURUS_KEY)",
        };
        bail!("{flag} is missing: TLS needs all of --ca, --cert and --key");
    }
    Ok(Some(files.client_config()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_service_is_the_whole_server() {
        assert!(service_label("").contains("the server"));
        assert_eq!(
            service_label("taurus.v1.TaskService"),
            "service \"taurus.v1.TaskService\""
        );
    }
}
