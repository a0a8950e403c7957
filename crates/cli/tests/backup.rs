//! Backup and restore end to end (docs/operations-backup.md), with real `taurus` processes and
//! authentication on: a cluster with finished, running, pending, dependent and cancelled tasks
//! and a few tokens is saved with `taurus cluster snapshot save`, destroyed, and restored into a
//! brand-new cluster (new ports, new data dirs) with `taurus master restore`. Every task must be
//! there in its state (the running one requeued as a new attempt), the old tokens must work
//! (user and agent), and the pending work must finish once an agent joins.

mod common;

use std::time::Duration;

use common::Agents;
use common::Masters;
use common::Run;
use common::assert_one_error_line;
use common::eventually;
use common::run;
use serde_json::Value;

/// Bound of every wait for something that should happen within seconds.
const WAIT: Duration = Duration::from_secs(60);

/// The masters' settings: fast agent liveness and scheduling, authentication on.
fn config() -> String {
    format!("{}[auth]\nenabled = true\n", common::FAST_SCHEDULER_TOML)
}

/// `taurus --masters M --token T ARGS...`.
fn as_user(masters: &str, token: &str, args: &[&str]) -> Run {
    let mut all = vec!["--masters", masters, "--timeout", "20s", "--token", token];
    all.extend_from_slice(args);
    run(&all)
}

/// Like [`as_user`], requiring success and parsing `--json` output.
#[track_caller]
fn json(masters: &str, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let r = as_user(masters, token, &all);
    assert_eq!(r.code, Some(0), "taurus {args:?}: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("taurus {args:?}: not JSON ({e}): {r:?}"))
}

/// A new token's secret.
fn create_token(masters: &str, admin: &str, name: &str, role: &str, agent: Option<&str>) -> String {
    let mut args = vec!["acl", "token", "create", "--name", name, "--role", role];
    if let Some(a) = agent {
        args.extend(["--agent", a]);
    }
    json(masters, admin, &args)["secret"]
        .as_str()
        .expect("a secret")
        .to_string()
}

fn submit(masters: &str, token: &str, args: &[&str]) {
    let mut all = vec!["task", "submit"];
    all.extend_from_slice(args);
    let r = as_user(masters, token, &all);
    assert_eq!(r.code, Some(0), "task submit {args:?}: {r:?}");
}

/// A task as `task get --json` shows it, or why not.
fn get(masters: &str, token: &str, id: &str) -> Result<Value, String> {
    let r = as_user(masters, token, &["task", "get", id, "--json"]);
    if r.code != Some(0) {
        return Err(format!("task get {id}: {r:?}"));
    }
    serde_json::from_str(&r.stdout).map_err(|e| format!("task get {id}: {e}"))
}

/// Waits until task `id` is in `state`.
async fn wait_state(masters: &str, token: &str, id: &str, state: &str) -> Value {
    eventually(&format!("task {id} {state}"), WAIT, async || {
        let t = get(masters, token, id)?;
        if t["state"] == state {
            Ok(t)
        } else {
            Err(format!("{id} is {} ({})", t["state"], t["reason"]))
        }
    })
    .await
}

async fn wait_leader(masters: &str, token: &str) {
    eventually("a leader", WAIT, async || {
        let r = as_user(masters, token, &["cluster", "status", "--json"]);
        let v: Value = serde_json::from_str(&r.stdout).map_err(|e| format!("{e}: {r:?}"))?;
        if v["leader"].is_null() {
            Err(format!("no leader yet: {v}"))
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_cluster_comes_back_from_its_backup() {
    let dir = tempfile::Builder::new()
        .prefix("taurus-backup-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    let (old_dir, new_dir) = (root.join("old"), root.join("new"));
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let marker = root.join("release-run-1");
    let backup = root.join("cluster.bak");
    let backup_arg = backup.to_str().unwrap();

    // --- The original cluster -----------------------------------------------------------------
    let mut agents = Agents::new(&old_dir);
    let masters = Masters::start_in(&old_dir, &config());
    let m = masters.flag();
    let m = m.as_str();
    let boot = run(&["--masters", m, "--timeout", "30s", "--json", "acl", "bootstrap"]);
    assert_eq!(boot.code, Some(0), "acl bootstrap: {boot:?}{}", masters.logs());
    let admin: Value = serde_json::from_str(&boot.stdout).expect("bootstrap JSON");
    let admin = admin["secret"].as_str().expect("admin secret").to_string();
    let ops = create_token(m, &admin, "ops", "operator", None);
    let reader = create_token(m, &admin, "viewer", "read", None);
    let agent_token = create_token(m, &admin, "a1", "agent", Some("a1"));

    // One agent with 1 CPU: tasks asking for 2 stay pending.
    agents.start("a1", m, &["--token", &agent_token, "--cpu", "1000"]);
    submit(m, &admin, &["--id", "done-1", "--", "taurus:noop"]);
    wait_state(m, &admin, "done-1", "succeeded").await;
    let script = format!("test -e {} || sleep 300", marker.display());
    submit(
        m,
        &admin,
        &["--id", "run-1", "--max-attempts", "3", "--", "sh", "-c", &script],
    );
    wait_state(m, &admin, "run-1", "running").await;
    submit(
        m,
        &admin,
        &["--id", "dep-1", "--after", "run-1", "--", "taurus:noop"],
    );
    submit(
        m,
        &admin,
        &["--id", "big-1", "--cpu", "2000", "--", "taurus:noop"],
    );
    submit(
        m,
        &admin,
        &["--id", "big-2", "--cpu", "2000", "--", "taurus:noop"],
    );
    let r = as_user(m, &admin, &["task", "cancel", "big-2"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for (id, state) in [("dep-1", "pending"), ("big-1", "pending"), ("big-2", "cancelled")] {
        wait_state(m, &admin, id, state).await;
    }

    // --- Save ---------------------------------------------------------------------------------
    let denied = as_user(m, &reader, &["cluster", "snapshot", "save", backup_arg]);
    assert_one_error_line(&denied, "SaveSnapshot");
    assert!(!backup.exists(), "a refused save leaves no file");
    let saved = json(m, &ops, &["cluster", "snapshot", "save", backup_arg]);
    assert!(backup.exists() && !root.join("cluster.bak.tmp").exists());
    assert_eq!(
        saved["bytes"].as_u64(),
        Some(std::fs::metadata(&backup).unwrap().len())
    );
    assert_eq!(saved["tasks"], 5, "{saved}");
    assert_eq!(saved["tokens"], 4, "{saved}");
    assert_eq!(saved["tasks_by_state"]["running"], 1, "{saved}");
    let backup_index = saved["last_log_index"].as_u64().expect("last_log_index");
    let again = as_user(m, &ops, &["cluster", "snapshot", "save", backup_arg]);
    assert_one_error_line(&again, "--force");
    let inspected = json(m, &ops, &["cluster", "snapshot", "inspect", backup_arg]);
    for field in ["sha256", "bytes", "last_log_index", "tasks", "agents", "tokens"] {
        assert_eq!(inspected[field], saved[field], "{field}: {inspected} vs {saved}");
    }
    // The bytes are checked, not trusted.
    let damaged = root.join("damaged.bak");
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let r = run(&["cluster", "snapshot", "inspect", damaged.to_str().unwrap()]);
    assert_one_error_line(&r, "checksum mismatch");

    // --- Disaster: every master and agent gone, data dirs deleted ------------------------------
    agents.kill("a1");
    drop(masters);
    std::fs::remove_dir_all(&old_dir).unwrap();

    // --- Restore into a new cluster (new ports, new data dirs) --------------------------------
    let (mut masters, runs) = Masters::restore_in(&new_dir, &config(), &backup);
    assert!(runs[0].stdout.contains("requeued: 1"), "{:?}", runs[0]);
    let m = masters.flag();
    let m = m.as_str();
    // Refused into a data dir that holds anything.
    let r = run(&[
        "master",
        "restore",
        "--snapshot",
        backup_arg,
        "--id",
        "1",
        "--peers",
        &masters.peers(),
        "--data-dir",
        masters.data_dir(1).to_str().unwrap(),
    ]);
    assert_one_error_line(&r, "not empty");
    wait_leader(m, &ops).await;
    if let Err(e) = masters.check_running() {
        panic!("{e}{}", masters.logs());
    }

    // Every task, in its state, read with a token from before the backup.
    assert_eq!(get(m, &ops, "done-1").unwrap()["state"], "succeeded");
    assert_eq!(get(m, &ops, "big-2").unwrap()["state"], "cancelled");
    for id in ["dep-1", "big-1"] {
        assert_eq!(get(m, &ops, id).unwrap()["state"], "pending", "{id}");
    }
    let run1 = get(m, &ops, "run-1").unwrap();
    assert_eq!(run1["state"], "pending", "{run1}");
    assert_eq!(run1["attempt_history"][0]["end"], "lost", "{run1}");
    // A revoked-by-nobody admin token still administers: list tokens.
    let tokens = json(m, &admin, &["acl", "token", "list"]);
    assert_eq!(tokens.as_array().map(Vec::len), Some(4), "{tokens}");

    // --- An agent joins (with its old token) and the pending work finishes ---------------------
    std::fs::write(&marker, b"").unwrap();
    let mut agents = Agents::new(&new_dir);
    agents.start("a1", m, &["--token", &agent_token, "--cpu", "4000"]);
    for id in ["run-1", "dep-1", "big-1"] {
        wait_state(m, &ops, id, "succeeded").await;
    }
    let run1 = get(m, &ops, "run-1").unwrap();
    let last = &run1["attempt_history"][1];
    // Past the backup's index by the restore gap: above any token the old cluster issued.
    let gap = taurus_store::backup::RESTORE_INDEX_GAP;
    assert!(
        last["fencing_token"].as_u64().unwrap() > backup_index + gap,
        "new fencing tokens exceed the backup's index {backup_index} + {gap}: {run1}"
    );
    // The restored cluster writes on after the backup's log: new tasks are accepted.
    submit(m, &ops, &["--id", "after-restore", "--", "taurus:noop"]);
    wait_state(m, &ops, "after-restore", "succeeded").await;
    if let Err(e) = agents.check_running() {
        panic!("{e}{}", agents.logs(20));
    }
    drop(agents);
    drop(masters);
}
