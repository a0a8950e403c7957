//! `taurus agent ...`: start (in `agent_start`), list, show, drain, undrain.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;
use taurus_client::v1;

use crate::Context;
use crate::args::AgentCmd;
use crate::output::ReadView;
use crate::output::ResourcesView;
use crate::output::Table;
use crate::output::describe_read;
use crate::output::or_dash;
use crate::output::pairs;
use crate::output::print_json;
use crate::output::time_ms;
use crate::output::truncate;

pub async fn run(cmd: AgentCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCmd::Start(args) => crate::agent_start::run(args, ctx).await,
        AgentCmd::List { stale } => list(stale, ctx).await,
        AgentCmd::Show { id, stale } => show(&id, stale, ctx).await,
        AgentCmd::Drain {
            id,
            reason,
            exit: true,
            deadline,
        } => drain_and_exit(&id, deadline, &reason, ctx).await,
        AgentCmd::Drain { id, reason, .. } => set_drain(&id, true, &reason, ctx).await,
        AgentCmd::Undrain { id } => set_drain(&id, false, "", ctx).await,
        // `main` runs `taurus agent supervise -- ...` before anything else; this is the same
        // command reached with global flags in front.
        AgentCmd::Supervise { command } => {
            Ok(tokio::task::spawn_blocking(move || taurus_agent::supervisor::main(command)).await?)
        }
    }
}

/// Lower-case agent state (`alive`, `draining`, `down`), or `unknown(N)`.
pub fn agent_state_name(state: i32) -> String {
    match v1::AgentState::try_from(state) {
        Ok(v1::AgentState::Alive) => "alive".into(),
        Ok(v1::AgentState::Draining) => "draining".into(),
        Ok(v1::AgentState::Down) => "down".into(),
        Ok(v1::AgentState::Unspecified) | Err(_) => format!("unknown({state})"),
    }
}

/// An agent as the CLI prints it in JSON.
#[derive(Debug, Serialize)]
pub struct AgentView {
    pub id: String,
    pub state: String,
    pub address: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    /// What the agent offers in total.
    pub resources: ResourcesView,
    /// Demands of the tasks assigned to it or running on it.
    pub used: ResourcesView,
    pub tasks: u32,
    pub max_tasks: u32,
    pub epoch: u64,
    pub reason: String,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
    /// The tasks it holds (`agent show` only; empty in `agent list`).
    pub task_ids: Vec<String>,
    /// Asked to exit once drained (`agent drain --exit`).
    pub exit_requested: bool,
    /// When its running tasks get killed, if it is exiting with a deadline of its own.
    pub exit_deadline_at_ms: Option<u64>,
}

fn resources_view(r: Option<&v1::Resources>) -> ResourcesView {
    let r = r.cloned().unwrap_or_default();
    ResourcesView {
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
    }
}

impl From<&v1::AgentInfo> for AgentView {
    fn from(a: &v1::AgentInfo) -> Self {
        AgentView {
            id: a.id.clone(),
            state: agent_state_name(a.state),
            address: a.address.clone(),
            pool: a.pool.clone(),
            labels: a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            resources: resources_view(a.resources.as_ref()),
            used: resources_view(a.used.as_ref()),
            tasks: a.tasks,
            // 0 at registration means 1.
            max_tasks: a.max_tasks.max(1),
            epoch: a.epoch,
            reason: a.reason.clone(),
            registered_at_ms: a.registered_at_ms,
            updated_at_ms: a.updated_at_ms,
            task_ids: a.task_ids.clone(),
            exit_requested: a.exit_requested,
            exit_deadline_at_ms: a.exit_deadline_at_ms,
        }
    }
}

#[derive(Serialize)]
struct ListView {
    agents: Vec<AgentView>,
    read: Option<ReadView>,
}

async fn list(stale: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    let response = ctx.client()?.list_agents(stale).await?;
    if ctx.json {
        print_json(&ListView {
            agents: response.agents.iter().map(AgentView::from).collect(),
            read: response.read.as_ref().map(ReadView::from),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    print_agent_table(&response.agents);
    let alive = response
        .agents
        .iter()
        .filter(|a| a.state == v1::AgentState::Alive as i32)
        .count();
    println!(
        "{} agents, {alive} alive; read: {}",
        response.agents.len(),
        describe_read(response.read.as_ref())
    );
    Ok(ExitCode::SUCCESS)
}

/// One line per agent.
pub fn print_agent_table(agents: &[v1::AgentInfo]) {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "POOL",
        "TASKS",
        "CPU",
        "MEM (MiB)",
        "EPOCH",
        "ADDRESS",
        "REASON",
    ]);
    for agent in agents {
        let a = AgentView::from(agent);
        table.row(vec![
            a.id,
            a.state,
            or_dash(&a.pool).into(),
            format!("{}/{}", a.tasks, a.max_tasks),
            format!("{}/{}", a.used.cpu_millis, a.resources.cpu_millis),
            format!("{}/{}", a.used.memory_mb, a.resources.memory_mb),
            a.epoch.to_string(),
            or_dash(&a.address).into(),
            truncate(or_dash(&a.reason), 40),
        ]);
    }
    table.print();
}

async fn show(id: &str, stale: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    let agent = ctx.client()?.get_agent(id, stale).await?;
    if ctx.json {
        print_json(&AgentView::from(&agent))?;
    } else {
        print_details(&agent);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_details(agent: &v1::AgentInfo) {
    let a = AgentView::from(agent);
    let mut rows = Table::new(&["id:", &a.id]);
    let mut add = |k: &str, v: String| rows.row(vec![k.to_string(), v]);
    add("state:", a.state.clone());
    if a.exit_requested {
        add(
            "exit:",
            match a.exit_deadline_at_ms {
                Some(at) => format!("once drained; running tasks killed at {}", time_ms(at)),
                None => "once drained (running tasks get the agent's drain_timeout)".into(),
            },
        );
    }
    add("reason:", or_dash(&a.reason).into());
    add("address:", or_dash(&a.address).into());
    add("pool:", or_dash(&a.pool).into());
    add("labels:", pairs(&a.labels));
    add("tasks:", format!("{} of at most {}", a.tasks, a.max_tasks));
    let (u, r) = (&a.used, &a.resources);
    add(
        "cpu:",
        format!("{} of {} millis in use", u.cpu_millis, r.cpu_millis),
    );
    add(
        "memory:",
        format!("{} of {} MiB in use", u.memory_mb, r.memory_mb),
    );
    add("disk:", format!("{} of {} MiB in use", u.disk_mb, r.disk_mb));
    add("epoch:", a.epoch.to_string());
    add("registered:", time_ms(a.registered_at_ms));
    add("updated:", time_ms(a.updated_at_ms));
    rows.print();
    if a.task_ids.is_empty() {
        println!("\nno tasks assigned or running");
    } else {
        println!("\ntasks assigned or running ({}):", a.task_ids.len());
        for id in &a.task_ids {
            println!("  {id}");
        }
    }
}

async fn drain_and_exit(
    id: &str,
    deadline: Option<std::time::Duration>,
    reason: &str,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let agent = ctx.client()?.drain_agent_and_exit(id, deadline, reason).await?;
    if ctx.json {
        print_json(&AgentView::from(&agent))?;
    } else {
        let limit = match deadline {
            Some(d) => format!("for at most {}", humantime::format_duration(d)),
            None => "for at most its drain_timeout".to_string(),
        };
        println!(
            "agent {} is {}: it takes no new work, lets its running tasks ({} on it) finish {limit}, \
             and exits (it learns this with its next heartbeat)",
            agent.id,
            agent_state_name(agent.state),
            agent.tasks
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_drain(id: &str, drain: bool, reason: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let agent = ctx.client()?.set_agent_drain(id, drain, reason).await?;
    if ctx.json {
        print_json(&AgentView::from(&agent))?;
    } else {
        let state = agent_state_name(agent.state);
        if drain {
            println!(
                "agent {} is {state}: it takes no new work ({} tasks still on it)",
                agent.id, agent.tasks
            );
        } else {
            println!("agent {} is {state}", agent.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_json_has_the_documented_fields() {
        let a = v1::AgentInfo {
            id: "a1".into(),
            state: v1::AgentState::Draining as i32,
            max_tasks: 0,
            resources: Some(v1::Resources {
                cpu_millis: 4000,
                memory_mb: 8192,
                disk_mb: 0,
            }),
            task_ids: vec!["t1".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(AgentView::from(&a)).unwrap();
        assert_eq!(json["state"], "draining");
        assert_eq!(json["max_tasks"], 1);
        assert_eq!(json["resources"]["cpu_millis"], 4000);
        assert_eq!(json["used"]["cpu_millis"], 0);
        assert_eq!(json["task_ids"][0], "t1");
        for f in [
            "address",
            "pool",
            "labels",
            "tasks",
            "epoch",
            "reason",
            "registered_at_ms",
        ] {
            assert!(json.get(f).is_some(), "{f}");
        }
        assert_eq!(agent_state_name(42), "unknown(42)");
    }
}
