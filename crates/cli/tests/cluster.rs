//! The CLI against a real 3-master cluster started from the same binary.

mod common;

use common::Masters;
use common::run;
use serde_json::Value;

fn json(r: &common::Run) -> Value {
    assert_eq!(r.code, Some(0), "{r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn cli_against_real_cluster() {
    let mut masters = Masters::start();
    masters.wait_for_leader();
    let m = masters.flag();
    let taurus = |args: &[&str]| run(&[&["--masters", m.as_str()][..], args].concat());

    let submitted = json(&taurus(&[
        "task", "submit", "--json", "--name", "cli-test", "--", "true",
    ]));
    let id = submitted["id"].as_str().expect("id").to_string();
    assert_eq!(submitted["created"], true, "{submitted}");
    assert!(submitted["log_index"].as_u64().unwrap() > 0, "{submitted}");

    let task = json(&taurus(&["task", "get", &id, "--json"]));
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["state"], "pending", "{task}");
    assert!(task["log_index"].as_u64().unwrap() > 0, "{task}");
    assert_eq!(task["attempts"], 0, "{task}");
    assert_eq!(task["command"][0], "true", "{task}");

    let list = json(&taurus(&["task", "list", "--json"]));
    let ids: Vec<&str> = list["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()), "{list}");

    let cancelled = json(&taurus(&["task", "cancel", &id, "--reason", "test", "--json"]));
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");

    let waited = taurus(&["task", "wait", &id]);
    assert_eq!(
        waited.code,
        Some(1),
        "a cancelled task makes wait exit 1: {waited:?}"
    );
    assert!(waited.stdout.contains("cancelled"), "{waited:?}");

    let status = json(&taurus(&["cluster", "status", "--json"]));
    assert!(status["leader"].as_u64().is_some(), "{status}");
    assert_eq!(
        status["members"].as_array().expect("members").len(),
        3,
        "{status}"
    );

    let missing = taurus(&["task", "get", "no-such-task"]);
    common::assert_one_error_line(&missing, "not found");
    drop(masters);
}

#[test]
fn dev_starts_a_cluster_runs_the_demo_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&["dev", "--exit-after-demo", "--dir", dir.path().to_str().unwrap()]);
    let logs: String = (1..=3)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("master-{i}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n");
    assert_eq!(r.code, Some(0), "{r:?}\n{logs}");
    assert!(r.stdout.contains("is the leader"), "{r:?}");
    assert!(r.stdout.contains("deploy"), "the demo tasks are listed: {r:?}");
}
