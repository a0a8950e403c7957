//! `taurus master start`: configuration precedence, logging, signals.

use std::process::ExitCode;

use taurus_master::MasterConfig;
use taurus_master::config::Overrides;

use crate::args::MasterCmd;
use crate::args::MasterStartArgs;
use crate::logging;
use crate::logging::LogSettings;

pub async fn run(cmd: MasterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        MasterCmd::Start(args) => start(args).await,
        MasterCmd::Restore(args) => crate::backup::restore(args).await,
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
        http_listen: args.http_listen,
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

async fn start(args: MasterStartArgs) -> anyhow::Result<ExitCode> {
    let (format, level) = (args.log_format, args.log_level.clone());
    let config = resolve_config(args)?;
    let log = LogSettings::resolve(
        format,
        level.as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
        &config.log,
    );
    // A bad filter is one clear line too.
    log.env_filter()?;
    if let Some(files) = &config.tls {
        // Unusable TLS files are one clear line, before logging starts.
        files.server_config().map_err(taurus_master::MasterError::from)?;
        files.client_config().map_err(taurus_master::MasterError::from)?;
    }
    let telemetry = logging::init(&log, logging::MASTER_SERVICE)?;
    tracing::info!(
        id = config.id,
        listen = %config.listen,
        advertise = %config.advertised(),
        data_dir = %config.data_dir.display(),
        peers = ?config.peers,
        policy = %config.scheduler.policy,
        tls = config.tls.is_some(),
        http = ?config.http.listen,
        "starting master"
    );
    let result = taurus_master::run(config, shutdown_signal()).await;
    if result.is_ok() {
        tracing::info!("master stopped");
    }
    telemetry.shutdown().await;
    result?;
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
    fn the_http_port_is_off_by_default_and_the_flag_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:9101\"\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(resolve_config(start_args(&[])).unwrap().http.listen, None);
        let from_file = resolve_config(start_args(&["--config", path])).unwrap();
        assert_eq!(from_file.http.listen, Some("127.0.0.1:9101".parse().unwrap()));
        let flag =
            resolve_config(start_args(&["--config", path, "--http-listen", "127.0.0.1:9999"])).unwrap();
        assert_eq!(flag.http.listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert!(Cli::try_parse_from(["taurus", "master", "start", "--http-listen", "nowhere"]).is_err());
    }

    #[test]
    fn invalid_combinations_are_reported() {
        let err = resolve_config(start_args(&["--id", "5", "--peers", "1=127.0.0.1:1"])).unwrap_err();
        assert!(err.to_string().contains("peers"), "{err}");
        let err = resolve_config(start_args(&["--config", "/nonexistent/taurus.toml"])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/taurus.toml"), "{err}");
    }
}
