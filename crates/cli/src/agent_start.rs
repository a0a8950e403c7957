//! `taurus agent start`: runs an agent until Ctrl-C or SIGTERM.
//!
//! Settings: flags > `TAURUS_AGENT_*` / `TAURUS_MASTERS` > `--config` file > defaults (what the
//! machine has). `--masters` is the global flag; when it is left at its default and the file
//! names masters, the file wins.

use std::process::ExitCode;

use anyhow::Context as _;
use taurus_agent::AgentConfig;
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
    });
    if let Some(d) = args.heartbeat_interval {
        config.heartbeat_interval = d;
    }
    if let Some(d) = args.lease_timeout {
        config.lease_timeout = d;
    }
    Ok(config)
}

pub async fn run(args: AgentStartArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let config = resolve_config(&args, ctx)?;
    // Check everything before logging starts, so a bad flag is one clear line.
    let resolved = config.resolve().context("agent configuration")?;
    crate::master::init_logging(args.log_format)?;
    tracing::info!(
        id = %resolved.id,
        masters = ?resolved.masters,
        work_dir = %resolved.work_dir.display(),
        cpu_millis = resolved.cpu_millis,
        memory_mb = resolved.memory_mb,
        max_tasks = resolved.max_tasks,
        "starting agent"
    );
    taurus_agent::run(config, crate::master::shutdown_signal()).await?;
    tracing::info!("agent stopped");
    Ok(ExitCode::SUCCESS)
}
