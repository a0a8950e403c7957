//! No master listening: every command fails clearly, within its --timeout.

mod common;

use std::time::Duration;

use common::assert_one_error_line;
use common::free_port;
use common::run;

/// Generous: the deadline is 1 s, plus process start-up on a loaded machine.
const BOUND: Duration = Duration::from_secs(8);

#[test]
fn commands_against_dead_masters_fail_within_the_timeout() {
    let masters = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    for args in [
        &["task", "get", "some-id"][..],
        &["task", "submit", "--", "true"],
        &["task", "list"],
        &["task", "cancel", "some-id"],
        &["task", "wait", "some-id"],
        &["task", "watch", "some-id"],
        &["cluster", "status", "--json"],
        &["bench", "submit", "--tasks", "10", "--concurrency", "2"],
    ] {
        let r = run(&[&["--masters", &masters, "--timeout", "1s"][..], args].concat());
        assert_one_error_line(&r, "no master could serve");
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(r.stderr.contains("127.0.0.1:"), "names the master: {r:?}");
        assert!(r.elapsed < BOUND, "{args:?} took {:?}", r.elapsed);
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
}
