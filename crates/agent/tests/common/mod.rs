//! Helpers shared by the agent's process tests (executor.rs, supervisor.rs).

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use taurus_agent::ExecRequest;
use taurus_agent::Executor;
use taurus_agent::KillSwitch;
use taurus_agent::Outcome;

pub fn request(command: &[&str]) -> ExecRequest {
    ExecRequest {
        task_id: "task-1".into(),
        attempt: 1,
        token: 42,
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        timeout: None,
        ..ExecRequest::default()
    }
}

pub fn sh(script: &str) -> ExecRequest {
    request(&["sh", "-c", script])
}

/// Polls `cond` every 5 ms until it holds; panics after `within`.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Live (non-zombie) processes of group `pgid`, from /proc.
pub fn live_members(pgid: i32) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            n += 1;
        }
    }
    n
}

/// Starts `req` in the background and returns the handle and the group it runs in (once it has
/// `members` live processes; a supervisor counts).
pub async fn start(
    exec: &Arc<Executor>,
    req: ExecRequest,
    switch: &KillSwitch,
    members: usize,
) -> (tokio::task::JoinHandle<Outcome>, i32) {
    let (e, s) = (exec.clone(), switch.clone());
    let handle = tokio::spawn(async move { e.run(&req, &s).await });
    let mut pgid = 0;
    eventually("the task's process group", Duration::from_secs(10), || {
        if let Some(&g) = exec.running_groups().first() {
            pgid = g;
        }
        pgid > 0 && live_members(pgid) >= members
    })
    .await;
    (handle, pgid)
}
