//! `taurus`: the command-line interface of Taurus.
//!
//! `taurus master start` runs a master and `taurus agent start` an agent; `task`, `cluster`,
//! `agent` and `bench` talk to a running cluster through `taurus-client`; `dev` starts a local
//! 3-master cluster. Errors are one `error: ...` line on stderr. Exit status: 0 success, 2
//! error, and for `task wait` and `task logs --follow` 1 when the task ended in a state other
//! than succeeded.

mod acl;
mod agent;
mod agent_start;
mod args;
mod backup;
mod bench;
mod cluster;
#[cfg(test)]
mod deploy_assets;
mod dev;
mod health;
mod logging;
mod master;
mod monitoring;
mod output;
mod task;
mod tls;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ContextKind;
use clap::error::ErrorKind;
use taurus_client::Client;
use taurus_protocol::tls::TlsFiles;

use crate::args::Cli;
use crate::args::Command;

/// Exit status of every error.
const EXIT_ERROR: u8 = 2;

/// What every command that talks to the cluster needs.
pub struct Context {
    pub masters: Vec<String>,
    pub timeout: Duration,
    pub json: bool,
    /// `--ca`/`--cert`/`--key` when any was given (a missing one is an empty path).
    pub tls: Option<TlsFiles>,
    /// `--token` / `TAURUS_TOKEN`.
    pub token: Option<String>,
}

impl Context {
    pub fn client(&self) -> anyhow::Result<Client> {
        let masters: Vec<String> = self
            .masters
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        let client = match &self.tls {
            None => Client::new(masters)?,
            Some(files) => {
                if let Some(key) = files.missing_key() {
                    let flag = match key {
                        "ca_file" => "--ca (TAURUS_CA)",
                        "cert_file" => "--cert (TAURUS_CERT)",
                        _ => "--key (TAURUS_KEY)",
                    };
                    anyhow::bail!("{flag} is missing: TLS needs all of --ca, --cert and --key");
                }
                Client::with_tls(masters, files)?
            }
        };
        let client = match &self.token {
            Some(t) => client.with_token(t)?,
            None => client,
        };
        // The command's span when traces are exported (see `run`): calls join its trace.
        let client = match taurus_protocol::trace::of(&tracing::Span::current()) {
            Some(traceparent) => client.with_trace_parent(&traceparent),
            None => client,
        };
        Ok(client.with_deadline(self.timeout))
    }
}

/// `--ca`/`--cert`/`--key` as files, when any of them is given.
fn tls_files(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsFiles> {
    if ca.is_none() && cert.is_none() && key.is_none() {
        return None;
    }
    Some(TlsFiles {
        ca_file: ca.unwrap_or_default(),
        cert_file: cert.unwrap_or_default(),
        key_file: key.unwrap_or_default(),
    })
}

fn main() -> ExitCode {
    install_panic_hook();
    // The task supervisor, before clap and Tokio: it runs with the task's environment (whose
    // TAURUS_* variables are the task's, not settings of ours) and needs no runtime.
    if let Some(command) = supervise_command(std::env::args_os()) {
        return taurus_agent::supervisor::main(command);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Runs the command; when `OTEL_*` asks for trace export (see `logging`), every command but
/// `master start`, `agent start` and `dev` (which set up their own) is one client span, whose
/// context every call to the cluster carries.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let server = matches!(
        cli.command,
        Command::Master(_) | Command::Dev(_) | Command::Agent(crate::args::AgentCmd::Start(_))
    );
    if server || !logging::otel_requested(|k| std::env::var(k).ok()) {
        return dispatch(cli).await;
    }
    let telemetry = logging::init_cli()?;
    let name = command_name(&cli.command);
    let span = tracing::info_span!("command", otel.kind = "client", otel.name = name.as_str());
    let result = tracing::Instrument::instrument(dispatch(cli), span).await;
    telemetry.shutdown().await;
    result
}

/// `taurus task submit` for `Command::Task(TaskCmd::Submit(..))`: the first two variant names
/// of the command's `Debug` form, in kebab case.
fn command_name(command: &Command) -> String {
    let debug = format!("{command:?}");
    let words: Vec<String> = debug
        .split('(')
        .take(2)
        .map(|part| {
            let ident: String = part.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            let mut kebab = String::new();
            for (i, c) in ident.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            }
            kebab
        })
        .filter(|w| !w.is_empty())
        .collect();
    format!("taurus {}", words.join(" "))
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context {
        masters: cli.masters,
        timeout: cli.timeout,
        json: cli.json,
        tls: tls_files(cli.ca, cli.cert, cli.key),
        token: match cli.token {
            Some(t) => Some(t),
            None => read_token_file(cli.token_file.as_deref())?,
        },
    };
    match cli.command {
        Command::Master(cmd) => master::run(cmd).await,
        Command::Task(cmd) => task::run(cmd, &ctx).await,
        Command::Cluster(cmd) => cluster::run(cmd, &ctx).await,
        Command::Agent(cmd) => agent::run(cmd, &ctx).await,
        Command::Bench(cmd) => bench::run(cmd, &ctx).await,
        Command::Dev(args) => dev::run(args, &ctx).await,
        Command::Tls(cmd) => tls::run(cmd),
        Command::Acl(cmd) => acl::run(cmd, &ctx).await,
        Command::Health(args) => health::run(args, &ctx).await,
    }
}

/// The token in `--token-file` (its first line, trimmed), if given.
fn read_token_file(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--token-file {}: cannot read: {e}", path.display()))?;
    match text.lines().next().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Ok(Some(t.to_string())),
        None => anyhow::bail!(
            "--token-file {}: empty (no token on its first line)",
            path.display()
        ),
    }
}

/// The task's command when invoked as `taurus agent supervise -- COMMAND...`.
fn supervise_command(mut args: impl Iterator<Item = OsString>) -> Option<Vec<OsString>> {
    let _program = args.next()?;
    let words = taurus_agent::supervisor::SUPERVISE_ARGS
        .iter()
        .copied()
        .chain(["--"]);
    for word in words {
        if args.next()? != word {
            return None;
        }
    }
    Some(args.collect())
}

/// Prints `error: ...` on one line and returns the error exit status.
fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(&format!("{e:#}")));
    ExitCode::from(EXIT_ERROR)
}

/// Help and version go to stdout as usual; usage errors become one `error:` line.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            }
        }
        ErrorKind::UnknownArgument if misplaced_timeout(&e) => {
            eprintln!(
                "error: unexpected argument '--timeout' here: the request deadline goes before the command, \
                 e.g. `taurus --timeout 2s task get ID`"
            );
            ExitCode::from(EXIT_ERROR)
        }
        ErrorKind::UnknownArgument if command_without_dashes(&e) => {
            eprintln!(
                "{} (the task's command goes after --: taurus task submit [OPTIONS] -- COMMAND [ARGS]...)",
                clap_error_line(&e.render().to_string())
            );
            ExitCode::from(EXIT_ERROR)
        }
        _ => {
            eprintln!("{}", clap_error_line(&e.render().to_string()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `--timeout` given after a command that has no such option of its own.
fn misplaced_timeout(e: &clap::Error) -> bool {
    e.get(ContextKind::InvalidArg)
        .is_some_and(|arg| arg.to_string().starts_with("--timeout"))
}

/// A `task submit` whose command was not separated by `--`.
fn command_without_dashes(e: &clap::Error) -> bool {
    let positional = e
        .get(ContextKind::InvalidArg)
        .is_some_and(|arg| !arg.to_string().starts_with('-'));
    positional
        && std::env::args()
            .skip(1)
            .take_while(|a| a != "--")
            .any(|a| a == "submit")
}

/// The message of a rendered clap error (everything before the first blank line) and its tips,
/// joined into one line; the usage and "for more information" lines are left out.
fn clap_error_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let mut line = one_line(&message.join(" "));
    let tips: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
        .collect();
    if !tips.is_empty() {
        line = format!("{line} ({})", one_line(&tips.join("; ")));
    }
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A panic is a bug: report it on one line, without a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in taurus): {}{place}",
            one_line(&message)
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_supervise_prefix_runs_the_supervisor() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert_eq!(
            supervise_command(args(&["taurus", "agent", "supervise", "--", "sh", "-c", "x"])),
            Some(vec!["sh".into(), "-c".into(), "x".into()])
        );
        assert_eq!(
            supervise_command(args(&["taurus", "agent", "supervise", "--"])),
            Some(vec![])
        );
        for other in [
            &["taurus", "agent", "supervise", "sh"][..],
            &["taurus", "agent", "start", "--", "x"],
            &["taurus", "--json", "agent", "supervise", "--", "x"],
            &["taurus"],
        ] {
            assert_eq!(supervise_command(args(other)), None, "{other:?}");
        }
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --id <ID>\n\n\
                        Usage: taurus cluster remove-master --id <ID>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "error: the following required arguments were not provided: --id <ID>"
        );
        let rendered = "error: unexpected argument 'echo' found\n\n  tip: to pass 'echo' as a value, use '-- echo'\n\n\
                        Usage: taurus task submit [OPTIONS] [-- <COMMAND>...]\n";
        assert_eq!(
            clap_error_line(rendered),
            "error: unexpected argument 'echo' found (tip: to pass 'echo' as a value, use '-- echo')"
        );
    }
}
