//! Bug-injection proof (issue 4, point 5): each deliberately broken guarantee must be caught by
//! the checker meant for it (exit 1), and the same run without the bug must pass, so the
//! anomaly comes from the bug, not from the setup.

mod common;

/// `no-fence`: agents do not self-fence when their lease expires. The nemesis cuts off the
/// agent holding the most tasks for 5 s (the masters' agent_ttl is 3.5 s, the agents' lease
/// 1.5 s), so the leader gives its 6-second tasks new attempts elsewhere while they still run
/// there; clients do not cancel, so those tasks are rerun rather than cancelled.
const NO_FENCE_TUNING: &[&str] = &[
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

/// The nemesis isolates the leader from the other masters (clients still reach it) for 4 s at a
/// time. `stale-read` (masters answer reads from their own state without confirming
/// leadership): the old leader's frozen state is read after newer states were seen elsewhere.
/// `ack-before-commit` (masters answer submits before the write commits): what the isolated
/// leader acknowledged never commits and is discarded when the partition heals.
const LEADER_PARTITION_TUNING: &[&str] = &[
    "--time-limit",
    "20s",
    "--seed",
    "1",
    "--nemesis",
    "partition-leader",
    "--partition-hold",
    "4s",
];

fn with(tuning: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    tuning.iter().chain(extra).copied().collect()
}

#[test]
fn no_fence_bug_is_caught_and_the_same_run_without_it_passes() {
    let bad = common::run(&with(NO_FENCE_TUNING, &["--inject-bug", "no-fence"]));
    assert_eq!(bad.code, Some(1), "the injected bug was not caught\n{}", bad.text);
    assert!(
        bad.verdicts()
            .iter()
            .any(|l| l.starts_with("no-overlap: INVALID")),
        "no-overlap did not report the bug\n{}",
        bad.text
    );
    common::run(NO_FENCE_TUNING).assert_all_valid();
}

#[test]
fn stale_read_and_ack_before_commit_bugs_are_caught_and_the_same_run_without_them_passes() {
    let bad = common::run(&with(LEADER_PARTITION_TUNING, &["--inject-bug", "stale-read"]));
    assert_eq!(
        bad.code,
        Some(1),
        "the injected stale-read bug was not caught\n{}",
        bad.text
    );
    assert!(
        bad.verdicts()
            .iter()
            .any(|l| l.starts_with("linearizable-status: INVALID")
                || l.starts_with("terminal-stable: INVALID")),
        "neither linearizable-status nor terminal-stable reported the stale reads\n{}",
        bad.text
    );

    let bad = common::run(&with(
        LEADER_PARTITION_TUNING,
        &["--inject-bug", "ack-before-commit"],
    ));
    assert_eq!(
        bad.code,
        Some(1),
        "the injected ack-before-commit bug was not caught\n{}",
        bad.text
    );
    assert!(
        bad.verdicts().iter().any(|l| l.starts_with("lost: INVALID")),
        "lost did not report the acknowledged-but-lost submits\n{}",
        bad.text
    );

    common::run(LEADER_PARTITION_TUNING).assert_all_valid();
}
