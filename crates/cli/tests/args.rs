//! Bad command lines: a non-zero exit and one `error:` line naming the problem.

mod common;

use common::assert_one_error_line;
use common::run;

#[test]
fn submit_without_a_command_says_the_command_is_missing() {
    let r = run(&["task", "submit", "--name", "x"]);
    assert_one_error_line(&r, "missing command");
    let r = run(&["task", "submit", "--name", "x", "--"]);
    assert_one_error_line(&r, "missing command");
}

#[test]
fn submit_with_the_command_not_after_dashes_says_where_it_goes() {
    let r = run(&["task", "submit", "echo", "hi"]);
    assert_one_error_line(&r, "after --");
}

#[test]
fn a_label_without_equals_sign_is_rejected() {
    let r = run(&["task", "submit", "--label", "nokey", "--", "true"]);
    assert_one_error_line(&r, "--label");
    assert!(r.stderr.contains("KEY=VALUE"), "{r:?}");
}

#[test]
fn bad_timeouts_are_rejected() {
    let r = run(&["--timeout", "soon", "task", "get", "x"]);
    assert_one_error_line(&r, "--timeout");
    let r = run(&["task", "submit", "--timeout", "10 parsecs", "--", "true"]);
    assert_one_error_line(&r, "--timeout");
    let r = run(&["task", "get", "x", "--timeout", "1s"]);
    assert_one_error_line(&r, "before the command");
}

#[test]
fn bad_peers_are_rejected_naming_the_element() {
    let r = run(&["master", "start", "--peers", "1=127.0.0.1:7101,garbage"]);
    assert_one_error_line(&r, "--peers");
    assert!(r.stderr.contains("peers[1]"), "{r:?}");
}

#[test]
fn bad_states_master_addresses_and_missing_flags_are_rejected() {
    assert_one_error_line(&run(&["task", "list", "--state", "done"]), "unknown state");
    assert_one_error_line(&run(&["--masters", "nohost", "task", "get", "x"]), "nohost");
    assert_one_error_line(&run(&["cluster", "remove-master"]), "--id");
    assert_one_error_line(&run(&["task", "frobnicate"]), "frobnicate");
}

#[test]
fn master_start_reports_configuration_errors() {
    let r = run(&["master", "start", "--config", "/nonexistent/taurus.toml"]);
    assert_one_error_line(&r, "/nonexistent/taurus.toml");
    let r = run(&["master", "start", "--id", "4", "--peers", "1=127.0.0.1:7101"]);
    assert_one_error_line(&r, "peers");
}

#[test]
fn help_and_version_succeed() {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for noun in ["master", "task", "cluster", "agent", "bench", "dev"] {
        assert!(r.stdout.contains(noun), "{noun}: {r:?}");
    }
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("taurus "), "{r:?}");
}

/// A master address where nothing listens: commands that parse fail at the first request.
const NOWHERE: &str = "127.0.0.1:1";

/// Asserts the command line parsed: the run failed only at its first request to the cluster.
fn assert_parsed_and_reached_for_the_cluster(r: &common::Run, op: &str) {
    assert_one_error_line(r, op);
    assert!(!r.stderr.contains("unexpected argument"), "{r:?}");
    assert!(!r.stderr.contains("required"), "{r:?}");
}

fn run_nowhere(args: &[&str]) -> common::Run {
    let mut argv = vec!["--masters", NOWHERE, "--timeout", "300ms"];
    argv.extend_from_slice(args);
    run(&argv)
}

#[test]
fn agent_subcommands_parse() {
    let r = run_nowhere(&["agent", "list"]);
    assert_parsed_and_reached_for_the_cluster(&r, "list agents");
    let r = run_nowhere(&["agent", "list", "--stale", "--json"]);
    assert_parsed_and_reached_for_the_cluster(&r, "list agents");
    let r = run_nowhere(&["agent", "show", "a1", "--stale"]);
    assert_parsed_and_reached_for_the_cluster(&r, "get agent");
    let r = run_nowhere(&["agent", "drain", "a1", "--reason", "kernel upgrade"]);
    assert_parsed_and_reached_for_the_cluster(&r, "drain agent");
    let r = run_nowhere(&["agent", "undrain", "a1"]);
    assert_parsed_and_reached_for_the_cluster(&r, "undrain agent");
    assert_one_error_line(&run(&["agent", "show"]), "<ID>");
    assert_one_error_line(&run(&["agent", "undrain", "a1", "--reason", "x"]), "--reason");
    let r = run(&["agent", "--help"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for verb in ["start", "list", "show", "drain", "undrain"] {
        assert!(r.stdout.contains(verb), "{verb}: {r:?}");
    }
}

#[test]
fn agent_start_flags_parse_and_bad_ones_are_rejected() {
    let r = run(&["agent", "start", "--help"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for flag in [
        "--config",
        "--id",
        "--cpu",
        "--mem",
        "--disk",
        "--max-tasks",
        "--label",
        "--pool",
        "--work-dir",
        "--heartbeat-interval",
        "--lease-timeout",
        "--log-format",
        "TAURUS_AGENT_ID",
    ] {
        assert!(r.stdout.contains(flag), "{flag}: {r:?}");
    }
    let r = run(&["agent", "start", "--label", "nokey"]);
    assert_one_error_line(&r, "--label");
    assert!(r.stderr.contains("KEY=VALUE"), "{r:?}");
    assert_one_error_line(&run(&["agent", "start", "--cpu", "lots"]), "--cpu");
    assert_one_error_line(&run(&["agent", "start", "--max-tasks", "0"]), "--max-tasks");
    assert_one_error_line(
        &run(&["agent", "start", "--heartbeat-interval", "often"]),
        "--heartbeat-interval",
    );
    assert_one_error_line(&run(&["agent", "start", "--log-format", "xml"]), "--log-format");
    let r = common::taurus()
        .args(["agent", "start"])
        .env("TAURUS_AGENT_LABELS", "zone=a,bad")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("taurus runs");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_ne!(r.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("KEY=VALUE"), "{stderr}");
}

#[test]
fn task_logs_flags() {
    let r = run_nowhere(&["task", "logs", "t1"]);
    assert_parsed_and_reached_for_the_cluster(&r, "get task");
    let r = run_nowhere(&["task", "logs", "t1", "--attempt", "2", "--stderr-only"]);
    assert_parsed_and_reached_for_the_cluster(&r, "get task");
    let r = run_nowhere(&["task", "logs", "t1", "--follow", "--stdout-only"]);
    assert_parsed_and_reached_for_the_cluster(&r, "watch task");
    let r = run(&["task", "logs", "t1", "--stdout-only", "--stderr-only"]);
    assert_one_error_line(&r, "cannot be used with");
    let r = run(&["task", "logs", "t1", "--attempt", "1", "--follow"]);
    assert_one_error_line(&r, "cannot be used with");
    assert_one_error_line(&run(&["task", "logs", "t1", "--attempt", "x"]), "--attempt");
    assert_one_error_line(&run(&["task", "logs"]), "<ID>");
    let r = run(&["task", "logs", "--help"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("16 KiB"), "{r:?}");
    assert!(r.stdout.contains("attempt by attempt"), "{r:?}");
}

#[test]
fn task_list_filters_parse_and_bad_labels_are_rejected() {
    let r = run_nowhere(&[
        "task", "list", "--agent", "a1", "--name", "nightly", "--label", "k=v", "--label", "x=y", "--state",
        "running",
    ]);
    assert_parsed_and_reached_for_the_cluster(&r, "list tasks");
    let r = run(&["task", "list", "--label", "novalue"]);
    assert_one_error_line(&r, "--label");
    assert!(r.stderr.contains("KEY=VALUE"), "{r:?}");
}

#[test]
fn bench_e2e_rejects_zero_tasks_and_parses_its_flags() {
    let r = run(&["bench", "e2e", "--tasks", "0"]);
    assert_one_error_line(&r, "--tasks");
    assert_one_error_line(&run(&["bench", "e2e", "--concurrency", "0"]), "--concurrency");
    assert_one_error_line(&run(&["bench", "e2e", "--batch", "0"]), "--batch");
    assert_one_error_line(
        &run(&["bench", "e2e", "--timeout-total", "forever"]),
        "--timeout-total",
    );
    let r = run_nowhere(&[
        "bench",
        "e2e",
        "--tasks",
        "10",
        "--concurrency",
        "2",
        "--batch",
        "5",
        "--priority",
        "-1",
        "--timeout-total",
        "1m",
    ]);
    assert_parsed_and_reached_for_the_cluster(&r, "cluster status");
}

#[test]
fn an_unknown_policy_is_rejected_naming_the_choices() {
    let r = run(&["master", "start", "--policy", "fastest"]);
    assert_one_error_line(
        &r,
        "unknown policy \"fastest\"; one of: greedy, delay-guided, binpack, spread",
    );
}

#[test]
fn a_master_refuses_a_non_loopback_listener_without_tls_and_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("m").display().to_string();
    for listen in ["0.0.0.0:7101", "10.213.250.1:7101"] {
        let r = run(&["master", "start", "--listen", listen, "--data-dir", &data]);
        assert_one_error_line(&r, "listen");
        assert!(
            r.stderr.contains("--insecure") && r.stderr.contains("TLS"),
            "the refusal says what to do: {r:?}"
        );
        // Authentication alone is not enough either.
        let r = run(&[
            "master",
            "start",
            "--listen",
            listen,
            "--auth",
            "--data-dir",
            &data,
        ]);
        assert_one_error_line(&r, "TLS");
    }
    assert!(
        !dir.path().join("m").exists(),
        "nothing was created before the refusal"
    );
}

#[test]
fn an_agent_refuses_remote_masters_without_tls() {
    let r = run(&["--masters", "10.213.250.1:7101", "agent", "start", "--id", "a1"]);
    assert_one_error_line(&r, "masters[0]");
    assert!(r.stderr.contains("--insecure"), "{r:?}");
}

#[test]
fn an_insecure_master_warns_at_start() {
    use std::io::BufRead as _;
    use std::io::BufReader;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut child = common::taurus()
        .args(["master", "start", "--insecure", "--id", "1"])
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .args(["--peers", &format!("1=127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("m"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("taurus starts");
    let stderr = child.stderr.take().expect("piped stderr");
    // Read until the warning (or the end of the output): bounded by the process's own start-up,
    // and the master is killed right after.
    let mut seen = Vec::new();
    let mut warned = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok).take(50) {
        warned = line.contains("INSECURE");
        seen.push(line);
        if warned || seen.last().is_some_and(|l| l.contains("master starting")) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no INSECURE warning before serving: {seen:#?}");
}
