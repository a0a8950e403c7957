//! Regression tests for what fuzzing found in the master's configuration checks (`fuzz/`,
//! target `config`; the reproducers are in `fuzz/corpus/config/regression-*`).

use taurus_master::MasterConfig;

/// A heartbeat interval near `u64::MAX` seconds made `validate` panic (`Duration * 2`
/// overflowed); it is an error naming the key.
#[test]
fn a_huge_heartbeat_interval_is_an_error_not_a_panic() {
    let c =
        MasterConfig::from_toml("[raft]\nheartbeat_interval = \"18446744073709551615s\"\n").expect("parses");
    let e = c.validate().expect_err("an absurd heartbeat interval is refused");
    assert!(e.to_string().contains("raft.heartbeat_interval"), "{e}");
}

/// A lease longer than `u64::MAX` milliseconds was truncated (wrapped) to a short one before the
/// lease-margin check; it saturates, so the check refuses it.
#[test]
fn a_huge_lease_timeout_does_not_wrap_past_the_margin_check() {
    // 2^64 ms + 1.384 s: truncated to 1.384 s, it passed against the default 10 s agent_ttl.
    let c = MasterConfig::from_toml("[scheduler]\nlease_timeout = \"18446744073709553s\"\n").expect("parses");
    let e = c.validate().expect_err("an absurd lease is refused");
    assert!(e.to_string().contains("scheduler.agent_ttl"), "{e}");
}
