//! Bug-injection proof (issue 4, point 5): with self-fencing disabled in the agents
//! (`--inject-bug no-fence`), a partitioned agent keeps running tasks the leader has given to
//! another agent, and the `no-overlap` checker must say so (exit 1). The same run without the
//! injected bug (same seed and tuning) must pass, so the anomaly comes from the bug, not from
//! the setup.

use std::path::Path;
use std::process::Command;
use std::process::Output;

/// The nemesis cuts off the agent holding the most tasks. Tasks of 6 s and a 5 s partition (the
/// masters' agent_ttl is 3.5 s, the agents' lease 1.5 s) make the leader give the cut-off
/// agent's tasks new attempts elsewhere while they still run there; clients do not cancel, so
/// those tasks are rerun rather than cancelled. Seeds 1, 2 and 3 all catch the bug.
const TUNING: &[&str] = &[
    "--time-limit",
    "7s",
    "--seed",
    "3",
    "--clients",
    "1",
    "--agent-max-tasks",
    "32",
    "--nemesis",
    "partition-agent",
    "--task-duration",
    "6s",
    "--partition-hold",
    "5s",
    "--no-cancel",
];

/// Exit status of `taurus-jepsen` when the harness itself failed (a process did not start, no
/// leader in time): not a verdict, so the run is retried, at most [`HARNESS_TRIES`] times.
const HARNESS_FAILED: i32 = 3;
const HARNESS_TRIES: usize = 3;

/// Runs the binary, retrying only harness failures (never a verdict).
fn run(extra: &[&str]) -> (Output, String) {
    for attempt in 1..=HARNESS_TRIES {
        let (out, text) = run_once(extra);
        if out.status.code() != Some(HARNESS_FAILED) || attempt == HARNESS_TRIES {
            return (out, text);
        }
        eprintln!("harness failure on attempt {attempt} (not a verdict); retrying:\n{text}");
    }
    unreachable!("the last attempt returns")
}

fn run_once(extra: &[&str]) -> (Output, String) {
    let taurus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/taurus");
    assert!(
        taurus.is_file(),
        "{} is missing: build it first with `cargo build -p taurus-cli` (or `cargo test --workspace`)",
        taurus.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_taurus-jepsen"))
        .args(TUNING)
        .args(extra)
        .arg("--taurus")
        .arg(&taurus)
        .arg("--results-dir")
        .arg(dir.path())
        .output()
        .expect("taurus-jepsen runs");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn verdict_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("verdict:") && !l.starts_with(' '))
        .filter(|l| l.contains(": valid") || l.contains(": INVALID") || l.contains(": UNKNOWN"))
        .map(str::to_string)
        .collect()
}

#[test]
fn no_fence_bug_is_caught_and_the_same_run_without_it_passes() {
    let (bad, text) = run(&["--inject-bug", "no-fence"]);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "the injected bug was not caught\n{text}"
    );
    assert!(
        verdict_lines(&stdout)
            .iter()
            .any(|l| l.starts_with("no-overlap: INVALID")),
        "no-overlap did not report the bug\n{text}"
    );

    let (good, text) = run(&[]);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "the run without the bug failed\n{text}"
    );
    let verdicts = verdict_lines(&stdout);
    assert_eq!(verdicts.len(), 9, "one verdict per checker\n{text}");
    assert!(verdicts.iter().all(|l| l.contains(": valid")), "{text}");
}
