//! `taurus cluster ...`: status and membership changes.

use std::process::ExitCode;

use serde::Serialize;
use taurus_client::v1;

use crate::Context;
use crate::args::ClusterCmd;
use crate::output::Table;
use crate::output::or_dash;
use crate::output::print_json;

pub async fn run(cmd: ClusterCmd, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let status = match cmd {
        // Backups print their own summary.
        ClusterCmd::Snapshot(cmd) => return crate::backup::run(cmd, ctx).await,
        ClusterCmd::Status => return status(&client, ctx).await,
        ClusterCmd::Anomalies { fail_on, local } => {
            return crate::monitoring::anomalies(ctx, fail_on.as_deref(), local).await;
        }
        ClusterCmd::AddMaster { id, addr } => {
            taurus_client::normalize_address(&addr).map_err(|e| anyhow::anyhow!("--addr {addr:?}: {e}"))?;
            client.add_master(id, &addr).await?
        }
        ClusterCmd::RemoveMaster { id } => client.remove_master(id).await?,
        ClusterCmd::TransferLeader { to } => client.transfer_leader(to).await?,
    };
    if ctx.json {
        print_json(&StatusView::from(&status))?;
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// `taurus cluster status`: the members, then the monitoring summary (skipped with a note
/// on stderr when the report cannot be had, e.g. from a master without `GetMonitoring`).
async fn status(client: &taurus_client::Client, ctx: &Context) -> anyhow::Result<ExitCode> {
    let status = client.cluster_status().await?;
    let monitoring = match client.monitoring(false).await {
        Ok(r) => Some(crate::monitoring::MonitoringView::from(&r)),
        Err(e) => {
            eprintln!("note: no monitoring summary: {e}");
            None
        }
    };
    if ctx.json {
        #[derive(Serialize)]
        struct WithMonitoring {
            #[serde(flatten)]
            status: StatusView,
            monitoring: Option<crate::monitoring::MonitoringView>,
        }
        print_json(&WithMonitoring {
            status: StatusView::from(&status),
            monitoring,
        })?;
    } else {
        print_status(&status);
        if let Some(m) = &monitoring {
            crate::monitoring::print_summary(m);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Cluster status as the CLI prints it in JSON.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Leader's id, `null` while there is none.
    pub leader: Option<u64>,
    pub term: u64,
    pub served_by: u64,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    pub role: String,
    pub voter: bool,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub reachable: bool,
    pub error: String,
}

impl From<&v1::ClusterStatus> for StatusView {
    fn from(s: &v1::ClusterStatus) -> Self {
        StatusView {
            leader: (s.leader != 0).then_some(s.leader),
            term: s.term,
            served_by: s.served_by,
            members: s
                .members
                .iter()
                .map(|m| MemberView {
                    id: m.id,
                    addr: m.addr.clone(),
                    role: m.role.clone(),
                    voter: m.voter,
                    term: m.term,
                    last_log_index: m.last_log_index,
                    commit_index: m.commit_index,
                    applied_index: m.applied_index,
                    snapshot_index: m.snapshot_index,
                    purged_index: m.purged_index,
                    reachable: m.reachable,
                    error: m.error.clone(),
                })
                .collect(),
        }
    }
}

/// Leader line and one row per member.
pub fn print_status(s: &v1::ClusterStatus) {
    let leader = if s.leader == 0 {
        "none".to_string()
    } else {
        s.leader.to_string()
    };
    println!(
        "leader: {leader}   term: {}   (answered by master {})",
        s.term, s.served_by
    );
    let mut table = Table::new(&[
        "ID", "ADDR", "ROLE", "VOTER", "TERM", "LAST LOG", "COMMIT", "APPLIED", "SNAPSHOT", "ERROR",
    ]);
    for m in &s.members {
        let known = |v: u64| if m.reachable { v.to_string() } else { "-".into() };
        table.row(vec![
            m.id.to_string(),
            m.addr.clone(),
            or_dash(&m.role).into(),
            if m.voter { "yes" } else { "no" }.into(),
            known(m.term),
            known(m.last_log_index),
            known(m.commit_index),
            known(m.applied_index),
            known(m.snapshot_index),
            or_dash(&m.error).into(),
        ]);
    }
    table.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_leader_is_null_in_json() {
        let s = v1::ClusterStatus {
            leader: 0,
            term: 2,
            members: vec![v1::Member {
                id: 1,
                addr: "a:1".into(),
                ..Default::default()
            }],
            served_by: 1,
        };
        let json = serde_json::to_value(StatusView::from(&s)).unwrap();
        assert!(json["leader"].is_null());
        assert_eq!(json["members"][0]["addr"], "a:1");
        for f in [
            "role",
            "voter",
            "term",
            "last_log_index",
            "commit_index",
            "applied_index",
            "reachable",
            "error",
        ] {
            assert!(json["members"][0].get(f).is_some(), "{f}");
        }
    }
}
