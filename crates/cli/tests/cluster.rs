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

/// Processes whose command line mentions `needle`, as "PID: CMDLINE".
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| {
            // A zombie's (or a vanished process's) command line is empty.
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), cmdline.trim_end()))
        })
        .collect()
}

#[test]
fn dev_starts_a_cluster_runs_the_demo_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let r = run(&["dev", "--exit-after-demo", "--dir", dir_arg]);
    let logs: String = ["master-1", "master-2", "master-3", "agent-1", "agent-2"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
            format!("--- {name}.log ---\n{text}")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(r.code, Some(0), "{r:?}\n{logs}");
    assert!(r.stdout.contains("is the leader"), "{r:?}");
    // Everything ran over mutual TLS, with files `taurus dev` made.
    assert!(r.stdout.contains("(mutual TLS)"), "{r:?}");
    for file in [
        "ca.crt",
        "master-1.crt",
        "agent-2.crt",
        "client-dev-user.crt",
        "client-dev-user.key",
    ] {
        assert!(
            dir.path().join("tls").join(file).is_file(),
            "{file} missing: {r:?}"
        );
    }
    assert!(r.stdout.contains("deploy"), "the demo tasks are listed: {r:?}");
    // Every demo task ran on an agent and exited 0, and the echo tasks' output came back:
    // "  hello    ran on agent-1 (attempt 1), exit 0: hello from taurus".
    for (name, output) in [
        ("hello", "hello from taurus"),
        ("build", ""),
        ("deploy", "deployed"),
        ("cleanup", "low priority"),
    ] {
        let line = r
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{name} ")) && l.contains(" ran on "))
            .unwrap_or_else(|| panic!("no line says where the {name} task ran: {r:?}\n{logs}"));
        assert!(line.contains("ran on agent-"), "{line:?}");
        assert!(line.contains("exit 0:"), "{line:?}");
        assert!(line.ends_with(&format!(": {output}").trim_end()), "{line:?}");
    }

    // Nothing `taurus dev` started outlives it: every master and agent has the directory on
    // its command line. They were stopped before it exited, so this should hold at once; the
    // bounded wait only covers the kernel tearing processes down.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_mentioning(dir_arg);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes started by `taurus dev` outlived it: {left:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
