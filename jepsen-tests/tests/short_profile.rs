//! The CI short profile (issue 4): every nemesis at least once, overlapping, on 3 masters; the
//! master partitions and leader faults on 5 masters, secured (mutual TLS, authentication on:
//! issue 5). Both runs must pass every checker.
//!
//! The long profile (soak) is the same binary with a longer `--time-limit`; see
//! `docs/testing.md`.

mod common;

/// Every fault the binary knows (its `--nemesis all`).
const ALL_FAULTS: &[&str] = &[
    "partition-one",
    "partition-leader",
    "partition-halves",
    "partition-bridge",
    "partition-ring",
    "partition-one-way",
    "kill",
    "kill-leader",
    "kill-all",
    "pause",
    "pause-leader",
    "pause-agent",
    "partition-agent",
    "kill-agent",
    "clock",
    "member",
    "corrupt",
];

#[test]
fn every_nemesis_overlapping_on_three_masters_is_valid() {
    let run = common::run(&[
        "--time-limit",
        "100s",
        "--nemesis",
        "all",
        "--concurrency",
        "2",
        "--seed",
        "1",
    ]);
    run.assert_all_valid();
    let faults = run.faults();
    let missing: Vec<&&str> = ALL_FAULTS.iter().filter(|f| !faults.contains_key(**f)).collect();
    assert!(
        missing.is_empty(),
        "faults never injected: {missing:?} (injected: {faults:?})\n{}",
        run.text
    );
}

#[test]
fn partitions_and_leader_faults_on_five_secured_masters_are_valid() {
    let run = common::run(&[
        "--secure",
        "--masters",
        "5",
        "--time-limit",
        "40s",
        "--nemesis",
        "partition,kill-leader,pause-leader",
        "--seed",
        "2",
    ]);
    run.assert_all_valid();
    assert!(
        run.text.contains("security: mutual TLS on every channel"),
        "the run was not secured:\n{}",
        run.text
    );
    let faults = run.faults();
    for f in [
        "partition-ring",
        "partition-bridge",
        "partition-leader",
        "kill-leader",
    ] {
        assert!(
            faults.contains_key(f),
            "{f} never injected: {faults:?}\n{}",
            run.text
        );
    }
}
