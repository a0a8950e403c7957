//! `taurus master start`: configuration precedence, logging, signals.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use taurus_master::MasterConfig;
use taurus_master::config::Overrides;
use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;
use crate::args::MasterCmd;
use crate::args::MasterStartArgs;

const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

pub async fn run(cmd: MasterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        MasterCmd::Start(args) => start(args).await,
    }
}

/// Flags (and their `TAURUS_*` env fallbacks, resolved by clap) over the file over defaults.
pub fn resolve_config(args: MasterStartArgs) -> anyhow::Result<MasterConfig> {
    let base = match &args.config {
        Some(path) => MasterConfig::from_file(path)?,
        None => MasterConfig::default(),
    };
    let mut config = base.overlay(Overrides {
        id: args.id,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        peers: args.peers,
        tls_ca: args.tls_ca,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    });
    if let Some(policy) = args.policy {
        config.scheduler.policy = policy;
    }
    // Flags can only turn these on: a file that enables auth is never weakened by a default.
    config.auth.enabled |= args.auth;
    config.insecure |= args.insecure;
    config.validate()?;
    Ok(config)
}

pub fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => EnvFilter::try_new(&s).with_context(|| format!("RUST_LOG={s:?}"))?,
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn start(args: MasterStartArgs) -> anyhow::Result<ExitCode> {
    let format = args.log_format;
    let config = resolve_config(args)?;
    if let Some(files) = &config.tls {
        // Unusable TLS files are one clear line, before logging starts.
        files.server_config().map_err(taurus_master::MasterError::from)?;
        files.client_config().map_err(taurus_master::MasterError::from)?;
    }
    init_logging(format)?;
    tracing::info!(
        id = config.id,
        listen = %config.listen,
        advertise = %config.advertised(),
        data_dir = %config.data_dir.display(),
        peers = ?config.peers,
        policy = %config.scheduler.policy,
        tls = config.tls.is_some(),
        "starting master"
    );
    taurus_master::run(config, shutdown_signal()).await?;
    tracing::info!("master stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::SignalKind;
    use tokio::signal::unix::signal;
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::Cli;
    use crate::args::Command;

    fn start_args(argv: &[&str]) -> MasterStartArgs {
        match Cli::try_parse_from([&["taurus", "master", "start"], argv].concat())
            .unwrap()
            .command
        {
            Command::Master(MasterCmd::Start(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            "id = 2\nlisten = \"127.0.0.1:9002\"\ndata_dir = \"/tmp/from-file\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = resolve_config(start_args(&[
            "--config",
            path,
            "--id",
            "3",
            "--peers",
            "3=127.0.0.1:9002",
        ]))
        .unwrap();
        assert_eq!(c.id, 3, "flag wins");
        assert_eq!(c.listen.port(), 9002, "file value kept");
        assert_eq!(c.data_dir.to_str(), Some("/tmp/from-file"));
        assert_eq!(c.peers[&3], "127.0.0.1:9002");
        let d = resolve_config(start_args(&[])).unwrap();
        assert_eq!(d, MasterConfig::default());
    }

    #[test]
    fn invalid_combinations_are_reported() {
        let err = resolve_config(start_args(&["--id", "5", "--peers", "1=127.0.0.1:1"])).unwrap_err();
        assert!(err.to_string().contains("peers"), "{err}");
        let err = resolve_config(start_args(&["--config", "/nonexistent/taurus.toml"])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/taurus.toml"), "{err}");
    }
}
