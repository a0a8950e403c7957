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
    for noun in ["master", "task", "cluster", "bench", "dev"] {
        assert!(r.stdout.contains(noun), "{noun}: {r:?}");
    }
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("taurus "), "{r:?}");
}
