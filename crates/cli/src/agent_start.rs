//! `taurus agent start`: runs an agent until Ctrl-C or SIGTERM.
//!
//! Settings: flags > `TAURUS_AGENT_*` / `TAURUS_MASTERS` > `--config` file > defaults (what the
//! machine has). `--masters` is the global flag; when it is left at its default and the file
//! names masters, the file wins.
//!
//! Each task runs under a supervisor, this same binary started as `taurus agent supervise --
//! COMMAND...` (see `taurus_agent::supervisor`), which kills the task when the agent dies or
//! its lease runs out.

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use taurus_agent::AgentConfig;
use taurus_agent::AgentError;
use taurus_agent::Overrides;

use crate::Context;
use crate::args::AgentStartArgs;

/// The global `--masters` default (see `args::Cli`).
const DEFAULT_MASTERS: [&str; 3] = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"];

/// The agent configuration the command line describes.
pub fn resolve_config(args: &AgentStartArgs, ctx: &Context) -> anyhow::Result<AgentConfig> {
    let file = match &args.config {
        Some(path) => AgentConfig::from_file(path)?,
        None => AgentConfig::default(),
    };
    let masters_given = ctx
        .masters
        .iter()
        .map(|m| m.trim())
        .ne(DEFAULT_MASTERS.iter().copied());
    let masters = if masters_given || file.masters.is_empty() {
        Some(ctx.masters.clone())
    } else {
        None
    };
    let mut config = file.overlay(Overrides {
        id: args.id.clone(),
        address: args.address.clone(),
        masters,
        work_dir: args.work_dir.clone(),
        cpu_millis: args.cpu,
        memory_mb: args.mem,
        disk_mb: args.disk,
        max_tasks: args.max_tasks,
        labels: (!args.label.is_empty()).then(|| args.label.iter().cloned().collect()),
        pool: args.pool.clone(),
        drain_timeout: args.drain_timeout,
        tls_ca: args.tls_ca.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        http_listen: args.http_listen,
    });
    if let Some(d) = args.heartbeat_interval {
        config.heartbeat_interval = d;
    }
    if let Some(d) = args.lease_timeout {
        config.lease_timeout = d;
    }
    config.insecure |= args.insecure;
    if args.token.is_some() {
        config.token = args.token.clone();
    }
    Ok(config)
}

/// The program tasks run under: this binary. `/proc/self/exe` names the very file this process
/// runs, even after an upgrade replaced or deleted the one at its path, so the supervisor always
/// speaks the agent's protocol version; without `/proc`, the path the binary was started from.
pub fn supervisor_program() -> anyhow::Result<PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe().context("cannot find this program's binary to run tasks under")
}

pub async fn run(args: AgentStartArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let config = resolve_config(&args, ctx)?;
    // Check everything before logging starts, so a bad flag is one clear line.
    let mut resolved = config.resolve().map_err(|e| match e {
        AgentError::Config(why) => anyhow::anyhow!("agent configuration: {why}"),
        other => anyhow::Error::new(other).context("agent configuration"),
    })?;
    if let Some(files) = &resolved.tls {
        // Unusable files are one clear line now, not a retry loop later.
        files
            .client_config()
            .map_err(|e| anyhow::anyhow!("agent configuration: tls.{e}"))?;
    }
    resolved.supervisor = Some(supervisor_program()?);
    let log = crate::logging::LogSettings::resolve(
        args.log_format,
        args.log_level.as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
        &config.log,
    );
    let telemetry = crate::logging::init(&log, crate::logging::AGENT_SERVICE)?;
    tracing::info!(
        id = %resolved.id,
        masters = ?resolved.masters,
        work_dir = %resolved.work_dir.display(),
        cpu_millis = resolved.cpu_millis,
        memory_mb = resolved.memory_mb,
        max_tasks = resolved.max_tasks,
        tls = resolved.tls.is_some(),
        "starting agent"
    );
    let result = taurus_agent::run_resolved(resolved, crate::master::shutdown_signal()).await;
    if result.is_ok() {
        tracing::info!("agent stopped");
    }
    telemetry.shutdown().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::args::AgentCmd;
    use crate::args::Cli;
    use crate::args::Command;

    fn start_args(flags: &[&str]) -> (AgentStartArgs, Context) {
        let mut argv = vec![
            "taurus",
            "--masters",
            "127.0.0.1:1",
            "agent",
            "start",
            "--id",
            "a1",
        ];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Command::Agent(AgentCmd::Start(args)) = cli.command else {
            panic!("not agent start")
        };
        let ctx = Context {
            masters: cli.masters,
            timeout: cli.timeout,
            json: false,
            tls: None,
            token: None,
        };
        (args, ctx)
    }

    #[test]
    fn a_short_lease_works_with_flags_alone() {
        let (args, ctx) = start_args(&["--heartbeat-interval", "300ms", "--lease-timeout", "1500ms"]);
        let resolved = resolve_config(&args, &ctx)
            .expect("config")
            .resolve()
            .expect("no rpc_timeout needed for a 1.5 s lease");
        assert_eq!(resolved.lease_timeout, Duration::from_millis(1500));
        assert!(resolved.rpc_timeout < resolved.lease_timeout, "{resolved:?}");
    }

    #[test]
    fn the_http_port_comes_from_the_flag() {
        let (args, ctx) = start_args(&[]);
        let resolved = resolve_config(&args, &ctx)
            .expect("config")
            .resolve()
            .expect("valid");
        assert_eq!(resolved.http_listen, None, "off by default");
        let (args, ctx) = start_args(&["--http-listen", "127.0.0.1:9201"]);
        let resolved = resolve_config(&args, &ctx)
            .expect("config")
            .resolve()
            .expect("valid");
        assert_eq!(
            resolved.http_listen,
            Some("127.0.0.1:9201".parse().expect("addr"))
        );
    }

    #[test]
    fn tasks_run_under_this_binary() {
        let program = supervisor_program().expect("found");
        assert!(program.exists(), "{}", program.display());
    }
}
