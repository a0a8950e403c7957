//! `taurus cluster anomalies` and the monitoring summary of `taurus cluster status`, against
//! three real masters: a task for a pool no agent serves is reported as `unserved_pool`.

mod common;

use std::time::Duration;

use common::*;

const CONFIG: &str = "[monitor]\nsample_interval = \"200ms\"\nstuck_grace = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_lists_an_unserved_pool_and_status_summarises_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut masters = Masters::start_in(dir.path(), CONFIG);
    masters.wait_for_leader();
    let m = masters.flag();
    let submit = run(&[
        "--masters",
        &m,
        "task",
        "submit",
        "--pool",
        "gpu",
        "--name",
        "needs a gpu",
        "--",
        "/bin/true",
    ]);
    assert_eq!(submit.code, Some(0), "{submit:?}");

    let anomalies = eventually(
        "unserved_pool for pool/gpu",
        Duration::from_secs(30),
        async || {
            let r = run(&["--masters", &m, "cluster", "anomalies", "--json"]);
            if r.code != Some(0) {
                return Err(format!("{r:?}"));
            }
            let list: serde_json::Value =
                serde_json::from_str(&r.stdout).map_err(|e| format!("{e}: {r:?}"))?;
            let found = list.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["kind"] == "unserved_pool" && x["subject"] == "pool/gpu")
            });
            if found { Ok(list) } else { Err(r.stdout) }
        },
    )
    .await;
    let first = &anomalies[0];
    assert_eq!(first["severity"], "warning", "{anomalies}");
    assert!(
        first["suggestion"].as_str().is_some_and(|s| !s.is_empty()),
        "{anomalies}"
    );

    // The table, and the exit status with --fail-on.
    let table = run(&["--masters", &m, "cluster", "anomalies"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    assert!(
        table.stdout.contains("SEVERITY") && table.stdout.contains("pool/gpu"),
        "{table:?}"
    );
    assert!(table.stdout.contains("leader's view"), "{table:?}");
    let fail = run(&["--masters", &m, "cluster", "anomalies", "--fail-on", "warning"]);
    assert_eq!(fail.code, Some(1), "{fail:?}");
    let pass = run(&["--masters", &m, "cluster", "anomalies", "--fail-on", "critical"]);
    assert_eq!(pass.code, Some(0), "{pass:?}");
    let bad = run(&["--masters", &m, "cluster", "anomalies", "--fail-on", "severe"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");

    // `cluster status`: members, then the summary.
    let status = run(&["--masters", &m, "cluster", "status"]);
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(
        status.stdout.contains("queue: 1 pending (1 runnable"),
        "{status:?}"
    );
    assert!(status.stdout.contains("agents: 0 alive"), "{status:?}");
    assert!(status.stdout.contains("anomalies: 1 (1 warning)"), "{status:?}");
    let json = run(&["--masters", &m, "cluster", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status is JSON");
    assert!(!v["leader"].is_null(), "{v}");
    assert_eq!(v["monitoring"]["queue"]["by_state"]["pending"], 1, "{v}");
    assert_eq!(v["monitoring"]["leader_view"], true, "{v}");
}
