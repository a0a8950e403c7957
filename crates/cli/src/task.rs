//! `taurus task ...`: submit, get, list, cancel, watch, wait.

use std::process::ExitCode;

use anyhow::Context as _;
use anyhow::bail;
use futures::StreamExt;
use serde::Serialize;
use taurus_client::TaskState;
use taurus_client::v1;

use crate::Context;
use crate::args::ListArgs;
use crate::args::SubmitArgs;
use crate::args::TaskCmd;
use crate::output::ReadView;
use crate::output::Table;
use crate::output::TaskView;
use crate::output::describe_read;
use crate::output::or_dash;
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
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        if m.is_empty() {
            "-".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
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
        "timeout:",
        if t.timeout_ms == 0 {
            "none".into()
        } else {
            humantime::format_duration(std::time::Duration::from_millis(t.timeout_ms)).to_string()
        },
    );
    add(
        "attempts:",
        format!("{} of {}", t.attempts, t.max_attempts.max(1)),
    );
    let deps = if t.depends_on.is_empty() {
        "-".into()
    } else {
        t.depends_on.join(", ")
    };
    add("depends on:", format!("{deps} ({} unmet)", t.unmet_dependencies));
    add("labels:", pairs(&t.labels));
    add("env:", pairs(&t.env));
    add("submitted:", time_ms(t.submitted_at_ms));
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
            "ATTEMPT", "AGENT", "TOKEN", "ASSIGNED", "STARTED", "FINISHED", "EXIT", "ERROR",
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
                or_dash(&a.error).into(),
            ]);
        }
        table.print();
    }
}

#[derive(Serialize)]
struct ListView {
    tasks: Vec<TaskView>,
    next_page_token: Option<String>,
    total: u64,
    read: Option<ReadView>,
}

async fn list(args: ListArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut tasks: Vec<v1::Task> = Vec::new();
    let mut token = args.page_token.clone();
    let (total, read) = loop {
        let page = client
            .list_tasks(&args.state, args.limit, &token, args.stale)
            .await?;
        tasks.extend(page.tasks);
        let next = page.next_page_token;
        if !args.all || next.is_empty() {
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
    println!("{} of {total}{filter} tasks{stale}", tasks.len());
    if let Some(t) = next_page_token {
        println!("more: taurus task list --page-token {t}   (or --all)");
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per task.
pub fn print_task_table(tasks: &[v1::Task]) {
    let mut table = Table::new(&["ID", "NAME", "STATE", "PRI", "ATTEMPTS", "LOG", "COMMAND"]);
    for task in tasks {
        let t = TaskView::from(task);
        table.row(vec![
            t.id,
            truncate(or_dash(&t.name), 24),
            t.state,
            t.priority.to_string(),
            t.attempts.to_string(),
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
    let succeeded =
        taurus_protocol::convert::task_state_from_i32(task.state, "state") == Ok(TaskState::Succeeded);
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
}
