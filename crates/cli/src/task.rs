//! `taurus task ...`: submit, get, list, cancel, watch, wait.

use std::process::ExitCode;

use anyhow::Context as _;
use anyhow::bail;
use futures::StreamExt;
use serde::Serialize;
use taurus_client::TaskState;
use taurus_client::v1;
use taurus_core::validate::MAX_OUTPUT_TAIL;
use taurus_protocol::convert::task_state_from_i32;

use crate::Context;
use crate::args::ListArgs;
use crate::args::LogsArgs;
use crate::args::SubmitArgs;
use crate::args::TaskCmd;
use crate::output::ReadView;
use crate::output::Table;
use crate::output::TaskView;
use crate::output::describe_read;
use crate::output::duration_ms;
use crate::output::latest_agent;
use crate::output::or_dash;
use crate::output::pairs;
use crate::output::print_json;
use crate::output::shell_words;
use crate::output::state_name;
use crate::output::time_ms;
use crate::output::truncate;

pub async fn run(cmd: TaskCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCmd::Submit(args) => submit(args, ctx).await,
        TaskCmd::Get { id, stale } => get(&id, stale, ctx).await,
        TaskCmd::List(args) => list(args, ctx).await,
        TaskCmd::Cancel { id, reason } => cancel(&id, &reason, ctx).await,
        TaskCmd::Watch { id } => watch(&id, ctx).await,
        TaskCmd::Wait { id } => wait(&id, ctx).await,
        TaskCmd::Logs(args) => logs(args, ctx).await,
    }
}

/// The task spec a `task submit` command line describes.
pub fn spec_from_args(args: SubmitArgs) -> anyhow::Result<v1::TaskSpec> {
    if args.command.is_empty() {
        bail!("missing command: give the task's command after --, e.g. `taurus task submit -- echo hello`");
    }
    let timeout_ms = match args.timeout {
        None => 0,
        Some(d) if d.as_millis() == 0 => bail!("--timeout: must be at least 1ms"),
        Some(d) => u64::try_from(d.as_millis()).context("--timeout: too long")?,
    };
    Ok(v1::TaskSpec {
        id: args.id.unwrap_or_default(),
        name: args.name,
        command: args.command,
        env: args.env.into_iter().collect(),
        priority: args.priority,
        resources: Some(v1::Resources {
            cpu_millis: args.cpu,
            memory_mb: args.mem,
            disk_mb: args.disk,
        }),
        timeout_ms,
        max_attempts: args.max_attempts.unwrap_or(0),
        depends_on: args
            .after
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        labels: args.label.into_iter().collect(),
        backoff_ms: match args.backoff {
            None => None,
            Some(d) => Some(u64::try_from(d.as_millis()).context("--backoff: too long")?),
        },
        pool: args.pool,
        constraints: args.constraint.into_iter().collect(),
        deadline_ms: match args.deadline {
            None => 0,
            Some(d) if d.as_millis() == 0 => bail!("--deadline: must be at least 1ms"),
            Some(d) => u64::try_from(d.as_millis()).context("--deadline: too long")?,
        },
        // Filled in by the master from this call's trace context, when traces are exported.
        trace_parent: String::new(),
    })
}

#[derive(Serialize)]
struct SubmitView<'a> {
    id: &'a str,
    created: bool,
    state: String,
    log_index: u64,
}

async fn submit(args: SubmitArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let spec = spec_from_args(args)?;
    let client = ctx.client()?;
    let response = client.submit(vec![spec]).await?;
    let r = response
        .results
        .first()
        .context("submit: the server returned no result")?;
    if ctx.json {
        print_json(&SubmitView {
            id: &r.id,
            created: r.created,
            state: state_name(r.state),
            log_index: r.log_index,
        })?;
    } else {
        println!("{}", r.id);
        if !r.created {
            eprintln!(
                "note: task {} already existed and is {}; nothing new was submitted",
                r.id,
                state_name(r.state)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct GetView {
    #[serde(flatten)]
    task: TaskView,
    read: Option<ReadView>,
}

async fn get(id: &str, stale: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    let response = ctx.client()?.get_task(id, stale).await?;
    let task = response
        .task
        .as_ref()
        .context("get task: no task in the answer")?;
    if ctx.json {
        print_json(&GetView {
            task: TaskView::from(task),
            read: response.read.as_ref().map(ReadView::from),
        })?;
    } else {
        print_details(task, response.read.as_ref());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_details(task: &v1::Task, read: Option<&v1::ReadInfo>) {
    let t = TaskView::from(task);
    let mut rows = Table::new(&["id:", &t.id]);
    let mut add = |k: &str, v: String| rows.row(vec![k.to_string(), v]);
    add("name:", or_dash(&t.name).into());
    add("state:", t.state.clone());
    add("reason:", or_dash(&t.reason).into());
    add("command:", shell_words(&t.command));
    add("priority:", t.priority.to_string());
    let r = &t.resources;
    add(
        "resources:",
        format!(
            "cpu {} millis, memory {} MiB, disk {} MiB",
            r.cpu_millis, r.memory_mb, r.disk_mb
        ),
    );
    add(
        "pool:",
        if t.pool.is_empty() {
            "any".into()
        } else {
            t.pool.clone()
        },
    );
    add("constraints:", pairs(&t.constraints));
    add(
        "timeout:",
        if t.timeout_ms == 0 {
            "none".into()
        } else {
            duration_ms(t.timeout_ms)
        },
    );
    add(
        "deadline:",
        if t.deadline_ms == 0 {
            "none".into()
        } else {
            format!(
                "{} after submission ({})",
                duration_ms(t.deadline_ms),
                time_ms(t.submitted_at_ms.saturating_add(t.deadline_ms))
            )
        },
    );
    add(
        "attempts:",
        format!("{} of {}", t.attempts, t.max_attempts.max(1)),
    );
    add(
        "backoff:",
        match t.backoff_ms {
            None => format!("{} (default), doubled per retry with jitter", duration_ms(1000)),
            Some(0) => "none (retries at once)".into(),
            Some(ms) => format!("{}, doubled per retry with jitter", duration_ms(ms)),
        },
    );
    if t.state == TaskState::Pending.as_str() && t.not_before_ms != 0 {
        add(
            "not before:",
            format!("{} (retry back-off)", time_ms(t.not_before_ms)),
        );
    }
    let deps = if t.depends_on.is_empty() {
        "-".into()
    } else {
        t.depends_on.join(", ")
    };
    add("depends on:", format!("{deps} ({} unmet)", t.unmet_dependencies));
    add("labels:", pairs(&t.labels));
    add("env:", pairs(&t.env));
    add("submitted:", time_ms(t.submitted_at_ms));
    add(
        "submitted by:",
        crate::output::or_dash(&t.submitted_by).to_string(),
    );
    if !t.cancelled_by.is_empty() {
        add("cancelled by:", t.cancelled_by.clone());
    }
    add("queued:", time_ms(t.queued_at_ms));
    add("updated:", time_ms(t.updated_at_ms));
    add(
        "log index:",
        format!("{} (created at {})", t.log_index, t.created_index),
    );
    add("read:", describe_read(read));
    rows.print();
    if !t.attempt_history.is_empty() {
        println!();
        let mut table = Table::new(&[
            "ATTEMPT", "AGENT", "TOKEN", "ASSIGNED", "STARTED", "FINISHED", "EXIT", "END", "ERROR",
        ]);
        for a in &t.attempt_history {
            table.row(vec![
                a.number.to_string(),
                or_dash(&a.agent_id).into(),
                a.fencing_token.to_string(),
                time_ms(a.assigned_at_ms),
                a.started_at_ms.map_or("-".into(), time_ms),
                a.finished_at_ms.map_or("-".into(), time_ms),
                a.exit_code.map_or("-".into(), |c| c.to_string()),
                if a.end.is_empty() {
                    "(current)".into()
                } else {
                    a.end.clone()
                },
                or_dash(&a.error).into(),
            ]);
        }
        table.print();
        let with_output = t
            .attempt_history
            .iter()
            .filter(|a| !a.stdout_tail.is_empty() || !a.stderr_tail.is_empty())
            .count();
        if with_output > 0 {
            println!(
                "\n{with_output} attempt(s) reported output: taurus task logs {} [--attempt N]",
                t.id
            );
        }
    }
}

#[derive(Serialize)]
struct ListView {
    tasks: Vec<TaskView>,
    next_page_token: Option<String>,
    /// Tasks matching the state filter on the server, at read time.
    total: u64,
    /// Tasks read from the server (more than `tasks` when --agent, --name or --label filter).
    scanned: u64,
    read: Option<ReadView>,
}

/// Whether a task passes the filters `task list` applies itself (--agent, --name, --label).
pub fn matches_local_filters(task: &v1::Task, args: &ListArgs) -> bool {
    if let Some(agent) = &args.agent
        && latest_agent(task) != agent
    {
        return false;
    }
    let spec = task.spec.as_ref();
    if let Some(name) = &args.name
        && !spec.is_some_and(|s| s.name.contains(name.as_str()))
    {
        return false;
    }
    args.label
        .iter()
        .all(|(k, v)| spec.and_then(|s| s.labels.get(k)) == Some(v))
}

async fn list(args: ListArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let local = args.filters_locally();
    let mut tasks: Vec<v1::Task> = Vec::new();
    let mut scanned = 0u64;
    let mut token = args.page_token.clone();
    let (total, read) = loop {
        let page = client
            .list_tasks(&args.state, args.limit, &token, args.stale)
            .await?;
        scanned += page.tasks.len() as u64;
        tasks.extend(page.tasks.into_iter().filter(|t| matches_local_filters(t, &args)));
        let next = page.next_page_token;
        // Without --all one page is enough, unless local filters left fewer than --limit.
        let enough = !args.all && (!local || tasks.len() >= args.limit as usize);
        if enough || next.is_empty() {
            token = next;
            break (page.total, page.read);
        }
        if next == token {
            bail!("list tasks: the server returned the same page token twice ({next:?})");
        }
        token = next;
    };
    let next_page_token = (!token.is_empty()).then_some(token);
    if ctx.json {
        print_json(&ListView {
            tasks: tasks.iter().map(TaskView::from).collect(),
            next_page_token,
            total,
            scanned,
            read: read.as_ref().map(ReadView::from),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    print_task_table(&tasks);
    let filter = if args.state.is_empty() {
        String::new()
    } else {
        format!(
            " {}",
            args.state
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("/")
        )
    };
    let stale = if read.as_ref().is_some_and(|r| r.stale) {
        " (stale read)"
    } else {
        ""
    };
    if local {
        println!(
            "{} matching of {scanned} tasks read (of {total}{filter} tasks){stale}",
            tasks.len()
        );
    } else {
        println!("{} of {total}{filter} tasks{stale}", tasks.len());
    }
    if let Some(t) = next_page_token {
        let same = if local || !args.state.is_empty() {
            " with the same filters"
        } else {
            ""
        };
        println!("more: taurus task list --page-token {t}{same}   (or --all)");
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per task.
pub fn print_task_table(tasks: &[v1::Task]) {
    let mut table = Table::new(&[
        "ID", "NAME", "STATE", "PRI", "ATTEMPTS", "AGENT", "LOG", "COMMAND",
    ]);
    for task in tasks {
        let agent = or_dash(latest_agent(task)).to_string();
        let t = TaskView::from(task);
        table.row(vec![
            t.id,
            truncate(or_dash(&t.name), 24),
            t.state,
            t.priority.to_string(),
            t.attempts.to_string(),
            truncate(&agent, 20),
            t.log_index.to_string(),
            truncate(&shell_words(&t.command), 40),
        ]);
    }
    table.print();
}

#[derive(Serialize)]
struct CancelView<'a> {
    id: &'a str,
    cancelled: bool,
    state: String,
    log_index: u64,
}

async fn cancel(id: &str, reason: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let r = ctx.client()?.cancel_task(id, reason).await?;
    if ctx.json {
        print_json(&CancelView {
            id: &r.id,
            cancelled: r.cancelled,
            state: state_name(r.state),
            log_index: r.log_index,
        })?;
    } else if r.cancelled {
        println!("cancelled {}", r.id);
    } else {
        println!("{} was already {}; unchanged", r.id, state_name(r.state));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line describing a task change.
fn change_line(task: &v1::Task) -> String {
    let t = TaskView::from(task);
    let reason = if t.reason.is_empty() {
        String::new()
    } else {
        format!("  reason: {}", t.reason)
    };
    format!(
        "{}  {:<9}  attempts={}  log_index={}{reason}",
        time_ms(t.updated_at_ms.max(t.submitted_at_ms)),
        t.state,
        t.attempts,
        t.log_index
    )
}

async fn watch(id: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut changes = std::pin::pin!(client.watch_task(id));
    while let Some(change) = changes.next().await {
        let task = change?;
        if ctx.json {
            println!("{}", serde_json::to_string(&TaskView::from(&task))?);
        } else {
            println!("{}", change_line(&task));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait(id: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let task = ctx.client()?.wait_task(id).await?;
    if ctx.json {
        print_json(&TaskView::from(&task))?;
    } else {
        let t = TaskView::from(&task);
        let reason = if t.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", t.reason)
        };
        println!("{} {}{reason}", t.id, t.state);
    }
    Ok(exit_status_of(&task))
}

/// Exit status of a terminal task, as `task wait` gives it: 0 succeeded, 1 otherwise.
fn exit_status_of(task: &v1::Task) -> ExitCode {
    if task_state_from_i32(task.state, "state") == Ok(TaskState::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Which streams `task logs` prints.
#[derive(Clone, Copy, Debug)]
struct Streams {
    stdout: bool,
    stderr: bool,
}

impl Streams {
    fn of(args: &LogsArgs) -> Self {
        Streams {
            stdout: !args.stderr_only,
            stderr: !args.stdout_only,
        }
    }
}

/// One attempt's output in JSON; a stream left out by --stdout-only/--stderr-only is absent.
#[derive(Serialize)]
struct LogView<'a> {
    id: &'a str,
    attempt: u32,
    agent_id: &'a str,
    /// Empty while the attempt is current (its output is not reported yet).
    end: &'a str,
    exit_code: Option<i32>,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr: Option<&'a str>,
}

impl<'a> LogView<'a> {
    fn new(id: &'a str, a: &'a v1::Attempt, streams: Streams) -> Self {
        LogView {
            id,
            attempt: a.number,
            agent_id: &a.agent_id,
            end: &a.end,
            exit_code: a.exit_code,
            error: &a.error,
            stdout: streams.stdout.then_some(a.stdout_tail.as_str()),
            stderr: streams.stderr.then_some(a.stderr_tail.as_str()),
        }
    }
}

/// `attempt 2 (agent a1, failed, exit 1)`.
fn describe_attempt(a: &v1::Attempt) -> String {
    let mut parts = vec![format!("agent {}", or_dash(&a.agent_id))];
    parts.push(if a.end.is_empty() {
        "current".to_string()
    } else {
        a.end.clone()
    });
    if let Some(code) = a.exit_code {
        parts.push(format!("exit {code}"));
    }
    if !a.error.is_empty() {
        parts.push(format!("error: {}", truncate(&a.error, 60)));
    }
    format!("attempt {} ({})", a.number, parts.join(", "))
}

/// The text of one stream, ending in a newline; with `labelled`, under a `==> ... <==` header
/// (and `(empty)` for nothing), as `tail` prints several files.
fn render_stream(a: &v1::Attempt, name: &str, tail: &str, labelled: bool) -> String {
    let mut out = String::new();
    if labelled {
        // The agent keeps the end of a longer output; at the bound, assume it was cut.
        let cut = if tail.len() + 4 >= MAX_OUTPUT_TAIL {
            format!(" (the last {} KiB only)", MAX_OUTPUT_TAIL / 1024)
        } else {
            String::new()
        };
        out.push_str(&format!("==> {}: {name}{cut} <==\n", describe_attempt(a)));
        if tail.is_empty() {
            out.push_str("(empty)\n");
            return out;
        }
    }
    out.push_str(tail);
    if !tail.is_empty() && !tail.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// An attempt's output in the order stdout, stderr. A single stream outside --follow is
/// printed bare, so that it can be piped.
fn render_output(a: &v1::Attempt, streams: Streams, always_label: bool) -> String {
    let labelled = always_label || (streams.stdout && streams.stderr);
    let mut out = String::new();
    if streams.stdout {
        out.push_str(&render_stream(a, "stdout", &a.stdout_tail, labelled));
    }
    if streams.stderr {
        out.push_str(&render_stream(a, "stderr", &a.stderr_tail, labelled));
    }
    out
}

async fn logs(args: LogsArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let streams = Streams::of(&args);
    if args.follow {
        return follow_logs(&args.id, streams, ctx).await;
    }
    let response = ctx.client()?.get_task(&args.id, false).await?;
    let task = response
        .task
        .as_ref()
        .context("get task: no task in the answer")?;
    let attempt = match args.attempt {
        Some(n) => task.attempts.iter().find(|a| a.number == n).with_context(|| {
            let numbers: Vec<String> = task.attempts.iter().map(|a| a.number.to_string()).collect();
            format!(
                "task {} has no attempt {n} (its attempts: {})",
                args.id,
                if numbers.is_empty() {
                    "none yet".to_string()
                } else {
                    numbers.join(", ")
                }
            )
        })?,
        None => task.attempts.last().with_context(|| {
            format!(
                "task {} has no attempt yet (it is {}), so no output (`--follow` waits for its attempts)",
                args.id,
                state_name(task.state)
            )
        })?,
    };
    if ctx.json {
        print_json(&LogView::new(&args.id, attempt, streams))?;
    } else if attempt.end.is_empty() {
        eprintln!(
            "note: attempt {} is still current, so it has no output yet: agents report output \
             when an attempt ends (taurus task logs {} --follow waits for it)",
            attempt.number, args.id
        );
    } else {
        print!("{}", render_output(attempt, streams, false));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the output of every attempt that has ended, then of each attempt as it ends, until
/// the task is terminal; exits as `task wait`.
async fn follow_logs(id: &str, streams: Streams, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut changes = std::pin::pin!(client.watch_task(id));
    let mut printed: std::collections::HashSet<u32> = std::collections::HashSet::new();
    let mut last: Option<v1::Task> = None;
    while let Some(change) = changes.next().await {
        let task = change?;
        for a in task.attempts.iter().filter(|a| !a.end.is_empty()) {
            if !printed.insert(a.number) {
                continue;
            }
            if ctx.json {
                println!("{}", serde_json::to_string(&LogView::new(id, a, streams))?);
            } else {
                print!("{}", render_output(a, streams, true));
            }
        }
        last = Some(task);
    }
    let task = last.context("watch task: the watch ended without reporting the task")?;
    let terminal = task_state_from_i32(task.state, "state").is_ok_and(|s| s.is_terminal());
    if !terminal {
        bail!("watch task: the watch ended before task {id} was terminal");
    }
    if !ctx.json {
        let reason = if task.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", task.reason)
        };
        eprintln!("task {id} {}{reason}", state_name(task.state));
    }
    Ok(exit_status_of(&task))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::Cli;
    use crate::args::Command;

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        let cli = Cli::try_parse_from([&["taurus", "task", "submit"], argv].concat()).unwrap();
        match cli.command {
            Command::Task(TaskCmd::Submit(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn submit_flags_become_a_spec() {
        let spec = spec_from_args(submit_args(&[
            "--id",
            "t1",
            "--name",
            "n",
            "--priority",
            "-3",
            "--cpu",
            "500",
            "--mem",
            "64",
            "--timeout",
            "30s",
            "--max-attempts",
            "3",
            "--after",
            "a,b",
            "--label",
            "k=v",
            "--env",
            "X=1",
            "--",
            "echo",
            "hi",
        ]))
        .unwrap();
        assert_eq!(spec.id, "t1");
        assert_eq!(spec.priority, -3);
        assert_eq!(spec.resources.unwrap().cpu_millis, 500);
        assert_eq!(spec.timeout_ms, 30_000);
        assert_eq!(spec.max_attempts, 3);
        assert_eq!(spec.depends_on, ["a", "b"]);
        assert_eq!(spec.labels["k"], "v");
        assert_eq!(spec.env["X"], "1");
        assert_eq!(spec.command, ["echo", "hi"]);
    }

    #[test]
    fn a_missing_command_is_an_error_that_says_so() {
        let err = spec_from_args(submit_args(&["--name", "x"])).unwrap_err();
        assert!(err.to_string().contains("missing command"), "{err}");
    }

    fn task(name: &str, labels: &[(&str, &str)], agents: &[&str]) -> v1::Task {
        v1::Task {
            spec: Some(v1::TaskSpec {
                id: "t".into(),
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            attempts: agents
                .iter()
                .enumerate()
                .map(|(i, a)| v1::Attempt {
                    number: i as u32 + 1,
                    agent_id: a.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn list_args(argv: &[&str]) -> ListArgs {
        let cli = Cli::try_parse_from([&["taurus", "task", "list"], argv].concat()).unwrap();
        match cli.command {
            Command::Task(TaskCmd::List(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_filters_match_the_latest_agent_a_name_substring_and_every_label() {
        let t = task(
            "nightly-build",
            &[("team", "infra"), ("env", "prod")],
            &["a1", "a2"],
        );
        assert!(matches_local_filters(&t, &list_args(&[])));
        assert!(matches_local_filters(&t, &list_args(&["--agent", "a2"])));
        assert!(!matches_local_filters(&t, &list_args(&["--agent", "a1"])));
        assert!(matches_local_filters(&t, &list_args(&["--name", "build"])));
        assert!(!matches_local_filters(&t, &list_args(&["--name", "Build"])));
        assert!(matches_local_filters(
            &t,
            &list_args(&["--label", "team=infra", "--label", "env=prod"])
        ));
        assert!(!matches_local_filters(
            &t,
            &list_args(&["--label", "team=infra", "--label", "env=dev"])
        ));
        let never_ran = task("x", &[], &[]);
        assert!(!matches_local_filters(&never_ran, &list_args(&["--agent", "a1"])));
    }

    #[test]
    fn output_is_labelled_unless_one_stream_is_printed_bare() {
        let a = v1::Attempt {
            number: 2,
            agent_id: "a1".into(),
            end: "failed".into(),
            exit_code: Some(1),
            stdout_tail: "out".into(),
            stderr_tail: String::new(),
            ..Default::default()
        };
        let both = Streams {
            stdout: true,
            stderr: true,
        };
        assert_eq!(
            render_output(&a, both, false),
            "==> attempt 2 (agent a1, failed, exit 1): stdout <==\nout\n\
             ==> attempt 2 (agent a1, failed, exit 1): stderr <==\n(empty)\n"
        );
        let stdout = Streams {
            stdout: true,
            stderr: false,
        };
        assert_eq!(render_output(&a, stdout, false), "out\n");
        assert!(render_output(&a, stdout, true).starts_with("==> attempt 2"));
        let long = v1::Attempt {
            stdout_tail: "x".repeat(MAX_OUTPUT_TAIL),
            ..a
        };
        assert!(render_output(&long, both, false).contains("the last 16 KiB only"));
    }
}
